/* quant_formats.h - quantized storage formats: block layouts and the
 * reference conversions behind their rows in the format table (format.c).
 *
 * Grouped formats quantize groups of SH_QK = 32 consecutive values (along the
 * last axis of a weight, i.e. along K of a [N, K] matrix) with one f16 scale
 * (and one f16 min for the asymmetric "_1" formats).  Block layouts follow
 * ggml where ggml has the same format (q4_0, q4_1, q8_0 are byte-compatible
 * with ggml's blocks):
 *
 *   q4_0  x = d * (q - 8),  q in 0..15      18 bytes / 32 values (4.5 bpw)
 *   q4_1  x = d * q + m,    q in 0..15      20 bytes / 32 values (5.0 bpw)
 *   q8_0  x = d * q,        q in -127..127  34 bytes / 32 values (8.5 bpw)
 *   q3_0  x = d * (q - 4),  q in 0..7       14 bytes / 32 values (3.5 bpw)
 *   q2_1  x = d * q + m,    q in 0..3       12 bytes / 32 values (3.0 bpw)
 *   log4  x = s * d * 2^-e (e in 0..6), e = 7 means 0;  4-bit codes s|e
 *                                           18 bytes / 32 values (4.5 bpw)
 *
 * Every grouped format "unpacks" a block to 32 small integers u[i] (0..255)
 * with  x[i] = d * (u[i] - off) + m : off = 8 (q4_0), 4 (q3_0), 64 (log4,
 * whose u = 64 + s * (64 >> e)), 0 for the asymmetric formats.  The integer
 * kernels use exactly this: sum_i x[i] * a[i] over a q8_0 activation block
 * (a = da * qa) is d * da * (sum u*qa - off * sum qa) + m * da * sum qa.
 *
 * Conversions accept any n: a trailing partial block is padded with zeros
 * (sh_format_bytes rounds up to whole blocks).
 *
 * One scale per 64 / 128 values: the _g64 / _g128 rows (sh_qrow_pack); one
 * f32 scale per output row or per tensor: the _ch / _t rows, packed
 * whole-tensor buffers (sh_qrows_*, layout below).
 *
 * Per-channel int8 (static int8 quantization) is a plain SH_I8 / SH_U8 tensor
 * plus an sh_qlayout (see shrink.h) describing scale / zero point per slice
 * along one axis; see sh_quantize_i8_axis below.
 */
#ifndef SH_QUANT_FORMATS_H
#define SH_QUANT_FORMATS_H

#include <stdint.h>
#include <string.h>

#include "shrink.h"

#define SH_QK 32 /* values per group */

typedef struct { uint16_t d; uint8_t qs[16]; } sh_block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } sh_block_q4_1;
typedef struct { uint16_t d; int8_t qs[32]; } sh_block_q8_0;
/* q3_0: low two bits of value i in qs[i % 8] at bit 2*(i / 8); the high bit in
 * bit i of the little-endian 32-bit word qh. */
typedef struct { uint16_t d; uint8_t qs[8]; uint8_t qh[4]; } sh_block_q3_0;
/* q2_1: value i in qs[i % 8] at bit 2*(i / 8). */
typedef struct { uint16_t d, m; uint8_t qs[8]; } sh_block_q2_1;
/* log4: code i (bit 3 sign, bits 0-2 exponent e) as in q4_0: low nibble of
 * qs[i] for i < 16, high nibble of qs[i - 16] otherwise. */
typedef struct { uint16_t d; uint8_t qs[16]; } sh_block_log4;

_Static_assert(sizeof(sh_block_q4_0) == 18, "q4_0 block is 18 bytes");
_Static_assert(sizeof(sh_block_q4_1) == 20, "q4_1 block is 20 bytes");
_Static_assert(sizeof(sh_block_q8_0) == 34, "q8_0 block is 34 bytes");
_Static_assert(sizeof(sh_block_q3_0) == 14, "q3_0 block is 14 bytes");
_Static_assert(sizeof(sh_block_q2_1) == 12, "q2_1 block is 12 bytes");
_Static_assert(sizeof(sh_block_log4) == 18, "log4 block is 18 bytes");

