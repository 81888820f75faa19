/* bench_sparse.c - sparse linear kernels vs dense f32 on a 4096x4096 Linear.
 *
 *   cc -O2 -fopenmp -Iinclude -Isrc -I/usr/include/x86_64-linux-gnu/openblas-openmp \
 *      bench/bench_sparse.c BUILD/libshrink.a -lprotobuf-c -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas -lz -lm -o bench_sparse
 *   bench_sparse [--threads N] [--runs N] [--cold] [--cpu] [--n N] [--k K] [--batches 1,8,64]
 *
 * Prints storage bytes per format, then one line per measurement:
 *   name  shrink  peer  ratio
 * shrink and peer are median milliseconds of --runs timed runs (interleaved:
 * one shrink run, one peer run, ...), ratio = peer / shrink (> 1: shrink is
 * faster).  The dense peer at batch 1 is the faster of OpenBLAS sgemv and
 * shrink's own dense AVX-512 GEMV (both measured in the same run; named in
 * the line); at batch > 1 it is OpenBLAS sgemm.  --cold writes a 96 MB
 * buffer before every timed run so weights come from DRAM, as in a model
 * whose layers do not fit the cache (the 90 % CSR matrix, 10 MB, otherwise
 * stays in the 32 MB L3 while the 64 MB dense one cannot).
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sparse.h"
#include "shrink.h"

void openblas_set_num_threads(int);

static uint64_t rs = 88172645463325252ull;
static uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}
static float rndf(void) { return (float)((rnd() >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static char *flushbuf;
static size_t flushn = 96u << 20;
static int cold, cputime;
#include <time.h>
/* wall clock, or with --cpu the process CPU time (robust to time slicing on
 * a loaded machine; meaningful for one thread only) */
static double now_ms(void)
{
    if (!cputime) return sh_now() * 1e3;
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}
static void maybe_flush(void)
{
    if (!cold) return;
    for (size_t i = 0; i < flushn; i += 64) flushbuf[i] = (char)i;
}

typedef void (*run_fn)(void *ctx);

/* Interleaved medians of nf functions. */
static void measure(int runs, int nf, run_fn *fns, void **ctx, double *med)
{
    double *t = malloc(sizeof(double) * (size_t)(runs * nf));
    for (int f = 0; f < nf; f++) fns[f](ctx[f]); /* warm-up */
    for (int r = 0; r < runs; r++)
        for (int f = 0; f < nf; f++) {
            maybe_flush();
            double t0 = now_ms();
            fns[f](ctx[f]);
            t[f * runs + r] = now_ms() - t0;
        }
    for (int f = 0; f < nf; f++) {
        qsort(t + f * runs, (size_t)runs, sizeof(double), cmpd);
        med[f] = t[f * runs + runs / 2];
    }
    free(t);
}

typedef struct ctx {
    const sh_tensor *w;
    const float *wd, *x;
    float *y;
    int64_t n, k, B;
    int nt;
    void *ws;
} ctx;

static void run_sparse(void *p)
{
    ctx *c = p;
    sh_error err;
    if (sh_spmm(c->w, c->x, c->B, NULL, c->y, c->nt, SH_SPMM_AUTO, c->ws, &err)) {
        fprintf(stderr, "sh_spmm: %s\n", err.msg);
        exit(1);
    }
}
static void run_blas(void *p)
{
    ctx *c = p;
    if (c->B == 1) cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)c->n, (int)c->k, 1.0f, c->wd, (int)c->k, c->x, 1, 0.0f, c->y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->B, (int)c->n, (int)c->k, 1.0f, c->x, (int)c->k, c->wd,
                    (int)c->k, 0.0f, c->y, (int)c->n);
}
static void run_own_dense(void *p)
{
    ctx *c = p;
    sh_dense_linear(c->wd, c->n, c->k, c->x, 1, NULL, c->y, c->nt, SH_SPMM_AUTO);
}

