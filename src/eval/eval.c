/* eval.c - evaluation: top-1 accuracy of classifiers over a data set, size,
 * batch-1 median latency and batched throughput.  Language-model data sets
 * (kind 2) go to sh_eval_lm (src/eval/lm.c). */
#include <stdlib.h>
#include <string.h>

#include "shrink.h"
#include "../ops/ops.h"

static void opts_fill(sh_eval_opts *o, const sh_eval_opts *in)
{
    memset(o, 0, sizeof *o);
    if (in) *o = *in;
    if (o->batch <= 0) o->batch = 64;
    if (o->speed_batch <= 0) o->speed_batch = 64;
    if (o->warmup <= 0) o->warmup = 5;
    if (o->min_runs <= 0) o->min_runs = 50;
    if (o->max_seconds <= 0) o->max_seconds = 2.0;
}

/* Shape of the graph's single input for a batch of b items of c*h*w values.
 * Declared dims that are known must agree with the data set's item size. */
static int input_shape(const sh_graph *g, const sh_dataset *d, int64_t b, int *ndim, int64_t *shape,
                       sh_error *err)
{
    if (g->n_inputs != 1)
        return sh_err(err, SH_EUNSUPPORTED, "classifier evaluation needs a model with one input, this one has %d",
                      g->n_inputs);
    const sh_value *v = &g->values[g->inputs[0]];
    if (v->fmt != SH_F32)
        return sh_err(err, SH_EUNSUPPORTED, "model input '%s' has format %s, expected f32", v->name,
                      sh_format_get(v->fmt) ? sh_format_get(v->fmt)->name : "?");
    int64_t item = d ? (int64_t)d->c * d->h * d->w : -1;
    char a[160];
    if (v->ndim < 1) {
        /* rank unknown: use the data set's layout */
        if (!d) return sh_err(err, SH_EINVAL, "model input '%s' has no declared shape", v->name);
        *ndim = 4;
        shape[0] = b, shape[1] = d->c, shape[2] = d->h, shape[3] = d->w;
        return SH_OK;
    }
    *ndim = v->ndim;
    shape[0] = b;
    int64_t known = 1;
    int n_unknown = 0;
    for (int i = 1; i < v->ndim; i++) {
        if (v->shape[i] > 0) known *= v->shape[i];
        else n_unknown++;
        shape[i] = v->shape[i];
    }
    if (item < 0) { /* no data set: unknown dims become 1 */
        for (int i = 1; i < v->ndim; i++)
            if (shape[i] <= 0) shape[i] = 1;
        return SH_OK;
    }
    if (n_unknown == 0 && known == item) return SH_OK;
    if (v->ndim == 4 && n_unknown > 0) { /* [N,?,?,?]: fill from the data set's C,H,W */
        int64_t dd[3] = {d->c, d->h, d->w};
        int ok = 1;
        for (int i = 1; i < 4; i++) {
            if (shape[i] <= 0) shape[i] = dd[i - 1];
            else if (shape[i] != dd[i - 1]) ok = 0;
        }
        if (ok) return SH_OK;
    } else if (n_unknown == 1 && known > 0 && item % known == 0) {
        for (int i = 1; i < v->ndim; i++)
            if (shape[i] <= 0) shape[i] = item / known;
        return SH_OK;
    }
    return sh_err(err, SH_ESHAPE, "model input '%s' has shape %s but the data set's items are %dx%dx%d (%lld values)",
                  v->name, sh_shape_str(v->ndim, v->shape, a, sizeof a), d->c, d->h, d->w, (long long)item);
}

