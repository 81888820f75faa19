/* spmm_avx512.c - AVX-512 kernels of the sparse linear (see spmm.c) and the
 * dense AVX-512 GEMV peer.  Compiled for AVX-512 by the pragma below; only
 * called after a run-time CPU check.
 *
 *   B = 1 : csr  - 16 values per step, x gathered by zero-extended indices
 *           bcsr - 1x16 / 1x8 / 1x4 blocks loaded straight from x (1x2:
 *                  decoded to column lists and gathered)
 *           nm   - 2:4 (2-bit codes): 16 values per 32 columns, x picked by
 *                  one vpermt2ps, indices = (codes >> 2j & 3) + 4*(j/2);
 *                  four rows at a time (one x load for four rows, four
 *                  value streams in flight: 1.2x -> 1.4-1.5x dense at
 *                  4096^2, bench/bench_sparse.sh)
 *                  4:8 (4 kept per byte of bitmap): 16 values per 32
 *                  columns, x picked by one vpermt2ps with indices from a
 *                  256-entry table, four rows at a time when cols % 64 == 0 (vpcompressb and vexpandps were slower on
 *                  Zen 4); other n:m and the tail group: per 16 columns an
 *                  expand load of the word's popcount values, FMA with x
 *   B > 1 : X transposed (xt [kp][bp]); each stored value w at column c does
 *           acc[0..bp) += w * xt[c][0..bp), 2-4 independent accumulator sets.
 */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,popcnt,bmi,bmi2,fma,avx2")
#include <immintrin.h>
#include <string.h>

#include "core/sparse.h"

static inline uint64_t load64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* ---- B = 1 ------------------------------------------------------------ */

/* 8-wide gathers: on Zen 4 two ymm gathers beat one zmm gather */
static float csr_row_gemv(const uint16_t *i16, const uint32_t *i32, const float *v, int64_t cnt, const float *x)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t q = 0;
    for (; q + 32 <= cnt; q += 32) {
        __m256i c0, c1, c2, c3;
        if (i16) {
            c0 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(i16 + q)));
            c1 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(i16 + q + 8)));
            c2 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(i16 + q + 16)));
            c3 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(i16 + q + 24)));
        } else {
            c0 = _mm256_loadu_si256((const __m256i *)(i32 + q));
            c1 = _mm256_loadu_si256((const __m256i *)(i32 + q + 8));
            c2 = _mm256_loadu_si256((const __m256i *)(i32 + q + 16));
            c3 = _mm256_loadu_si256((const __m256i *)(i32 + q + 24));
        }
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + q), _mm256_i32gather_ps(x, c0, 4), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + q + 8), _mm256_i32gather_ps(x, c1, 4), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(v + q + 16), _mm256_i32gather_ps(x, c2, 4), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(v + q + 24), _mm256_i32gather_ps(x, c3, 4), a3);
    }
    for (; q < cnt; q += 8) {
        int64_t rem = cnt - q;
        __mmask8 k = rem >= 8 ? (__mmask8)0xff : (__mmask8)((1u << rem) - 1);
        __m256i c = i16 ? _mm256_cvtepu16_epi32(_mm_maskz_loadu_epi16(k, i16 + q)) : _mm256_maskz_loadu_epi32(k, i32 + q);
        __m256 xg = _mm256_mmask_i32gather_ps(_mm256_setzero_ps(), k, c, x, 4);
        a0 = _mm256_fmadd_ps(_mm256_maskz_loadu_ps(k, v + q), xg, a0);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));
    t = _mm_add_ss(t, _mm_movehdup_ps(t));
    return _mm_cvtss_f32(t);
}

