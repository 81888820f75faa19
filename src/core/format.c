/* format.c - the table of storage formats.  One row per format: its traits
 * (name, block size and bytes, conversions to and from f32).  Quantized and
 * sparse formats are added here as rows, with their kernels in ops/. */
#include <math.h>
#include <string.h>

#include "shrink.h"
#include "core/sparse.h"
#include "core/quant_formats.h"

_Static_assert(sizeof(float) == 4, "f32 is 4 bytes");

static void f32_to(const void *s, float *d, int64_t n) { memcpy(d, s, (size_t)n * 4); }
static void f32_from(const float *s, void *d, int64_t n) { memcpy(d, s, (size_t)n * 4); }

static void f16_to(const void *s, float *d, int64_t n)
{
    const uint16_t *p = s;
    for (int64_t i = 0; i < n; i++) d[i] = sh_h2f(p[i]);
}
static void f16_from(const float *s, void *d, int64_t n)
{
    uint16_t *p = d;
    for (int64_t i = 0; i < n; i++) p[i] = sh_f2h(s[i]);
}
static void bf16_to(const void *s, float *d, int64_t n)
{
    const uint16_t *p = s;
    for (int64_t i = 0; i < n; i++) {
        uint32_t f = (uint32_t)p[i] << 16;
        memcpy(&d[i], &f, 4);
    }
}
static void bf16_from(const float *s, void *d, int64_t n)
{
    uint16_t *p = d;
    for (int64_t i = 0; i < n; i++) {
        uint32_t f;
        memcpy(&f, &s[i], 4);
        if ((f & 0x7fffffff) > 0x7f800000) { p[i] = (uint16_t)((f >> 16) | 0x40); continue; }
        f += 0x7fff + ((f >> 16) & 1); /* round to nearest even */
        p[i] = (uint16_t)(f >> 16);
    }
}

static float sat(float v, float lo, float hi)
{
    if (!(v == v)) return 0.0f;
    return v < lo ? lo : v > hi ? hi : v;
}

#define INT_ROW(T, NAME, LO, HI)                                               \
    static void NAME##_to(const void *s, float *d, int64_t n)                  \
    {                                                                          \
        const T *p = s;                                                        \
        for (int64_t i = 0; i < n; i++) d[i] = (float)p[i];                    \
    }                                                                          \
    static void NAME##_from(const float *s, void *d, int64_t n)                \
    {                                                                          \
        T *p = d;                                                              \
        for (int64_t i = 0; i < n; i++) p[i] = (T)nearbyintf(sat(s[i], LO, HI)); \
    }
INT_ROW(int8_t, i8, -128.0f, 127.0f)
INT_ROW(uint8_t, u8, 0.0f, 255.0f)
INT_ROW(int32_t, i32, -2147483648.0f, 2147483520.0f)
INT_ROW(int64_t, i64, -9.2233720368547758e18f, 9.2233714e18f)

static void bool_to(const void *s, float *d, int64_t n)
{
    const uint8_t *p = s;
    for (int64_t i = 0; i < n; i++) d[i] = p[i] ? 1.0f : 0.0f;
}
static void bool_from(const float *s, void *d, int64_t n)
{
    uint8_t *p = d;
    for (int64_t i = 0; i < n; i++) p[i] = s[i] != 0.0f;
}

