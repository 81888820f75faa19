/* shape.c - Identity, Dropout, Flatten, Reshape, Transpose, Concat, Constant,
 * Pad, Shape, Gather, Unsqueeze, Squeeze, Cast, Slice, Expand, ConstantOfShape,
 * Range.
 *
 * Data movement works on any plain (one element per block) format, so the
 * i64 shape arithmetic PyTorch exports (Shape -> Gather -> Unsqueeze -> Concat
 * -> Reshape) runs and folds at plan time.  Backward is f32 only.  Ops that
 * only reinterpret memory still copy: every output has its own buffer.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

static const char *fmt_name(sh_format f)
{
    const sh_format_traits *t = sh_format_get(f);
    return t ? t->name : "?";
}

/* Bytes per element of a plain format, or an error for block formats. */
static int elem_size(sh_kctx *k, sh_format f, size_t *es)
{
    const sh_format_traits *t = sh_format_get(f);
    if (!t || t->block_elems != 1)
        return sh_op_err(k, SH_EUNSUPPORTED, "format %s is not supported by this op", t ? t->name : "?");
    *es = (size_t)t->block_bytes;
    return SH_OK;
}

static char *shp(const sh_tensor *t, char *buf, size_t n) { return sh_shape_str(t->ndim, t->shape, buf, n); }

static int need_f32_grad(sh_kctx *k, const sh_tensor *t)
{
    if (t->fmt != SH_F32) return sh_op_err(k, SH_EUNSUPPORTED, "backward needs f32, input is %s", fmt_name(t->fmt));
    return SH_OK;
}

/* Refuse output shapes whose element count overflows or is absurd (> 2^40). */
static int check_numel(sh_kctx *k, int nd, const int64_t *shape)
{
    int64_t n = 1;
    char s[200];
    for (int i = 0; i < nd; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && n > ((int64_t)1 << 40) / shape[i]))
            return sh_op_err(k, SH_ESHAPE, "output shape %s is too large or negative", sh_shape_str(nd, shape, s, sizeof s));
        n *= shape[i];
    }
    return SH_OK;
}

static void add_f32(float *restrict dst, const float *restrict src, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

/* Read an int list from a constant input tensor (error if not constant). */
static int const_ints(sh_kctx *k, const sh_tensor *t, const char *what, int64_t *v, int max, int *n)
{
    if (!t->data) return sh_op_err(k, SH_EUNSUPPORTED, "%s input must be a constant (known at plan time)", what);
    if (t->fmt == SH_F32 || t->fmt == SH_F16 || t->fmt == SH_BF16)
        return sh_op_err(k, SH_EINVAL, "%s input has format %s, expected an integer type", what, fmt_name(t->fmt));
    int64_t c = sh_tensor_numel(t);
    if (c > max) return sh_op_err(k, SH_EINVAL, "%s input has %lld values (at most %d)", what, (long long)c, max);
    *n = sh_tensor_read_ints(t, v, max);
    return SH_OK;
}

/* Merge adjacent dims that walk memory contiguously and drop size-1 dims;
 * returns the new rank. */
static int coalesce(int nd, const int64_t *dim, const int64_t *st, int64_t *cd, int64_t *cs)
{
    int m = 0;
    for (int i = 0; i < nd; i++) {
        if (dim[i] == 1) continue;
        if (m > 0 && cs[m - 1] == st[i] * dim[i]) {
            cd[m - 1] *= dim[i];
            cs[m - 1] = st[i];
        } else {
            cd[m] = dim[i];
            cs[m] = st[i];
            m++;
        }
    }
    return m;
}

/* Strided gather: dst (contiguous over dim[]) = src[sum i_d * st[d]]. */
static void copy_strided(void *dst, const void *src, int nd0, const int64_t *dim0, const int64_t *st0, size_t es)
{
    int64_t dim[SH_MAX_DIMS], st[SH_MAX_DIMS];
    if (sh_shape_numel(nd0, dim0) == 0) return;
    int nd = coalesce(nd0, dim0, st0, dim, st);
    if (nd == 0) {
        memcpy(dst, src, es);
        return;
    }
    int64_t n = sh_shape_numel(nd, dim);
    int tiled = nd >= 2 && es == 4 && st[nd - 1] != 1 && st[nd - 2] == 1; /* a 2-D transpose inside */
    int64_t inner = tiled ? dim[nd - 2] * dim[nd - 1] : dim[nd - 1], sin = st[nd - 1], outer = n / inner;
    int last = tiled ? nd - 3 : nd - 2; /* last dim walked by the odometer */
    int64_t idx[SH_MAX_DIMS] = {0}, off = 0;
    char *d = dst;
    const char *s = src;
    for (int64_t o = 0; o < outer; o++) {
        if (tiled) { /* dst[r][c] = src[off + r + c * sin], 8x8 tiles (power-of-two strides thrash larger ones) */
            int64_t R = dim[nd - 2], C = dim[nd - 1];
            const uint32_t *q = (const uint32_t *)s + off;
            uint32_t *w = (uint32_t *)d;
            for (int64_t rb = 0; rb < R; rb += 8)
                for (int64_t cb = 0; cb < C; cb += 8) {
                    int64_t re = rb + 8 < R ? rb + 8 : R, ce = cb + 8 < C ? cb + 8 : C;
                    for (int64_t r = rb; r < re; r++)
                        for (int64_t c = cb; c < ce; c++) w[r * C + c] = q[r + c * sin];
                }
        } else if (sin == 1) memcpy(d, s + off * (int64_t)es, (size_t)inner * es);
        else if (es == 4) {
            const uint32_t *q = (const uint32_t *)(s) + off;
            uint32_t *w = (uint32_t *)d;
            for (int64_t j = 0; j < inner; j++) w[j] = q[j * sin];
        } else if (es == 8) {
            const uint64_t *q = (const uint64_t *)(s) + off;
            uint64_t *w = (uint64_t *)d;
            for (int64_t j = 0; j < inner; j++) w[j] = q[j * sin];
        } else
            for (int64_t j = 0; j < inner; j++) memcpy(d + j * (int64_t)es, s + (off + j * sin) * (int64_t)es, es);
        d += inner * (int64_t)es;
        for (int q = last; q >= 0; q--) {
            off += st[q];
            if (++idx[q] < dim[q]) break;
            off -= st[q] * dim[q];
            idx[q] = 0;
        }
    }
}

/* Strided scatter-add (backward of copy_strided): dsrc[off] += g[i]. */
static void add_strided(float *dsrc, const float *g, int nd, const int64_t *dim, const int64_t *st)
{
    int64_t n = sh_shape_numel(nd, dim);
    if (n == 0) return;
    if (nd == 0) {
        dsrc[0] += g[0];
        return;
    }
    int64_t inner = dim[nd - 1], sin = st[nd - 1], outer = n / inner;
    int64_t idx[SH_MAX_DIMS] = {0}, off = 0;
    for (int64_t o = 0; o < outer; o++) {
        const float *gr = g + o * inner;
        if (sin == 0) {
            float s = 0.0f;
            for (int64_t j = 0; j < inner; j++) s += gr[j];
            dsrc[off] += s;
        } else
            for (int64_t j = 0; j < inner; j++) dsrc[off + j * sin] += gr[j];
        for (int q = nd - 2; q >= 0; q--) {
            off += st[q];
            if (++idx[q] < dim[q]) break;
            off -= st[q] * dim[q];
            idx[q] = 0;
        }
    }
}

static void strides_of(int nd, const int64_t *shape, int64_t *st)
{
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        st[i] = s;
        s *= shape[i];
    }
}

/* ---- copy-through ops: Identity, Flatten, Reshape, Squeeze, Unsqueeze --- */

static int copy_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)k, (void)n_in, (void)n_out;
    size_t n = in[0]->nbytes < out[0]->nbytes ? in[0]->nbytes : out[0]->nbytes;
    if (n && out[0]->data != in[0]->data) memcpy(out[0]->data, in[0]->data, n);
    return SH_OK;
}