static float bcsr_row_gemv(const sh_sparse_hdr *h, int64_t r, const float *x)
{
    const uint32_t *ptr = sh_sp_ptr(h);
    int64_t p0 = ptr[r], p1 = ptr[r + 1], bw = h->bw;
    const uint16_t *i16 = h->idx_bytes == 2 ? sh_sp_idx(h) : NULL;
    const uint32_t *i32 = h->idx_bytes == 4 ? sh_sp_idx(h) : NULL;
    const float *v = sh_sp_val(h);
#define BIDX(j) ((int64_t)(i16 ? i16[j] : i32[j]))
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t j = p0;
    if (bw == 16) {
        for (; j + 2 <= p1; j += 2) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(v + j * 16), _mm512_loadu_ps(x + BIDX(j) * 16), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(v + j * 16 + 16), _mm512_loadu_ps(x + BIDX(j + 1) * 16), a1);
        }
        for (; j < p1; j++) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(v + j * 16), _mm512_loadu_ps(x + BIDX(j) * 16), a0);
    } else if (bw == 8) {
        for (; j + 2 <= p1; j += 2) {
            __m512 xv = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(x + BIDX(j) * 8)),
                                           _mm256_loadu_ps(x + BIDX(j + 1) * 8), 1);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(v + j * 8), xv, a0);
        }
        if (j < p1)
            a1 = _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_loadu_ps(v + j * 8), _mm256_loadu_ps(x + BIDX(j) * 8)));
    } else if (bw == 4) {
        for (; j + 4 <= p1; j += 4) {
            __m512 xv = _mm512_castps128_ps512(_mm_loadu_ps(x + BIDX(j) * 4));
            xv = _mm512_insertf32x4(xv, _mm_loadu_ps(x + BIDX(j + 1) * 4), 1);
            xv = _mm512_insertf32x4(xv, _mm_loadu_ps(x + BIDX(j + 2) * 4), 2);
            xv = _mm512_insertf32x4(xv, _mm_loadu_ps(x + BIDX(j + 3) * 4), 3);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(v + j * 4), xv, a0);
        }
        __m128 s = _mm_setzero_ps();
        for (; j < p1; j++) s = _mm_fmadd_ps(_mm_loadu_ps(v + j * 4), _mm_loadu_ps(x + BIDX(j) * 4), s);
        a1 = _mm512_zextps128_ps512(s);
    } else { /* bw 2: scalar pairs */
        float s = 0.0f;
        for (; j < p1; j++) s += v[j * 2] * x[BIDX(j) * 2] + v[j * 2 + 1] * x[BIDX(j) * 2 + 1];
        return s + _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    }
#undef BIDX
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

/* popcount(m) values at v expanded to the set bits of m */
static inline __m512 expand16(uint32_t m, const float *v)
{
    return _mm512_maskz_expandloadu_ps((__mmask16)m, v);
}

static inline __m512 nm_step(uint32_t m, const float *v, const float *x)
{
    __m512 w = expand16(m, v);
    return _mm512_mul_ps(w, _mm512_loadu_ps(x));
}


static float nm_rest(const uint16_t *bm, int64_t words, int64_t w, const float *v, const float *x);

/* half: words [0, half) hold exactly 4 kept columns in every byte (2:4, 4:8
 * away from the tail group): 16 values per 32 columns picked from x by one
 * vpermt2ps with indices from sh_nm_pos4.  Other words: expand loads. */
