/* smoothquant.c - SmoothQuant (Xiao et al. 2022, "SmoothQuant: Accurate and
 * Efficient Post-Training Quantization for Large Language Models") for the
 * int8 activation modes.
 *
 * int8 activations are quantized per tensor, so a few input channels with
 * large values (outliers, common after the norms of transformers) stretch
 * the range and cost every other channel its resolution.  Dividing channel c
 * of the activation by s_c and multiplying column c of every weight that
 * reads it by s_c leaves the product unchanged and moves the difficulty to
 * the weights, which are quantized per output channel:
 *     s_c = max|x_c|^alpha / max|W[:, c]|^(1 - alpha)
 * (alpha 0.5 in the paper; the max over the calibration rows and over the
 * rows of every layer reading x).  The division is free when x is the
 * output of an RMSNorm / LayerNorm: it is folded into the norm's weight (and
 * bias), the same folding as AWQ (awq.c).  Layers whose input does not come
 * from such a norm, or whose weight another node also reads (a tied
 * embedding), are left alone. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"

int sh_smooth_apply(sh_graph *g, const int *qok, double alpha, const sh_quant_opts *o, int *n_norms, sh_error *err)
{
    *n_norms = 0;
    if (!(alpha > 0.0 && alpha < 1.0)) return sh_err(err, SH_EINVAL, "smoothquant: alpha %g must be in (0, 1)", alpha);
    sh_layer *L = NULL;
    int n = 0, rc = sh_prunable_layers(g, &L, &n, err);
    if (rc) return rc;
    int *grp = malloc(sizeof(int) * ((size_t)n + 1)), *first = malloc(sizeof(int) * ((size_t)n + 1));
    int *norm = malloc(sizeof(int) * ((size_t)n + 1));
    sh_layer *sel = malloc(sizeof(sh_layer) * ((size_t)n + 1));
    sh_layer_stats *st = calloc((size_t)n + 1, sizeof *st);
    int ng = 0;
    if (!grp || !first || !norm || !sel || !st) {
        rc = sh_err(err, SH_ENOMEM, "smoothquant: out of memory");
        goto out;
    }
    /* groups: the quantized Gemm layers (transB=1) reading one norm's output
     * and nothing else reading it */
    for (int i = 0; i < n; i++) grp[i] = -1;
    for (int i = 0; i < n; i++) {
        const sh_node *nd = &g->nodes[L[i].node];
        if (grp[i] >= 0 || !qok[L[i].node] || strcmp(L[i].op, "Gemm") || L[i].transposed) continue;
        int v = nd->in[0];
        const char *why = NULL;
        int nm = sh_foldable_norm(g, v, L[i].cols, &why);
        if (nm < 0) continue;
        int readers = 0, members = 0, ok = 1;
        for (int a = 0; a < g->n_nodes; a++)
            for (int q = 0; q < g->nodes[a].n_in; q++) readers += g->nodes[a].in[q] == v;
        for (int j = 0; j < g->n_outputs; j++) ok &= g->outputs[j] != v;
        for (int j = i; j < n; j++) {
            if (g->nodes[L[j].node].in[0] != v) continue;
            ok &= qok[L[j].node] && !strcmp(L[j].op, "Gemm") && !L[j].transposed && L[j].cols == L[i].cols;
            /* a weight another node reads too (a tied embedding) cannot be scaled */
            int wr = 0;
            for (int a = 0; a < g->n_nodes; a++)
                for (int q = 0; q < g->nodes[a].n_in; q++) wr += g->nodes[a].in[q] == L[j].wv;
            ok &= wr == 1;
            members++;
        }
        if (!ok || members != readers) continue;
        for (int j = i; j < n; j++)
            if (g->nodes[L[j].node].in[0] == v) grp[j] = ng;
        first[ng] = i;
        norm[ng] = nm;
        sel[ng] = L[i];
        ng++;
    }
    if (ng == 0) goto out;
    /* one calibration pass for the input of every group */
    sh_calib_cfg cc = {.calib = o->calib, .samples = o->calib_samples, .batch = o->batch, .seq_len = o->seq_len,
                       .nthreads = o->nthreads};
    if ((rc = sh_calib_stats(g, sel, ng, &cc, st, err))) goto out;
    for (int q = 0; q < ng; q++) {
        int64_t K = L[first[q]].cols;
        double *wmax = calloc((size_t)K, sizeof(double));
        float *s = malloc(sizeof(float) * (size_t)K);
        if (!wmax || !s) {
            free(wmax), free(s);
            rc = sh_err(err, SH_ENOMEM, "smoothquant: out of memory");
            goto out;
        }
        for (int i = 0; i < n; i++) {
            if (grp[i] != q) continue;
            const float *W = g->values[L[i].wv].init->data;
            for (int64_t r = 0; r < L[i].rows; r++)
                for (int64_t c = 0; c < K; c++) wmax[c] = fmax(wmax[c], fabs((double)W[r * K + c]));
        }
        for (int64_t c = 0; c < K; c++) {
            double x = st[q].max_abs[c], w = wmax[c];
            double v = x > 1e-5 && w > 1e-5 ? pow(x, alpha) / pow(w, 1.0 - alpha) : 1.0;
            s[c] = (float)(v > 1e-3 ? v < 1e3 ? v : 1e3 : 1e-3);
        }
        for (int i = 0; i < n; i++) {
            if (grp[i] != q) continue;
            float *W = g->values[L[i].wv].init->data;
            for (int64_t r = 0; r < L[i].rows; r++)
                for (int64_t c = 0; c < K; c++) W[r * K + c] *= s[c];
        }
        const sh_node *nn = &g->nodes[norm[q]];
        for (int j = 1; j < nn->n_in && j < 3; j++) {
            if (nn->in[j] < 0) continue;
            float *w = g->values[nn->in[j]].init->data;
            for (int64_t c = 0; c < K; c++) w[c] /= s[c];
        }
        free(wmax);
        free(s);
        (*n_norms)++;
    }
out:
    for (int q = 0; st && q < ng; q++) sh_layer_stats_free(&st[q]);
    free(st);
    free(sel);
    free(norm);
    free(first);
    free(grp);
    free(L);
    return rc;
}
