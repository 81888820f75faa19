/* prune_llm.c - structured pruning of transformers (Llama graphs of
 * src/io/llama2c.c) with physical removal: attention heads, FFN neurons,
 * whole layers.  See sh_prune_llm in shrink.h.
 *
 * Heads: query head h of layer l owns rows [h*hs, (h+1)*hs) of wq and the
 * same columns of wo; KV head k owns those rows of wk / wv and serves query
 * heads [k*g, (k+1)*g) (g = n_heads / n_kv_heads).  Without GQA (g = 1) a
 * head's q, k, v rows and wo columns go together; with GQA the same number
 * of query heads goes from every group so that the Attention op's mapping
 * (query head h -> KV head h / g') still holds, and KV heads stay.  Removing
 * a head this way computes exactly the function of the original model with
 * that head's columns of wo set to zero.
 * FFN neurons: sh_prune_channels (structured.c) on the w1 / w3 layers, whose
 * channel group meets at SiluMul and ends in w2's columns.
 * Layers: sh_prune_blocks (structured.c) removes both residual branches of
 * the chosen layers; the later layers' names are renumbered (layers.N.*) so
 * that llama2.c export still finds them in order.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"

static int find_node(const sh_graph *g, const char *name)
{
    for (int i = 0; i < g->n_nodes; i++)
        if (!strcmp(g->nodes[i].name, name)) return i;
    return -1;
}

static sh_tensor *winit(const sh_graph *g, const char *name)
{
    int v = sh_graph_find(g, name);
    return v >= 0 && g->values[v].init && g->values[v].init->fmt == SH_F32 ? g->values[v].init : NULL;
}

/* layer selection by "layers.N" (include / exclude) */
static int layer_selected(const sh_prune_opts *o, int l)
{
    char nm[32];
    snprintf(nm, sizeof nm, "layers.%d", l);
    if (o->include && *o->include && !sh_name_in_list(o->include, nm, NULL)) return 0;
    return !sh_name_in_list(o->exclude, nm, NULL);
}

/* keep[i] of n blocks of `unit` along axis (0 rows, 1 columns) of a 2-D weight */
static int keep_blocks(sh_graph *g, const char *name, int axis, int64_t unit, const unsigned char *keep, int64_t n,
                       sh_error *err)
{
    int v = sh_graph_find(g, name);
    sh_tensor *t = v >= 0 ? g->values[v].init : NULL;
    if (!t || t->fmt != SH_F32 || t->ndim != 2 || t->shape[axis] != n * unit) {
        char b[96] = "?";
        if (t) sh_shape_str(t->ndim, t->shape, b, sizeof b);
        return sh_err(err, SH_EUNSUPPORTED, "head pruning: weight '%s' %s is not an f32 matrix with %lld x %lld %s", name,
                      b, (long long)n, (long long)unit, axis ? "columns" : "rows");
    }
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) kept += keep[i] != 0;
    int64_t shape[2] = {t->shape[0], t->shape[1]};
    shape[axis] = kept * unit;
    sh_tensor *nt = sh_tensor_new(SH_F32, 2, shape, err);
    if (!nt) return err && err->code ? err->code : SH_ENOMEM;
    const float *s = t->data;
    float *d = nt->data;
    if (axis == 0) {
        int64_t o = 0;
        for (int64_t i = 0; i < n; i++)
            if (keep[i]) {
                memcpy(d + o * t->shape[1], s + i * unit * t->shape[1], sizeof(float) * (size_t)(unit * t->shape[1]));
                o += unit;
            }
    } else {
        for (int64_t r = 0; r < t->shape[0]; r++) {
            int64_t o = 0;
            for (int64_t i = 0; i < n; i++)
                if (keep[i]) {
                    memcpy(d + r * shape[1] + o, s + r * t->shape[1] + i * unit, sizeof(float) * (size_t)unit);
                    o += unit;
                }
        }
    }
    sh_tensor_free(t);
    g->values[v].init = nt;
    g->values[v].ndim = 2;
    memcpy(g->values[v].shape, nt->shape, sizeof g->values[v].shape);
    return SH_OK;
}

/* ---- heads ---------------------------------------------------------------- */

