/* onnx_qdq.c - QOperator <-> QDQ rewrites of static int8 graphs.
 *
 * sh_graph_to_qdq: every QLinearConv / QGemm / QLinearMatMul / QLinearAdd /
 * QLinearGlobalAveragePool becomes DequantizeLinear on each quantized input
 * -> the f32 op (Conv / Gemm / MatMul / Add / GlobalAveragePool; a fused
 * activation="Relu" becomes a Relu node) -> QuantizeLinear with the same
 * scales and zero points.  An int32 bias becomes DequantizeLinear(bias,
 * x_scale * w_scale, axis 0); per-channel weights DequantizeLinear with axis
 * 0 (axis 1 for a Gemm / MatMul weight stored [K,N]).  A QGemm without
 * y_scale (f32 output) ends at the Gemm; a dynamic QGemm (f32 A) keeps A as
 * it is.  This is the form ONNX Runtime and other tools read: ORT fuses the
 * patterns back into its int8 kernels.
 *
 * Weight-only models (a Gemm / Conv weight in a grouped or per-channel /
 * per-tensor low-bit format, src/compress/quantize.c) export too: the codes
 * of every 32-block become a row of an int8 initializer [N*K/32, 32] (q - off:
 * q8_0 -127..127, 4-bit -8..15, log4 -64..64 with d / 64; negated with the
 * scale where a sign-max scale is negative), read by a
 * per-axis DequantizeLinear (axis 0, one f32 scale per block; opset 13),
 * + the block minimum (q4_1 / q2_1), Reshape to [N, Kp], Slice to the
 * real K, Reshape to the Conv kernel; the values are the same f32 numbers
 * shrink's kernels dequantize.  A Gemm whose input is not known to be 2-D (a
 * MatMul quantized as Gemm) becomes MatMul with the transposed weight + Add.
 * ONNX Runtime folds the chain into f32 weights when it loads the file: the
 * file keeps 8 bits per weight plus the scales, the run is f32.
 *
 * sh_graph_from_qdq: the reverse fusion.  A Conv / Gemm (transA=0, beta=1,
 * alpha=1) / MatMul / Add / GlobalAveragePool whose data inputs come from
 * DequantizeLinear nodes (u8/s8 per tensor for activations; weights s8/u8
 * initializers, per tensor or per output channel; biases int32 through a
 * DequantizeLinear, or f32 initializers, re-quantized to x_scale * w_scale)
 * and whose only consumer is a QuantizeLinear (optionally through a Relu read
 * by nothing else) becomes the QOperator op; a Gemm whose output stays f32
 * becomes a QGemm with f32 output.  MaxPool / Flatten / Reshape / Identity
 * between a DequantizeLinear and a QuantizeLinear with the same scale and
 * zero point run on the integers directly.  Scales and zero points must be
 * initializers; anything else is left as it is (and still runs: shrink has
 * QuantizeLinear / DequantizeLinear).  Nodes left without consumers (the
 * absorbed Q/DQ) are dropped, and so are unused initializers.
 *
 * Both build a new graph; g is not changed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/quant_formats.h"
#include "shrink.h"

#define MS_DOMAIN "com.microsoft"

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- a list of nodes to emit ---------------------------------------------- */

typedef struct bnode {
    const sh_node *attrs_from; /* copy its attributes (except skipped ones) */
    const char *skip[8];
    char *op, *domain, *name;
    int n_in, n_out;
    char *in[12], *out[4];
    int n_i;
    char *ik[4];
    int64_t iv[4];
    int n_s;
    char *sk[2], *sv[2];
    int live;
} bnode;

typedef struct builder {
    const sh_graph *g;
    bnode *nodes;
    int n, cap;
    char **iname; /* new initializers */
    sh_tensor **it;
    int ni, capi;
    int oom;
} builder;

static void b_free(builder *b)
{
    for (int i = 0; i < b->n; i++) {
        bnode *n = &b->nodes[i];
        free(n->op), free(n->domain), free(n->name);
        for (int j = 0; j < n->n_in; j++) free(n->in[j]);
        for (int j = 0; j < n->n_out; j++) free(n->out[j]);
        for (int j = 0; j < n->n_i; j++) free(n->ik[j]);
        for (int j = 0; j < n->n_s; j++) free(n->sk[j]), free(n->sv[j]);
    }
    free(b->nodes);
    for (int i = 0; i < b->ni; i++) free(b->iname[i]), sh_tensor_free(b->it[i]);
    free(b->iname);
    free(b->it);
}

static const char *vname(const sh_graph *g, int v) { return v >= 0 ? g->values[v].name : ""; }

/* a node; inputs/outputs are value names ("" for omitted inputs) */
static bnode *b_node(builder *b, const char *op, const char *domain, const char *name, int n_in, const char *const *in,
                     int n_out, const char *const *out)
{
    if (b->n == b->cap) {
        int nc = b->cap ? 2 * b->cap : 64;
        bnode *nn = realloc(b->nodes, sizeof *nn * (size_t)nc);
        if (!nn) {
            b->oom = 1;
            return NULL;
        }
        b->nodes = nn, b->cap = nc;
    }
    bnode *n = &b->nodes[b->n++];
    memset(n, 0, sizeof *n);
    n->op = xstrdup(op), n->domain = xstrdup(domain ? domain : ""), n->name = xstrdup(name);
    n->n_in = n_in, n->n_out = n_out;
    for (int i = 0; i < n_in; i++) n->in[i] = xstrdup(in[i] ? in[i] : "");
    for (int i = 0; i < n_out; i++) n->out[i] = xstrdup(out[i]);
    return n;
}

static void b_int(bnode *n, const char *k, int64_t v)
{
    if (!n || n->n_i >= 4) return;
    n->ik[n->n_i] = xstrdup(k), n->iv[n->n_i++] = v;
}

static void b_str(bnode *n, const char *k, const char *v)
{
    if (!n || n->n_s >= 2) return;
    n->sk[n->n_s] = xstrdup(k), n->sv[n->n_s++] = xstrdup(v);
}