int main(int argc, char **argv)
{
    int threads = 1, runs = 15;
    int64_t n = 4096, k = 4096;
    int batches[8] = {1, 8, 64}, nbat = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cold")) cold = 1;
        else if (!strcmp(argv[i], "--cpu")) cputime = 1;
        else if (!strcmp(argv[i], "--n") && i + 1 < argc) n = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--k") && i + 1 < argc) k = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--batches") && i + 1 < argc) {
            nbat = 0;
            for (char *s = strtok(argv[++i], ","); s && nbat < 8; s = strtok(NULL, ",")) batches[nbat++] = atoi(s);
        } else {
            fprintf(stderr, "usage: %s [--threads N] [--runs N] [--cold] [--cpu] [--n N] [--k K] [--batches 1,8,64]\n", argv[0]);
            return 2;
        }
    }
    openblas_set_num_threads(threads);
    flushbuf = malloc(flushn);
    memset(flushbuf, 1, flushn);
    sh_error err = {0};
    float *dense = malloc(sizeof(float) * (size_t)(n * k));
    float *w90 = malloc(sizeof(float) * (size_t)(n * k));
    float *wb90 = malloc(sizeof(float) * (size_t)(n * k));
    for (int64_t i = 0; i < n * k; i++) {
        dense[i] = rndf();
        w90[i] = (rnd() % 10 == 0) ? dense[i] : 0.0f; /* 90 % unstructured */
    }
    for (int64_t i = 0; i < n * k; i += 8) { /* 90 % in 1x8 blocks */
        int keep = rnd() % 10 == 0;
        for (int64_t j = i; j < i + 8 && j < n * k; j++) wb90[j] = keep ? dense[j] : 0.0f;
    }
    struct {
        const char *name;
        sh_format fmt;
        sh_sparse_opts o;
        const float *src;
        sh_tensor *t;
    } fm[] = {
        {"csr.90%", SH_CSR, {0}, w90, NULL},
        {"bcsr1x8.90%blk", SH_BCSR, {.block = 8}, wb90, NULL},
        {"nm2:4", SH_NM, {.n = 2, .m = 4, .enforce = 1}, dense, NULL},
        {"nm4:8", SH_NM, {.n = 4, .m = 8, .enforce = 1}, dense, NULL},
    };
    int nfm = (int)(sizeof fm / sizeof fm[0]);
    double load = 0;
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (fscanf(la, "%lf", &load) != 1) load = 0;
        fclose(la);
    }
    printf("# bench_sparse: [%lld,%lld] Linear, %d thread(s), %d runs (median %s), %s cache, load avg %.1f on 2 cores "
           "(shared, noisy machine)\n",
           (long long)n, (long long)k, threads, runs, cputime ? "process CPU ms" : "wall ms", cold ? "cold (96 MB flush before each run)" : "hot", load);
    printf("bytes dense.f32 %zu\n", (size_t)(n * k * 4));
    for (int f = 0; f < nfm; f++) {
        if (sh_sparse_pack(fm[f].fmt, fm[f].src, n, k, &fm[f].o, &fm[f].t, &err)) {
            fprintf(stderr, "pack %s: %s\n", fm[f].name, err.msg);
            return 1;
        }
        sh_sparse_info info;
        sh_sparse_get_info(fm[f].t, &info, &err);
        printf("bytes %s %zu (%.2f%% of dense, %lld stored values, %.2f bytes/stored value)\n", fm[f].name, info.bytes,
               100.0 * info.bytes / (n * k * 4.0), (long long)info.stored, (double)info.bytes / info.stored);
    }
    printf("%-36s %10s %10s %7s\n", "name", "shrink", "peer", "ratio");
    int64_t bmax = 1;
    for (int b = 0; b < nbat; b++) bmax = batches[b] > bmax ? batches[b] : bmax;
    float *x = malloc(sizeof(float) * (size_t)(bmax * k)), *y = malloc(sizeof(float) * (size_t)(bmax * n));
    for (int64_t i = 0; i < bmax * k; i++) x[i] = rndf();
    for (int b = 0; b < nbat; b++) {
        int64_t B = batches[b];
        for (int f = 0; f < nfm; f++) {
            ctx cs = {fm[f].t, NULL, x, y, n, k, B, threads, NULL};
            cs.ws = malloc(sh_spmm_workspace(fm[f].t, B, threads) + 64);
            cs.ws = (void *)(((uintptr_t)cs.ws + 63) & ~(uintptr_t)63); /* leaked: a bench */
            ctx cb = {NULL, fm[f].src, x, y, n, k, B, threads, NULL};
            double med[3];
            char name[64];
            if (B == 1) {
                run_fn fns[3] = {run_sparse, run_blas, run_own_dense};
                void *cx[3] = {&cs, &cb, &cb};
                measure(runs, 3, fns, cx, med);
                int own = med[2] < med[1];
                double peer = own ? med[2] : med[1];
                snprintf(name, sizeof name, "%s.b1.t%d.vs.%s", fm[f].name, threads, own ? "own-avx512-gemv" : "openblas-sgemv");
                printf("%-36s %10.3f %10.3f %7.2f   (openblas %.3f, own dense %.3f)\n", name, med[0], peer, peer / med[0],
                       med[1], med[2]);
            } else {
                run_fn fns[2] = {run_sparse, run_blas};
                void *cx[2] = {&cs, &cb};
                measure(runs, 2, fns, cx, med);
                snprintf(name, sizeof name, "%s.b%lld.t%d.vs.openblas-sgemm", fm[f].name, (long long)B, threads);
                printf("%-36s %10.3f %10.3f %7.2f\n", name, med[0], med[1], med[1] / med[0]);
            }
            fflush(stdout);
        }
    }
    return 0;
}
