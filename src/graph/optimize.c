/* optimize.c - inference graph rewrites: Identity / inference Dropout
 * removal, BatchNormalization folded into the Conv or Gemm before it, Relu
 * fused into the Conv or Gemm before it (attribute activation="Relu", a
 * shrink extension).  The runtime applies them to a copy of the graph for
 * inference programs (sh_graph_optimize_copy); the public functions rewrite
 * a graph in place.
 *
 * Folding BN (y = s * (x - mean) / sqrt(var + eps) + b) into a producer
 * with weight W and bias c: a = s / sqrt(var + eps) per output channel,
 * W' = a * W (rows of Conv weights; rows / columns of Gemm's B), c' =
 * a * (c - mean) + b.  Done in double, rounded once to f32.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shrink.h"
#include "optimize.h"
#include "graph_internal.h"
#include "../ops/ops.h"

/* ---- fold records (kept by the runtime to re-derive weights) --------- */

typedef struct fold_rec {
    int gemm;            /* 0 Conv, 1 Gemm */
    int sw, sb;          /* source weight, bias / C (-1: none) */
    int bn[4];           /* source BN scale, bias, mean, var */
    float eps;
    int transB;          /* Gemm */
    float alpha, beta;   /* Gemm (before folding) */
    int dw, db;          /* destination weight and bias values */
    float *snap;         /* fingerprint of the source data */
    int nsnap;
} fold_rec;

struct sh_opt_state {
    int n, cap;
    fold_rec *r;
};

void sh_opt_state_free(sh_opt_state *st)
{
    if (!st) return;
    for (int i = 0; i < st->n; i++) free(st->r[i].snap);
    free(st->r);
    free(st);
}

/* Output channels of the folded producer. */
static int64_t rec_channels(const fold_rec *r, const sh_tensor *W)
{
    if (!r->gemm) return W->shape[0];
    return r->transB ? W->shape[0] : W->shape[1];
}

/* W' and c' from the source tensors into dw / db (dw may alias W only when
 * it is a fresh tensor: we read W fully per element before writing). */
static void fold_compute(const fold_rec *r, const sh_graph *src, float *dw, float *db)
{
    const sh_tensor *W = src->values[r->sw].init;
    const sh_tensor *B = r->sb >= 0 ? src->values[r->sb].init : NULL;
    const float *s = src->values[r->bn[0]].init->data, *b = src->values[r->bn[1]].init->data;
    const float *mu = src->values[r->bn[2]].init->data, *var = src->values[r->bn[3]].init->data;
    const float *w = W->data;
    int64_t C = rec_channels(r, W), n = sh_tensor_numel(W);
    for (int64_t c = 0; c < C; c++) {
        double a = (double)s[c] / sqrt((double)var[c] + (double)r->eps);
        double c0 = 0.0;
        if (B) {
            int64_t nb = sh_tensor_numel(B);
            c0 = ((const float *)B->data)[nb == 1 ? 0 : c];
            if (r->gemm) c0 *= r->beta;
        }
        db[c] = (float)(a * (c0 - mu[c]) + b[c]);
        double scale = r->gemm ? a * r->alpha : a;
        if (!r->gemm) {
            int64_t per = n / C;
            for (int64_t i = 0; i < per; i++) dw[c * per + i] = (float)(scale * w[c * per + i]);
        } else if (r->transB) {
            int64_t K = W->shape[1];
            for (int64_t i = 0; i < K; i++) dw[c * K + i] = (float)(scale * w[c * K + i]);
        } else {
            int64_t K = W->shape[0];
            for (int64_t i = 0; i < K; i++) dw[i * C + c] = (float)(scale * w[i * C + c]);
        }
    }
}

/* Fingerprint: every BN parameter, the whole bias, and up to 64 weight
 * elements spread over the weight. */
