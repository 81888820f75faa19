/* hessian.c - calibration statistics of the inputs each layer sees (GPTQ /
 * SparseGPT Hessians H = 2/n sum x x^T, Wanda / AWQ per-channel statistics,
 * the mean input for bias correction), sequential collection, and the dense
 * Cholesky helpers GPTQ needs.  See compress.h. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "ops/nn_ops.h"

void sh_layer_stats_free(sh_layer_stats *s)
{
    if (!s) return;
    free(s->H);
    free(s->mean);
    free(s->mean_abs);
    free(s->l2);
    free(s->max_abs);
    memset(s, 0, sizeof *s);
}

/* ---- input batches -------------------------------------------------------- */

typedef struct calib_src {
    const sh_dataset *d;
    int lm;
    int64_t T, items, B;
    sh_tensor *x;
} calib_src;

static int src_init(calib_src *s, const sh_graph *g, const sh_calib_cfg *c, sh_error *err)
{
    memset(s, 0, sizeof *s);
    const sh_dataset *d = c->calib;
    if (!d) return sh_err(err, SH_EINVAL, "calibration: no calibration data set");
    if (g->n_inputs != 1)
        return sh_err(err, SH_EUNSUPPORTED, "calibration: the model must have one input (it has %d)", g->n_inputs);
    s->d = d;
    s->lm = d->kind == 2;
    const sh_value *iv = &g->values[g->inputs[0]];
    if (s->lm) {
        if (!d->tokens || d->n < 2) return sh_err(err, SH_EINVAL, "calibration: the token data set is empty");
        if (iv->fmt != SH_I64 && iv->fmt != SH_I32)
            return sh_err(err, SH_EINVAL, "calibration: text data for a model whose input '%s' is not tokens",
                          iv->name);
        s->T = sh_token_len(g, c->seq_len, 64); /* a fixed-shape export: its length */
        if (s->T > d->n - 1) s->T = d->n - 1;
        s->items = c->samples > 0 ? c->samples : 32;
        if (s->items > (d->n - 1) / s->T) s->items = (d->n - 1) / s->T;
        s->B = c->batch > 0 ? c->batch : 8;
        if (sh_token_batch(g) > 0) s->B = sh_token_batch(g);
    } else {
        if (d->kind != 1 || !d->x || d->n < 1)
            return sh_err(err, SH_EINVAL, "calibration: the data set is neither images nor tokens");
        int64_t per = (int64_t)d->c * d->h * d->w;
        if (iv->ndim == 2 && iv->shape[1] > 0 && iv->shape[1] != per)
            return sh_err(err, SH_ESHAPE, "calibration: images of %d x %d x %d (%lld values) but input '%s' takes %lld",
                          d->c, d->h, d->w, (long long)per, iv->name, (long long)iv->shape[1]);
        if (iv->ndim == 4 && ((iv->shape[1] > 0 && iv->shape[1] != d->c) || (iv->shape[2] > 0 && iv->shape[2] != d->h) ||
                              (iv->shape[3] > 0 && iv->shape[3] != d->w))) {
            char b[96];
            return sh_err(err, SH_ESHAPE, "calibration: images of [%d,%d,%d] but input '%s' is %s", d->c, d->h, d->w,
                          iv->name, sh_shape_str(iv->ndim, iv->shape, b, sizeof b));
        }
        if (iv->ndim != 2 && iv->ndim != 4)
            return sh_err(err, SH_EUNSUPPORTED, "calibration: image input '%s' of rank %d (2 or 4 expected)", iv->name,
                          iv->ndim);
        s->items = c->samples > 0 ? c->samples : 256;
        if (s->items > d->n) s->items = d->n;
        s->B = c->batch > 0 ? c->batch : 32;
    }
    if (s->items < 1) return sh_err(err, SH_EINVAL, "calibration: no calibration items");
    if (s->B > s->items) s->B = s->items;
    return SH_OK;
}