static float nm_row_gemv(const uint16_t *bm, int64_t words, int64_t half, const float *v, const float *x)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t w = 0;
    for (; w + 4 <= half; w += 4) {
        uint64_t m = load64(bm + w);
        uint64_t i0 = sh_nm_pos4[m & 0xff] | (uint64_t)(sh_nm_pos4[(m >> 8) & 0xff] + 0x08080808u) << 32;
        uint64_t i1 = (sh_nm_pos4[(m >> 16) & 0xff] + 0x10101010u) | (uint64_t)(sh_nm_pos4[(m >> 24) & 0xff] + 0x18181818u) << 32;
        uint64_t i2 = sh_nm_pos4[(m >> 32) & 0xff] | (uint64_t)(sh_nm_pos4[(m >> 40) & 0xff] + 0x08080808u) << 32;
        uint64_t i3 = (sh_nm_pos4[(m >> 48) & 0xff] + 0x10101010u) | (uint64_t)(sh_nm_pos4[m >> 56] + 0x18181818u) << 32;
        __m512i ia = _mm512_cvtepu8_epi32(_mm_set_epi64x((long long)i1, (long long)i0));
        __m512i ib = _mm512_cvtepu8_epi32(_mm_set_epi64x((long long)i3, (long long)i2));
        const float *xw = x + w * 16;
        __m512 xa = _mm512_permutex2var_ps(_mm512_loadu_ps(xw), ia, _mm512_loadu_ps(xw + 16));
        __m512 xb = _mm512_permutex2var_ps(_mm512_loadu_ps(xw + 32), ib, _mm512_loadu_ps(xw + 48));
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(v), xa, a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(v + 16), xb, a1);
        v += 32;
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) + nm_rest(bm, words, w, v, x);
}

/* Words [w, words) of an nm row by expand loads (any n:m); v: their values. */
static float nm_rest(const uint16_t *bm, int64_t words, int64_t w, const float *v, const float *x)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    for (; w + 4 <= words; w += 4) {
        uint64_t m = load64(bm + w);
        uint32_t m0 = (uint32_t)m & 0xffff, m1 = (uint32_t)(m >> 16) & 0xffff, m2 = (uint32_t)(m >> 32) & 0xffff,
                 m3 = (uint32_t)(m >> 48);
        int o1 = __builtin_popcount(m0), o2 = __builtin_popcount((uint32_t)m), o3 = __builtin_popcountll(m & 0xffffffffffffull),
            o4 = __builtin_popcountll(m);
        const float *xw = x + w * 16;
        a0 = _mm512_fmadd_ps(expand16(m0, v), _mm512_loadu_ps(xw), a0);
        a1 = _mm512_fmadd_ps(expand16(m1, v + o1), _mm512_loadu_ps(xw + 16), a1);
        a2 = _mm512_fmadd_ps(expand16(m2, v + o2), _mm512_loadu_ps(xw + 32), a2);
        a3 = _mm512_fmadd_ps(expand16(m3, v + o3), _mm512_loadu_ps(xw + 48), a3);
        v += o4;
    }
    for (; w < words; w++) {
        uint32_t m = bm[w];
        a0 = _mm512_add_ps(a0, nm_step(m, v, x + w * 16));
        v += __builtin_popcount(m);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* 2:4 codes: 16 values per 32 columns, x picked by one vpermt2ps with
 * indices code + 4*(j/2) (a shift, a mask and an add per 16 values). */
static float nm24_row_gemv(const uint32_t *codes, int64_t cols, int64_t per_row, const float *v, const float *x)
{
    const __m512i sh = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
    const __m512i three = _mm512_set1_epi32(3);
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t full = cols / 32, wd = 0;
    for (; wd + 2 <= full; wd += 2) {
        __m512i i0 = _mm512_add_epi32(_mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)codes[wd]), sh), three), base);
        __m512i i1 = _mm512_add_epi32(_mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)codes[wd + 1]), sh), three), base);
        const float *xw = x + wd * 32;
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(v + wd * 16), _mm512_permutex2var_ps(_mm512_loadu_ps(xw), i0, _mm512_loadu_ps(xw + 16)), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(v + wd * 16 + 16),
                             _mm512_permutex2var_ps(_mm512_loadu_ps(xw + 32), i1, _mm512_loadu_ps(xw + 48)), a1);
    }
    for (; wd < full; wd++) {
        __m512i i0 = _mm512_add_epi32(_mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)codes[wd]), sh), three), base);
        const float *xw = x + wd * 32;
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(v + wd * 16), _mm512_permutex2var_ps(_mm512_loadu_ps(xw), i0, _mm512_loadu_ps(xw + 16)), a0);
    }
    float s = 0.0f;
    for (int64_t j = 16 * full; j < per_row; j++) s += v[j] * x[4 * (j / 2) + sh_sp_code(codes, j)];
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) + s;
}

