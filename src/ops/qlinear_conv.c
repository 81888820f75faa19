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
 * NCHW.  A convolution with a tiny K (one group, Cin*kh*kw <= 32, e.g. an
 * image model's first 1x3x3 layer) runs qconv_tinyk instead on AVX-512 VNNI:
 * patches as dword planes, vpdpbusd over the taps for 16 positions at once,
 * requantized straight into NCHW.  Depthwise convolutions (one input channel
 * per group) run a direct loop.  Other type combinations (u8 weights whose zero point puts w - zp
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

#if defined(__x86_64__) && defined(__GNUC__)
#define QC_TINYK 1
#include <immintrin.h>
#endif

/* The direct kernel for a tiny K (qconv_tinyk): a 2-D QLinearConv with one
 * group and Cin*kh*kw <= 32 (the first layer of an image model: 1x3x3) on an
 * AVX-512 VNNI CPU at the avx512 level. */
static int tinyk_ok(const qconv *g, int level)
{
#ifdef QC_TINYK
    int lvl = level < 0 ? sh_cpu_level() : level;
    int f = SH_CPU_AVX512F | SH_CPU_AVX512BW | SH_CPU_AVX512VNNI;
    return g->qlinear && g->yf != SH_I32 && g->G == 1 && g->w.nsp == 2 && g->Kc <= 32 && lvl == SH_CPU_LEVEL_AVX512 &&
           (sh_cpu_features() & f) == f;
#else
    (void)g, (void)level;
    return 0;
#endif
}

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
    if (fits && tinyk_ok(g, level)) {
        int kd = (int)((g->Kc + 3) / 4);
        st->dw = calloc((size_t)(g->M * (kd + 1)), sizeof(int32_t));
        if (!st->dw) {
            sh_qstate_reset(st);
            return NULL;
        }
        for (int64_t m = 0; m < g->M; m++) {
            int8_t *d = (int8_t *)(st->dw + m * (kd + 1));
            int32_t sum = 0;
            for (int64_t i = 0; i < g->Kc; i++) {
                d[i] = (int8_t)st->wi[m * g->Kc + i];
                sum += st->wi[m * g->Kc + i];
            }
            st->dw[m * (kd + 1) + kd] = sum;
        }
        st->dkd = kd;
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

/* Rows [r0, r1) of a chunk (row r = i * OHW + p: image n0 + i, output
 * position p) on the calling thread: im2col of those rows from the padded
 * NHWC chunk xt (per group), the int8 GEMM into acc, and the requantizing
 * epilogue into NCHW y. */
static int qconv_rows(sh_kctx *k, const qconv *g, const sh_qstate *st, const float *mult, const uint8_t *xt,
                      uint8_t *col, int32_t *acc, const int64_t *off, int direct_a, int64_t n0, int64_t r0,
                      int64_t r1, void *y)
{
    const sh_win *w = &g->w;
    int64_t C = w->C, OHW = g->OHW, M = g->M, Kc = g->Kc, KK = g->KK;
    int64_t Wp = w->W + w->pl + w->pr, HWp = (w->H + w->pt + w->pb) * Wp;
    int a_signed = g->x->fmt == SH_I8;
    for (int64_t gi = 0; gi < g->G; gi++) {
        const uint8_t *A;
        int64_t lda;
        if (direct_a) {
            /* 1x1, stride 1, no padding: the NHWC chunk is the patch matrix */
            A = xt, lda = C;
        } else {
            int64_t Cg = g->Cg;
            for (int64_t r = r0; r < r1; r++) {
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
        int rc = sh_qgemm(A + r0 * lda, a_signed, r1 - r0, lda, st->pb[gi], &epi, acc + r0 * M + gi * g->Mg, M, 1,
                          k->err);
        if (rc) return rc;
    }
    /* epilogue: [rows, M] int32 -> NCHW, per image in blocks of 32 positions
     * x all channels: requantize each position's channels (contiguous, SIMD)
     * into a byte tile, then write the tile transposed */
    int32_t yz = g->qlinear ? sh_qparam_zero(&g->py, 0) : 0;
    const int32_t *bias0 = (const int32_t *)(mult + M); /* bias, or zeros (qlinear_conv_run) */
    int32_t lo = g->yf == SH_U8 ? 0 : -128, hi = g->yf == SH_U8 ? 255 : 127;
    if (g->relu && yz > lo) lo = yz;
    for (int64_t i = r0 / OHW; i * OHW < r1; i++) {
        int64_t pa = r0 > i * OHW ? r0 - i * OHW : 0, pe = r1 - i * OHW < OHW ? r1 - i * OHW : OHW;
        const int32_t *a = acc + (i * OHW) * M;
        int64_t ybase = (n0 + i) * M * OHW;
        for (int64_t p0 = pa; p0 < pe; p0 += 32) {
            int64_t p1 = p0 + 32 < pe ? p0 + 32 : pe;
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
                    sh_qrequant_row(a + p * M + m0, bias0 + m0, mult + m0, mc, yz, lo, hi, g->yf, st->simd,
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
    return SH_OK;
}

/* Images [n0, n0+cn) of NCHW x into the padded NHWC chunk xt (border = the
 * x zero point); tasks [t0, t1) of qconv_nhwc_tasks(). */
static int64_t qconv_nhwc_tasks(const qconv *g, int64_t cn, int blocks)
{
    return blocks ? cn * ((g->HW + 15) / 16) : cn * ((g->w.H + 3) / 4);
}

static void qconv_nhwc(const qconv *g, const uint8_t *x, uint8_t *xt, int64_t n0, int blocks, int64_t t)
{
    const sh_win *w = &g->w;
    int64_t C = w->C, HW = g->HW, W = w->W, Wp = W + w->pl + w->pr, HWp = (w->H + w->pt + w->pb) * Wp;
    uint8_t pad = (uint8_t)sh_qparam_zero(&g->px, 0);
    if (blocks) {
        /* C a multiple of 16: task = (image, 16 pixels), all channels, so a
         * thread's tasks write whole pixels (no cache line shared with the
         * other threads' tasks but at the ends); per 16 channels a 16 x 16
         * byte transposition into a tile, then each pixel's 16 bytes to its
         * place.  The task holding a row's first (last) pixel writes that
         * row's left (right) border, the first and last tasks the top and
         * bottom borders. */
        int64_t pbk = (HW + 15) / 16, i = t / pbk, q0 = t % pbk * 16, q1 = q0 + 16 < HW ? q0 + 16 : HW;
        const uint8_t *xi = x + (n0 + i) * C * HW;
        uint8_t *d = xt + i * HWp * C;
        if (q0 == 0) memset(d, pad, (size_t)(w->pt * Wp * C));
        if (q1 == HW) memset(d + (w->pt + w->H) * Wp * C, pad, (size_t)(w->pb * Wp * C));
        for (int64_t q = q0; q < q1; q++) {
            int64_t h = q / W, ww = q % W;
            if (ww == 0 && w->pl) memset(d + (h + w->pt) * Wp * C, pad, (size_t)(w->pl * C));
            if (ww == W - 1 && w->pr) memset(d + ((h + w->pt) * Wp + w->pl + W) * C, pad, (size_t)(w->pr * C));
        }
        if (q1 - q0 == 16) {
            uint8_t tile[256];
            for (int64_t c0 = 0; c0 < C; c0 += 16) {
                transpose16(xi + c0 * HW + q0, HW, tile, 16);
                for (int j = 0; j < 16; j++) {
                    int64_t q = q0 + j, h = q / W, ww = q % W;
                    memcpy(d + ((h + w->pt) * Wp + ww + w->pl) * C + c0, tile + 16 * j, 16);
                }
            }
        } else {
            for (int64_t q = q0; q < q1; q++) {
                int64_t h = q / W, ww = q % W;
                uint8_t *dp = d + ((h + w->pt) * Wp + ww + w->pl) * C;
                for (int64_t c = 0; c < C; c++) dp[c] = xi[c * HW + q];
            }
        }
        return;
    }
    /* any C: task = (image, 4 rows) */
    int64_t nrb = (w->H + 3) / 4, i = t / nrb, h0 = t % nrb * 4, h1 = h0 + 4 < w->H ? h0 + 4 : w->H;
    const uint8_t *xi = x + (n0 + i) * C * HW;
    uint8_t *d = xt + i * HWp * C;
    if (h0 == 0) memset(d, pad, (size_t)(w->pt * Wp * C));
    if (h1 == w->H) memset(d + (w->pt + w->H) * Wp * C, pad, (size_t)(w->pb * Wp * C));
    for (int64_t h = h0; h < h1; h++) {
        uint8_t *dr = d + (h + w->pt) * Wp * C;
        memset(dr, pad, (size_t)(w->pl * C));
        memset(dr + (w->pl + W) * C, pad, (size_t)(w->pr * C));
        dr += w->pl * C;
        const uint8_t *xr = xi + h * W;
        if (C == 1) memcpy(dr, xr, (size_t)W);
        else
            for (int64_t c = 0; c < C; c++)
                for (int64_t q = 0; q < W; q++) dr[q * C + c] = xr[c * HW + q];
    }
}

/* Per chunk of images: NCHW -> padded NHWC, then im2col + int8 GEMM +
 * epilogue on row ranges.  With nt > 1 and enough work (batch 1 included)
 * one parallel region per chunk: the NHWC tasks shared out, one barrier,
 * then each thread takes a contiguous range of rows (whole 6-row GEMM
 * tiles) through im2col, GEMM and epilogue, so a batch-1 layer uses every
 * thread at the cost of one fork and one barrier. */
static int qconv_fast(sh_kctx *k, const qconv *g, sh_qstate *st, const float *mult, void *y, int nt)
{
    const sh_win *w = &g->w;
    int64_t C = w->C, OHW = g->OHW, M = g->M, Kc = g->Kc;
    int direct_a = g->G == 1 && w->kh == 1 && w->kw == 1 && w->sh == 1 && w->sw == 1 && !w->pt && !w->pl && !w->pb &&
                   !w->pr;
    /* padded HWC image, and the offset of each kernel tap in it */
    int64_t Wp = w->W + w->pl + w->pr, HWp = (w->H + w->pt + w->pb) * Wp, KK = g->KK;
    /* images per chunk: about 2 MB of patches, at least one image */
    int64_t per_img = OHW * Kc, nb = (int64_t)(2 << 20) / (per_img > 0 ? per_img : 1);
    if (nb < 1) nb = 1;
    if (nb > w->N) nb = w->N;
    size_t xt_b = (size_t)(nb * HWp * C + 64), col_b = direct_a ? 0 : (size_t)(nb * OHW * Kc + 64),
           acc_b = sizeof(int32_t) * (size_t)(nb * OHW * M) + 64;
    size_t off_b = sizeof(int64_t) * (size_t)KK;
    char *ws = sh_qstate_ws(st, xt_b + col_b + acc_b + off_b + 256);
    if (!ws) return sh_op_err(k, SH_ENOMEM, "out of memory for the workspace");
    uint8_t *xt = (uint8_t *)ws;
    uint8_t *col = (uint8_t *)ws + (xt_b + 63) / 64 * 64;
    int32_t *acc = (int32_t *)(col + (col_b + 63) / 64 * 64);
    int64_t *off = (int64_t *)((char *)acc + (acc_b + 63) / 64 * 64);
    for (int64_t a = 0; a < w->kh; a++)
        for (int64_t b = 0; b < w->kw; b++) off[a * w->kw + b] = (a * w->dh * Wp + b * w->dw) * C;
    const uint8_t *x = g->x->data;
    int blocks = C % 16 == 0 && g->HW >= 16;
    for (int64_t n0 = 0; n0 < w->N; n0 += nb) {
        int64_t cn = w->N - n0 < nb ? w->N - n0 : nb, rows = cn * OHW;
        int64_t tiles = (rows + 5) / 6, ntask = qconv_nhwc_tasks(g, cn, blocks);
        /* threads: from ~0.5M multiply-adds (a few microseconds on one core) */
        int nth = nt > 1 && (double)rows * (double)M * (double)Kc >= 524288.0 ? nt : 1;
        if (nth > tiles) nth = (int)tiles;
        int rc = SH_OK;
        if (nth <= 1) {
            for (int64_t t = 0; t < ntask; t++) qconv_nhwc(g, x, xt, n0, blocks, t);
            rc = qconv_rows(k, g, st, mult, xt, col, acc, off, direct_a, n0, 0, rows, y);
        } else {
#pragma omp parallel num_threads(nth)
            {
#pragma omp for schedule(static)
                for (int64_t t = 0; t < ntask; t++) qconv_nhwc(g, x, xt, n0, blocks, t);
                int tid = 0, th = 1;
#ifdef _OPENMP
                tid = omp_get_thread_num(), th = omp_get_num_threads();
#endif
                int64_t per = (tiles + th - 1) / th * 6, r0 = tid * per, r1 = r0 + per;
                if (r1 > rows) r1 = rows;
                if (r0 < r1) {
                    int r = qconv_rows(k, g, st, mult, xt, col, acc, off, direct_a, n0, r0, r1, y);
                    if (r) {
#pragma omp critical(shrink_qconv_err)
                        rc = r;
                    }
                }
            }
        }
        if (rc) return sh_error_wrap(k->err, "node '%s' (%s)", k->node->name, k->node->op);
    }
    return SH_OK;
}

/* ---- direct kernel for a tiny K ------------------------------------------ */

#ifdef QC_TINYK
/* One image: patches as KD planes of dwords (plane j, position p: taps
 * 4j..4j+3 as u8, the input zero point where the window leaves the image,
 * zeros past K), then per 16 positions and output channel KD vpdpbusd with
 * the channel's weights broadcast, the correction -x_zero * sum(w) folded
 * into the bias, and the requantization of sh_qrequant_row (same float ops,
 * so the same integers) written straight to the NCHW output. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void tinyk_image(const qconv *g, const sh_qstate *st,
                                                                              const float *mult, const uint8_t *x,
                                                                              uint8_t *y, uint8_t *col, int64_t OHWp,
                                                                              int64_t oh0, int64_t oh1)
{
    const sh_win *w = &g->w;
    int64_t OHW = g->OHW, KK = g->KK, M = g->M, Kc = g->Kc;
    int kd = st->dkd;
    uint8_t flip = g->x->fmt == SH_I8 ? 0x80 : 0;
    int32_t xzu = sh_qparam_zero(&g->px, 0) + (flip ? 128 : 0);
    int64_t H = w->H, W = w->W, OW = w->OW, kw = w->kw;
    if (w->sw == 1) {
        /* the image padded with the zero point (rows of Wp bytes), then per
         * plane and output row the 4 taps' source spans interleaved into
         * dwords, 16 positions per step (a step may run past the row end
         * into the next row's positions, which that row rewrites, or into
         * the slack after OHW) */
        int64_t Hp = H + w->pt + w->pb, Wp = W + w->pl + w->pr, C = g->Cg;
        uint8_t *pimg = col + kd * OHWp * 4, *zero = pimg + C * Hp * Wp + 64;
        memset(pimg, xzu, (size_t)(C * Hp * Wp + 64));
        memset(zero, 0, (size_t)(OW + 64));
        for (int64_t c = 0; c < C; c++)
            for (int64_t h = 0; h < H; h++) {
                uint8_t *d = pimg + (c * Hp + h + w->pt) * Wp + w->pl;
                const uint8_t *xr = x + c * g->HW + h * W;
                if (!flip) memcpy(d, xr, (size_t)W);
                else
                    for (int64_t q = 0; q < W; q++) d[q] = (uint8_t)(xr[q] ^ flip);
            }
        for (int j = 0; j < kd; j++)
            for (int64_t oh = oh0; oh < oh1; oh++) {
                const uint8_t *src[4];
                for (int u = 0; u < 4; u++) {
                    int64_t t = 4 * j + u;
                    if (t >= Kc) {
                        src[u] = zero;
                        continue;
                    }
                    int64_t c = t / KK, r = t % KK, i = r / kw, jj = r % kw;
                    src[u] = pimg + (c * Hp + oh * w->sh + i * w->dh) * Wp + jj * w->dw;
                }
                uint8_t *d = col + (j * OHWp + oh * OW) * 4;
                for (int64_t o = 0; o < OW; o += 16) {
                    __m128i a = _mm_loadu_si128((const __m128i *)(src[0] + o));
                    __m128i b = _mm_loadu_si128((const __m128i *)(src[1] + o));
                    __m128i c2 = _mm_loadu_si128((const __m128i *)(src[2] + o));
                    __m128i e = _mm_loadu_si128((const __m128i *)(src[3] + o));
                    __m128i ab0 = _mm_unpacklo_epi8(a, b), ab1 = _mm_unpackhi_epi8(a, b);
                    __m128i ce0 = _mm_unpacklo_epi8(c2, e), ce1 = _mm_unpackhi_epi8(c2, e);
                    _mm_storeu_si128((__m128i *)(d + 4 * o), _mm_unpacklo_epi16(ab0, ce0));
                    _mm_storeu_si128((__m128i *)(d + 4 * o + 16), _mm_unpackhi_epi16(ab0, ce0));
                    _mm_storeu_si128((__m128i *)(d + 4 * o + 32), _mm_unpacklo_epi16(ab1, ce1));
                    _mm_storeu_si128((__m128i *)(d + 4 * o + 48), _mm_unpackhi_epi16(ab1, ce1));
                }
            }
    } else {
        memset(col, 0, (size_t)(kd * OHWp * 4));
        for (int64_t t = 0; t < Kc; t++) {
            int64_t c = t / KK, r = t % KK, i = r / kw, j = r % kw, sw = w->sw;
            int64_t iw0 = -w->pl + j * w->dw;
            uint8_t *d = col + (t / 4) * OHWp * 4 + (t % 4);
            const uint8_t *xc = x + c * g->HW;
            for (int64_t oh = oh0; oh < oh1; oh++) {
                int64_t ih = oh * w->sh - w->pt + i * w->dh;
                uint8_t *dr = d + oh * OW * 4;
                if (ih < 0 || ih >= H) {
                    for (int64_t ow = 0; ow < OW; ow++) dr[ow * 4] = (uint8_t)xzu;
                    continue;
                }
                const uint8_t *xr = xc + ih * W;
                int64_t iw = iw0;
                for (int64_t ow = 0; ow < OW; ow++, iw += sw)
                    dr[ow * 4] = iw >= 0 && iw < W ? (uint8_t)(xr[iw] ^ flip) : (uint8_t)xzu;
            }
        }
    }
    int32_t yz = sh_qparam_zero(&g->py, 0);
    int32_t lo = g->yf == SH_U8 ? 0 : -128, hi = g->yf == SH_U8 ? 255 : 127;
    if (g->relu && yz > lo) lo = yz;
    __m512 vlo = _mm512_set1_ps((float)(lo - yz)), vhi = _mm512_set1_ps((float)(hi - yz));
    __m512i vz = _mm512_set1_epi32(yz);
    const int32_t *bias0 = (const int32_t *)(mult + M);
    const int32_t *dw = st->dw;
    int64_t pe = oh1 * OW;
    for (int64_t p0 = oh0 * OW; p0 < pe; p0 += 16) {
        __mmask16 mk = pe - p0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (pe - p0)) - 1);
        __m512i X[8];
        for (int j = 0; j < kd; j++) X[j] = _mm512_loadu_si512((const void *)(col + (j * OHWp + p0) * 4));
        for (int64_t m = 0; m < M; m++) {
            const int32_t *wm = dw + m * (kd + 1);
            __m512i acc = _mm512_set1_epi32(bias0[m] - xzu * wm[kd]);
            for (int j = 0; j < kd; j++) acc = _mm512_dpbusd_epi32(acc, X[j], _mm512_set1_epi32(wm[j]));
            __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(mult[m]));
            v = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);
            __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), vz);
            if (mk == 0xffff) _mm_storeu_si128((__m128i *)(y + m * OHW + p0), _mm512_cvtepi32_epi8(q));
            else _mm512_mask_cvtepi32_storeu_epi8(y + m * OHW + p0, mk, q);
        }
    }
}
#endif

