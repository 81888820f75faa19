/* conv_sparse.c - Conv with an unstructured-sparse (csr / bcsr / nm) weight:
 * a direct sparse convolution, see conv_sparse.h for the maths.
 *
 * Per call: the kept weights of every output channel are listed once as
 * (offset, value) pairs (zeros of bcsr / nm padding dropped), the input image
 * is zero-padded (and, for strides > 1, unrolled by im2col), then every
 * output channel is computed in tiles of 64 outputs held in registers while
 * its kept weights stream past: one load, one multiply and one add per
 * weight and 16 outputs (no store until the tile is done).  OpenMP splits
 * the output channels, balanced by kept weights.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ops/conv_sparse.h"

#define T 64 /* outputs per tile */

int sh_spmm_best_path(void)
{
    const char *e = getenv("SHRINK_CPU");
    int cap = SH_SPMM_AVX512;
    if (e && (!strcmp(e, "ref") || !strcmp(e, "c") || !strcmp(e, "none"))) cap = SH_SPMM_REF;
    else if (e && !strcmp(e, "avx2")) cap = SH_SPMM_AVX2;
    if (cap >= SH_SPMM_AVX512 && sh_spmm_path_ok(SH_SPMM_AVX512)) return SH_SPMM_AVX512;
    if (cap >= SH_SPMM_AVX2 && sh_spmm_path_ok(SH_SPMM_AVX2)) return SH_SPMM_AVX2;
    return SH_SPMM_REF;
}

static int64_t rup(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

/* geometry of one call */
typedef struct sgeo {
    int64_t M, G, Mg, Cg, Kc, C;
    int64_t Hp, Wp, plane; /* padded input */
    int strided;           /* 1: im2col source */
    int64_t L, Ws;         /* outputs per channel in the source layout, its row width */
    int64_t srcn;          /* floats of the source incl. slack */
    int64_t xpn;           /* floats of the padded input (strided: + col) */
} sgeo;

static void geo(const sh_sparse_hdr *h, const sh_win *w, int64_t G, sgeo *s)
{
    s->M = h->rows, s->G = G, s->Mg = h->rows / G, s->C = w->C, s->Cg = w->C / G, s->Kc = h->cols;
    s->Hp = w->H + w->pt + w->pb, s->Wp = w->W + w->pl + w->pr, s->plane = s->Hp * s->Wp;
    s->strided = w->sh != 1 || w->sw != 1;
    int64_t OHW = w->OH * w->OW;
    if (s->strided) s->L = OHW, s->Ws = w->OW;
    else s->L = w->OH * s->Wp, s->Ws = s->Wp;
    int64_t xp = rup(s->C * s->plane + (w->kw - 1) * w->dw + T + 16, 16);
    s->xpn = xp;
    s->srcn = s->strided ? rup(G * s->Kc * OHW + T + 16, 16) : 0;
}

size_t sh_conv_sparse_scratch(const sh_sparse_hdr *h, const sh_win *w, int64_t G, int nthreads)
{
    sgeo s;
    geo(h, w, G, &s);
    (void)nthreads;
    return (size_t)(s.xpn + s.srcn) * 4 + 64;
}

static void plan_key(const sh_sparse_hdr *h, const sh_win *w, int64_t G, int64_t *key)
{
    sgeo s;
    geo(h, w, G, &s);
    key[0] = s.strided ? w->OH * w->OW : s.plane, key[1] = s.Wp, key[2] = w->kh, key[3] = w->kw;
    key[4] = w->dh, key[5] = w->dw, key[6] = G, key[7] = s.strided;
}

sh_conv_sparse_plan *sh_conv_sparse_plan_new(const sh_sparse_hdr *h, const sh_win *w, int64_t G)
{
    sgeo s;
    geo(h, w, G, &s);
    sh_conv_sparse_plan *p = calloc(1, sizeof *p);
    uint32_t *cols = malloc(sizeof(uint32_t) * (size_t)(s.Kc + 64));
    if (p) {
        p->rp = malloc(sizeof(int32_t) * (size_t)(s.M + 1));
        p->off = malloc(sizeof(int32_t) * (size_t)(h->nnz + 1));
        p->val = malloc(sizeof(float) * (size_t)(h->nnz + 1));
    }
    if (!p || !cols || !p->rp || !p->off || !p->val) {
        free(cols);
        sh_conv_sparse_plan_free(p);
        return NULL;
    }
    p->src = h, p->total = h->total, p->M = s.M;
    plan_key(h, w, G, p->key);
    const int64_t OHW = w->OH * w->OW, khw = w->kh * w->kw;
    int64_t q = 0;
    for (int64_t m = 0; m < s.M; m++) {
        p->rp[m] = (int32_t)q;
        const float *v;
        int64_t cnt = sh_sp_row_decode(h, m, cols, &v), gi = m / s.Mg;
        for (int64_t e = 0; e < cnt; e++) {
            int64_t c = cols[e];
            if (c >= s.Kc || v[e] == 0.0f) continue; /* block / group padding */
            int64_t o;
            if (s.strided) o = (gi * s.Kc + c) * OHW;
            else {
                int64_t ci = c / khw, r = c - ci * khw, i = r / w->kw, j = r - i * w->kw;
                o = (gi * s.Cg + ci) * s.plane + i * w->dh * s.Wp + j * w->dw;
            }
            p->off[q] = (int32_t)o, p->val[q++] = v[e];
        }
    }
    p->rp[s.M] = (int32_t)q;
    p->nnz = q;
    free(cols);
    return p;
}

int sh_conv_sparse_plan_fits(const sh_conv_sparse_plan *p, const sh_sparse_hdr *h, const sh_win *w, int64_t G)
{
    if (!p || p->src != h || p->total != h->total || p->M != h->rows) return 0;
    int64_t key[8];
    plan_key(h, w, G, key);
    return memcmp(key, p->key, sizeof key) == 0;
}

void sh_conv_sparse_plan_free(sh_conv_sparse_plan *p)
{
    if (!p) return;
    free(p->rp), free(p->off), free(p->val);
    free(p);
}

/* ---- tiles: acc[0..T) = sum_q v[q] * src[off[q] + 0..T) ------------------- */

static void tile_ref(const float *src, const int32_t *off, const float *v, int64_t cnt, float *acc)
{
    float a[T];
    for (int t = 0; t < T; t++) a[t] = 0.0f;
    for (int64_t q = 0; q < cnt; q++) {
        const float *s = src + off[q];
        float wq = v[q];
        for (int t = 0; t < T; t++) a[t] = fmaf(wq, s[t], a[t]);
    }
    memcpy(acc, a, sizeof a);
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
__attribute__((target("avx2,fma"))) static void tile_avx2(const float *src, const int32_t *off, const float *v,
                                                       int64_t cnt, float *acc)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int64_t q = 0; q < cnt; q++) {
        const float *s = src + off[q];
        __m256 w = _mm256_set1_ps(v[q]);
        a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s), a0);
        a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 8), a1);
        a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 16), a2);
        a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 24), a3);
        a4 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 32), a4);
        a5 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 40), a5);
        a6 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 48), a6);
        a7 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 56), a7);
    }
    _mm256_storeu_ps(acc, a0), _mm256_storeu_ps(acc + 8, a1), _mm256_storeu_ps(acc + 16, a2);
    _mm256_storeu_ps(acc + 24, a3), _mm256_storeu_ps(acc + 32, a4), _mm256_storeu_ps(acc + 40, a5);
    _mm256_storeu_ps(acc + 48, a6), _mm256_storeu_ps(acc + 56, a7);
}

