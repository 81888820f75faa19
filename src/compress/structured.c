/* structured.c - structured pruning with physical removal: output channels
 * of Conv (filters) and output neurons of Gemm / MatMul are removed and every
 * consumer shrinks with them, so the pruned model really is smaller and
 * faster.
 *
 * Analysis (a dependency graph in the spirit of torch-pruning): every layer
 * output starts a "channel space" (C channels on some axis, each channel a
 * block of `unit` consecutive elements along it).  Walking the nodes in
 * topological order, a space
 *  - passes through elementwise unary ops, BatchNormalization (whose
 *    parameters are sliced), pools, Dropout, Identity;
 *  - passes through a depthwise Conv (group = channels), whose filters and
 *    group attribute shrink with it (a channel multiplier widens the unit);
 *  - maps to H*W consecutive columns after Flatten (shapes from inference);
 *  - ends in a sink: the input channels of a Conv (group 1), the input
 *    columns of a Gemm (transA = 0) or the rows of a MatMul weight;
 *  - is merged with the other input's space at a binary elementwise op (the
 *    producers feeding a residual Add become one channel group); a constant
 *    operand with a per-channel dimension is sliced too;
 *  - is blocked by anything else (a graph output, Reshape, Concat, Softmax,
 *    grouped Conv, an initializer shared by several nodes ...), with the
 *    reason kept for the report.
 * A group's channels are ranked by the sum over its producers of each
 * filter's L1 / L2 norm (or Taylor score) and the lowest ones removed from
 * every member at once.  The result is checked and its shapes inferred.
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "graph/graph_internal.h"

typedef struct vmap { int space, axis; int64_t unit; } vmap;
typedef struct sp {
    int parent;
    int64_t C;
    int blocked;
    char why[200];
} sp;
typedef struct slice { int space, value, axis; int64_t unit; } slice;
typedef struct src_rec { int space, layer; } src_rec;
/* a fix-up after slicing: kind 0 sets a depthwise Conv's group to kept *
 * unit; kind 1 sets entry 1 of a Reshape's constant shape (value `node`) to
 * kept * unit */
typedef struct grp_attr { int space, node; int64_t unit_in; int kind; } grp_attr;

typedef struct an {
    sh_graph *g;
    sh_layer *L;
    int nl;
    int *layer_of;   /* per node: layer index or -1 */
    vmap *vm;        /* per value */
    sp *s;
    int ns, caps;
    slice *sl;
    int nsl, capsl;
    src_rec *src;
    int nsrc;
    grp_attr *ga;
    int nga, capga;
    int oom;
} an;

static int root(an *a, int x)
{
    while (a->s[x].parent != x) x = a->s[x].parent = a->s[a->s[x].parent].parent;
    return x;
}

static void block(an *a, int s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void block(an *a, int s, const char *fmt, ...)
{
    if (s < 0) return;
    s = root(a, s);
    if (a->s[s].blocked) return;
    a->s[s].blocked = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->s[s].why, sizeof a->s[s].why, fmt, ap);
    va_end(ap);
}

static void unite(an *a, int x, int y)
{
    x = root(a, x), y = root(a, y);
    if (x == y) return;
    if (a->s[y].blocked && !a->s[x].blocked) {
        a->s[x].blocked = 1;
        memcpy(a->s[x].why, a->s[y].why, sizeof a->s[x].why);
    }
    a->s[y].parent = x;
}

static int new_space(an *a, int64_t C)
{
    if (a->ns == a->caps) {
        int cap = a->caps ? a->caps * 2 : 16;
        sp *n = realloc(a->s, sizeof(sp) * (size_t)cap);
        if (!n) {
            a->oom = 1;
            return -1;
        }
        a->s = n, a->caps = cap;
    }
    sp *s = &a->s[a->ns];
    memset(s, 0, sizeof *s);
    s->parent = a->ns;
    s->C = C;
    return a->ns++;
}

static void add_slice(an *a, int s, int value, int axis, int64_t unit)
{
    if (a->nsl == a->capsl) {
        int cap = a->capsl ? a->capsl * 2 : 32;
        slice *n = realloc(a->sl, sizeof(slice) * (size_t)cap);
        if (!n) {
            a->oom = 1;
            return;
        }
        a->sl = n, a->capsl = cap;
    }
    a->sl[a->nsl++] = (slice){s, value, axis, unit};
}

static void add_group_attr(an *a, int s, int node, int64_t unit_in, int kind)
{
    if (a->nga == a->capga) {
        int cap = a->capga ? a->capga * 2 : 8;
        grp_attr *n = realloc(a->ga, sizeof(grp_attr) * (size_t)cap);
        if (!n) {
            a->oom = 1;
            return;
        }
        a->ga = n, a->capga = cap;
    }
    a->ga[a->nga++] = (grp_attr){s, node, unit_in, kind};
}

static int is_init_f32(const sh_graph *g, int v) { return v >= 0 && g->values[v].init && g->values[v].init->fmt == SH_F32; }

static int in_list(const char *op, const char *const *list)
{
    for (int i = 0; list[i]; i++)
        if (!strcmp(op, list[i])) return 1;
    return 0;
}

