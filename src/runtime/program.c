/* program.c - plans a graph into a Program and runs it.
 *
 * Planning (for concrete input shapes): shape inference node by node, constant
 * folding (nodes whose inputs are all constants, and shape-only ops), then a
 * liveness-based memory plan: every activation gets a buffer from a pool, and a
 * buffer returns to the pool after the last consumer of its value ran.  In
 * training mode every value keeps its own buffer (the backward pass reads
 * them).  A run re-plans only when the input shapes change.
 */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "shrink.h"
#include "../ops/ops.h"
#include "runtime.h"
#include "../graph/optimize.h"

struct sh_program {
    sh_graph *g;            /* the graph that runs: src or an optimized copy */
    sh_graph *src;          /* the caller's graph */
    sh_opt_state *opt;      /* folded weights of the copy (NULL: g == src) */
    sh_run_opts opts;
    int planned;
    int n_in;
    int64_t in_shape[64][SH_MAX_DIMS];
    int in_ndim[64];
    int in_fmt[64];
    sh_tensor **vals;       /* per value: runtime tensor (view or owned) */
    unsigned char *kind;    /* per value: VK_* */
    int *buf_of;            /* per value: buffer index or -1 */
    int n_bufs;
    void **bufs;
    size_t *buf_size;
    size_t arena, unplanned;
    void **state;           /* per node */
    const sh_op_def **defs; /* per node: its op row (looked up once) */
    int write_shapes;       /* plan() records inferred shapes in the graph */
    int64_t pos;
    uint64_t run_count;
    void *scratch;
    size_t scratch_size;
    /* training */
    sh_tensor **grads;      /* per value */
    unsigned char *needs_grad;
    int n_params;
    int *params;            /* value indices */
    unsigned char *req_grad; /* per value: gradient requested by sh_program_require_grad */
    int n_req;               /* entries in req_grad */
    double *prof_s;          /* per node of g: seconds (opts.profile) */
    int64_t *prof_n;         /* per node of g: runs */
};

enum { VK_ACT = 0, VK_INIT = 1, VK_CONST = 2, VK_INPUT = 3, VK_NONE = 4 };

void *sh_kctx_scratch(sh_kctx *k, size_t bytes)
{
    if (bytes <= k->scratch_size) return k->scratch;
    /* the runtime hands out its own buffer; k->scratch points into program */
    sh_program *p = (sh_program *)k->scratch_owner;
    void *s = realloc(p->scratch, bytes);
    if (!s) return NULL;
    p->scratch = s;
    p->scratch_size = bytes;
    k->scratch = s;
    k->scratch_size = bytes;
    return s;
}

static void free_plan(sh_program *p)
{
    sh_graph *g = p->g;
    if (p->vals) {
        for (int i = 0; i < g->n_values; i++) sh_tensor_free(p->vals[i]);
        free(p->vals);
        p->vals = NULL;
    }
    if (p->bufs) {
        for (int i = 0; i < p->n_bufs; i++) free(p->bufs[i]);
        free(p->bufs);
        p->bufs = NULL;
    }
    free(p->buf_size);
    p->buf_size = NULL;
    free(p->kind);
    p->kind = NULL;
    free(p->buf_of);
    p->buf_of = NULL;
    if (p->grads) {
        for (int i = 0; i < g->n_values; i++) sh_tensor_free(p->grads[i]);
        free(p->grads);
        p->grads = NULL;
    }
    free(p->needs_grad);
    p->needs_grad = NULL;
    free(p->params);
    p->params = NULL;
    p->n_params = 0;
    p->n_bufs = 0;
    p->planned = 0;
}

/* seq_only: only the per-sequence state (KV caches: sh_kv_cache_free) */
static void free_state(sh_program *p, int seq_only)
{
    if (!p->state) return;
    for (int i = 0; i < p->g->n_nodes; i++) {
        if (!p->state[i]) continue;
        const sh_op_def *d = p->defs[i];
        if (seq_only && !(d && d->state_free == sh_kv_cache_free)) continue;
        if (d && d->state_free) d->state_free(p->state[i]);
        else free(p->state[i]);
        p->state[i] = NULL;
    }
}