#define SNAP_W 64
static int snap_size(const fold_rec *r, const sh_graph *src)
{
    int64_t C = sh_tensor_numel(src->values[r->bn[0]].init);
    int64_t nb = r->sb >= 0 ? sh_tensor_numel(src->values[r->sb].init) : 0;
    int64_t nw = sh_tensor_numel(src->values[r->sw].init);
    return (int)(4 * C + nb + (nw < SNAP_W ? nw : SNAP_W));
}

static void snap_fill(const fold_rec *r, const sh_graph *src, float *o)
{
    int k = 0;
    for (int j = 0; j < 4; j++) {
        const sh_tensor *t = src->values[r->bn[j]].init;
        memcpy(o + k, t->data, sizeof(float) * (size_t)sh_tensor_numel(t));
        k += (int)sh_tensor_numel(t);
    }
    if (r->sb >= 0) {
        const sh_tensor *t = src->values[r->sb].init;
        memcpy(o + k, t->data, sizeof(float) * (size_t)sh_tensor_numel(t));
        k += (int)sh_tensor_numel(t);
    }
    const sh_tensor *W = src->values[r->sw].init;
    int64_t nw = sh_tensor_numel(W), m = nw < SNAP_W ? nw : SNAP_W;
    const float *w = W->data;
    for (int64_t i = 0; i < m; i++) o[k++] = w[i * nw / m + (i * 7919) % (nw / m)];
}

int sh_opt_state_sync(sh_opt_state *st, const sh_graph *src, sh_graph *dst, int force)
{
    if (!st) return 0;
    int any = 0;
    float tmp[4096];
    for (int i = 0; i < st->n; i++) {
        fold_rec *r = &st->r[i];
        int changed = force;
        if (!changed) {
            float *cur = r->nsnap <= 4096 ? tmp : malloc(sizeof(float) * (size_t)r->nsnap);
            if (!cur) changed = 1;
            else {
                snap_fill(r, src, cur);
                changed = memcmp(cur, r->snap, sizeof(float) * (size_t)r->nsnap) != 0;
                if (changed) memcpy(r->snap, cur, sizeof(float) * (size_t)r->nsnap);
                if (cur != tmp) free(cur);
            }
        } else snap_fill(r, src, r->snap);
        if (!changed) continue;
        fold_compute(r, src, dst->values[r->dw].init->data, dst->values[r->db].init->data);
        any = 1;
    }
    return any;
}

/* ---- graph helpers ----------------------------------------------------- */

typedef struct rw {
    sh_graph *g;          /* graph being rewritten */
    const sh_graph *src;  /* where folded weights are read (g itself in place) */
    int inplace;
    unsigned char *dead;  /* per node */
    sh_opt_state *st;     /* records (copy mode) */
    sh_error *err;
    int changes;
} rw;

static int is_graph_output(const sh_graph *g, int v)
{
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == v) return 1;
    return 0;
}

static int is_graph_input(const sh_graph *g, int v)
{
    for (int i = 0; i < g->n_inputs; i++)
        if (g->inputs[i] == v) return 1;
    return 0;
}

/* References to v: node input slots of live nodes plus graph outputs. */
static int uses(const rw *w, int v)
{
    const sh_graph *g = w->g;
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        if (w->dead[i]) continue;
        for (int j = 0; j < g->nodes[i].n_in; j++) n += g->nodes[i].in[j] == v;
    }
    for (int i = 0; i < g->n_outputs; i++) n += g->outputs[i] == v;
    return n;
}

static int producer(const rw *w, int v)
{
    const sh_graph *g = w->g;
    for (int i = 0; i < g->n_nodes; i++) {
        if (w->dead[i]) continue;
        for (int j = 0; j < g->nodes[i].n_out; j++)
            if (g->nodes[i].out[j] == v) return i;
    }
    return -1;
}

