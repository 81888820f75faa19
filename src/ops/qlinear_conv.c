/* qlinear_conv.c - QLinearConv and ConvInteger (1-D and 2-D, groups, strides,
 * pads, dilations, auto_pad), inference only.
 *
 * Fast path (u8 or s8 input, weight - zero point fitting in s8, which is
 * always the case for shrink's symmetric s8 weights): per chunk of images the
 * input is transposed to HWC, patches are gathered into rows of u8 (im2col
 * with the input zero point as padding value; a 1x1 stride-1 convolution with
 * one group uses the HWC image itself) with the K order (kh, kw, Cg), the int8
 * GEMM (ops/qgemm.h, VNNI / AVX2 / portable) multiplies them by the weight
 * packed once per node (reordered to the same K order) into int32, and one
 * pass adds the int32 bias, requantizes (multiplier x_scale * w_scale[c] /
 * y_scale in f32, round half to even, y zero point, fused Relu) and writes
 * NCHW.  Depthwise convolutions (one input channel per group) run a direct
 * loop.  Other type combinations (u8 weights whose zero point puts w - zp
 * outside s8) run a plain integer loop.  All paths give identical integers.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "nn_ops.h"
#include "qgemm.h"
#include "qlinear.h"

static const char *shs(const sh_tensor *t, char *b, size_t n) { return sh_shape_str(t->ndim, t->shape, b, n); }
static const char *fname(sh_format f) { return sh_format_get(f) ? sh_format_get(f)->name : "?"; }

typedef struct qconv {
    sh_win w;
    int64_t M, G, Cg, Mg, Kc, KK; /* KK = kh*kw */
    int64_t HW, OHW;
    int relu, qlinear;
    sh_format yf;                 /* U8 / I8 (QLinearConv) or I32 (ConvInteger) */
    const sh_tensor *x, *wt, *bias;
    sh_qparam px, pw, py;
} qconv;

