/* bench_llama_speed.c - transformer speed of each quantization mode on a
 * Llama whose matrices do not fit in cache (random weights: speed only).
 *
 *   bench_llama_speed [DIM] [LAYERS] [THREADS] [REPS]
 *
 * Builds a Llama (dim DIM, hidden 8/3 DIM rounded to 32, DIM/64 heads,
 * vocab 4096, untied classifier), makes the weight-only q8_0 / q4_0 and
 * dynamic / static int8 versions (static calibrated on random tokens), and
 * times for each: one decode token at position 0 (batch 1, the GEMV-bound
 * case) and a 64-token prefill (GEMM-bound).  Each figure is the median of
 * REPS rounds; every round times all models in turn (medians of 20 runs
 * each), so a noisy neighbour affects them alike.  Prints bytes of weights,
 * ms, and the ratio to f32.  SAVE=DIR also writes the five models to
 * DIR/llama_0.onnx (f32) ... llama_4.onnx (static int8). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shrink.h"

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double med(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* median ms of runs of p on t (position 0 each time) */
static double time_prog(sh_program *p, const sh_tensor *t, int runs)
{
    const sh_tensor *in[1] = {t};
    sh_error e = {0};
    double ms[64];
    for (int i = 0; i < 3; i++) {
        sh_program_set_pos(p, 0);
        if (sh_program_run(p, in, 1, &e)) { fprintf(stderr, "run: %s\n", e.msg); exit(1); }
    }
    for (int i = 0; i < runs; i++) {
        sh_program_set_pos(p, 0);
        double t0 = sh_now();
        if (sh_program_run(p, in, 1, &e)) { fprintf(stderr, "run: %s\n", e.msg); exit(1); }
        ms[i] = (sh_now() - t0) * 1e3;
    }
    return med(ms, runs);
}

int main(int argc, char **argv)
{
    int dim = argc > 1 ? atoi(argv[1]) : 1024, layers = argc > 2 ? atoi(argv[2]) : 4;
    int threads = argc > 3 ? atoi(argv[3]) : 1, reps = argc > 4 ? atoi(argv[4]) : 5;
    if (dim < 64 || dim % 64 || layers < 1 || threads < 1 || reps < 1 || reps > 64) {
        fprintf(stderr, "usage: bench_llama_speed [DIM (multiple of 64)] [LAYERS] [THREADS] [REPS]\n");
        return 2;
    }
    sh_error e = {0};
    sh_llama_config c = {.dim = dim, .hidden_dim = (dim * 8 / 3 + 31) / 32 * 32, .n_layers = layers,
                         .n_heads = dim / 64, .n_kv_heads = dim / 64, .vocab_size = 4096, .seq_len = 256,
                         .shared_classifier = 0};
    enum { NM = 5 };
    const char *names[NM] = {"f32", "q8_0 weight-only", "q4_0 weight-only", "dynamic int8", "static int8"};
    sh_graph *g[NM] = {0};
    if (sh_llama_build(&c, 7, &g[0], &e)) { fprintf(stderr, "build: %s\n", e.msg); return 1; }
    /* calibration: 16 rows of 64 random tokens */
    sh_dataset d = {.kind = 2, .n = 1024, .vocab = c.vocab_size, .n_docs = 16};
    d.tokens = malloc(sizeof(int32_t) * 1024);
    d.doc_off = malloc(sizeof(int64_t) * 17);
    uint64_t s = 1;
    for (int i = 0; i < 1024; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        d.tokens[i] = (int32_t)((s >> 33) % (uint64_t)c.vocab_size);
    }
    for (int i = 0; i <= 16; i++) d.doc_off[i] = i * 64;
    sh_quant_opts qo[NM] = {{0},
                            {.mode = SH_QMODE_WEIGHT, .bits = 8},
                            {.mode = SH_QMODE_WEIGHT, .bits = 4},
                            {.mode = SH_QMODE_DYNAMIC},
                            {.mode = SH_QMODE_STATIC, .calib = &d, .calib_samples = 16}};
    for (int m = 1; m < NM; m++) {
        sh_quant_report r;
        qo[m].nthreads = threads;
        if (sh_quantize(g[0], &qo[m], &g[m], &r, &e)) { fprintf(stderr, "%s: %s\n", names[m], e.msg); return 1; }
        sh_quant_report_free(&r);
    }
    /* SAVE=DIR: write the models as DIR/llama_<i>.onnx (for shrink bench --profile) */
    const char *save = getenv("SAVE");
    for (int m = 0; save && m < NM; m++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/llama_%d.onnx", save, m);
        if (sh_model_save(g[m], path, &e)) { fprintf(stderr, "save %s: %s\n", path, e.msg); return 1; }
    }
    sh_program *p[NM] = {0};
    sh_run_opts ro = {.nthreads = threads};
    for (int m = 0; m < NM; m++)
        if (sh_program_new(g[m], &ro, &p[m], &e)) { fprintf(stderr, "%s: %s\n", names[m], e.msg); return 1; }
    int64_t s1[2] = {1, 1}, s64[2] = {1, 64};
    sh_tensor *t1 = sh_tensor_new(SH_I64, 2, s1, &e), *t64 = sh_tensor_new(SH_I64, 2, s64, &e);
    for (int i = 0; i < 64; i++) ((int64_t *)t64->data)[i] = d.tokens[i];
    ((int64_t *)t1->data)[0] = 1;
    double dec[NM][64], pre[NM][64];
    for (int r = 0; r < reps; r++)
        for (int m = 0; m < NM; m++) {
            dec[m][r] = time_prog(p[m], t1, 20);
            pre[m][r] = time_prog(p[m], t64, 5);
        }
    printf("# Llama dim %d, hidden %d, %d layers, %d heads, vocab %d; %d thread(s); medians of %d rounds\n", dim,
           c.hidden_dim, layers, c.n_heads, c.vocab_size, threads, reps);
    printf("%-18s %12s %12s %9s %14s %9s\n", "model", "weight MiB", "decode ms", "vs f32", "prefill64 ms", "vs f32");
    double d0 = 0, p0 = 0;
    for (int m = 0; m < NM; m++) {
        double dm = med(dec[m], reps), pm = med(pre[m], reps);
        if (m == 0) d0 = dm, p0 = pm;
        printf("%-18s %12.1f %12.3f %8.2fx %14.3f %8.2fx\n", names[m], sh_graph_param_bytes(g[m]) / 1048576.0, dm,
               d0 / dm, pm, p0 / pm);
    }
    for (int m = 0; m < NM; m++) {
        sh_program_free(p[m]);
        sh_graph_free(g[m]);
    }
    sh_tensor_free(t1);
    sh_tensor_free(t64);
    free(d.tokens);
    free(d.doc_off);
    return 0;
}