static int qconv_tinyk(sh_kctx *k, const qconv *g, const sh_qstate *st, const float *mult, void *y, int nt)
{
#ifdef QC_TINYK
    sh_qstate *sw = (sh_qstate *)st;
    /* per thread: the planes (with 16 positions of slack), the padded image
     * and a zero row (tinyk_image) */
    int64_t OHWp = (g->OHW + 15) / 16 * 16 + 16, N = g->w.N, C = g->w.C;
    int64_t Hp = g->w.H + g->w.pt + g->w.pb, Wp = g->w.W + g->w.pl + g->w.pr;
    size_t per = (size_t)(st->dkd * OHWp * 4 + C * Hp * Wp + g->w.OW + 256 + 64) / 64 * 64;
    /* threads over images, or over output rows of one image (each thread
     * its own planes and padded copy: no barrier) from ~0.2M multiply-adds */
    int rows_par = nt > 1 && N == 1 && g->w.OH >= 2 * nt && (double)g->OHW * g->M * g->Kc >= 200000.0;
    int par = nt > 1 && (N > 1 || rows_par);
    int nb = par ? nt : 1;
    uint8_t *ws = sh_qstate_ws(sw, per * (size_t)nb);
    if (!ws) return sh_op_err(k, SH_ENOMEM, "out of memory for the workspace");
    const uint8_t *x = g->x->data;
    if (!par) {
        for (int64_t n = 0; n < N; n++)
            tinyk_image(g, st, mult, x + n * C * g->HW, (uint8_t *)y + n * g->M * g->OHW, ws, OHWp, 0, g->w.OH);
        return SH_OK;
    }
    if (rows_par) {
#pragma omp parallel num_threads(nb)
        {
            int tid = 0, th = 1;
#ifdef _OPENMP
            tid = omp_get_thread_num(), th = omp_get_num_threads();
#endif
            int64_t OH = g->w.OH, oh0 = OH * tid / th, oh1 = OH * (tid + 1) / th;
            if (oh0 < oh1) tinyk_image(g, st, mult, x, (uint8_t *)y, ws + per * (size_t)tid, OHWp, oh0, oh1);
        }
        return SH_OK;
    }
#pragma omp parallel num_threads(nb)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++)
            tinyk_image(g, st, mult, x + n * C * g->HW, (uint8_t *)y + n * g->M * g->OHW, ws + per * (size_t)tid, OHWp, 0,
                        g->w.OH);
    }
    return SH_OK;
