/* norm.c - BatchNormalization (inference and training with batch statistics;
 * running statistics updated in place) and LayerNormalization. */
#include <math.h>
#include <string.h>

#include "nn_ops.h"

static const char *shs(const sh_tensor *t, char *b, size_t n) { return sh_shape_str(t->ndim, t->shape, b, n); }

/* ---- BatchNormalization --------------------------------------------- */

static int bn_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    char b1[96], b2[96];
    const sh_tensor *x = in[0];
    if (x->ndim < 2) return sh_op_err(k, SH_ESHAPE, "input %s: expected at least N,C", shs(x, b1, sizeof b1));
    for (int i = 0; i < 5; i++)
        if (in[i]->fmt != SH_F32) return sh_op_err(k, SH_EUNSUPPORTED, "input %d is %s, expected f32", i, sh_format_get(in[i]->fmt)->name);
    int64_t C = x->shape[1];
    static const char *nm[5] = {"", "scale", "bias", "mean", "var"};
    for (int i = 1; i < 5; i++)
        if (sh_tensor_numel(in[i]) != C || in[i]->ndim != 1)
            return sh_op_err(k, SH_ESHAPE, "input %s has %lld channels, %s is %s", shs(x, b1, sizeof b1), (long long)C,
                             nm[i], shs(in[i], b2, sizeof b2));
    sh_tensor_set_shape(out[0], SH_F32, x->ndim, x->shape);
    for (int j = 1; j < n_out; j++) {
        if (!out[j]) continue;
        if (j > 2)
            return sh_op_err(k, SH_EUNSUPPORTED, "%d outputs: only Y, running_mean, running_var are supported", n_out);
        sh_tensor_set_shape(out[j], SH_F32, 1, &C);
    }
    return SH_OK;
}

static int bn_uses_batch(const sh_kctx *k) { return k->training || sh_attr_int(k->node, "training_mode", 0) != 0; }

/* Per-channel batch mean and biased variance (double accumulation). */
static void bn_batch_stats(const float *x, int64_t N, int64_t C, int64_t S, int64_t c, double *mean, double *var)
{
    double s = 0, s2 = 0;
    for (int64_t n = 0; n < N; n++) {
        const float *r = x + (n * C + c) * S;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < S; i++) s += r[i];
    }
    double m = s / (double)(N * S);
    for (int64_t n = 0; n < N; n++) {
        const float *r = x + (n * C + c) * S;
#pragma omp simd reduction(+ : s2)
        for (int64_t i = 0; i < S; i++) {
            double d = r[i] - m;
            s2 += d * d;
        }
    }
    *mean = m;
    *var = s2 / (double)(N * S);
}

static int bn_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    const sh_tensor *x = in[0];
    int64_t N = x->shape[0], C = x->shape[1], S = sh_tensor_numel(x) / (N * C > 0 ? N * C : 1);
    float eps = sh_attr_float(k->node, "epsilon", 1e-5f), mom = sh_attr_float(k->node, "momentum", 0.9f);
    const float *xd = x->data, *sc = in[1]->data, *bi = in[2]->data;
    float *rm = in[3]->data, *rv = in[4]->data; /* updated in place in training mode */
    float *y = out[0]->data;
    int nth = k->nthreads > 0 ? k->nthreads : 1;
    int64_t M = N * S;
    /* batch statistics in a training program, or with training_mode=1 (then
     * the updated running stats go to outputs 1 and 2 only) */
    int batch = bn_uses_batch(k), inplace = k->training;
    float *om = n_out > 1 && out[1] ? out[1]->data : NULL, *ov = n_out > 2 && out[2] ? out[2]->data : NULL;
#pragma omp parallel for num_threads(nth) if (nth > 1 && N * C * S > 1000000) schedule(static)
    for (int64_t c = 0; c < C; c++) {
        double mean, var;
        float nm = rm[c], nv = rv[c];
        if (batch) {
            bn_batch_stats(xd, N, C, S, c, &mean, &var);
            /* running variance: unbiased as PyTorch in shrink's training; the
             * ONNX reference (training_mode=1 outputs) uses the biased one */
            double uv = inplace && M > 1 ? var * (double)M / (double)(M - 1) : var;
            nm = (float)(mom * rm[c] + (1.0 - mom) * mean);
            nv = (float)(mom * rv[c] + (1.0 - mom) * uv);
            if (inplace) rm[c] = nm, rv[c] = nv;
        } else mean = rm[c], var = rv[c];
        if (om) om[c] = nm;
        if (ov) ov[c] = nv;
        float a = (float)(sc[c] / sqrt(var + eps)), b = (float)(bi[c] - mean * a);
        for (int64_t n = 0; n < N; n++) {
            const float *r = xd + (n * C + c) * S;
            float *o = y + (n * C + c) * S;
#pragma omp simd
            for (int64_t i = 0; i < S; i++) o[i] = r[i] * a + b;
        }
    }
    return SH_OK;
}

