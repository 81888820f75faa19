/* gemm_quant.h - Gemm with a weight in a grouped quantized format
 * (weight-only quantization; see gemm_quant.c). */
#ifndef SH_GEMM_QUANT_H
#define SH_GEMM_QUANT_H
#include "ops.h"

/* Shape inference and forward of a Gemm whose input 1 (B, transB=1, [N,K])
 * is q8_0 / q4_0 / q4_1 / q3_0 / q2_1 / log4. */
int sh_gemm_quantized_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out);
int sh_gemm_quantized(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out);
/* Conv whose weight (input 1) is a grouped quantized [M, Kp] matrix with
 * attributes kernel_shape and weight_k (ops/conv_quant.c); 2-D only. */
int sh_conv_quantized_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out);
int sh_conv_quantized(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out);
/* Its prepared weight, kept in *k->state (conv.c's node state holds it):
 * free, and the bytes it holds (the packed weight only). */
typedef struct sh_conv_qstate sh_conv_qstate;
void sh_conv_qstate_free(sh_conv_qstate *s);
size_t sh_conv_qstate_bytes(const sh_conv_qstate *s);
#endif
