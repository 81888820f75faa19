/* qlinear_gemm.c - QGemm (com.microsoft semantics plus shrink's dynamic mode
 * and fused Relu), QLinearMatMul and MatMulInteger; inference only.
 *
 * The weight operand B (an initializer in a quantized model) is turned once
 * per node into b - b_zero_point[n] as [N,K] and, when every value fits in
 * s8, packed for the int8 GEMM (ops/qgemm.h: VNNI / AVX2 / portable) and
 * cached in the node state; a B that is not a constant (activation x
 * activation) is prepared at every call.  A (u8 or s8; QGemm also f32, which
 * is quantized per call like DynamicQuantizeLinear) may have any number of
 * leading dims (flattened into rows).  Outputs: requantized u8/s8 (the int32
 * bias added to the accumulator first, multiplier a_scale * b_scale[n] /
 * y_scale in f32, round half to even), f32 (QGemm without y_scale) or int32
 * (MatMulInteger).  B with batch dims (QLinearMatMul / MatMulInteger) and
 * weights that do not fit in s8 run a plain integer loop with the same
 * results.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "qgemm.h"
#include "qlinear.h"

static const char *shs(const sh_tensor *t, char *b, size_t n) { return sh_shape_str(t->ndim, t->shape, b, n); }
static const char *fname(sh_format f) { return sh_format_get(f) ? sh_format_get(f)->name : "?"; }

enum { QM_QGEMM, QM_QLINEARMATMUL, QM_MATMULINTEGER };

typedef struct qmm {
    int kind;
    const sh_tensor *A, *B, *C;
    int64_t M, N, K;       /* rows of A (all batch dims flattened when B is 2-D) */
    int64_t batch, bstride_b; /* B with batch dims: batch count, B's batch stride (0: broadcast) */
    int transB, relu, dynamic;
    float alpha;
    sh_format yf;          /* U8 / I8 / F32 / I32 */
    sh_qparam pa, pb, py;
    int has_y;
    int ond;
    int64_t oshape[SH_MAX_DIMS];
} qmm;

