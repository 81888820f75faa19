/* qlinear.c - QuantizeLinear, DequantizeLinear (opset 13: per tensor and per
 * axis), DynamicQuantizeLinear, QLinearAdd and QLinearGlobalAveragePool
 * (com.microsoft semantics), the helpers shared by the integer ops
 * (qlinear.h) and the family table of the integer ops.  Inference only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "qgemm.h"
#include "qlinear.h"

static const char *shs(const sh_tensor *t, char *b, size_t n) { return sh_shape_str(t->ndim, t->shape, b, n); }
static const char *fname(sh_format f) { return sh_format_get(f) ? sh_format_get(f)->name : "?"; }

int sh_qparam_get(sh_kctx *k, const sh_tensor *scale, const sh_tensor *zp, int64_t nch, unsigned fmt_mask,
                  const char *what, sh_qparam *p)
{
    char b1[96], b2[96];
    memset(p, 0, sizeof *p);
    p->zfmt = SH_U8;
    if (!scale) return sh_op_err(k, SH_EINVAL, "missing %s_scale input", what);
    if (scale->fmt != SH_F32)
        return sh_op_err(k, SH_EINVAL, "%s_scale has format %s, expected f32", what, fname(scale->fmt));
    int64_t n = sh_tensor_numel(scale);
    if (scale->ndim > 1 || (n != 1 && (nch <= 0 || n != nch)))
        return sh_op_err(k, SH_ESHAPE, "%s_scale %s: expected a scalar%s%s", what, shs(scale, b1, sizeof b1),
                         nch > 0 ? " or one value per channel, " : "", nch > 0 ? (snprintf(b2, sizeof b2, "[%lld]", (long long)nch), b2) : "");
    p->n = n;
    p->scale = scale->data;
    if (zp) {
        if (!(fmt_mask & SH_QMASK(zp->fmt)))
            return sh_op_err(k, SH_EINVAL, "%s_zero_point has format %s, expected %s%s%s", what, fname(zp->fmt),
                             fmt_mask & SH_QMASK(SH_U8) ? "u8 " : "", fmt_mask & SH_QMASK(SH_I8) ? "i8 " : "",
                             fmt_mask & SH_QMASK(SH_I32) ? "i32" : "");
        if (sh_tensor_numel(zp) != n || zp->ndim > 1)
            return sh_op_err(k, SH_ESHAPE, "%s_zero_point %s does not match %s_scale %s", what, shs(zp, b1, sizeof b1),
                             what, shs(scale, b2, sizeof b2));
        p->zp = zp->data;
        p->zfmt = zp->fmt;
    }
    if (p->scale)
        for (int64_t i = 0; i < n; i++)
            if (!(p->scale[i] > 0.0f) || !isfinite(p->scale[i]))
                return sh_op_err(k, SH_EINVAL, "%s_scale[%lld] = %g: scales must be positive and finite", what,
                                 (long long)i, (double)p->scale[i]);
    return SH_OK;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define QL_AVX512 1
/* 16 lanes at a time, masked tail; the same arithmetic as below */
__attribute__((target("avx512f,avx512bw"))) static void requant_row_avx512(const int32_t *acc, const int32_t *bias,
                                                                           const float *mult, int64_t n, int32_t y_zero,
                                                                           float flo, float fhi, uint8_t *o)
{
    __m512 vlo = _mm512_set1_ps(flo), vhi = _mm512_set1_ps(fhi);
    __m512i vz = _mm512_set1_epi32(y_zero);
    for (int64_t c = 0; c < n; c += 16) {
        __mmask16 m = n - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - c)) - 1);
        __m512i a = _mm512_maskz_loadu_epi32(m, acc + c);
        if (bias) a = _mm512_add_epi32(a, _mm512_maskz_loadu_epi32(m, bias + c));
        __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_maskz_loadu_ps(m, mult + c));
        v = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), vz);
        _mm512_mask_cvtepi32_storeu_epi8(o + c, m, q);
    }
}
#endif

int sh_qrequant_simd(int level)
{
#ifdef QL_AVX512
    int f = SH_CPU_AVX512F | SH_CPU_AVX512BW;
    return level != SH_CPU_REF && (sh_cpu_features() & f) == f;
#else
    (void)level;
    return 0;
#endif
}

