/* conv.c - Conv (1-D and 2-D, groups, strides, pads, dilations, auto_pad):
 * a direct AVX-512 kernel over output channels (>= 16 per group, stride 1
 * or 2: the path of the small CNNs, batch 1 and batches), a direct AVX2
 * kernel over positions (stride 1, fewer output channels), im2col + sgemm
 * otherwise, sgemm for 1x1 convolutions and a direct depthwise loop;
 * backward via col2im.  Also the window geometry shared with the pooling
 * ops. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "nn_ops.h"
#include "ops/conv_sparse.h"
#include "core/quant_formats.h"
#include "ops/gemm_quant.h"

#ifndef CONV_BAND_BYTES
#define CONV_BAND_BYTES (256 * 1024)
#endif

static const char *shs(const sh_tensor *t, char *b, size_t n) { return sh_shape_str(t->ndim, t->shape, b, n); }

static int attr_n(sh_kctx *k, const char *name, int want, int64_t *v, int64_t def)
{
    const int64_t *a;
    int n = sh_attr_ints(k->node, name, &a);
    if (n < 0 || n == 0) {
        for (int i = 0; i < want; i++) v[i] = def;
        return SH_OK;
    }
    if (n != want) return sh_op_err(k, SH_EINVAL, "attribute %s has %d values, expected %d", name, n, want);
    for (int i = 0; i < n; i++) v[i] = a[i];
    return SH_OK;
}

int sh_win_setup(sh_kctx *k, const sh_tensor *x, const int64_t *kernel, int allow_ceil, int allow_dil, int allow_3d,
                 sh_win *w)
{
    char b1[96];
    memset(w, 0, sizeof *w);
    int nsp = x->ndim - 2;
    if (nsp < 1 || nsp > (allow_3d ? 3 : 2))
        return sh_op_err(k, nsp == 3 ? SH_EUNSUPPORTED : SH_ESHAPE, "input %s: expected N,C plus 1%s spatial dims",
                         shs(x, b1, sizeof b1), allow_3d ? ", 2 or 3" : " or 2");
    int64_t ks[3], st[3], dl[3], pd[6];
    if (kernel) for (int i = 0; i < nsp; i++) ks[i] = kernel[i];
    else {
        const int64_t *a;
        int n = sh_attr_ints(k->node, "kernel_shape", &a);
        if (n != nsp)
            return sh_op_err(k, SH_EINVAL, "kernel_shape has %d values, input %s has %d spatial dims", n < 0 ? 0 : n,
                             shs(x, b1, sizeof b1), nsp);
        for (int i = 0; i < nsp; i++) ks[i] = a[i];
    }
    int rc;
    if ((rc = attr_n(k, "strides", nsp, st, 1)) || (rc = attr_n(k, "dilations", nsp, dl, 1)) ||
        (rc = attr_n(k, "pads", 2 * nsp, pd, 0)))
        return rc;
    for (int i = 0; i < nsp; i++) {
        if (ks[i] < 1 || st[i] < 1 || dl[i] < 1 || pd[i] < 0 || pd[i + nsp] < 0)
            return sh_op_err(k, SH_EINVAL, "bad kernel %lld / stride %lld / dilation %lld / pads %lld,%lld",
                             (long long)ks[i], (long long)st[i], (long long)dl[i], (long long)pd[i],
                             (long long)pd[i + nsp]);
        if (!allow_dil && dl[i] != 1) return sh_op_err(k, SH_EUNSUPPORTED, "dilations other than 1 are not supported");
    }
    const char *ap = sh_attr_string(k->node, "auto_pad", "NOTSET");
    int ceil_mode = allow_ceil ? (int)sh_attr_int(k->node, "ceil_mode", 0) : 0;
    int64_t in[3], out[3];
    for (int i = 0; i < nsp; i++) in[i] = x->shape[2 + i];
    for (int i = 0; i < nsp; i++) {
        int64_t ek = (ks[i] - 1) * dl[i] + 1;
        if (!strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER")) {
            out[i] = (in[i] + st[i] - 1) / st[i];
            int64_t tot = (out[i] - 1) * st[i] + ek - in[i];
            if (tot < 0) tot = 0;
            pd[i] = !strcmp(ap, "SAME_UPPER") ? tot / 2 : tot - tot / 2;
            pd[i + nsp] = tot - pd[i];
        } else if (!strcmp(ap, "VALID")) {
            pd[i] = pd[i + nsp] = 0;
            out[i] = in[i] >= ek ? (in[i] - ek) / st[i] + 1 : 0;
        } else if (!strcmp(ap, "NOTSET") || !*ap) {
            int64_t span = in[i] + pd[i] + pd[i + nsp] - ek;
            if (span < 0) out[i] = 0;
            else if (ceil_mode) {
                out[i] = (span + st[i] - 1) / st[i] + 1;
                /* the last window must start inside the input or left padding */
                if ((out[i] - 1) * st[i] >= in[i] + pd[i]) out[i]--;
            } else out[i] = span / st[i] + 1;
        } else return sh_op_err(k, SH_EINVAL, "auto_pad '%s' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID", ap);
        if (out[i] < 1)
            return sh_op_err(k, SH_ESHAPE, "input %s is smaller than the kernel (%lld, dilation %lld, pads %lld+%lld)",
                             shs(x, b1, sizeof b1), (long long)ks[i], (long long)dl[i], (long long)pd[i],
                             (long long)pd[i + nsp]);
    }
    w->nsp = nsp;
    w->N = x->shape[0];
    w->C = x->shape[1];
    w->D = w->kd = w->sd = w->dd = w->OD = 1;
    if (nsp == 3) {
        w->D = in[0], w->kd = ks[0], w->sd = st[0], w->dd = dl[0], w->pf = pd[0], w->pk = pd[3], w->OD = out[0];
        w->H = in[1], w->W = in[2];
        w->kh = ks[1], w->kw = ks[2], w->sh = st[1], w->sw = st[2], w->dh = dl[1], w->dw = dl[2];
        w->pt = pd[1], w->pl = pd[2], w->pb = pd[4], w->pr = pd[5];
        w->OH = out[1], w->OW = out[2];
    } else if (nsp == 1) {
        w->H = 1, w->W = in[0];
        w->kh = 1, w->kw = ks[0], w->sh = 1, w->sw = st[0], w->dh = 1, w->dw = dl[0];
        w->pt = w->pb = 0, w->pl = pd[0], w->pr = pd[1];
        w->OH = 1, w->OW = out[0];
    } else {
        w->H = in[0], w->W = in[1];
        w->kh = ks[0], w->kw = ks[1], w->sh = st[0], w->sw = st[1], w->dh = dl[0], w->dw = dl[1];
        w->pt = pd[0], w->pl = pd[1], w->pb = pd[2], w->pr = pd[3];
        w->OH = out[0], w->OW = out[1];
    }
    return SH_OK;
}

/* ---- Conv ------------------------------------------------------------ */

typedef struct conv_geom {
    sh_win w;
    int64_t M, G, Cg, Mg, Kc; /* out channels, groups, in/out channels per group, Cg*kh*kw */
    int64_t HW, OHW;
    int pointwise;            /* 1x1, stride 1, no pads: col == input */
    int depthwise;            /* Cg == 1: direct kernel */
    int relu;                 /* activation="Relu" (shrink extension): y = max(conv, 0) */
    const sh_sparse_hdr *sp;  /* packed sparse weight [M, Kc] (conv_sparse.c), or NULL */
} conv_geom;

/* A Conv weight packed sparse (csr / bcsr / nm, [M, Cg*kh*kw]): check it
 * against the input and kernel_shape; *h its validated header. */
