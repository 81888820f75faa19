/* gradcheck.c - finite-difference check of one op's backward (see gradcheck.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "ops/ops.h"

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void gradcheck_fill(sh_tensor *t, uint64_t seed, float lo, float hi)
{
    uint64_t s = seed * 7919u + 1;
    float *d = t->data;
    int64_t n = sh_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) d[i] = lo + (hi - lo) * (float)((rng_next(&s) >> 40) * (1.0 / 16777216.0));
}

sh_tensor *gradcheck_rand(int ndim, const int64_t *shape, uint64_t seed, float lo, float hi)
{
    sh_tensor *t = sh_tensor_new(SH_F32, ndim, shape, NULL);
    if (t) gradcheck_fill(t, seed, lo, hi);
    return t;
}

static void rep_add(char *rep, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void rep_add(char *rep, size_t n, const char *fmt, ...)
{
    if (!rep || !n) return;
    size_t len = strlen(rep);
    if (len + 1 >= n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep + len, n - len, fmt, ap);
    va_end(ap);
}

typedef struct {
    sh_graph *g;
    sh_program *p;       /* the program FD runs use */
    sh_program *ptrain;  /* training program (analytic gradients), NULL in inference mode */
    int n_gin;
    sh_tensor *gin[32];  /* graph-input tensors, in graph-input order (owned) */
    int gin_of[32];      /* node input -> graph input index, or -1 */
    int n_out;
    sh_tensor *w[16];    /* loss weights per node output (NULL for non-float) */
} gc_ctx;

/* Forward through p and the loss. */
static int gc_loss(gc_ctx *c, sh_program *p, double *loss, sh_error *err)
{
    int rc = sh_program_run(p, (const sh_tensor *const *)c->gin, c->n_gin, err);
    if (rc) return rc;
    double L = 0;
    for (int j = 0; j < c->n_out; j++) {
        sh_tensor *y = sh_program_output(p, j);
        if (!y || !c->w[j]) continue;
        if (y->fmt != SH_F32) continue;
        const float *yd = y->data, *wd = c->w[j]->data;
        int64_t n = sh_tensor_numel(y);
        for (int64_t i = 0; i < n; i++) L += (double)wd[i] * (double)yd[i];
    }
    *loss = L;
    return SH_OK;
}