void sh_qrequant_row(const int32_t *acc, const int32_t *bias, const float *mult, int64_t n, int32_t y_zero, int32_t lo,
                     int32_t hi, sh_format out_fmt, int simd, void *out)
{
#ifdef QL_AVX512
    if (simd && n >= 8) {
        requant_row_avx512(acc, bias, mult, n, y_zero, (float)(lo - y_zero), (float)(hi - y_zero), out);
        return;
    }
#endif
    /* clamping before rounding to the integer bounds lo - y_zero, hi -
     * y_zero gives the same as rounding, adding y_zero and clamping */
    float flo = (float)(lo - y_zero), fhi = (float)(hi - y_zero);
    uint8_t *o = out;
    int64_t c = 0;
#ifdef __SSE2__
    __m128 vlo = _mm_set1_ps(flo), vhi = _mm_set1_ps(fhi);
    __m128i vz = _mm_set1_epi32(y_zero);
    for (; c + 4 <= n; c += 4) {
        __m128i a = _mm_loadu_si128((const __m128i *)(acc + c));
        if (bias) a = _mm_add_epi32(a, _mm_loadu_si128((const __m128i *)(bias + c)));
        __m128 v = _mm_mul_ps(_mm_cvtepi32_ps(a), _mm_loadu_ps(mult + c));
        v = _mm_min_ps(_mm_max_ps(v, vlo), vhi);
        __m128i q = _mm_add_epi32(_mm_cvtps_epi32(v), vz);
        __m128i w = _mm_packs_epi32(q, q);
        __m128i b = out_fmt == SH_U8 ? _mm_packus_epi16(w, w) : _mm_packs_epi16(w, w);
        int32_t four = _mm_cvtsi128_si32(b);
        memcpy(o + c, &four, 4);
    }
#endif
    for (; c < n; c++) {
        float v = (float)(acc[c] + (bias ? bias[c] : 0)) * mult[c];
        v = v < flo ? flo : v > fhi ? fhi : v;
        int32_t q = (int32_t)sh_qround(v) + y_zero;
        if (out_fmt == SH_U8) o[c] = (uint8_t)q;
        else ((int8_t *)o)[c] = (int8_t)q;
    }
}

void sh_qrequant(const int32_t *acc, int64_t lda, int64_t rows, int64_t cols, const int32_t *bias, const float *mult,
                 int32_t y_zero, int relu, sh_format out_fmt, void *out, int64_t ors, int64_t ocs, int simd)
{
    int32_t lo = out_fmt == SH_U8 ? 0 : -128, hi = out_fmt == SH_U8 ? 255 : 127;
    if (relu && y_zero > lo) lo = y_zero;
    if (ocs != 1) simd = 0;
    for (int64_t r = 0; r < rows; r++) {
        const int32_t *a = acc + r * lda;
        uint8_t *o = (uint8_t *)out + r * ors;
        if (ocs == 1) {
            sh_qrequant_row(a, bias, mult, cols, y_zero, lo, hi, out_fmt, simd, o);
            continue;
        }
        for (int64_t c = 0; c < cols; c++) {
            uint8_t q;
            sh_qrequant_row(a + c, bias ? bias + c : NULL, mult + c, 1, y_zero, lo, hi, out_fmt, 0, &q);
            o[c * ocs] = q;
        }
    }
}

/* ---- node state ---------------------------------------------------------- */

sh_qstate *sh_qstate_get(sh_kctx *k)
{
    if (!k->state) return NULL;
    if (!*k->state) *k->state = calloc(1, sizeof(sh_qstate));
    return *k->state;
}

static inline void qmix(uint32_t *h, uint32_t u)
{
    *h = (*h ^ u) * 0x9E3779B1u;
    *h ^= *h >> 16;
}

uint32_t sh_qchecksum(const void *data, size_t bytes)
{
    /* every word of small weights (<= 256 words); of large ones, 8 runs of
     * 16 consecutive words (64 bytes: 8 cache lines, not 128 scattered
     * words, each a cache miss) spread from the first word to the last;
     * four independent hash lanes in registers so the multiplies overlap
     * (it runs at every call of a node, batch 1 included) */
    const uint8_t *b = data;
    uint32_t h0 = (uint32_t)bytes, h1 = 0x85EBCA6Bu, h2 = 0xC2B2AE35u, h3 = 0x27D4EB2Fu;
    size_t nw = bytes / 4, runs = nw <= 256 ? 1 : 8, len = nw <= 256 ? nw : 16;
    for (size_t r = 0; r < runs; r++) {
        const uint8_t *p = b + 4 * (runs == 1 ? 0 : r * (nw - 16) / 7);
        size_t i = 0;
        for (; i + 4 <= len; i += 4) {
            uint32_t u[4];
            memcpy(u, p + 4 * i, 16);
            qmix(&h0, u[0]), qmix(&h1, u[1]), qmix(&h2, u[2]), qmix(&h3, u[3]);
        }
        for (; i < len; i++) {
            uint32_t u;
            memcpy(&u, p + 4 * i, 4);
            qmix(&h0, u);
        }
    }
    uint32_t r = h0 ^ (h1 * 3u) ^ (h2 * 5u) ^ (h3 * 7u);
    for (size_t i = nw * 4; i < bytes; i++) r = (r ^ b[i]) * 0x9E3779B1u;
    return r ^ (r >> 16);
}

