/* gemm_quant.c - Gemm forward for weights in a grouped quantized format
 * (weight-only quantization, src/compress/quantize.c):
 *   Y[M,N] = act(X[M,K] . W[N,K]^T + beta * C)
 * on the low-bit kernels of qgemm.c: each activation row is quantized on the
 * fly to q8_0 and meets the weight blocks in integer dot products (AVX-512
 * VNNI / AVX2 / portable C, multi-threaded over row chunks of W; B = 1 is a
 * GEMV).  The weight is prepared for the CPU once per program run and cached
 * in the node's state slot.  From SH_GEMM_QUANT_DEQ_M rows on (prompt
 * processing, batched evaluation), for formats without a 4-row integer
 * kernel (sh_qrows4_supported), the weight is unpacked to f32 in scratch
 * and the f32 GEMM runs instead (llama.cpp does the same with BLAS).  There
 * is no backward: gemm_bwd (nn.c) returns SH_EUNSUPPORTED naming the format.
 * Weights with one scale per 64 / 128 values, per row (_ch) or per tensor
 * (_t) run at their own size (qgemm.h: one scale per group in the packed
 * layout), no expansion to 32-blocks. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_quant.h"
#include "qgemm.h"

typedef struct qstate {
    const void *src;   /* weight data the prepared copy was made from */
    sh_format wf;
    int64_t N, K;
    sh_qweight w;      /* w.data points into this block */
} qstate;

/* rows from which the weight is unpacked to f32 for the f32 GEMM, for the
 * formats that have no 4-row integer kernel (sh_qrows4_supported) */
#define SH_GEMM_QUANT_DEQ_M 32

#define QSTATE_HDR ((sizeof(qstate) + 63) / 64 * 64)


typedef struct qgeom {
    int64_t M, N, K, Kp; /* Kp: B's columns (K padded with zero weights) */
    float beta;
    int64_t cm, cn;
    int relu;
} qgeom;

static int qsetup(sh_kctx *k, const sh_tensor *const *in, int n_in, qgeom *g)
{
    char b1[96], b2[96];
    const sh_tensor *A = in[0], *B = in[1], *C = n_in > 2 ? in[2] : NULL;
    const sh_format_traits *ft = sh_format_get(B->fmt);
    int qg = 32;
    if (!ft || !ft->is_quantized || (sh_qbase_format(B->fmt, &qg) < 0 && sh_qrows_base(B->fmt, NULL) < 0))
        return sh_op_err(k, SH_EUNSUPPORTED, "Gemm: weight format %s is not a grouped quantized format",
                         ft ? ft->name : "?");
    if (A->fmt != SH_F32 || (C && C->fmt != SH_F32))
        return sh_op_err(k, SH_EUNSUPPORTED, "Gemm with a %s weight needs f32 A and C", ft->name);
    if (sh_attr_int(k->node, "transB", 0) != 1 || sh_attr_int(k->node, "transA", 0) != 0 ||
        sh_attr_float(k->node, "alpha", 1.0f) != 1.0f)
        return sh_op_err(k, SH_EUNSUPPORTED, "Gemm with a %s weight needs transB=1, transA=0, alpha=1", ft->name);
    if (B->ndim != 2 || A->ndim < 1)
        return sh_op_err(k, SH_ESHAPE, "A %s, B %s (%s): expected a 2-D weight [N,K] and A [...,K]",
                         sh_shape_str(A->ndim, A->shape, b1, sizeof b1), sh_shape_str(B->ndim, B->shape, b2, sizeof b2),
                         ft->name);
    g->N = B->shape[0];
    g->Kp = B->shape[1];
    g->K = sh_attr_int(k->node, "weight_k", g->Kp);
    if (A->shape[A->ndim - 1] != g->K || g->Kp % qg || g->K > g->Kp || g->Kp - g->K >= qg || g->K <= 0)
        return sh_op_err(k, SH_ESHAPE,
                         "A %s and B %s (%s, transB=1, weight_k %lld): A's last dim must be weight_k (B's columns, a "
                         "multiple of %d, less than one group zero-padded)",
                         sh_shape_str(A->ndim, A->shape, b1, sizeof b1), sh_shape_str(B->ndim, B->shape, b2, sizeof b2),
                         ft->name, (long long)g->K, qg);
    if (ft->packed) { /* _ch / _t rows: the header must agree with the shape */
        const sh_qrow_hdr *h = B->nbytes >= SH_QROW_HDR_BYTES && B->data ? sh_qrows_hdr(B->data) : NULL;
        if (!h || h->magic != SH_QROW_MAGIC || h->fmt != (int32_t)B->fmt || h->rows != g->N || h->cols != g->Kp)
            return sh_op_err(k, SH_EFORMAT, "weight B %s (%s): buffer header disagrees with the shape",
                             sh_shape_str(B->ndim, B->shape, b2, sizeof b2), ft->name);
    }
    g->M = sh_tensor_numel(A) / g->K;
    g->beta = sh_attr_float(k->node, "beta", 1.0f);
    return sh_gemm_epilogue(k, C, g->M, g->N, &g->relu, &g->cm, &g->cn);
}