static int copy_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                    const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)n_in, (void)out, (void)n_out;
    if (!din[0] || !dout[0]) return SH_OK;
    int rc = need_f32_grad(k, in[0]);
    if (rc) return rc;
    add_f32(din[0]->data, dout[0]->data, sh_tensor_numel(in[0]));
    return SH_OK;
}

static int identity_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)k, (void)n_in, (void)n_out;
    sh_tensor_set_shape(out[0], in[0]->fmt, in[0]->ndim, in[0]->shape);
    return SH_OK;
}

static const sh_op_def op_identity = {"Identity", 1, 1, 1, 1, identity_infer, copy_fwd, copy_bwd, 0, 0, NULL, 0};

static int flatten_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    int r = in[0]->ndim;
    int64_t axis = sh_attr_int(k->node, "axis", 1);
    char s[160];
    if (axis < -r || axis > r)
        return sh_op_err(k, SH_EINVAL, "axis %lld out of range for input %s", (long long)axis, shp(in[0], s, sizeof s));
    if (axis < 0) axis += r;
    int64_t shape[2] = {sh_shape_numel((int)axis, in[0]->shape), sh_shape_numel(r - (int)axis, in[0]->shape + axis)};
    sh_tensor_set_shape(out[0], in[0]->fmt, 2, shape);
    return SH_OK;
}

static const sh_op_def op_flatten = {"Flatten", 1, 1, 1, 1, flatten_infer, copy_fwd, copy_bwd, 0, 0, NULL, 0};

static int reshape_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    int64_t shape[SH_MAX_DIMS + 1];
    int n = 0, rc;
    char s1[160], s2[200];
    if (n_in >= 2 && in[1]) {
        if ((rc = const_ints(k, in[1], "shape", shape, SH_MAX_DIMS + 1, &n))) return rc;
        if (in[1]->ndim != 1) return sh_op_err(k, SH_ESHAPE, "shape input must be 1-D, got %s", shp(in[1], s1, sizeof s1));
    } else {
        const int64_t *v;
        n = sh_attr_ints(k->node, "shape", &v);
        if (n < 0) return sh_op_err(k, SH_EINVAL, "missing shape input");
        if (n > SH_MAX_DIMS + 1) n = SH_MAX_DIMS + 1;
        for (int i = 0; i < n; i++) shape[i] = v[i];
    }
    if (n > SH_MAX_DIMS) return sh_op_err(k, SH_EUNSUPPORTED, "target rank %d (at most %d)", n, SH_MAX_DIMS);
    int allowzero = (int)sh_attr_int(k->node, "allowzero", 0), neg = -1;
    int64_t known = 1, total = sh_tensor_numel(in[0]);
    sh_shape_str(n, shape, s2, sizeof s2);
    for (int i = 0; i < n; i++) {
        if (shape[i] == 0 && !allowzero) {
            if (i >= in[0]->ndim)
                return sh_op_err(k, SH_ESHAPE, "cannot reshape %s to %s: 0 at position %d copies a missing dim",
                                 shp(in[0], s1, sizeof s1), s2, i);
            shape[i] = in[0]->shape[i];
        }
        if (shape[i] == -1) {
            if (neg >= 0)
                return sh_op_err(k, SH_ESHAPE, "cannot reshape %s to %s: more than one -1", shp(in[0], s1, sizeof s1), s2);
            neg = i;
        } else if (shape[i] < 0)
            return sh_op_err(k, SH_ESHAPE, "cannot reshape %s to %s: negative dim", shp(in[0], s1, sizeof s1), s2);
        else {
            if (shape[i] > 0 && known > ((int64_t)1 << 40) / shape[i])
                return sh_op_err(k, SH_ESHAPE, "cannot reshape %s to %s: too many elements", shp(in[0], s1, sizeof s1), s2);
            known *= shape[i];
        }
    }
    if (neg >= 0) {
        if (known == 0 || total % known)
            return sh_op_err(k, SH_ESHAPE, "cannot reshape %s (%lld elements) to %s", shp(in[0], s1, sizeof s1),
                             (long long)total, s2);
        shape[neg] = total / known;
    } else if (known != total)
        return sh_op_err(k, SH_ESHAPE, "cannot reshape %s (%lld elements) to %s (%lld elements)",
                         shp(in[0], s1, sizeof s1), (long long)total, s2, (long long)known);
    sh_tensor_set_shape(out[0], in[0]->fmt, n, shape);
    return SH_OK;
}

static const sh_op_def op_reshape = {"Reshape", 1, 2, 1, 1, reshape_infer, copy_fwd, copy_bwd, 0x2, 0, NULL, 0};

/* Axes of Squeeze / Unsqueeze: input 1 (opset 13+) or attribute; *n = -1 if none. */
static int get_axes(sh_kctx *k, const sh_tensor *const *in, int n_in, int64_t *axes, int *n)
{
    *n = -1;
    if (n_in >= 2 && in[1]) return const_ints(k, in[1], "axes", axes, SH_MAX_DIMS, n);
    const int64_t *v;
    int c = sh_attr_ints(k->node, "axes", &v);
    if (c > SH_MAX_DIMS) return sh_op_err(k, SH_EINVAL, "%d axes (at most %d)", c, SH_MAX_DIMS);
    for (int i = 0; i < c; i++) axes[i] = v[i];
    *n = c;
    return SH_OK;
}

static int squeeze_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    int64_t axes[SH_MAX_DIMS], shape[SH_MAX_DIMS];
    int na, rc, r = in[0]->ndim, drop[SH_MAX_DIMS] = {0}, nd = 0;
    char s[160];
    if ((rc = get_axes(k, in, n_in, axes, &na))) return rc;
    if (na < 0) {
        for (int i = 0; i < r; i++) drop[i] = in[0]->shape[i] == 1;
    } else {
        for (int i = 0; i < na; i++) {
            int64_t a = axes[i];
            if (a < -r || a >= r)
                return sh_op_err(k, SH_EINVAL, "axis %lld out of range for input %s", (long long)a, shp(in[0], s, sizeof s));
            if (a < 0) a += r;
            if (in[0]->shape[a] != 1)
                return sh_op_err(k, SH_ESHAPE, "cannot squeeze axis %lld of input %s (size %lld, not 1)", (long long)a,
                                 shp(in[0], s, sizeof s), (long long)in[0]->shape[a]);
            drop[a] = 1;
        }
    }
    for (int i = 0; i < r; i++)
        if (!drop[i]) shape[nd++] = in[0]->shape[i];
    sh_tensor_set_shape(out[0], in[0]->fmt, nd, shape);
    return SH_OK;
}

static int unsqueeze_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    int64_t axes[SH_MAX_DIMS], shape[SH_MAX_DIMS];
    int na, rc, r = in[0]->ndim, ins[SH_MAX_DIMS] = {0};
    char s[160];
    if ((rc = get_axes(k, in, n_in, axes, &na))) return rc;
    if (na < 0) return sh_op_err(k, SH_EINVAL, "missing axes");
    int ro = r + na;
    if (ro > SH_MAX_DIMS) return sh_op_err(k, SH_EUNSUPPORTED, "output rank %d (at most %d)", ro, SH_MAX_DIMS);
    for (int i = 0; i < na; i++) {
        int64_t a = axes[i];
        if (a < -ro || a >= ro)
            return sh_op_err(k, SH_EINVAL, "axis %lld out of range for output rank %d (input %s)", (long long)a, ro,
                             shp(in[0], s, sizeof s));
        if (a < 0) a += ro;
        if (ins[a]) return sh_op_err(k, SH_EINVAL, "axis %lld repeated", (long long)a);
        ins[a] = 1;
    }
    for (int i = 0, j = 0; i < ro; i++) shape[i] = ins[i] ? 1 : in[0]->shape[j++];
    sh_tensor_set_shape(out[0], in[0]->fmt, ro, shape);
    return SH_OK;
}

