/* elementwise.c - binary ops with broadcasting (Add, Sub, Mul, Div, Pow),
 * unary ops (Relu, LeakyRelu, Sigmoid, Tanh, Gelu, Erf, Exp, Log, Sqrt, Neg,
 * Abs, Reciprocal, HardSigmoid, HardSwish, Softplus, Elu, Selu, Softsign),
 * Softmax, LogSoftmax, Clip, reductions (ReduceSum/Mean/Max/Min).
 *
 * Binary ops (Add, Sub, Mul, Div, Pow) follow numpy broadcasting.  The
 * broadcast is planned once per call: dimensions of size 1 in the output are
 * dropped and adjacent dimensions with compatible strides are merged, so that
 * [N,C,H,W] + [C,1,1] becomes an outer loop over (N,C) and a contiguous inner
 * loop over H*W with a scalar operand.  Add/Sub/Mul/Div also run on i64/i32
 * (forward only) for the shape arithmetic PyTorch exports.
 *
 * Softmax / LogSoftmax: opset >= 13 semantics (one axis, default -1) unless the
 * graph's opset (k->opset, or an int attribute "_opset" on the node) is below
 * 13, in which case the input is coerced to 2-D at `axis` (default 1).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ops.h"

#define PAR_MIN 32768 /* elements below which loops stay single-threaded */

static const char *fmt_name(sh_format f)
{
    const sh_format_traits *t = sh_format_get(f);
    return t ? t->name : "?";
}

static int need_f32(sh_kctx *k, const sh_tensor *t, const char *what)
{
    if (t->fmt != SH_F32)
        return sh_op_err(k, SH_EUNSUPPORTED, "%s has format %s, expected f32", what, fmt_name(t->fmt));
    return SH_OK;
}

/* ---- Relu: the template every op follows ---------------------------- */

static int unary_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    if (in[0]->fmt != SH_F32) return sh_op_err(k, SH_EUNSUPPORTED, "input format %s, expected f32", sh_format_get(in[0]->fmt)->name);
    sh_tensor_set_shape(out[0], SH_F32, in[0]->ndim, in[0]->shape);
    return SH_OK;
}

static int relu_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)k, (void)n_in, (void)n_out;
    const float *x = in[0]->data;
    float *y = out[0]->data;
    int64_t n = sh_tensor_numel(in[0]);
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return SH_OK;
}

static int relu_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                    const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)k, (void)n_in, (void)out, (void)n_out;
    if (!din[0] || !dout[0]) return SH_OK;
    const float *x = in[0]->data, *dy = dout[0]->data;
    float *dx = din[0]->data;
    int64_t n = sh_tensor_numel(in[0]);
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dx[i] += x[i] > 0.0f ? dy[i] : 0.0f;
    return SH_OK;
}

static const sh_op_def op_relu = {"Relu", 1, 1, 1, 1, unary_infer, relu_fwd, relu_bwd, 0, 0, NULL, 0};

/* ---- broadcasting ---------------------------------------------------- */

typedef struct {
    int nd;                     /* coalesced dims (>= 1) */
    int64_t dim[SH_MAX_DIMS];
    int64_t sa[SH_MAX_DIMS], sb[SH_MAX_DIMS]; /* element strides (0: broadcast) */
    int64_t inner, outer, n;
} bcast_t;

static void strides_of(const sh_tensor *t, int64_t *st)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        st[i] = s;
        s *= t->shape[i];
    }
}

static void bcast_init(bcast_t *bc, const sh_tensor *a, const sh_tensor *b, const sh_tensor *y)
{
    int64_t sta[SH_MAX_DIMS], stb[SH_MAX_DIMS];
    strides_of(a, sta);
    strides_of(b, stb);
    int ny = y->ndim, m = 0;
    for (int i = 0; i < ny; i++) {
        int ia = i - (ny - a->ndim), ib = i - (ny - b->ndim);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (y->shape[i] == 1) continue;
        int64_t d = y->shape[i], s_a = da == 1 ? 0 : sta[ia], s_b = db == 1 ? 0 : stb[ib];
        if (m > 0 && bc->sa[m - 1] == s_a * d && bc->sb[m - 1] == s_b * d) {
            bc->dim[m - 1] *= d;
            bc->sa[m - 1] = s_a;
            bc->sb[m - 1] = s_b;
        } else {
            bc->dim[m] = d;
            bc->sa[m] = s_a;
            bc->sb[m] = s_b;
            m++;
        }
    }
    if (m == 0) {
        bc->dim[0] = 1;
        bc->sa[0] = bc->sb[0] = 1;
        m = 1;
    }
    bc->nd = m;
    bc->n = sh_tensor_numel(y);
    bc->inner = bc->dim[m - 1];
    bc->outer = bc->inner ? bc->n / bc->inner : 0;
}

static inline void bcast_off(const bcast_t *bc, int64_t o, int64_t *oa, int64_t *ob)
{
    int64_t a = 0, b = 0;
    for (int d = bc->nd - 2; d >= 0; d--) {
        int64_t i = o % bc->dim[d];
        o /= bc->dim[d];
        a += i * bc->sa[d];
        b += i * bc->sb[d];
    }
    *oa = a;
    *ob = b;
}

/* Inner kernels: y[i] = f(a[i*sa], b[i*sb]) with sa, sb in {0, 1}. */
#define DEF_BIN(NAME, T, EXPR)                                                                   \
    static void NAME(T *restrict y, const T *restrict a, int64_t sa, const T *restrict b,        \
                     int64_t sb, int64_t n)                                                      \
    {                                                                                            \
        if (sa && sb) {                                                                          \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                                    \
                T x = a[i], z = b[i];                                                            \
                y[i] = (EXPR);                                                                   \
            }                                                                                    \
        } else if (sa) {                                                                         \
            T z = b[0];                                                                          \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                                    \
                T x = a[i];                                                                      \
                y[i] = (EXPR);                                                                   \
            }                                                                                    \
        } else if (sb) {                                                                         \
            T x = a[0];                                                                          \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                                    \
                T z = b[i];                                                                      \
                y[i] = (EXPR);                                                                   \
            }                                                                                    \
        } else {                                                                                 \
            T x = a[0], z = b[0];                                                                \
            T v = (EXPR);                                                                        \
            for (int64_t i = 0; i < n; i++) y[i] = v;                                            \
        }                                                                                        \
    }

static inline int64_t div_i64(int64_t x, int64_t z) { return z == -1 ? (int64_t)(0 - (uint64_t)x) : x / z; }
static inline int32_t div_i32(int32_t x, int32_t z) { return z == -1 ? (int32_t)(0 - (uint32_t)x) : x / z; }