static const char *const unary_ops[] = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Celu", "Gelu",
                                        "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Exp", "Log", "Abs",
                                        "Neg", "Sqrt", "Reciprocal", "Identity", "Dropout", "Clip", "Erf", "Cast",
                                        "Floor", "Ceil", "Round", "Sign", "Mish", NULL};
static const char *const pool_ops[] = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", NULL};
static const char *const binary_ops[] = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum", "Mean", "PRelu",
                                         "SiluMul", NULL};

static int value_used(const sh_graph *g, int v)
{
    for (int i = 0; i < g->n_nodes; i++)
        for (int j = 0; j < g->nodes[i].n_in; j++)
            if (g->nodes[i].in[j] == v) return 1;
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == v) return 1;
    return 0;
}

/* A layer used as a sink of input space vm (input 0). */
static void sink(an *a, int k, const vmap *m)
{
    sh_graph *g = a->g;
    const sh_node *nd = &g->nodes[k];
    const sh_layer *l = &a->L[a->layer_of[k]];
    int in_nd = g->values[nd->in[0]].ndim;
    if (!strcmp(nd->op, "Conv")) {
        if (m->axis != 1) {
            block(a, m->space, "Conv '%s' reads the channels on axis %d", nd->name, m->axis);
            return;
        }
        add_slice(a, m->space, l->wv, 1, m->unit);
    } else {
        if (m->axis != in_nd - 1) {
            block(a, m->space, "%s '%s' reads the channels on axis %d of a rank-%d input", nd->op, nd->name, m->axis,
                  in_nd);
            return;
        }
        add_slice(a, m->space, l->wv, l->transposed ? 0 : 1, m->unit);
    }
}

static void source(an *a, int k)
{
    sh_graph *g = a->g;
    const sh_node *nd = &g->nodes[k];
    int li = a->layer_of[k];
    const sh_layer *l = &a->L[li];
    int ov = nd->out[0];
    if (ov < 0) return;
    int s = new_space(a, l->rows);
    if (s < 0) return;
    a->src[a->nsrc++] = (src_rec){s, li};
    int out_nd = g->values[ov].ndim;
    a->vm[ov] = (vmap){s, !strcmp(nd->op, "Conv") ? 1 : out_nd - 1, 1};
    add_slice(a, s, l->wv, l->out_axis, 1);
    if (nd->n_in > 2 && nd->in[2] >= 0) {
        int bv = nd->in[2];
        const sh_value *b = &g->values[bv];
        if (!is_init_f32(g, bv)) {
            block(a, s, "the bias of '%s' is not an f32 initializer", nd->name);
            return;
        }
        int64_t ne = sh_tensor_numel(b->init);
        if (ne == 1 && l->rows != 1) return; /* a broadcast scalar */
        if (ne != l->rows || b->init->shape[b->init->ndim - 1] != l->rows) {
            block(a, s, "the bias of '%s' is not one value per output channel", nd->name);
            return;
        }
        add_slice(a, s, bv, b->init->ndim - 1, 1);
    }
}

