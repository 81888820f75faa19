/* test_quant_formats.c - grouped quantized formats (round-trip error bounds,
 * layouts), per-channel int8 helpers, CPU feature detection. */
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "core/quant_formats.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) /* uniform [-1, 1) */
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / (1 << 24))) * 2.0f - 1.0f;
}

/* Round trip of n values with per-group scales of varied magnitude; the
 * bound function gives the allowed error of value i of group g. */
typedef double (*bound_fn)(const float *grp, int ng, float x, const void *blk);

static float blk_d(const void *blk) { uint16_t h; memcpy(&h, blk, 2); return sh_h2f(h); }
static float blk_m(const void *blk) { uint16_t h; memcpy(&h, (const char *)blk + 2, 2); return sh_h2f(h); }

/* symmetric sign-max formats: |d|/2 except the one clamped end (|d|) */
static double b_symh(float x, const void *blk, int half)
{
    float d = fabsf(blk_d(blk));
    /* the end opposite the sign-max value is clamped at half - 1 */
    if (fabsf(x) > (half - 0.5f) * d) /* clamped: up to the f16-rounded scale's overshoot */
        return fmax(d, fabsf(x) - (half - 1) * d) * (1 + 1e-5);
    return 0.5 * d * (1 + 1e-5) + 1e-30;
}
static double b_sym4(const float *g, int ng, float x, const void *blk) { return b_symh(x, blk, 8); }
static double b_sym3(const float *g, int ng, float x, const void *blk) { return b_symh(x, blk, 4); }
static double b_q8(const float *g, int ng, float x, const void *blk)
{
    double d = fabsf(blk_d(blk)); /* clamped at 127 when the f16 scale rounded down (subnormal scales) */
    return fmax(0.5 * d, fabs(x) - 127 * d) * (1 + 1e-5) + 1e-30;
}
static int cur_group = SH_QK; /* values per scale of the format under test */
static double b_asym(const float *g, int ng, float x, const void *blk)
{
    float lo = INFINITY;
    for (int i = 0; i < ng; i++) if (g[i] < lo) lo = g[i];
    if (ng < cur_group && lo > 0) lo = 0; /* zero padding joins the group */
    return 0.5 * fabsf(blk_d(blk)) * (1 + 1e-5) + fabs(blk_m(blk) - lo) + 1e-6 * fabsf(x);
}
static double b_log(const float *g, int ng, float x, const void *blk)
{
    float d = blk_d(blk);
    double b = fabs(x) / 3.0 > d / 128.0 ? fabs(x) / 3.0 : d / 128.0;
    return b * (1 + 1e-5) + 1e-6 * d;
}

static void roundtrip(sh_format f, bound_fn bound, int n)
{
    const sh_format_traits *t = sh_format_get(f);
    CHECK(t && t->is_quantized && t->block_elems % SH_QK == 0);
    if (!t) return;
    int G = t->block_elems;
    cur_group = G;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    size_t nb = sh_format_bytes(f, n);
    CHECK(nb == (size_t)((n + G - 1) / G) * (size_t)t->block_bytes);
    unsigned char *q = malloc(nb);
    for (int i = 0; i < n; i++) {
        float mag = powf(10.0f, (float)((i / 32) % 7) - 3.0f); /* 1e-3 .. 1e3 per group */
        x[i] = frand() * mag + ((i / 32) % 3 == 2 ? 0.5f * mag : 0.0f);
    }
    if (n > 40) x[5] = 0.0f, x[33] = -x[34]; /* exact zero, symmetric pair */
    t->from_f32(x, q, n);
    t->to_f32(q, y, n);
    int bad = 0;
    double worst = 0;
    for (int i = 0; i < n; i++) {
        int g = i / G, ng = n - g * G < G ? n - g * G : G;
        const void *blk = q + (size_t)g * t->block_bytes;
        double e = fabs((double)x[i] - y[i]), b = bound(x + g * G, ng, x[i], blk);
        if (!(e <= b)) {
            if (bad++ < 3) sh_test_fail(__FILE__, __LINE__, "%s n=%d: x[%d]=%.9g -> %.9g, err %.3g > bound %.3g", t->name, n, i, x[i], y[i], e, b);
        }
        if (b > 0 && e / b > worst) worst = e / b;
    }
    /* round trip is idempotent: quantizing the dequantized values gives the same bytes */
    unsigned char *q2 = malloc(nb);
    t->from_f32(y, q2, n);
    float *z = malloc(n * sizeof *z);
    t->to_f32(q2, z, n);
    int same = 1;
    for (int i = 0; i < n; i++) if (fabsf(z[i] - y[i]) > 1e-6f * fabsf(y[i]) + 1e-30f) same = 0;
    CHECK_MSG(same, "%s: dequantized values do not re-quantize to themselves", t->name);
    free(x); free(y); free(q); free(q2); free(z);
}