__attribute__((target("avx512f"))) static void tile_avx512(const float *src, const int32_t *off, const float *v,
                                                            int64_t cnt, float *acc)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t q = 0;
    for (; q < cnt; q++) {
        const float *s = src + off[q];
        __m512 w = _mm512_set1_ps(v[q]);
        a0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s), a0);
        a1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s + 16), a1);
        a2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s + 32), a2);
        a3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s + 48), a3);
    }
    _mm512_storeu_ps(acc, a0), _mm512_storeu_ps(acc + 16, a1);
    _mm512_storeu_ps(acc + 32, a2), _mm512_storeu_ps(acc + 48, a3);
}
#endif

typedef void (*tile_fn)(const float *, const int32_t *, const float *, int64_t, float *);

/* outputs [p0, p0 + T) of the source layout -> y (OH x OW), bias, ReLU;
 * row segments of up to OW valid outputs */
static void emit(const float *acc, int64_t p0, int64_t L, int64_t Ws, int64_t OW, float b, int relu, float *y)
{
    int64_t n = L - p0 < T ? L - p0 : T;
    int64_t oh = p0 / Ws, ow = p0 - oh * Ws, t = 0;
    while (t < n) {
        int64_t seg = Ws - ow < n - t ? Ws - ow : n - t; /* to the end of the source row */
        int64_t valid = ow < OW ? (OW - ow < seg ? OW - ow : seg) : 0;
        float *d = y + oh * OW + ow;
        const float *a = acc + t;
        if (relu)
            for (int64_t i = 0; i < valid; i++) {
                float v = a[i] + b;
                d[i] = v > 0.0f ? v : 0.0f;
            }
        else
            for (int64_t i = 0; i < valid; i++) d[i] = a[i] + b;
        t += seg, ow += seg;
        if (ow == Ws) ow = 0, oh++;
    }
}

/* zero-padded input channels [c0, c1): one memset, then the rows (plain
 * loops: a library call per 7-float row would cost more than the conv) */
