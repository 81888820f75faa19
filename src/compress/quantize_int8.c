/* quantize_int8.c - dynamic and static int8 quantization (and the
 * sh_quantize entry point that also dispatches weight-only mode).
 *
 * Conventions (shared with the int8 ops, src/ops/qlinear*.c):
 *  - activations u8, asymmetric per tensor: scale f32 scalar, zero point u8
 *    scalar; real = scale * (q - zp); the range always contains 0.
 *  - weights s8 symmetric (codes -127..127) per output channel (scale f32
 *    [Cout], zero point s8 zeros [Cout]) or per tensor (scalars).
 *  - bias int32 = round(b / (x_scale * w_scale[c])).
 *
 * Static mode works on a copy of the graph with BatchNorm folded and Relu
 * fused (sh_graph_optimize), calibrates the inputs and outputs of the layers
 * (and residual Adds) on that copy, then builds a new graph node by node:
 * every value of the copy may have an f32 form and a u8 form (created on
 * demand: QuantizeLinear / DequantizeLinear), quantized layers read and
 * write the u8 form, shape-only ops (MaxPool, Flatten, Reshape) pass the u8
 * form on with the same scale and zero point, a Relu after a value whose zero
 * point is 0 is the identity, and everything else reads the f32 form.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "shrink.h"

#define MS_DOMAIN "com.microsoft"

typedef struct qv {
    char *f32;      /* name of the f32 form in the new graph (NULL: none yet) */
    char *q;        /* name of the u8 form (NULL: none yet) */
    char *sname, *zname; /* its scale / zero point initializers */
    float scale;
    int zp;
} qv;

typedef struct qctx {
    const sh_graph *g;   /* the (optimized) source graph */
    sh_graph *ng;        /* the graph being built */
    const sh_quant_opts *o;
    sh_error *err;
    qv *v;               /* per value of g */
    int *readers;        /* per value of g: node input slots + graph outputs */
    sh_calib *cal;
    int *cidx;           /* per value of g: calibration index or -1 */
    int ncal;
    int method;
    double pct;
    int per_channel;
    sh_quant_report *rep;
    int cap_layers;
    int uniq;
} qctx;

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- small helpers ------------------------------------------------------ */

static const sh_tensor *f32_init(const sh_graph *g, int v)
{
    if (v < 0 || v >= g->n_values) return NULL;
    const sh_tensor *t = g->values[v].init;
    return t && t->fmt == SH_F32 && t->data ? t : NULL;
}

static int is_output(const sh_graph *g, int v)
{
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == v) return 1;
    return 0;
}

/* A name not used in the new graph, based on base. */
static void fresh_name(qctx *c, const char *base, char *out, size_t n)
{
    snprintf(out, n, "%s", base);
    for (int k = 2; sh_graph_find(c->ng, out) >= 0; k++) {
        char suf[16];
        int ls = snprintf(suf, sizeof suf, "_%d", k);
        size_t lb = strlen(base);
        if (lb + (size_t)ls >= n) lb = n - 1 - (size_t)ls;
        memcpy(out, base, lb);
        memcpy(out + lb, suf, (size_t)ls + 1);
    }
}

static int add_init(qctx *c, const char *base, sh_tensor *t, char *name, size_t n)
{
    if (!t) return c->err ? c->err->code : SH_ENOMEM;
    fresh_name(c, base, name, n);
    int rc = sh_graph_add_init(c->ng, name, t, c->err);
    return rc < 0 ? rc : SH_OK;
}

static sh_tensor *scalar(qctx *c, sh_format f, double v)
{
    sh_tensor *t = sh_tensor_new(f, 0, NULL, c->err);
    if (!t) return NULL;
    if (f == SH_F32) *(float *)t->data = (float)v;
    else if (f == SH_U8) *(uint8_t *)t->data = (uint8_t)v;
    else if (f == SH_I8) *(int8_t *)t->data = (int8_t)v;
    return t;
}

/* Deep copy of the attributes of s onto node k of the new graph, except the
 * names in skip (NULL-terminated, may be NULL). */
static int copy_attrs(qctx *c, int k, const sh_node *s, const char *const *skip)
{
    for (int a = 0; a < s->n_attrs; a++) {
        const sh_attr *at = &s->attrs[a];
        int skipped = 0;
        for (int j = 0; skip && skip[j]; j++) skipped |= !strcmp(skip[j], at->name);
        if (skipped) continue;
        sh_node *d = &c->ng->nodes[k];
        sh_attr *na = realloc(d->attrs, sizeof(sh_attr) * (size_t)(d->n_attrs + 1));
        if (!na) return sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
        d->attrs = na;
        sh_attr *x = &na[d->n_attrs];
        memset(x, 0, sizeof *x);
        x->type = at->type;
        x->i = at->i;
        x->f = at->f;
        x->n = at->n;
        x->name = xstrdup(at->name);
        d->n_attrs++;
        if (!x->name) return sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
        if (at->s && !(x->s = xstrdup(at->s))) return sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
        if (at->ints) {
            x->ints = malloc(sizeof(int64_t) * (size_t)(at->n > 0 ? at->n : 1));
            if (!x->ints) return sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
            memcpy(x->ints, at->ints, sizeof(int64_t) * (size_t)at->n);
        }
        if (at->floats) {
            x->floats = malloc(sizeof(float) * (size_t)(at->n > 0 ? at->n : 1));
            if (!x->floats) return sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
            memcpy(x->floats, at->floats, sizeof(float) * (size_t)at->n);
        }
        if (at->t && !(x->t = sh_tensor_clone(at->t, c->err))) return c->err ? c->err->code : SH_ENOMEM;
    }
    return SH_OK;
}

static int set_domain(qctx *c, int k, const char *domain)
{
    char *d = xstrdup(domain);
    if (!d) return sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
    free(c->ng->nodes[k].domain);
    c->ng->nodes[k].domain = d;
    return SH_OK;
}

/* Add a node with one output; returns node index or a negative code. */
static int emit(qctx *c, const char *op, const char *domain, const char *name, int n_in, const char *const *ins,
                const char *out)
{
    /* node names are kept (they are not value names) */
    const char *outs[1] = {out};
    int k = sh_graph_add_node(c->ng, op, name, n_in, ins, 1, outs, c->err);
    if (k < 0) return k;
    if (domain && *domain) {
        int rc = set_domain(c, k, domain);
        if (rc) return rc;
    }
    return k;
}

