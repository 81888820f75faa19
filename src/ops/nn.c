/* nn.c - Gemm, MatMul and the nn family table (Conv: conv.c; pools: pool.c;
 * BatchNormalization, LayerNormalization: norm.c). */
#include <string.h>

#include "nn_ops.h"
#include "gemm_quant.h"

static const char *shs(const sh_tensor *t, char *b, size_t n) { return sh_shape_str(t->ndim, t->shape, b, n); }

/* ---- Gemm ------------------------------------------------------------ */

typedef struct gemm_geom {
    int tA, tB;
    int64_t M, N, K;
    float alpha, beta;
    int64_t cm, cn; /* C's broadcast extent over M and N: 1 or M / N; 0: no C */
    int relu;       /* activation="Relu" (shrink extension): y = max(gemm, 0) */
} gemm_geom;

static int gemm_setup(sh_kctx *k, const sh_tensor *const *in, int n_in, gemm_geom *g)
{
    char b1[96], b2[96], b3[96];
    const sh_tensor *A = in[0], *B = in[1], *C = n_in > 2 ? in[2] : NULL;
    if (A->fmt != SH_F32 || B->fmt != SH_F32 || (C && C->fmt != SH_F32))
        return sh_op_err(k, SH_EUNSUPPORTED, "Gemm needs f32 inputs");
    g->tA = (int)sh_attr_int(k->node, "transA", 0);
    g->tB = (int)sh_attr_int(k->node, "transB", 0);
    g->alpha = sh_attr_float(k->node, "alpha", 1.0f);
    g->beta = sh_attr_float(k->node, "beta", 1.0f);
    if (B->ndim != 2 || A->ndim < 2 || (A->ndim > 2 && g->tA))
        return sh_op_err(k, SH_ESHAPE, "A %s, B %s: expected 2-D matrices (A may have more dims when transA=0)",
                         shs(A, b1, sizeof b1), shs(B, b2, sizeof b2));
    int64_t ka;
    if (g->tA) g->M = A->shape[1], ka = A->shape[0];
    else ka = A->shape[A->ndim - 1], g->M = sh_tensor_numel(A) / (ka ? ka : 1);
    int64_t kb = g->tB ? B->shape[1] : B->shape[0];
    g->N = g->tB ? B->shape[0] : B->shape[1];
    if (ka != kb)
        return sh_op_err(k, SH_ESHAPE, "A %s (transA=%d) and B %s (transB=%d): inner dimensions %lld and %lld differ",
                         shs(A, b1, sizeof b1), g->tA, shs(B, b2, sizeof b2), g->tB, (long long)ka, (long long)kb);
    g->K = ka;
    const char *act = sh_attr_string(k->node, "activation", "");
    if (*act && strcmp(act, "Relu") != 0)
        return sh_op_err(k, SH_EUNSUPPORTED, "activation '%s' (only Relu can be fused into Gemm)", act);
    g->relu = *act != 0;
    g->cm = g->cn = 0;
    if (C) {
        /* unidirectional broadcast of C to [M, N] */
        int64_t c0 = 1, c1 = 1;
        if (C->ndim == 1) c1 = C->shape[0];
        else if (C->ndim == 2) c0 = C->shape[0], c1 = C->shape[1];
        else if (C->ndim > 2)
            return sh_op_err(k, SH_ESHAPE, "C %s has more than 2 dims", shs(C, b3, sizeof b3));
        if ((c0 != 1 && c0 != g->M) || (c1 != 1 && c1 != g->N))
            return sh_op_err(k, SH_ESHAPE, "C %s does not broadcast to the output [%lld,%lld] of A %s x B %s",
                             shs(C, b3, sizeof b3), (long long)g->M, (long long)g->N, shs(A, b1, sizeof b1),
                             shs(B, b2, sizeof b2));
        g->cm = c0, g->cn = c1;
    }
    return SH_OK;
}

