/* qat.c - quantization-aware training (QAT).
 *
 * sh_qat_prepare inserts FakeQuant nodes (ops/fakequant.c):
 *   - on the f32 initializer weight of every Conv / Gemm / MatMul: symmetric,
 *     narrow range ([-(2^(b-1)-1), 2^(b-1)-1], so it commutes with BatchNorm
 *     folding), per output channel (or per tensor), scale initialised to
 *     max|w| / qmax, or with mse_init the clip (10-100 % of max|w|, steps
 *     of 2 %) with the least squared rounding error per scale (round-to-
 *     nearest PTQ: before training the prepared graph computes exactly what
 *     PTQ with these scales gives);
 *   - with act_bits = 8, on the f32 input of those layers: unsigned 8-bit
 *     per tensor, range from a min/max calibration on o->calib (scale and
 *     zero point).
 * The scales are initializers that train with the weights (the LSQ gradient
 * of FakeQuant, scaled by 1 / sqrt(elements per scale * qmax) as in Esser et
 * al. 2019).  Train the prepared graph with sh_train, or with sh_distill and
 * the original model as the teacher.
 *
 * sh_qat_convert folds the FakeQuant nodes away: each weight becomes its
 * dequantized values (exactly the grid points the trained model used) and
 * the activation fake-quants are dropped (a static int8 pass recalibrates
 * them); the FakeQuant nodes and their scale initializers are removed.  The scales learned are reported per layer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/quant_formats.h"
#include "graph/graph_internal.h"
#include "ops/ops.h"
#include "shrink.h"

void sh_qat_opts_default(sh_qat_opts *o)
{
    memset(o, 0, sizeof *o);
    o->bits = 8;
}

static int excluded(const char *list, const char *a, const char *b)
{
    if (!list) return 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if ((a && strlen(a) == n && !strncmp(a, p, n)) || (b && strlen(b) == n && !strncmp(b, p, n))) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

/* Output-channel axis of the weight of node n (Conv 0, Gemm transB=1 0, else 1). */
static int weight_axis(const sh_node *n)
{
    if (!strcmp(n->op, "Conv")) return 0;
    if (!strcmp(n->op, "Gemm")) return sh_attr_int(n, "transB", 0) ? 0 : 1;
    return 1; /* MatMul B [K, N] */
}

static int add_f32_init(sh_graph *g, const char *name, int64_t n, const float *v, sh_error *err)
{
    int64_t s[1] = {n};
    sh_tensor *t = sh_tensor_new(SH_F32, 1, s, err);
    if (!t) return err ? err->code : SH_ENOMEM;
    memcpy(t->data, v, sizeof(float) * (size_t)n);
    int rc = sh_graph_add_init(g, name, t, err);
    if (rc < 0) sh_tensor_free(t);
    return rc < 0 ? rc : SH_OK;
}