/* Activation quantization parameters of range [lo, hi] (contains 0). */
static void act_qparams(float lo, float hi, float *scale, int *zp)
{
    if (lo > 0) lo = 0;
    if (hi < 0) hi = 0;
    double s = ((double)hi - (double)lo) / 255.0;
    if (!(s > 0) || !isfinite(s)) s = 1.0;
    double z = nearbyint(-(double)lo / s);
    if (z < 0) z = 0;
    if (z > 255) z = 255;
    *scale = (float)s;
    *zp = (int)z;
}

/* ---- f32 and u8 forms of values --------------------------------------- */

/* Name of an initializer of g in the new graph (copied on first use). */
static int ensure_init(qctx *c, int v, const char **name)
{
    const char *nm = c->g->values[v].name;
    if (sh_graph_find(c->ng, nm) < 0) {
        sh_tensor *t = sh_tensor_clone(c->g->values[v].init, c->err);
        if (!t) return c->err ? c->err->code : SH_ENOMEM;
        t->nbytes = c->g->values[v].init->nbytes;
        int rc = sh_graph_add_init(c->ng, nm, t, c->err);
        if (rc < 0) return rc;
    }
    *name = nm;
    return SH_OK;
}

static int f32_of(qctx *c, int v, const char **name)
{
    if (c->g->values[v].init) return ensure_init(c, v, name);
    qv *q = &c->v[v];
    if (q->f32) {
        *name = q->f32;
        return SH_OK;
    }
    if (!q->q)
        return sh_err(c->err, SH_EINTERNAL, "quantize: value '%s' has no form in the new graph", c->g->values[v].name);
    char nm[256];
    fresh_name(c, c->g->values[v].name, nm, sizeof nm);
    const char *ins[3] = {q->q, q->sname, q->zname};
    char nn[300];
    snprintf(nn, sizeof nn, "%s_dequant", c->g->values[v].name);
    int k = emit(c, "DequantizeLinear", "", nn, 3, ins, nm);
    if (k < 0) return k;
    if (!(q->f32 = xstrdup(nm))) return sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
    *name = q->f32;
    return SH_OK;
}

/* Give value v a u8 form named `name` with the given parameters (creates the
 * scale / zero point initializers). */
static int set_q(qctx *c, int v, const char *name, float scale, int zp)
{
    qv *q = &c->v[v];
    char b[300], nm[300];
    snprintf(b, sizeof b, "%s_scale", c->g->values[v].name);
    int rc = add_init(c, b, scalar(c, SH_F32, scale), nm, sizeof nm);
    if (rc) return rc;
    q->sname = xstrdup(nm);
    snprintf(b, sizeof b, "%s_zero_point", c->g->values[v].name);
    if ((rc = add_init(c, b, scalar(c, SH_U8, zp), nm, sizeof nm))) return rc;
    q->zname = xstrdup(nm);
    q->q = xstrdup(name);
    q->scale = scale;
    q->zp = zp;
    if (!q->sname || !q->zname || !q->q) return sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
    return SH_OK;
}

/* v's u8 form shares w's (same data, scale and zero point). */
static int alias_q(qctx *c, int v, int w, const char *name)
{
    qv *q = &c->v[v], *p = &c->v[w];
    q->q = xstrdup(name);
    q->sname = xstrdup(p->sname);
    q->zname = xstrdup(p->zname);
    q->scale = p->scale;
    q->zp = p->zp;
    if (!q->q || !q->sname || !q->zname) return sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
    return SH_OK;
}

static int range_of(qctx *c, int v, float *lo, float *hi)
{
    int i = c->cidx[v];
    if (i < 0)
        return sh_err(c->err, SH_EINTERNAL, "quantize: value '%s' was not calibrated", c->g->values[v].name);
    int rc = sh_calib_range(c->cal, i, c->method, c->pct, lo, hi, c->err);
    if (rc) sh_error_wrap(c->err, "value '%s'", c->g->values[v].name);
    return rc;
}

static int q_of(qctx *c, int v, const char **name)
{
    qv *q = &c->v[v];
    if (q->q) {
        *name = q->q;
        return SH_OK;
    }
    float lo, hi, s;
    int z, rc;
    if ((rc = range_of(c, v, &lo, &hi))) return rc;
    act_qparams(lo, hi, &s, &z);
    const char *f;
    if ((rc = f32_of(c, v, &f))) return rc;
    char b[300], nm[300];
    snprintf(b, sizeof b, "%s_quantized", c->g->values[v].name);
    fresh_name(c, b, nm, sizeof nm);
    /* the scale / zero point initializers first: QuantizeLinear reads them */
    char sb[300], sn[300], zb[300], zn[300];
    snprintf(sb, sizeof sb, "%s_scale", c->g->values[v].name);
    if ((rc = add_init(c, sb, scalar(c, SH_F32, s), sn, sizeof sn))) return rc;
    snprintf(zb, sizeof zb, "%s_zero_point", c->g->values[v].name);
    if ((rc = add_init(c, zb, scalar(c, SH_U8, z), zn, sizeof zn))) return rc;
    const char *ins[3] = {f, sn, zn};
    char nn[300];
    snprintf(nn, sizeof nn, "%s_quant", c->g->values[v].name);
    int k = emit(c, "QuantizeLinear", "", nn, 3, ins, nm);
    if (k < 0) return k;
    q->q = xstrdup(nm);
    q->sname = xstrdup(sn);
    q->zname = xstrdup(zn);
    q->scale = s;
    q->zp = z;
    if (!q->q || !q->sname || !q->zname) return sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
    *name = q->q;
    return SH_OK;
}

/* ---- layers -------------------------------------------------------------- */

typedef struct layer_info {
    int kind;            /* 0 Conv, 1 Gemm, 2 MatMul */
    int w, b;            /* weight, bias values (-1) */
    int64_t rows, cols;  /* [out, in] */
    int transB;
    int relu;
} layer_info;