static const sh_op_def op_squeeze = {"Squeeze", 1, 2, 1, 1, squeeze_infer, copy_fwd, copy_bwd, 0x2, 0, NULL, 0};
static const sh_op_def op_unsqueeze = {"Unsqueeze", 1, 2, 1, 1, unsqueeze_infer, copy_fwd, copy_bwd, 0x2, 0, NULL, 0};

/* ---- Dropout -------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Whether element i is kept: a counter-based hash of (seed, i), so backward
 * recomputes the same mask from k->seed. */
static inline int drop_keep(uint64_t seed, int64_t i, double ratio)
{
    uint64_t h = mix64(seed ^ mix64((uint64_t)i + 0x9E3779B97F4A7C15ull));
    return (double)(h >> 11) * (1.0 / 9007199254740992.0) >= ratio;
}

static int dropout_params(sh_kctx *k, const sh_tensor *const *in, int n_in, double *ratio, int *train)
{
    *ratio = sh_attr_float(k->node, "ratio", 0.5f);
    if (n_in >= 2 && in[1] && in[1]->data) *ratio = sh_tensor_get_f(in[1], 0);
    *train = k->training;
    if (n_in >= 3 && in[2] && in[2]->data && sh_tensor_get_f(in[2], 0) != 0.0f) *train = 1;
    if (!(*ratio >= 0.0 && *ratio < 1.0))
        return sh_op_err(k, SH_EINVAL, "ratio %g outside [0, 1)", *ratio);
    return SH_OK;
}

static int dropout_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    double ratio;
    int train, rc = dropout_params(k, in, n_in, &ratio, &train);
    if (rc) return rc;
    sh_tensor_set_shape(out[0], in[0]->fmt, in[0]->ndim, in[0]->shape);
    if (n_out > 1 && out[1]) sh_tensor_set_shape(out[1], SH_BOOL, in[0]->ndim, in[0]->shape);
    return SH_OK;
}

static int dropout_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    double ratio;
    int train, rc = dropout_params(k, in, n_in, &ratio, &train);
    if (rc) return rc;
    int64_t n = sh_tensor_numel(in[0]);
    uint8_t *mask = n_out > 1 && out[1] ? out[1]->data : NULL;
    if (!train || ratio == 0.0) {
        copy_fwd(k, in, n_in, out, n_out);
        if (mask) memset(mask, 1, (size_t)n);
        return SH_OK;
    }
    if (in[0]->fmt != SH_F32) return sh_op_err(k, SH_EUNSUPPORTED, "training dropout needs f32, got %s", fmt_name(in[0]->fmt));
    const float *x = in[0]->data;
    float *y = out[0]->data;
    float scale = (float)(1.0 / (1.0 - ratio));
    for (int64_t i = 0; i < n; i++) {
        int keep = drop_keep(k->seed, i, ratio);
        y[i] = keep ? x[i] * scale : 0.0f;
        if (mask) mask[i] = (uint8_t)keep;
    }
    return SH_OK;
}

static int dropout_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                       const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)out, (void)n_out;
    if (!din[0] || !dout[0]) return SH_OK;
    double ratio;
    int train, rc = dropout_params(k, in, n_in, &ratio, &train);
    if (rc || (rc = need_f32_grad(k, in[0]))) return rc;
    int64_t n = sh_tensor_numel(in[0]);
    const float *g = dout[0]->data;
    float *dx = din[0]->data;
    if (!train || ratio == 0.0) {
        add_f32(dx, g, n);
        return SH_OK;
    }
    float scale = (float)(1.0 / (1.0 - ratio));
    for (int64_t i = 0; i < n; i++)
        if (drop_keep(k->seed, i, ratio)) dx[i] += g[i] * scale;
    return SH_OK;
}

static const sh_op_def op_dropout = {"Dropout", 1, 3, 1, 2, dropout_infer, dropout_fwd, dropout_bwd, 0x6, 0, NULL, 0};

/* ---- Transpose --------------------------------------------------------------- */

static int transpose_perm(sh_kctx *k, const sh_tensor *x, int64_t *perm)
{
    const int64_t *v;
    int n = sh_attr_ints(k->node, "perm", &v), r = x->ndim, seen[SH_MAX_DIMS] = {0};
    char s[160];
    if (n < 0) {
        for (int i = 0; i < r; i++) perm[i] = r - 1 - i;
        return SH_OK;
    }
    if (n != r) return sh_op_err(k, SH_EINVAL, "perm has %d entries for input %s", n, shp(x, s, sizeof s));
    for (int i = 0; i < r; i++) {
        int64_t p = v[i] < 0 ? v[i] + r : v[i];
        if (p < 0 || p >= r || seen[p])
            return sh_op_err(k, SH_EINVAL, "perm is not a permutation of 0..%d (input %s)", r - 1, shp(x, s, sizeof s));
        seen[p] = 1;
        perm[i] = p;
    }
    return SH_OK;
}

static int transpose_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    int64_t perm[SH_MAX_DIMS], shape[SH_MAX_DIMS];
    size_t es = 0;
    int rc = transpose_perm(k, in[0], perm);
    if (rc || (rc = elem_size(k, in[0]->fmt, &es))) return rc;
    for (int i = 0; i < in[0]->ndim; i++) shape[i] = in[0]->shape[perm[i]];
    sh_tensor_set_shape(out[0], in[0]->fmt, in[0]->ndim, shape);
    return SH_OK;
}

/* Output dims and the input strides they walk. */
static void transpose_geom(const sh_tensor *x, const int64_t *perm, int64_t *dim, int64_t *st)
{
    int64_t ist[SH_MAX_DIMS];
    strides_of(x->ndim, x->shape, ist);
    for (int i = 0; i < x->ndim; i++) {
        dim[i] = x->shape[perm[i]];
        st[i] = ist[perm[i]];
    }
}

static int transpose_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    int64_t perm[SH_MAX_DIMS], dim[SH_MAX_DIMS], st[SH_MAX_DIMS];
    size_t es = 0;
    int rc = transpose_perm(k, in[0], perm);
    if (rc || (rc = elem_size(k, in[0]->fmt, &es))) return rc;
    transpose_geom(in[0], perm, dim, st);
    copy_strided(out[0]->data, in[0]->data, in[0]->ndim, dim, st, es);
    return SH_OK;
}

static int transpose_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                         const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)n_in, (void)out, (void)n_out;
    if (!din[0] || !dout[0]) return SH_OK;
    int64_t perm[SH_MAX_DIMS], dim[SH_MAX_DIMS], st[SH_MAX_DIMS];
    int rc = transpose_perm(k, in[0], perm);
    if (rc || (rc = need_f32_grad(k, in[0]))) return rc;
    transpose_geom(in[0], perm, dim, st);
    add_strided(din[0]->data, dout[0]->data, in[0]->ndim, dim, st);
    return SH_OK;
}

static const sh_op_def op_transpose = {"Transpose", 1, 1, 1, 1, transpose_infer, transpose_fwd, transpose_bwd, 0, 0, NULL, 0};

/* ---- Concat --------------------------------------------------------------------- */

static int concat_axis(sh_kctx *k, const sh_tensor *x, int *axis)
{
    const sh_attr *a = sh_node_attr(k->node, "axis");
    char s[160];
    if (!a) return sh_op_err(k, SH_EINVAL, "missing attribute 'axis'");
    int64_t v = sh_attr_int(k->node, "axis", 0), r = x->ndim;
    if (v < -r || v >= r) return sh_op_err(k, SH_EINVAL, "axis %lld out of range for input %s", (long long)v, shp(x, s, sizeof s));
    *axis = (int)(v < 0 ? v + r : v);
    return SH_OK;
}

