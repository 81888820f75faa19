/* spmm.c - Y[B,N] = X[B,K] * W^T (+ bias) for a sparse W (csr, bcsr, nm):
 * the driver (workspace, padding / transposing X, OpenMP over output rows
 * balanced by stored values, run-time choice of the kernel path), the
 * portable C reference kernel, and dense GEMV peers for tests and benchmarks.
 * SIMD kernels: spmm_avx2.c, spmm_avx512.c. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/sparse.h"
#include "shrink.h"

#define BCHUNK 64 /* batch rows per kernel pass */

int sh_spmm_path_ok(int path)
{
    int f = sh_cpu_features();
    switch (path) {
    case SH_SPMM_REF: return 1;
    case SH_SPMM_AVX2:
        return (f & SH_CPU_AVX2) && (f & SH_CPU_FMA) && __builtin_cpu_supports("popcnt") &&
               __builtin_cpu_supports("bmi2");
    case SH_SPMM_AVX512:
        return (f & SH_CPU_AVX512F) && (f & SH_CPU_AVX512BW) && (f & SH_CPU_AVX512VL) &&
               __builtin_cpu_supports("avx512dq") && sh_spmm_path_ok(SH_SPMM_AVX2);
    default: return 0;
    }
}

/* Best path for this CPU, lowered by SHRINK_CPU (sh_cpu_level). */
static int best_path(void)
{
    int lv = sh_cpu_level();
    if (lv >= SH_CPU_LEVEL_AVX512 && sh_spmm_path_ok(SH_SPMM_AVX512)) return SH_SPMM_AVX512;
    if (lv >= SH_CPU_LEVEL_AVX2 && sh_spmm_path_ok(SH_SPMM_AVX2)) return SH_SPMM_AVX2;
    return SH_SPMM_REF;
}

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

int64_t sh_sp_row_decode(const sh_sparse_hdr *h, int64_t r, uint32_t *cols, const float **vals)
{
    if (h->kind == SH_SPK_NM) {
        int64_t words = sh_sp_words(h), per_row = sh_sp_nm_per_row(h->cols, h->n, h->m), q = 0;
        const uint16_t *bm = (const uint16_t *)sh_sp_idx(h) + r * words;
        for (int64_t w = 0; w < words; w++)
            for (uint32_t b = bm[w]; b; b &= b - 1) cols[q++] = (uint32_t)(w * 16 + __builtin_ctz(b));
        *vals = sh_sp_val(h) + r * per_row;
        return q;
    }
    const uint32_t *ptr = sh_sp_ptr(h);
    int64_t p0 = ptr[r], p1 = ptr[r + 1], bw = h->bw;
    const void *idx = sh_sp_idx(h);
    for (int64_t j = p0; j < p1; j++) {
        uint32_t c = h->idx_bytes == 2 ? ((const uint16_t *)idx)[j] : ((const uint32_t *)idx)[j];
        for (int64_t l = 0; l < bw; l++) cols[(j - p0) * bw + l] = (uint32_t)(c * bw + l);
    }
    *vals = sh_sp_val(h) + p0 * bw;
    return (p1 - p0) * bw;
}

size_t sh_spmm_tmp_bytes(const sh_sparse_hdr *h)
{
    return (size_t)round_up((round_up(h->cols, 64) + 32) * 4, 64);
}

void sh_spmm_rows_ref(const sh_spmm_job *j, int64_t r0, int64_t r1, void *tmp)
{
    const sh_sparse_hdr *h = j->h;
    uint32_t *cols = tmp;
    float acc[BCHUNK];
    for (int64_t r = r0; r < r1; r++) {
        const float *v;
        int64_t cnt = sh_sp_row_decode(h, r, cols, &v);
        float b0 = j->bias ? j->bias[r] : 0.0f;
        if (j->B == 1) {
            float s = 0.0f;
            for (int64_t q = 0; q < cnt; q++) s += v[q] * j->x[cols[q]];
            j->y[r] = s + b0;
            continue;
        }
        for (int64_t b = 0; b < j->B; b++) acc[b] = 0.0f;
        for (int64_t q = 0; q < cnt; q++) {
            const float *xr = j->xt + (int64_t)cols[q] * j->bp;
            for (int64_t b = 0; b < j->B; b++) acc[b] += v[q] * xr[b];
        }
        for (int64_t b = 0; b < j->B; b++) j->y[b * j->ldy + r] = acc[b] + b0;
    }
}

static int nthreads_of(int nthreads)
{
    int nt = nthreads > 0 ? nthreads : omp_get_max_threads();
    return nt < 1 ? 1 : nt;
}

size_t sh_spmm_workspace(const sh_tensor *w, int64_t B, int nthreads)
{
    if (!w || !sh_format_is_sparse(w->fmt) || !w->data || B < 1) return 0;
    const sh_sparse_hdr *h = w->data;
    int64_t kp = round_up(h->cols, 64), bp = B == 1 ? 1 : B <= 8 ? 8 : round_up(B < BCHUNK ? B : BCHUNK, 16);
    return (size_t)round_up(kp * bp * 4, 64) + (size_t)nthreads_of(nthreads) * sh_spmm_tmp_bytes(h);
}

