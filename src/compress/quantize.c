/* quantize.c - weight-only quantization of Gemm, MatMul and Conv weights
 * into the grouped formats: q8_0, q4_0, q4_1, q3_0, q2_1, log4 with one
 * scale per 32 values along K, their _g64 / _g128 rows, or one scale per
 * output channel / per tensor (Gemm: the _ch / _t rows, one f32 scale per
 * row / tensor, codes packed at their real size; Conv: the 32-block layout
 * with the scale repeated, what the conv kernels read).  Rounding: to
 * nearest, or GPTQ with the calibration Hessian
 * (gptq.c, sequential: each layer sees the outputs of the already quantized
 * layers before it); optionally AWQ scaling first (awq.c) and bias
 * correction.  Per-layer bits (layer_bits) override the default.
 * A MatMul with a constant 2-D weight [K,N] (a PyTorch Linear exported to
 * ONNX) and a Gemm with transB=0 become Gemm transB=1 with the weight
 * transposed to [N,K] before quantization (shrink's Gemm reads A [...,K]).
 * The quantized Gemm runs on the low-bit kernels (ops/gemm_quant.c), the
 * quantized Conv on im2col + the same kernels (ops/conv_quant.c).
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
    if (scheme < 0 || scheme > 3)
        return sh_err(err, SH_EINVAL, "quantize: scheme %d (0 default, 1 sym, 2 asym, 3 log)", scheme), -1;
    if (scheme == 3) {
        if (bits == 4 || bits == 0) return SH_LOG4;
        return sh_err(err, SH_EINVAL, "quantize: the log (power-of-two) scheme has only a 4-bit format (log4), not %d bits",
                      bits),
               -1;
    }
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

/* Rewrite layer l (MatMul, or Gemm with transB=0) of c into Gemm with
 * transB=1 and its weight transposed to [N,K], the form the low-bit kernels
 * read: shrink's Gemm takes A of any rank [...,K] like MatMul (a 1-D A gives
 * [N], MatMul's semantics).  The weight is read by this node only (checked
 * by the caller).  l is updated to the new view. */
static int to_gemm_transb(sh_graph *c, sh_layer *l, sh_error *err)
{
    sh_node *nd = &c->nodes[l->node];
    sh_value *wv = &c->values[l->wv];
    const sh_tensor *w = wv->init;
    int64_t R = l->rows, K = l->cols, s[2] = {R, K};
    sh_tensor *t = sh_tensor_new(SH_F32, 2, s, err);
    if (!t) return err && err->code ? err->code : SH_ENOMEM;
    const float *src = w->data;
    float *dst = t->data;
    for (int64_t r = 0; r < R; r++)
        for (int64_t k = 0; k < K; k++) dst[r * K + k] = src[k * R + r];
    if (strcmp(nd->op, "Gemm") != 0) {
        char *op = strdup("Gemm");
        if (!op) {
            sh_tensor_free(t);
            return sh_err(err, SH_ENOMEM, "out of memory");
        }
        free(nd->op);
        nd->op = op;
    }
    if (sh_node_set_int(c, l->node, "transB", 1)) {
        sh_tensor_free(t);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    sh_tensor_free(wv->init);
    wv->init = t;
    wv->ndim = 2, wv->shape[0] = R, wv->shape[1] = K;
    l->op = nd->op;
    l->out_axis = 0, l->in_axis = 1, l->transposed = 0;
    return SH_OK;
}

static int is_output(const sh_graph *g, int v)
{
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == v) return 1;
    return 0;
}

/* bits for layer (node name / weight name) from "name=bits,..."; -1 if not listed */
static int layer_bits_of(const char *list, const char *a, const char *b, int *found_any)
{
    if (!list) return -1;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ','), *end = e ? e : p + strlen(p), *eq = memchr(p, '=', (size_t)(end - p));
        if (eq) {
            const char *s = p;
            while (s < eq && *s == ' ') s++;
            size_t len = (size_t)(eq - s);
            while (len && s[len - 1] == ' ') len--;
            if (len && ((a && strlen(a) == len && !strncmp(a, s, len)) || (b && strlen(b) == len && !strncmp(b, s, len)))) {
                if (found_any) *found_any = 1;
                return atoi(eq + 1);
            }
        }
        if (!e) break;
        p = e + 1;
    }
    return -1;
}