static int concat_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    int axis, rc;
    size_t es = 0;
    char s1[160], s2[160];
    const sh_tensor *x0 = NULL;
    for (int i = 0; i < n_in && !x0; i++) x0 = in[i];
    if (!x0) return sh_op_err(k, SH_EINVAL, "no inputs");
    if ((rc = concat_axis(k, x0, &axis)) || (rc = elem_size(k, x0->fmt, &es))) return rc;
    int64_t shape[SH_MAX_DIMS];
    memcpy(shape, x0->shape, sizeof shape);
    shape[axis] = 0;
    for (int i = 0; i < n_in; i++) {
        const sh_tensor *x = in[i];
        if (!x) continue;
        if (x->fmt != x0->fmt)
            return sh_op_err(k, SH_EINVAL, "input %d has format %s, input 0 has %s", i, fmt_name(x->fmt), fmt_name(x0->fmt));
        int ok = x->ndim == x0->ndim;
        for (int d = 0; ok && d < x->ndim; d++) ok = d == axis || x->shape[d] == x0->shape[d];
        if (!ok)
            return sh_op_err(k, SH_ESHAPE, "input %d shape %s does not match input 0 shape %s except on axis %d", i,
                             shp(x, s1, sizeof s1), shp(x0, s2, sizeof s2), axis);
        shape[axis] += x->shape[axis];
    }
    sh_tensor_set_shape(out[0], x0->fmt, x0->ndim, shape);
    return SH_OK;
}

static int concat_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    int axis, rc;
    size_t es = 0;
    if ((rc = concat_axis(k, out[0], &axis)) || (rc = elem_size(k, out[0]->fmt, &es))) return rc;
    int64_t outer = sh_shape_numel(axis, out[0]->shape);
    int64_t inner = sh_shape_numel(out[0]->ndim - axis - 1, out[0]->shape + axis + 1);
    int64_t orow = out[0]->shape[axis] * inner * (int64_t)es, pos = 0;
    char *y = out[0]->data;
    for (int i = 0; i < n_in; i++) {
        if (!in[i]) continue;
        int64_t row = in[i]->shape[axis] * inner * (int64_t)es;
        const char *x = in[i]->data;
        if (row)
            for (int64_t o = 0; o < outer; o++) memcpy(y + o * orow + pos, x + o * row, (size_t)row);
        pos += row;
    }
    return SH_OK;
}

static int concat_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                      const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)n_out;
    if (!dout[0]) return SH_OK;
    int axis, rc;
    if ((rc = concat_axis(k, out[0], &axis))) return rc;
    int64_t outer = sh_shape_numel(axis, out[0]->shape);
    int64_t inner = sh_shape_numel(out[0]->ndim - axis - 1, out[0]->shape + axis + 1);
    int64_t orow = out[0]->shape[axis] * inner, pos = 0;
    const float *g = dout[0]->data;
    for (int i = 0; i < n_in; i++) {
        if (!in[i]) continue;
        int64_t row = in[i]->shape[axis] * inner;
        if (din[i]) {
            if ((rc = need_f32_grad(k, in[i]))) return rc;
            float *dx = din[i]->data;
            for (int64_t o = 0; o < outer; o++) add_f32(dx + o * row, g + o * orow + pos, row);
        }
        pos += row;
    }
    return SH_OK;
}

static const sh_op_def op_concat = {"Concat", 1, 32, 1, 1, concat_infer, concat_fwd, concat_bwd, 0, 0, NULL, 0};

/* ---- Constant --------------------------------------------------------------------- */

static int constant_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)in, (void)n_in, (void)n_out;
    const sh_attr *a;
    int64_t one = 1;
    if ((a = sh_node_attr(k->node, "value")) && a->type == SH_ATTR_TENSOR && a->t)
        sh_tensor_set_shape(out[0], a->t->fmt, a->t->ndim, a->t->shape);
    else if ((a = sh_node_attr(k->node, "value_float")))
        sh_tensor_set_shape(out[0], SH_F32, 0, NULL);
    else if ((a = sh_node_attr(k->node, "value_int")))
        sh_tensor_set_shape(out[0], SH_I64, 0, NULL);
    else if ((a = sh_node_attr(k->node, "value_floats"))) {
        one = a->n;
        sh_tensor_set_shape(out[0], SH_F32, 1, &one);
    } else if ((a = sh_node_attr(k->node, "value_ints"))) {
        one = a->n;
        sh_tensor_set_shape(out[0], SH_I64, 1, &one);
    } else
        return sh_op_err(k, SH_EUNSUPPORTED,
                         "needs a 'value' tensor or value_float(s)/value_int(s) attribute (sparse and string constants are not supported)");
    return SH_OK;
}

static int constant_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)in, (void)n_in, (void)n_out;
    const sh_attr *a;
    sh_tensor *y = out[0];
    if ((a = sh_node_attr(k->node, "value")) && a->type == SH_ATTR_TENSOR && a->t) {
        if (a->t->data && a->t->nbytes) memcpy(y->data, a->t->data, a->t->nbytes < y->nbytes ? a->t->nbytes : y->nbytes);
    } else if ((a = sh_node_attr(k->node, "value_float")))
        ((float *)y->data)[0] = a->type == SH_ATTR_FLOAT ? a->f : (float)a->i;
    else if ((a = sh_node_attr(k->node, "value_int")))
        ((int64_t *)y->data)[0] = a->type == SH_ATTR_INT ? a->i : (int64_t)a->f;
    else if ((a = sh_node_attr(k->node, "value_floats"))) {
        if (a->floats && a->n) memcpy(y->data, a->floats, sizeof(float) * (size_t)a->n);
    } else if ((a = sh_node_attr(k->node, "value_ints"))) {
        if (a->ints && a->n) memcpy(y->data, a->ints, sizeof(int64_t) * (size_t)a->n);
    } else
        return sh_op_err(k, SH_EUNSUPPORTED, "no value attribute");
    return SH_OK;
}

static const sh_op_def op_constant = {"Constant", 0, 0, 1, 1, constant_infer, constant_fwd, NULL, 0, 0, NULL, 0};

/* ---- Shape -------------------------------------------------------------------------- */

static void shape_range(sh_kctx *k, const sh_tensor *x, int64_t *s, int64_t *e)
{
    int64_t r = x->ndim;
    *s = sh_attr_int(k->node, "start", 0);
    *e = sh_attr_int(k->node, "end", r);
    if (*s < 0) *s += r;
    if (*e < 0) *e += r;
    *s = *s < 0 ? 0 : *s > r ? r : *s;
    *e = *e < 0 ? 0 : *e > r ? r : *e;
    if (*e < *s) *e = *s;
}

static int shape_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    int64_t s, e;
    shape_range(k, in[0], &s, &e);
    int64_t n = e - s;
    sh_tensor_set_shape(out[0], SH_I64, 1, &n);
    return SH_OK;
}

static int shape_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    int64_t s, e;
    shape_range(k, in[0], &s, &e);
    for (int64_t i = s; i < e; i++) ((int64_t *)out[0]->data)[i - s] = in[0]->shape[i];
    return SH_OK;
}

static const sh_op_def op_shape = {"Shape", 1, 1, 1, 1, shape_infer, shape_fwd, NULL, 0x1, 0, NULL, 1};

/* ---- Gather ----------------------------------------------------------------------------- */

static int gather_axis(sh_kctx *k, const sh_tensor *x, int *axis)
{
    int64_t a = sh_attr_int(k->node, "axis", 0), r = x->ndim;
    char s[160];
    if (a < -r || a >= r) return sh_op_err(k, SH_EINVAL, "axis %lld out of range for data %s", (long long)a, shp(x, s, sizeof s));
    *axis = (int)(a < 0 ? a + r : a);
    return SH_OK;
}