/* Batch b (items [b*B, min(items, (b+1)*B))) into s->x (reallocated). */
static int src_batch(calib_src *s, const sh_graph *g, int64_t b, sh_error *err)
{
    int64_t i0 = b * s->B, nb = s->items - i0 < s->B ? s->items - i0 : s->B;
    const sh_dataset *d = s->d;
    sh_tensor_free(s->x);
    s->x = NULL;
    if (s->lm) {
        const sh_value *iv = &g->values[g->inputs[0]];
        int64_t sh[2] = {nb, s->T};
        s->x = sh_tensor_new(iv->fmt == SH_I32 ? SH_I32 : SH_I64, 2, sh, err);
        if (!s->x) return err && err->code ? err->code : SH_ENOMEM;
        for (int64_t r = 0; r < nb; r++)
            for (int64_t t = 0; t < s->T; t++) {
                int32_t v = d->tokens[(i0 + r) * s->T + t];
                if (s->x->fmt == SH_I64) ((int64_t *)s->x->data)[r * s->T + t] = v;
                else ((int32_t *)s->x->data)[r * s->T + t] = v;
            }
    } else {
        int64_t per = (int64_t)d->c * d->h * d->w;
        int64_t s4[4] = {nb, d->c, d->h, d->w}, s2[2] = {nb, per};
        s->x = g->values[g->inputs[0]].ndim == 2 ? sh_tensor_new(SH_F32, 2, s2, err) : sh_tensor_new(SH_F32, 4, s4, err);
        if (!s->x) return err && err->code ? err->code : SH_ENOMEM;
        memcpy(s->x->data, d->x + i0 * per, sizeof(float) * (size_t)(nb * per));
    }
    return SH_OK;
}

/* ---- accumulation ---------------------------------------------------------- */

typedef struct acc {
    int64_t k, n;
    float *Hf;       /* k*k batch accumulator (f32 GEMM), flushed to H */
    double *H, *sum, *sabs, *sq, *amax;
    float *col;      /* conv: im2col rows [OHW, k] */
    size_t col_n;
} acc;

static void acc_free(acc *a)
{
    free(a->Hf);
    free(a->H);
    free(a->sum);
    free(a->sabs);
    free(a->sq);
    free(a->amax);
    free(a->col);
    memset(a, 0, sizeof *a);
}

static int acc_init(acc *a, int64_t k, int want_h, sh_error *err)
{
    memset(a, 0, sizeof *a);
    a->k = k;
    a->sum = calloc((size_t)k, sizeof(double));
    a->sabs = calloc((size_t)k, sizeof(double));
    a->sq = calloc((size_t)k, sizeof(double));
    a->amax = calloc((size_t)k, sizeof(double));
    if (want_h) {
        a->H = calloc((size_t)(k * k), sizeof(double));
        a->Hf = calloc((size_t)(k * k), sizeof(float));
    }
    if (!a->sum || !a->sabs || !a->sq || !a->amax || (want_h && (!a->H || !a->Hf)))
        return sh_err(err, SH_ENOMEM, "calibration: out of memory for a %lld x %lld Hessian", (long long)k,
                      (long long)k);
    return SH_OK;
}

/* rows x [m, k] (row-major) */
static void acc_rows(acc *a, const float *x, int64_t m)
{
    int64_t k = a->k;
    for (int64_t r = 0; r < m; r++) {
        const float *xr = x + r * k;
        for (int64_t j = 0; j < k; j++) {
            double v = xr[j];
            a->sum[j] += v;
            a->sabs[j] += fabs(v);
            if (fabs(v) > a->amax[j]) a->amax[j] = fabs(v);
            a->sq[j] += v * v;
        }
    }
    if (a->H && m > 0) sh_sgemm(1, 0, k, k, m, 1.0f, x, k, x, k, 1.0f, a->Hf, k);
    a->n += m;
}

static void acc_flush(acc *a)
{
    if (!a->H) return;
    int64_t kk = a->k * a->k;
    for (int64_t i = 0; i < kk; i++) a->H[i] += a->Hf[i];
    memset(a->Hf, 0, sizeof(float) * (size_t)kk);
}

static int acc_finish(acc *a, sh_layer_stats *st, sh_error *err)
{
    acc_flush(a);
    memset(st, 0, sizeof *st);
    int64_t k = a->k;
    st->k = k;
    st->n = a->n;
    double inv = a->n > 0 ? 1.0 / (double)a->n : 0.0;
    for (int64_t j = 0; j < k; j++) {
        a->sum[j] *= inv;
        a->sabs[j] *= inv;
        a->sq[j] = sqrt(a->sq[j]);
    }
    if (a->H)
        for (int64_t i = 0; i < k * k; i++) a->H[i] *= 2.0 * inv;
    st->H = a->H, st->mean = a->sum, st->mean_abs = a->sabs, st->l2 = a->sq, st->max_abs = a->amax;
    a->H = a->sum = a->sabs = a->sq = a->amax = NULL;
    (void)err;
    return SH_OK;
}

