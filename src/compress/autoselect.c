/* autoselect.c - per-layer bits and sparsities chosen from a sensitivity
 * table (sensitivity.c), applied together and measured.
 *
 * Quantization: multiple-choice knapsack over {f32, levels} per layer
 * (sizes from sh_quantize_weights, costs the measured KL), exact in units of
 * budget/20000 bytes with sizes rounded up, so the budget always holds.
 * --max-drop bisects the budget and evaluates each candidate.
 *
 * Pruning: each layer's KL(sparsity) curve (lower convex hull of the
 * measured points) is cut into segments; segments are taken cheapest first
 * (KL per weight, or per MAC, removed) until the target is met: for convex
 * curves this is the optimum of the summed-KL model.  The latency target
 * uses structured channel pruning, bisecting one scale of per-layer ratios
 * on the measured batch-1 latency. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "shrink.h"

void sh_auto_report_free(sh_auto_report *r)
{
    if (!r) return;
    free(r->layers);
    memset(r, 0, sizeof *r);
}

void sh_autoprune_opts_default(sh_autoprune_opts *o)
{
    memset(o, 0, sizeof *o);
    o->target_sparsity = -1;
    o->target_flops = -1;
    o->target_latency_ms = 0;
    o->uniform = 1;
    o->sens_opts.prune = 1;
    o->sens_opts.method = SH_PRUNE_L1;
}

/* Sensitivity table: the caller's, or measured now into *own. */
static int get_sens(const sh_graph *g, const sh_sens_report *given, const sh_sens_opts *so, int prune,
                    sh_sens_report *own, const sh_sens_report **out, sh_error *err)
{
    memset(own, 0, sizeof *own);
    if (given) {
        if (given->prune != prune)
            return sh_err(err, SH_EINVAL, "the sensitivity table is for %s, %s is needed",
                          given->prune ? "pruning" : "quantization", prune ? "pruning" : "quantization");
        *out = given;
        return SH_OK;
    }
    sh_sens_opts o = *so;
    o.prune = prune;
    int rc = sh_sensitivity(g, &o, own, err);
    if (rc) return rc;
    *out = own;
    return SH_OK;
}

static int new_compare(const sh_graph *g, const sh_sens_opts *so, sh_compare **cmp, sh_error *err)
{
    sh_graph *c = sh_graph_clone(g, err);
    if (!c) return err && err->code ? err->code : SH_ENOMEM;
    int rc = sh_compare_new(c, so->data, so->samples, so->seq_len, so->nthreads, cmp, err);
    sh_graph_free(c);
    return rc;
}

/* Append s to a malloc'ed comma list. */
static int list_add(char **list, size_t *len, size_t *cap, const char *s)
{
    size_t n = strlen(s);
    if (!n) return 0;
    if (*len + n + 2 > *cap) {
        size_t nc = (*cap + n + 2) * 2;
        char *p = realloc(*list, nc);
        if (!p) return -1;
        *list = p, *cap = nc;
    }
    if (*len) (*list)[(*len)++] = ',';
    memcpy(*list + *len, s, n);
    *len += n;
    (*list)[*len] = 0;
    return 0;
}

/* ---- quantization ------------------------------------------------------------ */

typedef struct qcand {
    int layer;             /* index in the sensitivity report */
    int nopt;              /* options: 0 = f32, 1.. = levels */
    int64_t bytes[SH_SENS_MAX_LEVELS + 1];
    double kl[SH_SENS_MAX_LEVELS + 1];
    int level[SH_SENS_MAX_LEVELS + 1]; /* level index of option (-1 f32) */
} qcand;

/* Least-KL choice with sum of bytes <= cap; 0 if none fits.  choice[i] =
 * option of candidate i. */
static int knapsack(const qcand *C, int nc, int64_t cap, int *choice, int *ok, sh_error *err)
{
    *ok = 0;
    int64_t minsum = 0;
    for (int i = 0; i < nc; i++) {
        int64_t m = C[i].bytes[0];
        for (int k = 1; k < C[i].nopt; k++)
            if (C[i].bytes[k] < m) m = C[i].bytes[k];
        minsum += m;
    }
    if (cap < minsum) return SH_OK;
    if (nc == 0) {
        *ok = 1;
        return SH_OK;
    }
    int64_t unit = cap / 20000 + 1;
    int64_t U = cap / unit;
    double *dp = malloc(sizeof(double) * (size_t)(U + 1) * 2);
    unsigned char *ch = malloc((size_t)nc * (size_t)(U + 1));
    if (!dp || !ch) {
        free(dp), free(ch);
        return sh_err(err, SH_ENOMEM, "autoquant: out of memory");
    }
    double *cur = dp, *nxt = dp + U + 1;
    for (int64_t u = 0; u <= U; u++) cur[u] = 0;
    for (int i = 0; i < nc; i++) {
        for (int64_t u = 0; u <= U; u++) {
            double best = INFINITY;
            int bk = 0;
            for (int k = 0; k < C[i].nopt; k++) {
                int64_t wgt = (C[i].bytes[k] + unit - 1) / unit;
                if (wgt > u) continue;
                /* ties: the smaller option */
                double v = cur[u - wgt] + C[i].kl[k] + 1e-12 * (double)C[i].bytes[k];
                if (v < best) best = v, bk = k;
            }
            nxt[u] = best;
            ch[(size_t)i * (size_t)(U + 1) + (size_t)u] = (unsigned char)bk;
        }
        double *t = cur;
        cur = nxt, nxt = t;
    }
    if (isfinite(cur[U])) {
        int64_t u = U;
        for (int i = nc - 1; i >= 0; i--) {
            int k = ch[(size_t)i * (size_t)(U + 1) + (size_t)u];
            choice[i] = k;
            u -= (C[i].bytes[k] + unit - 1) / unit;
        }
        *ok = 1;
    } else {
        /* rounding lost the fit: every layer at its smallest option fits */
        for (int i = 0; i < nc; i++) {
            int bk = 0;
            for (int k = 1; k < C[i].nopt; k++)
                if (C[i].bytes[k] < C[i].bytes[bk]) bk = k;
            choice[i] = bk;
        }
        *ok = 1;
    }
    free(dp), free(ch);
    return SH_OK;
}