void sh_program_free(sh_program *p)
{
    if (!p) return;
    free_plan(p);
    free_state(p, 0);
    free(p->state);
    free(p->defs);
    free(p->scratch);
    free(p->req_grad);
    free(p->prof_s);
    free(p->prof_n);
    if (p->g != p->src) sh_graph_free(p->g);
    sh_opt_state_free(p->opt);
    free(p);
}

sh_graph *sh_program_graph(sh_program *p) { return p->g; }

int sh_program_sync_weights(sh_program *p, sh_error *err)
{
    (void)err;
    if (p->opt) sh_opt_state_sync(p->opt, p->src, p->g, 1);
    return SH_OK;
}

int sh_program_new(sh_graph *g, const sh_run_opts *opts, sh_program **out, sh_error *err)
{
    *out = NULL;
    int rc = sh_graph_check(g, err);
    if (rc) return rc;
    sh_program *p = calloc(1, sizeof *p);
    if (!p) return sh_err(err, SH_ENOMEM, "out of memory");
    p->g = p->src = g;
    if (opts) p->opts = *opts;
    if (!p->opts.training && !p->opts.no_optimize) {
        sh_graph *c = NULL;
        rc = sh_graph_optimize_copy(g, 1, &c, &p->opt, err);
        if (rc) {
            free(p);
            return rc;
        }
        if (c) p->g = g = c;
    }
    if (p->opts.nthreads <= 0) {
#ifdef _OPENMP
        p->opts.nthreads = omp_get_num_procs();
#else
        p->opts.nthreads = 1;
#endif
    }
    p->state = calloc((size_t)g->n_nodes + 1, sizeof(void *));
    p->defs = calloc((size_t)g->n_nodes + 1, sizeof(sh_op_def *));
    if (p->defs)
        for (int i = 0; i < g->n_nodes; i++) p->defs[i] = sh_op_find(g->nodes[i].op);
    if (p->opts.profile) {
        p->prof_s = calloc((size_t)g->n_nodes + 1, sizeof(double));
        p->prof_n = calloc((size_t)g->n_nodes + 1, sizeof(int64_t));
    }
    if (!p->state || !p->defs || (p->opts.profile && (!p->prof_s || !p->prof_n))) {
        sh_program_free(p);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    if (g->n_inputs > 64) {
        sh_program_free(p);
        return sh_err(err, SH_EUNSUPPORTED, "graph has %d inputs (at most 64)", g->n_inputs);
    }
    *out = p;
    return SH_OK;
}

static void init_kctx(sh_program *p, sh_kctx *k, int node, sh_error *err)
{
    memset(k, 0, sizeof *k);
    k->node = &p->g->nodes[node];
    k->err = err;
    k->nthreads = p->opts.nthreads;
    k->training = p->opts.training;
    k->seed = p->opts.seed * 0x9E3779B97F4A7C15ull + (uint64_t)node * 0xBF58476D1CE4E5B9ull +
              p->run_count * 0x94D049BB133111EBull;
    k->pos = p->pos;
    k->state = &p->state[node];
    k->scratch = p->scratch;
    k->scratch_size = p->scratch_size;
    k->scratch_owner = p;
    k->opset = p->g->opset;
}

static int same_inputs(const sh_program *p, const sh_tensor *const *in)
{
    for (int i = 0; i < p->n_in; i++) {
        if (in[i]->ndim != p->in_ndim[i] || (int)in[i]->fmt != p->in_fmt[i]) return 0;
        for (int d = 0; d < in[i]->ndim; d++)
            if (in[i]->shape[d] != p->in_shape[i][d]) return 0;
        int v = p->g->inputs[i];
        if (p->kind[v] == VK_CONST && memcmp(p->vals[v]->data, in[i]->data, p->vals[v]->nbytes) != 0) return 0;
    }
    return 1;
}

/* Small 0-D/1-D integer graph inputs (shapes, pads, axes fed at run time, as in
 * the ONNX backend tests) are taken as plan-time constants: shape inference
 * reads them, and a run with different values re-plans. */
static int input_is_shape_like(const sh_tensor *t)
{
    return (t->fmt == SH_I64 || t->fmt == SH_I32) && t->ndim <= 1 && sh_tensor_numel(t) <= 64;
}

/* Decide which values need gradients and collect trainable parameters. */
static int plan_grads(sh_program *p, sh_error *err)
{
    sh_graph *g = p->g;
    p->needs_grad = calloc((size_t)g->n_values + 1, 1);
    p->grads = calloc((size_t)g->n_values + 1, sizeof(sh_tensor *));
    p->params = malloc(sizeof(int) * ((size_t)g->n_values + 1));
    if (!p->needs_grad || !p->grads || !p->params) return sh_err(err, SH_ENOMEM, "out of memory");
    for (int i = 0; i < g->n_nodes; i++) {
        const sh_node *n = &g->nodes[i];
        const sh_op_def *d = p->defs[i];
        for (int j = 0; j < n->n_in; j++) {
            int v = n->in[j];
            if (v < 0 || !(d->param_inputs & (1u << j))) continue;
            if (p->kind[v] != VK_INIT || g->values[v].init->fmt != SH_F32) continue;
            if (!p->needs_grad[v]) {
                p->needs_grad[v] = 1;
                p->params[p->n_params++] = v;
            }
        }
    }
    for (int v = 0; v < p->n_req && v < g->n_values; v++)
        if (p->req_grad[v] && (p->kind[v] == VK_INPUT || p->kind[v] == VK_INIT) && p->vals[v]->fmt == SH_F32 &&
            !p->needs_grad[v]) {
            p->needs_grad[v] = 1;
            p->grads[v] = sh_tensor_new(SH_F32, p->vals[v]->ndim, p->vals[v]->shape, err);
            if (!p->grads[v]) return err ? err->code : SH_ENOMEM;
        }
    for (int i = 0; i < g->n_nodes; i++) {
        const sh_node *n = &g->nodes[i];
        const sh_op_def *d = p->defs[i];
        int any = 0;
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] >= 0 && !(d->nondiff_inputs & (1u << j)) && p->needs_grad[n->in[j]]) any = 1;
        if (any && d->backward)
            for (int j = 0; j < n->n_out; j++)
                if (n->out[j] >= 0 && p->kind[n->out[j]] == VK_ACT) p->needs_grad[n->out[j]] = 1;
    }
    for (int k = 0; k < p->n_params; k++) {
        int v = p->params[k];
        p->grads[v] = sh_tensor_new(SH_F32, p->vals[v]->ndim, p->vals[v]->shape, err);
        if (!p->grads[v]) return err ? err->code : SH_ENOMEM;
    }
    return SH_OK;
}

