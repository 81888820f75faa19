/* train.c - the training loop: seeded mini-batches through a training-mode
 * program, loss on output 0, backward, optimizer step on the program's
 * parameters (views of the graph's initializers), gradient accumulation,
 * LR schedules, validation per epoch, checkpoints that resume exactly.
 *
 * Data order: epoch e visits the items in a permutation drawn from
 * (seed, e) alone, so a run resumed from a checkpoint sees the same batches
 * as an uninterrupted one.  The last incomplete batch of an epoch is
 * dropped (and the last micro-batches that do not fill an accumulation
 * group).  The schedule runs over epochs * steps_per_epoch steps;
 * max_steps only stops early.
 *
 * Pruned models: with keep_zeros the zero pattern of every weight at the
 * start is a mask held through training (gradients of masked elements
 * zeroed, optimizer moments cleared, elements set back to 0 after every
 * step); l1 adds l1 * sign(w) to the weights' gradients; step_fn runs after
 * every optimizer step and may prune further (new masks when it asks).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shrink.h"
#include "train/train.h"

void sh_train_opts_default(sh_train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->optimizer = "adamw";
    o->lr = 1e-3f;
    o->momentum = 0.9f;
    o->weight_decay = 0.0f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->schedule = "const";
    o->step_size = 1;
    o->gamma = 0.1f;
    o->warmup = 0.0f;
    o->epochs = 1;
    o->batch = 64;
    o->accum = 1;
    o->seed = 1;
}

static void permutation(int64_t *perm, int64_t n, uint64_t seed, int64_t epoch)
{
    uint64_t s = seed * 0xD1B54A32D192ED03ull + (uint64_t)epoch * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(sh_rng_next(&s) % (uint64_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

typedef struct trainer {
    sh_graph *g;
    const sh_dataset *d;
    sh_train_opts o;
    int lm;               /* language model: tokens in, [B,T,V] logits out */
    int64_t T;            /* lm: sequence length */
    int64_t items;        /* images or windows per epoch */
    sh_tensor *x;         /* input batch */
    int32_t *y;           /* targets */
    int64_t rows;         /* target rows per batch */
} trainer;

static void gather(trainer *t, const int64_t *perm, int64_t first, int64_t count)
{
    const sh_dataset *d = t->d;
    if (!t->lm) {
        int64_t per = (int64_t)d->c * d->h * d->w;
        float *x = t->x->data;
        for (int64_t b = 0; b < count; b++) {
            int64_t i = perm[first + b];
            memcpy(x + b * per, d->x + i * per, sizeof(float) * (size_t)per);
            t->y[b] = d->y[i];
        }
        return;
    }
    int64_t T = t->T;
    int64_t *x = t->x->data;
    for (int64_t b = 0; b < count; b++) {
        int64_t s = perm[first + b] * T;
        for (int64_t k = 0; k < T; k++) {
            x[b * T + k] = d->tokens[s + k];
            t->y[b * T + k] = d->tokens[s + k + 1];
        }
    }
}

