/* bench_model.c - time sh_program_run on a model file.
 *
 *   bench_model MODEL [--threads N] [--batch N] [--runs N] [--warmup N]
 *
 * Random f32 inputs of the model's declared input shapes (the first unknown
 * dim becomes --batch, other unknown dims 1).  Prints one line:
 *   median_ms X min_ms Y runs N threads T batch B
 */
#include <shrink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_model MODEL [--threads N] [--batch N] [--runs N] [--warmup N]\n");
        return 2;
    }
    int threads = 1, batch = 1, runs = 200, warmup = 20;
    for (int i = 2; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (strcmp(argv[i], "--threads") == 0) threads = v;
        else if (strcmp(argv[i], "--batch") == 0) batch = v;
        else if (strcmp(argv[i], "--runs") == 0) runs = v;
        else if (strcmp(argv[i], "--warmup") == 0) warmup = v;
        else {
            fprintf(stderr, "bench_model: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (runs < 1) runs = 1;
    sh_error err = {0};
    sh_graph *g = NULL;
    if (sh_model_load(argv[1], &g, &err)) {
        fprintf(stderr, "bench_model: error: %s\n", err.msg);
        return 1;
    }
    sh_tensor *in[16] = {0};
    if (g->n_inputs > 16) {
        fprintf(stderr, "bench_model: too many inputs\n");
        return 1;
    }
    uint64_t s = 1;
    for (int i = 0; i < g->n_inputs; i++) {
        const sh_value *v = &g->values[g->inputs[i]];
        int64_t shape[SH_MAX_DIMS];
        int nd = v->ndim < 0 ? 0 : v->ndim;
        for (int d = 0; d < nd; d++) shape[d] = v->shape[d] > 0 ? v->shape[d] : (d == 0 ? batch : 1);
        in[i] = sh_tensor_new(v->fmt, nd, shape, &err);
        if (!in[i]) {
            fprintf(stderr, "bench_model: error: %s\n", err.msg);
            return 1;
        }
        if (v->fmt == SH_F32)
            for (int64_t k = 0; k < sh_tensor_numel(in[i]); k++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                sh_f32(in[i])[k] = (float)((s >> 40) & 0xFFFF) / 65536.0f;
            }
    }
    sh_run_opts o = {.nthreads = threads};
    sh_program *p = NULL;
    if (sh_program_new(g, &o, &p, &err)) {
        fprintf(stderr, "bench_model: error: %s\n", err.msg);
        return 1;
    }
    double *ms = malloc(sizeof(double) * (size_t)runs);
    for (int r = -warmup; r < runs; r++) {
        double t0 = sh_now();
        if (sh_program_run(p, (const sh_tensor *const *)in, g->n_inputs, &err)) {
            fprintf(stderr, "bench_model: error: %s\n", err.msg);
            return 1;
        }
        if (r >= 0) ms[r] = (sh_now() - t0) * 1e3;
    }
    qsort(ms, (size_t)runs, sizeof(double), cmp);
    double med = runs % 2 ? ms[runs / 2] : 0.5 * (ms[runs / 2 - 1] + ms[runs / 2]);
    printf("median_ms %.6f min_ms %.6f runs %d threads %d batch %d\n", med, ms[0], runs, threads, batch);
    free(ms);
    sh_program_free(p);
    for (int i = 0; i < g->n_inputs; i++) sh_tensor_free(in[i]);
    sh_graph_free(g);
    return 0;
}
