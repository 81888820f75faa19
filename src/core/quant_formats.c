/* quant_formats.c - reference quantize / dequantize of the grouped formats
 * (q4_0, q4_1, q8_0, q3_0, q2_1, log4) and per-channel int8 helpers.
 * Layouts and maths: quant_formats.h.  Scales are rounded to f16 before the
 * values are quantized against them, so round-to-nearest keeps every value
 * within half a step of the stored scale. */
#include <math.h>
#include <string.h>
#include <stdlib.h>

#include "core/quant_formats.h"

static float clampf(float v, float lo, float hi)
{
    if (!(v == v)) return lo > 0 ? lo : (hi < 0 ? hi : 0.0f); /* NaN */
    return v < lo ? lo : v > hi ? hi : v;
}

/* Largest-magnitude value keeping its sign, and the magnitude. */
static float signed_absmax(const float *x, float *amax)
{
    float m = 0.0f, a = 0.0f;
    for (int i = 0; i < SH_QK; i++) {
        float v = x[i] == x[i] ? x[i] : 0.0f;
        if (fabsf(v) > a) { a = fabsf(v); m = v; }
    }
    *amax = a;
    return m;
}

static void minmax(const float *x, float *lo, float *hi)
{
    float a = INFINITY, b = -INFINITY;
    for (int i = 0; i < SH_QK; i++) {
        float v = x[i] == x[i] ? x[i] : 0.0f;
        if (v < a) a = v;
        if (v > b) b = v;
    }
    *lo = a;
    *hi = b;
}

/* Symmetric "sign-max" scale as in ggml: the largest-magnitude value maps to
 * -half exactly (q = 0), so the full range of codes is used. */
static float sym_scale(const float *x, int half, uint16_t *d16)
{
    float amax, mx = signed_absmax(x, &amax);
    *d16 = sh_f2h(mx / (float)-half);
    return sh_h2f(*d16);
}

static inline int qround(float v, int lo, int hi) { return (int)clampf(floorf(v + 0.5f), (float)lo, (float)hi); }

/* ---- q4_0 --------------------------------------------------------------- */
static void q4_0_quant(const float *x, void *blk)
{
    sh_block_q4_0 *b = blk;
    float d = sym_scale(x, 8, &b->d), id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < 16; i++) {
        int q0 = qround(x[i] * id + 8.0f, 0, 15), q1 = qround(x[i + 16] * id + 8.0f, 0, 15);
        b->qs[i] = (uint8_t)(q0 | (q1 << 4));
    }
}
static void q4_0_deq(const void *blk, float *y)
{
    const sh_block_q4_0 *b = blk;
    float d = sh_h2f(b->d);
    for (int i = 0; i < 16; i++) {
        y[i] = d * (float)((b->qs[i] & 15) - 8);
        y[i + 16] = d * (float)((b->qs[i] >> 4) - 8);
    }
}

/* ---- q4_1 --------------------------------------------------------------- */
static void q4_1_quant(const float *x, void *blk)
{
    sh_block_q4_1 *b = blk;
    float lo, hi;
    minmax(x, &lo, &hi);
    b->m = sh_f2h(lo);
    b->d = sh_f2h((hi - lo) / 15.0f);
    float m = sh_h2f(b->m), d = sh_h2f(b->d), id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < 16; i++) {
        int q0 = qround((x[i] - m) * id, 0, 15), q1 = qround((x[i + 16] - m) * id, 0, 15);
        b->qs[i] = (uint8_t)(q0 | (q1 << 4));
    }
}
static void q4_1_deq(const void *blk, float *y)
{
    const sh_block_q4_1 *b = blk;
    float d = sh_h2f(b->d), m = sh_h2f(b->m);
    for (int i = 0; i < 16; i++) {
        y[i] = d * (float)(b->qs[i] & 15) + m;
        y[i + 16] = d * (float)(b->qs[i] >> 4) + m;
    }
}

/* ---- q8_0 --------------------------------------------------------------- */
static void q8_0_quant(const float *x, void *blk)
{
    sh_block_q8_0 *b = blk;
    float amax;
    signed_absmax(x, &amax);
    b->d = sh_f2h(amax / 127.0f);
    float d = sh_h2f(b->d), id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < SH_QK; i++) b->qs[i] = (int8_t)clampf(nearbyintf(x[i] * id), -127.0f, 127.0f);
}
static void q8_0_deq(const void *blk, float *y)
{
    const sh_block_q8_0 *b = blk;
    float d = sh_h2f(b->d);
    for (int i = 0; i < SH_QK; i++) y[i] = d * (float)b->qs[i];
}

