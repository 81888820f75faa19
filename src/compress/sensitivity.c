/* sensitivity.c - per-layer sensitivity to quantization and pruning.
 *
 * sh_compare keeps a small fixed evaluation set and the original model's
 * log-probabilities on it; a variant is scored by its accuracy (or
 * perplexity) and the mean KL divergence from the original.
 *
 * sh_sensitivity compresses one layer at a time at each level.  All variants
 * run through one program on a working copy of the graph: the layer's weight
 * is overwritten in place (sh_program_sync_weights re-derives BatchNorm-
 * folded copies), evaluated, and restored.  Quantization is simulated by
 * rounding the weight through its format (quantize + dequantize), after
 * folding BatchNorm as sh_quantize_weights does; pruning
 * uses sh_prune with include = the layer, so the masks are exactly those of
 * `shrink prune --include LAYER`. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "shrink.h"

/* ---- comparer ------------------------------------------------------------- */

struct sh_compare {
    int kind;            /* 1 images, 2 tokens */
    int nthreads;
    int64_t n;           /* scored rows (items / tokens) */
    int64_t V;           /* classes / vocabulary */
    int out_idx;         /* graph output with the logits */
    /* images */
    float *x;
    int32_t *y;
    int c, h, w;
    int in_ndim;
    int64_t in_shape[SH_MAX_DIMS];
    /* tokens: nwin windows of T inputs; tgt -1 = not scored */
    int64_t nwin, T;
    int64_t *tok;
    int32_t *tgt;
    int64_t batch;       /* items / windows per run */
    double *ref;         /* n x V log-probabilities of the original */
    double base;         /* accuracy or perplexity of the original */
};

static int model_seq_len(const sh_graph *g)
{
    sh_llama_config c;
    sh_error e = {0};
    int64_t fixed = sh_token_len(g, 0, 0); /* a fixed-shape export */
    if (fixed > 0) return (int)fixed;
    if (sh_llama_config_of(g, &c, &e) == SH_OK && c.seq_len > 0) return c.seq_len;
    const char *s = sh_graph_get_meta(g, "seq_len");
    if (s && atoi(s) > 1) return atoi(s);
    return 256;
}

static int pick_output(const sh_graph *g)
{
    for (int i = 0; i < g->n_outputs; i++)
        if (!strcmp(g->values[g->outputs[i]].name, "logits")) return i;
    return 0;
}

static double log_softmax(const float *l, int64_t V, double *lp)
{
    float mx = l[0];
    for (int64_t j = 1; j < V; j++)
        if (l[j] > mx) mx = l[j];
    double s = 0;
    for (int64_t j = 0; j < V; j++) s += exp((double)l[j] - mx);
    double z = mx + log(s);
    for (int64_t j = 0; j < V; j++) lp[j] = (double)l[j] - z;
    return z;
}

/* Run p over the set.  ref_out != NULL: store log-probs there (reference
 * pass); else compare with c->ref.  *correct / *nll / *kl are sums. */
