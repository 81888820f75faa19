/* test_calibrate.c - activation calibration (src/compress/calibrate.c):
 * histogram collection, the four range methods against reference values
 * (tests/gen/gen_calib.py: numpy percentiles, a Python TensorRT-entropy
 * reference), bad input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

static float *load_heavy(int64_t *n)
{
    FILE *f = fopen("tests/data/calib/heavy.f32", "rb");
    if (!f) return NULL;
    float *x = malloc(8192 * sizeof(float));
    *n = (int64_t)fread(x, sizeof(float), 8192, f);
    fclose(f);
    return x;
}

/* value of `key` in expected.txt: up to 3 numbers after it */
static int expected(const char *key, double *v, int nv)
{
    FILE *f = fopen("tests/data/calib/expected.txt", "r");
    if (!f) return 0;
    char line[256];
    int found = 0;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) || line[kl] != ' ') continue;
        char *p = line + kl;
        for (int i = 0; i < nv; i++) v[i] = strtod(p, &p);
        found = 1;
        break;
    }
    fclose(f);
    return found;
}

static void synthetic_hist(double *h, int n)
{
    for (int b = 0; b < n; b++) {
        double v = floor(5000.0 * exp(-b / 90.0)) + ((b % 13 == 0 && b < 1000) ? 3.0 : 0.0);
        if (b >= 1200 && b < 1300) v = 0.0;
        if (b == 1500 || b == 1777 || b == 2040) v = 2.0;
        h[b] = v;
    }
}

/* u8 quantization MSE of x over [lo, hi] (as the int8 pass quantizes) */
static double quant_mse(const float *x, int64_t n, double lo, double hi)
{
    double s = (hi - lo) / 255.0, z = nearbyint(-lo / s), e = 0;
    for (int64_t i = 0; i < n; i++) {
        double q = nearbyint(x[i] / s) + z;
        q = q < 0 ? 0 : q > 255 ? 255 : q;
        double d = x[i] - s * (q - z);
        e += d * d;
    }
    return e / (double)n;
}

TEST(calib_minmax_exact_over_batches)
{
    sh_error err = {0};
    sh_calib *c = NULL;
    CHECK_OK(sh_calib_new(2, &c, &err), &err);
    float a[4] = {0.5f, 1.0f, 0.25f, 0.0f}, b[3] = {-0.125f, 7.75f, 2.0f};
    CHECK_OK(sh_calib_observe(c, 0, a, 4, &err), &err);
    CHECK_OK(sh_calib_observe(c, 0, b, 3, &err), &err); /* grows the range 8x */
    float lo, hi;
    CHECK_OK(sh_calib_range(c, 0, SH_CALIB_MINMAX, 0, &lo, &hi, &err), &err);
    CHECK(lo == -0.125f && hi == 7.75f);
    const double *pos, *neg;
    double w;
    float mn, mx;
    int64_t cnt;
    CHECK(sh_calib_hist(c, 0, &pos, &neg, &w, &mn, &mx, &cnt) == SH_OK);
    CHECK(cnt == 7 && mn == -0.125f && mx == 7.75f);
    double tp = 0, tn = 0;
    for (int i = 0; i < SH_CALIB_BINS; i++) tp += pos[i], tn += neg[i];
    CHECK(tp == 6 && tn == 1);
    CHECK(w * SH_CALIB_BINS >= 7.75 && w * SH_CALIB_BINS < 2 * 7.75); /* doubled from 1.0 to 8.0 */
    CHECK_NEAR(w * SH_CALIB_BINS, 8.0, 1e-9);
    /* every sample sits in the bin of its |x| */
    CHECK(pos[(int)(7.75 / w)] >= 1 && neg[(int)(0.125 / w)] == 1);
    /* non-negative data: the range starts at 0; a value that saw only zeros */
    float z[3] = {0, 0, 0};
    CHECK_OK(sh_calib_observe(c, 1, z, 3, &err), &err);
    for (int m = 0; m < 4; m++) {
        CHECK_OK(sh_calib_range(c, 1, m, 99.9, &lo, &hi, &err), &err);
        CHECK(lo == 0 && hi == 0);
    }
    sh_calib_free(c);
}

