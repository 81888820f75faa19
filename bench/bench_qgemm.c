/* bench_qgemm.c - integer kernel benchmarks (not part of make test; run
 * bench/bench_qgemm.sh).  One line per measurement, "name shrink peer ratio",
 * medians of several runs, the peer measured in the same run:
 *
 *   int8 GEMM M=N=K=1024, one thread, GOP/s (2*M*N*K ops): shrink u8 x s8 ->
 *   s32 (and s8 x s8) vs oneDNN's matmul primitive with the same types (its
 *   weights reordered once to the layout it prefers, as shrink packs once).
 *
 *   int4 (q4_0) GEMV 4096x4096, one thread, weights out of cache (several
 *   matrices cycled, > the 32 MiB L3): GB/s of weight bytes vs the read
 *   bandwidth of a streaming sum over a buffer of the same total size.
 */
#include <dnnl.h>
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops/qgemm.h"

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmpd);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* CPU time of the calling thread: what the kernel consumed even when the
 * (shared, loaded) machine time-slices it; wall time is reported too. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rs = 88172645463325252ull;
static uint32_t rnd(void)
{
    rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
    return (uint32_t)(rs >> 32);
}

#define CK(x)                                                                        \
    do {                                                                             \
        dnnl_status_t s_ = (x);                                                      \
        if (s_ != dnnl_success) { fprintf(stderr, "%s: %d\n", #x, (int)s_); exit(1); } \
    } while (0)

/* oneDNN s8/u8 matmul, set up once (weights reordered to the layout the
 * primitive prefers), then run by peer_run. */
typedef struct {
    dnnl_engine_t eng;
    dnnl_stream_t st;
    dnnl_primitive_desc_t pd, rpd;
    dnnl_primitive_t prim, reo;
    dnnl_memory_t am, bpm, bm, cm;
} peer_t;

static void peer_init(peer_t *p, int M, int N, int K, const void *A, int a_signed, const int8_t *B, int32_t *C)
{
    CK(dnnl_engine_create(&p->eng, dnnl_cpu, 0));
    CK(dnnl_stream_create(&p->st, p->eng, dnnl_stream_default_flags));
    dnnl_memory_desc_t a_md, b_md, bplain_md, c_md;
    dnnl_dims_t ad = {M, K}, bd = {K, N}, cd = {M, N};
    CK(dnnl_memory_desc_init_by_tag(&a_md, 2, ad, a_signed ? dnnl_s8 : dnnl_u8, dnnl_ab));
    CK(dnnl_memory_desc_init_by_tag(&b_md, 2, bd, dnnl_s8, dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&bplain_md, 2, bd, dnnl_s8, dnnl_ba)); /* B[n][k] */
    CK(dnnl_memory_desc_init_by_tag(&c_md, 2, cd, dnnl_s32, dnnl_ab));
    dnnl_matmul_desc_t mm;
    CK(dnnl_matmul_desc_init(&mm, &a_md, &b_md, NULL, &c_md));
    CK(dnnl_primitive_desc_create(&p->pd, &mm, NULL, p->eng, NULL));
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(p->pd, dnnl_query_weights_md, 0);
    CK(dnnl_memory_create(&p->am, &a_md, p->eng, (void *)A));
    CK(dnnl_memory_create(&p->bpm, &bplain_md, p->eng, (void *)B));
    CK(dnnl_memory_create(&p->bm, wmd, p->eng, DNNL_MEMORY_ALLOCATE));
    CK(dnnl_memory_create(&p->cm, &c_md, p->eng, C));
    CK(dnnl_reorder_primitive_desc_create(&p->rpd, &bplain_md, p->eng, wmd, p->eng, NULL));
    CK(dnnl_primitive_create(&p->reo, p->rpd));
    dnnl_exec_arg_t rargs[2] = {{DNNL_ARG_FROM, p->bpm}, {DNNL_ARG_TO, p->bm}};
    CK(dnnl_primitive_execute(p->reo, p->st, 2, rargs));
    CK(dnnl_stream_wait(p->st));
    CK(dnnl_primitive_create(&p->prim, p->pd));
}

static void peer_run(peer_t *p)
{
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, p->am}, {DNNL_ARG_WEIGHTS, p->bm}, {DNNL_ARG_DST, p->cm}};
    CK(dnnl_primitive_execute(p->prim, p->st, 3, args));
    CK(dnnl_stream_wait(p->st));
}