DEF_BIN(add_f32, float, x + z)
DEF_BIN(sub_f32, float, x - z)
DEF_BIN(mul_f32, float, x * z)
DEF_BIN(div_f32, float, x / z)
DEF_BIN(pow_f32, float, powf(x, z))
DEF_BIN(add_i64, int64_t, (int64_t)((uint64_t)x + (uint64_t)z))
DEF_BIN(sub_i64, int64_t, (int64_t)((uint64_t)x - (uint64_t)z))
DEF_BIN(mul_i64, int64_t, (int64_t)((uint64_t)x * (uint64_t)z))
DEF_BIN(div_i64k, int64_t, div_i64(x, z))
DEF_BIN(add_i32, int32_t, (int32_t)((uint32_t)x + (uint32_t)z))
DEF_BIN(sub_i32, int32_t, (int32_t)((uint32_t)x - (uint32_t)z))
DEF_BIN(mul_i32, int32_t, (int32_t)((uint32_t)x * (uint32_t)z))
DEF_BIN(div_i32k, int32_t, div_i32(x, z))

enum { B_ADD, B_SUB, B_MUL, B_DIV, B_POW };

static int bin_kind(const sh_kctx *k)
{
    const char *op = k->node->op;
    if (!strcmp(op, "Add")) return B_ADD;
    if (!strcmp(op, "Sub")) return B_SUB;
    if (!strcmp(op, "Mul")) return B_MUL;
    if (!strcmp(op, "Div")) return B_DIV;
    return B_POW;
}

static int bin_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    const sh_tensor *a = in[0], *b = in[1];
    int kind = bin_kind(k);
    char sa[160], sb[160];
    if (kind == B_POW) {
        if (a->fmt != SH_F32 && a->fmt != SH_I64 && a->fmt != SH_I32)
            return sh_op_err(k, SH_EUNSUPPORTED, "base format %s (f32, i64 or i32 supported)", fmt_name(a->fmt));
        const sh_format_traits *tb = sh_format_get(b->fmt);
        if (!tb || tb->block_elems != 1)
            return sh_op_err(k, SH_EUNSUPPORTED, "exponent format %s", fmt_name(b->fmt));
    } else {
        if (a->fmt != b->fmt)
            return sh_op_err(k, SH_EINVAL, "input formats differ: %s %s vs %s %s", fmt_name(a->fmt),
                             sh_shape_str(a->ndim, a->shape, sa, sizeof sa), fmt_name(b->fmt),
                             sh_shape_str(b->ndim, b->shape, sb, sizeof sb));
        if (a->fmt != SH_F32 && a->fmt != SH_I64 && a->fmt != SH_I32 && a->fmt != SH_I8 && a->fmt != SH_U8)
            return sh_op_err(k, SH_EUNSUPPORTED, "input format %s (f32, i64, i32, i8 or u8 supported)", fmt_name(a->fmt));
    }
    int nd;
    int64_t shape[SH_MAX_DIMS];
    if (a->ndim > SH_MAX_DIMS || b->ndim > SH_MAX_DIMS ||
        sh_broadcast_shape(a->ndim, a->shape, b->ndim, b->shape, &nd, shape) != SH_OK)
        return sh_op_err(k, SH_ESHAPE, "shapes %s and %s do not broadcast",
                         sh_shape_str(a->ndim, a->shape, sa, sizeof sa), sh_shape_str(b->ndim, b->shape, sb, sizeof sb));
    sh_tensor_set_shape(out[0], a->fmt, nd, shape);
    return SH_OK;
}

typedef void (*bin_f32_fn)(float *, const float *, int64_t, const float *, int64_t, int64_t);
typedef void (*bin_i64_fn)(int64_t *, const int64_t *, int64_t, const int64_t *, int64_t, int64_t);
typedef void (*bin_i32_fn)(int32_t *, const int32_t *, int64_t, const int32_t *, int64_t, int64_t);

static double get_d(const sh_tensor *t, int64_t i)
{
    switch (t->fmt) {
    case SH_I64: return (double)((const int64_t *)t->data)[i];
    case SH_I32: return (double)((const int32_t *)t->data)[i];
    default: return (double)sh_tensor_get_f(t, i);
    }
}

static int64_t sat_i64(double v)
{
    if (v != v) return 0;
    if (v >= 9.2233720368547758e18) return INT64_MAX;
    if (v <= -9.2233720368547758e18) return INT64_MIN;
    return (int64_t)v;
}

/* Pow with a non-f32 operand: element by element in double. */
static int pow_generic(sh_kctx *k, const sh_tensor *a, const sh_tensor *b, sh_tensor *y)
{
    bcast_t bc;
    bcast_init(&bc, a, b, y);
    for (int64_t o = 0; o < bc.outer; o++) {
        int64_t oa, ob;
        bcast_off(&bc, o, &oa, &ob);
        for (int64_t j = 0; j < bc.inner; j++) {
            double v = pow(get_d(a, oa + j * bc.sa[bc.nd - 1]), get_d(b, ob + j * bc.sb[bc.nd - 1]));
            int64_t i = o * bc.inner + j;
            switch (y->fmt) {
            case SH_F32: ((float *)y->data)[i] = (float)v; break;
            case SH_I64: ((int64_t *)y->data)[i] = sat_i64(v); break;
            case SH_I32: {
                int64_t q = sat_i64(v);
                ((int32_t *)y->data)[i] = q > INT32_MAX ? INT32_MAX : q < INT32_MIN ? INT32_MIN : (int32_t)q;
                break;
            }
            default: return sh_op_err(k, SH_EUNSUPPORTED, "output format %s", fmt_name(y->fmt));
            }
        }
    }
    return SH_OK;
}

/* Loop over every output element with its operand offsets ia, ib and index iy. */
#define BC_LOOP(bc, ...)                                                                         \
    for (int64_t o_ = 0; o_ < (bc).outer; o_++) {                                                \
        int64_t oa_, ob_;                                                                        \
        bcast_off(&(bc), o_, &oa_, &ob_);                                                        \
        const int64_t sai_ = (bc).sa[(bc).nd - 1], sbi_ = (bc).sb[(bc).nd - 1];                  \
        for (int64_t j_ = 0; j_ < (bc).inner; j_++) {                                            \
            const int64_t ia = oa_ + j_ * sai_, ib = ob_ + j_ * sbi_, iy = o_ * (bc).inner + j_; \
            (void)ia, (void)ib;                                                                  \
            __VA_ARGS__                                                                          \
        }                                                                                        \
    }