static int gemm_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    if (sh_format_get(in[1]->fmt)->is_quantized) return sh_gemm_quantized_infer(k, in, n_in, out, n_out);
    if (sh_format_get(in[1]->fmt)->packed) return sh_gemm_sparse_infer(k, in, n_in, out, n_out);
    gemm_geom g;
    int rc = gemm_setup(k, in, n_in, &g);
    if (rc) return rc;
    const sh_tensor *A = in[0];
    int64_t s[SH_MAX_DIMS];
    int nd = 2;
    if (A->ndim > 2) {
        nd = A->ndim;
        for (int i = 0; i < nd - 1; i++) s[i] = A->shape[i];
        s[nd - 1] = g.N;
    } else s[0] = g.M, s[1] = g.N;
    sh_tensor_set_shape(out[0], SH_F32, nd, s);
    return SH_OK;
}

static int gemm_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    if (sh_format_get(in[1]->fmt)->is_quantized) return sh_gemm_quantized(k, in, n_in, out, n_out);
    if (sh_format_get(in[1]->fmt)->packed) return sh_gemm_sparse(k, in, n_in, out, n_out);
    gemm_geom g;
    int rc = gemm_setup(k, in, n_in, &g);
    if (rc) return rc;
    const float *A = in[0]->data, *B = in[1]->data, *C = n_in > 2 && in[2] ? in[2]->data : NULL;
    float *Y = out[0]->data;
    float beta = 0.0f;
    if (C && g.beta != 0.0f) {
        for (int64_t i = 0; i < g.M; i++) {
            const float *cr = C + (g.cm == 1 ? 0 : i) * g.cn;
            float *yr = Y + i * g.N;
            if (g.cn == 1)
                for (int64_t j = 0; j < g.N; j++) yr[j] = cr[0];
            else memcpy(yr, cr, sizeof(float) * (size_t)g.N);
        }
        beta = g.beta;
    }
    sh_sgemm(g.tA, g.tB, g.M, g.N, g.K, g.alpha, A, g.tA ? g.M : g.K, B, g.tB ? g.K : g.N, beta, Y, g.N);
    if (g.relu) {
        int64_t n = g.M * g.N;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) Y[i] = Y[i] > 0.0f ? Y[i] : 0.0f;
    }
    return SH_OK;
}

static int gemm_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                    const sh_tensor *const *dout, sh_tensor *const *din)
{
    if (!dout[0]) return SH_OK;
    if (sh_format_get(in[1]->fmt)->is_quantized)
        return sh_op_err(k, SH_EUNSUPPORTED, "Gemm with a %s (quantized) weight has no backward", sh_format_get(in[1]->fmt)->name);
    if (sh_format_get(in[1]->fmt)->packed) return sh_gemm_sparse_bwd(k);
    gemm_geom g;
    int rc = gemm_setup(k, in, n_in, &g);
    if (rc) return rc;
    const float *A = in[0]->data, *B = in[1]->data, *dY = dout[0]->data;
    int64_t M = g.M, N = g.N, K = g.K;
    if (g.relu) { /* dY masked where the output was clamped */
        float *m = sh_kctx_scratch(k, sizeof(float) * (size_t)(M * N + 1));
        if (!m) return sh_op_err(k, SH_ENOMEM, "out of memory");
        const float *y = out[0]->data;
        for (int64_t i = 0; i < M * N; i++) m[i] = y[i] > 0.0f ? dY[i] : 0.0f;
        dY = m;
    }
    int64_t lda = g.tA ? M : K, ldb = g.tB ? K : N;
    if (din[0]) {
        float *dA = din[0]->data;
        /* op(A)' = alpha dY op(B)^T  (M x K) */
        if (!g.tA) sh_sgemm(0, !g.tB, M, K, N, g.alpha, dY, N, B, ldb, 1.0f, dA, K);
        else /* dA (K x M) = alpha op(B) dY^T */
            sh_sgemm(g.tB, 1, K, M, N, g.alpha, B, ldb, dY, N, 1.0f, dA, M);
        (void)lda;
    }
    if (din[1]) {
        float *dB = din[1]->data;
        if (!g.tB) /* dB (K x N) = alpha op(A)^T dY */
            sh_sgemm(!g.tA, 0, K, N, M, g.alpha, A, lda, dY, N, 1.0f, dB, N);
        else /* dB (N x K) = alpha dY^T op(A) */
            sh_sgemm(1, g.tA, N, K, M, g.alpha, dY, N, A, lda, 1.0f, dB, K);
    }
    if (n_in > 2 && in[2] && din[2] && g.beta != 0.0f) {
        float *dC = din[2]->data;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                dC[(g.cm == 1 ? 0 : i) * g.cn + (g.cn == 1 ? 0 : j)] += g.beta * dY[i * N + j];
    }
    return SH_OK;
}

