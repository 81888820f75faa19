/* bench_qlinear.c - QLinearConv / QGemm (int8, ops/qlinear*.c) against the f32
 * Conv / Gemm on the layers of the "cnn" model (src/train/models.c), forward
 * at batch 1 and 64, both with bias and fused Relu.
 *
 *   B=build; cc -O2 -fopenmp -Iinclude bench/bench_qlinear.c $B/libshrink.a -lprotobuf-c \
 *     -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp \
 *     -lopenblas -lz -lm -o /tmp/bench_qlinear
 *   /tmp/bench_qlinear [--threads N] [--runs N] [--batch N] [--layer NAME] [--cpu]      (or bench/bench_qlinear.sh)
 *
 * One line per layer and batch: median ms of the f32 op and of the int8 op
 * (programs of one node; the int8 op reads u8 and writes u8, or f32 for the
 * last Gemm as in a static int8 model), and the speedup f32 / int8.
 */
#include <shrink.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

typedef struct layer {
    const char *name;
    int cin, cout, hw, k, pad; /* conv; hw = 0: Gemm cin -> cout */
} layer;

static const layer layers[] = {
    {"cnn.layer1", 1, 32, 28, 3, 1},  {"cnn.layer2", 32, 64, 14, 3, 1}, {"cnn.res.a", 64, 64, 7, 3, 1},
    {"cnn.res.b", 64, 64, 7, 3, 1},   {"cnn.layer4", 64, 128, 7, 3, 1}, {"cnn.fc", 128, 10, 0, 0, 0},
    {"fc.3136x128", 3136, 128, 0, 0, 0}, {"fc.512x512", 512, 512, 0, 0, 0},
};

/* --cpu: CPU time of the calling thread instead of wall time (with --threads 1
 * all work runs on it; steadier than wall time on a loaded machine) */
static int use_cpu;
static double now(void)
{
    if (!use_cpu) return sh_now();
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void init(sh_graph *g, const char *name, sh_format f, int nd, const int64_t *s, float scale)
{
    sh_error err = {0};
    sh_tensor *t = sh_tensor_new(f, nd, s, &err);
    for (int64_t i = 0; i < sh_tensor_numel(t); i++) {
        int v = (int)((i * 7919) % 255) - 127;
        if (f == SH_F32) ((float *)t->data)[i] = scale * (float)v;
        else if (f == SH_I8) ((int8_t *)t->data)[i] = (int8_t)v;
        else if (f == SH_U8) ((uint8_t *)t->data)[i] = (uint8_t)(v + 127);
        else ((int32_t *)t->data)[i] = v * 10;
    }
    sh_graph_add_init(g, name, t, &err);
}

static sh_graph *build(const layer *L, int q)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new(L->name);
    g->opset = 13;
    int conv = L->hw > 0;
    int64_t xs[4] = {-1, L->cin, L->hw, L->hw}, ws[4] = {L->cout, L->cin, L->k, L->k}, m[1] = {L->cout};
    int64_t xg[2] = {-1, L->cin}, wg[2] = {L->cout, L->cin};
    sh_graph_add_input(g, "x", q ? SH_U8 : SH_F32, conv ? 4 : 2, conv ? xs : xg, &err);
    int k;
    const char *out[1] = {"y"};
    if (!q) {
        init(g, "w", SH_F32, conv ? 4 : 2, conv ? ws : wg, 0.001f);
        init(g, "b", SH_F32, 1, m, 0.01f);
        const char *in[3] = {"x", "w", "b"};
        k = sh_graph_add_node(g, conv ? "Conv" : "Gemm", "op", 3, in, 1, out, &err);
    } else {
        float one = 0.02f;
        sh_tensor *s = sh_tensor_new(SH_F32, 0, NULL, &err);
        *(float *)s->data = one;
        sh_graph_add_init(g, "xs", s, &err);
        sh_graph_add_init(g, "xz", sh_tensor_new(SH_U8, 0, NULL, &err), &err);
        init(g, "w", SH_I8, conv ? 4 : 2, conv ? ws : wg, 0);
        sh_tensor *wsc = sh_tensor_new(SH_F32, 1, m, &err);
        for (int i = 0; i < L->cout; i++) ((float *)wsc->data)[i] = 0.001f * (float)(1 + i % 7);
        sh_graph_add_init(g, "ws", wsc, &err);
        sh_graph_add_init(g, "wz", sh_tensor_new(SH_I8, 1, m, &err), &err);
        s = sh_tensor_new(SH_F32, 0, NULL, &err);
        *(float *)s->data = 0.05f;
        sh_graph_add_init(g, "ys", s, &err);
        sh_graph_add_init(g, "yz", sh_tensor_new(SH_U8, 0, NULL, &err), &err);
        init(g, "b", SH_I32, 1, m, 0);
        if (conv) {
            const char *in[9] = {"x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"};
            k = sh_graph_add_node(g, "QLinearConv", "op", 9, in, 1, out, &err);
        } else {
            /* the classifier of a static model gives f32; the others u8 */
            int f32out = L->cout == 10;
            const char *in[9] = {"x", "xs", "xz", "w", "ws", "wz", "b", "ys", "yz"};
            k = sh_graph_add_node(g, "QGemm", "op", f32out ? 7 : 9, in, 1, out, &err);
        }
    }
    if (conv) {
        int64_t pads[4] = {L->pad, L->pad, L->pad, L->pad}, ks[2] = {L->k, L->k};
        sh_node_set_ints(g, k, "pads", 4, pads);
        sh_node_set_ints(g, k, "kernel_shape", 2, ks);
    } else sh_node_set_int(g, k, "transB", 1);
    if (L->cout != 10) sh_node_set_string(g, k, "activation", "Relu");
    sh_graph_mark_output(g, "y", &err);
    if (sh_graph_check(g, &err)) fprintf(stderr, "%s: %s\n", L->name, err.msg);
    return g;
}