static int qconv_setup(sh_kctx *k, const sh_tensor *const *in, int n_in, int qlinear, qconv *g)
{
    char b1[96], b2[96], b3[96];
    memset(g, 0, sizeof *g);
    g->qlinear = qlinear;
    const sh_tensor *x = in[0], *wt, *xs = NULL, *xz, *ws = NULL, *wz, *ys = NULL, *yz = NULL, *b = NULL;
    if (qlinear) {
        if (n_in < 7 || !in[0] || !in[1] || !in[3] || !in[4] || !in[6])
            return sh_op_err(k, SH_EINVAL, "QLinearConv needs x, x_scale, x_zero_point, w, w_scale, w_zero_point, "
                                           "y_scale, y_zero_point (and optional B)");
        xs = in[1], xz = in[2], wt = in[3], ws = in[4], wz = in[5], ys = in[6];
        yz = n_in > 7 ? in[7] : NULL;
        b = n_in > 8 ? in[8] : NULL;
    } else {
        if (n_in < 2 || !in[0] || !in[1]) return sh_op_err(k, SH_EINVAL, "ConvInteger needs x and w");
        wt = in[1];
        xz = n_in > 2 ? in[2] : NULL;
        wz = n_in > 3 ? in[3] : NULL;
    }
    if (x->fmt != SH_U8 && x->fmt != SH_I8)
        return sh_op_err(k, SH_EUNSUPPORTED, "x has format %s, expected u8 or i8", fname(x->fmt));
    if (wt->fmt != SH_U8 && wt->fmt != SH_I8)
        return sh_op_err(k, SH_EUNSUPPORTED, "w has format %s, expected u8 or i8", fname(wt->fmt));
    if (wt->ndim != x->ndim || x->ndim < 3)
        return sh_op_err(k, SH_ESHAPE, "x %s and w %s: ranks differ or rank < 3", shs(x, b1, sizeof b1),
                         shs(wt, b2, sizeof b2));
    int64_t G = sh_attr_int(k->node, "group", 1), M = wt->shape[0], C = x->shape[1];
    if (G < 1 || C % G || M % G)
        return sh_op_err(k, SH_ESHAPE, "x %s has %lld channels, w %s: group %lld does not divide channels",
                         shs(x, b1, sizeof b1), (long long)C, shs(wt, b2, sizeof b2), (long long)G);
    if (wt->shape[1] != C / G)
        return sh_op_err(k, SH_ESHAPE, "x %s has %lld channels, w %s with group %lld expects %lld", shs(x, b1, sizeof b1),
                         (long long)C, shs(wt, b2, sizeof b2), (long long)G, (long long)(wt->shape[1] * G));
    const int64_t *ksa;
    int nks = sh_attr_ints(k->node, "kernel_shape", &ksa);
    for (int i = 0; nks > 0 && i < nks && i + 2 < wt->ndim; i++)
        if (ksa[i] != wt->shape[2 + i] || nks != wt->ndim - 2)
            return sh_op_err(k, SH_ESHAPE, "kernel_shape attribute does not match w %s", shs(wt, b2, sizeof b2));
    int rc;
    unsigned xm = SH_QMASK(x->fmt), wm = SH_QMASK(wt->fmt);
    if (qlinear) {
        if ((rc = sh_qparam_get(k, xs, xz, 0, xm, "x", &g->px)) || (rc = sh_qparam_get(k, ws, wz, M, wm, "w", &g->pw)))
            return rc;
        if ((rc = sh_qparam_get(k, ys, yz, 0, SH_QMASK(SH_U8) | SH_QMASK(SH_I8), "y", &g->py))) return rc;
        g->yf = yz ? yz->fmt : SH_U8;
        if (b && (b->fmt != SH_I32 || b->ndim != 1 || b->shape[0] != M))
            return sh_op_err(k, SH_ESHAPE, "B %s (%s) must be i32 [%lld] (w %s)", shs(b, b3, sizeof b3), fname(b->fmt),
                             (long long)M, shs(wt, b2, sizeof b2));
    } else {
        /* ConvInteger: zero points without scales */
        static const float one = 1.0f;
        sh_tensor s1 = {SH_F32, 0, {0}, (void *)&one, 4, 0}, sm = s1;
        if (wz && sh_tensor_numel(wz) == M && M > 1) sm.ndim = 1, sm.shape[0] = M, sm.data = NULL;
        if ((rc = sh_qparam_get(k, &s1, xz, 0, xm, "x", &g->px)) || (rc = sh_qparam_get(k, &sm, wz, M, wm, "w", &g->pw)))
            return rc;
        g->yf = SH_I32;
    }
    rc = sh_win_setup(k, x, wt->shape + 2, 0, 1, 0, &g->w);
    if (rc) return rc;
    const char *act = sh_attr_string(k->node, "activation", "");
    if (*act && (strcmp(act, "Relu") != 0 || !qlinear))
        return sh_op_err(k, SH_EUNSUPPORTED, "activation '%s' (only Relu can be fused into QLinearConv)", act);
    g->relu = *act != 0;
    g->x = x, g->wt = wt, g->bias = b;
    g->M = M, g->G = G, g->Cg = C / G, g->Mg = M / G;
    g->KK = g->w.kh * g->w.kw;
    g->Kc = g->Cg * g->KK;
    g->HW = g->w.H * g->w.W, g->OHW = g->w.OH * g->w.OW;
    return SH_OK;
}

static int qconv_infer_common(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int ql)
{
    qconv g;
    int rc = qconv_setup(k, in, n_in, ql, &g);
    if (rc) return rc;
    int64_t s[4] = {g.w.N, g.M, g.w.OH, g.w.OW};
    if (g.w.nsp == 1) s[2] = g.w.OW;
    sh_tensor_set_shape(out[0], g.yf, 2 + g.w.nsp, s);
    /* remember whether w is a constant: only then is the prepared weight cached */
    sh_qstate *st = k->state ? sh_qstate_get(k) : NULL;
    if (st) st->b_const = g.wt->data != NULL;
    return SH_OK;
}

static int qlinearconv_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    return qconv_infer_common(k, in, n_in, out, 1);
}

static int convinteger_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    return qconv_infer_common(k, in, n_in, out, 0);
}

/* ---- weight preparation --------------------------------------------------- */

static int depthwise(const qconv *g) { return g->Cg == 1 && g->G > 1; }