int sh_gemm_quantized_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    qgeom g;
    int rc = qsetup(k, in, n_in, &g);
    if (rc) return rc;
    const sh_tensor *A = in[0];
    int64_t s[SH_MAX_DIMS];
    for (int i = 0; i < A->ndim - 1; i++) s[i] = A->shape[i];
    s[A->ndim - 1] = g.N;
    sh_tensor_set_shape(out[0], SH_F32, A->ndim, s);
    return SH_OK;
}

/* The prepared weight for B, from the node's state slot (made on first use). */
static const sh_qweight *prepared(sh_kctx *k, const sh_tensor *B, int64_t N, int64_t K)
{
    qstate *st = k->state ? *k->state : NULL;
    if (st && st->src == B->data && st->wf == B->fmt && st->N == N && st->K == K) return &st->w;
    sh_qweight *w = NULL;
    sh_error e = {0};
    /* g64 / g128 / _ch / _t keep one scale per group in the prepared weight
     * on AVX-512 (qgemm.h) */
    if (sh_qweight_new(B->data, B->fmt, N, K, -1, &w, &e)) return NULL;
    if (!k->state) return w; /* caller frees: marked by st == NULL */
    free(*k->state);
    *k->state = NULL;
    size_t sz = (QSTATE_HDR + w->bytes + 63) / 64 * 64;
    st = aligned_alloc(64, sz);
    if (!st) { sh_qweight_free(w); return NULL; }
    st->src = B->data;
    st->wf = B->fmt;
    st->N = N;
    st->K = K;
    st->w = *w;
    st->w.data = (char *)st + QSTATE_HDR;
    memcpy(st->w.data, w->data, w->bytes);
    sh_qweight_free(w);
    *k->state = st;
    return &st->w;
}