static const sh_format_traits formats[SH_FORMAT_COUNT] = {
    [SH_F32] = {"f32", 1, 4, 1, f32_to, f32_from},
    [SH_F16] = {"f16", 1, 2, 1, f16_to, f16_from},
    [SH_BF16] = {"bf16", 1, 2, 1, bf16_to, bf16_from},
    [SH_I8] = {"i8", 1, 1, 0, i8_to, i8_from},
    [SH_U8] = {"u8", 1, 1, 0, u8_to, u8_from},
    [SH_I32] = {"i32", 1, 4, 0, i32_to, i32_from},
    [SH_I64] = {"i64", 1, 8, 0, i64_to, i64_from},
    [SH_BOOL] = {"bool", 1, 1, 0, bool_to, bool_from},
    /* sparse: packed whole-tensor buffers, see core/sparse.h */
    [SH_CSR] = {"csr", 0, 0, 1, sh_sparse_to_f32, NULL, 1},
    [SH_BCSR] = {"bcsr", 0, 0, 1, sh_sparse_to_f32, NULL, 1},
    [SH_NM] = {"nm", 0, 0, 1, sh_sparse_to_f32, NULL, 1},
    /* grouped quantized formats, see core/quant_formats.h */
    [SH_Q4_0] = {"q4_0", 32, 18, 1, sh_q4_0_to_f32, sh_q4_0_from_f32, 0, 1},
    [SH_Q4_1] = {"q4_1", 32, 20, 1, sh_q4_1_to_f32, sh_q4_1_from_f32, 0, 1},
    [SH_Q8_0] = {"q8_0", 32, 34, 1, sh_q8_0_to_f32, sh_q8_0_from_f32, 0, 1},
    [SH_Q3_0] = {"q3_0", 32, 14, 1, sh_q3_0_to_f32, sh_q3_0_from_f32, 0, 1},
    [SH_Q2_1] = {"q2_1", 32, 12, 1, sh_q2_1_to_f32, sh_q2_1_from_f32, 0, 1},
    [SH_LOG4] = {"log4", 32, 18, 1, sh_log4_to_f32, sh_log4_from_f32, 0, 1},
    /* the same, one scale per 64 / 128 values (quant_formats.h) */
    [SH_Q4_0_G64] = {"q4_0_g64", 64, 34, 1, sh_qg_to_f32_q4_0_g64, sh_qg_from_f32_q4_0_g64, 0, 1},
    [SH_Q4_1_G64] = {"q4_1_g64", 64, 36, 1, sh_qg_to_f32_q4_1_g64, sh_qg_from_f32_q4_1_g64, 0, 1},
    [SH_Q8_0_G64] = {"q8_0_g64", 64, 66, 1, sh_qg_to_f32_q8_0_g64, sh_qg_from_f32_q8_0_g64, 0, 1},
    [SH_Q3_0_G64] = {"q3_0_g64", 64, 26, 1, sh_qg_to_f32_q3_0_g64, sh_qg_from_f32_q3_0_g64, 0, 1},
    [SH_Q2_1_G64] = {"q2_1_g64", 64, 20, 1, sh_qg_to_f32_q2_1_g64, sh_qg_from_f32_q2_1_g64, 0, 1},
    [SH_LOG4_G64] = {"log4_g64", 64, 34, 1, sh_qg_to_f32_log4_g64, sh_qg_from_f32_log4_g64, 0, 1},
    [SH_Q4_0_G128] = {"q4_0_g128", 128, 66, 1, sh_qg_to_f32_q4_0_g128, sh_qg_from_f32_q4_0_g128, 0, 1},
    [SH_Q4_1_G128] = {"q4_1_g128", 128, 68, 1, sh_qg_to_f32_q4_1_g128, sh_qg_from_f32_q4_1_g128, 0, 1},
    [SH_Q8_0_G128] = {"q8_0_g128", 128, 130, 1, sh_qg_to_f32_q8_0_g128, sh_qg_from_f32_q8_0_g128, 0, 1},
    [SH_Q3_0_G128] = {"q3_0_g128", 128, 50, 1, sh_qg_to_f32_q3_0_g128, sh_qg_from_f32_q3_0_g128, 0, 1},
    [SH_Q2_1_G128] = {"q2_1_g128", 128, 36, 1, sh_qg_to_f32_q2_1_g128, sh_qg_from_f32_q2_1_g128, 0, 1},
    [SH_LOG4_G128] = {"log4_g128", 128, 66, 1, sh_qg_to_f32_log4_g128, sh_qg_from_f32_log4_g128, 0, 1},
    /* one f32 scale per output row / per tensor: packed whole-tensor buffers
     * (header, scales, codes; quant_formats.h), built with sh_qrows_pack */
    [SH_Q4_0_CH] = {"q4_0_ch", 0, 0, 1, sh_qrows_to_f32, NULL, 1, 1},
    [SH_Q4_1_CH] = {"q4_1_ch", 0, 0, 1, sh_qrows_to_f32, NULL, 1, 1},
    [SH_Q8_0_CH] = {"q8_0_ch", 0, 0, 1, sh_qrows_to_f32, NULL, 1, 1},
    [SH_Q3_0_CH] = {"q3_0_ch", 0, 0, 1, sh_qrows_to_f32, NULL, 1, 1},
    [SH_Q2_1_CH] = {"q2_1_ch", 0, 0, 1, sh_qrows_to_f32, NULL, 1, 1},
    [SH_LOG4_CH] = {"log4_ch", 0, 0, 1, sh_qrows_to_f32, NULL, 1, 1},
    [SH_Q4_0_T] = {"q4_0_t", 0, 0, 1, sh_qrows_to_f32, NULL, 1, 1},
    [SH_Q4_1_T] = {"q4_1_t", 0, 0, 1, sh_qrows_to_f32, NULL, 1, 1},
    [SH_Q8_0_T] = {"q8_0_t", 0, 0, 1, sh_qrows_to_f32, NULL, 1, 1},
    [SH_Q3_0_T] = {"q3_0_t", 0, 0, 1, sh_qrows_to_f32, NULL, 1, 1},
    [SH_Q2_1_T] = {"q2_1_t", 0, 0, 1, sh_qrows_to_f32, NULL, 1, 1},
    [SH_LOG4_T] = {"log4_t", 0, 0, 1, sh_qrows_to_f32, NULL, 1, 1},
};

const sh_format_traits *sh_format_get(sh_format f)
{
    if ((int)f < 0 || f >= SH_FORMAT_COUNT) return NULL;
    return &formats[f];
}

int sh_format_from_name(const char *name)
{
    for (int i = 0; i < SH_FORMAT_COUNT; i++)
        if (formats[i].name && strcmp(formats[i].name, name) == 0) return i;
    return -1;
}

size_t sh_format_bytes(sh_format f, int64_t n)
{
    const sh_format_traits *t = sh_format_get(f);
    if (!t || n < 0 || t->block_elems <= 0) return 0; /* packed formats: size from their header */
    return (size_t)((n + t->block_elems - 1) / t->block_elems) * (size_t)t->block_bytes;
}