static int sparse_weight(sh_kctx *k, const sh_tensor *x, const sh_tensor *wt, const sh_sparse_hdr **h, int64_t *ks)
{
    char b1[96], b2[96];
    const char *fn = sh_format_get(wt->fmt)->name;
    *h = NULL;
    if (!sh_format_is_sparse(wt->fmt) || wt->ndim != 2)
        return sh_op_err(k, SH_EUNSUPPORTED, "weight %s of format %s: a packed Conv weight must be a 2-D sparse matrix",
                         shs(wt, b2, sizeof b2), fn);
    if (x->fmt != SH_F32) return sh_op_err(k, SH_EUNSUPPORTED, "Conv with a sparse %s weight needs an f32 input", fn);
    const int64_t *ksa;
    int nks = sh_attr_ints(k->node, "kernel_shape", &ksa);
    if (x->ndim < 3 || x->ndim > 4 || nks != x->ndim - 2)
        return sh_op_err(k, SH_EUNSUPPORTED,
                         "input %s with a sparse %s weight %s: needs 1-D or 2-D Conv and kernel_shape (%d values)",
                         shs(x, b1, sizeof b1), fn, shs(wt, b2, sizeof b2), nks);
    int64_t kk = 1;
    for (int i = 0; i < nks; i++) ks[i] = ksa[i], kk *= ksa[i];
    int64_t G = sh_attr_int(k->node, "group", 1), C = x->shape[1];
    if (G < 1 || C % G || wt->shape[0] % G || wt->shape[1] != C / G * kk)
        return sh_op_err(k, SH_ESHAPE, "input %s, group %lld, kernel_shape: sparse %s weight %s should be [%lld, %lld]",
                         shs(x, b1, sizeof b1), (long long)G, fn, shs(wt, b2, sizeof b2), (long long)wt->shape[0],
                         (long long)(G >= 1 && C % G == 0 ? C / G * kk : -1));
    if (wt->data) {
        const sh_sparse_hdr *hh = wt->data;
        if (hh->magic != SH_SPARSE_MAGIC || hh->rows != wt->shape[0] || hh->cols != wt->shape[1])
            return sh_op_err(k, SH_EFORMAT, "sparse %s weight %s: header disagrees with the shape", fn,
                             shs(wt, b2, sizeof b2));
        *h = hh;
    }
    return SH_OK;
}

static int conv_setup(sh_kctx *k, const sh_tensor *const *in, int n_in, conv_geom *g)
{
    char b1[96], b2[96], b3[96];
    const sh_tensor *x = in[0], *wt = in[1], *b = n_in > 2 ? in[2] : NULL;
    g->sp = NULL;
    if (sh_format_get(wt->fmt) && sh_format_get(wt->fmt)->packed) {
        int64_t ks[2];
        int rc = sparse_weight(k, x, wt, &g->sp, ks);
        if (rc) return rc;
        if (b && (b->fmt != SH_F32 || b->ndim != 1 || sh_tensor_numel(b) != wt->shape[0]))
            return sh_op_err(k, SH_ESHAPE, "bias %s does not match sparse weight %s (%lld output channels)",
                             shs(b, b3, sizeof b3), shs(wt, b2, sizeof b2), (long long)wt->shape[0]);
        if ((rc = sh_win_setup(k, x, ks, 0, 1, 0, &g->w))) return rc;
        const char *act = sh_attr_string(k->node, "activation", "");
        if (*act && strcmp(act, "Relu") != 0)
            return sh_op_err(k, SH_EUNSUPPORTED, "activation '%s' (only Relu can be fused into Conv)", act);
        g->relu = *act != 0;
        g->G = sh_attr_int(k->node, "group", 1), g->M = wt->shape[0];
        g->Cg = x->shape[1] / g->G, g->Mg = g->M / g->G, g->Kc = wt->shape[1];
        g->HW = g->w.H * g->w.W, g->OHW = g->w.OH * g->w.OW;
        g->pointwise = g->depthwise = 0;
        return SH_OK;
    }
    if (x->fmt != SH_F32 || wt->fmt != SH_F32 || (b && b->fmt != SH_F32))
        return sh_op_err(k, SH_EUNSUPPORTED, "Conv needs f32 input, weight and bias");
    if (wt->ndim != x->ndim || x->ndim < 3)
        return sh_op_err(k, SH_ESHAPE, "input %s and weight %s: ranks differ or rank < 3", shs(x, b1, sizeof b1),
                         shs(wt, b2, sizeof b2));
    int64_t G = sh_attr_int(k->node, "group", 1);
    int64_t M = wt->shape[0], C = x->shape[1];
    if (G < 1 || C % G || M % G)
        return sh_op_err(k, SH_ESHAPE, "input %s has %lld channels, weight %s: group %lld does not divide channels",
                         shs(x, b1, sizeof b1), (long long)C, shs(wt, b2, sizeof b2), (long long)G);
    if (wt->shape[1] != C / G)
        return sh_op_err(k, SH_ESHAPE, "input %s has %lld channels, weight %s with group %lld expects %lld",
                         shs(x, b1, sizeof b1), (long long)C, shs(wt, b2, sizeof b2), (long long)G,
                         (long long)(wt->shape[1] * G));
    const int64_t *ksa;
    int nks = sh_attr_ints(k->node, "kernel_shape", &ksa);
    for (int i = 0; nks > 0 && i < nks && i + 2 < wt->ndim; i++)
        if (ksa[i] != wt->shape[2 + i] || nks != wt->ndim - 2)
            return sh_op_err(k, SH_ESHAPE, "kernel_shape attribute does not match weight %s", shs(wt, b2, sizeof b2));
    if (b && (sh_tensor_numel(b) != M || b->ndim != 1))
        return sh_op_err(k, SH_ESHAPE, "bias %s does not match weight %s (%lld output channels)",
                         shs(b, b3, sizeof b3), shs(wt, b2, sizeof b2), (long long)M);
    int rc = sh_win_setup(k, x, wt->shape + 2, 0, 1, 0, &g->w);
    if (rc) return rc;
    const char *act = sh_attr_string(k->node, "activation", "");
    if (*act && strcmp(act, "Relu") != 0)
        return sh_op_err(k, SH_EUNSUPPORTED, "activation '%s' (only Relu can be fused into Conv)", act);
    g->relu = *act != 0;
    g->M = M, g->G = G, g->Cg = C / G, g->Mg = M / G;
    g->Kc = g->Cg * g->w.kh * g->w.kw;
    g->HW = g->w.H * g->w.W, g->OHW = g->w.OH * g->w.OW;
    const sh_win *w = &g->w;
    g->pointwise = w->kh == 1 && w->kw == 1 && w->sh == 1 && w->sw == 1 && !w->pt && !w->pl && !w->pb && !w->pr;
    g->depthwise = g->Cg == 1 && G > 1 && !g->pointwise;
    return SH_OK;
}

static int conv_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    if (sh_format_get(in[1]->fmt)->is_quantized) return sh_conv_quantized_infer(k, in, n_in, out, n_out);
    conv_geom g;
    int rc = conv_setup(k, in, n_in, &g);
    if (rc) return rc;
    int64_t s[4] = {g.w.N, g.M, g.w.OH, g.w.OW};
    if (g.w.nsp == 1) s[2] = g.w.OW;
    sh_tensor_set_shape(out[0], SH_F32, 2 + g.w.nsp, s);
    return SH_OK;
}

/* col[(c*kh + i)*kw + j][oh*OW + ow] (row stride ldc) from one image's C
 * channels starting at x. */
/* (No OpenMP here: the gemm that follows runs on OpenBLAS's threads, and
 * spinning OpenMP workers would compete with them.) */