/* ---- q3_0 --------------------------------------------------------------- */
static void q3_0_quant(const float *x, void *blk)
{
    sh_block_q3_0 *b = blk;
    float d = sym_scale(x, 4, &b->d), id = d != 0.0f ? 1.0f / d : 0.0f;
    uint32_t qh = 0;
    memset(b->qs, 0, sizeof b->qs);
    for (int i = 0; i < SH_QK; i++) {
        int q = qround(x[i] * id + 4.0f, 0, 7);
        b->qs[i % 8] |= (uint8_t)((q & 3) << (2 * (i / 8)));
        qh |= (uint32_t)(q >> 2) << i;
    }
    for (int j = 0; j < 4; j++) b->qh[j] = (uint8_t)(qh >> (8 * j));
}
static void q3_0_unpack(const sh_block_q3_0 *b, uint8_t *u)
{
    uint32_t qh = b->qh[0] | (uint32_t)b->qh[1] << 8 | (uint32_t)b->qh[2] << 16 | (uint32_t)b->qh[3] << 24;
    for (int i = 0; i < SH_QK; i++)
        u[i] = (uint8_t)(((b->qs[i % 8] >> (2 * (i / 8))) & 3) | (((qh >> i) & 1) << 2));
}
static void q3_0_deq(const void *blk, float *y)
{
    const sh_block_q3_0 *b = blk;
    uint8_t u[SH_QK];
    q3_0_unpack(b, u);
    float d = sh_h2f(b->d);
    for (int i = 0; i < SH_QK; i++) y[i] = d * (float)(u[i] - 4);
}

/* ---- q2_1 --------------------------------------------------------------- */
static void q2_1_quant(const float *x, void *blk)
{
    sh_block_q2_1 *b = blk;
    float lo, hi;
    minmax(x, &lo, &hi);
    b->m = sh_f2h(lo);
    b->d = sh_f2h((hi - lo) / 3.0f);
    float m = sh_h2f(b->m), d = sh_h2f(b->d), id = d != 0.0f ? 1.0f / d : 0.0f;
    memset(b->qs, 0, sizeof b->qs);
    for (int i = 0; i < SH_QK; i++) b->qs[i % 8] |= (uint8_t)(qround((x[i] - m) * id, 0, 3) << (2 * (i / 8)));
}
static void q2_1_deq(const void *blk, float *y)
{
    const sh_block_q2_1 *b = blk;
    float d = sh_h2f(b->d), m = sh_h2f(b->m);
    for (int i = 0; i < SH_QK; i++) y[i] = d * (float)((b->qs[i % 8] >> (2 * (i / 8))) & 3) + m;
}

/* ---- log4 --------------------------------------------------------------- */
static const float log4_lvl[8] = {1.0f, 0.5f, 0.25f, 0.125f, 0.0625f, 0.03125f, 0.015625f, 0.0f};

static void log4_quant(const float *x, void *blk)
{
    sh_block_log4 *b = blk;
    float amax;
    signed_absmax(x, &amax);
    b->d = sh_f2h(amax);
    float d = sh_h2f(b->d);
    uint8_t c[SH_QK];
    for (int i = 0; i < SH_QK; i++) {
        float v = x[i] == x[i] ? x[i] : 0.0f, a = fabsf(v);
        int best = 7;
        float be = a;
        for (int e = 0; e < 7; e++) {
            float err = fabsf(a - d * log4_lvl[e]);
            if (err < be) { be = err; best = e; }
        }
        c[i] = (uint8_t)(best | (v < 0.0f && best != 7 ? 8 : 0));
    }
    for (int i = 0; i < 16; i++) b->qs[i] = (uint8_t)(c[i] | (c[i + 16] << 4));
}
static void log4_deq(const void *blk, float *y)
{
    const sh_block_log4 *b = blk;
    float d = sh_h2f(b->d);
    for (int i = 0; i < SH_QK; i++) {
        int c = i < 16 ? b->qs[i] & 15 : b->qs[i - 16] >> 4;
        float v = d * log4_lvl[c & 7];
        y[i] = c & 8 ? -v : v;
    }
}

/* ---- row loops ---------------------------------------------------------- */
typedef void (*quant_fn)(const float *x, void *blk);
typedef void (*deq_fn)(const void *blk, float *y);

static void rows_from(const float *src, void *dst, int64_t n, quant_fn q, size_t bb)
{
    int64_t nb = n / SH_QK;
    char *d = dst;
    for (int64_t i = 0; i < nb; i++) q(src + i * SH_QK, d + i * bb);
    if (n % SH_QK) {
        float tmp[SH_QK] = {0};
        memcpy(tmp, src + nb * SH_QK, (size_t)(n % SH_QK) * sizeof(float));
        q(tmp, d + nb * bb);
    }
}

static void rows_to(const void *src, float *dst, int64_t n, deq_fn f, size_t bb)
{
    int64_t nb = n / SH_QK;
    const char *s = src;
    for (int64_t i = 0; i < nb; i++) f(s + i * bb, dst + i * SH_QK);
    if (n % SH_QK) {
        float tmp[SH_QK];
        f(s + nb * bb, tmp);
        memcpy(dst + nb * SH_QK, tmp, (size_t)(n % SH_QK) * sizeof(float));
    }
}

