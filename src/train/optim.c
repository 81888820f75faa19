/* optim.c - SGD (momentum, Nesterov, L2 weight decay) and AdamW (decoupled
 * weight decay), matching torch.optim.SGD / torch.optim.AdamW. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shrink.h"
#include "train/train.h"

int sh_optimizer_new(const sh_train_opts *o, int n_params, sh_optimizer **out, sh_error *err)
{
    *out = NULL;
    const char *k = o->optimizer ? o->optimizer : "sgd";
    int kind;
    if (strcmp(k, "sgd") == 0) kind = SH_OPT_SGD;
    else if (strcmp(k, "adamw") == 0 || strcmp(k, "adam") == 0) kind = SH_OPT_ADAMW;
    else return sh_err(err, SH_EINVAL, "unknown optimizer '%s' (sgd, adamw)", k);
    if (n_params < 0) return sh_err(err, SH_EINVAL, "optimizer: %d parameters", n_params);
    sh_optimizer *opt = calloc(1, sizeof *opt);
    if (!opt) return sh_err(err, SH_ENOMEM, "out of memory");
    opt->kind = kind;
    opt->o = *o;
    opt->n = n_params;
    opt->numel = calloc((size_t)n_params + 1, sizeof(int64_t));
    opt->m = calloc((size_t)n_params + 1, sizeof(float *));
    opt->v = calloc((size_t)n_params + 1, sizeof(float *));
    if (!opt->numel || !opt->m || !opt->v) {
        sh_optimizer_free(opt);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    *out = opt;
    return SH_OK;
}

void sh_optimizer_free(sh_optimizer *opt)
{
    if (!opt) return;
    for (int i = 0; i < opt->n; i++) {
        if (opt->m) free(opt->m[i]);
        if (opt->v) free(opt->v[i]);
    }
    free(opt->m);
    free(opt->v);
    free(opt->numel);
    free(opt);
}

void sh_optimizer_begin_step(sh_optimizer *opt) { opt->t++; }

int sh_optimizer_alloc_state(sh_optimizer *opt, int i, int64_t n, sh_error *err)
{
    if (opt->numel[i] == n && opt->m[i]) return SH_OK;
    if (opt->numel[i] && opt->numel[i] != n)
        return sh_err(err, SH_ESHAPE, "optimizer: parameter %d has %lld elements, state has %lld", i, (long long)n,
                      (long long)opt->numel[i]);
    opt->m[i] = calloc((size_t)n + 1, sizeof(float));
    if (opt->kind == SH_OPT_ADAMW) opt->v[i] = calloc((size_t)n + 1, sizeof(float));
    if (!opt->m[i] || (opt->kind == SH_OPT_ADAMW && !opt->v[i])) return sh_err(err, SH_ENOMEM, "out of memory");
    opt->numel[i] = n;
    return SH_OK;
}

int sh_optimizer_update(sh_optimizer *opt, int i, float *w, const float *g, int64_t n, int decay, double lr,
                        sh_error *err)
{
    if (i < 0 || i >= opt->n) return sh_err(err, SH_EINVAL, "optimizer: parameter %d of %d", i, opt->n);
    const sh_train_opts *o = &opt->o;
    float wd = decay ? o->weight_decay : 0.0f;
    if (opt->kind == SH_OPT_SGD) {
        float mom = o->momentum;
        if (mom == 0.0f) {
            for (int64_t j = 0; j < n; j++) w[j] -= (float)lr * (g[j] + wd * w[j]);
            return SH_OK;
        }
        int fresh = !opt->m[i];
        int rc = sh_optimizer_alloc_state(opt, i, n, err);
        if (rc) return rc;
        float *buf = opt->m[i];
        float flr = (float)lr;
        for (int64_t j = 0; j < n; j++) {
            float d = g[j] + wd * w[j];
            /* PyTorch: the buffer starts as the first gradient */
            float b = fresh ? d : mom * buf[j] + d;
            buf[j] = b;
            float u = o->nesterov ? d + mom * b : b;
            w[j] -= flr * u;
        }
        return SH_OK;
    }
    int rc = sh_optimizer_alloc_state(opt, i, n, err);
    if (rc) return rc;
    float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    int64_t t = opt->t > 0 ? opt->t : 1;
    double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    float step_size = (float)(lr / bc1);
    float sbc2 = (float)sqrt(bc2);
    float shrink = (float)(1.0 - lr * wd);
    float *m = opt->m[i], *v = opt->v[i];
    for (int64_t j = 0; j < n; j++) {
        float gj = g[j];
        float wj = w[j] * shrink;
        float mj = b1 * m[j] + (1.0f - b1) * gj;
        float vj = b2 * v[j] + (1.0f - b2) * gj * gj;
        m[j] = mj;
        v[j] = vj;
        w[j] = wj - step_size * mj / (sqrtf(vj) / sbc2 + eps);
    }
    return SH_OK;
}