static sh_qstate *qconv_weights(sh_kctx *k, const qconv *g, int level)
{
    sh_qstate *st = sh_qstate_get(k);
    if (!st) return NULL;
    const sh_tensor *wt = g->wt;
    int64_t wn = sh_tensor_numel(wt);
    uint32_t sum = sh_qchecksum(wt->data, (size_t)wn) ^ (g->pw.zp ? sh_qchecksum(g->pw.zp, (size_t)g->pw.n) : 0);
    if (st->b_const && sh_qstate_match(st, wt->data, wn, g->pw.zp, g->M, g->Kc, level, (int)g->G, sum)) return st;
    sh_qstate_reset(st);
    st->wi = malloc(sizeof(int32_t) * (size_t)wn);
    if (!st->wi) return NULL;
    int fits = 1;
    for (int64_t m = 0; m < g->M; m++) {
        int32_t z = sh_qparam_zero(&g->pw, m);
        for (int64_t i = 0; i < g->Kc; i++) {
            int32_t v = sh_qget(wt->data, wt->fmt, m * g->Kc + i) - z;
            st->wi[m * g->Kc + i] = v;
            fits &= v >= -128 && v <= 127;
        }
    }
    st->groups = (int)g->G;
    if (fits && !depthwise(g)) {
        st->pb = calloc((size_t)g->G, sizeof *st->pb);
        int8_t *bt = malloc((size_t)(g->Mg * g->Kc));
        int ok = st->pb && bt;
        for (int64_t gi = 0; ok && gi < g->G; gi++) {
            /* reorder [Mg][Cg][kh*kw] to [Mg][kh*kw][Cg] */
            for (int64_t m = 0; m < g->Mg; m++)
                for (int64_t c = 0; c < g->Cg; c++)
                    for (int64_t t = 0; t < g->KK; t++)
                        bt[m * g->Kc + t * g->Cg + c] = (int8_t)st->wi[(gi * g->Mg + m) * g->Kc + c * g->KK + t];
            sh_error e = {0};
            ok = sh_qgemm_pack_b(bt, g->Mg, g->Kc, g->Kc, level, &st->pb[gi], &e) == SH_OK;
        }
        free(bt);
        if (!ok) {
            sh_qstate_reset(st);
            return NULL;
        }
        st->fast = 1;
    }
    st->wsrc = wt->data, st->wn = wn, st->zsrc = g->pw.zp, st->rows = g->M, st->cols = g->Kc;
    st->level = level, st->wsum = sum;
    st->simd = sh_qrequant_simd(level);
    return st;
}

/* ---- kernels -------------------------------------------------------------- */

/* per output channel: requantization multiplier */
static void qconv_mult(const qconv *g, float *mult)
{
    for (int64_t m = 0; m < g->M; m++)
        mult[m] = g->qlinear ? sh_qparam_scale(&g->px, 0) * sh_qparam_scale(&g->pw, m) / sh_qparam_scale(&g->py, 0)
                             : 1.0f;
}

/* write one output value of channel m from the int32 accumulator */
static inline void qconv_store(const qconv *g, void *y, int64_t idx, int64_t acc, const int32_t *bias,
                               const float *mult, int64_t m)
{
    if (g->yf == SH_I32) {
        ((int32_t *)y)[idx] = (int32_t)acc;
        return;
    }
    int32_t a = (int32_t)acc + (bias ? bias[m] : 0), yz = sh_qparam_zero(&g->py, 0);
    int32_t lo = g->yf == SH_U8 ? 0 : -128, hi = g->yf == SH_U8 ? 255 : 127;
    if (g->relu && yz > lo) lo = yz;
    sh_qrequant_row(&a, NULL, mult + m, 1, yz, lo, hi, g->yf, 0, (char *)y + idx);
}

/* plain integer loop (any u8/s8 combination; depthwise too) */
static void qconv_direct(const qconv *g, const int32_t *wi, const float *mult, void *y, int nt)
{
    const sh_win *w = &g->w;
    const int32_t *bias = g->bias ? g->bias->data : NULL;
    int32_t xz = sh_qparam_zero(&g->px, 0);
    const void *x = g->x->data;
    sh_format xf = g->x->fmt;
#pragma omp parallel for num_threads(nt) if (nt > 1 && w->N * g->M > 1) schedule(static)
    for (int64_t nm = 0; nm < w->N * g->M; nm++) {
        int64_t n = nm / g->M, m = nm % g->M, gi = m / g->Mg;
        const int32_t *wm = wi + m * g->Kc;
        for (int64_t oh = 0; oh < w->OH; oh++)
            for (int64_t ow = 0; ow < w->OW; ow++) {
                int64_t acc = 0;
                for (int64_t c = 0; c < g->Cg; c++) {
                    int64_t xb = (n * w->C + gi * g->Cg + c) * g->HW;
                    for (int64_t i = 0; i < w->kh; i++) {
                        int64_t ih = oh * w->sh - w->pt + i * w->dh;
                        if (ih < 0 || ih >= w->H) continue;
                        for (int64_t j = 0; j < w->kw; j++) {
                            int64_t iw = ow * w->sw - w->pl + j * w->dw;
                            if (iw < 0 || iw >= w->W) continue;
                            acc += (int64_t)(sh_qget(x, xf, xb + ih * w->W + iw) - xz) * wm[(c * w->kh + i) * w->kw + j];
                        }
                    }
                }
                qconv_store(g, y, nm * g->OHW + oh * w->OW + ow, acc, bias, mult, m);
            }
    }
}