/* First row of part t of nt, balancing stored values for csr/bcsr. */
static int64_t split_row(const sh_sparse_hdr *h, int t, int nt)
{
    if (t <= 0) return 0;
    if (t >= nt) return h->rows;
    if (h->kind == SH_SPK_NM) return h->rows * t / nt;
    const uint32_t *ptr = sh_sp_ptr(h);
    uint64_t target = (uint64_t)ptr[h->rows] * (uint64_t)t / (uint64_t)nt;
    int64_t lo = 0, hi = h->rows; /* first r with ptr[r] >= target */
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (ptr[mid] < target) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

int sh_spmm(const sh_tensor *w, const float *x, int64_t B, const float *bias, float *y, int nthreads, int path,
            void *ws, sh_error *err)
{
    if (!w || !sh_format_is_sparse(w->fmt) || !w->data)
        return sh_err(err, SH_EINVAL, "sparse linear: weight is not a sparse (csr, bcsr, nm) tensor with data");
    const sh_sparse_hdr *hh = w->data;
    if (hh->magic != SH_SPARSE_MAGIC || w->ndim != 2 || w->shape[0] != hh->rows || w->shape[1] != hh->cols ||
        w->nbytes != hh->total)
        return sh_err(err, SH_EFORMAT, "sparse linear: header disagrees with the weight tensor's shape or size");
    if (B < 1 || !x || !y) return sh_err(err, SH_EINVAL, "sparse linear: batch %lld, x %p, y %p", (long long)B, (void *)x, (void *)y);
    if (path == SH_SPMM_AUTO) path = best_path();
    if (!sh_spmm_path_ok(path))
        return sh_err(err, SH_EUNSUPPORTED, "sparse linear: kernel path %d unsupported on this CPU", path);
    sh_spmm_rows_fn fn = path == SH_SPMM_AVX512 ? sh_spmm_rows_avx512 : path == SH_SPMM_AVX2 ? sh_spmm_rows_avx2 : sh_spmm_rows_ref;
    const sh_sparse_hdr *h = w->data;
    int nt = nthreads_of(nthreads);
    if (nt > h->rows) nt = (int)h->rows;
    if ((h->nnz + h->rows) * B < (1 << 15)) nt = 1; /* too little work to pay for a thread team */
    void *own = NULL;
    if (!ws) {
        size_t n = sh_spmm_workspace(w, B, nt);
        ws = own = aligned_alloc(64, n);
        if (!ws) return sh_err(err, SH_ENOMEM, "sparse linear: out of memory for a %zu-byte workspace", n);
    }
    int64_t K = h->cols, N = h->rows, kp = round_up(K, 64);
    char *tmp0 = (char *)ws + round_up(kp * (B == 1 ? 1 : B <= 8 ? 8 : round_up(B < BCHUNK ? B : BCHUNK, 16)) * 4, 64);
    size_t tmpb = sh_spmm_tmp_bytes(h);
    float *xb = ws;
    for (int64_t b0 = 0; b0 < B; b0 += BCHUNK) {
        int64_t nb = B - b0 < BCHUNK ? B - b0 : BCHUNK;
        sh_spmm_job j = {.h = h, .B = nb, .kp = kp, .bias = bias, .y = y + b0 * N, .ldy = N};
        if (nb == 1) {
            memcpy(xb, x + b0 * K, (size_t)K * 4);
            memset(xb + K, 0, (size_t)(kp - K) * 4);
            j.bp = 1;
            j.x = xb;
        } else {
            j.bp = nb <= 8 ? 8 : round_up(nb, 16);
            j.xt = xb;
        }
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            int t = omp_get_thread_num(), n = omp_get_num_threads();
            if (nb > 1) { /* transpose X into xt [kp][bp] */
                int64_t c0 = kp * t / n, c1 = kp * (t + 1) / n;
                const float *xs = x + b0 * K;
                for (int64_t c = c0; c < c1; c++) {
                    float *d = xb + c * j.bp;
                    int64_t b = 0;
                    if (c < K)
                        for (; b < nb; b++) d[b] = xs[b * K + c];
                    for (; b < j.bp; b++) d[b] = 0.0f;
                }
#pragma omp barrier
            }
            fn(&j, split_row(h, t, n), split_row(h, t + 1, n), tmp0 + (size_t)t * tmpb);
        }
    }
    free(own);
    return SH_OK;
}

/* ---- dense peers ------------------------------------------------------- */

static void dense_rows_ref(const float *w, int64_t k, const float *x, const float *bias, float *y, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        float s = 0.0f;
        for (int64_t c = 0; c < k; c++) s += w[r * k + c] * x[c];
        y[r] = s + (bias ? bias[r] : 0.0f);
    }
}

int sh_dense_linear(const float *w, int64_t n, int64_t k, const float *x, int64_t B, const float *bias, float *y,
                    int nthreads, int path)
{
    if (path == SH_SPMM_AUTO) path = best_path();
    if (!sh_spmm_path_ok(path)) return SH_EUNSUPPORTED;
    int nt = nthreads_of(nthreads);
    for (int64_t b = 0; b < B; b++) {
        const float *xb = x + b * k;
        float *yb = y + b * n;
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            int t = omp_get_thread_num(), m = omp_get_num_threads();
            int64_t r0 = n * t / m, r1 = n * (t + 1) / m;
            if (path == SH_SPMM_AVX512) sh_dense_gemv_rows_avx512(w, k, xb, bias, yb, r0, r1);
            else if (path == SH_SPMM_AVX2) sh_dense_gemv_rows_avx2(w, k, xb, bias, yb, r0, r1);
            else dense_rows_ref(w, k, xb, bias, yb, r0, r1);
        }
    }
    return SH_OK;
}
