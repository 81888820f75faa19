/* prune_schedule.c - pruning with fine-tuning: one-shot, iterative (prune,
 * fine-tune, repeat), gradual cubic sparsity during training (Zhu & Gupta
 * 2017) and L1-regularised sparsification training.
 *
 * Fine-tuning runs sh_train (or sh_distill with a teacher) with keep_zeros,
 * so the pruned weights stay exactly zero (N:M stays N:M); structurally
 * pruned models are smaller and simply train.  Gradual pruning prunes from
 * the training loop's step hook: the weights are pruned in place (sh_prune on
 * the current weights, whose zeros already count) and the masks are taken
 * again from the new zero pattern.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"

void sh_prune_train_opts_default(sh_prune_train_opts *o)
{
    memset(o, 0, sizeof *o);
    sh_prune_opts_default(&o->prune);
    sh_train_opts_default(&o->train);
    o->schedule = SH_PRUNE_SCHED_ONESHOT;
    o->rounds = 3;
    o->initial_sparsity = 0;
    o->begin = 0;
    o->end = 0.5;
    o->l1 = 1e-5f;
    o->temperature = 4.0f;
    o->alpha = 0.9f;
}

/* Fine-tune g in place (plain cross-entropy, or distillation). */
static int finetune(sh_graph *g, const sh_dataset *train, const sh_dataset *val, const sh_prune_train_opts *o,
                    const sh_train_opts *to, sh_train_report *acc, sh_error *err)
{
    sh_train_report r;
    int rc;
    if (o->teacher) {
        sh_distill_opts d;
        sh_distill_opts_default(&d);
        d.train = *to;
        d.temperature = o->temperature;
        d.alpha = o->alpha;
        rc = sh_distill(g, o->teacher, train, val, &d, &r, err);
    } else
        rc = sh_train(g, train, val, to, &r, err);
    if (rc) return rc;
    int64_t steps = acc->steps + r.steps;
    double secs = acc->seconds + r.seconds;
    *acc = r;
    acc->steps = steps;
    acc->seconds = secs;
    return SH_OK;
}

/* One pruning step of g to sparsity s: *g is replaced by the pruned graph. */
static int prune_step(sh_graph **g, const sh_prune_train_opts *o, double ratio, sh_prune_report *last,
                      sh_error *err)
{
    sh_prune_opts po = o->prune;
    if (o->prune.m <= 0 && o->prune.threshold < 0) po.ratio = ratio;
    sh_graph *p = NULL;
    sh_prune_report r = {0};
    int rc = o->structured ? sh_prune_channels(*g, &po, &p, &r, err) : sh_prune(*g, &po, &p, &r, err);
    if (rc) return rc;
    sh_graph_free(*g);
    *g = p;
    sh_prune_report_free(last);
    *last = r;
    return SH_OK;
}

/* ---- gradual pruning from the training loop's step hook ---------------- */

typedef struct gradual {
    const sh_prune_train_opts *o;
    double s_i, s_f;
    int64_t t0, t1, dt;   /* pruning at t0, t0 + dt, ..., t1 (steps done) */
    int64_t total;        /* the schedule was set for this many steps */
    int events;           /* pruning steps done */
    double last;          /* sparsity of the last pruning step */
    int (*user)(void *, sh_graph *, int64_t, int64_t, int *, sh_error *); /* the caller's step hook */
    void *user_ctx;
} gradual;

static void gradual_plan(gradual *gs, int64_t total)
{
    const sh_prune_train_opts *o = gs->o;
    gs->total = total;
    gs->t0 = (int64_t)llround(o->begin * (double)total);
    gs->t1 = (int64_t)llround(o->end * (double)total);
    if (gs->t1 < gs->t0) gs->t1 = gs->t0;
    gs->dt = o->every > 0 ? o->every : (gs->t1 - gs->t0) / 16;
    if (gs->dt < 1) gs->dt = 1;
}