/* i8 / u8 arithmetic (wraps like numpy), element by element. */
static int small_int_bin(const sh_tensor *a, const sh_tensor *b, sh_tensor *y, int kind)
{
    bcast_t bc;
    bcast_init(&bc, a, b, y);
    BC_LOOP(bc, {
        int64_t x = (int64_t)get_d(a, ia), z = (int64_t)get_d(b, ib), v;
        switch (kind) {
        case B_ADD: v = x + z; break;
        case B_SUB: v = x - z; break;
        case B_MUL: v = x * z; break;
        default: v = x / z; break;
        }
        if (y->fmt == SH_U8) ((uint8_t *)y->data)[iy] = (uint8_t)(v & 0xff);
        else ((int8_t *)y->data)[iy] = (int8_t)(uint8_t)(v & 0xff);
    })
    return SH_OK;
}

static int bin_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    const sh_tensor *a = in[0], *b = in[1];
    sh_tensor *y = out[0];
    int kind = bin_kind(k);
    if (sh_tensor_numel(y) == 0) return SH_OK;
    if (kind == B_POW) {
        if (a->fmt != SH_F32 || b->fmt != SH_F32) return pow_generic(k, a, b, y);
        if (sh_tensor_numel(b) == 1) { /* common: x^2, sqrt */
            float e = ((const float *)b->data)[0];
            const float *x = a->data;
            float *o = y->data;
            int64_t n = sh_tensor_numel(y);
            if (sh_tensor_numel(a) == n) {
                if (e == 2.0f) {
                    for (int64_t i = 0; i < n; i++) o[i] = x[i] * x[i];
                    return SH_OK;
                }
                if (e == 0.5f) {
                    for (int64_t i = 0; i < n; i++) o[i] = sqrtf(x[i]);
                    return SH_OK;
                }
                if (e == 1.0f) {
                    memcpy(o, x, (size_t)n * sizeof(float));
                    return SH_OK;
                }
            }
        }
    }
    if (a->fmt != SH_F32 && kind == B_DIV) {
        /* integer division by zero would trap: refuse */
        int64_t nb = sh_tensor_numel(b);
        for (int64_t i = 0; i < nb; i++)
            if (get_d(b, i) == 0.0) return sh_op_err(k, SH_EINVAL, "integer division by zero");
    }
    if (a->fmt == SH_I8 || a->fmt == SH_U8) return small_int_bin(a, b, y, kind);
    bcast_t bc;
    bcast_init(&bc, a, b, y);
    int64_t sai = bc.sa[bc.nd - 1], sbi = bc.sb[bc.nd - 1];
    static const bin_f32_fn ff[] = {add_f32, sub_f32, mul_f32, div_f32, pow_f32};
    static const bin_i64_fn fl[] = {add_i64, sub_i64, mul_i64, div_i64k, NULL};
    static const bin_i32_fn fi[] = {add_i32, sub_i32, mul_i32, div_i32k, NULL};
    int par = bc.n >= PAR_MIN && bc.outer > 1;
    if (bc.outer == 1 && bc.n >= PAR_MIN && a->fmt == SH_F32) {
        /* one long inner run: split it */
        int64_t n = bc.n, chunk = 8192, nch = (n + chunk - 1) / chunk;
        const float *pa = a->data, *pb = b->data;
        float *py = y->data;
#pragma omp parallel for num_threads(k->nthreads) schedule(static)
        for (int64_t c = 0; c < nch; c++) {
            int64_t s = c * chunk, len = n - s < chunk ? n - s : chunk;
            ff[kind](py + s, pa + s * sai, sai, pb + s * sbi, sbi, len);
        }
        return SH_OK;
    }
    switch (a->fmt) {
    case SH_F32: {
        const float *pa = a->data, *pb = b->data;
        float *py = y->data;
        SH_PAR_FOR(par, k->nthreads, for (int64_t o = 0; o < bc.outer; o++) {
            int64_t oa, ob;
            bcast_off(&bc, o, &oa, &ob);
            ff[kind](py + o * bc.inner, pa + oa, sai, pb + ob, sbi, bc.inner);
        });
        break;
    }
    case SH_I64: {
        const int64_t *pa = a->data, *pb = b->data;
        int64_t *py = y->data;
        for (int64_t o = 0; o < bc.outer; o++) {
            int64_t oa, ob;
            bcast_off(&bc, o, &oa, &ob);
            fl[kind](py + o * bc.inner, pa + oa, sai, pb + ob, sbi, bc.inner);
        }
        break;
    }
    case SH_I32: {
        const int32_t *pa = a->data, *pb = b->data;
        int32_t *py = y->data;
        for (int64_t o = 0; o < bc.outer; o++) {
            int64_t oa, ob;
            bcast_off(&bc, o, &oa, &ob);
            fi[kind](py + o * bc.inner, pa + oa, sai, pb + ob, sbi, bc.inner);
        }
        break;
    }
    default: return sh_op_err(k, SH_EUNSUPPORTED, "format %s", fmt_name(a->fmt));
    }
    return SH_OK;
}

static int bin_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                   const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)n_in, (void)n_out;
    if (!dout[0] || (!din[0] && !din[1])) return SH_OK;
    const sh_tensor *a = in[0], *b = in[1], *y = out[0];
    int rc;
    if ((rc = need_f32(k, a, "input A")) || (rc = need_f32(k, b, "input B"))) return rc;
    bcast_t bc;
    bcast_init(&bc, a, b, y);
    const float *pa = a->data, *pb = b->data, *py = y->data, *g = dout[0]->data;
    float *da = din[0] ? din[0]->data : NULL, *db = din[1] ? din[1]->data : NULL;
    int64_t n = bc.n;
    int kind = bin_kind(k);
    if (sh_tensor_numel(a) == n && sh_tensor_numel(b) == n && kind != B_POW) { /* no broadcast */
        float sgn = kind == B_SUB ? -1.0f : 1.0f;
        if (da) {
            if (kind == B_MUL) {
#pragma omp simd
                for (int64_t i = 0; i < n; i++) da[i] += g[i] * pb[i];
            } else if (kind == B_DIV) {
#pragma omp simd
                for (int64_t i = 0; i < n; i++) da[i] += g[i] / pb[i];
            } else {
#pragma omp simd
                for (int64_t i = 0; i < n; i++) da[i] += g[i];
            }
        }
        if (db) {
            if (kind == B_MUL) {
#pragma omp simd
                for (int64_t i = 0; i < n; i++) db[i] += g[i] * pa[i];
            } else if (kind == B_DIV) {
#pragma omp simd
                for (int64_t i = 0; i < n; i++) db[i] -= g[i] * py[i] / pb[i];
            } else {
#pragma omp simd
                for (int64_t i = 0; i < n; i++) db[i] += sgn * g[i];
            }
        }
        return SH_OK;
    }
    switch (kind) {
    case B_ADD:
        if (da) BC_LOOP(bc, da[ia] += g[iy];)
        if (db) BC_LOOP(bc, db[ib] += g[iy];)
        break;
    case B_SUB:
        if (da) BC_LOOP(bc, da[ia] += g[iy];)
        if (db) BC_LOOP(bc, db[ib] -= g[iy];)
        break;
    case B_MUL:
        if (da) BC_LOOP(bc, da[ia] += g[iy] * pb[ib];)
        if (db) BC_LOOP(bc, db[ib] += g[iy] * pa[ia];)
        break;
    case B_DIV:
        if (da) BC_LOOP(bc, da[ia] += g[iy] / pb[ib];)
        if (db) BC_LOOP(bc, db[ib] -= g[iy] * py[iy] / pb[ib];)
        break;
    default: /* Pow */
        if (da)
            BC_LOOP(bc, {
                float e = pb[ib], x = pa[ia];
                float d = e == 0.0f ? 0.0f : e == 2.0f ? 2.0f * x : e * powf(x, e - 1.0f);
                da[ia] += g[iy] * d;
            })
        if (db) BC_LOOP(bc, if (pa[ia] > 0.0f) db[ib] += g[iy] * py[iy] * logf(pa[ia]);)
        break;
    }
    return SH_OK;
}

