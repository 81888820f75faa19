/* distill.c - knowledge distillation (Hinton et al. 2015): the student is
 * trained by sh_train with a loss hook that runs the teacher in an inference
 * program on the same batch and mixes the temperature-scaled KL divergence to
 * the teacher's soft targets with the cross-entropy on the labels:
 *
 *   loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)
 *
 * Language models: one row per position, the teacher's logits per position and
 * the next tokens as targets.
 *
 * Images without feature / attention terms: the teacher's logits of the
 * whole training set are computed once (one inference pass) and looked up by
 * the content of each image (a hash of its pixels), so an epoch costs the
 * student's training only.
 *
 * Feature distillation (FitNets): mean squared error between a teacher value
 * and a student value, through a learned projection (1x1 Conv for [B,C,H,W],
 * Gemm for [B,C]) when their channel counts differ.  Attention distillation:
 * the Attention nodes of both get their probabilities as output 1 and the
 * loss is the mean over query rows of the squared distance between the
 * probability rows (heads averaged when the head counts differ).  Both run on
 * a copy of the student that shares its weights (so training changes the
 * caller's student) with the projections and extra outputs added; the
 * projections are dropped with the copy.  The extra gradients enter through
 * sh_train_opts.aux_fn. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph_internal.h"
#include "shrink.h"
#include "train/train.h"

void sh_distill_opts_default(sh_distill_opts *o)
{
    memset(o, 0, sizeof *o);
    sh_train_opts_default(&o->train);
    o->temperature = 4.0f;
    o->alpha = 0.9f;
}

double sh_loss_distill(const float *student, const float *teacher, const int32_t *targets, int64_t n, int64_t c,
                       float temperature, float alpha, float smoothing, float scale, float *dstudent)
{
    /* alpha == 0: exactly the cross-entropy (bit-for-bit plain training) */
    double ce = sh_loss_xent(student, targets, n, c, smoothing, scale * (1.0f - alpha), dstudent);
    if (alpha == 0.0f) return ce;
    float *dk = NULL;
    if (dstudent) {
        dk = malloc(sizeof(float) * (size_t)(n * c));
        if (!dk) return NAN;
    }
    double kl = sh_loss_kl(student, teacher, n, c, temperature, scale * alpha, dk);
    if (dk) {
        for (int64_t i = 0; i < n * c; i++) dstudent[i] += dk[i];
        free(dk);
    }
    return (double)alpha * kl + (1.0 - (double)alpha) * ce;
}

/* One feature or attention term. */
typedef struct kd_term {
    int attn;              /* 1: attention probabilities */
    char tval[160];        /* teacher value name */
    int out;               /* student (work graph) output index */
    float weight;
    sh_tensor *grad;       /* d(loss)/d(student output), owned */
} kd_term;

typedef struct kd_ctx {
    sh_program *tp;        /* teacher inference program */
    const sh_graph *teacher;
    float temperature, alpha, smoothing;
    int lm;
    int checked;           /* output sizes compared (on the first batch) */
    /* images: the teacher's logits of the training set, by pixel hash */
    const sh_dataset *data;
    float *cache;          /* [n, c] */
    int64_t c, per;
    int64_t cap;           /* hash slots (power of 2) */
    int64_t *slot;         /* item index + 1, 0 empty */
    float *tb;             /* teacher logits of the current batch */
    int64_t hits, misses;
    /* feature / attention terms */
    int n_terms;
    kd_term *terms;
} kd_ctx;