/* IEEE half <-> float (round to nearest even), portable C. */
static inline float sh_h2f(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, f;
    if (exp == 0) {
        if (man == 0) f = sign;
        else {
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            man &= 0x3ff;
            f = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) f = sign | 0x7f800000u | (man << 13);
    else f = sign | ((exp + 127 - 15) << 23) | (man << 13);
    float r;
    memcpy(&r, &f, 4);
    return r;
}

static inline uint16_t sh_f2h(float x)
{
    uint32_t f;
    memcpy(&f, &x, 4);
    uint32_t sign = (f >> 16) & 0x8000;
    int32_t exp = (int32_t)((f >> 23) & 0xff);
    uint32_t man = f & 0x7fffff;
    if (exp == 255) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    int32_t e = exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000;
        int shift = 14 - e;
        uint32_t hm = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (hm & 1))) hm++;
        return (uint16_t)(sign | hm);
    }
    uint32_t h = sign | ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)h;
}

/* Row conversions used by the format table (n any; see above). */
void sh_q4_0_to_f32(const void *src, float *dst, int64_t n);
void sh_q4_0_from_f32(const float *src, void *dst, int64_t n);
void sh_q4_1_to_f32(const void *src, float *dst, int64_t n);
void sh_q4_1_from_f32(const float *src, void *dst, int64_t n);
void sh_q8_0_to_f32(const void *src, float *dst, int64_t n);
void sh_q8_0_from_f32(const float *src, void *dst, int64_t n);
void sh_q3_0_to_f32(const void *src, float *dst, int64_t n);
void sh_q3_0_from_f32(const float *src, void *dst, int64_t n);
void sh_q2_1_to_f32(const void *src, float *dst, int64_t n);
void sh_q2_1_from_f32(const float *src, void *dst, int64_t n);
void sh_log4_to_f32(const void *src, float *dst, int64_t n);
void sh_log4_from_f32(const float *src, void *dst, int64_t n);

/* Unpack one block of grouped format f into u[32] (see the header comment);
 * *d, *m receive the scale and min (m = 0 for symmetric formats) and the
 * return value is the offset `off`.  -1 if f is not a grouped format. */
int sh_qblock_unpack(sh_format f, const void *block, uint8_t u[SH_QK], float *d, float *m);
/* 1 for the grouped weight formats (q4_0, q4_1, q3_0, q2_1, log4, q8_0). */
int sh_format_is_grouped(sh_format f);

/* q8_0 quantization of a row of activations (n a multiple of 32) that also
 * returns the block sums sum_i qs[i] (the kernels' vec_dot_type). */
void sh_quantize_q8_0_sums(const float *x, sh_block_q8_0 *y, int32_t *sums, int64_t n);

/* Per-channel / per-tensor int8 of a [rows, cols] matrix (axis 0 = one
 * scale per row, i.e. per output channel of a [N, K] weight).
 * symmetric: zero point 0, q in [-127, 127] (s8).  asymmetric: u8 in [0, 255]
 * with zero point.  scale/zp receive rows values (zp may be NULL when
 * symmetric).  Round to nearest even. */
void sh_quantize_i8_rows(const float *x, int64_t rows, int64_t cols, int8_t *q, float *scale);
void sh_quantize_u8_rows(const float *x, int64_t rows, int64_t cols, uint8_t *q, float *scale,
                         int32_t *zp);
void sh_dequantize_i8_rows(const int8_t *q, int64_t rows, int64_t cols, const float *scale,
                           const int32_t *zp, float *x);
void sh_dequantize_u8_rows(const uint8_t *q, int64_t rows, int64_t cols, const float *scale,
                           const int32_t *zp, float *x);

/* ---- group parameters and codes (GPTQ, AWQ, granularities) ----------------
 * The parameters a group of n values gets under round-to-nearest (the same
 * rule as the format's from_f32: sym sign-max / absmax, asym min-max, f16
 * rounded), the code and value of one x under given parameters (code in the
 * unpacked form u of sh_qblock_unpack, except log4: the 4-bit code s|e), and
 * a block of 32 codes written with given parameters. */