static void analyse(an *a)
{
    sh_graph *g = a->g;
    for (int k = 0; k < g->n_nodes && !a->oom; k++) {
        const sh_node *nd = &g->nodes[k];
        const char *op = nd->op;
        int spaced = 0;
        for (int j = 0; j < nd->n_in; j++)
            if (nd->in[j] >= 0 && a->vm[nd->in[j]].space >= 0) spaced++;
        int li = a->layer_of[k];
        if (li >= 0 && a->L[li].group == 1) {
            const vmap *m = &a->vm[nd->in[0]];
            for (int j = 1; j < nd->n_in; j++)
                if (nd->in[j] >= 0 && a->vm[nd->in[j]].space >= 0)
                    block(a, a->vm[nd->in[j]].space, "'%s' (%s) takes it as input %d", nd->name, op, j);
            if (m->space >= 0) sink(a, k, m);
            source(a, k);
            continue;
        }
        if (li >= 0) { /* grouped Conv */
            const sh_layer *l = &a->L[li];
            const vmap *m = &a->vm[nd->in[0]];
            const sh_tensor *w = g->values[l->wv].init;
            int64_t G = l->group, Cin = g->values[nd->in[0]].ndim >= 2 ? g->values[nd->in[0]].shape[1] : -1;
            if (m->space < 0) continue; /* output channels tied to unprunable inputs */
            if (w->shape[1] != 1 || G != Cin || m->axis != 1) {
                block(a, m->space, "grouped Conv '%s' (group %lld) cannot be propagated through", nd->name, (long long)G);
                continue;
            }
            int64_t mult = l->rows / G;
            add_slice(a, m->space, l->wv, 0, m->unit * mult);
            if (nd->n_in > 2 && nd->in[2] >= 0) {
                if (!is_init_f32(g, nd->in[2]) || sh_tensor_numel(g->values[nd->in[2]].init) != l->rows)
                    block(a, m->space, "the bias of depthwise Conv '%s' is not one value per channel", nd->name);
                else
                    add_slice(a, m->space, nd->in[2], 0, m->unit * mult);
            }
            add_group_attr(a, m->space, k, m->unit, 0);
            a->vm[nd->out[0]] = (vmap){m->space, 1, m->unit * mult};
            continue;
        }
        if (!spaced) continue;
        const vmap m0 = a->vm[nd->in[0] >= 0 ? nd->in[0] : 0];
        if (in_list(op, unary_ops) && nd->in[0] >= 0 && m0.space >= 0) {
            for (int j = 1; j < nd->n_in; j++)
                if (nd->in[j] >= 0 && a->vm[nd->in[j]].space >= 0)
                    block(a, a->vm[nd->in[j]].space, "'%s' (%s) takes it as input %d", nd->name, op, j);
            for (int j = 0; j < nd->n_out; j++)
                if (nd->out[j] >= 0) a->vm[nd->out[j]] = m0;
            continue;
        }
        if (!strcmp(op, "BatchNormalization") && m0.space >= 0) {
            int ok = m0.axis == 1 && nd->n_in == 5;
            for (int j = 1; j < nd->n_in && ok; j++) ok = is_init_f32(g, nd->in[j]);
            for (int j = 1; j < nd->n_out; j++)
                if (nd->out[j] >= 0 && value_used(g, nd->out[j])) ok = 0;
            if (!ok) {
                block(a, m0.space, "BatchNormalization '%s' has no per-channel f32 parameters on the channel axis",
                      nd->name);
                continue;
            }
            for (int j = 1; j < 5; j++) add_slice(a, m0.space, nd->in[j], 0, m0.unit);
            a->vm[nd->out[0]] = m0;
            continue;
        }
        if (in_list(op, pool_ops) && m0.space >= 0) {
            if (m0.axis != 1 || (nd->n_out > 1 && nd->out[1] >= 0 && value_used(g, nd->out[1]))) {
                block(a, m0.space, "%s '%s' cannot be propagated through", op, nd->name);
                continue;
            }
            a->vm[nd->out[0]] = m0;
            continue;
        }
        if (!strcmp(op, "Flatten") && m0.space >= 0) {
            const sh_value *x = &g->values[nd->in[0]];
            int64_t ax = sh_attr_int(nd, "axis", 1);
            if (ax < 0) ax += x->ndim;
            if (ax != m0.axis || ax < 1 || x->ndim < 0) {
                block(a, m0.space, "Flatten '%s' (axis %lld) mixes the channel axis %d with others", nd->name,
                      (long long)ax, m0.axis);
                continue;
            }
            int64_t inner = 1;
            for (int d = m0.axis + 1; d < x->ndim; d++) inner *= x->shape[d];
            a->vm[nd->out[0]] = (vmap){m0.space, 1, m0.unit * inner};
            continue;
        }
        if (!strcmp(op, "Reshape") && m0.space >= 0 && nd->n_in >= 2 && nd->in[1] >= 0) {
            /* Reshape to [N, C*H*W] with a constant shape (PyTorch's x.view(-1, K)): a Flatten */
            const sh_value *x = &g->values[nd->in[0]];
            const sh_tensor *st = g->values[nd->in[1]].init;
            int64_t sv[2] = {0, 0}, K = 1;
            for (int d = 1; d < x->ndim; d++) K *= x->shape[d];
            int ok = st && st->fmt == SH_I64 && sh_tensor_numel(st) == 2 && m0.axis == 1 && x->ndim >= 2 &&
                     nd->in[1] >= 0 && nd->in[0] >= 0;
            if (ok) {
                memcpy(sv, st->data, sizeof sv);
                ok = (sv[0] == 0 && (sv[1] == -1 || sv[1] == K)) || (sv[0] == -1 && sv[1] == K);
            }
            if (ok) {
                int uses = 0;
                for (int q = 0; q < g->n_nodes; q++)
                    for (int j = 0; j < g->nodes[q].n_in; j++) uses += g->nodes[q].in[j] == nd->in[1];
                ok = uses == 1;
            }
            if (!ok) {
                block(a, m0.space, "Reshape '%s' cannot be propagated through", nd->name);
                continue;
            }
            int64_t inner = 1;
            for (int d = 2; d < x->ndim; d++) inner *= x->shape[d];
            a->vm[nd->out[0]] = (vmap){m0.space, 1, m0.unit * inner};
            if (sv[1] != -1) add_group_attr(a, m0.space, nd->in[1], m0.unit * inner, 1);
            continue;
        }
        if (in_list(op, binary_ops)) {
            const sh_value *o = &g->values[nd->out[0]];
            int R = o->ndim, axis = -1, sp0 = -1, bad = 0;
            int64_t unit = 0;
            for (int j = 0; j < nd->n_in; j++) {
                int v = nd->in[j];
                if (v < 0 || a->vm[v].space < 0) continue;
                int ax = a->vm[v].axis + (R - g->values[v].ndim);
                if (sp0 < 0) {
                    sp0 = a->vm[v].space, axis = ax, unit = a->vm[v].unit;
                    continue;
                }
                if (ax != axis || a->vm[v].unit != unit || a->s[root(a, sp0)].C != a->s[root(a, a->vm[v].space)].C)
                    bad = 1;
                unite(a, sp0, a->vm[v].space);
            }
            int64_t C = a->s[root(a, sp0)].C;
            for (int j = 0; j < nd->n_in && !bad; j++) {
                int v = nd->in[j];
                if (v < 0 || a->vm[v].space >= 0) continue;
                const sh_value *x = &g->values[v];
                int nd_x = x->init ? x->init->ndim : x->ndim;
                const int64_t *shp = x->init ? x->init->shape : x->shape;
                int p = axis - (R - nd_x);
                if (nd_x < 0) bad = 1;
                else if (p < 0 || shp[p] == 1) continue;
                else if (is_init_f32(g, v) && shp[p] == C * unit) add_slice(a, sp0, v, p, unit);
                else bad = 1;
            }
            if (bad) {
                block(a, sp0, "%s '%s' mixes the channels with a value that cannot shrink with them", op, nd->name);
                continue;
            }
            a->vm[nd->out[0]] = (vmap){sp0, axis, unit};
            continue;
        }
        for (int j = 0; j < nd->n_in; j++)
            if (nd->in[j] >= 0 && a->vm[nd->in[j]].space >= 0)
                block(a, a->vm[nd->in[j]].space, "%s '%s' cannot be propagated through", op, nd->name);
    }
    for (int i = 0; i < g->n_outputs; i++) {
        int v = g->outputs[i];
        if (a->vm[v].space >= 0) block(a, a->vm[v].space, "its channels reach the graph output '%s'", g->values[v].name);
    }
    /* an initializer sliced must be read by one node only, and be sliced one way */
    for (int i = 0; i < a->nsl; i++) {
        int v = a->sl[i].value, uses = 0;
        if (v < 0) continue;
        for (int k = 0; k < g->n_nodes; k++)
            for (int j = 0; j < g->nodes[k].n_in; j++) uses += g->nodes[k].in[j] == v;
        for (int j = 0; j < g->n_outputs; j++) uses += g->outputs[j] == v;
        if (uses > 1) block(a, a->sl[i].space, "initializer '%s' is shared by %d readers", g->values[v].name, uses);
        for (int j = 0; j < i; j++) {
            if (a->sl[j].value != v || a->sl[j].axis != a->sl[i].axis) continue;
            if (root(a, a->sl[j].space) == root(a, a->sl[i].space) && a->sl[j].unit == a->sl[i].unit) {
                a->sl[i].value = -1; /* the same slice twice: once is enough */
                break;
            }
            block(a, a->sl[i].space, "initializer '%s' would be sliced by two channel groups", g->values[v].name);
            block(a, a->sl[j].space, "initializer '%s' would be sliced by two channel groups", g->values[v].name);
        }
        if (a->sl[i].value < 0) continue;
    }
}