static int gather_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    const sh_tensor *x = in[0], *idx = in[1];
    int axis, rc;
    size_t es = 0;
    if ((rc = gather_axis(k, x, &axis)) || (rc = elem_size(k, x->fmt, &es))) return rc;
    if (idx->fmt != SH_I64 && idx->fmt != SH_I32)
        return sh_op_err(k, SH_EINVAL, "indices have format %s, expected i64 or i32", fmt_name(idx->fmt));
    int nd = x->ndim - 1 + idx->ndim;
    if (nd > SH_MAX_DIMS) return sh_op_err(k, SH_EUNSUPPORTED, "output rank %d (at most %d)", nd, SH_MAX_DIMS);
    int64_t shape[SH_MAX_DIMS];
    int j = 0;
    for (int i = 0; i < axis; i++) shape[j++] = x->shape[i];
    for (int i = 0; i < idx->ndim; i++) shape[j++] = idx->shape[i];
    for (int i = axis + 1; i < x->ndim; i++) shape[j++] = x->shape[i];
    sh_tensor_set_shape(out[0], x->fmt, nd, shape);
    return SH_OK;
}

static inline int64_t idx_at(const sh_tensor *t, int64_t i)
{
    return t->fmt == SH_I64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
}

static int gather_check(sh_kctx *k, const sh_tensor *x, const sh_tensor *idx, int axis)
{
    int64_t n = sh_tensor_numel(idx), N = x->shape[axis];
    char s[160];
    for (int64_t i = 0; i < n; i++) {
        int64_t v = idx_at(idx, i);
        if (v < -N || v >= N)
            return sh_op_err(k, SH_EINVAL, "index %lld out of range [%lld, %lld) on axis %d of data %s", (long long)v,
                             (long long)-N, (long long)N, axis, shp(x, s, sizeof s));
    }
    return SH_OK;
}

static int gather_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    const sh_tensor *x = in[0], *idx = in[1];
    int axis, rc;
    size_t es = 0;
    if ((rc = gather_axis(k, x, &axis)) || (rc = elem_size(k, x->fmt, &es)) || (rc = gather_check(k, x, idx, axis)))
        return rc;
    int64_t outer = sh_shape_numel(axis, x->shape), N = x->shape[axis];
    int64_t inner = sh_shape_numel(x->ndim - axis - 1, x->shape + axis + 1), ni = sh_tensor_numel(idx);
    size_t row = (size_t)inner * es;
    const char *src = x->data;
    char *dst = out[0]->data;
    if (!row) return SH_OK;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < ni; j++) {
            int64_t v = idx_at(idx, j);
            if (v < 0) v += N;
            memcpy(dst + (size_t)(o * ni + j) * row, src + (size_t)(o * N + v) * row, row);
        }
    return SH_OK;
}

static int gather_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                      const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)n_in, (void)out, (void)n_out;
    if (!din[0] || !dout[0]) return SH_OK;
    const sh_tensor *x = in[0], *idx = in[1];
    int axis, rc;
    if ((rc = gather_axis(k, x, &axis)) || (rc = need_f32_grad(k, x)) || (rc = gather_check(k, x, idx, axis))) return rc;
    int64_t outer = sh_shape_numel(axis, x->shape), N = x->shape[axis];
    int64_t inner = sh_shape_numel(x->ndim - axis - 1, x->shape + axis + 1), ni = sh_tensor_numel(idx);
    const float *g = dout[0]->data;
    float *dx = din[0]->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < ni; j++) {
            int64_t v = idx_at(idx, j);
            if (v < 0) v += N;
            add_f32(dx + (o * N + v) * inner, g + (o * ni + j) * inner, inner);
        }
    return SH_OK;
}

static const sh_op_def op_gather = {"Gather", 2, 2, 1, 1, gather_infer, gather_fwd, gather_bwd, 0x2, 0x1, NULL, 0};

/* ---- Cast ------------------------------------------------------------------------------------ */

/* ONNX TensorProto.DataType -> format, -1 if unsupported. */
static int onnx_dtype_fmt(int64_t t)
{
    switch (t) {
    case 1: return SH_F32;
    case 2: return SH_U8;
    case 3: return SH_I8;
    case 6: return SH_I32;
    case 7: return SH_I64;
    case 9: return SH_BOOL;
    case 10: return SH_F16;
    case 16: return SH_BF16;
    default: return -1;
    }
}

static int cast_to(sh_kctx *k, sh_format *f)
{
    int64_t t = sh_attr_int(k->node, "to", -1);
    int v = onnx_dtype_fmt(t);
    if (v < 0) return sh_op_err(k, SH_EUNSUPPORTED, "cast to ONNX data type %lld is not supported", (long long)t);
    *f = (sh_format)v;
    return SH_OK;
}

static int cast_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    sh_format f = SH_F32;
    size_t es = 0;
    int rc;
    if ((rc = cast_to(k, &f)) || (rc = elem_size(k, in[0]->fmt, &es))) return rc;
    sh_tensor_set_shape(out[0], f, in[0]->ndim, in[0]->shape);
    return SH_OK;
}

static int is_int_fmt(sh_format f) { return f == SH_I64 || f == SH_I32 || f == SH_I8 || f == SH_U8 || f == SH_BOOL; }

static void set_int(void *d, sh_format f, int64_t i, int64_t v)
{
    switch (f) {
    case SH_I64: ((int64_t *)d)[i] = v; break;
    case SH_I32: ((int32_t *)d)[i] = (int32_t)(uint32_t)(uint64_t)v; break;
    case SH_I8: ((int8_t *)d)[i] = (int8_t)(uint8_t)(uint64_t)v; break;
    case SH_U8: ((uint8_t *)d)[i] = (uint8_t)(uint64_t)v; break;
    case SH_BOOL: ((uint8_t *)d)[i] = v != 0; break;
    default: break;
    }
}

static int64_t f2i(float v)
{
    if (v != v) return 0;
    if (v >= 9.2233720368547758e18f) return INT64_MAX;
    if (v <= -9.2233720368547758e18f) return INT64_MIN;
    return (int64_t)v;
}

static int cast_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    const sh_tensor *x = in[0];
    sh_tensor *y = out[0];
    int64_t n = sh_tensor_numel(x);
    if (x->fmt == y->fmt) return copy_fwd(k, in, n_in, out, n_out);
    if (is_int_fmt(x->fmt) && is_int_fmt(y->fmt)) {
        int64_t v;
        for (int64_t i = 0; i < n; i++) {
            switch (x->fmt) {
            case SH_I64: v = ((const int64_t *)x->data)[i]; break;
            case SH_I32: v = ((const int32_t *)x->data)[i]; break;
            case SH_I8: v = ((const int8_t *)x->data)[i]; break;
            default: v = ((const uint8_t *)x->data)[i]; break;
            }
            set_int(y->data, y->fmt, i, v);
        }
        return SH_OK;
    }
    /* through f32, in chunks */
    float buf[1024];
    const sh_format_traits *ty = sh_format_get(y->fmt), *tx = sh_format_get(x->fmt);
    for (int64_t s = 0; s < n; s += 1024) {
        int64_t m = n - s < 1024 ? n - s : 1024;
        const float *f = buf;
        if (x->fmt == SH_F32) f = (const float *)x->data + s;
        else if (tx->is_float) tx->to_f32((const char *)x->data + s * tx->block_bytes, buf, m);
        else
            for (int64_t i = 0; i < m; i++) buf[i] = sh_tensor_get_f(x, s + i);
        if (y->fmt == SH_F32) {
            if (f != (const float *)y->data + s) memcpy((float *)y->data + s, f, (size_t)m * sizeof(float));
        } else if (ty->is_float)
            ty->from_f32(f, (char *)y->data + s * ty->block_bytes, m);
        else
            for (int64_t i = 0; i < m; i++) set_int(y->data, y->fmt, s + i, y->fmt == SH_BOOL ? f[i] != 0.0f : f2i(f[i]));
    }
    return SH_OK;
}

static int cast_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                    const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)n_in, (void)n_out;
    if (!din[0] || !dout[0]) return SH_OK;
    if (!sh_format_get(out[0]->fmt)->is_float) return SH_OK; /* no gradient through integer casts */
    int rc = need_f32_grad(k, in[0]);
    if (rc) return rc;
    add_f32(din[0]->data, dout[0]->data, sh_tensor_numel(in[0]));
    return SH_OK;
}