/* dst[j * ds + i] = src[i * ss + j] for a 16 x 16 byte block */
static void transpose16(const uint8_t *src, int64_t ss, uint8_t *dst, int64_t ds)
{
#ifdef __SSE2__
    __m128i r[16], a[16], b[16];
    for (int i = 0; i < 16; i++) r[i] = _mm_loadu_si128((const __m128i *)(src + i * ss));
    for (int k = 0; k < 8; k++) {
        a[2 * k] = _mm_unpacklo_epi8(r[2 * k], r[2 * k + 1]);
        a[2 * k + 1] = _mm_unpackhi_epi8(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) {
        b[4 * k + 0] = _mm_unpacklo_epi16(a[4 * k + 0], a[4 * k + 2]);
        b[4 * k + 1] = _mm_unpackhi_epi16(a[4 * k + 0], a[4 * k + 2]);
        b[4 * k + 2] = _mm_unpacklo_epi16(a[4 * k + 1], a[4 * k + 3]);
        b[4 * k + 3] = _mm_unpackhi_epi16(a[4 * k + 1], a[4 * k + 3]);
    }
    for (int q = 0; q < 4; q++) {
        __m128i l0 = _mm_unpacklo_epi32(b[q], b[4 + q]), h0 = _mm_unpackhi_epi32(b[q], b[4 + q]);
        __m128i l1 = _mm_unpacklo_epi32(b[8 + q], b[12 + q]), h1 = _mm_unpackhi_epi32(b[8 + q], b[12 + q]);
        _mm_storeu_si128((__m128i *)(dst + (4 * q + 0) * ds), _mm_unpacklo_epi64(l0, l1));
        _mm_storeu_si128((__m128i *)(dst + (4 * q + 1) * ds), _mm_unpackhi_epi64(l0, l1));
        _mm_storeu_si128((__m128i *)(dst + (4 * q + 2) * ds), _mm_unpacklo_epi64(h0, h1));
        _mm_storeu_si128((__m128i *)(dst + (4 * q + 3) * ds), _mm_unpackhi_epi64(h0, h1));
    }
#else
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) dst[j * ds + i] = src[i * ss + j];
#endif
}

