/* elementwise.c - binary ops with broadcasting, unary activations, Softmax,
 * LogSoftmax, reductions. */
#include <math.h>
#include <string.h>

#include "ops.h"

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
    for (int64_t i = 0; i < n; i++) dx[i] += x[i] > 0.0f ? dy[i] : 0.0f;
    return SH_OK;
}

static const sh_op_def op_relu = {"Relu", 1, 1, 1, 1, unary_infer, relu_fwd, relu_bwd, 0, 0, NULL, 0};

const sh_op_def *const sh_ops_elem[] = {&op_relu, NULL};