int sh_qstate_match(const sh_qstate *st, const void *w, int64_t wn, const void *zp, int64_t rows, int64_t cols,
                    int level, int groups, uint32_t sum)
{
    return st && st->wi && st->wsrc == w && st->wn == wn && st->zsrc == zp && st->rows == rows && st->cols == cols &&
           st->level == level && st->groups == groups && st->wsum == sum;
}

void sh_qstate_reset(sh_qstate *st)
{
    if (!st) return;
    if (st->pb)
        for (int g = 0; g < st->groups; g++) sh_qgemm_b_free(st->pb[g]);
    free(st->pb);
    free(st->wi);
    free(st->dw);
    st->pb = NULL;
    st->wi = NULL;
    st->dw = NULL;
    st->dkd = 0;
    st->wsrc = st->zsrc = NULL;
    st->fast = 0;
    st->groups = 0;
    st->mult_ok = 0;
}

void *sh_qstate_ws(sh_qstate *st, size_t bytes)
{
    if (bytes <= st->ws_bytes && st->ws) return st->ws;
    free(st->ws);
    size_t n = (bytes + 63) / 64 * 64;
    st->ws = aligned_alloc(64, n ? n : 64);
    st->ws_bytes = st->ws ? n : 0;
    return st->ws;
}

void *sh_qstate_mb(sh_qstate *st, size_t bytes)
{
    if (bytes <= st->mb_bytes && st->mb) return st->mb;
    free(st->mb);
    st->mb = malloc(bytes ? bytes : 1);
    st->mb_bytes = st->mb ? bytes : 0;
    return st->mb;
}

void sh_qlinear_state_free(void *p)
{
    sh_qstate *st = p;
    if (!st) return;
    sh_qstate_reset(st);
    free(st->ws);
    free(st->mb);
    free(st);
}

/* ---- QuantizeLinear / DequantizeLinear ---------------------------------- */

/* axis of a per-axis scale (count n) on x; -1 for per tensor */
static int q_axis(sh_kctx *k, const sh_tensor *x, const sh_tensor *scale, int64_t *axis)
{
    char b1[96], b2[96];
    *axis = -1;
    if (!scale) return sh_op_err(k, SH_EINVAL, "missing scale input");
    if (sh_tensor_numel(scale) == 1 && scale->ndim <= 1) return SH_OK;
    int64_t a = sh_attr_int(k->node, "axis", 1);
    if (a < 0) a += x->ndim;
    if (a < 0 || a >= x->ndim || scale->ndim != 1 || scale->shape[0] != x->shape[a])
        return sh_op_err(k, SH_ESHAPE, "scale %s does not match input %s along axis %lld", shs(scale, b1, sizeof b1),
                         shs(x, b2, sizeof b2), (long long)sh_attr_int(k->node, "axis", 1));
    *axis = a;
    return SH_OK;
}

/* channel count, inner size of x for axis a */
static void axis_split(const sh_tensor *x, int64_t a, int64_t *nch, int64_t *inner)
{
    *nch = 1, *inner = 1;
    if (a < 0) return;
    *nch = x->shape[a];
    for (int d = (int)a + 1; d < x->ndim; d++) *inner *= x->shape[d];
}

static int quant_setup(sh_kctx *k, const sh_tensor *const *in, int n_in, int64_t *axis, sh_qparam *p)
{
    const sh_tensor *x = in[0], *zp = n_in > 2 ? in[2] : NULL;
    if (x->fmt != SH_F32 && x->fmt != SH_I32)
        return sh_op_err(k, SH_EUNSUPPORTED, "input x has format %s, expected f32 or i32", fname(x->fmt));
    int rc = q_axis(k, x, in[1], axis);
    if (rc) return rc;
    return sh_qparam_get(k, in[1], zp, *axis >= 0 ? x->shape[*axis] : 0, SH_QMASK(SH_U8) | SH_QMASK(SH_I8), "y", p);
}