typedef struct sh_qparams { float d, m; } sh_qparams;
/* Base 32-block format of a grouped format and its group (-1 if none). */
int sh_qbase_format(sh_format f, int *group);
void sh_qparams_rtn(sh_format base, const float *x, int64_t n, sh_qparams *p);
float sh_qvalue(sh_format base, const sh_qparams *p, float x, uint8_t *u);
void sh_qblock_pack(sh_format base, const sh_qparams *p, const uint8_t *u, void *blk);

/* Grouped format of base with `group` values per scale (32, 64, 128), or -1. */
int sh_qgroup_format(sh_format base, int group);
/* A row of n values (n a multiple of f's group) of format f from parameters
 * p (one per group) and codes u (as sh_qvalue of the base format). */
void sh_qrow_pack(sh_format f, const sh_qparams *p, const uint8_t *u, int64_t n, void *dst);
/* n values of format f (a _g64 / _g128 row) rewritten as base 32-blocks
 * (each group's scale repeated), the layout the low-bit kernels run;
 * identity copy for base formats is not done: f must be a g64 / g128. */
void sh_qexpand(sh_format f, const void *src, int64_t n, void *dst);
/* ---- per-channel / per-tensor rows: "q4_0_ch" ... "log4_ch", "q4_0_t" ...
 * One f32 scale d (and f32 min m for the asymmetric q4_1 / q2_1) per output
 * row [N, K] ("_ch") or for the whole tensor ("_t"), codes at their real
 * size.  These are packed whole-tensor formats (traits.packed = 1, like the
 * sparse csr / bcsr / nm): the tensor's data is one self-describing buffer
 *
 *   offset 0             sh_qrow_hdr (56 bytes, zero-padded to 64)
 *   hdr.scale_off (64)   f32 d[nscale], then (asymmetric) f32 m[nscale]
 *   hdr.code_off         (64-aligned) rows * row_bytes code bytes: row r at
 *                        code_off + r * row_bytes, K / 32 blocks of codes,
 *                        each the base 32-block without its f16 header:
 *                          q4_0, q4_1, log4: 16 bytes (nibbles as q4_0)
 *                          q8_0: 32 (int8)   q3_0: 12 (qs[8] + qh[4])
 *                          q2_1: 8 (qs[8])
 *
 * so a 4096 x 4096 q4_0_ch weight takes 64 + 16 KiB + 8 MiB bytes (4.008
 * bits per weight) and q4_0_t 128 + 8 MiB.  K must be a multiple of 32
 * (quantize.c pads rows with zero weights, attribute weight_k).  Values:
 * x = d * (u - off) + m with u, off as sh_qblock_unpack gives for the base
 * format (log4: d / 64 * (u - 64), i.e. s * d * 2^-e, exactly).  Scales are
 * f32 so that QAT's learned scales are kept exactly (sh_qat_convert). */
#define SH_QROW_MAGIC 0x31525153u /* "SQR1" little-endian */
typedef struct sh_qrow_hdr {
    uint32_t magic;       /* SH_QROW_MAGIC */
    int32_t fmt;          /* sh_format (SH_Q4_0_CH ... SH_LOG4_T) */
    int64_t rows, cols;   /* N, K */
    int64_t nscale;       /* rows (_ch) or 1 (_t) */
    int64_t scale_off;    /* 64 */
    int64_t code_off;     /* 64-aligned, after the scales (and mins) */
    int64_t row_bytes;    /* K / 32 * code bytes per block */
} sh_qrow_hdr;
_Static_assert(sizeof(sh_qrow_hdr) == 56, "qrow header is 56 bytes");
#define SH_QROW_HDR_BYTES 64

/* Base 32-block format of a _ch / _t row and whether it is per tensor, or -1
 * for other formats. */
int sh_qrows_base(sh_format f, int *per_tensor);
/* The _ch (per_tensor 0) or _t (1) row of a base format, or -1. */
int sh_qrows_format(sh_format base, int per_tensor);
/* Code bytes of one 32-value block of base format b (16, 16, 32, 12, 8, 16). */
int sh_qrows_block_codes(sh_format b);
/* Whole buffer bytes of a [rows, cols] tensor of row format f (0 if bad). */
size_t sh_qrows_bytes(sh_format f, int64_t rows, int64_t cols);
/* Build a [rows, cols] tensor of row format f from parameters p (rows of
 * them for _ch, 1 for _t; d and m are stored as given, in f32) and codes u
 * (rows * cols, in the unpacked form sh_qvalue gives for the base format:
 * log4 the 4-bit code s|e).  cols a multiple of 32. */
