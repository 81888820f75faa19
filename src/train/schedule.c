/* schedule.c - learning-rate schedules: const, cosine with warm-up, step,
 * one-cycle (PyTorch OneCycleLR with cosine annealing). */
#include <math.h>
#include <string.h>

#include "shrink.h"

static double cos_anneal(double start, double end, double pct)
{
    return end + (start - end) / 2.0 * (cos(M_PI * pct) + 1.0);
}

double sh_lr_at(const sh_train_opts *o, int64_t step, int64_t total, int64_t steps_per_epoch)
{
    double lr = o->lr;
    const char *s = o->schedule ? o->schedule : "const";
    if (total < 1) total = 1;
    if (step < 0) step = 0;
    if (strcmp(s, "cosine") == 0) {
        int64_t warm = (int64_t)floor((double)o->warmup * (double)total + 0.5);
        if (warm > 0 && step < warm) return lr * (double)(step + 1) / (double)warm;
        int64_t span = total - warm;
        if (span <= 0) return lr;
        double pct = (double)(step - warm) / (double)span;
        if (pct > 1) pct = 1;
        return 0.5 * lr * (1.0 + cos(M_PI * pct));
    }
    if (strcmp(s, "step") == 0) {
        int64_t spe = steps_per_epoch > 0 ? steps_per_epoch : 1;
        int size = o->step_size > 0 ? o->step_size : 1;
        double gamma = o->gamma > 0 ? o->gamma : 0.1;
        int64_t k = (step / spe) / size;
        return lr * pow(gamma, (double)k);
    }
    if (strcmp(s, "onecycle") == 0) {
        /* torch.optim.lr_scheduler.OneCycleLR(max_lr=lr, total_steps=total,
         * pct_start, anneal_strategy='cos', div_factor=25, final_div_factor=1e4,
         * three_phase=False) */
        double pct_start = o->warmup > 0 ? o->warmup : 0.3;
        double initial = lr / 25.0, min_lr = initial / 1e4;
        double end1 = pct_start * (double)total - 1.0, end2 = (double)total - 1.0;
        if (step <= end1 || end1 <= 0) {
            if (end1 <= 0) return cos_anneal(lr, min_lr, end2 > 0 ? (double)step / end2 : 1.0);
            return cos_anneal(initial, lr, (double)step / end1);
        }
        double pct = (double)step - end1;
        double span = end2 - end1;
        if (span <= 0) return min_lr;
        pct /= span;
        if (pct > 1) pct = 1;
        return cos_anneal(lr, min_lr, pct);
    }
    return lr;
}