/* Four 2:4 rows at once (r0..r3: codes cs[i], values vs[i]): each x pair
 * is loaded once for the four rows, and four value streams are in flight
 * (more memory-level parallelism than one row: the kernel is bound by the
 * read bandwidth of one core).  Full 32-column words only; out[i] gets the
 * sums of the first `full` words. */
static void nm24_rows4_gemv(const uint32_t *const *cs, const float *const *vs, int64_t full, const float *x, float *out)
{
    const __m512i sh = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
    const __m512i three = _mm512_set1_epi32(3);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const uint32_t *c0 = cs[0], *c1 = cs[1], *c2 = cs[2], *c3 = cs[3];
    const float *v0 = vs[0], *v1 = vs[1], *v2 = vs[2], *v3 = vs[3];
#define IDX(c) _mm512_add_epi32(_mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)(c)), sh), three), base)
    for (int64_t wd = 0; wd < full; wd++) {
        const float *xw = x + wd * 32;
        __m512 xl = _mm512_loadu_ps(xw), xh = _mm512_loadu_ps(xw + 16);
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(v0 + wd * 16), _mm512_permutex2var_ps(xl, IDX(c0[wd]), xh), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(v1 + wd * 16), _mm512_permutex2var_ps(xl, IDX(c1[wd]), xh), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(v2 + wd * 16), _mm512_permutex2var_ps(xl, IDX(c2[wd]), xh), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(v3 + wd * 16), _mm512_permutex2var_ps(xl, IDX(c3[wd]), xh), a3);
    }
#undef IDX
    out[0] = _mm512_reduce_add_ps(a0), out[1] = _mm512_reduce_add_ps(a1);
    out[2] = _mm512_reduce_add_ps(a2), out[3] = _mm512_reduce_add_ps(a3);
}

/* Four bitmap rows with 4 kept columns per byte everywhere (4:8 / 2:4
 * bitmaps, cols a multiple of 64): as nm_row_gemv, the x vectors loaded
 * once for the four rows and four value streams in flight. */
static void nm_rows4_gemv(const uint16_t *const *bms, const float *const *vs, int64_t words, const float *x, float *out)
{
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const float *v[4] = {vs[0], vs[1], vs[2], vs[3]};
    for (int64_t w = 0; w + 4 <= words; w += 4) {
        const float *xw = x + w * 16;
        __m512 x0 = _mm512_loadu_ps(xw), x1 = _mm512_loadu_ps(xw + 16), x2 = _mm512_loadu_ps(xw + 32),
               x3 = _mm512_loadu_ps(xw + 48);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            uint64_t m = load64(bms[i] + w);
            uint64_t i0 = sh_nm_pos4[m & 0xff] | (uint64_t)(sh_nm_pos4[(m >> 8) & 0xff] + 0x08080808u) << 32;
            uint64_t i1 = (sh_nm_pos4[(m >> 16) & 0xff] + 0x10101010u) |
                          (uint64_t)(sh_nm_pos4[(m >> 24) & 0xff] + 0x18181818u) << 32;
            uint64_t i2 = sh_nm_pos4[(m >> 32) & 0xff] | (uint64_t)(sh_nm_pos4[(m >> 40) & 0xff] + 0x08080808u) << 32;
            uint64_t i3 = (sh_nm_pos4[(m >> 48) & 0xff] + 0x10101010u) | (uint64_t)(sh_nm_pos4[m >> 56] + 0x18181818u) << 32;
            __m512i ia = _mm512_cvtepu8_epi32(_mm_set_epi64x((long long)i1, (long long)i0));
            __m512i ib = _mm512_cvtepu8_epi32(_mm_set_epi64x((long long)i3, (long long)i2));
            a[i] = _mm512_fmadd_ps(_mm512_loadu_ps(v[i]), _mm512_permutex2var_ps(x0, ia, x1), a[i]);
            a[i] = _mm512_fmadd_ps(_mm512_loadu_ps(v[i] + 16), _mm512_permutex2var_ps(x2, ib, x3), a[i]);
            v[i] += 32;
        }
    }
    for (int i = 0; i < 4; i++) out[i] = _mm512_reduce_add_ps(a[i]);
}

