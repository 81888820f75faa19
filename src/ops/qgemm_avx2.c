/* qgemm_avx2.c - AVX2 kernels.  Compiled for AVX2/FMA/F16C by the pragma
 * below and only called when sh_cpu_level() allows it.
 *
 * int8 GEMM: exact without VNNI: A - a_zero and B are widened to s16 and
 * multiplied with vpmaddwd (pairs of k), so nothing saturates (vpmaddubsw
 * would).  B in panels of 8 columns: per pair of k, 8 columns x 2 s16 (one
 * ymm); A packed per tile of MR rows as s16 pairs.  Microkernel MR x 24.
 * Low-bit rows: vpmaddubsw (u8 codes <= 128 times s8 activations cannot
 * saturate) + vpmaddwd with ones; q8_0 weights use the sign trick. */
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "ops/qgemm.h"

#define MR 4
#define NP 3 /* panels of 8 per microkernel */

static int64_t rup(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

int sh_qgemm_avx2_pack(const int8_t *B, int64_t ldb, sh_qgemm_b *b)
{
    int64_t N = b->N, K = b->K, Np = rup(N, 8), Kp = rup(K, 2);
    b->Np = Np;
    b->Kp = Kp;
    int16_t *d = aligned_alloc(32, (size_t)rup(Np * Kp * 2, 32));
    if (!d) return SH_ENOMEM;
    b->data = d;
    for (int64_t p = 0; p < Np / 8; p++)
        for (int64_t g = 0; g < Kp / 2; g++)
            for (int c = 0; c < 8; c++)
                for (int t = 0; t < 2; t++) {
                    int64_t n = p * 8 + c, k = g * 2 + t;
                    d[((p * (Kp / 2) + g) * 8 + c) * 2 + t] = n < N && k < K ? B[n * ldb + k] : 0;
                }
    return SH_OK;
}

#define LD4(p) ({ int32_t v_; memcpy(&v_, (p), 4); v_; })
#define DECL(i) __m256i c##i##0 = _mm256_setzero_si256(), c##i##1 = c##i##0, c##i##2 = c##i##0;
#define STEP(i)                                                                    \
    {                                                                              \
        __m256i av = _mm256_set1_epi32(LD4(ag + (i) * 2));                         \
        c##i##0 = _mm256_add_epi32(c##i##0, _mm256_madd_epi16(av, b0));            \
        if (np > 1) c##i##1 = _mm256_add_epi32(c##i##1, _mm256_madd_epi16(av, b1)); \
        if (np > 2) c##i##2 = _mm256_add_epi32(c##i##2, _mm256_madd_epi16(av, b2)); \
    }
#define STORE(i)                                                                   \
    {                                                                              \
        _mm256_storeu_si256((__m256i *)(tile + (i) * (NP * 8)), c##i##0);          \
        if (np > 1) _mm256_storeu_si256((__m256i *)(tile + (i) * (NP * 8) + 8), c##i##1);  \
        if (np > 2) _mm256_storeu_si256((__m256i *)(tile + (i) * (NP * 8) + 16), c##i##2); \
    }
static inline __attribute__((always_inline)) void mk(const int16_t *a, const int16_t *b, int64_t pstride, int64_t kg,
                                                     int np, int32_t *tile)
{
    DECL(0) DECL(1) DECL(2) DECL(3)
    const int16_t *p1 = b + pstride, *p2 = b + 2 * pstride;
    for (int64_t g = 0; g < kg; g++) {
        __m256i b0 = _mm256_load_si256((const __m256i *)(b + g * 16));
        __m256i b1 = np > 1 ? _mm256_load_si256((const __m256i *)(p1 + g * 16)) : b0;
        __m256i b2 = np > 2 ? _mm256_load_si256((const __m256i *)(p2 + g * 16)) : b0;
        const int16_t *ag = a + g * (MR * 2);
        STEP(0) STEP(1) STEP(2) STEP(3)
    }
    STORE(0) STORE(1) STORE(2) STORE(3)
}
#undef DECL
#undef STEP
#undef STORE

void sh_qgemm_avx2_run(const uint8_t *A, int a_signed, int64_t lda, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                       const sh_qgemm_b *B, int32_t a_zero, const sh_qepi_k *e, void *C, int64_t ldc)
{
    int64_t Kp = B->Kp, K = B->K, kg = Kp / 2, rows = m1 - m0, mt = (rows + MR - 1) / MR;
    int16_t *pa = aligned_alloc(32, (size_t)rup(mt * MR * Kp * 2, 32));
    if (!pa) return;
    for (int64_t t = 0; t < mt; t++)
        for (int i = 0; i < MR; i++) {
            int64_t m = m0 + t * MR + i;
            int16_t *dst = pa + t * MR * Kp + i * 2;
            for (int64_t g = 0; g < kg; g++)
                for (int u = 0; u < 2; u++) {
                    int64_t k = g * 2 + u;
                    int16_t v = 0;
                    if (m < m1 && k < K)
                        v = (int16_t)((a_signed ? (int32_t)((const int8_t *)A)[m * lda + k] : (int32_t)A[m * lda + k]) - a_zero);
                    dst[g * MR * 2 + u] = v;
                }
        }
    int32_t tile[MR * NP * 8] __attribute__((aligned(32)));
    int64_t pstride = kg * 16;
    const int16_t *bd = B->data;
    for (int64_t n = n0; n < n1; n += NP * 8) {
        int64_t nr = n1 - n < NP * 8 ? n1 - n : NP * 8;
        int np = (int)((nr + 7) / 8);
        const int16_t *bp = bd + (n / 8) * pstride;
        for (int64_t t = 0; t < mt; t++) {
            const int16_t *at = pa + t * MR * Kp;
            if (np == 3) mk(at, bp, pstride, kg, 3, tile);
            else if (np == 2) mk(at, bp, pstride, kg, 2, tile);
            else mk(at, bp, pstride, kg, 1, tile);
            int64_t mr = rows - t * MR < MR ? rows - t * MR : MR;
            sh_qepi_apply(e, tile, NP * 8, mr, nr, m0 + t * MR, n, C, ldc, 0);
        }
    }
    free(pa);
}

/* ---- low-bit weight rows x q8_0 activations ---------------------------- */

/* 32 codes of a block as u8 in a ymm (see quant_formats.h) */
static inline __m256i nib(const uint8_t *qs)
{
    __m128i lo = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(lo, 4), lo);
    return _mm256_and_si256(v, _mm256_set1_epi8(15));
}
static inline __m256i two(const uint8_t *qs)
{
    int64_t q;
    memcpy(&q, qs, 8);
    __m256i v = _mm256_srlv_epi64(_mm256_set1_epi64x(q), _mm256_set_epi64x(6, 4, 2, 0));
    return _mm256_and_si256(v, _mm256_set1_epi8(3));
}
static inline __m256i hibit(const uint8_t *qh)
{
    int32_t h;
    memcpy(&h, qh, 4);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(h),
                                    _mm256_set_epi64x(0x0303030303030303ll, 0x0202020202020202ll,
                                                      0x0101010101010101ll, 0));
    const __m256i bits = _mm256_set1_epi64x(0x8040201008040201ll);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bits), bits);
    return _mm256_and_si256(v, _mm256_set1_epi8(4));
}

