/* calibrate.c - activation ranges for static int8 quantization.
 *
 * A collector keeps, per value, the exact min / max and a histogram of |x|
 * (SH_CALIB_BINS bins over [0, R]; positive and negative values counted
 * apart so that signed ranges can be scored).  R is fixed by the first
 * non-zero batch and doubles when a larger |x| arrives: bin pairs merge, so
 * no count is ever re-distributed (TensorRT's calibrator grows its range in
 * the same exact way).  Range methods: minmax, percentile (both tails of the
 * signed values), MSE-optimal symmetric clip for the u8 grid, and TensorRT's
 * KL-divergence threshold.  See include/shrink.h.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "shrink.h"

#define NB SH_CALIB_BINS

typedef struct calib_val {
    double pos[NB], neg[NB];  /* |x| histogram of x > 0 and x < 0 (zeros go to pos[0]) */
    double width;             /* bin width (0: no non-zero sample yet) */
    int64_t zeros_pending;    /* zeros seen before the first non-zero sample */
    int64_t zeros;            /* exact zeros (counted in pos[0] once width is set) */
    float mn, mx;
    int64_t count;
} calib_val;

struct sh_calib {
    int n;
    calib_val *v;
};

int sh_calib_new(int n_values, sh_calib **out, sh_error *err)
{
    *out = NULL;
    if (n_values < 0) return sh_err(err, SH_EINVAL, "calibrate: %d values", n_values);
    sh_calib *c = calloc(1, sizeof *c);
    if (!c) return sh_err(err, SH_ENOMEM, "calibrate: out of memory");
    c->n = n_values;
    c->v = calloc((size_t)(n_values ? n_values : 1), sizeof *c->v);
    if (!c->v) {
        free(c);
        return sh_err(err, SH_ENOMEM, "calibrate: out of memory (%d histograms)", n_values);
    }
    for (int i = 0; i < n_values; i++) {
        c->v[i].mn = FLT_MAX;
        c->v[i].mx = -FLT_MAX;
    }
    *out = c;
    return SH_OK;
}

void sh_calib_free(sh_calib *c)
{
    if (!c) return;
    free(c->v);
    free(c);
}

/* Merge bin pairs: the histogram covers twice the range. */
static void grow(calib_val *v)
{
    for (int b = 0; b < NB / 2; b++) {
        v->pos[b] = v->pos[2 * b] + v->pos[2 * b + 1];
        v->neg[b] = v->neg[2 * b] + v->neg[2 * b + 1];
    }
    memset(v->pos + NB / 2, 0, sizeof(double) * (NB / 2));
    memset(v->neg + NB / 2, 0, sizeof(double) * (NB / 2));
    v->width *= 2.0;
}

int sh_calib_observe(sh_calib *c, int i, const float *x, int64_t n, sh_error *err)
{
    if (!c || i < 0 || i >= c->n) return sh_err(err, SH_EINVAL, "calibrate: value %d out of range", i);
    calib_val *v = &c->v[i];
    float mn = v->mn, mx = v->mx, amax = 0.0f;
    for (int64_t k = 0; k < n; k++) {
        float a = x[k];
        if (!(a == a) || isinf(a))
            return sh_err(err, SH_EINVAL, "calibrate: value %d holds a non-finite number (%g at %lld)", i, a,
                          (long long)k);
        if (a < mn) mn = a;
        if (a > mx) mx = a;
        float b = fabsf(a);
        if (b > amax) amax = b;
    }
    if (n == 0) return SH_OK;
    v->mn = mn;
    v->mx = mx;
    v->count += n;
    for (int64_t k = 0; k < n; k++) v->zeros += x[k] == 0.0f;
    if (amax == 0.0f && v->width == 0.0) {
        v->zeros_pending += n;
        return SH_OK;
    }
    if (v->width == 0.0) {
        v->width = (double)amax / NB;
        v->pos[0] += (double)v->zeros_pending;
        v->zeros_pending = 0;
    }
    while ((double)amax > v->width * NB) grow(v);
    double inv = 1.0 / v->width;
    for (int64_t k = 0; k < n; k++) {
        float a = x[k];
        double b = fabs((double)a) * inv;
        int bin = (int)b;
        if (bin >= NB) bin = NB - 1;
        if (a < 0) v->neg[bin] += 1.0;
        else v->pos[bin] += 1.0;
    }
    return SH_OK;
}

