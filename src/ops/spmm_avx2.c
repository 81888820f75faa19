/* spmm_avx2.c - AVX2 kernels of the sparse linear (see spmm.c) and the dense
 * AVX2 GEMV peer.  Compiled for AVX2+FMA+BMI2 by the pragma below; only called
 * after a run-time CPU check.
 *
 *   B = 1 : csr  - 8 values per step, x gathered by zero-extended indices
 *           bcsr - blocks loaded straight from x (1x2: scalar)
 *           nm   - 2:4 (2-bit codes): per 8 values a shift, mask, add gives
 *                  the columns, two vpermps and a blend pick x
 *                  4:8 (4 kept per bitmap byte): per byte a table
 *                  lookup gives the 4 positions, vpermps picks x; other n:m
 *                  and the tail: positions by pdep/pext, words with more
 *                  than 8 kept values go scalar
 *   B > 1 : X transposed (xt [kp][bp]); acc[0..bp) += w * xt[c][0..bp).
 */
#pragma GCC target("avx2,fma,popcnt,bmi,bmi2")
#include <immintrin.h>
#include <string.h>

#include "core/sparse.h"

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ---- B = 1 ------------------------------------------------------------ */

static float csr_row_gemv(const uint16_t *i16, const uint32_t *i32, const float *v, int64_t cnt, const float *x)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t q = 0;
    for (; q + 16 <= cnt; q += 16) {
        __m256i c0, c1;
        if (i16) {
            c0 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(i16 + q)));
            c1 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(i16 + q + 8)));
        } else {
            c0 = _mm256_loadu_si256((const __m256i *)(i32 + q));
            c1 = _mm256_loadu_si256((const __m256i *)(i32 + q + 8));
        }
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + q), _mm256_i32gather_ps(x, c0, 4), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + q + 8), _mm256_i32gather_ps(x, c1, 4), a1);
    }
    float s = 0.0f;
    for (; q < cnt; q++) s += v[q] * x[i16 ? i16[q] : i32[q]];
    return s + hsum8(_mm256_add_ps(a0, a1));
}

static float bcsr_row_gemv(const sh_sparse_hdr *h, int64_t r, const float *x)
{
    const uint32_t *ptr = sh_sp_ptr(h);
    int64_t p0 = ptr[r], p1 = ptr[r + 1], bw = h->bw;
    const uint16_t *i16 = h->idx_bytes == 2 ? sh_sp_idx(h) : NULL;
    const uint32_t *i32 = h->idx_bytes == 4 ? sh_sp_idx(h) : NULL;
    const float *v = sh_sp_val(h);
#define BIDX(j) ((int64_t)(i16 ? i16[j] : i32[j]))
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    float s = 0.0f;
    int64_t j = p0;
    if (bw == 16) {
        for (; j < p1; j++) {
            const float *xb = x + BIDX(j) * 16, *vb = v + j * 16;
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(vb), _mm256_loadu_ps(xb), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(vb + 8), _mm256_loadu_ps(xb + 8), a1);
        }
    } else if (bw == 8) {
        for (; j + 2 <= p1; j += 2) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + j * 8), _mm256_loadu_ps(x + BIDX(j) * 8), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + j * 8 + 8), _mm256_loadu_ps(x + BIDX(j + 1) * 8), a1);
        }
        if (j < p1) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + j * 8), _mm256_loadu_ps(x + BIDX(j) * 8), a0);
    } else if (bw == 4) {
        for (; j + 2 <= p1; j += 2) {
            __m256 xv = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(x + BIDX(j) * 4)),
                                             _mm_loadu_ps(x + BIDX(j + 1) * 4), 1);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + j * 4), xv, a0);
        }
        if (j < p1) {
            __m128 p = _mm_mul_ps(_mm_loadu_ps(v + j * 4), _mm_loadu_ps(x + BIDX(j) * 4));
            a1 = _mm256_insertf128_ps(_mm256_setzero_ps(), p, 0);
        }
    } else {
        for (; j < p1; j++) s += v[j * 2] * x[BIDX(j) * 2] + v[j * 2 + 1] * x[BIDX(j) * 2 + 1];
    }
#undef BIDX
    return s + hsum8(_mm256_add_ps(a0, a1));
}

/* Positions (0..7) of the set bits of byte b, one per byte, lowest first. */
static inline uint64_t bit_positions(uint32_t b)
{
    return _pext_u64(0x0706050403020100ull, _pdep_u64(b, 0x0101010101010101ull) * 0xff);
}