static int prune_heads(sh_graph *g, const sh_llama_config *c, const sh_prune_opts *o, sh_prune_report *r,
                       sh_error *err)
{
    int rc = SH_OK, calib = o->calib && (o->method == SH_PRUNE_WANDA || o->method == SH_PRUNE_TAYLOR);
    sh_layer *L = NULL, *WO = NULL;
    int nl = 0;
    sh_layer_stats *st = NULL;
    double *score = NULL;
    unsigned char *keepq = NULL, *keepk = NULL;
    if ((rc = sh_prunable_layers(g, &L, &nl, err))) return rc;
    WO = calloc((size_t)c->n_layers + 1, sizeof *WO);
    st = calloc((size_t)c->n_layers + 1, sizeof *st);
    if (!WO || !st) {
        rc = sh_err(err, SH_ENOMEM, "out of memory");
        goto out;
    }
    for (int l = 0; l < c->n_layers; l++) {
        char nm[96];
        snprintf(nm, sizeof nm, "layers.%d.attention.wo", l);
        int found = 0;
        for (int i = 0; i < nl && !found; i++)
            if (!strcmp(L[i].name, nm)) WO[l] = L[i], found = 1;
        if (!found) {
            rc = sh_err(err, SH_EUNSUPPORTED, "head pruning: no Gemm '%s' with an f32 weight", nm);
            goto out;
        }
    }
    if (calib) {
        sh_calib_cfg cc = {.calib = o->calib,
                           .samples = (o->calib_batches > 0 ? o->calib_batches : 4) * (o->batch > 0 ? o->batch : 32),
                           .batch = 8,
                           .seq_len = o->seq_len,
                           .nthreads = o->nthreads};
        if ((rc = sh_calib_stats(g, WO, c->n_layers, &cc, st, err))) goto out;
    }
    for (int l = 0; l < c->n_layers && !rc; l++) {
        if (!layer_selected(o, l)) continue;
        char an[96], wq[96], wk[96], wv[96], wo[96];
        snprintf(an, sizeof an, "layers.%d.attention.attn", l);
        snprintf(wq, sizeof wq, "layers.%d.attention.wq.weight", l);
        snprintf(wk, sizeof wk, "layers.%d.attention.wk.weight", l);
        snprintf(wv, sizeof wv, "layers.%d.attention.wv.weight", l);
        snprintf(wo, sizeof wo, "layers.%d.attention.wo.weight", l);
        int k = find_node(g, an);
        sh_tensor *tq = winit(g, wq), *to = winit(g, wo);
        if (k < 0 || strcmp(g->nodes[k].op, "Attention") || !tq || !to || tq->ndim != 2 || to->ndim != 2) {
            rc = sh_err(err, SH_EUNSUPPORTED, "head pruning: layer %d has no Attention node '%s' with f32 wq / wo", l, an);
            break;
        }
        int64_t H = sh_attr_int(&g->nodes[k], "n_heads", 0), KV = sh_attr_int(&g->nodes[k], "n_kv_heads", H);
        if (H <= 0 || KV <= 0 || H % KV || tq->shape[0] % H) {
            rc = sh_err(err, SH_EUNSUPPORTED, "head pruning: '%s' has n_heads %lld, n_kv_heads %lld for wq of %lld rows",
                        an, (long long)H, (long long)KV, (long long)tq->shape[0]);
            break;
        }
        int64_t hs = tq->shape[0] / H, grp = H / KV, dim = tq->shape[1];
        int64_t kq = sh_prune_count(o->ratio, KV == H ? H : grp);
        if (kq == 0) continue;
        if (kq >= (KV == H ? H : grp)) {
            rc = KV == H ? sh_err(err, SH_EINVAL, "head pruning: ratio %g would remove all %lld heads of layer %d",
                                  o->ratio, (long long)H, l)
                         : sh_err(err, SH_EINVAL,
                                  "head pruning: ratio %g would remove all %lld query heads of each KV group of layer "
                                  "%d (n_heads %lld, n_kv_heads %lld)",
                                  o->ratio, (long long)grp, l, (long long)H, (long long)KV);
            break;
        }
        score = realloc(score, sizeof(double) * (size_t)H);
        keepq = realloc(keepq, (size_t)H);
        keepk = realloc(keepk, (size_t)KV);
        if (!score || !keepq || !keepk) {
            rc = sh_err(err, SH_ENOMEM, "out of memory");
            break;
        }
        const float *q = tq->data, *w = to->data;
        int64_t od = to->shape[0], oc = to->shape[1];
        for (int64_t h = 0; h < H; h++) {
            double acc = 0;
            if (calib) {
                /* Wanda-style: sum_j ||wo[:, j]||_2 * ||x_j||_2 over the head's columns */
                for (int64_t j = h * hs; j < (h + 1) * hs; j++) {
                    double cn = 0;
                    for (int64_t i = 0; i < od; i++) cn += (double)w[i * oc + j] * w[i * oc + j];
                    acc += sqrt(cn) * st[l].l2[j];
                }
            } else {
                for (int64_t i = h * hs; i < (h + 1) * hs; i++)
                    for (int64_t j = 0; j < dim; j++) acc += o->method == SH_PRUNE_L2 ? (double)q[i * dim + j] * q[i * dim + j] : fabs(q[i * dim + j]);
                for (int64_t i = 0; i < od; i++)
                    for (int64_t j = h * hs; j < (h + 1) * hs; j++)
                        acc += o->method == SH_PRUNE_L2 ? (double)w[i * oc + j] * w[i * oc + j] : fabs(w[i * oc + j]);
                if (o->method == SH_PRUNE_L2) acc = sqrt(acc);
            }
            score[h] = acc;
        }
        /* lowest kq per group (all heads one group without GQA); ties: lower index goes */
        memset(keepq, 1, (size_t)H);
        memset(keepk, 1, (size_t)KV);
        int64_t gsz = KV == H ? H : grp;
        for (int64_t g0 = 0; g0 < H; g0 += gsz)
            for (int64_t t = 0; t < kq; t++) {
                int64_t best = -1;
                for (int64_t h = g0; h < g0 + gsz; h++)
                    if (keepq[h] && (best < 0 || score[h] < score[best])) best = h;
                keepq[best] = 0;
            }
        if (KV == H) memcpy(keepk, keepq, (size_t)H);
        if ((rc = keep_blocks(g, wq, 0, hs, keepq, H, err)) || (rc = keep_blocks(g, wo, 1, hs, keepq, H, err))) break;
        if (KV == H && ((rc = keep_blocks(g, wk, 0, hs, keepk, KV, err)) || (rc = keep_blocks(g, wv, 0, hs, keepk, KV, err))))
            break;
        sh_node_set_int(g, k, "n_heads", H - (KV == H ? kq : kq * KV));
        sh_node_set_int(g, k, "n_kv_heads", KV == H ? H - kq : KV);
        if (r)
            for (int i = 0; i < r->n_layers; i++)
                if (!strncmp(r->layers[i].name, an, strlen(an) - 4) && strstr(r->layers[i].name, ".attention.w"))
                    r->layers[i].pruned = 1;
    }
out:
    if (st)
        for (int l = 0; l < c->n_layers; l++) sh_layer_stats_free(&st[l]);
    free(st);
    free(WO);
    free(L);
    free(score);
    free(keepq);
    free(keepk);
    return rc;
}