/* Check "name=bits,..." syntax; every name must match a layer. */
static int check_layer_bits(const char *list, const sh_graph *g, const sh_layer *L, int n, sh_error *err)
{
    const char *p = list;
    while (p && *p) {
        const char *e = strchr(p, ','), *end = e ? e : p + strlen(p), *eq = memchr(p, '=', (size_t)(end - p));
        char name[256];
        if (!eq || eq == p)
            return sh_err(err, SH_EINVAL, "quantize: layer_bits entry '%.*s' is not name=bits", (int)(end - p), p);
        size_t len = (size_t)(eq - p) < sizeof name - 1 ? (size_t)(eq - p) : sizeof name - 1;
        memcpy(name, p, len);
        name[len] = 0;
        char *q;
        long b = strtol(eq + 1, &q, 10);
        while (q < end && *q == ' ') q++;
        if (q != end || !(b == 0 || b == 2 || b == 3 || b == 4 || b == 8))
            return sh_err(err, SH_EINVAL, "quantize: layer_bits '%s=%.*s': bits must be 0 (f32), 2, 3, 4 or 8", name,
                          (int)(end - eq - 1), eq + 1);
        int hit = 0;
        for (int i = 0; i < n && !hit; i++)
            if (sh_name_in_list(name, L[i].name, g->values[L[i].wv].name)) hit = 1;
        if (!hit) return sh_err(err, SH_EINVAL, "quantize: layer_bits names '%s', which is no Gemm / Conv layer", name);
        if (!e) break;
        p = e + 1;
    }
    return SH_OK;
}

/* One layer being quantized. */
typedef struct qjob {
    int layer;            /* index in L */
    sh_format base, fmt;  /* base 32-block format; stored format */
    int gran;             /* SH_QGRAN_GROUP / CHANNEL / TENSOR */
    int64_t group;        /* values per scale (GROUP), K padded (CHANNEL), 0 (TENSOR) */
    int64_t K, Kp;        /* real / padded columns */
    sh_tensor *q;         /* packed result */
    float *dq;            /* dequantized [rows, K] (for the report and bias correction) */
    double bias_shift;    /* mean |bias change| (bias correction) */
    int bias_fixed;
} qjob;

typedef struct qctx {
    const sh_quant_opts *o;
    sh_graph *c;          /* the result graph */
    const sh_layer *L;
    qjob *jobs;           /* indexed by layer */
    int *job_of;          /* layer -> job index or -1 */
} qctx;

/* Quantize the f32 weight w ([rows, K] view of layer l) into j->q and j->dq;
 * H (k = Kp) or NULL for round to nearest. */