static int quant_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    int64_t axis;
    sh_qparam p;
    int rc = quant_setup(k, in, n_in, &axis, &p);
    if (rc) return rc;
    sh_tensor_set_shape(out[0], p.zfmt, in[0]->ndim, in[0]->shape);
    return SH_OK;
}

static int quant_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    int64_t axis, nch, inner;
    sh_qparam p;
    int rc = quant_setup(k, in, n_in, &axis, &p);
    if (rc) return rc;
    const sh_tensor *x = in[0];
    axis_split(x, axis, &nch, &inner);
    int64_t n = sh_tensor_numel(x), outer = n / (nch * inner);
    float lo = p.zfmt == SH_U8 ? 0.0f : -128.0f, hi = p.zfmt == SH_U8 ? 255.0f : 127.0f;
    int nt = n > (1 << 16) ? k->nthreads : 1;
#ifdef __SSE2__
    if (x->fmt == SH_F32 && nch == 1 && nt <= 1) {
        /* f32 per tensor (a model's input), 4 at a time: the same float ops
         * as below (x / s, clamp to +-2^22, round half to even by
         * cvtps2dq in the default rounding mode, + z, clamp), NaN -> z */
        const float *xf = x->data;
        float s = sh_qparam_scale(&p, 0), z = (float)sh_qparam_zero(&p, 0);
        __m128 vs = _mm_set1_ps(s), vz = _mm_set1_ps(z), vlo = _mm_set1_ps(lo), vhi = _mm_set1_ps(hi);
        __m128 big = _mm_set1_ps(4194304.0f), nbig = _mm_set1_ps(-4194304.0f);
        uint8_t *o = out[0]->data;
        int64_t i = 0;
        for (; i + 4 <= n; i += 4) {
            __m128 v = _mm_div_ps(_mm_loadu_ps(xf + i), vs);
            __m128 nan = _mm_cmpunord_ps(v, v);
            v = _mm_min_ps(_mm_max_ps(v, nbig), big);
            __m128 q = _mm_add_ps(_mm_cvtepi32_ps(_mm_cvtps_epi32(v)), vz);
            q = _mm_min_ps(_mm_max_ps(q, vlo), vhi);
            q = _mm_or_ps(_mm_and_ps(nan, vz), _mm_andnot_ps(nan, q));
            __m128i qi = _mm_cvtps_epi32(q);
            int32_t t[4];
            _mm_storeu_si128((__m128i *)t, qi);
            for (int j = 0; j < 4; j++) {
                if (p.zfmt == SH_U8) o[i + j] = (uint8_t)t[j];
                else ((int8_t *)o)[i + j] = (int8_t)t[j];
            }
        }
        for (; i < n; i++) {
            float q = sh_qround(xf[i] / s) + z;
            q = q < lo ? lo : q > hi ? hi : q;
            if (q != q) q = z;
            if (p.zfmt == SH_U8) o[i] = (uint8_t)(int32_t)q;
            else ((int8_t *)o)[i] = (int8_t)(int32_t)q;
        }
        return SH_OK;
    }
#endif
    SH_PAR_FOR(nt > 1, nt, for (int64_t oc = 0; oc < outer * nch; oc++) {
        int64_t c = oc % nch;
        float s = sh_qparam_scale(&p, c), z = (float)sh_qparam_zero(&p, c);
        int64_t base = oc * inner;
        for (int64_t i = 0; i < inner; i++) {
            float v = x->fmt == SH_F32 ? ((const float *)x->data)[base + i] : (float)((const int32_t *)x->data)[base + i];
            float q = sh_qround(v / s) + z;
            q = q < lo ? lo : q > hi ? hi : q; /* NaN: q stays NaN -> 0 below */
            if (q != q) q = z;
            if (p.zfmt == SH_U8) ((uint8_t *)out[0]->data)[base + i] = (uint8_t)(int32_t)q;
            else ((int8_t *)out[0]->data)[base + i] = (int8_t)(int32_t)q;
        }
    });
    return SH_OK;
}

