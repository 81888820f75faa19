/* qgemm_avx512.c - AVX-512 VNNI kernels (vpdpbusd: u8 x s8 -> s32).
 * Everything here is compiled for AVX-512 F/BW/VL/VNNI by the pragma below
 * and only called when sh_cpu_level() says the CPU has them, so the rest of
 * the build stays portable.
 *
 * int8 GEMM layout: B in panels of 16 columns; a panel holds, for each group
 * of 4 k, the 16 columns' 4 bytes (64 bytes = one zmm), so one vpdpbusd with
 * the broadcast 4 bytes of an A row adds 4 k-steps to 16 columns.  A is
 * packed per tile of MR rows as u8 (s8 + 128), rows interleaved by k-group.
 * The microkernel keeps MR x NP = 6 x 4 zmm accumulators (6 rows x 64
 * columns; the broadcasts are free on the load ports, so fewer rows and more
 * columns measured best), K in blocks of KC.  On this Zen 4 core vpdpbusd
 * retires one zmm (or two ymm) per cycle: ~440-465 GOP/s is the ceiling of
 * one core; the 1024^3 GEMM runs at ~80-85 % of it (bench/bench_qgemm.sh).
 *
 * Low-bit weights: see sh_qweight in qgemm.h (16-row interleaved layout, one
 * vpdpbusd per 4 k of 16 rows) and the row-format kernel rows_k below. */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "ops/qgemm.h"

#ifndef MR
#define MR 6 /* rows per microkernel (-DMR= to experiment) */
#endif
#define NP 4 /* panels of 16 per microkernel */
#ifndef KC
#define KC 1024 /* k per block */
#endif
_Static_assert(NP * 16 == SH_QGEMM_NR_AVX512, "column block of the driver");