static int quantize_job(qctx *x, qjob *j, const sh_layer *l, const float *w, const double *H, sh_error *err)
{
    int64_t R = l->rows, K = j->K, Kp = j->Kp;
    float *W = calloc((size_t)(R * Kp), sizeof(float)), *Q = malloc(sizeof(float) * (size_t)(R * Kp));
    uint8_t *codes = malloc((size_t)(R * Kp));
    int64_t gs = j->gran == SH_QGRAN_GROUP ? j->group : j->gran == SH_QGRAN_CHANNEL ? Kp : 0;
    int64_t np = gs ? R * (Kp / gs) : 1;
    sh_qparams *P = malloc(sizeof(sh_qparams) * (size_t)np), *P32 = malloc(sizeof(sh_qparams) * (size_t)(Kp / 32 + 1));
    double *Hp = NULL;
    int rc = SH_OK;
    if (!W || !Q || !codes || !P || !P32) {
        rc = sh_err(err, SH_ENOMEM, "quantize: out of memory for layer '%s'", l->name);
        goto out;
    }
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < K; c++) W[r * Kp + c] = w[sh_layer_at(l, r, c)];
    if (H && Kp != K) { /* padded columns: zero rows / columns (dead in GPTQ) */
        Hp = calloc((size_t)(Kp * Kp), sizeof(double));
        if (!Hp) {
            rc = sh_err(err, SH_ENOMEM, "quantize: out of memory");
            goto out;
        }
        for (int64_t a = 0; a < K; a++) memcpy(Hp + a * Kp, H + a * K, sizeof(double) * (size_t)K);
        H = Hp;
    }
    if (gs) rc = sh_gptq_matrix(W, R, Kp, H, j->base, gs, x->o->gptq_damp > 0 ? x->o->gptq_damp : 0.01, 0, Q, codes,
                                P, err);
    else rc = sh_gptq_matrix(W, R, Kp, H, j->base, 0, x->o->gptq_damp > 0 ? x->o->gptq_damp : 0.01, 0, Q, codes, P,
                             err);
    if (rc) {
        sh_error_wrap(err, "layer '%s' (%s)", l->name, l->op);
        goto out;
    }
    int64_t qs[2] = {R, Kp};
    if (sh_format_get(j->fmt)->packed) { /* _ch / _t rows: the parameters as chosen, f32 */
        if ((rc = sh_qrows_pack(j->fmt, R, Kp, P, codes, &j->q, err))) goto out;
    } else
        j->q = sh_tensor_new(j->fmt, 2, qs, err);
    if (!j->q) {
        rc = err && err->code ? err->code : SH_ENOMEM;
        goto out;
    }
    size_t rb = sh_format_bytes(j->fmt, Kp);
    for (int64_t r = 0; r < R && !sh_format_get(j->fmt)->packed; r++) {
        const sh_qparams *pr;
        if (j->gran == SH_QGRAN_GROUP) pr = P + r * (Kp / gs);
        else { /* channel / tensor: the scale repeated in every 32-block */
            for (int64_t b = 0; b < Kp / 32; b++) P32[b] = gs ? P[r] : P[0];
            pr = P32;
        }
        sh_qrow_pack(j->fmt, pr, codes + r * Kp, Kp, (char *)j->q->data + r * rb);
    }
    j->dq = malloc(sizeof(float) * (size_t)(R * K));
    if (!j->dq) {
        rc = sh_err(err, SH_ENOMEM, "quantize: out of memory");
        goto out;
    }
    /* the values the stored format really decodes to */
    if ((rc = sh_qtensor_to_f32(j->q, W, err))) goto out; /* W reused: [R, Kp] */
    for (int64_t r = 0; r < R; r++) memcpy(j->dq + r * K, W + r * Kp, sizeof(float) * (size_t)K);
out:
    free(W);
    free(Q);
    free(codes);
    free(P);
    free(P32);
    free(Hp);
    return rc;
}

/* Add a zero bias [rows] to layer l of graph g if it has none; value index. */
static int ensure_bias(sh_graph *g, const sh_layer *l, sh_error *err)
{
    sh_node *nd = &g->nodes[l->node];
    if (nd->n_in > 2 && nd->in[2] >= 0) {
        const sh_value *b = &g->values[nd->in[2]];
        if (b->init && b->init->fmt == SH_F32 && sh_tensor_numel(b->init) == l->rows && readers(g, nd->in[2]) == 1)
            return nd->in[2];
        return -1;
    }
    char name[300];
    snprintf(name, sizeof name, "%s.bias_correction", g->values[l->wv].name);
    int64_t s[1] = {l->rows};
    sh_tensor *t = sh_tensor_new(SH_F32, 1, s, err);
    if (!t) return -1;
    int v = sh_graph_add_init(g, name, t, err);
    if (v < 0) return -1;
    nd = &g->nodes[l->node]; /* (nodes do not move, values may) */
    int *ni = realloc(nd->in, sizeof(int) * 3);
    if (!ni) return -1;
    nd->in = ni;
    nd->in[2] = v;
    nd->n_in = 3;
    return v;
}

/* Bias correction: b += (W - Q) E[x], written to graph g (work or result). */
static void correct_bias(sh_graph *g, const sh_layer *l, const qjob *j, const float *w, const double *mean,
                         double *shift, sh_error *err)
{
    int bv = ensure_bias(g, l, err);
    if (bv < 0) return;
    float *b = g->values[bv].init->data;
    float beta = strcmp(l->op, "Gemm") ? 1.0f : sh_attr_float(&g->nodes[l->node], "beta", 1.0f);
    double tot = 0;
    for (int64_t r = 0; r < l->rows; r++) {
        double s = 0;
        for (int64_t c = 0; c < j->K; c++) s += ((double)w[sh_layer_at(l, r, c)] - j->dq[r * j->K + c]) * mean[c];
        if (beta != 0.0f) b[r] += (float)(s / beta);
        tot += fabs(s);
    }
    if (shift) *shift = tot / (double)(l->rows ? l->rows : 1);
}