/* Argmax of each of the b rows of the first output; adds to *correct. */
static int score(sh_program *p, const int32_t *y, int64_t b, int64_t *correct, sh_error *err)
{
    sh_tensor *o = sh_program_output(p, 0);
    if (!o || !o->data) return sh_err(err, SH_EINTERNAL, "model produced no output");
    int64_t n = sh_tensor_numel(o);
    char a[160];
    if (o->ndim < 1 || o->shape[0] != b || n % b != 0 || n / b < 1)
        return sh_err(err, SH_ESHAPE, "output '%s' has shape %s, expected [%lld, classes]",
                      sh_program_graph(p)->values[sh_program_graph(p)->outputs[0]].name,
                      sh_shape_str(o->ndim, o->shape, a, sizeof a), (long long)b);
    int64_t k = n / b;
    for (int64_t i = 0; i < b; i++) {
        int64_t best = 0;
        float bv = sh_tensor_get_f(o, i * k);
        for (int64_t j = 1; j < k; j++) {
            float v = sh_tensor_get_f(o, i * k + j);
            if (v > bv) bv = v, best = j;
        }
        if (best == y[i]) (*correct)++;
    }
    return SH_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Fill t (f32) with items [i0, i0+b) of d, or deterministic noise when d is NULL. */
static void fill_input(sh_tensor *t, const sh_dataset *d, int64_t i0, int64_t b)
{
    float *x = t->data;
    int64_t n = sh_tensor_numel(t);
    if (d) {
        int64_t item = (int64_t)d->c * d->h * d->w;
        for (int64_t i = 0; i < b; i++) memcpy(x + i * item, d->x + ((i0 + i) % d->n) * item, sizeof(float) * (size_t)item);
    } else {
        uint64_t s = 0x9E3779B97F4A7C15ull;
        for (int64_t i = 0; i < n; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            x[i] = (float)((s >> 40) & 0xFFFF) / 65536.0f;
        }
    }
}

/* Time runs of p on t: warm-up, then runs until min_runs and budget; median ms. */
static int time_runs(sh_program *p, const sh_tensor *t, const sh_eval_opts *o, int min_runs, double *median_ms,
                     int *runs, sh_error *err)
{
    const sh_tensor *in[1] = {t};
    for (int i = 0; i < o->warmup; i++) {
        int rc = sh_program_run(p, in, 1, err);
        if (rc) return rc;
    }
    int cap = 1024, n = 0;
    double *ms = malloc(sizeof(double) * (size_t)cap);
    if (!ms) return sh_err(err, SH_ENOMEM, "out of memory");
    double start = sh_now();
    while (n < cap) {
        double t0 = sh_now();
        int rc = sh_program_run(p, in, 1, err);
        if (rc) {
            free(ms);
            return rc;
        }
        double t1 = sh_now();
        ms[n++] = (t1 - t0) * 1e3;
        if (n >= min_runs && t1 - start >= o->max_seconds * 0.5) break;
        if (n >= 3 && t1 - start >= o->max_seconds) break;
    }
    qsort(ms, (size_t)n, sizeof(double), cmp_double);
    *median_ms = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
    *runs = n;
    free(ms);
    return SH_OK;
}

int sh_eval_speed(sh_graph *g, const sh_dataset *d, const sh_eval_opts *opts, sh_eval_report *rep, sh_error *err)
{
    sh_eval_opts o;
    opts_fill(&o, opts);
    if (d && d->kind != 1) return sh_err(err, SH_EINVAL, "speed measurement needs an image data set");
    sh_run_opts ro = {.nthreads = o.nthreads};
    sh_program *p = NULL;
    sh_tensor *t = NULL;
    int ndim, rc, runs = 0;
    int64_t shape[SH_MAX_DIMS];
    double med = 0;
    if ((rc = sh_program_new(g, &ro, &p, err))) return rc;
    /* batch 1 latency */
    if ((rc = input_shape(g, d, 1, &ndim, shape, err))) goto done;
    if (!(t = sh_tensor_new(SH_F32, ndim, shape, err))) { rc = err ? err->code : SH_ENOMEM; goto done; }
    fill_input(t, d, 0, 1);
    if ((rc = time_runs(p, t, &o, o.min_runs, &med, &runs, err))) goto done;
    rep->latency_ms_b1 = med;
    rep->latency_runs = runs;
    sh_tensor_free(t);
    t = NULL;
    /* throughput at speed_batch */
    if ((rc = input_shape(g, d, o.speed_batch, &ndim, shape, err))) goto done;
    if (!(t = sh_tensor_new(SH_F32, ndim, shape, err))) { rc = err ? err->code : SH_ENOMEM; goto done; }
    fill_input(t, d, 0, o.speed_batch);
    sh_eval_opts ot = o;
    ot.warmup = 2;
    if ((rc = time_runs(p, t, &ot, 10, &med, &runs, err))) goto done;
    rep->throughput = med > 0 ? o.speed_batch * 1e3 / med : 0;
    rep->speed_batch = o.speed_batch;
done:
    sh_tensor_free(t);
    sh_program_free(p);
    return rc;
}

/* Language models: median latency of one token at position 0 (batch 1, one
 * new token: the cost of a decode step with an empty cache); a model with a
 * fixed input shape [B, T]: one run of that shape. */
static int lm_latency(sh_graph *g, const sh_eval_opts *o, sh_eval_report *rep, sh_error *err)
{
    int64_t fb, ft;
    if (!sh_graph_token_dims(g, &fb, &ft)) return SH_OK;
    const sh_value *v = &g->values[g->inputs[0]];
    /* a fixed input shape (an ONNX export without a KV cache) runs as it is */
    int64_t shape[2] = {fb > 0 ? fb : 1, ft > 0 ? ft : 1};
    sh_run_opts ro = {.nthreads = o->nthreads};
    sh_program *p = NULL;
    sh_tensor *t = sh_tensor_new(v->fmt, 2, shape, err);
    if (!t) return err ? err->code : SH_ENOMEM;
    for (int64_t i = 0; i < shape[0] * shape[1]; i++) {
        if (v->fmt == SH_I64) ((int64_t *)t->data)[i] = 1;
        else ((int32_t *)t->data)[i] = 1;
    }
    int rc = sh_program_new(g, &ro, &p, err), runs = 0;
    double med = 0;
    if (!rc) {
        sh_program_set_pos(p, 0);
        rc = time_runs(p, t, o, o->min_runs, &med, &runs, err);
    }
    if (!rc) {
        rep->latency_ms_b1 = med;
        rep->latency_runs = runs;
    }
    sh_program_free(p);
    sh_tensor_free(t);
    return rc;
}

static int eval_classifier(sh_graph *g, const sh_dataset *d, const sh_eval_opts *o, sh_eval_report *rep,
                           sh_error *err)
{
    if (!d->x || !d->y || d->n <= 0) return sh_err(err, SH_EINVAL, "data set '%s' has no images", d->desc ? d->desc : "?");
    int64_t total = o->limit > 0 && o->limit < d->n ? o->limit : d->n;
    sh_run_opts ro = {.nthreads = o->nthreads};
    sh_program *p = NULL;
    sh_tensor *t = NULL;
    int ndim, rc;
    int64_t shape[SH_MAX_DIMS], correct = 0, done = 0;
    if ((rc = sh_program_new(g, &ro, &p, err))) return rc;
    double t0 = sh_now();
    int64_t item = (int64_t)d->c * d->h * d->w;
    while (done < total) {
        int64_t b = total - done < o->batch ? total - done : o->batch;
        if (!t || t->shape[0] != b) {
            sh_tensor_free(t);
            t = NULL;
            if ((rc = input_shape(g, d, b, &ndim, shape, err))) goto out;
            /* a view of the data set's memory: items are contiguous */
            if (!(t = sh_tensor_view(SH_F32, ndim, shape, (void *)(d->x + done * item), err))) {
                rc = err ? err->code : SH_ENOMEM;
                goto out;
            }
        }
        t->data = (void *)(d->x + done * item);
        const sh_tensor *in[1] = {t};
        if ((rc = sh_program_run(p, in, 1, err))) goto out;
        for (int64_t i = 0; i < b; i++)
            if (d->y[done + i] < 0 || (d->n_classes > 0 && d->y[done + i] >= d->n_classes)) {
                rc = sh_err(err, SH_EFORMAT, "data set '%s': label %d of item %lld outside 0..%d",
                            d->desc ? d->desc : "?", d->y[done + i], (long long)(done + i), d->n_classes - 1);
                goto out;
            }
        if ((rc = score(p, d->y + done, b, &correct, err))) goto out;
        done += b;
        if (o->progress) o->progress(o->progress_ctx, done, total);
    }
    rep->seconds = sh_now() - t0;
    rep->n = total;
    rep->correct = correct;
    rep->accuracy = (double)correct / (double)total;
out:
    sh_tensor_free(t);
    sh_program_free(p);
    return rc;
}

int sh_eval_ex(sh_graph *g, const sh_dataset *d, const sh_eval_opts *opts, sh_eval_report *rep, sh_error *err)
{
    sh_eval_opts o;
    opts_fill(&o, opts);
    memset(rep, 0, sizeof *rep);
    if (!g || !d) return sh_err(err, SH_EINVAL, "sh_eval: model and data set are required");
    rep->kind = d->kind;
    rep->params = sh_graph_param_count(g);
    rep->param_bytes = sh_graph_param_bytes(g);
    if (d->kind == 2) {
        int rc = sh_eval_lm_ex(g, d, &o, rep, err);
        if (!rc && o.measure_speed) rc = lm_latency(g, &o, rep, err);
        return rc;
    }
    if (d->kind != 1) return sh_err(err, SH_EINVAL, "data set '%s' has unknown kind %d", d->desc ? d->desc : "?", d->kind);
    int rc = eval_classifier(g, d, &o, rep, err);
    if (rc) return rc;
    if (o.measure_speed) rc = sh_eval_speed(g, d, &o, rep, err);
    return rc;
}

int sh_eval(sh_graph *g, const sh_dataset *d, int nthreads, int measure_speed, sh_eval_report *rep, sh_error *err)
{
    sh_eval_opts o = {.nthreads = nthreads, .measure_speed = measure_speed};
    return sh_eval_ex(g, d, &o, rep, err);
}