int gradcheck_node_ex(const char *op, gradcheck_attrs_fn attrs, void *actx, int n_in, sh_tensor *const *inputs,
                      const gradcheck_opts *opts, char *report, size_t report_size)
{
    gradcheck_opts o = {0};
    if (opts) o = *opts;
    if (o.tol <= 0) o.tol = 1e-2;
    if (o.eps <= 0) o.eps = 1e-3;
    if (o.n_out <= 0) o.n_out = 1;
    if (o.max_checks <= 0) o.max_checks = 400;
    if (report && report_size) report[0] = 0;
    if (n_in > 32 || o.n_out > 16) {
        rep_add(report, report_size, "gradcheck: too many inputs/outputs");
        return SH_EINVAL;
    }
    const sh_op_def *d = sh_op_find(op);
    if (!d) {
        rep_add(report, report_size, "gradcheck: unknown op %s", op);
        return SH_EUNSUPPORTED;
    }
    sh_error err = {0};
    gc_ctx c;
    memset(&c, 0, sizeof c);
    c.n_out = o.n_out;
    int rc = SH_OK, result = 0;
    char names[32][16], onames[16][16];
    const char *in_names[32], *out_names[16];
    unsigned check = 0; /* inputs whose gradient is checked */
    sh_tensor *din[32] = {0};
    sh_tensor *dir_out[16] = {0};
    void *state = NULL;

    c.g = sh_graph_new("gradcheck");
    if (!c.g) return SH_ENOMEM;
    c.g->opset = o.opset ? o.opset : 17;
    for (int i = 0; i < n_in; i++) {
        c.gin_of[i] = -1;
        snprintf(names[i], sizeof names[i], "in%d", i);
        in_names[i] = inputs[i] ? names[i] : "";
        if (!inputs[i]) continue;
        const sh_tensor *t = inputs[i];
        if (t->fmt != SH_F32 || (o.as_param & (1u << i))) {
            sh_tensor *cl = sh_tensor_clone(t, &err);
            if (!cl || (rc = sh_graph_add_init(c.g, names[i], cl, &err)) < 0) goto fail;
            rc = SH_OK;
            if (t->fmt == SH_F32 && !(d->nondiff_inputs & (1u << i)) && !(o.no_grad & (1u << i))) check |= 1u << i;
            continue;
        }
        if ((rc = sh_graph_add_input(c.g, names[i], t->fmt, t->ndim, t->shape, &err)) < 0) goto fail;
        rc = SH_OK;
        c.gin_of[i] = c.n_gin;
        c.gin[c.n_gin] = sh_tensor_clone(t, &err);
        if (!c.gin[c.n_gin]) goto fail;
        c.n_gin++;
        if (!(d->nondiff_inputs & (1u << i)) && !(o.no_grad & (1u << i))) check |= 1u << i;
    }
    for (int j = 0; j < o.n_out; j++) {
        snprintf(onames[j], sizeof onames[j], "out%d", j);
        out_names[j] = onames[j];
    }
    rc = sh_graph_add_node(c.g, op, "node", n_in, in_names, o.n_out, out_names, &err);
    if (rc < 0) goto fail;
    rc = SH_OK;
    if (attrs) attrs(c.g, 0, actx);
    for (int j = 0; j < o.n_out; j++)
        if ((rc = sh_graph_mark_output(c.g, onames[j], &err)) < 0) goto fail;
    rc = SH_OK;

    sh_run_opts ro = {.nthreads = 1, .training = !o.inference, .seed = 1};
    if ((rc = sh_program_new(c.g, &ro, &c.p, &err))) goto fail;
    if (!o.inference) {
        c.ptrain = c.p;
        for (int i = 0; i < n_in; i++)
            if ((check & (1u << i)) && c.gin_of[i] >= 0 && (rc = sh_program_require_grad(c.p, names[i], &err)))
                goto fail;
    }
    double L0;
    if ((rc = gc_loss(&c, c.p, &L0, &err))) goto fail; /* also plans: output shapes known */
    uint64_t ws = o.seed ? o.seed : 12345;
    for (int j = 0; j < o.n_out; j++) {
        sh_tensor *y = sh_program_output(c.p, j);
        if (!y || y->fmt != SH_F32) continue;
        c.w[j] = gradcheck_rand(y->ndim, y->shape, ws + (uint64_t)j, -1.0f, 1.0f);
        if (!c.w[j]) {
            rc = SH_ENOMEM;
            goto fail;
        }
    }
    if ((rc = gc_loss(&c, c.p, &L0, &err))) goto fail;

    /* analytic gradients */
    const sh_tensor *ana[32] = {0};
    if (!o.inference) {
        const sh_tensor *douts[16];
        for (int j = 0; j < o.n_out; j++) douts[j] = c.w[j];
        /* twice: input gradients accumulate, so the second pass must double them */
        if ((rc = sh_program_backward(c.p, douts, o.n_out, &err))) goto fail;
        for (int i = 0; i < n_in; i++) {
            if (!(check & (1u << i))) continue;
            sh_tensor *gt = sh_program_grad(c.p, names[i]);
            if (!gt) {
                rep_add(report, report_size, "in%d: no gradient buffer (is it in param_inputs?)\n", i);
                result = 1;
                check &= ~(1u << i);
                continue;
            }
            din[i] = sh_tensor_clone(gt, &err);
            if (!din[i]) goto fail;
        }
        if ((rc = sh_program_backward(c.p, douts, o.n_out, &err))) goto fail;
        for (int i = 0; i < n_in; i++) {
            if (!(check & (1u << i))) continue;
            const float *g1 = din[i]->data, *g2 = sh_program_grad(c.p, names[i])->data;
            int64_t n = sh_tensor_numel(din[i]);
            float gmax = 0.0f;
            for (int64_t e = 0; e < n; e++) gmax = fmaxf(gmax, fabsf(g1[e]));
            for (int64_t e = 0; e < n; e++)
                if (fabsf(g2[e] - 2.0f * g1[e]) > 1e-4f * (fabsf(g2[e]) + gmax) + 1e-30f) {
                    rep_add(report, report_size,
                            "in%d: gradient does not accumulate: elem %lld first %.6g, after second backward %.6g\n",
                            i, (long long)e, g1[e], g2[e]);
                    result = 1;
                    break;
                }
            ana[i] = din[i];
        }
    } else {
        /* direct call with k->training = 0 */
        const sh_tensor *in[32], *outs[16], *douts[16];
        sh_node *nd = &c.g->nodes[0];
        for (int i = 0; i < n_in; i++) {
            in[i] = NULL;
            if (!inputs[i]) continue;
            in[i] = c.gin_of[i] >= 0 ? c.gin[c.gin_of[i]] : c.g->values[nd->in[i]].init;
            if (check & (1u << i)) {
                din[i] = sh_tensor_new(SH_F32, inputs[i]->ndim, inputs[i]->shape, &err);
                if (!din[i]) goto fail;
                ana[i] = din[i];
            }
        }
        for (int j = 0; j < o.n_out; j++) {
            sh_tensor *y = sh_program_output(c.p, j);
            dir_out[j] = y ? sh_tensor_clone(y, &err) : NULL;
            outs[j] = dir_out[j];
            douts[j] = c.w[j];
        }
        sh_kctx k;
        memset(&k, 0, sizeof k);
        k.node = nd;
        k.err = &err;
        k.nthreads = 1;
        k.training = 0;
        k.seed = 1;
        k.state = &state;
        k.scratch_owner = c.p;
        k.opset = c.g->opset;
        if (!d->backward) {
            rep_add(report, report_size, "%s has no backward\n", op);
            rc = SH_EUNSUPPORTED;
            goto fail;
        }
        if ((rc = d->backward(&k, in, n_in, outs, o.n_out, douts, din))) goto fail;
    }

    /* numeric gradients */
    for (int i = 0; i < n_in; i++) {
        if (!(check & (1u << i))) continue;
        sh_tensor *x = c.gin_of[i] >= 0 ? c.gin[c.gin_of[i]] : NULL;
        if (!x) {
            /* an initializer (as_param): perturb the graph's data in place */
            x = c.g->values[c.g->nodes[0].in[i]].init;
        }
        float *xd = x->data;
        const float *ad = ana[i]->data;
        int64_t n = sh_tensor_numel(x);
        int64_t stride = n > o.max_checks ? (n + o.max_checks - 1) / o.max_checks : 1;
        double max_abs = 0;
        int64_t cnt = 0;
        /* first pass: numeric values */
        double *num = malloc(sizeof(double) * (size_t)(n / stride + 2));
        int64_t *idx = malloc(sizeof(int64_t) * (size_t)(n / stride + 2));
        if (!num || !idx) {
            free(num), free(idx);
            rc = SH_ENOMEM;
            goto fail;
        }
        for (int64_t e = (stride > 1 ? (stride / 2) : 0); e < n; e += stride) {
            float x0 = xd[e];
            double h = o.eps * fmax(1.0, fabs((double)x0));
            float xp = (float)(x0 + h), xm = (float)(x0 - h);
            double Lp, Lm;
            xd[e] = xp;
            rc = gc_loss(&c, c.p, &Lp, &err);
            xd[e] = xm;
            if (!rc) rc = gc_loss(&c, c.p, &Lm, &err);
            xd[e] = x0;
            if (rc) {
                free(num), free(idx);
                goto fail;
            }
            num[cnt] = (Lp - Lm) / ((double)xp - (double)xm);
            idx[cnt++] = e;
            if (fabs(num[cnt - 1]) > max_abs) max_abs = fabs(num[cnt - 1]);
        }
        double floor_ = fmax(0.1 * max_abs, 1e-3), worst = 0;
        int64_t we = -1;
        double wa = 0, wn = 0;
        for (int64_t q = 0; q < cnt; q++) {
            double a = ad[idx[q]], nu = num[q];
            double r = fabs(a - nu) / fmax(fmax(fabs(a), fabs(nu)), floor_);
            if (r > worst || we < 0) worst = r, we = idx[q], wa = a, wn = nu;
        }
        char sb[128];
        rep_add(report, report_size, "in%d %s: %lld/%lld checked, max rel err %.3g at %lld (analytic %.6g, numeric %.6g)%s\n",
                i, sh_shape_str(x->ndim, x->shape, sb, sizeof sb), (long long)cnt, (long long)n, worst,
                (long long)we, wa, wn, worst > o.tol ? "  <-- FAIL" : "");
        if (worst > o.tol) result = 1;
        free(num);
        free(idx);
    }
    goto done;
fail:
    if (!rc) rc = err.code ? err.code : SH_EINTERNAL;
    if (rc > 0) rc = SH_EINTERNAL;
    rep_add(report, report_size, "gradcheck %s: error %d: %s\n", op, rc, err.msg);
    result = rc;
done:
    for (int i = 0; i < 32; i++) sh_tensor_free(din[i]);
    for (int j = 0; j < 16; j++) sh_tensor_free(dir_out[j]), sh_tensor_free(c.w[j]);
    for (int i = 0; i < c.n_gin; i++) sh_tensor_free(c.gin[i]);
    if (state) {
        if (d->state_free) d->state_free(state);
        else free(state);
    }
    sh_program_free(c.p);
    sh_graph_free(c.g);
    return result;
}

int gradcheck_node(const char *op, gradcheck_attrs_fn attrs, void *ctx, int n_in, sh_tensor *const *inputs,
                   double tol, char *report, size_t report_size)
{
    gradcheck_opts o = {0};
    o.tol = tol;
    return gradcheck_node_ex(op, attrs, ctx, n_in, inputs, &o, report, report_size);
}