static int64_t rup(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

int sh_qgemm_avx512_pack(const int8_t *B, int64_t ldb, sh_qgemm_b *b)
{
    int64_t N = b->N, K = b->K, Np = rup(N, 16), Kp = rup(K, 4);
    b->Np = Np;
    b->Kp = Kp;
    int8_t *d = aligned_alloc(64, (size_t)(Np * Kp));
    if (!d) return SH_ENOMEM;
    b->data = d;
    for (int64_t p = 0; p < Np / 16; p++)
        for (int64_t g = 0; g < Kp / 4; g++)
            for (int c = 0; c < 16; c++)
                for (int t = 0; t < 4; t++) {
                    int64_t n = p * 16 + c, k = g * 4 + t;
                    d[((p * (Kp / 4) + g) * 16 + c) * 4 + t] = n < N && k < K ? B[n * ldb + k] : 0;
                }
    return SH_OK;
}

/* MR x (16 np) tile; accumulators are named variables so they stay in
 * registers (MR x NP <= 24 of the 32 zmm). */
#define LD4(p) ({ int32_t v_; memcpy(&v_, (p), 4); v_; })
#define DECL(i) __m512i c##i##0 = _mm512_setzero_si512(), c##i##1 = c##i##0, c##i##2 = c##i##0, c##i##3 = c##i##0;
/* c += u8 a . s8 b, as asm with a tied operand: with the intrinsic GCC 12
 * adds register copies of every accumulator in this loop (half speed). */
#define DP(c, a, b) __asm__("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(a), "v"(b))
#define STEP(i)                                                                    \
    if (MR > (i)) {                                                                \
        __m512i av = _mm512_set1_epi32(LD4(ag + (i) * 4));                         \
        DP(c##i##0, av, b0);                                                       \
        if (np > 1) DP(c##i##1, av, b1);                                           \
        if (np > 2) DP(c##i##2, av, b2);                                           \
        if (np > 3) DP(c##i##3, av, b3);                                           \
    }
#define STORE(i)                                                                   \
    if (MR > (i)) {                                                                \
        _mm512_storeu_si512(tile + (i) * (NP * 16), c##i##0);                      \
        if (np > 1) _mm512_storeu_si512(tile + (i) * (NP * 16) + 16, c##i##1);     \
        if (np > 2) _mm512_storeu_si512(tile + (i) * (NP * 16) + 32, c##i##2);     \
        if (np > 3) _mm512_storeu_si512(tile + (i) * (NP * 16) + 48, c##i##3);     \
    }
/* sh_qepi_apply (correct = 1) for f32 / u8 / s8 outputs, 16 columns per
 * vector: the same operations in the same order (no FMA contraction:
 * y = a * scale, then + bias), so the results are bit-identical (the
 * decode of a small model spends more time here than in the products). */
static void epi_avx512(const sh_qepi_k *e, const int32_t *tile, int64_t ldt, int64_t mr, int64_t nr, int64_t m0,
                       int64_t n0, void *C, int64_t ldc)
{
    const __m512i z = _mm512_set1_epi32(e->zoff);
    const int u8 = e->out == SH_U8;
    const __m512 inv = _mm512_set1_ps(e->inv_y), yz = _mm512_set1_ps((float)e->y_zero);
    const __m512 lo = _mm512_set1_ps(u8 ? 0.0f : -128.0f), hi = _mm512_set1_ps(u8 ? 255.0f : 127.0f);
    for (int64_t i = 0; i < mr; i++) {
        const int32_t *t = tile + i * ldt;
        int64_t row = (m0 + i) * ldc + n0;
        for (int64_t j = 0; j < nr; j += 16) {
            __mmask16 k = nr - j >= 16 ? 0xffff : (__mmask16)((1u << (nr - j)) - 1);
            __m512i cs = _mm512_maskz_loadu_epi32(k, e->colsum + n0 + j);
            __m512i a = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(k, t + j), _mm512_mullo_epi32(z, cs));
            __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_maskz_loadu_ps(k, e->scale + n0 + j));
            if (e->bias) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(k, e->bias + n0 + j));
            if (e->relu) y = _mm512_max_ps(y, _mm512_setzero_ps());
            if (e->out == SH_F32) {
                _mm512_mask_storeu_ps((float *)C + row + j, k, y);
                continue;
            }
            __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(y, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, yz), lo), hi);
            _mm_mask_storeu_epi8((char *)C + row + j, k, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q)));
        }
    }
}

/* Int32 tile rows -> C: acc - zoff * colsum (int32 output) or epi_avx512. */
static void epi_tile(const sh_qepi_k *e, const int32_t *tile, int64_t ldt, int64_t mr, int64_t nr, int64_t m0,
                     int64_t n, void *C, int64_t ldc)
{
    if (e->out != SH_I32) {
        epi_avx512(e, tile, ldt, mr, nr, m0, n, C, ldc);
        return;
    }
    __m512i z = _mm512_set1_epi32(e->zoff);
    for (int64_t i = 0; i < mr; i++) {
        const int32_t *ti = tile + i * ldt;
        int32_t *c = (int32_t *)C + (m0 + i) * ldc + n;
        for (int64_t j = 0; j < nr; j += 16) {
            __mmask16 k = nr - j >= 16 ? 0xffff : (__mmask16)((1u << (nr - j)) - 1);
            __m512i cs = _mm512_maskz_loadu_epi32(k, e->colsum + n + j);
            __m512i v = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(k, ti + j), _mm512_mullo_epi32(z, cs));
            _mm512_mask_storeu_epi32(c + j, k, v);
        }
    }
}

/* np panels (16 columns each) of gemv_row: accumulators in registers when
 * np is the constant NP (the loops unroll), two chains per panel. */
static inline __attribute__((always_inline)) void gemv_panels(const uint8_t *a, uint32_t xx, uint32_t tail, int64_t kf,
                                                              int64_t kg, const int8_t *bp, int64_t pstride, int np,
                                                              int32_t *tile)
{
    __m512i c0[NP], c1[NP];
#pragma GCC unroll 4
    for (int q = 0; q < NP; q++) c0[q] = c1[q] = _mm512_setzero_si512();
    int64_t g = 0;
    for (; g + 2 <= kf; g += 2) {
        __m512i a0 = _mm512_set1_epi32((int32_t)(LD4(a + 4 * g) ^ xx));
        __m512i a1 = _mm512_set1_epi32((int32_t)(LD4(a + 4 * g + 4) ^ xx));
#pragma GCC unroll 4
        for (int q = 0; q < np; q++) {
            /* each panel is a stream: 2 KiB ahead in each (8 KiB in
             * all): Llama dim 1024 int8 decode 3.4-3.7 -> 2.4-2.6 ms */
            _mm_prefetch((const char *)(bp + q * pstride + g * 64 + 2048), _MM_HINT_T0);
            _mm_prefetch((const char *)(bp + q * pstride + g * 64 + 2048 + 64), _MM_HINT_T0);
            c0[q] = _mm512_dpbusd_epi32(c0[q], a0, _mm512_loadu_si512(bp + q * pstride + g * 64));
            c1[q] = _mm512_dpbusd_epi32(c1[q], a1, _mm512_loadu_si512(bp + q * pstride + g * 64 + 64));
        }
    }
    for (; g < kg; g++) {
        __m512i a0 = _mm512_set1_epi32((int32_t)(g < kf ? LD4(a + 4 * g) ^ xx : tail));
#pragma GCC unroll 4
        for (int q = 0; q < np; q++) c0[q] = _mm512_dpbusd_epi32(c0[q], a0, _mm512_loadu_si512(bp + q * pstride + g * 64));
    }
#pragma GCC unroll 4
    for (int q = 0; q < np; q++) _mm512_store_si512(tile + 16 * q, _mm512_add_epi32(c0[q], c1[q]));
}

/* One row of A (a GEMV: transformer decode, batch-1 classifiers) against
 * columns [n0, n1): no packing of A into MR-row tiles (5 of 6 rows would be
 * zeros), 4 panels at a time.  The same integer sums as the tiled path. */
static void gemv_row(const uint8_t *a, uint8_t x, int64_t m, int64_t n0, int64_t n1, const sh_qgemm_b *B,
                     const sh_qepi_k *e, void *C, int64_t ldc)
{
    int64_t K = B->K, kg = B->Kp / 4, kf = K / 4, pstride = kg * 64;
    const uint32_t xx = x * 0x01010101u;
    uint32_t tail = 0; /* the last partial group of 4, zero-extended */
    if (kf < kg) {
        uint8_t t4[4] = {0, 0, 0, 0};
        for (int64_t k = kf * 4; k < K; k++) t4[k - kf * 4] = (uint8_t)(a[k] ^ x);
        memcpy(&tail, t4, 4);
    }
    const int8_t *bd = B->data;
    int32_t tile[NP * 16] __attribute__((aligned(64)));
    for (int64_t n = n0; n < n1; n += NP * 16) {
        int64_t nr = n1 - n < NP * 16 ? n1 - n : NP * 16;
        int np = (int)((nr + 15) / 16);
        const int8_t *bp = bd + (n / 16) * pstride;
        if (np == NP) gemv_panels(a, xx, tail, kf, kg, bp, pstride, NP, tile);
        else gemv_panels(a, xx, tail, kf, kg, bp, pstride, np, tile);
        epi_tile(e, tile, NP * 16, 1, nr, m, n, C, ldc);
    }
}

/* tile = A[MR rows, kg groups] x B panels */
static inline __attribute__((always_inline)) void mk(const uint8_t *a, const int8_t *b, int64_t pstride, int64_t kg,
                                                     int np, int32_t *tile)
{
    DECL(0) DECL(1) DECL(2) DECL(3) DECL(4) DECL(5) DECL(6) DECL(7)
    const int8_t *p1 = b + pstride, *p2 = b + 2 * pstride, *p3 = b + 3 * pstride;
    for (int64_t g = 0; g < kg; g++) {
        __m512i b0 = _mm512_load_si512(b + g * 64);
        __m512i b1 = np > 1 ? _mm512_load_si512(p1 + g * 64) : b0;
        __m512i b2 = np > 2 ? _mm512_load_si512(p2 + g * 64) : b0;
        __m512i b3 = np > 3 ? _mm512_load_si512(p3 + g * 64) : b0;
        const uint8_t *ag = a + g * (MR * 4);
        STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5) STEP(6) STEP(7)
    }
    STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
}
#undef DECL
#undef DP
#undef STEP
#undef STORE
/* one out-of-line function per panel count: register allocation per kernel */
#define MKN(n)                                                                                     \
    static inline __attribute__((always_inline)) void mk##n(const uint8_t *a, const int8_t *b, int64_t ps, int64_t kg, \
                                                int32_t *tile)                                     \
    {                                                                                              \
        mk(a, b, ps, kg, n, tile);                                                                 \
    }