static const sh_op_def op_add = {"Add", 2, 2, 1, 1, bin_infer, bin_fwd, bin_bwd, 0, 0, NULL, 0};
static const sh_op_def op_sub = {"Sub", 2, 2, 1, 1, bin_infer, bin_fwd, bin_bwd, 0, 0, NULL, 0};
static const sh_op_def op_mul = {"Mul", 2, 2, 1, 1, bin_infer, bin_fwd, bin_bwd, 0, 0, NULL, 0};
static const sh_op_def op_div = {"Div", 2, 2, 1, 1, bin_infer, bin_fwd, bin_bwd, 0, 0, NULL, 0};
static const sh_op_def op_pow = {"Pow", 2, 2, 1, 1, bin_infer, bin_fwd, bin_bwd, 0, 0, NULL, 0};

/* ---- unary activations ------------------------------------------------ */

enum { U_LEAKY, U_SIGMOID, U_TANH, U_GELU, U_ERF, U_EXP, U_LOG, U_SQRT, U_NEG, U_ABS, U_RECIP,
       U_HSIGMOID, U_HSWISH, U_SOFTPLUS, U_ELU, U_SELU, U_SOFTSIGN };

#define SELU_ALPHA 1.67326319217681884765625f
#define SELU_GAMMA 1.05070102214813232421875f

static int un_kind(const sh_kctx *k)
{
    static const char *names[] = {"LeakyRelu", "Sigmoid", "Tanh", "Gelu", "Erf", "Exp",
                                  "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "HardSigmoid",
                                  "HardSwish", "Softplus", "Elu", "Selu", "Softsign"};
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (!strcmp(k->node->op, names[i])) return i;
    return -1;
}

/* Gelu approximate="tanh" if the attribute says so; error on other strings. */
static int gelu_tanh(sh_kctx *k, int *is_tanh)
{
    const char *s = sh_attr_string(k->node, "approximate", "none");
    if (!strcmp(s, "none")) *is_tanh = 0;
    else if (!strcmp(s, "tanh")) *is_tanh = 1;
    else return sh_op_err(k, SH_EINVAL, "approximate='%s' (expected 'none' or 'tanh')", s);
    return SH_OK;
}

static int un_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    int t;
    if (un_kind(k) == U_GELU && gelu_tanh(k, &t)) return k->err ? k->err->code : SH_EINVAL;
    if (un_kind(k) == U_NEG || un_kind(k) == U_ABS) {
        if (in[0]->fmt == SH_I64 || in[0]->fmt == SH_I32) {
            sh_tensor_set_shape(out[0], in[0]->fmt, in[0]->ndim, in[0]->shape);
            return SH_OK;
        }
    }
    return unary_infer(k, in, n_in, out, n_out);
}

/* c ? a : b without a branch (ternaries on floats keep loops from vectorizing). */
static inline float sel_f(int c, float a, float b)
{
    int32_t m = -(int32_t)c, ia, ib, r;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    r = (ia & m) | (ib & ~m);
    float f;
    memcpy(&f, &r, 4);
    return f;
}

/* exp(x) in plain branch-free arithmetic so that loops vectorize (Cephes'
 * polynomial, relative error ~1.1e-7); 0 below -87, exp(88) above 88 (also
 * for +inf), NaN stays NaN.  For Sigmoid, Tanh, Softmax where the clamping
 * is harmless; the Exp op keeps libm's expf. */