static inline __m256i unpack(sh_format wf, const uint8_t *blk)
{
    switch (wf) {
    case SH_Q4_0: return nib(blk + 2);
    case SH_Q4_1: return nib(blk + 4);
    case SH_LOG4: {
        /* code -> 64 + s * (64 >> e): e = 7 -> 64 */
        const __m256i lut = _mm256_setr_epi8(
            (char)128, 96, 80, 72, 68, 66, 65, 64, 0, 32, 48, 56, 60, 62, 63, 64,
            (char)128, 96, 80, 72, 68, 66, 65, 64, 0, 32, 48, 56, 60, 62, 63, 64);
        return _mm256_shuffle_epi8(lut, nib(blk + 2));
    }
    case SH_Q8_0:
        return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), _mm256_set1_epi8((char)0x80));
    case SH_Q3_0: return _mm256_or_si256(two(blk + 2), hibit(blk + 10));
    case SH_Q2_1: return two(blk + 4);
    default: return _mm256_setzero_si256();
    }
}

static inline __m256i dot(sh_format wf, const uint8_t *blk, __m256i a, __m256i init)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i p;
    if (wf == SH_Q8_0) {
        __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));
        p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    } else
        p = _mm256_maddubs_epi16(unpack(wf, blk), a);
    return _mm256_add_epi32(init, _mm256_madd_epi16(p, ones));
}