/* image chunk [n0, n0+nb): HWC transpose, im2col per group, int8 GEMM, epilogue */
static int qconv_fast(sh_kctx *k, const qconv *g, sh_qstate *st, const float *mult, void *y, int nt)
{
    const sh_win *w = &g->w;
    int64_t C = w->C, HW = g->HW, OHW = g->OHW, M = g->M, Kc = g->Kc;
    int a_signed = g->x->fmt == SH_I8;
    uint8_t pad = (uint8_t)sh_qparam_zero(&g->px, 0);
    int direct_a = g->G == 1 && w->kh == 1 && w->kw == 1 && w->sh == 1 && w->sw == 1 && !w->pt && !w->pl && !w->pb &&
                   !w->pr;
    /* padded HWC image, and the offset of each kernel tap in it */
    int64_t Wp = w->W + w->pl + w->pr, HWp = (w->H + w->pt + w->pb) * Wp, KK = g->KK;
    int64_t *off = malloc(sizeof(int64_t) * (size_t)KK);
    if (!off) return sh_op_err(k, SH_ENOMEM, "out of memory");
    for (int64_t a = 0; a < w->kh; a++)
        for (int64_t b = 0; b < w->kw; b++) off[a * w->kw + b] = (a * w->dh * Wp + b * w->dw) * C;
    /* images per chunk: about 2 MB of patches, at least one image */
    int64_t per_img = OHW * Kc, nb = (int64_t)(2 << 20) / (per_img > 0 ? per_img : 1);
    if (nb < 1) nb = 1;
    if (nb > w->N) nb = w->N;
    size_t xt_b = (size_t)(nb * HWp * C + 64), col_b = direct_a ? 0 : (size_t)(nb * OHW * Kc + 64),
           acc_b = sizeof(int32_t) * (size_t)(nb * OHW * M) + 64;
    char *ws = sh_qstate_ws(st, xt_b + col_b + acc_b + 192);
    if (!ws) {
        free(off);
        return sh_op_err(k, SH_ENOMEM, "out of memory for the workspace");
    }
    uint8_t *xt = (uint8_t *)ws;
    uint8_t *col = (uint8_t *)ws + (xt_b + 63) / 64 * 64;
    int32_t *acc = (int32_t *)(col + (col_b + 63) / 64 * 64);
    const uint8_t *x = g->x->data;
    int32_t yz = g->qlinear ? sh_qparam_zero(&g->py, 0) : 0;
    const int32_t *bias0 = (const int32_t *)(mult + M); /* bias, or zeros (qlinear_conv_run) */
    for (int64_t n0 = 0; n0 < w->N; n0 += nb) {
        int64_t cn = w->N - n0 < nb ? w->N - n0 : nb, rows = cn * OHW;
        /* NCHW -> padded NHWC (border = x zero point), blocks of 16 pixels */
#pragma omp parallel for num_threads(nt) if (nt > 1 && cn * HW * C > 32768) schedule(static)
        for (int64_t t = 0; t < cn * ((w->H + 3) / 4); t++) {
            int64_t i = t / ((w->H + 3) / 4), h0 = t % ((w->H + 3) / 4) * 4, h1 = h0 + 4 < w->H ? h0 + 4 : w->H;
            const uint8_t *xi = x + (n0 + i) * C * HW;
            uint8_t *d = xt + i * HWp * C;
            if (h0 == 0) memset(d, pad, (size_t)(w->pt * Wp * C));
            if (h1 == w->H) memset(d + (w->pt + w->H) * Wp * C, pad, (size_t)(w->pb * Wp * C));
            for (int64_t h = h0; h < h1; h++) {
                uint8_t *dr = d + (h + w->pt) * Wp * C;
                memset(dr, pad, (size_t)(w->pl * C));
                memset(dr + (w->pl + w->W) * C, pad, (size_t)(w->pr * C));
                dr += w->pl * C;
                const uint8_t *xr = xi + h * w->W;
                if (C == 1) memcpy(dr, xr, (size_t)w->W);
                else
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t q = 0; q < w->W; q++) dr[q * C + c] = xr[c * HW + q];
            }
        }
        for (int64_t gi = 0; gi < g->G; gi++) {
            const uint8_t *A;
            int64_t lda;
            if (direct_a) {
                A = xt, lda = C;
            } else {
                int64_t Cg = g->Cg;
#pragma omp parallel for num_threads(nt) if (nt > 1 && rows * Kc > 32768) schedule(static)
                for (int64_t r = 0; r < rows; r++) {
                    int64_t i = r / OHW, p = r % OHW, oh = p / w->OW, ow = p % w->OW;
                    const uint8_t *src = xt + i * HWp * C + ((oh * w->sh) * Wp + ow * w->sw) * C + gi * Cg;
                    uint8_t *d = col + r * Kc;
                    switch (Cg) {
                    case 1: for (int64_t t = 0; t < KK; t++) d[t] = src[off[t]]; break;
                    case 4: for (int64_t t = 0; t < KK; t++) memcpy(d + 4 * t, src + off[t], 4); break;
                    case 8: for (int64_t t = 0; t < KK; t++) memcpy(d + 8 * t, src + off[t], 8); break;
                    case 16: for (int64_t t = 0; t < KK; t++) memcpy(d + 16 * t, src + off[t], 16); break;
                    case 32: for (int64_t t = 0; t < KK; t++) memcpy(d + 32 * t, src + off[t], 32); break;
                    case 64: for (int64_t t = 0; t < KK; t++) memcpy(d + 64 * t, src + off[t], 64); break;
                    default: for (int64_t t = 0; t < KK; t++) memcpy(d + Cg * t, src + off[t], (size_t)Cg); break;
                    }
                }
                A = col, lda = Kc;
            }
            sh_qgemm_epi epi = {.out = SH_I32, .a_zero = sh_qparam_zero(&g->px, 0), .a_scale = 1.0f};
            int rc = sh_qgemm(A, a_signed, rows, lda, st->pb[gi], &epi, acc + gi * g->Mg, M, nt, k->err);
            if (rc) {
                free(off);
                return sh_error_wrap(k->err, "node '%s' (%s)", k->node->name, k->node->op);
            }
        }
        /* epilogue: [rows, M] int32 -> NCHW, blocks of 32 positions x all
         * channels: requantize each position's channels (contiguous, SIMD)
         * into a byte tile, then write the tile transposed */
        int64_t pb = 32, tp = (OHW + pb - 1) / pb;
        int32_t lo = g->yf == SH_U8 ? 0 : -128, hi = g->yf == SH_U8 ? 255 : 127;
        if (g->relu && yz > lo) lo = yz;
        int simd = st->simd;
#pragma omp parallel for num_threads(nt) if (nt > 1 && rows * M > 16384) schedule(static)
        for (int64_t t = 0; t < cn * tp; t++) {
            int64_t i = t / tp, p0 = t % tp * pb, p1 = p0 + pb < OHW ? p0 + pb : OHW;
            const int32_t *a = acc + (i * OHW) * M;
            int64_t ybase = (n0 + i) * M * OHW;
            if (g->yf == SH_I32) {
                int32_t *yo = (int32_t *)y + ybase;
                for (int64_t m = 0; m < M; m++)
                    for (int64_t p = p0; p < p1; p++) yo[m * OHW + p] = a[p * M + m];
                continue;
            }
            uint8_t tile[32 * 256];
            for (int64_t m0 = 0; m0 < M; m0 += 256) {
                int64_t mc = M - m0 < 256 ? M - m0 : 256;
                for (int64_t p = p0; p < p1; p++)
                    sh_qrequant_row(a + p * M + m0, bias0 + m0, mult + m0, mc, yz, lo, hi, g->yf, simd,
                                    tile + (p - p0) * mc);
                /* tile [p][m] -> y [m][p]: 16 x 16 blocks, then the edges */
                int64_t np = p1 - p0, m16 = mc / 16 * 16, p16 = np / 16 * 16;
                uint8_t *yb = (uint8_t *)y + ybase + m0 * OHW + p0;
                for (int64_t pp = 0; pp < p16; pp += 16)
                    for (int64_t mm = 0; mm < m16; mm += 16) transpose16(tile + pp * mc + mm, mc, yb + mm * OHW + pp, OHW);
                for (int64_t m = 0; m < mc; m++)
                    for (int64_t p = m < m16 ? p16 : 0; p < np; p++) yb[m * OHW + p] = tile[p * mc + m];
            }
        }
    }
    free(off);
    return SH_OK;
}

