/* qgemm.c - drivers of the integer kernels: packing, argument checks, the
 * per-channel epilogue constants, threading (OpenMP over blocks of M and N)
 * and the choice of the path (ref / avx2 / avx512) by the CPU level.
 * Maths and layouts: qgemm.h. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ops/ops.h"
#include "ops/qgemm.h"

void sh_qgemm_b_free(sh_qgemm_b *b)
{
    if (!b) return;
    free(b->data);
    free(b->colsum);
    free(b);
}

int sh_qgemm_pack_b(const int8_t *B, int64_t N, int64_t K, int64_t ldb, int level, sh_qgemm_b **out, sh_error *err)
{
    *out = NULL;
    if (!B || N <= 0 || K <= 0 || ldb < K)
        return sh_err(err, SH_EINVAL, "qgemm pack: bad B [%lld,%lld] ldb %lld", (long long)N, (long long)K,
                      (long long)ldb);
    if (K > (1 << 24))
        return sh_err(err, SH_EINVAL, "qgemm pack: K = %lld too large for int32 accumulation", (long long)K);
    int best = sh_cpu_level();
    if (level < 0 || level > best) level = best;
    sh_qgemm_b *b = calloc(1, sizeof *b);
    if (!b) return sh_err(err, SH_ENOMEM, "qgemm pack: out of memory");
    b->level = level;
    b->N = N;
    b->K = K;
    b->colsum = malloc((size_t)N * sizeof(int32_t));
    if (!b->colsum) { free(b); return sh_err(err, SH_ENOMEM, "qgemm pack: out of memory"); }
    for (int64_t n = 0; n < N; n++) {
        int32_t s = 0;
        for (int64_t k = 0; k < K; k++) s += B[n * ldb + k];
        b->colsum[n] = s;
    }
    int rc = SH_OK;
    if (level == SH_CPU_LEVEL_AVX512) rc = sh_qgemm_avx512_pack(B, ldb, b);
    else if (level == SH_CPU_LEVEL_AVX2) rc = sh_qgemm_avx2_pack(B, ldb, b);
    else {
        b->Np = N;
        b->Kp = K;
        b->data = malloc((size_t)(N * K));
        if (b->data)
            for (int64_t n = 0; n < N; n++) memcpy((int8_t *)b->data + n * K, B + n * ldb, (size_t)K);
        else rc = SH_ENOMEM;
    }
    if (rc != SH_OK || !b->data) {
        sh_qgemm_b_free(b);
        return sh_err(err, SH_ENOMEM, "qgemm pack: out of memory for B [%lld,%lld]", (long long)N, (long long)K);
    }
    *out = b;
    return SH_OK;
}

int sh_qgemm(const void *A, int a_signed, int64_t M, int64_t lda, const sh_qgemm_b *B, const sh_qgemm_epi *epi,
             void *C, int64_t ldc, int nthreads, sh_error *err)
{
    if (!A || !B || !epi || !C || M < 0 || lda < B->K || ldc < B->N)
        return sh_err(err, SH_EINVAL, "qgemm: bad arguments (M %lld, K %lld, N %lld, lda %lld, ldc %lld)",
                      (long long)M, (long long)B->K, (long long)B->N, (long long)lda, (long long)ldc);
    if (epi->out != SH_I32 && epi->out != SH_F32 && epi->out != SH_U8 && epi->out != SH_I8)
        return sh_err(err, SH_EUNSUPPORTED, "qgemm: output format %s (expected i32, f32, u8 or i8)",
                      sh_format_get(epi->out) ? sh_format_get(epi->out)->name : "?");
    if ((epi->out == SH_U8 || epi->out == SH_I8) && !(epi->y_scale > 0.0f))
        return sh_err(err, SH_EINVAL, "qgemm: output scale %g must be > 0", (double)epi->y_scale);
    if (M == 0) return SH_OK;
    int64_t N = B->N;
    /* the column scales: on the stack for the usual sizes, so that a small
     * call does not allocate */
    float sbuf[512];
    float *scale = N <= 512 ? sbuf : malloc((size_t)N * sizeof(float));
    if (!scale) return sh_err(err, SH_ENOMEM, "qgemm: out of memory");
    for (int64_t n = 0; n < N; n++) scale[n] = epi->a_scale * (epi->b_scale ? epi->b_scale[n] : 1.0f);
    sh_qepi_k e = {epi->out, epi->a_zero + (a_signed ? 128 : 0), B->colsum, scale, epi->bias, epi->relu,
                   epi->out == SH_U8 || epi->out == SH_I8 ? 1.0f / epi->y_scale : 1.0f, epi->y_zero};
    int level = B->level;
    int64_t nr = level == SH_CPU_LEVEL_AVX512 ? SH_QGEMM_NR_AVX512 : SH_QGEMM_NR_AVX2;
    /* tasks: blocks of rows x blocks of columns */
    int64_t mb = 256, nbk = nr * 8;
    int64_t tm = (M + mb - 1) / mb, tn = (N + nbk - 1) / nbk;
    int nt = nthreads > 0 ? nthreads : omp_get_max_threads();
    /* small products (batch-1 layers, up to ~8M multiply-adds, ~40 us on
     * one core) run inline on the calling thread: an OpenMP region saves
     * little there and gives latency spikes of milliseconds when the other
     * core is busy */
    int par = nt > 1 && (double)M * (double)N * (double)B->K >= 8388608.0;
    /* ... except a weight of 1 MiB and more (a transformer's decode GEMV):
     * streaming it is memory-bound, and two cores stream more than one */
    if (nt > 1 && (double)N * (double)B->K >= 1048576.0) par = 1;
    if (level == SH_CPU_REF) {
        int64_t rows = 16, tr = (M + rows - 1) / rows;
        if (!par || tr < 2) {
            for (int64_t m0 = 0; m0 < M; m0 += rows)
                sh_qgemm_ref_run(A, a_signed, lda, m0, m0 + rows < M ? m0 + rows : M, B, epi->a_zero, &e, C, ldc);
        } else {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
            for (int64_t t = 0; t < tr; t++) {
                int64_t m0 = t * rows, m1 = m0 + rows < M ? m0 + rows : M;
                sh_qgemm_ref_run(A, a_signed, lda, m0, m1, B, epi->a_zero, &e, C, ldc);
            }
        }
    } else if (!par || tm * tn < 2) {
        for (int64_t m0 = 0; m0 < M; m0 += mb) {
            int64_t m1 = m0 + mb < M ? m0 + mb : M;
            if (level == SH_CPU_LEVEL_AVX512)
                sh_qgemm_avx512_run(A, a_signed, lda, m0, m1, 0, N, B, epi->a_zero, &e, C, ldc);
            else
                sh_qgemm_avx2_run(A, a_signed, lda, m0, m1, 0, N, B, epi->a_zero, &e, C, ldc);
        }
    } else {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
        for (int64_t t = 0; t < tm * tn; t++) {
            int64_t i = t / tn, j = t % tn;
            int64_t m0 = i * mb, m1 = m0 + mb < M ? m0 + mb : M;
            int64_t n0 = j * nbk, n1 = n0 + nbk < N ? n0 + nbk : N;
            const uint8_t *a = A;
            if (level == SH_CPU_LEVEL_AVX512)
                sh_qgemm_avx512_run(a, a_signed, lda, m0, m1, n0, n1, B, epi->a_zero, &e, C, ldc);
            else
                sh_qgemm_avx2_run(a, a_signed, lda, m0, m1, n0, n1, B, epi->a_zero, &e, C, ldc);
        }
    }
    if (scale != sbuf) free(scale);
    return SH_OK;
}