MKN(1)
MKN(2)
MKN(3)
MKN(4)

void sh_qgemm_avx512_run(const uint8_t *A, int a_signed, int64_t lda, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                         const sh_qgemm_b *B, int32_t a_zero, const sh_qepi_k *e, void *C, int64_t ldc)
{
    int64_t Kp = B->Kp, K = B->K, kg = Kp / 4, rows = m1 - m0, mt = (rows + MR - 1) / MR;
    if (rows == 1) {
        gemv_row(A + m0 * lda, a_signed ? 0x80 : 0, m0, n0, n1, B, e, C, ldc);
        return;
    }
    /* small calls (batch-1 classifiers) use stack buffers: no allocation */
    uint8_t pa_s[8192] __attribute__((aligned(64)));
    int32_t acc_s[4 * MR * NP * 16] __attribute__((aligned(64)));
    size_t pa_n = (size_t)rup(mt * MR * Kp, 64);
    uint8_t *pa = pa_n <= sizeof pa_s ? pa_s : aligned_alloc(64, pa_n);
    if (!pa) return; /* the driver cannot fail here; 256 x K bytes */
    /* pack A: tile t, group g, row i, 4 bytes */
    uint8_t x = a_signed ? 0x80 : 0;
    /* full tiles, 16 groups (64 bytes of K) at a time: the MR rows' 16
     * dwords are interleaved into MR zmm of the packed stream (stream dword
     * s = g * MR + i) with masked permutes; the rest below one word at a time */
    int64_t kv = K / 64 * 64, mfull = rows / MR;
    if (kv) {
        __m512i idx[MR];
        __mmask16 msk[MR][MR];
        for (int o = 0; o < MR; o++) {
            int32_t li[16];
            for (int i = 0; i < MR; i++) msk[o][i] = 0;
            for (int l = 0; l < 16; l++) {
                int sidx = 16 * o + l;
                li[l] = sidx / MR;
                msk[o][sidx % MR] |= (__mmask16)(1u << l);
            }
            idx[o] = _mm512_loadu_si512(li);
        }
        __m512i vx = _mm512_set1_epi8((char)x);
        for (int64_t t = 0; t < mfull; t++) {
            const uint8_t *src = A + (m0 + t * MR) * lda;
            uint8_t *dst = pa + t * MR * Kp;
            for (int64_t k = 0; k < kv; k += 64) {
                __m512i r[MR], o[MR];
                for (int i = 0; i < MR; i++) r[i] = _mm512_xor_si512(_mm512_loadu_si512(src + i * lda + k), vx);
                for (int q = 0; q < MR; q++) {
                    o[q] = _mm512_setzero_si512();
                    for (int i = 0; i < MR; i++) o[q] = _mm512_mask_permutexvar_epi32(o[q], msk[q][i], idx[q], r[i]);
                    _mm512_storeu_si512(dst + (k / 4) * MR * 4 + 64 * q, o[q]);
                }
            }
        }
    }
    for (int64_t t = 0; t < mt; t++)
        for (int i = 0; i < MR; i++) {
            int64_t m = m0 + t * MR + i;
            uint8_t *dst = pa + t * MR * Kp + i * 4;
            if (m < m1) {
                const uint8_t *src = A + m * lda;
                int64_t k = t < mfull ? kv : 0;
                for (; k + 4 <= K; k += 4) {
                    uint32_t v;
                    memcpy(&v, src + k, 4);
                    v ^= x * 0x01010101u;
                    memcpy(dst + (k / 4) * MR * 4, &v, 4);
                }
                for (int64_t g = k / 4; g < kg; g++)
                    for (int u = 0; u < 4; u++) dst[g * MR * 4 + u] = g * 4 + u < K ? (uint8_t)(src[g * 4 + u] ^ x) : 0;
            } else
                for (int64_t g = 0; g < kg; g++) memset(dst + g * MR * 4, 0, 4);
        }
    /* K in blocks of KC so the B panels (NP x 16 columns x KC) stay in L1;
     * the int32 tiles of all row tiles are summed in acc between K blocks
     * (the microkernel itself starts from zero: GCC keeps its accumulators
     * in registers that way) */
    int64_t ts = MR * NP * 16;
    int32_t *acc = mt <= 4 ? acc_s : aligned_alloc(64, (size_t)(mt * ts) * sizeof(int32_t));
    if (!acc) {
        if (pa != pa_s) free(pa);
        return;
    }
    int32_t tile[MR * NP * 16] __attribute__((aligned(64)));
    int64_t pstride = kg * 64, kcg = KC / 4;
    const int8_t *bd = B->data;
    for (int64_t n = n0; n < n1; n += NP * 16) {
        int64_t nr = n1 - n < NP * 16 ? n1 - n : NP * 16;
        int np = (int)((nr + 15) / 16);
        const int8_t *bp = bd + (n / 16) * pstride;
        for (int64_t g0 = 0; g0 < kg; g0 += kcg) {
            int64_t gn = kg - g0 < kcg ? kg - g0 : kcg;
            for (int64_t t = 0; t < mt; t++) {
                const uint8_t *at = pa + t * MR * Kp + g0 * MR * 4;
                int32_t *dst = g0 == 0 ? acc + t * ts : tile;
                const int8_t *bk = bp + g0 * 64;
                if (np >= 4) mk4(at, bk, pstride, gn, dst);
                else if (np == 3) mk3(at, bk, pstride, gn, dst);
                else if (np == 2) mk2(at, bk, pstride, gn, dst);
                else mk1(at, bk, pstride, gn, dst);
                if (g0) {
                    int32_t *a = acc + t * ts;
                    for (int64_t q = 0; q < ts; q += 16)
                        _mm512_store_si512(a + q, _mm512_add_epi32(_mm512_load_si512(a + q), _mm512_load_si512(tile + q)));
                }
            }
        }
        for (int64_t t = 0; t < mt; t++) {
            int64_t mr = rows - t * MR < MR ? rows - t * MR : MR;
            epi_tile(e, acc + t * ts, NP * 16, mr, nr, m0 + t * MR, n, C, ldc);
        }
    }
    if (acc != acc_s) free(acc);
    if (pa != pa_s) free(pa);
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

static inline __attribute__((always_inline)) void rows_k(const uint8_t *W, sh_format wf, int off, int asym, size_t bb,
                                                         int64_t nb, int64_t n0, int64_t n1,
                                                         const sh_block_q8_0 *xq, const __m256i *init,
                                                         const float *da, const float *dsa, const float *bias,
                                                         float *y)
{
    int64_t n = n0;
    const size_t rs = (size_t)nb * bb;
    for (; n + 4 <= n1; n += 4) {
        const uint8_t *r0 = W + n * rs;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
        float m0 = 0, m1 = 0, m2 = 0, m3 = 0;
        for (int64_t b = 0; b < nb; b++) {
            __m256i a = _mm256_loadu_si256((const __m256i *)xq[b].qs);
            __m256 s = _mm256_set1_ps(da[b]);
#define ROW(R)                                                                                   \
            {                                                                                    \
                const uint8_t *blk = r0 + (R) * rs + b * bb;                                     \
                __m256i dot = _mm256_dpbusd_epi32(init[b], unpack(wf, blk), a);                  \
                uint16_t dh;                                                                     \
                memcpy(&dh, blk, 2);                                                             \
                __m256 d = _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(dh)), s);                      \
                acc##R = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), d, acc##R);                    \
                if (asym) {                                                                      \
                    uint16_t mh;                                                                 \
                    memcpy(&mh, blk + 2, 2);                                                     \
                    m##R += _cvtsh_ss(mh) * dsa[b];                                              \
                }                                                                                \
            }
            ROW(0) ROW(1) ROW(2) ROW(3)
#undef ROW
        }
        __m256 acc[4] = {acc0, acc1, acc2, acc3};
        float mm[4] = {m0, m1, m2, m3};
        for (int r = 0; r < 4; r++) {
            __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps(acc[r], 1));
            h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            h = _mm_add_ss(h, _mm_movehdup_ps(h));
            y[n + r] = _mm_cvtss_f32(h) + mm[r] + (bias ? bias[n + r] : 0.0f);
        }
    }
    for (; n < n1; n++) {
        const uint8_t *r = W + n * rs;
        __m256 acc = _mm256_setzero_ps();
        float mt = 0;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = r + b * bb;
            __m256i a = _mm256_loadu_si256((const __m256i *)xq[b].qs);
            __m256i dot = _mm256_dpbusd_epi32(init[b], unpack(wf, blk), a);
            uint16_t dh;
            memcpy(&dh, blk, 2);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(_cvtsh_ss(dh) * da[b]), acc);
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