static float nm_row_gemv(const uint16_t *bm, int64_t words, int64_t half, const float *v, const float *x)
{
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    float s = 0.0f;
    int64_t w = 0;
    for (; w + 2 <= half; w += 2) { /* 2:4 / 4:8: 4 kept per byte, table lookups */
        uint32_t m = (uint32_t)bm[w] | (uint32_t)bm[w + 1] << 16;
        uint64_t i0 = sh_nm_pos4[m & 0xff] | (uint64_t)sh_nm_pos4[(m >> 8) & 0xff] << 32;
        uint64_t i1 = sh_nm_pos4[(m >> 16) & 0xff] | (uint64_t)sh_nm_pos4[m >> 24] << 32;
        __m256i ia = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)i0));
        __m256i ib = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)i1));
        const float *xw = x + w * 16;
        __m256 xa = _mm256_blend_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(xw), ia),
                                    _mm256_permutevar8x32_ps(_mm256_loadu_ps(xw + 8), ia), 0xf0);
        __m256 xb = _mm256_blend_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(xw + 16), ib),
                                    _mm256_permutevar8x32_ps(_mm256_loadu_ps(xw + 24), ib), 0xf0);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v), xa, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 8), xb, a1);
        v += 16;
    }
    for (; w < words; w++) {
        uint32_t m = bm[w], b0 = m & 0xff, b1 = m >> 8;
        int p0 = __builtin_popcount(b0), cnt = p0 + __builtin_popcount(b1);
        const float *xw = x + w * 16;
        if (cnt > 8) { /* dense-ish word: scalar */
            for (uint32_t b = m; b; b &= b - 1) s += *v++ * xw[__builtin_ctz(b)];
            continue;
        }
        uint64_t pos = bit_positions(b0) | (p0 < 8 ? bit_positions(b1) << (8 * p0) : 0);
        __m256i idx = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)pos));
        __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xw), idx);
        __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xw + 8), idx);
        __m256 from_hi = _mm256_castsi256_ps(_mm256_cmpgt_epi32(iota, _mm256_set1_epi32(p0 - 1)));
        __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt), iota);
        __m256 xv = _mm256_and_ps(_mm256_blendv_ps(lo, hi, from_hi), _mm256_castsi256_ps(valid));
        __m256 vv = _mm256_maskload_ps(v, valid);
        if (w & 1) a1 = _mm256_fmadd_ps(vv, xv, a1);
        else a0 = _mm256_fmadd_ps(vv, xv, a0);
        v += cnt;
    }
    return s + hsum8(_mm256_add_ps(a0, a1));
}

/* 2:4 codes: 8 values per 16 columns, x picked by two vpermps and a blend
 * with indices code + 4*((j/2)%2). */
static float nm24_row_gemv(const uint32_t *codes, int64_t cols, int64_t per_row, const float *v, const float *x)
{
    const __m256i sh = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14), base = _mm256_setr_epi32(0, 0, 4, 4, 0, 0, 4, 4);
    const __m256i three = _mm256_set1_epi32(3);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t full = cols / 16, hc = 0;
    for (; hc < full; hc++) {
        uint32_t c = codes[hc / 2] >> (16 * (hc % 2));
        __m256i idx = _mm256_add_epi32(_mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)c), sh), three), base);
        const float *xw = x + hc * 16;
        __m256 xv = _mm256_blend_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(xw), idx),
                                    _mm256_permutevar8x32_ps(_mm256_loadu_ps(xw + 8), idx), 0xf0);
        if (hc & 1) a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + hc * 8), xv, a1);
        else a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + hc * 8), xv, a0);
    }
    float s = 0.0f;
    for (int64_t j = 8 * full; j < per_row; j++) s += v[j] * x[4 * (j / 2) + sh_sp_code(codes, j)];
    return s + hsum8(_mm256_add_ps(a0, a1));
}

/* ---- B > 1 ------------------------------------------------------------ */