/* Accuracy (images) or mean NLL per token (text) of g on v. */
static int validate(sh_program *vp, trainer *t, const sh_dataset *v, int64_t limit, double *metric, sh_error *err)
{
    int64_t n, B;
    int64_t T = t->T;
    if (!t->lm) {
        n = v->n;
        B = 250;
    } else {
        n = (v->n - 1) / T;
        B = t->o.batch;
    }
    if (limit > 0 && limit < n) n = limit;
    if (n <= 0) return sh_err(err, SH_EINVAL, "validation set %s is too small", v->desc ? v->desc : "");
    double correct = 0, nll = 0;
    int64_t tokens = 0;
    int32_t *y = malloc(sizeof(int32_t) * (size_t)(B * (t->lm ? T : 1)));
    if (!y) return sh_err(err, SH_ENOMEM, "out of memory");
    int rc = SH_OK;
    for (int64_t first = 0; first < n && !rc; first += B) {
        int64_t cnt = n - first < B ? n - first : B;
        sh_tensor *x;
        if (!t->lm) {
            int64_t shape[4] = {cnt, v->c, v->h, v->w};
            x = sh_tensor_view(SH_F32, 4, shape, v->x + first * v->c * v->h * v->w, err);
        } else {
            int64_t shape[2] = {cnt, T};
            x = sh_tensor_new(SH_I64, 2, shape, err);
            if (x)
                for (int64_t b = 0; b < cnt; b++)
                    for (int64_t k = 0; k < T; k++) {
                        ((int64_t *)x->data)[b * T + k] = v->tokens[(first + b) * T + k];
                        y[b * T + k] = v->tokens[(first + b) * T + k + 1];
                    }
            sh_program_set_pos(vp, 0);
        }
        if (!x) {
            rc = err ? err->code : SH_ENOMEM;
            break;
        }
        const sh_tensor *ins[1] = {x};
        rc = sh_program_run(vp, ins, 1, err);
        sh_tensor_free(x);
        if (rc) break;
        sh_tensor *out = sh_program_output(vp, 0);
        int64_t C = out->shape[out->ndim - 1];
        const float *lg = out->data;
        if (!t->lm) {
            for (int64_t b = 0; b < cnt; b++) {
                int64_t best = 0;
                for (int64_t j = 1; j < C; j++)
                    if (lg[b * C + j] > lg[b * C + best]) best = j;
                correct += best == v->y[first + b];
            }
        } else {
            nll += sh_loss_xent(lg, y, cnt * T, C, 0.0f, 0.0f, NULL) * (double)(cnt * T);
            tokens += cnt * T;
        }
    }
    free(y);
    if (!rc) *metric = t->lm ? nll / (double)tokens : correct / (double)n;
    return rc;
}

/* Pruning masks held during training (opts->keep_zeros): per parameter,
 * NULL or one byte per element, 1 where the weight is held at zero. */
typedef struct maskset {
    int n;
    unsigned char **m;
} maskset;

static void masks_free(maskset *s)
{
    if (s->m)
        for (int i = 0; i < s->n; i++) free(s->m[i]);
    free(s->m);
    s->m = NULL;
    s->n = 0;
}

/* Clear the optimizer state of masked elements of parameter value v. */
static void clear_state(sh_optimizer *opt, int v, const unsigned char *m, int64_t n)
{
    if (v < 0 || v >= opt->n || opt->numel[v] != n) return;
    for (int64_t j = 0; j < n; j++)
        if (m[j]) {
            if (opt->m[v]) opt->m[v][j] = 0.0f;
            if (opt->v[v]) opt->v[v][j] = 0.0f;
        }
}

/* The zero pattern of every rank >= 2 parameter of p becomes its mask. */
static int masks_build(maskset *s, sh_program *p, sh_optimizer *opt, sh_error *err)
{
    masks_free(s);
    int np = sh_program_num_params(p);
    s->m = calloc((size_t)np + 1, sizeof *s->m);
    if (!s->m) return sh_err(err, SH_ENOMEM, "out of memory");
    s->n = np;
    for (int i = 0; i < np; i++) {
        int v;
        sh_tensor *w;
        sh_program_param(p, i, &v, &w, NULL);
        if (!w || w->fmt != SH_F32 || w->ndim < 2 || !w->data) continue;
        int64_t n = sh_tensor_numel(w), zeros = 0;
        const float *d = w->data;
        for (int64_t j = 0; j < n; j++) zeros += d[j] == 0.0f;
        if (!zeros) continue;
        if (!(s->m[i] = malloc((size_t)n))) return sh_err(err, SH_ENOMEM, "out of memory");
        for (int64_t j = 0; j < n; j++) s->m[i][j] = d[j] == 0.0f;
        clear_state(opt, v, s->m[i], n);
    }
    return SH_OK;
}