TEST(calib_percentile_matches_numpy)
{
    int64_t n = 0;
    float *x = load_heavy(&n);
    if (!x) SKIP("tests/data/calib/heavy.f32 missing (run tests/gen/gen_calib.py)");
    CHECK(n == 8192);
    sh_error err = {0};
    sh_calib *c = NULL;
    CHECK_OK(sh_calib_new(1, &c, &err), &err);
    for (int64_t i = 0; i < n; i += 1000) /* several batches: the range grows */
        CHECK_OK(sh_calib_observe(c, 0, x + i, n - i < 1000 ? n - i : 1000, &err), &err);
    double w;
    sh_calib_hist(c, 0, NULL, NULL, &w, NULL, NULL, NULL);
    const double ps[3] = {99.0, 99.9, 99.99};
    const char *keys[3] = {"percentile 99.00", "percentile 99.90", "percentile 99.99"};
    for (int i = 0; i < 3; i++) {
        double e[2];
        CHECK(expected(keys[i], e, 2));
        float lo, hi;
        CHECK_OK(sh_calib_range(c, 0, SH_CALIB_PERCENTILE, ps[i], &lo, &hi, &err), &err);
        /* histogram percentiles: within one bin of numpy's */
        CHECK_NEAR(lo, e[0], w);
        CHECK_NEAR(hi, e[1], w);
    }
    double mn[1], mx[1];
    CHECK(expected("min", mn, 1) && expected("max", mx, 1));
    float lo, hi;
    CHECK_OK(sh_calib_range(c, 0, SH_CALIB_MINMAX, 0, &lo, &hi, &err), &err);
    CHECK(lo == (float)mn[0] && hi == (float)mx[0]);
    sh_calib_free(c);
    free(x);
}

TEST(calib_entropy_matches_python_reference)
{
    double e[2];
    if (!expected("entropy_bins", e, 2)) SKIP("tests/data/calib/expected.txt missing");
    double h[SH_CALIB_BINS];
    synthetic_hist(h, SH_CALIB_BINS);
    int bins = sh_calib_entropy_bins(h, SH_CALIB_BINS, 128);
    CHECK_MSG(bins == (int)e[0], "entropy threshold bin %d, reference %d", bins, (int)e[0]);
    CHECK(expected("entropy_bins_256", e, 2));
    CHECK(sh_calib_entropy_bins(h, SH_CALIB_BINS, 256) == (int)e[0]);
    double flat[300];
    for (int i = 0; i < 300; i++) flat[i] = 1;
    CHECK(expected("entropy_bins_flat300", e, 2));
    CHECK(sh_calib_entropy_bins(flat, 300, 128) == (int)e[0]);
    /* fewer bins than the target: the whole range */
    CHECK(sh_calib_entropy_bins(flat, 100, 128) == 100);

    /* through a collector: threshold = bins * width, clipped to the data */
    int64_t n = 0;
    float *x = load_heavy(&n);
    if (!x) SKIP("heavy.f32 missing");
    sh_error err = {0};
    sh_calib *c = NULL;
    CHECK_OK(sh_calib_new(1, &c, &err), &err);
    CHECK_OK(sh_calib_observe(c, 0, x, n, &err), &err);
    const double *pos, *neg;
    double w;
    sh_calib_hist(c, 0, &pos, &neg, &w, NULL, NULL, NULL);
    for (int i = 0; i < SH_CALIB_BINS; i++) h[i] = pos[i] + neg[i];
    int b = sh_calib_entropy_bins(h, SH_CALIB_BINS, 128);
    float lo, hi;
    CHECK_OK(sh_calib_range(c, 0, SH_CALIB_ENTROPY, 0, &lo, &hi, &err), &err);
    CHECK_NEAR(hi, fmin(b * w, 13.5729637), 1e-5);
    CHECK_NEAR(lo, fmax(-b * w, -9.24058533), 1e-5);
    CHECK(hi < 13.5); /* the heavy tail is clipped */
    sh_calib_free(c);
    free(x);
}

TEST(calib_mse_beats_minmax_and_brute_force)
{
    int64_t n = 0;
    float *x = load_heavy(&n);
    if (!x) SKIP("heavy.f32 missing");
    sh_error err = {0};
    sh_calib *c = NULL;
    CHECK_OK(sh_calib_new(1, &c, &err), &err);
    CHECK_OK(sh_calib_observe(c, 0, x, n, &err), &err);
    double w;
    float mn, mx;
    sh_calib_hist(c, 0, NULL, NULL, &w, &mn, &mx, NULL);
    float lo, hi, l0, h0;
    CHECK_OK(sh_calib_range(c, 0, SH_CALIB_MSE, 0, &lo, &hi, &err), &err);
    CHECK_OK(sh_calib_range(c, 0, SH_CALIB_MINMAX, 0, &l0, &h0, &err), &err);
    double e_mse = quant_mse(x, n, lo, hi), e_mm = quant_mse(x, n, l0, h0);
    CHECK_MSG(e_mse < e_mm, "mse clip %g..%g: %g, minmax: %g", lo, hi, e_mse, e_mm);
    /* brute force over every symmetric clip at a bin edge, on the data */
    double best = INFINITY, bt = 0;
    for (int k = 1; k <= SH_CALIB_BINS; k++) {
        double t = k * w, l = fmax(mn, -t), h = fmin(mx, t);
        double e = quant_mse(x, n, l, h);
        if (e < best) best = e, bt = t;
    }
    double t = fmax(hi, -lo);
    CHECK_MSG(fabs(t - bt) <= w + 1e-9 || e_mse <= best * 1.02, "clip %g vs brute force %g (bin %g): %g vs %g", t,
              bt, w, e_mse, best);
    sh_calib_free(c);
    free(x);
}

