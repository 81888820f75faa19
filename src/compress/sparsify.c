/* sparsify.c - pack sparse enough Gemm weights into csr / bcsr / n:m so the
 * model file holds only the non-zeros and Gemm runs through sh_spmm; with
 * measure, each layer keeps whichever of dense and sparse Gemm is faster. */
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
    r.layers = calloc((size_t)g->n_nodes + 1, sizeof(sh_sparsify_layer));
    int *uses = calloc((size_t)g->n_values + 1, sizeof(int));
    if (!r.layers || !uses) {
        rc = sh_err(err, SH_ENOMEM, "sparsify: out of memory");
        goto done;
    }
    for (int k = 0; k < g->n_nodes; k++)
        for (int i = 0; i < g->nodes[k].n_in; i++)
            if (g->nodes[k].in[i] >= 0) uses[g->nodes[k].in[i]]++;
    for (int k = 0; k < g->n_nodes; k++) {
        sh_node *nd = &g->nodes[k];
        if (strcmp(nd->op, "Gemm") || nd->n_in < 2 || nd->in[1] < 0) continue;
        sh_value *wv = &g->values[nd->in[1]];
        sh_tensor *W = wv->init;
        if (!W || W->fmt != SH_F32 || W->ndim != 2 || !W->data) continue;
        sh_sparsify_layer *L = &r.layers[r.n_layers++];
        snprintf(L->name, sizeof L->name, "%s", nd->name ? nd->name : "");
        snprintf(L->weight, sizeof L->weight, "%s", wv->name);
        int tB = (int)sh_attr_int(nd, "transB", 0);
        L->rows = tB ? W->shape[0] : W->shape[1];
        L->cols = tB ? W->shape[1] : W->shape[0];
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
            if (o->measure) {
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
        if (o->measure && best_score >= 1.0) {
            snprintf(L->note, sizeof L->note, "dense is faster than %s", sh_format_get(best->fmt)->name);
            sh_tensor_free(best);
            r.bytes_after += L->bytes_after;
            continue;
        }
        L->fmt = best->fmt;
        L->bytes_after = (int64_t)best->nbytes;
        r.bytes_after += L->bytes_after;
        r.packed++;
        sh_tensor_free(W);
        wv->init = best;
        wv->fmt = best->fmt;
        wv->ndim = 2;
        wv->shape[0] = L->rows, wv->shape[1] = L->cols;
        if (!tB) sh_node_set_int(g, k, "transB", 1);
    }
done:
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
