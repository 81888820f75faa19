/* graph.c - the graph IR: values, nodes, attributes, checks. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "shrink.h"
#include "../ops/ops.h"
#include "graph_internal.h"

static char *xstrdup(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

sh_graph *sh_graph_new(const char *name)
{
    sh_graph *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->name = xstrdup(name ? name : "graph");
    g->opset = 17;
    return g;
}

static void attr_free(sh_attr *a)
{
    free(a->name);
    free(a->s);
    free(a->ints);
    free(a->floats);
    sh_tensor_free(a->t);
}

void sh_node_free_fields(sh_node *n)
{
    free(n->name);
    free(n->op);
    free(n->domain);
    free(n->in);
    free(n->out);
    for (int i = 0; i < n->n_attrs; i++) attr_free(&n->attrs[i]);
    free(n->attrs);
}

void sh_graph_free(sh_graph *g)
{
    if (!g) return;
    for (int i = 0; i < g->n_values; i++) {
        free(g->values[i].name);
        sh_tensor_free(g->values[i].init);
    }
    free(g->values);
    for (int i = 0; i < g->n_nodes; i++) sh_node_free_fields(&g->nodes[i]);
    free(g->nodes);
    free(g->inputs);
    free(g->outputs);
    for (int i = 0; i < g->n_meta; i++) {
        free(g->meta_keys[i]);
        free(g->meta_vals[i]);
    }
    free(g->meta_keys);
    free(g->meta_vals);
    free(g->name);
    free(g);
}

int sh_graph_find(const sh_graph *g, const char *name)
{
    /* Linear scan from the end: recent values are looked up most. Graphs have
     * at most a few thousand values. */
    for (int i = g->n_values - 1; i >= 0; i--)
        if (strcmp(g->values[i].name, name) == 0) return i;
    return -1;
}

int sh_graph_add_value(sh_graph *g, const char *name, sh_format fmt, int ndim,
                       const int64_t *shape, sh_error *err)
{
    if (!name || !*name) return sh_err(err, SH_EINVAL, "value with an empty name");
    if (sh_graph_find(g, name) >= 0)
        return sh_err(err, SH_EINVAL, "value '%s' defined twice", name);
    if (ndim > SH_MAX_DIMS)
        return sh_err(err, SH_EUNSUPPORTED, "value '%s': rank %d above %d", name, ndim, SH_MAX_DIMS);
    if (g->n_values == g->cap_values) {
        int cap = g->cap_values ? g->cap_values * 2 : 64;
        sh_value *v = realloc(g->values, (size_t)cap * sizeof *v);
        if (!v) return sh_err(err, SH_ENOMEM, "out of memory");
        g->values = v;
        g->cap_values = cap;
    }
    sh_value *v = &g->values[g->n_values];
    memset(v, 0, sizeof *v);
    v->name = xstrdup(name);
    if (!v->name) return sh_err(err, SH_ENOMEM, "out of memory");
    v->fmt = fmt;
    v->ndim = ndim;
    for (int i = 0; i < ndim && shape; i++) v->shape[i] = shape[i];
    v->producer = -1;
    return g->n_values++;
}

int sh_graph_add_init(sh_graph *g, const char *name, sh_tensor *t, sh_error *err)
{
    int k = sh_graph_add_value(g, name, t->fmt, t->ndim, t->shape, err);
    if (k < 0) {
        sh_tensor_free(t);
        return k;
    }
    g->values[k].init = t;
    return k;
}

static int push_int(int **arr, int *n, int v)
{
    int *a = realloc(*arr, (size_t)(*n + 1) * sizeof(int));
    if (!a) return SH_ENOMEM;
    a[(*n)++] = v;
    *arr = a;
    return SH_OK;
}

int sh_graph_add_input(sh_graph *g, const char *name, sh_format fmt, int ndim,
                       const int64_t *shape, sh_error *err)
{
    int k = sh_graph_add_value(g, name, fmt, ndim, shape, err);
    if (k < 0) return k;
    if (push_int(&g->inputs, &g->n_inputs, k)) return sh_err(err, SH_ENOMEM, "out of memory");
    return k;
}