/* Quantize g with the choice: one sh_quantize_weights pass per bit width,
 * every other layer excluded. */
static int apply_quant(const sh_graph *g, const sh_sens_report *S, const qcand *C, int nc, const int *choice,
                       int scheme, sh_graph **out, sh_error *err)
{
    *out = NULL;
    sh_graph *cur = sh_graph_clone(g, err);
    if (!cur) return err && err->code ? err->code : SH_ENOMEM;
    int rc = SH_OK;
    for (int j = 0; j < S->n_levels && !rc; j++) {
        int any = 0;
        for (int i = 0; i < nc; i++) any |= C[i].level[choice[i]] == j;
        if (!any) continue;
        char *ex = NULL;
        size_t len = 0, cap = 0;
        for (int k = 0; k < cur->n_nodes; k++) {
            const sh_node *nd = &cur->nodes[k];
            int keep = 0;
            for (int i = 0; i < nc; i++)
                if (C[i].level[choice[i]] == j && nd->name && !strcmp(nd->name, S->layers[C[i].layer].name)) keep = 1;
            if (keep) continue;
            if (nd->name && *nd->name) {
                if (list_add(&ex, &len, &cap, nd->name)) rc = sh_err(err, SH_ENOMEM, "autoquant: out of memory");
            } else if (nd->n_in > 1 && nd->in[1] >= 0) {
                if (list_add(&ex, &len, &cap, cur->values[nd->in[1]].name))
                    rc = sh_err(err, SH_ENOMEM, "autoquant: out of memory");
            }
        }
        if (rc) {
            free(ex);
            break;
        }
        sh_quant_opts qo = {0};
        qo.bits = (int)S->levels[j].value;
        qo.scheme = scheme;
        qo.exclude = ex ? ex : "";
        sh_graph *q = NULL;
        rc = sh_quantize_weights(cur, &qo, &q, NULL, err);
        free(ex);
        if (!rc) {
            sh_graph_free(cur);
            cur = q;
        }
    }
    if (rc) {
        sh_graph_free(cur);
        return rc;
    }
    *out = cur;
    return SH_OK;
}

static void fill_quant_layers(const sh_sens_report *S, const qcand *C, int nc, const int *choice, sh_auto_report *rep)
{
    for (int l = 0; l < S->n_layers; l++) {
        const sh_sens_layer *sl = &S->layers[l];
        sh_auto_layer *a = &rep->layers[l];
        snprintf(a->name, sizeof a->name, "%s", sl->name);
        a->params = sl->params;
        a->bytes = sl->bytes;
        a->choice = 0;
        snprintf(a->label, sizeof a->label, "f32");
        int ci = -1;
        for (int i = 0; i < nc; i++)
            if (C[i].layer == l) ci = i;
        if (ci < 0) {
            snprintf(a->note, sizeof a->note, "%s", sl->note[0] ? sl->note : "excluded");
            continue;
        }
        int k = choice[ci], j = C[ci].level[k];
        a->bytes = C[ci].bytes[k];
        a->est_kl = C[ci].kl[k];
        if (j >= 0) {
            a->choice = S->levels[j].value;
            snprintf(a->label, sizeof a->label, "%s", S->levels[j].label);
            a->est_drop = sl->cells[j].drop;
        }
    }
}