static void check_format(sh_format f, bound_fn b)
{
    int sizes[] = {32, 64, 1, 31, 33, 97, 1000, 4096 + 17};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) roundtrip(f, b, sizes[i]);
}

TEST(qformat_q4_0_roundtrip) { check_format(SH_Q4_0, b_sym4); }
TEST(qformat_q4_1_roundtrip) { check_format(SH_Q4_1, b_asym); }
TEST(qformat_q8_0_roundtrip) { check_format(SH_Q8_0, b_q8); }
TEST(qformat_q3_0_roundtrip) { check_format(SH_Q3_0, b_sym3); }
TEST(qformat_q2_1_roundtrip) { check_format(SH_Q2_1, b_asym); }
TEST(qformat_log4_roundtrip) { check_format(SH_LOG4, b_log); }

/* one scale per 64 / 128 values: the same bounds against the group's scale */
TEST(qformat_g64_roundtrip)
{
    check_format(SH_Q4_0_G64, b_sym4);
    check_format(SH_Q4_1_G64, b_asym);
    check_format(SH_Q8_0_G64, b_q8);
    check_format(SH_Q3_0_G64, b_sym3);
    check_format(SH_Q2_1_G64, b_asym);
    check_format(SH_LOG4_G64, b_log);
}
TEST(qformat_g128_roundtrip)
{
    check_format(SH_Q4_0_G128, b_sym4);
    check_format(SH_Q4_1_G128, b_asym);
    check_format(SH_Q8_0_G128, b_q8);
    check_format(SH_Q3_0_G128, b_sym3);
    check_format(SH_Q2_1_G128, b_asym);
    check_format(SH_LOG4_G128, b_log);
}

/* g64 / g128 rows expand to base 32-blocks that decode to the same values */
TEST(qformat_group_rows_expand)
{
    static const char *names[] = {"q4_0_g64", "q4_1_g64", "q8_0_g64", "q3_0_g64", "q2_1_g64", "log4_g64",
                                  "q4_0_g128", "q4_1_g128", "q8_0_g128", "q3_0_g128", "q2_1_g128", "log4_g128"};
    static const double bpw[] = {4.25, 4.5, 8.25, 3.25, 2.5, 4.25, 4.125, 4.25, 8.125, 3.125, 2.25, 4.125};
    float x[512], y[512], z[512];
    for (int i = 0; i < 512; i++) x[i] = frand() * (1 + i / 100);
    for (int k = 0; k < 12; k++) {
        int f = sh_format_from_name(names[k]), G;
        CHECK(f >= 0);
        if (f < 0) continue;
        const sh_format_traits *t = sh_format_get((sh_format)f);
        int b = sh_qbase_format((sh_format)f, &G);
        CHECK(G == t->block_elems && (G == 64 || G == 128) && b >= 0);
        CHECK_NEAR(8.0 * t->block_bytes / t->block_elems, bpw[k], 1e-9);
        CHECK(sh_qgroup_format((sh_format)b, G) == f && sh_qgroup_format((sh_format)b, 32) == b);
        unsigned char q[2048], e[4096];
        t->from_f32(x, q, 512);
        t->to_f32(q, y, 512);
        sh_qexpand((sh_format)f, q, 512, e);
        sh_format_get((sh_format)b)->to_f32(e, z, 512);
        CHECK_MSG(!memcmp(y, z, sizeof y), "%s: expanded blocks decode differently", names[k]);
        CHECK(sh_format_bytes((sh_format)f, 512) == (size_t)(512 / G * t->block_bytes));
    }
}