int sh_graph_mark_output(sh_graph *g, const char *name, sh_error *err)
{
    int k = sh_graph_find(g, name);
    if (k < 0) return sh_err(err, SH_EINVAL, "graph output '%s' is not defined", name);
    if (push_int(&g->outputs, &g->n_outputs, k)) return sh_err(err, SH_ENOMEM, "out of memory");
    return k;
}

int sh_graph_add_node(sh_graph *g, const char *op, const char *name, int n_in,
                      const char *const *inputs, int n_out,
                      const char *const *outputs, sh_error *err)
{
    if (g->n_nodes == g->cap_nodes) {
        int cap = g->cap_nodes ? g->cap_nodes * 2 : 32;
        sh_node *v = realloc(g->nodes, (size_t)cap * sizeof *v);
        if (!v) return sh_err(err, SH_ENOMEM, "out of memory");
        g->nodes = v;
        g->cap_nodes = cap;
    }
    int k = g->n_nodes;
    sh_node *n = &g->nodes[k];
    memset(n, 0, sizeof *n);
    char auto_name[64];
    if (!name || !*name) {
        snprintf(auto_name, sizeof auto_name, "%s_%d", op, k);
        name = auto_name;
    }
    n->name = xstrdup(name);
    n->op = xstrdup(op);
    n->domain = xstrdup("");
    n->in = malloc(sizeof(int) * (size_t)(n_in > 0 ? n_in : 1));
    n->out = malloc(sizeof(int) * (size_t)(n_out > 0 ? n_out : 1));
    if (!n->name || !n->op || !n->domain || !n->in || !n->out) {
        sh_node_free_fields(n);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    n->n_in = n_in;
    n->n_out = n_out;
    for (int i = 0; i < n_in; i++) {
        if (!inputs[i] || !*inputs[i]) { n->in[i] = -1; continue; }
        int v = sh_graph_find(g, inputs[i]);
        if (v < 0) {
            int rc = sh_err(err, SH_EINVAL, "node '%s' (%s): input '%s' is not defined", name, op, inputs[i]);
            sh_node_free_fields(n);
            return rc;
        }
        n->in[i] = v;
    }
    g->n_nodes++; /* counted now so that values can point at it */
    for (int i = 0; i < n_out; i++) {
        if (!outputs[i] || !*outputs[i]) { n = &g->nodes[k]; n->out[i] = -1; continue; }
        int v = sh_graph_add_value(g, outputs[i], SH_F32, -1, NULL, err);
        n = &g->nodes[k];
        if (v < 0) {
            sh_error_wrap(err, "node '%s' (%s)", name, op);
            n->n_out = i;
            return err ? err->code : SH_EINVAL;
        }
        n->out[i] = v;
        g->values[v].producer = k;
    }
    return k;
}

static sh_attr *attr_slot(sh_graph *g, int k, const char *name, sh_attr_type type)
{
    sh_node *n = &g->nodes[k];
    for (int i = 0; i < n->n_attrs; i++)
        if (strcmp(n->attrs[i].name, name) == 0) {
            char *nm = n->attrs[i].name;
            n->attrs[i].name = NULL;
            attr_free(&n->attrs[i]);
            memset(&n->attrs[i], 0, sizeof n->attrs[i]);
            n->attrs[i].name = nm;
            n->attrs[i].type = type;
            return &n->attrs[i];
        }
    sh_attr *a = realloc(n->attrs, (size_t)(n->n_attrs + 1) * sizeof *a);
    if (!a) return NULL;
    n->attrs = a;
    a = &n->attrs[n->n_attrs];
    memset(a, 0, sizeof *a);
    a->name = xstrdup(name);
    if (!a->name) return NULL;
    a->type = type;
    n->n_attrs++;
    return a;
}

int sh_node_set_int(sh_graph *g, int k, const char *name, int64_t v)
{
    sh_attr *a = attr_slot(g, k, name, SH_ATTR_INT);
    if (!a) return SH_ENOMEM;
    a->i = v;
    return SH_OK;
}

int sh_node_set_float(sh_graph *g, int k, const char *name, float v)
{
    sh_attr *a = attr_slot(g, k, name, SH_ATTR_FLOAT);
    if (!a) return SH_ENOMEM;
    a->f = v;
    return SH_OK;
}

int sh_node_set_string(sh_graph *g, int k, const char *name, const char *v)
{
    sh_attr *a = attr_slot(g, k, name, SH_ATTR_STRING);
    if (!a) return SH_ENOMEM;
    a->s = xstrdup(v);
    return a->s ? SH_OK : SH_ENOMEM;
}

int sh_node_set_ints(sh_graph *g, int k, const char *name, int n, const int64_t *v)
{
    sh_attr *a = attr_slot(g, k, name, SH_ATTR_INTS);
    if (!a) return SH_ENOMEM;
    a->ints = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (!a->ints) return SH_ENOMEM;
    if (n > 0) memcpy(a->ints, v, sizeof(int64_t) * (size_t)n);
    a->n = n;
    return SH_OK;
}

int sh_node_set_floats(sh_graph *g, int k, const char *name, int n, const float *v)
{
    sh_attr *a = attr_slot(g, k, name, SH_ATTR_FLOATS);
    if (!a) return SH_ENOMEM;
    a->floats = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!a->floats) return SH_ENOMEM;
    if (n > 0) memcpy(a->floats, v, sizeof(float) * (size_t)n);
    a->n = n;
    return SH_OK;
}