static int dequant_setup(sh_kctx *k, const sh_tensor *const *in, int n_in, int64_t *axis, sh_qparam *p)
{
    const sh_tensor *x = in[0], *zp = n_in > 2 ? in[2] : NULL;
    if (x->fmt != SH_U8 && x->fmt != SH_I8 && x->fmt != SH_I32)
        return sh_op_err(k, SH_EUNSUPPORTED, "input x has format %s, expected u8, i8 or i32", fname(x->fmt));
    if (zp && zp->fmt != x->fmt)
        return sh_op_err(k, SH_EINVAL, "x_zero_point has format %s, x has %s (they must match)", fname(zp->fmt),
                         fname(x->fmt));
    int rc = q_axis(k, x, in[1], axis);
    if (rc) return rc;
    return sh_qparam_get(k, in[1], zp, *axis >= 0 ? x->shape[*axis] : 0, SH_QMASK(x->fmt), "x", p);
}

static int dequant_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    int64_t axis;
    sh_qparam p;
    int rc = dequant_setup(k, in, n_in, &axis, &p);
    if (rc) return rc;
    sh_tensor_set_shape(out[0], SH_F32, in[0]->ndim, in[0]->shape);
    return SH_OK;
}

static int dequant_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    int64_t axis, nch, inner;
    sh_qparam p;
    int rc = dequant_setup(k, in, n_in, &axis, &p);
    if (rc) return rc;
    const sh_tensor *x = in[0];
    axis_split(x, axis, &nch, &inner);
    int64_t n = sh_tensor_numel(x), outer = n / (nch * inner);
    float *y = out[0]->data;
    int nt = n > (1 << 16) ? k->nthreads : 1;
    SH_PAR_FOR(nt > 1, nt, for (int64_t oc = 0; oc < outer * nch; oc++) {
        int64_t c = oc % nch;
        float s = sh_qparam_scale(&p, c);
        int32_t z = sh_qparam_zero(&p, c);
        int64_t base = oc * inner;
        if (x->fmt == SH_U8) {
            const uint8_t *q = (const uint8_t *)x->data + base;
            for (int64_t i = 0; i < inner; i++) y[base + i] = (float)((int32_t)q[i] - z) * s;
        } else if (x->fmt == SH_I8) {
            const int8_t *q = (const int8_t *)x->data + base;
            for (int64_t i = 0; i < inner; i++) y[base + i] = (float)((int32_t)q[i] - z) * s;
        } else {
            const int32_t *q = (const int32_t *)x->data + base;
            for (int64_t i = 0; i < inner; i++) y[base + i] = (float)((int64_t)q[i] - z) * s;
        }
    });
    return SH_OK;
}

/* ---- DynamicQuantizeLinear ---------------------------------------------- */

static int dynq_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    if (in[0]->fmt != SH_F32)
        return sh_op_err(k, SH_EUNSUPPORTED, "input x has format %s, expected f32", fname(in[0]->fmt));
    sh_tensor_set_shape(out[0], SH_U8, in[0]->ndim, in[0]->shape);
    if (n_out > 1) sh_tensor_set_shape(out[1], SH_F32, 0, NULL);
    if (n_out > 2) sh_tensor_set_shape(out[2], SH_U8, 0, NULL);
    return SH_OK;
}

/* ONNX DynamicQuantizeLinear: scale = (max(0, max x) - min(0, min x)) / 255,
 * zero = sat(round(-min / scale)), q = sat(round(x / scale) + zero).
 * All-zero input: scale 0 is replaced... kept 0 and every q = zero = 0. */
void sh_qdynamic_params(const float *x, int64_t n, float *scale, int32_t *zero)
{
    float mn = 0.0f, mx = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    float s = (mx - mn) / 255.0f;
    float z = s > 0.0f ? sh_qround(0.0f - mn / s) : 0.0f;
    z = z < 0.0f ? 0.0f : z > 255.0f ? 255.0f : z;
    *scale = s;
    *zero = (int32_t)z;
}

static int dynq_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    int rc = dynq_infer(k, in, n_in, out, n_out);
    if (rc) return rc;
    const float *x = in[0]->data;
    int64_t n = sh_tensor_numel(in[0]);
    float s;
    int32_t z;
    sh_qdynamic_params(x, n, &s, &z);
    uint8_t *y = out[0]->data;
    if (s > 0.0f) {
        float zf = (float)z;
        for (int64_t i = 0; i < n; i++) {
            float q = sh_qround(x[i] / s) + zf;
            q = q < 0.0f ? 0.0f : q > 255.0f ? 255.0f : q;
            if (q != q) q = zf; /* NaN */
            y[i] = (uint8_t)(int32_t)q;
        }
    } else memset(y, z, (size_t)n);
    if (n_out > 1) *(float *)out[1]->data = s;
    if (n_out > 2) *(uint8_t *)out[2]->data = (uint8_t)z;
    return SH_OK;
}