/* sequential callback: quantize layer i on the work graph */
static int seq_fn(void *ctx, sh_graph *work, const sh_layer *l, int i, const sh_layer_stats *st, sh_error *err)
{
    qctx *x = ctx;
    int ji = x->job_of[i];
    if (ji < 0) return SH_OK;
    qjob *j = &x->jobs[ji];
    float *w = work->values[l->wv].init->data;
    int rc = quantize_job(x, j, l, w, x->o->gptq ? st->H : NULL, err);
    if (rc) return rc;
    if (x->o->bias_correction) {
        /* the original (f32) weight of this layer is still in work */
        correct_bias(x->c, l, j, w, st->mean, &j->bias_shift, err);
        correct_bias(work, l, j, w, st->mean, NULL, err);
        j->bias_fixed = 1;
    }
    /* later layers see this layer quantized */
    for (int64_t r = 0; r < l->rows; r++)
        for (int64_t c = 0; c < j->K; c++) w[sh_layer_at(l, r, c)] = j->dq[r * j->K + c];
    return SH_OK;
}

int sh_quantize_weights(const sh_graph *g, const sh_quant_opts *o, sh_graph **out, sh_quant_report *rep,
                        sh_error *err)
{
    *out = NULL;
    if (rep) memset(rep, 0, sizeof *rep);
    sh_quant_opts def = {0};
    if (!o) o = &def;
    if (o->mode != SH_QMODE_WEIGHT)
        return sh_err(err, SH_EINVAL, "quantize: sh_quantize_weights is weight-only (mode %d asked)", o->mode);
    int fi = sh_quant_format(o->bits, o->scheme, err);
    if (fi < 0) return err ? err->code : SH_EINVAL;
    int gran = o->granularity == SH_QGRAN_DEFAULT ? SH_QGRAN_GROUP : o->granularity;
    if (gran < SH_QGRAN_TENSOR || gran > SH_QGRAN_GROUP)
        return sh_err(err, SH_EINVAL, "quantize: granularity %d (1 tensor, 2 channel, 3 group)", o->granularity);
    int group = o->group > 0 ? o->group : 32;
    if (gran == SH_QGRAN_GROUP && group != 32 && group != 64 && group != 128)
        return sh_err(err, SH_EINVAL, "quantize: group %d (weight-only groups are 32, 64 or 128 values)", o->group);
    if ((o->gptq || o->awq || o->bias_correction) && !o->calib)
        return sh_err(err, SH_EINVAL, "quantize: %s needs calibration data (calib)",
                      o->gptq ? "GPTQ" : o->awq ? "AWQ" : "bias correction");
    if (o->gptq_damp < 0) return sh_err(err, SH_EINVAL, "quantize: gptq_damp %g < 0", o->gptq_damp);
    sh_graph *c = sh_graph_clone(g, err);
    if (!c) return err && err->code ? err->code : SH_ENOMEM;
    sh_layer *L = NULL;
    int nl = 0, rc = SH_OK, nq = 0;
    sh_quant_layer *R = NULL;
    qjob *J = NULL;
    int *job_of = NULL;
    /* BatchNorm after a Conv / Gemm is folded first: it is the folded weight
     * that runs, so it is the one to quantize */
    if ((rc = sh_graph_fold_batchnorm(c, err))) goto done;
    if ((rc = sh_prunable_layers(c, &L, &nl, err))) goto done;
    if (o->layer_bits && (rc = check_layer_bits(o->layer_bits, c, L, nl, err))) goto done;
    R = calloc((size_t)nl + 1, sizeof *R);
    J = calloc((size_t)nl + 1, sizeof *J);
    job_of = malloc(sizeof(int) * ((size_t)nl + 1));
    if (!R || !J || !job_of) {
        rc = sh_err(err, SH_ENOMEM, "quantize: out of memory");
        goto done;
    }
    for (int i = 0; i < nl; i++) {
        const sh_layer *l = &L[i];
        sh_node *nd = &c->nodes[l->node];
        sh_value *w = &c->values[l->wv];
        sh_quant_layer *q = &R[i];
        job_of[i] = -1;
        snprintf(q->name, sizeof q->name, "%s", nd->name ? nd->name : "");
        snprintf(q->weight, sizeof q->weight, "%s", w->name);
        q->fmt = w->init->fmt;
        q->rows = l->rows, q->cols = l->cols;
        q->bytes_before = q->bytes_after = (int64_t)w->init->nbytes;
        int conv = !strcmp(l->op, "Conv");
        const char *why = NULL;
        int lb = layer_bits_of(o->layer_bits, q->name, q->weight, NULL);
        int mm = !strcmp(l->op, "MatMul");
        if (!conv && !mm && sh_attr_float(nd, "alpha", 1.0f) != 1.0f) why = "alpha != 1";
        else if (mm && nd->n_in != 2) why = "MatMul with other than 2 inputs";
        else if (conv && w->init->ndim != 4) why = "not a 2-D convolution";
        else if (conv && sh_attr_string(nd, "auto_pad", "NOTSET")[0] && strcmp(sh_attr_string(nd, "auto_pad", "NOTSET"), "NOTSET"))
            why = "Conv with auto_pad";
        else if (readers(c, l->wv) > 1) why = "weight shared with another node (e.g. tied embedding): kept f32";
        else if (o->exclude && sh_name_in_list(o->exclude, q->name, q->weight)) why = "excluded";
        else if (lb == 0) why = "layer_bits: kept f32";
        else if (o->skip_classifier && lb < 0 && nd->n_out > 0 && is_output(c, nd->out[0])) why = "classifier (skipped)";
        int lfi = fi;
        if (!why && lb > 0) {
            lfi = sh_quant_format(lb, o->scheme == 3 && lb != 4 ? 0 : o->scheme, err);
            if (lfi < 0) {
                rc = err->code;
                goto done;
            }
        }
        qjob *j = &J[nq];
        j->layer = i;
        j->base = (sh_format)lfi;
        j->gran = gran;
        j->K = l->cols;
        if (!why) {
            if (gran == SH_QGRAN_GROUP) {
                j->group = group;
                j->fmt = (sh_format)sh_qgroup_format(j->base, group);
                /* K padded with zero weights to a whole group (the node
                 * gets weight_k = K and pads its activations) */
                j->Kp = (l->cols + group - 1) / group * group;
            } else {
                /* the _ch / _t row (one f32 scale per row / tensor, codes
                 * at their real size), Gemm and Conv alike */
                j->fmt = (sh_format)sh_qrows_format(j->base, gran == SH_QGRAN_TENSOR);
                j->Kp = (l->cols + 31) / 32 * 32;
                j->group = 0;
            }
        }
        if (why) {
            snprintf(q->note, sizeof q->note, "%s", why);
            continue;
        }
        /* MatMul / Gemm transB=0 (weight [K,N]): the kernels read [N,K] */
        if (l->transposed && (rc = to_gemm_transb(c, &L[i], err))) goto done;
        job_of[i] = nq++;
    }
    qctx x = {.o = o, .c = c, .L = L, .jobs = J, .job_of = job_of};
    if (o->awq && nq) {
        char(*notes)[160] = calloc((size_t)nl, sizeof *notes);
        sh_format *fm = calloc((size_t)nl, sizeof *fm);
        int64_t *gs = calloc((size_t)nl, sizeof *gs);
        if (!notes || !fm || !gs) rc = sh_err(err, SH_ENOMEM, "out of memory");
        for (int i = 0; i < nl && !rc; i++) {
            /* channel / tensor: the base format (gs below says the granularity) */
            fm[i] = job_of[i] >= 0 ? (J[job_of[i]].gran == SH_QGRAN_GROUP ? J[job_of[i]].fmt : J[job_of[i]].base) : SH_F32;
            if (job_of[i] >= 0) { /* group size; -1 per channel, 0 per tensor */
                const qjob *jj = &J[job_of[i]];
                gs[i] = jj->gran == SH_QGRAN_GROUP ? jj->group : jj->gran == SH_QGRAN_CHANNEL ? -1 : 0;
            }
        }
        if (!rc) rc = sh_awq_apply(c, L, nl, fm, gs, o, notes, err);
        for (int i = 0; i < nl && !rc; i++)
            if (notes[i][0]) snprintf(R[i].note, sizeof R[i].note, "%s", notes[i]);
        free(notes);
        free(fm);
        free(gs);
        if (rc) goto done;
    }
    if (o->gptq || o->bias_correction) {
        /* sequential: only the layers that are quantized */
        sh_layer *S = malloc(sizeof(sh_layer) * ((size_t)nq + 1));
        int *jo = malloc(sizeof(int) * ((size_t)nq + 1));
        if (!S || !jo) rc = sh_err(err, SH_ENOMEM, "out of memory");
        for (int k = 0; k < nq && !rc; k++) S[k] = L[J[k].layer], jo[k] = k;
        qctx xs = x;
        xs.job_of = jo;
        sh_calib_cfg cc = {.calib = o->calib, .samples = o->calib_samples, .batch = o->batch, .seq_len = o->seq_len,
                           .nthreads = o->nthreads, .want_h = o->gptq};
        if (!rc) rc = sh_calib_sequential(c, S, nq, &cc, seq_fn, &xs, err);
        free(S);
        free(jo);
        if (rc) goto done;
    } else {
        for (int k = 0; k < nq && !rc; k++) {
            const sh_layer *l = &L[J[k].layer];
            rc = quantize_job(&x, &J[k], l, c->values[l->wv].init->data, NULL, err);
        }
        if (rc) goto done;
    }
    /* install the packed weights, fill the report */
    for (int k = 0; k < nq; k++) {
        qjob *j = &J[k];
        const sh_layer *l = &L[j->layer];
        sh_quant_layer *q = &R[j->layer];
        sh_value *w = &c->values[l->wv];
        const float *w0 = w->init->data;
        double mx = 0, sum = 0;
        for (int64_t r = 0; r < l->rows; r++)
            for (int64_t cc = 0; cc < j->K; cc++) {
                double e = fabs((double)w0[sh_layer_at(l, r, cc)] - j->dq[r * j->K + cc]);
                if (e > mx) mx = e;
                sum += e;
            }
        q->max_err = mx;
        q->mean_err = l->rows * j->K > 0 ? sum / (double)(l->rows * j->K) : 0;
        int kn = l->node;
        if (!strcmp(l->op, "Conv")) {
            int64_t ks[2] = {w->init->shape[2], w->init->shape[3]};
            sh_node_set_ints(c, kn, "kernel_shape", 2, ks);
            sh_node_set_int(c, kn, "weight_k", j->K);
        } else if (j->Kp != j->K)
            sh_node_set_int(c, kn, "weight_k", j->K);
        char note[160] = "";
        size_t nn = 0;
        if (j->Kp != j->K)
            nn += (size_t)snprintf(note + nn, sizeof note - nn, "; K %lld padded with zeros to %lld", (long long)j->K,
                                   (long long)j->Kp);
        if (j->gran != SH_QGRAN_GROUP && nn < sizeof note)
            nn += (size_t)snprintf(note + nn, sizeof note - nn, "; per-%s scale%s", j->gran == SH_QGRAN_CHANNEL ? "channel" : "tensor",
                                   sh_format_get(j->fmt)->packed ? "" : " (repeated in 32-blocks: Conv reads 32-block rows)");
        if (o->gptq && nn < sizeof note) nn += (size_t)snprintf(note + nn, sizeof note - nn, "; gptq");
        if (j->bias_fixed && nn < sizeof note)
            nn += (size_t)snprintf(note + nn, sizeof note - nn, "; bias corrected (mean |shift| %.3g)", j->bias_shift);
        if (q->note[0] && nn + 2 < sizeof note) {
            memcpy(note + nn, "; ", 2);
            nn += 2;
            size_t ql = strlen(q->note), room = sizeof note - 1 - nn;
            memcpy(note + nn, q->note, ql < room ? ql : room);
            note[nn + (ql < room ? ql : room)] = 0;
        }
        snprintf(q->note, sizeof q->note, "%s", note[0] ? note + 2 : "");
        q->fmt = j->fmt;
        q->bytes_after = (int64_t)j->q->nbytes;
        sh_tensor_free(w->init);
        w->init = j->q;
        w->fmt = j->fmt;
        w->ndim = 2;
        w->shape[0] = l->rows, w->shape[1] = j->Kp;
        j->q = NULL;
    }
    if (rep) {
        rep->bytes_before = sh_graph_param_bytes(g);
        rep->bytes_after = sh_graph_param_bytes(c);
        rep->n_layers = nl;
        rep->layers = R;
        R = NULL;
    }
done:
    for (int k = 0; J && k < nq; k++) {
        sh_tensor_free(J[k].q);
        free(J[k].dq);
    }
    free(J);
    free(job_of);
    free(R);
    free(L);
    if (rc) {
        sh_graph_free(c);
        if (rep) sh_quant_report_free(rep);
        return rc;
    }
    *out = c;
    return SH_OK;
}