static void im2col_rows(const float *x, int64_t C, const sh_win *w, float *col, int64_t ldc, int64_t oh0, int64_t oh1)
{
    const int64_t H = w->H, W = w->W, OW = w->OW, kh = w->kh, kw = w->kw;
    int64_t rows = C * kh * kw;
    for (int64_t r = 0; r < rows; r++) {
        int64_t c = r / (kh * kw), i = (r / kw) % kh, j = r % kw;
        const float *xc = x + c * H * W;
        float *dst = col + r * ldc;
        int64_t offw = j * w->dw - w->pl;
        /* valid ow range: 0 <= ow*sw + offw < W */
        int64_t ow0 = offw >= 0 ? 0 : (-offw + w->sw - 1) / w->sw;
        int64_t ow1 = W - offw <= 0 ? 0 : (W - offw + w->sw - 1) / w->sw;
        if (ow1 > OW) ow1 = OW;
        if (ow0 > ow1) ow0 = ow1;
        for (int64_t oh = oh0; oh < oh1; oh++) {
            int64_t ih = oh * w->sh - w->pt + i * w->dh;
            float *d = dst + (oh - oh0) * OW;
            if (ih < 0 || ih >= H) {
                memset(d, 0, sizeof(float) * (size_t)OW);
                continue;
            }
            const float *src = xc + ih * W + offw;
            for (int64_t ow = 0; ow < ow0; ow++) d[ow] = 0.0f;
            if (w->sw == 1) memcpy(d + ow0, src + ow0, sizeof(float) * (size_t)(ow1 - ow0));
            else
                for (int64_t ow = ow0; ow < ow1; ow++) d[ow] = src[ow * w->sw];
            for (int64_t ow = ow1; ow < OW; ow++) d[ow] = 0.0f;
        }
    }
}

static void im2col(const float *x, int64_t C, const sh_win *w, float *col, int64_t ldc)
{
    im2col_rows(x, C, w, col, ldc, 0, w->OH);
}

/* Inverse of im2col: accumulate col into x (C channels). */
static void col2im(const float *col, int64_t C, const sh_win *w, float *x, int64_t ldc)
{
    const int64_t H = w->H, W = w->W, OH = w->OH, OW = w->OW, kh = w->kh, kw = w->kw;
    for (int64_t c = 0; c < C; c++) {
        float *xc = x + c * H * W;
        for (int64_t i = 0; i < kh; i++)
            for (int64_t j = 0; j < kw; j++) {
                const float *src = col + ((c * kh + i) * kw + j) * ldc;
                int64_t offw = j * w->dw - w->pl;
                int64_t ow0 = offw >= 0 ? 0 : (-offw + w->sw - 1) / w->sw;
                int64_t ow1 = W - offw <= 0 ? 0 : (W - offw + w->sw - 1) / w->sw;
                if (ow1 > OW) ow1 = OW;
                for (int64_t oh = 0; oh < OH; oh++) {
                    int64_t ih = oh * w->sh - w->pt + i * w->dh;
                    if (ih < 0 || ih >= H) continue;
                    float *d = xc + ih * W + offw;
                    const float *s = src + oh * OW;
                    if (w->sw == 1) {
#pragma omp simd
                        for (int64_t ow = ow0; ow < ow1; ow++) d[ow] += s[ow];
                    } else
                        for (int64_t ow = ow0; ow < ow1; ow++) d[ow * w->sw] += s[ow];
                }
            }
    }
}

/* Direct depthwise conv (Cg == 1): output channel m reads input channel m / Mg. */
static void conv_depthwise(const conv_geom *g, const float *x, const float *wt, const float *bias, float *restrict y,
                           int nth)
{
    const sh_win *w = &g->w;
    const int64_t H = w->H, W = w->W, OH = w->OH, OW = w->OW, kh = w->kh, kw = w->kw;
    int64_t planes = w->N * g->M;
#pragma omp parallel for num_threads(nth) if (nth > 1 && planes * OH * OW * kh * kw > 1000000) schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        int64_t n = pl / g->M, m = pl % g->M, c = m / g->Mg;
        const float *xc = x + (n * w->C + c) * H * W;
        const float *wm = wt + m * kh * kw;
        float *yp = y + pl * OH * OW;
        float b0 = bias ? bias[m] : 0.0f;
        for (int64_t oh = 0; oh < OH; oh++) {
            float *yr = yp + oh * OW;
            for (int64_t ow = 0; ow < OW; ow++) yr[ow] = b0;
            for (int64_t i = 0; i < kh; i++) {
                int64_t ih = oh * w->sh - w->pt + i * w->dh;
                if (ih < 0 || ih >= H) continue;
                const float *xr = xc + ih * W;
                for (int64_t j = 0; j < kw; j++) {
                    float wv = wm[i * kw + j];
                    int64_t offw = j * w->dw - w->pl;
                    int64_t ow0 = offw >= 0 ? 0 : (-offw + w->sw - 1) / w->sw;
                    int64_t ow1 = W - offw <= 0 ? 0 : (W - offw + w->sw - 1) / w->sw;
                    if (ow1 > OW) ow1 = OW;
                    const float *restrict s = xr + offw;
                    float *restrict yo = yr;
                    if (w->sw == 1) {
#pragma omp simd
                        for (int64_t ow = ow0; ow < ow1; ow++) yo[ow] += wv * s[ow];
                    } else
                        for (int64_t ow = ow0; ow < ow1; ow++) yo[ow] += wv * s[ow * w->sw];
                }
            }
        }
    }
}


/* ---- direct stride-1 kernel (AVX2 + FMA) -------------------------------
 * Implicit im2col: the input (one image, one group) is copied once into a
 * zero-padded buffer xp [Cg][Hp][Wp]; output position p = oh*Wp + ow of a
 * "wide" output grid (ow < Wp, the columns >= OW are junk) reads tap (i,j)
 * of channel c at xp[c][p + i*dh*Wp + j*dw], so a run of consecutive p is a
 * contiguous load.  A register tile is 4 output channels x 24 positions
 * (12 accumulators).  Results go to yw [Mg][Pr], then are compacted into y
 * with the bias. */
#define DT_P 24 /* output positions per register tile */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SH_CONV_DIRECT 1

/* 4 output channels x (8*nv) positions; nv is a constant after inlining */
__attribute__((target("avx2,fma"), always_inline)) static inline void
dtile4_n(const float *xp, int64_t plane, int64_t Cg, const int64_t *offs, int ntap, const float *w, int64_t wstride,
         float *yw, int64_t ldy, const int nv)
{
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
    __m256 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
    const float *w0 = w, *w1 = w + wstride, *w2 = w + 2 * wstride, *w3 = w + 3 * wstride;
    for (int64_t c = 0; c < Cg; c++) {
        const float *xc = xp + c * plane;
        for (int t = 0; t < ntap; t++) {
            const float *xs = xc + offs[t];
            __m256 x0 = _mm256_loadu_ps(xs), x1 = x0, x2 = x0, wv;
            if (nv > 1) x1 = _mm256_loadu_ps(xs + 8);
            if (nv > 2) x2 = _mm256_loadu_ps(xs + 16);
#define DT_ROW(W, A0, A1, A2)                                                                                   \
    wv = _mm256_broadcast_ss(W + t);                                                                          \
    A0 = _mm256_fmadd_ps(wv, x0, A0);                                                                         \
    if (nv > 1) A1 = _mm256_fmadd_ps(wv, x1, A1);                                                             \
    if (nv > 2) A2 = _mm256_fmadd_ps(wv, x2, A2);
            DT_ROW(w0, a00, a01, a02)
            DT_ROW(w1, a10, a11, a12)
            DT_ROW(w2, a20, a21, a22)
            DT_ROW(w3, a30, a31, a32)
#undef DT_ROW
        }
        w0 += ntap, w1 += ntap, w2 += ntap, w3 += ntap;
    }
#define DT_STORE(A0, A1, A2)                                                                                    \
    _mm256_storeu_ps(yw, A0);                                                                                 \
    if (nv > 1) _mm256_storeu_ps(yw + 8, A1);                                                                 \
    if (nv > 2) _mm256_storeu_ps(yw + 16, A2);                                                                \
    yw += ldy;
    DT_STORE(a00, a01, a02)
    DT_STORE(a10, a11, a12)
    DT_STORE(a20, a21, a22)
    DT_STORE(a30, a31, a32)
#undef DT_STORE
}