int sh_autoquant(const sh_graph *g, const sh_autoquant_opts *o, sh_graph **out, sh_auto_report *rep, sh_error *err)
{
    *out = NULL;
    memset(rep, 0, sizeof *rep);
    if (!g || !o) return sh_err(err, SH_EINVAL, "autoquant: model and options are required");
    if (o->budget_bytes <= 0 && !(o->max_drop >= 0))
        return sh_err(err, SH_EINVAL, "autoquant: max drop %g must be >= 0 (or give a byte budget)", o->max_drop);
    if (o->overhead_bytes < 0) return sh_err(err, SH_EINVAL, "autoquant: negative overhead");
    double t0 = sh_now();
    sh_sens_report own;
    const sh_sens_report *S = NULL;
    int rc = get_sens(g, o->sens, &o->sens_opts, 0, &own, &S, err);
    if (rc) return rc;
    sh_compare *cmp = NULL;
    qcand *C = calloc((size_t)S->n_layers + 1, sizeof *C);
    int *choice = calloc((size_t)S->n_layers + 1, sizeof *choice), *best = calloc((size_t)S->n_layers + 1, sizeof *best);
    int nc = 0;
    sh_graph *q = NULL, *gf = NULL;
    rep->layers = calloc((size_t)S->n_layers + 1, sizeof *rep->layers);
    if (!C || !choice || !best || !rep->layers) {
        rc = sh_err(err, SH_ENOMEM, "autoquant: out of memory");
        goto done;
    }
    rep->n_layers = S->n_layers;
    /* BatchNorm folded first (as sh_quantize_weights does): the sizes are
     * those of the folded graph, and an all-f32 choice is folded too */
    if (!(gf = sh_graph_clone(g, err))) { rc = err && err->code ? err->code : SH_ENOMEM; goto done; }
    if ((rc = sh_graph_fold_batchnorm(gf, err))) goto done;
    int64_t total = sh_graph_param_bytes(g), fixed = sh_graph_param_bytes(gf) + o->overhead_bytes;
    for (int l = 0; l < S->n_layers; l++) {
        const sh_sens_layer *sl = &S->layers[l];
        if (!sl->quantizable || sh_name_in_list(o->exclude, sl->name, sl->weight)) continue;
        qcand *c = &C[nc];
        c->layer = l;
        c->bytes[0] = sl->bytes, c->kl[0] = 0, c->level[0] = -1;
        c->nopt = 1;
        for (int j = 0; j < S->n_levels; j++) {
            if (sl->cells[j].bytes <= 0) continue;
            c->bytes[c->nopt] = sl->cells[j].bytes;
            c->kl[c->nopt] = isfinite(sl->cells[j].kl) ? sl->cells[j].kl : 1e30;
            c->level[c->nopt] = j;
            c->nopt++;
        }
        fixed -= sl->bytes;
        nc++;
    }
    int64_t minsum = 0, maxsum = 0;
    for (int i = 0; i < nc; i++) {
        int64_t m = C[i].bytes[0], M = C[i].bytes[0];
        for (int k = 1; k < C[i].nopt; k++) {
            if (C[i].bytes[k] < m) m = C[i].bytes[k];
            if (C[i].bytes[k] > M) M = C[i].bytes[k];
        }
        minsum += m, maxsum += M;
    }
    if (nc == 0) {
        rc = sh_err(err, SH_EINVAL, "autoquant: no layer can be stored quantized (weight-only quantization covers "
                                    "Gemm layers with transB=1; see the sensitivity notes)");
        goto done;
    }
    if ((rc = new_compare(g, &o->sens_opts, &cmp, err))) goto done;
    sh_compare_result res = {0};
    int ok = 0;
    if (o->budget_bytes > 0) {
        if (o->budget_bytes < fixed + minsum) {
            rc = sh_err(err, SH_EINVAL,
                        "autoquant: budget %lld bytes is below the smallest reachable model, %lld bytes (every "
                        "quantizable layer at its fewest bits, the other %lld bytes f32%s)",
                        (long long)o->budget_bytes, (long long)(fixed + minsum), (long long)(fixed - o->overhead_bytes),
                        o->overhead_bytes ? " plus file overhead" : "");
            goto done;
        }
        if ((rc = knapsack(C, nc, o->budget_bytes - fixed, best, &ok, err))) goto done;
        if ((rc = apply_quant(gf, S, C, nc, best, o->scheme, &q, err))) goto done;
        if ((rc = sh_compare_eval(cmp, q, &res, err))) goto done;
        rep->evaluations++;
    } else {
        /* bisection over the budget: lo fails, hi passes (all f32 passes) */
        int64_t lo = fixed + minsum, hi = fixed + maxsum;
        for (int i = 0; i < nc; i++) best[i] = 0; /* f32 */
        res.metric = 0;
        int have = 0;
        /* the smallest model first */
        if ((rc = knapsack(C, nc, lo - fixed, choice, &ok, err))) goto done;
        if ((rc = apply_quant(gf, S, C, nc, choice, o->scheme, &q, err))) goto done;
        if ((rc = sh_compare_eval(cmp, q, &res, err))) goto done;
        rep->evaluations++;
        if (res.drop <= o->max_drop) {
            memcpy(best, choice, sizeof(int) * (size_t)nc);
            have = 1;
        } else {
            sh_graph_free(q);
            q = NULL;
            int *last = calloc((size_t)nc + 1, sizeof *last);
            if (!last) { rc = sh_err(err, SH_ENOMEM, "autoquant: out of memory"); goto done; }
            memcpy(last, choice, sizeof(int) * (size_t)nc);
            sh_compare_result rb = {0};
            int64_t tol = (hi - lo) / 512 + 1;
            for (int it = 0; it < 24 && hi - lo > tol && !rc; it++) {
                int64_t mid = lo + (hi - lo) / 2;
                if ((rc = knapsack(C, nc, mid - fixed, choice, &ok, err))) break;
                /* the bytes this choice really takes */
                int64_t used = fixed;
                for (int i = 0; i < nc; i++) used += C[i].bytes[choice[i]];
                if (!memcmp(choice, last, sizeof(int) * (size_t)nc)) { lo = mid; continue; }
                memcpy(last, choice, sizeof(int) * (size_t)nc);
                sh_graph *m = NULL;
                if ((rc = apply_quant(gf, S, C, nc, choice, o->scheme, &m, err))) break;
                sh_compare_result r;
                if ((rc = sh_compare_eval(cmp, m, &r, err))) {
                    sh_graph_free(m);
                    break;
                }
                rep->evaluations++;
                if (r.drop <= o->max_drop) {
                    hi = used < mid ? used : mid;
                    memcpy(best, choice, sizeof(int) * (size_t)nc);
                    sh_graph_free(q);
                    q = m;
                    rb = r;
                    have = 1;
                } else {
                    lo = mid;
                    sh_graph_free(m);
                }
            }
            free(last);
            if (rc) goto done;
            res = rb;
        }
        if (!have) { /* nothing smaller passed: all f32 */
            for (int i = 0; i < nc; i++) best[i] = 0;
            sh_graph_free(q);
            q = NULL;
            if ((rc = apply_quant(gf, S, C, nc, best, o->scheme, &q, err))) goto done;
            if ((rc = sh_compare_eval(cmp, q, &res, err))) goto done;
            rep->evaluations++;
        }
    }
    fill_quant_layers(S, C, nc, best, rep);
    rep->task = sh_compare_info(cmp, &rep->base_metric, NULL);
    rep->metric = res.metric, rep->drop = res.drop, rep->kl = res.kl;
    for (int i = 0; i < nc; i++) rep->est_kl += C[i].kl[best[i]];
    rep->bytes_before = total;
    rep->bytes_after = sh_graph_param_bytes(q);
    rep->uniform_metric = rep->uniform_drop = -1;
    rep->seconds = sh_now() - t0;
done:
    if (rc) {
        sh_graph_free(q);
        q = NULL;
        sh_auto_report_free(rep);
    }
    sh_compare_free(cmp);
    sh_graph_free(gf);
    free(C), free(choice), free(best);
    sh_sens_report_free(&own);
    *out = q;
    return rc;
}