static int compare_pass(sh_compare *c, sh_program *p, double *ref_out, int64_t *correct, double *nll, double *kl,
                        sh_error *err)
{
    int64_t total = c->kind == 1 ? c->n : c->nwin, row = 0;
    double *lp = malloc(sizeof(double) * (size_t)(c->V > 0 ? c->V : 1));
    int rc = SH_OK;
    int64_t V = c->V;
    *correct = 0, *nll = 0, *kl = 0;
    if (!lp) return sh_err(err, SH_ENOMEM, "sensitivity: out of memory");
    for (int64_t i0 = 0; i0 < total && !rc; i0 += c->batch) {
        int64_t b = total - i0 < c->batch ? total - i0 : c->batch;
        sh_tensor in = {0};
        if (c->kind == 1) {
            in.fmt = SH_F32;
            in.ndim = c->in_ndim;
            memcpy(in.shape, c->in_shape, sizeof in.shape);
            in.shape[0] = b;
            int64_t item = (int64_t)c->c * c->h * c->w;
            in.data = c->x + i0 * item;
            in.nbytes = sizeof(float) * (size_t)(b * item);
        } else {
            in.fmt = SH_I64;
            in.ndim = 2;
            in.shape[0] = b, in.shape[1] = c->T;
            in.data = c->tok + i0 * c->T;
            in.nbytes = sizeof(int64_t) * (size_t)(b * c->T);
            sh_program_set_pos(p, 0);
        }
        const sh_tensor *ins[1] = {&in};
        if ((rc = sh_program_run(p, ins, 1, err))) break;
        sh_tensor *o = sh_program_output(p, c->out_idx);
        int64_t rows = c->kind == 1 ? b : b * c->T;
        if (!o || !o->data || o->fmt != SH_F32 || sh_tensor_numel(o) <= 0 || sh_tensor_numel(o) % rows) {
            char s[128] = "?";
            if (o) sh_shape_str(o->ndim, o->shape, s, sizeof s);
            rc = sh_err(err, SH_ESHAPE, "sensitivity: output %s for %lld rows is not f32 logits [rows, classes]", s,
                        (long long)rows);
            break;
        }
        int64_t v = sh_tensor_numel(o) / rows;
        if (V == 0) {
            V = c->V = v;
            free(lp);
            lp = malloc(sizeof(double) * (size_t)V);
            if (!lp) return sh_err(err, SH_ENOMEM, "sensitivity: out of memory");
        } else if (v != V) {
            rc = sh_err(err, SH_ESHAPE, "sensitivity: the variant gives %lld outputs per row, the original %lld",
                        (long long)v, (long long)V);
            break;
        }
        const float *L = o->data;
        for (int64_t r = 0; r < rows; r++) {
            int32_t t = c->kind == 1 ? c->y[i0 + r] : c->tgt[i0 * c->T + r];
            if (t < 0) continue;
            if (t >= V) {
                rc = sh_err(err, SH_EINVAL, "sensitivity: label / token %d outside the model's %lld outputs", t,
                            (long long)V);
                break;
            }
            const float *l = L + r * V;
            log_softmax(l, V, lp);
            int64_t best = 0;
            for (int64_t j = 1; j < V; j++)
                if (l[j] > l[best]) best = j;
            *correct += best == t;
            *nll -= lp[t];
            if (ref_out) {
                memcpy(ref_out + row * V, lp, sizeof(double) * (size_t)V);
            } else {
                const double *q = c->ref + row * V;
                double s = 0;
                for (int64_t j = 0; j < V; j++) s += exp(q[j]) * (q[j] - lp[j]);
                *kl += s > 0 ? s : 0;
            }
            row++;
        }
    }
    free(lp);
    if (!rc && row != c->n) rc = sh_err(err, SH_EINTERNAL, "sensitivity: scored %lld rows, expected %lld", (long long)row,
                                        (long long)c->n);
    return rc;
}

void sh_compare_free(sh_compare *c)
{
    if (!c) return;
    free(c->x), free(c->y), free(c->tok), free(c->tgt), free(c->ref);
    free(c);
}