int sh_qdot_rows_avx512(const void *W, sh_format wf, int64_t K, int64_t n0, int64_t n1, const sh_block_q8_0 *xq,
                        const int32_t *xs, const float *bias, float *y)
{
    int64_t nb = K / SH_QK;
    int off;
    switch (wf) {
    case SH_Q4_0: off = 8; break;
    case SH_Q3_0: off = 4; break;
    case SH_LOG4: off = 64; break;
    case SH_Q8_0: off = 128; break;
    case SH_Q4_1: case SH_Q2_1: off = 0; break;
    default: return 0;
    }
    /* per activation block: -off * lane sums (vpdpbusd's initial value), the
     * f32 scale, and scale * sum for the min term of asymmetric formats */
    __m256i *init = aligned_alloc(32, (size_t)nb * 32);
    float *da = malloc((size_t)nb * 2 * sizeof(float));
    if (!init || !da) { free(init); free(da); return 0; }
    float *dsa = da + nb;
    const __m256i ones = _mm256_set1_epi8(1);
    for (int64_t b = 0; b < nb; b++) {
        __m256i a = _mm256_loadu_si256((const __m256i *)xq[b].qs);
        __m256i ls = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, a);
        init[b] = _mm256_mullo_epi32(ls, _mm256_set1_epi32(-off));
        da[b] = _cvtsh_ss(xq[b].d);
        dsa[b] = da[b] * (float)xs[b];
        if (wf == SH_LOG4) da[b] *= 1.0f / 64.0f; /* log4 codes are in units of d / 64 */
    }
    size_t bb = (size_t)sh_format_get(wf)->block_bytes;
    const uint8_t *w = W;
    switch (wf) { /* one instantiation per format: unpack inlined */
    case SH_Q4_0: rows_k(w, SH_Q4_0, off, 0, bb, nb, n0, n1, xq, init, da, dsa, bias, y); break;
    case SH_Q3_0: rows_k(w, SH_Q3_0, off, 0, bb, nb, n0, n1, xq, init, da, dsa, bias, y); break;
    case SH_LOG4: rows_k(w, SH_LOG4, off, 0, bb, nb, n0, n1, xq, init, da, dsa, bias, y); break;
    case SH_Q8_0: rows_k(w, SH_Q8_0, off, 0, bb, nb, n0, n1, xq, init, da, dsa, bias, y); break;
    case SH_Q4_1: rows_k(w, SH_Q4_1, off, 1, bb, nb, n0, n1, xq, init, da, dsa, bias, y); break;
    case SH_Q2_1: rows_k(w, SH_Q2_1, off, 1, bb, nb, n0, n1, xq, init, da, dsa, bias, y); break;
    default: break;
    }
    free(init);
    free(da);
    return 1;
}

/* ---- packed low-bit weights: 16 rows per vector ------------------------- */