static int qmm_setup(sh_kctx *k, const sh_tensor *const *in, int n_in, qmm *g)
{
    char b1[96], b2[96], b3[96];
    memset(g, 0, sizeof *g);
    const char *op = k->node->op;
    g->kind = !strcmp(op, "QGemm") ? QM_QGEMM : !strcmp(op, "QLinearMatMul") ? QM_QLINEARMATMUL : QM_MATMULINTEGER;
    const sh_tensor *A, *B, *as = NULL, *az = NULL, *bs = NULL, *bz = NULL, *ys = NULL, *yz = NULL, *C = NULL;
    static const float one = 1.0f;
    sh_tensor s1 = {SH_F32, 0, {0}, (void *)&one, 4, 0};
    g->alpha = 1.0f;
    if (g->kind == QM_QGEMM) {
        if (n_in < 6 || !in[0] || !in[3] || !in[4])
            return sh_op_err(k, SH_EINVAL, "QGemm needs A, a_scale, a_zero_point, B, b_scale, b_zero_point "
                                           "(C, y_scale, y_zero_point optional; a_scale and a_zero_point empty for f32 A)");
        A = in[0], as = in[1], az = in[2], B = in[3], bs = in[4], bz = in[5];
        C = n_in > 6 ? in[6] : NULL;
        ys = n_in > 7 ? in[7] : NULL;
        yz = n_in > 8 ? in[8] : NULL;
        if (sh_attr_int(k->node, "transA", 0) != 0) return sh_op_err(k, SH_EUNSUPPORTED, "transA=1 is not supported");
        g->transB = (int)sh_attr_int(k->node, "transB", 0);
        g->alpha = sh_attr_float(k->node, "alpha", 1.0f);
        if (!(g->alpha > 0.0f)) return sh_op_err(k, SH_EUNSUPPORTED, "alpha %g (must be > 0)", (double)g->alpha);
        const char *act = sh_attr_string(k->node, "activation", "");
        if (*act && strcmp(act, "Relu") != 0)
            return sh_op_err(k, SH_EUNSUPPORTED, "activation '%s' (only Relu can be fused into QGemm)", act);
        g->relu = *act != 0;
    } else if (g->kind == QM_QLINEARMATMUL) {
        if (n_in < 7 || !in[0] || !in[1] || !in[3] || !in[4] || !in[6])
            return sh_op_err(k, SH_EINVAL, "QLinearMatMul needs a, a_scale, a_zero_point, b, b_scale, b_zero_point, "
                                           "y_scale, y_zero_point");
        A = in[0], as = in[1], az = in[2], B = in[3], bs = in[4], bz = in[5], ys = in[6];
        yz = n_in > 7 ? in[7] : NULL;
    } else {
        if (n_in < 2 || !in[0] || !in[1]) return sh_op_err(k, SH_EINVAL, "MatMulInteger needs A and B");
        A = in[0], B = in[1];
        az = n_in > 2 ? in[2] : NULL;
        bz = n_in > 3 ? in[3] : NULL;
    }
    g->A = A, g->B = B, g->C = C;
    g->dynamic = g->kind == QM_QGEMM && A->fmt == SH_F32;
    if (A->fmt != SH_U8 && A->fmt != SH_I8 && !g->dynamic)
        return sh_op_err(k, SH_EUNSUPPORTED, "A has format %s, expected u8 or i8%s", fname(A->fmt),
                         g->kind == QM_QGEMM ? " (or f32: dynamic quantization)" : "");
    if (B->fmt != SH_U8 && B->fmt != SH_I8)
        return sh_op_err(k, SH_EUNSUPPORTED, "B has format %s, expected u8 or i8", fname(B->fmt));
    if (A->ndim < 2 || B->ndim < 2 || (g->kind == QM_QGEMM && B->ndim != 2))
        return sh_op_err(k, SH_ESHAPE, "A %s and B %s: expected A [...,M,K] and B %s", shs(A, b1, sizeof b1),
                         shs(B, b2, sizeof b2), g->kind == QM_QGEMM ? "[N,K] (transB=1) or [K,N]" : "[...,K,N]");
    int64_t K = A->shape[A->ndim - 1];
    int64_t kb = g->transB ? B->shape[1] : B->shape[B->ndim - 2];
    g->N = g->transB ? B->shape[0] : B->shape[B->ndim - 1];
    if (K != kb)
        return sh_op_err(k, SH_ESHAPE, "A %s and B %s (transB=%d): inner dimensions %lld and %lld differ",
                         shs(A, b1, sizeof b1), shs(B, b2, sizeof b2), g->transB, (long long)K, (long long)kb);
    g->K = K;
    if (B->ndim == 2) {
        g->M = K ? sh_tensor_numel(A) / K : 0;
        g->batch = 1;
        g->ond = A->ndim;
        for (int d = 0; d < A->ndim - 1; d++) g->oshape[d] = A->shape[d];
        g->oshape[A->ndim - 1] = g->N;
    } else {
        /* batched: A [..., M, K] and B [..., K, N] with the same batch dims, or A 2-D */
        int64_t bb = sh_tensor_numel(B) / (K * g->N);
        int same = A->ndim == B->ndim;
        for (int d = 0; same && d < A->ndim - 2; d++) same = A->shape[d] == B->shape[d];
        if (!same && A->ndim != 2)
            return sh_op_err(k, SH_EUNSUPPORTED, "A %s and B %s: batch dims must be equal (or A 2-D)",
                             shs(A, b1, sizeof b1), shs(B, b2, sizeof b2));
        g->M = A->shape[A->ndim - 2];
        g->batch = bb;
        g->bstride_b = K * g->N;
        g->ond = B->ndim;
        for (int d = 0; d < B->ndim - 2; d++) g->oshape[d] = B->shape[d];
        g->oshape[B->ndim - 2] = g->M, g->oshape[B->ndim - 1] = g->N;
    }
    int rc;
    unsigned am = SH_QMASK(A->fmt), bm = SH_QMASK(B->fmt);
    int64_t bch = B->ndim == 2 ? g->N : 0;
    if (g->kind == QM_MATMULINTEGER) {
        sh_tensor sn = s1;
        if (bz && sh_tensor_numel(bz) == g->N && g->N > 1) sn.ndim = 1, sn.shape[0] = g->N, sn.data = NULL;
        if ((rc = sh_qparam_get(k, &s1, az, 0, am, "a", &g->pa)) || (rc = sh_qparam_get(k, &sn, bz, bch, bm, "b", &g->pb)))
            return rc;
        g->yf = SH_I32;
    } else {
        if (g->dynamic) {
            if (as || az) return sh_op_err(k, SH_EINVAL, "f32 A (dynamic mode) takes no a_scale / a_zero_point");
            g->pa.n = 1, g->pa.zfmt = SH_U8;
        } else if ((rc = sh_qparam_get(k, as, az, 0, am, "a", &g->pa)))
            return rc;
        if ((rc = sh_qparam_get(k, bs, bz, bch, bm, "b", &g->pb))) return rc;
        g->has_y = ys != NULL;
        if (g->has_y) {
            if (g->dynamic) return sh_op_err(k, SH_EUNSUPPORTED, "f32 A (dynamic mode) gives f32 output: no y_scale");
            if ((rc = sh_qparam_get(k, ys, yz, 0, SH_QMASK(SH_U8) | SH_QMASK(SH_I8), "y", &g->py))) return rc;
            g->yf = yz ? yz->fmt : SH_U8;
        } else g->yf = SH_F32;
    }
    if (C) {
        sh_format cf = g->dynamic ? SH_F32 : SH_I32;
        int64_t cn = sh_tensor_numel(C);
        if (C->fmt != cf || cn != g->N || C->ndim > 2 || (C->ndim == 2 && C->shape[0] != 1))
            return sh_op_err(k, SH_ESHAPE, "C %s (%s) must be %s [%lld] (B %s)", shs(C, b3, sizeof b3), fname(C->fmt),
                             fname(cf), (long long)g->N, shs(B, b2, sizeof b2));
    }
    return SH_OK;
}