static int is_layer_op(const char *op) { return !strcmp(op, "Conv") || !strcmp(op, "Gemm") || !strcmp(op, "MatMul"); }

/* A QGemm whose u8 output is read only by DequantizeLinear nodes of the
 * same scale and zero point (the value's f32 form: its readers run f32, e.g.
 * RoPE, Attention, SiluMul, an Add with an f32 residual stream) writes f32
 * straight from its int32 accumulators instead: one rounding less and one
 * node less.  The clamp at 0 that the u8 form gave when its zero point is 0
 * stays, as a fused Relu.  The DequantizeLinear nodes become Identity and are
 * removed. */
static int fuse_qgemm_dequant(sh_graph *ng, sh_error *err)
{
    int changed = 0;
    for (int k = 0; k < ng->n_nodes; k++) {
        sh_node *n = &ng->nodes[k];
        if (strcmp(n->op, "QGemm") || n->n_in != 9 || n->n_out != 1 || n->in[7] < 0 || n->in[8] < 0) continue;
        int y = n->out[0], readers = 0, ok = 1;
        for (int i = 0; i < ng->n_outputs; i++) ok &= ng->outputs[i] != y;
        for (int i = 0; i < ng->n_nodes && ok; i++)
            for (int j = 0; j < ng->nodes[i].n_in; j++) {
                const sh_node *r = &ng->nodes[i];
                if (r->in[j] != y) continue;
                ok &= !strcmp(r->op, "DequantizeLinear") && j == 0 && r->n_in == 3 && r->in[1] == n->in[7] &&
                      r->in[2] == n->in[8];
                readers++;
            }
        const sh_tensor *zt = ng->values[n->in[8]].init;
        if (!ok || !readers || !zt || !zt->data || zt->fmt != SH_U8) continue;
        int zp = *(const uint8_t *)zt->data;
        n->n_in = 7;
        if (zp == 0 && sh_node_set_string(ng, k, "activation", "Relu")) return sh_err(err, SH_ENOMEM, "quantize: out of memory");
        for (int i = 0; i < ng->n_nodes; i++) {
            sh_node *r = &ng->nodes[i];
            if (strcmp(r->op, "DequantizeLinear") || r->in[0] != y) continue;
            char *op = xstrdup("Identity");
            if (!op) return sh_err(err, SH_ENOMEM, "quantize: out of memory");
            free(r->op);
            r->op = op;
            r->n_in = 1;
        }
        ng->values[y].fmt = SH_F32;
        changed = 1;
    }
    return changed ? sh_graph_remove_identities(ng, err) : SH_OK;
}

/* 1 if node k can be quantized in mode; else 0 and note says why. */
static int layer_ok(const sh_graph *g, int k, int mode, layer_info *L, char *note, size_t nn)
{
    const sh_node *n = &g->nodes[k];
    memset(L, 0, sizeof *L);
    L->w = n->n_in > 1 ? n->in[1] : -1;
    L->b = -1;
    L->kind = !strcmp(n->op, "Conv") ? 0 : !strcmp(n->op, "Gemm") ? 1 : 2;
    const sh_tensor *W = f32_init(g, L->w);
    const char *act = sh_attr_string(n, "activation", "");
    L->relu = !strcmp(act, "Relu");
    if (*act && !L->relu) return snprintf(note, nn, "fused activation '%s' has no int8 form", act), 0;
    if (!W) {
        if (L->w >= 0 && g->values[L->w].init)
            return snprintf(note, nn, "weight is %s, not f32", sh_format_get(g->values[L->w].init->fmt)->name), 0;
        return snprintf(note, nn, "weight is not a constant (an input of the graph or computed)"), 0;
    }
    if (n->n_out != 1) return snprintf(note, nn, "%d outputs", n->n_out), 0;
    if (L->kind == 0 && W->ndim >= 2) {
        L->rows = W->shape[0];
        L->cols = sh_tensor_numel(W) / (W->shape[0] ? W->shape[0] : 1);
    }
    if (L->kind == 0) {
        if (mode == SH_QMODE_DYNAMIC)
            return snprintf(note, nn, "dynamic mode quantizes Gemm / MatMul only; Conv needs --mode static"), 0;
        if (W->ndim != 4) return snprintf(note, nn, "Conv weight of rank %d (only 2-D convolutions are quantized)", W->ndim), 0;
        L->rows = W->shape[0];
        L->cols = W->shape[1] * W->shape[2] * W->shape[3];
        if (n->n_in > 2 && n->in[2] >= 0) {
            const sh_tensor *B = f32_init(g, n->in[2]);
            if (!B || sh_tensor_numel(B) != L->rows) return snprintf(note, nn, "bias is not a constant f32 [Cout]"), 0;
            L->b = n->in[2];
        }
        return 1;
    }
    if (W->ndim != 2) return snprintf(note, nn, "weight of rank %d (2-D needed)", W->ndim), 0;
    if (L->kind == 1) {
        if (sh_attr_int(n, "transA", 0)) return snprintf(note, nn, "transA=1"), 0;
        if (sh_attr_float(n, "alpha", 1.0f) != 1.0f) return snprintf(note, nn, "alpha != 1"), 0;
        L->transB = (int)sh_attr_int(n, "transB", 0);
        L->rows = L->transB ? W->shape[0] : W->shape[1];
        L->cols = L->transB ? W->shape[1] : W->shape[0];
        if (n->n_in > 2 && n->in[2] >= 0) {
            const sh_tensor *B = f32_init(g, n->in[2]);
            if (!B || sh_tensor_numel(B) != L->rows || (B->ndim == 2 && B->shape[0] != 1) || B->ndim > 2)
                return snprintf(note, nn, "C is not a constant f32 [N] bias"), 0;
            if (sh_attr_float(n, "beta", 1.0f) != 1.0f) return snprintf(note, nn, "beta != 1"), 0;
            L->b = n->in[2];
        }
    } else {
        L->transB = 0;
        L->rows = W->shape[1];
        L->cols = W->shape[0];
    }
    return 1;
}

/* s8 weight [rows, cols] (transposed to [N,K] for Gemm transB=0 / MatMul) with
 * per-channel or per-tensor symmetric scales; fills the error statistics. */
