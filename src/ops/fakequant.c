/* fakequant.c - FakeQuant(x, scale[, zero_point]) (domain com.shrink): the
 * quantize-dequantize of quantization-aware training.
 *
 *   q = clamp(round_half_even(x / s) + z, qmin, qmax),  y = (q - z) * s
 *
 * s (and z) per tensor (1 element) or per channel (C elements along
 * attribute `axis`, default 0).  Attributes: bits 2..8 (default 8);
 * symmetric (default 1): qmin = -2^(b-1), qmax = 2^(b-1) - 1 (narrow=1:
 * qmin = -(2^(b-1) - 1)), else unsigned [0, 2^b - 1] with zero point z;
 * grad_scale (default 1): factor on the scale's gradient (LSQ uses
 * 1 / sqrt(elements per scale * qmax)).
 *
 * Backward (Esser et al. 2019, LSQ): the straight-through estimator for x
 * (dy passes where qmin <= round(x/s) + z <= qmax, zero outside) and for the scale
 *   dy * (round(x/s) - x/s)   inside,   dy * (qmin - z) below,   dy * (qmax - z) above,
 * summed per scale (PyTorch's _fake_quantize_learnable_per_*_affine with
 * grad_factor = grad_scale).  The zero point takes no gradient.  These are the exact
 * derivatives of y with the rounding residual round(v) - v held constant. */
#include <math.h>
#include <string.h>

#include "ops.h"

typedef struct fq_dims {
    int bits, sym;
    float qmin, qmax;
    int64_t C, outer, inner; /* x viewed as [outer, C, inner] (C = 1: per tensor) */
} fq_dims;

static int fq_params(sh_kctx *k, const sh_tensor *const *in, int n_in, fq_dims *d)
{
    const sh_tensor *x = in[0], *s = in[1], *z = n_in > 2 ? in[2] : NULL;
    char a[96], b[96];
    if (x->fmt != SH_F32 || s->fmt != SH_F32)
        return sh_op_err(k, SH_EUNSUPPORTED, "x and scale must be f32 (x %s, scale %s)", sh_format_get(x->fmt)->name,
                         sh_format_get(s->fmt)->name);
    d->bits = (int)sh_attr_int(k->node, "bits", 8);
    if (d->bits < 2 || d->bits > 8) return sh_op_err(k, SH_EINVAL, "bits %d outside 2-8", d->bits);
    d->sym = (int)sh_attr_int(k->node, "symmetric", 1);
    int narrow = (int)sh_attr_int(k->node, "narrow", 0);
    if (d->sym) {
        d->qmax = (float)((1 << (d->bits - 1)) - 1);
        d->qmin = narrow ? -d->qmax : -(float)(1 << (d->bits - 1));
    } else {
        d->qmin = 0.0f;
        d->qmax = (float)((1 << d->bits) - 1);
    }
    int64_t ns = sh_tensor_numel(s);
    d->C = 1, d->outer = 1, d->inner = sh_tensor_numel(x);
    if (ns != 1) {
        int64_t axis = sh_attr_int(k->node, "axis", 0);
        if (axis < 0) axis += x->ndim;
        if (axis < 0 || axis >= x->ndim || x->shape[axis] != ns)
            return sh_op_err(k, SH_ESHAPE, "scale %s does not match x %s along axis %lld (1 or C scales)",
                             sh_shape_str(s->ndim, s->shape, a, sizeof a), sh_shape_str(x->ndim, x->shape, b, sizeof b),
                             (long long)sh_attr_int(k->node, "axis", 0));
        d->C = ns;
        d->outer = 1, d->inner = 1;
        for (int i = 0; i < axis; i++) d->outer *= x->shape[i];
        for (int i = (int)axis + 1; i < x->ndim; i++) d->inner *= x->shape[i];
    }
    if (z && z->ndim >= 0 && sh_tensor_numel(z) != ns)
        return sh_op_err(k, SH_ESHAPE, "zero point %s, scale %s: need the same count",
                         sh_shape_str(z->ndim, z->shape, a, sizeof a), sh_shape_str(s->ndim, s->shape, b, sizeof b));
    return SH_OK;
}

