/* awq.c - activation-aware weight quantization scales (Lin et al. 2023,
 * "AWQ"; the scale-migration idea of SmoothQuant, Xiao et al. 2022).
 *
 * Input channels that see large activations matter more: scaling weight
 * column c up by s_c (and the activation down by the same s_c) lets the
 * quantizer spend its levels on those columns.  The activation scaling is
 * free when the layer's input comes straight from an RMSNorm / LayerNorm:
 * it is folded into the norm's weight (and bias), so the f32 model computes
 * the same function.  s = mean|x|^alpha (normalised by sqrt(max s * min s)),
 * alpha from a grid of 21 values in [0, 1] minimising the output error of all
 * the layers reading that norm, measured exactly with the calibration
 * Hessian: sum over rows of dW H dW^T / 2 with dW = W - Q(W s) / s and Q the
 * round-to-nearest of the layer's final format.  alpha = 0 is plain RTN, so
 * the chosen scales never do worse on the calibration data. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"

int sh_foldable_norm(const sh_graph *g, int v, int64_t K, const char **why)
{
    int p = g->values[v].producer;
    if (p < 0) {
        *why = "input is not produced by a norm";
        return -1;
    }
    const sh_node *nd = &g->nodes[p];
    int rms = !strcmp(nd->op, "RMSNorm"), ln = !strcmp(nd->op, "LayerNormalization");
    if (!rms && !ln) {
        *why = "input does not come from RMSNorm / LayerNorm";
        return -1;
    }
    if (ln && (nd->n_out > 1 || sh_attr_int(nd, "axis", -1) != -1)) {
        *why = "LayerNormalization not over the last axis";
        return -1;
    }
    for (int j = 1; j < nd->n_in && j < 3; j++) {
        int wv = nd->in[j];
        if (wv < 0) continue;
        const sh_tensor *t = g->values[wv].init;
        if (!t || t->fmt != SH_F32 || sh_tensor_numel(t) != K) {
            *why = "norm weight is not an f32 initializer of the layer's input size";
            return -1;
        }
        int n = 0;
        for (int i = 0; i < g->n_nodes; i++)
            for (int q = 0; q < g->nodes[i].n_in; q++) n += g->nodes[i].in[q] == wv;
        if (n != 1) {
            *why = "norm weight shared with another node";
            return -1;
        }
    }
    return p;
}

static int is_graph_output(const sh_graph *g, int v)
{
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == v) return 1;
    return 0;
}

/* output error of layer weight W [R, K] (row-major copy) scaled by s */
static double scaled_err(const float *W, int64_t R, int64_t K, int64_t Kp, const double *H, const float *s,
                         sh_format base, int64_t gs, float *Ws, float *Q, uint8_t *codes, sh_qparams *P,
                         double *dw, sh_error *err)
{
    memset(Ws, 0, sizeof(float) * (size_t)(R * Kp));
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < K; c++) Ws[r * Kp + c] = W[r * K + c] * s[c];
    if (sh_gptq_matrix(Ws, R, Kp, NULL, base, gs < 0 ? Kp : gs, 0.01, 0, Q, codes, P, err)) return -1;
    double tot = 0;
    for (int64_t r = 0; r < R; r++) {
        for (int64_t c = 0; c < K; c++) dw[c] = (double)W[r * K + c] - (double)Q[r * Kp + c] / s[c];
        for (int64_t a = 0; a < K; a++) {
            double t = 0;
            const double *ha = H + a * K;
            for (int64_t b = 0; b < K; b++) t += ha[b] * dw[b];
            tot += dw[a] * t;
        }
    }
    return tot * 0.5;
}