#define ROWS(NAME)                                                                    \
    void sh_##NAME##_to_f32(const void *s, float *d, int64_t n)                        \
    {                                                                                 \
        rows_to(s, d, n, NAME##_deq, sizeof(sh_block_##NAME));                        \
    }                                                                                 \
    void sh_##NAME##_from_f32(const float *s, void *d, int64_t n)                      \
    {                                                                                 \
        rows_from(s, d, n, NAME##_quant, sizeof(sh_block_##NAME));                    \
    }
ROWS(q4_0)
ROWS(q4_1)
ROWS(q8_0)
ROWS(q3_0)
ROWS(q2_1)
ROWS(log4)

int sh_format_is_grouped(sh_format f)
{
    return f == SH_Q4_0 || f == SH_Q4_1 || f == SH_Q8_0 || f == SH_Q3_0 || f == SH_Q2_1 || f == SH_LOG4;
}

int sh_qblock_unpack(sh_format f, const void *blk, uint8_t u[SH_QK], float *d, float *m)
{
    *m = 0.0f;
    switch (f) {
    case SH_Q4_0: {
        const sh_block_q4_0 *b = blk;
        for (int i = 0; i < 16; i++) { u[i] = b->qs[i] & 15; u[i + 16] = b->qs[i] >> 4; }
        *d = sh_h2f(b->d);
        return 8;
    }
    case SH_Q4_1: {
        const sh_block_q4_1 *b = blk;
        for (int i = 0; i < 16; i++) { u[i] = b->qs[i] & 15; u[i + 16] = b->qs[i] >> 4; }
        *d = sh_h2f(b->d);
        *m = sh_h2f(b->m);
        return 0;
    }
    case SH_Q8_0: {
        const sh_block_q8_0 *b = blk;
        for (int i = 0; i < SH_QK; i++) u[i] = (uint8_t)(b->qs[i] + 128);
        *d = sh_h2f(b->d);
        return 128;
    }
    case SH_Q3_0: {
        const sh_block_q3_0 *b = blk;
        q3_0_unpack(b, u);
        *d = sh_h2f(b->d);
        return 4;
    }
    case SH_Q2_1: {
        const sh_block_q2_1 *b = blk;
        for (int i = 0; i < SH_QK; i++) u[i] = (b->qs[i % 8] >> (2 * (i / 8))) & 3;
        *d = sh_h2f(b->d);
        *m = sh_h2f(b->m);
        return 0;
    }
    case SH_LOG4: {
        const sh_block_log4 *b = blk;
        for (int i = 0; i < SH_QK; i++) {
            int c = i < 16 ? b->qs[i] & 15 : b->qs[i - 16] >> 4;
            int mag = (c & 7) == 7 ? 0 : 64 >> (c & 7);
            u[i] = (uint8_t)(c & 8 ? 64 - mag : 64 + mag);
        }
        *d = sh_h2f(b->d) * (1.0f / 64.0f);
        return 64;
    }
    default:
        *d = 0.0f;
        return -1;
    }
}

void sh_quantize_q8_0_sums(const float *x, sh_block_q8_0 *y, int32_t *sums, int64_t n)
{
    for (int64_t b = 0; b < n / SH_QK; b++) {
        q8_0_quant(x + b * SH_QK, &y[b]);
        int32_t s = 0;
        for (int i = 0; i < SH_QK; i++) s += y[b].qs[i];
        sums[b] = s;
    }
}

/* ---- per-channel int8 --------------------------------------------------- */
void sh_quantize_i8_rows(const float *x, int64_t rows, int64_t cols, int8_t *q, float *scale)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float amax = 0.0f;
        for (int64_t c = 0; c < cols; c++)
            if (fabsf(xr[c]) > amax) amax = fabsf(xr[c]);
        float s = amax / 127.0f, is = s > 0.0f ? 1.0f / s : 0.0f;
        scale[r] = s;
        for (int64_t c = 0; c < cols; c++) q[r * cols + c] = (int8_t)clampf(nearbyintf(xr[c] * is), -127.0f, 127.0f);
    }
}

void sh_quantize_u8_rows(const float *x, int64_t rows, int64_t cols, uint8_t *q, float *scale, int32_t *zp)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float lo = 0.0f, hi = 0.0f; /* the range always holds 0 exactly */
        for (int64_t c = 0; c < cols; c++) {
            if (xr[c] < lo) lo = xr[c];
            if (xr[c] > hi) hi = xr[c];
        }
        float s = (hi - lo) / 255.0f, is = s > 0.0f ? 1.0f / s : 0.0f;
        int32_t z = s > 0.0f ? (int32_t)clampf(nearbyintf(-lo * is), 0.0f, 255.0f) : 0;
        scale[r] = s;
        zp[r] = z;
        for (int64_t c = 0; c < cols; c++)
            q[r * cols + c] = (uint8_t)clampf(nearbyintf(xr[c] * is) + (float)z, 0.0f, 255.0f);
    }
}

void sh_dequantize_i8_rows(const int8_t *q, int64_t rows, int64_t cols, const float *scale, const int32_t *zp,
                           float *x)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            x[r * cols + c] = scale[r] * (float)(q[r * cols + c] - (zp ? zp[r] : 0));
}

void sh_dequantize_u8_rows(const uint8_t *q, int64_t rows, int64_t cols, const float *scale, const int32_t *zp,
                           float *x)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            x[r * cols + c] = scale[r] * (float)(q[r * cols + c] - (zp ? zp[r] : 0));
}