__attribute__((target("avx2,fma"))) static void dtile4(const float *xp, int64_t plane, int64_t Cg, const int64_t *offs,
                                                      int ntap, const float *w, int64_t wstride, float *yw, int64_t ldy,
                                                      int nv)
{
    if (nv == 3) dtile4_n(xp, plane, Cg, offs, ntap, w, wstride, yw, ldy, 3);
    else if (nv == 2) dtile4_n(xp, plane, Cg, offs, ntap, w, wstride, yw, ldy, 2);
    else dtile4_n(xp, plane, Cg, offs, ntap, w, wstride, yw, ldy, 1);
}

/* 1 output channel x (8*nv) positions (channel tails) */
__attribute__((target("avx2,fma"))) static void dtile1(const float *xp, int64_t plane, int64_t Cg, const int64_t *offs,
                                                      int ntap, const float *w, float *yw, int nv)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0;
    for (int64_t c = 0; c < Cg; c++) {
        const float *xc = xp + c * plane;
        for (int t = 0; t < ntap; t++) {
            const float *xs = xc + offs[t];
            __m256 wv = _mm256_broadcast_ss(w + t);
            a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xs), a0);
            if (nv > 1) a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xs + 8), a1);
            if (nv > 2) a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xs + 16), a2);
        }
        w += ntap;
    }
    _mm256_storeu_ps(yw, a0);
    if (nv > 1) _mm256_storeu_ps(yw + 8, a1);
    if (nv > 2) _mm256_storeu_ps(yw + 16, a2);
}