int sh_calib_hist(const sh_calib *c, int i, const double **pos, const double **neg, double *width, float *mn,
                  float *mx, int64_t *count)
{
    if (!c || i < 0 || i >= c->n) return SH_EINVAL;
    const calib_val *v = &c->v[i];
    if (pos) *pos = v->pos;
    if (neg) *neg = v->neg;
    if (width) *width = v->width;
    if (mn) *mn = v->count ? v->mn : 0.0f;
    if (mx) *mx = v->count ? v->mx : 0.0f;
    if (count) *count = v->count;
    return SH_OK;
}

/* ---- range methods ------------------------------------------------------ */

/* Estimated position of the j-th smallest sample (0-based): its bin is
 * known exactly, and inside a bin of c samples the k-th one is placed at
 * (k + 0.5) / c of the bin's width, so the estimate is within one bin. */
static double sample_at(const calib_val *v, double j)
{
    double cum = 0.0, w = v->width, x = v->mx;
    int found = 0;
    /* negative bins from the most negative: bin b covers [-(b+1)w, -bw] */
    for (int b = NB - 1; b >= 0 && !found; b--) {
        double c = v->neg[b];
        if (c > 0 && cum + c > j) {
            x = -(b + 1) * w + (j - cum + 0.5) / c * w;
            found = 1;
        }
        cum += c;
    }
    for (int b = 0; b < NB && !found; b++) {
        double c = v->pos[b];
        if (c > 0 && cum + c > j) {
            x = b * w + (j - cum + 0.5) / c * w;
            found = 1;
        }
        cum += c;
    }
    if (x < v->mn) x = v->mn;
    if (x > v->mx) x = v->mx;
    return x;
}

/* numpy.percentile (linear interpolation between the samples at ranks
 * floor(q (n-1)) and the next) on the histogram's sample estimates. */
static double signed_quantile(const calib_val *v, double q)
{
    double r = q * (double)(v->count - 1), f = floor(r);
    double a = sample_at(v, f);
    if (r == f || f + 1 >= (double)v->count) return a;
    return a + (r - f) * (sample_at(v, f + 1) - a);
}

/* Expected squared error of quantizing the histogram to u8 over [lo, hi]
 * (values at bin centres; clipped values pay their distance to the edge). */
static double hist_mse(const calib_val *v, double lo, double hi)
{
    if (hi - lo <= 0) return INFINITY;
    double s = (hi - lo) / 255.0, inv = 1.0 / s;
    double z = nearbyint(-lo * inv);
    double e = 0.0, w = v->width;
    for (int side = 0; side < 2; side++) {
        const double *h = side ? v->neg : v->pos;
        for (int b = 0; b < NB; b++) {
            if (h[b] == 0) continue;
            double x = (b + 0.5) * w;
            if (side) x = -x;
            if (x < v->mn) x = v->mn;
            if (x > v->mx) x = v->mx;
            double q = nearbyint(x * inv) + z;
            if (q < 0) q = 0;
            if (q > 255) q = 255;
            double d = x - s * (q - z);
            e += h[b] * d * d;
        }
    }
    return e;
}

int sh_calib_entropy_bins(const double *hist, int n, int target)
{
    if (n <= target) return n;
    double total = 0.0;
    for (int b = 0; b < n; b++) total += hist[b];
    if (total <= 0) return n;
    double *p = malloc(sizeof(double) * (size_t)n), *q = malloc(sizeof(double) * (size_t)n);
    if (!p || !q) {
        free(p);
        free(q);
        return n;
    }
    double best = INFINITY;
    int best_i = n;
    double tail = 0.0; /* sum of hist[i..n) */
    for (int b = target; b < n; b++) tail += hist[b];
    for (int i = target; i <= n; i++) {
        if (i > target) tail -= hist[i - 1];
        /* P: the first i bins, outliers folded into bin i-1 */
        for (int b = 0; b < i; b++) p[b] = hist[b];
        p[i - 1] += tail;
        /* Q: hist[0..i) merged into `target` bins (the last takes the
         * remainder), each spread evenly over its non-empty source bins */
        int m = i / target;
        for (int j = 0; j < target; j++) {
            int s = j * m, e = j == target - 1 ? i : s + m;
            double sum = 0.0;
            int nz = 0;
            for (int b = s; b < e; b++) {
                sum += hist[b];
                nz += hist[b] != 0;
            }
            for (int b = s; b < e; b++) q[b] = hist[b] != 0 ? sum / nz : 0.0;
        }
        double ps = 0.0, qs = 0.0;
        for (int b = 0; b < i; b++) {
            ps += p[b];
            qs += q[b];
        }
        double kl = 0.0;
        int inf = 0;
        for (int b = 0; b < i; b++) {
            if (p[b] == 0) continue;
            double pp = p[b] / ps, qq = q[b] / qs;
            if (qq == 0) {
                inf = 1;
                break;
            }
            kl += pp * log(pp / qq);
        }
        if (inf) continue;
        if (kl < best) { /* strict: the first (smallest) i on ties */
            best = kl;
            best_i = i;
        }
    }
    free(p);
    free(q);
    return best_i;
}