static inline __attribute__((always_inline)) void rows_k(const uint8_t *W, sh_format wf, int asym, size_t bb,
                                                         int64_t nb, int64_t n0, int64_t n1,
                                                         const sh_block_q8_0 *xq, const __m256i *init,
                                                         const float *da, const float *dsa, const float *bias,
                                                         float *y)
{
    const size_t rs = (size_t)nb * bb;
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t *r = W + n * rs;
        __m256 acc = _mm256_setzero_ps();
        float mt = 0;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = r + b * bb;
            __m256i a = _mm256_loadu_si256((const __m256i *)xq[b].qs);
            __m256i d = dot(wf, blk, a, init[b]);
            uint16_t dh;
            memcpy(&dh, blk, 2);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(_cvtsh_ss(dh) * da[b]), acc);
            if (asym) {
                uint16_t mh;
                memcpy(&mh, blk + 2, 2);
                mt += _cvtsh_ss(mh) * dsa[b];
            }
        }
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        y[n] = _mm_cvtss_f32(h) + mt + (bias ? bias[n] : 0.0f);
    }
}

int sh_qdot_rows_avx2(const void *W, sh_format wf, int64_t K, int64_t n0, int64_t n1, const sh_block_q8_0 *xq,
                      const int32_t *xs, const float *bias, float *y)
{
    int64_t nb = K / SH_QK;
    int off;
    switch (wf) {
    case SH_Q4_0: off = 8; break;
    case SH_Q3_0: off = 4; break;
    case SH_LOG4: off = 64; break;
    case SH_Q8_0: off = 0; break; /* signed dot (sign trick) */
    case SH_Q4_1: case SH_Q2_1: off = 0; break;
    default: return 0;
    }
    __m256i *init = aligned_alloc(32, (size_t)nb * 32);
    float *da = malloc((size_t)nb * 2 * sizeof(float));
    if (!init || !da) { free(init); free(da); return 0; }
    float *dsa = da + nb;
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; b++) {
        __m256i a = _mm256_loadu_si256((const __m256i *)xq[b].qs);
        __m256i ls = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, a), ones16);
        init[b] = _mm256_mullo_epi32(ls, _mm256_set1_epi32(-off));
        da[b] = _cvtsh_ss(xq[b].d);
        dsa[b] = da[b] * (float)xs[b];
        if (wf == SH_LOG4) da[b] *= 1.0f / 64.0f; /* log4 codes are in units of d / 64 */
    }
    size_t bb = (size_t)sh_format_get(wf)->block_bytes;
    const uint8_t *w = W;
    switch (wf) {
    case SH_Q4_0: rows_k(w, SH_Q4_0, 0, bb, nb, n0, n1, xq, init, da, dsa, bias, y); break;
    case SH_Q3_0: rows_k(w, SH_Q3_0, 0, bb, nb, n0, n1, xq, init, da, dsa, bias, y); break;
    case SH_LOG4: rows_k(w, SH_LOG4, 0, bb, nb, n0, n1, xq, init, da, dsa, bias, y); break;
    case SH_Q8_0: rows_k(w, SH_Q8_0, 0, bb, nb, n0, n1, xq, init, da, dsa, bias, y); break;
    case SH_Q4_1: rows_k(w, SH_Q4_1, 1, bb, nb, n0, n1, xq, init, da, dsa, bias, y); break;
    case SH_Q2_1: rows_k(w, SH_Q2_1, 1, bb, nb, n0, n1, xq, init, da, dsa, bias, y); break;
    default: break;
    }
    free(init);
    free(da);
    return 1;
}

/* ---- the 16-row packed layout (qgemm.h), read with AVX2 ------------------
 * Rows 0-7 are bytes 0-31 of each 64-byte code vector, rows 8-15 bytes
 * 32-63: one ymm per half.  vpmaddubsw of codes <= 128 (4/3/2-bit, log4)
 * with s8 activations cannot saturate; 8-bit codes u = q + 128 use the sign
 * trick on q (and the -128 * sum term then drops out). */