/* ---- pruning --------------------------------------------------------------------- */

typedef struct seg {
    int layer;
    double s0, s1;        /* sparsity range */
    double slope;         /* KL per unit sparsity */
    double cost;          /* KL per unit of resource removed */
} seg;

static int cmp_seg(const void *a, const void *b)
{
    const seg *x = a, *y = b;
    if (x->cost < y->cost) return -1;
    if (x->cost > y->cost) return 1;
    if (x->layer != y->layer) return x->layer - y->layer;
    return x->s0 < y->s0 ? -1 : x->s0 > y->s0;
}

/* Lower convex hull of points (xs ascending, ys) in place; returns count. */
static int hull(double *x, double *y, int n)
{
    int m = 0;
    for (int i = 0; i < n; i++) {
        while (m >= 2) {
            double cr = (x[m - 1] - x[m - 2]) * (y[i] - y[m - 2]) - (y[m - 1] - y[m - 2]) * (x[i] - x[m - 2]);
            if (cr <= 0) m--; /* the middle point lies on or above the chord */
            else break;
        }
        x[m] = x[i], y[m] = y[i], m++;
    }
    /* KL does not fall when pruning more: flatten negative slopes */
    for (int i = 1; i < m; i++)
        if (y[i] < y[i - 1]) y[i] = y[i - 1];
    return m;
}

typedef struct curve {
    int n;
    double x[SH_SENS_MAX_LEVELS + 3], y[SH_SENS_MAX_LEVELS + 3];
} curve;

static double curve_at(const curve *c, double s)
{
    if (s <= c->x[0]) return c->y[0];
    for (int i = 1; i < c->n; i++)
        if (s <= c->x[i]) return c->y[i - 1] + (c->y[i] - c->y[i - 1]) * (s - c->x[i - 1]) / (c->x[i] - c->x[i - 1]);
    return c->y[c->n - 1];
}

static int prune_layer(const sh_graph *g, const char *name, int64_t k, int64_t n, int method, sh_graph **out,
                       sh_error *err)
{
    sh_prune_opts po;
    sh_prune_opts_default(&po);
    po.method = method;
    po.include = name;
    po.ratio = n ? (double)k / (double)n : 0;
    if (po.ratio >= 1) po.ratio = (double)(n - 1) / (double)n;
    return sh_prune(g, &po, out, NULL, err);
}

static int64_t zeros_of(const sh_graph *g, const char *wname)
{
    int v = sh_graph_find(g, wname);
    if (v < 0 || !g->values[v].init || g->values[v].init->fmt != SH_F32) return 0;
    const float *w = g->values[v].init->data;
    int64_t n = sh_tensor_numel(g->values[v].init), z = 0;
    for (int64_t i = 0; i < n; i++) z += w[i] == 0.0f;
    return z;
}

static int autoprune_channels(const sh_graph *g, const sh_autoprune_opts *o, const sh_sens_report *S,
                              sh_compare *cmp, sh_graph **out, sh_auto_report *rep, sh_error *err);

