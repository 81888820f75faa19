/* conv_quant.c - Conv forward for a weight in a grouped quantized format
 * (weight-only quantization, src/compress/quantize.c).
 *
 * The weight is stored as the matrix [M, Kp] of the Conv weight's
 * [M, Cg*kh*kw] view (rows zero-padded to Kp, a multiple of the format's
 * group), with node attributes kernel_shape (kh, kw) and weight_k = Cg*kh*kw.
 * Per image and group the input is unfolded (im2col) and multiplied by the
 * weight.  From 32 output positions per image on, conv.c does not call this
 * file: it unpacks the weight once into the node's state and runs its f32
 * kernels (unpacking at every call made the 4-bit cnn 20x slower than f32 at
 * batch 1); the path below stays for direct callers.  With fewer positions the activations
 * [positions, Kp] meet the packed weight in the low-bit integer kernels
 * (sh_qweight_matmul).  2-D convolutions; no backward. */
#include <stdlib.h>
#include <string.h>

#include "gemm_quant.h"
#include "nn_ops.h"
#include "qgemm.h"

#define SH_CONV_QUANT_DEQ_P 32

typedef struct cq_geom {
    sh_win w;
    int64_t M, G, Cg, Mg, K, Kp, OHW;
    int relu;
} cq_geom;

static int cq_setup(sh_kctx *k, const sh_tensor *const *in, int n_in, cq_geom *g)
{
    char b1[96], b2[96];
    const sh_tensor *x = in[0], *B = in[1], *bias = n_in > 2 ? in[2] : NULL;
    const sh_format_traits *ft = sh_format_get(B->fmt);
    int qg = 0;
    if (!ft || !ft->is_quantized || sh_qbase_format(B->fmt, &qg) < 0)
        return sh_op_err(k, SH_EUNSUPPORTED, "Conv: weight format %s is not a grouped quantized format",
                         ft ? ft->name : "?");
    if (x->fmt != SH_F32 || (bias && bias->fmt != SH_F32))
        return sh_op_err(k, SH_EUNSUPPORTED, "Conv with a %s weight needs f32 input and bias", ft->name);
    const int64_t *ks;
    if (sh_attr_ints(k->node, "kernel_shape", &ks) != 2 || x->ndim != 4 || B->ndim != 2)
        return sh_op_err(k, SH_EUNSUPPORTED,
                         "Conv with a %s weight %s on input %s: needs a 2-D convolution (input [N,C,H,W]), a [M,K] "
                         "weight and kernel_shape (2 values)",
                         ft->name, sh_shape_str(B->ndim, B->shape, b2, sizeof b2),
                         sh_shape_str(x->ndim, x->shape, b1, sizeof b1));
    g->M = B->shape[0];
    g->Kp = B->shape[1];
    g->K = sh_attr_int(k->node, "weight_k", g->Kp);
    g->G = sh_attr_int(k->node, "group", 1);
    int64_t C = x->shape[1];
    if (g->G < 1 || C % g->G || g->M % g->G || ks[0] < 1 || ks[1] < 1)
        return sh_op_err(k, SH_ESHAPE, "input %s, %s weight %s: group %lld does not divide the channels", 
                         sh_shape_str(x->ndim, x->shape, b1, sizeof b1), ft->name,
                         sh_shape_str(B->ndim, B->shape, b2, sizeof b2), (long long)g->G);
    g->Cg = C / g->G, g->Mg = g->M / g->G;
    if (g->Cg * ks[0] * ks[1] != g->K || g->Kp % qg || g->K > g->Kp || g->Kp - g->K >= SH_QK)
        return sh_op_err(k, SH_ESHAPE,
                         "input %s, %s weight %s, kernel %lldx%lld, group %lld: weight_k %lld should be %lld "
                         "(columns a multiple of %d, up to 31 zero-padded)",
                         sh_shape_str(x->ndim, x->shape, b1, sizeof b1), ft->name,
                         sh_shape_str(B->ndim, B->shape, b2, sizeof b2), (long long)ks[0], (long long)ks[1],
                         (long long)g->G, (long long)g->K, (long long)(g->Cg * ks[0] * ks[1]), qg);
    if (bias && (bias->ndim != 1 || bias->shape[0] != g->M))
        return sh_op_err(k, SH_ESHAPE, "bias %s does not match the %lld output channels of the %s weight",
                         sh_shape_str(bias->ndim, bias->shape, b1, sizeof b1), (long long)g->M, ft->name);
    int rc = sh_win_setup(k, x, ks, 0, 1, 0, &g->w);
    if (rc) return rc;
    const char *act = sh_attr_string(k->node, "activation", "");
    if (*act && strcmp(act, "Relu"))
        return sh_op_err(k, SH_EUNSUPPORTED, "activation '%s' (only Relu can be fused into Conv)", act);
    g->relu = *act != 0;
    g->OHW = g->w.OH * g->w.OW;
    return SH_OK;
}

int sh_conv_quantized_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    cq_geom g;
    int rc = cq_setup(k, in, n_in, &g);
    if (rc) return rc;
    int64_t s[4] = {g.w.N, g.M, g.w.OH, g.w.OW};
    sh_tensor_set_shape(out[0], SH_F32, 4, s);
    return SH_OK;
}

/* col[r * ldr + c * ldc] for position r and column c = (ci*kh + i)*kw + j of
 * channels [c0, c0 + Cg) of one image x [C, H, W]. */