int sh_qlinear_conv_run(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int level)
{
    qconv g;
    int ql = strcmp(k->node->op, "ConvInteger") != 0;
    int rc = qconv_setup(k, in, n_in, ql, &g);
    if (rc) return rc;
    if (g.w.N == 0) return SH_OK;
    sh_qstate *st = qconv_weights(k, &g, level);
    if (!st) return sh_op_err(k, SH_ENOMEM, "out of memory preparing w [%lld,%lld]", (long long)g.M, (long long)g.Kc);
    /* multipliers, then the bias (zeros when absent) */
    float *mult = malloc((sizeof(float) + sizeof(int32_t)) * (size_t)g.M);
    if (!mult) return sh_op_err(k, SH_ENOMEM, "out of memory");
    qconv_mult(&g, mult);
    int32_t *b0 = (int32_t *)(mult + g.M);
    for (int64_t m = 0; m < g.M; m++) b0[m] = g.bias ? ((const int32_t *)g.bias->data)[m] : 0;
    int nt = k->nthreads > 0 ? k->nthreads : 1;
    if (st->fast) rc = qconv_fast(k, &g, st, mult, out[0]->data, nt);
    else qconv_direct(&g, st->wi, mult, out[0]->data, nt);
    free(mult);
    return rc;
}

static int qconv_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    return sh_qlinear_conv_run(k, in, n_in, out, -1);
}

/* inputs other than x and w (scales, zero points, bias) take no gradient;
 * inference only (sh_qlinear_no_backward) */
const sh_op_def sh_op_qlinearconv = {"QLinearConv", 8, 9, 1, 1, qlinearconv_infer, qconv_fwd, sh_qlinear_no_backward,
                                     0x1f6, 0, sh_qlinear_state_free, 0};
const sh_op_def sh_op_convinteger = {"ConvInteger", 2, 4, 1, 1, convinteger_infer, qconv_fwd, sh_qlinear_no_backward,
                                     0xc, 0, sh_qlinear_state_free, 0};