static int cpu_has_avx2_fma(void)
{
    /* libgcc initialises the CPU model before main (no state of ours) */
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
#define SH_CONV_DIRECT 0
#endif

#if SH_CONV_DIRECT
/* Sizes of the direct path's buffers (floats): padded input and wide output. */
static void direct_sizes(const conv_geom *g, int64_t *xsz, int64_t *ysz, int64_t *Hp, int64_t *Wp, int64_t *Pr)
{
    const sh_win *w = &g->w;
    *Hp = w->H + w->pt + w->pb, *Wp = w->W + w->pl + w->pr;
    int64_t P = w->OH * *Wp;
    *Pr = (P + 7) / 8 * 8; /* tiles of 24, the last one of 8 or 16 */
    /* the last tile reads up to index Cg*Hp*Wp + (kw-1)*dw + (Pr-P) - 1 */
    *xsz = g->Cg * *Hp * *Wp + (*Pr - P) + (w->kw - 1) * w->dw + 16;
    *ysz = g->Mg * *Pr;
}
#endif

static int direct_ok(const conv_geom *g)
{
#if SH_CONV_DIRECT
    const sh_win *w = &g->w;
    return cpu_has_avx2_fma() && w->sh == 1 && w->sw == 1 && !g->pointwise && !g->depthwise && g->Cg >= 4 && w->kh * w->kw <= 64;
#else
    (void)g;
    return 0;
#endif
}

#if SH_CONV_DIRECT
/* One image: x [C][H][W] -> y [M][OH][OW]. */
static void conv_direct_image(const conv_geom *g, const float *x, const float *wt, const float *bias, float *y,
                              float *xp, float *yw, int nth, int relu)
{
    const sh_win *w = &g->w;
    int64_t Hp, Wp, Pr, xsz, ysz;
    direct_sizes(g, &xsz, &ysz, &Hp, &Wp, &Pr);
    int64_t plane = Hp * Wp, OHW = g->OHW, Kc = g->Kc;
    int64_t offs[64];
    int ntap = (int)(w->kh * w->kw);
    for (int64_t i = 0; i < w->kh; i++)
        for (int64_t j = 0; j < w->kw; j++) offs[i * w->kw + j] = i * w->dh * Wp + j * w->dw;
    int64_t nmb = (g->Mg + 3) / 4, npb = (Pr + DT_P - 1) / DT_P;
    for (int64_t gi = 0; gi < g->G; gi++) {
        const float *xg = x + gi * g->Cg * w->H * w->W;
        memset(xp, 0, sizeof(float) * (size_t)xsz);
        for (int64_t c = 0; c < g->Cg; c++)
            for (int64_t h = 0; h < w->H; h++)
                memcpy(xp + c * plane + (h + w->pt) * Wp + w->pl, xg + (c * w->H + h) * w->W, sizeof(float) * (size_t)w->W);
        const float *wg = wt + gi * g->Mg * Kc;
        int64_t work = nmb * npb;
        SH_PAR_FOR(nth > 1 && g->Mg * Pr * Kc > 200000, nth, for (int64_t q = 0; q < work; q++) {
            int64_t pb = q / nmb, mb = q % nmb, m0 = mb * 4, p0 = pb * DT_P;
            int nv = (int)((Pr - p0) / 8 < 3 ? (Pr - p0) / 8 : 3);
            if (m0 + 4 <= g->Mg) dtile4(xp + p0, plane, g->Cg, offs, ntap, wg + m0 * Kc, Kc, yw + m0 * Pr + p0, Pr, nv);
            else
                for (int64_t m = m0; m < g->Mg; m++)
                    dtile1(xp + p0, plane, g->Cg, offs, ntap, wg + m * Kc, yw + m * Pr + p0, nv);
        });
        float *yg = y + gi * g->Mg * OHW;
        for (int64_t m = 0; m < g->Mg; m++) {
            float b = bias ? bias[gi * g->Mg + m] : 0.0f;
            for (int64_t oh = 0; oh < w->OH; oh++) {
                const float *s = yw + m * Pr + oh * Wp;
                float *d = yg + m * OHW + oh * w->OW;
                if (relu) {
#pragma omp simd
                    for (int64_t ow = 0; ow < w->OW; ow++) {
                        float v = s[ow] + b;
                        d[ow] = v > 0.0f ? v : 0.0f;
                    }
                } else {
#pragma omp simd
                    for (int64_t ow = 0; ow < w->OW; ow++) d[ow] = s[ow] + b;
                }
            }
        }
    }
}
#endif

/* ---- direct kernel over output channels (AVX-512) ----------------------
 * For Mg >= 16: weights packed once per node as wp[g][block][Cg*kh*kw][16*MB]
 * (kept in the node's state, re-packed when the weight changes: pointer,
 * shape and a checksum of every word).  A register tile is 16*MB output
 * channels x NP (<= 12) consecutive output positions of one output row; each
 * tap loads MB weight vectors and broadcasts NP input values of the
 * zero-padded input xp [Cg][Hp][Wp] (stride SW).  Computes exactly the OH*OW
 * outputs (no padding columns), any stride 1 / 2, dilation, bias and Relu
 * in registers.  Tiles go to tmp [NP][16*MB] and are scattered into NCHW. */
/* The node's state: the packed weights of the direct kernel, or the plan of
 * a sparse weight (conv_sparse.h). */
typedef struct oc_pack {
    const void *src;     /* weight the pack was made from */
    int64_t M, Kc, G, MB;
    uint32_t sum;
    float *wp;
    sh_conv_sparse_plan *sp;
    /* a weight-only quantized weight prepared by conv_quant.c (sh_conv_qstate) */
    void *qs;
    /* or unpacked to f32 (see conv_unpacked) */
    const void *qsrc;
    size_t qbytes;
    uint32_t qsum;
    sh_tensor qw;
} oc_pack;

static void oc_pack_free(void *st)
{
    oc_pack *p = st;
    if (!p) return;
    free(p->wp);
    sh_conv_sparse_plan_free(p->sp);
    sh_conv_qstate_free((sh_conv_qstate *)p->qs);
    free(p->qw.data);
    free(p);
}

/* Checksum of a weight: every word of small weights, 512 words spread over
 * large ones (reading all of a large weight at every run would cost more
 * cache than the convolution can spare).  Training and BN re-folding change
 * every word; a caller that edits a few elements of a large weight in place
 * makes a new program (or changes the data pointer). */
static uint32_t oc_checksum(const float *w, int64_t n)
{
    const uint32_t *u = (const uint32_t *)w;
    uint32_t s = (uint32_t)n;
    if (n <= 4096) {
        for (int64_t i = 0; i < n; i++) {
            s = (s ^ u[i]) * 0x9E3779B1u;
            s ^= s >> 16;
        }
        return s;
    }
    for (int64_t k = 0; k < 512; k++) {
        int64_t i = k * (n / 512) + (k * 7919) % (n / 512);
        s = (s ^ u[i]) * 0x9E3779B1u;
        s ^= s >> 16;
    }
    s = (s ^ u[n - 1]) * 0x9E3779B1u;
    return s ^ (s >> 16);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define SH_CONV_OC 1
#define OC_MAXP 12


#define OC_TILE_DEF(MB, SW, NP)                                                                                       \
    __attribute__((target("avx512f"))) static void oc_tile_##MB##_##SW##_##NP(                                     \
        const float *xs, int64_t plane, int64_t Cg, const int64_t *offs, int ntap, const float *wp,                 \
        const float *bias, int relu, float *yo, int64_t ldo, int64_t mend)                                         \
    {                                                                                                               \
        __m512 acc[MB][NP];                                                                                         \
        _Pragma("GCC unroll 4") for (int v = 0; v < MB; v++) {                                                      \
            __m512 b = bias ? _mm512_loadu_ps(bias + 16 * v) : _mm512_setzero_ps();                                 \
            _Pragma("GCC unroll 12") for (int p = 0; p < NP; p++) acc[v][p] = b;                                    \
        }                                                                                                           \
        for (int64_t c = 0; c < Cg; c++) {                                                                          \
            const float *xc = xs + c * plane;                                                                       \
            for (int t = 0; t < ntap; t++) {                                                                        \
                const float *xt = xc + offs[t];                                                                     \
                __m512 w[MB];                                                                                       \
                _Pragma("GCC unroll 4") for (int v = 0; v < MB; v++) w[v] = _mm512_loadu_ps(wp + 16 * v);           \
                wp += 16 * MB;                                                                                      \
                _Pragma("GCC unroll 12") for (int p = 0; p < NP; p++) {                                             \
                    __m512 xv = _mm512_set1_ps(xt[p * SW]);                                                         \
                    _Pragma("GCC unroll 4") for (int v = 0; v < MB; v++) acc[v][p] =                                \
                        _mm512_fmadd_ps(w[v], xv, acc[v][p]);                                                       \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
        __m512 z = _mm512_setzero_ps();                                                                             \
        __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),   \
                                         _mm512_set1_epi32((int)ldo));                                              \
        _Pragma("GCC unroll 4") for (int v = 0; v < MB; v++) {                                                      \
            int64_t left = mend - 16 * v;                                                                           \
            __mmask16 mk = left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);          \
            float *yv = yo + 16 * v * ldo;                                                                          \
            _Pragma("GCC unroll 12") for (int p = 0; p < NP; p++)                                                   \
                _mm512_mask_i32scatter_ps(yv + p, mk, idx, relu ? _mm512_max_ps(acc[v][p], z) : acc[v][p], 4);      \
        }                                                                                                           \
    }
#define OC_TILES(MB, SW)                                                                                              \
    OC_TILE_DEF(MB, SW, 1) OC_TILE_DEF(MB, SW, 2) OC_TILE_DEF(MB, SW, 3) OC_TILE_DEF(MB, SW, 4)                      \
    OC_TILE_DEF(MB, SW, 5) OC_TILE_DEF(MB, SW, 6) OC_TILE_DEF(MB, SW, 7) OC_TILE_DEF(MB, SW, 8)                      \
    OC_TILE_DEF(MB, SW, 9) OC_TILE_DEF(MB, SW, 10) OC_TILE_DEF(MB, SW, 11) OC_TILE_DEF(MB, SW, 12)
OC_TILES(1, 1)
OC_TILES(1, 2)
OC_TILES(2, 1)
OC_TILES(2, 2)
typedef void (*oc_tile_fn)(const float *, int64_t, int64_t, const int64_t *, int, const float *, const float *, int,
                           float *, int64_t, int64_t);
#define OC_ROW(MB, SW)                                                                                                \
    {NULL, oc_tile_##MB##_##SW##_1, oc_tile_##MB##_##SW##_2, oc_tile_##MB##_##SW##_3, oc_tile_##MB##_##SW##_4,       \
     oc_tile_##MB##_##SW##_5, oc_tile_##MB##_##SW##_6, oc_tile_##MB##_##SW##_7, oc_tile_##MB##_##SW##_8,             \
     oc_tile_##MB##_##SW##_9, oc_tile_##MB##_##SW##_10, oc_tile_##MB##_##SW##_11, oc_tile_##MB##_##SW##_12}
static oc_tile_fn const oc_fns[2][2][OC_MAXP + 1] = {{OC_ROW(1, 1), OC_ROW(1, 2)}, {OC_ROW(2, 1), OC_ROW(2, 2)}};

static int oc_ok(const conv_geom *g)
{
    const sh_win *w = &g->w;
    if (g->depthwise || g->pointwise || g->Mg < 16 || (w->sw != 1 && w->sw != 2) || w->kh * w->kw > 64) return 0;
    if (g->Kc < 16 && g->w.N == 1) return 0; /* few taps per tile: im2col + sgemm does better at batch 1 */
    /* SHRINK_CPU=ref / avx2 (see sh_cpu_level) turns this path off */
    const char *lv = getenv("SHRINK_CPU");
    if (lv && *lv && strcmp(lv, "avx512") != 0) return 0;
    return __builtin_cpu_supports("avx512f");
}

/* Packed weights of this node (re-packed when the weight changed). */
static const float *oc_weights(sh_kctx *k, const conv_geom *g, const sh_tensor *wt, int64_t MB)
{
    int64_t Kc = g->Kc, Mg = g->Mg, VB = 16 * MB, nblk = (Mg + VB - 1) / VB;
    int64_t n = sh_tensor_numel(wt);
    uint32_t sum = oc_checksum(wt->data, n);
    oc_pack *p = k->state ? *k->state : NULL;
    if (p && p->src == wt->data && p->M == g->M && p->Kc == Kc && p->G == g->G && p->MB == MB && p->sum == sum)
        return p->wp;
    if (!k->state) return NULL;
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p) return NULL;
        *k->state = p;
    }
    free(p->wp);
    p->src = NULL;
    p->wp = aligned_alloc(64, sizeof(float) * (size_t)((g->G * nblk * Kc * VB + 15) / 16 * 16));
    if (!p->wp) return NULL;
    const float *w = wt->data;
    for (int64_t gi = 0; gi < g->G; gi++)
        for (int64_t b = 0; b < nblk; b++) {
            float *d = p->wp + (gi * nblk + b) * Kc * VB;
            for (int64_t kc = 0; kc < Kc; kc++)
                for (int64_t v = 0; v < VB; v++) {
                    int64_t m = b * VB + v;
                    d[kc * VB + v] = m < Mg ? w[(gi * Mg + m) * Kc + kc] : 0.0f;
                }
        }
    p->src = wt->data, p->M = g->M, p->Kc = Kc, p->G = g->G, p->MB = MB, p->sum = sum;
    return p->wp;
}

