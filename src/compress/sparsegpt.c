/* sparsegpt.c - SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive
 * Language Models Can Be Accurately Pruned in One-Shot") for one layer.
 *
 * With H = 2/n sum x x^T the layer-input Hessian of ||W X - W' X||^2, the
 * columns of W [rows, cols] are visited left to right; a pruned weight's
 * error is spread over the columns still to come through the upper
 * Cholesky factor U of the damped inverse Hessian (H + 0.01 mean(diag H) I)^-1
 * (the OBS update restricted to the remaining columns, row by row at once):
 *
 *   err = (w - q) / U[i,i];  W[:, i:] -= err * U[i, i:]
 *
 * Lazy batches: updates inside a block of `blocksize` (128) columns are
 * applied at once, the block's accumulated error reaches the later columns
 * with one GEMM.  Adaptive mask selection: at the start of each block the
 * weights with the lowest w^2 / U[j,j]^2 of the whole block (all rows) go:
 * those <= the (floor(ratio * block elements))-th smallest, as in the
 * authors' code; N:M: at every M-th column the M-N lowest of each row's
 * next M columns go (the block size is rounded down to a multiple of M).
 * Dead inputs (diag H = 0) get diag 1 and zero weights.  Computed in double
 * (H, U and W), written back as f32.  Uses hessian.c's sh_hinv_chol.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"

typedef struct sv {
    double v;
    int64_t i;
} sv;

static int cmp_sv(const void *a, const void *b)
{
    const sv *x = a, *y = b;
    if (x->v < y->v) return -1;
    if (x->v > y->v) return 1;
    return (x->i > y->i) - (x->i < y->i);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int sh_sparsegpt_layer(float *wf, const sh_layer *l, const double *H, double ratio, int n, int m, int blocksize,
                       double damp, sh_error *err)
{
    int64_t R = l->rows, C = l->cols;
    if (blocksize <= 0) blocksize = 128;
    if (m > 0) {
        blocksize -= blocksize % m;
        if (blocksize < m) blocksize = m;
    }
    int64_t bs = blocksize;
    double *U = malloc(sizeof(double) * (size_t)(C * C));
    double *W = malloc(sizeof(double) * (size_t)(R * C));
    double *Err = malloc(sizeof(double) * (size_t)(R * bs));
    double *tmp = malloc(sizeof(double) * (size_t)(R * bs + 1));
    unsigned char *dead = malloc((size_t)C + 1), *mask = malloc((size_t)(R * bs) + 1);
    sv *grp = malloc(sizeof(sv) * (size_t)(m > 0 ? m : 1));
    int rc = SH_OK;
    if (!U || !W || !Err || !tmp || !dead || !mask || !grp) {
        rc = sh_err(err, SH_ENOMEM, "sparsegpt: out of memory (%lld x %lld layer)", (long long)R, (long long)C);
        goto out;
    }
    if ((rc = sh_hinv_chol(H, C, damp, U, dead, err))) goto out;
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < C; c++) W[r * C + c] = dead[c] ? 0.0 : (double)wf[sh_layer_at(l, r, c)];
    for (int64_t i1 = 0; i1 < C; i1 += bs) {
        int64_t i2 = i1 + bs < C ? i1 + bs : C, cnt = i2 - i1;
        memset(mask, 0, (size_t)(R * cnt));
        if (m <= 0 && ratio > 0) {
            /* adaptive mask over the block: w^2 / U[j,j]^2 */
            int64_t ne = R * cnt;
            for (int64_t r = 0; r < R; r++)
                for (int64_t j = 0; j < cnt; j++) {
                    double d = U[(i1 + j) * C + i1 + j], w = W[r * C + i1 + j];
                    tmp[r * cnt + j] = w * w / (d * d);
                }
            double *srt = malloc(sizeof(double) * (size_t)ne);
            if (!srt) {
                rc = sh_err(err, SH_ENOMEM, "sparsegpt: out of memory");
                goto out;
            }
            memcpy(srt, tmp, sizeof(double) * (size_t)ne);
            qsort(srt, (size_t)ne, sizeof(double), cmp_d);
            int64_t kth = (int64_t)((double)ne * ratio);
            if (kth > ne - 1) kth = ne - 1;
            double th = srt[kth];
            free(srt);
            for (int64_t e = 0; e < ne; e++) mask[e] = tmp[e] <= th;
        }
        for (int64_t j = 0; j < cnt; j++) {
            int64_t i = i1 + j;
            double d = U[i * C + i];
            if (m > 0 && j % m == 0)
                for (int64_t r = 0; r < R; r++) {
                    for (int q = 0; q < m; q++) {
                        double u = U[(i + q) * C + i + q], w = W[r * C + i + q];
                        grp[q].v = w * w / (u * u);
                        grp[q].i = q;
                    }
                    qsort(grp, (size_t)m, sizeof *grp, cmp_sv);
                    for (int q = 0; q < m - n; q++) mask[r * cnt + j + grp[q].i] = 1;
                }
            for (int64_t r = 0; r < R; r++) {
                double *wr = W + r * C;
                double w = wr[i], q = mask[r * cnt + j] ? 0.0 : w;
                double e = (w - q) / d;
                Err[r * bs + j] = e;
                if (e != 0.0)
                    for (int64_t c = i + 1; c < i2; c++) wr[c] -= e * U[i * C + c];
                wr[i] = q;
            }
        }
        /* lazy update of the columns after the block: W[:, i2:] -= Err U[i1:i2, i2:] */
        if (i2 < C)
            for (int64_t r = 0; r < R; r++) {
                double *wr = W + r * C;
                const double *er = Err + r * bs;
                for (int64_t j = 0; j < cnt; j++) {
                    double e = er[j];
                    if (e == 0.0) continue;
                    const double *ur = U + (i1 + j) * C;
                    for (int64_t c = i2; c < C; c++) wr[c] -= e * ur[c];
                }
            }
    }
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < C; c++) wf[sh_layer_at(l, r, c)] = (float)W[r * C + c];
out:
    free(U);
    free(W);
    free(Err);
    free(tmp);
    free(dead);
    free(mask);
    free(grp);
    return rc;
}