/* Keep the blocks of `unit` along axis whose channel is not removed. */
static int slice_tensor(sh_tensor **tp, int axis, int64_t unit, const unsigned char *rm, int64_t C, const char *name,
                        sh_error *err)
{
    sh_tensor *t = *tp;
    char sb[96];
    if (axis >= t->ndim || t->shape[axis] != C * unit)
        return sh_err(err, SH_EINTERNAL, "structured pruning: '%s' %s: axis %d is not %lld channels x %lld", name,
                      sh_shape_str(t->ndim, t->shape, sb, sizeof sb), axis, (long long)C, (long long)unit);
    int64_t outer = 1, inner = 1, kept = 0;
    for (int d = 0; d < axis; d++) outer *= t->shape[d];
    for (int d = axis + 1; d < t->ndim; d++) inner *= t->shape[d];
    for (int64_t c = 0; c < C; c++) kept += !rm[c];
    int64_t shape[SH_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[axis] = kept * unit;
    sh_tensor *n = sh_tensor_new(SH_F32, t->ndim, shape, err);
    if (!n) return err ? err->code : SH_ENOMEM;
    const float *s = t->data;
    float *d = n->data;
    size_t blk = sizeof(float) * (size_t)(unit * inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < C; c++)
            if (!rm[c]) {
                memcpy(d, s + (o * C * unit + c * unit) * inner, blk);
                d += unit * inner;
            }
    sh_tensor_free(t);
    *tp = n;
    return SH_OK;
}

typedef struct group {
    int root;
    int64_t C;
    int n_src;
    int src[16];       /* layer indices */
    int selected, blocked;
    double *score;     /* per channel */
    double per_ch;     /* weight elements per channel over the producers */
    unsigned char *rm;
} group;

int sh_prune_channels(const sh_graph *g0, const sh_prune_opts *o, sh_graph **out, sh_prune_report *rep, sh_error *err)
{
    *out = NULL;
    if (rep) memset(rep, 0, sizeof *rep);
    int rc = sh_prune_check_opts(o, err);
    if (rc) return rc;
    if (o->m > 0 || o->block > 1)
        return sh_err(err, SH_EINVAL, "structured pruning removes whole channels: N:M and block options do not apply");
    an a = {0};
    group *G = NULL;
    int nG = 0, *sel = NULL;
    float **tay = NULL;
    int *orig_nd = NULL;
    int64_t (*orig_shape)[SH_MAX_DIMS] = NULL;
    sh_prune_report r = {0};
    sh_graph *g = sh_graph_clone(g0, err);
    if (!g) return err ? err->code : SH_ENOMEM;
    a.g = g;
    int nv = g->n_values;
    orig_nd = malloc(sizeof(int) * (size_t)(nv + 1));
    orig_shape = malloc(sizeof *orig_shape * (size_t)(nv + 1));
    if (!orig_nd || !orig_shape) {
        rc = sh_err(err, SH_ENOMEM, "out of memory");
        goto out;
    }
    for (int v = 0; v < nv; v++) {
        orig_nd[v] = g->values[v].ndim;
        memcpy(orig_shape[v], g->values[v].shape, sizeof orig_shape[v]);
    }
    if ((rc = sh_graph_check(g, err)) || (rc = sh_graph_infer_shapes(g, NULL, err))) {
        sh_error_wrap(err, "structured pruning");
        goto out;
    }
    if ((rc = sh_prunable_layers(g, &a.L, &a.nl, err))) goto out;
    a.layer_of = malloc(sizeof(int) * (size_t)(g->n_nodes + 1));
    a.vm = malloc(sizeof(vmap) * (size_t)(nv + 1));
    a.src = calloc((size_t)a.nl + 1, sizeof(src_rec));
    sel = calloc((size_t)a.nl + 1, sizeof(int));
    tay = calloc((size_t)a.nl + 1, sizeof(float *));
    if (!a.layer_of || !a.vm || !a.src || !sel || !tay) {
        rc = sh_err(err, SH_ENOMEM, "out of memory");
        goto out;
    }
    for (int k = 0; k < g->n_nodes; k++) a.layer_of[k] = -1;
    for (int i = 0; i < a.nl; i++) a.layer_of[a.L[i].node] = i;
    for (int v = 0; v < nv; v++) a.vm[v] = (vmap){-1, 0, 1};
    if ((rc = sh_prune_select(g, a.L, a.nl, o, sel, err))) goto out;
    analyse(&a);
    if (a.oom) {
        rc = sh_err(err, SH_ENOMEM, "out of memory");
        goto out;
    }
    if (rep && (rc = sh_prune_report_begin(&r, g, a.L, a.nl, err))) goto out;
    if (o->method == SH_PRUNE_TAYLOR && (rc = sh_taylor_scores(g, a.L, a.nl, o, tay, err))) goto out;
    /* groups */
    G = calloc((size_t)a.nsrc + 1, sizeof(group));
    if (!G) {
        rc = sh_err(err, SH_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < a.nsrc; i++) {
        int rt = root(&a, a.src[i].space), gi = -1;
        for (int j = 0; j < nG && gi < 0; j++)
            if (G[j].root == rt) gi = j;
        if (gi < 0) {
            gi = nG++;
            G[gi].root = rt;
            G[gi].C = a.s[rt].C;
            G[gi].blocked = a.s[rt].blocked;
            G[gi].selected = 1;
        }
        if (G[gi].n_src < 16) G[gi].src[G[gi].n_src++] = a.src[i].layer;
        else G[gi].blocked = 1;
    }
    for (int j = 0; j < nG; j++) {
        group *q = &G[j];
        /* a group goes when any producer is selected and none is excluded */
        int explicit = 0, any = 0, excluded = 0;
        for (int i = 0; i < q->n_src; i++) {
            int li = q->src[i];
            any |= sel[li];
            excluded |= sh_name_in_list(o->exclude, a.L[li].name, g->values[a.L[li].wv].name) ||
                        (o->skip_first && li == 0) || (o->skip_last && li == a.nl - 1);
            if (o->include && *o->include &&
                sh_name_in_list(o->include, a.L[li].name, g->values[a.L[li].wv].name))
                explicit = 1;
        }
        q->selected = any && !excluded;
        if (explicit && q->blocked) {
            rc = sh_err(err, SH_EUNSUPPORTED, "cannot remove channels of layer '%s': %s", a.L[q->src[0]].name,
                        a.s[q->root].why);
            goto out;
        }
        if (q->blocked) q->selected = 0;
        if (rep)
            for (int i = 0; i < q->n_src; i++) {
                sh_prune_layer *pl = &r.layers[q->src[i]];
                if (q->blocked) snprintf(pl->note, sizeof pl->note, "outputs kept: %.140s", a.s[q->root].why);
                else if (!q->selected) snprintf(pl->note, sizeof pl->note, "not selected");
                else if (q->n_src > 1) {
                    size_t off = (size_t)snprintf(pl->note, sizeof pl->note, "channel group with");
                    for (int t = 0; t < q->n_src && off < sizeof pl->note; t++)
                        if (t != i) off += (size_t)snprintf(pl->note + off, sizeof pl->note - off, " '%s'", a.L[q->src[t]].name);
                }
            }
        if (!q->selected) continue;
        q->score = calloc((size_t)q->C + 1, sizeof(double));
        q->rm = calloc((size_t)q->C + 1, 1);
        if (!q->score || !q->rm) {
            rc = sh_err(err, SH_ENOMEM, "out of memory");
            goto out;
        }
        for (int i = 0; i < q->n_src; i++) {
            const sh_layer *l = &a.L[q->src[i]];
            const float *w = g->values[l->wv].init->data;
            const float *t = tay[q->src[i]];
            q->per_ch += (double)l->cols;
            for (int64_t c = 0; c < q->C; c++) {
                double acc = 0;
                for (int64_t e = 0; e < l->cols; e++) {
                    int64_t at = sh_layer_at(l, c, e);
                    double v = o->method == SH_PRUNE_TAYLOR ? t[at] : w[at];
                    acc += o->method == SH_PRUNE_L2 ? v * v : fabs(v);
                }
                q->score[c] += o->method == SH_PRUNE_L2 ? sqrt(acc) : acc;
            }
        }
    }
    /* choose the channels to remove */
    if (o->threshold >= 0) {
        for (int j = 0; j < nG; j++)
            if (G[j].selected)
                for (int64_t c = 0; c < G[j].C; c++) G[j].rm[c] = G[j].score[c] < o->threshold;
    } else if (o->global) {
        int64_t tot = 0, off = 0;
        for (int j = 0; j < nG; j++)
            if (G[j].selected) tot += G[j].C;
        float *cat = malloc(sizeof(float) * (size_t)(tot + 1));
        unsigned char *m = malloc((size_t)tot + 1);
        if (!cat || !m) {
            free(cat), free(m);
            rc = sh_err(err, SH_ENOMEM, "out of memory");
            goto out;
        }
        for (int j = 0; j < nG; j++) {
            if (!G[j].selected) continue;
            double norm = o->method == SH_PRUNE_L2 ? sqrt(G[j].per_ch) : G[j].per_ch;
            for (int64_t c = 0; c < G[j].C; c++) cat[off + c] = (float)(G[j].score[c] / (norm > 0 ? norm : 1));
            off += G[j].C;
        }
        if (sh_select_smallest(cat, tot, sh_prune_count(o->ratio, tot), m)) rc = sh_err(err, SH_ENOMEM, "out of memory");
        off = 0;
        for (int j = 0; j < nG && !rc; j++) {
            if (!G[j].selected) continue;
            memcpy(G[j].rm, m + off, (size_t)G[j].C);
            off += G[j].C;
        }
        free(cat), free(m);
        if (rc) goto out;
    } else {
        for (int j = 0; j < nG; j++) {
            if (!G[j].selected) continue;
            float *s = malloc(sizeof(float) * (size_t)(G[j].C + 1));
            if (!s) {
                rc = sh_err(err, SH_ENOMEM, "out of memory");
                goto out;
            }
            for (int64_t c = 0; c < G[j].C; c++) s[c] = (float)G[j].score[c];
            int64_t k = sh_prune_count(o->ratio, G[j].C);
            rc = sh_select_smallest(s, G[j].C, k, G[j].rm) ? sh_err(err, SH_ENOMEM, "out of memory") : SH_OK;
            free(s);
            if (rc) goto out;
        }
    }
    for (int j = 0; j < nG; j++) {
        if (!G[j].selected) continue;
        int64_t k = 0;
        for (int64_t c = 0; c < G[j].C; c++) k += G[j].rm[c];
        if (k >= G[j].C) {
            rc = sh_err(err, SH_EINVAL, "structured pruning would remove every channel (%lld of %lld) of layer '%s'",
                        (long long)k, (long long)G[j].C, a.L[G[j].src[0]].name);
            goto out;
        }
    }
    /* rewrite */
    for (int i = 0; i < a.nsl; i++) {
        if (a.sl[i].value < 0) continue;
        int rt = root(&a, a.sl[i].space);
        group *q = NULL;
        for (int j = 0; j < nG && !q; j++)
            if (G[j].root == rt && G[j].selected) q = &G[j];
        if (!q) continue;
        sh_value *v = &g->values[a.sl[i].value];
        if ((rc = slice_tensor(&v->init, a.sl[i].axis, a.sl[i].unit, q->rm, q->C, v->name, err))) goto out;
        v->ndim = v->init->ndim;
        memcpy(v->shape, v->init->shape, sizeof v->shape);
    }
    for (int i = 0; i < a.nga; i++) {
        int rt = root(&a, a.ga[i].space);
        for (int j = 0; j < nG; j++)
            if (G[j].root == rt && G[j].selected) {
                int64_t kept = 0;
                for (int64_t c = 0; c < G[j].C; c++) kept += !G[j].rm[c];
                if (a.ga[i].kind == 0) sh_node_set_int(g, a.ga[i].node, "group", kept * a.ga[i].unit_in);
                else ((int64_t *)g->values[a.ga[i].node].init->data)[1] = kept * a.ga[i].unit_in;
            }
    }
    if ((rc = sh_graph_check(g, err)) || (rc = sh_graph_infer_shapes(g, NULL, err))) {
        sh_error_wrap(err, "structured pruning produced an inconsistent graph");
        if (!rc) rc = SH_EINTERNAL;
        goto out;
    }
    /* activation shapes: as declared before (unknown stays unknown, -1 dims stay -1) */
    for (int v = 0; v < nv; v++) {
        sh_value *x = &g->values[v];
        if (x->init || x->producer < 0) continue;
        if (orig_nd[v] < 0) {
            x->ndim = -1;
            continue;
        }
        for (int d = 0; d < x->ndim && d < orig_nd[v]; d++)
            if (orig_shape[v][d] < 0) x->shape[d] = -1;
    }
    if (rep) {
        sh_prune_report_end(&r, g);
        for (int j = 0; j < nG; j++)
            if (G[j].selected)
                for (int i = 0; i < G[j].n_src; i++) r.layers[G[j].src[i]].pruned = 1;
        *rep = r;
        r.layers = NULL;
    }
    *out = g;
    g = NULL;
out:
    for (int j = 0; j < nG; j++) free(G[j].score), free(G[j].rm);
    free(G);
    if (tay)
        for (int i = 0; i < a.nl; i++) free(tay[i]);
    free(tay);
    free(sel);
    free(a.L);
    free(a.layer_of);
    free(a.vm);
    free(a.s);
    free(a.sl);
    free(a.src);
    free(a.ga);
    free(orig_nd);
    free(orig_shape);
    sh_prune_report_free(&r);
    sh_graph_free(g);
    return rc;
}

/* ---- whole residual blocks ------------------------------------------------
 * A residual block is an Add(b, s) whose input b is computed from s by a
 * branch of nodes that nothing else reads (an identity shortcut).  Removing
 * it leaves x -> s -> (what read the Add).  Data-free score: the L2 norm of
 * the branch's output scale (its last BatchNormalization's
 * |gamma| / sqrt(var + eps)), else of its last layer's weight. */

/* reach[n] = 1 for nodes reachable forward from value s */
static void forward_from(const sh_graph *g, int s, unsigned char *reach)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const sh_node *nd = &g->nodes[i];
        int hit = 0;
        for (int j = 0; j < nd->n_in && !hit; j++) {
            int v = nd->in[j];
            if (v < 0) continue;
            if (v == s) hit = 1;
            else if (g->values[v].producer >= 0 && reach[g->values[v].producer]) hit = 1;
        }
        reach[i] = (unsigned char)hit;
    }
}

