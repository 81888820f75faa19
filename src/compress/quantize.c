/* quantize.c - weight-only quantization of Gemm weights into the grouped
 * formats (q8_0, q4_0, q4_1, q3_0, q2_1), round to nearest per group of 32
 * along K.  The quantized Gemm runs on the low-bit kernels (ops/gemm_quant.c).
 *
 * A weight read by any other node (a tied embedding read by Gather, or a
 * weight shared by two Gemms) stays f32: quantizing it would change the other
 * reader, and duplicating it would make the file larger than the original
 * for that matrix (f32 + quantized copy). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "shrink.h"

void sh_quant_report_free(sh_quant_report *r)
{
    if (!r) return;
    free(r->layers);
    r->layers = NULL;
    r->n_layers = 0;
}

int sh_quant_format(int bits, int scheme, sh_error *err)
{
    if (scheme < 0 || scheme > 2) return sh_err(err, SH_EINVAL, "quantize: scheme %d (0 default, 1 sym, 2 asym)", scheme), -1;
    switch (bits) {
    case 0:
    case 8:
        if (scheme == 2) return sh_err(err, SH_EINVAL, "quantize: 8-bit has only a symmetric format (q8_0)"), -1;
        return SH_Q8_0;
    case 4: return scheme == 2 ? SH_Q4_1 : SH_Q4_0;
    case 3:
        if (scheme == 2) return sh_err(err, SH_EINVAL, "quantize: 3-bit has only a symmetric format (q3_0)"), -1;
        return SH_Q3_0;
    case 2:
        if (scheme == 1) return sh_err(err, SH_EINVAL, "quantize: 2-bit has only an asymmetric format (q2_1)"), -1;
        return SH_Q2_1;
    default:
        return sh_err(err, SH_EINVAL, "quantize: %d bits (weight-only supports 8, 4, 3 and 2)", bits), -1;
    }
}

static int readers(const sh_graph *g, int v)
{
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++)
        for (int j = 0; j < g->nodes[i].n_in; j++)
            if (g->nodes[i].in[j] == v) n++;
    return n;
}

static int is_output(const sh_graph *g, int v)
{
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == v) return 1;
    return 0;
}

int sh_quantize_weights(const sh_graph *g, const sh_quant_opts *o, sh_graph **out, sh_quant_report *rep,
                        sh_error *err)
{
    *out = NULL;
    if (rep) memset(rep, 0, sizeof *rep);
    sh_quant_opts def = {0};
    if (!o) o = &def;
    int fi = sh_quant_format(o->bits, o->scheme, err);
    if (fi < 0) return err ? err->code : SH_EINVAL;
    sh_format qf = (sh_format)fi;
    const sh_format_traits *qt = sh_format_get(qf);
    sh_graph *c = sh_graph_clone(g, err);
    if (!c) return err && err->code ? err->code : SH_ENOMEM;
    sh_quant_layer *L = calloc((size_t)c->n_nodes + 1, sizeof *L);
    float *back = NULL;
    size_t back_n = 0;
    int nl = 0, rc = SH_OK;
    if (!L) { rc = sh_err(err, SH_ENOMEM, "quantize: out of memory"); goto done; }
    for (int i = 0; i < c->n_nodes; i++) {
        sh_node *nd = &c->nodes[i];
        if (strcmp(nd->op, "Gemm") || nd->n_in < 2 || nd->in[1] < 0) continue;
        int wv = nd->in[1];
        sh_value *w = &c->values[wv];
        sh_quant_layer *l = &L[nl++];
        snprintf(l->name, sizeof l->name, "%s", nd->name ? nd->name : "");
        snprintf(l->weight, sizeof l->weight, "%s", w->name);
        l->fmt = w->init ? w->init->fmt : w->fmt;
        if (w->init && w->init->ndim == 2) l->rows = w->init->shape[0], l->cols = w->init->shape[1];
        l->bytes_before = l->bytes_after = w->init ? (int64_t)w->init->nbytes : 0;
        const char *why = NULL;
        if (!w->init) why = "weight is not an initializer";
        else if (w->init->fmt != SH_F32) why = "weight is not f32";
        else if (w->init->ndim != 2) why = "weight is not 2-D";
        else if (sh_attr_int(nd, "transB", 0) != 1) why = "transB=0 (weight [K,N])";
        else if (sh_attr_int(nd, "transA", 0) != 0) why = "transA=1";
        else if (sh_attr_float(nd, "alpha", 1.0f) != 1.0f) why = "alpha != 1";
        else if (readers(c, wv) > 1) why = "weight shared with another node (e.g. tied embedding): kept f32";
        else if (o->exclude && sh_name_in_list(o->exclude, l->name, l->weight)) why = "excluded";
        else if (o->skip_classifier && nd->n_out > 0 && is_output(c, nd->out[0])) why = "classifier (skipped)";
        if (why) {
            snprintf(l->note, sizeof l->note, "%s", why);
            continue;
        }
        /* K not a multiple of 32: rows are padded with zero weights to Kp
         * (stored shape [N, Kp], node attribute weight_k = K; the Gemm pads
         * its activations with zeros, which gives the exact same sums). */
        int64_t K = l->cols, Kp = (K + 31) / 32 * 32, n = l->rows * Kp;
        int64_t qs[2] = {l->rows, Kp};
        sh_tensor *q = sh_tensor_new(qf, 2, qs, err);
        if (!q) { rc = err && err->code ? err->code : SH_ENOMEM; goto done; }
        if ((size_t)(2 * n) > back_n) {
            free(back);
            back = malloc(sizeof(float) * (size_t)(2 * n));
            back_n = back ? (size_t)(2 * n) : 0;
            if (!back) { sh_tensor_free(q); rc = sh_err(err, SH_ENOMEM, "quantize: out of memory"); goto done; }
        }
        const float *w0 = w->init->data;
        float *src = back + n;
        for (int64_t r = 0; r < l->rows; r++) {
            memcpy(src + r * Kp, w0 + r * K, sizeof(float) * (size_t)K);
            memset(src + r * Kp + K, 0, sizeof(float) * (size_t)(Kp - K));
        }
        qt->from_f32(src, q->data, n);
        qt->to_f32(q->data, back, n);
        double mx = 0, sum = 0;
        for (int64_t r = 0; r < l->rows; r++)
            for (int64_t j = r * Kp; j < r * Kp + K; j++) {
                double e = fabs((double)src[j] - (double)back[j]);
                if (e > mx) mx = e;
                sum += e;
            }
        if (Kp != K) {
            sh_node_set_int(c, i, "weight_k", K);
            snprintf(l->note, sizeof l->note, "K %lld padded with zeros to %lld", (long long)K, (long long)Kp);
        }
        n = l->rows * K;
        l->max_err = mx;
        l->mean_err = n ? sum / (double)n : 0;
        l->fmt = qf;
        l->bytes_after = (int64_t)q->nbytes;
        sh_tensor_free(w->init);
        w->init = q;
        w->fmt = qf;
    }
    if (rep) {
        rep->bytes_before = sh_graph_param_bytes(g);
        rep->bytes_after = sh_graph_param_bytes(c);
        rep->n_layers = nl;
        rep->layers = L;
        L = NULL;
    }
done:
    free(L);
    free(back);
    if (rc) {
        sh_graph_free(c);
        if (rep) sh_quant_report_free(rep);
        return rc;
    }
    *out = c;
    return SH_OK;
}
