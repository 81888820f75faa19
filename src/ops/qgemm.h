/* qgemm.h - integer GEMM kernels (internal API).
 *
 * 1. int8 GEMM:  C[M,N] = sum_k (A[m,k] - a_zero) * B[n,k]
 *    A: u8 or s8 activations (row-major, lda), B: s8 weights [N,K] packed once
 *    by sh_qgemm_pack_b for a kernel level (ref / avx2 / avx512-vnni).  The
 *    epilogue gives int32, or f32 = C * a_scale * b_scale[n] + bias[n] (ReLU
 *    optional), or u8/s8 = clamp(nearbyint(f32 / y_scale) + y_zero).
 *    VNNI (vpdpbusd, u8 x s8): s8 activations are offset by +128 to u8 and the
 *    offset (and a_zero) is removed with the per-column sums of B.
 *    AVX2: A - a_zero and B widened to s16, vpmaddwd (exact, no saturation).
 *    All levels give bit-identical results.
 *
 * 2. low-bit weight GEMM (weight-only quantization):
 *    Y[M,N] = X[M,K] (f32) . W[N,K]^T (+ bias), W row-major in a grouped format
 *    (q4_0, q4_1, q3_0, q2_1, log4, q8_0; K a multiple of 32).  X rows are
 *    quantized on the fly to q8_0 blocks (the vec_dot_type) and every weight
 *    block meets an activation block in an integer dot product.
 */
#ifndef SH_QGEMM_H
#define SH_QGEMM_H

#include <stdint.h>
#include <string.h>

#include "shrink.h"
#include "core/quant_formats.h"

/* ---- int8 GEMM ----------------------------------------------------------- */

typedef struct sh_qgemm_b {
    int level;         /* layout: SH_CPU_REF, SH_CPU_LEVEL_AVX2, SH_CPU_LEVEL_AVX512 */
    int64_t N, K;
    int64_t Np, Kp;    /* padded sizes of the packed layout */
    void *data;        /* ref: B row-major; avx2: s16 pairs; avx512: u8x4 groups */
    int32_t *colsum;   /* sum_k B[n,k] (N entries) */
} sh_qgemm_b;

/* Pack s8 B[N,K] (row stride ldb) for `level` (-1: sh_cpu_level()). */
int sh_qgemm_pack_b(const int8_t *B, int64_t N, int64_t K, int64_t ldb, int level, sh_qgemm_b **out,
                    sh_error *err);
void sh_qgemm_b_free(sh_qgemm_b *b);

typedef struct sh_qgemm_epi {
    sh_format out;         /* SH_I32, SH_F32, SH_U8 or SH_I8 */
    int32_t a_zero;        /* zero point of A */
    float a_scale;         /* f32/u8/s8 outputs */
    const float *b_scale;  /* N per-channel weight scales, NULL: 1 */
    const float *bias;     /* N, NULL: none */
    int relu;
    float y_scale;         /* u8/s8 outputs */
    int32_t y_zero;
} sh_qgemm_epi;

/* C (format epi->out, row stride ldc elements) = A x B^T with the epilogue.
 * a_signed: A is s8 (else u8).  nthreads <= 0: OpenMP default. */
int sh_qgemm(const void *A, int a_signed, int64_t M, int64_t lda, const sh_qgemm_b *B,
             const sh_qgemm_epi *epi, void *C, int64_t ldc, int nthreads, sh_error *err);

/* ---- low-bit weight GEMM ------------------------------------------------- */

/* level -1: sh_cpu_level().  bias may be NULL. */
int sh_qmatmul(const float *X, int64_t M, const void *W, sh_format wf, int64_t N, int64_t K,
               const float *bias, float *Y, int nthreads, int level, sh_error *err);

/* A low-bit weight prepared for the CPU (like sh_qgemm_b): on AVX-512 VNNI
 * the rows are interleaved by 16 ("packed"): for each group of 16 rows and
 * each block of 32 k, the 16 f16 scales (and 16 f16 mins) and the codes,
 * laid out so that one 64-byte vector holds 4 consecutive k of all 16 rows
 * (one vpdpbusd per 4 k for 16 rows, one vcvtph2ps for 16 scales):
 *   8-bit (q8_0):  8 vectors, byte 4r+t = u[r][4j+t] for vector j
 *   4-bit (q4_0, q4_1, log4 codes): 4 vectors, low nibble k-group j, high
 *                  nibble k-group j+4
 *   2-bit (q2_1):  2 vectors, bits 2s..2s+1 hold k-group j+2s
 *   3-bit (q3_0):  the 2-bit part as q2_1, then 1 vector of high bits (bit j:
 *                  k-group j)
 * Formats with one scale per G > 32 values (the _g64 / _g128 rows, and the
 * per-channel / per-tensor _ch / _t rows, G = K) keep one scale per G in the
 * packed layout too: per 16 rows, chunks of spc scale groups: the groups'
 * 16 scales and (asymmetric) 16 mins (hdr bytes each; f16 for _g64 / _g128,
 * f32 for _ch / _t), then the codes of their G / 32 blocks (cb bytes each,
 * as above).  spc = 2 for symmetric f16 scales (2 x 32 bytes), else 1, so
 * the codes stay 64-byte aligned with no padding (an odd last group is
 * padded).  A scale per 32 (G = 32) is the same layout with one block per
 * group: symmetric formats put two blocks' scales in 64 bytes, then their
 * codes (q4_0: 576-byte chunks; the former 288-byte chunk per block left
 * the codes straddling cache lines); one interleaved stream (measured faster
 * at batch 1 than scales and codes in separate regions).  The kernels sum
 * per 32-block integer dots times the activation block scale in f32 and
 * multiply by the weight scale once per group; the min term is m times the
 * sum of the group's activation block sums.  G = 32: exactly the layout
 * above.  Below AVX-512, base formats keep the row format and _g64 / _g128
 * rows are expanded to base 32-blocks (scale repeated, exact); _ch / _t rows
 * always use the packed layout (read by an AVX2 kernel at the AVX2 level,
 * the portable reader below).
 * Memory per weight is the file's (plus 16-row padding). */