static int qmm_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    qmm g;
    int rc = qmm_setup(k, in, n_in, &g);
    if (rc) return rc;
    sh_tensor_set_shape(out[0], g.yf, g.ond, g.oshape);
    /* remember whether B is a constant: only then is the prepared weight cached */
    sh_qstate *st = k->state ? sh_qstate_get(k) : NULL;
    if (st) st->b_const = g.B->data != NULL;
    return SH_OK;
}

/* b - zero point as [N][K] int32 (batch item bi) and, if it fits, packed s8 */
static sh_qstate *qmm_weights(sh_kctx *k, const qmm *g, int level, int64_t bi)
{
    sh_qstate *st = sh_qstate_get(k);
    if (!st) return NULL;
    const sh_tensor *B = g->B;
    int64_t N = g->N, K = g->K;
    size_t bytes = (size_t)(N * K);
    const uint8_t *src = (const uint8_t *)B->data + bi * g->bstride_b;
    uint32_t sum = 0;
    if (st->b_const && g->batch == 1) {
        sum = sh_qchecksum(src, bytes) ^ (g->pb.zp ? sh_qchecksum(g->pb.zp, (size_t)g->pb.n) : 0);
        if (sh_qstate_match(st, src, N * K, g->pb.zp, N, K, level, 1, sum)) return st;
    }
    sh_qstate_reset(st);
    st->wi = malloc(sizeof(int32_t) * bytes);
    if (!st->wi) return NULL;
    int fits = 1;
    for (int64_t n = 0; n < N; n++) {
        int32_t z = sh_qparam_zero(&g->pb, n);
        int32_t *w = st->wi + n * K;
        for (int64_t kk = 0; kk < K; kk++) {
            int64_t idx = g->transB ? n * K + kk : kk * N + n;
            int32_t v = sh_qget(src, B->fmt, idx) - z;
            w[kk] = v;
            fits &= v >= -128 && v <= 127;
        }
    }
    st->groups = 1;
    if (fits && g->batch == 1) {
        int8_t *bt = malloc(bytes);
        st->pb = calloc(1, sizeof *st->pb);
        int ok = bt && st->pb;
        if (ok) {
            for (size_t i = 0; i < bytes; i++) bt[i] = (int8_t)st->wi[i];
            sh_error e = {0};
            ok = sh_qgemm_pack_b(bt, N, K, K, level, &st->pb[0], &e) == SH_OK;
        }
        free(bt);
        if (!ok) {
            sh_qstate_reset(st);
            return NULL;
        }
        st->fast = 1;
    }
    st->wsrc = st->b_const && g->batch == 1 ? src : NULL;
    st->wn = N * K, st->zsrc = g->pb.zp, st->rows = N, st->cols = K;
    st->level = level, st->wsum = sum;
    st->simd = sh_qrequant_simd(level);
    return st;
}