static int plan(sh_program *p, const sh_tensor *const *inputs, sh_error *err)
{
    sh_graph *g = p->g;
    free_plan(p);
    int nv = g->n_values, nn = g->n_nodes, rc = SH_OK;
    p->vals = calloc((size_t)nv + 1, sizeof(sh_tensor *));
    p->kind = calloc((size_t)nv + 1, 1);
    p->buf_of = malloc(sizeof(int) * ((size_t)nv + 1));
    int *last_use = malloc(sizeof(int) * ((size_t)nv + 1));
    if (!p->vals || !p->kind || !p->buf_of || !last_use) {
        free(last_use);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    for (int i = 0; i < nv; i++) {
        p->buf_of[i] = -1;
        last_use[i] = -1;
        p->kind[i] = VK_NONE;
        sh_value *v = &g->values[i];
        if (v->init) {
            p->kind[i] = VK_INIT;
            p->vals[i] = sh_tensor_view(v->init->fmt, v->init->ndim, v->init->shape, v->init->data, err);
            if (!p->vals[i]) goto fail;
            p->vals[i]->nbytes = v->init->nbytes; /* packed formats carry their own size */
        }
    }
    /* graph inputs: shape-check and view */
    p->n_in = g->n_inputs;
    for (int i = 0; i < g->n_inputs; i++) {
        int vi = g->inputs[i];
        sh_value *v = &g->values[vi];
        const sh_tensor *t = inputs[i];
        char a[160], b[160];
        if (!t) {
            rc = sh_err(err, SH_EINVAL, "input '%s' is missing", v->name);
            goto fail;
        }
        int ok = v->ndim < 0 || v->ndim == t->ndim;
        for (int d = 0; ok && v->ndim >= 0 && d < t->ndim; d++)
            if (v->shape[d] >= 0 && v->shape[d] != t->shape[d]) ok = 0;
        if (!ok) {
            rc = sh_err(err, SH_ESHAPE, "input '%s': expected shape %s, got %s", v->name,
                        sh_shape_str(v->ndim, v->shape, a, sizeof a), sh_shape_str(t->ndim, t->shape, b, sizeof b));
            goto fail;
        }
        if (input_is_shape_like(t)) {
            p->kind[vi] = VK_CONST;
            p->vals[vi] = sh_tensor_clone(t, err);
        } else {
            p->kind[vi] = VK_INPUT;
            p->vals[vi] = sh_tensor_view(t->fmt, t->ndim, t->shape, NULL, err);
        }
        if (!p->vals[vi]) goto fail;
        p->in_ndim[i] = t->ndim;
        p->in_fmt[i] = (int)t->fmt;
        for (int d = 0; d < t->ndim; d++) p->in_shape[i][d] = t->shape[d];
    }
    /* inference + constant folding */
    for (int i = 0; i < nn; i++) {
        const sh_node *n = &g->nodes[i];
        const sh_op_def *d = p->defs[i];
        const sh_tensor *in[32];
        sh_tensor *out[16];
        if (n->n_in > 32 || n->n_out > 16) {
            rc = sh_err(err, SH_EUNSUPPORTED, "node '%s' (%s): too many inputs/outputs", n->name, n->op);
            goto fail;
        }
        int all_const = 1;
        for (int j = 0; j < n->n_in; j++) {
            int v = n->in[j];
            in[j] = v >= 0 ? p->vals[v] : NULL;
            if (v >= 0 && !in[j]) {
                rc = sh_err(err, SH_EINTERNAL, "node '%s' (%s): input '%s' not computed before use", n->name,
                            n->op, g->values[v].name);
                goto fail;
            }
            if (v >= 0 && p->kind[v] != VK_INIT && p->kind[v] != VK_CONST) all_const = 0;
            if (v >= 0) last_use[v] = i;
        }
        for (int j = 0; j < n->n_out; j++) {
            int v = n->out[j];
            if (v < 0) {
                out[j] = NULL;
                continue;
            }
            out[j] = calloc(1, sizeof(sh_tensor));
            if (!out[j]) {
                rc = sh_err(err, SH_ENOMEM, "out of memory");
                goto fail;
            }
            out[j]->fmt = SH_F32;
            p->vals[v] = out[j];
            p->kind[v] = VK_ACT;
        }
        sh_kctx k;
        init_kctx(p, &k, i, err);
        rc = d->infer(&k, in, n->n_in, out, n->n_out);
        p->scratch = k.scratch, p->scratch_size = k.scratch_size;
        if (rc) goto fail;
        for (int j = 0; j < n->n_out; j++) {
            if (!out[j]) continue;
            out[j]->nbytes = sh_format_bytes(out[j]->fmt, sh_tensor_numel(out[j]));
            /* Only sh_graph_infer_shapes records shapes in the graph: a run
             * at one batch size must not bake that batch into the model. */
            if (!p->write_shapes) continue;
            sh_value *v = &g->values[n->out[j]];
            v->fmt = out[j]->fmt;
            v->ndim = out[j]->ndim;
            memcpy(v->shape, out[j]->shape, sizeof v->shape);
        }
        /* fold constants (not in training mode for stateful/random ops) */
        int foldable = (all_const || d->shape_only) && !(p->opts.training && strcmp(n->op, "Dropout") == 0);
        if (foldable && !d->shape_only && n->n_in == 0 && strcmp(n->op, "Constant") != 0) foldable = 0;
        if (foldable) {
            for (int j = 0; j < n->n_out; j++) {
                if (!out[j]) continue;
                out[j]->data = calloc(1, out[j]->nbytes ? out[j]->nbytes : 1);
                if (!out[j]->data) {
                    rc = sh_err(err, SH_ENOMEM, "out of memory");
                    goto fail;
                }
                out[j]->owns = 1;
            }
            init_kctx(p, &k, i, err);
            int saved_training = k.training;
            k.training = 0;
            rc = d->forward(&k, in, n->n_in, out, n->n_out);
            k.training = saved_training;
            p->scratch = k.scratch, p->scratch_size = k.scratch_size;
            if (rc) goto fail;
            for (int j = 0; j < n->n_out; j++)
                if (out[j]) p->kind[n->out[j]] = VK_CONST;
        }
    }
    for (int i = 0; i < g->n_outputs; i++) last_use[g->outputs[i]] = nn;
    /* memory plan */
    {
        int cap = 16;
        p->bufs = calloc((size_t)cap, sizeof(void *));
        p->buf_size = calloc((size_t)cap, sizeof(size_t));
        int *free_list = malloc(sizeof(int) * (size_t)(nv + 1));
        int n_free = 0;
        if (!p->bufs || !p->buf_size || !free_list) {
            free(free_list);
            rc = sh_err(err, SH_ENOMEM, "out of memory");
            goto fail;
        }
        for (int i = 0; i < nn; i++) {
            const sh_node *n = &g->nodes[i];
            for (int j = 0; j < n->n_out; j++) {
                int v = n->out[j];
                if (v < 0 || p->kind[v] != VK_ACT) continue;
                size_t need = p->vals[v]->nbytes;
                p->unplanned += need;
                int best = -1;
                if (!p->opts.training && !p->opts.keep_values) /* smallest free buffer that fits, else the largest */
                    for (int f = 0; f < n_free; f++) {
                        int b = free_list[f];
                        if (best < 0) { best = f; continue; }
                        size_t sb = p->buf_size[free_list[best]], s = p->buf_size[b];
                        int fits = s >= need, bfits = sb >= need;
                        if ((fits && (!bfits || s < sb)) || (!fits && !bfits && s > sb)) best = f;
                    }
                int b;
                if (best >= 0) {
                    b = free_list[best];
                    free_list[best] = free_list[--n_free];
                    if (p->buf_size[b] < need) p->buf_size[b] = need;
                } else {
                    if (p->n_bufs == cap) {
                        cap *= 2;
                        void **nb = realloc(p->bufs, sizeof(void *) * (size_t)cap);
                        if (nb) p->bufs = nb;
                        size_t *ns = realloc(p->buf_size, sizeof(size_t) * (size_t)cap);
                        if (ns) p->buf_size = ns;
                        if (!nb || !ns) {
                            free(free_list);
                            rc = sh_err(err, SH_ENOMEM, "out of memory");
                            goto fail;
                        }
                    }
                    b = p->n_bufs++;
                    p->bufs[b] = NULL;
                    p->buf_size[b] = need;
                }
                p->buf_of[v] = b;
            }
            /* release buffers whose value died here (outputs never used die at once) */
            if (!p->opts.training && !p->opts.keep_values) {
                for (int j = 0; j < n->n_in; j++) {
                    int v = n->in[j];
                    if (v < 0 || p->buf_of[v] < 0 || last_use[v] != i) continue;
                    int dup = 0;
                    for (int q = 0; q < n_free; q++) dup |= free_list[q] == p->buf_of[v];
                    if (!dup) free_list[n_free++] = p->buf_of[v];
                }
                for (int j = 0; j < n->n_out; j++) {
                    int v = n->out[j];
                    if (v < 0 || p->buf_of[v] < 0 || last_use[v] >= 0) continue;
                    free_list[n_free++] = p->buf_of[v];
                }
            }
        }
        free(free_list);
        for (int b = 0; b < p->n_bufs; b++) {
            /* 64-byte aligned, padded so SIMD kernels may over-read a little */
            size_t sz = (p->buf_size[b] + 64 + 63) & ~(size_t)63;
            p->bufs[b] = aligned_alloc(64, sz);
            if (!p->bufs[b]) {
                rc = sh_err(err, SH_ENOMEM, "out of memory allocating %zu activation bytes", sz);
                goto fail;
            }
            p->arena += p->buf_size[b];
        }
        for (int v = 0; v < nv; v++)
            if (p->buf_of[v] >= 0) {
                p->vals[v]->data = p->bufs[p->buf_of[v]];
                p->vals[v]->owns = 0;
            }
    }
    free(last_use);
    last_use = NULL;
    if (p->opts.training && (rc = plan_grads(p, err))) goto fail;
    p->planned = 1;
    return SH_OK;
fail:
    free(last_use);
    free_plan(p);
    return rc ? rc : (err && err->code ? err->code : SH_EINTERNAL);
}

/* OpenBLAS (OpenMP build) sizes its thread team from the calling thread's
 * omp_get_max_threads() at every call: for the length of a run it is set to
 * the program's thread count (an OpenMP setting of the calling thread only),
 * so --threads 1 keeps f32 GEMM / GEMV on one core too, then restored. */
static int omp_enter(const sh_program *p)
{
#ifdef _OPENMP
    int prev = omp_get_max_threads();
    if (prev != p->opts.nthreads && p->opts.nthreads > 0) omp_set_num_threads(p->opts.nthreads);
    return prev;
#else
    (void)p;
    return 1;
#endif
}

static void omp_leave(const sh_program *p, int prev)
{
#ifdef _OPENMP
    if (prev != p->opts.nthreads && p->opts.nthreads > 0) omp_set_num_threads(prev);
#else
    (void)p, (void)prev;
#endif
}

static int run_nodes(sh_program *p, const sh_tensor *const *inputs, int n_inputs, sh_error *err);

int sh_program_run(sh_program *p, const sh_tensor *const *inputs, int n_inputs, sh_error *err)
{
    int prev = omp_enter(p);
    int rc = run_nodes(p, inputs, n_inputs, err);
    omp_leave(p, prev);
    return rc;
}

static int run_nodes(sh_program *p, const sh_tensor *const *inputs, int n_inputs, sh_error *err)
{
    sh_graph *g = p->g;
    if (n_inputs != g->n_inputs)
        return sh_err(err, SH_EINVAL, "model takes %d input%s, %d given", g->n_inputs, g->n_inputs == 1 ? "" : "s",
                      n_inputs);
    for (int i = 0; i < n_inputs; i++)
        if (!inputs[i] || !inputs[i]->data)
            return sh_err(err, SH_EINVAL, "input %d ('%s') has no data", i, g->values[g->inputs[i]].name);
    if (p->opt) sh_opt_state_sync(p->opt, p->src, p->g, 0);
    if (!p->planned || !same_inputs(p, inputs)) {
        int rc = plan(p, inputs, err);
        if (rc) return rc;
    }
    for (int i = 0; i < n_inputs; i++)
        if (p->kind[g->inputs[i]] == VK_INPUT) p->vals[g->inputs[i]]->data = inputs[i]->data;
    p->run_count++;
    for (int i = 0; i < g->n_nodes; i++) {
        const sh_node *n = &g->nodes[i];
        int skip = 1;
        for (int j = 0; j < n->n_out; j++)
            if (n->out[j] >= 0 && p->kind[n->out[j]] == VK_ACT) skip = 0;
        if (skip) continue;
        const sh_op_def *d = p->defs[i];
        const sh_tensor *in[32];
        sh_tensor *out[16];
        for (int j = 0; j < n->n_in; j++) in[j] = n->in[j] >= 0 ? p->vals[n->in[j]] : NULL;
        for (int j = 0; j < n->n_out; j++) out[j] = n->out[j] >= 0 ? p->vals[n->out[j]] : NULL;
        sh_kctx k;
        init_kctx(p, &k, i, err);
        double t0 = p->prof_s ? sh_now() : 0;
        int rc = d->forward(&k, in, n->n_in, out, n->n_out);
        if (p->prof_s) {
            p->prof_s[i] += sh_now() - t0;
            p->prof_n[i]++;
        }
        p->scratch = k.scratch, p->scratch_size = k.scratch_size;
        if (rc) return rc;
    }
    return SH_OK;
}

int sh_program_profile(const sh_program *p, int i, double *seconds, int64_t *calls)
{
    if (!p || !p->prof_s || i < 0 || i >= p->g->n_nodes) return SH_EINVAL;
    if (seconds) *seconds = p->prof_s[i];
    if (calls) *calls = p->prof_n[i];
    return SH_OK;
}

void sh_program_profile_reset(sh_program *p)
{
    if (!p || !p->prof_s) return;
    memset(p->prof_s, 0, (size_t)p->g->n_nodes * sizeof(double));
    memset(p->prof_n, 0, (size_t)p->g->n_nodes * sizeof(int64_t));
}

int sh_program_num_outputs(const sh_program *p) { return p->g->n_outputs; }

sh_tensor *sh_program_output(sh_program *p, int i)
{
    if (!p->planned || i < 0 || i >= p->g->n_outputs) return NULL;
    return p->vals[p->g->outputs[i]];
}

sh_tensor *sh_program_value(sh_program *p, const char *name)
{
    if (!p->planned) return NULL;
    int v = sh_graph_find(p->g, name);
    if (v < 0) return NULL;
    if (!p->opts.training && !p->opts.keep_values && p->kind[v] == VK_ACT) {
        int is_out = 0;
        for (int i = 0; i < p->g->n_outputs; i++) is_out |= p->g->outputs[i] == v;
        if (!is_out) return NULL; /* its buffer may have been reused */
    }
    return p->vals[v];
}

void sh_program_set_pos(sh_program *p, int64_t pos)
{
    p->pos = pos;
    if (pos == 0) free_state(p, 1);
}

size_t sh_program_arena_bytes(const sh_program *p, size_t *unplanned)
{
    if (unplanned) *unplanned = p->unplanned;
    return p->arena;
}

static int backward_nodes(sh_program *p, const sh_tensor *const *douts, int n, sh_error *err);

int sh_program_backward(sh_program *p, const sh_tensor *const *douts, int n, sh_error *err)
{
    int prev = omp_enter(p);
    int rc = backward_nodes(p, douts, n, err);
    omp_leave(p, prev);
    return rc;
}

static int backward_nodes(sh_program *p, const sh_tensor *const *douts, int n, sh_error *err)
{
    sh_graph *g = p->g;
    if (!p->opts.training) return sh_err(err, SH_EINVAL, "backward needs a program created with training=1");
    if (!p->planned) return sh_err(err, SH_EINVAL, "backward before any run");
    if (n != g->n_outputs) return sh_err(err, SH_EINVAL, "backward: %d output gradients for %d outputs", n, g->n_outputs);
    /* zero activation gradients */
    for (int v = 0; v < g->n_values; v++) {
        if (!p->needs_grad[v] || p->kind[v] != VK_ACT) continue;
        if (!p->grads[v]) {
            p->grads[v] = sh_tensor_new(SH_F32, p->vals[v]->ndim, p->vals[v]->shape, err);
            if (!p->grads[v]) return err ? err->code : SH_ENOMEM;
        } else memset(p->grads[v]->data, 0, p->grads[v]->nbytes);
    }
    for (int i = 0; i < n; i++) {
        int v = g->outputs[i];
        if (!douts[i] || !p->grads[v]) continue;
        if (sh_tensor_numel(douts[i]) != sh_tensor_numel(p->vals[v]))
            return sh_err(err, SH_ESHAPE, "backward: gradient of output '%s' has %lld elements, expected %lld",
                          g->values[v].name, (long long)sh_tensor_numel(douts[i]),
                          (long long)sh_tensor_numel(p->vals[v]));
        float *dst = p->grads[v]->data;
        const float *src = douts[i]->data;
        int64_t ne = sh_tensor_numel(douts[i]);
        for (int64_t e = 0; e < ne; e++) dst[e] += src[e];
    }
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        const sh_node *nd = &g->nodes[i];
        const sh_op_def *d = p->defs[i];
        int has_dout = 0, wants = 0;
        for (int j = 0; j < nd->n_out; j++)
            if (nd->out[j] >= 0 && p->grads[nd->out[j]] && p->kind[nd->out[j]] == VK_ACT) has_dout = 1;
        for (int j = 0; j < nd->n_in; j++)
            if (nd->in[j] >= 0 && p->grads[nd->in[j]] && !(d->nondiff_inputs & (1u << j))) wants = 1;
        if (!has_dout || !wants) continue;
        if (!d->backward)
            return sh_err(err, SH_EUNSUPPORTED, "node '%s' (%s): op has no backward", nd->name, nd->op);
        const sh_tensor *in[32], *out[16], *dout[16];
        sh_tensor *din[32];
        for (int j = 0; j < nd->n_in; j++) {
            int v = nd->in[j];
            in[j] = v >= 0 ? p->vals[v] : NULL;
            din[j] = (v >= 0 && !(d->nondiff_inputs & (1u << j))) ? p->grads[v] : NULL;
        }
        for (int j = 0; j < nd->n_out; j++) {
            int v = nd->out[j];
            out[j] = v >= 0 ? p->vals[v] : NULL;
            dout[j] = v >= 0 ? p->grads[v] : NULL;
        }
        sh_kctx k;
        init_kctx(p, &k, i, err);
        int rc = d->backward(&k, in, nd->n_in, out, nd->n_out, dout, din);
        p->scratch = k.scratch, p->scratch_size = k.scratch_size;
        if (rc) return rc;
    }
    return SH_OK;
}