static inline __m256i pdot2(const uint8_t *codes, int bits, int islog, const uint8_t *a, int32_t ioffb, int h)
{
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3), m1 = _mm256_set1_epi8(1);
    const __m256i ones = _mm256_set1_epi16(1), x80 = _mm256_set1_epi8((char)0x80);
    const __m256i lut = _mm256_setr_epi8((char)128, 96, 80, 72, 68, 66, 65, 64, 0, 32, 48, 56, 60, 62, 63, 64,
                                         (char)128, 96, 80, 72, 68, 66, 65, 64, 0, 32, 48, 56, 60, 62, 63, 64);
    __m256i acc = _mm256_setzero_si256();
#define A4(j) _mm256_set1_epi32(LD4(a + 4 * (j)))
#define CV(j) _mm256_loadu_si256((const __m256i *)(codes + 64 * (j) + 32 * h))
#define DOT(u, av) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16((u), (av)), ones))
    if (bits == 8) {
        for (int j = 0; j < 8; j++) {
            __m256i q = _mm256_xor_si256(CV(j), x80), av = A4(j); /* q = u - 128 as s8 */
            DOT(_mm256_abs_epi8(q), _mm256_sign_epi8(av, q));
        }
        return acc; /* sum (u - 128) a: the ioff term (-128 sum a) is already in */
    }
    if (bits == 4) {
        for (int j = 0; j < 4; j++) {
            __m256i v = CV(j);
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if (islog) lo = _mm256_shuffle_epi8(lut, lo), hi = _mm256_shuffle_epi8(lut, hi);
            DOT(lo, A4(j));
            DOT(hi, A4(j + 4));
        }
    } else {
        __m256i hb = bits == 3 ? CV(2) : _mm256_setzero_si256();
        for (int j = 0; j < 2; j++) {
            __m256i v = CV(j);
            for (int s = 0; s < 4; s++) {
                int jj = j + 2 * s;
                __m256i u = _mm256_and_si256(_mm256_srli_epi16(v, 2 * s), m2);
                if (bits == 3)
                    u = _mm256_or_si256(u, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, jj), m1), 2));
                DOT(u, A4(jj));
            }
        }
    }
#undef A4
#undef CV
#undef DOT
    return _mm256_add_epi32(acc, _mm256_set1_epi32(ioffb));
}

static inline __m256 ld_scale(const uint8_t *p, int f32s, int h)
{
    return f32s ? _mm256_loadu_ps((const float *)(p + 32 * h))
                : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16 * h)));
}

void sh_qpacked_rows_avx2(const sh_qweight *w, int64_t g0, int64_t g1, const sh_block_q8_0 *xq, const int32_t *ioff,
                          const float *da, const float *dsa, const float *bias, float *y)
{
    int off, asym, bits = sh_qpacked_bits(w->base, &off, &asym);
    const int islog = w->base == SH_LOG4, f32s = w->f32s;
    const int64_t nb = w->K / SH_QK, gb = w->gblk, nsg = nb / gb, spc = w->spc, nch = (nsg + spc - 1) / spc;
    const int64_t moff = f32s ? 64 : 32; /* mins after the 16 scales */
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *G = (const uint8_t *)w->data + g * nch * w->chunk;
        for (int h = 0; h < 2; h++) {
            __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
            for (int64_t sg = 0; sg < nsg; sg++) {
                const uint8_t *ch = G + sg / spc * w->chunk;
                const uint8_t *sc = ch + sg % spc * w->hdr, *cd = ch + spc * w->hdr + sg % spc * gb * w->cb;
                __m256 ga = _mm256_setzero_ps();
                float gs = 0.0f;
                for (int64_t j = 0; j < gb; j++) {
                    int64_t b = sg * gb + j;
                    __m256i d = pdot2(cd + j * w->cb, bits, islog, (const uint8_t *)xq[b].qs, ioff[b], h);
                    ga = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(da[b]), ga);
                    gs += dsa[b];
                }
                acc = _mm256_fmadd_ps(ga, ld_scale(sc, f32s, h), acc);
                if (asym) accm = _mm256_fmadd_ps(ld_scale(sc + moff, f32s, h), _mm256_set1_ps(gs), accm);
            }
            int64_t n0 = g * 16 + 8 * h;
            if (n0 >= w->N) break;
            float r[8];
            _mm256_storeu_ps(r, _mm256_add_ps(acc, accm));
            for (int i = 0; i < 8 && n0 + i < w->N; i++) y[n0 + i] = r[i] + (bias ? bias[n0 + i] : 0.0f);
        }
    }
}
