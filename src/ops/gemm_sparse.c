/* gemm_sparse.c - Gemm whose weight (input B) is a packed sparse tensor (csr,
 * bcsr, nm): Y = alpha * A * W^T + beta * C through sh_spmm, then the fused
 * activation ("Relu").  The weight is stored [N out, K in], so only transB=1
 * (the PyTorch Linear / Llama layout) and transA=0 are accepted.  Inference
 * only: the backward of a packed weight is a clear error.  nn.c's Gemm
 * dispatches here when in[1] is a packed format. */
#include <stdint.h>
#include <string.h>

#include "core/sparse.h"
#include "ops.h"

typedef struct sgeom {
    int64_t M, N, K;
    float alpha, beta;
    int64_t cm, cn; /* C broadcast extents over M and N (0: no C) */
    int relu;
} sgeom;

static int sgemm_setup(sh_kctx *k, const sh_tensor *const *in, int n_in, sgeom *g)
{
    char b1[96], b2[96];
    const sh_tensor *A = in[0], *W = in[1], *C = n_in > 2 ? in[2] : NULL;
    if (A->fmt != SH_F32 || (C && C->fmt != SH_F32))
        return sh_op_err(k, SH_EUNSUPPORTED, "Gemm with a sparse %s weight needs f32 A and C",
                         sh_format_get(W->fmt)->name);
    if (!sh_format_is_sparse(W->fmt) || W->ndim != 2)
        return sh_op_err(k, SH_EUNSUPPORTED, "Gemm: packed weight of format %s %s is not a 2-D sparse matrix",
                         sh_format_get(W->fmt)->name, sh_shape_str(W->ndim, W->shape, b2, sizeof b2));
    if (sh_attr_int(k->node, "transA", 0) != 0)
        return sh_op_err(k, SH_EUNSUPPORTED, "Gemm with a sparse weight needs transA=0");
    if (sh_attr_int(k->node, "transB", 0) != 1)
        return sh_op_err(k, SH_EUNSUPPORTED,
                         "Gemm with a sparse %s weight %s needs transB=1 (weight stored [N out, K in])",
                         sh_format_get(W->fmt)->name, sh_shape_str(W->ndim, W->shape, b2, sizeof b2));
    g->alpha = sh_attr_float(k->node, "alpha", 1.0f);
    g->beta = sh_attr_float(k->node, "beta", 1.0f);
    if (A->ndim < 2)
        return sh_op_err(k, SH_ESHAPE, "A %s: expected at least 2 dims", sh_shape_str(A->ndim, A->shape, b1, sizeof b1));
    g->K = A->shape[A->ndim - 1];
    g->M = g->K ? sh_tensor_numel(A) / g->K : 0;
    g->N = W->shape[0];
    if (W->shape[1] != g->K)
        return sh_op_err(k, SH_ESHAPE, "A %s and sparse weight %s (transB=1): inner dimensions %lld and %lld differ",
                         sh_shape_str(A->ndim, A->shape, b1, sizeof b1), sh_shape_str(W->ndim, W->shape, b2, sizeof b2),
                         (long long)g->K, (long long)W->shape[1]);
    return sh_gemm_epilogue(k, C, g->M, g->N, &g->relu, &g->cm, &g->cn);
}

int sh_gemm_sparse_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    sgeom g;
    int rc = sgemm_setup(k, in, n_in, &g);
    if (rc) return rc;
    const sh_tensor *A = in[0];
    int64_t s[SH_MAX_DIMS];
    int nd = A->ndim;
    for (int i = 0; i < nd - 1; i++) s[i] = A->shape[i];
    s[nd - 1] = g.N;
    sh_tensor_set_shape(out[0], SH_F32, nd, s);
    return SH_OK;
}

int sh_gemm_sparse(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    sgeom g;
    int rc = sgemm_setup(k, in, n_in, &g);
    if (rc) return rc;
    if (g.M == 0 || g.N == 0) return SH_OK;
    /* the runtime's view of an initializer may carry nbytes 0 for packed
     * formats: take the size from the header (validated when loaded/packed) */
    sh_tensor wl = *in[1];
    const sh_tensor *W = &wl;
    if (!wl.data) return sh_op_err(k, SH_EINVAL, "sparse weight has no data");
    if (wl.nbytes == 0 && ((const sh_sparse_hdr *)wl.data)->magic == SH_SPARSE_MAGIC)
        wl.nbytes = (size_t)((const sh_sparse_hdr *)wl.data)->total;
    const float *A = in[0]->data, *C = n_in > 2 && in[2] && g.beta != 0.0f ? in[2]->data : NULL;
    float *Y = out[0]->data;
    /* C is a plain bias when it is [N] / [1,N] with beta 1 and alpha 1 */
    int plain = C && g.cm == 1 && g.cn == g.N && g.beta == 1.0f && g.alpha == 1.0f;
    int nt = k->nthreads > 0 ? k->nthreads : 1;
    size_t wsb = sh_spmm_workspace(W, g.M, nt);
    char *ws = sh_kctx_scratch(k, wsb + 64);
    if (!ws) return sh_op_err(k, SH_ENOMEM, "out of memory for a %zu-byte sparse workspace", wsb);
    ws += (64 - ((uintptr_t)ws & 63)) & 63;
    rc = sh_spmm(W, A, g.M, plain ? C : NULL, Y, nt, 0, ws, k->err);
    if (rc) return sh_error_wrap(k->err, "node '%s' (Gemm, sparse %s weight)", k->node->name ? k->node->name : "",
                                 sh_format_get(W->fmt)->name);
    if (!plain && (g.alpha != 1.0f || C)) {
        for (int64_t i = 0; i < g.M; i++) {
            float *yr = Y + i * g.N;
            const float *cr = C ? C + (g.cm == 1 ? 0 : i) * g.cn : NULL;
            for (int64_t j = 0; j < g.N; j++)
                yr[j] = g.alpha * yr[j] + (cr ? g.beta * cr[g.cn == 1 ? 0 : j] : 0.0f);
        }
    }
    if (g.relu) {
        int64_t n = g.M * g.N;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) Y[i] = Y[i] > 0.0f ? Y[i] : 0.0f;
    }
    return SH_OK;
}

int sh_gemm_sparse_bwd(sh_kctx *k)
{
    return sh_op_err(k, SH_EUNSUPPORTED,
                     "Gemm with a packed sparse weight has no backward (unpack it with sh_sparse_unpack to train)");
}