int sh_autoprune(const sh_graph *g, const sh_autoprune_opts *o, sh_graph **out, sh_auto_report *rep, sh_error *err)
{
    *out = NULL;
    memset(rep, 0, sizeof *rep);
    if (!g || !o) return sh_err(err, SH_EINVAL, "autoprune: model and options are required");
    int ntarget = (o->target_sparsity >= 0) + (o->target_flops >= 0) + (o->target_latency_ms > 0);
    if (ntarget != 1)
        return sh_err(err, SH_EINVAL, "autoprune: give exactly one target (sparsity, flops or latency), got %d",
                      ntarget);
    if (o->target_sparsity >= 0 && !(o->target_sparsity < 1))
        return sh_err(err, SH_EINVAL, "autoprune: target sparsity %g is outside [0, 1)", o->target_sparsity);
    if (o->target_flops >= 0 && !(o->target_flops > 0 && o->target_flops <= 1))
        return sh_err(err, SH_EINVAL, "autoprune: target FLOPs fraction %g is outside (0, 1]", o->target_flops);
    if (o->target_latency_ms != o->target_latency_ms || o->target_latency_ms < 0)
        return sh_err(err, SH_EINVAL, "autoprune: target latency %g ms", o->target_latency_ms);
    double maxs = o->max_layer_sparsity > 0 ? o->max_layer_sparsity : 0.98;
    if (!(maxs < 1)) return sh_err(err, SH_EINVAL, "autoprune: max layer sparsity %g must be < 1", maxs);
    double t0 = sh_now();
    sh_sens_report own;
    const sh_sens_report *S = NULL;
    int rc = SH_OK;
    sh_compare *cmp = NULL;
    if (o->target_latency_ms > 0) {
        memset(&own, 0, sizeof own);
    } else if ((rc = get_sens(g, o->sens, &o->sens_opts, 1, &own, &S, err))) {
        return rc;
    }
    seg *sg = NULL;
    curve *cv = NULL;
    int64_t *k = NULL, *n = NULL, *z0 = NULL;
    double *res = NULL, *s = NULL;
    sh_graph *cur = NULL;
    if ((rc = new_compare(g, &o->sens_opts, &cmp, err))) goto done;
    if (o->target_latency_ms > 0) {
        rc = autoprune_channels(g, o, NULL, cmp, &cur, rep, err);
        goto done;
    }
    int nl = S->n_layers, ns = 0;
    sg = calloc((size_t)nl * (SH_SENS_MAX_LEVELS + 3) + 1, sizeof *sg);
    cv = calloc((size_t)nl + 1, sizeof *cv);
    k = calloc((size_t)nl + 1, sizeof *k);
    n = calloc((size_t)nl + 1, sizeof *n);
    z0 = calloc((size_t)nl + 1, sizeof *z0);
    res = calloc((size_t)nl + 1, sizeof *res);
    s = calloc((size_t)nl + 1, sizeof *s);
    rep->layers = calloc((size_t)nl + 1, sizeof *rep->layers);
    if (!sg || !cv || !k || !n || !z0 || !res || !s || !rep->layers) {
        rc = sh_err(err, SH_ENOMEM, "autoprune: out of memory");
        goto done;
    }
    rep->n_layers = nl;
    int flops = o->target_flops >= 0;
    double total_w = 0, total_r = 0, have_r = 0;
    for (int l = 0; l < nl; l++) {
        const sh_sens_layer *sl = &S->layers[l];
        n[l] = sl->params;
        z0[l] = sl->zeros;
        res[l] = flops ? (double)sl->macs / (double)(n[l] ? n[l] : 1) : 1.0;
        total_w += (double)n[l];
        total_r += res[l] * (double)n[l];
        have_r += res[l] * (double)z0[l];
        k[l] = z0[l];
        int excl = sh_name_in_list(o->exclude, sl->name, sl->weight);
        /* curve: (current sparsity, 0), the measured sparsity levels, extension */
        curve *c = &cv[l];
        double x0 = n[l] ? (double)z0[l] / (double)n[l] : 0;
        double px[SH_SENS_MAX_LEVELS + 3], py[SH_SENS_MAX_LEVELS + 3];
        int np = 0;
        px[np] = x0, py[np] = 0, np++;
        /* levels sorted by sparsity */
        int idx[SH_SENS_MAX_LEVELS], ni = 0;
        for (int j = 0; j < S->n_levels; j++)
            if (S->levels[j].m <= 0 && S->levels[j].value > x0 + 1e-9) idx[ni++] = j;
        for (int a = 1; a < ni; a++)
            for (int b = a; b > 0 && S->levels[idx[b]].value < S->levels[idx[b - 1]].value; b--) {
                int t = idx[b];
                idx[b] = idx[b - 1], idx[b - 1] = t;
            }
        for (int a = 0; a < ni; a++) {
            double v = S->levels[idx[a]].value, kl = sl->cells[idx[a]].kl;
            if (np && v <= px[np - 1] + 1e-12) continue;
            px[np] = v, py[np] = isfinite(kl) && kl > 0 ? kl : 0, np++;
        }
        np = hull(px, py, np);
        if (np >= 2 && px[np - 1] < maxs) { /* beyond the last level: last slope x 4 */
            double sl4 = 4 * (py[np - 1] - py[np - 2]) / (px[np - 1] - px[np - 2]);
            if (!(sl4 > 0)) sl4 = 1e-6;
            px[np] = maxs, py[np] = py[np - 1] + sl4 * (maxs - px[np - 1]), np++;
        } else if (np == 1 && x0 < maxs) { /* no level measured above: a steep line */
            px[np] = maxs, py[np] = 1e3, np++;
        }
        c->n = np;
        memcpy(c->x, px, sizeof(double) * (size_t)np);
        memcpy(c->y, py, sizeof(double) * (size_t)np);
        if (excl) {
            snprintf(rep->layers[l].note, sizeof rep->layers[l].note, "excluded");
            continue;
        }
        for (int a = 1; a < np; a++) {
            if (px[a] > maxs + 1e-12) break;
            seg *q = &sg[ns++];
            q->layer = l, q->s0 = px[a - 1], q->s1 = px[a];
            q->slope = (py[a] - py[a - 1]) / (px[a] - px[a - 1]);
            /* KL per unit of resource: the segment removes res * (s1 - s0) * n */
            q->cost = q->slope / (res[l] * (double)n[l] > 0 ? res[l] * (double)n[l] : 1e-30);
        }
    }
    /* resource to remove */
    double need;
    if (!flops) need = ceil(o->target_sparsity * total_w - 1e-9);
    else need = (1.0 - o->target_flops) * total_r;
    double cap = have_r;
    for (int i = 0; i < ns; i++) cap += res[sg[i].layer] * (sg[i].s1 - sg[i].s0) * (double)n[sg[i].layer];
    if (need > cap + 1e-6) {
        if (!flops)
            rc = sh_err(err, SH_EINVAL, "autoprune: target sparsity %g is unreachable: at most %.4f with every layer "
                        "at <= %g sparsity%s", o->target_sparsity, cap / total_w, maxs,
                        o->exclude ? " (some layers excluded)" : "");
        else
            rc = sh_err(err, SH_EINVAL, "autoprune: target FLOPs %g is unreachable: at least %.4f of the dense MACs "
                        "remain with every layer at <= %g sparsity", o->target_flops, 1 - cap / total_r, maxs);
        goto done;
    }
    qsort(sg, (size_t)ns, sizeof *sg, cmp_seg);
    double got = have_r;
    for (int l = 0; l < nl; l++) s[l] = n[l] ? (double)z0[l] / (double)n[l] : 0;
    for (int i = 0; i < ns && got < need - 1e-9; i++) {
        int l = sg[i].layer;
        double avail = res[l] * (sg[i].s1 - sg[i].s0) * (double)n[l];
        if (got + avail <= need) {
            s[l] = sg[i].s1;
            got += avail;
        } else {
            s[l] = sg[i].s0 + (need - got) / (res[l] * (double)n[l]);
            got = need;
        }
    }
    /* integer counts, then top up the cheapest layer until the target holds */
    got = 0;
    for (int l = 0; l < nl; l++) {
        k[l] = (int64_t)llround(s[l] * (double)n[l]);
        if (k[l] < z0[l]) k[l] = z0[l];
        if (k[l] > n[l] - 1) k[l] = n[l] > 0 ? n[l] - 1 : 0;
        got += res[l] * (double)k[l];
    }
    for (int guard = 0; got < need - 1e-6 && guard < 1000000; guard++) {
        int bl = -1;
        double bc = INFINITY;
        for (int l = 0; l < nl; l++) {
            if (sh_name_in_list(o->exclude, S->layers[l].name, S->layers[l].weight)) continue;
            if ((double)(k[l] + 1) > maxs * (double)n[l] + 1) continue;
            /* KL of one more zero weight, per unit of resource */
            double c = (curve_at(&cv[l], (double)(k[l] + 1) / (double)n[l]) - curve_at(&cv[l], (double)k[l] / (double)n[l])) /
                       (res[l] > 0 ? res[l] : 1e-30);
            if (c < bc) bc = c, bl = l;
        }
        if (bl < 0) break;
        int64_t step = (int64_t)ceil((need - got) / res[bl]);
        if (step < 1) step = 1;
        int64_t lim = (int64_t)floor(maxs * (double)n[bl]);
        if (k[bl] + step > lim) step = lim - k[bl] > 0 ? lim - k[bl] : 1;
        k[bl] += step;
        got += res[bl] * (double)step;
    }
    /* apply */
    if (!(cur = sh_graph_clone(g, err))) { rc = err && err->code ? err->code : SH_ENOMEM; goto done; }
    for (int l = 0; l < nl && !rc; l++) {
        const sh_sens_layer *sl = &S->layers[l];
        sh_auto_layer *a = &rep->layers[l];
        snprintf(a->name, sizeof a->name, "%s", sl->name);
        a->params = n[l];
        if (k[l] > z0[l]) {
            sh_graph *p = NULL;
            if ((rc = prune_layer(cur, sl->name[0] ? sl->name : sl->weight, k[l], n[l], o->sens_opts.method, &p, err)))
                break;
            sh_graph_free(cur);
            cur = p;
        }
        a->zeros = zeros_of(cur, sl->weight);
        a->choice = n[l] ? (double)a->zeros / (double)n[l] : 0;
        snprintf(a->label, sizeof a->label, "%.3f", a->choice);
        a->est_kl = curve_at(&cv[l], a->choice);
        a->bytes = sl->bytes;
        rep->est_kl += a->est_kl;
    }
    if (rc) goto done;
    double zs = 0, rem = 0;
    for (int l = 0; l < nl; l++) {
        zs += (double)rep->layers[l].zeros;
        rem += res[l] * (double)(n[l] - rep->layers[l].zeros);
    }
    rep->sparsity = total_w > 0 ? zs / total_w : 0;
    {
        double tm = 0, rm = 0;
        for (int l = 0; l < nl; l++) {
            double perw = (double)S->layers[l].macs / (double)(n[l] ? n[l] : 1);
            tm += (double)S->layers[l].macs;
            rm += perw * (double)(n[l] - rep->layers[l].zeros);
        }
        rep->flops_frac = tm > 0 ? rm / tm : 1;
    }
    (void)rem;
    sh_compare_result r;
    if ((rc = sh_compare_eval(cmp, cur, &r, err))) goto done;
    rep->evaluations++;
    rep->metric = r.metric, rep->drop = r.drop, rep->kl = r.kl;
    rep->uniform_metric = rep->uniform_drop = -1;
    if (o->uniform) {
        /* one sparsity for every (non-excluded) layer meeting the same target */
        double us;
        if (!flops) {
            double ex = 0;
            for (int l = 0; l < nl; l++)
                if (sh_name_in_list(o->exclude, S->layers[l].name, S->layers[l].weight)) ex += (double)n[l];
            us = total_w - ex > 0 ? o->target_sparsity * total_w / (total_w - ex) : 0;
        } else {
            double ex = 0, tm = 0;
            for (int l = 0; l < nl; l++) {
                tm += (double)S->layers[l].macs;
                if (sh_name_in_list(o->exclude, S->layers[l].name, S->layers[l].weight)) ex += (double)S->layers[l].macs;
            }
            us = tm - ex > 0 ? (1 - o->target_flops) * tm / (tm - ex) : 0;
        }
        if (us < maxs) {
            sh_prune_opts po;
            sh_prune_opts_default(&po);
            po.method = o->sens_opts.method;
            po.ratio = us;
            po.exclude = o->exclude;
            char *inc = NULL;
            size_t len = 0, capl = 0;
            for (int l = 0; l < nl; l++)
                if (list_add(&inc, &len, &capl, S->layers[l].name[0] ? S->layers[l].name : S->layers[l].weight))
                    rc = sh_err(err, SH_ENOMEM, "autoprune: out of memory");
            po.include = inc;
            sh_graph *u = NULL;
            if (!rc) rc = sh_prune(g, &po, &u, NULL, err);
            free(inc);
            sh_compare_result ru;
            if (!rc && !(rc = sh_compare_eval(cmp, u, &ru, err))) {
                rep->uniform_metric = ru.metric;
                rep->uniform_drop = ru.drop;
                rep->evaluations++;
            }
            sh_graph_free(u);
            if (rc) goto done;
        }
    }
done:
    if (!rc) {
        rep->task = sh_compare_info(cmp, &rep->base_metric, NULL);
        rep->bytes_before = sh_graph_param_bytes(g);
        rep->bytes_after = sh_graph_param_bytes(cur);
        rep->seconds = sh_now() - t0;
    } else {
        sh_graph_free(cur);
        cur = NULL;
        sh_auto_report_free(rep);
    }
    sh_compare_free(cmp);
    sh_sens_report_free(&own);
    free(sg), free(cv), free(k), free(n), free(z0), free(res), free(s);
    *out = cur;
    return rc;
}

