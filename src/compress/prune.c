/* prune.c - unstructured, block and N:M (semi-structured) pruning by weight
 * magnitude (L1 / L2) or first-order Taylor score |w * dL/dw|, per layer or
 * global across layers.
 *
 * Selection matches PyTorch's torch.nn.utils.prune: the count pruned is
 * round-half-even(ratio * n) and the pruned set is what torch.topk(scores, k,
 * largest=False) returns on the CPU, ties included (sh_select_smallest).  A
 * global pass ranks the selected layers' weights concatenated in node order,
 * as global_unstructured does with parameters listed in model order.
 * Masks are applied by zeroing weights; the result is a new graph.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"

void sh_prune_opts_default(sh_prune_opts *o)
{
    memset(o, 0, sizeof *o);
    o->method = SH_PRUNE_L1;
    o->ratio = 0.5;
    o->threshold = -1;
}

/* score of block (r, cb) of width u along the input dimension */
static float block_score(const sh_layer *l, const float *s, int method, int64_t r, int64_t cb, int64_t u)
{
    if (u == 1) return s[sh_layer_at(l, r, cb)];
    double acc = 0;
    for (int64_t j = 0; j < u; j++) {
        double v = s[sh_layer_at(l, r, cb * u + j)];
        acc += method == SH_PRUNE_L2 ? v * v : v;
    }
    return (float)(method == SH_PRUNE_L2 ? sqrt(acc) : acc);
}

static int nm_layer(const sh_graph *g, const sh_layer *l, const float *s, int n, int m, sh_error *err)
{
    float *w = g->values[l->wv].init->data;
    int idx[64];
    for (int64_t r = 0; r < l->rows; r++)
        for (int64_t c0 = 0; c0 < l->cols; c0 += m) {
            for (int j = 0; j < m; j++) idx[j] = j;
            /* insertion sort by score, descending; ties: lower index first */
            for (int a = 1; a < m; a++) {
                int v = idx[a], b = a;
                float sv = s[sh_layer_at(l, r, c0 + v)];
                while (b > 0 && s[sh_layer_at(l, r, c0 + idx[b - 1])] < sv) {
                    idx[b] = idx[b - 1];
                    b--;
                }
                idx[b] = v;
            }
            for (int j = n; j < m; j++) w[sh_layer_at(l, r, c0 + idx[j])] = 0.0f;
        }
    (void)err;
    return SH_OK;
}