int sh_awq_apply(sh_graph *g, const sh_layer *L, int n, const sh_format *fmt, const int64_t *group,
                 const sh_quant_opts *o, char (*notes)[160], sh_error *err)
{
    int rc = SH_OK;
    int *done = calloc((size_t)n + 1, sizeof(int)), *idx = malloc(sizeof(int) * ((size_t)n + 1));
    sh_layer_stats *st = calloc((size_t)n + 1, sizeof *st);
    if (!done || !idx || !st) {
        rc = sh_err(err, SH_ENOMEM, "AWQ: out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++)
        if (fmt[i] == SH_F32) done[i] = 1;
    for (int i = 0; i < n && !rc; i++) {
        if (done[i]) continue;
        const sh_node *nd = &g->nodes[L[i].node];
        int v = nd->in[0];
        int64_t K = L[i].cols;
        /* the group: every quantized layer reading v */
        int m = 0;
        for (int j = i; j < n; j++)
            if (!done[j] && g->nodes[L[j].node].in[0] == v) idx[m++] = j;
        const char *why = NULL;
        int readers = 0;
        for (int a = 0; a < g->n_nodes; a++)
            for (int q = 0; q < g->nodes[a].n_in; q++) readers += g->nodes[a].in[q] == v;
        int norm = sh_foldable_norm(g, v, K, &why);
        if (norm >= 0 && readers != m) why = "the norm's output is also read by a layer that is not quantized", norm = -1;
        if (norm >= 0 && is_graph_output(g, v)) why = "the norm's output is a graph output", norm = -1;
        for (int q = 0; q < m && norm >= 0; q++)
            if (strcmp(L[idx[q]].op, "Gemm") || L[idx[q]].transposed || L[idx[q]].cols != K)
                why = "a reader of the norm is not a Gemm (transB=1)", norm = -1;
        if (norm < 0) {
            for (int q = 0; q < m; q++) {
                snprintf(notes[idx[q]], 160, "awq skipped: %s", why);
                done[idx[q]] = 1;
            }
            continue;
        }
        /* statistics of v (one layer's are everyone's) */
        sh_calib_cfg cc = {.calib = o->calib, .samples = o->calib_samples, .batch = o->batch, .seq_len = o->seq_len,
                           .nthreads = o->nthreads, .want_h = 1};
        if ((rc = sh_calib_stats(g, &L[i], 1, &cc, &st[0], err))) break;
        int64_t Rmax = 0, Kp = (K + 31) / 32 * 32;
        for (int q = 0; q < m; q++) Rmax = L[idx[q]].rows > Rmax ? L[idx[q]].rows : Rmax;
        float *s = malloc(sizeof(float) * (size_t)K), *best = malloc(sizeof(float) * (size_t)K);
        float *Ws = malloc(sizeof(float) * (size_t)(Rmax * Kp)), *Q = malloc(sizeof(float) * (size_t)(Rmax * Kp));
        uint8_t *codes = malloc((size_t)(Rmax * Kp));
        sh_qparams *P = malloc(sizeof(sh_qparams) * (size_t)(Rmax * Kp / 32 + 1));
        double *dw = malloc(sizeof(double) * (size_t)K);
        if (!s || !best || !Ws || !Q || !codes || !P || !dw) rc = sh_err(err, SH_ENOMEM, "AWQ: out of memory");
        double best_err = INFINITY, err0 = 0, best_alpha = 0;
        for (int a = 0; a <= 20 && !rc; a++) {
            double alpha = a / 20.0, smax = 0, smin = INFINITY;
            for (int64_t c = 0; c < K; c++) {
                double x = st[0].mean_abs[c] > 1e-4 ? st[0].mean_abs[c] : 1e-4;
                s[c] = (float)pow(x, alpha);
                smax = fmax(smax, s[c]);
                smin = fmin(smin, s[c]);
            }
            float nrm = (float)sqrt(smax * smin);
            for (int64_t c = 0; c < K; c++) s[c] /= nrm;
            double e = 0;
            for (int q = 0; q < m && !rc; q++) {
                const sh_layer *l = &L[idx[q]];
                const float *W = g->values[l->wv].init->data;
                int gb = sh_qbase_format(fmt[idx[q]], NULL);
                double eq = scaled_err(W, l->rows, K, Kp, st[0].H, s, (sh_format)gb, group[idx[q]], Ws, Q, codes, P,
                                       dw, err);
                if (eq < 0) rc = err && err->code ? err->code : SH_EINTERNAL;
                e += eq;
            }
            if (a == 0) err0 = e;
            if (e < best_err) {
                best_err = e;
                best_alpha = alpha;
                memcpy(best, s, sizeof(float) * (size_t)K);
            }
        }
        if (!rc) {
            /* fold: W[:, c] *= s_c; norm weight (and bias) /= s_c */
            for (int q = 0; q < m; q++) {
                const sh_layer *l = &L[idx[q]];
                float *W = g->values[l->wv].init->data;
                for (int64_t r = 0; r < l->rows; r++)
                    for (int64_t c = 0; c < K; c++) W[r * K + c] *= best[c];
                snprintf(notes[idx[q]], 160, "awq alpha %.2f (output error %.3g -> %.3g)", best_alpha, err0, best_err);
                done[idx[q]] = 1;
            }
            const sh_node *nn = &g->nodes[norm];
            for (int j = 1; j < nn->n_in && j < 3; j++) {
                if (nn->in[j] < 0) continue;
                float *w = g->values[nn->in[j]].init->data;
                for (int64_t c = 0; c < K; c++) w[c] /= best[c];
            }
        }
        free(s), free(best), free(Ws), free(Q), free(codes), free(P), free(dw);
        sh_layer_stats_free(&st[0]);
    }
out:
    free(done);
    free(idx);
    free(st);
    return rc;
}