typedef struct sh_qweight {
    sh_format wf;        /* format run: a base format when !packed */
    int64_t N, K;
    int level;           /* level it was prepared for */
    int packed;          /* 1: 16-row interleaved layout above; 0: row format */
    int64_t chunk;       /* packed: bytes per chunk: spc * (hdr + gblk * cb) */
    void *data;
    size_t bytes;
    sh_format base;      /* 32-block base format of the codes */
    int64_t gblk;        /* packed: 32-blocks per scale group (1: a scale per 32) */
    int64_t hdr, cb;     /* packed: scale bytes per scale group, code bytes per 32-block */
    int64_t spc;         /* packed: scale groups per chunk (2: f16 sym scales of 2 groups share 64 bytes) */
    int f32s;            /* packed: scales / mins are f32 (_ch / _t rows) */
} sh_qweight;

/* Prepare W[N,K] for `level` (-1: sh_cpu_level()): W in row format wf (a
 * grouped format, its _g64 / _g128 row, or a _ch / _t buffer with header). */
int sh_qweight_new(const void *W, sh_format wf, int64_t N, int64_t K, int level, sh_qweight **out, sh_error *err);
void sh_qweight_free(sh_qweight *w);
/* Y[M,N] = X[M,K] . W^T (+ bias) with a prepared weight. */
int sh_qweight_matmul(const float *X, int64_t M, const sh_qweight *w, const float *bias, float *Y, int nthreads,
                      sh_error *err);

/* ---- per-path kernels (qgemm_ref.c, qgemm_avx2.c, qgemm_avx512.c) -------- */

/* Epilogue constants shared by every path. */
typedef struct sh_qepi_k {
    int out;               /* sh_format */
    int32_t zoff;          /* subtracted times colsum (avx512 path) */
    const int32_t *colsum;
    const float *scale;    /* N: a_scale * b_scale[n] */
    const float *bias;
    int relu;
    float inv_y;
    int32_t y_zero;
} sh_qepi_k;

/* Int32 accumulator tile rows [m0, m0+mr) x cols [n0, n0+nr) (tile stride
 * ldt) -> C through the epilogue.  Plain C, compiled once per path. */
static inline void sh_qepi_apply(const sh_qepi_k *e, const int32_t *tile, int64_t ldt, int64_t mr, int64_t nr,
                                 int64_t m0, int64_t n0, void *C, int64_t ldc, int correct)
{
    for (int64_t i = 0; i < mr; i++) {
        const int32_t *t = tile + i * ldt;
        const int32_t *cs = e->colsum + n0;
        int64_t row = (m0 + i) * ldc + n0;
        if (e->out == SH_I32) {
            int32_t *c = (int32_t *)C + row;
            if (correct)
                for (int64_t j = 0; j < nr; j++) c[j] = t[j] - e->zoff * cs[j];
            else
                memcpy(c, t, (size_t)nr * sizeof(int32_t));
            continue;
        }
        float v[64];
        const float *sc = e->scale + n0;
        for (int64_t j0 = 0; j0 < nr; j0 += 64) {
            int64_t nn = nr - j0 < 64 ? nr - j0 : 64;
            for (int64_t j = 0; j < nn; j++) {
                int32_t a = correct ? t[j0 + j] - e->zoff * cs[j0 + j] : t[j0 + j];
                float y = (float)a * sc[j0 + j];
                if (e->bias) y = y + e->bias[n0 + j0 + j];
                if (e->relu) y = y > 0.0f ? y : 0.0f;
                v[j] = y;
            }
            if (e->out == SH_F32) {
                float *c = (float *)C + row + j0;
                for (int64_t j = 0; j < nn; j++) c[j] = v[j];
            } else {
                float lo = e->out == SH_U8 ? 0.0f : -128.0f, hi = e->out == SH_U8 ? 255.0f : 127.0f;
                for (int64_t j = 0; j < nn; j++) {
                    float q = __builtin_nearbyintf(v[j] * e->inv_y) + (float)e->y_zero;
                    q = q < lo ? lo : q > hi ? hi : q;
                    if (e->out == SH_U8) ((uint8_t *)C)[row + j0 + j] = (uint8_t)(int)q;
                    else ((int8_t *)C)[row + j0 + j] = (int8_t)(int)q;
                }
            }
        }
    }
}