TEST(qformat_table_rows)
{
    const char *names[] = {"q4_0", "q4_1", "q8_0", "q3_0", "q2_1", "log4"};
    int bytes[] = {18, 20, 34, 14, 12, 18};
    sh_format fs[] = {SH_Q4_0, SH_Q4_1, SH_Q8_0, SH_Q3_0, SH_Q2_1, SH_LOG4};
    for (int i = 0; i < 6; i++) {
        CHECK(sh_format_from_name(names[i]) == (int)fs[i]);
        CHECK(sh_format_get(fs[i])->block_bytes == bytes[i]);
        CHECK(sh_format_get(fs[i])->block_elems == 32);
        CHECK(sh_format_is_grouped(fs[i]));
    }
    CHECK(!sh_format_get(SH_F32)->is_quantized && !sh_format_is_grouped(SH_I8));
    CHECK(sh_format_bytes(SH_Q4_0, 4096) == 4096 / 32 * 18);
    CHECK(sh_format_bytes(SH_Q3_0, 33) == 2 * 14);
    sh_error err = {0};
    int64_t shp[2] = {3, 64};
    sh_tensor *t = sh_tensor_new(SH_Q4_0, 2, shp, &err);
    CHECK(t && t->nbytes == 6 * 18);
    sh_tensor_free(t);
}

/* Known values: layouts are ggml-compatible for q4_0 / q8_0. */
TEST(qformat_known_bytes)
{
    float x[32];
    for (int i = 0; i < 32; i++) x[i] = (float)(i - 16); /* -16 .. 15: max magnitude -16 -> d = 2 */
    sh_block_q4_0 b;
    sh_q4_0_from_f32(x, &b, 32);
    CHECK(sh_h2f(b.d) == 2.0f);
    /* x[0] = -16 -> q 0; x[16] = 0 -> q 8: byte 0 = 0 | 8 << 4 */
    CHECK(b.qs[0] == 0x80);
    /* x[15] = -1 -> -0.5 + 8 = 7.5 -> rounds up to 8; x[31] = 15 -> 7.5 + 8 -> 15 */
    CHECK((b.qs[15] & 15) == 8 && (b.qs[15] >> 4) == 15);
    uint8_t u[32];
    float d, m;
    CHECK(sh_qblock_unpack(SH_Q4_0, &b, u, &d, &m) == 8 && d == 2.0f && m == 0.0f);
    CHECK(u[0] == 0 && u[16] == 8 && u[31] == 15);
    /* log4: powers of two of the group max come back exactly */
    float l[32] = {0};
    l[0] = 8.0f; l[1] = -4.0f; l[2] = 1.0f; l[3] = 0.125f; l[4] = 0.0f; l[31] = -0.5f;
    sh_block_log4 lb;
    float ly[32];
    sh_log4_from_f32(l, &lb, 32);
    sh_log4_to_f32(&lb, ly, 32);
    for (int i = 0; i < 32; i++) CHECK_NEAR(ly[i], l[i], 0);
    CHECK(sh_qblock_unpack(SH_LOG4, &lb, u, &d, &m) == 64);
    CHECK(u[0] == 128 && u[1] == 32 && u[4] == 64 && d == 8.0f / 64);
    /* unpack agrees with to_f32 for every grouped format */
    sh_format fs[] = {SH_Q4_0, SH_Q4_1, SH_Q8_0, SH_Q3_0, SH_Q2_1, SH_LOG4};
    for (int k = 0; k < 6; k++) {
        float v[32], w[32];
        unsigned char blk[64];
        for (int i = 0; i < 32; i++) v[i] = frand() * 3.0f + 0.25f;
        sh_format_get(fs[k])->from_f32(v, blk, 32);
        sh_format_get(fs[k])->to_f32(blk, w, 32);
        int off = sh_qblock_unpack(fs[k], blk, u, &d, &m);
        for (int i = 0; i < 32; i++)
            CHECK_NEAR(d * (float)(u[i] - off) + m, w[i], 1e-6 * fabs(w[i]) + 1e-7);
    }
}