static void peer_free(peer_t *p)
{
    dnnl_primitive_destroy(p->prim);
    dnnl_primitive_destroy(p->reo);
    dnnl_primitive_desc_destroy(p->rpd);
    dnnl_primitive_desc_destroy(p->pd);
    dnnl_memory_destroy(p->am);
    dnnl_memory_destroy(p->bpm);
    dnnl_memory_destroy(p->bm);
    dnnl_memory_destroy(p->cm);
    dnnl_stream_destroy(p->st);
    dnnl_engine_destroy(p->eng);
}

/* Peak of vpdpbusd on this core right now (16 independent zmm chains, as
 * named variables so they stay in registers): the ceiling the GEMM is
 * compared with when the machine is loaded. */
__attribute__((target("avx512f,avx512vnni"), noinline)) static double vnni_peak(void)
{
    __m512i a = _mm512_set1_epi32(0x01020304), b = _mm512_set1_epi32(0x05060708);
#define DC(i) __m512i c##i = _mm512_set1_epi32(i);
    DC(0) DC(1) DC(2) DC(3) DC(4) DC(5) DC(6) DC(7) DC(8) DC(9) DC(10) DC(11) DC(12) DC(13) DC(14) DC(15)
    long iters = 1000000;
    double t0 = cpu_now();
    for (long it = 0; it < iters; it++) {
        __asm__ volatile("" : "+v"(a));
#define D(i) c##i = _mm512_dpbusd_epi32(c##i, a, b);
        D(0) D(1) D(2) D(3) D(4) D(5) D(6) D(7) D(8) D(9) D(10) D(11) D(12) D(13) D(14) D(15)
    }
    double t = cpu_now() - t0;
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                                 _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
    s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11)),
                                             _mm512_add_epi32(_mm512_add_epi32(c12, c13), _mm512_add_epi32(c14, c15))));
    volatile int sink = _mm512_reduce_add_epi32(s);
    (void)sink;
    return 16.0 * 128.0 * (double)iters / t * 1e-9;
}

static double g_peak; /* vnni_peak_probe of this run */

static void bench_gemm(int a_signed, int runs)
{
    int M = 1024, N = 1024, K = 1024;
    uint8_t *A = malloc((size_t)M * K);
    int8_t *B = malloc((size_t)N * K);
    int32_t *C = malloc((size_t)M * N * 4), *D = malloc((size_t)M * N * 4);
    for (int i = 0; i < M * K; i++) A[i] = (uint8_t)rnd();
    for (int i = 0; i < N * K; i++) B[i] = (int8_t)rnd();
    sh_error err = {0};
    sh_qgemm_b *pb = NULL;
    if (sh_qgemm_pack_b(B, N, K, K, -1, &pb, &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    sh_qgemm_epi e = {SH_I32, 0, 1, NULL, NULL, 0, 0, 0};
    peer_t peer;
    peer_init(&peer, M, N, K, A, a_signed, B, D);
    /* alternate the two so both see the same machine load */
    double t[64], u[64], tw[64], uw[64];
    for (int r = -2; r < runs; r++) {
        double w0 = sh_now(), t0 = cpu_now();
        sh_qgemm(A, a_signed, M, K, pb, &e, C, N, 1, &err);
        double w1 = sh_now(), t1 = cpu_now();
        peer_run(&peer);
        double w2 = sh_now(), t2 = cpu_now();
        if (r >= 0) t[r] = t1 - t0, u[r] = t2 - t1, tw[r] = w1 - w0, uw[r] = w2 - w1;
    }
    peer_free(&peer);
    double ts = median(t, runs), td = median(u, runs), tsw = median(tw, runs), tdw = median(uw, runs);
    int same = memcmp(C, D, (size_t)M * N * 4) == 0;
    double ops = 2.0 * M * N * K;
    const char *nm = a_signed ? "int8_gemm_s8s8_1024" : "int8_gemm_u8s8_1024";
    printf("%-34s %9.1f %9.1f %6.2fx   GOP/s per thread-CPU-second, 1 thread, %s path, s32 results %s; %.0f %% of the "
           "vpdpbusd peak (oneDNN %.0f %%)\n", nm, ops / ts * 1e-9, ops / td * 1e-9, td / ts, sh_cpu_level_name(pb->level),
           same ? "identical" : "DIFFER", g_peak > 0 ? 100 * ops / ts * 1e-9 / g_peak : 0,
           g_peak > 0 ? 100 * ops / td * 1e-9 / g_peak : 0);
    printf("%-28s_wall %9.1f %9.1f %6.2fx   GOP/s wall clock (machine load shows here)\n", nm, ops / tsw * 1e-9,
           ops / tdw * 1e-9, tdw / tsw);
    fflush(stdout);
    sh_qgemm_b_free(pb);
    free(A); free(B); free(C); free(D);
}

/* Streaming read: 4 independent AVX2 sums (the read bandwidth one core gets). */
__attribute__((target("avx2"), noinline)) static double stream_sum(const float *p, size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 32 <= n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(p + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(p + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(p + i + 24));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    float v[8];
    _mm256_storeu_ps(v, s);
    return (double)v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
}

/* The same with AVX-512: 8 independent zmm sums, 512 bytes per step, and
 * optionally a software prefetch `pf` bytes ahead (0: none). */
__attribute__((target("avx512f"), noinline)) static double stream_sum512(const float *p, size_t n, size_t pf)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        if (pf) {
            _mm_prefetch((const char *)(p + i) + pf, _MM_HINT_T0);
            _mm_prefetch((const char *)(p + i) + pf + 64, _MM_HINT_T0);
            _mm_prefetch((const char *)(p + i) + pf + 128, _MM_HINT_T0);
            _mm_prefetch((const char *)(p + i) + pf + 192, _MM_HINT_T0);
            _mm_prefetch((const char *)(p + i) + pf + 256, _MM_HINT_T0);
            _mm_prefetch((const char *)(p + i) + pf + 320, _MM_HINT_T0);
            _mm_prefetch((const char *)(p + i) + pf + 384, _MM_HINT_T0);
            _mm_prefetch((const char *)(p + i) + pf + 448, _MM_HINT_T0);
        }
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(p + i));
        s1 = _mm512_add_ps(s1, _mm512_loadu_ps(p + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_loadu_ps(p + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_loadu_ps(p + i + 48));
        s4 = _mm512_add_ps(s4, _mm512_loadu_ps(p + i + 64));
        s5 = _mm512_add_ps(s5, _mm512_loadu_ps(p + i + 80));
        s6 = _mm512_add_ps(s6, _mm512_loadu_ps(p + i + 96));
        s7 = _mm512_add_ps(s7, _mm512_loadu_ps(p + i + 112));
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)),
                             _mm512_add_ps(_mm512_add_ps(s4, s5), _mm512_add_ps(s6, s7)));
    return (double)_mm512_reduce_add_ps(s);
}