/* ---- latency target: structured channel pruning ------------------------------------ */

typedef struct cgroup {
    int layer;             /* index into the structured report's layers (first member) */
    char name[128];
    double kl;             /* KL with half its channels removed */
    double w;              /* ratio weight */
    double ratio;          /* chosen */
    char members[512];
} cgroup;

static int apply_channels(const sh_graph *g, const cgroup *G, int ng, double r, double maxr, const char *exclude,
                          sh_graph **out, sh_error *err)
{
    *out = NULL;
    sh_graph *cur = sh_graph_clone(g, err);
    if (!cur) return err && err->code ? err->code : SH_ENOMEM;
    for (int i = 0; i < ng; i++) {
        double ratio = r * G[i].w;
        if (ratio > maxr) ratio = maxr;
        if (ratio <= 0) continue;
        sh_prune_opts po;
        sh_prune_opts_default(&po);
        po.ratio = ratio;
        po.include = G[i].name;
        po.exclude = exclude;
        sh_graph *p = NULL;
        int rc = sh_prune_channels(cur, &po, &p, NULL, err);
        if (rc) {
            sh_error_wrap(err, "autoprune: channels of '%s' at ratio %.3f", G[i].name, ratio);
            sh_graph_free(cur);
            return rc;
        }
        sh_graph_free(cur);
        cur = p;
    }
    *out = cur;
    return SH_OK;
}

