/* wanda.c - one-shot pruning with calibration data, without retraining:
 * Wanda (Sun, Liu, Bair & Kolter 2023, "A Simple and Effective Pruning
 * Approach for Large Language Models") and the sequential driver shared with
 * SparseGPT (sparsegpt.c).
 *
 * Wanda scores weight W_ij (row i = output, column j = input) by
 * |W_ij| * ||X_j||_2, the L2 norm of input feature j over every calibration
 * row the layer saw, and compares scores within each output row: the
 * floor(ratio * cols) lowest of every row are zeroed (the paper's "per
 * output" comparison group), or with N:M the M-N lowest of every M
 * consecutive inputs.  Equal scores: the lower column goes first (a stable
 * sort, as torch.sort(stable=True) in the reference code).  Nothing else
 * changes.
 *
 * Driver: layers are visited in graph order with sh_calib_sequential
 * (hessian.c): each group of layers reading one input (q/k/v, w1/w3) is
 * calibrated on what the already-pruned earlier layers produce, as the
 * papers prune block by block ("true sequential" in SparseGPT's code).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"

typedef struct sc_ix {
    double v;
    int64_t i;
} sc_ix;

static int cmp_sc(const void *a, const void *b)
{
    const sc_ix *x = a, *y = b;
    if (x->v < y->v) return -1;
    if (x->v > y->v) return 1;
    return (x->i > y->i) - (x->i < y->i);
}

int sh_wanda_layer(float *w, const sh_layer *l, const double *xnorm, double ratio, int n, int m, sh_error *err)
{
    int64_t rows = l->rows, cols = l->cols;
    sc_ix *s = malloc(sizeof(sc_ix) * (size_t)(cols + 1));
    if (!s) return sh_err(err, SH_ENOMEM, "wanda: out of memory");
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            s[c].v = fabs((double)w[sh_layer_at(l, r, c)]) * xnorm[c];
            s[c].i = c;
        }
        if (m > 0) {
            for (int64_t c0 = 0; c0 + m <= cols; c0 += m) {
                qsort(s + c0, (size_t)m, sizeof *s, cmp_sc);
                for (int j = 0; j < m - n; j++) w[sh_layer_at(l, r, s[c0 + j].i)] = 0.0f;
            }
        } else {
            int64_t k = (int64_t)((double)cols * ratio);
            if (k <= 0) continue;
            qsort(s, (size_t)cols, sizeof *s, cmp_sc);
            for (int64_t j = 0; j < k && j < cols; j++) w[sh_layer_at(l, r, s[j].i)] = 0.0f;
        }
    }
    free(s);
    return SH_OK;
}

/* ---- driver ---------------------------------------------------------------- */

typedef struct oneshot_ctx {
    const sh_prune_opts *o;
    sh_graph *out; /* the result: a clone of g with the same value indices */
} oneshot_ctx;

static int prune_one(void *vctx, sh_graph *work, const sh_layer *l, int i, const sh_layer_stats *st, sh_error *err)
{
    (void)i;
    oneshot_ctx *c = vctx;
    const sh_prune_opts *o = c->o;
    sh_tensor *w = work->values[l->wv].init;
    int rc;
    if (st->k != l->cols)
        return sh_err(err, SH_EINTERNAL, "%s: statistics of %lld inputs for a layer of %lld", l->name,
                      (long long)st->k, (long long)l->cols);
    if (o->method == SH_PRUNE_WANDA) rc = sh_wanda_layer(w->data, l, st->l2, o->ratio, o->n, o->m, err);
    else rc = sh_sparsegpt_layer(w->data, l, st->H, o->ratio, o->n, o->m, 128, 0.01, err);
    if (rc) {
        sh_error_wrap(err, "layer '%s' (%s)", l->name, l->op);
        return rc;
    }
    /* the working graph feeds the next layers; the result keeps a copy */
    sh_tensor *t = c->out->values[l->wv].init;
    memcpy(t->data, w->data, sizeof(float) * (size_t)sh_tensor_numel(w));
    return SH_OK;
}

/* 1 if a node other than layer node k reads value v */
static int shared_weight(const sh_graph *g, int v, int k, const char **by)
{
    for (int i = 0; i < g->n_nodes; i++) {
        if (i == k) continue;
        for (int j = 0; j < g->nodes[i].n_in; j++)
            if (g->nodes[i].in[j] == v) {
                *by = g->nodes[i].name;
                return 1;
            }
    }
    return 0;
}