static void replace_uses(rw *w, int from, int to)
{
    sh_graph *g = w->g;
    for (int i = 0; i < g->n_nodes; i++) {
        if (w->dead[i]) continue;
        for (int j = 0; j < g->nodes[i].n_in; j++)
            if (g->nodes[i].in[j] == from) g->nodes[i].in[j] = to;
    }
}

static const sh_tensor *f32_init(const sh_graph *g, int v)
{
    if (v < 0 || v >= g->n_values) return NULL;
    const sh_tensor *t = g->values[v].init;
    return t && t->fmt == SH_F32 && t->data ? t : NULL;
}

/* Rank of value v if it can be told without shapes: known ndim, a graph
 * input's declared rank, Flatten's 2, Gemm's (rank of A). -1 if unknown. */
static int rank_of(const rw *w, int v, int depth)
{
    const sh_graph *g = w->g;
    if (v < 0 || depth > 32) return -1;
    if (g->values[v].init) return g->values[v].init->ndim;
    if (g->values[v].ndim >= 0 && (is_graph_input(g, v) || g->values[v].producer >= 0)) return g->values[v].ndim;
    int p = producer(w, v);
    if (p < 0) return -1;
    const sh_node *n = &g->nodes[p];
    if (!strcmp(n->op, "Flatten")) return 2;
    if (!strcmp(n->op, "Gemm")) return rank_of(w, n->in[0], depth + 1);
    if (!strcmp(n->op, "Relu") || !strcmp(n->op, "Identity") || !strcmp(n->op, "BatchNormalization"))
        return rank_of(w, n->in[0], depth + 1);
    return -1;
}

/* Value v of the graph being rewritten holds the data of the same value of
 * the source graph (always true in place). */
static int same_src(const rw *w, int v)
{
    if (w->inplace) return 1;
    if (v < 0 || v >= w->src->n_values || !w->src->values[v].init || !w->g->values[v].init) return 0;
    return w->src->values[v].init->data == w->g->values[v].init->data;
}

/* A fresh value name based on base. */
static int new_init(rw *w, const char *base, sh_tensor *t)
{
    char name[512];
    snprintf(name, sizeof name, "%s", base);
    for (int k = 2; sh_graph_find(w->g, name) >= 0; k++) snprintf(name, sizeof name, "%s_%d", base, k);
    return sh_graph_add_init(w->g, name, t, w->err);
}

/* Install tensor t as the data of value v (replacing its initializer). */
static void set_init(sh_graph *g, int v, sh_tensor *t)
{
    sh_tensor_free(g->values[v].init);
    g->values[v].init = t;
    g->values[v].fmt = t->fmt;
    g->values[v].ndim = t->ndim;
    memcpy(g->values[v].shape, t->shape, sizeof g->values[v].shape);
}

static int set_node_input(sh_graph *g, int k, int slot, int v)
{
    sh_node *n = &g->nodes[k];
    if (slot >= n->n_in) {
        int *in = realloc(n->in, sizeof(int) * (size_t)(slot + 1));
        if (!in) return SH_ENOMEM;
        n->in = in;
        for (int j = n->n_in; j < slot; j++) in[j] = -1;
        n->n_in = slot + 1;
    }
    n->in[slot] = v;
    return SH_OK;
}

/* ---- rewrites ---------------------------------------------------------- */

