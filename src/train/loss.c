/* loss.c - cross-entropy (with label smoothing), KL divergence with
 * temperature (distillation), mean squared error.  Each returns the mean loss
 * and optionally writes scale * gradient. */
#include <math.h>
#include <stdlib.h>

#include "shrink.h"

double sh_loss_xent(const float *logits, const int32_t *targets, int64_t n, int64_t c, float smoothing, float scale,
                    float *dlogits)
{
    int64_t counted = 0;
    for (int64_t i = 0; i < n; i++)
        if (targets[i] >= 0 && targets[i] < c) counted++;
    double total = 0;
    double inv = counted ? 1.0 / (double)counted : 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *x = logits + i * c;
        float *dx = dlogits ? dlogits + i * c : NULL;
        int32_t t = targets[i];
        if (t < 0 || t >= c) {
            if (dx)
                for (int64_t j = 0; j < c; j++) dx[j] = 0.0f;
            continue;
        }
        float m = x[0];
        for (int64_t j = 1; j < c; j++) m = x[j] > m ? x[j] : m;
        double s = 0, sum_x = 0;
        for (int64_t j = 0; j < c; j++) {
            s += exp((double)(x[j] - m));
            sum_x += x[j];
        }
        double lse = (double)m + log(s);
        /* smoothed target: (1-eps) one-hot + eps/c uniform */
        double eps = smoothing;
        double nll = lse - (double)x[t];
        double smooth = lse - sum_x / (double)c;
        total += (1.0 - eps) * nll + eps * smooth;
        if (dx) {
            double g = scale * inv;
            for (int64_t j = 0; j < c; j++) {
                double p = exp((double)x[j] - lse);
                double q = eps / (double)c + (j == t ? 1.0 - eps : 0.0);
                dx[j] = (float)(g * (p - q));
            }
        }
    }
    return total * inv;
}

static void softmax_t(const float *x, int64_t c, double inv_t, double *p, double *logp)
{
    double m = x[0] * inv_t;
    for (int64_t j = 1; j < c; j++)
        if (x[j] * inv_t > m) m = x[j] * inv_t;
    double s = 0;
    for (int64_t j = 0; j < c; j++) s += exp(x[j] * inv_t - m);
    double lse = m + log(s);
    for (int64_t j = 0; j < c; j++) {
        logp[j] = x[j] * inv_t - lse;
        p[j] = exp(logp[j]);
    }
}

double sh_loss_kl(const float *student, const float *teacher, int64_t n, int64_t c, float temperature, float scale,
                  float *dstudent)
{
    double T = temperature > 0 ? temperature : 1.0, inv_t = 1.0 / T;
    double *buf = malloc(sizeof(double) * (size_t)c * 4);
    if (!buf) return NAN;
    double *ps = buf, *lps = buf + c, *pt = buf + 2 * c, *lpt = buf + 3 * c;
    double total = 0;
    for (int64_t i = 0; i < n; i++) {
        softmax_t(student + i * c, c, inv_t, ps, lps);
        softmax_t(teacher + i * c, c, inv_t, pt, lpt);
        double kl = 0;
        for (int64_t j = 0; j < c; j++)
            if (pt[j] > 0) kl += pt[j] * (lpt[j] - lps[j]);
        total += kl;
        if (dstudent) {
            /* d/ds of T^2 * KL / n = T * (ps - pt) / n */
            double g = scale * T / (double)n;
            for (int64_t j = 0; j < c; j++) dstudent[i * c + j] = (float)(g * (ps[j] - pt[j]));
        }
    }
    free(buf);
    return n ? total * T * T / (double)n : 0.0;
}

double sh_loss_mse(const float *y, const float *target, int64_t n, float scale, float *dy)
{
    double total = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)y[i] - (double)target[i];
        total += d * d;
        if (dy) dy[i] = (float)(scale * 2.0 * d / (double)n);
    }
    return n ? total / (double)n : 0.0;
}