static int bn_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                  const sh_tensor *const *dout, sh_tensor *const *din)
{
    if (!dout[0]) return SH_OK;
    const sh_tensor *x = in[0];
    int64_t N = x->shape[0], C = x->shape[1], S = sh_tensor_numel(x) / (N * C > 0 ? N * C : 1), M = N * S;
    float eps = sh_attr_float(k->node, "epsilon", 1e-5f);
    const float *xd = x->data, *sc = in[1]->data, *rm = in[3]->data, *rv = in[4]->data, *dy = dout[0]->data;
    float *dx = din[0] ? din[0]->data : NULL, *dsc = din[1] ? din[1]->data : NULL, *db = din[2] ? din[2]->data : NULL;
    int nth = k->nthreads > 0 ? k->nthreads : 1;
    int batch = bn_uses_batch(k);
#pragma omp parallel for num_threads(nth) if (nth > 1 && N * C * S > 1000000) schedule(static)
    for (int64_t c = 0; c < C; c++) {
        double mean, var;
        if (batch) bn_batch_stats(xd, N, C, S, c, &mean, &var);
        else mean = rm[c], var = rv[c];
        double inv = 1.0 / sqrt(var + eps);
        double sdy = 0, sdyx = 0; /* sum dy, sum dy*xhat */
        for (int64_t n = 0; n < N; n++) {
            const float *r = xd + (n * C + c) * S, *g = dy + (n * C + c) * S;
#pragma omp simd reduction(+ : sdy, sdyx)
            for (int64_t i = 0; i < S; i++) {
                sdy += g[i];
                sdyx += g[i] * ((r[i] - mean) * inv);
            }
        }
        if (dsc) dsc[c] += (float)sdyx;
        if (db) db[c] += (float)sdy;
        if (!dx) continue;
        double a = sc[c] * inv;
        if (batch) {
            /* dx = a * (dy - mean(dy) - xhat * mean(dy*xhat)) */
            double mdy = sdy / (double)M, mdyx = sdyx / (double)M;
            for (int64_t n = 0; n < N; n++) {
                const float *r = xd + (n * C + c) * S, *g = dy + (n * C + c) * S;
                float *o = dx + (n * C + c) * S;
#pragma omp simd
                for (int64_t i = 0; i < S; i++) o[i] += (float)(a * (g[i] - mdy - (r[i] - mean) * inv * mdyx));
            }
        } else {
            float af = (float)a;
            for (int64_t n = 0; n < N; n++) {
                const float *g = dy + (n * C + c) * S;
                float *o = dx + (n * C + c) * S;
#pragma omp simd
                for (int64_t i = 0; i < S; i++) o[i] += af * g[i];
            }
        }
    }
    return SH_OK;
}

/* scale, bias trainable; running mean and var take no gradient */
const sh_op_def sh_op_batchnorm = {"BatchNormalization", 5, 5, 1, 3, bn_infer, bn_fwd, bn_bwd, 0x18, 0x6, NULL, 0};

/* ---- LayerNormalization --------------------------------------------- */

typedef struct ln_geom {
    int axis;
    int64_t rows, D;
    int scale_bcast, bias_bcast; /* scale/bias is a single value */
} ln_geom;

static int ln_setup(sh_kctx *k, const sh_tensor *const *in, int n_in, ln_geom *g)
{
    char b1[96], b2[96];
    const sh_tensor *x = in[0], *s = in[1], *b = n_in > 2 ? in[2] : NULL;
    if (x->fmt != SH_F32 || s->fmt != SH_F32 || (b && b->fmt != SH_F32))
        return sh_op_err(k, SH_EUNSUPPORTED, "LayerNormalization needs f32 input, scale and bias");
    int64_t axis = sh_attr_int(k->node, "axis", -1);
    if (axis < 0) axis += x->ndim;
    if (axis < 0 || axis >= x->ndim || x->ndim < 1)
        return sh_op_err(k, SH_EINVAL, "axis %lld out of range for input %s", (long long)sh_attr_int(k->node, "axis", -1),
                         shs(x, b1, sizeof b1));
    g->axis = (int)axis;
    g->D = sh_shape_numel(x->ndim - g->axis, x->shape + g->axis);
    g->rows = g->D ? sh_tensor_numel(x) / g->D : 0;
    int64_t ns = sh_tensor_numel(s), nb = b ? sh_tensor_numel(b) : g->D;
    if ((ns != g->D && ns != 1) || (nb != g->D && nb != 1))
        return sh_op_err(k, SH_ESHAPE, "input %s normalised over axis %d (%lld values): scale %s%s%s does not match",
                         shs(x, b1, sizeof b1), g->axis, (long long)g->D, shs(s, b2, sizeof b2), b ? ", bias " : "",
                         b ? shs(b, b1, sizeof b1) : "");
    g->scale_bcast = ns == 1 && g->D != 1;
    g->bias_bcast = nb == 1 && g->D != 1;
    return SH_OK;
}