int sh_qrows_pack(sh_format f, int64_t rows, int64_t cols, const sh_qparams *p, const uint8_t *u, sh_tensor **out,
                  sh_error *err);
/* Round to nearest of w [rows, cols] (the base format's rule per row or for
 * the whole tensor: sh_qparams_rtn over the row / tensor). */
int sh_qrows_quantize(sh_format f, const float *w, int64_t rows, int64_t cols, sh_tensor **out, sh_error *err);
/* Check a buffer (magic, format, sizes, offsets); SH_EFORMAT with the reason. */
int sh_qrows_validate(const void *data, size_t nbytes, sh_error *err);
/* Validate data and wrap it in a tensor [rows, cols] (takes ownership of
 * data, which must come from malloc / aligned_alloc, when owns). */
int sh_qrows_wrap(void *data, size_t nbytes, int owns, sh_tensor **out, sh_error *err);
/* Format-table to_f32: the first n values of the [rows, cols] matrix. */
void sh_qrows_to_f32(const void *src, float *dst, int64_t n);
/* Row r (cols values) of a _ch / _t buffer to f32 (rows decode independently:
 * callers may run rows in parallel). */
void sh_qrows_row_to_f32(const void *src, int64_t r, float *dst);
/* Row r's codes (row_bytes bytes) and scale / min (m may be NULL). */
static inline const sh_qrow_hdr *sh_qrows_hdr(const void *data) { return (const sh_qrow_hdr *)data; }
static inline const uint8_t *sh_qrows_codes(const void *data, int64_t r)
{
    const sh_qrow_hdr *h = data;
    return (const uint8_t *)data + h->code_off + r * h->row_bytes;
}
static inline float sh_qrows_scale(const void *data, int64_t r, float *m)
{
    const sh_qrow_hdr *h = data;
    int64_t i = h->nscale == 1 ? 0 : r;
    const char *s = (const char *)data + h->scale_off;
    int asym = (h->fmt - SH_Q4_0_CH) % 6 == 1 || (h->fmt - SH_Q4_0_CH) % 6 == 4;
    float d, mm = 0.0f;
    memcpy(&d, s + 4 * i, 4); /* any alignment (a view of file bytes) */
    if (asym) memcpy(&mm, s + 4 * (h->nscale + i), 4);
    if (m) *m = mm;
    return d;
}
/* Unpack 32 codes of a row-format block (the bytes sh_qrows_codes gives,
 * + 32-block index * sh_qrows_block_codes) into u as sh_qblock_unpack does;
 * returns off. */
int sh_qrows_unpack_block(sh_format base, const uint8_t *codes, uint8_t u[SH_QK]);
/* Rows [r0, r1) of a _ch / _t tensor as a new tensor of the same format
 * (e.g. one group of a grouped Conv, for sh_qweight_new). */
int sh_qrows_slice(const sh_tensor *t, int64_t r0, int64_t r1, sh_tensor **out, sh_error *err);
/* Any quantized weight tensor [rows, cols] (grouped rows or _ch / _t) to f32
 * row-major dst [rows * cols]. */
int sh_qtensor_to_f32(const sh_tensor *t, float *dst, sh_error *err);

#define SH_QG_DECL(NAME)                                                  \
    void sh_qg_to_f32_##NAME(const void *s, float *d, int64_t n);          \
    void sh_qg_from_f32_##NAME(const float *s, void *d, int64_t n);
SH_QG_DECL(q4_0_g64)
SH_QG_DECL(q4_1_g64)
SH_QG_DECL(q8_0_g64)
SH_QG_DECL(q3_0_g64)
SH_QG_DECL(q2_1_g64)
SH_QG_DECL(log4_g64)
SH_QG_DECL(q4_0_g128)
SH_QG_DECL(q4_1_g128)
SH_QG_DECL(q8_0_g128)
SH_QG_DECL(q3_0_g128)
SH_QG_DECL(q2_1_g128)
SH_QG_DECL(log4_g128)

#endif