static int fq_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    fq_dims d;
    int rc = fq_params(k, in, n_in, &d);
    if (rc) return rc;
    sh_tensor_set_shape(out[0], SH_F32, in[0]->ndim, in[0]->shape);
    return SH_OK;
}

static int fq_scale(sh_kctx *k, const sh_tensor *s, int64_t c, float *sc)
{
    float v = ((const float *)s->data)[c];
    if (!(v > 0) || !isfinite(v)) return sh_op_err(k, SH_EINVAL, "scale[%lld] = %g, must be > 0", (long long)c, v);
    *sc = v;
    return SH_OK;
}

static int fq_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    fq_dims d;
    int rc = fq_params(k, in, n_in, &d);
    if (rc) return rc;
    const sh_tensor *zt = n_in > 2 ? in[2] : NULL;
    const float *x = in[0]->data;
    float *y = out[0]->data;
    for (int64_t c = 0; c < d.C; c++) {
        float s = 1.0f, z = zt ? sh_tensor_get_f(zt, c) : 0.0f;
        if ((rc = fq_scale(k, in[1], c, &s))) return rc;
        for (int64_t o = 0; o < d.outer; o++) {
            const float *xr = x + (o * d.C + c) * d.inner;
            float *yr = y + (o * d.C + c) * d.inner;
            for (int64_t i = 0; i < d.inner; i++) {
                float q = nearbyintf(xr[i] / s) + z;
                q = q < d.qmin ? d.qmin : q > d.qmax ? d.qmax : q;
                yr[i] = (q - z) * s;
            }
        }
    }
    return SH_OK;
}

static int fq_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                  const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)out, (void)n_out;
    if (!dout[0]) return SH_OK;
    fq_dims d;
    int rc = fq_params(k, in, n_in, &d);
    if (rc) return rc;
    const sh_tensor *zt = n_in > 2 ? in[2] : NULL;
    const float *x = in[0]->data, *dy = dout[0]->data;
    float *dx = din[0] ? din[0]->data : NULL, *ds = din[1] ? din[1]->data : NULL;
    float gs = sh_attr_float(k->node, "grad_scale", 1.0f);
    for (int64_t c = 0; c < d.C; c++) {
        float s = 1.0f, z = zt ? sh_tensor_get_f(zt, c) : 0.0f;
        if ((rc = fq_scale(k, in[1], c, &s))) return rc;
        double acc = 0;
        for (int64_t o = 0; o < d.outer; o++) {
            const float *xr = x + (o * d.C + c) * d.inner, *g = dy + (o * d.C + c) * d.inner;
            float *dxr = dx ? dx + (o * d.C + c) * d.inner : NULL;
            for (int64_t i = 0; i < d.inner; i++) {
                float v = xr[i] / s, q = nearbyintf(v) + z; /* the mask on the rounded value, as PyTorch */
                if (q < d.qmin) {
                    acc += (double)g[i] * (d.qmin - z);
                } else if (q > d.qmax) {
                    acc += (double)g[i] * (d.qmax - z);
                } else {
                    if (dxr) dxr[i] += g[i];
                    acc += (double)g[i] * (nearbyintf(v) - v);
                }
            }
        }
        if (ds) ds[c] += (float)(acc * gs);
    }
    return SH_OK;
}

/* x (a weight when it is an initializer) and scale are trainable;
 * the zero point is not differentiated */
static const sh_op_def op_fakequant = {"FakeQuant", 2, 3, 1, 1, fq_infer, fq_fwd, fq_bwd, 0x4, 0x3, NULL, 0};

const sh_op_def *const sh_ops_fakequant[] = {&op_fakequant, NULL};