TEST(qformat_q8_sums_and_nan)
{
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = frand();
    sh_block_q8_0 b[2];
    int32_t s[2];
    sh_quantize_q8_0_sums(x, b, s, 64);
    for (int k = 0; k < 2; k++) {
        int32_t t = 0;
        for (int i = 0; i < 32; i++) t += b[k].qs[i];
        CHECK(t == s[k]);
    }
    /* NaN and inf inputs do not crash and give finite codes */
    x[3] = NAN;
    x[40] = INFINITY;
    sh_block_q4_0 q[2];
    sh_q4_0_from_f32(x, q, 64);
    float y[64];
    sh_q4_0_to_f32(q, y, 64);
    CHECK(y[3] == y[3]);
    CHECK(y[0] == y[0] && isfinite(y[0]));
}

TEST(qformat_int8_per_channel)
{
    int rows = 5, cols = 37;
    float x[5 * 37], y[5 * 37], sc[5];
    int8_t q[5 * 37];
    uint8_t uq[5 * 37];
    int32_t zp[5];
    for (int i = 0; i < rows * cols; i++) x[i] = i / cols == 3 ? fabsf(frand()) * 4.0f + 0.5f : frand() * (float)(1 + i / cols);
    sh_quantize_i8_rows(x, rows, cols, q, sc);
    sh_dequantize_i8_rows(q, rows, cols, sc, NULL, y);
    for (int i = 0; i < rows * cols; i++) CHECK_NEAR(y[i], x[i], 0.5 * sc[i / cols] * (1 + 1e-5));
    sh_quantize_u8_rows(x, rows, cols, uq, sc, zp);
    sh_dequantize_u8_rows(uq, rows, cols, sc, zp, y);
    for (int i = 0; i < rows * cols; i++) CHECK_NEAR(y[i], x[i], 0.5 * sc[i / cols] * (1 + 1e-4) + 1e-6);
    for (int r = 0; r < rows; r++) CHECK(zp[r] >= 0 && zp[r] <= 255);
    CHECK(zp[3] == 0); /* row 3 is all positive: zero point at the bottom */
}

TEST(cpu_features_and_level)
{
    int f = sh_cpu_features();
    char names[256] = "";
    for (int i = 0; i < SH_CPU_FEATURE_COUNT; i++)
        if (f & (1 << i)) { strcat(names, " "); strcat(names, sh_cpu_feature_name(i)); }
    fprintf(stderr, "    cpu:%s; level %s\n", names, sh_cpu_level_name(sh_cpu_level()));
    CHECK(sh_cpu_feature_name(SH_CPU_FEATURE_COUNT) == NULL);
    if (f & SH_CPU_AVX512VNNI) CHECK(f & SH_CPU_AVX512F);
    int best = sh_cpu_level();
    const int need512 = SH_CPU_AVX2 | SH_CPU_FMA | SH_CPU_F16C | SH_CPU_AVX512F | SH_CPU_AVX512BW |
                        SH_CPU_AVX512VL | SH_CPU_AVX512VNNI;
    CHECK((best == SH_CPU_LEVEL_AVX512) == ((f & need512) == need512)); /* cpuid and libgcc agree */
    setenv("SHRINK_CPU", "ref", 1);
    CHECK(sh_cpu_level() == SH_CPU_REF);
    setenv("SHRINK_CPU", "avx2", 1);
    CHECK(sh_cpu_level() == (best < SH_CPU_LEVEL_AVX2 ? best : SH_CPU_LEVEL_AVX2));
    setenv("SHRINK_CPU", "avx512", 1);
    CHECK(sh_cpu_level() == best);
    unsetenv("SHRINK_CPU");
    CHECK(sh_cpu_level() == best);
    CHECK(strcmp(sh_cpu_level_name(SH_CPU_LEVEL_AVX512), "avx512") == 0);
}