/* ---- low-bit weight GEMM -------------------------------------------------- */

/* Below this many multiply-adds a call runs on the calling thread: entering
 * an OpenMP team costs microseconds, more than such a product (stories260K
 * decode: 64 x 64 and 172 x 64 weights).  QSMALL: activation blocks that go
 * on the stack instead of malloc. */
#define QPAR_MIN (1 << 18)
#define QSMALL 256

static void qrow_quant(const float *X, int64_t K, int64_t nb, int level, sh_block_q8_0 *xq, int32_t *xs, int64_t m)
{
    if (level == SH_CPU_LEVEL_AVX512) sh_quantize_q8_0_sums_avx512(X + m * K, xq + m * nb, xs + m * nb, K);
    else sh_quantize_q8_0_sums(X + m * K, xq + m * nb, xs + m * nb, K);
}

/* Rows [n0, n0 + chunk) of W for every activation row. */
static void qrow_task(int64_t M, const void *W, sh_format wf, int64_t N, int64_t K, int64_t nb, int level,
                      const sh_block_q8_0 *xq, const int32_t *xs, const float *bias, float *Y, int64_t n0, int64_t chunk)
{
    int64_t n1 = n0 + chunk < N ? n0 + chunk : N;
    for (int64_t m = 0; m < M; m++) {
        const sh_block_q8_0 *q = xq + m * nb;
        const int32_t *s = xs + m * nb;
        float *y = Y + m * N;
        int done = 0;
        if (level == SH_CPU_LEVEL_AVX512) done = sh_qdot_rows_avx512(W, wf, K, n0, n1, q, s, bias, y);
        else if (level == SH_CPU_LEVEL_AVX2) done = sh_qdot_rows_avx2(W, wf, K, n0, n1, q, s, bias, y);
        if (!done) sh_qdot_rows_ref(W, wf, K, n0, n1, q, s, bias, y);
    }
}