/* ---- QLinearAdd (com.microsoft) ------------------------------------------ */

static int qadd_setup(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_qparam *pa, sh_qparam *pb, sh_qparam *pc,
                      int *nd, int64_t *shape)
{
    char b1[96], b2[96];
    if (n_in < 7 || !in[0] || !in[3] || !in[1] || !in[4] || !in[6])
        return sh_op_err(k, SH_EINVAL, "QLinearAdd needs A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale "
                                       "(C_zero_point optional)");
    const sh_tensor *A = in[0], *B = in[3];
    if ((A->fmt != SH_U8 && A->fmt != SH_I8) || B->fmt != A->fmt)
        return sh_op_err(k, SH_EUNSUPPORTED, "A (%s) and B (%s) must both be u8 or both i8", fname(A->fmt),
                         fname(B->fmt));
    unsigned m = SH_QMASK(A->fmt);
    int rc;
    if ((rc = sh_qparam_get(k, in[1], in[2], 0, m, "A", pa)) || (rc = sh_qparam_get(k, in[4], in[5], 0, m, "B", pb)) ||
        (rc = sh_qparam_get(k, in[6], n_in > 7 ? in[7] : NULL, 0, m, "C", pc)))
        return rc;
    if (!(n_in > 7 && in[7])) pc->zfmt = A->fmt;
    if (sh_broadcast_shape(A->ndim, A->shape, B->ndim, B->shape, nd, shape))
        return sh_op_err(k, SH_ESHAPE, "A %s and B %s do not broadcast", shs(A, b1, sizeof b1), shs(B, b2, sizeof b2));
    const char *act = sh_attr_string(k->node, "activation", "");
    if (*act && strcmp(act, "Relu") != 0) return sh_op_err(k, SH_EUNSUPPORTED, "activation '%s' (only Relu)", act);
    return SH_OK;
}

static int qadd_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    sh_qparam pa, pb, pc;
    int nd;
    int64_t shape[SH_MAX_DIMS];
    int rc = qadd_setup(k, in, n_in, &pa, &pb, &pc, &nd, shape);
    if (rc) return rc;
    sh_tensor_set_shape(out[0], in[0]->fmt, nd, shape);
    return SH_OK;
}

/* offset into a broadcast operand of the flat output index i */
static int64_t bcast_off(int64_t i, int nd, const int64_t *oshape, const sh_tensor *t)
{
    int64_t off = 0, stride = 1;
    for (int d = nd - 1; d >= 0; d--) {
        int64_t idx = i % oshape[d];
        i /= oshape[d];
        int td = d - (nd - t->ndim);
        if (td >= 0) {
            if (t->shape[td] != 1) off += idx * stride;
            stride *= t->shape[td];
        }
    }
    return off;
}

static int qadd_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    sh_qparam pa, pb, pc;
    int nd;
    int64_t shape[SH_MAX_DIMS];
    int rc = qadd_setup(k, in, n_in, &pa, &pb, &pc, &nd, shape);
    if (rc) return rc;
    const sh_tensor *A = in[0], *B = in[3];
    sh_format f = A->fmt;
    float ma = sh_qparam_scale(&pa, 0) / sh_qparam_scale(&pc, 0), mb = sh_qparam_scale(&pb, 0) / sh_qparam_scale(&pc, 0);
    float za = (float)sh_qparam_zero(&pa, 0), zb = (float)sh_qparam_zero(&pb, 0), zc = (float)sh_qparam_zero(&pc, 0);
    float lo = f == SH_U8 ? 0.0f : -128.0f, hi = f == SH_U8 ? 255.0f : 127.0f;
    if (*sh_attr_string(k->node, "activation", "") && zc > lo) lo = zc;
    int64_t n = sh_shape_numel(nd, shape);
    int same = sh_tensor_numel(A) == n && sh_tensor_numel(B) == n;
    int nt = n > (1 << 16) ? k->nthreads : 1;