static int name_taken(const builder *b, const char *s)
{
    if (sh_graph_find(b->g, s) >= 0) return 1;
    for (int i = 0; i < b->ni; i++)
        if (!strcmp(b->iname[i], s)) return 1;
    for (int i = 0; i < b->n; i++)
        for (int j = 0; j < b->nodes[i].n_out; j++)
            if (!strcmp(b->nodes[i].out[j], s)) return 1;
    return 0;
}

/* a fresh value name base + suffix (numbered when taken) into buf */
static const char *fresh(const builder *b, const char *base, const char *suffix, char *buf, size_t n)
{
    snprintf(buf, n, "%s%s", base, suffix);
    for (int k = 2; name_taken(b, buf); k++) snprintf(buf, n, "%s%s_%d", base, suffix, k);
    return buf;
}

/* a new initializer (takes t) under a fresh name; returns the name (in b) */
static const char *b_init(builder *b, const char *base, const char *suffix, sh_tensor *t)
{
    char buf[512];
    if (!t) {
        b->oom = 1;
        return "";
    }
    if (b->ni == b->capi) {
        int nc = b->capi ? 2 * b->capi : 32;
        char **nn = realloc(b->iname, sizeof *nn * (size_t)nc);
        sh_tensor **nt = nn ? realloc(b->it, sizeof *nt * (size_t)nc) : NULL;
        if (nn) b->iname = nn;
        if (!nt) {
            sh_tensor_free(t);
            b->oom = 1;
            return "";
        }
        b->it = nt, b->capi = nc;
    }
    b->iname[b->ni] = xstrdup(fresh(b, base, suffix, buf, sizeof buf));
    b->it[b->ni] = t;
    return b->iname[b->ni++];
}

/* copy one source node unchanged */
static void b_copy(builder *b, const sh_node *s)
{
    const char *in[12], *out[4];
    if (s->n_in > 12 || s->n_out > 4) {
        b->oom = 2;
        return;
    }
    for (int i = 0; i < s->n_in; i++) in[i] = vname(b->g, s->in[i]);
    for (int i = 0; i < s->n_out; i++) out[i] = vname(b->g, s->out[i]);
    bnode *n = b_node(b, s->op, s->domain, s->name, s->n_in, in, s->n_out, out);
    if (n) n->attrs_from = s;
}

static void copy_attrs(sh_graph *ng, int k, const sh_node *s, const char *const *skip)
{
    for (int a = 0; a < s->n_attrs; a++) {
        const sh_attr *at = &s->attrs[a];
        int sk = 0;
        for (int i = 0; i < 8 && skip[i]; i++) sk |= !strcmp(skip[i], at->name);
        if (sk) continue;
        switch (at->type) {
        case SH_ATTR_INT: sh_node_set_int(ng, k, at->name, at->i); break;
        case SH_ATTR_FLOAT: sh_node_set_float(ng, k, at->name, at->f); break;
        case SH_ATTR_STRING: sh_node_set_string(ng, k, at->name, at->s); break;
        case SH_ATTR_INTS: sh_node_set_ints(ng, k, at->name, at->n, at->ints); break;
        case SH_ATTR_FLOATS: sh_node_set_floats(ng, k, at->name, at->n, at->floats); break;
        default: break;
        }
    }
}

/* Dead-node elimination, then the new graph. */
static int b_build(builder *b, sh_graph **out, sh_error *err)
{
    const sh_graph *g = b->g;
    if (b->oom) return sh_err(err, b->oom == 2 ? SH_EUNSUPPORTED : SH_ENOMEM, "QDQ rewrite: %s",
                              b->oom == 2 ? "a node has too many inputs or outputs" : "out of memory");
    /* live: nodes producing a graph output, then their producers */
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = b->n - 1; i >= 0; i--) {
            bnode *n = &b->nodes[i];
            if (n->live) continue;
            int live = 0;
            for (int j = 0; j < n->n_out && !live; j++) {
                for (int o = 0; o < g->n_outputs && !live; o++) live = !strcmp(g->values[g->outputs[o]].name, n->out[j]);
                for (int m = 0; m < b->n && !live; m++)
                    if (b->nodes[m].live)
                        for (int q = 0; q < b->nodes[m].n_in && !live; q++) live = !strcmp(b->nodes[m].in[q], n->out[j]);
            }
            if (live) n->live = changed = 1;
        }
    }
    sh_graph *ng = sh_graph_new(g->name ? g->name : "graph");
    if (!ng) return sh_err(err, SH_ENOMEM, "out of memory");
    ng->opset = g->opset < 13 ? 13 : g->opset;
    for (int i = 0; i < g->n_meta; i++) sh_graph_set_meta(ng, g->meta_keys[i], g->meta_vals[i]);
    int rc = SH_OK;
    for (int i = 0; i < g->n_inputs && !rc; i++) {
        const sh_value *v = &g->values[g->inputs[i]];
        rc = sh_graph_add_input(ng, v->name, v->fmt, v->ndim, v->shape, err) < 0 ? SH_EINVAL : SH_OK;
    }
    for (int i = 0; i < b->n && !rc; i++) {
        bnode *n = &b->nodes[i];
        if (!n->live) continue;
        const char *in[12], *outs[4];
        for (int j = 0; j < n->n_in && !rc; j++) {
            in[j] = n->in[j];
            if (!*in[j] || sh_graph_find(ng, in[j]) >= 0) continue;
            /* an initializer of g or a new one */
            int v = sh_graph_find(g, in[j]);
            sh_tensor *t = NULL;
            if (v >= 0 && g->values[v].init) t = sh_tensor_clone(g->values[v].init, err);
            else
                for (int q = 0; q < b->ni; q++)
                    if (!strcmp(b->iname[q], in[j])) t = sh_tensor_clone(b->it[q], err);
            if (!t) {
                rc = sh_err(err, SH_EINVAL, "QDQ rewrite: node '%s' (%s) reads '%s', which nothing defines", n->name,
                            n->op, in[j]);
                break;
            }
            if (sh_graph_add_init(ng, in[j], t, err) < 0) rc = err->code ? err->code : SH_EINVAL;
        }
        if (rc) break;
        for (int j = 0; j < n->n_out; j++) outs[j] = n->out[j];
        int k = sh_graph_add_node(ng, n->op, n->name, n->n_in, in, n->n_out, outs, err);
        if (k < 0) {
            rc = k;
            break;
        }
        if (n->domain && *n->domain) {
            char *d = xstrdup(n->domain);
            if (!d) {
                rc = sh_err(err, SH_ENOMEM, "out of memory");
                break;
            }
            free(ng->nodes[k].domain);
            ng->nodes[k].domain = d;
        }
        if (n->attrs_from) copy_attrs(ng, k, n->attrs_from, n->skip);
        for (int j = 0; j < n->n_i; j++) sh_node_set_int(ng, k, n->ik[j], n->iv[j]);
        for (int j = 0; j < n->n_s; j++) sh_node_set_string(ng, k, n->sk[j], n->sv[j]);
    }
    for (int i = 0; i < g->n_outputs && !rc; i++) {
        const char *nm = g->values[g->outputs[i]].name;
        if (sh_graph_find(ng, nm) < 0) {
            /* an output that is an initializer or a graph input passes through */
            int v = g->outputs[i];
            if (g->values[v].init) sh_graph_add_init(ng, nm, sh_tensor_clone(g->values[v].init, err), err);
        }
        if (sh_graph_mark_output(ng, nm, err) < 0) rc = err->code ? err->code : SH_EINVAL;
    }
    if (!rc) rc = sh_graph_check(ng, err);
    if (rc) {
        sh_graph_free(ng);
        return rc;
    }
    *out = ng;
    return SH_OK;
}