static const sh_op_def op_gemm = {"Gemm", 2, 3, 1, 1, gemm_infer, gemm_fwd, gemm_bwd, 0, 0x6, NULL, 0};

/* ---- MatMul (numpy semantics) ---------------------------------------- */

typedef struct mm_geom {
    int64_t M, N, K;
    int nb;                       /* batch dims of the output */
    int64_t bs[SH_MAX_DIMS];      /* output batch shape */
    int64_t sa[SH_MAX_DIMS], sb[SH_MAX_DIMS]; /* batch strides (elements, 0 when broadcast) */
    int64_t batch;                /* product of bs */
    int a1, b1;                   /* A / B were 1-D */
    int a_flat;                   /* B has no batch dims: A's batch folds into M */
} mm_geom;

static int mm_setup(sh_kctx *k, const sh_tensor *A, const sh_tensor *B, mm_geom *g)
{
    char b1[96], b2[96];
    memset(g, 0, sizeof *g);
    if (A->fmt != SH_F32 || B->fmt != SH_F32) return sh_op_err(k, SH_EUNSUPPORTED, "MatMul needs f32 inputs");
    if (A->ndim < 1 || B->ndim < 1)
        return sh_op_err(k, SH_ESHAPE, "A %s, B %s: scalars are not allowed", shs(A, b1, sizeof b1), shs(B, b2, sizeof b2));
    int64_t as[SH_MAX_DIMS + 1], bsh[SH_MAX_DIMS + 1];
    int na = A->ndim, nbd = B->ndim;
    memcpy(as, A->shape, sizeof(int64_t) * (size_t)na);
    memcpy(bsh, B->shape, sizeof(int64_t) * (size_t)nbd);
    if (na == 1) g->a1 = 1, as[1] = as[0], as[0] = 1, na = 2;
    if (nbd == 1) g->b1 = 1, bsh[1] = 1, nbd = 2;
    g->M = as[na - 2], g->K = as[na - 1], g->N = bsh[nbd - 1];
    if (bsh[nbd - 2] != g->K)
        return sh_op_err(k, SH_ESHAPE, "A %s and B %s: inner dimensions %lld and %lld differ", shs(A, b1, sizeof b1),
                         shs(B, b2, sizeof b2), (long long)g->K, (long long)bsh[nbd - 2]);
    int rc = sh_broadcast_shape(na - 2, as, nbd - 2, bsh, &g->nb, g->bs);
    if (rc || g->nb + 2 > SH_MAX_DIMS)
        return sh_op_err(k, SH_ESHAPE, "A %s and B %s: batch dimensions do not broadcast", shs(A, b1, sizeof b1),
                         shs(B, b2, sizeof b2));
    g->batch = 1;
    for (int i = 0; i < g->nb; i++) g->batch *= g->bs[i];
    /* strides */
    int64_t st = g->M * g->K;
    for (int i = g->nb - 1, j = na - 3; i >= 0; i--, j--) {
        int64_t d = j >= 0 ? as[j] : 1;
        g->sa[i] = d == 1 ? 0 : st;
        st *= d;
    }
    st = g->K * g->N;
    for (int i = g->nb - 1, j = nbd - 3; i >= 0; i--, j--) {
        int64_t d = j >= 0 ? bsh[j] : 1;
        g->sb[i] = d == 1 ? 0 : st;
        st *= d;
    }
    /* B without batch dims and A's batch not broadcast: one big gemm */
    int bbatch = 0, abcast = 0;
    for (int i = 0; i < g->nb; i++) {
        if (g->sb[i]) bbatch = 1;
        if (!g->sa[i] && g->bs[i] != 1) abcast = 1;
    }
    g->a_flat = !bbatch && !abcast;
    return SH_OK;
}