static inline float fast_expf(float x0)
{
    float x = sel_f(x0 > 88.0f, 88.0f, x0);
    x = sel_f(x < -87.0f, -87.0f, x);
    x = sel_f(x == x, x, 0.0f);
    float t = x * 1.44269504088896341f;
    float n = (t + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float sc;
    memcpy(&sc, &bits, 4);
    float y = sel_f(x0 < -87.0f, 0.0f, p * sc);
    return sel_f(x0 == x0, y, x0);
}

/* erf(x), Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7), branch-free. */
static inline float fast_erff(float x)
{
    float a = fabsf(x), t = 1.0f / (1.0f + 0.3275911f * a);
    float p = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    float r = 1.0f - p * fast_expf(-a * a);
    return sel_f(x < 0.0f, -r, r);
}

static inline float fast_sigmoidf(float x) { return 1.0f / (1.0f + fast_expf(-x)); }

/* tanh via exp, with a series near 0 where 1 - 2/(e^2x + 1) cancels. */
static inline float fast_tanhf(float x)
{
    float x2 = x * x;
    float small = x * (1.0f + x2 * (-0.333333333f + x2 * 0.133333333f));
    float big = 1.0f - 2.0f / (fast_expf(2.0f * x) + 1.0f);
    return sel_f(x2 < 0.0039f, small, big);
}

#define SQRT_2_OVER_PI 0.7978845608028654f
#define GELU_C 0.044715f

static int un_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    int kind = un_kind(k);
    int64_t n = sh_tensor_numel(in[0]);
    if (in[0]->fmt == SH_I64 || in[0]->fmt == SH_I32) { /* Neg / Abs on integers */
        for (int64_t i = 0; i < n; i++) {
            int64_t v = in[0]->fmt == SH_I64 ? ((const int64_t *)in[0]->data)[i] : ((const int32_t *)in[0]->data)[i];
            uint64_t u = (uint64_t)v;
            if (kind == U_NEG || v < 0) u = 0 - u;
            if (in[0]->fmt == SH_I64) ((int64_t *)out[0]->data)[i] = (int64_t)u;
            else ((int32_t *)out[0]->data)[i] = (int32_t)(uint32_t)u;
        }
        return SH_OK;
    }
    const float *x = in[0]->data;
    float *y = out[0]->data;
    float alpha = sh_attr_float(k->node, "alpha", 0.01f);
    int tanh_approx = 0;
    if (kind == U_GELU && gelu_tanh(k, &tanh_approx)) return k->err->code;
    int par = n >= PAR_MIN;
    switch (kind) {
    case U_LEAKY:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = x[i] >= 0.0f ? x[i] : alpha * x[i];
        break;
    case U_SIGMOID:
        SH_PAR_FOR(par, k->nthreads, for (int64_t i = 0; i < n; i++) y[i] = fast_sigmoidf(x[i]););
        break;
    case U_TANH:
        SH_PAR_FOR(par, k->nthreads, for (int64_t i = 0; i < n; i++) y[i] = fast_tanhf(x[i]););
        break;
    case U_GELU:
        if (tanh_approx) {
            SH_PAR_FOR(par, k->nthreads, for (int64_t i = 0; i < n; i++) {
                float v = x[i];
                y[i] = 0.5f * v * (1.0f + fast_tanhf(SQRT_2_OVER_PI * (v + GELU_C * v * v * v)));
            });
        } else {
            SH_PAR_FOR(par, k->nthreads, for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + fast_erff(x[i] * 0.70710678118654752f)););
        }
        break;
    case U_ERF:
        SH_PAR_FOR(par, k->nthreads, for (int64_t i = 0; i < n; i++) y[i] = erff(x[i]););
        break;
    case U_EXP:
        SH_PAR_FOR(par, k->nthreads, for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]););
        break;
    case U_LOG:
        SH_PAR_FOR(par, k->nthreads, for (int64_t i = 0; i < n; i++) y[i] = logf(x[i]););
        break;
    case U_SQRT:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = sqrtf(x[i]);
        break;
    case U_NEG:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = -x[i];
        break;
    case U_ABS:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = fabsf(x[i]);
        break;
    case U_RECIP:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = 1.0f / x[i];
        break;
    case U_HSIGMOID: {
        float a = sh_attr_float(k->node, "alpha", 0.2f), b = sh_attr_float(k->node, "beta", 0.5f);
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = fminf(1.0f, fmaxf(0.0f, a * x[i] + b));
        break;
    }
    case U_HSWISH:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * fminf(1.0f, fmaxf(0.0f, x[i] * (1.0f / 6.0f) + 0.5f));
        break;
    case U_SOFTPLUS:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] + log1pf(expf(-x[i])) : log1pf(expf(x[i]));
        break;
    case U_ELU: {
        float a = sh_attr_float(k->node, "alpha", 1.0f);
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = x[i] >= 0.0f ? x[i] : a * expm1f(x[i]);
        break;
    }
    case U_SELU: {
        float a = sh_attr_float(k->node, "alpha", SELU_ALPHA), g = sh_attr_float(k->node, "gamma", SELU_GAMMA);
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = g * (x[i] > 0.0f ? x[i] : a * expm1f(x[i]));
        break;
    }
    case U_SOFTSIGN:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + fabsf(x[i]));
        break;
    default: return sh_op_err(k, SH_EINTERNAL, "unknown unary op");
    }
    return SH_OK;
}

static int un_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                  const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)n_in, (void)n_out;
    if (!din[0] || !dout[0]) return SH_OK;
    int rc = need_f32(k, in[0], "input");
    if (rc) return rc;
    int kind = un_kind(k);
    const float *x = in[0]->data, *y = out[0]->data, *g = dout[0]->data;
    float *dx = din[0]->data;
    int64_t n = sh_tensor_numel(in[0]);
    float alpha = sh_attr_float(k->node, "alpha", 0.01f);
    int tanh_approx = 0;
    if (kind == U_GELU && gelu_tanh(k, &tanh_approx)) return k->err->code;
    switch (kind) {
    case U_LEAKY:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) dx[i] += x[i] >= 0.0f ? g[i] : alpha * g[i];
        break;
    case U_SIGMOID:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) dx[i] += g[i] * y[i] * (1.0f - y[i]);
        break;
    case U_TANH:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) dx[i] += g[i] * (1.0f - y[i] * y[i]);
        break;
    case U_GELU:
        if (tanh_approx) {
#pragma omp simd
            for (int64_t i = 0; i < n; i++) {
                float v = x[i], t = tanhf(SQRT_2_OVER_PI * (v + GELU_C * v * v * v));
                float d = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_C * v * v);
                dx[i] += g[i] * d;
            }
        } else {
#pragma omp simd
            for (int64_t i = 0; i < n; i++) {
                float v = x[i];
                float d = 0.5f * (1.0f + erff(v * 0.70710678118654752f)) + v * expf(-0.5f * v * v) * 0.3989422804014327f;
                dx[i] += g[i] * d;
            }
        }
        break;
    case U_ERF:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) dx[i] += g[i] * 1.1283791670955126f * expf(-x[i] * x[i]);
        break;
    case U_EXP:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) dx[i] += g[i] * y[i];
        break;
    case U_LOG:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) dx[i] += g[i] / x[i];
        break;
    case U_SQRT:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) dx[i] += g[i] * 0.5f / y[i];
        break;
    case U_NEG:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) dx[i] -= g[i];
        break;
    case U_ABS:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) dx[i] += x[i] > 0.0f ? g[i] : x[i] < 0.0f ? -g[i] : 0.0f;
        break;
    case U_RECIP:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) dx[i] -= g[i] * y[i] * y[i];
        break;
    case U_HSIGMOID: {
        float a = sh_attr_float(k->node, "alpha", 0.2f), b = sh_attr_float(k->node, "beta", 0.5f);
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            float v = a * x[i] + b;
            if (v > 0.0f && v < 1.0f) dx[i] += g[i] * a;
        }
        break;
    }
    case U_HSWISH:
        for (int64_t i = 0; i < n; i++)
            dx[i] += x[i] <= -3.0f ? 0.0f : x[i] >= 3.0f ? g[i] : g[i] * (2.0f * x[i] + 3.0f) * (1.0f / 6.0f);
        break;
    case U_SOFTPLUS:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            float sg = x[i] >= 0.0f ? 1.0f / (1.0f + expf(-x[i])) : expf(x[i]) / (1.0f + expf(x[i]));
            dx[i] += g[i] * sg;
        }
        break;
    case U_ELU: {
        float a = sh_attr_float(k->node, "alpha", 1.0f);
#pragma omp simd
        for (int64_t i = 0; i < n; i++) dx[i] += x[i] >= 0.0f ? g[i] : g[i] * a * expf(x[i]);
        break;
    }
    case U_SELU: {
        float a = sh_attr_float(k->node, "alpha", SELU_ALPHA), gm = sh_attr_float(k->node, "gamma", SELU_GAMMA);
#pragma omp simd
        for (int64_t i = 0; i < n; i++) dx[i] += g[i] * gm * (x[i] > 0.0f ? 1.0f : a * expf(x[i]));
        break;
    }
    case U_SOFTSIGN:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            float d = 1.0f + fabsf(x[i]);
            dx[i] += g[i] / (d * d);
        }
        break;
    default: return sh_op_err(k, SH_EINTERNAL, "unknown unary op");
    }
    return SH_OK;
}