/* ---- group parameters and codes (GPTQ, AWQ, the g64 / g128 rows) -------- */

int sh_qbase_format(sh_format f, int *group)
{
    int g = 32;
    sh_format b = f;
    switch (f) {
    case SH_Q4_0: case SH_Q4_1: case SH_Q8_0: case SH_Q3_0: case SH_Q2_1: case SH_LOG4: break;
    case SH_Q4_0_G64: case SH_Q4_1_G64: case SH_Q8_0_G64: case SH_Q3_0_G64: case SH_Q2_1_G64: case SH_LOG4_G64:
        g = 64, b = (sh_format)(SH_Q4_0 + (f - SH_Q4_0_G64));
        break;
    case SH_Q4_0_G128: case SH_Q4_1_G128: case SH_Q8_0_G128: case SH_Q3_0_G128: case SH_Q2_1_G128:
    case SH_LOG4_G128:
        g = 128, b = (sh_format)(SH_Q4_0 + (f - SH_Q4_0_G128));
        break;
    default: return -1;
    }
    if (group) *group = g;
    return (int)b;
}

int sh_qgroup_format(sh_format base, int group)
{
    if (sh_qbase_format(base, NULL) != (int)base) return -1;
    if (group == 32) return (int)base;
    if (group == 64) return (int)(SH_Q4_0_G64 + (base - SH_Q4_0));
    if (group == 128) return (int)(SH_Q4_0_G128 + (base - SH_Q4_0));
    return -1;
}

void sh_qparams_rtn(sh_format f, const float *x, int64_t n, sh_qparams *p)
{
    float lo = INFINITY, hi = -INFINITY, amax = 0.0f, mx = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i] == x[i] ? x[i] : 0.0f;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        if (fabsf(v) > amax) { amax = fabsf(v); mx = v; }
    }
    if (n <= 0) lo = hi = 0.0f;
    p->m = 0.0f;
    switch (f) {
    case SH_Q4_0: p->d = sh_h2f(sh_f2h(mx / -8.0f)); break;
    case SH_Q3_0: p->d = sh_h2f(sh_f2h(mx / -4.0f)); break;
    case SH_Q8_0: p->d = sh_h2f(sh_f2h(amax / 127.0f)); break;
    case SH_LOG4: p->d = sh_h2f(sh_f2h(amax)); break;
    case SH_Q4_1:
        p->m = sh_h2f(sh_f2h(lo));
        p->d = sh_h2f(sh_f2h((hi - lo) / 15.0f));
        break;
    case SH_Q2_1:
        p->m = sh_h2f(sh_f2h(lo));
        p->d = sh_h2f(sh_f2h((hi - lo) / 3.0f));
        break;
    default: p->d = 0.0f; break;
    }
}

float sh_qvalue(sh_format f, const sh_qparams *p, float x, uint8_t *u)
{
    float d = p->d, id = d != 0.0f ? 1.0f / d : 0.0f;
    int q;
    switch (f) {
    case SH_Q4_0: q = qround(x * id + 8.0f, 0, 15); *u = (uint8_t)q; return d * (float)(q - 8);
    case SH_Q3_0: q = qround(x * id + 4.0f, 0, 7); *u = (uint8_t)q; return d * (float)(q - 4);
    case SH_Q8_0:
        q = (int)clampf(nearbyintf(x * id), -127.0f, 127.0f);
        *u = (uint8_t)(q + 128);
        return d * (float)q;
    case SH_Q4_1: q = qround((x - p->m) * id, 0, 15); *u = (uint8_t)q; return d * (float)q + p->m;
    case SH_Q2_1: q = qround((x - p->m) * id, 0, 3); *u = (uint8_t)q; return d * (float)q + p->m;
    case SH_LOG4: {
        float v = x == x ? x : 0.0f, a = fabsf(v), be = a;
        int best = 7;
        for (int e = 0; e < 7; e++) {
            float er = fabsf(a - d * log4_lvl[e]);
            if (er < be) { be = er; best = e; }
        }
        int c = best | (v < 0.0f && best != 7 ? 8 : 0);
        *u = (uint8_t)c; /* log4: the 4-bit code s|e itself */
        float r = d * log4_lvl[best];
        return c & 8 ? -r : r;
    }
    default: *u = 0; return 0.0f;
    }
}