/* ---- per-channel / per-tensor rows (q4_0_ch ... log4_t) ----------------- */

/* allowed |x - q(x)| for base format b with scale d, min m, over a row /
 * tensor whose minimum is lo */
static double row_bound(sh_format b, float d, float m, float lo, float x)
{
    d = fabsf(d);
    switch (b) {
    case SH_Q4_0: case SH_Q3_0: {
        int half = b == SH_Q4_0 ? 8 : 4;
        if (fabsf(x) > (half - 0.5f) * d) return fmax(d, fabsf(x) - (half - 1) * d) * (1 + 1e-5);
        return 0.5 * d * (1 + 1e-5) + 1e-30;
    }
    case SH_Q8_0: return fmax(0.5 * d, fabs(x) - 127 * d) * (1 + 1e-5) + 1e-30;
    case SH_Q4_1: case SH_Q2_1: return 0.5 * d * (1 + 1e-5) + fabs(m - lo) + 1e-6 * fabsf(x);
    default: { /* log4: the nearest power of two of d (or 0) */
        double bb = fabs(x) / 3.0 > d / 128.0 ? fabs(x) / 3.0 : d / 128.0;
        return bb * (1 + 1e-5) + 1e-6 * d;
    }
    }
}

static void qrows_case(sh_format f, int64_t R, int64_t K)
{
    int pt;
    int b = sh_qrows_base(f, &pt);
    CHECK(b >= 0);
    const sh_format_traits *ft = sh_format_get(f);
    CHECK(ft && ft->packed && ft->is_quantized && ft->to_f32 && !ft->from_f32);
    float *w = malloc(sizeof(float) * (size_t)(R * K)), *y = malloc(sizeof(float) * (size_t)(R * K));
    for (int64_t r = 0; r < R; r++) {
        float mag = powf(10.0f, (float)(r % 5) - 2.0f); /* rows of 1e-2 .. 1e2 */
        for (int64_t k = 0; k < K; k++) w[r * K + k] = frand() * mag + (r % 3 == 1 ? 0.4f * mag : 0.0f);
    }
    w[0] = 0.0f;
    sh_error err = {0};
    sh_tensor *t = NULL;
    CHECK_OK(sh_qrows_quantize(f, w, R, K, &t, &err), &err);
    if (!t) { free(w); free(y); return; }
    CHECK(t->fmt == f && t->ndim == 2 && t->shape[0] == R && t->shape[1] == K);
    /* exact bytes: header 64, f32 scales (and mins) 64-aligned, codes */
    int asym = b == SH_Q4_1 || b == SH_Q2_1, bits = b == SH_Q8_0 ? 8 : b == SH_Q3_0 ? 3 : b == SH_Q2_1 ? 2 : 4;
    int64_t ns = pt ? 1 : R, sb = (64 + ns * 4 * (asym ? 2 : 1) + 63) / 64 * 64;
    CHECK(t->nbytes == (size_t)(sb + R * K * bits / 8));
    CHECK(sh_qrows_bytes(f, R, K) == t->nbytes);
    CHECK_OK(sh_qrows_validate(t->data, t->nbytes, &err), &err);
    CHECK_OK(sh_qtensor_to_f32(t, y, &err), &err);
    float lo_t = INFINITY;
    for (int64_t i = 0; i < R * K; i++) lo_t = fminf(lo_t, w[i]);
    int bad = 0;
    for (int64_t r = 0; r < R; r++) {
        float m, d = sh_qrows_scale(t->data, r, &m), lo = INFINITY;
        for (int64_t k = 0; k < K; k++) lo = fminf(lo, w[r * K + k]);
        if (pt) lo = lo_t;
        for (int64_t k = 0; k < K; k++) {
            float x = w[r * K + k];
            double e = fabs((double)x - y[r * K + k]), bd = row_bound((sh_format)b, d, m, lo, x);
            if (!(e <= bd) && bad++ < 3)
                sh_test_fail(__FILE__, __LINE__, "%s [%lld,%lld]: w[%lld,%lld] = %.9g -> %.9g, err %.3g > %.3g", ft->name,
                             (long long)R, (long long)K, (long long)r, (long long)k, x, y[r * K + k], e, bd);
        }
    }
    /* the first n values only (format-table contract) */
    float part[40];
    ft->to_f32(t->data, part, 37);
    for (int i = 0; i < 37 && i < R * K; i++) CHECK(part[i] == y[i]);
    /* the same scale / codes rebuild the same bytes; wrap of a copy */
    void *cp = malloc(t->nbytes);
    memcpy(cp, t->data, t->nbytes);
    sh_tensor *t2 = NULL;
    CHECK_OK(sh_qrows_wrap(cp, t->nbytes, 1, &t2, &err), &err);
    if (t2) {
        CHECK(t2->fmt == f && t2->shape[0] == R && t2->shape[1] == K && memcmp(t2->data, t->data, t->nbytes) == 0);
        sh_tensor_free(t2);
    }
    sh_tensor *tc = sh_tensor_clone(t, &err);
    CHECK(tc && tc->nbytes == t->nbytes && memcmp(tc->data, t->data, t->nbytes) == 0);
    sh_tensor_free(tc);
    sh_tensor_free(t);
    free(w);
    free(y);
}