#define UNARY_DEF(var, name) static const sh_op_def var = {name, 1, 1, 1, 1, un_infer, un_fwd, un_bwd, 0, 0, NULL, 0};
UNARY_DEF(op_leaky, "LeakyRelu")
UNARY_DEF(op_sigmoid, "Sigmoid")
UNARY_DEF(op_tanh, "Tanh")
UNARY_DEF(op_gelu, "Gelu")
UNARY_DEF(op_erf, "Erf")
UNARY_DEF(op_exp, "Exp")
UNARY_DEF(op_log, "Log")
UNARY_DEF(op_sqrt, "Sqrt")
UNARY_DEF(op_neg, "Neg")
UNARY_DEF(op_abs, "Abs")
UNARY_DEF(op_recip, "Reciprocal")
UNARY_DEF(op_hsigmoid, "HardSigmoid")
UNARY_DEF(op_hswish, "HardSwish")
UNARY_DEF(op_softplus, "Softplus")
UNARY_DEF(op_elu, "Elu")
UNARY_DEF(op_selu, "Selu")
UNARY_DEF(op_softsign, "Softsign")

/* ---- Softmax / LogSoftmax ----------------------------------------------- */

/* The op's view of the input as [outer, len, inner] with softmax over len. */
static int softmax_geom(sh_kctx *k, const sh_tensor *x, int64_t *outer, int64_t *len, int64_t *inner)
{
    int64_t opset = sh_attr_int(k->node, "_opset", k->opset);
    int old = opset > 0 && opset < 13;
    int r = x->ndim;
    int64_t axis = sh_attr_int(k->node, "axis", old ? 1 : -1);
    char s[160];
    if (r == 0) {
        *outer = *len = *inner = 1;
        return SH_OK;
    }
    if (axis < -r || axis >= r + (old ? 1 : 0))
        return sh_op_err(k, SH_EINVAL, "axis %lld out of range for input %s", (long long)axis,
                         sh_shape_str(x->ndim, x->shape, s, sizeof s));
    if (axis < 0) axis += r;
    *outer = sh_shape_numel((int)axis, x->shape);
    if (old) {
        *len = sh_shape_numel(r - (int)axis, x->shape + axis);
        *inner = 1;
    } else {
        *len = x->shape[axis];
        *inner = sh_shape_numel(r - (int)axis - 1, x->shape + axis + 1);
    }
    return SH_OK;
}

static int softmax_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    int64_t a, b, c;
    int rc = unary_infer(k, in, n_in, out, n_out);
    return rc ? rc : softmax_geom(k, in[0], &a, &b, &c);
}

static int softmax_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_in, (void)n_out;
    int64_t outer, len, inner;
    int rc = softmax_geom(k, in[0], &outer, &len, &inner);
    if (rc) return rc;
    int logsm = !strcmp(k->node->op, "LogSoftmax");
    const float *x = in[0]->data;
    float *y = out[0]->data;
    int64_t rows = outer * inner;
#pragma omp parallel for num_threads(k->nthreads) if (rows * len >= PAR_MIN && rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        int64_t o = r / inner, i = r % inner;
        const float *xr = x + o * len * inner + i;
        float *yr = y + o * len * inner + i;
        float m = -INFINITY;
        if (inner == 1) {
#pragma omp simd reduction(max : m)
            for (int64_t j = 0; j < len; j++) m = m > xr[j] ? m : xr[j];
        } else
            for (int64_t j = 0; j < len; j++) m = fmaxf(m, xr[j * inner]);
        if (m == -INFINITY || m != m) m = 0.0f;
        double s = 0.0;
        if (logsm) {
            for (int64_t j = 0; j < len; j++) s += expf(xr[j * inner] - m);
            float ls = (float)log(s);
            for (int64_t j = 0; j < len; j++) yr[j * inner] = xr[j * inner] - m - ls;
        } else if (inner == 1) {
#pragma omp simd
            for (int64_t j = 0; j < len; j++) yr[j] = fast_expf(xr[j] - m);
#pragma omp simd reduction(+ : s)
            for (int64_t j = 0; j < len; j++) s += yr[j];
            float inv = (float)(1.0 / s);
#pragma omp simd
            for (int64_t j = 0; j < len; j++) yr[j] *= inv;
        } else {
            for (int64_t j = 0; j < len; j++) {
                float e = fast_expf(xr[j * inner] - m);
                yr[j * inner] = e;
                s += e;
            }
            float inv = (float)(1.0 / s);
            for (int64_t j = 0; j < len; j++) yr[j * inner] *= inv;
        }
    }
    return SH_OK;
}

static int softmax_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                       const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)n_in, (void)n_out;
    if (!din[0] || !dout[0]) return SH_OK;
    int64_t outer, len, inner;
    int rc = softmax_geom(k, in[0], &outer, &len, &inner);
    if (rc) return rc;
    int logsm = !strcmp(k->node->op, "LogSoftmax");
    const float *y = out[0]->data, *g = dout[0]->data;
    float *dx = din[0]->data;
    int64_t rows = outer * inner;
    for (int64_t r = 0; r < rows; r++) {
        int64_t o = r / inner, i = r % inner, base = o * len * inner + i;
        double s = 0.0;
        if (logsm) {
            for (int64_t j = 0; j < len; j++) s += g[base + j * inner];
            for (int64_t j = 0; j < len; j++) {
                int64_t q = base + j * inner;
                dx[q] += g[q] - expf(y[q]) * (float)s;
            }
        } else {
            for (int64_t j = 0; j < len; j++) s += (double)g[base + j * inner] * y[base + j * inner];
            for (int64_t j = 0; j < len; j++) {
                int64_t q = base + j * inner;
                dx[q] += y[q] * (g[q] - (float)s);
            }
        }
    }
    return SH_OK;
}