int sh_prune_oneshot(const sh_graph *g0, const sh_prune_opts *o, sh_graph **out, sh_prune_report *rep, sh_error *err)
{
    *out = NULL;
    if (rep) memset(rep, 0, sizeof *rep);
    int rc = sh_prune_check_opts(o, err);
    if (rc) return rc;
    const char *mname = o->method == SH_PRUNE_WANDA ? "wanda" : "sparsegpt";
    if (o->method != SH_PRUNE_WANDA && o->method != SH_PRUNE_SPARSEGPT)
        return sh_err(err, SH_EINVAL, "one-shot pruning: method %d is neither Wanda nor SparseGPT", o->method);
    if (!o->calib) return sh_err(err, SH_EINVAL, "%s: needs a calibration data set (--calib)", mname);
    if (o->threshold >= 0) return sh_err(err, SH_EINVAL, "%s: prunes a ratio or N:M, not below a threshold", mname);
    if (o->global) return sh_err(err, SH_EINVAL, "%s: compares weights within a layer (no --global)", mname);
    if (o->block > 1) return sh_err(err, SH_EINVAL, "%s: no block pruning (unstructured or N:M)", mname);
    sh_graph *g = sh_graph_clone(g0, err);
    if (!g) return err && err->code ? err->code : SH_ENOMEM;
    sh_layer *L = NULL, *S = NULL;
    int n = 0, *sel = NULL, ns = 0;
    sh_prune_report r = {0};
    char note_by[128];
    if ((rc = sh_graph_check(g, err))) goto out;
    if ((rc = sh_prunable_layers(g, &L, &n, err))) goto out;
    sel = calloc((size_t)n + 1, sizeof(int));
    S = calloc((size_t)n + 1, sizeof *S);
    if (!sel || !S) {
        rc = sh_err(err, SH_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = sh_prune_select(g, L, n, o, sel, err))) goto out;
    if (rep && (rc = sh_prune_report_begin(&r, g, L, n, err))) goto out;
    for (int i = 0; i < n; i++) {
        if (!sel[i]) continue;
        const char *by = NULL;
        if (shared_weight(g, L[i].wv, L[i].node, &by)) {
            if (o->include && sh_name_in_list(o->include, L[i].name, g->values[L[i].wv].name)) {
                rc = sh_err(err, SH_EUNSUPPORTED, "%s: layer '%s': its weight '%s' is also read by '%s'", mname,
                            L[i].name, g->values[L[i].wv].name, by);
                goto out;
            }
            if (rep) {
                snprintf(note_by, sizeof note_by, "%.100s", by);
                snprintf(r.layers[i].note, sizeof r.layers[i].note, "weight shared with '%s': kept", note_by);
            }
            sel[i] = 0;
            continue;
        }
        if (o->m > 0 && L[i].cols % o->m) {
            const sh_tensor *w = g->values[L[i].wv].init;
            char sb[96];
            rc = sh_err(err, SH_ESHAPE,
                        "layer '%s' weight %s: %d:%d needs the input dimension (%lld) to be a multiple of %d",
                        L[i].name, sh_shape_str(w->ndim, w->shape, sb, sizeof sb), o->n, o->m,
                        (long long)L[i].cols, o->m);
            goto out;
        }
        S[ns++] = L[i];
    }
    if (!ns) {
        rc = sh_err(err, SH_EINVAL, "%s: no prunable layer selected (%d Conv/Gemm/MatMul layers with f32 weights)",
                    mname, n);
        goto out;
    }
    if (o->ratio > 0 || o->m > 0) {
        oneshot_ctx c = {o, g};
        int lm = o->calib->kind == 2;
        int B = o->batch > 0 ? o->batch : 32, NB = o->calib_batches > 0 ? o->calib_batches : 4;
        sh_calib_cfg cc = {.calib = o->calib,
                           .samples = NB * B,
                           .batch = lm ? (B < 8 ? B : 8) : B,
                           .seq_len = o->seq_len,
                           .nthreads = o->nthreads,
                           .want_h = o->method == SH_PRUNE_SPARSEGPT};
        if ((rc = sh_calib_sequential(g, S, ns, &cc, prune_one, &c, err))) {
            sh_error_wrap(err, "%s", mname);
            goto out;
        }
    }
    if (rep) {
        sh_prune_report_end(&r, g);
        for (int i = 0; i < n; i++) r.layers[i].pruned = sel[i];
        *rep = r;
        r.layers = NULL;
    }
    *out = g;
    g = NULL;
out:
    free(L);
    free(S);
    free(sel);
    sh_prune_report_free(&r);
    sh_graph_free(g);
    return rc;
}