static int quant_weight(qctx *c, const sh_graph *g, const layer_info *L, sh_tensor **wq, float **scales,
                        double *max_err, double *mean_err)
{
    const sh_tensor *W = g->values[L->w].init;
    const float *w = W->data;
    int64_t R = L->rows, K = L->cols;
    int trans = L->kind != 0 && !L->transB;
    float *sc = malloc(sizeof(float) * (size_t)R);
    sh_tensor *t = NULL;
    if (L->kind == 0) t = sh_tensor_new(SH_I8, W->ndim, W->shape, c->err);
    else {
        int64_t s[2] = {R, K};
        t = sh_tensor_new(SH_I8, 2, s, c->err);
    }
    if (!sc || !t) {
        free(sc);
        sh_tensor_free(t);
        return sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
    }
#define WAT(r, k) (trans ? w[(k) * R + (r)] : w[(r) * K + (k)])
    double tmax = 0.0;
    for (int64_t r = 0; r < R; r++) {
        double m = 0.0;
        for (int64_t k = 0; k < K; k++) m = fmax(m, fabs((double)WAT(r, k)));
        sc[r] = m > 0 ? (float)(m / 127.0) : 1.0f;
        tmax = fmax(tmax, m);
    }
    if (!c->per_channel)
        for (int64_t r = 0; r < R; r++) sc[r] = tmax > 0 ? (float)(tmax / 127.0) : 1.0f;
    int8_t *q = t->data;
    double emax = 0.0, esum = 0.0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t k = 0; k < K; k++) {
            float x = WAT(r, k);
            float v = nearbyintf(x / sc[r]);
            v = v < -127 ? -127 : v > 127 ? 127 : v;
            q[r * K + k] = (int8_t)v;
            double e = fabs((double)x - (double)sc[r] * v);
            emax = fmax(emax, e);
            esum += e;
        }
#undef WAT
    *wq = t;
    *scales = sc;
    *max_err = emax;
    *mean_err = R > 0 && K > 0 ? esum / (double)(R * K) : 0.0;
    return SH_OK;
}

static sh_quant_layer *report_row(qctx *c, const sh_node *n)
{
    sh_quant_report *r = c->rep;
    if (r->n_layers == c->cap_layers) {
        int cap = c->cap_layers ? c->cap_layers * 2 : 16;
        sh_quant_layer *l = realloc(r->layers, sizeof *l * (size_t)cap);
        if (!l) return NULL;
        r->layers = l;
        c->cap_layers = cap;
    }
    sh_quant_layer *l = &r->layers[r->n_layers++];
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%s", n->name);
    l->fmt = SH_F32;
    return l;
}

/* Bytes of a layer's weight and bias in f32. */
static int64_t layer_bytes(const sh_graph *g, const layer_info *L)
{
    int64_t b = (int64_t)g->values[L->w].init->nbytes;
    if (L->b >= 0) b += (int64_t)g->values[L->b].init->nbytes;
    return b;
}

/* Emit the quantized form of layer node k.  Static: u8 in, u8 out (or f32
 * out for a Gemm whose output is only a graph output); dynamic: f32 in/out. */