int sh_gemm_quantized(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    (void)n_out;
    qgeom g;
    int rc = qsetup(k, in, n_in, &g);
    if (rc) return rc;
    const sh_tensor *B = in[1];
    const float *C = n_in > 2 && in[2] ? in[2]->data : NULL;
    float *Y = out[0]->data;
    if (g.M == 0) return SH_OK;
    /* bias fused when C is a row vector [N] added with beta = 1 */
    const float *bias = C && g.beta == 1.0f && g.cm == 1 && g.cn == g.N ? C : NULL;
    const float *X = in[0]->data;
    /* AVX-512 VNNI runs q8_0 / q4_0 / q4_1 / log4 4 activation rows at a
     * time: faster than unpacking to f32 for the f32 GEMM at any M (Llama dim
     * 1024, 64-token prefill, 1 thread: q4_0 118 -> 45 ms, f32 121 ms;
     * bench/bench_llama_speed.sh) */
    if (g.M >= SH_GEMM_QUANT_DEQ_M && !sh_qrows4_supported(B->fmt)) {
        /* many rows (prompt processing, batched eval): the weight is unpacked
         * to f32 once for this call and the f32 GEMM does the rest, as
         * llama.cpp does with BLAS for batches >= 32; the unpacking costs
         * N*K against M*N*K multiply-adds */
        float *wd = sh_kctx_scratch(k, sizeof(float) * (size_t)(g.N * g.Kp));
        if (!wd) return sh_op_err(k, SH_ENOMEM, "out of memory unpacking a [%lld,%lld] weight", (long long)g.N,
                                  (long long)g.Kp);
        const sh_format_traits *ft = sh_format_get(B->fmt);
        size_t rb = sh_format_bytes(B->fmt, g.Kp);
        int64_t nn = g.N;
        if (ft->packed) { /* _ch / _t rows (header checked in qsetup) */
            SH_PAR_FOR(nn >= 64, k->nthreads > 0 ? k->nthreads : omp_get_max_threads(), for (int64_t r = 0; r < nn; r++) sh_qrows_row_to_f32(B->data, r, wd + r * g.Kp););
        } else {
            SH_PAR_FOR(nn >= 64, k->nthreads > 0 ? k->nthreads : omp_get_max_threads(), for (int64_t r = 0; r < nn; r++) ft->to_f32((const char *)B->data + (size_t)r * rb, wd + r * g.Kp, g.Kp););
        }
        float beta = 0.0f;
        if (C && g.beta != 0.0f) {
            for (int64_t i = 0; i < g.M; i++) {
                const float *cr = C + (g.cm == 1 ? 0 : i) * g.cn;
                float *yr = Y + i * g.N;
                for (int64_t j = 0; j < g.N; j++) yr[j] = cr[g.cn == 1 ? 0 : j];
            }
            beta = g.beta;
        }
        sh_sgemm(0, 1, g.M, g.N, g.K, 1.0f, X, g.K, wd, g.Kp, beta, Y, g.N);
        if (g.relu)
            for (int64_t i = 0; i < g.M * g.N; i++) Y[i] = Y[i] > 0.0f ? Y[i] : 0.0f;
        return SH_OK;
    }
    const sh_qweight *w = prepared(k, B, g.N, g.Kp);
    if (!w) return sh_op_err(k, SH_ENOMEM, "out of memory preparing the %s weight", sh_format_get(B->fmt)->name);
    if (g.Kp != g.K) { /* zero-pad the activations to the padded weight rows */
        float *xp = sh_kctx_scratch(k, sizeof(float) * (size_t)(g.M * g.Kp));
        if (!xp) {
            if (!k->state) sh_qweight_free((sh_qweight *)w);
            return sh_op_err(k, SH_ENOMEM, "out of memory");
        }
        for (int64_t i = 0; i < g.M; i++) {
            memcpy(xp + i * g.Kp, X + i * g.K, sizeof(float) * (size_t)g.K);
            memset(xp + i * g.Kp + g.K, 0, sizeof(float) * (size_t)(g.Kp - g.K));
        }
        X = xp;
    }
    sh_error e = {0};
    rc = sh_qweight_matmul(X, g.M, w, bias, Y, k->nthreads, &e);
    if (!k->state) sh_qweight_free((sh_qweight *)w);
    if (rc) return sh_op_err(k, rc, "%s", e.msg);
    if (C && !bias && g.beta != 0.0f)
        for (int64_t i = 0; i < g.M; i++) {
            const float *cr = C + (g.cm == 1 ? 0 : i) * g.cn;
            float *yr = Y + i * g.N;
            for (int64_t j = 0; j < g.N; j++) yr[j] += g.beta * cr[g.cn == 1 ? 0 : j];
        }
    if (g.relu) {
        int64_t n = g.M * g.N;
        for (int64_t i = 0; i < n; i++) Y[i] = Y[i] > 0.0f ? Y[i] : 0.0f;
    }
    return SH_OK;
}