const sh_attr *sh_node_attr(const sh_node *n, const char *name)
{
    for (int i = 0; i < n->n_attrs; i++)
        if (strcmp(n->attrs[i].name, name) == 0) return &n->attrs[i];
    return NULL;
}

int64_t sh_attr_int(const sh_node *n, const char *name, int64_t def)
{
    const sh_attr *a = sh_node_attr(n, name);
    if (!a) return def;
    if (a->type == SH_ATTR_INT) return a->i;
    if (a->type == SH_ATTR_FLOAT) return (int64_t)a->f;
    return def;
}

float sh_attr_float(const sh_node *n, const char *name, float def)
{
    const sh_attr *a = sh_node_attr(n, name);
    if (!a) return def;
    if (a->type == SH_ATTR_FLOAT) return a->f;
    if (a->type == SH_ATTR_INT) return (float)a->i;
    return def;
}

const char *sh_attr_string(const sh_node *n, const char *name, const char *def)
{
    const sh_attr *a = sh_node_attr(n, name);
    return a && a->type == SH_ATTR_STRING && a->s ? a->s : def;
}

int sh_attr_ints(const sh_node *n, const char *name, const int64_t **v)
{
    const sh_attr *a = sh_node_attr(n, name);
    if (!a || a->type != SH_ATTR_INTS) {
        if (v) *v = NULL;
        return -1;
    }
    if (v) *v = a->ints;
    return a->n;
}

void sh_graph_set_meta(sh_graph *g, const char *key, const char *val)
{
    for (int i = 0; i < g->n_meta; i++)
        if (strcmp(g->meta_keys[i], key) == 0) {
            char *v = xstrdup(val);
            if (v) {
                free(g->meta_vals[i]);
                g->meta_vals[i] = v;
            }
            return;
        }
    char **k = realloc(g->meta_keys, sizeof(char *) * (size_t)(g->n_meta + 1));
    if (!k) return;
    g->meta_keys = k;
    char **v = realloc(g->meta_vals, sizeof(char *) * (size_t)(g->n_meta + 1));
    if (!v) return;
    g->meta_vals = v;
    g->meta_keys[g->n_meta] = xstrdup(key);
    g->meta_vals[g->n_meta] = xstrdup(val);
    if (!g->meta_keys[g->n_meta] || !g->meta_vals[g->n_meta]) {
        free(g->meta_keys[g->n_meta]);
        free(g->meta_vals[g->n_meta]);
        return;
    }
    g->n_meta++;
}