static double gradual_target(const gradual *gs, int64_t t)
{
    if (t >= gs->t1) return gs->s_f;
    double f = (double)(t - gs->t0) / (double)(gs->t1 - gs->t0);
    double r = 1.0 - f;
    return gs->s_f + (gs->s_i - gs->s_f) * r * r * r;
}

/* Prune g's weights in place to sparsity s (same shapes: copy the pruned
 * weights back into g's initializers, which the training program views). */
static int prune_in_place(sh_graph *g, const sh_prune_train_opts *o, double s, sh_error *err)
{
    sh_prune_opts po = o->prune;
    po.ratio = s;
    sh_graph *p = NULL;
    int rc = sh_prune(g, &po, &p, NULL, err);
    if (rc) return rc;
    for (int v = 0; v < g->n_values; v++) {
        sh_tensor *a = g->values[v].init, *b = v < p->n_values ? p->values[v].init : NULL;
        if (!a || !b || a->fmt != SH_F32 || b->fmt != SH_F32 || a->nbytes != b->nbytes || a->data == b->data) continue;
        if (memcmp(a->data, b->data, a->nbytes)) memcpy(a->data, b->data, a->nbytes);
    }
    sh_graph_free(p);
    return SH_OK;
}

static int gradual_step(void *ctx, sh_graph *g, int64_t step, int64_t total, int *remask, sh_error *err)
{
    gradual *gs = ctx;
    if (total != gs->total) gradual_plan(gs, total);
    int due = step >= gs->t0 && step <= gs->t1 && ((step - gs->t0) % gs->dt == 0 || step == gs->t1);
    double s = due ? gradual_target(gs, step) : 0;
    if (due && (s > gs->last || !gs->events)) {
        int rc = prune_in_place(g, gs->o, s, err);
        if (rc) return rc;
        gs->last = s;
        gs->events++;
        *remask = 1;
    }
    return gs->user ? gs->user(gs->user_ctx, g, step, total, remask, err) : SH_OK;
}

/* ---- the schedules ----------------------------------------------------- */

