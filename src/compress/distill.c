/* distill.c - knowledge distillation (Hinton et al. 2015): the student is
 * trained by sh_train with a loss hook that runs the teacher in an inference
 * program on the same batch and mixes the temperature-scaled KL divergence to
 * the teacher's soft targets with the cross-entropy on the labels:
 *
 *   loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)
 *
 * Language models: one row per position, the teacher's logits per position and
 * the next tokens as targets. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shrink.h"

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

typedef struct kd_ctx {
    sh_program *tp;        /* teacher inference program */
    const sh_graph *teacher;
    float temperature, alpha, smoothing;
    int lm;
    int checked;           /* output sizes compared (on the first batch) */
} kd_ctx;

static int kd_loss(void *ctx, const sh_tensor *x, const float *logits, const int32_t *targets, int64_t rows, int64_t c,
                   float scale, float *dlogits, double *loss, sh_error *err)
{
    kd_ctx *k = ctx;
    if (k->alpha == 0.0f && k->checked) { /* plain training: the teacher is not needed */
        *loss = sh_loss_xent(logits, targets, rows, c, k->smoothing, scale, dlogits);
        return SH_OK;
    }
    if (k->lm) sh_program_set_pos(k->tp, 0);
    const sh_tensor *ins[1] = {x};
    int rc = sh_program_run(k->tp, ins, 1, err);
    if (rc) {
        char m[sizeof err->msg];
        if (err) {
            snprintf(m, sizeof m, "teacher: %.900s", err->msg);
            memcpy(err->msg, m, sizeof m);
        }
        return rc;
    }
    sh_tensor *to = sh_program_output(k->tp, 0);
    int64_t tc = to->ndim > 0 ? to->shape[to->ndim - 1] : 1;
    if (to->fmt != SH_F32 || tc != c || sh_tensor_numel(to) != rows * c) {
        if (tc != c)
            return sh_err(err, SH_ESHAPE, "teacher has %lld outputs per item, student %lld", (long long)tc,
                          (long long)c);
        char s[96];
        return sh_err(err, SH_ESHAPE, "teacher output '%s' is %s, expected %lld rows of %lld logits",
                      k->teacher->values[k->teacher->outputs[0]].name, sh_shape_str(to->ndim, to->shape, s, sizeof s),
                      (long long)rows, (long long)c);
    }
    k->checked = 1;
    *loss = sh_loss_distill(logits, to->data, targets, rows, c, k->temperature, k->alpha, k->smoothing, scale,
                            dlogits);
    return SH_OK;
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
    kd_ctx k = {0};
    k.teacher = teacher;
    k.temperature = o->temperature;
    k.alpha = o->alpha;
    k.smoothing = o->train.label_smoothing;
    k.lm = train->kind == 2;
    sh_run_opts ro = {.nthreads = o->train.nthreads, .training = 0, .seed = o->train.seed};
    int rc = sh_program_new((sh_graph *)teacher, &ro, &k.tp, err);
    if (rc) return rc;
    sh_train_opts to = o->train;
    to.loss_fn = kd_loss;
    to.loss_ctx = &k;
    rc = sh_train(student, train, val, &to, rep, err);
    sh_program_free(k.tp);
    return rc;
}