/* The input the layer saw in the last run, added to a. */
static int acc_layer(acc *a, sh_program *p, const sh_graph *g, const sh_layer *l, sh_error *err)
{
    const sh_node *nd = &g->nodes[l->node];
    const char *xn = g->values[nd->in[0]].name;
    sh_tensor *x = sh_program_value(p, xn);
    char b[96];
    if (!x || !x->data || x->fmt != SH_F32)
        return sh_err(err, SH_EINTERNAL, "calibration: input '%s' of layer '%s' (%s) was not kept or is not f32", xn,
                      l->name ? l->name : "?", l->op);
    if (strcmp(l->op, "Conv")) {
        int64_t K = x->ndim > 0 ? x->shape[x->ndim - 1] : 0;
        if (!strcmp(l->op, "Gemm") && sh_attr_int(nd, "transA", 0))
            return sh_err(err, SH_EUNSUPPORTED, "calibration: layer '%s' (Gemm) has transA=1", l->name);
        if (K != l->cols)
            return sh_err(err, SH_ESHAPE, "calibration: layer '%s' (%s) input %s: last dim is not %lld",
                          l->name ? l->name : "?", l->op, sh_shape_str(x->ndim, x->shape, b, sizeof b),
                          (long long)l->cols);
        acc_rows(a, x->data, sh_tensor_numel(x) / K);
        acc_flush(a); /* keep f32 partial sums short */
        return SH_OK;
    }
    /* Conv: im2col rows [OH*OW, Cg*kh*kw] per image and group */
    const sh_tensor *wt = g->values[l->wv].init;
    if (x->ndim != 4 || wt->ndim != 4)
        return sh_err(err, SH_EUNSUPPORTED, "calibration: layer '%s' (Conv) input %s: only 2-D convolutions",
                      l->name ? l->name : "?", sh_shape_str(x->ndim, x->shape, b, sizeof b));
    sh_error e2 = {0};
    sh_kctx kc = {0};
    kc.node = nd;
    kc.err = &e2;
    sh_win w;
    if (sh_win_setup(&kc, x, wt->shape + 2, 0, 1, 0, &w))
        return sh_err(err, e2.code ? e2.code : SH_EINVAL, "calibration: layer '%s' (Conv): %s", l->name, e2.msg);
    int64_t G = l->group > 0 ? l->group : 1, C = x->shape[1], Cg = C / G;
    if (Cg * w.kh * w.kw != l->cols)
        return sh_err(err, SH_ESHAPE, "calibration: layer '%s' (Conv) input %s does not match its weight",
                      l->name, sh_shape_str(x->ndim, x->shape, b, sizeof b));
    int64_t OHW = w.OH * w.OW, k = l->cols;
    if ((size_t)(OHW * k) > a->col_n) {
        free(a->col);
        a->col = malloc(sizeof(float) * (size_t)(OHW * k));
        a->col_n = a->col ? (size_t)(OHW * k) : 0;
        if (!a->col) return sh_err(err, SH_ENOMEM, "calibration: out of memory (im2col)");
    }
    const float *xd = x->data;
    for (int64_t nimg = 0; nimg < x->shape[0]; nimg++)
        for (int64_t gi = 0; gi < G; gi++) {
            for (int64_t oh = 0; oh < w.OH; oh++)
                for (int64_t ow = 0; ow < w.OW; ow++) {
                    float *row = a->col + (oh * w.OW + ow) * k;
                    for (int64_t c = 0; c < Cg; c++) {
                        const float *xc = xd + ((nimg * C) + gi * Cg + c) * w.H * w.W;
                        for (int64_t i = 0; i < w.kh; i++) {
                            int64_t ih = oh * w.sh - w.pt + i * w.dh;
                            for (int64_t j = 0; j < w.kw; j++) {
                                int64_t iw = ow * w.sw - w.pl + j * w.dw;
                                row[(c * w.kh + i) * w.kw + j] =
                                    ih >= 0 && ih < w.H && iw >= 0 && iw < w.W ? xc[ih * w.W + iw] : 0.0f;
                            }
                        }
                    }
                }
            acc_rows(a, a->col, OHW);
        }
    acc_flush(a);
    return SH_OK;
}