/* Integer dot of one 32-k block of codes (16 rows) with activation bytes a,
 * plus ioffb: sum u * qa - off * sum qa per row. */
static inline __attribute__((always_inline)) __m512i pdot(const uint8_t *codes, int bits, int islog, const uint8_t *a,
                                                          int32_t ioffb)
{
    const __m512i m4 = _mm512_set1_epi8(15), m2 = _mm512_set1_epi8(3), m4p = _mm512_set1_epi8(4);
    const __m512i lut = _mm512_broadcast_i32x4(
        _mm_setr_epi8((char)128, 96, 80, 72, 68, 66, 65, 64, 0, 32, 48, 56, 60, 62, 63, 64));
    __m512i d0 = _mm512_set1_epi32(ioffb), d1 = _mm512_setzero_si512();
#define A4(j) _mm512_set1_epi32(LD4(a + 4 * (j)))
    if (bits == 8) {
#pragma GCC unroll 8
        for (int j = 0; j < 8; j += 2) {
            d0 = _mm512_dpbusd_epi32(d0, _mm512_loadu_si512(codes + 64 * j), A4(j));
            d1 = _mm512_dpbusd_epi32(d1, _mm512_loadu_si512(codes + 64 * (j + 1)), A4(j + 1));
        }
    } else if (bits == 4) {
#pragma GCC unroll 8
        for (int j = 0; j < 4; j++) {
            __m512i v = _mm512_loadu_si512(codes + 64 * j), lo, hi;
            if (islog) {
                lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(v, m4));
                hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
            } else { /* high nibble in place: 16 x code, d1 divided by 16 below */
                lo = _mm512_and_si512(v, m4);
                hi = _mm512_andnot_si512(m4, v);
            }
            d0 = _mm512_dpbusd_epi32(d0, lo, A4(j));
            d1 = _mm512_dpbusd_epi32(d1, hi, A4(j + 4));
        }
    } else if (bits == 2) {
        /* codes masked in place (4^s x code, <= 192): one accumulator per
         * shift s, scaled back exactly at the end: no shifts of the codes */
        __m512i e2 = _mm512_setzero_si512(), e3 = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int j = 0; j < 2; j++) {
            __m512i v = _mm512_loadu_si512(codes + 64 * j);
            d0 = _mm512_dpbusd_epi32(d0, _mm512_and_si512(v, m2), A4(j));
            d1 = _mm512_dpbusd_epi32(d1, _mm512_and_si512(v, _mm512_set1_epi8(12)), A4(j + 2));
            e2 = _mm512_dpbusd_epi32(e2, _mm512_and_si512(v, _mm512_set1_epi8(48)), A4(j + 4));
            e3 = _mm512_dpbusd_epi32(e3, _mm512_and_si512(v, _mm512_set1_epi8((char)192)), A4(j + 6));
        }
        d1 = _mm512_add_epi32(_mm512_srai_epi32(d1, 2), _mm512_add_epi32(_mm512_srai_epi32(e2, 4), _mm512_srai_epi32(e3, 6)));
    } else {
        __m512i h = _mm512_loadu_si512(codes + 128);
#pragma GCC unroll 8
        for (int j = 0; j < 2; j++) {
            __m512i v = _mm512_loadu_si512(codes + 64 * j);
#pragma GCC unroll 8
            for (int s = 0; s < 4; s++) {
                int jj = j + 2 * s;
                __m512i u = _mm512_and_si512(s ? _mm512_srli_epi16(v, 2 * s) : v, m2);
                if (bits == 3) /* high bit j of each byte: + 4 where set (2 ops, not 4) */
                    u = _mm512_mask_add_epi8(u, _mm512_test_epi8_mask(h, _mm512_set1_epi8((char)(1 << jj))), u, m4p);
                if (s & 1) d1 = _mm512_dpbusd_epi32(d1, u, A4(jj));
                else d0 = _mm512_dpbusd_epi32(d0, u, A4(jj));
            }
        }
    }
#undef A4
    if (bits == 4 && !islog) d1 = _mm512_srai_epi32(d1, 4); /* exact: a multiple of 16 */
    return _mm512_add_epi32(d0, d1);
}

/* One 32-k block of one 16-row group: acc += dot * d * da, accm += m * da * sum */
static inline __attribute__((always_inline)) void pblk(const uint8_t *ch, const uint8_t *cd, int bits, int asym,
                                                       int islog, const uint8_t *a, int32_t ioffb, float dab,
                                                       float dsab, __m512 *acc, __m512 *accm)
{
    __m512i dot = pdot(cd, bits, islog, a, ioffb);
    __m512 sc = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)ch)), _mm512_set1_ps(dab));
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, *acc);
    if (asym)
        *accm = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(ch + 32))), _mm512_set1_ps(dsab),
                                *accm);
}

static inline __attribute__((always_inline)) void pstore(const sh_qweight *w, int64_t g, __m512 acc, __m512 accm,
                                                         const float *bias, float *y)
{
    int64_t n0 = g * 16, cnt = w->N - n0 < 16 ? w->N - n0 : 16;
    __mmask16 k = (__mmask16)((1u << cnt) - 1);
    __m512 r = _mm512_add_ps(acc, accm);
    if (bias) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(k, bias + n0));
    _mm512_mask_storeu_ps(y + n0, k, r);
}

#ifndef PF_AHEAD
#define PF_AHEAD 8192 /* bytes of weight prefetched ahead by the GEMV kernels */
#endif

/* One scale per 32 (gblk 1): chunks of (16 rows, spc x 32 k), scales
 * interleaved with the codes in one stream; spc = 2 for the 32-byte f16
 * scales of the symmetric formats (two blocks' scales share 64 bytes, so the
 * codes stay 64-byte aligned; q4_0's former 288-byte chunks straddled cache
 * lines: 4096^2 GEMV in cache 55-59 -> 65-66 GB/s) */