static int images_setup(sh_compare *c, const sh_graph *g, const sh_dataset *d, int64_t samples, sh_error *err)
{
    if (g->n_inputs != 1)
        return sh_err(err, SH_EUNSUPPORTED, "sensitivity: a classifier with one input is needed, this one has %d",
                      g->n_inputs);
    const sh_value *v = &g->values[g->inputs[0]];
    if (v->fmt != SH_F32)
        return sh_err(err, SH_EUNSUPPORTED, "sensitivity: model input '%s' is not f32 (image data needs an f32 input)",
                      v->name);
    int64_t item = (int64_t)d->c * d->h * d->w;
    c->n = samples > 0 ? samples : 1000;
    if (c->n > d->n) c->n = d->n;
    if (c->n <= 0) return sh_err(err, SH_EINVAL, "sensitivity: the image data set is empty");
    c->c = d->c, c->h = d->h, c->w = d->w;
    if (v->ndim <= 0 || v->ndim == 4) {
        c->in_ndim = 4;
        c->in_shape[1] = d->c, c->in_shape[2] = d->h, c->in_shape[3] = d->w;
    } else {
        c->in_ndim = v->ndim;
        int64_t known = 1;
        int unk = -1;
        for (int i = 1; i < v->ndim; i++) {
            c->in_shape[i] = v->shape[i];
            if (v->shape[i] > 0) known *= v->shape[i];
            else unk = i;
        }
        if (unk > 0 && item % known == 0) c->in_shape[unk] = item / known, known = item;
        if (known != item) {
            char s[128];
            return sh_err(err, SH_ESHAPE, "sensitivity: model input '%s' %s does not take %dx%dx%d images", v->name,
                          sh_shape_str(v->ndim, v->shape, s, sizeof s), d->c, d->h, d->w);
        }
    }
    c->x = malloc(sizeof(float) * (size_t)(c->n * item));
    c->y = malloc(sizeof(int32_t) * (size_t)c->n);
    if (!c->x || !c->y) return sh_err(err, SH_ENOMEM, "sensitivity: out of memory");
    memcpy(c->x, d->x, sizeof(float) * (size_t)(c->n * item));
    memcpy(c->y, d->y, sizeof(int32_t) * (size_t)c->n);
    c->batch = 250;
    return SH_OK;
}

static int tokens_setup(sh_compare *c, const sh_graph *g, const sh_dataset *d, int64_t samples, int seq_len,
                        sh_error *err)
{
    if (g->n_inputs != 1)
        return sh_err(err, SH_EUNSUPPORTED, "sensitivity: a language model takes one input (tokens), this one %d",
                      g->n_inputs);
    int64_t want = samples > 0 ? samples : 2048;
    int64_t T = seq_len > 0 ? seq_len : model_seq_len(g);
    if (seq_len <= 0 && T > 256) T = 256;
    if (T < 2) return sh_err(err, SH_EINVAL, "sensitivity: a window of %lld tokens is too short", (long long)T);
    int64_t nd = d->doc_off && d->n_docs > 0 ? d->n_docs : 1;
    /* count windows: each document in chunks of T+1 tokens overlapping by one */
    int64_t nwin = 0, scored = 0;
    for (int64_t i = 0; i < nd && scored < want; i++) {
        int64_t a = 0, b = d->n;
        if (d->doc_off && d->n_docs > 0) a = d->doc_off[i], b = d->doc_off[i + 1];
        for (int64_t s = a; s + 1 < b && scored < want; s += T) {
            int64_t e = s + T < b - 1 ? s + T : b - 1; /* targets s+1..e */
            nwin++;
            scored += e - s < want - scored ? e - s : want - scored;
        }
    }
    if (scored == 0) return sh_err(err, SH_EINVAL, "sensitivity: the token data set has no token to score");
    c->T = T, c->nwin = nwin, c->n = scored;
    c->tok = calloc((size_t)(nwin * T), sizeof(int64_t));
    c->tgt = malloc(sizeof(int32_t) * (size_t)(nwin * T));
    if (!c->tok || !c->tgt) return sh_err(err, SH_ENOMEM, "sensitivity: out of memory");
    for (int64_t k = 0; k < nwin * T; k++) c->tgt[k] = -1;
    int64_t w = 0;
    scored = 0;
    for (int64_t i = 0; i < nd && scored < want; i++) {
        int64_t a = 0, b = d->n;
        if (d->doc_off && d->n_docs > 0) a = d->doc_off[i], b = d->doc_off[i + 1];
        for (int64_t s = a; s + 1 < b && scored < want; s += T, w++) {
            int64_t e = s + T < b - 1 ? s + T : b - 1;
            for (int64_t j = s; j < e; j++) {
                c->tok[w * T + j - s] = d->tokens[j];
                if (scored < want) c->tgt[w * T + j - s] = d->tokens[j + 1], scored++;
            }
        }
    }
    c->batch = 4096 / T > 0 ? 4096 / T : 1;
    if (sh_token_batch(g) > 0) c->batch = sh_token_batch(g);
    return SH_OK;
}

