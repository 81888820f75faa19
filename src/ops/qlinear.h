/* qlinear.h - the integer (static / dynamic int8) ops, internal API shared by
 * qlinear.c (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
 * QLinearAdd, QLinearGlobalAveragePool, the family table), qlinear_conv.c
 * (QLinearConv, ConvInteger) and qlinear_gemm.c (QGemm, QLinearMatMul,
 * MatMulInteger).
 *
 * Conventions (ONNX): real = scale * (q - zero_point); quantization rounds
 * half to even and saturates: q = sat(nearbyint(x / scale) + zero_point).
 * Requantization of an int32 accumulator acc (bias included) for output
 * channel c: q = sat(nearbyint((float)acc * (x_scale * w_scale[c] / y_scale))
 * + y_zero), the multiplier computed in f32 as ONNX Runtime does; a fused
 * activation="Relu" clamps q below at y_zero.  All kernel levels give the same
 * integers (the int8 GEMM is exact and the requantization is plain C).
 *
 * These ops are inference only: their backward is sh_qlinear_no_backward, a
 * clear error naming the node when a gradient would have to flow through
 * one (with backward = NULL the runtime would silently treat the op as a
 * gradient stop and train the layers before it on a zero gradient).
 */
#ifndef SH_QLINEAR_H
#define SH_QLINEAR_H

#include "ops.h"

/* A scale / zero-point pair read from op inputs. n: 1 (per tensor) or the
 * channel count. */
typedef struct sh_qparam {
    int64_t n;
    const float *scale;      /* n values */
    const void *zp;          /* n values of zfmt, NULL: zero */
    sh_format zfmt;          /* SH_U8, SH_I8 or SH_I32 (SH_U8 when zp is absent) */
} sh_qparam;

/* Check scale (f32, scalar / [1] / [nch]) and zero point (same count, format
 * in the mask: bit fmt) named `what` ("x", "w", ...); nch <= 0: per tensor
 * only.  Fills p (scale/zp pointers valid while the tensors live; at infer
 * time they may be NULL for non-constant inputs). */
int sh_qparam_get(sh_kctx *k, const sh_tensor *scale, const sh_tensor *zp, int64_t nch, unsigned fmt_mask,
                  const char *what, sh_qparam *p);
static inline float sh_qparam_scale(const sh_qparam *p, int64_t c) { return p->scale[p->n == 1 ? 0 : c]; }
static inline int32_t sh_qparam_zero(const sh_qparam *p, int64_t c)
{
    if (!p->zp) return 0;
    int64_t i = p->n == 1 ? 0 : c;
    switch (p->zfmt) {
    case SH_U8: return ((const uint8_t *)p->zp)[i];
    case SH_I8: return ((const int8_t *)p->zp)[i];
    default: return ((const int32_t *)p->zp)[i];
    }
}
#define SH_QMASK(f) (1u << (f))

/* Round half to even, as nearbyintf in the default rounding mode, without a
 * libm call (the library is built for baseline x86-64, where nearbyintf is
 * not inlined): |v| is first limited to 2^22, far outside any 8-bit range,
 * then v + 1.5 * 2^23 lands where the float spacing is 1.  v must not be NaN. */
static inline float sh_qround(float v)
{
    v = v < -4194304.0f ? -4194304.0f : v > 4194304.0f ? 4194304.0f : v;
    return (v + 12582912.0f) - 12582912.0f;
}

/* Saturate to the range of fmt (SH_U8 / SH_I8). */
static inline int32_t sh_qsat(int32_t v, sh_format f)
{
    int32_t lo = f == SH_U8 ? 0 : -128, hi = f == SH_U8 ? 255 : 127;
    return v < lo ? lo : v > hi ? hi : v;
}

/* Element i of a u8 / s8 / i32 tensor's data as int32. */
static inline int32_t sh_qget(const void *d, sh_format f, int64_t i)
{
    switch (f) {
    case SH_U8: return ((const uint8_t *)d)[i];
    case SH_I8: return ((const int8_t *)d)[i];
    default: return ((const int32_t *)d)[i];
    }
}

/* One row: out[c] = sat(nearbyint((acc[c] + bias[c]) * mult[c]) + y_zero)
 * for c < n, clamped to [lo, hi] (the format's range, lo raised to y_zero for
 * a fused Relu); out_fmt SH_U8 or SH_I8 (bytes).  AVX-512 (simd) or SSE2
 * (cvtps2dq rounds half to even) with a scalar tail; bit-identical to the
 * scalar formula. */
void sh_qrequant_row(const int32_t *acc, const int32_t *bias, const float *mult, int64_t n, int32_t y_zero, int32_t lo,
                     int32_t hi, sh_format out_fmt, int simd, void *out);
/* simd argument of sh_qrequant_row: 1 when the CPU has AVX-512 F+BW and
 * level (-1: any) is not SH_CPU_REF; the result is the same either way. */