/* Identity, and Dropout that is a no-op at inference: y = x. */
static int pass_identity(rw *w)
{
    sh_graph *g = w->g;
    for (int i = 0; i < g->n_nodes; i++) {
        if (w->dead[i]) continue;
        sh_node *n = &g->nodes[i];
        int drop = !strcmp(n->op, "Dropout");
        if (strcmp(n->op, "Identity") && !drop) continue;
        if (n->n_in < 1 || n->n_out < 1 || n->in[0] < 0 || n->out[0] < 0) continue;
        int x = n->in[0], y = n->out[0];
        if (g->values[x].init || x == y) continue; /* keep constants as they are */
        if (drop) {
            if (sh_attr_int(n, "training_mode", 0)) continue;
            if (n->n_in > 2 && n->in[2] >= 0) {
                const sh_tensor *t = g->values[n->in[2]].init;
                if (!t || !t->data || sh_tensor_numel(t) != 1 || sh_tensor_get_f(t, 0) != 0.0f) continue;
            }
            if (n->n_out > 1 && n->out[1] >= 0 && uses(w, n->out[1])) continue; /* mask used */
        }
        if (!is_graph_output(g, y)) {
            w->dead[i] = 1;
            replace_uses(w, y, x);
        } else {
            int p = producer(w, x);
            if (p < 0 || is_graph_output(g, x) || is_graph_input(g, x)) continue;
            w->dead[i] = 1;
            replace_uses(w, x, y);
            for (int j = 0; j < g->nodes[p].n_out; j++)
                if (g->nodes[p].out[j] == x) g->nodes[p].out[j] = y;
        }
        w->changes++;
    }
    return SH_OK;
}