static inline __attribute__((always_inline)) void pk(const sh_qweight *w, int bits, int asym, int islog, int64_t g0,
                                                     int64_t g1, const sh_block_q8_0 *xq, const int32_t *ioff,
                                                     const float *da, const float *dsa, const float *bias, float *y)
{
    const int64_t nb = w->K / SH_QK, chunk = w->chunk, spc = w->spc, hdr = w->hdr, cb = w->cb;
    const int64_t nch = (nb + spc - 1) / spc;
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *c = (const uint8_t *)w->data + g * nch * chunk;
        __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *ch = c + b / spc * chunk;
            /* software prefetch 8 KiB ahead (the weight is one stream):
             * out of cache, 4096^2 GEMV 0.81x -> 0.98x of the streaming
             * read (medians of 7 alternated runs) */
            for (int64_t o = 0; o < chunk / spc; o += 64)
                _mm_prefetch((const char *)(c + b * (chunk / spc) + PF_AHEAD + o), _MM_HINT_T0);
            pblk(ch + b % spc * hdr, ch + spc * hdr + b % spc * cb, bits, asym, islog, (const uint8_t *)xq[b].qs,
                 ioff[b], da[b], dsa[b], &acc, &accm);
        }
        pstore(w, g, acc, accm, bias, y);
    }
}

/* pdot for 4 activation rows at once: the 8- and 4-bit codes are loaded and
 * unpacked once for the 4 rows (other widths: pdot per row).  The same
 * integer sums as pdot, row by row. */
static inline __attribute__((always_inline)) void pdot4(const uint8_t *codes, int bits, int islog,
                                                        const uint8_t *const *a, const int32_t *io, __m512i *out)
{
    if (bits != 8 && bits != 4) {
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) out[r] = pdot(codes, bits, islog, a[r], io[r]);
        return;
    }
    const __m512i m4 = _mm512_set1_epi8(15);
    const __m512i lut = _mm512_broadcast_i32x4(
        _mm_setr_epi8((char)128, 96, 80, 72, 68, 66, 65, 64, 0, 32, 48, 56, 60, 62, 63, 64));
    __m512i d0[4], d1[4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) d0[r] = _mm512_set1_epi32(io[r]), d1[r] = _mm512_setzero_si512();
#define A4R(r, j) _mm512_set1_epi32(LD4(a[r] + 4 * (j)))
    if (bits == 8) {
#pragma GCC unroll 8
        for (int j = 0; j < 8; j += 2) {
            __m512i v0 = _mm512_loadu_si512(codes + 64 * j), v1 = _mm512_loadu_si512(codes + 64 * (j + 1));
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                d0[r] = _mm512_dpbusd_epi32(d0[r], v0, A4R(r, j));
                d1[r] = _mm512_dpbusd_epi32(d1[r], v1, A4R(r, j + 1));
            }
        }
    } else {
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            __m512i v = _mm512_loadu_si512(codes + 64 * j), lo, hi;
            if (islog) {
                lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(v, m4));
                hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
            } else {
                lo = _mm512_and_si512(v, m4);
                hi = _mm512_andnot_si512(m4, v);
            }
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                d0[r] = _mm512_dpbusd_epi32(d0[r], lo, A4R(r, j));
                d1[r] = _mm512_dpbusd_epi32(d1[r], hi, A4R(r, j + 4));
            }
        }
    }
#undef A4R
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) {
        if (bits == 4 && !islog) d1[r] = _mm512_srai_epi32(d1[r], 4);
        out[r] = _mm512_add_epi32(d0[r], d1[r]);
    }
}

/* pk for 4 activation rows (row r: blocks xq + r * ldb ...), gblk 1: each
 * weight chunk is read and unpacked once for the 4 rows (prompt processing,
 * batched inference); y row r at y + r * ldy.  Same results as pk per row. */
static inline __attribute__((always_inline)) void pk4(const sh_qweight *w, int bits, int asym, int islog, int64_t g0,
                                                      int64_t g1, const sh_block_q8_0 *xq, const int32_t *ioff,
                                                      const float *da, const float *dsa, int64_t ldb,
                                                      const float *bias, float *y, int64_t ldy)
{
    const int64_t nb = w->K / SH_QK, chunk = w->chunk, spc = w->spc, hdr = w->hdr, cb = w->cb;
    const int64_t nch = (nb + spc - 1) / spc;
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *c = (const uint8_t *)w->data + g * nch * chunk;
        __m512 acc[4], accm[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) acc[r] = accm[r] = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *c0 = c + b / spc * chunk, *ch = c0 + b % spc * hdr, *cd = c0 + spc * hdr + b % spc * cb;
            const uint8_t *a[4];
            int32_t io[4];
            __m512i dot[4];
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) a[r] = (const uint8_t *)xq[r * ldb + b].qs, io[r] = ioff[r * ldb + b];
            pdot4(cd, bits, islog, a, io, dot);
            __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)ch));
            __m512 mn = asym ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(ch + 32))) : d;
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                __m512 sc = _mm512_mul_ps(d, _mm512_set1_ps(da[r * ldb + b]));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[r]), sc, acc[r]);
                if (asym) accm[r] = _mm512_fmadd_ps(mn, _mm512_set1_ps(dsa[r * ldb + b]), accm[r]);
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) pstore(w, g, acc[r], accm[r], bias, y + r * ldy);
    }
}

/* pkg for 4 activation rows: one scale per gblk > 1 blocks (_g64 / _g128,
 * _ch / _t), each weight chunk unpacked once for the 4 rows; the sums in
 * pkg's order (two chains per scale group), so each row gets pkg's result. */
