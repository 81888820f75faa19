/* pool.c - MaxPool (with optional Indices), AveragePool, GlobalAveragePool,
 * GlobalMaxPool; 1-D and 2-D, forward and backward. */
#include <float.h>
#include <math.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "nn_ops.h"

static const char *shs(const sh_tensor *t, char *b, size_t n) { return sh_shape_str(t->ndim, t->shape, b, n); }

static int pool_setup(sh_kctx *k, const sh_tensor *x, int is_max, sh_win *w)
{
    if (x->fmt != SH_F32 && !(is_max && (x->fmt == SH_U8 || x->fmt == SH_I8))) return sh_op_err(k, SH_EUNSUPPORTED, "input format %s, expected f32", sh_format_get(x->fmt)->name);
    return sh_win_setup(k, x, NULL, 1, is_max, 1, w);
}

static void pool_out_shape(const sh_win *w, int64_t *s)
{
    s[0] = w->N, s[1] = w->C;
    if (w->nsp == 1) s[2] = w->OW;
    else if (w->nsp == 2) s[2] = w->OH, s[3] = w->OW;
    else s[2] = w->OD, s[3] = w->OH, s[4] = w->OW;
}

static int pool_infer_common(sh_kctx *k, const sh_tensor *const *in, sh_tensor *const *out, int n_out, int is_max)
{
    sh_win w;
    int rc = pool_setup(k, in[0], is_max, &w);
    if (rc) return rc;
    int64_t s[5];
    pool_out_shape(&w, s);
    sh_tensor_set_shape(out[0], in[0]->fmt, 2 + w.nsp, s);
    if (n_out > 1 && out[1]) {
        if (!is_max) return sh_op_err(k, SH_EUNSUPPORTED, "only one output supported");
        sh_tensor_set_shape(out[1], SH_I64, 2 + w.nsp, s);
    }
    return SH_OK;
}

static int maxpool_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    return pool_infer_common(k, in, out, n_out, 1);
}

static int avgpool_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    return pool_infer_common(k, in, out, n_out, 0);
}

/* argmax (index into the plane) of the window of output (od, oh, ow), -1 if
 * the window holds no input element */
static inline int64_t win_argmax(const sh_win *w, const float *xp, int64_t od, int64_t oh, int64_t ow, float *best)
{
    int64_t bi = -1;
    float bv = -INFINITY;
    for (int64_t a = 0; a < w->kd; a++) {
        int64_t id = od * w->sd - w->pf + a * w->dd;
        if (id < 0 || id >= w->D) continue;
        for (int64_t i = 0; i < w->kh; i++) {
            int64_t ih = oh * w->sh - w->pt + i * w->dh;
            if (ih < 0 || ih >= w->H) continue;
            for (int64_t j = 0; j < w->kw; j++) {
                int64_t iw = ow * w->sw - w->pl + j * w->dw;
                if (iw < 0 || iw >= w->W) continue;
                int64_t e = (id * w->H + ih) * w->W + iw;
                float v = xp[e];
                if (bi < 0 || v > bv || (isnan(v) && !isnan(bv))) bv = v, bi = e;
            }
        }
    }
    *best = bv;
    return bi;
}