TEST(calib_bad_input)
{
    sh_error err = {0};
    sh_calib *c = NULL;
    CHECK_OK(sh_calib_new(1, &c, &err), &err);
    float lo, hi;
    CHECK(sh_calib_range(c, 0, SH_CALIB_MINMAX, 0, &lo, &hi, &err) == SH_EINVAL); /* no data */
    float bad[2] = {1.0f, NAN};
    CHECK(sh_calib_observe(c, 0, bad, 2, &err) == SH_EINVAL);
    CHECK(strstr(err.msg, "non-finite") != NULL);
    CHECK(sh_calib_observe(c, 1, bad, 1, &err) == SH_EINVAL);
    float ok[2] = {1.0f, -2.0f};
    CHECK_OK(sh_calib_observe(c, 0, ok, 2, &err), &err);
    CHECK(sh_calib_range(c, 0, SH_CALIB_PERCENTILE, 20.0, &lo, &hi, &err) == SH_EINVAL);
    CHECK(sh_calib_range(c, 0, 9, 0, &lo, &hi, &err) == SH_EINVAL);
    sh_calib_free(c);

    /* calibration images of the wrong shape for the model */
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("lenet5", 1, &g, &err), &err);
    sh_dataset d = {0};
    d.kind = 1;
    d.n = 4;
    d.c = 1, d.h = 32, d.w = 32;
    d.x = calloc(4 * 32 * 32, sizeof(float));
    sh_quant_opts o = {.calib = &d};
    const char *names[1] = {"c1"};
    sh_calib *cc = NULL;
    CHECK(sh_calibrate(g, &o, 1, names, &cc, &err) == SH_ESHAPE);
    CHECK(strstr(err.msg, "[N,1,32,32]") && strstr(err.msg, "input"));
    CHECK(cc == NULL);
    free(d.x);
    sh_graph_free(g);
}

TEST(calib_runs_model_values)
{
    /* lenet5 on synthetic images: the input range is the images' range and
     * relu outputs are non-negative */
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("lenet5", 3, &g, &err), &err);
    sh_dataset d = {0};
    d.kind = 1;
    d.n = 40;
    d.c = 1, d.h = 28, d.w = 28;
    d.x = malloc(40 * 784 * sizeof(float));
    uint64_t s = 7;
    for (int i = 0; i < 40 * 784; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        d.x[i] = (float)((s >> 40) & 0xffff) / 65535.0f * 0.9f + 0.05f;
    }
    d.x[5] = 0.0f;
    d.x[77] = 1.0f;
    sh_quant_opts o = {.calib = &d, .calib_samples = 33, .batch = 8};
    const char *names[3] = {"input", "r1", "logits"};
    sh_calib *c = NULL;
    CHECK_OK(sh_calibrate(g, &o, 3, names, &c, &err), &err);
    float lo, hi, mn, mx;
    int64_t cnt;
    CHECK_OK(sh_calib_range(c, 0, SH_CALIB_MINMAX, 0, &lo, &hi, &err), &err);
    CHECK(lo == 0.0f && hi == 1.0f);
    sh_calib_hist(c, 0, NULL, NULL, NULL, NULL, NULL, &cnt);
    CHECK(cnt == 33 * 784);
    sh_calib_hist(c, 1, NULL, NULL, NULL, &mn, &mx, &cnt);
    CHECK(mn == 0.0f && mx > 0.0f && cnt == 33 * 6 * 28 * 28);
    sh_calib_hist(c, 2, NULL, NULL, NULL, &mn, &mx, &cnt);
    CHECK(cnt == 33 * 10 && mn < mx);
    sh_calib_free(c);
    /* a name the model does not have */
    const char *bad[1] = {"nope"};
    CHECK(sh_calibrate(g, &o, 1, bad, &c, &err) == SH_EINVAL && strstr(err.msg, "nope"));
    free(d.x);
    sh_graph_free(g);
}