TEST(qformat_rows_roundtrip)
{
    sh_format base[] = {SH_Q4_0, SH_Q4_1, SH_Q8_0, SH_Q3_0, SH_Q2_1, SH_LOG4};
    const char *nm[] = {"q4_0", "q4_1", "q8_0", "q3_0", "q2_1", "log4"};
    int64_t shapes[][2] = {{1, 32}, {5, 64}, {17, 96}, {3, 512}};
    for (int i = 0; i < 6; i++)
        for (int pt = 0; pt < 2; pt++) {
            sh_format f = (sh_format)sh_qrows_format(base[i], pt);
            char name[16];
            snprintf(name, sizeof name, "%s_%s", nm[i], pt ? "t" : "ch");
            CHECK(sh_format_from_name(name) == (int)f);
            CHECK(sh_qrows_base(f, NULL) == (int)base[i]);
            CHECK(sh_qbase_format(f, NULL) < 0 && !sh_format_is_grouped(f) && sh_format_bytes(f, 64) == 0);
            for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) qrows_case(f, shapes[s][0], shapes[s][1]);
        }
    CHECK(sh_qrows_format(SH_F32, 0) == -1 && sh_qrows_base(SH_Q4_0, NULL) == -1);
}

/* bytes really shrink: a 4096 x 4096 weight */
TEST(qformat_rows_bytes_4096)
{
    int64_t n = 4096;
    CHECK(sh_qrows_bytes(SH_Q4_0_CH, n, n) == (size_t)(64 + 16384 + 8 * 1024 * 1024)); /* 8 MiB + 16 KiB f32 scales */
    CHECK(sh_qrows_bytes(SH_Q4_0_T, n, n) == (size_t)(128 + 8 * 1024 * 1024));
    CHECK(sh_qrows_bytes(SH_Q4_1_CH, n, n) == (size_t)(64 + 32768 + 8 * 1024 * 1024));
    CHECK(sh_qrows_bytes(SH_Q8_0_CH, n, n) == (size_t)(64 + 16384 + 16 * 1024 * 1024));
    CHECK(sh_qrows_bytes(SH_Q3_0_CH, n, n) == (size_t)(64 + 16384 + 6 * 1024 * 1024));
    CHECK(sh_qrows_bytes(SH_Q2_1_CH, n, n) == (size_t)(64 + 32768 + 4 * 1024 * 1024));
    CHECK(sh_qrows_bytes(SH_LOG4_T, n, n) == (size_t)(128 + 8 * 1024 * 1024));
    /* against group 32 (4.5 bits) and the g128 row (4.125 bits) */
    CHECK(sh_format_bytes(SH_Q4_0, n * n) == (size_t)(n * n / 32 * 18));
    CHECK(sh_format_bytes(SH_Q4_0_G128, n * n) == (size_t)(n * n / 128 * 66));
    CHECK(sh_qrows_bytes(SH_Q4_0_CH, n, 33) == 0 && sh_qrows_bytes(SH_Q4_0, n, n) == 0);
}