void sh_qblock_pack(sh_format f, const sh_qparams *p, const uint8_t *u, void *blk)
{
    switch (f) {
    case SH_Q4_0: case SH_LOG4: {
        sh_block_q4_0 *b = blk; /* log4 has the same layout */
        b->d = sh_f2h(p->d);
        for (int i = 0; i < 16; i++) b->qs[i] = (uint8_t)((u[i] & 15) | (u[i + 16] << 4));
        break;
    }
    case SH_Q4_1: {
        sh_block_q4_1 *b = blk;
        b->d = sh_f2h(p->d), b->m = sh_f2h(p->m);
        for (int i = 0; i < 16; i++) b->qs[i] = (uint8_t)((u[i] & 15) | (u[i + 16] << 4));
        break;
    }
    case SH_Q8_0: {
        sh_block_q8_0 *b = blk;
        b->d = sh_f2h(p->d);
        for (int i = 0; i < SH_QK; i++) b->qs[i] = (int8_t)((int)u[i] - 128);
        break;
    }
    case SH_Q3_0: {
        sh_block_q3_0 *b = blk;
        b->d = sh_f2h(p->d);
        uint32_t qh = 0;
        memset(b->qs, 0, sizeof b->qs);
        for (int i = 0; i < SH_QK; i++) {
            b->qs[i % 8] |= (uint8_t)((u[i] & 3) << (2 * (i / 8)));
            qh |= (uint32_t)((u[i] >> 2) & 1) << i;
        }
        for (int j = 0; j < 4; j++) b->qh[j] = (uint8_t)(qh >> (8 * j));
        break;
    }
    case SH_Q2_1: {
        sh_block_q2_1 *b = blk;
        b->d = sh_f2h(p->d), b->m = sh_f2h(p->m);
        memset(b->qs, 0, sizeof b->qs);
        for (int i = 0; i < SH_QK; i++) b->qs[i % 8] |= (uint8_t)((u[i] & 3) << (2 * (i / 8)));
        break;
    }
    default: break;
    }
}

/* ---- rows of grouped formats of 64 / 128 --------------------------------
 * A group of g values is stored as the base format's header (f16 d, and f16
 * m for the asymmetric formats) once, then the code bytes of its g / 32
 * base blocks (each base block minus its header), in order. */
static size_t base_hdr(sh_format b) { return b == SH_Q4_1 || b == SH_Q2_1 ? 4 : 2; }

void sh_qrow_pack(sh_format f, const sh_qparams *p, const uint8_t *u, int64_t n, void *dst)
{
    int g;
    sh_format b = (sh_format)sh_qbase_format(f, &g);
    size_t bb = sh_format_get(b)->block_bytes, hd = base_hdr(b), fb = sh_format_get(f)->block_bytes;
    unsigned char tmp[64];
    for (int64_t gi = 0; gi < n / g; gi++) {
        unsigned char *o = (unsigned char *)dst + gi * fb;
        for (int s = 0; s < g / SH_QK; s++) {
            sh_qblock_pack(b, &p[gi], u + gi * g + s * SH_QK, tmp);
            if (s == 0) memcpy(o, tmp, hd);
            memcpy(o + hd + s * (bb - hd), tmp + hd, bb - hd);
        }
    }
}

void sh_qexpand(sh_format f, const void *src, int64_t n, void *dst)
{
    int g;
    sh_format b = (sh_format)sh_qbase_format(f, &g);
    size_t bb = sh_format_get(b)->block_bytes, hd = base_hdr(b), fb = sh_format_get(f)->block_bytes;
    for (int64_t gi = 0; gi < (n + g - 1) / g; gi++) {
        const unsigned char *in = (const unsigned char *)src + gi * fb;
        for (int s = 0; s < g / SH_QK; s++) {
            unsigned char *o = (unsigned char *)dst + (gi * (g / SH_QK) + s) * bb;
            memcpy(o, in, hd);
            memcpy(o + hd, in + hd + s * (bb - hd), bb - hd);
        }
    }
}

static void qg_from(sh_format f, const float *src, void *dst, int64_t n)
{
    int g;
    sh_format b = (sh_format)sh_qbase_format(f, &g);
    float x[128];
    uint8_t u[128];
    size_t fb = sh_format_get(f)->block_bytes;
    for (int64_t gi = 0; gi < (n + g - 1) / g; gi++) {
        int64_t m = n - gi * g < g ? n - gi * g : g;
        memset(x, 0, sizeof x);
        memcpy(x, src + gi * g, sizeof(float) * (size_t)m);
        sh_qparams p;
        sh_qparams_rtn(b, x, g, &p);
        for (int i = 0; i < g; i++) sh_qvalue(b, &p, x[i], &u[i]);
        sh_qrow_pack(f, &p, u, g, (unsigned char *)dst + gi * fb);
    }
}

static void qg_to(sh_format f, const void *src, float *dst, int64_t n)
{
    int g;
    sh_format b = (sh_format)sh_qbase_format(f, &g);
    unsigned char tmp[4 * 130];
    float y[128];
    size_t fb = sh_format_get(f)->block_bytes;
    const sh_format_traits *bt = sh_format_get(b);
    for (int64_t gi = 0; gi < (n + g - 1) / g; gi++) {
        int64_t m = n - gi * g < g ? n - gi * g : g;
        sh_qexpand(f, (const unsigned char *)src + gi * fb, g, tmp);
        bt->to_f32(tmp, y, g);
        memcpy(dst + gi * g, y, sizeof(float) * (size_t)m);
    }
}

#define QG(NAME, F)                                                                             \
    void sh_qg_to_f32_##NAME(const void *s, float *d, int64_t n) { qg_to(F, s, d, n); }       \
    void sh_qg_from_f32_##NAME(const float *s, void *d, int64_t n) { qg_from(F, s, d, n); }