static const sh_op_def op_cast = {"Cast", 1, 1, 1, 1, cast_infer, cast_fwd, cast_bwd, 0, 0, NULL, 0};

/* ---- Slice ------------------------------------------------------------------------------------- */

/* Per-dimension start, step and output size. */
typedef struct {
    int64_t start[SH_MAX_DIMS], step[SH_MAX_DIMS], size[SH_MAX_DIMS];
} slice_t;

static int slice_plan(sh_kctx *k, const sh_tensor *const *in, int n_in, slice_t *p)
{
    const sh_tensor *x = in[0];
    int r = x->ndim, ns, ne, na = -1, nst = -1, rc;
    int64_t st[SH_MAX_DIMS], en[SH_MAX_DIMS], ax[SH_MAX_DIMS], sp[SH_MAX_DIMS];
    char s[160];
    if (n_in >= 3) {
        if (!in[1] || !in[2]) return sh_op_err(k, SH_EINVAL, "starts and ends inputs are required");
        if ((rc = const_ints(k, in[1], "starts", st, SH_MAX_DIMS, &ns)) ||
            (rc = const_ints(k, in[2], "ends", en, SH_MAX_DIMS, &ne)))
            return rc;
        if (n_in >= 4 && in[3] && (rc = const_ints(k, in[3], "axes", ax, SH_MAX_DIMS, &na))) return rc;
        if (n_in >= 5 && in[4] && (rc = const_ints(k, in[4], "steps", sp, SH_MAX_DIMS, &nst))) return rc;
    } else { /* opset 1: attributes */
        const int64_t *v;
        ns = sh_attr_ints(k->node, "starts", &v);
        if (ns < 0 || ns > SH_MAX_DIMS) return sh_op_err(k, SH_EINVAL, "missing or bad 'starts'");
        memcpy(st, v, sizeof(int64_t) * (size_t)ns);
        ne = sh_attr_ints(k->node, "ends", &v);
        if (ne < 0 || ne > SH_MAX_DIMS) return sh_op_err(k, SH_EINVAL, "missing or bad 'ends'");
        memcpy(en, v, sizeof(int64_t) * (size_t)ne);
        na = sh_attr_ints(k->node, "axes", &v);
        if (na > SH_MAX_DIMS) return sh_op_err(k, SH_EINVAL, "bad 'axes'");
        if (na > 0) memcpy(ax, v, sizeof(int64_t) * (size_t)na);
    }
    if (ns != ne || (na >= 0 && na != ns) || (nst >= 0 && nst != ns))
        return sh_op_err(k, SH_EINVAL, "starts, ends, axes and steps have different lengths (%d, %d, %d, %d)", ns, ne, na, nst);
    int seen[SH_MAX_DIMS] = {0};
    for (int d = 0; d < r; d++) {
        p->start[d] = 0;
        p->step[d] = 1;
        p->size[d] = x->shape[d];
    }
    for (int i = 0; i < ns; i++) {
        int64_t a = na >= 0 ? ax[i] : i;
        if (a < -r || a >= r) return sh_op_err(k, SH_EINVAL, "axis %lld out of range for input %s", (long long)a, shp(x, s, sizeof s));
        if (a < 0) a += r;
        if (seen[a]) return sh_op_err(k, SH_EINVAL, "axis %lld repeated", (long long)a);
        seen[a] = 1;
        int64_t dim = x->shape[a], step = nst >= 0 ? sp[i] : 1, b = st[i], e = en[i];
        if (step == 0) return sh_op_err(k, SH_EINVAL, "step 0 on axis %lld", (long long)a);
        if (step < -((int64_t)1 << 62)) step = -((int64_t)1 << 62);
        if (b < 0) b = b < -dim ? -1 : b + dim; /* values below -dim clamp below */
        if (e < 0) e = e < -dim ? -1 : e + dim;
        int64_t cnt;
        if (step > 0) {
            b = b < 0 ? 0 : b > dim ? dim : b;
            e = e < 0 ? 0 : e > dim ? dim : e;
            cnt = e > b ? (e - b - 1) / step + 1 : 0;
        } else {
            b = b < 0 ? -1 : b > dim - 1 ? dim - 1 : b;
            e = e < -1 ? -1 : e > dim - 1 ? dim - 1 : e;
            cnt = b > e ? (b - e - 1) / (-step) + 1 : 0;
        }
        p->start[a] = cnt ? b : 0;
        p->step[a] = step;
        p->size[a] = cnt;
    }
    return SH_OK;
}

static int slice_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    slice_t p;
    size_t es = 0;
    int rc;
    if ((rc = elem_size(k, in[0]->fmt, &es)) || (rc = slice_plan(k, in, n_in, &p))) return rc;
    sh_tensor_set_shape(out[0], in[0]->fmt, in[0]->ndim, p.size);
    return SH_OK;
}

static const char *slice_geom(const sh_tensor *x, const slice_t *p, int64_t *st, size_t es, int64_t *off)
{
    int64_t ist[SH_MAX_DIMS];
    strides_of(x->ndim, x->shape, ist);
    *off = 0;
    for (int d = 0; d < x->ndim; d++) {
        st[d] = p->step[d] * ist[d];
        *off += p->start[d] * ist[d];
    }
    return (const char *)x->data + *off * (int64_t)es;
}

static int slice_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    slice_t p;
    size_t es = 0;
    int rc;
    if ((rc = elem_size(k, in[0]->fmt, &es)) || (rc = slice_plan(k, in, n_in, &p))) return rc;
    int64_t st[SH_MAX_DIMS], off;
    if (sh_tensor_numel(out[0]) == 0) return SH_OK;
    const char *src = slice_geom(in[0], &p, st, es, &off);
    copy_strided(out[0]->data, src, in[0]->ndim, p.size, st, es);
    return SH_OK;
}

static int slice_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                     const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)out, (void)n_out;
    if (!din[0] || !dout[0]) return SH_OK;
    slice_t p;
    int rc;
    if ((rc = need_f32_grad(k, in[0])) || (rc = slice_plan(k, in, n_in, &p))) return rc;
    int64_t st[SH_MAX_DIMS], off;
    if (sh_tensor_numel(out[0]) == 0) return SH_OK;
    slice_geom(in[0], &p, st, 4, &off);
    add_strided((float *)din[0]->data + off, dout[0]->data, in[0]->ndim, p.size, st);
    return SH_OK;
}

static const sh_op_def op_slice = {"Slice", 1, 5, 1, 1, slice_infer, slice_fwd, slice_bwd, 0x1E, 0, NULL, 0};

/* ---- Expand -------------------------------------------------------------------------------------- */

static int expand_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    int64_t shape[SH_MAX_DIMS], oshape[SH_MAX_DIMS];
    int n, nd, rc;
    size_t es = 0;
    char s1[160], s2[160];
    if ((rc = elem_size(k, in[0]->fmt, &es)) || (rc = const_ints(k, in[1], "shape", shape, SH_MAX_DIMS, &n))) return rc;
    if (sh_broadcast_shape(in[0]->ndim, in[0]->shape, n, shape, &nd, oshape) != SH_OK)
        return sh_op_err(k, SH_ESHAPE, "cannot expand %s to %s", shp(in[0], s1, sizeof s1), sh_shape_str(n, shape, s2, sizeof s2));
    if ((rc = check_numel(k, nd, oshape))) return rc;
    sh_tensor_set_shape(out[0], in[0]->fmt, nd, oshape);
    return SH_OK;
}

/* Input strides over the output dims (0 where broadcast). */
static void expand_geom(const sh_tensor *x, const sh_tensor *y, int64_t *st)
{
    int64_t ist[SH_MAX_DIMS];
    strides_of(x->ndim, x->shape, ist);
    int off = y->ndim - x->ndim;
    for (int i = 0; i < y->ndim; i++) {
        int j = i - off;
        st[i] = j < 0 || x->shape[j] == 1 ? 0 : ist[j];
    }
}