static int maxpool_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    sh_win w;
    int rc = pool_setup(k, in[0], 1, &w);
    if (rc) return rc;
    const float *x = in[0]->data;
    float *y = out[0]->data;
    int64_t *idx = n_out > 1 && out[1] ? out[1]->data : NULL;
    int colmajor = sh_attr_int(k->node, "storage_order", 0) != 0;
    int64_t planes = w.N * w.C, HW = w.D * w.H * w.W, OHW = w.OD * w.OH * w.OW;
    sh_format fmt = in[0]->fmt;
    /* int8-ops (session 2): u8 2x2 stride-2 pooling straight on the bytes (the
     * static int8 CNNs' pool; the float round trip below cost more than it) */
    if (fmt == SH_U8 && !idx && w.D == 1 && w.kh == 2 && w.kw == 2 && w.sh == 2 && w.sw == 2 && w.dh == 1 &&
        w.dw == 1 && !w.pt && !w.pl && w.OH * 2 <= w.H && w.OW * 2 <= w.W) {
        const uint8_t *xb = in[0]->data;
        uint8_t *yb = out[0]->data;
        for (int64_t p = 0; p < planes; p++)
            for (int64_t oh = 0; oh < w.OH; oh++) {
                const uint8_t *r0 = xb + p * HW + 2 * oh * w.W, *r1 = r0 + w.W;
                uint8_t *yr = yb + p * OHW + oh * w.OW;
                int64_t ow = 0;
#ifdef __SSE2__
                /* 8 (or 4) outputs per step from 16 (8) bytes of both rows:
                 * byte max of the rows, then of each byte pair as 16-bit
                 * lanes; the last step overlaps the one before it */
                int64_t step = w.OW >= 8 ? 8 : w.OW >= 4 ? 4 : 0;
                for (int64_t o = 0; step && o < w.OW; o += step) {
                    if (o + step > w.OW) o = w.OW - step;
                    __m128i a = step == 8 ? _mm_loadu_si128((const __m128i *)(r0 + 2 * o))
                                          : _mm_loadl_epi64((const __m128i *)(r0 + 2 * o));
                    __m128i b = step == 8 ? _mm_loadu_si128((const __m128i *)(r1 + 2 * o))
                                          : _mm_loadl_epi64((const __m128i *)(r1 + 2 * o));
                    __m128i m = _mm_max_epu8(a, b);
                    __m128i e = _mm_max_epi16(_mm_and_si128(m, _mm_set1_epi16(0xff)), _mm_srli_epi16(m, 8));
                    __m128i q = _mm_packus_epi16(e, e);
                    if (step == 8) _mm_storel_epi64((__m128i *)(yr + o), q);
                    else {
                        int32_t v = _mm_cvtsi128_si32(q);
                        memcpy(yr + o, &v, 4);
                    }
                }
                if (step) ow = w.OW;
#endif
                for (; ow < w.OW; ow++) {
                    uint8_t a = r0[2 * ow] > r0[2 * ow + 1] ? r0[2 * ow] : r0[2 * ow + 1];
                    uint8_t b = r1[2 * ow] > r1[2 * ow + 1] ? r1[2 * ow] : r1[2 * ow + 1];
                    yr[ow] = a > b ? a : b;
                }
            }
        return SH_OK;
    }
    if (fmt != SH_F32) { /* int8 / uint8: pool a float copy (exact), convert back */
        int64_t nx = planes * HW, ny = planes * OHW;
        float *t = sh_kctx_scratch(k, sizeof(float) * (size_t)(nx + ny));
        if (!t) return sh_op_err(k, SH_ENOMEM, "out of memory");
        sh_format_get(fmt)->to_f32(in[0]->data, t, nx);
        x = t;
        y = t + nx;
    }
    int nth = k->nthreads > 0 ? k->nthreads : 1;
    int simple = w.D == 1 && w.kh == 2 && w.kw == 2 && w.sh == 2 && w.sw == 2 && w.dh == 1 && w.dw == 1 && !w.pt &&
                 !w.pl && w.OH * 2 <= w.H && w.OW * 2 <= w.W && !idx;
#pragma omp parallel for num_threads(nth) if (nth > 1 && planes * OHW * w.kh * w.kw > 1000000) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x + p * HW;
        float *yp = y + p * OHW;
        if (simple) {
            for (int64_t oh = 0; oh < w.OH; oh++) {
                const float *r0 = xp + 2 * oh * w.W, *r1 = r0 + w.W;
                float *yr = yp + oh * w.OW;
#pragma omp simd
                for (int64_t ow = 0; ow < w.OW; ow++) {
                    float a0 = r0[2 * ow], a1 = r0[2 * ow + 1], b0 = r1[2 * ow], b1 = r1[2 * ow + 1];
                    float a = a0 > a1 ? a0 : a1, b = b0 > b1 ? b0 : b1;
                    yr[ow] = a > b ? a : b;
                }
            }
            continue;
        }
        for (int64_t od = 0; od < w.OD; od++)
            for (int64_t oh = 0; oh < w.OH; oh++)
                for (int64_t ow = 0; ow < w.OW; ow++) {
                    float bv;
                    int64_t bi = win_argmax(&w, xp, od, oh, ow, &bv), o = (od * w.OH + oh) * w.OW + ow;
                    yp[o] = bv;
                    if (idx) { /* flat index into the input; storage_order=1: column-major (2-D) planes */
                        int64_t e = bi;
                        if (colmajor && bi >= 0) e = (bi % w.W) * w.H + (bi / w.W) % w.H + bi / (w.H * w.W) * w.H * w.W;
                        idx[p * OHW + o] = bi < 0 ? -1 : p * HW + e;
                    }
                }
    }
    if (fmt != SH_F32) sh_format_get(fmt)->from_f32(y, out[0]->data, planes * OHW);
    return SH_OK;
}