/* known values: codes, f32 scales kept exactly, log4 powers of two */
TEST(qformat_rows_known_values)
{
    float w[2 * 32];
    for (int i = 0; i < 32; i++) w[i] = (float)(i - 16) * 0.1f, w[32 + i] = (float)(i % 4) * 0.3f;
    sh_qparams p[2] = {{-0.2f, 0.0f}, {0.1f, 0.0f}};
    uint8_t u[64];
    for (int i = 0; i < 64; i++) sh_qvalue(SH_Q4_0, &p[i / 32], w[i], &u[i]);
    sh_tensor *t = NULL;
    sh_error err = {0};
    CHECK_OK(sh_qrows_pack(SH_Q4_0_CH, 2, 32, p, u, &t, &err), &err);
    if (!t) return;
    float m;
    CHECK(sh_qrows_scale(t->data, 0, &m) == -0.2f && m == 0.0f && sh_qrows_scale(t->data, 1, NULL) == 0.1f);
    /* row 1, value 0 = 0 -> u 8; value 16 -> 0 -> u 8; nibble layout as q4_0 */
    CHECK(sh_qrows_codes(t->data, 1)[0] == 0x88);
    float y[64];
    sh_qtensor_to_f32(t, y, &err);
    for (int i = 0; i < 64; i++) {
        uint8_t uu;
        CHECK(y[i] == sh_qvalue(SH_Q4_0, &p[i / 32], w[i], &uu)); /* exactly d * q in f32 */
    }
    sh_tensor_free(t);
    float l[32] = {0};
    l[0] = 8.0f, l[1] = -4.0f, l[2] = 1.0f, l[3] = 0.125f, l[31] = -0.5f;
    CHECK_OK(sh_qrows_quantize(SH_LOG4_T, l, 1, 32, &t, &err), &err);
    if (!t) return;
    sh_qtensor_to_f32(t, y, &err);
    for (int i = 0; i < 32; i++) CHECK(y[i] == l[i]);
    sh_tensor_free(t);
}