static int expand_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    size_t es = 0;
    int rc = elem_size(k, in[0]->fmt, &es);
    if (rc) return rc;
    int64_t st[SH_MAX_DIMS];
    expand_geom(in[0], out[0], st);
    copy_strided(out[0]->data, in[0]->data, out[0]->ndim, out[0]->shape, st, es);
    return SH_OK;
}

static int expand_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                      const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)n_in, (void)n_out;
    if (!din[0] || !dout[0]) return SH_OK;
    int rc = need_f32_grad(k, in[0]);
    if (rc) return rc;
    int64_t st[SH_MAX_DIMS];
    expand_geom(in[0], out[0], st);
    add_strided(din[0]->data, dout[0]->data, out[0]->ndim, out[0]->shape, st);
    return SH_OK;
}

static const sh_op_def op_expand = {"Expand", 2, 2, 1, 1, expand_infer, expand_fwd, expand_bwd, 0x2, 0, NULL, 0};

/* ---- Pad ------------------------------------------------------------------------------------------ */

enum { PAD_CONST, PAD_REFLECT, PAD_EDGE, PAD_WRAP };

typedef struct {
    int mode;
    int64_t begin[SH_MAX_DIMS], end[SH_MAX_DIMS];
    float value;
    const sh_tensor *value_t; /* constant_value input (any format), or NULL */
} pad_t;

static int pad_plan(sh_kctx *k, const sh_tensor *const *in, int n_in, pad_t *p)
{
    const sh_tensor *x = in[0];
    int r = x->ndim, np, na = -1, rc;
    int64_t pads[2 * SH_MAX_DIMS], axes[SH_MAX_DIMS];
    char s[160];
    const char *m = sh_attr_string(k->node, "mode", "constant");
    if (!strcmp(m, "constant")) p->mode = PAD_CONST;
    else if (!strcmp(m, "reflect")) p->mode = PAD_REFLECT;
    else if (!strcmp(m, "edge")) p->mode = PAD_EDGE;
    else if (!strcmp(m, "wrap")) p->mode = PAD_WRAP;
    else return sh_op_err(k, SH_EINVAL, "mode '%s' (expected constant, reflect, edge or wrap)", m);
    p->value = 0.0f;
    p->value_t = NULL;
    if (n_in >= 2 && in[1]) {
        if ((rc = const_ints(k, in[1], "pads", pads, 2 * SH_MAX_DIMS, &np))) return rc;
        if (n_in >= 3 && in[2]) {
            if (sh_tensor_numel(in[2]) != 1) return sh_op_err(k, SH_ESHAPE, "constant_value must be a scalar");
            if (in[2]->data) {
                p->value = sh_tensor_get_f(in[2], 0);
                p->value_t = in[2];
            }
        }
        if (n_in >= 4 && in[3] && (rc = const_ints(k, in[3], "axes", axes, SH_MAX_DIMS, &na))) return rc;
    } else {
        const int64_t *v;
        np = sh_attr_ints(k->node, "pads", &v);
        if (np < 0) np = sh_attr_ints(k->node, "paddings", &v);
        if (np < 0 || np > 2 * SH_MAX_DIMS) return sh_op_err(k, SH_EINVAL, "missing or bad 'pads'");
        memcpy(pads, v, sizeof(int64_t) * (size_t)np);
        p->value = sh_attr_float(k->node, "value", 0.0f);
    }
    int nax = na >= 0 ? na : r;
    if (np != 2 * nax)
        return sh_op_err(k, SH_EINVAL, "%d pads for %d axes of input %s (expected %d)", np, nax, shp(x, s, sizeof s), 2 * nax);
    for (int d = 0; d < r; d++) p->begin[d] = p->end[d] = 0;
    for (int i = 0; i < nax; i++) {
        int64_t a = na >= 0 ? axes[i] : i;
        if (a < -r || a >= r) return sh_op_err(k, SH_EINVAL, "axis %lld out of range for input %s", (long long)a, shp(x, s, sizeof s));
        if (a < 0) a += r;
        p->begin[a] = pads[i];
        p->end[a] = pads[i + nax];
        if (llabs(pads[i]) > ((int64_t)1 << 40) || llabs(pads[i + nax]) > ((int64_t)1 << 40))
            return sh_op_err(k, SH_EINVAL, "pad of %lld on axis %lld is too large", (long long)pads[i], (long long)a);
    }
    for (int d = 0; d < r; d++) {
        int64_t od = x->shape[d] + p->begin[d] + p->end[d];
        if (od < 0) return sh_op_err(k, SH_EINVAL, "pads remove more than dim %d of input %s", d, shp(x, s, sizeof s));
        if (p->mode != PAD_CONST && x->shape[d] == 0 && od > 0)
            return sh_op_err(k, SH_EINVAL, "cannot %s-pad empty dim %d of input %s", m, d, shp(x, s, sizeof s));
    }
    return SH_OK;
}

static int pad_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    pad_t p;
    size_t es = 0;
    int rc;
    if ((rc = elem_size(k, in[0]->fmt, &es)) || (rc = pad_plan(k, in, n_in, &p))) return rc;
    int64_t shape[SH_MAX_DIMS];
    for (int d = 0; d < in[0]->ndim; d++) shape[d] = in[0]->shape[d] + p.begin[d] + p.end[d];
    if ((rc = check_numel(k, in[0]->ndim, shape))) return rc;
    sh_tensor_set_shape(out[0], in[0]->fmt, in[0]->ndim, shape);
    return SH_OK;
}

/* Source coordinate of output coordinate o on a dim of size n, or -1. */
static int64_t pad_src(int mode, int64_t o, int64_t begin, int64_t n)
{
    int64_t s = o - begin;
    if (s >= 0 && s < n) return s;
    switch (mode) {
    case PAD_EDGE: return s < 0 ? 0 : n - 1;
    case PAD_REFLECT: {
        if (n == 1) return 0;
        int64_t per = 2 * (n - 1), q = s % per;
        if (q < 0) q += per;
        return q >= n ? per - q : q;
    }
    case PAD_WRAP: {
        int64_t q = s % n;
        return q < 0 ? q + n : q;
    }
    default: return -1;
    }
}

/* Map every output element to its source element index (or -1). */
static int pad_map(sh_kctx *k, const sh_tensor *x, const sh_tensor *y, const pad_t *p, int64_t **map_out)
{
    int r = x->ndim;
    int64_t n = sh_tensor_numel(y), tot = 0, ist[SH_MAX_DIMS];
    for (int d = 0; d < r; d++) tot += y->shape[d];
    int64_t *m = sh_kctx_scratch(k, sizeof(int64_t) * (size_t)(tot + 1));
    if (!m) return sh_op_err(k, SH_ENOMEM, "out of memory");
    strides_of(r, x->shape, ist);
    int64_t *md[SH_MAX_DIMS], *q = m;
    for (int d = 0; d < r; d++) {
        md[d] = q;
        for (int64_t o = 0; o < y->shape[d]; o++) {
            int64_t s = pad_src(p->mode, o, p->begin[d], x->shape[d]);
            q[o] = s < 0 ? -1 : s * ist[d];
        }
        q += y->shape[d];
    }
    (void)n;
    *map_out = m;
    for (int d = 0; d < r; d++) map_out[1 + d] = md[d];
    return SH_OK;
}

/* Iterate output elements i with source offset src (-1: padding). */
#define PAD_LOOP(r, y, md, ...)                                                           \
    do {                                                                                  \
        int64_t n_ = sh_tensor_numel(y), idx_[SH_MAX_DIMS] = {0};                         \
        for (int64_t i = 0; i < n_; i++) {                                                \
            int64_t src = 0;                                                              \
            for (int d_ = 0; d_ < (r); d_++) {                                            \
                int64_t v_ = (md)[d_][idx_[d_]];                                          \
                if (v_ < 0) { src = -1; break; }                                          \
                src += v_;                                                                \
            }                                                                             \
            __VA_ARGS__                                                                   \
            for (int d_ = (r) - 1; d_ >= 0; d_--) {                                       \
                if (++idx_[d_] < (y)->shape[d_]) break;                                   \
                idx_[d_] = 0;                                                             \
            }                                                                             \
        }                                                                                 \
    } while (0)