static double time_it(const layer *L, int q, int batch, int threads, int runs)
{
    sh_error err = {0};
    sh_graph *g = build(L, q);
    sh_run_opts o = {.nthreads = threads};
    sh_program *p = NULL;
    if (sh_program_new(g, &o, &p, &err)) {
        fprintf(stderr, "%s: %s\n", L->name, err.msg);
        exit(1);
    }
    int conv = L->hw > 0;
    int64_t xs[4] = {batch, L->cin, L->hw, L->hw}, xg[2] = {batch, L->cin};
    sh_tensor *x = sh_tensor_new(q ? SH_U8 : SH_F32, conv ? 4 : 2, conv ? xs : xg, &err);
    for (int64_t i = 0; i < sh_tensor_numel(x); i++) {
        if (q) ((uint8_t *)x->data)[i] = (uint8_t)((i * 31) % 97);
        else ((float *)x->data)[i] = (float)((i * 31) % 97) / 97.0f;
    }
    const sh_tensor *ins[1] = {x};
    double *t = malloc(sizeof(double) * (size_t)runs);
    for (int r = -(runs / 10 + 3); r < runs; r++) {
        double t0 = now();
        if (sh_program_run(p, ins, 1, &err)) {
            fprintf(stderr, "%s: %s\n", L->name, err.msg);
            exit(1);
        }
        if (r >= 0) t[r] = (now() - t0) * 1e3;
    }
    qsort(t, (size_t)runs, sizeof(double), cmp);
    double med = t[runs / 2];
    free(t);
    sh_tensor_free(x);
    sh_program_free(p);
    sh_graph_free(g);
    return med;
}

int main(int argc, char **argv)
{
    int threads = 1, runs = 200, only_batch = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) only_batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layer") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--cpu")) use_cpu = 1;
        else {
            fprintf(stderr, "usage: bench_qlinear [--threads N] [--runs N] [--batch N] [--layer NAME] [--cpu]\n");
            return 2;
        }
    }
    printf("kernel level: %s, %s time\n", sh_cpu_level_name(sh_cpu_level()), use_cpu ? "thread CPU" : "wall");
    printf("%-14s %5s %7s %12s %12s %8s %10s\n", "layer", "batch", "threads", "f32_med_ms", "int8_med_ms", "speedup",
           "int8_GOP/s");
    for (size_t li = 0; li < sizeof layers / sizeof layers[0]; li++) {
        const layer *L = &layers[li];
        if (only && !strstr(L->name, only)) continue;
        int batches[2] = {1, 64};
        for (int bi = 0; bi < 2; bi++) {
            int b = batches[bi];
            if (only_batch && b != only_batch) continue;
            int r = b == 1 ? runs : (runs / 10 > 5 ? runs / 10 : 5);
            double tf = time_it(L, 0, b, threads, r), tq = time_it(L, 1, b, threads, r);
            double ops = L->hw ? 2.0 * b * L->cout * L->hw * L->hw * L->cin * L->k * L->k : 2.0 * b * L->cout * L->cin;
            printf("%-14s %5d %7d %12.4f %12.4f %7.2fx %10.1f\n", L->name, b, threads, tf, tq, tf / tq, ops / tq / 1e6);
            fflush(stdout);
        }
    }
    return 0;
}