const char *sh_graph_get_meta(const sh_graph *g, const char *key)
{
    for (int i = 0; i < g->n_meta; i++)
        if (strcmp(g->meta_keys[i], key) == 0) return g->meta_vals[i];
    return NULL;
}

static int copy_attr(sh_attr *d, const sh_attr *s)
{
    memset(d, 0, sizeof *d);
    d->name = xstrdup(s->name);
    d->type = s->type;
    d->i = s->i;
    d->f = s->f;
    d->n = s->n;
    if (!d->name) return SH_ENOMEM;
    if (s->s && !(d->s = xstrdup(s->s))) return SH_ENOMEM;
    if (s->ints) {
        d->ints = malloc(sizeof(int64_t) * (size_t)(s->n > 0 ? s->n : 1));
        if (!d->ints) return SH_ENOMEM;
        memcpy(d->ints, s->ints, sizeof(int64_t) * (size_t)s->n);
    }
    if (s->floats) {
        d->floats = malloc(sizeof(float) * (size_t)(s->n > 0 ? s->n : 1));
        if (!d->floats) return SH_ENOMEM;
        memcpy(d->floats, s->floats, sizeof(float) * (size_t)s->n);
    }
    if (s->t && !(d->t = sh_tensor_clone(s->t, NULL))) return SH_ENOMEM;
    return SH_OK;
}

sh_graph *sh_graph_clone(const sh_graph *g, sh_error *err) { return sh_graph_copy(g, 0, err); }

sh_graph *sh_graph_copy(const sh_graph *g, int share_weights, sh_error *err)
{
    sh_graph *c = calloc(1, sizeof *c);
    if (!c) goto oom;
    c->name = xstrdup(g->name);
    c->opset = g->opset;
    c->values = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof *c->values);
    c->nodes = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), sizeof *c->nodes);
    c->inputs = malloc(sizeof(int) * (size_t)(g->n_inputs + 1));
    c->outputs = malloc(sizeof(int) * (size_t)(g->n_outputs + 1));
    if (!c->name || !c->values || !c->nodes || !c->inputs || !c->outputs) goto oom;
    c->cap_values = g->n_values ? g->n_values : 1;
    c->cap_nodes = g->n_nodes ? g->n_nodes : 1;
    for (int i = 0; i < g->n_values; i++) {
        const sh_value *s = &g->values[i];
        sh_value *d = &c->values[i];
        *d = *s;
        d->name = NULL;
        d->init = NULL;
        c->n_values = i + 1;
        if (!(d->name = xstrdup(s->name))) goto oom;
        if (s->init) {
            const sh_tensor *t = s->init;
            d->init = share_weights ? sh_tensor_view(t->fmt, t->ndim, t->shape, t->data, err)
                                    : sh_tensor_clone(t, err);
            if (!d->init) goto oom;
            d->init->nbytes = t->nbytes; /* packed formats: the real size */
        }
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const sh_node *s = &g->nodes[i];
        sh_node *d = &c->nodes[i];
        c->n_nodes = i + 1;
        d->n_in = s->n_in;
        d->n_out = s->n_out;
        d->name = xstrdup(s->name);
        d->op = xstrdup(s->op);
        d->domain = xstrdup(s->domain ? s->domain : "");
        d->in = malloc(sizeof(int) * (size_t)(s->n_in + 1));
        d->out = malloc(sizeof(int) * (size_t)(s->n_out + 1));
        d->attrs = calloc((size_t)(s->n_attrs + 1), sizeof(sh_attr));
        if (!d->name || !d->op || !d->domain || !d->in || !d->out || !d->attrs) goto oom;
        memcpy(d->in, s->in, sizeof(int) * (size_t)s->n_in);
        memcpy(d->out, s->out, sizeof(int) * (size_t)s->n_out);
        for (int a = 0; a < s->n_attrs; a++) {
            d->n_attrs = a + 1;
            if (copy_attr(&d->attrs[a], &s->attrs[a])) goto oom;
        }
    }
    c->n_inputs = g->n_inputs;
    c->n_outputs = g->n_outputs;
    memcpy(c->inputs, g->inputs, sizeof(int) * (size_t)g->n_inputs);
    memcpy(c->outputs, g->outputs, sizeof(int) * (size_t)g->n_outputs);
    for (int i = 0; i < g->n_meta; i++) sh_graph_set_meta(c, g->meta_keys[i], g->meta_vals[i]);
    return c;