static int pass_fold_bn(rw *w)
{
    sh_graph *g = w->g;
    for (int i = 0; i < g->n_nodes; i++) {
        if (w->dead[i]) continue;
        sh_node *bn = &g->nodes[i];
        if (strcmp(bn->op, "BatchNormalization") || bn->n_in != 5 || bn->in[0] < 0) continue;
        if (sh_attr_int(bn, "training_mode", 0)) continue;
        int extra = 0;
        for (int j = 1; j < bn->n_out; j++) extra |= bn->out[j] >= 0;
        if (extra) continue;
        int x = bn->in[0], y = bn->out[0];
        int p = producer(w, x);
        if (p < 0 || uses(w, x) != 1) continue;
        sh_node *pn = &g->nodes[p];
        int gemm = !strcmp(pn->op, "Gemm");
        if ((strcmp(pn->op, "Conv") && !gemm) || pn->n_out != 1) continue;
        if (*sh_attr_string(pn, "activation", "")) continue;
        const sh_tensor *W = f32_init(g, pn->in[1]);
        int sb = pn->n_in > 2 ? pn->in[2] : -1;
        const sh_tensor *B = sb >= 0 ? f32_init(g, sb) : NULL;
        if (!W || (sb >= 0 && !B)) continue;
        const sh_tensor *P[4];
        int ok = 1;
        for (int j = 0; j < 4; j++) ok &= (P[j] = f32_init(g, bn->in[1 + j])) != NULL;
        if (!ok) continue;
        fold_rec r;
        memset(&r, 0, sizeof r);
        r.gemm = gemm;
        r.sw = pn->in[1];
        r.sb = sb;
        for (int j = 0; j < 4; j++) r.bn[j] = bn->in[1 + j];
        r.eps = sh_attr_float(bn, "epsilon", 1e-5f);
        int64_t C;
        if (!gemm) {
            if (W->ndim < 3) continue;
            C = W->shape[0];
        } else {
            if (sh_attr_int(pn, "transA", 0) || W->ndim != 2) continue;
            if (rank_of(w, pn->in[0], 0) != 2) continue; /* BN's channel axis must be Gemm's N */
            r.transB = (int)sh_attr_int(pn, "transB", 0);
            r.alpha = sh_attr_float(pn, "alpha", 1.0f);
            r.beta = sh_attr_float(pn, "beta", 1.0f);
            C = r.transB ? W->shape[0] : W->shape[1];
            if (B && r.beta == 0.0f) r.sb = sb = -1, B = NULL;
            if (B && sh_tensor_numel(B) != C && sh_tensor_numel(B) != 1) continue;
            if (B && B->ndim == 2 && B->shape[0] != 1) continue; /* C must broadcast along M */
            if (B && B->ndim > 2) continue;
        }
        if (C < 1) continue;
        /* a copy folds only weights that still hold the source's data */
        ok &= same_src(w, r.sw) && (r.sb < 0 || same_src(w, r.sb));
        for (int j = 0; j < 4; j++) ok &= same_src(w, r.bn[j]);
        for (int j = 0; j < 4; j++) ok &= sh_tensor_numel(P[j]) == C;
        if (B && !gemm) ok &= sh_tensor_numel(B) == C;
        if (!ok) continue;
        /* new tensors */
        sh_tensor *nw = sh_tensor_new(SH_F32, W->ndim, W->shape, w->err);
        sh_tensor *nb = sh_tensor_new(SH_F32, 1, &C, w->err);
        if (!nw || !nb) {
            sh_tensor_free(nw), sh_tensor_free(nb);
            return w->err ? w->err->code : SH_ENOMEM;
        }
        fold_compute(&r, w->src, nw->data, nb->data);
        /* weight: replace in place when only this node reads it */
        int wv = pn->in[1];
        if (uses(w, wv) == 1 && !is_graph_input(g, wv)) set_init(g, wv, nw), r.dw = wv;
        else {
            char base[300];
            snprintf(base, sizeof base, "%s.bnfold", g->values[wv].name);
            int v = new_init(w, base, nw);
            if (v < 0) {
                sh_tensor_free(nb);
                return v;
            }
            g->nodes[p].in[1] = v, r.dw = v;
        }
        pn = &g->nodes[p];
        if (sb >= 0 && uses(w, sb) == 1 && !is_graph_input(g, sb)) set_init(g, sb, nb), r.db = sb;
        else {
            char base[300];
            snprintf(base, sizeof base, "%s.bias", pn->name);
            int v = new_init(w, base, nb);
            if (v < 0) return v;
            if (set_node_input(g, p, 2, v)) return sh_err(w->err, SH_ENOMEM, "out of memory");
            r.db = v;
        }
        pn = &g->nodes[p];
        if (gemm) {
            sh_node_set_float(g, p, "alpha", 1.0f);
            sh_node_set_float(g, p, "beta", 1.0f);
        }
        /* the producer now writes BN's output */
        pn->out[0] = y;
        w->dead[i] = 1;
        w->changes++;
        if (w->st) {
            sh_opt_state *st = w->st;
            if (st->n == st->cap) {
                int cap = st->cap ? 2 * st->cap : 8;
                fold_rec *nr = realloc(st->r, sizeof(fold_rec) * (size_t)cap);
                if (!nr) return sh_err(w->err, SH_ENOMEM, "out of memory");
                st->r = nr, st->cap = cap;
            }
            r.nsnap = snap_size(&r, w->src);
            r.snap = malloc(sizeof(float) * (size_t)(r.nsnap + 1));
            if (!r.snap) return sh_err(w->err, SH_ENOMEM, "out of memory");
            snap_fill(&r, w->src, r.snap);
            st->r[st->n++] = r;
        }
    }
    return SH_OK;
}

static int pass_fuse_act(rw *w)
{
    sh_graph *g = w->g;
    for (int i = 0; i < g->n_nodes; i++) {
        if (w->dead[i]) continue;
        sh_node *n = &g->nodes[i];
        if (strcmp(n->op, "Relu") || n->n_in != 1 || n->n_out != 1 || n->in[0] < 0 || n->out[0] < 0) continue;
        int x = n->in[0], y = n->out[0];
        int p = producer(w, x);
        if (p < 0 || uses(w, x) != 1) continue;
        sh_node *pn = &g->nodes[p];
        if ((strcmp(pn->op, "Conv") && strcmp(pn->op, "Gemm")) || pn->n_out != 1) continue;
        if (*sh_attr_string(pn, "activation", "")) continue;
        if (sh_node_set_string(g, p, "activation", "Relu")) return sh_err(w->err, SH_ENOMEM, "out of memory");
        g->nodes[p].out[0] = y;
        w->dead[i] = 1;
        w->changes++;
    }
    return SH_OK;
}