typedef struct oc_run {
    const conv_geom *g;
    const float *wp, *bp;
    int64_t Wp, plane, xsz, nblk, VB, npc, pw, work;
    int64_t offs[64];
    int ntap;
    oc_tile_fn const *fns;
} oc_run;

/* Pad image n, group gi into xp. */
static void oc_pad(const oc_run *r, const float *x, int64_t n, int64_t gi, float *xp)
{
    const conv_geom *g = r->g;
    const sh_win *w = &g->w;
    const float *xg = x + (n * w->C + gi * g->Cg) * g->HW;
    if (w->pt || w->pb || w->pl || w->pr) {
        memset(xp, 0, sizeof(float) * (size_t)r->xsz);
        for (int64_t c = 0; c < g->Cg; c++)
            for (int64_t h = 0; h < w->H; h++)
                memcpy(xp + c * r->plane + (h + w->pt) * r->Wp + w->pl, xg + (c * w->H + h) * w->W,
                       sizeof(float) * (size_t)w->W);
    } else memcpy(xp, xg, sizeof(float) * (size_t)(g->Cg * r->plane));
}

/* Tiles q0..q1 of image n, group gi (input padded in xp) into yg, the
 * group's [Mg][OH][OW] output. */
static void oc_tiles(const oc_run *r, const float *xp, float *yg, int64_t gi, int64_t q0, int64_t q1)
{
    const conv_geom *g = r->g;
    const sh_win *w = &g->w;
    int64_t VB = r->VB, nblk = r->nblk, OHW = g->OHW;
    const float *wg = r->wp + gi * nblk * g->Kc * VB, *bg = r->bp + gi * nblk * VB;
    for (int64_t q = q0; q < q1; q++) {
        int64_t b = q % nblk, rr = q / nblk, oh = rr / r->npc, ow0 = (rr % r->npc) * r->pw;
        int64_t np = w->OW - ow0 < r->pw ? w->OW - ow0 : r->pw;
        const float *xs = xp + oh * w->sh * r->Wp + ow0 * w->sw;
        int64_t mend = g->Mg - b * VB < VB ? g->Mg - b * VB : VB;
        float *yo = yg + b * VB * OHW + oh * w->OW + ow0;
        r->fns[np](xs, r->plane, g->Cg, r->offs, r->ntap, wg + b * g->Kc * VB, bg + b * VB, g->relu, yo, OHW, mend);
    }
}

static int conv_oc(sh_kctx *k, const conv_geom *g, const sh_tensor *const *in, int n_in, sh_tensor *const *out)
{
    const sh_win *w = &g->w;
    const float *x = in[0]->data, *bias = n_in > 2 && in[2] ? in[2]->data : NULL;
    float *y = out[0]->data;
    oc_run r;
    r.g = g;
    int64_t MB = g->Mg >= 32 ? 2 : 1;
    r.VB = 16 * MB, r.nblk = (g->Mg + r.VB - 1) / r.VB;
    r.wp = oc_weights(k, g, in[1], MB);
    if (!r.wp) return sh_op_err(k, SH_ENOMEM, "out of memory packing conv weights");
    int64_t Hp = w->H + w->pt + w->pb;
    r.Wp = w->W + w->pl + w->pr, r.plane = Hp * r.Wp;
    r.xsz = (g->Cg * r.plane + 16 + 15) / 16 * 16;
    int64_t Mpad = g->G * r.nblk * r.VB;
    int nth = k->nthreads > 0 ? k->nthreads : 1;
    int64_t NG = w->N * g->G;
    /* batches: one image (and group) per thread at a time */
    int batched = nth > 1 && NG >= 2 * nth;
    int nbuf = batched ? nth : 1;
    /* batches: tiles scatter into a small cache-hot buffer per thread that is
     * then copied out (scattering into cold output lines is slow) */
    int64_t ysz = w->N > 1 ? (g->Mg * g->OHW + 15) / 16 * 16 : 0;
    /* scratch: padded bias, then a padded input (and output) per thread */
    float *bp = sh_kctx_scratch(k, sizeof(float) * (size_t)(Mpad + 16 + (int64_t)nbuf * (r.xsz + ysz) + 16));
    if (!bp) return sh_op_err(k, SH_ENOMEM, "out of memory for conv buffers");
    float *xbuf = bp + (Mpad + 15) / 16 * 16;
    for (int64_t gi = 0; gi < g->G; gi++)
        for (int64_t m = 0; m < r.nblk * r.VB; m++)
            bp[gi * r.nblk * r.VB + m] = bias && m < g->Mg ? bias[gi * g->Mg + m] : 0.0f;
    r.bp = bp;
    r.ntap = (int)(w->kh * w->kw);
    for (int64_t i = 0; i < w->kh; i++)
        for (int64_t j = 0; j < w->kw; j++) r.offs[i * w->kw + j] = i * w->dh * r.Wp + j * w->dw;
    r.npc = (w->OW + OC_MAXP - 1) / OC_MAXP, r.pw = (w->OW + r.npc - 1) / r.npc;
    r.fns = oc_fns[MB - 1][w->sw - 1];
    r.work = r.nblk * w->OH * r.npc;
    if (batched) {
#pragma omp parallel for num_threads(nth) schedule(dynamic, 1)
        for (int64_t ng = 0; ng < NG; ng++) {
#ifdef _OPENMP
            float *xp = xbuf + (int64_t)omp_get_thread_num() * (r.xsz + ysz);
#else
            float *xp = xbuf;
#endif
            int64_t n = ng / g->G, gi = ng % g->G;
            float *yg = y + (n * g->M + gi * g->Mg) * g->OHW;
            oc_pad(&r, x, n, gi, xp);
            oc_tiles(&r, xp, ysz ? xp + r.xsz : yg, gi, 0, r.work);
            if (ysz) memcpy(yg, xp + r.xsz, sizeof(float) * (size_t)(g->Mg * g->OHW));
        }
        return SH_OK;
    }
    int par = nth > 1 && g->Mg * g->OHW * g->Kc > 100000 && r.work >= 2;
    for (int64_t ng = 0; ng < NG; ng++) {
        int64_t n = ng / g->G, gi = ng % g->G;
        float *yg = y + (n * g->M + gi * g->Mg) * g->OHW, *yt = ysz ? xbuf + r.xsz : yg;
        oc_pad(&r, x, n, gi, xbuf);
        if (!par) {
            oc_tiles(&r, xbuf, yt, gi, 0, r.work);
            if (ysz) memcpy(yg, yt, sizeof(float) * (size_t)(g->Mg * g->OHW));
            continue;
        }
#pragma omp parallel num_threads(nth)
        {
#ifdef _OPENMP
            int t = omp_get_thread_num(), T = omp_get_num_threads();
#else
            int t = 0, T = 1;
#endif
            oc_tiles(&r, xbuf, yt, gi, r.work * t / T, r.work * (t + 1) / T);
        }
        if (ysz) memcpy(yg, yt, sizeof(float) * (size_t)(g->Mg * g->OHW));
    }
    return SH_OK;
}
#else
#define SH_CONV_OC 0
#endif

static void add_bias(float *y, const float *bias, int64_t M, int64_t OHW)
{
    if (!bias) return;
    for (int64_t m = 0; m < M; m++) {
        float b = bias[m];
        float *r = y + m * OHW;
#pragma omp simd
        for (int64_t i = 0; i < OHW; i++) r[i] += b;
    }
}

static int conv_fwd_linear(sh_kctx *k, const conv_geom *gp, const sh_tensor *const *in, int n_in,
                           sh_tensor *const *out);