int sh_qmatmul(const float *X, int64_t M, const void *W, sh_format wf, int64_t N, int64_t K, const float *bias,
               float *Y, int nthreads, int level, sh_error *err)
{
    const sh_format_traits *ft = sh_format_get(wf);
    if (!sh_format_is_grouped(wf))
        return sh_err(err, SH_EUNSUPPORTED, "qmatmul: weight format %s is not a grouped quantized format",
                      ft ? ft->name : "?");
    if (!X || !W || !Y || M < 0 || N <= 0 || K <= 0 || K % SH_QK)
        return sh_err(err, SH_ESHAPE, "qmatmul: X [%lld,%lld] x W [%lld,%lld] (%s): K must be a positive multiple of %d",
                      (long long)M, (long long)K, (long long)N, (long long)K, ft->name, SH_QK);
    int best = sh_cpu_level();
    if (level < 0 || level > best) level = best;
    int64_t nb = K / SH_QK;
    sh_block_q8_0 xq_s[QSMALL];
    int32_t xs_s[QSMALL];
    int small = M * nb <= QSMALL;
    sh_block_q8_0 *xq = small ? xq_s : malloc((size_t)(M * nb) * sizeof *xq);
    int32_t *xs = small ? xs_s : malloc((size_t)(M * nb) * sizeof *xs);
    if (!xq || !xs) {
        if (!small) free(xq), free(xs);
        return sh_err(err, SH_ENOMEM, "qmatmul: out of memory");
    }
    int nt = nthreads > 0 ? nthreads : omp_get_max_threads();
    SH_PAR_FOR(M > 1 && M * N * K >= QPAR_MIN, nt, for (int64_t m = 0; m < M; m++) qrow_quant(X, K, nb, level, xq, xs, m););
    /* chunks of rows of W per task; each task runs every activation row so a
     * chunk of W is read once from memory */
    int64_t chunk = 64, tc = (N + chunk - 1) / chunk;
    SH_PAR_FOR_S(tc > 1 && M * N * K >= QPAR_MIN, nt, schedule(dynamic, 4),
                 for (int64_t t = 0; t < tc; t++) qrow_task(M, W, wf, N, K, nb, level, xq, xs, bias, Y, t * chunk, chunk););
    if (!small) free(xq), free(xs);
    return SH_OK;
}

/* ---- prepared (packed) low-bit weights ----------------------------------- */

/* Compute traits of the grouped formats (the storage traits are rows of
 * core/format.c): the activation format a weight block meets in the integer
 * dot (vec_dot_type, as in ggml), bits per packed code, the offset `off` of
 * the unpacked codes (x = d * (u - off) + m) and whether there is a min. */
static const sh_qcompute qcompute[SH_FORMAT_COUNT] = {
    [SH_Q4_0] = {SH_Q8_0, 4, 8, 0},
    [SH_Q4_1] = {SH_Q8_0, 4, 0, 1},
    [SH_LOG4] = {SH_Q8_0, 4, 64, 0},
    [SH_Q8_0] = {SH_Q8_0, 8, 128, 0},
    [SH_Q3_0] = {SH_Q8_0, 3, 4, 0},
    [SH_Q2_1] = {SH_Q8_0, 2, 0, 1},
};

const sh_qcompute *sh_qcompute_get(sh_format wf)
{
    if ((int)wf < 0 || wf >= SH_FORMAT_COUNT || !qcompute[wf].bits) return NULL;
    return &qcompute[wf];
}