/* ---- B > 1 ------------------------------------------------------------ */

/* out[0..bp) = sum_q v[q] * xt[col(q)][0..bp); NC = bp / 16 zmm (1..4). */
static inline __attribute__((always_inline)) void batch_row(const float *xt, int64_t bp, const int NC,
                                                            const uint16_t *c16, const uint32_t *c32, const float *v,
                                                            int64_t cnt, float *out)
{
    __m512 a[4][4];
    const int U = NC == 1 ? 4 : 2;
    #pragma GCC unroll 8
    for (int u = 0; u < 4; u++)
        #pragma GCC unroll 8
        for (int c = 0; c < 4; c++) a[u][c] = _mm512_setzero_ps();
    int64_t q = 0;
    for (; q + U <= cnt; q += U)
        #pragma GCC unroll 8
        for (int u = 0; u < U; u++) {
            const float *xr = xt + (int64_t)(c16 ? c16[q + u] : c32[q + u]) * bp;
            __m512 w = _mm512_set1_ps(v[q + u]);
            #pragma GCC unroll 8
            for (int c = 0; c < NC; c++) a[u][c] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xr + 16 * c), a[u][c]);
        }
    for (; q < cnt; q++) {
        const float *xr = xt + (int64_t)(c16 ? c16[q] : c32[q]) * bp;
        __m512 w = _mm512_set1_ps(v[q]);
        #pragma GCC unroll 8
        for (int c = 0; c < NC; c++) a[0][c] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xr + 16 * c), a[0][c]);
    }
    #pragma GCC unroll 8
    for (int c = 0; c < NC; c++) {
        __m512 s = a[0][c];
        #pragma GCC unroll 8
        for (int u = 1; u < U; u++) s = _mm512_add_ps(s, a[u][c]);
        _mm512_storeu_ps(out + 16 * c, s);
    }
}

static inline __attribute__((always_inline)) void batch_row8(const float *xt, const uint16_t *c16, const uint32_t *c32,
                                                             const float *v, int64_t cnt, float *out)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t q = 0;
#define COL(i) ((int64_t)(c16 ? c16[i] : c32[i]) * 8)
    for (; q + 4 <= cnt; q += 4) {
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(v[q]), _mm256_loadu_ps(xt + COL(q)), a0);
        a1 = _mm256_fmadd_ps(_mm256_set1_ps(v[q + 1]), _mm256_loadu_ps(xt + COL(q + 1)), a1);
        a2 = _mm256_fmadd_ps(_mm256_set1_ps(v[q + 2]), _mm256_loadu_ps(xt + COL(q + 2)), a2);
        a3 = _mm256_fmadd_ps(_mm256_set1_ps(v[q + 3]), _mm256_loadu_ps(xt + COL(q + 3)), a3);
    }
    for (; q < cnt; q++) a0 = _mm256_fmadd_ps(_mm256_set1_ps(v[q]), _mm256_loadu_ps(xt + COL(q)), a0);
#undef COL
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

static void batch_any(const float *xt, int64_t bp, const uint16_t *c16, const uint32_t *c32, const float *v, int64_t cnt,
                      float *out)
{
    switch (bp) {
    case 8: batch_row8(xt, c16, c32, v, cnt, out); break;
    case 16: batch_row(xt, bp, 1, c16, c32, v, cnt, out); break;
    case 32: batch_row(xt, bp, 2, c16, c32, v, cnt, out); break;
    case 48: batch_row(xt, bp, 3, c16, c32, v, cnt, out); break;
    default: batch_row(xt, bp, 4, c16, c32, v, cnt, out); break;
    }
}