/* Per path: pack B (into b->data; Np/Kp set by the path), and run all tiles of
 * rows [m_begin, m_end) and column panels [n_begin, n_end) given the packed A
 * (pa: layout of the path, see below). */
void sh_qgemm_ref_run(const uint8_t *A, int a_signed, int64_t lda, int64_t m0, int64_t m1, const sh_qgemm_b *B,
                      int32_t a_zero, const sh_qepi_k *e, void *C, int64_t ldc);
int sh_qgemm_avx2_pack(const int8_t *B, int64_t ldb, sh_qgemm_b *b);
void sh_qgemm_avx2_run(const uint8_t *A, int a_signed, int64_t lda, int64_t m0, int64_t m1, int64_t n0,
                       int64_t n1, const sh_qgemm_b *B, int32_t a_zero, const sh_qepi_k *e, void *C, int64_t ldc);
int sh_qgemm_avx512_pack(const int8_t *B, int64_t ldb, sh_qgemm_b *b);
void sh_qgemm_avx512_run(const uint8_t *A, int a_signed, int64_t lda, int64_t m0, int64_t m1, int64_t n0,
                         int64_t n1, const sh_qgemm_b *B, int32_t a_zero, const sh_qepi_k *e, void *C,
                         int64_t ldc);
/* Column granularity of the n0/n1 ranges of each path. */
#define SH_QGEMM_NR_AVX2 24
#ifndef SH_QGEMM_NR_AVX512
#define SH_QGEMM_NR_AVX512 64
#endif

/* Low-bit: rows n in [n0, n1) of Y[m, :] for one activation row quantized to
 * q8_0 blocks xq with block sums xs (K/32 each). */
void sh_qdot_rows_ref(const void *W, sh_format wf, int64_t K, int64_t n0, int64_t n1,
                      const sh_block_q8_0 *xq, const int32_t *xs, const float *bias, float *y);
int sh_qdot_rows_avx2(const void *W, sh_format wf, int64_t K, int64_t n0, int64_t n1,
                      const sh_block_q8_0 *xq, const int32_t *xs, const float *bias, float *y);
int sh_qdot_rows_avx512(const void *W, sh_format wf, int64_t K, int64_t n0, int64_t n1,
                        const sh_block_q8_0 *xq, const int32_t *xs, const float *bias, float *y);

/* Packed low-bit weights: row groups [g0, g1) for one activation row;
 * ioff[b] = -off * sum(qa), da[b] the activation block scale (already / 64
 * for log4), dsa[b] = da * sum(qa) (unscaled). */
void sh_qpacked_rows_ref(const sh_qweight *w, int64_t g0, int64_t g1, const sh_block_q8_0 *xq, const int32_t *xs,
                         const float *bias, float *y);
void sh_qpacked_rows_avx512(const sh_qweight *w, int64_t g0, int64_t g1, const sh_block_q8_0 *xq,
                            const int32_t *ioff, const float *da, const float *dsa, const float *bias, float *y);
/* The same for 4 activation rows at once (row r's blocks at xq + r * ldb,
 * ioff / da / dsa likewise; output row r at y + r * ldy): each weight chunk
 * is unpacked once for the 4 rows.  q8_0, q4_0, q4_1 and log4 at every
 * granularity (32, 64, 128, per row, per tensor); returns 0 (nothing done)
 * for the others. */
/* 1 if rows of weight format wf run 4 activation rows at a time here (the
 * CPU level is avx512 and wf one of the formats above): Gemm prefers that
 * to unpacking the weight to f32 for a batch of rows. */
int sh_qrows4_supported(sh_format wf);
int sh_qpacked_rows4_avx512(const sh_qweight *w, int64_t g0, int64_t g1, const sh_block_q8_0 *xq,
                            const int32_t *ioff, const float *da, const float *dsa, int64_t ldb, const float *bias,
                            float *y, int64_t ldy);
/* the same with AVX2 (vpmaddubsw; 8-bit codes with the sign trick) */
void sh_qpacked_rows_avx2(const sh_qweight *w, int64_t g0, int64_t g1, const sh_block_q8_0 *xq,
                          const int32_t *ioff, const float *da, const float *dsa, const float *bias, float *y);
/* the same as sh_quantize_q8_0_sums, AVX-512 */
void sh_quantize_q8_0_sums_avx512(const float *x, sh_block_q8_0 *y, int32_t *sums, int64_t n);
/* Compute traits of a grouped weight format (NULL for other formats). */
typedef struct sh_qcompute {
    sh_format vec_dot_type; /* activations are quantized to this (q8_0) */
    int bits;               /* bits per code in the packed layout */
    int off;                /* x = d * (u - off) + m */
    int asym;               /* has a per-group min m */
} sh_qcompute;
const sh_qcompute *sh_qcompute_get(sh_format wf);
/* bits of a packed code and the offset of format wf (see above) */
int sh_qpacked_bits(sh_format wf, int *off, int *asym);

#endif