/* streaming read of n floats by nt threads (each a contiguous part); kind 0:
 * AVX2 4 sums, 1: AVX-512 8 sums, 2: AVX-512 + prefetch 2 KB ahead */
static double stream_par(const float *p, size_t n, int nt, int kind)
{
    double tot = 0;
#pragma omp parallel num_threads(nt) reduction(+ : tot)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        size_t a = n * (size_t)t / (size_t)T / 128 * 128, b = n * (size_t)(t + 1) / (size_t)T / 128 * 128;
        tot += kind == 0 ? stream_sum(p + a, b - a) : stream_sum512(p + a, b - a, kind == 2 ? 2048 : 0);
    }
    return tot;
}

static double cpu_proc(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* int4 GEMV with nt threads, weights out of cache, vs the best of three
 * streaming reads of the same bytes with the same threads (the DRAM read
 * limit measured in the same run).  fmt: any grouped format, its _g64 /
 * _g128 row or a _ch / _t row. */
static void bench_gemv(int runs, sh_format fmt, int nt)
{
    int N = 4096, K = 4096, NM0 = getenv("BENCH_NM") ? atoi(getenv("BENCH_NM")) : 8, NM = NM0 < 1 ? 1 : NM0 > 32 ? 32 : NM0;
    /* _ch / _t rows: whole-tensor buffers (sh_qrows_quantize) */
    int rows_fmt = sh_format_get(fmt)->packed;
    size_t rb = rows_fmt ? 0 : sh_format_bytes(fmt, K), mb = rows_fmt ? sh_qrows_bytes(fmt, N, K) : rb * N;
    unsigned char *w = malloc(mb * NM);
    float *row = malloc((size_t)K * 4 * (rows_fmt ? N : 1)), *x = malloc((size_t)K * 4), *y = malloc((size_t)N * 4);
    for (int i = 0; i < K; i++) x[i] = (float)((int)(rnd() % 2001) - 1000) / 1000.0f;
    sh_error err = {0};
    for (int m = 0; m < NM; m++)
        if (rows_fmt) {
            for (size_t i = 0; i < (size_t)N * K; i++) row[i] = (float)((int)(rnd() % 2001) - 1000) / 1000.0f;
            sh_tensor *t = NULL;
            if (sh_qrows_quantize(fmt, row, N, K, &t, &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
            memcpy(w + m * mb, t->data, mb);
            sh_tensor_free(t);
        } else
            for (int n = 0; n < N; n++) {
                for (int k = 0; k < K; k++) row[k] = (float)((int)(rnd() % 2001) - 1000) / 1000.0f;
                sh_format_get(fmt)->from_f32(row, w + m * mb + n * rb, K);
            }
    sh_qweight *qw[32];
    for (int m = 0; m < NM; m++)
        if (sh_qweight_new(w + m * mb, fmt, N, K, -1, &qw[m], &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    size_t nf = qw[0]->bytes / 4;
    int nr = runs * NM;
    double *tg = malloc(sizeof(double) * (size_t)nr * 8);
    double *ts[3] = {tg + nr * 2, tg + nr * 4, tg + nr * 6}, *tgw = tg + nr;
    volatile double sink = 0;
    for (int r = -NM; r < nr; r++) {
        int m = (r + NM) % NM;
        double c0 = nt == 1 ? cpu_now() : cpu_proc(), w0 = sh_now();
        sh_qweight_matmul(x, 1, qw[m], NULL, y, nt, &err);
        double c1 = nt == 1 ? cpu_now() : cpu_proc(), w1 = sh_now();
        if (r >= 0) tg[r] = (c1 - c0) / nt, tgw[r] = w1 - w0;
        for (int kd = 0; kd < 3; kd++) {
            int m2 = (r + NM + 1 + kd) % NM;
            double s0 = nt == 1 ? cpu_now() : cpu_proc();
            sink += stream_par((const float *)qw[m2]->data, nf, nt, kd);
            double s1 = nt == 1 ? cpu_now() : cpu_proc();
            if (r >= 0) ts[kd][r] = (s1 - s0) / nt;
        }
    }
    (void)sink;
    double g = median(tg, nr), gw = median(tgw, nr), sb[3], best = 0;
    const char *kn[3] = {"avx2-4sum", "avx512-8sum", "avx512+prefetch"};
    int bk = 0;
    for (int kd = 0; kd < 3; kd++) {
        sb[kd] = (double)qw[0]->bytes / median(ts[kd], nr) * 1e-9;
        if (sb[kd] > best) best = sb[kd], bk = kd;
    }
    double gbs = (double)qw[0]->bytes / g * 1e-9;
    char nm[64];
    snprintf(nm, sizeof nm, "%s_gemv_4096x4096_t%d", sh_format_get(fmt)->name, nt);
    printf("%-34s %9.1f %9.1f %6.2fx   GB/s of weights vs best streaming read (%s; %.1f / %.1f / %.1f GB/s), CPU time, %.3f ms/GEMV (wall %.3f), %d x %.2f MB cycled (file %zu bytes), %s\n",
           nm, gbs, best, gbs / best, kn[bk], sb[0], sb[1], sb[2], g * 1e3, gw * 1e3, NM, qw[0]->bytes / 1e6, mb,
           qw[0]->packed ? (sh_cpu_level() == SH_CPU_LEVEL_AVX512 ? "avx512 packed" : sh_cpu_level() ? "avx2 reading packed" : "ref reading packed")
                         : sh_cpu_level_name(qw[0]->level));
    fflush(stdout);
    free(tg);
    for (int m = 0; m < NM; m++) sh_qweight_free(qw[m]);
    free(w); free(row); free(x); free(y);
}

static void bench_gemv_old(int runs)
{
    int N = 4096, K = 4096, NM0 = getenv("BENCH_NM") ? atoi(getenv("BENCH_NM")) : 8, NM = NM0 < 1 ? 1 : NM0 > 32 ? 32 : NM0;
    size_t rb = sh_format_bytes(SH_Q4_0, K), mb = rb * N; /* 9.4 MB per matrix */
    unsigned char *w = malloc(mb * NM);
    float *row = malloc((size_t)K * 4), *x = malloc((size_t)K * 4), *y = malloc((size_t)N * 4);
    for (int i = 0; i < K; i++) x[i] = (float)((int)(rnd() % 2001) - 1000) / 1000.0f;
    for (int m = 0; m < NM; m++)
        for (int n = 0; n < N; n++) {
            for (int k = 0; k < K; k++) row[k] = (float)((int)(rnd() % 2001) - 1000) / 1000.0f;
            sh_q4_0_from_f32(row, w + m * mb + n * rb, K);
        }
    sh_error err = {0};
    /* prepared once, as a model load would (16-row interleave on AVX-512) */
    sh_qweight *qw[32];
    for (int m = 0; m < NM; m++)
        if (sh_qweight_new(w + m * mb, SH_Q4_0, N, K, -1, &qw[m], &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    double t[256], u[256];
    int nr = runs * NM;
    size_t nf = mb / 4;
    volatile double sink = 0;
    /* alternate GEMV and streaming sum over the same (cycled) bytes */
    double tw[256], uw[256];
    for (int r = -NM; r < nr; r++) {
        int m = (r + NM) % NM, m2 = (r + NM + NM / 2) % NM;
        double w0 = sh_now(), t0 = cpu_now();
        sh_qweight_matmul(x, 1, qw[m], NULL, y, 1, &err);
        double w1 = sh_now(), t1 = cpu_now();
        sink += stream_sum((const float *)qw[m2]->data, nf);
        double w2 = sh_now(), t2 = cpu_now();
        if (r >= 0) t[r] = t1 - t0, u[r] = t2 - t1, tw[r] = w1 - w0, uw[r] = w2 - w1;
    }
    (void)sink;
    double tg = median(t, nr), tb = median(u, nr), tgw = median(tw, nr), tbw = median(uw, nr);
    double gbs = (double)mb / tg * 1e-9, bw = (double)mb / tb * 1e-9;
    printf("%-34s %9.1f %9.1f %6.2fx   GB/s of weights (thread CPU time) vs streaming-sum read GB/s, 1 thread, %.3f ms/GEMV, %d x %.1f MB cycled, %s path\n",
           "q4_0_gemv_4096x4096", gbs, bw, gbs / bw, tg * 1e3, NM, mb / 1e6, qw[0]->packed ? "avx512 packed" : sh_cpu_level_name(qw[0]->level));
    printf("%-34s %9.1f %9.1f %6.2fx   GB/s wall clock, %.3f ms/GEMV\n", "q4_0_gemv_4096x4096_wall",
           (double)mb / tgw * 1e-9, (double)mb / tbw * 1e-9, tbw / tgw, tgw * 1e3);
    fflush(stdout);
    for (int m = 0; m < NM; m++) sh_qweight_free(qw[m]);
    free(w); free(row); free(x); free(y);
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 11;
    if (runs < 1) runs = 1;
    if (runs > 30) runs = 30;
    const char *only = argc > 2 ? argv[2] : "";
    printf("%-34s %9s %9s %7s\n", "name", "shrink", "peer", "ratio");
    if (!*only || strstr("gemm", only)) {
        if (sh_cpu_features() & SH_CPU_AVX512VNNI) {
            double p[7];
            for (int i = 0; i < 7; i++) p[i] = vnni_peak();
            g_peak = median(p, 7);
            printf("%-34s %9.1f %9s %7s   GOP/s of a vpdpbusd-only loop now (median of 7; the ceiling under the current load)\n",
                   "vnni_peak_probe", median(p, 7), "-", "-");
        }
        bench_gemm(0, runs);
        bench_gemm(1, runs);
    }
    if (!*only || strstr("gemv", only)) {
        bench_gemv(runs, SH_Q4_0, 1);
        bench_gemv(runs, SH_Q4_1, 1);
        bench_gemv(runs, SH_Q4_0, 2);
        bench_gemv(runs, SH_Q4_1, 2);
    }
    if (!strcmp(only, "gemvrows")) { /* one scale per 32 / 128 / row: bytes and GEMV time */
        sh_format fs[] = {SH_Q4_0, SH_Q4_0_G128, SH_Q4_0_CH, SH_Q4_1_CH, SH_Q8_0_CH, SH_Q3_0_CH, SH_Q2_1_CH};
        int nt = getenv("BENCH_NT") ? atoi(getenv("BENCH_NT")) : 1;
        const char *sel = getenv("BENCH_FMT"); /* e.g. "q4_0,q4_0_ch": only these */
        for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) {
            char nm[40];
            snprintf(nm, sizeof nm, ",%s,", sh_format_get(fs[i])->name);
            char list[256];
            snprintf(list, sizeof list, ",%s,", sel ? sel : "");
            if (!sel || strstr(list, nm)) bench_gemv(runs, fs[i], nt);
        }
    }
    (void)bench_gemv_old;
    return 0;
}