static int ln_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    ln_geom g;
    int rc = ln_setup(k, in, n_in, &g);
    if (rc) return rc;
    const sh_tensor *x = in[0];
    sh_tensor_set_shape(out[0], SH_F32, x->ndim, x->shape);
    int64_t s[SH_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) s[i] = i < g.axis ? x->shape[i] : 1;
    for (int j = 1; j < n_out && j < 3; j++)
        if (out[j]) sh_tensor_set_shape(out[j], SH_F32, x->ndim, s);
    return SH_OK;
}

static int ln_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    ln_geom g;
    int rc = ln_setup(k, in, n_in, &g);
    if (rc) return rc;
    float eps = sh_attr_float(k->node, "epsilon", 1e-5f);
    const float *x = in[0]->data, *sc = in[1]->data, *bi = n_in > 2 && in[2] ? in[2]->data : NULL;
    float *y = out[0]->data;
    float *om = n_out > 1 && out[1] ? out[1]->data : NULL, *oi = n_out > 2 && out[2] ? out[2]->data : NULL;
    int64_t D = g.D;
    int nth = k->nthreads > 0 ? k->nthreads : 1;
#pragma omp parallel for num_threads(nth) if (nth > 1 && g.rows * D > 1000000) schedule(static)
    for (int64_t r = 0; r < g.rows; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D;
        double s = 0, s2 = 0;
        for (int64_t i = 0; i < D; i++) s += xr[i];
        double m = s / (double)D;
        for (int64_t i = 0; i < D; i++) {
            double d = xr[i] - m;
            s2 += d * d;
        }
        float inv = (float)(1.0 / sqrt(s2 / (double)D + eps)), mf = (float)m;
#pragma omp simd
        for (int64_t i = 0; i < D; i++) {
            float v = (xr[i] - mf) * inv * sc[g.scale_bcast ? 0 : i];
            yr[i] = bi ? v + bi[g.bias_bcast ? 0 : i] : v;
        }
        if (om) om[r] = mf;
        if (oi) oi[r] = inv;
    }
    return SH_OK;
}

static int ln_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                  const sh_tensor *const *dout, sh_tensor *const *din)
{
    if (!dout[0]) return SH_OK; /* Mean / InvStdDev outputs are treated as non-differentiable */
    ln_geom g;
    int rc = ln_setup(k, in, n_in, &g);
    if (rc) return rc;
    float eps = sh_attr_float(k->node, "epsilon", 1e-5f);
    const float *x = in[0]->data, *sc = in[1]->data, *dy = dout[0]->data;
    float *dx = din[0] ? din[0]->data : NULL, *dsc = din[1] ? din[1]->data : NULL;
    float *db = n_in > 2 && in[2] && din[2] ? din[2]->data : NULL;
    int64_t D = g.D;
    for (int64_t r = 0; r < g.rows; r++) {
        const float *xr = x + r * D, *gr = dy + r * D;
        double s = 0, s2 = 0;
        for (int64_t i = 0; i < D; i++) s += xr[i];
        double m = s / (double)D;
        for (int64_t i = 0; i < D; i++) s2 += (xr[i] - m) * (xr[i] - m);
        double inv = 1.0 / sqrt(s2 / (double)D + eps);
        double sg = 0, sgx = 0; /* sum g, sum g*xhat with g = dy*scale */
        for (int64_t i = 0; i < D; i++) {
            double xh = (xr[i] - m) * inv, gi = (double)gr[i] * sc[g.scale_bcast ? 0 : i];
            sg += gi;
            sgx += gi * xh;
            if (dsc) dsc[g.scale_bcast ? 0 : i] += (float)(gr[i] * xh);
            if (db) db[g.bias_bcast ? 0 : i] += gr[i];
        }
        if (!dx) continue;
        double mg = sg / (double)D, mgx = sgx / (double)D;
        float *o = dx + r * D;
        for (int64_t i = 0; i < D; i++) {
            double xh = (xr[i] - m) * inv, gi = (double)gr[i] * sc[g.scale_bcast ? 0 : i];
            o[i] += (float)(inv * (gi - mg - xh * mgx));
        }
    }
    return SH_OK;
}

const sh_op_def sh_op_layernorm = {"LayerNormalization", 2, 3, 1, 3, ln_infer, ln_fwd, ln_bwd, 0, 0x6, NULL, 0};