int sh_qpacked_bits(sh_format wf, int *off, int *asym)
{
    const sh_qcompute *c = sh_qcompute_get(wf);
    *off = c ? c->off : 0;
    *asym = c ? c->asym : 0;
    return c ? c->bits : 0;
}

/* Block b (32 k) of row n of W (format w->wf) as a base-format block in blk
 * (f16 header from the row's group; zero header for _ch / _t rows). */
static void row_block(const sh_qweight *w, const uint8_t *W, int64_t n, int64_t b, uint8_t *blk)
{
    sh_format bf = w->base;
    size_t bb = (size_t)sh_format_get(bf)->block_bytes, hd = bb - (size_t)sh_qrows_block_codes(bf);
    int g = 32;
    if (sh_qrows_base(w->wf, NULL) >= 0) {
        memset(blk, 0, hd);
        memcpy(blk + hd, sh_qrows_codes(W, n) + b * (int64_t)(bb - hd), bb - hd);
    } else if (sh_qbase_format(w->wf, &g) >= 0 && g > 32) {
        size_t rb = sh_format_bytes(w->wf, w->K), fb = (size_t)sh_format_get(w->wf)->block_bytes;
        const uint8_t *grp = W + (size_t)n * rb + (size_t)(b / (g / 32)) * fb;
        memcpy(blk, grp, hd);
        memcpy(blk + hd, grp + hd + (size_t)(b % (g / 32)) * (bb - hd), bb - hd);
    } else
        memcpy(blk, W + (size_t)n * (size_t)(w->K / SH_QK) * bb + (size_t)b * bb, bb);
}

/* Row group g, scale group sg: the scales (and mins) of the 16 rows at sc,
 * the codes of the group's gblk 32-blocks at cd. */
static void pack_chunk(const sh_qweight *w, const uint8_t *W, int64_t g, int64_t sg, uint8_t *sc, uint8_t *cd)
{
    int off, asym, bits = sh_qpacked_bits(w->base, &off, &asym);
    uint8_t *dst = sc;
    for (int r = 0; r < 16; r++) {
        int64_t n = g * 16 + r;
        if (n >= w->N) break;
        uint8_t blk[64];
        if (w->f32s) {
            float m, d = sh_qrows_scale(W, n, &m);
            memcpy(dst + 4 * r, &d, 4);
            if (asym) memcpy(dst + 64 + 4 * r, &m, 4);
        } else {
            row_block(w, W, n, sg * w->gblk, blk);
            memcpy(dst + 2 * r, blk, 2);
            if (asym) memcpy(dst + 32 + 2 * r, blk + 2, 2);
        }
        for (int64_t bi = 0; bi < w->gblk; bi++) {
            uint8_t *codes = cd + bi * w->cb;
            row_block(w, W, n, sg * w->gblk + bi, blk);
            uint8_t c[SH_QK];
            if (w->base == SH_LOG4)
                for (int i = 0; i < SH_QK; i++) c[i] = i < 16 ? blk[2 + i] & 15 : blk[2 + i - 16] >> 4;
            else {
                float d, m;
                sh_qblock_unpack(w->base, blk, c, &d, &m);
            }
            for (int i = 0; i < SH_QK; i++) {
                int j = i / 4, t = i % 4, at = r * 4 + t;
                switch (bits) {
                case 8: codes[j * 64 + at] = c[i]; break;
                case 4: codes[(j & 3) * 64 + at] |= (uint8_t)(c[i] << (j >= 4 ? 4 : 0)); break;
                case 2: codes[(j & 1) * 64 + at] |= (uint8_t)(c[i] << (2 * (j >> 1))); break;
                case 3:
                    codes[(j & 1) * 64 + at] |= (uint8_t)((c[i] & 3) << (2 * (j >> 1)));
                    codes[128 + at] |= (uint8_t)((c[i] >> 2) << j);
                    break;
                }
            }
        }
    }
}

void sh_qweight_free(sh_qweight *w)
{
    if (!w) return;
    free(w->data);
    free(w);
}