/* A weight-only quantized weight (conv_quant.c's [M, Kp] rows, attributes
 * kernel_shape and weight_k): conv_quant.c keeps the prepared (packed)
 * weight in this node's state and runs integer kernels.  Exception: when
 * more than half of each row is zero padding (K <= 16: a first layer such
 * as the cnn's 3x3x1), the integer kernel wastes most of its work (cnn
 * layer1, 4-bit, batch 1, one thread: 0.017 ms vs 0.011 ms f32), so the
 * weight is unpacked once into the node's state as the f32 weight
 * [M, Cg, kh, kw] (M*K floats: 1.1 KiB for the cnn's layer1; again when the
 * packed bytes change) and runs on the f32 kernels.  The same below
 * AVX-512 VNNI (sh_cpu_level): the portable / AVX2 low-bit kernels of
 * qgemm.c run the cnn 5x slower than f32 (4-bit cnn, batch 1, one thread,
 * SHRINK_CPU=avx2: 1.70 ms vs 0.31 ms f32), so there the f32 copy is kept.
 * NULL: not applicable (or no memory). */
static const sh_tensor *conv_unpacked(sh_kctx *k, const sh_tensor *const *in, const sh_tensor *y)
{
    const sh_tensor *x = in[0], *B = in[1];
    const int64_t *ks;
    if (!k->state || x->ndim != 4 || B->ndim != 2 || y->ndim != 4 || sh_attr_ints(k->node, "kernel_shape", &ks) != 2)
        return NULL;
    int64_t G = sh_attr_int(k->node, "group", 1), M = B->shape[0], Kp = B->shape[1];
    int64_t K = sh_attr_int(k->node, "weight_k", Kp);
    if (G < 1 || x->shape[1] % G || x->shape[1] / G * ks[0] * ks[1] != K || K > Kp ||
        (2 * K > Kp && sh_cpu_level() >= SH_CPU_LEVEL_AVX512) || !B->data ||
        B->nbytes < sh_format_bytes(B->fmt, M * Kp) ||
        (sh_qrows_base(B->fmt, NULL) >= 0 && B->nbytes != sh_qrows_bytes(B->fmt, M, Kp)))
        return NULL;
    const sh_format_traits *ft = sh_format_get(B->fmt);
    oc_pack *p = *k->state;
    if (!p && !(p = *k->state = calloc(1, sizeof *p))) return NULL;
    uint32_t sum = oc_checksum(B->data, (int64_t)(B->nbytes / 4));
    if (p->qw.data && p->qsrc == B->data && p->qbytes == B->nbytes && p->qsum == sum) return &p->qw;
    float *w = realloc(p->qw.data, sizeof(float) * (size_t)(M * Kp));
    if (!w) return NULL;
    size_t rb = sh_format_bytes(B->fmt, Kp);
    /* rows of Kp values (whole groups) written K apart, in order: each row's
     * zero padding lands where the next row then goes (w has M*Kp floats) */
    if (sh_qrows_base(B->fmt, NULL) >= 0) { /* _ch / _t rows: one header, rows decode alone */
        for (int64_t r = 0; r < M; r++) sh_qrows_row_to_f32(B->data, r, w + r * K);
    } else
        for (int64_t r = 0; r < M; r++) ft->to_f32((const char *)B->data + (size_t)r * rb, w + r * K, Kp);
    p->qw = (sh_tensor){.fmt = SH_F32, .ndim = 4, .shape = {M, x->shape[1] / G, ks[0], ks[1]}, .data = w,
                        .nbytes = sizeof(float) * (size_t)(M * K)};
    p->qsrc = B->data, p->qbytes = B->nbytes, p->qsum = sum;
    return &p->qw;
}

static int conv_quantized(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    oc_pack *p = k->state ? *k->state : NULL;
    if (k->state && !p && !(p = *k->state = calloc(1, sizeof *p)))
        return sh_op_err(k, SH_ENOMEM, "out of memory for a quantized conv state");
    sh_kctx kq = *k;
    kq.state = p ? &p->qs : NULL;
    int rc = sh_conv_quantized(&kq, in, n_in, out, n_out);
    k->scratch = kq.scratch, k->scratch_size = kq.scratch_size;
    return rc;
}

static int conv_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    const sh_tensor *unpacked[3];
    if (sh_format_get(in[1]->fmt)->is_quantized) {
        const sh_tensor *wf = conv_unpacked(k, in, out[0]);
        if (!wf) return conv_quantized(k, in, n_in, out, n_out);
        unpacked[0] = in[0], unpacked[1] = wf, unpacked[2] = n_in > 2 ? in[2] : NULL;
        in = unpacked;
    }
    conv_geom g;
    int rc = conv_setup(k, in, n_in, &g);
    if (rc) return rc;
    if (g.sp || sh_format_get(in[1]->fmt)->packed) {
        if (!g.sp) return sh_op_err(k, SH_EINVAL, "sparse weight has no data");
        int nth = k->nthreads > 0 ? k->nthreads : 1;
        size_t sb = sh_conv_sparse_scratch(g.sp, &g.w, g.G, nth);
        char *scr = sh_kctx_scratch(k, sb + 64);
        if (!scr) return sh_op_err(k, SH_ENOMEM, "out of memory for a %zu-byte sparse conv workspace", sb);
        scr += (64 - ((uintptr_t)scr & 63)) & 63;
        /* the (offset, value) plan, kept in the node's state */
        oc_pack *st = k->state ? *k->state : NULL;
        if (k->state && !st && (st = calloc(1, sizeof *st))) *k->state = st;
        if (st && !sh_conv_sparse_plan_fits(st->sp, g.sp, &g.w, g.G)) {
            sh_conv_sparse_plan_free(st->sp);
            st->sp = sh_conv_sparse_plan_new(g.sp, &g.w, g.G);
        }
        rc = sh_conv_sparse_run(g.sp, st ? st->sp : NULL, in[0]->data, &g.w, g.G,
                                n_in > 2 && in[2] ? in[2]->data : NULL, g.relu, out[0]->data, nth, SH_SPMM_AUTO, scr);
        if (rc == SH_ENOMEM) return sh_op_err(k, rc, "out of memory for the sparse conv plan");
        if (rc) return sh_op_err(k, rc, "sparse conv kernel unavailable on this CPU");
        return SH_OK;
    }
#if SH_CONV_OC
    if (oc_ok(&g)) return conv_oc(k, &g, in, n_in, out);
#endif
    if ((rc = conv_fwd_linear(k, &g, in, n_in, out))) return rc;
    if (g.relu && !(direct_ok(&g))) { /* the direct path fuses it */
        float *y = out[0]->data;
        int64_t n = sh_tensor_numel(out[0]);
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
    }
    return SH_OK;
}