int sh_compare_new(sh_graph *ref, const sh_dataset *d, int64_t samples, int seq_len, int nthreads, sh_compare **out,
                   sh_error *err)
{
    *out = NULL;
    if (!ref || !d) return sh_err(err, SH_EINVAL, "sensitivity: need a model and evaluation data (--calib)");
    if (d->kind != 1 && d->kind != 2) return sh_err(err, SH_EINVAL, "sensitivity: unknown data set kind %d", d->kind);
    if (d->kind == 1 && (!d->x || !d->y))
        return sh_err(err, SH_EINVAL, "sensitivity: image data set without labels");
    if (d->kind == 2 && !d->tokens) return sh_err(err, SH_EINVAL, "sensitivity: token data set without tokens");
    if (samples < 0) return sh_err(err, SH_EINVAL, "sensitivity: samples %lld < 0", (long long)samples);
    sh_compare *c = calloc(1, sizeof *c);
    if (!c) return sh_err(err, SH_ENOMEM, "sensitivity: out of memory");
    c->kind = d->kind;
    c->nthreads = nthreads;
    c->out_idx = pick_output(ref);
    int rc = d->kind == 1 ? images_setup(c, ref, d, samples, err) : tokens_setup(c, ref, d, samples, seq_len, err);
    sh_program *p = NULL;
    sh_run_opts ro = {.nthreads = nthreads};
    int64_t correct = 0;
    double nll = 0, kl = 0;
    if (!rc) rc = sh_program_new(ref, &ro, &p, err);
    /* first pass finds V, then store the reference */
    if (!rc) {
        int64_t n = c->n;
        /* one item / window first: the number of outputs per row (V) */
        sh_program_set_pos(p, 0);
        {
            sh_tensor in = {0};
            if (c->kind == 1) {
                in.fmt = SH_F32, in.ndim = c->in_ndim;
                memcpy(in.shape, c->in_shape, sizeof in.shape);
                in.shape[0] = 1;
                in.data = c->x, in.nbytes = sizeof(float) * (size_t)c->c * c->h * c->w;
            } else {
                in.fmt = SH_I64, in.ndim = 2, in.shape[0] = 1, in.shape[1] = c->T;
                in.data = c->tok, in.nbytes = sizeof(int64_t) * (size_t)c->T;
            }
            const sh_tensor *ins[1] = {&in};
            rc = sh_program_run(p, ins, 1, err);
            if (!rc) {
                sh_tensor *o = sh_program_output(p, c->out_idx);
                int64_t rows = c->kind == 1 ? 1 : c->T;
                if (!o || o->fmt != SH_F32 || sh_tensor_numel(o) % rows || sh_tensor_numel(o) == 0)
                    rc = sh_err(err, SH_ESHAPE, "sensitivity: the model's output is not f32 logits");
                else
                    c->V = sh_tensor_numel(o) / rows;
            }
        }
        if (!rc && c->kind == 1 && c->V < 2)
            rc = sh_err(err, SH_EUNSUPPORTED, "sensitivity: the classifier has %lld output(s), need >= 2 classes",
                        (long long)c->V);
        if (!rc) {
            c->ref = malloc(sizeof(double) * (size_t)(n * c->V));
            if (!c->ref) rc = sh_err(err, SH_ENOMEM, "sensitivity: out of memory");
        }
        if (!rc) rc = compare_pass(c, p, c->ref, &correct, &nll, &kl, err);
        if (!rc) c->base = c->kind == 1 ? (double)correct / (double)c->n : exp(nll / (double)c->n);
    }
    sh_program_free(p);
    if (rc) {
        sh_compare_free(c);
        return rc;
    }
    *out = c;
    return SH_OK;
}

int sh_compare_info(const sh_compare *c, double *base, int64_t *n)
{
    if (base) *base = c->base;
    if (n) *n = c->n;
    return c->kind;
}

static void fill_result(const sh_compare *c, int64_t correct, double nll, double kl, sh_compare_result *r)
{
    if (c->kind == 1) {
        r->metric = (double)correct / (double)c->n;
        r->drop = 100.0 * (c->base - r->metric);
    } else {
        r->metric = exp(nll / (double)c->n);
        r->drop = 100.0 * (r->metric / c->base - 1.0);
    }
    r->kl = kl / (double)c->n;
}