/* nm row -> column list with vpcompressd (cols needs count + 16 room). */
static int64_t nm_decode(const uint16_t *bm, int64_t words, uint32_t *cols)
{
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int64_t q = 0;
    for (int64_t w = 0; w < words; w++) {
        uint32_t m = bm[w];
        __m512i c = _mm512_maskz_compress_epi32((__mmask16)m, _mm512_add_epi32(iota, _mm512_set1_epi32((int)(w * 16))));
        _mm512_storeu_si512(cols + q, c);
        q += __builtin_popcount(m);
    }
    return q;
}

/* 2:4 row codes -> column list (cols needs per_row + 16 room). */
static int64_t nm24_decode(const uint32_t *codes, int64_t per_row, uint32_t *cols)
{
    const __m512i sh = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
    for (int64_t wd = 0; wd * 16 < per_row; wd++) {
        __m512i c = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)codes[wd]), sh), _mm512_set1_epi32(3));
        _mm512_storeu_si512(cols + wd * 16, _mm512_add_epi32(_mm512_add_epi32(c, base), _mm512_set1_epi32((int)(wd * 32))));
    }
    return per_row;
}

void sh_spmm_rows_avx512(const sh_spmm_job *j, int64_t r0, int64_t r1, void *tmp)
{
    const sh_sparse_hdr *h = j->h;
    uint32_t *cols = tmp;
    const float *val = sh_sp_val(h);
    const uint16_t *i16 = h->idx_bytes == 2 ? sh_sp_idx(h) : NULL;
    const uint32_t *i32 = h->idx_bytes == 4 ? sh_sp_idx(h) : NULL;
    int64_t words = sh_sp_words(h), per_row = h->kind == SH_SPK_NM ? sh_sp_nm_per_row(h->cols, h->n, h->m) : 0;
    const uint32_t *ptr = h->kind == SH_SPK_NM ? NULL : sh_sp_ptr(h);
    /* nm with n = m/2, m <= 8: words made only of full groups keep 4 per byte */
    int64_t half = sh_sp_nm_half(h);
    const uint32_t *codes = sh_sp_nm_codes(h) ? sh_sp_idx(h) : NULL;
    int64_t w32 = codes ? sh_sp_words32(h) : 0;
    __attribute__((aligned(64))) float acc[64];
    int64_t r = r0;
    if (codes && j->B == 1 && h->cols % 32 == 0 && per_row == h->cols / 2) /* 2:4, no tail: 4 rows at a time */
        for (; r + 4 <= r1; r += 4) {
            const uint32_t *cs[4] = {codes + r * w32, codes + (r + 1) * w32, codes + (r + 2) * w32, codes + (r + 3) * w32};
            const float *vs[4] = {val + r * per_row, val + (r + 1) * per_row, val + (r + 2) * per_row,
                                  val + (r + 3) * per_row};
            float o[4];
            nm24_rows4_gemv(cs, vs, h->cols / 32, j->x, o);
            for (int i = 0; i < 4; i++) j->y[r + i] = o[i] + (j->bias ? j->bias[r + i] : 0.0f);
        }
    if (!codes && half && half == words && words % 4 == 0 && j->B == 1) /* 4:8 bitmaps, no tail */
        for (; r + 4 <= r1; r += 4) {
            const uint16_t *bm = (const uint16_t *)sh_sp_idx(h) + r * words;
            const uint16_t *bms[4] = {bm, bm + words, bm + 2 * words, bm + 3 * words};
            const float *vs[4] = {val + r * per_row, val + (r + 1) * per_row, val + (r + 2) * per_row,
                                  val + (r + 3) * per_row};
            float o[4];
            nm_rows4_gemv(bms, vs, words, j->x, o);
            for (int i = 0; i < 4; i++) j->y[r + i] = o[i] + (j->bias ? j->bias[r + i] : 0.0f);
        }
    for (; r < r1; r++) {
        float b0 = j->bias ? j->bias[r] : 0.0f;
        if (j->B == 1) {
            float s;
            if (codes)
                s = nm24_row_gemv(codes + r * w32, h->cols, per_row, val + r * per_row, j->x);
            else if (h->kind == SH_SPK_NM)
                s = nm_row_gemv((const uint16_t *)sh_sp_idx(h) + r * words, words, half, val + r * per_row, j->x);
            else if (h->kind == SH_SPK_CSR)
                s = csr_row_gemv(i16 ? i16 + ptr[r] : NULL, i32 ? i32 + ptr[r] : NULL, val + ptr[r], ptr[r + 1] - ptr[r], j->x);
            else s = bcsr_row_gemv(h, r, j->x);
            j->y[r] = s + b0;
            continue;
        }
        if (h->kind == SH_SPK_CSR) {
            batch_any(j->xt, j->bp, i16 ? i16 + ptr[r] : NULL, i32 ? i32 + ptr[r] : NULL, val + ptr[r], ptr[r + 1] - ptr[r], acc);
        } else if (h->kind == SH_SPK_NM) {
            int64_t cnt = codes ? nm24_decode(codes + r * w32, per_row, cols)
                                : nm_decode((const uint16_t *)sh_sp_idx(h) + r * words, words, cols);
            batch_any(j->xt, j->bp, NULL, cols, val + r * per_row, cnt, acc);
        } else {
            const float *v;
            int64_t cnt = sh_sp_row_decode(h, r, cols, &v);
            batch_any(j->xt, j->bp, NULL, cols, v, cnt, acc);
        }
        for (int64_t b = 0; b < j->B; b++) j->y[b * j->ldy + r] = acc[b] + b0;
    }
}