static void unfold(const float *x, int64_t c0, int64_t Cg, const sh_win *w, float *col, int64_t ldr, int64_t ldc)
{
    for (int64_t ci = 0; ci < Cg; ci++) {
        const float *xc = x + (c0 + ci) * w->H * w->W;
        for (int64_t i = 0; i < w->kh; i++)
            for (int64_t j = 0; j < w->kw; j++) {
                int64_t c = (ci * w->kh + i) * w->kw + j;
                for (int64_t oh = 0; oh < w->OH; oh++) {
                    int64_t ih = oh * w->sh - w->pt + i * w->dh;
                    for (int64_t ow = 0; ow < w->OW; ow++) {
                        int64_t iw = ow * w->sw - w->pl + j * w->dw;
                        col[(oh * w->OW + ow) * ldr + c * ldc] =
                            ih >= 0 && ih < w->H && iw >= 0 && iw < w->W ? xc[ih * w->W + iw] : 0.0f;
                    }
                }
            }
    }
}

int sh_conv_quantized(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    cq_geom g;
    int rc = cq_setup(k, in, n_in, &g);
    if (rc) return rc;
    const sh_tensor *B = in[1];
    const float *x = in[0]->data, *bias = n_in > 2 && in[2] ? in[2]->data : NULL;
    float *y = out[0]->data;
    const sh_win *w = &g.w;
    int64_t C = in[0]->shape[1], HW = w->H * w->W, P = g.OHW;
    size_t rb = sh_format_bytes(B->fmt, g.Kp);
    const sh_format_traits *ft = sh_format_get(B->fmt);
    if (P >= SH_CONV_QUANT_DEQ_P) {
        /* unpack the weight, im2col [K, P], f32 GEMM straight into y */
        size_t wsz = (size_t)(g.M * g.Kp), csz = (size_t)(g.K * P);
        float *wd = sh_kctx_scratch(k, sizeof(float) * (wsz + csz));
        if (!wd) return sh_op_err(k, SH_ENOMEM, "out of memory for a quantized conv (%zu floats)", wsz + csz);
        float *col = wd + wsz;
        for (int64_t r = 0; r < g.M; r++) ft->to_f32((const char *)B->data + (size_t)r * rb, wd + r * g.Kp, g.Kp);
        for (int64_t n = 0; n < w->N; n++)
            for (int64_t gi = 0; gi < g.G; gi++) {
                unfold(x + n * C * HW, gi * g.Cg, g.Cg, w, col, 1, P);
                float *yg = y + (n * g.M + gi * g.Mg) * P;
                sh_sgemm(0, 0, g.Mg, P, g.K, 1.0f, wd + gi * g.Mg * g.Kp, g.Kp, col, P, 0.0f, yg, P);
                for (int64_t m = 0; m < g.Mg; m++) {
                    float b = bias ? bias[gi * g.Mg + m] : 0.0f, *yr = yg + m * P;
                    for (int64_t p = 0; p < P; p++) {
                        float v = yr[p] + b;
                        yr[p] = g.relu && v < 0.0f ? 0.0f : v;
                    }
                }
            }
        return SH_OK;
    }
    /* few positions: activations [P, Kp] through the low-bit kernels */
    int bf = sh_qbase_format(B->fmt, NULL);
    size_t xb = sh_format_bytes((sh_format)bf, g.Kp);
    size_t csz = (size_t)(P * g.Kp), ysz = (size_t)(P * g.Mg);
    float *col = sh_kctx_scratch(k, sizeof(float) * (csz + ysz) + xb * (size_t)g.Mg);
    if (!col) return sh_op_err(k, SH_ENOMEM, "out of memory for a quantized conv");
    float *yt = col + csz;
    char *wx = (char *)(yt + ysz);
    memset(col, 0, sizeof(float) * csz); /* padded columns stay 0 */
    for (int64_t gi = 0; gi < g.G; gi++) {
        const char *wg = (const char *)B->data + (size_t)(gi * g.Mg) * rb;
        if (bf != (int)B->fmt) { /* g64 / g128: run as 32-blocks */
            for (int64_t r = 0; r < g.Mg; r++) sh_qexpand(B->fmt, wg + r * rb, g.Kp, wx + r * xb);
            wg = wx;
        }
        sh_qweight *qw = NULL;
        sh_error e = {0};
        if (sh_qweight_new(wg, (sh_format)bf, g.Mg, g.Kp, -1, &qw, &e)) return sh_op_err(k, e.code, "%s", e.msg);
        for (int64_t n = 0; n < w->N && !rc; n++) {
            unfold(x + n * C * HW, gi * g.Cg, g.Cg, w, col, g.Kp, 1);
            rc = sh_qweight_matmul(col, P, qw, bias ? bias + gi * g.Mg : NULL, yt, k->nthreads, &e);
            if (rc) break;
            float *yg = y + (n * g.M + gi * g.Mg) * P;
            for (int64_t p = 0; p < P; p++)
                for (int64_t m = 0; m < g.Mg; m++) {
                    float v = yt[p * g.Mg + m];
                    yg[m * P + p] = g.relu && v < 0.0f ? 0.0f : v;
                }
        }
        sh_qweight_free(qw);
        if (rc) return sh_op_err(k, rc, "%s", e.msg);
    }
    return SH_OK;
}