static int check(const sh_graph *g, const sh_dataset *train, const sh_prune_train_opts *o, sh_error *err)
{
    if (!g || !o) return sh_err(err, SH_EINVAL, "sh_prune_train: model and options are required");
    int rc = sh_prune_check_opts(&o->prune, err);
    if (rc) return rc;
    if (o->schedule < SH_PRUNE_SCHED_ONESHOT || o->schedule > SH_PRUNE_SCHED_L1)
        return sh_err(err, SH_EINVAL, "prune schedule %d unknown (oneshot, iterative, gradual, l1)", o->schedule);
    static const char *names[] = {"oneshot", "iterative", "gradual", "l1"};
    const char *sn = names[o->schedule];
    int needs_train = o->train.epochs > 0 || o->schedule == SH_PRUNE_SCHED_GRADUAL || o->schedule == SH_PRUNE_SCHED_L1;
    if (needs_train && !train)
        return sh_err(err, SH_EINVAL, "prune: the %s schedule fine-tunes and needs training data", sn);
    if (o->train.epochs < 0) return sh_err(err, SH_EINVAL, "prune: fine-tuning epochs %d, must be >= 0", o->train.epochs);
    if ((o->schedule == SH_PRUNE_SCHED_ITERATIVE || o->schedule == SH_PRUNE_SCHED_GRADUAL) && o->prune.m > 0)
        return sh_err(err, SH_EINVAL,
                      "prune: the %s schedule ramps the sparsity up, but %d:%d pruning has one sparsity: use oneshot or l1",
                      sn, o->prune.n, o->prune.m);
    if ((o->schedule == SH_PRUNE_SCHED_ITERATIVE || o->schedule == SH_PRUNE_SCHED_GRADUAL) && o->prune.threshold >= 0)
        return sh_err(err, SH_EINVAL, "prune: the %s schedule needs a target ratio, not a threshold", sn);
    if (o->schedule == SH_PRUNE_SCHED_ITERATIVE && (o->rounds < 1 || o->rounds > 1000))
        return sh_err(err, SH_EINVAL, "prune: iterative schedule with %d rounds (1..1000)", o->rounds);
    if (o->schedule == SH_PRUNE_SCHED_GRADUAL) {
        if (o->structured)
            return sh_err(err, SH_EINVAL,
                          "prune: gradual pruning keeps shapes; structured channel pruning takes oneshot or iterative");
        if (o->train.epochs < 1) return sh_err(err, SH_EINVAL, "prune: the gradual schedule needs >= 1 training epoch");
        if (!(o->initial_sparsity >= 0 && o->initial_sparsity <= o->prune.ratio))
            return sh_err(err, SH_EINVAL, "prune: gradual initial sparsity %g outside [0, %g]", o->initial_sparsity,
                          o->prune.ratio);
        if (!(o->begin >= 0 && o->begin <= o->end && o->end <= 1))
            return sh_err(err, SH_EINVAL, "prune: gradual pruning from %g to %g of training (need 0 <= begin <= end <= 1)",
                          o->begin, o->end);
        if (o->every < 0) return sh_err(err, SH_EINVAL, "prune: gradual pruning every %lld steps", (long long)o->every);
    }
    if (o->schedule == SH_PRUNE_SCHED_L1) {
        if (!(o->l1 > 0) || !isfinite(o->l1))
            return sh_err(err, SH_EINVAL, "prune: L1 regularisation %g, must be > 0", o->l1);
        if (o->l1_epochs < 0) return sh_err(err, SH_EINVAL, "prune: L1 epochs %d, must be >= 0", o->l1_epochs);
    }
    if (o->structured && o->prune.m > 0)
        return sh_err(err, SH_EINVAL, "prune: structured channel pruning and N:M cannot be combined");
    if (o->teacher && (o->teacher->n_inputs != 1 || o->teacher->n_outputs < 1))
        return sh_err(err, SH_EUNSUPPORTED, "teacher '%s' has %d inputs and %d outputs (need 1 input)",
                      o->teacher->name ? o->teacher->name : "", o->teacher->n_inputs, o->teacher->n_outputs);
    return SH_OK;
}

/* Report: g0's layers before, the final graph's after; notes of the last
 * pruning pass. */