QG(q4_0_g64, SH_Q4_0_G64)
QG(q4_1_g64, SH_Q4_1_G64)
QG(q8_0_g64, SH_Q8_0_G64)
QG(q3_0_g64, SH_Q3_0_G64)
QG(q2_1_g64, SH_Q2_1_G64)
QG(log4_g64, SH_LOG4_G64)
QG(q4_0_g128, SH_Q4_0_G128)
QG(q4_1_g128, SH_Q4_1_G128)
QG(q8_0_g128, SH_Q8_0_G128)
QG(q3_0_g128, SH_Q3_0_G128)
QG(q2_1_g128, SH_Q2_1_G128)
QG(log4_g128, SH_LOG4_G128)

/* ---- per-channel / per-tensor rows (layout: quant_formats.h) ------------ */

int sh_qrows_base(sh_format f, int *per_tensor)
{
    if (f >= SH_Q4_0_CH && f <= SH_LOG4_CH) {
        if (per_tensor) *per_tensor = 0;
        return (int)(SH_Q4_0 + (f - SH_Q4_0_CH));
    }
    if (f >= SH_Q4_0_T && f <= SH_LOG4_T) {
        if (per_tensor) *per_tensor = 1;
        return (int)(SH_Q4_0 + (f - SH_Q4_0_T));
    }
    return -1;
}

int sh_qrows_format(sh_format base, int per_tensor)
{
    if (!sh_format_is_grouped(base)) return -1;
    return (int)((per_tensor ? SH_Q4_0_T : SH_Q4_0_CH) + (base - SH_Q4_0));
}

int sh_qrows_block_codes(sh_format b)
{
    const sh_format_traits *t = sh_format_get(b);
    if (!sh_format_is_grouped(b) || !t) return 0;
    return t->block_bytes - (int)base_hdr(b);
}

static int64_t qrows_code_off(sh_format b, int64_t nscale)
{
    int64_t s = SH_QROW_HDR_BYTES + nscale * 4 * (b == SH_Q4_1 || b == SH_Q2_1 ? 2 : 1);
    return (s + 63) / 64 * 64;
}

size_t sh_qrows_bytes(sh_format f, int64_t rows, int64_t cols)
{
    int pt;
    int b = sh_qrows_base(f, &pt);
    if (b < 0 || rows <= 0 || cols <= 0 || cols % SH_QK) return 0;
    return (size_t)(qrows_code_off((sh_format)b, pt ? 1 : rows) + rows * (cols / SH_QK) * sh_qrows_block_codes((sh_format)b));
}

int sh_qrows_unpack_block(sh_format base, const uint8_t *codes, uint8_t u[SH_QK])
{
    unsigned char blk[64] = {0};
    size_t hd = base_hdr(base);
    memcpy(blk + hd, codes, (size_t)sh_qrows_block_codes(base));
    float d, m;
    return sh_qblock_unpack(base, blk, u, &d, &m);
}

int sh_qrows_pack(sh_format f, int64_t rows, int64_t cols, const sh_qparams *p, const uint8_t *u, sh_tensor **out,
                  sh_error *err)
{
    *out = NULL;
    int pt;
    int bi = sh_qrows_base(f, &pt);
    const sh_format_traits *ft = sh_format_get(f);
    if (bi < 0) return sh_err(err, SH_EINVAL, "qrows: format %s is not a per-channel / per-tensor row", ft ? ft->name : "?");
    if (rows <= 0 || cols <= 0 || cols % SH_QK)
        return sh_err(err, SH_ESHAPE, "qrows: %s [%lld,%lld]: K must be a positive multiple of %d", ft->name,
                      (long long)rows, (long long)cols, SH_QK);
    sh_format b = (sh_format)bi;
    size_t nb = sh_qrows_bytes(f, rows, cols);
    int asym = b == SH_Q4_1 || b == SH_Q2_1;
    int64_t ns = pt ? 1 : rows, cb = sh_qrows_block_codes(b);
    unsigned char *buf = aligned_alloc(64, (nb + 63) / 64 * 64 + 64);
    if (!buf) return sh_err(err, SH_ENOMEM, "qrows: out of memory for %s [%lld,%lld]", ft->name, (long long)rows, (long long)cols);
    memset(buf, 0, nb);
    sh_qrow_hdr h = {SH_QROW_MAGIC, (int32_t)f, rows, cols, ns, SH_QROW_HDR_BYTES, qrows_code_off(b, ns),
                     cols / SH_QK * cb};
    memcpy(buf, &h, sizeof h);
    float *sc = (float *)(buf + h.scale_off);
    for (int64_t i = 0; i < ns; i++) {
        sc[i] = p[i].d;
        if (asym) sc[ns + i] = p[i].m;
    }
    unsigned char tmp[64];
    size_t hd = base_hdr(b);
    sh_qparams p0 = {0.0f, 0.0f};
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < cols / SH_QK; k++) {
            sh_qblock_pack(b, &p0, u + r * cols + k * SH_QK, tmp);
            memcpy(buf + h.code_off + r * h.row_bytes + k * cb, tmp + hd, (size_t)cb);
        }
    int64_t shape[2] = {rows, cols};
    sh_tensor *t = sh_tensor_view(f, 2, shape, buf, err);
    if (!t) { free(buf); return err && err->code ? err->code : SH_ENOMEM; }
    t->nbytes = nb;
    t->owns = 1;
    *out = t;
    return SH_OK;
}