/* Nodes of the branch s -> b of Add node k (br[n] = 1); 0 if it is not a
 * removable identity-shortcut block. */
static int branch_of(const sh_graph *g, int k, int s, int b, unsigned char *br, unsigned char *tmp)
{
    int pb = g->values[b].producer;
    if (pb < 0) return 0;
    forward_from(g, s, tmp);
    if (!tmp[pb]) return 0;
    /* backward from b within tmp */
    memset(br, 0, (size_t)g->n_nodes);
    br[pb] = 1;
    for (int i = pb; i >= 0; i--) {
        if (!br[i]) continue;
        const sh_node *nd = &g->nodes[i];
        for (int j = 0; j < nd->n_in; j++) {
            int v = nd->in[j];
            if (v < 0 || v == s) continue;
            int p = g->values[v].producer;
            if (p < 0) {
                if (!g->values[v].init) return 0; /* reads a graph input */
                continue;
            }
            if (!tmp[p]) return 0; /* reads something computed outside the branch */
            br[p] = 1;
        }
    }
    /* nothing outside the branch (but the Add) reads a branch value */
    for (int i = 0; i < g->n_nodes; i++) {
        if (br[i] || i == k) continue;
        const sh_node *nd = &g->nodes[i];
        for (int j = 0; j < nd->n_in; j++)
            if (nd->in[j] >= 0 && g->values[nd->in[j]].producer >= 0 && br[g->values[nd->in[j]].producer]) return 0;
    }
    for (int i = 0; i < g->n_outputs; i++) {
        int p = g->values[g->outputs[i]].producer;
        if (p >= 0 && br[p]) return 0;
    }
    return 1;
}