static int latency(sh_graph *g, const sh_autoprune_opts *o, double *ms, sh_error *err)
{
    sh_eval_opts eo;
    memset(&eo, 0, sizeof eo);
    eo.nthreads = o->sens_opts.nthreads;
    eo.min_runs = o->latency_runs > 0 ? o->latency_runs : 30;
    eo.max_seconds = 1.0;
    eo.warmup = 3;
    eo.speed_batch = 1;
    sh_eval_report er;
    memset(&er, 0, sizeof er);
    int rc = sh_eval_speed(g, o->sens_opts.data, &eo, &er, err);
    *ms = er.latency_ms_b1;
    return rc;
}

static int autoprune_channels(const sh_graph *g, const sh_autoprune_opts *o, const sh_sens_report *S,
                              sh_compare *cmp, sh_graph **out, sh_auto_report *rep, sh_error *err)
{
    (void)S;
    *out = NULL;
    if (!o->sens_opts.data || o->sens_opts.data->kind != 1)
        return sh_err(err, SH_EUNSUPPORTED, "autoprune: a latency target needs an image classifier and image data");
    double maxr = o->max_layer_ratio > 0 ? o->max_layer_ratio : 0.75;
    if (!(maxr < 1)) return sh_err(err, SH_EINVAL, "autoprune: max layer ratio %g must be < 1", maxr);
    sh_prune_opts po;
    sh_prune_opts_default(&po);
    po.ratio = 0.5;
    po.exclude = o->exclude;
    sh_prune_report all;
    sh_graph *p = NULL;
    int rc = sh_prune_channels(g, &po, &p, &all, err);
    sh_graph_free(p);
    p = NULL;
    if (rc) return rc;
    cgroup *G = calloc((size_t)all.n_layers + 1, sizeof *G);
    int ng = 0;
    int *done = calloc((size_t)all.n_layers + 1, sizeof *done);
    sh_graph *cur = NULL;
    if (!G || !done) {
        rc = sh_err(err, SH_ENOMEM, "autoprune: out of memory");
        goto out;
    }
    /* one group per set of layers that lose channels together */
    for (int i = 0; i < all.n_layers && !rc; i++) {
        if (!all.layers[i].pruned || done[i]) continue;
        sh_prune_opts pi = po;
        pi.include = all.layers[i].name;
        sh_prune_report ri;
        if ((rc = sh_prune_channels(g, &pi, &p, &ri, err))) break;
        cgroup *c = &G[ng++];
        c->layer = i;
        snprintf(c->name, sizeof c->name, "%s", all.layers[i].name);
        for (int j = 0; j < ri.n_layers && j < all.n_layers; j++)
            if (ri.layers[j].pruned && ri.layers[j].shape_after[0] != ri.layers[j].shape_before[0]) {
                /* only producers (output channels) make the group */
                for (int m = 0; m < all.n_layers; m++)
                    if (!strcmp(all.layers[m].name, ri.layers[j].name)) done[m] = 1;
                size_t ml = strlen(c->members);
                snprintf(c->members + ml, sizeof c->members - ml, "%s%s", ml ? "+" : "", ri.layers[j].name);
            }
        done[i] = 1;
        sh_prune_report_free(&ri);
        sh_compare_result r;
        if (!rc && !(rc = sh_compare_eval(cmp, p, &r, err))) c->kl = r.kl, rep->evaluations++;
        sh_graph_free(p);
        p = NULL;
    }
    if (rc) goto out;
    if (ng == 0) {
        rc = sh_err(err, SH_EINVAL, "autoprune: no layer of this model can lose channels (see shrink prune "
                                    "--structured channels)");
        goto out;
    }
    /* weights: less on sensitive groups, w = sqrt(median KL / KL) in [0.25, 2] */
    {
        double *kls = malloc(sizeof(double) * (size_t)ng);
        if (!kls) { rc = sh_err(err, SH_ENOMEM, "autoprune: out of memory"); goto out; }
        for (int i = 0; i < ng; i++) kls[i] = G[i].kl;
        for (int a = 1; a < ng; a++)
            for (int b = a; b > 0 && kls[b] < kls[b - 1]; b--) {
                double t = kls[b];
                kls[b] = kls[b - 1], kls[b - 1] = t;
            }
        double med = kls[ng / 2];
        free(kls);
        for (int i = 0; i < ng; i++) {
            double w = G[i].kl > 0 ? sqrt(med / G[i].kl) : 2;
            G[i].w = w < 0.25 ? 0.25 : w > 2 ? 2 : w;
        }
    }
    double wmin = G[0].w;
    for (int i = 1; i < ng; i++)
        if (G[i].w < wmin) wmin = G[i].w;
    double rmax = maxr / wmin;
    sh_graph *g0 = sh_graph_clone(g, err);
    if (!g0) { rc = err && err->code ? err->code : SH_ENOMEM; goto out; }
    double l0 = 0, lmax = 0;
    rc = latency(g0, o, &l0, err);
    sh_graph_free(g0);
    if (rc) goto out;
    rep->latency_ms_before = l0;
    double rbest = 0, lbest = l0;
    if (l0 > o->target_latency_ms) {
        if ((rc = apply_channels(g, G, ng, rmax, maxr, o->exclude, &cur, err))) goto out;
        if ((rc = latency(cur, o, &lmax, err))) goto out;
        if (lmax > o->target_latency_ms) {
            rc = sh_err(err, SH_EINVAL, "autoprune: target latency %.4g ms is unreachable: %.4g ms dense, %.4g ms "
                        "with every channel group at its largest ratio (<= %g)", o->target_latency_ms, l0, lmax, maxr);
            goto out;
        }
        rbest = rmax, lbest = lmax;
        double lo = 0, hi = rmax;
        for (int it = 0; it < 7; it++) {
            double mid = 0.5 * (lo + hi), lm = 0;
            sh_graph *m = NULL;
            if ((rc = apply_channels(g, G, ng, mid, maxr, o->exclude, &m, err))) goto out;
            if ((rc = latency(m, o, &lm, err))) {
                sh_graph_free(m);
                goto out;
            }
            if (lm <= o->target_latency_ms) {
                hi = mid, rbest = mid, lbest = lm;
                sh_graph_free(cur);
                cur = m;
            } else {
                lo = mid;
                sh_graph_free(m);
            }
        }
    } else {
        if (!(cur = sh_graph_clone(g, err))) { rc = err && err->code ? err->code : SH_ENOMEM; goto out; }
    }
    rep->latency_ms = lbest;
    sh_compare_result r;
    if ((rc = sh_compare_eval(cmp, cur, &r, err))) goto out;
    rep->evaluations++;
    rep->metric = r.metric, rep->drop = r.drop, rep->kl = r.kl;
    rep->uniform_metric = rep->uniform_drop = -1;
    rep->layers = calloc((size_t)ng + 1, sizeof *rep->layers);
    if (!rep->layers) { rc = sh_err(err, SH_ENOMEM, "autoprune: out of memory"); goto out; }
    rep->n_layers = ng;
    for (int i = 0; i < ng; i++) {
        sh_auto_layer *a = &rep->layers[i];
        double ratio = rbest * G[i].w;
        if (ratio > maxr) ratio = maxr;
        snprintf(a->name, sizeof a->name, "%s", G[i].name);
        a->choice = ratio;
        snprintf(a->label, sizeof a->label, "%.3f", ratio);
        a->est_kl = G[i].kl;
        a->params = all.layers[G[i].layer].params_before;
        snprintf(a->note, sizeof a->note, "channels removed from %.100s (KL %.4g at half)", G[i].members, G[i].kl);
        int v = -1;
        for (int k = 0; k < cur->n_nodes && v < 0; k++)
            if (cur->nodes[k].name && !strcmp(cur->nodes[k].name, G[i].name) && cur->nodes[k].n_in > 1) v = cur->nodes[k].in[1];
        if (v >= 0 && cur->values[v].init) a->bytes = (int64_t)cur->values[v].init->nbytes;
    }
    rep->sparsity = 0;
    rep->flops_frac = -1;
    rep->est_kl = -1; /* no per-layer estimate for the chosen ratios */
out:
    sh_prune_report_free(&all);
    free(G), free(done);
    if (rc) {
        sh_graph_free(cur);
        cur = NULL;
    }
    *out = cur;
    return rc;
}