#ifdef __SSE2__
    if (same) {
        /* the residual add of a static int8 CNN: 4 lanes, the same arithmetic */
        const uint8_t *pa = A->data, *pb = B->data;
        uint8_t *po = out[0]->data;
        __m128 vma = _mm_set1_ps(ma), vmb = _mm_set1_ps(mb), vza = _mm_set1_ps(za), vzb = _mm_set1_ps(zb);
        __m128 vlo = _mm_set1_ps(lo - zc), vhi = _mm_set1_ps(hi - zc);
        __m128i vzc = _mm_set1_epi32((int32_t)zc), zero = _mm_setzero_si128();
        int64_t i = 0;
        for (; i + 4 <= n; i += 4) {
            int32_t wa, wb;
            memcpy(&wa, pa + i, 4);
            memcpy(&wb, pb + i, 4);
            __m128i ia = _mm_cvtsi32_si128(wa), ib = _mm_cvtsi32_si128(wb);
            if (f == SH_U8) {
                ia = _mm_unpacklo_epi16(_mm_unpacklo_epi8(ia, zero), zero);
                ib = _mm_unpacklo_epi16(_mm_unpacklo_epi8(ib, zero), zero);
            } else {
                ia = _mm_srai_epi32(_mm_slli_epi32(_mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(wa), zero), zero), 24), 24);
                ib = _mm_srai_epi32(_mm_slli_epi32(_mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(wb), zero), zero), 24), 24);
            }
            __m128 a = _mm_sub_ps(_mm_cvtepi32_ps(ia), vza), b = _mm_sub_ps(_mm_cvtepi32_ps(ib), vzb);
            __m128 v = _mm_add_ps(_mm_mul_ps(a, vma), _mm_mul_ps(b, vmb));
            v = _mm_min_ps(_mm_max_ps(v, vlo), vhi);
            __m128i q = _mm_add_epi32(_mm_cvtps_epi32(v), vzc);
            __m128i w = _mm_packs_epi32(q, q);
            __m128i r = f == SH_U8 ? _mm_packus_epi16(w, w) : _mm_packs_epi16(w, w);
            int32_t four = _mm_cvtsi128_si32(r);
            memcpy(po + i, &four, 4);
        }
        for (; i < n; i++) {
            float a = (float)sh_qget(pa, f, i) - za, b = (float)sh_qget(pb, f, i) - zb;
            float q = sh_qround(a * ma + b * mb) + zc;
            q = q < lo ? lo : q > hi ? hi : q;
            if (f == SH_U8) po[i] = (uint8_t)(int32_t)q;
            else ((int8_t *)po)[i] = (int8_t)(int32_t)q;
        }
        return SH_OK;
    }
#endif
    SH_PAR_FOR(nt > 1, nt, for (int64_t i = 0; i < n; i++) {
        int64_t ia = same ? i : bcast_off(i, nd, shape, A), ib = same ? i : bcast_off(i, nd, shape, B);
        float a = (float)sh_qget(A->data, f, ia) - za, b = (float)sh_qget(B->data, f, ib) - zb;
        float q = sh_qround(a * ma + b * mb) + zc;
        q = q < lo ? lo : q > hi ? hi : q;
        if (f == SH_U8) ((uint8_t *)out[0]->data)[i] = (uint8_t)(int32_t)q;
        else ((int8_t *)out[0]->data)[i] = (int8_t)(int32_t)q;
    });
    return SH_OK;
}

/* ---- QLinearGlobalAveragePool (com.microsoft, channels_last = 0) -------- */

static int qgap_setup(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_qparam *px, sh_qparam *py)
{
    char b1[96];
    if (n_in < 4 || !in[1] || !in[3])
        return sh_op_err(k, SH_EINVAL, "QLinearGlobalAveragePool needs X, x_scale, x_zero_point, y_scale, y_zero_point");
    const sh_tensor *x = in[0];
    if (x->fmt != SH_U8 && x->fmt != SH_I8)
        return sh_op_err(k, SH_EUNSUPPORTED, "X has format %s, expected u8 or i8", fname(x->fmt));
    if (x->ndim < 3) return sh_op_err(k, SH_ESHAPE, "X %s: expected N,C plus spatial dims", shs(x, b1, sizeof b1));
    if (sh_attr_int(k->node, "channels_last", 0))
        return sh_op_err(k, SH_EUNSUPPORTED, "channels_last=1 is not supported");
    int rc = sh_qparam_get(k, in[1], in[2], 0, SH_QMASK(x->fmt), "x", px);
    if (!rc) rc = sh_qparam_get(k, in[3], n_in > 4 ? in[4] : NULL, 0, SH_QMASK(x->fmt), "y", py);
    if (!(n_in > 4 && in[4])) py->zfmt = x->fmt;
    return rc;
}