/* One pass over the calibration data accumulating the layers idx[0..m). */
static int collect(sh_graph *g, const sh_layer *L, const int *idx, int m, const sh_calib_cfg *c,
                   sh_layer_stats *st, sh_error *err)
{
    calib_src s;
    int rc = src_init(&s, g, c, err);
    if (rc) return rc;
    acc *A = calloc((size_t)m, sizeof *A);
    sh_program *p = NULL;
    if (!A) return sh_err(err, SH_ENOMEM, "calibration: out of memory");
    for (int i = 0; i < m && !rc; i++) rc = acc_init(&A[i], L[idx[i]].cols, c->want_h, err);
    sh_run_opts ro = {.nthreads = c->nthreads, .no_optimize = 1, .keep_values = 1};
    if (!rc) rc = sh_program_new(g, &ro, &p, err);
    /* OpenBLAS (OpenMP build) follows this thread's OpenMP thread count: keep
     * the f32 GEMMs of the calibration runs at c->nthreads, restored below */
    int omp_prev = omp_get_max_threads();
    if (c->nthreads > 0) omp_set_num_threads(c->nthreads);
    int64_t nbatch = (s.items + s.B - 1) / s.B;
    for (int64_t b = 0; b < nbatch && !rc; b++) {
        if ((rc = src_batch(&s, g, b, err))) break;
        const sh_tensor *ins[1] = {s.x};
        sh_program_set_pos(p, 0);
        if ((rc = sh_program_run(p, ins, 1, err))) {
            sh_error_wrap(err, "calibration run");
            break;
        }
        for (int i = 0; i < m && !rc; i++) rc = acc_layer(&A[i], p, g, &L[idx[i]], err);
    }
    if (c->nthreads > 0) omp_set_num_threads(omp_prev);
    for (int i = 0; i < m && !rc; i++) rc = acc_finish(&A[i], &st[i], err);
    for (int i = 0; i < m; i++) acc_free(&A[i]);
    free(A);
    sh_program_free(p);
    sh_tensor_free(s.x);
    if (rc)
        for (int i = 0; i < m; i++) sh_layer_stats_free(&st[i]);
    return rc;
}

int sh_calib_stats(const sh_graph *g, const sh_layer *L, int n, const sh_calib_cfg *c, sh_layer_stats *st,
                   sh_error *err)
{
    for (int i = 0; i < n; i++) memset(&st[i], 0, sizeof st[i]);
    if (n <= 0) return SH_OK;
    int *idx = malloc(sizeof(int) * (size_t)n);
    if (!idx) return sh_err(err, SH_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) idx[i] = i;
    /* the program reads g as it is; it does not change it */
    int rc = collect((sh_graph *)g, L, idx, n, c, st, err);
    free(idx);
    return rc;
}

int sh_calib_sequential(const sh_graph *g, const sh_layer *L, int n, const sh_calib_cfg *c, sh_layer_fn fn,
                        void *ctx, sh_error *err)
{
    if (n <= 0) return SH_OK;
    sh_graph *work = sh_graph_clone(g, err);
    if (!work) return err && err->code ? err->code : SH_ENOMEM;
    int *idx = malloc(sizeof(int) * (size_t)n);
    sh_layer_stats *st = calloc((size_t)n, sizeof *st);
    int rc = SH_OK;
    if (!idx || !st) rc = sh_err(err, SH_ENOMEM, "out of memory");
    for (int i = 0; i < n && !rc;) {
        /* layers reading the same input as L[i] (q/k/v, w1/w3) in one pass */
        int in0 = g->nodes[L[i].node].in[0], m = 0, j = i;
        while (j < n && g->nodes[L[j].node].in[0] == in0) idx[m++] = j++;
        rc = collect(work, L, idx, m, c, st, err);
        for (int q = 0; q < m && !rc; q++) rc = fn(ctx, work, &L[idx[q]], idx[q], &st[q], err);
        for (int q = 0; q < m; q++) sh_layer_stats_free(&st[q]);
        i = j;
    }
    free(idx);
    free(st);
    sh_graph_free(work);
    return rc;
}

