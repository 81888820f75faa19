/* bench_conv.c - micro-benchmark of the Conv kernels on the layers of the
 * small CNNs shrink trains on 28x28 images ("cnn" and "lenet5"), forward at
 * batch 1 and 64, and forward+backward in a training program.
 *
 *   cc -O2 -fopenmp -Iinclude bench/bench_conv.c BUILD/libshrink.a -lprotobuf-c -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas -lz -lm -o bench_conv
 *   bench_conv [--threads N] [--runs N] [--batch N] [--backward] [--onnx DIR]
 *
 * One line per layer: name, batch, threads, median and min ms, GFLOP/s.
 * --onnx DIR also writes each layer as DIR/NAME.onnx (for ort_bench.js).
 */
#include <shrink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct layer {
    const char *name;
    int cin, cout, hw, k, stride, pad, group;
} layer;

static const layer layers[] = {
    /* the "cnn" built-in (src/train/models.c): layer1, layer2, res.a/res.b, layer4 */
    {"cnn.layer1", 1, 32, 28, 3, 1, 1, 1},  {"cnn.layer2", 32, 64, 14, 3, 1, 1, 1},
    {"cnn.res", 64, 64, 7, 3, 1, 1, 1},     {"cnn.layer4", 64, 128, 7, 3, 1, 1, 1},
    /* other shapes: 28x28 3x3, 1x1 projection, 14x14 residual */
    {"c28.3x3", 32, 32, 28, 3, 1, 1, 1},    {"proj1x1", 32, 64, 14, 1, 1, 0, 1},
    {"c14.3x3", 64, 64, 14, 3, 1, 1, 1},    {"lenet.conv1", 1, 6, 28, 5, 1, 2, 1},
    {"lenet.conv2", 6, 16, 14, 5, 1, 0, 1},  {"dw3x3", 32, 32, 28, 3, 1, 1, 32},
    {"s2.3x3", 32, 64, 28, 3, 2, 1, 1},
};

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static sh_graph *build(const layer *L, sh_error *err)
{
    sh_graph *g = sh_graph_new(L->name);
    int64_t xs[4] = {-1, L->cin, L->hw, L->hw}, ws[4] = {L->cout, L->cin / L->group, L->k, L->k}, bs[1] = {L->cout};
    sh_graph_add_input(g, "x", SH_F32, 4, xs, err);
    sh_tensor *w = sh_tensor_new(SH_F32, 4, ws, err), *b = sh_tensor_new(SH_F32, 1, bs, err);
    for (int64_t i = 0; i < sh_tensor_numel(w); i++) ((float *)w->data)[i] = (float)((i * 7919) % 113) / 113.0f - 0.5f;
    for (int64_t i = 0; i < L->cout; i++) ((float *)b->data)[i] = 0.01f * (float)i;
    sh_graph_add_init(g, "w", w, err);
    sh_graph_add_init(g, "b", b, err);
    const char *in[3] = {"x", "w", "b"}, *out[1] = {"y"};
    int k = sh_graph_add_node(g, "Conv", "conv", 3, in, 1, out, err);
    int64_t pads[4] = {L->pad, L->pad, L->pad, L->pad}, st[2] = {L->stride, L->stride}, ks[2] = {L->k, L->k};
    sh_node_set_ints(g, k, "pads", 4, pads);
    sh_node_set_ints(g, k, "strides", 2, st);
    sh_node_set_ints(g, k, "kernel_shape", 2, ks);
    sh_node_set_int(g, k, "group", L->group);
    sh_graph_mark_output(g, "y", err);
    g->opset = 13;
    return g;
}

static int run(const layer *L, int batch, int threads, int runs, int backward, double *med, double *mn)
{
    sh_error err = {0};
    sh_graph *g = build(L, &err);
    sh_run_opts o = {.nthreads = threads, .training = backward};
    sh_program *p = NULL;
    if (sh_program_new(g, &o, &p, &err)) {
        fprintf(stderr, "%s: %s\n", L->name, err.msg);
        return 1;
    }
    int64_t xs[4] = {batch, L->cin, L->hw, L->hw};
    sh_tensor *x = sh_tensor_new(SH_F32, 4, xs, &err);
    for (int64_t i = 0; i < sh_tensor_numel(x); i++) ((float *)x->data)[i] = (float)((i * 31) % 97) / 97.0f;
    const sh_tensor *ins[1] = {x};
    double *t = malloc(sizeof(double) * (size_t)runs);
    sh_tensor *dy = NULL;
    int warm = runs / 10 + 2;
    for (int r = -warm; r < runs; r++) {
        double t0 = sh_now();
        if (sh_program_run(p, ins, 1, &err)) {
            fprintf(stderr, "%s: %s\n", L->name, err.msg);
            return 1;
        }
        if (backward) {
            sh_tensor *y = sh_program_output(p, 0);
            if (!dy) {
                dy = sh_tensor_new(SH_F32, y->ndim, y->shape, &err);
                for (int64_t i = 0; i < sh_tensor_numel(dy); i++) ((float *)dy->data)[i] = 1e-3f * (float)(i % 13);
            }
            const sh_tensor *d[1] = {dy};
            if (sh_program_backward(p, d, 1, &err)) {
                fprintf(stderr, "%s: %s\n", L->name, err.msg);
                return 1;
            }
        }
        if (r >= 0) t[r] = (sh_now() - t0) * 1e3;
    }
    qsort(t, (size_t)runs, sizeof(double), cmp);
    *med = t[runs / 2];
    *mn = t[0];
    free(t);
    sh_tensor_free(dy);
    sh_tensor_free(x);
    sh_program_free(p);
    sh_graph_free(g);
    return 0;
}

int main(int argc, char **argv)
{
    int threads = 1, runs = 200, backward = 0, only_batch = 0;
    const char *onnx_dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) only_batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--backward")) backward = 1;
        else if (!strcmp(argv[i], "--onnx") && i + 1 < argc) onnx_dir = argv[++i];
        else {
            fprintf(stderr, "usage: bench_conv [--threads N] [--runs N] [--batch N] [--backward] [--onnx DIR]\n");
            return 2;
        }
    }
    if (runs < 1) runs = 1;
    printf("%-14s %5s %7s %10s %10s %8s%s\n", "layer", "batch", "threads", "median_ms", "min_ms", "GFLOP/s",
           backward ? "  (forward+backward)" : "");
    for (size_t li = 0; li < sizeof layers / sizeof layers[0]; li++) {
        const layer *L = &layers[li];
        if (onnx_dir) {
            sh_error err = {0};
            char path[512];
            snprintf(path, sizeof path, "%s/%s.onnx", onnx_dir, L->name);
            sh_graph *g = build(L, &err);
            if (sh_onnx_save(g, path, &err)) fprintf(stderr, "%s\n", err.msg);
            sh_graph_free(g);
        }
        int batches[2] = {1, 64};
        for (int bi = 0; bi < 2; bi++) {
            int b = batches[bi];
            if (only_batch && b != only_batch) continue;
            int r = b == 1 ? runs : (runs / 10 > 5 ? runs / 10 : 5);
            double med, mn;
            if (run(L, b, threads, r, backward, &med, &mn)) return 1;
            int oh = (L->hw + 2 * L->pad - L->k) / L->stride + 1;
            double flops = 2.0 * b * L->cout * oh * oh * (double)(L->cin / L->group) * L->k * L->k * (backward ? 3 : 1);
            printf("%-14s %5d %7d %10.4f %10.4f %8.2f\n", L->name, b, threads, med, mn, flops / (med * 1e6));
            fflush(stdout);
        }
    }
    return 0;
}