static int emit_layer(qctx *c, int k, const layer_info *L, sh_quant_layer *row)
{
    const sh_graph *g = c->g;
    const sh_node *n = &g->nodes[k];
    int stat = c->o->mode == SH_QMODE_STATIC;
    int y = n->out[0], x = n->in[0];
    sh_tensor *wq = NULL;
    float *ws = NULL;
    double emax = 0, emean = 0;
    int rc = quant_weight(c, g, L, &wq, &ws, &emax, &emean);
    if (rc) return rc;
    const char *xn = NULL;
    float xs = 1.0f;
    if (stat) {
        if ((rc = q_of(c, x, &xn))) goto fail;
        xs = c->v[x].scale;
    } else if ((rc = f32_of(c, x, &xn))) {
        goto fail;
    }
    char wn[300], wsn[300], wzn[300], bn[300], b[300];
    int64_t R = L->rows;
    int64_t cs[1] = {R};
    /* weight, scales, zero points */
    snprintf(b, sizeof b, "%s_quantized", g->values[L->w].name);
    rc = add_init(c, b, wq, wn, sizeof wn);
    wq = NULL;
    if (rc) goto fail;
    sh_tensor *st = c->per_channel ? sh_tensor_new(SH_F32, 1, cs, c->err) : scalar(c, SH_F32, ws[0]);
    if (st && c->per_channel) memcpy(st->data, ws, sizeof(float) * (size_t)R);
    snprintf(b, sizeof b, "%s_scale", g->values[L->w].name);
    if ((rc = add_init(c, b, st, wsn, sizeof wsn))) goto fail;
    sh_tensor *zt = c->per_channel ? sh_tensor_new(SH_I8, 1, cs, c->err) : scalar(c, SH_I8, 0);
    snprintf(b, sizeof b, "%s_zero_point", g->values[L->w].name);
    if ((rc = add_init(c, b, zt, wzn, sizeof wzn))) goto fail;
    int64_t after = (int64_t)(sh_tensor_numel(g->values[L->w].init) + (c->per_channel ? R * 5 : 5));
    /* bias: int32 (static) or f32 (dynamic) */
    bn[0] = 0;
    if (L->b >= 0) {
        const float *bf = g->values[L->b].init->data;
        sh_tensor *bt;
        if (stat) {
            bt = sh_tensor_new(SH_I32, 1, cs, c->err);
            if (bt)
                for (int64_t r = 0; r < R; r++) {
                    double v = nearbyint((double)bf[r] / ((double)xs * (double)ws[r]));
                    v = v > 2147483647.0 ? 2147483647.0 : v < -2147483648.0 ? -2147483648.0 : v;
                    ((int32_t *)bt->data)[r] = (int32_t)v;
                }
        } else {
            bt = sh_tensor_new(SH_F32, 1, cs, c->err);
            if (bt) memcpy(bt->data, bf, sizeof(float) * (size_t)R);
        }
        snprintf(b, sizeof b, "%s_quantized", g->values[L->b].name);
        if ((rc = add_init(c, b, bt, bn, sizeof bn))) goto fail;
        after += 4 * R;
    }
    /* output */
    int f32_out = !stat || (L->kind != 0 && is_output(g, y) && c->readers[y] == 1);
    float ylo = 0, yhi = 0, ysc = 1.0f, xlo = 0, xhi = 0;
    int yzp = 0;
    if (stat) {
        if ((rc = range_of(c, x, &xlo, &xhi))) goto fail;
        if ((rc = range_of(c, y, &ylo, &yhi))) goto fail;
        if (L->relu && ylo < 0) ylo = 0;
        act_qparams(ylo, yhi, &ysc, &yzp);
    }
    char yn[300], ysn[300] = "", yzn[300] = "";
    const char *yv = g->values[y].name;
    if (f32_out) {
        fresh_name(c, yv, yn, sizeof yn);
    } else {
        snprintf(b, sizeof b, "%s_scale", yv);
        if ((rc = add_init(c, b, scalar(c, SH_F32, ysc), ysn, sizeof ysn))) goto fail;
        snprintf(b, sizeof b, "%s_zero_point", yv);
        if ((rc = add_init(c, b, scalar(c, SH_U8, yzp), yzn, sizeof yzn))) goto fail;
        snprintf(b, sizeof b, "%s_quantized", yv);
        fresh_name(c, b, yn, sizeof yn);
    }
    int node;
    if (L->kind == 0) {
        const char *ins[9] = {xn, c->v[x].sname, c->v[x].zname, wn, wsn, wzn, ysn, yzn, bn};
        node = emit(c, "QLinearConv", "", n->name, L->b >= 0 ? 9 : 8, ins, yn);
        if (node < 0) {
            rc = node;
            goto fail;
        }
        /* a fused Relu is the u8 saturation at zero point 0: no attribute
         * needed (the file stays plain ONNX that ONNX Runtime runs) */
        const char *skip[] = {"activation", NULL};
        if ((rc = copy_attrs(c, node, n, yzp == 0 ? skip : NULL))) goto fail;
    } else {
        const char *ins[9] = {xn, stat ? c->v[x].sname : "", stat ? c->v[x].zname : "", wn, wsn, wzn, bn,
                              f32_out ? "" : ysn, f32_out ? "" : yzn};
        int nin = f32_out ? 7 : 9;
        if (f32_out && !bn[0]) nin = 6;
        node = emit(c, "QGemm", MS_DOMAIN, n->name, nin, ins, yn);
        if (node < 0) {
            rc = node;
            goto fail;
        }
        const char *skip[] = {"transA", "transB", "alpha", "beta", f32_out ? NULL : "activation", NULL};
        if ((rc = copy_attrs(c, node, n, skip))) goto fail;
        if (sh_node_set_int(c->ng, node, "transB", 1) || sh_node_set_float(c->ng, node, "alpha", 1.0f)) {
            rc = sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
            goto fail;
        }
    }
    if (f32_out) {
        if (!(c->v[y].f32 = xstrdup(yn))) rc = sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
    } else {
        qv *q = &c->v[y];
        q->q = xstrdup(yn);
        q->sname = xstrdup(ysn);
        q->zname = xstrdup(yzn);
        q->scale = ysc;
        q->zp = yzp;
        if (!q->q || !q->sname || !q->zname) rc = sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
    }
    if (rc) goto fail;
    row->fmt = SH_I8;
    row->bytes_after = after;
    row->max_err = emax;
    row->mean_err = emean;
    if (stat) {
        row->act_in_lo = xlo;
        row->act_in_hi = xhi;
        row->act_out_lo = ylo;
        row->act_out_hi = yhi;
    }
    free(ws);
    return SH_OK;
fail:
    sh_tensor_free(wq);
    free(ws);
    return rc;
}

/* Copy node k as it is, reading the f32 form of every input. */
static int emit_f32(qctx *c, int k)
{
    const sh_graph *g = c->g;
    const sh_node *n = &g->nodes[k];
    const char **ins = calloc((size_t)(n->n_in + 1), sizeof *ins);
    const char **outs = calloc((size_t)(n->n_out + 1), sizeof *outs);
    char **own = calloc((size_t)(n->n_out + 1), sizeof *own);
    int rc = SH_OK;
    if (!ins || !outs || !own) {
        rc = sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
        goto done;
    }
    for (int i = 0; i < n->n_in && !rc; i++) {
        if (n->in[i] < 0) ins[i] = "";
        else rc = f32_of(c, n->in[i], &ins[i]);
    }
    if (rc) goto done;
    for (int j = 0; j < n->n_out; j++) {
        if (n->out[j] < 0) {
            outs[j] = "";
            continue;
        }
        char nm[300];
        fresh_name(c, g->values[n->out[j]].name, nm, sizeof nm);
        if (!(own[j] = xstrdup(nm))) {
            rc = sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
            goto done;
        }
        outs[j] = own[j];
    }
    int node = sh_graph_add_node(c->ng, n->op, n->name, n->n_in, ins, n->n_out, outs, c->err);
    if (node < 0) {
        rc = node;
        goto done;
    }
    if (n->domain && *n->domain && (rc = set_domain(c, node, n->domain))) goto done;
    if ((rc = copy_attrs(c, node, n, NULL))) goto done;
    for (int j = 0; j < n->n_out; j++)
        if (n->out[j] >= 0) {
            c->v[n->out[j]].f32 = own[j];
            own[j] = NULL;
        }
done:
    if (own)
        for (int j = 0; j < n->n_out; j++) free(own[j]);
    free(own);
    free(ins);
    free(outs);
    return rc;
}

/* A shape-only op (MaxPool, Flatten, Reshape) on the u8 form of its input. */
static int emit_passthrough(qctx *c, int k)
{
    const sh_graph *g = c->g;
    const sh_node *n = &g->nodes[k];
    const char *ins[8];
    int rc = SH_OK;
    ins[0] = c->v[n->in[0]].q;
    for (int i = 1; i < n->n_in && i < 8 && !rc; i++) {
        if (n->in[i] < 0) ins[i] = "";
        else rc = f32_of(c, n->in[i], &ins[i]); /* shape inputs: constants */
    }
    if (rc) return rc;
    int y = n->out[0];
    char b[300], nm[300];
    snprintf(b, sizeof b, "%s_quantized", g->values[y].name);
    fresh_name(c, b, nm, sizeof nm);
    int node = emit(c, n->op, n->domain, n->name, n->n_in, ins, nm);
    if (node < 0) return node;
    if ((rc = copy_attrs(c, node, n, NULL))) return rc;
    return alias_q(c, y, n->in[0], nm);
}