/* ---- dense GEMV peer: y[r] = w[r,:] . x (+ bias), 4 rows at a time ------- */

void sh_dense_gemv_rows_avx512(const float *w, int64_t k, const float *x, const float *bias, float *y, int64_t r0,
                               int64_t r1)
{
    int64_t r = r0;
    int64_t kt = k & ~(int64_t)15;
    __mmask16 km = (__mmask16)((1u << (k - kt)) - 1);
    for (; r + 4 <= r1; r += 4) {
        const float *w0 = w + r * k, *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        for (int64_t c = 0; c < kt; c += 16) {
            __m512 xv = _mm512_loadu_ps(x + c);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + c), xv, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + c), xv, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + c), xv, a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + c), xv, a3);
        }
        if (km) {
            __m512 xv = _mm512_maskz_loadu_ps(km, x + kt);
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(km, w0 + kt), xv, a0);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(km, w1 + kt), xv, a1);
            a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(km, w2 + kt), xv, a2);
            a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(km, w3 + kt), xv, a3);
        }
        y[r] = _mm512_reduce_add_ps(a0) + (bias ? bias[r] : 0.0f);
        y[r + 1] = _mm512_reduce_add_ps(a1) + (bias ? bias[r + 1] : 0.0f);
        y[r + 2] = _mm512_reduce_add_ps(a2) + (bias ? bias[r + 2] : 0.0f);
        y[r + 3] = _mm512_reduce_add_ps(a3) + (bias ? bias[r + 3] : 0.0f);
    }
    for (; r < r1; r++) {
        const float *w0 = w + r * k;
        __m512 a0 = _mm512_setzero_ps();
        for (int64_t c = 0; c < kt; c += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + c), _mm512_loadu_ps(x + c), a0);
        if (km) a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(km, w0 + kt), _mm512_maskz_loadu_ps(km, x + kt), a0);
        y[r] = _mm512_reduce_add_ps(a0) + (bias ? bias[r] : 0.0f);
    }
}