static int mm_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    mm_geom g;
    int rc = mm_setup(k, in[0], in[1], &g);
    if (rc) return rc;
    int64_t s[SH_MAX_DIMS];
    int nd = g.nb;
    memcpy(s, g.bs, sizeof(int64_t) * (size_t)nd);
    if (!g.a1) s[nd++] = g.M;
    if (!g.b1) s[nd++] = g.N;
    sh_tensor_set_shape(out[0], SH_F32, nd, s);
    return SH_OK;
}

static void mm_offsets(const mm_geom *g, int64_t b, int64_t *oa, int64_t *ob)
{
    int64_t a = 0, bb = 0;
    for (int i = g->nb - 1; i >= 0; i--) {
        int64_t idx = b % g->bs[i];
        b /= g->bs[i];
        a += idx * g->sa[i];
        bb += idx * g->sb[i];
    }
    *oa = a, *ob = bb;
}

static int mm_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    mm_geom g;
    int rc = mm_setup(k, in[0], in[1], &g);
    if (rc) return rc;
    const float *A = in[0]->data, *B = in[1]->data;
    float *Y = out[0]->data;
    if (g.a_flat) {
        sh_sgemm(0, 0, g.batch * g.M, g.N, g.K, 1.0f, A, g.K, B, g.N, 0.0f, Y, g.N);
        return SH_OK;
    }
    for (int64_t b = 0; b < g.batch; b++) {
        int64_t oa, ob;
        mm_offsets(&g, b, &oa, &ob);
        sh_sgemm(0, 0, g.M, g.N, g.K, 1.0f, A + oa, g.K, B + ob, g.N, 0.0f, Y + b * g.M * g.N, g.N);
    }
    return SH_OK;
}

static int mm_bwd(sh_kctx *k, const sh_tensor *const *in, int n_in, const sh_tensor *const *out, int n_out,
                  const sh_tensor *const *dout, sh_tensor *const *din)
{
    if (!dout[0]) return SH_OK;
    mm_geom g;
    int rc = mm_setup(k, in[0], in[1], &g);
    if (rc) return rc;
    const float *A = in[0]->data, *B = in[1]->data, *dY = dout[0]->data;
    float *dA = din[0] ? din[0]->data : NULL, *dB = din[1] ? din[1]->data : NULL;
    if (g.a_flat) {
        int64_t MM = g.batch * g.M;
        if (dA) sh_sgemm(0, 1, MM, g.K, g.N, 1.0f, dY, g.N, B, g.N, 1.0f, dA, g.K);
        if (dB) sh_sgemm(1, 0, g.K, g.N, MM, 1.0f, A, g.K, dY, g.N, 1.0f, dB, g.N);
        return SH_OK;
    }
    for (int64_t b = 0; b < g.batch; b++) {
        int64_t oa, ob;
        mm_offsets(&g, b, &oa, &ob);
        const float *dy = dY + b * g.M * g.N;
        if (dA) sh_sgemm(0, 1, g.M, g.K, g.N, 1.0f, dy, g.N, B + ob, g.N, 1.0f, dA + oa, g.K);
        if (dB) sh_sgemm(1, 0, g.K, g.N, g.M, 1.0f, A + oa, g.K, dy, g.N, 1.0f, dB + ob, g.N);
    }
    return SH_OK;
}

/* either operand may be an initializer weight */
static const sh_op_def op_matmul = {"MatMul", 2, 2, 1, 1, mm_infer, mm_fwd, mm_bwd, 0, 0x3, NULL, 0};

const sh_op_def *const sh_ops_nn[] = {&sh_op_conv,      &op_gemm,        &op_matmul,       &sh_op_maxpool,
                                      &sh_op_avgpool,   &sh_op_gavgpool, &sh_op_gmaxpool,  &sh_op_batchnorm,
                                      &sh_op_layernorm, NULL};