/* The only reader of v, if exactly one node reads it once and it is not a graph output. */
static int sole_reader(const sh_graph *g, const int *readers, int v)
{
    if (readers[v] != 1 || is_output(g, v)) return -1;
    for (int i = 0; i < g->n_nodes; i++)
        for (int j = 0; j < g->nodes[i].n_in; j++)
            if (g->nodes[i].in[j] == v) return i;
    return -1;
}

static int add_note_row(qctx *c, const sh_node *n, const char *note)
{
    sh_quant_layer *l = report_row(c, n);
    if (!l) return sh_err(c->err, SH_ENOMEM, "quantize: out of memory");
    snprintf(l->weight, sizeof l->weight, "%s", n->op);
    snprintf(l->note, sizeof l->note, "%s", note);
    return SH_OK;
}

static int opts_check(const sh_quant_opts *o, sh_error *err)
{
    if (o->mode < 0 || o->mode > 2)
        return sh_err(err, SH_EINVAL, "quantize: mode %d (0 weight, 1 dynamic, 2 static)", o->mode);
    if (o->granularity < 0 || o->granularity > 3)
        return sh_err(err, SH_EINVAL, "quantize: granularity %d (tensor, channel, group)", o->granularity);
    if (o->mode == SH_QMODE_WEIGHT) return SH_OK;
    const char *m = o->mode == SH_QMODE_STATIC ? "static" : "dynamic";
    if (o->bits != 0 && o->bits != 8) {
        if (o->bits < 2 || o->bits > 8)
            return sh_err(err, SH_EINVAL, "quantize: %d bits is outside 2-8", o->bits);
        return sh_err(err, SH_EINVAL,
                      "quantize: %s mode is int8 only (%d bits: use --mode weight for 4/3/2-bit weights)", m,
                      o->bits);
    }
    if (o->scheme == 2 || o->scheme == 3)
        return sh_err(err, SH_EINVAL, "quantize: %s mode uses symmetric int8 weights (scheme %s is weight-only)", m,
                      o->scheme == 2 ? "asym" : "log");
    if (o->granularity == SH_QGRAN_GROUP)
        return sh_err(err, SH_EINVAL,
                      "quantize: %s int8 has per-tensor or per-channel weight scales, not groups (group:N is for "
                      "--mode weight)",
                      m);
    if (o->mode == SH_QMODE_STATIC) {
        if (!o->calib)
            return sh_err(err, SH_EINVAL, "quantize: static mode needs calibration data (--calib SPEC)");
        if (o->method < 0 || o->method > 3)
            return sh_err(err, SH_EINVAL, "quantize: calibration method %d (minmax, percentile, mse, entropy)",
                          o->method);
        if (o->method == SH_CALIB_PERCENTILE && o->percentile != 0 && (o->percentile <= 50 || o->percentile > 100))
            return sh_err(err, SH_EINVAL, "quantize: percentile %g is outside (50, 100]", o->percentile);
        if (o->calib_samples < 0) return sh_err(err, SH_EINVAL, "quantize: %d calibration samples", o->calib_samples);
    }
    if (o->gptq || o->awq)
        return sh_err(err, SH_EINVAL, "quantize: %s applies to --mode weight, not %s int8", o->gptq ? "GPTQ" : "AWQ",
                      m);
    if (o->smooth != 0.0 && !(o->smooth > 0.0 && o->smooth < 1.0))
        return sh_err(err, SH_EINVAL, "quantize: SmoothQuant alpha %g must be in (0, 1)", o->smooth);
    if (o->smooth != 0.0 && !o->calib)
        return sh_err(err, SH_EINVAL, "quantize: SmoothQuant needs calibration data (--calib SPEC)");
    return SH_OK;
}

static void ctx_free(qctx *c)
{
    if (c->v)
        for (int i = 0; i < c->g->n_values; i++) {
            free(c->v[i].f32);
            free(c->v[i].q);
            free(c->v[i].sname);
            free(c->v[i].zname);
        }
    free(c->v);
    free(c->readers);
    free(c->cidx);
    sh_calib_free(c->cal);
}

static int push_name(const char ***names, int *n, int *cap, const char *s)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp((*names)[i], s)) return SH_OK;
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 32;
        const char **x = realloc(*names, sizeof *x * (size_t)nc);
        if (!x) return SH_ENOMEM;
        *names = x;
        *cap = nc;
    }
    (*names)[(*n)++] = s;
    return SH_OK;
}