int sh_qweight_new(const void *W, sh_format wf, int64_t N, int64_t K, int level, sh_qweight **out, sh_error *err)
{
    *out = NULL;
    const sh_format_traits *ft = sh_format_get(wf);
    int g = 32, rows_fmt = sh_qrows_base(wf, NULL) >= 0;
    int bf = rows_fmt ? sh_qrows_base(wf, NULL) : sh_qbase_format(wf, &g);
    if (bf < 0)
        return sh_err(err, SH_EUNSUPPORTED, "qweight: format %s is not a grouped quantized format", ft ? ft->name : "?");
    if (!W || N <= 0 || K <= 0 || K % SH_QK || K % g)
        return sh_err(err, SH_ESHAPE, "qweight: W [%lld,%lld] (%s): K must be a positive multiple of %d",
                      (long long)N, (long long)K, ft->name, g);
    if (rows_fmt) {
        const sh_qrow_hdr *h = sh_qrows_hdr(W);
        if (h->magic != SH_QROW_MAGIC || h->fmt != (int32_t)wf || h->rows != N || h->cols != K)
            return sh_err(err, SH_EFORMAT, "qweight: %s buffer header disagrees with W [%lld,%lld]", ft->name,
                          (long long)N, (long long)K);
    }
    int best = sh_cpu_level();
    if (level < 0 || level > best) level = best;
    sh_qweight *w = calloc(1, sizeof *w);
    if (!w) return sh_err(err, SH_ENOMEM, "qweight: out of memory");
    w->wf = wf;
    w->base = (sh_format)bf;
    w->N = N;
    w->K = K;
    w->level = level;
    w->packed = level == SH_CPU_LEVEL_AVX512 || rows_fmt;
    int64_t nb = K / SH_QK;
    if (w->packed) {
        int off, asym, bits = sh_qpacked_bits(w->base, &off, &asym);
        w->f32s = rows_fmt;
        w->gblk = rows_fmt ? nb : g / SH_QK;
        w->hdr = (asym ? 2 : 1) * 16 * (w->f32s ? 4 : 2);
        w->cb = bits == 8 ? 512 : bits == 4 ? 256 : bits == 3 ? 192 : 128;
        int64_t ng = (N + 15) / 16, nsg = nb / w->gblk;
        w->spc = w->hdr % 64 ? 2 : 1; /* keeps the codes 64-byte aligned (also for gblk 1) */
        w->chunk = w->spc * (w->hdr + w->gblk * w->cb);
        int64_t nch = (nsg + w->spc - 1) / w->spc;
        w->bytes = (size_t)(ng * nch * w->chunk);
        w->data = aligned_alloc(64, (w->bytes + 63) / 64 * 64);
        if (w->data) {
            memset(w->data, 0, w->bytes);
            for (int64_t gi = 0; gi < ng; gi++)
                for (int64_t sg = 0; sg < nsg; sg++) {
                    uint8_t *ch = (uint8_t *)w->data + (gi * nch + sg / w->spc) * w->chunk;
                    pack_chunk(w, W, gi, sg, ch + sg % w->spc * w->hdr,
                               ch + w->spc * w->hdr + sg % w->spc * w->gblk * w->cb);
                }
        }
    } else if (g > 32) { /* _g64 / _g128 below AVX-512: base 32-blocks, each group's scale repeated (exact) */
        size_t rb = sh_format_bytes(wf, K), xb = sh_format_bytes(w->base, K);
        w->wf = w->base;
        w->bytes = xb * (size_t)N;
        w->data = malloc(w->bytes);
        if (w->data)
            for (int64_t r = 0; r < N; r++) sh_qexpand(wf, (const char *)W + r * rb, K, (char *)w->data + r * xb);
    } else {
        w->bytes = sh_format_bytes(wf, N * K);
        w->data = malloc(w->bytes);
        if (w->data) memcpy(w->data, W, w->bytes);
    }
    if (!w->data) {
        free(w);
        return sh_err(err, SH_ENOMEM, "qweight: out of memory for [%lld,%lld] %s", (long long)N, (long long)K, ft->name);
    }
    *out = w;
    return SH_OK;
}

int sh_qrows4_supported(sh_format wf)
{
    /* every granularity (32, 64, 128, per row, per tensor) of these bases */
    int b = sh_qbase_format(wf, NULL);
    if (b < 0) b = sh_qrows_base(wf, NULL);
    return sh_cpu_level() == SH_CPU_LEVEL_AVX512 && (b == SH_Q4_0 || b == SH_Q4_1 || b == SH_LOG4 || b == SH_Q8_0);
}

typedef struct prow_args {
    const sh_qweight *w;
    int64_t M, N, nb, gc, ng;
    int fast, avx2;
    const sh_block_q8_0 *xq;
    const int32_t *xs, *ioff;
    const float *da, *dsa, *bias;
    float *Y;
} prow_args;