int sh_calib_range(const sh_calib *c, int i, int method, double percentile, float *lo, float *hi, sh_error *err)
{
    if (!c || i < 0 || i >= c->n) return sh_err(err, SH_EINVAL, "calibrate: value %d out of range", i);
    const calib_val *v = &c->v[i];
    if (v->count == 0) return sh_err(err, SH_EINVAL, "calibrate: value %d saw no data", i);
    double mn = v->mn < 0 ? v->mn : 0.0, mx = v->mx > 0 ? v->mx : 0.0;
    double a = mn, b = mx;
    if (v->width == 0.0) method = SH_CALIB_MINMAX; /* all zeros */
    switch (method) {
    case SH_CALIB_MINMAX: break;
    case SH_CALIB_PERCENTILE: {
        double p = percentile > 0 ? percentile : 99.99;
        if (p <= 50.0 || p > 100.0)
            return sh_err(err, SH_EINVAL, "calibrate: percentile %g is outside (50, 100]", p);
        a = signed_quantile(v, (100.0 - p) / 100.0);
        b = signed_quantile(v, p / 100.0);
        if (a > 0) a = 0;
        if (b < 0) b = 0;
        if (a < mn) a = mn;
        if (b > mx) b = mx;
        break;
    }
    case SH_CALIB_MSE: {
        double best = INFINITY, bt = mx > -mn ? mx : -mn;
        for (int k = 1; k <= NB; k++) {
            double t = k * v->width;
            double l = mn > -t ? mn : -t, h = mx < t ? mx : t;
            double e = hist_mse(v, l, h);
            if (e < best) {
                best = e;
                bt = t;
            }
            if (t >= mx && t >= -mn) break; /* larger clips change nothing */
        }
        a = mn > -bt ? mn : -bt;
        b = mx < bt ? mx : bt;
        break;
    }
    case SH_CALIB_ENTROPY: {
        double *h = malloc(sizeof(double) * NB);
        if (!h) return sh_err(err, SH_ENOMEM, "calibrate: out of memory");
        for (int k = 0; k < NB; k++) h[k] = v->pos[k] + v->neg[k];
        /* exact zeros (a Relu output's many) are exact in u8 and say nothing
         * about the clip: leave them out of P */
        h[0] -= (double)v->zeros;
        if (h[0] < 0) h[0] = 0;
        /* 128 target bins for signed data (TensorRT's int8); 256 for data
         * that is never negative, whose u8 grid has 256 levels (as
         * pytorch-quantization's unsigned entropy calibration) */
        int bins = sh_calib_entropy_bins(h, NB, v->mn >= 0 ? 256 : 128);
        free(h);
        double t = bins * v->width;
        a = mn > -t ? mn : -t;
        b = mx < t ? mx : t;
        break;
    }
    default:
        return sh_err(err, SH_EINVAL, "calibrate: unknown method %d (minmax, percentile, mse, entropy)", method);
    }
    *lo = (float)a;
    *hi = (float)b;
    return SH_OK;
}

/* ---- running a model over calibration data ------------------------------ */