static const sh_op_def op_softmax = {"Softmax", 1, 1, 1, 1, softmax_infer, softmax_fwd, softmax_bwd, 0, 0, NULL, 0};
static const sh_op_def op_logsoftmax = {"LogSoftmax", 1, 1, 1, 1, softmax_infer, softmax_fwd, softmax_bwd, 0, 0, NULL, 0};

/* ---- Clip ----------------------------------------------------------------- */

static int clip_bounds(sh_kctx *k, const sh_tensor *const *in, int n_in, float *lo, float *hi)
{
    *lo = sh_attr_float(k->node, "min", -INFINITY);
    *hi = sh_attr_float(k->node, "max", INFINITY);
    for (int j = 1; j < 3 && j < n_in; j++) {
        const sh_tensor *t = in[j];
        if (!t) continue;
        if (sh_tensor_numel(t) != 1) {
            char s[160];
            return sh_op_err(k, SH_ESHAPE, "%s must be a scalar, got %s", j == 1 ? "min" : "max",
                             sh_shape_str(t->ndim, t->shape, s, sizeof s));
        }
        if (!t->data) continue; /* shape inference of a run-time bound */
        float v = sh_tensor_get_f(t, 0);
        if (j == 1) *lo = v;
        else *hi = v;
    }
    return SH_OK;
}

static int clip_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    float lo, hi;
    int rc = clip_bounds(k, in, n_in, &lo, &hi);
    if (rc) return rc;
    sh_format f = in[0]->fmt;
    if (f != SH_F32 && f != SH_I64 && f != SH_I32 && f != SH_I8 && f != SH_U8)
        return sh_op_err(k, SH_EUNSUPPORTED, "input format %s (f32, i64, i32, i8 or u8 supported)", fmt_name(f));
    sh_tensor_set_shape(out[0], f, in[0]->ndim, in[0]->shape);
    return SH_OK;
}

static int clip_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    float lo, hi;
    int rc = clip_bounds(k, in, n_in, &lo, &hi);
    if (rc) return rc;
    int64_t n = sh_tensor_numel(in[0]);
    if (in[0]->fmt != SH_F32) { /* integers: bounds read exactly where given as tensors */
        int64_t ilo = INT64_MIN, ihi = INT64_MAX;
        if (lo > -INFINITY) ilo = (int64_t)ceilf(lo);
        if (hi < INFINITY) ihi = (int64_t)floorf(hi);
        if (n_in >= 2 && in[1] && in[1]->data) sh_tensor_read_ints(in[1], &ilo, 1);
        if (n_in >= 3 && in[2] && in[2]->data) sh_tensor_read_ints(in[2], &ihi, 1);
        for (int64_t i = 0; i < n; i++) {
            int64_t v = (int64_t)get_d(in[0], i);
            v = v < ilo ? ilo : v > ihi ? ihi : v;
            switch (in[0]->fmt) {
            case SH_I64: ((int64_t *)out[0]->data)[i] = v; break;
            case SH_I32: ((int32_t *)out[0]->data)[i] = (int32_t)v; break;
            case SH_I8: ((int8_t *)out[0]->data)[i] = (int8_t)v; break;
            default: ((uint8_t *)out[0]->data)[i] = (uint8_t)v; break;
            }
        }
        return SH_OK;
    }
    const float *x = in[0]->data;
    float *y = out[0]->data;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float v = x[i] < lo ? lo : x[i];
        y[i] = v > hi ? hi : v;
    }
    return SH_OK;
}

static int clip_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                    const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)out, (void)n_out;
    if (!din[0] || !dout[0]) return SH_OK;
    float lo, hi;
    int rc = clip_bounds(k, in, n_in, &lo, &hi);
    if (rc) return rc;
    const float *x = in[0]->data, *g = dout[0]->data;
    float *dx = din[0]->data;
    int64_t n = sh_tensor_numel(in[0]);
    for (int64_t i = 0; i < n; i++)
        if (x[i] >= lo && x[i] <= hi) dx[i] += g[i];
    return SH_OK;
}

static const sh_op_def op_clip = {"Clip", 1, 3, 1, 1, clip_infer, clip_fwd, clip_bwd, 0x6, 0, NULL, 0};

/* ---- reductions ----------------------------------------------------------- */

enum { R_SUM, R_MEAN, R_MAX, R_MIN };

static int red_kind(const sh_kctx *k)
{
    const char *op = k->node->op;
    return !strcmp(op, "ReduceSum") ? R_SUM : !strcmp(op, "ReduceMean") ? R_MEAN : !strcmp(op, "ReduceMax") ? R_MAX : R_MIN;
}

/* Reduced-axis mask from the axes input (opset 13 ReduceSum, opset 18 others)
 * or attribute. */
static int red_axes(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *x, int *mask)
{
    int64_t axes[SH_MAX_DIMS * 2];
    int na = -1, r = x->ndim;
    char s[160];
    if (n_in >= 2 && in[1]) {
        if (!in[1]->data) return sh_op_err(k, SH_EUNSUPPORTED, "axes input must be a constant");
        if (sh_tensor_numel(in[1]) > SH_MAX_DIMS * 2) return sh_op_err(k, SH_EINVAL, "too many axes");
        na = sh_tensor_read_ints(in[1], axes, SH_MAX_DIMS * 2);
    } else {
        const int64_t *v;
        int c = sh_attr_ints(k->node, "axes", &v);
        if (c > SH_MAX_DIMS * 2) return sh_op_err(k, SH_EINVAL, "too many axes");
        if (c >= 0) {
            na = c;
            for (int i = 0; i < c; i++) axes[i] = v[i];
        }
    }
    for (int i = 0; i < r; i++) mask[i] = 0;
    if (na <= 0) {
        if (sh_attr_int(k->node, "noop_with_empty_axes", 0)) return SH_OK;
        for (int i = 0; i < r; i++) mask[i] = 1;
        return SH_OK;
    }
    for (int i = 0; i < na; i++) {
        int64_t a = axes[i];
        if (a < -r || a >= r)
            return sh_op_err(k, SH_EINVAL, "axis %lld out of range for input %s", (long long)a,
                             sh_shape_str(x->ndim, x->shape, s, sizeof s));
        mask[a < 0 ? a + r : a] = 1;
    }
    return SH_OK;
}