__attribute__((optimize("no-tree-loop-distribute-patterns"))) static void
pad_channels(const float *xn, const sh_win *w, const sgeo *s, int64_t c0, int64_t c1, float *xp)
{
    const int64_t H = w->H, W = w->W, Wp = s->Wp, off = w->pt * Wp + w->pl;
    if (c1 > c0) memset(xp + c0 * s->plane, 0, sizeof(float) * (size_t)((c1 - c0) * s->plane));
    for (int64_t c = c0; c < c1; c++) {
        float *d = xp + c * s->plane + off;
        const float *sx = xn + c * H * W;
        for (int64_t i = 0; i < H; i++)
            for (int64_t j = 0; j < W; j++) d[i * Wp + j] = sx[i * W + j];
    }
}

int sh_conv_sparse_run(const sh_sparse_hdr *h, const sh_conv_sparse_plan *plan, const float *x, const sh_win *w,
                       int64_t G, const float *bias, int relu, float *y, int nthreads, int path, void *scratch)
{
    if (path == SH_SPMM_AUTO) path = sh_spmm_best_path();
    if (!sh_spmm_path_ok(path)) return SH_EUNSUPPORTED;
    tile_fn tile = tile_ref;
#if defined(__x86_64__) || defined(__i386__)
    if (path == SH_SPMM_AVX512) tile = tile_avx512;
    else if (path == SH_SPMM_AVX2) tile = tile_avx2;
#endif
    sh_conv_sparse_plan *own = NULL;
    if (!plan || !sh_conv_sparse_plan_fits(plan, h, w, G)) {
        plan = own = sh_conv_sparse_plan_new(h, w, G);
        if (!own) return SH_ENOMEM;
    }
    sgeo s;
    geo(h, w, G, &s);
    const int64_t OHW = w->OH * w->OW, N = w->N;
    const int32_t *rp = plan->rp, *off = plan->off;
    const float *val = plan->val;
    const int64_t q = plan->nnz;
    float *xp = scratch, *col = xp + s.xpn;
    int nt = nthreads > 0 ? nthreads : 1;
    if (q * s.L < (1 << 16)) nt = 1; /* too little work for a thread team */
    const float *src = s.strided ? col : xp;
    for (int64_t n = 0; n < N; n++) {
        const float *xn = x + n * s.C * w->H * w->W;
        float *yn = y + n * s.M * OHW;
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            int t = omp_get_thread_num(), nth = omp_get_num_threads();
            /* zero-padded input, channels split among the threads */
            int64_t c0 = s.C * t / nth, c1 = s.C * (t + 1) / nth;
            pad_channels(xn, w, &s, c0, c1, xp);
            if (t == nth - 1)
                for (int64_t i = s.C * s.plane; i < s.xpn; i++) xp[i] = 0.0f;
#pragma omp barrier
            if (s.strided) {
                int64_t R = s.G * s.Kc, k0 = R * t / nth, k1 = R * (t + 1) / nth;
                for (int64_t r = k0; r < k1; r++) {
                    int64_t gi = r / s.Kc, c = r % s.Kc;
                    int64_t ci = c / (w->kh * w->kw), i = (c / w->kw) % w->kh, j = c % w->kw;
                    const float *sp = xp + (gi * s.Cg + ci) * s.plane + i * w->dh * s.Wp + j * w->dw;
                    float *d = col + r * OHW;
                    for (int64_t oh = 0; oh < w->OH; oh++)
                        for (int64_t ow = 0; ow < w->OW; ow++) d[oh * w->OW + ow] = sp[oh * w->sh * s.Wp + ow * w->sw];
                }
                if (t == nth - 1) memset(col + R * OHW, 0, sizeof(float) * (size_t)(s.srcn - R * OHW));
#pragma omp barrier
            }
            /* output channels balanced by kept weights */
            int64_t lo = 0, hi = s.M;
            if (nth > 1) {
                int64_t tgt0 = (int64_t)q * t / nth, tgt1 = (int64_t)q * (t + 1) / nth;
                while (lo < s.M && rp[lo] < tgt0) lo++;
                hi = lo;
                while (hi < s.M && rp[hi] < tgt1) hi++;
                if (t == nth - 1) hi = s.M;
            }
            float acc[T] __attribute__((aligned(64)));
            for (int64_t m = lo; m < hi; m++) {
                float b = bias ? bias[m] : 0.0f;
                for (int64_t p0 = 0; p0 < s.L; p0 += T) {
                    tile(src + p0, off + rp[m], val + rp[m], rp[m + 1] - rp[m], acc);
                    emit(acc, p0, s.L, s.Ws, w->OW, b, relu, yn + m * OHW);
                }
            }
        }
    }
    sh_conv_sparse_plan_free(own);
    return SH_OK;
}