/* out[0..bp) = sum_q v[q] * xt[col(q)][0..bp); NC = bp / 8 ymm (1..8). */
static inline __attribute__((always_inline)) void batch_row(const float *xt, int64_t bp, const int NC,
                                                            const uint16_t *c16, const uint32_t *c32, const float *v,
                                                            int64_t cnt, float *out)
{
    __m256 a[4][8];
    const int U = NC == 1 ? 4 : NC <= 4 ? 2 : 1;
    #pragma GCC unroll 8
    for (int u = 0; u < U; u++)
        #pragma GCC unroll 8
        for (int c = 0; c < NC; c++) a[u][c] = _mm256_setzero_ps();
    int64_t q = 0;
    for (; q + U <= cnt; q += U)
        #pragma GCC unroll 8
        for (int u = 0; u < U; u++) {
            const float *xr = xt + (int64_t)(c16 ? c16[q + u] : c32[q + u]) * bp;
            __m256 w = _mm256_set1_ps(v[q + u]);
            #pragma GCC unroll 8
            for (int c = 0; c < NC; c++) a[u][c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 8 * c), a[u][c]);
        }
    for (; q < cnt; q++) {
        const float *xr = xt + (int64_t)(c16 ? c16[q] : c32[q]) * bp;
        __m256 w = _mm256_set1_ps(v[q]);
        #pragma GCC unroll 8
        for (int c = 0; c < NC; c++) a[0][c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 8 * c), a[0][c]);
    }
    #pragma GCC unroll 8
    for (int c = 0; c < NC; c++) {
        __m256 s = a[0][c];
        #pragma GCC unroll 8
        for (int u = 1; u < U; u++) s = _mm256_add_ps(s, a[u][c]);
        _mm256_storeu_ps(out + 8 * c, s);
    }
}

static void batch_any(const float *xt, int64_t bp, const uint16_t *c16, const uint32_t *c32, const float *v, int64_t cnt,
                      float *out)
{
    switch (bp) {
    case 8: batch_row(xt, bp, 1, c16, c32, v, cnt, out); break;
    case 16: batch_row(xt, bp, 2, c16, c32, v, cnt, out); break;
    case 32: batch_row(xt, bp, 4, c16, c32, v, cnt, out); break;
    case 48: batch_row(xt, bp, 6, c16, c32, v, cnt, out); break;
    default: batch_row(xt, bp, 8, c16, c32, v, cnt, out); break;
    }
}

void sh_spmm_rows_avx2(const sh_spmm_job *j, int64_t r0, int64_t r1, void *tmp)
{
    const sh_sparse_hdr *h = j->h;
    uint32_t *cols = tmp;
    const float *val = sh_sp_val(h);
    const uint16_t *i16 = h->idx_bytes == 2 ? sh_sp_idx(h) : NULL;
    const uint32_t *i32 = h->idx_bytes == 4 ? sh_sp_idx(h) : NULL;
    int64_t words = sh_sp_words(h), per_row = h->kind == SH_SPK_NM ? sh_sp_nm_per_row(h->cols, h->n, h->m) : 0;
    const uint32_t *ptr = h->kind == SH_SPK_NM ? NULL : sh_sp_ptr(h);
    int64_t half = sh_sp_nm_half(h);
    __attribute__((aligned(32))) float acc[64];
    for (int64_t r = r0; r < r1; r++) {
        float b0 = j->bias ? j->bias[r] : 0.0f;
        if (j->B == 1) {
            float s;
            if (sh_sp_nm_codes(h))
                s = nm24_row_gemv((const uint32_t *)sh_sp_idx(h) + r * sh_sp_words32(h), h->cols, per_row, val + r * per_row,
                                  j->x);
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
        } else {
            const float *v;
            int64_t cnt = sh_sp_row_decode(h, r, cols, &v);
            batch_any(j->xt, j->bp, NULL, cols, v, cnt, acc);
        }
        for (int64_t b = 0; b < j->B; b++) j->y[b * j->ldy + r] = acc[b] + b0;
    }
}

/* ---- dense GEMV peer ----------------------------------------------------- */

void sh_dense_gemv_rows_avx2(const float *w, int64_t k, const float *x, const float *bias, float *y, int64_t r0,
                             int64_t r1)
{
    int64_t kt = k & ~(int64_t)7;
    for (int64_t r = r0; r < r1; r++) {
        const float *w0 = w + r * k;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int64_t c = 0;
        for (; c + 16 <= kt; c += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + c), _mm256_loadu_ps(x + c), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + c + 8), _mm256_loadu_ps(x + c + 8), a1);
        }
        for (; c < kt; c += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + c), _mm256_loadu_ps(x + c), a0);
        float s = hsum8(_mm256_add_ps(a0, a1));
        for (; c < k; c++) s += w0[c] * x[c];
        y[r] = s + (bias ? bias[r] : 0.0f);
    }
}