/* out row block: int32 accumulators acc [rows, N] (+ C) -> the output format */
static void qmm_epilogue(const qmm *g, const int32_t *acc, int64_t rows, const float *mult, void *y, int64_t row0,
                         int simd)
{
    int64_t N = g->N;
    const int32_t *bias = g->C && !g->dynamic ? g->C->data : NULL;
    if (g->yf == SH_I32) {
        memcpy((int32_t *)y + row0 * N, acc, sizeof(int32_t) * (size_t)(rows * N));
    } else if (g->yf == SH_F32) {
        float *yo = (float *)y + row0 * N;
        const float *fb = g->C && g->dynamic ? g->C->data : NULL;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t n = 0; n < N; n++) {
                float v = (float)(acc[r * N + n] + (bias ? bias[n] : 0)) * mult[n] + (fb ? fb[n] : 0.0f);
                yo[r * N + n] = g->relu && v < 0.0f ? 0.0f : v;
            }
    } else {
        int64_t es = 1;
        sh_qrequant(acc, N, rows, N, bias, mult, sh_qparam_zero(&g->py, 0), g->relu, g->yf, (char *)y + row0 * N * es,
                    N, 1, simd);
    }
}

/* plain integer loop over rows [r0, r1) of batch item bi */
static void qmm_ref_rows(const qmm *g, const void *A, sh_format af, int32_t az, const int32_t *wi, int64_t r0, int64_t r1,
                         int32_t *acc)
{
    int64_t N = g->N, K = g->K;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t n = 0; n < N; n++) {
            int64_t s = 0;
            const int32_t *w = wi + n * K;
            for (int64_t kk = 0; kk < K; kk++) s += (int64_t)(sh_qget(A, af, r * K + kk) - az) * w[kk];
            acc[(r - r0) * N + n] = (int32_t)s;
        }
}