sh_tensor *sh_program_grad(sh_program *p, const char *value_name)
{
    if (!p->grads) return NULL;
    int v = sh_graph_find(p->g, value_name);
    return v >= 0 ? p->grads[v] : NULL;
}

void sh_program_zero_grad(sh_program *p)
{
    if (!p->grads) return;
    for (int k = 0; k < p->n_params; k++) {
        sh_tensor *t = p->grads[p->params[k]];
        if (t) memset(t->data, 0, t->nbytes);
    }
    for (int v = 0; v < p->n_req && v < p->g->n_values; v++)
        if (p->req_grad[v] && p->grads[v]) memset(p->grads[v]->data, 0, p->grads[v]->nbytes);
}

int sh_program_require_grad(sh_program *p, const char *value_name, sh_error *err)
{
    sh_graph *g = p->g;
    if (!p->opts.training) return sh_err(err, SH_EINVAL, "require_grad('%s') needs a training program", value_name);
    int v = sh_graph_find(g, value_name);
    if (v < 0) return sh_err(err, SH_EINVAL, "require_grad: no value named '%s'", value_name);
    int is_input = 0;
    for (int i = 0; i < g->n_inputs; i++) is_input |= g->inputs[i] == v;
    if (!is_input && !(g->values[v].init && g->values[v].init->fmt == SH_F32))
        return sh_err(err, SH_EINVAL, "require_grad: '%s' is neither a graph input nor a float initializer", value_name);
    if (p->n_req < g->n_values) {
        unsigned char *r = realloc(p->req_grad, (size_t)g->n_values + 1);
        if (!r) return sh_err(err, SH_ENOMEM, "out of memory");
        memset(r + p->n_req, 0, (size_t)(g->n_values + 1 - p->n_req));
        p->req_grad = r;
        p->n_req = g->n_values;
    }
    if (!p->req_grad[v]) {
        p->req_grad[v] = 1;
        p->planned = 0; /* re-plan at the next run */
    }
    return SH_OK;
}