/* ---- layers ----------------------------------------------------------------- */

/* "layers.N." prefix: N, and the rest in *rest; -1 if none */
static int layer_of(const char *s, const char **rest)
{
    if (strncmp(s, "layers.", 7)) return -1;
    char *e;
    long v = strtol(s + 7, &e, 10);
    if (e == s + 7 || *e != '.' || v < 0 || v > 1000000) return -1;
    *rest = e + 1;
    return (int)v;
}

static int rename_one(char **name, const int *newidx, int nl, sh_error *err)
{
    const char *rest;
    int l = layer_of(*name, &rest);
    if (l < 0 || l >= nl || newidx[l] == l) return SH_OK;
    size_t n = strlen(*name) + 32;
    char *s = malloc(n);
    if (!s) return sh_err(err, SH_ENOMEM, "out of memory");
    if (newidx[l] < 0) snprintf(s, n, "removed.%s", *name);
    else snprintf(s, n, "layers.%d.%s", newidx[l], rest);
    free(*name);
    *name = s;
    return SH_OK;
}

static int blocks_include(const sh_llama_config *c, const unsigned char *rm, char **out, sh_error *err)
{
    size_t cap = (size_t)c->n_layers * 96 + 1, len = 0;
    char *s = malloc(cap);
    if (!s) return sh_err(err, SH_ENOMEM, "out of memory");
    s[0] = 0;
    for (int l = 0; l < c->n_layers; l++)
        if (rm[l])
            len += (size_t)snprintf(s + len, cap - len, "%slayers.%d.attention.residual,layers.%d.feed_forward.residual",
                                    len ? "," : "", l, l);
    *out = s;
    return SH_OK;
}