/* ---- helpers on g ----------------------------------------------------------- */

static const sh_tensor *init_of(const sh_graph *g, int v) { return v >= 0 ? g->values[v].init : NULL; }

static int64_t numel_of(const sh_graph *g, int v)
{
    const sh_tensor *t = init_of(g, v);
    return t ? sh_tensor_numel(t) : -1;
}

/* f32 value i of a (scale) initializer, per-tensor broadcast */
static float scale_at(const sh_tensor *t, int64_t i) { return ((const float *)t->data)[sh_tensor_numel(t) == 1 ? 0 : i]; }

/* ---- to QDQ ------------------------------------------------------------------ */

/* DequantizeLinear of value v (scale s, zero point z: value indices, z may be
 * -1) into a fresh value "<base>_dq"; axis >= 0 when per channel. */
static const char *emit_dq(builder *b, const sh_node *src, const char *v, const char *s, const char *z, int axis,
                           const char *what, char *buf, size_t bn)
{
    char nb[512];
    fresh(b, src->name, what, buf, bn);
    snprintf(nb, sizeof nb, "%s", buf);
    const char *in[3] = {v, s, z ? z : ""};
    bnode *n = b_node(b, "DequantizeLinear", "", nb, z && *z ? 3 : 2, in, 1, (const char *const[]){buf});
    if (axis >= 0) b_int(n, "axis", axis);
    return buf;
}

static int relu_attr(const sh_node *n) { return *sh_attr_string(n, "activation", "") != 0; }

static sh_tensor *i64_tensor(int n, const int64_t *v, sh_error *err)
{
    sh_tensor *t = sh_tensor_new(SH_I64, 1, (int64_t[]){n}, err);
    if (t) memcpy(t->data, v, sizeof(int64_t) * (size_t)n);
    return t;
}

/* 1 if weight w (an initializer) is in a weight-only low-bit format. */
static int wq_format(const sh_tensor *w)
{
    return w && w->ndim == 2 && (sh_qbase_format(w->fmt, NULL) >= 0 || sh_qrows_base(w->fmt, NULL) >= 0);
}

/* The weight-only Gemm / Conv s (weight input 1 in a low-bit format) as
 * DequantizeLinear -> [Add min] -> Reshape [-> Slice] [-> Reshape] -> the
 * f32 op (see the header comment). */