static int conv_fwd_linear(sh_kctx *k, const conv_geom *gp, const sh_tensor *const *in, int n_in,
                           sh_tensor *const *out)
{
    conv_geom g = *gp;
    const float *x = in[0]->data, *wt = in[1]->data, *bias = n_in > 2 && in[2] ? in[2]->data : NULL;
    float *y = out[0]->data;
    const sh_win *w = &g.w;
    int nth = k->nthreads > 0 ? k->nthreads : 1;
    if (g.depthwise) {
        conv_depthwise(&g, x, wt, bias, y, nth);
        return SH_OK;
    }
    const int64_t N = w->N, C = w->C, M = g.M, OHW = g.OHW, Kc = g.Kc;
#if SH_CONV_DIRECT
    if (direct_ok(&g)) {
        int64_t Hp, Wp, Pr, xsz, ysz;
        direct_sizes(&g, &xsz, &ysz, &Hp, &Wp, &Pr);
        float *xp = sh_kctx_scratch(k, sizeof(float) * (size_t)(xsz + ysz));
        if (!xp) return sh_op_err(k, SH_ENOMEM, "out of memory for conv buffers");
        for (int64_t n = 0; n < N; n++)
            conv_direct_image(&g, x + n * C * g.HW, wt, bias, y + n * M * OHW, xp, xp + xsz, nth, g.relu);
        return SH_OK;
    }
#endif
    if (g.pointwise) {
        for (int64_t n = 0; n < N; n++)
            for (int64_t gi = 0; gi < g.G; gi++) {
                const float *xg = x + (n * C + gi * g.Cg) * OHW;
                float *yg = y + (n * M + gi * g.Mg) * OHW;
                sh_sgemm(0, 0, g.Mg, OHW, g.Cg, 1.0f, wt + gi * g.Mg * Kc, Kc, xg, OHW, 0.0f, yg, OHW);
            }
        for (int64_t n = 0; n < N; n++) add_bias(y + n * M * OHW, bias, M, OHW);
        return SH_OK;
    }
    /* im2col: several images per gemm when the per-image gemm is small */
    int64_t nb = 1;
    if (g.G == 1 && N > 1) {
        nb = (int64_t)(1 << 22) / (sizeof(float) * (size_t)(Kc * OHW + M * OHW));
        if (nb < 1) nb = 1;
        if (nb > N) nb = N;
    }
    size_t colsz = (size_t)(Kc * OHW * nb), tmpsz = nb > 1 ? (size_t)(M * OHW * nb) : 0;
    float *col = sh_kctx_scratch(k, sizeof(float) * (colsz + tmpsz));
    if (!col) return sh_op_err(k, SH_ENOMEM, "out of memory for im2col buffer (%zu bytes)", sizeof(float) * colsz);
    float *tmp = col + colsz;
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
        int64_t cnt = N - n0 < nb ? N - n0 : nb;
        if (cnt == 1) {
            /* im2col a band of output rows at a time so that the column
             * buffer stays in L2 */
            int64_t band = (int64_t)(CONV_BAND_BYTES / (sizeof(float) * (size_t)(Kc * w->OW)));
            if (band < 1) band = 1;
            if (band > w->OH) band = w->OH;
            for (int64_t gi = 0; gi < g.G; gi++)
                for (int64_t oh0 = 0; oh0 < w->OH; oh0 += band) {
                    int64_t oh1 = oh0 + band < w->OH ? oh0 + band : w->OH, nc = (oh1 - oh0) * w->OW;
                    im2col_rows(x + (n0 * C + gi * g.Cg) * g.HW, g.Cg, w, col, nc, oh0, oh1);
                    sh_sgemm(0, 0, g.Mg, nc, Kc, 1.0f, wt + gi * g.Mg * Kc, Kc, col, nc, 0.0f,
                             y + (n0 * M + gi * g.Mg) * OHW + oh0 * w->OW, OHW);
                }
            add_bias(y + n0 * M * OHW, bias, M, OHW);
            continue;
        }
        int64_t ld = cnt * OHW;
        for (int64_t q = 0; q < cnt; q++) im2col(x + (n0 + q) * C * g.HW, C, w, col + q * OHW, ld);
        sh_sgemm(0, 0, M, ld, Kc, 1.0f, wt, Kc, col, ld, 0.0f, tmp, ld);
        for (int64_t q = 0; q < cnt; q++)
            for (int64_t m = 0; m < M; m++) {
                float *d = y + ((n0 + q) * M + m) * OHW;
                const float *s = tmp + m * ld + q * OHW;
                float b = bias ? bias[m] : 0.0f;
#pragma omp simd
                for (int64_t i = 0; i < OHW; i++) d[i] = s[i] + b;
            }
    }
    return SH_OK;
}

static int conv_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                    const sh_tensor *const *dout, sh_tensor *const *din)
{
    if (sh_format_get(in[1]->fmt)->is_quantized)
        return sh_op_err(k, SH_EUNSUPPORTED, "Conv with a %s (quantized) weight has no backward",
                         sh_format_get(in[1]->fmt)->name);
    if (sh_format_get(in[1]->fmt)->packed)
        return sh_op_err(k, SH_EUNSUPPORTED,
                         "Conv with a packed sparse weight has no backward (unpack it with sh_sparse_unpack to train)");
    if (!dout[0]) return SH_OK;
    conv_geom g;
    int rc = conv_setup(k, in, n_in, &g);
    if (rc) return rc;
    const float *x = in[0]->data, *wt = in[1]->data, *dy = dout[0]->data;
    float *dx = din[0] ? din[0]->data : NULL, *dw = din[1] ? din[1]->data : NULL;
    float *db = n_in > 2 && in[2] && din[2] ? din[2]->data : NULL;
    const sh_win *w = &g.w;
    const int64_t N = w->N, C = w->C, M = g.M, OHW = g.OHW, Kc = g.Kc, HW = g.HW;
    /* scratch: [masked dY (fused Relu)] [im2col column buffer] */
    int64_t ny = g.relu ? N * M * OHW : 0;
    float *scr = sh_kctx_scratch(k, sizeof(float) * (size_t)(ny + (g.pointwise ? 0 : Kc * OHW) + 1));
    if (!scr) return sh_op_err(k, SH_ENOMEM, "out of memory for conv backward buffers");
    float *col = scr + ny;
    if (g.relu) {
        const float *y = out[0]->data;
#pragma omp simd
        for (int64_t i = 0; i < ny; i++) scr[i] = y[i] > 0.0f ? dy[i] : 0.0f;
        dy = scr;
    }
    if (db)
        for (int64_t n = 0; n < N; n++)
            for (int64_t m = 0; m < M; m++) {
                const float *r = dy + (n * M + m) * OHW;
                float s = 0.0f;
#pragma omp simd reduction(+ : s)
                for (int64_t i = 0; i < OHW; i++) s += r[i];
                db[m] += s;
            }
    if (!dx && !dw) return SH_OK;
    if (g.pointwise) {
        for (int64_t n = 0; n < N; n++)
            for (int64_t gi = 0; gi < g.G; gi++) {
                const float *dyg = dy + (n * M + gi * g.Mg) * OHW;
                const float *wg = wt + gi * g.Mg * Kc;
                if (dw) sh_sgemm(0, 1, g.Mg, g.Cg, OHW, 1.0f, dyg, OHW, x + (n * C + gi * g.Cg) * HW, HW, 1.0f,
                                 dw + gi * g.Mg * Kc, Kc);
                if (dx) sh_sgemm(1, 0, g.Cg, OHW, g.Mg, 1.0f, wg, Kc, dyg, OHW, 1.0f, dx + (n * C + gi * g.Cg) * HW, HW);
            }
        return SH_OK;
    }
    for (int64_t n = 0; n < N; n++)
        for (int64_t gi = 0; gi < g.G; gi++) {
            const float *dyg = dy + (n * M + gi * g.Mg) * OHW;
            const float *wg = wt + gi * g.Mg * Kc;
            if (dw) {
                im2col(x + (n * C + gi * g.Cg) * HW, g.Cg, w, col, OHW);
                sh_sgemm(0, 1, g.Mg, Kc, OHW, 1.0f, dyg, OHW, col, OHW, 1.0f, dw + gi * g.Mg * Kc, Kc);
            }
            if (dx) {
                sh_sgemm(1, 0, Kc, OHW, g.Mg, 1.0f, wg, Kc, dyg, OHW, 0.0f, col, OHW);
                col2im(col, g.Cg, w, dx + (n * C + gi * g.Cg) * HW, OHW);
            }
        }
    return SH_OK;
}

const sh_op_def sh_op_conv = {"Conv", 2, 3, 1, 1, conv_infer, conv_fwd, conv_bwd, 0, 0x6, oc_pack_free, 0};