int sh_calibrate(const sh_graph *g, const sh_quant_opts *o, int n, const char *const *names, sh_calib **out,
                 sh_error *err)
{
    *out = NULL;
    const sh_dataset *d = o->calib;
    if (!d) return sh_err(err, SH_EINVAL, "calibrate: no calibration data (--calib SPEC)");
    if (g->n_inputs != 1)
        return sh_err(err, SH_EUNSUPPORTED, "calibrate: the model has %d inputs (one image or token input needed)",
                      g->n_inputs);
    const sh_value *iv = &g->values[g->inputs[0]];
    int64_t batch = o->batch > 0 ? o->batch : 32;
    int64_t items, shape[SH_MAX_DIMS];
    int ndim;
    sh_format fmt;
    if (d->kind == 1) {
        items = o->calib_samples > 0 ? o->calib_samples : 256;
        if (items > d->n) items = d->n;
        int64_t want[4] = {-1, d->c, d->h, d->w};
        if (iv->ndim != 4)
            return sh_err(err, SH_ESHAPE, "calibrate: images [N,%d,%d,%d] do not fit model input '%s' of rank %d",
                          d->c, d->h, d->w, iv->name, iv->ndim);
        for (int k = 1; k < 4; k++)
            if (iv->shape[k] >= 0 && iv->shape[k] != want[k]) {
                char s1[96];
                return sh_err(err, SH_ESHAPE,
                              "calibrate: calibration images [N,%d,%d,%d] do not fit model input '%s' %s", d->c, d->h,
                              d->w, iv->name, sh_shape_str(iv->ndim, iv->shape, s1, sizeof s1));
            }
        ndim = 4;
        shape[1] = d->c;
        shape[2] = d->h;
        shape[3] = d->w;
        fmt = SH_F32;
    } else if (d->kind == 2) {
        int64_t T = sh_token_len(g, o->seq_len, 64); /* a fixed-shape export: its length */
        items = o->calib_samples > 0 ? o->calib_samples : 32;
        if (items > d->n / T) items = d->n / T;
        if (items < 1)
            return sh_err(err, SH_EINVAL, "calibrate: %lld tokens are fewer than one row of %lld", (long long)d->n,
                          (long long)T);
        if (iv->ndim != 2 || (iv->fmt != SH_I64 && iv->fmt != SH_I32))
            return sh_err(err, SH_ESHAPE, "calibrate: token data do not fit model input '%s' (rank %d, %s)", iv->name,
                          iv->ndim, sh_format_get(iv->fmt)->name);
        ndim = 2;
        shape[1] = T;
        fmt = iv->fmt;
        if (batch > 8) batch = 8;
        if (sh_token_batch(g) > 0) batch = sh_token_batch(g);
    } else {
        return sh_err(err, SH_EINVAL, "calibrate: unknown data set kind %d", d->kind);
    }
    if (items <= 0) return sh_err(err, SH_EINVAL, "calibrate: the calibration set is empty");

    sh_graph *run = sh_graph_clone(g, err);
    if (!run) return err ? err->code : SH_ENOMEM;
    sh_calib *c = NULL;
    sh_program *p = NULL;
    sh_tensor *x = NULL;
    int *vi = NULL;
    int rc = sh_calib_new(n, &c, err);
    if (rc) goto done;
    vi = malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (!vi) {
        rc = sh_err(err, SH_ENOMEM, "calibrate: out of memory");
        goto done;
    }
    for (int k = 0; k < n; k++) {
        vi[k] = sh_graph_find(run, names[k]);
        if (vi[k] < 0) {
            rc = sh_err(err, SH_EINVAL, "calibrate: the model has no value '%s'", names[k]);
            goto done;
        }
    }
    sh_run_opts ro = {0};
    ro.no_optimize = 1;
    ro.keep_values = 1;
    ro.nthreads = o->nthreads;
    if ((rc = sh_program_new(run, &ro, &p, err))) goto done;
    for (int64_t start = 0; start < items; start += batch) {
        int64_t b = items - start < batch ? items - start : batch;
        shape[0] = b;
        sh_tensor_free(x);
        if (!(x = sh_tensor_new(fmt, ndim, shape, err))) {
            rc = err ? err->code : SH_ENOMEM;
            goto done;
        }
        if (d->kind == 1) {
            int64_t per = (int64_t)d->c * d->h * d->w;
            memcpy(x->data, d->x + start * per, sizeof(float) * (size_t)(b * per));
        } else {
            int64_t T = shape[1];
            for (int64_t r = 0; r < b; r++)
                for (int64_t t = 0; t < T; t++) {
                    int32_t tok = d->tokens[(start + r) * T + t];
                    if (fmt == SH_I64) ((int64_t *)x->data)[r * T + t] = tok;
                    else ((int32_t *)x->data)[r * T + t] = tok;
                }
        }
        const sh_tensor *ins[1] = {x};
        if ((rc = sh_program_run(p, ins, 1, err))) {
            sh_error_wrap(err, "calibrate: batch at item %lld", (long long)start);
            goto done;
        }
        for (int k = 0; k < n; k++) {
            sh_tensor *t = sh_program_value(p, names[k]);
            if (!t || !t->data) {
                rc = sh_err(err, SH_EINTERNAL, "calibrate: value '%s' was not kept by the run", names[k]);
                goto done;
            }
            if (t->fmt != SH_F32) {
                rc = sh_err(err, SH_EUNSUPPORTED, "calibrate: value '%s' is %s, not f32", names[k],
                            sh_format_get(t->fmt)->name);
                goto done;
            }
            if ((rc = sh_calib_observe(c, k, t->data, sh_tensor_numel(t), err))) {
                sh_error_wrap(err, "value '%s'", names[k]);
                goto done;
            }
        }
    }
done:
    sh_tensor_free(x);
    sh_program_free(p);
    sh_graph_free(run);
    free(vi);
    if (rc) sh_calib_free(c);
    else *out = c;
    return rc;
}