oom:
    sh_err(err, SH_ENOMEM, "out of memory cloning graph");
    sh_graph_free(c);
    return NULL;
}

int64_t sh_graph_param_count(const sh_graph *g)
{
    int64_t n = 0;
    for (int i = 0; i < g->n_values; i++)
        if (g->values[i].init && sh_format_get(g->values[i].init->fmt)->is_float)
            n += sh_tensor_numel(g->values[i].init);
    return n;
}

int sh_graph_token_dims(const sh_graph *g, int64_t *batch, int64_t *len)
{
    *batch = *len = 0;
    if (!g || g->n_inputs != 1) return 0;
    const sh_value *v = &g->values[g->inputs[0]];
    if (v->ndim != 2 || (v->fmt != SH_I64 && v->fmt != SH_I32)) return 0;
    *batch = v->shape[0] > 0 ? v->shape[0] : 0;
    *len = v->shape[1] > 0 ? v->shape[1] : 0;
    return 1;
}

int64_t sh_graph_param_bytes(const sh_graph *g)
{
    int64_t n = 0;
    for (int i = 0; i < g->n_values; i++)
        if (g->values[i].init) n += (int64_t)g->values[i].init->nbytes;
    return n;
}

/* Topological sort (Kahn) + checks. */
int sh_graph_check(sh_graph *g, sh_error *err)
{
    /* 1. unknown ops: collect every op type and its nodes in one message */
    {
        char msg[900];
        size_t o = 0;
        int bad = 0;
        msg[0] = 0;
        for (int i = 0; i < g->n_nodes; i++) {
            if (sh_op_find(g->nodes[i].op)) continue;
            int seen = 0;
            for (int j = 0; j < i; j++)
                if (!sh_op_find(g->nodes[j].op) && strcmp(g->nodes[j].op, g->nodes[i].op) == 0) seen = 1;
            if (seen) continue;
            bad++;
            if (o < sizeof msg - 1)
                o += (size_t)snprintf(msg + o, sizeof msg - o, "%s%s (nodes:", bad > 1 ? "; " : "", g->nodes[i].op);
            int cnt = 0;
            for (int j = i; j < g->n_nodes; j++)
                if (strcmp(g->nodes[j].op, g->nodes[i].op) == 0) {
                    if (cnt < 4 && o < sizeof msg - 1)
                        o += (size_t)snprintf(msg + o, sizeof msg - o, " '%s'", g->nodes[j].name);
                    cnt++;
                }
            if (cnt > 4 && o < sizeof msg - 1) o += (size_t)snprintf(msg + o, sizeof msg - o, " and %d more", cnt - 4);
            if (o < sizeof msg - 1) o += (size_t)snprintf(msg + o, sizeof msg - o, ")");
        }
        if (bad)
            return sh_err(err, SH_EUNSUPPORTED, "unsupported op%s: %s", bad > 1 ? "s" : "", msg);
    }
    /* 2. arity */
    for (int i = 0; i < g->n_nodes; i++) {
        const sh_node *n = &g->nodes[i];
        const sh_op_def *d = sh_op_find(n->op);
        if (n->n_in < d->min_in || n->n_in > d->max_in)
            return sh_err(err, SH_EINVAL, "node '%s' (%s): %d inputs, expected %d..%d", n->name, n->op,
                          n->n_in, d->min_in, d->max_in);
        if (n->n_out < d->min_out || n->n_out > d->max_out)
            return sh_err(err, SH_EINVAL, "node '%s' (%s): %d outputs, expected %d..%d", n->name, n->op,
                          n->n_out, d->min_out, d->max_out);
    }
    /* 3. producers and topological order */
    int nv = g->n_values, nn = g->n_nodes;
    int *prod = malloc(sizeof(int) * (size_t)(nv + 1));
    int *indeg = calloc((size_t)nn + 1, sizeof(int));
    int *order = malloc(sizeof(int) * (size_t)(nn + 1));
    int *queue = malloc(sizeof(int) * (size_t)(nn + 1));
    if (!prod || !indeg || !order || !queue) {
        free(prod), free(indeg), free(order), free(queue);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    int rc = SH_OK;
    for (int i = 0; i < nv; i++) prod[i] = -1;
    for (int i = 0; i < nn && !rc; i++)
        for (int j = 0; j < g->nodes[i].n_out; j++) {
            int v = g->nodes[i].out[j];
            if (v < 0) continue;
            if (prod[v] >= 0 || g->values[v].init)
                rc = sh_err(err, SH_EINVAL, "value '%s' is produced twice (node '%s')", g->values[v].name,
                            g->nodes[i].name);
            prod[v] = i;
        }
    for (int i = 0; i < g->n_inputs && !rc; i++)
        if (prod[g->inputs[i]] >= 0)
            rc = sh_err(err, SH_EINVAL, "graph input '%s' is also produced by node '%s'",
                        g->values[g->inputs[i]].name, g->nodes[prod[g->inputs[i]]].name);
    for (int i = 0; i < nn && !rc; i++) {
        const sh_node *n = &g->nodes[i];
        for (int j = 0; j < n->n_in; j++) {
            int v = n->in[j];
            if (v < 0) continue;
            if (prod[v] >= 0) { indeg[i]++; continue; }
            int is_in = g->values[v].init != NULL;
            for (int t = 0; t < g->n_inputs && !is_in; t++) is_in = g->inputs[t] == v;
            if (!is_in)
                rc = sh_err(err, SH_EINVAL, "node '%s' (%s): input '%s' has no producer, initializer or graph input",
                            n->name, n->op, g->values[v].name);
        }
    }
    for (int i = 0; i < g->n_outputs && !rc; i++) {
        int v = g->outputs[i];
        int ok = prod[v] >= 0 || g->values[v].init;
        for (int t = 0; t < g->n_inputs && !ok; t++) ok = g->inputs[t] == v;
        if (!ok) rc = sh_err(err, SH_EINVAL, "graph output '%s' is never computed", g->values[v].name);
    }
    int head = 0, tail = 0, cnt = 0;
    if (!rc) {
        for (int i = 0; i < nn; i++)
            if (indeg[i] == 0) queue[tail++] = i;
        while (head < tail) {
            int i = queue[head++];
            order[cnt++] = i;
            for (int j = 0; j < g->nodes[i].n_out; j++) {
                int v = g->nodes[i].out[j];
                if (v < 0) continue;
                for (int c = 0; c < nn; c++) /* O(n^2) worst case; fine for our sizes */
                    for (int q = 0; q < g->nodes[c].n_in; q++)
                        if (g->nodes[c].in[q] == v && --indeg[c] == 0) queue[tail++] = c;
            }
        }
        if (cnt != nn) rc = sh_err(err, SH_EINVAL, "graph has a cycle (%d of %d nodes ordered)", cnt, nn);
    }
    if (!rc) {
        int sorted = 1;
        for (int i = 0; i < nn; i++) sorted &= order[i] == i;
        if (!sorted) {
            sh_node *tmp = malloc(sizeof(sh_node) * (size_t)(nn + 1));
            if (!tmp) rc = sh_err(err, SH_ENOMEM, "out of memory");
            else {
                for (int i = 0; i < nn; i++) tmp[i] = g->nodes[order[i]];
                memcpy(g->nodes, tmp, sizeof(sh_node) * (size_t)nn);
                free(tmp);
            }
        }
        for (int i = 0; i < nv; i++) g->values[i].producer = -1;
        for (int i = 0; i < nn; i++)
            for (int j = 0; j < g->nodes[i].n_out; j++)
                if (g->nodes[i].out[j] >= 0) g->values[g->nodes[i].out[j]].producer = i;
    }
    free(prod), free(indeg), free(order), free(queue);
    return rc;
}