static uint64_t hash_item(const float *x, int64_t per)
{
    uint64_t h = 0xcbf29ce484222325ull;
    const unsigned char *b = (const unsigned char *)x;
    for (size_t i = 0; i < sizeof(float) * (size_t)per; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

/* Index of the training item equal to x, or -1. */
static int64_t cache_find(const kd_ctx *k, const float *x)
{
    uint64_t h = hash_item(x, k->per);
    for (int64_t s = (int64_t)(h & (uint64_t)(k->cap - 1)), probes = 0; probes < k->cap;
         s = (s + 1) & (k->cap - 1), probes++) {
        int64_t i = k->slot[s] - 1;
        if (i < 0) return -1;
        if (memcmp(k->data->x + i * k->per, x, sizeof(float) * (size_t)k->per) == 0) return i;
    }
    return -1;
}

static int teacher_err(sh_error *err)
{
    if (err) {
        char m[sizeof err->msg];
        snprintf(m, sizeof m, "teacher: %.900s", err->msg);
        memcpy(err->msg, m, sizeof m);
    }
    return err ? err->code : SH_EINTERNAL;
}

/* One inference pass of the teacher over the training images. */
static int cache_build(kd_ctx *k, const sh_dataset *d, int nthreads, sh_error *err)
{
    sh_program *p = NULL;
    sh_run_opts ro = {.nthreads = nthreads};
    int rc = sh_program_new((sh_graph *)k->teacher, &ro, &p, err);
    if (rc) return rc;
    k->data = d;
    k->per = (int64_t)d->c * d->h * d->w;
    const int64_t B = 250;
    for (int64_t first = 0; first < d->n && !rc; first += B) {
        int64_t cnt = d->n - first < B ? d->n - first : B;
        int64_t shape[4] = {cnt, d->c, d->h, d->w};
        sh_tensor *x = sh_tensor_view(SH_F32, 4, shape, d->x + first * k->per, err);
        if (!x) {
            rc = err ? err->code : SH_ENOMEM;
            break;
        }
        const sh_tensor *ins[1] = {x};
        rc = sh_program_run(p, ins, 1, err);
        sh_tensor_free(x);
        if (rc) {
            rc = teacher_err(err);
            break;
        }
        sh_tensor *to = sh_program_output(p, 0);
        int64_t tc = to->ndim > 0 ? to->shape[to->ndim - 1] : 1;
        if (!k->cache) {
            k->c = tc;
            k->cache = malloc(sizeof(float) * (size_t)(d->n * tc));
            if (!k->cache) rc = sh_err(err, SH_ENOMEM, "out of memory caching the teacher's logits");
        }
        if (!rc && (to->fmt != SH_F32 || tc != k->c || sh_tensor_numel(to) != cnt * tc)) {
            char s[96];
            rc = sh_err(err, SH_ESHAPE, "teacher output '%s' is %s, expected %lld rows of logits",
                        k->teacher->values[k->teacher->outputs[0]].name, sh_shape_str(to->ndim, to->shape, s, sizeof s),
                        (long long)cnt);
        }
        if (!rc) memcpy(k->cache + first * tc, to->data, sizeof(float) * (size_t)(cnt * tc));
    }
    sh_program_free(p);
    if (rc) return rc;
    k->cap = 1;
    while (k->cap < 2 * d->n) k->cap *= 2;
    k->slot = calloc((size_t)k->cap, sizeof *k->slot);
    if (!k->slot) return sh_err(err, SH_ENOMEM, "out of memory");
    for (int64_t i = 0; i < d->n; i++) {
        const float *x = d->x + i * k->per;
        if (cache_find(k, x) >= 0) continue; /* duplicate image: same logits */
        uint64_t h = hash_item(x, k->per);
        int64_t s = (int64_t)(h & (uint64_t)(k->cap - 1));
        while (k->slot[s]) s = (s + 1) & (k->cap - 1);
        k->slot[s] = i + 1;
    }
    return SH_OK;
}

/* Teacher logits of batch x into *out (the cache, else a teacher run). */
static int teacher_logits(kd_ctx *k, const sh_tensor *x, int64_t rows, const float **out, sh_error *err)
{
    if (k->cache && !k->lm && x->fmt == SH_F32 && sh_tensor_numel(x) == rows * k->per) {
        if (!k->tb && !(k->tb = malloc(sizeof(float) * (size_t)(rows * k->c))))
            return sh_err(err, SH_ENOMEM, "out of memory");
        int64_t r = 0;
        for (; r < rows; r++) {
            int64_t i = cache_find(k, (const float *)x->data + r * k->per);
            if (i < 0) break;
            memcpy(k->tb + r * k->c, k->cache + i * k->c, sizeof(float) * (size_t)k->c);
        }
        if (r == rows) {
            k->hits++;
            *out = k->tb;
            return SH_OK;
        }
        k->misses++;
    }
    if (k->lm) sh_program_set_pos(k->tp, 0);
    const sh_tensor *ins[1] = {x};
    int rc = sh_program_run(k->tp, ins, 1, err);
    if (rc) return teacher_err(err);
    sh_tensor *to = sh_program_output(k->tp, 0);
    int64_t tc = to->ndim > 0 ? to->shape[to->ndim - 1] : 1;
    if (to->fmt != SH_F32 || sh_tensor_numel(to) != rows * tc) {
        char s[96];
        return sh_err(err, SH_ESHAPE, "teacher output '%s' is %s, expected %lld rows of logits",
                      k->teacher->values[k->teacher->outputs[0]].name, sh_shape_str(to->ndim, to->shape, s, sizeof s),
                      (long long)rows);
    }
    *out = to->data;
    return SH_OK;
}

static int kd_loss(void *ctx, const sh_tensor *x, const float *logits, const int32_t *targets, int64_t rows, int64_t c,
                   float scale, float *dlogits, double *loss, sh_error *err)
{
    kd_ctx *k = ctx;
    if (k->alpha == 0.0f && k->checked && !k->n_terms) { /* plain training: the teacher is not needed */
        *loss = sh_loss_xent(logits, targets, rows, c, k->smoothing, scale, dlogits);
        return SH_OK;
    }
    const float *t = NULL;
    int rc = teacher_logits(k, x, rows, &t, err);
    if (rc) return rc;
    int64_t tc = k->cache && !k->lm ? k->c : 0;
    if (!tc) {
        sh_tensor *to = sh_program_output(k->tp, 0);
        tc = to->ndim > 0 ? to->shape[to->ndim - 1] : 1;
    }
    if (tc != c)
        return sh_err(err, SH_ESHAPE, "teacher has %lld outputs per item, student %lld", (long long)tc, (long long)c);
    k->checked = 1;
    *loss = sh_loss_distill(logits, t, targets, rows, c, k->temperature, k->alpha, k->smoothing, scale, dlogits);
    return SH_OK;
}

double sh_loss_attention(const float *s, const float *t, int64_t B, int64_t Hs, int64_t Ht, int64_t T, float scale,
                         float *ds)
{
    int64_t TT = T * T;
    double l = 0;
    if (Hs == Ht) {
        double f = 1.0 / (double)(B * Hs * T);
        for (int64_t j = 0; j < B * Hs * TT; j++) {
            double d = (double)s[j] - (double)t[j];
            l += d * d;
            if (ds) ds[j] = (float)(scale * 2.0 * d * f);
        }
        return l * f;
    }
    float *buf = ds ? malloc(sizeof(float) * (size_t)TT) : NULL;
    if (ds && !buf) return NAN;
    double f = 1.0 / (double)(B * T);
    for (int64_t b = 0; b < B; b++) {
        for (int64_t j = 0; j < TT; j++) {
            double ms = 0, mt = 0;
            for (int64_t h = 0; h < Hs; h++) ms += s[(b * Hs + h) * TT + j];
            for (int64_t h = 0; h < Ht; h++) mt += t[(b * Ht + h) * TT + j];
            double d = ms / (double)Hs - mt / (double)Ht;
            l += d * d;
            if (buf) buf[j] = (float)(scale * 2.0 * d * f / (double)Hs);
        }
        if (ds)
            for (int64_t h = 0; h < Hs; h++) memcpy(ds + (b * Hs + h) * TT, buf, sizeof(float) * (size_t)TT);
    }
    free(buf);
    return l * f;
}

/* Feature / attention losses on the outputs 1.. of the student's program. */
static int kd_aux(void *ctx, sh_program *p, float scale, const sh_tensor **douts, int n, double *loss, sh_error *err)
{
    kd_ctx *k = ctx;
    *loss = 0;
    for (int i = 0; i < k->n_terms; i++) {
        kd_term *m = &k->terms[i];
        if (m->out >= n) return sh_err(err, SH_EINTERNAL, "distillation output %d of %d", m->out, n);
        sh_tensor *s = sh_program_output(p, m->out), *t = sh_program_value(k->tp, m->tval);
        char a[96], b[96];
        if (!t) return sh_err(err, SH_EINTERNAL, "teacher value '%s' was not kept", m->tval);
        if (!m->grad || m->grad->ndim != s->ndim || sh_tensor_numel(m->grad) != sh_tensor_numel(s)) {
            sh_tensor_free(m->grad);
            if (!(m->grad = sh_tensor_new(SH_F32, s->ndim, s->shape, err))) return err ? err->code : SH_ENOMEM;
        }
        float *gs = m->grad->data;
        const float *sd = s->data, *td = t->data;
        if (!m->attn) {
            if (sh_tensor_numel(s) != sh_tensor_numel(t))
                return sh_err(err, SH_ESHAPE, "feature distillation: student output %s, teacher '%s' %s",
                              sh_shape_str(s->ndim, s->shape, a, sizeof a), m->tval,
                              sh_shape_str(t->ndim, t->shape, b, sizeof b));
            *loss += m->weight * sh_loss_mse(sd, td, sh_tensor_numel(s), scale * m->weight, gs);
        } else {
            if (s->ndim != 4 || t->ndim != 4 || s->shape[0] != t->shape[0] || s->shape[2] != t->shape[2] ||
                s->shape[3] != t->shape[3])
                return sh_err(err, SH_ESHAPE, "attention distillation: student probabilities %s, teacher '%s' %s",
                              sh_shape_str(s->ndim, s->shape, a, sizeof a), m->tval,
                              sh_shape_str(t->ndim, t->shape, b, sizeof b));
            int64_t B = s->shape[0], Hs = s->shape[1], Ht = t->shape[1], T = s->shape[2];
            double l = sh_loss_attention(sd, td, B, Hs, Ht, T, scale * m->weight, gs);
            if (!isfinite(l)) return sh_err(err, SH_ENOMEM, "out of memory");
            *loss += m->weight * l;
        }
        douts[m->out] = m->grad;
    }
    return SH_OK;
}

/* Shape of value `name` of g for one item of d (shape inference on a clone). */
static int value_shape(const sh_graph *g, const sh_dataset *d, int64_t T, const char *name, int *ndim,
                       int64_t *shape, sh_error *err)
{
    sh_graph *c = sh_graph_copy(g, 1, err);
    if (!c) return err ? err->code : SH_ENOMEM;
    const sh_value *iv = &c->values[c->inputs[0]];
    sh_tensor *x;
    if (d->kind == 2) {
        int64_t s[2] = {1, T};
        x = sh_tensor_new(iv->fmt == SH_I32 ? SH_I32 : SH_I64, 2, s, err);
    } else {
        int64_t s[4] = {1, d->c, d->h, d->w};
        x = sh_tensor_new(SH_F32, 4, s, err);
    }
    int rc = x ? SH_OK : (err ? err->code : SH_ENOMEM);
    if (!rc) {
        const sh_tensor *ins[1] = {x};
        rc = sh_graph_infer_shapes(c, ins, err);
    }
    if (!rc) {
        int v = sh_graph_find(c, name);
        if (v < 0 || c->values[v].ndim < 1)
            rc = sh_err(err, SH_EINVAL, "model '%s' has no value '%s'", g->name ? g->name : "", name);
        else {
            *ndim = c->values[v].ndim;
            memcpy(shape, c->values[v].shape, sizeof(int64_t) * (size_t)*ndim);
        }
    }
    sh_tensor_free(x);
    sh_graph_free(c);
    return rc;
}

/* Attention node named `name`, or the i-th Attention node when name is a
 * number; -1 with err set if absent. */
static int find_attention(const sh_graph *g, const char *name, const char *who, sh_error *err)
{
    char *end;
    long idx = strtol(name, &end, 10);
    int numeric = *name && !*end, seen = 0, count = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        if (strcmp(g->nodes[i].op, "Attention")) continue;
        count++;
        if (numeric ? seen++ == idx : g->nodes[i].name && strcmp(g->nodes[i].name, name) == 0) return i;
    }
    sh_err(err, SH_EINVAL, "%s has no Attention node '%s' (%d Attention nodes; give a node name or an index)", who,
           name, count);
    return -1;
}

/* Give Attention node k of g its probabilities as output 1; returns the
 * value name in *vname. */
static int attention_probs(sh_graph *g, int k, char *vname, size_t n, sh_error *err)
{
    sh_node *nd = &g->nodes[k];
    if (nd->n_out >= 2) {
        snprintf(vname, n, "%s", g->values[nd->out[1]].name);
        return SH_OK;
    }
    snprintf(vname, n, "%s.kd_probs", nd->name ? nd->name : "attention");
    int v = sh_graph_add_value(g, vname, SH_F32, 4, (int64_t[]){-1, -1, -1, -1}, err);
    if (v < 0) return v;
    nd = &g->nodes[k];
    int *o = realloc(nd->out, sizeof(int) * 2);
    if (!o) return sh_err(err, SH_ENOMEM, "out of memory");
    nd->out = o;
    nd->out[1] = v;
    nd->n_out = 2;
    g->values[v].producer = k;
    return SH_OK;
}

static int add_projection(sh_graph *w, const char *sval, int nd, const int64_t *ss, int64_t ct, int i, uint64_t seed,
                          char *outname, size_t n, sh_error *err)
{
    char wn[64], bn[64], nn[64];
    snprintf(wn, sizeof wn, "kd.proj%d.weight", i);
    snprintf(bn, sizeof bn, "kd.proj%d.bias", i);
    snprintf(nn, sizeof nn, "kd.proj%d", i);
    snprintf(outname, n, "kd.proj%d.out", i);
    int64_t cs = ss[1];
    int64_t wsh[4] = {ct, cs, 1, 1}, bsh[1] = {ct};
    sh_tensor *W = sh_tensor_new(SH_F32, nd == 4 ? 4 : 2, wsh, err), *Bt = sh_tensor_new(SH_F32, 1, bsh, err);
    if (!W || !Bt) {
        sh_tensor_free(W);
        sh_tensor_free(Bt);
        return err ? err->code : SH_ENOMEM;
    }
    uint64_t r = seed * 0x9E3779B97F4A7C15ull + 0xD15711ull + (uint64_t)i;
    double bound = 1.0 / sqrt((double)cs);
    for (int64_t j = 0; j < ct * cs; j++) ((float *)W->data)[j] = (float)((2.0 * sh_rng_uniform(&r) - 1.0) * bound);
    int rc = sh_graph_add_init(w, wn, W, err);
    if (rc < 0) {
        sh_tensor_free(W);
        sh_tensor_free(Bt);
        return rc;
    }
    if ((rc = sh_graph_add_init(w, bn, Bt, err)) < 0) {
        sh_tensor_free(Bt);
        return rc;
    }
    const char *ins[3] = {sval, wn, bn}, *outs[1] = {outname};
    int k = sh_graph_add_node(w, nd == 4 ? "Conv" : "Gemm", nn, 3, ins, 1, outs, err);
    if (k < 0) return k;
    if (nd == 4) {
        sh_node_set_ints(w, k, "kernel_shape", 2, (int64_t[]){1, 1});
        sh_node_set_ints(w, k, "strides", 2, (int64_t[]){1, 1});
        sh_node_set_ints(w, k, "pads", 4, (int64_t[]){0, 0, 0, 0});
    } else
        sh_node_set_int(w, k, "transB", 1);
    return SH_OK;
}

/* Build the working student (shared weights, projections, extra outputs) and
 * the teacher copy (probabilities as outputs), and the terms. */
static int setup_terms(kd_ctx *k, const sh_graph *student, const sh_graph *teacher, const sh_dataset *d,
                       const sh_distill_opts *o, sh_graph **work, sh_graph **tcopy, sh_error *err)
{
    int nt = o->n_features + o->n_attention;
    int64_t T = o->train.seq_len > 0 ? o->train.seq_len : 128;
    sh_graph *w = sh_graph_copy(student, 1, err), *tc = w ? sh_graph_copy(teacher, 1, err) : NULL;
    *work = w;
    *tcopy = tc;
    if (!w || !tc) return err ? err->code : SH_ENOMEM;
    if (!(k->terms = calloc((size_t)nt, sizeof *k->terms))) return sh_err(err, SH_ENOMEM, "out of memory");
    for (int i = 0; i < nt; i++) {
        int attn = i >= o->n_features;
        const sh_distill_pair *pr = attn ? &o->attention[i - o->n_features] : &o->features[i];
        kd_term *m = &k->terms[k->n_terms];
        m->attn = attn;
        m->weight = pr->weight > 0 ? pr->weight : 1.0f;
        if (!pr->teacher || !pr->student || !*pr->teacher || !*pr->student)
            return sh_err(err, SH_EINVAL, "%s distillation pair %d needs a teacher and a student name",
                          attn ? "attention" : "feature", i + 1);
        char sname[160];
        int rc;
        if (attn) {
            if (d->kind != 2) return sh_err(err, SH_EINVAL, "attention distillation needs a language model (text data)");
            int kt = find_attention(tc, pr->teacher, "teacher", err), ks = kt < 0 ? -1 : find_attention(w, pr->student, "student", err);
            if (kt < 0 || ks < 0) return err ? err->code : SH_EINVAL;
            if ((rc = attention_probs(tc, kt, m->tval, sizeof m->tval, err))) return rc;
            if ((rc = attention_probs(w, ks, sname, sizeof sname, err))) return rc;
        } else {
            int ndt, nds;
            int64_t st[SH_MAX_DIMS], ss[SH_MAX_DIMS];
            if ((rc = value_shape(tc, d, T, pr->teacher, &ndt, st, err))) return sh_error_wrap(err, "teacher");
            if ((rc = value_shape(w, d, T, pr->student, &nds, ss, err))) return sh_error_wrap(err, "student");
            snprintf(m->tval, sizeof m->tval, "%s", pr->teacher);
            snprintf(sname, sizeof sname, "%s", pr->student);
            int same = ndt == nds;
            for (int j = 0; same && j < ndt; j++) same = st[j] == ss[j];
            if (!same) {
                int proj = ndt == nds && (ndt == 4 || ndt == 2);
                for (int j = 2; proj && j < ndt; j++) proj = st[j] == ss[j];
                if (!proj) {
                    char a[96], b[96];
                    return sh_err(err, SH_ESHAPE,
                                  "feature distillation: teacher '%s' is %s, student '%s' is %s (a projection needs "
                                  "[B,C] or [B,C,H,W] with the same H and W)",
                                  pr->teacher, sh_shape_str(ndt, st, a, sizeof a), pr->student,
                                  sh_shape_str(nds, ss, b, sizeof b));
                }
                if ((rc = add_projection(w, pr->student, nds, ss, st[1], i, o->train.seed, sname, sizeof sname, err)))
                    return rc;
            }
        }
        int v = sh_graph_mark_output(w, sname, err);
        if (v < 0) return v;
        m->out = w->n_outputs - 1;
        k->n_terms++;
    }
    int rc = sh_graph_check(w, err);
    if (!rc) rc = sh_graph_check(tc, err);
    return rc;
}

int sh_distill(sh_graph *student, const sh_graph *teacher, const sh_dataset *train, const sh_dataset *val,
               const sh_distill_opts *o, sh_train_report *rep, sh_error *err)
{
    sh_distill_opts def;
    if (!o) {
        sh_distill_opts_default(&def);
        o = &def;
    }
    if (!student || !teacher || !train)
        return sh_err(err, SH_EINVAL, "sh_distill: student, teacher and training data are required");
    if (!(o->temperature > 0) || !isfinite(o->temperature))
        return sh_err(err, SH_EINVAL, "distillation temperature %g, must be > 0", o->temperature);
    if (!(o->alpha >= 0 && o->alpha <= 1))
        return sh_err(err, SH_EINVAL, "distillation alpha %g, must be in [0, 1]", o->alpha);
    if (teacher->n_inputs != 1 || teacher->n_outputs < 1)
        return sh_err(err, SH_EUNSUPPORTED, "teacher '%s' has %d inputs and %d outputs (need 1 input)",
                      teacher->name ? teacher->name : "", teacher->n_inputs, teacher->n_outputs);
    if (o->n_features < 0 || o->n_attention < 0 || (o->n_features && !o->features) ||
        (o->n_attention && !o->attention))
        return sh_err(err, SH_EINVAL, "sh_distill: bad feature / attention pair list");
    if (student->n_outputs + o->n_features + o->n_attention > 16)
        return sh_err(err, SH_EINVAL, "sh_distill: at most %d feature and attention pairs", 16 - student->n_outputs);
    kd_ctx k = {0};
    k.teacher = teacher;
    k.temperature = o->temperature;
    k.alpha = o->alpha;
    k.smoothing = o->train.label_smoothing;
    k.lm = train->kind == 2;
    sh_graph *work = NULL, *tcopy = NULL;
    int rc = SH_OK;
    int terms = o->n_features + o->n_attention;
    if (terms) {
        rc = setup_terms(&k, student, teacher, train, o, &work, &tcopy, err);
        if (rc) goto out;
        k.teacher = tcopy;
    }
    /* features need the teacher's intermediates: kept, by their own names */
    sh_run_opts ro = {.nthreads = o->train.nthreads, .training = 0, .seed = o->train.seed, .no_optimize = terms > 0,
                      .keep_values = terms > 0};
    rc = sh_program_new((sh_graph *)k.teacher, &ro, &k.tp, err);
    if (rc) goto out;
    if (!k.lm && !terms && !o->no_cache && o->alpha > 0 && train->kind == 1) {
        rc = cache_build(&k, train, o->train.nthreads, err);
        if (rc) goto out;
    }
    sh_train_opts to = o->train;
    to.loss_fn = kd_loss;
    to.loss_ctx = &k;
    if (terms) {
        to.aux_fn = kd_aux;
        to.aux_ctx = &k;
    }
    rc = sh_train(work ? work : student, train, val, &to, rep, err);
out:
    for (int i = 0; i < k.n_terms; i++) {
        sh_tensor_free(k.terms[i].grad);
    }
    free(k.terms);
    free(k.cache);
    free(k.slot);
    free(k.tb);
    sh_program_free(k.tp);
    sh_graph_free(work);
    sh_graph_free(tcopy);
    return rc;
}

/* ---- teacher samples as training text --------------------------------- */

typedef struct sbuf {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void emit_piece(const char *piece, void *ud)
{
    sbuf *b = ud;
    size_t l = strlen(piece);
    if (b->oom) return;
    if (b->n + l + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->n + l + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s, b->cap = cap;
    }
    memcpy(b->s + b->n, piece, l + 1);
    b->n += l;
}

int sh_distill_samples(sh_graph *teacher, const sh_tokenizer *tok, int n, int steps, float temperature, uint64_t seed,
                       int nthreads, sh_dataset **out, sh_error *err)
{
    *out = NULL;
    if (!teacher || !tok) return sh_err(err, SH_EINVAL, "teacher samples need a teacher and a tokenizer");
    if (n < 1) return sh_err(err, SH_EINVAL, "teacher samples: %d stories, must be >= 1", n);
    if (!(temperature >= 0) || !isfinite(temperature))
        return sh_err(err, SH_EINVAL, "teacher samples: temperature %g, must be >= 0", temperature);
    sh_dataset *d = calloc(1, sizeof *d);
    if (!d) return sh_err(err, SH_ENOMEM, "out of memory");
    d->kind = 2;
    d->vocab = sh_tokenizer_vocab_size(tok);
    int64_t cap = 4096;
    d->tokens = malloc(sizeof(int32_t) * (size_t)cap);
    d->doc_off = malloc(sizeof(int64_t) * (size_t)(n + 1));
    int rc = d->tokens && d->doc_off ? SH_OK : sh_err(err, SH_ENOMEM, "out of memory");
    if (!rc) d->doc_off[0] = 0;
    sbuf b = {0};
    for (int i = 0; i < n && !rc; i++) {
        b.n = 0;
        if (b.s) b.s[0] = 0;
        rc = sh_generate(teacher, tok, "", steps, temperature, 0.0f, seed + (uint64_t)i * 0x9E3779B97F4A7C15ull,
                         nthreads, emit_piece, &b, NULL, err);
        if (rc) {
            sh_error_wrap(err, "teacher sample %d", i + 1);
            break;
        }
        if (b.oom) {
            rc = sh_err(err, SH_ENOMEM, "out of memory");
            break;
        }
        int *tk = NULL, nt = 0;
        rc = sh_tokenizer_encode(tok, b.s ? b.s : "", 1, 0, &tk, &nt, err);
        if (rc) break;
        if (d->n + nt > cap) {
            while (d->n + nt > cap) cap *= 2;
            int32_t *t2 = realloc(d->tokens, sizeof(int32_t) * (size_t)cap);
            if (!t2) {
                free(tk);
                rc = sh_err(err, SH_ENOMEM, "out of memory");
                break;
            }
            d->tokens = t2;
        }
        for (int j = 0; j < nt; j++) d->tokens[d->n + j] = tk[j];
        free(tk);
        d->n += nt;
        d->doc_off[++d->n_docs] = d->n;
    }
    free(b.s);
    if (!rc) {
        char desc[96];
        snprintf(desc, sizeof desc, "%d teacher samples (%lld tokens)", n, (long long)d->n);
        d->desc = strdup(desc);
        *out = d;
        return SH_OK;
    }
    sh_dataset_free(d);
    return rc;
}