static int final_report(const sh_graph *g0, const sh_graph *fin, const sh_prune_train_opts *o,
                        const sh_prune_report *last, sh_prune_report *rep, sh_error *err)
{
    sh_layer *L = NULL;
    int n = 0;
    int rc = sh_prunable_layers(g0, &L, &n, err);
    if (rc) return rc;
    int *sel = calloc((size_t)n + 1, sizeof(int));
    if (!sel) {
        free(L);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    rc = sh_prune_select(g0, L, n, &o->prune, sel, err);
    if (!rc) rc = sh_prune_report_begin(rep, g0, L, n, err);
    if (!rc) {
        sh_prune_report_end(rep, fin);
        for (int i = 0; i < n; i++) {
            sh_prune_layer *pl = &rep->layers[i];
            for (int j = 0; j < last->n_layers; j++)
                if (!strcmp(last->layers[j].name, pl->name)) memcpy(pl->note, last->layers[j].note, sizeof pl->note);
            pl->pruned = sel[i] && (pl->zeros_after != pl->zeros_before || pl->params_after != pl->params_before);
        }
    }
    free(sel);
    free(L);
    return rc;
}

int sh_prune_train(const sh_graph *g0, const sh_dataset *train, const sh_dataset *val, const sh_prune_train_opts *o,
                   sh_graph **out, sh_prune_report *rep, sh_train_report *trep, sh_error *err)
{
    if (out) *out = NULL;
    if (rep) memset(rep, 0, sizeof *rep);
    if (trep) {
        memset(trep, 0, sizeof *trep);
        trep->val_metric = -1;
    }
    if (!out) return sh_err(err, SH_EINVAL, "sh_prune_train: out is NULL");
    int rc = check(g0, train, o, err);
    if (rc) return rc;
    sh_graph *g = sh_graph_clone(g0, err);
    if (!g) return err ? err->code : SH_ENOMEM;
    sh_prune_report last = {0};
    sh_train_report acc = {0};
    acc.val_metric = -1;
    sh_train_opts to = o->train; /* the caller's step_fn, if any, still runs */
    to.keep_zeros = 1;
    to.l1 = 0;
    double s = o->prune.ratio;
    switch (o->schedule) {
    case SH_PRUNE_SCHED_ONESHOT:
        if (o->on_round) o->on_round(o->round_ctx, 1, 1, s);
        rc = prune_step(&g, o, s, &last, err);
        if (!rc && to.epochs > 0) rc = finetune(g, train, val, o, &to, &acc, err);
        break;
    case SH_PRUNE_SCHED_ITERATIVE: {
        double prev = 0;
        for (int k = 1; k <= o->rounds && !rc; k++) {
            double f = 1.0 - (double)k / o->rounds;
            double sk = k == o->rounds ? s : s * (1.0 - f * f * f);
            /* unstructured: the zeros already there count towards s_k;
             * structured: remove (s_k - s_{k-1}) of the original channels,
             * a fraction of the ones left */
            double r = o->structured ? (prev < 1 ? (sk - prev) / (1.0 - prev) : 0) : sk;
            if (r < 0) r = 0;
            if (o->on_round) o->on_round(o->round_ctx, k, o->rounds, sk);
            rc = prune_step(&g, o, r, &last, err);
            if (!rc && to.epochs > 0) rc = finetune(g, train, val, o, &to, &acc, err);
            prev = sk;
        }
        break;
    }
    case SH_PRUNE_SCHED_GRADUAL: {
        gradual gs = {0};
        gs.o = o;
        gs.s_i = o->initial_sparsity;
        gs.s_f = s;
        gs.user = o->train.step_fn;
        gs.user_ctx = o->train.step_ctx;
        to.step_fn = gradual_step;
        to.step_ctx = &gs;
        /* the schedule's length as sh_train will count it, for step 0 */
        int64_t items = train->kind == 2 ? (train->n - 1) / (to.seq_len > 0 ? to.seq_len : 128) : train->n;
        int64_t accum = to.accum > 0 ? to.accum : 1;
        int64_t spe = to.batch > 0 ? items / to.batch / accum : 0;
        gradual_plan(&gs, (int64_t)to.epochs * spe);
        if (o->on_round) o->on_round(o->round_ctx, 1, 1, s);
        if (gs.t0 == 0) { /* the first pruning step, before any training */
            rc = prune_in_place(g, o, gs.s_i, err);
            gs.last = gs.s_i;
            gs.events = 1;
        }
        if (!rc) rc = finetune(g, train, val, o, &to, &acc, err);
        if (!rc && gs.last < s) /* training stopped before the end (max_steps) */
            rc = prune_in_place(g, o, s, err);
        break;
    }
    case SH_PRUNE_SCHED_L1: {
        sh_train_opts lo = o->train;
        lo.keep_zeros = 1; /* zeros already there stay */
        lo.l1 = o->l1;
        if (o->l1_epochs > 0) lo.epochs = o->l1_epochs;
        if (lo.epochs > 0) rc = finetune(g, train, val, o, &lo, &acc, err);
        if (!rc && o->on_round) o->on_round(o->round_ctx, 1, 1, s);
        if (!rc) rc = prune_step(&g, o, s, &last, err);
        if (!rc && to.epochs > 0) rc = finetune(g, train, val, o, &to, &acc, err);
        break;
    }
    }
    if (!rc && rep) rc = final_report(g0, g, o, &last, rep, err);
    sh_prune_report_free(&last);
    if (rc) {
        sh_graph_free(g);
        if (rep) sh_prune_report_free(rep);
        return rc;
    }
    if (trep) *trep = acc;
    *out = g;
    return SH_OK;
}