static int to_qdq_weight_only(builder *b, const sh_node *s, sh_error *err)
{
    const sh_graph *g = b->g;
    const sh_tensor *w = g->values[s->in[1]].init;
    int conv = !strcmp(s->op, "Conv");
    int64_t N = w->shape[0], Kp = w->shape[1], K = sh_attr_int(s, "weight_k", Kp), nb = Kp / SH_QK, nr = N * nb;
    int grp = 32, pt = 0;
    int base = sh_qbase_format(w->fmt, &grp);
    int rows = base < 0;
    if (rows) base = sh_qrows_base(w->fmt, &pt);
    if (Kp % SH_QK || K <= 0 || K > Kp)
        return sh_err(err, SH_EFORMAT, "node '%s' (%s): weight [%lld,%lld] (%s) with weight_k %lld", s->name, s->op,
                      (long long)N, (long long)Kp, sh_format_get(w->fmt)->name, (long long)K);
    int asym = base == SH_Q4_1 || base == SH_Q2_1;
    sh_tensor *q = sh_tensor_new(SH_I8, 2, (int64_t[]){nr, SH_QK}, err);
    sh_tensor *sc = sh_tensor_new(SH_F32, 1, (int64_t[]){nr}, err);
    sh_tensor *zp = sh_tensor_new(SH_I8, 1, (int64_t[]){nr}, err);
    sh_tensor *mn = asym ? sh_tensor_new(SH_F32, 2, (int64_t[]){nr, 1}, err) : NULL;
    size_t bb = sh_format_bytes((sh_format)base, SH_QK), rb = rows ? 0 : sh_format_bytes(w->fmt, Kp);
    uint8_t *ex = rows || grp == 32 ? NULL : malloc(bb * (size_t)nb);
    if (!q || !sc || !zp || (asym && !mn) || (!rows && grp != 32 && !ex)) {
        sh_tensor_free(q), sh_tensor_free(sc), sh_tensor_free(zp), sh_tensor_free(mn), free(ex);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    memset(zp->data, 0, (size_t)nr);
    for (int64_t r = 0; r < N; r++) {
        const uint8_t *row = rows ? NULL : (const uint8_t *)w->data + (size_t)r * rb;
        if (ex) sh_qexpand(w->fmt, row, Kp, ex);
        for (int64_t j = 0; j < nb; j++) {
            uint8_t u[SH_QK];
            float d, m = 0.0f;
            int off;
            if (rows) {
                off = sh_qrows_unpack_block((sh_format)base, sh_qrows_codes(w->data, r) + j * sh_qrows_block_codes((sh_format)base), u);
                d = sh_qrows_scale(w->data, r, &m);
                if (base == SH_LOG4) d *= 1.0f / 64.0f; /* as sh_qblock_unpack: codes -64..64 */
            } else
                off = sh_qblock_unpack((sh_format)base, (ex ? ex : row) + (size_t)j * bb, u, &d, &m);
            int64_t i = r * nb + j;
            /* sign-max scales may be negative: codes and scale negated (exact;
             * DequantizeLinear readers expect positive scales) */
            int sg = d < 0.0f ? -1 : 1;
            for (int t = 0; t < SH_QK; t++) ((int8_t *)q->data)[i * SH_QK + t] = (int8_t)(sg * ((int)u[t] - off));
            sh_f32(sc)[i] = sg < 0 ? -d : d;
            if (mn) sh_f32(mn)[i] = m;
        }
    }
    free(ex);
    char v1[512], v2[512], v3[512], v4[512], v5[512], v6[512], nm[600];
    const char *qn = b_init(b, s->name, "_w_codes", q), *sn = b_init(b, s->name, "_w_scale", sc);
    const char *zn = b_init(b, s->name, "_w_zero", zp);
    const char *cur = emit_dq(b, s, qn, sn, zn, 0, "_w_dq", v1, sizeof v1);
    if (mn) {
        const char *mnn = b_init(b, s->name, "_w_min", mn);
        const char *in[2] = {cur, mnn};
        snprintf(nm, sizeof nm, "%s_w_min_add", s->name);
        b_node(b, "Add", "", nm, 2, in, 1, (const char *const[]){fresh(b, s->name, "_w_min", v2, sizeof v2)});
        cur = v2;
    }
    {
        const char *in[2] = {cur, b_init(b, s->name, "_w_shape", i64_tensor(2, (int64_t[]){N, Kp}, err))};
        snprintf(nm, sizeof nm, "%s_w_reshape", s->name);
        b_node(b, "Reshape", "", nm, 2, in, 1, (const char *const[]){fresh(b, s->name, "_w_rows", v3, sizeof v3)});
        cur = v3;
    }
    if (K < Kp) {
        const char *in[4] = {cur, b_init(b, s->name, "_w_starts", i64_tensor(1, (int64_t[]){0}, err)),
                             b_init(b, s->name, "_w_ends", i64_tensor(1, (int64_t[]){K}, err)),
                             b_init(b, s->name, "_w_axes", i64_tensor(1, (int64_t[]){1}, err))};
        snprintf(nm, sizeof nm, "%s_w_slice", s->name);
        b_node(b, "Slice", "", nm, 4, in, 1, (const char *const[]){fresh(b, s->name, "_w_k", v4, sizeof v4)});
        cur = v4;
    }
    const char *yout = vname(g, s->out[0]);
    int relu = relu_attr(s);
    const char *f = relu ? fresh(b, s->name, "_out", v6, sizeof v6) : yout;
    if (conv) {
        const int64_t *ks = NULL;
        int nk = sh_attr_ints(s, "kernel_shape", &ks);
        int64_t sp = 1, shp[SH_MAX_DIMS];
        for (int i = 0; i < nk; i++) sp *= ks[i];
        if (nk < 1 || nk + 2 > SH_MAX_DIMS || sp <= 0 || K % sp)
            return sh_err(err, SH_EFORMAT, "node '%s' (Conv): kernel_shape does not divide weight_k %lld", s->name,
                          (long long)K);
        shp[0] = N, shp[1] = K / sp;
        for (int i = 0; i < nk; i++) shp[2 + i] = ks[i];
        const char *in[2] = {cur, b_init(b, s->name, "_w_kshape", i64_tensor(nk + 2, shp, err))};
        snprintf(nm, sizeof nm, "%s_w_kernel", s->name);
        b_node(b, "Reshape", "", nm, 2, in, 1, (const char *const[]){fresh(b, s->name, "_w_f32", v5, sizeof v5)});
        const char *cin[3] = {vname(g, s->in[0]), v5, s->n_in > 2 ? vname(g, s->in[2]) : ""};
        bnode *n = b_node(b, "Conv", "", s->name, *cin[2] ? 3 : 2, cin, 1, &f);
        if (n) n->attrs_from = s, n->skip[0] = "activation", n->skip[1] = "weight_k";
    } else {
        const sh_value *a = &g->values[s->in[0]];
        const char *cin = s->n_in > 2 ? vname(g, s->in[2]) : "";
        if (a->ndim == 2) {
            const char *in[3] = {vname(g, s->in[0]), cur, cin};
            bnode *n = b_node(b, "Gemm", "", s->name, *cin ? 3 : 2, in, 1, &f);
            if (n) n->attrs_from = s, n->skip[0] = "activation", n->skip[1] = "weight_k";
        } else {
            /* A of another (or unknown) rank: MatMul(A, W^T) [+ C] */
            if (sh_attr_float(s, "beta", 1.0f) != 1.0f && *cin)
                return sh_err(err, SH_EUNSUPPORTED,
                              "node '%s' (Gemm, A of rank %d, beta %g): only beta = 1 exports as MatMul + Add", s->name,
                              a->ndim, sh_attr_float(s, "beta", 1.0f));
            char tn[512], mm[512];
            snprintf(nm, sizeof nm, "%s_w_t", s->name);
            /* Transpose without perm reverses the two axes */
            b_node(b, "Transpose", "", nm, 1, &cur, 1, (const char *const[]){fresh(b, s->name, "_w_kn", tn, sizeof tn)});
            const char *in[2] = {vname(g, s->in[0]), tn};
            const char *mo = *cin ? fresh(b, s->name, "_mm", mm, sizeof mm) : f;
            snprintf(nm, sizeof nm, "%s_matmul", s->name);
            b_node(b, "MatMul", "", nm, 2, in, 1, &mo);
            if (*cin) {
                const char *ain[2] = {mo, cin};
                b_node(b, "Add", "", s->name, 2, ain, 1, &f);
            }
        }
    }
    if (relu) {
        snprintf(nm, sizeof nm, "%s_relu", s->name);
        b_node(b, "Relu", "", nm, 1, &f, 1, &yout);
    }
    return SH_OK;
}

static int to_qdq_node(builder *b, const sh_node *s, sh_error *err)
{
    const sh_graph *g = b->g;
    const char *op = s->op;
    char xb[512], wb[512], bb[512], yb[512], rb[512];
#define IN(i) (s->n_in > (i) ? vname(g, s->in[i]) : "")
#define INV(i) (s->n_in > (i) ? s->in[i] : -1)
    if (!strcmp(op, "QLinearConv") || !strcmp(op, "QGemm") || !strcmp(op, "QLinearMatMul")) {
        int conv = !strcmp(op, "QLinearConv"), gemm = !strcmp(op, "QGemm");
        int transB = gemm ? (int)sh_attr_int(s, "transB", 0) : 0;
        int dynamic = gemm && !*IN(1);
        int ys_i = conv ? 6 : gemm ? 7 : 6, yz_i = ys_i + 1, bias_i = conv ? 8 : gemm ? 6 : -1;
        int has_y = *IN(ys_i) != 0;
        /* the weight's channel axis: conv and transB=1 weights [N,...]: 0; [K,N]: 1 */
        int64_t nw = numel_of(g, INV(4));
        int waxis = nw > 1 ? (conv || transB ? 0 : 1) : -1;
        if (nw < 0) return sh_err(err, SH_EUNSUPPORTED, "node '%s' (%s): w/b scale is not an initializer", s->name, op);
        const char *x = dynamic ? IN(0) : emit_dq(b, s, IN(0), IN(1), IN(2), -1, conv ? "_x_dq" : "_a_dq", xb, sizeof xb);
        const char *w = emit_dq(b, s, IN(3), IN(4), IN(5), waxis, conv ? "_w_dq" : "_b_dq", wb, sizeof wb);
        const char *bias = "";
        if (bias_i >= 0 && *IN(bias_i)) {
            if (dynamic) bias = IN(bias_i);
            else {
                /* int32 bias in the x_scale * w_scale[c] scale */
                const sh_tensor *xs = init_of(g, INV(1)), *ws = init_of(g, INV(4));
                if (!xs || !ws)
                    return sh_err(err, SH_EUNSUPPORTED, "node '%s' (%s): scales must be initializers to export the bias",
                                  s->name, op);
                int64_t m = sh_tensor_numel(ws);
                sh_tensor *bs = sh_tensor_new(SH_F32, m > 1 ? 1 : 0, (int64_t[]){m}, err);
                if (bs)
                    for (int64_t i = 0; i < m; i++) sh_f32(bs)[i] = scale_at(xs, 0) * scale_at(ws, i);
                const char *bsn = b_init(b, s->name, "_bias_scale", bs);
                bias = emit_dq(b, s, IN(bias_i), bsn, NULL, m > 1 ? 0 : -1, "_bias_dq", bb, sizeof bb);
            }
        }
        const char *yout = vname(g, s->out[0]);
        int relu = relu_attr(s);
        const char *f = has_y || relu ? fresh(b, s->name, "_out", yb, sizeof yb) : yout;
        bnode *n;
        if (conv) {
            const char *in[3] = {x, w, bias};
            n = b_node(b, "Conv", "", s->name, *bias ? 3 : 2, in, 1, &f);
            if (n) n->attrs_from = s, n->skip[0] = "activation";
        } else if (gemm) {
            const char *in[3] = {x, w, bias};
            n = b_node(b, "Gemm", "", s->name, *bias ? 3 : 2, in, 1, &f);
            if (n) {
                n->attrs_from = s, n->skip[0] = "activation", n->skip[1] = "transA";
                b_int(n, "transB", transB);
            }
        } else {
            const char *in[2] = {x, w};
            n = b_node(b, "MatMul", "", s->name, 2, in, 1, &f);
        }
        if (relu) {
            const char *r = has_y ? fresh(b, s->name, "_relu", rb, sizeof rb) : yout;
            char nm[512];
            snprintf(nm, sizeof nm, "%s_relu", s->name);
            b_node(b, "Relu", "", nm, 1, &f, 1, &r);
            f = r;
        }
        if (has_y) {
            char nm[512];
            snprintf(nm, sizeof nm, "%s_quant", s->name);
            const char *in[3] = {f, IN(ys_i), IN(yz_i)};
            b_node(b, "QuantizeLinear", "", nm, *IN(yz_i) ? 3 : 2, in, 1, &yout);
        }
        return SH_OK;
    }
    if (!strcmp(op, "QLinearAdd") || !strcmp(op, "QLinearGlobalAveragePool")) {
        int add = !strcmp(op, "QLinearAdd");
        const char *a = emit_dq(b, s, IN(0), IN(1), IN(2), -1, "_a_dq", xb, sizeof xb);
        const char *c = add ? emit_dq(b, s, IN(3), IN(4), IN(5), -1, "_b_dq", wb, sizeof wb) : NULL;
        const char *f = fresh(b, s->name, "_out", yb, sizeof yb), *yout = vname(g, s->out[0]);
        const char *in[2] = {a, c};
        b_node(b, add ? "Add" : "GlobalAveragePool", "", s->name, add ? 2 : 1, in, 1, &f);
        if (add && relu_attr(s)) {
            const char *r = fresh(b, s->name, "_relu", rb, sizeof rb);
            char nm[512];
            snprintf(nm, sizeof nm, "%s_relu", s->name);
            b_node(b, "Relu", "", nm, 1, &f, 1, &r);
            f = r;
        }
        int ys_i = add ? 6 : 3;
        char nm[512];
        snprintf(nm, sizeof nm, "%s_quant", s->name);
        const char *qin[3] = {f, IN(ys_i), IN(ys_i + 1)};
        b_node(b, "QuantizeLinear", "", nm, *IN(ys_i + 1) ? 3 : 2, qin, 1, &yout);
        return SH_OK;
    }
#undef IN
#undef INV
    if ((!strcmp(op, "Gemm") || !strcmp(op, "Conv")) && s->n_in > 1 && s->in[1] >= 0 && wq_format(g->values[s->in[1]].init))
        return to_qdq_weight_only(b, s, err);
    b_copy(b, s);
    return SH_OK;
}

int sh_graph_to_qdq(const sh_graph *g, sh_graph **out, sh_error *err)
{
    *out = NULL;
    builder b = {.g = g};
    int rc = SH_OK;
    for (int i = 0; i < g->n_nodes && !rc; i++) rc = to_qdq_node(&b, &g->nodes[i], err);
    if (!rc) rc = b_build(&b, out, err);
    b_free(&b);
    return rc;
}

/* ---- from QDQ ------------------------------------------------------------------ */

typedef struct fctx {
    builder b;
    const sh_graph *g;
    int *producer; /* value -> node */
    int *uses;     /* value -> number of reading nodes (+1 per graph output) */
    int *consumer; /* value -> the last reading node */
    char *absorbed; /* node -> fused into another */
} fctx;

static const sh_node *prod(const fctx *c, int v) { return v >= 0 && c->producer[v] >= 0 ? &c->g->nodes[c->producer[v]] : NULL; }

/* the DequantizeLinear producing v, with constant scale / zero point; per
 * tensor unless per_channel (then per tensor or along `axis` of a constant
 * x with numel(scale) = x.shape[axis]) */
static const sh_node *dq_of(const fctx *c, int v, int want_const_x, sh_format *xf)
{
    const sh_node *d = prod(c, v);
    if (!d || strcmp(d->op, "DequantizeLinear") || d->n_in < 2) return NULL;
    const sh_graph *g = c->g;
    const sh_tensor *s = init_of(g, d->in[1]), *z = d->n_in > 2 ? init_of(g, d->in[2]) : NULL;
    if (!s || s->fmt != SH_F32 || (d->n_in > 2 && d->in[2] >= 0 && !z)) return NULL;
    const sh_tensor *x = init_of(g, d->in[0]);
    if (want_const_x && !x) return NULL;
    sh_format f = x ? x->fmt : z ? z->fmt : SH_U8;
    if (z && z->fmt != f) return NULL;
    *xf = f;
    return d;
}

static int64_t dq_axis(const fctx *c, const sh_node *d)
{
    const sh_tensor *s = init_of(c->g, d->in[1]), *x = init_of(c->g, d->in[0]);
    if (sh_tensor_numel(s) == 1) return -1;
    int64_t a = sh_attr_int(d, "axis", 1);
    if (x && a < 0) a += x->ndim;
    return a;
}

/* the single QuantizeLinear reading v (optionally through a single Relu);
 * *relu set when a Relu sits in between */
static const sh_node *q_after(const fctx *c, int v, int *relu, const sh_node **relu_node)
{
    *relu = 0;
    *relu_node = NULL;
    if (v < 0 || c->uses[v] != 1 || c->consumer[v] < 0) return NULL;
    const sh_node *n = &c->g->nodes[c->consumer[v]];
    if (!strcmp(n->op, "Relu")) {
        *relu = 1;
        *relu_node = n;
        if (c->uses[n->out[0]] != 1 || c->consumer[n->out[0]] < 0) return NULL;
        n = &c->g->nodes[c->consumer[n->out[0]]];
    }
    if (strcmp(n->op, "QuantizeLinear") || n->n_in < 2) return NULL;
    const sh_tensor *s = init_of(c->g, n->in[1]), *z = n->n_in > 2 ? init_of(c->g, n->in[2]) : NULL;
    if (!s || s->fmt != SH_F32 || sh_tensor_numel(s) != 1 || (n->n_in > 2 && n->in[2] >= 0 && !z)) return NULL;
    if (z && z->fmt != SH_U8 && z->fmt != SH_I8) return NULL;
    return n;
}

static int node_index(const fctx *c, const sh_node *n) { return (int)(n - c->g->nodes); }

/* int32 bias for channels m from value v (DequantizeLinear of an int32
 * initializer, or an f32 initializer), in the x_scale * w_scale[m] scale */
static sh_tensor *bias_i32(const fctx *c, int v, const sh_tensor *xs, const sh_tensor *ws, int64_t M, sh_error *err)
{
    const sh_graph *g = c->g;
    const sh_tensor *bf = init_of(g, v), *bi = NULL, *bs = NULL;
    if (!bf) {
        const sh_node *d = prod(c, v);
        if (!d || strcmp(d->op, "DequantizeLinear") || d->n_in < 2) return NULL;
        bi = init_of(g, d->in[0]), bs = init_of(g, d->in[1]);
        const sh_tensor *bz = d->n_in > 2 ? init_of(g, d->in[2]) : NULL;
        if (!bi || bi->fmt != SH_I32 || !bs || bs->fmt != SH_F32 || (d->n_in > 2 && d->in[2] >= 0 && !bz)) return NULL;
        if (bz)
            for (int64_t i = 0; i < sh_tensor_numel(bz); i++)
                if (((const int32_t *)bz->data)[i]) return NULL;
        if (sh_tensor_numel(bi) != M || (sh_tensor_numel(bs) != 1 && sh_tensor_numel(bs) != M)) return NULL;
    } else if (bf->fmt != SH_F32 || sh_tensor_numel(bf) != M)
        return NULL;
    sh_tensor *t = sh_tensor_new(SH_I32, 1, (int64_t[]){M}, err);
    if (!t) return NULL;
    for (int64_t m = 0; m < M; m++) {
        double real = bi ? (double)((const int32_t *)bi->data)[m] * (double)scale_at(bs, m) : (double)sh_f32(bf)[m];
        double q = real / ((double)(float)(scale_at(xs, 0) * scale_at(ws, m)));
        q = nearbyint(q);
        q = q < -2147483647.0 ? -2147483647.0 : q > 2147483647.0 ? 2147483647.0 : q;
        ((int32_t *)t->data)[m] = (int32_t)q;
    }
    return t;
}

/* Conv / Gemm / MatMul with DQ inputs -> QLinearConv / QGemm / QLinearMatMul */
static int fuse_linear(fctx *c, const sh_node *n, sh_error *err)
{
    const sh_graph *g = c->g;
    int conv = !strcmp(n->op, "Conv"), gemm = !strcmp(n->op, "Gemm");
    sh_format xf, wf;
    if (n->n_in < 2) return 0;
    const sh_node *dx = dq_of(c, n->in[0], 0, &xf), *dw = dq_of(c, n->in[1], conv || gemm, &wf);
    if (!dx || !dw || dq_axis(c, dx) >= 0 || (xf != SH_U8 && xf != SH_I8) || (wf != SH_U8 && wf != SH_I8)) return 0;
    const sh_tensor *W = init_of(g, dw->in[0]), *xs = init_of(g, dx->in[1]), *ws = init_of(g, dw->in[1]);
    int transB = gemm ? (int)sh_attr_int(n, "transB", 0) : 0;
    int64_t M, waxis = dq_axis(c, dw);
    if (conv) M = W->shape[0];
    else if (gemm) M = W->ndim == 2 ? W->shape[transB ? 0 : 1] : -1;
    else M = W ? W->shape[W->ndim - 1] : -1;
    int64_t want_axis = conv || (gemm && transB) ? 0 : W ? W->ndim - 1 : 1;
    if (waxis >= 0 && (waxis != want_axis || sh_tensor_numel(ws) != M)) return 0;
    if (!conv && !gemm && waxis >= 0 && (!W || W->ndim != 2)) return 0;
    if (gemm && (sh_attr_int(n, "transA", 0) != 0 || sh_attr_float(n, "alpha", 1.0f) != 1.0f ||
                 (n->n_in > 2 && n->in[2] >= 0 && sh_attr_float(n, "beta", 1.0f) != 1.0f)))
        return 0;
    int relu;
    const sh_node *rn, *q = q_after(c, n->out[0], &relu, &rn);
    if (!q && !gemm) return 0;
    /* a fused Relu without a following Q (f32-output QGemm): keep it out */
    const char *act = sh_attr_string(n, "activation", "");
    if (*act) {
        if (strcmp(act, "Relu")) return 0;
        relu = 1;
    }
    if (!q) relu = *act != 0, rn = NULL;
    /* bias */
    const char *bias = "";
    int has_b = (conv || gemm) && n->n_in > 2 && n->in[2] >= 0;
    if (has_b) {
        if (gemm) {
            /* C must be [N] or [1,N] */
            const sh_tensor *ct = init_of(g, n->in[2]);
            const sh_node *dc = prod(c, n->in[2]);
            const sh_tensor *cc = ct ? ct : dc && !strcmp(dc->op, "DequantizeLinear") ? init_of(g, dc->in[0]) : NULL;
            if (!cc || sh_tensor_numel(cc) != M || cc->ndim > 2) return 0;
        }
        sh_tensor *bt = bias_i32(c, n->in[2], xs, ws, M, err);
        if (!bt) return 0;
        bias = b_init(&c->b, n->name, "_bias_i32", bt);
    }
    const char *x = vname(g, dx->in[0]), *xsn = vname(g, dx->in[1]), *xz = dx->n_in > 2 ? vname(g, dx->in[2]) : "";
    const char *w = vname(g, dw->in[0]), *wsn = vname(g, dw->in[1]), *wz = dw->n_in > 2 ? vname(g, dw->in[2]) : "";
    const char *ys = q ? vname(g, q->in[1]) : "", *yz = q && q->n_in > 2 ? vname(g, q->in[2]) : "";
    const char *y = q ? vname(g, q->out[0]) : vname(g, n->out[0]);
    bnode *nn;
    if (conv) {
        const char *in[9] = {x, xsn, xz, w, wsn, wz, ys, yz, bias};
        nn = b_node(&c->b, "QLinearConv", "", n->name, *bias ? 9 : 8, in, 1, &y);
        if (nn) nn->attrs_from = n, nn->skip[0] = "activation";
    } else if (gemm) {
        const char *in[9] = {x, xsn, xz, w, wsn, wz, bias, ys, yz};
        int nin = q ? (*yz ? 9 : 8) : *bias ? 7 : 6;
        nn = b_node(&c->b, "QGemm", MS_DOMAIN, n->name, nin, in, 1, &y);
        if (nn) nn->attrs_from = n, nn->skip[0] = "activation", nn->skip[1] = "beta";
    } else {
        const char *in[8] = {x, xsn, xz, w, wsn, wz, ys, yz};
        nn = b_node(&c->b, "QLinearMatMul", "", n->name, 8, in, 1, &y);
    }
    if (relu && nn) b_str(nn, "activation", "Relu");
    if (q) c->absorbed[node_index(c, q)] = 1;
    if (rn && q) c->absorbed[node_index(c, rn)] = 1;
    return 1;
}

/* Add / GlobalAveragePool of DQ inputs followed by Q */
static int fuse_add_gap(fctx *c, const sh_node *n)
{
    const sh_graph *g = c->g;
    int add = !strcmp(n->op, "Add");
    sh_format fa, fb = SH_U8;
    if (n->n_in < (add ? 2 : 1)) return 0;
    const sh_node *da = dq_of(c, n->in[0], 0, &fa), *db = add ? dq_of(c, n->in[1], 0, &fb) : NULL;
    if (!da || dq_axis(c, da) >= 0 || (add && (!db || dq_axis(c, db) >= 0 || fb != fa))) return 0;
    if (fa != SH_U8 && fa != SH_I8) return 0;
    int relu;
    const sh_node *rn, *q = q_after(c, n->out[0], &relu, &rn);
    if (!q || (relu && !add)) return 0;
    const sh_tensor *z = q->n_in > 2 ? init_of(g, q->in[2]) : NULL;
    if ((z ? z->fmt : SH_U8) != fa) return 0;
    const char *y = vname(g, q->out[0]);
#define DQN(d, i) ((d)->n_in > (i) ? vname(g, (d)->in[i]) : "")
    bnode *nn;
    if (add) {
        const char *in[8] = {DQN(da, 0), DQN(da, 1), DQN(da, 2), DQN(db, 0), DQN(db, 1), DQN(db, 2), DQN(q, 1), DQN(q, 2)};
        nn = b_node(&c->b, "QLinearAdd", MS_DOMAIN, n->name, *in[7] ? 8 : 7, in, 1, &y);
        if (relu && nn) b_str(nn, "activation", "Relu");
    } else {
        const char *in[5] = {DQN(da, 0), DQN(da, 1), DQN(da, 2), DQN(q, 1), DQN(q, 2)};
        nn = b_node(&c->b, "QLinearGlobalAveragePool", MS_DOMAIN, n->name, *in[4] ? 5 : 4, in, 1, &y);
        if (nn) b_int(nn, "channels_last", 0);
    }
#undef DQN
    c->absorbed[node_index(c, q)] = 1;
    if (rn) c->absorbed[node_index(c, rn)] = 1;
    return 1;
}

static int32_t zp_val(const sh_tensor *z)
{
    if (!z || sh_tensor_numel(z) < 1) return 0;
    switch (z->fmt) {
    case SH_U8: return ((const uint8_t *)z->data)[0];
    case SH_I8: return ((const int8_t *)z->data)[0];
    case SH_I32: return ((const int32_t *)z->data)[0];
    default: return 0;
    }
}

static int same_qparams(const fctx *c, const sh_node *dq, const sh_node *q)
{
    const sh_graph *g = c->g;
    const sh_tensor *s1 = init_of(g, dq->in[1]), *s2 = init_of(g, q->in[1]);
    const sh_tensor *z1 = dq->n_in > 2 ? init_of(g, dq->in[2]) : NULL, *z2 = q->n_in > 2 ? init_of(g, q->in[2]) : NULL;
    if (!s1 || !s2 || sh_tensor_numel(s1) != 1 || sh_tensor_numel(s2) != 1 || sh_f32(s1)[0] != sh_f32(s2)[0]) return 0;
    sh_format f1 = z1 ? z1->fmt : SH_U8, f2 = z2 ? z2->fmt : SH_U8;
    int32_t v1 = zp_val(z1), v2 = zp_val(z2);
    return f1 == f2 && v1 == v2;
}

/* MaxPool / Flatten / Reshape / Identity between DQ and Q of the same params */
static int fuse_passthrough(fctx *c, const sh_node *n)
{
    if (n->n_out != 1 || n->n_in < 1) return 0;
    sh_format f;
    const sh_node *d = dq_of(c, n->in[0], 0, &f);
    if (!d || dq_axis(c, d) >= 0 || (f != SH_U8 && f != SH_I8)) return 0;
    int relu;
    const sh_node *rn, *q = q_after(c, n->out[0], &relu, &rn);
    if (!q || relu || !same_qparams(c, d, q)) return 0;
    const char *in[12], *y = vname(c->g, q->out[0]);
    for (int i = 0; i < n->n_in && i < 12; i++) in[i] = vname(c->g, n->in[i]);
    in[0] = vname(c->g, d->in[0]);
    bnode *nn = b_node(&c->b, n->op, n->domain, n->name, n->n_in, in, 1, &y);
    if (nn) nn->attrs_from = n;
    c->absorbed[node_index(c, q)] = 1;
    return 1;
}

int sh_graph_from_qdq(const sh_graph *g, sh_graph **out, sh_error *err)
{
    *out = NULL;
    fctx c = {.b = {.g = g}, .g = g};
    c.producer = malloc(sizeof(int) * (size_t)(g->n_values + 1));
    c.uses = calloc((size_t)g->n_values + 1, sizeof(int));
    c.consumer = malloc(sizeof(int) * (size_t)(g->n_values + 1));
    c.absorbed = calloc((size_t)g->n_nodes + 1, 1);
    int rc = SH_OK;
    if (!c.producer || !c.uses || !c.consumer || !c.absorbed) {
        rc = sh_err(err, SH_ENOMEM, "out of memory");
        goto done;
    }
    for (int v = 0; v < g->n_values; v++) c.producer[v] = -1, c.consumer[v] = -1;
    for (int i = 0; i < g->n_nodes; i++) {
        const sh_node *n = &g->nodes[i];
        for (int j = 0; j < n->n_out; j++)
            if (n->out[j] >= 0) c.producer[n->out[j]] = i;
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] >= 0) c.uses[n->in[j]]++, c.consumer[n->in[j]] = i;
    }
    for (int o = 0; o < g->n_outputs; o++) c.uses[g->outputs[o]] += 1, c.consumer[g->outputs[o]] = -1;
    /* absorbed Q / Relu nodes come after the node that absorbs them (the
     * graph is topologically sorted), so one forward pass decides */
    for (int i = 0; i < g->n_nodes && !rc; i++) {
        const sh_node *n = &g->nodes[i];
        if (c.absorbed[i]) continue;
        int done = 0;
        if (!strcmp(n->op, "Conv") || !strcmp(n->op, "Gemm") || !strcmp(n->op, "MatMul"))
            done = fuse_linear(&c, n, err);
        else if (!strcmp(n->op, "Add") || !strcmp(n->op, "GlobalAveragePool"))
            done = fuse_add_gap(&c, n);
        else if (!strcmp(n->op, "MaxPool") || !strcmp(n->op, "Flatten") || !strcmp(n->op, "Reshape") ||
                 !strcmp(n->op, "Identity"))
            done = fuse_passthrough(&c, n);
        if (!done) b_copy(&c.b, n);
    }
    if (!rc) rc = b_build(&c.b, out, err);
done:
    b_free(&c.b);
    free(c.producer);
    free(c.uses);
    free(c.consumer);
    free(c.absorbed);
    return rc;
}