static int compare_program(sh_compare *c, sh_program *p, sh_compare_result *r, sh_error *err)
{
    int64_t correct = 0;
    double nll = 0, kl = 0;
    int rc = compare_pass(c, p, NULL, &correct, &nll, &kl, err);
    if (!rc) fill_result(c, correct, nll, kl, r);
    return rc;
}

int sh_compare_eval(sh_compare *c, sh_graph *g, sh_compare_result *r, sh_error *err)
{
    memset(r, 0, sizeof *r);
    if (!c || !g) return sh_err(err, SH_EINVAL, "sensitivity: compare_eval needs a comparer and a model");
    sh_program *p = NULL;
    sh_run_opts ro = {.nthreads = c->nthreads};
    int rc = sh_program_new(g, &ro, &p, err);
    if (!rc) rc = compare_program(c, p, r, err);
    sh_program_free(p);
    return rc;
}

/* ---- levels ----------------------------------------------------------------- */

static void default_levels(int prune, sh_sens_opts *o)
{
    static const double bits[4] = {8, 4, 3, 2}, sp[4] = {0.25, 0.5, 0.75, 0.9};
    o->n_levels = 4;
    for (int i = 0; i < 4; i++) {
        memset(&o->levels[i], 0, sizeof o->levels[i]);
        o->levels[i].value = prune ? sp[i] : bits[i];
        snprintf(o->levels[i].label, sizeof o->levels[i].label, "%g", o->levels[i].value);
    }
}

int sh_sens_parse_levels(const char *s, int prune, sh_sens_opts *o, sh_error *err)
{
    if (!s || !*s) return sh_err(err, SH_EINVAL, "levels: empty list");
    int n = 0;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char tok[16];
        if (len == 0 || len >= sizeof tok) return sh_err(err, SH_EINVAL, "levels: bad entry in '%s'", s);
        memcpy(tok, p, len);
        tok[len] = 0;
        if (n >= SH_SENS_MAX_LEVELS) return sh_err(err, SH_EINVAL, "levels: more than %d in '%s'", SH_SENS_MAX_LEVELS, s);
        sh_sens_level *l = &o->levels[n];
        memset(l, 0, sizeof *l);
        char *end = NULL;
        if (prune && strchr(tok, ':')) {
            long a = strtol(tok, &end, 10), b = 0;
            if (end && *end == ':') b = strtol(end + 1, &end, 10);
            if (!end || *end || a < 1 || b < 2 || a >= b || b > 64)
                return sh_err(err, SH_EINVAL, "levels: '%s' is not an N:M pattern with 1 <= N < M <= 64", tok);
            l->n = (int)a, l->m = (int)b;
            l->value = (double)(b - a) / (double)b;
        } else {
            double v = strtod(tok, &end);
            if (!end || *end || !isfinite(v))
                return sh_err(err, SH_EINVAL, "levels: '%s' is not a number", tok);
            if (prune && !(v >= 0 && v < 1))
                return sh_err(err, SH_EINVAL, "levels: sparsity %s is outside [0, 1)", tok);
            if (!prune && (v != floor(v) || v < 2 || v > 8 || (v != 8 && v != 4 && v != 3 && v != 2)))
                return sh_err(err, SH_EINVAL, "levels: %s bits (weight-only formats: 8, 4, 3, 2)", tok);
            l->value = v;
        }
        snprintf(l->label, sizeof l->label, "%s", tok);
        n++;
        if (!e) break;
        p = e + 1;
    }
    o->n_levels = n;
    return SH_OK;
}

/* ---- sensitivity -------------------------------------------------------------- */

void sh_sens_report_free(sh_sens_report *r)
{
    if (!r) return;
    for (int i = 0; i < r->n_layers; i++) free(r->layers[i].cells);
    free(r->layers);
    memset(r, 0, sizeof *r);
}

/* Round the [rows, cols] view of w through format f in place (rows padded
 * to a multiple of the format's block). */
