/* gptq.c - GPTQ rounding (Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ:
 * Accurate Post-Training Quantization for Generative Pre-trained
 * Transformers", Algorithm 1) and plain round-to-nearest on the same path.
 *
 * For a layer with weight W [rows, cols] and inputs X (H = 2 X X^T / n), the
 * columns are quantized one at a time; the error of column i, scaled by the
 * i-th diagonal entry of the upper Cholesky factor U of H^-1, is subtracted
 * from the not yet quantized columns (W[:, j] -= err * U[i, j]), which keeps
 * ||X W^T - X Q^T|| small.  Updates inside a block of 128 columns are applied
 * at once; those to later columns are gathered and applied per block (lazy
 * batch updates).  Groups: the parameters of a group are chosen by the
 * format's round-to-nearest rule on the (updated) weights of the group when
 * its first column is reached (static groups, no act-order). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"

int sh_gptq_matrix(const float *W0, int64_t rows, int64_t cols, const double *H, sh_format f, int64_t group,
                   double damp, int block, float *Q, uint8_t *codes, sh_qparams *params, sh_error *err)
{
    if (sh_qbase_format(f, NULL) < 0)
        return sh_err(err, SH_EINVAL, "GPTQ: format %s is not a grouped base format", sh_format_get(f) ? sh_format_get(f)->name : "?");
    if (group < 0 || (group > 0 && cols % group))
        return sh_err(err, SH_EINVAL, "GPTQ: group %lld does not divide the %lld columns", (long long)group,
                      (long long)cols);
    int pt = group == 0; /* per tensor: one set of parameters, from all of W */
    if (pt) {
        sh_qparams_rtn(f, W0, rows * cols, &params[0]);
        group = cols;
    }
    int64_t ng = cols / group;
    if (!H) { /* round to nearest */
        for (int64_t r = 0; r < rows; r++)
            for (int64_t gi = 0; gi < ng; gi++) {
                const float *x = W0 + r * cols + gi * group;
                sh_qparams *p = pt ? &params[0] : &params[r * ng + gi];
                if (!pt) sh_qparams_rtn(f, x, group, p);
                for (int64_t j = 0; j < group; j++)
                    Q[r * cols + gi * group + j] = sh_qvalue(f, p, x[j], &codes[r * cols + gi * group + j]);
            }
        return SH_OK;
    }
    int64_t B = block > 0 ? block : 128;
    if (group < B && B % group) B = group; /* a group never straddles blocks (unless it spans the row) */
    double *U = malloc(sizeof(double) * (size_t)(cols * cols));
    double *W = malloc(sizeof(double) * (size_t)(rows * cols));
    double *E = malloc(sizeof(double) * (size_t)(rows * B));
    unsigned char *dead = malloc((size_t)cols);
    float *gbuf = malloc(sizeof(float) * (size_t)group);
    int rc = SH_OK;
    if (!U || !W || !E || !dead || !gbuf) {
        rc = sh_err(err, SH_ENOMEM, "GPTQ: out of memory for a [%lld, %lld] layer", (long long)rows, (long long)cols);
        goto out;
    }
    if ((rc = sh_hinv_chol(H, cols, damp, U, dead, err))) goto out;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) W[r * cols + j] = dead[j] ? 0.0 : (double)W0[r * cols + j];
    for (int64_t i1 = 0; i1 < cols; i1 += B) {
        int64_t i2 = i1 + B < cols ? i1 + B : cols;
        for (int64_t i = i1; i < i2; i++) {
            double dii = U[i * cols + i];
            for (int64_t r = 0; r < rows; r++) {
                double *wr = W + r * cols;
                if (!pt && i % group == 0) {
                    for (int64_t j = 0; j < group; j++) gbuf[j] = (float)wr[i + j];
                    sh_qparams_rtn(f, gbuf, group, &params[r * ng + i / group]);
                }
                const sh_qparams *p = pt ? &params[0] : &params[r * ng + i / group];
                float q = sh_qvalue(f, p, (float)wr[i], &codes[r * cols + i]);
                Q[r * cols + i] = q;
                double e = (wr[i] - (double)q) / dii;
                E[r * B + (i - i1)] = e;
                const double *ui = U + i * cols;
                for (int64_t j = i + 1; j < i2; j++) wr[j] -= e * ui[j];
            }
        }
        /* lazy batch update of the columns after the block */
        if (i2 < cols)
            for (int64_t r = 0; r < rows; r++) {
                double *wr = W + r * cols;
                const double *er = E + r * B;
                for (int64_t t = 0; t < i2 - i1; t++) {
                    double e = er[t];
                    if (e == 0.0) continue;
                    const double *ut = U + (i1 + t) * cols;
                    for (int64_t j = i2; j < cols; j++) wr[j] -= e * ut[j];
                }
            }
    }
out:
    free(U);
    free(W);
    free(E);
    free(dead);
    free(gbuf);
    return rc;
}