static int maxpool_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                       const sh_tensor *const *dout, sh_tensor *const *din)
{
    if (!dout[0] || !din[0]) return SH_OK;
    sh_win w;
    int rc = pool_setup(k, in[0], 1, &w);
    if (rc) return rc;
    if (in[0]->fmt != SH_F32) return sh_op_err(k, SH_EUNSUPPORTED, "backward needs f32 input");
    const float *x = in[0]->data, *dy = dout[0]->data;
    float *dx = din[0]->data;
    int64_t planes = w.N * w.C, HW = w.D * w.H * w.W, OHW = w.OD * w.OH * w.OW;
    int nth = k->nthreads > 0 ? k->nthreads : 1;
    SH_PAR_FOR(nth > 1 && planes * OHW * w.kh * w.kw > 1000000, nth, for (int64_t p = 0; p < planes; p++)
        for (int64_t od = 0; od < w.OD; od++)
            for (int64_t oh = 0; oh < w.OH; oh++)
                for (int64_t ow = 0; ow < w.OW; ow++) {
                    float bv;
                    int64_t bi = win_argmax(&w, x + p * HW, od, oh, ow, &bv);
                    if (bi >= 0) dx[p * HW + bi] += dy[p * OHW + (od * w.OH + oh) * w.OW + ow];
                });
    return SH_OK;
}

/* AveragePool window of output (od, oh, ow): clipped bounds and 1/divisor
 * (PyTorch semantics: with count_include_pad the window is clipped to the
 * padded input, otherwise to the input). */
typedef struct avg_box {
    int64_t d0, d1, h0, h1, w0, w1;
} avg_box;

static inline float avg_window(const sh_win *w, int cip, int64_t od, int64_t oh, int64_t ow, avg_box *b)
{
    int64_t ds = od * w->sd - w->pf, hs = oh * w->sh - w->pt, ws = ow * w->sw - w->pl;
    int64_t de = ds + w->kd, he = hs + w->kh, we = ws + w->kw;
    int64_t dep = de < w->D + w->pk ? de : w->D + w->pk;
    int64_t hep = he < w->H + w->pb ? he : w->H + w->pb, wep = we < w->W + w->pr ? we : w->W + w->pr;
    int64_t padded = (dep - ds) * (hep - hs) * (wep - ws);
    b->d0 = ds < 0 ? 0 : ds, b->h0 = hs < 0 ? 0 : hs, b->w0 = ws < 0 ? 0 : ws;
    b->d1 = de < w->D ? de : w->D, b->h1 = he < w->H ? he : w->H, b->w1 = we < w->W ? we : w->W;
    int64_t valid = (b->d1 - b->d0) * (b->h1 - b->h0) * (b->w1 - b->w0);
    int64_t div = cip ? padded : valid;
    return div > 0 ? 1.0f / (float)div : 0.0f;
}

static int avgpool_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    sh_win w;
    int rc = pool_setup(k, in[0], 0, &w);
    if (rc) return rc;
    int cip = (int)sh_attr_int(k->node, "count_include_pad", 0);
    const float *x = in[0]->data;
    float *y = out[0]->data;
    int64_t planes = w.N * w.C, HW = w.D * w.H * w.W, OHW = w.OD * w.OH * w.OW;
    int nth = k->nthreads > 0 ? k->nthreads : 1;
    SH_PAR_FOR(nth > 1 && planes * OHW * w.kh * w.kw > 1000000, nth, for (int64_t p = 0; p < planes; p++) {
        const float *xp = x + p * HW;
        for (int64_t od = 0; od < w.OD; od++)
            for (int64_t oh = 0; oh < w.OH; oh++)
                for (int64_t ow = 0; ow < w.OW; ow++) {
                    avg_box b;
                    float sc = avg_window(&w, cip, od, oh, ow, &b);
                    float s = 0.0f;
                    for (int64_t id = b.d0; id < b.d1; id++)
                        for (int64_t ih = b.h0; ih < b.h1; ih++)
                            for (int64_t iw = b.w0; iw < b.w1; iw++) s += xp[(id * w.H + ih) * w.W + iw];
                    y[p * OHW + (od * w.OH + oh) * w.OW + ow] = s * sc;
                }
    });
    return SH_OK;
}