int sh_qat_prepare(const sh_graph *g, const sh_qat_opts *o, sh_graph **out, sh_error *err)
{
    *out = NULL;
    sh_qat_opts def;
    if (!o) {
        sh_qat_opts_default(&def);
        o = &def;
    }
    int bits = o->bits ? o->bits : 8;
    if (bits < 2 || bits > 8) return sh_err(err, SH_EINVAL, "QAT: weight bits %d outside 2-8", bits);
    if (o->act_bits && o->act_bits != 8)
        return sh_err(err, SH_EINVAL, "QAT: activation bits %d (0: f32, or 8)", o->act_bits);
    if (o->act_bits && !o->calib)
        return sh_err(err, SH_EINVAL, "QAT: 8-bit activations need calibration data for their initial ranges");
    sh_graph *w = sh_graph_clone(g, err);
    if (!w) return err ? err->code : SH_ENOMEM;
    int rc = SH_OK, n0 = w->n_nodes, layers = 0;
    float qmax = (float)((1 << (bits - 1)) - 1);
    /* activation inputs to calibrate: value index per layer (-1 none) */
    int *act = malloc(sizeof(int) * (size_t)(n0 + 1));
    if (!act) {
        sh_graph_free(w);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    for (int i = 0; i < n0 && !rc; i++) {
        act[i] = -1;
        sh_node *n = &w->nodes[i];
        if (strcmp(n->op, "Conv") && strcmp(n->op, "Gemm") && strcmp(n->op, "MatMul")) continue;
        if (n->n_in < 2 || n->in[1] < 0) continue;
        sh_value *wv = &w->values[n->in[1]];
        if (!wv->init || wv->init->fmt != SH_F32 || wv->init->ndim < 2) continue;
        if (excluded(o->exclude, n->name, wv->name)) continue;
        int axis = o->per_tensor ? -1 : weight_axis(n);
        const sh_tensor *W = wv->init;
        int64_t C = axis < 0 ? 1 : W->shape[axis], outer = 1, inner = 1;
        if (axis >= 0) {
            for (int d = 0; d < axis; d++) outer *= W->shape[d];
            for (int d = axis + 1; d < W->ndim; d++) inner *= W->shape[d];
        } else
            inner = sh_tensor_numel(W);
        float *sc = malloc(sizeof(float) * (size_t)C);
        if (!sc) {
            rc = sh_err(err, SH_ENOMEM, "out of memory");
            break;
        }
        const float *wd = W->data;
        for (int64_t c = 0; c < C; c++) {
            float mx = 0.0f;
            for (int64_t a = 0; a < outer; a++)
                for (int64_t j = 0; j < inner; j++) {
                    float v = fabsf(wd[(a * C + c) * inner + j]);
                    mx = v > mx ? v : mx;
                }
            sc[c] = mx > 0 ? mx / qmax : 1e-8f;
            if (o->mse_init && mx > 0) { /* the clip scale of least squared rounding error */
                double best = -1;
                float bs = sc[c];
                for (int f = 100; f >= 10; f -= 2) {
                    float s = mx / qmax * (float)f / 100.0f;
                    double e = 0;
                    for (int64_t a = 0; a < outer; a++)
                        for (int64_t j = 0; j < inner; j++) {
                            float v = wd[(a * C + c) * inner + j], q = nearbyintf(v / s);
                            q = q < -qmax ? -qmax : q > qmax ? qmax : q;
                            e += (double)(v - q * s) * (v - q * s);
                        }
                    if (best < 0 || e < best) best = e, bs = s;
                }
                sc[c] = bs;
            }
        }
        char sname[200], oname[200], nname[200];
        snprintf(sname, sizeof sname, "%s.qat_scale", wv->name);
        snprintf(oname, sizeof oname, "%s.qat", wv->name);
        snprintf(nname, sizeof nname, "%s.qat", n->name ? n->name : wv->name);
        char wname[200];
        snprintf(wname, sizeof wname, "%s", wv->name);
        rc = add_f32_init(w, sname, C, sc, err);
        free(sc);
        if (rc) break;
        const char *ins[2] = {wname, sname}, *outs[1] = {oname};
        int k = sh_graph_add_node(w, "FakeQuant", nname, 2, ins, 1, outs, err);
        if (k < 0) {
            rc = k;
            break;
        }
        sh_node_set_int(w, k, "bits", bits);
        sh_node_set_int(w, k, "axis", axis < 0 ? 0 : axis);
        sh_node_set_int(w, k, "symmetric", 1);
        sh_node_set_int(w, k, "narrow", 1);
        sh_node_set_float(w, k, "grad_scale", (float)(1.0 / sqrt((double)(outer * inner) * qmax)));
        n = &w->nodes[i]; /* nodes may have moved */
        n->in[1] = sh_graph_find(w, oname);
        layers++;
        if (o->act_bits && n->in[0] >= 0 && !w->values[n->in[0]].init && w->values[n->in[0]].fmt == SH_F32)
            act[i] = n->in[0];
    }
    if (!rc && !layers) rc = sh_err(err, SH_EINVAL, "QAT: '%s' has no Conv / Gemm / MatMul with an f32 weight to quantize",
                                    g->name ? g->name : "model");
    if (!rc && o->act_bits) {
        /* distinct activation values, calibrated on the original graph */
        int na = 0;
        const char **names = malloc(sizeof(char *) * (size_t)(n0 + 1));
        int *vals = malloc(sizeof(int) * (size_t)(n0 + 1));
        if (!names || !vals) rc = sh_err(err, SH_ENOMEM, "out of memory");
        for (int i = 0; !rc && i < n0; i++) {
            if (act[i] < 0) continue;
            int seen = 0;
            for (int j = 0; j < na; j++) seen |= vals[j] == act[i];
            if (!seen) {
                vals[na] = act[i];
                names[na++] = w->values[act[i]].name;
            }
        }
        sh_calib *cal = NULL;
        if (!rc && na) {
            sh_quant_opts q = {0};
            q.calib = o->calib;
            q.calib_samples = o->calib_samples;
            q.nthreads = o->nthreads;
            rc = sh_calibrate(g, &q, na, names, &cal, err);
        }
        for (int j = 0; !rc && j < na; j++) {
            float lo, hi;
            rc = sh_calib_range(cal, j, SH_CALIB_MINMAX, 0, &lo, &hi, err);
            if (rc) break;
            if (lo > 0) lo = 0;
            if (hi < 0) hi = 0;
            float s = hi > lo ? (hi - lo) / 255.0f : 1e-8f, z = nearbyintf(-lo / s);
            char sname[200], zname[200], oname[200];
            const char *vn = w->values[vals[j]].name;
            snprintf(sname, sizeof sname, "%s.qat_scale", vn);
            snprintf(zname, sizeof zname, "%s.qat_zero", vn);
            snprintf(oname, sizeof oname, "%s.qat", vn);
            char vname[200];
            snprintf(vname, sizeof vname, "%s", vn);
            if ((rc = add_f32_init(w, sname, 1, &s, err)) || (rc = add_f32_init(w, zname, 1, &z, err))) break;
            const char *ins[3] = {vname, sname, zname}, *outs[1] = {oname};
            int k = sh_graph_add_node(w, "FakeQuant", oname, 3, ins, 1, outs, err);
            if (k < 0) {
                rc = k;
                break;
            }
            sh_node_set_int(w, k, "bits", 8);
            sh_node_set_int(w, k, "symmetric", 0);
            int64_t numel = 1; /* grad scale: elements per item of the value */
            const sh_value *v = &w->values[vals[j]];
            for (int d = 1; d < v->ndim; d++) numel *= v->shape[d] > 0 ? v->shape[d] : 1;
            sh_node_set_float(w, k, "grad_scale", (float)(1.0 / sqrt((double)numel * 255.0)));
            int ov = sh_graph_find(w, oname);
            for (int i = 0; i < n0; i++)
                if (act[i] == vals[j]) w->nodes[i].in[0] = ov;
        }
        sh_calib_free(cal);
        free(names);
        free(vals);
    }
    free(act);
    if (!rc) rc = sh_graph_check(w, err);
    if (!rc) sh_graph_set_meta(w, "shrink.qat_bits", bits == 8 ? "8" : bits == 4 ? "4" : bits == 3 ? "3" : "2");
    if (rc) {
        sh_graph_free(w);
        return rc;
    }
    *out = w;
    return SH_OK;
}

/* The Gemm that is the only reader of FakeQuant n's output, when it can run
 * a packed weight (transB=1, transA=0, alpha 1, weight input), else -1. */
static int packable_gemm(const sh_graph *w, const sh_node *n)
{
    int y = n->out[0], k = -1;
    for (int j = 0; j < w->n_outputs; j++)
        if (w->outputs[j] == y) return -1;
    for (int i = 0; i < w->n_nodes; i++)
        for (int a = 0; a < w->nodes[i].n_in; a++)
            if (w->nodes[i].in[a] == y) {
                if (k >= 0 || a != 1) return -1;
                k = i;
            }
    if (k < 0) return -1;
    const sh_node *g = &w->nodes[k];
    int conv = !strcmp(g->op, "Conv");
    if (!conv && (strcmp(g->op, "Gemm") || sh_attr_int(g, "transB", 0) != 1 || sh_attr_int(g, "transA", 0) != 0 ||
                  sh_attr_float(g, "alpha", 1.0f) != 1.0f))
        return -1;
    /* the weight itself is read by the FakeQuant only */
    int x = n->in[0], r = 0;
    for (int i = 0; i < w->n_nodes; i++)
        for (int a = 0; a < w->nodes[i].n_in; a++) r += w->nodes[i].in[a] == x;
    return r == 1 ? k : -1;
}

/* Base row format holding the symmetric integer grid q in [qmin, qmax] of a
 * bits-bit weight exactly, with the offset u = q + off (and min m = -s for
 * q2_1), or -1. */
static int grid_format(int bits, float qmin, float qmax, int *off)
{
    switch (bits) {
    case 8: *off = 128; return qmin >= -127.0f ? SH_Q8_0 : -1;
    case 4: *off = 8; return SH_Q4_0;
    case 3: *off = 4; return SH_Q3_0;
    case 2: *off = 1; return qmin >= -1.0f && qmax <= 1.0f ? SH_Q2_1 : -1; /* 2s - s is exact; 3s would round */
    default: return -1;
    }
}

static int qat_convert(const sh_graph *g, int pack, sh_graph **out, sh_qat_report *rep, sh_error *err)
{
    *out = NULL;
    if (rep) memset(rep, 0, sizeof *rep);
    sh_graph *w = sh_graph_clone(g, err);
    if (!w) return err ? err->code : SH_ENOMEM;
    int rc = SH_OK, nfq = 0;
    for (int i = 0; i < w->n_nodes; i++) nfq += !strcmp(w->nodes[i].op, "FakeQuant");
    if (rep && nfq && !(rep->layers = calloc((size_t)nfq, sizeof *rep->layers))) rc = sh_err(err, SH_ENOMEM, "out of memory");
    for (int i = 0; i < w->n_nodes && !rc; i++) {
        sh_node *n = &w->nodes[i];
        if (strcmp(n->op, "FakeQuant")) continue;
        sh_value *xv = &w->values[n->in[0]], *sv = &w->values[n->in[1]];
        sh_value *zv = n->n_in > 2 && n->in[2] >= 0 ? &w->values[n->in[2]] : NULL;
        if (!sv->init || (zv && !zv->init)) {
            rc = sh_err(err, SH_EUNSUPPORTED, "node '%s' (FakeQuant): scale / zero point are not initializers", n->name);
            break;
        }
        int bits = (int)sh_attr_int(n, "bits", 8), sym = (int)sh_attr_int(n, "symmetric", 1);
        int narrow = (int)sh_attr_int(n, "narrow", 0);
        float qmax = sym ? (float)((1 << (bits - 1)) - 1) : (float)((1 << bits) - 1);
        float qmin = sym ? (narrow ? -qmax : -qmax - 1) : 0.0f;
        const float *sc = sv->init->data;
        int64_t C = sh_tensor_numel(sv->init);
        sh_qat_layer *L = rep ? &rep->layers[rep->n_layers++] : NULL;
        if (L) {
            snprintf(L->name, sizeof L->name, "%s", n->name ? n->name : "");
            snprintf(L->value, sizeof L->value, "%s", xv->name);
            L->bits = bits;
            L->channels = C;
            L->weight = xv->init != NULL;
            double ms = 0;
            for (int64_t c = 0; c < C; c++) ms += sc[c];
            L->mean_scale = ms / (double)C;
        }
        if (xv->init) {
            /* snap the weight to its grid (the value the trained model used) */
            sh_tensor *W = xv->init;
            if (W->fmt != SH_F32) {
                rc = sh_err(err, SH_EUNSUPPORTED, "node '%s' (FakeQuant): weight '%s' is %s, not f32", n->name,
                            xv->name, sh_format_get(W->fmt)->name);
                break;
            }
            int64_t axis = sh_attr_int(n, "axis", 0), outer = 1, inner = sh_tensor_numel(W);
            if (C > 1) {
                if (axis < 0) axis += W->ndim;
                inner = 1;
                for (int d = 0; d < axis; d++) outer *= W->shape[d];
                for (int d = (int)axis + 1; d < W->ndim; d++) inner *= W->shape[d];
            }
            float *wd = W->data;
            int64_t clipped = 0;
            /* packed: a 2-D Gemm weight [N, K], symmetric, one scale per
             * row (axis 0) or per tensor, at 2 / 3 / 4 / 8 bits */
            int off = 0, base = -1, gk = -1;
            /* a 2-D Gemm weight [N, K], or a 2-D Conv weight [M, C/G, kh, kw]
             * as rows of K = C/G*kh*kw (the layout conv_quant.c reads) */
            int w4 = W->ndim == 4;
            if (pack && sym && !zv && (W->ndim == 2 || w4) && (C == 1 || (C == W->shape[0] && axis == 0)) &&
                (base = grid_format(bits, qmin, qmax, &off)) >= 0)
                gk = packable_gemm(w, n);
            if (gk >= 0 && (w4 != !strcmp(w->nodes[gk].op, "Conv"))) gk = -1;
            int64_t N = W->ndim >= 2 ? W->shape[0] : 0, K = N > 0 ? sh_tensor_numel(W) / N : 0,
                    Kp = (K + 31) / 32 * 32, ksz[2] = {w4 ? W->shape[2] : 0, w4 ? W->shape[3] : 0};
            uint8_t *codes = gk >= 0 ? malloc((size_t)(N * Kp)) : NULL;
            sh_qparams *qp = gk >= 0 ? malloc(sizeof(sh_qparams) * (size_t)C) : NULL;
            if (gk >= 0 && (!codes || !qp)) {
                free(codes), free(qp);
                rc = sh_err(err, SH_ENOMEM, "out of memory");
                break;
            }
            if (codes) memset(codes, off, (size_t)(N * Kp)); /* padding: code of 0 */
            for (int64_t c = 0; c < C; c++) {
                float s = sc[c], z = zv ? sh_tensor_get_f(zv->init, c) : 0.0f;
                if (!(s > 0)) {
                    rc = sh_err(err, SH_EINVAL, "node '%s' (FakeQuant): scale[%lld] = %g", n->name, (long long)c, s);
                    break;
                }
                if (qp) qp[c] = (sh_qparams){s, base == SH_Q2_1 ? -s : 0.0f};
                for (int64_t a = 0; a < outer; a++)
                    for (int64_t j = 0; j < inner; j++) {
                        int64_t at = (a * C + c) * inner + j;
                        float *p = &wd[at];
                        float q = nearbyintf(*p / s) + z;
                        if (q < qmin || q > qmax) clipped++;
                        q = q < qmin ? qmin : q > qmax ? qmax : q;
                        *p = (q - z) * s;
                        if (codes) codes[at / K * Kp + at % K] = (uint8_t)((int)q + off);
                    }
            }
            if (L) L->clipped = clipped;
            if (codes && !rc) { /* the learned grid, stored packed: d = s, u = q + off */
                sh_tensor *P = NULL;
                rc = sh_qrows_pack((sh_format)sh_qrows_format((sh_format)base, C == 1), N, Kp, qp, codes, &P, err);
                if (!rc) {
                    sh_tensor_free(xv->init);
                    xv->init = P;
                    xv->fmt = P->fmt;
                    xv->ndim = 2;
                    xv->shape[0] = N, xv->shape[1] = Kp;
                    if (w4) rc = sh_node_set_ints(w, gk, "kernel_shape", 2, ksz) || sh_node_set_int(w, gk, "weight_k", K)
                                     ? sh_err(err, SH_ENOMEM, "out of memory")
                                     : SH_OK;
                    else if (Kp != K) rc = sh_node_set_int(w, gk, "weight_k", K);
                    if (L) L->packed = 1;
                }
            }
            free(codes);
            free(qp);
            if (rc) break;
        }
        /* readers of the FakeQuant output read x; the node goes */
        int x = n->in[0], y = n->out[0];
        for (int j = 0; j < w->n_nodes; j++)
            for (int a = 0; a < w->nodes[j].n_in; a++)
                if (w->nodes[j].in[a] == y) w->nodes[j].in[a] = x;
        for (int j = 0; j < w->n_outputs; j++)
            if (w->outputs[j] == y) w->outputs[j] = x;
        w->values[y].producer = -1;
        sh_node_free_fields(n);
        memmove(&w->nodes[i], &w->nodes[i + 1], sizeof(sh_node) * (size_t)(w->n_nodes - i - 1));
        w->n_nodes--;
        i--;
    }
    if (!rc) {
        for (int v = 0; v < w->n_values; v++) w->values[v].producer = -1;
        for (int i = 0; i < w->n_nodes; i++)
            for (int j = 0; j < w->nodes[i].n_out; j++)
                if (w->nodes[i].out[j] >= 0) w->values[w->nodes[i].out[j]].producer = i;
    }
    /* drop the scale / zero-point initializers nothing reads any more */
    if (!rc) {
        char *used = calloc((size_t)w->n_values + 1, 1);
        if (!used) rc = sh_err(err, SH_ENOMEM, "out of memory");
        for (int i = 0; !rc && i < w->n_nodes; i++)
            for (int j = 0; j < w->nodes[i].n_in; j++)
                if (w->nodes[i].in[j] >= 0) used[w->nodes[i].in[j]] = 1;
        for (int j = 0; !rc && j < w->n_outputs; j++) used[w->outputs[j]] = 1;
        for (int v = 0; !rc && v < w->n_values; v++) {
            size_t l = strlen(w->values[v].name);
            int ours = (l > 10 && !strcmp(w->values[v].name + l - 10, ".qat_scale")) ||
                       (l > 9 && !strcmp(w->values[v].name + l - 9, ".qat_zero"));
            if (!used[v] && ours && w->values[v].init) {
                sh_tensor_free(w->values[v].init);
                w->values[v].init = NULL;
            }
        }
        free(used);
    }
    if (!rc) rc = sh_graph_check(w, err);
    if (rc) {
        sh_graph_free(w);
        if (rep) sh_qat_report_free(rep);
        return rc;
    }
    *out = w;
    return SH_OK;
}

int sh_qat_convert(const sh_graph *g, sh_graph **out, sh_qat_report *rep, sh_error *err)
{
    return qat_convert(g, 0, out, rep, err);
}

int sh_qat_convert_packed(const sh_graph *g, sh_graph **out, sh_qat_report *rep, sh_error *err)
{
    return qat_convert(g, 1, out, rep, err);
}

void sh_qat_report_free(sh_qat_report *r)
{
    if (!r) return;
    free(r->layers);
    r->layers = NULL;
    r->n_layers = 0;
}