static void default_progress(void *ctx, int epoch, int64_t step, int64_t total, double loss, double rate, double eta,
                             int epoch_end, double val)
{
    const char *unit = ctx ? ctx : "items";
    if (epoch_end)
        fprintf(stderr, "epoch %d  step %lld/%lld  loss %.4f  %.1f %s/s%s", epoch + 1, (long long)step,
                (long long)total, loss, rate, unit, val >= 0 ? "" : "\n");
    else
        fprintf(stderr, "epoch %d  step %lld/%lld  loss %.4f  %.1f %s/s  ETA %.0fs\n", epoch + 1, (long long)step,
                (long long)total, loss, rate, unit, eta);
    if (epoch_end && val >= 0) fprintf(stderr, "  val %.4f\n", val);
}

int sh_train(sh_graph *g, const sh_dataset *train, const sh_dataset *val, const sh_train_opts *opts,
             sh_train_report *rep, sh_error *err)
{
    sh_train_opts def;
    sh_train_report dummy;
    if (!rep) rep = &dummy;
    memset(rep, 0, sizeof *rep);
    rep->val_metric = -1;
    if (!opts) {
        sh_train_opts_default(&def);
        opts = &def;
    }
    if (!g || !train) return sh_err(err, SH_EINVAL, "sh_train: model and training data are required");
    trainer t = {0};
    t.g = g;
    t.d = train;
    t.o = *opts;
    sh_train_opts *o = &t.o;
    if (o->batch < 1) return sh_err(err, SH_EINVAL, "batch size %d, must be >= 1", o->batch);
    if (o->accum < 1) o->accum = 1;
    if (o->epochs < 1) return sh_err(err, SH_EINVAL, "epochs %d, must be >= 1", o->epochs);
    if (!(o->lr > 0) || !isfinite(o->lr)) return sh_err(err, SH_EINVAL, "learning rate %g, must be > 0", o->lr);
    if (!o->schedule) o->schedule = "const";
    if (strcmp(o->schedule, "const") && strcmp(o->schedule, "cosine") && strcmp(o->schedule, "step") &&
        strcmp(o->schedule, "onecycle"))
        return sh_err(err, SH_EINVAL, "unknown schedule '%s' (const, cosine, step, onecycle)", o->schedule);
    if (g->n_inputs != 1 || g->n_outputs < 1)
        return sh_err(err, SH_EUNSUPPORTED, "sh_train: model '%s' has %d inputs and %d outputs (need 1 input)",
                      g->name, g->n_inputs, g->n_outputs);
    const sh_value *iv = &g->values[g->inputs[0]];
    int int_input = iv->fmt == SH_I64 || iv->fmt == SH_I32;
    if (train->kind == 2) {
        if (!int_input)
            return sh_err(err, SH_EINVAL, "model input '%s' takes images (%s) but %s is a text dataset", iv->name,
                          sh_format_get(iv->fmt)->name, train->desc ? train->desc : "the data");
        t.lm = 1;
        t.T = o->seq_len > 0 ? o->seq_len : 128;
        t.items = (train->n - 1) / t.T;
        if (val && val->kind != 2) return sh_err(err, SH_EINVAL, "validation data must be text like the training data");
    } else if (train->kind == 1) {
        if (int_input || iv->fmt != SH_F32)
            return sh_err(err, SH_EINVAL, "model input '%s' takes tokens but %s is an image dataset", iv->name,
                          train->desc ? train->desc : "the data");
        if (iv->ndim == 4) {
            int64_t want[3] = {train->c, train->h, train->w};
            for (int d = 0; d < 3; d++)
                if (iv->shape[d + 1] > 0 && iv->shape[d + 1] != want[d]) {
                    char a[96], b[96];
                    int64_t full[4] = {-1, train->c, train->h, train->w};
                    return sh_err(err, SH_ESHAPE, "model input '%s' is %s, images of %s are %s", iv->name,
                                  sh_shape_str(iv->ndim, iv->shape, a, sizeof a), train->desc ? train->desc : "data",
                                  sh_shape_str(4, full, b, sizeof b));
                }
        }
        if (val && val->kind != 1) return sh_err(err, SH_EINVAL, "validation data must be images like the training data");
        t.items = train->n;
    } else
        return sh_err(err, SH_EINVAL, "training dataset of unknown kind %d", train->kind);
    int64_t B = o->batch, A = o->accum;
    int64_t micro_per_epoch = t.items / B;
    int64_t steps_per_epoch = micro_per_epoch / A;
    if (steps_per_epoch < 1)
        return sh_err(err, SH_EINVAL, "%s has %lld %s, fewer than batch %lld x accumulation %lld",
                      train->desc ? train->desc : "training data", (long long)t.items, t.lm ? "sequences" : "items",
                      (long long)B, (long long)A);
    micro_per_epoch = steps_per_epoch * A;
    int64_t total = (int64_t)o->epochs * steps_per_epoch;
    int64_t stop_at = o->max_steps > 0 && o->max_steps < total ? o->max_steps : total;

    sh_optimizer *opt = NULL;
    sh_program *p = NULL, *vp = NULL;
    int64_t *perm = NULL;
    sh_tensor *dl = NULL;
    maskset masks = {0};
    if (!(o->l1 >= 0) || !isfinite(o->l1))
        return sh_err(err, SH_EINVAL, "L1 regularisation %g, must be >= 0", o->l1);
    int rc = sh_optimizer_new(o, g->n_values, &opt, err);
    if (rc) return rc;
    sh_train_pos pos = {0};
    if (o->checkpoint) {
        int found = 0;
        rc = sh_checkpoint_load(o->checkpoint, g, opt, &pos, &found, err);
        if (rc) goto out;
        if (found && (pos.batch != B || pos.accum != A)) {
            rc = sh_err(err, SH_EINVAL,
                        "checkpoint %s was written with batch %lld and accumulation %lld, now %lld and %lld",
                        o->checkpoint, (long long)pos.batch, (long long)pos.accum, (long long)B, (long long)A);
            goto out;
        }
        if (!found) {
            memset(&pos, 0, sizeof pos);
            pos.rng = o->seed;
        }
    } else
        pos.rng = o->seed;
    pos.batch = B;
    pos.accum = A;

    /* batch buffers */
    if (!t.lm) {
        int64_t shape[4] = {B, train->c, train->h, train->w};
        t.x = sh_tensor_new(SH_F32, 4, shape, err);
        t.rows = B;
    } else {
        int64_t shape[2] = {B, t.T};
        t.x = sh_tensor_new(iv->fmt == SH_I32 ? SH_I32 : SH_I64, 2, shape, err);
        t.rows = B * t.T;
    }
    t.y = malloc(sizeof(int32_t) * (size_t)t.rows);
    perm = malloc(sizeof(int64_t) * (size_t)t.items);
    if (!t.x || !t.y || !perm) {
        rc = t.x ? sh_err(err, SH_ENOMEM, "out of memory") : (err ? err->code : SH_ENOMEM);
        goto out;
    }
    sh_run_opts ro = {.nthreads = o->nthreads, .training = 1, .seed = o->seed};
    rc = sh_program_new(g, &ro, &p, err);
    if (rc) goto out;
    if (val) {
        sh_run_opts vo = {.nthreads = o->nthreads, .training = 0, .seed = o->seed};
        rc = sh_program_new(g, &vo, &vp, err);
        if (rc) goto out;
    }
    double t0 = sh_now(), last_report = t0, val_s = 0; /* rates exclude validation time */
    int64_t items_done = 0, step = pos.step, start_step = pos.step;
    double loss_sum = 0, last_loss = NAN;
    int64_t loss_n = 0;
    const char *unit = t.lm ? "tokens" : "images";
    void (*progress)(void *, int, int64_t, int64_t, double, double, double, int, double) = o->progress;
    void *pctx = o->progress_ctx;
    if (!progress && o->verbose) {
        progress = default_progress;
        pctx = (void *)unit;
    }
    int stop = step >= stop_at;
    int64_t epoch = pos.epoch;
    for (; epoch < o->epochs && !stop; epoch++) {
        permutation(perm, t.items, pos.rng, epoch); /* the checkpoint's seed on resume */
        int64_t mb = epoch == pos.epoch ? pos.micro : 0;
        loss_sum = 0;
        loss_n = 0;
        for (; mb < micro_per_epoch; mb++) {
            gather(&t, perm, mb * B, B);
            if (t.lm) sh_program_set_pos(p, 0);
            const sh_tensor *ins[1] = {t.x};
            rc = sh_program_run(p, ins, 1, err);
            if (rc) goto out;
            sh_tensor *lo = sh_program_output(p, 0);
            int64_t numel = sh_tensor_numel(lo);
            int64_t C = lo->ndim > 0 ? lo->shape[lo->ndim - 1] : 1;
            if (lo->fmt != SH_F32 || C < 1 || numel != t.rows * C) {
                char s[96];
                rc = sh_err(err, SH_ESHAPE, "model output '%s' is %s; expected [%lld, classes]%s",
                            g->values[g->outputs[0]].name, sh_shape_str(lo->ndim, lo->shape, s, sizeof s),
                            (long long)B, t.lm ? " per token" : "");
                goto out;
            }
            for (int64_t r = 0; r < t.rows; r++)
                if (t.y[r] >= C) {
                    rc = sh_err(err, SH_EINVAL, "label %d but the model has %lld outputs", t.y[r], (long long)C);
                    goto out;
                }
            if (!dl || sh_tensor_numel(dl) != numel) {
                sh_tensor_free(dl);
                dl = sh_tensor_new(SH_F32, lo->ndim, lo->shape, err);
                if (!dl) {
                    rc = err ? err->code : SH_ENOMEM;
                    goto out;
                }
            }
            double loss;
            if (o->loss_fn) {
                rc = o->loss_fn(o->loss_ctx, t.x, lo->data, t.y, t.rows, C, 1.0f / (float)A, dl->data, &loss, err);
                if (rc) goto out;
            } else
                loss = sh_loss_xent(lo->data, t.y, t.rows, C, o->label_smoothing, 1.0f / (float)A, dl->data);
            if (!isfinite(loss)) {
                rc = sh_err(err, SH_EINVAL, "loss is %g at step %lld (learning rate %g too high?)", loss,
                            (long long)step, o->lr);
                goto out;
            }
            loss_sum += loss;
            loss_n++;
            last_loss = loss;
            const sh_tensor *douts[16] = {dl};
            if (o->aux_fn) { /* distill: gradients of outputs 1.. (feature / attention distillation) */
                double aux = 0;
                rc = o->aux_fn(o->aux_ctx, p, 1.0f / (float)A, douts, g->n_outputs < 16 ? g->n_outputs : 16, &aux, err);
                if (rc) goto out;
                loss_sum += aux;
                last_loss += aux;
            }
            rc = sh_program_backward(p, douts, g->n_outputs, err);
            if (rc) goto out;
            items_done += t.lm ? B * t.T : B;
            if ((mb + 1) % A) continue;
            double lr = sh_lr_at(o, step, total, steps_per_epoch);
            sh_optimizer_begin_step(opt);
            /* the program knows its parameters after its first run: the
             * masks are the zero pattern before the first update */
            if (o->keep_zeros && !masks.m && (rc = masks_build(&masks, p, opt, err))) goto out;
            int np = sh_program_num_params(p);
            for (int i = 0; i < np; i++) {
                int v;
                sh_tensor *w, *gr;
                sh_program_param(p, i, &v, &w, &gr);
                if (!gr) continue;
                int64_t n = sh_tensor_numel(w);
                float *wd = w->data, *gd = gr->data;
                const unsigned char *mk = i < masks.n ? masks.m[i] : NULL;
                if (o->l1 > 0 && w->ndim >= 2)
                    for (int64_t j = 0; j < n; j++) gd[j] += wd[j] > 0 ? o->l1 : wd[j] < 0 ? -o->l1 : 0.0f;
                if (mk)
                    for (int64_t j = 0; j < n; j++)
                        if (mk[j]) gd[j] = 0.0f;
                rc = sh_optimizer_update(opt, v, wd, gd, n, w->ndim >= 2, lr, err);
                if (rc) goto out;
                if (mk) {
                    for (int64_t j = 0; j < n; j++)
                        if (mk[j]) wd[j] = 0.0f;
                    clear_state(opt, v, mk, n);
                }
            }
            sh_program_zero_grad(p);
            step++;
            if (o->step_fn) {
                int remask = 0;
                rc = o->step_fn(o->step_ctx, g, step, total, &remask, err);
                if (rc) goto out;
                if (remask && o->keep_zeros && (rc = masks_build(&masks, p, opt, err))) goto out;
            }
            int epoch_done = mb + 1 == micro_per_epoch;
            if (o->checkpoint && o->checkpoint_every > 0 && step % o->checkpoint_every == 0 && step < stop_at) {
                sh_train_pos cp = pos;
                cp.step = step;
                cp.epoch = epoch_done ? epoch + 1 : epoch;
                cp.micro = epoch_done ? 0 : mb + 1;
                rc = sh_checkpoint_save(o->checkpoint, g, opt, &cp, err);
                if (rc) goto out;
            }
            double now = sh_now();
            if (progress && now - last_report >= 1.0) {
                last_report = now;
                double rate = items_done / (now - t0 - val_s);
                double eta = (now - t0 - val_s) / (double)(step - start_step) * (double)(stop_at - step);
                progress(pctx, (int)epoch, step, stop_at, loss_sum / (double)loss_n, rate, eta, 0, -1);
            }
            if (step >= stop_at) {
                stop = 1;
                pos.micro = mb + 1;
                if (epoch_done) pos.micro = micro_per_epoch;
                break;
            }
        }
        int completed = mb >= micro_per_epoch || (stop && pos.micro >= micro_per_epoch);
        if (!stop || completed) {
            double vm = -1;
            if (vp && completed) {
                double v0 = sh_now();
                /* a fresh inference program each time: it optimizes (BN
                 * folding) a copy of the weights as they are now */
                sh_program_free(vp);
                vp = NULL;
                sh_run_opts vo = {.nthreads = o->nthreads, .training = 0, .seed = o->seed};
                rc = sh_program_new(g, &vo, &vp, err);
                if (!rc) rc = validate(vp, &t, val, o->limit_val, &vm, err);
                val_s += sh_now() - v0;
                if (rc) goto out;
                rep->val_metric = vm;
            }
            if (progress) {
                double now = sh_now();
                progress(pctx, (int)epoch, step, stop_at, loss_n ? loss_sum / (double)loss_n : NAN,
                         items_done / (now - t0 - val_s > 0 ? now - t0 - val_s : 1e-9), 0, 1, vm);
            }
        }
        if (stop) {
            if (completed) {
                epoch++;
                pos.micro = 0;
            }
            break;
        }
    }
    rep->steps = step;
    rep->final_loss = loss_n ? loss_sum / (double)loss_n : last_loss;
    rep->seconds = sh_now() - t0;
    rep->items_per_s = rep->seconds - val_s > 0 ? items_done / (rep->seconds - val_s) : 0;
    if (o->checkpoint) {
        sh_train_pos cp = pos;
        cp.step = step;
        cp.epoch = epoch;
        if (!stop) cp.micro = 0;
        cp.done = step >= total;
        rc = sh_checkpoint_save(o->checkpoint, g, opt, &cp, err);
        if (rc) goto out;
    }
out:
    masks_free(&masks);
    sh_tensor_free(dl);
    sh_tensor_free(t.x);
    free(t.y);
    free(perm);
    sh_program_free(p);
    sh_program_free(vp);
    sh_optimizer_free(opt);
    return rc;
}