/* Drop dead nodes, re-sort, fix producers. */
static int compact(rw *w)
{
    sh_graph *g = w->g;
    int k = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        if (w->dead[i]) {
            sh_node_free_fields(&g->nodes[i]);
            continue;
        }
        if (k != i) g->nodes[k] = g->nodes[i];
        k++;
    }
    g->n_nodes = k;
    memset(w->dead, 0, (size_t)g->n_nodes + 1);
    for (int v = 0; v < g->n_values; v++) g->values[v].producer = -1;
    for (int i = 0; i < g->n_nodes; i++)
        for (int j = 0; j < g->nodes[i].n_out; j++)
            if (g->nodes[i].out[j] >= 0) g->values[g->nodes[i].out[j]].producer = i;
    return SH_OK;
}

enum { PASS_IDENTITY = 1, PASS_BN = 2, PASS_ACT = 4, PASS_ALL = 7 };

static int run_passes(sh_graph *g, const sh_graph *src, sh_opt_state *st, int passes, int *changes, sh_error *err)
{
    rw w = {g, src ? src : g, src == NULL, NULL, st, err, 0};
    w.dead = calloc((size_t)g->n_nodes + 1, 1);
    if (!w.dead) return sh_err(err, SH_ENOMEM, "out of memory");
    int rc = SH_OK;
    if (!rc && (passes & PASS_IDENTITY)) rc = pass_identity(&w);
    if (!rc && (passes & PASS_BN)) rc = pass_fold_bn(&w);
    if (!rc && (passes & PASS_ACT)) rc = pass_fuse_act(&w);
    if (!rc) rc = compact(&w);
    free(w.dead);
    if (!rc && w.changes) rc = sh_graph_check(g, err);
    if (changes) *changes = w.changes;
    return rc;
}

static int graph_passes(sh_graph *g, int passes, sh_error *err)
{
    int rc = sh_graph_check(g, err);
    if (rc) return rc;
    return run_passes(g, NULL, NULL, passes, NULL, err);
}

int sh_graph_fold_batchnorm(sh_graph *g, sh_error *err) { return graph_passes(g, PASS_BN, err); }

int sh_graph_fuse_activations(sh_graph *g, sh_error *err) { return graph_passes(g, PASS_ACT, err); }

int sh_graph_remove_identities(sh_graph *g, sh_error *err) { return graph_passes(g, PASS_IDENTITY, err); }

int sh_graph_optimize(sh_graph *g, int level, sh_error *err)
{
    if (level <= 0) return SH_OK;
    return graph_passes(g, PASS_ALL, err);
}

/* ---- copies for the runtime ---------------------------------------------- */

/* Is there anything to rewrite?  (Avoids copying graphs that stay as they
 * are, e.g. transformers.) */
static int worth_copying(const sh_graph *g)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const char *op = g->nodes[i].op;
        if (!strcmp(op, "Identity") || !strcmp(op, "Dropout") || !strcmp(op, "BatchNormalization") ||
            !strcmp(op, "Relu"))
            return 1;
    }
    return 0;
}

int sh_graph_optimize_copy(const sh_graph *src, int level, sh_graph **out, sh_opt_state **st, sh_error *err)
{
    *out = NULL;
    *st = NULL;
    if (level <= 0 || !worth_copying(src)) return SH_OK;
    sh_graph *c = sh_graph_copy(src, 1, err);
    if (!c) return err ? err->code : SH_ENOMEM;
    sh_opt_state *s = calloc(1, sizeof *s);
    if (!s) {
        sh_graph_free(c);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    int changes = 0;
    int rc = run_passes(c, src, s, PASS_ALL, &changes, err);
    if (rc || !changes) {
        sh_graph_free(c);
        sh_opt_state_free(s);
        return rc;
    }
    *out = c;
    *st = s;
    return SH_OK;
}