static int red_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    int mask[SH_MAX_DIMS], rc;
    if ((rc = need_f32(k, in[0], "input"))) return rc;
    if ((rc = red_axes(k, in, n_in, in[0], mask))) return rc;
    int keep = (int)sh_attr_int(k->node, "keepdims", 1), nd = 0;
    int64_t shape[SH_MAX_DIMS];
    for (int i = 0; i < in[0]->ndim; i++) {
        if (!mask[i]) shape[nd++] = in[0]->shape[i];
        else if (keep) shape[nd++] = 1;
    }
    sh_tensor_set_shape(out[0], SH_F32, nd, shape);
    return SH_OK;
}

/* Input dims coalesced into runs of equal mask; ostr: output element stride
 * of each run (0 for reduced runs). */
typedef struct {
    int nd;
    int64_t dim[SH_MAX_DIMS], ostr[SH_MAX_DIMS];
    int red[SH_MAX_DIMS];
    int64_t inner, outer, count; /* count: elements reduced into each output */
} red_t;

static void red_plan(red_t *p, const sh_tensor *x, const int *mask)
{
    int m = 0;
    p->count = 1;
    for (int i = 0; i < x->ndim; i++) {
        if (x->shape[i] == 1) continue;
        if (mask[i]) p->count *= x->shape[i];
        if (m > 0 && p->red[m - 1] == mask[i]) p->dim[m - 1] *= x->shape[i];
        else {
            p->dim[m] = x->shape[i];
            p->red[m] = mask[i];
            m++;
        }
    }
    if (m == 0) {
        p->dim[0] = 1;
        p->red[0] = 0;
        m = 1;
    }
    int64_t s = 1;
    for (int i = m - 1; i >= 0; i--) {
        p->ostr[i] = p->red[i] ? 0 : s;
        if (!p->red[i]) s *= p->dim[i];
    }
    p->nd = m;
    p->inner = p->dim[m - 1];
    int64_t n = sh_tensor_numel(x);
    p->outer = p->inner ? n / p->inner : 0;
}

static inline int64_t red_off(const red_t *p, int64_t o)
{
    int64_t off = 0;
    for (int d = p->nd - 2; d >= 0; d--) {
        off += (o % p->dim[d]) * p->ostr[d];
        o /= p->dim[d];
    }
    return off;
}

static int red_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    int mask[SH_MAX_DIMS], rc;
    if ((rc = red_axes(k, in, n_in, in[0], mask))) return rc;
    red_t p;
    red_plan(&p, in[0], mask);
    int kind = red_kind(k);
    const float *x = in[0]->data;
    float *y = out[0]->data;
    int64_t ny = sh_tensor_numel(out[0]);
    float init = kind == R_MAX ? -INFINITY : kind == R_MIN ? INFINITY : 0.0f;
    for (int64_t i = 0; i < ny; i++) y[i] = init;
    int inner_red = p.red[p.nd - 1];
    for (int64_t o = 0; o < p.outer; o++) {
        int64_t off = red_off(&p, o);
        const float *xr = x + o * p.inner;
        if (inner_red) {
            if (kind == R_MAX || kind == R_MIN) {
                float m = y[off];
                for (int64_t j = 0; j < p.inner; j++) m = kind == R_MAX ? fmaxf(m, xr[j]) : fminf(m, xr[j]);
                y[off] = m;
            } else {
                float s = 0.0f;
                for (int64_t j = 0; j < p.inner; j++) s += xr[j];
                y[off] += s;
            }
        } else {
            float *yr = y + off;
            if (kind == R_MAX)
                for (int64_t j = 0; j < p.inner; j++) yr[j] = fmaxf(yr[j], xr[j]);
            else if (kind == R_MIN)
                for (int64_t j = 0; j < p.inner; j++) yr[j] = fminf(yr[j], xr[j]);
            else
                for (int64_t j = 0; j < p.inner; j++) yr[j] += xr[j];
        }
    }
    if (kind == R_MEAN) {
        float inv = p.count ? 1.0f / (float)p.count : NAN;
        for (int64_t i = 0; i < ny; i++) y[i] *= inv;
    }
    return SH_OK;
}

static int red_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                   const sh_tensor *const *dout, sh_tensor *const *din)
{
    (void)n_out;
    if (!din[0] || !dout[0]) return SH_OK;
    int mask[SH_MAX_DIMS], rc;
    if ((rc = red_axes(k, in, n_in, in[0], mask))) return rc;
    red_t p;
    red_plan(&p, in[0], mask);
    int kind = red_kind(k);
    const float *x = in[0]->data, *y = out[0]->data, *g = dout[0]->data;
    float *dx = din[0]->data;
    int64_t is = p.red[p.nd - 1] ? 0 : 1;
    float scale = kind == R_MEAN ? 1.0f / (float)p.count : 1.0f;
    for (int64_t o = 0; o < p.outer; o++) {
        int64_t off = red_off(&p, o);
        const float *xr = x + o * p.inner;
        float *dr = dx + o * p.inner;
        if (kind == R_SUM || kind == R_MEAN)
            for (int64_t j = 0; j < p.inner; j++) dr[j] += g[off + j * is] * scale;
        else
            for (int64_t j = 0; j < p.inner; j++)
                if (xr[j] == y[off + j * is]) dr[j] += g[off + j * is];
    }
    return SH_OK;
}

static const sh_op_def op_rsum = {"ReduceSum", 1, 2, 1, 1, red_infer, red_fwd, red_bwd, 0x2, 0, NULL, 0};
static const sh_op_def op_rmean = {"ReduceMean", 1, 2, 1, 1, red_infer, red_fwd, red_bwd, 0x2, 0, NULL, 0};
static const sh_op_def op_rmax = {"ReduceMax", 1, 2, 1, 1, red_infer, red_fwd, red_bwd, 0x2, 0, NULL, 0};
static const sh_op_def op_rmin = {"ReduceMin", 1, 2, 1, 1, red_infer, red_fwd, red_bwd, 0x2, 0, NULL, 0};

const sh_op_def *const sh_ops_elem[] = {
    &op_relu, &op_add, &op_sub, &op_mul, &op_div, &op_pow,
    &op_leaky, &op_sigmoid, &op_tanh, &op_gelu, &op_erf, &op_exp, &op_log, &op_sqrt, &op_neg, &op_abs, &op_recip,
    &op_hsigmoid, &op_hswish, &op_softplus, &op_elu, &op_selu, &op_softsign,
    &op_softmax, &op_logsoftmax, &op_clip,
    &op_rsum, &op_rmean, &op_rmax, &op_rmin,
    NULL};