int sh_qrows_quantize(sh_format f, const float *w, int64_t rows, int64_t cols, sh_tensor **out, sh_error *err)
{
    *out = NULL;
    int pt;
    int b = sh_qrows_base(f, &pt);
    if (b < 0 || rows <= 0 || cols <= 0 || cols % SH_QK)
        return sh_qrows_pack(f, rows, cols, NULL, NULL, out, err); /* reports the error */
    int64_t ns = pt ? 1 : rows;
    sh_qparams *p = malloc(sizeof *p * (size_t)ns);
    uint8_t *u = malloc((size_t)(rows * cols));
    if (!p || !u) { free(p); free(u); return sh_err(err, SH_ENOMEM, "qrows: out of memory"); }
    if (pt) sh_qparams_rtn((sh_format)b, w, rows * cols, &p[0]);
    for (int64_t r = 0; r < rows; r++) {
        if (!pt) sh_qparams_rtn((sh_format)b, w + r * cols, cols, &p[r]);
        const sh_qparams *pr = &p[pt ? 0 : r];
        for (int64_t c = 0; c < cols; c++) sh_qvalue((sh_format)b, pr, w[r * cols + c], &u[r * cols + c]);
    }
    int rc = sh_qrows_pack(f, rows, cols, p, u, out, err);
    free(p);
    free(u);
    return rc;
}

int sh_qrows_validate(const void *data, size_t nbytes, sh_error *err)
{
    sh_qrow_hdr h;
    if (!data || nbytes < SH_QROW_HDR_BYTES)
        return sh_err(err, SH_EFORMAT, "quantized rows: %zu bytes is too short for the %d-byte header", nbytes,
                      SH_QROW_HDR_BYTES);
    memcpy(&h, data, sizeof h);
    if (h.magic != SH_QROW_MAGIC) return sh_err(err, SH_EFORMAT, "quantized rows: bad magic 0x%08x", h.magic);
    int pt;
    int b = sh_qrows_base((sh_format)h.fmt, &pt);
    if (b < 0) return sh_err(err, SH_EFORMAT, "quantized rows: format %d is not a _ch / _t row format", h.fmt);
    const char *fn = sh_format_get((sh_format)h.fmt)->name;
    if (h.rows <= 0 || h.cols <= 0 || h.cols % SH_QK || h.rows > ((int64_t)1 << 40) / h.cols)
        return sh_err(err, SH_EFORMAT, "quantized rows: %s [%lld,%lld]: bad dimensions (K a multiple of %d)", fn,
                      (long long)h.rows, (long long)h.cols, SH_QK);
    int64_t ns = pt ? 1 : h.rows;
    if (h.nscale != ns || h.scale_off != SH_QROW_HDR_BYTES || h.code_off != qrows_code_off((sh_format)b, ns) ||
        h.row_bytes != h.cols / SH_QK * sh_qrows_block_codes((sh_format)b))
        return sh_err(err, SH_EFORMAT, "quantized rows: %s [%lld,%lld]: header offsets / counts disagree with the shape",
                      fn, (long long)h.rows, (long long)h.cols);
    size_t need = sh_qrows_bytes((sh_format)h.fmt, h.rows, h.cols);
    if (nbytes != need)
        return sh_err(err, SH_EFORMAT, "quantized rows: %s [%lld,%lld] needs %zu bytes, has %zu", fn, (long long)h.rows,
                      (long long)h.cols, need, nbytes);
    const float *s = (const float *)((const char *)data + h.scale_off);
    int asym = b == SH_Q4_1 || b == SH_Q2_1;
    for (int64_t i = 0; i < ns * (asym ? 2 : 1); i++) {
        float v;
        memcpy(&v, s + i, 4);
        if (!isfinite(v)) return sh_err(err, SH_EFORMAT, "quantized rows: %s: scale %lld is not finite", fn, (long long)i);
    }
    return SH_OK;
}

int sh_qrows_wrap(void *data, size_t nbytes, int owns, sh_tensor **out, sh_error *err)
{
    *out = NULL;
    int rc = sh_qrows_validate(data, nbytes, err);
    if (rc) return rc;
    sh_qrow_hdr h;
    memcpy(&h, data, sizeof h);
    void *d = data;
    if (!owns && ((uintptr_t)data & 7))
        return sh_err(err, SH_EINVAL, "quantized rows: a view must be 8-byte aligned (the header holds int64 fields)");
    if (owns && ((uintptr_t)data & 63)) { /* the kernels read f32 scales: keep 64-byte alignment */
        d = aligned_alloc(64, (nbytes + 63) / 64 * 64);
        if (!d) return sh_err(err, SH_ENOMEM, "quantized rows: out of memory");
        memcpy(d, data, nbytes);
        free(data);
    }
    int64_t shape[2] = {h.rows, h.cols};
    sh_tensor *t = sh_tensor_view((sh_format)h.fmt, 2, shape, d, err);
    if (!t) return err && err->code ? err->code : SH_ENOMEM;
    t->nbytes = nbytes;
    t->owns = owns;
    *out = t;
    return SH_OK;
}