static inline __attribute__((always_inline)) void pkg4(const sh_qweight *w, int bits, int asym, int islog, int f32s,
                                                       int64_t g0, int64_t g1, const sh_block_q8_0 *xq,
                                                       const int32_t *ioff, const float *da, const float *dsa,
                                                       int64_t ldb, const float *bias, float *y, int64_t ldy)
{
    const int64_t nb = w->K / SH_QK, gb = w->gblk, nsg = nb / gb, chunk = w->chunk, hdr = w->hdr, cb = w->cb;
    const int64_t spc = w->spc, nch = (nsg + spc - 1) / spc;
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *G = (const uint8_t *)w->data + g * nch * chunk;
        __m512 acc[4], accm[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) acc[r] = accm[r] = _mm512_setzero_ps();
        for (int64_t sg = 0; sg < nsg; sg++) {
            const uint8_t *ch = G + sg / spc * chunk;
            const uint8_t *sc = ch + sg % spc * hdr, *cd = ch + spc * hdr + sg % spc * gb * cb;
            const int64_t b0 = sg * gb;
            __m512 ga[4], gb2[4];
            float gs[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) ga[r] = gb2[r] = _mm512_setzero_ps();
            for (int64_t j = 0; j < gb; j++) {
                const uint8_t *a[4];
                int32_t io[4];
                __m512i dot[4];
                int64_t b = b0 + j;
                /* pkg's order: pairs (j even, j + 1) in two chains, a last
                 * unpaired block (gb odd: an even j) in the first */
                int second = j & 1;
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) a[r] = (const uint8_t *)xq[r * ldb + b].qs, io[r] = ioff[r * ldb + b];
                for (int64_t o = 0; o < cb; o += 64) _mm_prefetch((const char *)(cd + j * cb + PF_AHEAD + o), _MM_HINT_T0);
                pdot4(cd + j * cb, bits, islog, a, io, dot);
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) {
                    __m512 t = _mm512_cvtepi32_ps(dot[r]);
                    if (second) gb2[r] = _mm512_fmadd_ps(t, _mm512_set1_ps(da[r * ldb + b]), gb2[r]);
                    else ga[r] = _mm512_fmadd_ps(t, _mm512_set1_ps(da[r * ldb + b]), ga[r]);
                }
                if (asym && (second || j == gb - 1))
#pragma GCC unroll 4
                    for (int r = 0; r < 4; r++) gs[r] += second ? dsa[r * ldb + b - 1] + dsa[r * ldb + b] : dsa[r * ldb + b];
            }
            __m512 d = f32s ? _mm512_loadu_ps(sc) : _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)sc));
            __m512 m = asym ? (f32s ? _mm512_loadu_ps(sc + 64) : _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sc + 32))))
                            : d;
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                acc[r] = _mm512_fmadd_ps(_mm512_add_ps(ga[r], gb2[r]), d, acc[r]);
                if (asym) accm[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(gs[r]), accm[r]);
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) pstore(w, g, acc[r], accm[r], bias, y + r * ldy);
    }
}

int sh_qpacked_rows4_avx512(const sh_qweight *w, int64_t g0, int64_t g1, const sh_block_q8_0 *xq,
                            const int32_t *ioff, const float *da, const float *dsa, int64_t ldb, const float *bias,
                            float *y, int64_t ldy)
{
    if (w->gblk > 1 || w->f32s) {
        int f = w->f32s;
        switch (w->base) {
        case SH_Q4_0: f ? pkg4(w, 4, 0, 0, 1, g0, g1, xq, ioff, da, dsa, ldb, bias, y, ldy) : pkg4(w, 4, 0, 0, 0, g0, g1, xq, ioff, da, dsa, ldb, bias, y, ldy); return 1;
        case SH_Q4_1: f ? pkg4(w, 4, 1, 0, 1, g0, g1, xq, ioff, da, dsa, ldb, bias, y, ldy) : pkg4(w, 4, 1, 0, 0, g0, g1, xq, ioff, da, dsa, ldb, bias, y, ldy); return 1;
        case SH_LOG4: f ? pkg4(w, 4, 0, 1, 1, g0, g1, xq, ioff, da, dsa, ldb, bias, y, ldy) : pkg4(w, 4, 0, 1, 0, g0, g1, xq, ioff, da, dsa, ldb, bias, y, ldy); return 1;
        case SH_Q8_0: f ? pkg4(w, 8, 0, 0, 1, g0, g1, xq, ioff, da, dsa, ldb, bias, y, ldy) : pkg4(w, 8, 0, 0, 0, g0, g1, xq, ioff, da, dsa, ldb, bias, y, ldy); return 1;
        default: return 0;
        }
    }
    switch (w->wf) {
    case SH_Q4_0: pk4(w, 4, 0, 0, g0, g1, xq, ioff, da, dsa, ldb, bias, y, ldy); return 1;
    case SH_Q4_1: pk4(w, 4, 1, 0, g0, g1, xq, ioff, da, dsa, ldb, bias, y, ldy); return 1;
    case SH_LOG4: pk4(w, 4, 0, 1, g0, g1, xq, ioff, da, dsa, ldb, bias, y, ldy); return 1;
    case SH_Q8_0: pk4(w, 8, 0, 0, g0, g1, xq, ioff, da, dsa, ldb, bias, y, ldy); return 1;
    default: return 0;
    }
}

/* One scale per gblk > 1 blocks (_g64 / _g128: f16 scales; _ch / _t: f32):
 * per scale group ga = sum_b dot_b * da_b (f32), acc += ga * d; the min
 * term m * sum_b dsa_b. */
