/* common.c - helpers shared by op implementations. */
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>

#include "ops.h"

int sh_op_err(sh_kctx *k, int code, const char *fmt, ...)
{
    char msg[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sh_err(k->err, code, "node '%s' (%s): %s", k->node ? k->node->name : "?", k->node ? k->node->op : "?",
                  msg);
}

int sh_broadcast_shape(int na, const int64_t *a, int nb, const int64_t *b, int *nout, int64_t *out)
{
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int64_t da = i < n - na ? 1 : a[i - (n - na)];
        int64_t db = i < n - nb ? 1 : b[i - (n - nb)];
        if (da != db && da != 1 && db != 1) return SH_ESHAPE;
        out[i] = da == 1 ? db : da;
    }
    *nout = n;
    return SH_OK;
}

void sh_tensor_set_shape(sh_tensor *t, sh_format fmt, int ndim, const int64_t *shape)
{
    t->fmt = fmt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = sh_format_bytes(fmt, sh_shape_numel(ndim, shape));
}

int sh_tensor_read_ints(const sh_tensor *t, int64_t *v, int max)
{
    if (!t || !t->data) return -1;
    int64_t n = sh_tensor_numel(t);
    if (n > max) n = max;
    for (int64_t i = 0; i < n; i++) {
        switch (t->fmt) {
        case SH_I64: v[i] = ((const int64_t *)t->data)[i]; break;
        case SH_I32: v[i] = ((const int32_t *)t->data)[i]; break;
        case SH_I8: v[i] = ((const int8_t *)t->data)[i]; break;
        case SH_U8: case SH_BOOL: v[i] = ((const uint8_t *)t->data)[i]; break;
        default: v[i] = (int64_t)sh_tensor_get_f(t, i); break;
        }
    }
    return (int)n;
}

float sh_tensor_get_f(const sh_tensor *t, int64_t i)
{
    switch (t->fmt) {
    case SH_F32: return ((const float *)t->data)[i];
    case SH_I64: return (float)((const int64_t *)t->data)[i];
    case SH_I32: return (float)((const int32_t *)t->data)[i];
    case SH_I8: return (float)((const int8_t *)t->data)[i];
    case SH_U8: case SH_BOOL: return (float)((const uint8_t *)t->data)[i];
    default: {
        float f;
        const sh_format_traits *tr = sh_format_get(t->fmt);
        tr->to_f32((const char *)t->data + (size_t)i * (size_t)tr->block_bytes, &f, 1);
        return f;
    }
    }
}

void sh_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return;
    }
    /* Small products run on the calling thread: OpenBLAS (OpenMP build)
     * splits by the caller's OpenMP thread count, and for a 172 x 64 GEMV
     * (stories260K decode) a two-thread team costs more than the product
     * (f32 decode at 2 threads was 3x slower than at 1). */
    int nt = omp_get_max_threads();
    int serial = nt > 1 && (double)M * (double)N * (double)K < (double)(1 << 18);
    if (serial) omp_set_num_threads(1);
    if (M == 1) {
        /* One row: a matrix-vector product.  OpenBLAS's sgemm is ~7x slower
         * than its sgemv here (4096x4096: 23 ms vs 3.4 ms).  Row i of op(A)
         * is A[0..K) with stride 1, or column 0 of A[K,M] with stride lda. */
        int64_t incx = transA ? lda : 1;
        if (transB) /* C[1,N] = B[N,K] . a */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)N, (blasint)K, alpha, B, (blasint)ldb, A,
                        (blasint)incx, beta, C, 1);
        else /* C[1,N] = B[K,N]^T . a */
            cblas_sgemv(CblasRowMajor, CblasTrans, (blasint)K, (blasint)N, alpha, B, (blasint)ldb, A,
                        (blasint)incx, beta, C, 1);
    } else
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C,
                    (blasint)ldc);
    if (serial) omp_set_num_threads(nt);
}

int sh_gemm_epilogue(sh_kctx *k, const sh_tensor *C, int64_t M, int64_t N, int *relu, int64_t *cm, int64_t *cn)
{
    char b[128];
    const char *act = sh_attr_string(k->node, "activation", "");
    if (*act && strcmp(act, "Relu") != 0)
        return sh_op_err(k, SH_EUNSUPPORTED, "activation '%s' (only Relu can be fused into Gemm)", act);
    *relu = *act != 0;
    *cm = *cn = 0;
    if (!C) return SH_OK;
    int64_t c0 = 1, c1 = 1;
    if (C->ndim == 1) c1 = C->shape[0];
    else if (C->ndim == 2) c0 = C->shape[0], c1 = C->shape[1];
    else if (C->ndim > 2)
        return sh_op_err(k, SH_ESHAPE, "C %s has more than 2 dims", sh_shape_str(C->ndim, C->shape, b, sizeof b));
    if ((c0 != 1 && c0 != M) || (c1 != 1 && c1 != N))
        return sh_op_err(k, SH_ESHAPE, "C %s does not broadcast to the output [%lld,%lld]",
                         sh_shape_str(C->ndim, C->shape, b, sizeof b), (long long)M, (long long)N);
    *cm = c0, *cn = c1;
    return SH_OK;
}