static int qgap_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    sh_qparam px, py;
    int rc = qgap_setup(k, in, n_in, &px, &py);
    if (rc) return rc;
    int64_t s[SH_MAX_DIMS];
    for (int d = 0; d < in[0]->ndim; d++) s[d] = d < 2 ? in[0]->shape[d] : 1;
    sh_tensor_set_shape(out[0], in[0]->fmt, in[0]->ndim, s);
    return SH_OK;
}

static int qgap_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    sh_qparam px, py;
    int rc = qgap_setup(k, in, n_in, &px, &py);
    if (rc) return rc;
    const sh_tensor *x = in[0];
    int64_t planes = x->shape[0] * x->shape[1], hw = sh_tensor_numel(x) / (planes ? planes : 1);
    int32_t zx = sh_qparam_zero(&px, 0);
    float m = sh_qparam_scale(&px, 0) / (sh_qparam_scale(&py, 0) * (float)hw), zy = (float)sh_qparam_zero(&py, 0);
    float lo = x->fmt == SH_U8 ? 0.0f : -128.0f, hi = x->fmt == SH_U8 ? 255.0f : 127.0f;
    for (int64_t p = 0; p < planes; p++) {
        int64_t s = 0, i = 0;
#ifdef __SSE2__
        if (x->fmt == SH_U8) {
            /* u8: sums of 16 bytes at a time (psadbw against zero) */
            const uint8_t *xp = (const uint8_t *)x->data + p * hw;
            __m128i z = _mm_setzero_si128(), v = z;
            for (; i + 16 <= hw; i += 16) v = _mm_add_epi64(v, _mm_sad_epu8(_mm_loadu_si128((const __m128i *)(xp + i)), z));
            int64_t two[2];
            _mm_storeu_si128((__m128i *)two, v);
            s = two[0] + two[1];
        }
#endif
        for (; i < hw; i++) s += sh_qget(x->data, x->fmt, p * hw + i);
        float q = sh_qround((float)(s - (int64_t)zx * hw) * m) + zy;
        q = q < lo ? lo : q > hi ? hi : q;
        if (x->fmt == SH_U8) ((uint8_t *)out[0]->data)[p] = (uint8_t)(int32_t)q;
        else ((int8_t *)out[0]->data)[p] = (int8_t)(int32_t)q;
    }
    return SH_OK;
}

/* ---- the family table -------------------------------------------------- */

int sh_qlinear_no_backward(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                           const sh_tensor *const *dout, sh_tensor *const *din)
{
    return sh_op_err(k, SH_EUNSUPPORTED,
                     "integer ops are inference only and have no gradient (train the f32 model, or fine-tune with "
                     "fake quantization, then quantize)");
}

/* Inputs that are quantization parameters never take gradients; the data
 * inputs do, so that training through one of these ops reaches
 * sh_qlinear_no_backward instead of silently stopping the gradient. */
#define NOBWD sh_qlinear_no_backward
static const sh_op_def op_quant = {"QuantizeLinear", 2, 3, 1, 1, quant_infer, quant_fwd, NOBWD, 0x6, 0, NULL, 0};
static const sh_op_def op_dequant = {"DequantizeLinear", 2, 3, 1, 1, dequant_infer, dequant_fwd, NOBWD, 0x6, 0, NULL, 0};
static const sh_op_def op_dynq = {"DynamicQuantizeLinear", 1, 1, 1, 3, dynq_infer, dynq_fwd, NOBWD, 0, 0, NULL, 0};
static const sh_op_def op_qadd = {"QLinearAdd", 7, 8, 1, 1, qadd_infer, qadd_fwd, NOBWD, 0xf6, 0, NULL, 0};
static const sh_op_def op_qgap = {"QLinearGlobalAveragePool", 4, 5, 1, 1, qgap_infer, qgap_fwd, NOBWD, 0x1e, 0, NULL, 0};

const sh_op_def *const sh_ops_qlinear[] = {&op_quant,          &op_dequant,        &op_dynq,
                                           &op_qadd,           &op_qgap,           &sh_op_qlinearconv,
                                           &sh_op_convinteger, &sh_op_qgemm,       &sh_op_qlinearmatmul,
                                           &sh_op_matmulinteger, NULL};