static inline __attribute__((always_inline)) void pkg(const sh_qweight *w, int bits, int asym, int islog, int f32s,
                                                      int64_t g0, int64_t g1, const sh_block_q8_0 *xq,
                                                      const int32_t *ioff, const float *da, const float *dsa,
                                                      const float *bias, float *y)
{
    const int64_t nb = w->K / SH_QK, gb = w->gblk, nsg = nb / gb, chunk = w->chunk, hdr = w->hdr, cb = w->cb;
    const int64_t spc = w->spc, nch = (nsg + spc - 1) / spc;
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *G = (const uint8_t *)w->data + g * nch * chunk;
        __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
        for (int64_t sg = 0; sg < nsg; sg++) {
            const uint8_t *ch = G + sg / spc * chunk;
            const uint8_t *sc = ch + sg % spc * hdr, *cd = ch + spc * hdr + sg % spc * gb * cb;
            const int64_t b0 = sg * gb;
            __m512 ga = _mm512_setzero_ps(), gb2 = _mm512_setzero_ps();
            float gs = 0.0f;
            int64_t j = 0;
            for (; j + 2 <= gb; j += 2) { /* two independent chains */
                /* prefetch as in pk (out of cache: g128 / _ch 0.90-1.04x ->
                 * 0.99-1.13x of the streaming read, q3_0_ch 0.70-0.84x ->
                 * 0.77-0.90x; 4 alternated runs) */
                for (int64_t o = 0; o < 2 * cb; o += 64)
                    _mm_prefetch((const char *)(cd + j * cb + PF_AHEAD + o), _MM_HINT_T0);
                __m512i d0 = pdot(cd + j * cb, bits, islog, (const uint8_t *)xq[b0 + j].qs, ioff[b0 + j]);
                __m512i d1 = pdot(cd + (j + 1) * cb, bits, islog, (const uint8_t *)xq[b0 + j + 1].qs,
                                  ioff[b0 + j + 1]);
                ga = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_set1_ps(da[b0 + j]), ga);
                gb2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_set1_ps(da[b0 + j + 1]), gb2);
                if (asym) gs += dsa[b0 + j] + dsa[b0 + j + 1];
            }
            for (; j < gb; j++) {
                __m512i d0 = pdot(cd + j * cb, bits, islog, (const uint8_t *)xq[b0 + j].qs, ioff[b0 + j]);
                ga = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_set1_ps(da[b0 + j]), ga);
                if (asym) gs += dsa[b0 + j];
            }
            ga = _mm512_add_ps(ga, gb2);
            __m512 d = f32s ? _mm512_loadu_ps(sc) : _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)sc));
            acc = _mm512_fmadd_ps(ga, d, acc);
            if (asym) {
                __m512 m = f32s ? _mm512_loadu_ps(sc + 64) : _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sc + 32)));
                accm = _mm512_fmadd_ps(m, _mm512_set1_ps(gs), accm);
            }
        }
        pstore(w, g, acc, accm, bias, y);
    }
}

void sh_qpacked_rows_avx512(const sh_qweight *w, int64_t g0, int64_t g1, const sh_block_q8_0 *xq,
                            const int32_t *ioff, const float *da, const float *dsa, const float *bias, float *y)
{
    if (w->gblk > 1 || w->f32s) {
        int f = w->f32s;
        switch (w->base) {
        case SH_Q4_0: f ? pkg(w, 4, 0, 0, 1, g0, g1, xq, ioff, da, dsa, bias, y) : pkg(w, 4, 0, 0, 0, g0, g1, xq, ioff, da, dsa, bias, y); break;
        case SH_Q4_1: f ? pkg(w, 4, 1, 0, 1, g0, g1, xq, ioff, da, dsa, bias, y) : pkg(w, 4, 1, 0, 0, g0, g1, xq, ioff, da, dsa, bias, y); break;
        case SH_LOG4: f ? pkg(w, 4, 0, 1, 1, g0, g1, xq, ioff, da, dsa, bias, y) : pkg(w, 4, 0, 1, 0, g0, g1, xq, ioff, da, dsa, bias, y); break;
        case SH_Q8_0: f ? pkg(w, 8, 0, 0, 1, g0, g1, xq, ioff, da, dsa, bias, y) : pkg(w, 8, 0, 0, 0, g0, g1, xq, ioff, da, dsa, bias, y); break;
        case SH_Q3_0: f ? pkg(w, 3, 0, 0, 1, g0, g1, xq, ioff, da, dsa, bias, y) : pkg(w, 3, 0, 0, 0, g0, g1, xq, ioff, da, dsa, bias, y); break;
        case SH_Q2_1: f ? pkg(w, 2, 1, 0, 1, g0, g1, xq, ioff, da, dsa, bias, y) : pkg(w, 2, 1, 0, 0, g0, g1, xq, ioff, da, dsa, bias, y); break;
        default: break;
        }
        return;
    }
    switch (w->wf) {
    case SH_Q4_0: pk(w, 4, 0, 0, g0, g1, xq, ioff, da, dsa, bias, y); break;
    case SH_Q4_1: pk(w, 4, 1, 0, g0, g1, xq, ioff, da, dsa, bias, y); break;
    case SH_LOG4: pk(w, 4, 0, 1, g0, g1, xq, ioff, da, dsa, bias, y); break;
    case SH_Q8_0: pk(w, 8, 0, 0, g0, g1, xq, ioff, da, dsa, bias, y); break;
    case SH_Q3_0: pk(w, 3, 0, 0, g0, g1, xq, ioff, da, dsa, bias, y); break;
    case SH_Q2_1: pk(w, 2, 1, 0, g0, g1, xq, ioff, da, dsa, bias, y); break;
    default: break;
    }
}

/* q8_0 quantization of activations with block sums; identical results to
 * sh_quantize_q8_0_sums (f16 scale rounded to nearest even, then
 * round-half-even of x / d, clamp to +-127). */
void sh_quantize_q8_0_sums_avx512(const float *x, sh_block_q8_0 *y, int32_t *sums, int64_t n)
{
    for (int64_t b = 0; b < n / SH_QK; b++) {
        __m512 v0 = _mm512_loadu_ps(x + b * SH_QK), v1 = _mm512_loadu_ps(x + b * SH_QK + 16);
        /* NaN -> 0 as the scalar code does */
        v0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v0, v0, _CMP_ORD_Q), v0);
        v1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v1, v1, _CMP_ORD_Q), v1);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        uint16_t dh = _cvtss_sh(amax / 127.0f, _MM_FROUND_TO_NEAREST_INT);
        float d = _cvtsh_ss(dh), id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = dh;
        __m512 vid = _mm512_set1_ps(id), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
        __m512 q0 = _mm512_roundscale_ps(_mm512_mul_ps(v0, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 q1 = _mm512_roundscale_ps(_mm512_mul_ps(v1, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512i i0 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(q0, lo), hi));
        __m512i i1 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(q1, lo), hi));
        _mm_storeu_si128((__m128i *)y[b].qs, _mm512_cvtepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(y[b].qs + 16), _mm512_cvtepi32_epi8(i1));
        sums[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
    }
}