static int quantize_int8(const sh_graph *src, const sh_quant_opts *o, sh_graph **out, sh_quant_report *rep,
                         sh_error *err)
{
    sh_graph *g = sh_graph_clone(src, err);
    if (!g) return err ? err->code : SH_ENOMEM;
    int rc = sh_graph_check(g, err);
    if (!rc) rc = sh_graph_optimize(g, 1, err);
    if (!rc) rc = sh_graph_check(g, err);
    if (rc) {
        sh_graph_free(g);
        return rc;
    }
    {
        sh_error e2 = {0}; /* shapes help (ranks of Gemm inputs) but are optional */
        sh_graph *t = sh_graph_clone(g, &e2);
        if (t && sh_graph_infer_shapes(t, NULL, &e2) == SH_OK) {
            sh_graph_free(g);
            g = t;
        } else {
            sh_graph_free(t);
        }
    }
    int stat = o->mode == SH_QMODE_STATIC;
    qctx c = {0};
    c.g = g;
    c.o = o;
    c.err = err;
    c.rep = rep;
    c.method = o->method;
    c.pct = o->percentile > 0 ? o->percentile : 99.99;
    c.per_channel = o->granularity != SH_QGRAN_TENSOR;
    c.v = calloc((size_t)g->n_values + 1, sizeof *c.v);
    c.readers = calloc((size_t)g->n_values + 1, sizeof(int));
    c.cidx = malloc(sizeof(int) * ((size_t)g->n_values + 1));
    layer_info *info = calloc((size_t)g->n_nodes + 1, sizeof *info);
    int *qok = calloc((size_t)g->n_nodes + 1, sizeof(int));
    char (*notes)[160] = calloc((size_t)g->n_nodes + 1, sizeof *notes);
    const char **names = NULL;
    int nnames = 0, capn = 0;
    sh_graph *ng = NULL;
    if (!c.v || !c.readers || !c.cidx || !info || !qok || !notes) {
        rc = sh_err(err, SH_ENOMEM, "quantize: out of memory");
        goto done;
    }
    for (int i = 0; i < g->n_values; i++) c.cidx[i] = -1;
    for (int i = 0; i < g->n_nodes; i++)
        for (int j = 0; j < g->nodes[i].n_in; j++)
            if (g->nodes[i].in[j] >= 0) c.readers[g->nodes[i].in[j]]++;
    for (int i = 0; i < g->n_outputs; i++) c.readers[g->outputs[i]]++;

    /* which layers go int8 */
    for (int k = 0; k < g->n_nodes; k++) {
        const sh_node *n = &g->nodes[k];
        if (!is_layer_op(n->op)) continue;
        qok[k] = layer_ok(g, k, o->mode, &info[k], notes[k], sizeof notes[k]);
        if (qok[k] && c.readers[info[k].w] > 1) {
            qok[k] = 0; /* quantizing would keep both copies in the file */
            snprintf(notes[k], sizeof notes[k], "weight is shared with another node (e.g. a tied embedding)");
        }
        if (qok[k] && stat && (n->in[0] < 0 || g->values[n->in[0]].init)) {
            qok[k] = 0;
            snprintf(notes[k], sizeof notes[k], "input is a constant");
        }
        if (qok[k] && o->exclude &&
            sh_name_in_list(o->exclude, n->name, info[k].w >= 0 ? g->values[info[k].w].name : "")) {
            qok[k] = 0;
            snprintf(notes[k], sizeof notes[k], "excluded (--exclude)");
        }
        if (qok[k] && o->skip_classifier && n->n_out == 1 && is_output(g, n->out[0]) && info[k].kind != 0) {
            qok[k] = 0;
            snprintf(notes[k], sizeof notes[k], "classifier left f32 (--skip-classifier)");
        }
    }
    if (o->smooth != 0.0) {
        int nn = 0;
        if ((rc = sh_smooth_apply(g, qok, o->smooth, o, &nn, err))) goto done;
        if (rep) rep->smoothed_norms = nn;
    }
    /* values to calibrate: inputs / outputs of int8 layers, inputs and
     * outputs of Adds and of Relus after them */
    if (stat) {
        for (int k = 0; k < g->n_nodes; k++) {
            const sh_node *n = &g->nodes[k];
            int want = qok[k] || (!strcmp(n->op, "Add") && n->n_in == 2) || !strcmp(n->op, "Relu") ||
                       !strcmp(n->op, "GlobalAveragePool");
            if (!want) continue;
            for (int j = 0; j < (qok[k] ? 1 : n->n_in) && !rc; j++)
                if (n->in[j] >= 0 && !g->values[n->in[j]].init)
                    rc = push_name(&names, &nnames, &capn, g->values[n->in[j]].name);
            if (!rc && n->out[0] >= 0) rc = push_name(&names, &nnames, &capn, g->values[n->out[0]].name);
            if (rc) {
                rc = sh_err(err, SH_ENOMEM, "quantize: out of memory");
                goto done;
            }
        }
        if (nnames > 0) {
            if ((rc = sh_calibrate(g, o, nnames, names, &c.cal, err))) goto done;
            for (int i = 0; i < nnames; i++) c.cidx[sh_graph_find(g, names[i])] = i;
        }
        if (rep) {
            int64_t items = o->calib_samples > 0 ? o->calib_samples : o->calib->kind == 1 ? 256 : 32;
            int64_t avail = o->calib->kind == 1 ? o->calib->n : o->calib->n / sh_token_len(g, o->seq_len, 64);
            rep->calib_items = items < avail ? items : avail;
        }
    }

    /* build the new graph */
    ng = sh_graph_new(g->name ? g->name : "quantized");
    if (!ng) {
        rc = sh_err(err, SH_ENOMEM, "quantize: out of memory");
        goto done;
    }
    c.ng = ng;
    ng->opset = g->opset < 13 ? 13 : g->opset; /* per-axis QuantizeLinear / DequantizeLinear */
    for (int i = 0; i < g->n_meta; i++) sh_graph_set_meta(ng, g->meta_keys[i], g->meta_vals[i]);
    sh_graph_set_meta(ng, "shrink.quantized", stat ? "static-int8" : "dynamic-int8");
    for (int i = 0; i < g->n_inputs; i++) {
        const sh_value *v = &g->values[g->inputs[i]];
        int r = sh_graph_add_input(ng, v->name, v->fmt, v->ndim, v->shape, err);
        if (r < 0) {
            rc = r;
            goto done;
        }
        if (!(c.v[g->inputs[i]].f32 = xstrdup(v->name))) {
            rc = sh_err(err, SH_ENOMEM, "quantize: out of memory");
            goto done;
        }
    }
    unsigned char *relu_alias = calloc((size_t)g->n_nodes + 1, 1);
    if (!relu_alias) {
        rc = sh_err(err, SH_ENOMEM, "quantize: out of memory");
        goto done;
    }
    for (int k = 0; k < g->n_nodes && !rc; k++) {
        const sh_node *n = &g->nodes[k];
        if (is_layer_op(n->op)) {
            sh_quant_layer *row = rep ? report_row(&c, n) : NULL;
            sh_quant_layer tmp;
            if (rep && !row) {
                rc = sh_err(err, SH_ENOMEM, "quantize: out of memory");
                break;
            }
            if (!row) {
                memset(&tmp, 0, sizeof tmp);
                row = &tmp;
            }
            if (info[k].w >= 0) snprintf(row->weight, sizeof row->weight, "%s", g->values[info[k].w].name);
            row->rows = info[k].rows;
            row->cols = info[k].cols;
            if (info[k].w >= 0 && g->values[info[k].w].init)
                row->bytes_before = row->bytes_after = layer_bytes(g, &info[k]);
            if (qok[k]) {
                rc = emit_layer(&c, k, &info[k], row);
                if (rc) sh_error_wrap(err, "node '%s' (%s)", n->name, n->op);
                continue;
            }
            snprintf(row->note, sizeof row->note, "%s", notes[k]);
            rc = emit_f32(&c, k);
            continue;
        }
        int x = n->n_in > 0 ? n->in[0] : -1;
        int xq = x >= 0 && c.v[x].q != NULL;
        if (stat && xq && n->n_out == 1 &&
            (!strcmp(n->op, "MaxPool") || !strcmp(n->op, "Flatten") || !strcmp(n->op, "Reshape")) &&
            (strcmp(n->op, "MaxPool") || n->n_out == 1)) {
            rc = emit_passthrough(&c, k);
            continue;
        }
        if (stat && xq && !strcmp(n->op, "Relu") && (c.v[x].zp == 0 || relu_alias[k])) {
            /* zero point 0: the u8 form is already >= 0 */
            rc = alias_q(&c, n->out[0], x, c.v[x].q);
            continue;
        }
        if (stat && !strcmp(n->op, "Add") && n->n_in == 2 && n->in[0] >= 0 && n->in[1] >= 0 &&
            c.v[n->in[0]].q && c.v[n->in[1]].q && c.cidx[n->out[0]] >= 0) {
            /* residual Add of two u8 values: QLinearAdd; a Relu that is its
             * only reader is folded in (output range of the Relu, zero point 0) */
            int y = n->out[0], rv = y;
            int r = sole_reader(g, c.readers, y);
            if (r >= 0 && !strcmp(g->nodes[r].op, "Relu") && c.cidx[g->nodes[r].out[0]] >= 0) {
                rv = g->nodes[r].out[0];
                relu_alias[r] = 1;
            }
            float lo, hi, s;
            int z;
            if ((rc = range_of(&c, rv, &lo, &hi))) break;
            if (rv != y) lo = 0;
            act_qparams(lo, hi, &s, &z);
            char b[300], nm[300];
            snprintf(b, sizeof b, "%s_quantized", g->values[y].name);
            fresh_name(&c, b, nm, sizeof nm);
            if ((rc = set_q(&c, y, nm, s, z))) break;
            qv *a = &c.v[n->in[0]], *bq = &c.v[n->in[1]];
            const char *ins[8] = {a->q, a->sname, a->zname, bq->q, bq->sname, bq->zname, c.v[y].sname, c.v[y].zname};
            int node = emit(&c, "QLinearAdd", MS_DOMAIN, n->name, 8, ins, nm);
            if (node < 0) rc = node;
            continue;
        }
        if (stat && xq && !strcmp(n->op, "GlobalAveragePool") && n->n_out == 1 && c.cidx[n->out[0]] >= 0) {
            /* com.microsoft QLinearGlobalAveragePool (NCHW) */
            int y = n->out[0];
            float lo, hi, s;
            int z;
            if ((rc = range_of(&c, y, &lo, &hi))) break;
            act_qparams(lo, hi, &s, &z);
            char b[300], nm[300];
            snprintf(b, sizeof b, "%s_quantized", g->values[y].name);
            fresh_name(&c, b, nm, sizeof nm);
            if ((rc = set_q(&c, y, nm, s, z))) break;
            qv *a = &c.v[x];
            const char *ins[5] = {a->q, a->sname, a->zname, c.v[y].sname, c.v[y].zname};
            int node = emit(&c, "QLinearGlobalAveragePool", MS_DOMAIN, n->name, 5, ins, nm);
            if (node < 0) rc = node;
            else if (sh_node_set_int(c.ng, node, "channels_last", 0)) rc = sh_err(err, SH_ENOMEM, "quantize: out of memory");
            continue;
        }
        /* everything else runs f32 */
        int fed_by_q = 0;
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] >= 0 && c.v[n->in[j]].q && !c.v[n->in[j]].f32) fed_by_q = 1;
        if (stat && fed_by_q && rep) {
            char note[160];
            snprintf(note, sizeof note, "%s has no int8 form: runs f32 (DequantizeLinear before it)", n->op);
            if ((rc = add_note_row(&c, n, note))) break;
        }
        rc = emit_f32(&c, k);
    }
    free(relu_alias);
    if (rc) goto done;
    for (int i = 0; i < g->n_outputs && !rc; i++) {
        int v = g->outputs[i];
        const char *nm;
        if ((rc = f32_of(&c, v, &nm))) break;
        if (strcmp(nm, g->values[v].name)) {
            rc = sh_err(err, SH_EINTERNAL, "quantize: graph output '%s' was renamed '%s'", g->values[v].name, nm);
            break;
        }
        int r = sh_graph_mark_output(ng, nm, err);
        if (r < 0) rc = r;
    }
    if (!rc && stat) rc = fuse_qgemm_dequant(ng, err);
    if (!rc) rc = sh_graph_check(ng, err);
    if (rc) goto done;
    if (rep) {
        rep->bytes_before = sh_graph_param_bytes(src);
        rep->bytes_after = sh_graph_param_bytes(ng);
        rep->mode = o->mode;
        rep->calib_method = stat ? o->method : 0;
        rep->percentile = stat && o->method == SH_CALIB_PERCENTILE ? c.pct : 0;
    }
done:
    ctx_free(&c);
    free(info);
    free(qok);
    free(notes);
    free(names);
    sh_graph_free(g);
    if (rc) {
        sh_graph_free(ng);
        return rc;
    }
    *out = ng;
    return SH_OK;
}

int sh_quantize(const sh_graph *g, const sh_quant_opts *o, sh_graph **out, sh_quant_report *rep, sh_error *err)
{
    *out = NULL;
    if (rep) memset(rep, 0, sizeof *rep);
    if (!g || !o) return sh_err(err, SH_EINVAL, "quantize: NULL graph or options");
    int rc = opts_check(o, err);
    if (rc) return rc;
    if (o->mode == SH_QMODE_WEIGHT) return sh_quantize_weights(g, o, out, rep, err);
    rc = quantize_int8(g, o, out, rep, err);
    if (rc && rep) sh_quant_report_free(rep);
    return rc;
}
