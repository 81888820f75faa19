/* sparsify.c - pack sparse enough Gemm and Conv weights into csr / bcsr /
 * n:m so the model file holds only the non-zeros; Gemm then runs through
 * sh_spmm, Conv through the direct sparse convolution (ops/conv_sparse.c).
 * With measure, each layer keeps whichever of dense and sparse is faster. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "ops/ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

void sh_sparsify_opts_default(sh_sparsify_opts *o)
{
    memset(o, 0, sizeof *o);
    o->min_sparsity = 0.5;
    o->csr = o->bcsr = o->nm = 1;
    o->block = 4;
    o->runs = 30;
}

void sh_sparsify_report_free(sh_sparsify_report *r)
{
    if (!r) return;
    free(r->layers);
    memset(r, 0, sizeof *r);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* 1 if every group of m consecutive columns of every row holds <= n non-zeros */
static int fits_nm(const float *w, int64_t rows, int64_t cols, int n, int m)
{
    if (cols % m) return 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c0 = 0; c0 < cols; c0 += m) {
            int nz = 0;
            for (int j = 0; j < m; j++) nz += w[r * cols + c0 + j] != 0.0f;
            if (nz > n) return 0;
        }
    return 1;
}

/* Median times (ms) of dense and sparse Y[B,N] = X W^T, interleaved runs. */
static int time_layer(const float *w, const sh_tensor *sp, int64_t B, const sh_sparsify_opts *o, double *dms,
                      double *sms, sh_error *err)
{
    int64_t N = sp->shape[0], K = sp->shape[1];
    int runs = o->runs > 0 ? o->runs : 30, nt = o->nthreads;
#ifdef _OPENMP
    if (nt <= 0) nt = omp_get_max_threads();
#else
    if (nt <= 0) nt = 1;
#endif
    size_t wsb = sh_spmm_workspace(sp, B, nt);
    float *x = malloc(sizeof(float) * (size_t)(B * K)), *y = malloc(sizeof(float) * (size_t)(B * N));
    double *td = malloc(sizeof(double) * (size_t)runs), *ts = malloc(sizeof(double) * (size_t)runs);
    void *ws = aligned_alloc(64, (wsb + 63) / 64 * 64);
    int rc = SH_OK;
    if (!x || !y || !td || !ts || !ws) {
        rc = sh_err(err, SH_ENOMEM, "sparsify: out of memory timing a [%lld,%lld] layer", (long long)N, (long long)K);
        goto out;
    }
    uint32_t s = 12345;
    for (int64_t i = 0; i < B * K; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)((s >> 9) & 0xffff) / 65536.0f - 0.5f;
    }
    /* warm up both */
    sh_sgemm(0, 1, B, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
    if ((rc = sh_spmm(sp, x, B, NULL, y, nt, 0, ws, err))) goto out;
    for (int i = 0; i < runs; i++) {
        double t0 = sh_now();
        sh_sgemm(0, 1, B, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
        double t1 = sh_now();
        sh_spmm(sp, x, B, NULL, y, nt, 0, ws, err);
        double t2 = sh_now();
        td[i] = t1 - t0, ts[i] = t2 - t1;
    }
    qsort(td, (size_t)runs, sizeof(double), cmp_d);
    qsort(ts, (size_t)runs, sizeof(double), cmp_d);
    *dms = 1e3 * td[runs / 2];
    *sms = 1e3 * ts[runs / 2];
out:
    free(x), free(y), free(td), free(ts), free(ws);
    return rc;
}

/* A Conv layer to time: node nd of g, its input shape (batch replaced), the
 * dense 4-D weight and the bias (may be NULL). */
typedef struct conv_ctx {
    const sh_node *nd;
    int xnd;
    int64_t xs[SH_MAX_DIMS];
    const sh_tensor *W, *bias;
} conv_ctx;

/* One-node graph: y = Conv(x, W, b) with nd's attributes; W is a view of
 * weight data (or the packed tensor, cloned). */
static sh_graph *conv_graph(const conv_ctx *c, const sh_tensor *W, sh_error *err)
{
    sh_graph *g = sh_graph_new("conv");
    if (!g) return NULL;
    sh_tensor *wc = sh_tensor_clone(W, err), *bc = c->bias ? sh_tensor_clone(c->bias, err) : NULL;
    const char *ins[3] = {"x", "W", "b"}, *outs[1] = {"y"};
    int ok = wc && (!c->bias || bc);
    ok = ok && sh_graph_add_input(g, "x", SH_F32, c->xnd, c->xs, err) >= 0;
    ok = ok && sh_graph_add_init(g, "W", wc, err) >= 0;
    if (ok) wc = NULL;
    ok = ok && (!bc || sh_graph_add_init(g, "b", bc, err) >= 0);
    if (ok) bc = NULL;
    int k = ok ? sh_graph_add_node(g, "Conv", "conv", c->bias ? 3 : 2, ins, 1, outs, err) : -1;
    ok = k >= 0;
    for (int a = 0; ok && a < c->nd->n_attrs; a++) {
        const sh_attr *at = &c->nd->attrs[a];
        if (at->type == SH_ATTR_INT) sh_node_set_int(g, k, at->name, at->i);
        else if (at->type == SH_ATTR_FLOAT) sh_node_set_float(g, k, at->name, at->f);
        else if (at->type == SH_ATTR_STRING) sh_node_set_string(g, k, at->name, at->s);
        else if (at->type == SH_ATTR_INTS) sh_node_set_ints(g, k, at->name, at->n, at->ints);
        else if (at->type == SH_ATTR_FLOATS) sh_node_set_floats(g, k, at->name, at->n, at->floats);
    }
    if (ok && sh_attr_ints(c->nd, "kernel_shape", NULL) < 0) sh_node_set_ints(g, k, "kernel_shape", c->W->ndim - 2, c->W->shape + 2);
    ok = ok && sh_graph_mark_output(g, "y", err) >= 0 && sh_graph_check(g, err) == SH_OK;
    sh_tensor_free(wc);
    sh_tensor_free(bc);
    if (!ok) {
        sh_graph_free(g);
        return NULL;
    }
    return g;
}

/* Median times (ms) of the dense and the sparse Conv at batch B, interleaved
 * runs of one-node programs. */
static int time_conv(const conv_ctx *c, const sh_tensor *sp, int64_t B, const sh_sparsify_opts *o, double *dms,
                     double *sms, sh_error *err)
{
    int runs = o->runs > 0 ? o->runs : 30, rc = SH_OK;
    int64_t xs[SH_MAX_DIMS];
    memcpy(xs, c->xs, sizeof xs);
    xs[0] = B;
    sh_graph *gd = conv_graph(c, c->W, err), *gs = gd ? conv_graph(c, sp, err) : NULL;
    sh_program *pd = NULL, *ps = NULL;
    sh_tensor *x = sh_tensor_new(SH_F32, c->xnd, xs, err);
    double *td = malloc(sizeof(double) * (size_t)runs), *ts = malloc(sizeof(double) * (size_t)runs);
    sh_run_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.nthreads = o->nthreads;
    if (!gd || !gs || !x || !td || !ts) {
        rc = err && err->code ? err->code : sh_err(err, SH_ENOMEM, "sparsify: out of memory timing a Conv");
        goto out;
    }
    uint32_t s = 12345;
    for (int64_t i = 0; i < sh_tensor_numel(x); i++) {
        s = s * 1664525u + 1013904223u;
        ((float *)x->data)[i] = (float)((s >> 9) & 0xffff) / 65536.0f - 0.5f;
    }
    const sh_tensor *in[1] = {x};
    if ((rc = sh_program_new(gd, &ro, &pd, err)) || (rc = sh_program_new(gs, &ro, &ps, err)) ||
        (rc = sh_program_run(pd, in, 1, err)) || (rc = sh_program_run(ps, in, 1, err)))
        goto out;
    for (int i = 0; i < runs; i++) {
        double t0 = sh_now();
        sh_program_run(pd, in, 1, err);
        double t1 = sh_now();
        sh_program_run(ps, in, 1, err);
        double t2 = sh_now();
        td[i] = t1 - t0, ts[i] = t2 - t1;
    }
    qsort(td, (size_t)runs, sizeof(double), cmp_d);
    qsort(ts, (size_t)runs, sizeof(double), cmp_d);
    *dms = 1e3 * td[runs / 2];
    *sms = 1e3 * ts[runs / 2];
out:
    sh_program_free(pd), sh_program_free(ps);
    sh_graph_free(gd), sh_graph_free(gs);
    sh_tensor_free(x);
    free(td), free(ts);
    return rc;
}

/* 1 if node k is a Conv whose f32 1-D / 2-D weight initializer could be packed */
static int conv_candidate(const sh_graph *g, int k)
{
    const sh_node *nd = &g->nodes[k];
    if (strcmp(nd->op, "Conv") || nd->n_in < 2 || nd->in[1] < 0) return 0;
    const sh_tensor *W = g->values[nd->in[1]].init;
    return W && W->fmt == SH_F32 && (W->ndim == 3 || W->ndim == 4) && W->data;
}

int sh_sparsify(const sh_graph *g0, const sh_sparsify_opts *o, sh_graph **out, sh_sparsify_report *rep,
                sh_error *err)
{
    *out = NULL;
    if (rep) memset(rep, 0, sizeof *rep);
    sh_sparsify_opts dflt;
    if (!o) sh_sparsify_opts_default(&dflt), o = &dflt;
    if (!(o->min_sparsity >= 0.0 && o->min_sparsity <= 1.0))
        return sh_err(err, SH_EINVAL, "sparsify: min sparsity %g is not in [0,1]", o->min_sparsity);
    if (!o->csr && !o->bcsr && !o->nm) return sh_err(err, SH_EINVAL, "sparsify: no sparse format allowed");
    if (o->bcsr && o->block && o->block != 2 && o->block != 4 && o->block != 8 && o->block != 16)
        return sh_err(err, SH_EINVAL, "sparsify: bcsr block width %d (2, 4, 8 or 16)", o->block);
    sh_graph *g = sh_graph_clone(g0, err);
    if (!g) return err && err->code ? err->code : SH_ENOMEM;
    sh_sparsify_report r = {0};
    int rc = SH_OK;
    float *wt = NULL;
    sh_graph *gs = NULL;
    int *uses = NULL;
    /* Conv layers: BatchNorm is folded into the weights first (zeros stay
     * zero), since a packed weight can no longer be folded at run time */
    int nconv = 0;
    for (int k = 0; k < g->n_nodes; k++) nconv += conv_candidate(g, k);
    if (nconv && (rc = sh_graph_fold_batchnorm(g, err))) goto done;
    r.layers = calloc((size_t)g->n_nodes + 1, sizeof(sh_sparsify_layer));
    uses = calloc((size_t)g->n_values + 1, sizeof(int));
    if (!r.layers || !uses) {
        rc = sh_err(err, SH_ENOMEM, "sparsify: out of memory");
        goto done;
    }
    /* input shapes of the Conv layers, for measure */
    if (nconv && o->measure) {
        sh_error e2 = {0};
        gs = sh_graph_clone(g, &e2);
        if (gs && sh_graph_infer_shapes(gs, NULL, &e2)) sh_graph_free(gs), gs = NULL;
    }
    for (int k = 0; k < g->n_nodes; k++)
        for (int i = 0; i < g->nodes[k].n_in; i++)
            if (g->nodes[k].in[i] >= 0) uses[g->nodes[k].in[i]]++;
    for (int k = 0; k < g->n_nodes; k++) {
        sh_node *nd = &g->nodes[k];
        int conv = conv_candidate(g, k);
        if (!conv && (strcmp(nd->op, "Gemm") || nd->n_in < 2 || nd->in[1] < 0)) continue;
        sh_value *wv = &g->values[nd->in[1]];
        sh_tensor *W = wv->init;
        if (!W || W->fmt != SH_F32 || (!conv && W->ndim != 2) || !W->data) continue;
        sh_sparsify_layer *L = &r.layers[r.n_layers++];
        snprintf(L->name, sizeof L->name, "%s", nd->name ? nd->name : "");
        snprintf(L->weight, sizeof L->weight, "%s", wv->name);
        int tB = conv ? 1 : (int)sh_attr_int(nd, "transB", 0);
        L->rows = tB ? W->shape[0] : W->shape[1];
        L->cols = tB ? W->shape[1] : W->shape[0];
        conv_ctx cc;
        memset(&cc, 0, sizeof cc);
        if (conv) { /* [M, Cg, kh, kw] as [M, Cg*kh*kw] */
            L->cols = W->shape[1] * W->shape[2] * (W->ndim == 4 ? W->shape[3] : 1);
            cc.nd = nd, cc.W = W;
            cc.bias = nd->n_in > 2 && nd->in[2] >= 0 ? g->values[nd->in[2]].init : NULL;
            const sh_value *xv = gs ? &gs->values[nd->in[0]] : NULL;
            cc.xnd = xv && xv->ndim == W->ndim ? xv->ndim : 0;
            for (int d = 0; d < cc.xnd; d++) cc.xs[d] = xv->shape[d] > 0 ? xv->shape[d] : 1;
            if (cc.bias && (cc.bias->fmt != SH_F32 || !cc.bias->data)) cc.bias = NULL, cc.xnd = 0;
        }
        L->fmt = SH_F32;
        L->bytes_before = L->bytes_after = (int64_t)W->nbytes;
        r.bytes_before += L->bytes_before;
        int64_t n = L->rows * L->cols, z = 0;
        const float *w = W->data;
        for (int64_t i = 0; i < n; i++) z += w[i] == 0.0f;
        L->sparsity = n ? (double)z / (double)n : 0;
        const char *why = NULL;
        if (sh_name_in_list(o->exclude, L->name, L->weight)) why = "excluded";
        else if (sh_attr_int(nd, "transA", 0)) why = "transA=1";
        else if (uses[nd->in[1]] > 1) why = "weight read by another node";
        else if (conv && (nd->n_in > 2 && nd->in[2] >= 0 && !g->values[nd->in[2]].init))
            why = "bias is not an initializer";
        else if (L->sparsity < o->min_sparsity) why = "not sparse enough";
        if (why) {
            snprintf(L->note, sizeof L->note, "%s", why);
            r.bytes_after += L->bytes_after;
            continue;
        }
        if (!tB) { /* [K, N] -> [N, K] */
            free(wt);
            wt = malloc(sizeof(float) * (size_t)(n ? n : 1));
            if (!wt) {
                rc = sh_err(err, SH_ENOMEM, "sparsify: out of memory");
                goto done;
            }
            for (int64_t a = 0; a < L->cols; a++)
                for (int64_t b = 0; b < L->rows; b++) wt[b * L->cols + a] = w[a * L->rows + b];
            w = wt;
        }
        /* candidates: nm when the weight fits 2:4 / 4:8, csr, bcsr.  Without
         * measure the smallest wins; with measure the fastest (time at batch 1
         * times time at o->batch), then it must beat dense. */
        sh_tensor *best = NULL;
        double best_score = 0, dms = 0, dmb = 0;
        sh_format cand[3];
        sh_sparse_opts so[3];
        int nc = 0;
        memset(so, 0, sizeof so);
        if (o->nm && fits_nm(w, L->rows, L->cols, 2, 4)) cand[nc] = SH_NM, so[nc].n = 2, so[nc].m = 4, nc++;
        else if (o->nm && fits_nm(w, L->rows, L->cols, 4, 8)) cand[nc] = SH_NM, so[nc].n = 4, so[nc].m = 8, nc++;
        if (o->csr) cand[nc++] = SH_CSR;
        if (o->bcsr) cand[nc] = SH_BCSR, so[nc].block = o->block ? o->block : 4, nc++;
        for (int c = 0; c < nc; c++) {
            sh_tensor *t = NULL;
            if ((rc = sh_sparse_pack(cand[c], w, L->rows, L->cols, &so[c], &t, err))) {
                sh_tensor_free(best);
                sh_error_wrap(err, "sparsify: layer '%s'", L->name);
                goto done;
            }
            if ((int64_t)t->nbytes >= L->bytes_before) { /* never bigger than dense */
                sh_tensor_free(t);
                continue;
            }
            double score = (double)t->nbytes, s1 = 0, sb = 0;
            if (o->measure && conv && !cc.xnd) {
                /* input shape unknown: by size */
            } else if (o->measure && conv) {
                if ((rc = time_conv(&cc, t, 1, o, &dms, &s1, err)) ||
                    (o->batch > 1 && (rc = time_conv(&cc, t, o->batch, o, &dmb, &sb, err)))) {
                    sh_tensor_free(t);
                    sh_tensor_free(best);
                    sh_error_wrap(err, "sparsify: timing Conv '%s'", L->name);
                    goto done;
                }
                score = s1 / (dms > 0 ? dms : 1e-9) * (o->batch > 1 ? sb / (dmb > 0 ? dmb : 1e-9) : 1.0);
            } else if (o->measure) {
                if ((rc = time_layer(w, t, 1, o, &dms, &s1, err)) ||
                    (o->batch > 1 && (rc = time_layer(w, t, o->batch, o, &dmb, &sb, err)))) {
                    sh_tensor_free(t);
                    sh_tensor_free(best);
                    goto done;
                }
                score = s1 / (dms > 0 ? dms : 1e-9) * (o->batch > 1 ? sb / (dmb > 0 ? dmb : 1e-9) : 1.0);
            }
            if (!best || score < best_score) {
                sh_tensor_free(best);
                best = t, best_score = score;
                L->sparse_ms = s1, L->sparse_ms_b = sb; /* and the dense times of the same interleaved runs */
                L->dense_ms = o->measure ? dms : 0, L->dense_ms_b = o->measure && o->batch > 1 ? dmb : 0;
            } else
                sh_tensor_free(t);
        }
        if (!best) {
            snprintf(L->note, sizeof L->note, "packed is not smaller");
            r.bytes_after += L->bytes_after;
            continue;
        }
        if (o->measure && best_score >= 1.0 && !(conv && !cc.xnd)) {
            snprintf(L->note, sizeof L->note, "dense is faster than %s", sh_format_get(best->fmt)->name);
            sh_tensor_free(best);
            r.bytes_after += L->bytes_after;
            continue;
        }
        L->fmt = best->fmt;
        L->bytes_after = (int64_t)best->nbytes;
        r.bytes_after += L->bytes_after;
        r.packed++;
        if (conv && sh_attr_ints(nd, "kernel_shape", NULL) < 0)
            sh_node_set_ints(g, k, "kernel_shape", W->ndim - 2, W->shape + 2);
        if (o->measure && conv && !cc.xnd) snprintf(L->note, sizeof L->note, "input shape unknown: not timed");
        sh_tensor_free(W);
        wv->init = best;
        wv->fmt = best->fmt;
        wv->ndim = 2;
        wv->shape[0] = L->rows, wv->shape[1] = L->cols;
        if (!tB) sh_node_set_int(g, k, "transB", 1);
    }
done:
    sh_graph_free(gs);
    free(uses);
    free(wt);
    if (rc) {
        sh_sparsify_report_free(&r);
        sh_graph_free(g);
        return rc;
    }
    *out = g;
    if (rep) *rep = r;
    else sh_sparsify_report_free(&r);
    return SH_OK;
}