static int skip_layers(const sh_graph *g, const sh_llama_config *c, const unsigned char *rm, sh_graph **out,
                       sh_prune_report *rep, sh_error *err)
{
    char *inc = NULL;
    int rc = blocks_include(c, rm, &inc, err);
    if (rc) return rc;
    sh_prune_opts bo;
    sh_prune_opts_default(&bo);
    bo.include = inc;
    rc = sh_prune_blocks(g, &bo, out, rep, err);
    free(inc);
    return rc;
}

static int prune_layers(const sh_graph *g0, const sh_llama_config *c, const sh_prune_opts *o, sh_graph **out,
                        sh_prune_report *rep, sh_error *err)
{
    int nl = c->n_layers, rc = SH_OK, nsel = 0;
    for (int l = 0; l < nl; l++) nsel += layer_selected(o, l);
    int64_t k = sh_prune_count(o->ratio, nsel);
    if (k >= nl) return sh_err(err, SH_EINVAL, "layer pruning: ratio %g would remove all %d layers", o->ratio, nl);
    unsigned char *rm = calloc((size_t)nl + 1, 1), *one = calloc((size_t)nl + 1, 1);
    float *score = malloc(sizeof(float) * (size_t)(nl + 1));
    int *newidx = malloc(sizeof(int) * (size_t)(nl + 1)), *cand = malloc(sizeof(int) * (size_t)(nl + 1));
    sh_graph *g = NULL;
    if (!rm || !one || !score || !newidx || !cand) {
        rc = sh_err(err, SH_ENOMEM, "out of memory");
        goto out;
    }
    int nc = 0;
    for (int l = 0; l < nl && !rc; l++) {
        if (!layer_selected(o, l)) continue;
        double s = 0;
        if (o->calib) {
            /* KL(dense || this layer skipped) on the calibration text */
            sh_graph *sk = NULL;
            memset(one, 0, (size_t)nl);
            one[l] = 1;
            if ((rc = skip_layers(g0, c, one, &sk, NULL, err))) break;
            sh_eval_opts eo = {0};
            eo.nthreads = o->nthreads;
            eo.seq_len = o->seq_len > 0 ? o->seq_len : 0;
            eo.limit = (int64_t)(o->calib_batches > 0 ? o->calib_batches : 4) * (o->batch > 0 ? o->batch : 32) *
                       (o->seq_len > 0 ? o->seq_len : 64);
            rc = sh_lm_kl((sh_graph *)g0, sk, o->calib, &eo, &s, err);
            sh_graph_free(sk);
            if (rc) {
                sh_error_wrap(err, "layer pruning: KL with layer %d skipped", l);
                break;
            }
        } else {
            /* data-free: L1 / L2 norm of the weights that write to the residual stream */
            const char *fm[2] = {"layers.%d.attention.wo.weight", "layers.%d.feed_forward.w2.weight"};
            for (int i = 0; i < 2; i++) {
                char nm[96];
                snprintf(nm, sizeof nm, fm[i], l);
                const sh_tensor *t = winit(g0, nm);
                if (!t) {
                    rc = sh_err(err, SH_EUNSUPPORTED, "layer pruning: no f32 weight '%s'", nm);
                    break;
                }
                for (int64_t e = 0; e < sh_tensor_numel(t); e++) {
                    double v = sh_f32(t)[e];
                    s += o->method == SH_PRUNE_L1 ? fabs(v) : v * v;
                }
            }
            if (o->method != SH_PRUNE_L1) s = sqrt(s);
        }
        cand[nc] = l;
        score[nc++] = (float)s;
    }
    if (rc) goto out;
    if (sh_select_smallest(score, nc, k, one)) {
        rc = sh_err(err, SH_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < nc; i++) rm[cand[i]] = one[i];
    if ((rc = skip_layers(g0, c, rm, &g, rep, err))) goto out;
    for (int l = 0, n = 0; l < nl; l++) newidx[l] = rm[l] ? -1 : n++;
    for (int v = 0; v < g->n_values && !rc; v++) rc = rename_one(&g->values[v].name, newidx, nl, err);
    for (int i = 0; i < g->n_nodes && !rc; i++) rc = rename_one(&g->nodes[i].name, newidx, nl, err);
    if (rc) goto out;
    char b[24];
    snprintf(b, sizeof b, "%d", nl - (int)k);
    if (sh_graph_get_meta(g, "llama.n_layers")) sh_graph_set_meta(g, "llama.n_layers", b);
    if (rep)
        for (int i = 0; i < rep->n_layers; i++) {
            const char *rest;
            int l = layer_of(rep->layers[i].name, &rest);
            if (l < 0 || l >= nl) continue;
            if (rm[l]) snprintf(rep->layers[i].note, sizeof rep->layers[i].note, "layer %d removed", l);
            else if (newidx[l] != l)
                snprintf(rep->layers[i].note, sizeof rep->layers[i].note, "now layers.%d", newidx[l]);
        }
    *out = g;
    g = NULL;
out:
    sh_graph_free(g);
    free(rm), free(one), free(score), free(newidx), free(cand);
    return rc;
}

/* ---- entry ------------------------------------------------------------------ */

int sh_prune_llm(const sh_graph *g0, int unit, const sh_prune_opts *o, sh_graph **out, sh_prune_report *rep,
                 sh_error *err)
{
    *out = NULL;
    if (rep) memset(rep, 0, sizeof *rep);
    if (!o) return sh_err(err, SH_EINVAL, "prune: options are NULL");
    if (!(o->ratio >= 0 && o->ratio < 1))
        return sh_err(err, SH_EINVAL, "structured transformer pruning: ratio %g is outside [0, 1)", o->ratio);
    if (o->m > 0 || o->block > 1 || o->threshold >= 0)
        return sh_err(err, SH_EINVAL, "structured transformer pruning takes a ratio (no N:M, block or threshold)");
    if (unit < SH_LLM_HEADS || unit > SH_LLM_LAYERS)
        return sh_err(err, SH_EINVAL, "structured transformer pruning: unknown unit %d (heads, ffn, layers)", unit);
    sh_llama_config c;
    int rc = sh_llama_config_of(g0, &c, err);
    if (rc) {
        sh_error_wrap(err, "structured transformer pruning");
        return rc;
    }
    if (o->method == SH_PRUNE_TAYLOR && !o->calib)
        return sh_err(err, SH_EINVAL, "prune: Taylor scores need a calibration data set");
    if (o->calib && o->calib->kind != 2 && unit != SH_LLM_FFN)
        return sh_err(err, SH_EINVAL, "structured transformer pruning: calibration data must be text (tokens)");
    if (unit == SH_LLM_LAYERS) return prune_layers(g0, &c, o, out, rep, err);
    if (unit == SH_LLM_FFN) {
        /* the w1 / w3 channel groups of the selected layers */
        size_t cap = (size_t)c.n_layers * 80 + 1, len = 0;
        char *inc = malloc(cap);
        if (!inc) return sh_err(err, SH_ENOMEM, "out of memory");
        inc[0] = 0;
        for (int l = 0; l < c.n_layers; l++)
            if (layer_selected(o, l))
                len += (size_t)snprintf(inc + len, cap - len, "%slayers.%d.feed_forward.w1,layers.%d.feed_forward.w3",
                                        len ? "," : "", l, l);
        if (!len) {
            free(inc);
            return sh_err(err, SH_EINVAL, "FFN pruning: no layer selected");
        }
        sh_prune_opts po = *o;
        po.include = inc;
        po.exclude = NULL;
        po.global = 0;
        if (po.method != SH_PRUNE_L2 && po.method != SH_PRUNE_TAYLOR) po.method = SH_PRUNE_L1;
        rc = sh_prune_channels(g0, &po, out, rep, err);
        free(inc);
        if (rc) sh_error_wrap(err, "FFN pruning");
        return rc;
    }
    sh_graph *g = sh_graph_clone(g0, err);
    if (!g) return err && err->code ? err->code : SH_ENOMEM;
    sh_layer *L = NULL;
    int nl = 0;
    sh_prune_report r = {0};
    if ((rc = sh_graph_check(g, err)) || (rc = sh_prunable_layers(g, &L, &nl, err))) goto out;
    if (rep && (rc = sh_prune_report_begin(&r, g, L, nl, err))) goto out;
    if ((rc = prune_heads(g, &c, o, rep ? &r : NULL, err))) goto out;
    if ((rc = sh_graph_check(g, err)) || (rc = sh_graph_infer_shapes(g, NULL, err))) {
        sh_error_wrap(err, "head pruning produced an inconsistent graph");
        goto out;
    }
    if (rep) {
        sh_prune_report_end(&r, g);
        *rep = r;
        r.layers = NULL;
    }
    *out = g;
    g = NULL;
out:
    free(L);
    sh_prune_report_free(&r);
    sh_graph_free(g);
    return rc;
}