static int avgpool_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                       const sh_tensor *const *dout, sh_tensor *const *din)
{
    if (!dout[0] || !din[0]) return SH_OK;
    sh_win w;
    int rc = pool_setup(k, in[0], 0, &w);
    if (rc) return rc;
    int cip = (int)sh_attr_int(k->node, "count_include_pad", 0);
    const float *dy = dout[0]->data;
    float *dx = din[0]->data;
    int64_t planes = w.N * w.C, HW = w.D * w.H * w.W, OHW = w.OD * w.OH * w.OW;
    int nth = k->nthreads > 0 ? k->nthreads : 1;
    SH_PAR_FOR(nth > 1 && planes * OHW * w.kh * w.kw > 1000000, nth, for (int64_t p = 0; p < planes; p++)
        for (int64_t od = 0; od < w.OD; od++)
            for (int64_t oh = 0; oh < w.OH; oh++)
                for (int64_t ow = 0; ow < w.OW; ow++) {
                    avg_box b;
                    float g = dy[p * OHW + (od * w.OH + oh) * w.OW + ow] * avg_window(&w, cip, od, oh, ow, &b);
                    for (int64_t id = b.d0; id < b.d1; id++)
                        for (int64_t ih = b.h0; ih < b.h1; ih++)
                            for (int64_t iw = b.w0; iw < b.w1; iw++) dx[p * HW + (id * w.H + ih) * w.W + iw] += g;
                });
    return SH_OK;
}

/* ---- global pools --------------------------------------------------- */

static int gpool_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    char b[96];
    const sh_tensor *x = in[0];
    if (x->fmt != SH_F32) return sh_op_err(k, SH_EUNSUPPORTED, "input format %s, expected f32", sh_format_get(x->fmt)->name);
    if (x->ndim < 3) return sh_op_err(k, SH_ESHAPE, "input %s: expected N,C and spatial dims", shs(x, b, sizeof b));
    int64_t s[SH_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) s[i] = i < 2 ? x->shape[i] : 1;
    sh_tensor_set_shape(out[0], SH_F32, x->ndim, s);
    return SH_OK;
}

static int gavg_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    const sh_tensor *x = in[0];
    int64_t planes = x->shape[0] * x->shape[1], S = sh_tensor_numel(x) / (planes ? planes : 1);
    const float *xd = x->data;
    float *y = out[0]->data;
    for (int64_t p = 0; p < planes; p++) {
        float s = 0.0f;
        const float *r = xd + p * S;
        for (int64_t i = 0; i < S; i++) s += r[i];
        y[p] = s / (float)S;
    }
    return SH_OK;
}

static int gavg_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                    const sh_tensor *const *dout, sh_tensor *const *din)
{
    if (!dout[0] || !din[0]) return SH_OK;
    const sh_tensor *x = in[0];
    int64_t planes = x->shape[0] * x->shape[1], S = sh_tensor_numel(x) / (planes ? planes : 1);
    const float *dy = dout[0]->data;
    float *dx = din[0]->data;
    for (int64_t p = 0; p < planes; p++) {
        float g = dy[p] / (float)S;
        for (int64_t i = 0; i < S; i++) dx[p * S + i] += g;
    }
    return SH_OK;
}

static int gmax_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    const sh_tensor *x = in[0];
    int64_t planes = x->shape[0] * x->shape[1], S = sh_tensor_numel(x) / (planes ? planes : 1);
    const float *xd = x->data;
    float *y = out[0]->data;
    for (int64_t p = 0; p < planes; p++) {
        const float *r = xd + p * S;
        float m = S ? r[0] : -INFINITY;
        for (int64_t i = 1; i < S; i++)
            if (r[i] > m) m = r[i];
        y[p] = m;
    }
    return SH_OK;
}

static int gmax_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                    const sh_tensor *const *dout, sh_tensor *const *din)
{
    if (!dout[0] || !din[0]) return SH_OK;
    const sh_tensor *x = in[0];
    int64_t planes = x->shape[0] * x->shape[1], S = sh_tensor_numel(x) / (planes ? planes : 1);
    const float *xd = x->data, *dy = dout[0]->data;
    float *dx = din[0]->data;
    for (int64_t p = 0; p < planes; p++) {
        const float *r = xd + p * S;
        int64_t bi = 0;
        for (int64_t i = 1; i < S; i++)
            if (r[i] > r[bi]) bi = i;
        if (S) dx[p * S + bi] += dy[p];
    }
    return SH_OK;
}

const sh_op_def sh_op_maxpool = {"MaxPool", 1, 1, 1, 2, maxpool_infer, maxpool_fwd, maxpool_bwd, 0, 0, NULL, 0};
const sh_op_def sh_op_avgpool = {"AveragePool", 1, 1, 1, 1, avgpool_infer, avgpool_fwd, avgpool_bwd, 0, 0, NULL, 0};
const sh_op_def sh_op_gavgpool = {"GlobalAveragePool", 1, 1, 1, 1, gpool_infer, gavg_fwd, gavg_bwd, 0, 0, NULL, 0};
const sh_op_def sh_op_gmaxpool = {"GlobalMaxPool", 1, 1, 1, 1, gpool_infer, gmax_fwd, gmax_bwd, 0, 0, NULL, 0};