static int fake_quant(const sh_layer *l, float *w, sh_format f, sh_error *err)
{
    const sh_format_traits *t = sh_format_get(f);
    int64_t K = l->cols, be = t->block_elems > 0 ? t->block_elems : 1, Kp = (K + be - 1) / be * be;
    float *row = malloc(sizeof(float) * (size_t)Kp * 2);
    void *q = malloc(sh_format_bytes(f, Kp) + 64);
    if (!row || !q) {
        free(row), free(q);
        return sh_err(err, SH_ENOMEM, "sensitivity: out of memory");
    }
    float *back = row + Kp;
    for (int64_t r = 0; r < l->rows; r++) {
        for (int64_t c = 0; c < K; c++) row[c] = w[sh_layer_at(l, r, c)];
        for (int64_t c = K; c < Kp; c++) row[c] = 0;
        t->from_f32(row, q, Kp);
        t->to_f32(q, back, Kp);
        for (int64_t c = 0; c < K; c++) w[sh_layer_at(l, r, c)] = back[c];
    }
    free(row), free(q);
    return SH_OK;
}

/* Output elements of each layer for one item (batch 1, one token). */
static void layer_macs(const sh_graph *g, const sh_layer *L, int n, int64_t *macs)
{
    for (int i = 0; i < n; i++) macs[i] = L[i].rows * L[i].cols;
    sh_error e = {0};
    sh_graph *c = sh_graph_clone(g, &e);
    if (!c) return;
    if (sh_graph_infer_shapes(c, NULL, &e) == SH_OK) {
        for (int i = 0; i < n; i++) {
            const sh_node *nd = &c->nodes[L[i].node];
            if (nd->n_out < 1 || nd->out[0] < 0) continue;
            const sh_value *v = &c->values[nd->out[0]];
            if (v->ndim < 1) continue;
            int64_t el = 1;
            for (int k = 0; k < v->ndim; k++) el *= v->shape[k] > 0 ? v->shape[k] : 1;
            macs[i] = L[i].cols * el;
        }
    }
    sh_graph_free(c);
}

static int64_t count_zeros(const float *w, int64_t n)
{
    int64_t z = 0;
    for (int64_t i = 0; i < n; i++) z += w[i] == 0.0f;
    return z;
}