int sh_qgemm_node_run(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int level)
{
    qmm g;
    int rc = qmm_setup(k, in, n_in, &g);
    if (rc) return rc;
    int64_t M = g.M, N = g.N, K = g.K;
    if (M == 0 || N == 0) return SH_OK;
    int nt = k->nthreads > 0 ? k->nthreads : 1;
    const void *A = g.A->data;
    sh_format af = g.A->fmt;
    float a_scale = g.kind == QM_MATMULINTEGER || g.dynamic ? 1.0f : sh_qparam_scale(&g.pa, 0);
    int32_t a_zero = g.dynamic ? 0 : sh_qparam_zero(&g.pa, 0);
    sh_qstate *st = sh_qstate_get(k);
    if (!st) return sh_op_err(k, SH_ENOMEM, "out of memory");
    /* dynamic mode: quantize A (u8, per tensor) into the workspace */
    size_t qa_b = g.dynamic ? (size_t)(M * K + 64) / 64 * 64 : 0;
    int64_t rb = 256; /* rows per epilogue block */
    size_t acc_b = sizeof(int32_t) * (size_t)((M < rb ? M : rb) * N) * (size_t)nt + 64;
    char *ws = sh_qstate_ws(st, qa_b + acc_b + 128);
    if (!ws) return sh_op_err(k, SH_ENOMEM, "out of memory for the workspace");
    uint8_t *qa = (uint8_t *)ws;
    int32_t *accs = (int32_t *)(ws + qa_b);
    /* the multipliers live in the state's per-call buffer, kept between calls */
    size_t mb_was = st->mb_bytes;
    float *mult = sh_qstate_mb(st, sizeof(float) * (size_t)N);
    if (!mult) return sh_op_err(k, SH_ENOMEM, "out of memory");
    if (st->mb_bytes != mb_was) st->mult_ok = 0; /* a new buffer: the multipliers are gone */
    if (g.dynamic) {
        int32_t z;
        sh_qdynamic_params(A, M * K, &a_scale, &z);
        a_zero = z;
        const float *x = A;
        if (a_scale > 0.0f) {
            float zf = (float)z;
            SH_PAR_FOR(nt > 1 && M * K > 65536, nt, for (int64_t i = 0; i < M * K; i++) {
                float q = sh_qround(x[i] / a_scale) + zf;
                q = q < 0.0f ? 0.0f : q > 255.0f ? 255.0f : q;
                qa[i] = (uint8_t)(int32_t)(q == q ? q : zf);
            });
        } else memset(qa, z, (size_t)(M * K));
        A = qa, af = SH_U8;
    }
    /* the multipliers of the last call are still there when
     * nothing they depend on changed (static int8: every call after the
     * first; a decode step of a small model spent 10 % here) */
    int qy = g.yf == SH_U8 || g.yf == SH_I8;
    float ys = qy ? sh_qparam_scale(&g.py, 0) : 1.0f;
    const float *bsc = g.kind == QM_MATMULINTEGER ? NULL : g.pb.scale;
    uint32_t bsum = bsc ? sh_qchecksum(bsc, sizeof(float) * (size_t)g.pb.n) : 0;
    if (!(st->mult_ok && st->mult_n == N && st->mult_bscale == bsc && st->mult_bsum == bsum &&
          st->mult_key[0] == a_scale && st->mult_key[1] == ys && st->mult_key[2] == g.alpha && st->mult_yf == (int)g.yf)) {
        for (int64_t n = 0; n < N; n++) {
            float bsn = g.kind == QM_MATMULINTEGER ? 1.0f : sh_qparam_scale(&g.pb, n);
            if (qy) mult[n] = g.alpha == 1.0f ? a_scale * bsn / ys : g.alpha * a_scale * bsn / ys;
            else mult[n] = g.alpha * a_scale * bsn;
        }
        st->mult_ok = 1, st->mult_n = N, st->mult_bscale = bsc, st->mult_bsum = bsum;
        st->mult_key[0] = a_scale, st->mult_key[1] = ys, st->mult_key[2] = g.alpha, st->mult_yf = (int)g.yf;
    }
    size_t osz = (size_t)sh_format_get(g.yf)->block_bytes;
    for (int64_t bi = 0; bi < g.batch; bi++) {
        st = qmm_weights(k, &g, level, bi);
        if (!st) return sh_op_err(k, SH_ENOMEM, "out of memory preparing B [%lld,%lld]", (long long)N, (long long)K);
        /* A rows of this batch item (A 2-D with batched B: the same rows) */
        int64_t abi = g.batch > 1 && g.A->ndim > 2 ? bi : 0;
        const uint8_t *Ab = (const uint8_t *)A + abi * M * K;
        char *Y = (char *)out[0]->data + (size_t)(bi * M * N) * osz;
        if (st->fast) {
            sh_qgemm_b *pb = st->pb[0];
            if (g.yf == SH_F32 && (!g.C || g.dynamic)) {
                /* fused f32 epilogue: acc * a_scale * b_scale[n] (* alpha) + f32 bias */
                float *bsv = mult; /* mult[n] = alpha * a_scale * b_scale[n] */
                sh_qgemm_epi epi = {.out = SH_F32, .a_zero = a_zero, .a_scale = 1.0f, .b_scale = bsv,
                                    .bias = g.C ? g.C->data : NULL, .relu = g.relu};
                rc = sh_qgemm(Ab, af == SH_I8, M, K, pb, &epi, Y, N, nt, k->err);
            } else if ((g.yf == SH_U8 || g.yf == SH_I8) && !g.C) {
                /* fused requantization: nearbyint(acc * mult[n] * 1) + y_zero, bit-identical to sh_qrequant */
                sh_qgemm_epi epi = {.out = g.yf, .a_zero = a_zero, .a_scale = 1.0f, .b_scale = mult, .relu = g.relu,
                                    .y_scale = 1.0f, .y_zero = sh_qparam_zero(&g.py, 0)};
                rc = sh_qgemm(Ab, af == SH_I8, M, K, pb, &epi, Y, N, nt, k->err);
            } else {
                /* int32 blocks of rows, then the epilogue (bias in int32) */
                int64_t nblk = (M + rb - 1) / rb;
                sh_qgemm_epi epi = {.out = SH_I32, .a_zero = a_zero, .a_scale = 1.0f};
                if (nblk == 1) {
                    rc = sh_qgemm(Ab, af == SH_I8, M, K, pb, &epi, accs, N, nt, k->err);
                    if (!rc) qmm_epilogue(&g, accs, M, mult, Y, 0, st->simd);
                } else {
                    int bad = 0;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) reduction(| : bad)
                    for (int64_t b = 0; b < nblk; b++) {
                        int tid = 0;
#ifdef _OPENMP
                        tid = omp_get_thread_num();
#endif
                        int32_t *acc = accs + (size_t)tid * (size_t)(rb * N);
                        int64_t r0 = b * rb, r1 = r0 + rb < M ? r0 + rb : M;
                        sh_error e = {0};
                        if (sh_qgemm(Ab + r0 * K, af == SH_I8, r1 - r0, K, pb, &epi, acc, N, 1, &e)) bad = 1;
                        else qmm_epilogue(&g, acc, r1 - r0, mult, Y, r0, st->simd);
                    }
                    if (bad) rc = sh_op_err(k, SH_EINTERNAL, "int8 GEMM failed");
                }
            }
            if (rc) return rc == SH_EINTERNAL ? rc : sh_error_wrap(k->err, "node '%s' (%s)", k->node->name, k->node->op);
        } else {
            int64_t nblk = (M + rb - 1) / rb;
            const int32_t *wi = st->wi;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1 && nblk > 1)
            for (int64_t b = 0; b < nblk; b++) {
                int tid = 0;
#ifdef _OPENMP
                tid = omp_get_thread_num();
#endif
                int32_t *acc = accs + (size_t)tid * (size_t)(rb * N);
                int64_t r0 = b * rb, r1 = r0 + rb < M ? r0 + rb : M;
                qmm_ref_rows(&g, Ab, af, a_zero, wi, r0, r1, acc);
                qmm_epilogue(&g, acc, r1 - r0, mult, Y, r0, st->simd);
            }
        }
    }
    return SH_OK;
}

static int qmm_fwd(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out)
{
    return sh_qgemm_node_run(k, in, n_in, out, -1);
}

/* A and B are the data inputs; inference only (sh_qlinear_no_backward) */
const sh_op_def sh_op_qgemm = {"QGemm", 6, 9, 1, 1, qmm_infer, qmm_fwd, sh_qlinear_no_backward, 0x1f6, 0,
                               sh_qlinear_state_free, 0};
const sh_op_def sh_op_qlinearmatmul = {"QLinearMatMul", 7, 8, 1, 1, qmm_infer, qmm_fwd, sh_qlinear_no_backward, 0xf6, 0,
                                       sh_qlinear_state_free, 0};
const sh_op_def sh_op_matmulinteger = {"MatMulInteger", 2, 4, 1, 1, qmm_infer, qmm_fwd, sh_qlinear_no_backward, 0xc, 0,
                                       sh_qlinear_state_free, 0};