#else
    (void)g, (void)st, (void)mult, (void)y, (void)nt;
    return sh_op_err(k, SH_EUNSUPPORTED, "no tiny-K kernel in this build");
#endif
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
    float *mult = sh_qstate_mb(st, (sizeof(float) + sizeof(int32_t)) * (size_t)g.M);
    if (!mult) return sh_op_err(k, SH_ENOMEM, "out of memory");
    qconv_mult(&g, mult);
    int32_t *b0 = (int32_t *)(mult + g.M);
    for (int64_t m = 0; m < g.M; m++) b0[m] = g.bias ? ((const int32_t *)g.bias->data)[m] : 0;
    int nt = k->nthreads > 0 ? k->nthreads : 1;
    /* more threads only where they pay on this machine: the first 16 calls
     * at a shape alternate nt and 1 thread (identical results), then the
     * faster (best of 8 each) is kept.  A two-thread region costs ~2.5 us on
     * some hosts (bench/omp_overhead.c), more than a 7-25 us layer gains */
    int64_t rows = g.w.N * g.OHW;
    int tuning = 0;
    double t0 = 0.0;
    if (nt > 1 && k->state) {
        if (st->tune_rows != rows) st->tune_rows = rows, st->tune_calls = 0, st->tune_nt = 0;
        if (st->tune_nt) nt = st->tune_nt;
        else {
            tuning = 1;
            if (st->tune_calls & 1) nt = 1;
            t0 = sh_now();
        }
    }
    if (st->dw) rc = qconv_tinyk(k, &g, st, mult, out[0]->data, nt);
    else if (st->fast) rc = qconv_fast(k, &g, st, mult, out[0]->data, nt);
    else qconv_direct(&g, st->wi, mult, out[0]->data, nt);
    if (tuning && !rc) {
        double dt = sh_now() - t0;
        int i = st->tune_calls & 1;
        if (st->tune_calls < 2 || dt < st->tune_t[i]) st->tune_t[i] = dt;
        if (++st->tune_calls >= 16) st->tune_nt = st->tune_t[1] <= st->tune_t[0] ? 1 : k->nthreads;
    }
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