int sh_prune(const sh_graph *g0, const sh_prune_opts *o, sh_graph **out, sh_prune_report *rep, sh_error *err)
{
    *out = NULL;
    if (rep) memset(rep, 0, sizeof *rep);
    int rc = sh_prune_check_opts(o, err);
    if (rc) return rc;
    if (o->method == SH_PRUNE_WANDA || o->method == SH_PRUNE_SPARSEGPT) return sh_prune_oneshot(g0, o, out, rep, err);
    if (o->m > 0 && o->block > 1)
        return sh_err(err, SH_EINVAL, "prune: N:M and block pruning cannot be combined");
    sh_graph *g = sh_graph_clone(g0, err);
    if (!g) return err ? err->code : SH_ENOMEM;
    sh_layer *L = NULL;
    int n = 0, *sel = NULL, nsel = 0;
    float **sc = NULL;
    float *cat = NULL;
    unsigned char *mask = NULL;
    sh_prune_report r = {0};
    if ((rc = sh_prunable_layers(g, &L, &n, err))) goto out;
    sel = calloc((size_t)n + 1, sizeof(int));
    sc = calloc((size_t)n + 1, sizeof(float *));
    if (!sel || !sc) {
        rc = sh_err(err, SH_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = sh_prune_select(g, L, n, o, sel, err))) goto out;
    for (int i = 0; i < n; i++) nsel += sel[i];
    if (!nsel) {
        rc = sh_err(err, SH_EINVAL, "prune: no prunable layer selected (%d Conv/Gemm/MatMul layers with f32 weights)", n);
        goto out;
    }
    /* shape checks before any work */
    int64_t u = o->m > 0 ? o->m : (o->block > 1 ? o->block : 1);
    for (int i = 0; i < n; i++) {
        if (!sel[i] || L[i].cols % u == 0) continue;
        const sh_tensor *w = g->values[L[i].wv].init;
        char sb[96];
        sh_shape_str(w->ndim, w->shape, sb, sizeof sb);
        if (o->m > 0)
            rc = sh_err(err, SH_ESHAPE, "layer '%s' weight %s: %d:%d needs the input dimension (%lld) to be a multiple of %d",
                        L[i].name, sb, o->n, o->m, (long long)L[i].cols, o->m);
        else
            rc = sh_err(err, SH_ESHAPE, "layer '%s' weight %s: blocks of %lld need the input dimension (%lld) to be a multiple of %lld",
                        L[i].name, sb, (long long)u, (long long)L[i].cols, (long long)u);
        goto out;
    }
    if (rep && (rc = sh_prune_report_begin(&r, g, L, n, err))) goto out;
    /* scores in weight layout */
    if (o->method == SH_PRUNE_TAYLOR) {
        if ((rc = sh_taylor_scores(g, L, n, o, sc, err))) goto out;
    } else
        for (int i = 0; i < n; i++) {
            const sh_tensor *w = g->values[L[i].wv].init;
            int64_t ne = sh_tensor_numel(w);
            if (!(sc[i] = malloc(sizeof(float) * (size_t)(ne + 1)))) {
                rc = sh_err(err, SH_ENOMEM, "out of memory");
                goto out;
            }
            const float *wd = w->data;
            for (int64_t e = 0; e < ne; e++) sc[i][e] = fabsf(wd[e]);
        }
    if (o->m > 0) {
        for (int i = 0; i < n && !rc; i++)
            if (sel[i]) rc = nm_layer(g, &L[i], sc[i], o->n, o->m, err);
        if (rc) goto out;
    } else {
        /* block scores, concatenated over the selected layers */
        int64_t total = 0;
        for (int i = 0; i < n; i++)
            if (sel[i]) total += L[i].rows * (L[i].cols / u);
        cat = malloc(sizeof(float) * (size_t)(total + 1));
        mask = malloc((size_t)total + 1);
        if (!cat || !mask) {
            rc = sh_err(err, SH_ENOMEM, "out of memory");
            goto out;
        }
        int64_t off = 0;
        for (int i = 0; i < n; i++) {
            if (!sel[i]) continue;
            const sh_layer *l = &L[i];
            int64_t nb = l->cols / u;
            if (u == 1) /* storage order, as parameters_to_vector */
                memcpy(cat + off, sc[i], sizeof(float) * (size_t)(l->rows * l->cols));
            else
                for (int64_t rr = 0; rr < l->rows; rr++)
                    for (int64_t cb = 0; cb < nb; cb++) cat[off + rr * nb + cb] = block_score(l, sc[i], o->method, rr, cb, u);
            off += l->rows * nb;
        }
        if (o->threshold >= 0) {
            for (int64_t e = 0; e < total; e++) mask[e] = cat[e] < (float)o->threshold;
        } else if (o->global) {
            if (sh_select_smallest(cat, total, sh_prune_count(o->ratio, total), mask)) {
                rc = sh_err(err, SH_ENOMEM, "out of memory");
                goto out;
            }
        } else {
            off = 0;
            for (int i = 0; i < n; i++) {
                if (!sel[i]) continue;
                int64_t cnt = L[i].rows * (L[i].cols / u);
                if (sh_select_smallest(cat + off, cnt, sh_prune_count(o->ratio, cnt), mask + off)) {
                    rc = sh_err(err, SH_ENOMEM, "out of memory");
                    goto out;
                }
                off += cnt;
            }
        }
        off = 0;
        for (int i = 0; i < n; i++) {
            if (!sel[i]) continue;
            const sh_layer *l = &L[i];
            float *w = g->values[l->wv].init->data;
            int64_t nb = l->cols / u;
            if (u == 1) {
                for (int64_t e = 0; e < l->rows * l->cols; e++)
                    if (mask[off + e]) w[e] = 0.0f;
            } else
                for (int64_t rr = 0; rr < l->rows; rr++)
                    for (int64_t cb = 0; cb < nb; cb++)
                        if (mask[off + rr * nb + cb])
                            for (int64_t j = 0; j < u; j++) w[sh_layer_at(l, rr, cb * u + j)] = 0.0f;
            off += l->rows * nb;
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
    if (sc)
        for (int i = 0; i < n; i++) free(sc[i]);
    free(sc);
    free(sel);
    free(L);
    free(cat);
    free(mask);
    sh_prune_report_free(&r);
    sh_graph_free(g);
    return rc;
}