int sh_qrequant_simd(int level);

/* Requantize rows of int32 accumulators: for r in [0, rows), c in [0, cols):
 *   out[r*ors + c*ocs] = sat(nearbyint((acc[r*lda + c] + bias[c]) * mult[c]) + y_zero)
 * (bias may be NULL; relu: clamp below at y_zero).  out_fmt SH_U8 / SH_I8;
 * simd as for sh_qrequant_row. */
void sh_qrequant(const int32_t *acc, int64_t lda, int64_t rows, int64_t cols, const int32_t *bias,
                 const float *mult, int32_t y_zero, int relu, sh_format out_fmt, void *out, int64_t ors,
                 int64_t ocs, int simd);

/* Node state of QLinearConv / ConvInteger / QGemm / QLinearMatMul: the
 * prepared weight (made on first use, remade when the weight, its zero point
 * or the kernel level changes; the weight is recognised by its data pointer
 * and a checksum like the f32 Conv's packed weights) and a workspace. */
typedef struct sh_qgemm_b sh_qgemm_b;
typedef struct sh_qstate {
    /* key */
    const void *wsrc, *zsrc;
    uint32_t wsum;
    int64_t wn, rows, cols;
    int level, groups;   /* level: as requested (-1: the best) */
    int simd;            /* sh_qrequant_simd of the level, found when preparing */
    int b_const;           /* set by infer: the weight input is a constant
                              (otherwise it is prepared at every call) */
    /* prepared weight: rows x cols values w - zero_point[row] as int32
     * (portable path, always there) and, when every value fits in s8 (fast),
     * one packed s8 GEMM operand per group */
    int32_t *wi;
    int fast;
    sh_qgemm_b **pb;
    /* direct kernel of a convolution with a tiny K (qlinear_conv.c): per
     * output channel dkd dwords of s8 weights (K padded with zeros) and then
     * the sum of its weights; NULL when not used */
    int32_t *dw;
    int dkd;
    /* workspace */
    void *ws;
    size_t ws_bytes;
    /* QGemm (qlinear_gemm.c): the requantization multipliers of the last
     * call stay in mb (below) while this key is unchanged */
    int mult_ok;
    int64_t mult_n;
    const float *mult_bscale;
    uint32_t mult_bsum;
    float mult_key[3];     /* a_scale, y_scale, alpha */
    int mult_yf;
    /* QLinearConv (qlinear_conv.c): threads chosen by timing, for a given
     * number of output positions: the first calls alternate nthreads and 1
     * thread (the results are the same bits), then the faster is kept */
    int tune_calls, tune_nt;
    int64_t tune_rows;
    double tune_t[2];
    /* per-call multipliers / bias (sh_qstate_mb): kept between calls so that
     * a call does not allocate */
    void *mb;
    size_t mb_bytes;
} sh_qstate;

/* The state slot of k (created empty on first use); NULL when out of memory. */
sh_qstate *sh_qstate_get(sh_kctx *k);
/* 1 if st holds a weight prepared from exactly these bytes. */
int sh_qstate_match(const sh_qstate *st, const void *w, int64_t wn, const void *zp, int64_t rows, int64_t cols,
                    int level, int groups, uint32_t sum);
uint32_t sh_qchecksum(const void *data, size_t bytes);
/* Drop the prepared weight (keeps the workspace). */
void sh_qstate_reset(sh_qstate *st);
/* Workspace of at least `bytes` (64-byte aligned), NULL when out of memory. */
void *sh_qstate_ws(sh_qstate *st, size_t bytes);
void sh_qlinear_state_free(void *st);
/* Small per-call buffer of at least `bytes` kept in st, NULL when out of memory. */
void *sh_qstate_mb(sh_qstate *st, size_t bytes);
/* DynamicQuantizeLinear's parameters of x[n]. */
void sh_qdynamic_params(const float *x, int64_t n, float *scale, int32_t *zero);

/* Forward of QLinearConv, ConvInteger, QGemm and QLinearMatMul with an
 * explicit int8 GEMM level (SH_CPU_REF ... ; -1: the best for this CPU), so
 * tests compare the portable path with the SIMD one without touching the
 * environment.  The ops' forward functions call these with -1.  k->state
 * must point to a slot (freed with sh_qlinear_state_free). */
int sh_qlinear_conv_run(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int level);
int sh_qgemm_node_run(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int level);

/* Backward of every integer op: SH_EUNSUPPORTED naming the node. */
int sh_qlinear_no_backward(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                           const sh_tensor *const *dout, sh_tensor *const *din);

extern const sh_op_def sh_op_qlinearconv, sh_op_convinteger;
extern const sh_op_def sh_op_qgemm, sh_op_qlinearmatmul, sh_op_matmulinteger;

#endif