int sh_sensitivity(const sh_graph *g, const sh_sens_opts *o_in, sh_sens_report *rep, sh_error *err)
{
    memset(rep, 0, sizeof *rep);
    if (!g || !o_in) return sh_err(err, SH_EINVAL, "sensitivity: model and options are required");
    sh_sens_opts o = *o_in;
    if (o.n_levels <= 0) default_levels(o.prune, &o);
    if (o.n_levels > SH_SENS_MAX_LEVELS)
        return sh_err(err, SH_EINVAL, "sensitivity: %d levels (at most %d)", o.n_levels, SH_SENS_MAX_LEVELS);
    if (o.prune && o.method != SH_PRUNE_L1 && o.method != SH_PRUNE_L2)
        return sh_err(err, SH_EINVAL, "sensitivity: pruning method %d (l1 or l2)", o.method);
    for (int j = 0; j < o.n_levels; j++) {
        const sh_sens_level *lv = &o.levels[j];
        if (o.prune && lv->m <= 0 && !(lv->value >= 0 && lv->value < 1))
            return sh_err(err, SH_EINVAL, "sensitivity: sparsity %g is outside [0, 1)", lv->value);
        if (o.prune && lv->m > 0 && (lv->n < 1 || lv->n >= lv->m || lv->m > 64))
            return sh_err(err, SH_EINVAL, "sensitivity: N:M %d:%d needs 1 <= N < M <= 64", lv->n, lv->m);
        if (!o.prune && sh_quant_format((int)lv->value, o.scheme, err) < 0) return err ? err->code : SH_EINVAL;
        if (!o.prune && lv->value != floor(lv->value))
            return sh_err(err, SH_EINVAL, "sensitivity: %g bits", lv->value);
    }
    double t0 = sh_now();
    sh_graph *w = NULL;
    sh_layer *L = NULL;
    int nl = 0, rc = SH_OK, *sel = NULL;
    int64_t *macs = NULL;
    float *orig = NULL;
    sh_compare *cmp = NULL;
    sh_program *p = NULL;
    sh_quant_report qr[SH_SENS_MAX_LEVELS];
    int nqr = 0;
    memset(qr, 0, sizeof qr);
    /* comparer on the original */
    sh_graph *g0 = sh_graph_clone(g, err);
    if (!g0) return err && err->code ? err->code : SH_ENOMEM;
    rc = sh_compare_new(g0, o.data, o.samples, o.seq_len, o.nthreads, &cmp, err);
    sh_graph_free(g0);
    if (rc) return rc;
    if (!(w = sh_graph_clone(g, err))) { rc = err && err->code ? err->code : SH_ENOMEM; goto done; }
    /* quantization rounds the weight that runs: BatchNorm folded first, as
     * sh_quantize_weights does */
    if (!o.prune && (rc = sh_graph_fold_batchnorm(w, err))) goto done;
    if ((rc = sh_prunable_layers(w, &L, &nl, err))) goto done;
    if (nl == 0) { rc = sh_err(err, SH_EINVAL, "sensitivity: the model has no Conv / Gemm / MatMul layer with an f32 weight"); goto done; }
    sel = calloc((size_t)nl, sizeof *sel);
    macs = calloc((size_t)nl, sizeof *macs);
    if (!sel || !macs) { rc = sh_err(err, SH_ENOMEM, "sensitivity: out of memory"); goto done; }
    {
        sh_prune_opts po;
        sh_prune_opts_default(&po);
        po.include = o.include, po.exclude = o.exclude;
        if ((rc = sh_prune_select(w, L, nl, &po, sel, err))) goto done;
    }
    layer_macs(w, L, nl, macs);
    /* what the real quantizer does with each layer, per level */
    if (!o.prune)
        for (int j = 0; j < o.n_levels; j++, nqr++) {
            sh_quant_opts qo = {0};
            qo.bits = (int)o.levels[j].value, qo.scheme = o.scheme;
            sh_graph *q = NULL;
            if ((rc = sh_quantize_weights(g, &qo, &q, &qr[j], err))) goto done;
            sh_graph_free(q);
        }
    int nsel = 0;
    for (int i = 0; i < nl; i++) nsel += sel[i];
    rep->layers = calloc((size_t)nsel + 1, sizeof *rep->layers);
    if (!rep->layers) { rc = sh_err(err, SH_ENOMEM, "sensitivity: out of memory"); goto done; }
    rep->prune = o.prune;
    rep->n_levels = o.n_levels;
    memcpy(rep->levels, o.levels, sizeof rep->levels);
    rep->task = sh_compare_info(cmp, &rep->base_metric, &rep->samples);
    {
        sh_run_opts ro = {.nthreads = o.nthreads};
        if ((rc = sh_program_new(w, &ro, &p, err))) goto done;
    }
    int done_layers = 0;
    for (int i = 0; i < nl && !rc; i++) {
        if (!sel[i]) continue;
        const sh_layer *l = &L[i];
        sh_tensor *wt = w->values[l->wv].init;
        int64_t ne = sh_tensor_numel(wt);
        sh_sens_layer *sl = &rep->layers[rep->n_layers++];
        snprintf(sl->name, sizeof sl->name, "%s", l->name ? l->name : "");
        snprintf(sl->weight, sizeof sl->weight, "%s", w->values[l->wv].name);
        snprintf(sl->op, sizeof sl->op, "%s", l->op);
        sl->rows = l->rows, sl->cols = l->cols, sl->params = ne, sl->macs = macs[i];
        sl->bytes = (int64_t)wt->nbytes;
        sl->zeros = count_zeros(wt->data, ne);
        sl->cells = calloc((size_t)o.n_levels, sizeof *sl->cells);
        if (!sl->cells) { rc = sh_err(err, SH_ENOMEM, "sensitivity: out of memory"); break; }
        if (!o.prune) {
            sl->quantizable = 1;
            for (int j = 0; j < nqr; j++) {
                const sh_quant_layer *ql = NULL;
                for (int k = 0; k < qr[j].n_layers; k++)
                    if (!strcmp(qr[j].layers[k].name, sl->name)) ql = &qr[j].layers[k];
                if (!ql || ql->fmt == SH_F32) {
                    sl->quantizable = 0;
                    if (!sl->note[0])
                        snprintf(sl->note, sizeof sl->note, "%s", ql ? ql->note
                                 : "not stored quantized by weight-only quantization");
                } else {
                    sl->cells[j].bytes = ql->bytes_after;
                }
            }
        }
        free(orig);
        orig = malloc(sizeof(float) * (size_t)ne);
        if (!orig) { rc = sh_err(err, SH_ENOMEM, "sensitivity: out of memory"); break; }
        memcpy(orig, wt->data, sizeof(float) * (size_t)ne);
        for (int j = 0; j < o.n_levels && !rc; j++) {
            const sh_sens_level *lv = &o.levels[j];
            sh_sens_cell *cell = &sl->cells[j];
            if (!o.prune) {
                sh_format f = (sh_format)sh_quant_format((int)lv->value, o.scheme, NULL);
                if (!sl->quantizable || cell->bytes == 0) {
                    int64_t be = sh_format_get(f)->block_elems > 0 ? sh_format_get(f)->block_elems : 1;
                    cell->bytes = (int64_t)sh_format_bytes(f, l->rows * ((l->cols + be - 1) / be * be));
                }
                if ((rc = fake_quant(l, wt->data, f, err))) break;
            } else {
                if (lv->m > 0 && l->cols % lv->m) { /* no such pattern for this layer */
                    cell->metric = cell->drop = cell->kl = NAN;
                    cell->bytes = ne - sl->zeros;
                    size_t nl0 = strlen(sl->note);
                    snprintf(sl->note + nl0, sizeof sl->note - nl0, "%s%s: input size %lld is not a multiple of %d",
                             nl0 ? "; " : "", lv->label, (long long)l->cols, lv->m);
                    continue;
                }
                sh_prune_opts po;
                sh_prune_opts_default(&po);
                po.method = o.method;
                po.include = sl->name[0] ? sl->name : sl->weight;
                if (lv->m > 0) po.n = lv->n, po.m = lv->m, po.ratio = 0;
                else po.ratio = lv->value;
                sh_graph *pg = NULL;
                if ((rc = sh_prune(g, &po, &pg, NULL, err))) {
                    sh_error_wrap(err, "layer '%s' at %s", sl->name, lv->label);
                    break;
                }
                int v = sh_graph_find(pg, sl->weight);
                sh_tensor *pt = v >= 0 ? pg->values[v].init : NULL;
                if (!pt || pt->fmt != SH_F32 || sh_tensor_numel(pt) != ne) {
                    sh_graph_free(pg);
                    rc = sh_err(err, SH_EINTERNAL, "sensitivity: pruned weight '%s' not found", sl->weight);
                    break;
                }
                memcpy(wt->data, pt->data, sizeof(float) * (size_t)ne);
                sh_graph_free(pg);
                cell->bytes = ne - count_zeros(wt->data, ne);
            }
            sh_compare_result r;
            if (!(rc = sh_program_sync_weights(p, err))) rc = compare_program(cmp, p, &r, err);
            if (rc) {
                sh_error_wrap(err, "sensitivity: layer '%s' at %s", sl->name, lv->label);
                break;
            }
            cell->metric = r.metric, cell->drop = r.drop, cell->kl = r.kl;
            rep->evaluations++;
            memcpy(wt->data, orig, sizeof(float) * (size_t)ne);
        }
        if (!rc) rc = sh_program_sync_weights(p, err);
        done_layers++;
        if (o.progress) o.progress(o.progress_ctx, done_layers, nsel);
    }
    rep->seconds = sh_now() - t0;
done:
    for (int j = 0; j < nqr; j++) sh_quant_report_free(&qr[j]);
    sh_program_free(p);
    sh_compare_free(cmp);
    sh_graph_free(w);
    free(L), free(sel), free(macs), free(orig);
    if (rc) sh_sens_report_free(rep);
    return rc;
}