static int pad_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    pad_t p;
    size_t es = 0;
    int rc;
    if ((rc = elem_size(k, in[0]->fmt, &es)) || (rc = pad_plan(k, in, n_in, &p))) return rc;
    const sh_tensor *x = in[0];
    sh_tensor *y = out[0];
    int r = x->ndim;
    if (sh_tensor_numel(y) == 0) return SH_OK;
    if (r == 0) return copy_fwd(k, in, n_in, out, n_out);
    int64_t *maps[1 + SH_MAX_DIMS];
    if ((rc = pad_map(k, x, y, &p, maps))) return rc;
    int64_t **md = maps + 1;
    /* the pad value in the tensor's format */
    unsigned char val[16] = {0};
    if (p.value_t && p.value_t->fmt == x->fmt) memcpy(val, p.value_t->data, es);
    else if (x->fmt == SH_F32) memcpy(val, &p.value, 4);
    else if (sh_format_get(x->fmt)->is_float) sh_format_get(x->fmt)->from_f32(&p.value, val, 1);
    else {
        int64_t iv = (int64_t)p.value;
        set_int(val, x->fmt, 0, iv);
    }
    const char *xs = x->data;
    char *yd = y->data;
    if (es == 4) {
        uint32_t v4;
        memcpy(&v4, val, 4);
        PAD_LOOP(r, y, md, ((uint32_t *)yd)[i] = src < 0 ? v4 : ((const uint32_t *)xs)[src];);
    } else
        PAD_LOOP(r, y, md, memcpy(yd + i * (int64_t)es, src < 0 ? (const char *)val : xs + src * (int64_t)es, es););
    return SH_OK;
}

static int pad_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                   const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)n_out;
    if (!din[0] || !dout[0]) return SH_OK;
    pad_t p;
    int rc;
    if ((rc = need_f32_grad(k, in[0])) || (rc = pad_plan(k, in, n_in, &p))) return rc;
    const sh_tensor *x = in[0], *y = out[0];
    int r = x->ndim;
    if (sh_tensor_numel(y) == 0) return SH_OK;
    if (r == 0) {
        add_f32(din[0]->data, dout[0]->data, 1);
        return SH_OK;
    }
    int64_t *maps[1 + SH_MAX_DIMS];
    if ((rc = pad_map(k, x, y, &p, maps))) return rc;
    int64_t **md = maps + 1;
    const float *g = dout[0]->data;
    float *dx = din[0]->data;
    PAD_LOOP(r, y, md, if (src >= 0) dx[src] += g[i];);
    return SH_OK;
}

static const sh_op_def op_pad = {"Pad", 1, 4, 1, 1, pad_infer, pad_fwd, pad_bwd, 0xE, 0, NULL, 0};

/* ---- ConstantOfShape, Range ----------------------------------------------------------------- */

static int cos_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    int64_t shape[SH_MAX_DIMS];
    int n, rc;
    char s[160];
    if ((rc = const_ints(k, in[0], "shape", shape, SH_MAX_DIMS, &n)) || (rc = check_numel(k, n, shape))) return rc;
    if (in[0]->ndim != 1) return sh_op_err(k, SH_ESHAPE, "shape input must be 1-D, got %s", shp(in[0], s, sizeof s));
    const sh_attr *a = sh_node_attr(k->node, "value");
    sh_format f = SH_F32;
    if (a && a->type == SH_ATTR_TENSOR && a->t) {
        size_t es = 0;
        if (sh_tensor_numel(a->t) != 1) return sh_op_err(k, SH_EINVAL, "value must hold one element");
        if ((rc = elem_size(k, a->t->fmt, &es))) return rc;
        f = a->t->fmt;
    }
    sh_tensor_set_shape(out[0], f, n, shape);
    return SH_OK;
}

static int cos_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)in, (void)n_in, (void)n_out;
    const sh_attr *a = sh_node_attr(k->node, "value");
    int64_t n = sh_tensor_numel(out[0]);
    if (!a || a->type != SH_ATTR_TENSOR || !a->t || !a->t->data) {
        memset(out[0]->data, 0, out[0]->nbytes);
        return SH_OK;
    }
    size_t es = (size_t)sh_format_get(a->t->fmt)->block_bytes;
    char *y = out[0]->data;
    for (int64_t i = 0; i < n; i++) memcpy(y + (size_t)i * es, a->t->data, es);
    return SH_OK;
}

static const sh_op_def op_cos = {"ConstantOfShape", 1, 1, 1, 1, cos_infer, cos_fwd, NULL, 0x1, 0, NULL, 0};

static int range_args(sh_kctx *k, const sh_tensor *const *in, double *st, double *lim, double *d, int64_t *n)
{
    for (int i = 0; i < 3; i++) {
        if (!in[i]->data) return sh_op_err(k, SH_EUNSUPPORTED, "start, limit and delta must be constants");
        if (sh_tensor_numel(in[i]) != 1) return sh_op_err(k, SH_ESHAPE, "start, limit and delta must be scalars");
        if (in[i]->fmt != in[0]->fmt) return sh_op_err(k, SH_EINVAL, "start, limit and delta formats differ");
    }
    if (in[0]->fmt != SH_F32 && in[0]->fmt != SH_I64 && in[0]->fmt != SH_I32)
        return sh_op_err(k, SH_EUNSUPPORTED, "format %s (f32, i64 or i32 supported)", fmt_name(in[0]->fmt));
    int64_t v[3];
    if (in[0]->fmt == SH_F32) {
        *st = sh_tensor_get_f(in[0], 0), *lim = sh_tensor_get_f(in[1], 0), *d = sh_tensor_get_f(in[2], 0);
    } else {
        for (int i = 0; i < 3; i++) sh_tensor_read_ints(in[i], &v[i], 1);
        *st = (double)v[0], *lim = (double)v[1], *d = (double)v[2];
    }
    if (*d == 0.0) return sh_op_err(k, SH_EINVAL, "delta is 0");
    double c = ceil((*lim - *st) / *d);
    if (!(c < (double)((int64_t)1 << 40))) return sh_op_err(k, SH_ESHAPE, "range has too many elements");
    *n = c > 0 ? (int64_t)c : 0;
    return SH_OK;
}

static int range_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    double st, lim, d;
    int64_t n;
    int rc = range_args(k, in, &st, &lim, &d, &n);
    if (rc) return rc;
    sh_tensor_set_shape(out[0], in[0]->fmt, 1, &n);
    return SH_OK;
}

static int range_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    double st, lim, d;
    int64_t n;
    int rc = range_args(k, in, &st, &lim, &d, &n);
    if (rc) return rc;
    if (in[0]->fmt == SH_F32) { /* accumulate in float like the reference */
        float v = (float)st, fd = (float)d;
        for (int64_t i = 0; i < n; i++, v += fd) ((float *)out[0]->data)[i] = v;
    } else {
        int64_t v0, dd;
        sh_tensor_read_ints(in[0], &v0, 1);
        sh_tensor_read_ints(in[2], &dd, 1);
        for (int64_t i = 0; i < n; i++) set_int(out[0]->data, out[0]->fmt, i, v0 + i * dd);
    }
    return SH_OK;
}

static const sh_op_def op_range = {"Range", 3, 3, 1, 1, range_infer, range_fwd, NULL, 0x7, 0, NULL, 0};

const sh_op_def *const sh_ops_shape[] = {
    &op_identity, &op_dropout, &op_flatten, &op_reshape, &op_transpose, &op_concat, &op_constant, &op_pad,
    &op_shape, &op_gather, &op_unsqueeze, &op_squeeze, &op_cast, &op_slice, &op_expand,
    &op_cos, &op_range, NULL};