void sh_qrows_row_to_f32(const void *src, int64_t r, float *dst)
{
    sh_qrow_hdr h;
    memcpy(&h, src, sizeof h);
    int b = sh_qrows_base((sh_format)h.fmt, NULL);
    if (b < 0 || r < 0 || r >= h.rows) return;
    int64_t cb = sh_qrows_block_codes((sh_format)b);
    float m, d = sh_qrows_scale(src, r, &m);
    if (b == SH_LOG4) d *= 1.0f / 64.0f;
    const uint8_t *c = sh_qrows_codes(src, r);
    uint8_t u[SH_QK];
    for (int64_t k = 0; k < h.cols / SH_QK; k++) {
        int off = sh_qrows_unpack_block((sh_format)b, c + k * cb, u);
        for (int i = 0; i < SH_QK; i++) dst[k * SH_QK + i] = d * (float)(u[i] - off) + m;
    }
}

void sh_qrows_to_f32(const void *src, float *dst, int64_t n)
{
    sh_qrow_hdr h;
    memcpy(&h, src, sizeof h);
    int b = sh_qrows_base((sh_format)h.fmt, NULL);
    if (b < 0 || n <= 0) return;
    int64_t cb = sh_qrows_block_codes((sh_format)b), nb = h.cols / SH_QK;
    uint8_t u[SH_QK];
    for (int64_t r = 0; r < h.rows && r * h.cols < n; r++) {
        float m, d = sh_qrows_scale(src, r, &m);
        if (b == SH_LOG4) d *= 1.0f / 64.0f;
        const uint8_t *c = sh_qrows_codes(src, r);
        for (int64_t k = 0; k < nb; k++) {
            int off = sh_qrows_unpack_block((sh_format)b, c + k * cb, u);
            int64_t base = r * h.cols + k * SH_QK;
            for (int i = 0; i < SH_QK && base + i < n; i++) dst[base + i] = d * (float)(u[i] - off) + m;
        }
    }
}

int sh_qrows_slice(const sh_tensor *t, int64_t r0, int64_t r1, sh_tensor **out, sh_error *err)
{
    *out = NULL;
    int pt;
    int b = sh_qrows_base(t->fmt, &pt);
    if (b < 0 || t->ndim != 2 || t->nbytes < SH_QROW_HDR_BYTES)
        return sh_err(err, SH_EINVAL, "qrows slice: tensor of format %s is not a _ch / _t row",
                      sh_format_get(t->fmt) ? sh_format_get(t->fmt)->name : "?");
    const sh_qrow_hdr *h = sh_qrows_hdr(t->data);
    if (r0 < 0 || r1 <= r0 || r1 > h->rows)
        return sh_err(err, SH_ESHAPE, "qrows slice: rows [%lld, %lld) of a %s [%lld,%lld]", (long long)r0,
                      (long long)r1, sh_format_get(t->fmt)->name, (long long)h->rows, (long long)h->cols);
    int64_t n = r1 - r0, ns = pt ? 1 : n;
    sh_qparams *p = malloc(sizeof *p * (size_t)ns);
    if (!p) return sh_err(err, SH_ENOMEM, "qrows slice: out of memory");
    for (int64_t i = 0; i < ns; i++) p[i].d = sh_qrows_scale(t->data, r0 + i, &p[i].m);
    /* codes are copied as bytes: pack from zero codes, then overwrite */
    uint8_t *u = calloc((size_t)(n * h->cols), 1);
    int rc = u ? sh_qrows_pack(t->fmt, n, h->cols, p, u, out, err) : sh_err(err, SH_ENOMEM, "qrows slice: out of memory");
    if (!rc)
        memcpy((char *)(*out)->data + sh_qrows_hdr((*out)->data)->code_off, sh_qrows_codes(t->data, r0),
               (size_t)(n * h->row_bytes));
    free(p);
    free(u);
    return rc;
}

int sh_qtensor_to_f32(const sh_tensor *t, float *dst, sh_error *err)
{
    const sh_format_traits *ft = sh_format_get(t->fmt);
    if (!ft || !ft->is_quantized || t->ndim != 2)
        return sh_err(err, SH_EINVAL, "dequantize: tensor of format %s is not a 2-D quantized weight", ft ? ft->name : "?");
    int64_t R = t->shape[0], C = t->shape[1];
    if (ft->packed) {
        if (t->nbytes < SH_QROW_HDR_BYTES || sh_qrows_hdr(t->data)->rows != R || sh_qrows_hdr(t->data)->cols != C)
            return sh_err(err, SH_EFORMAT, "dequantize: %s buffer disagrees with the shape [%lld,%lld]", ft->name,
                          (long long)R, (long long)C);
        ft->to_f32(t->data, dst, R * C);
        return SH_OK;
    }
    size_t rb = sh_format_bytes(t->fmt, C);
    for (int64_t r = 0; r < R; r++) ft->to_f32((const char *)t->data + r * rb, dst + r * C, C);
    return SH_OK;
}