static double branch_score(const sh_graph *g, int pb, int method)
{
    const sh_node *nd = &g->nodes[pb];
    double acc = 0;
    if (!strcmp(nd->op, "BatchNormalization") && nd->n_in == 5 && is_init_f32(g, nd->in[1]) && is_init_f32(g, nd->in[4])) {
        const sh_tensor *ga = g->values[nd->in[1]].init, *var = g->values[nd->in[4]].init;
        float eps = sh_attr_float(nd, "epsilon", 1e-5f);
        for (int64_t c = 0; c < sh_tensor_numel(ga); c++) {
            double v = fabs(sh_f32(ga)[c]) / sqrt((double)sh_f32(var)[c] + eps);
            acc += method == SH_PRUNE_L1 ? v : v * v;
        }
    } else if (nd->n_in > 1 && is_init_f32(g, nd->in[1])) {
        const sh_tensor *w = g->values[nd->in[1]].init;
        for (int64_t e = 0; e < sh_tensor_numel(w); e++) {
            double v = fabs(sh_f32(w)[e]);
            acc += method == SH_PRUNE_L1 ? v : v * v;
        }
    } else
        return INFINITY; /* no way to tell: keep */
    return method == SH_PRUNE_L1 ? acc : sqrt(acc);
}

int sh_prune_blocks(const sh_graph *g0, const sh_prune_opts *o, sh_graph **out, sh_prune_report *rep, sh_error *err)
{
    *out = NULL;
    if (rep) memset(rep, 0, sizeof *rep);
    int rc = sh_prune_check_opts(o, err);
    if (rc) return rc;
    sh_graph *g = sh_graph_clone(g0, err);
    if (!g) return err ? err->code : SH_ENOMEM;
    sh_layer *L = NULL;
    int nl = 0, nb = 0;
    sh_prune_report r = {0};
    int nn = g->n_nodes;
    unsigned char *brs = NULL, *tmp = NULL, *dead = calloc((size_t)nn + 1, 1);
    int *add = malloc(sizeof(int) * (size_t)(nn + 1)), *sc_s = malloc(sizeof(int) * (size_t)(nn + 1));
    float *score = malloc(sizeof(float) * (size_t)(nn + 1));
    unsigned char *rm = calloc((size_t)nn + 1, 1);
    brs = malloc((size_t)nn * (size_t)nn + 1); /* one row per block found (at most nn) */
    tmp = malloc((size_t)nn + 1);
    if (!dead || !add || !sc_s || !score || !rm || !brs || !tmp) {
        rc = sh_err(err, SH_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = sh_graph_check(g, err))) goto out;
    if ((rc = sh_prunable_layers(g, &L, &nl, err))) goto out;
    if (rep && (rc = sh_prune_report_begin(&r, g, L, nl, err))) goto out;
    for (int k = 0; k < g->n_nodes; k++) {
        const sh_node *nd = &g->nodes[k];
        if (strcmp(nd->op, "Add") || nd->n_in != 2 || nd->in[0] < 0 || nd->in[1] < 0) continue;
        for (int t = 0; t < 2; t++) {
            int b = nd->in[t], s = nd->in[1 - t];
            if (g->values[b].init || g->values[s].init) break;
            if (!branch_of(g, k, s, b, brs + (size_t)nb * (size_t)nn, tmp)) continue;
            add[nb] = k;
            sc_s[nb] = t;
            score[nb] = (float)branch_score(g, g->values[b].producer, o->method);
            nb++;
            break;
        }
    }
    /* choose */
    int named = o->include && *o->include;
    if (named) {
        const char *p = o->include;
        while (*p) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            int found = 0;
            for (int i = 0; i < nb; i++)
                if (strlen(g->nodes[add[i]].name) == len && !strncmp(g->nodes[add[i]].name, p, len)) rm[i] = 1, found = 1;
            if (!found && len) {
                rc = sh_err(err, SH_EINVAL, "'%.*s' is not the Add of a residual block with an identity shortcut "
                            "(%d such blocks)", (int)len, p, nb);
                goto out;
            }
            if (!e) break;
            p = e + 1;
        }
    } else if (o->threshold >= 0) {
        for (int i = 0; i < nb; i++) rm[i] = score[i] < o->threshold;
    } else if (nb && sh_select_smallest(score, nb, sh_prune_count(o->ratio, nb), rm)) {
        rc = sh_err(err, SH_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < nb; i++)
        if (rm[i] && sh_name_in_list(o->exclude, g->nodes[add[i]].name, NULL)) rm[i] = 0;
    /* rewrite: branch nodes die, the Add becomes Identity(s) (removed below) */
    for (int i = 0; i < nb; i++) {
        if (!rm[i]) continue;
        sh_node *nd = &g->nodes[add[i]];
        int s = nd->in[1 - sc_s[i]];
        const unsigned char *br = brs + (size_t)i * (size_t)nn;
        for (int n = 0; n < nn; n++) {
            if (!br[n]) continue;
            dead[n] = 1;
            if (rep)
                for (int l = 0; l < nl; l++)
                    if (L[l].node == n) snprintf(r.layers[l].note, sizeof r.layers[l].note, "removed with block '%s'",
                                                 nd->name);
        }
        char *op = strdup("Identity");
        if (!op) {
            rc = sh_err(err, SH_ENOMEM, "out of memory");
            goto out;
        }
        free(nd->op);
        nd->op = op;
        nd->in[0] = s;
        nd->n_in = 1;
    }
    int k = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        if (dead[i]) {
            sh_node_free_fields(&g->nodes[i]);
            continue;
        }
        if (k != i) g->nodes[k] = g->nodes[i];
        k++;
    }
    g->n_nodes = k;
    /* initializers nobody reads any more are dropped */
    for (int v = 0; v < g->n_values; v++) {
        if (!g->values[v].init) continue;
        int used = 0;
        for (int i = 0; i < g->n_nodes && !used; i++)
            for (int j = 0; j < g->nodes[i].n_in; j++) used |= g->nodes[i].in[j] == v;
        for (int i = 0; i < g->n_outputs; i++) used |= g->outputs[i] == v;
        if (!used && !(g0->values[v].init && !value_used(g0, v))) {
            sh_tensor_free(g->values[v].init);
            g->values[v].init = NULL;
        }
    }
    if ((rc = sh_graph_remove_identities(g, err)) || (rc = sh_graph_check(g, err))) {
        sh_error_wrap(err, "removing residual blocks");
        goto out;
    }
    if (rep) {
        sh_prune_report_end(&r, g);
        for (int l = 0; l < nl; l++)
            if (r.layers[l].note[0]) {
                r.layers[l].pruned = 1;
                r.layers[l].params_after = 0;
                r.layers[l].ndim_after = 0;
                r.layers[l].zeros_after = 0;
            }
        *rep = r;
        r.layers = NULL;
    }
    *out = g;
    g = NULL;
out:
    free(L);
    free(dead), free(add), free(sc_s), free(score), free(rm), free(brs), free(tmp);
    sh_prune_report_free(&r);
    sh_graph_free(g);
    return rc;
}