/* ---- dense helpers --------------------------------------------------------- */

int sh_chol(double *A, int64_t n)
{
    for (int64_t j = 0; j < n; j++) {
        double *aj = A + j * n;
        double d = aj[j];
        for (int64_t p = 0; p < j; p++) d -= aj[p] * aj[p];
        if (!(d > 0.0)) return SH_EINVAL;
        d = sqrt(d);
        aj[j] = d;
        double inv = 1.0 / d;
        for (int64_t i = j + 1; i < n; i++) {
            double *ai = A + i * n, s = ai[j];
            for (int64_t p = 0; p < j; p++) s -= ai[p] * aj[p];
            ai[j] = s * inv;
        }
        for (int64_t p = j + 1; p < n; p++) aj[p] = 0.0;
    }
    return SH_OK;
}

/* Lower-triangular L (in place) -> L^-1. */
static void tri_inverse_lower(double *Lm, int64_t n)
{
    for (int64_t j = 0; j < n; j++) {
        Lm[j * n + j] = 1.0 / Lm[j * n + j];
        for (int64_t i = j + 1; i < n; i++) {
            double s = 0.0;
            for (int64_t p = j; p < i; p++) s += Lm[i * n + p] * Lm[p * n + j];
            Lm[i * n + j] = -s / Lm[i * n + i];
        }
    }
}

static int damped(const double *H, int64_t k, double damp, double *A, unsigned char *dead, sh_error *err)
{
    memcpy(A, H, sizeof(double) * (size_t)(k * k));
    double md = 0.0;
    for (int64_t j = 0; j < k; j++) {
        int dj = !(A[j * k + j] > 0.0);
        if (dead) dead[j] = (unsigned char)dj;
        if (dj) {
            for (int64_t i = 0; i < k; i++) A[j * k + i] = A[i * k + j] = 0.0;
            A[j * k + j] = 1.0;
        }
        md += A[j * k + j];
    }
    md /= (double)(k > 0 ? k : 1);
    if (damp < 0 || !isfinite(md)) return sh_err(err, SH_EINVAL, "Hessian: damping %g or diagonal mean %g", damp, md);
    for (int64_t j = 0; j < k; j++) A[j * k + j] += damp * md;
    return SH_OK;
}

int sh_spd_inverse(const double *A0, int64_t n, double damp, double *Ai, sh_error *err)
{
    double *Lm = malloc(sizeof(double) * (size_t)(n * n));
    if (!Lm) return sh_err(err, SH_ENOMEM, "out of memory (%lld x %lld inverse)", (long long)n, (long long)n);
    int rc = damped(A0, n, damp, Lm, NULL, err);
    if (!rc && sh_chol(Lm, n))
        rc = sh_err(err, SH_EINVAL, "Hessian [%lld x %lld] is not positive definite (damping %g too small?)",
                    (long long)n, (long long)n, damp);
    if (!rc) {
        tri_inverse_lower(Lm, n);
        /* A^-1 = L^-T L^-1 */
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j <= i; j++) {
                double s = 0.0;
                for (int64_t p = i; p < n; p++) s += Lm[p * n + i] * Lm[p * n + j];
                Ai[i * n + j] = Ai[j * n + i] = s;
            }
    }
    free(Lm);
    return rc;
}

int sh_hinv_chol(const double *H, int64_t k, double damp, double *U, unsigned char *dead, sh_error *err)
{
    double *A = malloc(sizeof(double) * (size_t)(k * k));
    if (!A) return sh_err(err, SH_ENOMEM, "out of memory (%lld x %lld Hessian)", (long long)k, (long long)k);
    int rc = damped(H, k, damp, A, dead, err);
    if (!rc) {
        /* damping is already in A */
        rc = sh_spd_inverse(A, k, 0.0, U, err);
    }
    if (!rc) {
        /* U = upper Cholesky of H^-1 = transpose of its lower factor */
        if (sh_chol(U, k)) rc = sh_err(err, SH_EINVAL, "Hessian inverse is not positive definite");
        else
            for (int64_t i = 0; i < k; i++)
                for (int64_t j = i + 1; j < k; j++) {
                    U[i * k + j] = U[j * k + i];
                    U[j * k + i] = 0.0;
                }
    }
    free(A);
    return rc;
}