/* Task t of sh_qweight_matmul: rows [64 t, 64 t + 64) of W for every
 * activation row. */
static void prow_task(const prow_args *a, int64_t t)
{
    const sh_qweight *w = a->w;
    int64_t M = a->M, N = a->N, nb = a->nb;
    int64_t g0 = t * a->gc, g1 = g0 + a->gc < a->ng ? g0 + a->gc : a->ng;
    int64_t m = 0;
    /* 4 rows at a time share each unpacked weight chunk */
    if (a->fast)
        for (; m + 4 <= M; m += 4)
            if (!sh_qpacked_rows4_avx512(w, g0, g1, a->xq + m * nb, a->ioff + m * nb, a->da + m * nb, a->dsa + m * nb,
                                         nb, a->bias, a->Y + m * N, N))
                break;
    for (; m < M; m++) {
        if (a->fast)
            sh_qpacked_rows_avx512(w, g0, g1, a->xq + m * nb, a->ioff + m * nb, a->da + m * nb, a->dsa + m * nb, a->bias,
                                   a->Y + m * N);
        else if (a->avx2)
            sh_qpacked_rows_avx2(w, g0, g1, a->xq + m * nb, a->ioff + m * nb, a->da + m * nb, a->dsa + m * nb, a->bias,
                                 a->Y + m * N);
        else
            sh_qpacked_rows_ref(w, g0, g1, a->xq + m * nb, a->xs + m * nb, a->bias, a->Y + m * N);
    }
}

int sh_qweight_matmul(const float *X, int64_t M, const sh_qweight *w, const float *bias, float *Y, int nthreads,
                      sh_error *err)
{
    if (!w || !X || !Y || M < 0) return sh_err(err, SH_EINVAL, "qweight matmul: bad arguments");
    if (!w->packed) return sh_qmatmul(X, M, w->data, w->wf, w->N, w->K, bias, Y, nthreads, w->level, err);
    int64_t K = w->K, N = w->N, nb = K / SH_QK, ng = (N + 15) / 16;
    int off, asym;
    sh_qpacked_bits(w->base, &off, &asym);
    int cur = sh_cpu_level(), fast = cur == SH_CPU_LEVEL_AVX512, avx2 = cur == SH_CPU_LEVEL_AVX2;
    /* small calls (decode of a small model) use the stack: no malloc */
    sh_block_q8_0 xq_s[QSMALL];
    int32_t xs_s[2 * QSMALL];
    float da_s[2 * QSMALL];
    int small = M * nb <= QSMALL;
    sh_block_q8_0 *xq = small ? xq_s : malloc((size_t)(M * nb) * sizeof *xq);
    int32_t *xs = small ? xs_s : malloc((size_t)(M * nb) * 2 * sizeof *xs);
    float *da = small ? da_s : malloc((size_t)(M * nb) * 2 * sizeof *da);
    if (!xq || !xs || !da) {
        if (!small) free(xq), free(xs), free(da);
        return sh_err(err, SH_ENOMEM, "qweight matmul: out of memory");
    }
    int32_t *ioff = xs + M * nb;
    float *dsa = da + M * nb;
    int nt = nthreads > 0 ? nthreads : omp_get_max_threads();
    for (int64_t m = 0; m < M; m++) {
        if (fast) sh_quantize_q8_0_sums_avx512(X + m * K, xq + m * nb, xs + m * nb, K);
        else sh_quantize_q8_0_sums(X + m * K, xq + m * nb, xs + m * nb, K);
        for (int64_t b = m * nb; b < (m + 1) * nb; b++) {
            float d = sh_h2f(xq[b].d);
            ioff[b] = -off * xs[b];
            dsa[b] = d * (float)xs[b];
            da[b] = w->base == SH_LOG4 ? d * (1.0f / 64.0f) : d;
        }
    }
    int64_t gc = 4, tc = (ng + gc - 1) / gc; /* 64 rows per task */
    prow_args a = {w, M, N, nb, gc, ng, fast, avx2, xq, xs, ioff, da, dsa, bias, Y};
    SH_PAR_FOR_S(tc > 1 && M * N * K >= QPAR_MIN, nt, schedule(dynamic, 2), for (int64_t t = 0; t < tc; t++) prow_task(&a, t););
    if (!small) free(xq), free(xs), free(da);
    return SH_OK;
}