TEST(qformat_rows_bad_buffers)
{
    float w[4 * 64];
    for (int i = 0; i < 256; i++) w[i] = frand();
    sh_tensor *t = NULL;
    sh_error err = {0};
    CHECK(sh_qrows_quantize(SH_Q4_0_CH, w, 4, 48, &t, &err) == SH_ESHAPE && !t);
    CHECK(strstr(err.msg, "multiple of 32") != NULL);
    CHECK(sh_qrows_quantize(SH_Q4_0, w, 4, 64, &t, &err) == SH_EINVAL);
    CHECK_OK(sh_qrows_quantize(SH_Q2_1_CH, w, 4, 64, &t, &err), &err);
    if (!t) return;
    unsigned char *b = malloc(t->nbytes);
    memcpy(b, t->data, t->nbytes);
    CHECK(sh_qrows_validate(b, t->nbytes - 1, &err) == SH_EFORMAT && strstr(err.msg, "needs"));
    CHECK(sh_qrows_validate(b, 10, &err) == SH_EFORMAT);
    b[0] ^= 1;
    CHECK(sh_qrows_validate(b, t->nbytes, &err) == SH_EFORMAT && strstr(err.msg, "magic"));
    b[0] ^= 1;
    ((sh_qrow_hdr *)b)->rows = 5; /* disagrees with the size */
    CHECK(sh_qrows_validate(b, t->nbytes, &err) == SH_EFORMAT);
    ((sh_qrow_hdr *)b)->rows = 4;
    float nan = NAN;
    memcpy(b + 64, &nan, 4);
    CHECK(sh_qrows_validate(b, t->nbytes, &err) == SH_EFORMAT && strstr(err.msg, "finite"));
    sh_tensor *t2 = NULL;
    CHECK(sh_qrows_wrap(b, t->nbytes, 0, &t2, &err) == SH_EFORMAT && !t2);
    free(b);
    sh_tensor_free(t);
}

/* rows of a _ch / _t tensor sliced out (one group of a grouped Conv) decode
 * to the same values */
TEST(qformat_rows_slice)
{
    float w[6 * 64], y[6 * 64], z[6 * 64];
    for (int i = 0; i < 6 * 64; i++) w[i] = frand() * (1 + i / 64);
    sh_format fs[] = {SH_Q4_1_CH, SH_Q3_0_T};
    for (int k = 0; k < 2; k++) {
        sh_tensor *t = NULL, *s = NULL;
        sh_error err = {0};
        CHECK_OK(sh_qrows_quantize(fs[k], w, 6, 64, &t, &err), &err);
        if (!t) continue;
        sh_qtensor_to_f32(t, y, &err);
        CHECK_OK(sh_qrows_slice(t, 2, 5, &s, &err), &err);
        if (s) {
            CHECK(s->fmt == fs[k] && s->shape[0] == 3 && s->shape[1] == 64 && s->nbytes == sh_qrows_bytes(fs[k], 3, 64));
            CHECK_OK(sh_qrows_validate(s->data, s->nbytes, &err), &err);
            sh_qtensor_to_f32(s, z, &err);
            CHECK(memcmp(z, y + 2 * 64, sizeof(float) * 3 * 64) == 0);
            sh_tensor_free(s);
        }
        CHECK(sh_qrows_slice(t, 4, 7, &s, &err) == SH_ESHAPE && !s);
        sh_tensor_free(t);
    }
}

/* row-by-row decode equals the whole-matrix decode */
TEST(qformat_rows_row_decode)
{
    float w[5 * 96], y[5 * 96], z[96];
    for (int i = 0; i < 5 * 96; i++) w[i] = frand() * (1 + i % 7);
    sh_format fs[] = {SH_Q4_0_CH, SH_Q4_1_CH, SH_Q8_0_CH, SH_Q3_0_CH, SH_Q2_1_CH, SH_LOG4_CH, SH_Q2_1_T, SH_LOG4_T};
    for (int k = 0; k < 8; k++) {
        sh_tensor *t = NULL;
        sh_error err = {0};
        CHECK_OK(sh_qrows_quantize(fs[k], w, 5, 96, &t, &err), &err);
        if (!t) continue;
        sh_qtensor_to_f32(t, y, &err);
        for (int r = 0; r < 5; r++) {
            sh_qrows_row_to_f32(t->data, r, z);
            CHECK(memcmp(z, y + r * 96, sizeof z) == 0);
        }
        sh_tensor_free(t);
    }
}