int sh_program_num_params(const sh_program *p) { return p->n_params; }

int sh_program_param(sh_program *p, int i, int *value, sh_tensor **data, sh_tensor **grad)
{
    if (i < 0 || i >= p->n_params) return SH_EINVAL;
    int v = p->params[i];
    if (value) *value = v;
    if (data) *data = p->vals[v];
    if (grad) *grad = p->grads[v];
    return SH_OK;
}

int sh_graph_infer_shapes(sh_graph *g, const sh_tensor *const *inputs, sh_error *err)
{
    sh_tensor **tmp = NULL;
    sh_tensor **use = (sh_tensor **)inputs;
    int rc = SH_OK;
    if (!inputs) {
        tmp = calloc((size_t)g->n_inputs + 1, sizeof(sh_tensor *));
        if (!tmp) return sh_err(err, SH_ENOMEM, "out of memory");
        for (int i = 0; i < g->n_inputs && !rc; i++) {
            sh_value *v = &g->values[g->inputs[i]];
            int64_t shape[SH_MAX_DIMS];
            int nd = v->ndim < 0 ? 0 : v->ndim;
            for (int d = 0; d < nd; d++) shape[d] = v->shape[d] < 0 ? 1 : v->shape[d];
            tmp[i] = sh_tensor_new(v->fmt, nd, shape, err);
            if (!tmp[i]) rc = err ? err->code : SH_ENOMEM;
        }
        use = tmp;
    }
    sh_program *p = NULL;
    sh_run_opts ro = {.no_optimize = 1}; /* shapes go to g's own values */
    if (!rc) rc = sh_program_new(g, &ro, &p, err);
    if (!rc) {
        p->opts.nthreads = 1;
        p->write_shapes = 1;
        rc = plan(p, (const sh_tensor *const *)use, err);
    }
    sh_program_free(p);
    if (tmp) {
        for (int i = 0; i < g->n_inputs; i++) sh_tensor_free(tmp[i]);
        free(tmp);
    }
    return rc;
}
