/* compress.c - helpers shared by the compression passes (see compress.h):
 * prunable layers, layer selection, torch.topk-compatible selection, Taylor
 * scores from calibration batches, per-layer reports. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"

int sh_prunable_layers(const sh_graph *g, sh_layer **out, int *n, sh_error *err)
{
    *out = NULL;
    *n = 0;
    sh_layer *L = calloc((size_t)g->n_nodes + 1, sizeof *L);
    if (!L) return sh_err(err, SH_ENOMEM, "out of memory");
    int cnt = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const sh_node *nd = &g->nodes[i];
        int conv = strcmp(nd->op, "Conv") == 0, gemm = strcmp(nd->op, "Gemm") == 0,
            mm = strcmp(nd->op, "MatMul") == 0;
        if (!(conv || gemm || mm) || nd->n_in < 2 || nd->in[1] < 0) continue;
        const sh_value *w = &g->values[nd->in[1]];
        if (!w->init || w->init->fmt != SH_F32 || w->init->ndim < 2) continue;
        if (gemm && sh_attr_int(nd, "transA", 0)) continue;
        if ((gemm || mm) && w->init->ndim != 2) continue;
        sh_layer *l = &L[cnt];
        l->node = i;
        l->wv = nd->in[1];
        l->bv = -1;
        l->name = nd->name;
        l->op = nd->op;
        l->group = 1;
        const sh_tensor *t = w->init;
        if (conv) {
            l->out_axis = 0, l->in_axis = 1;
            l->rows = t->shape[0];
            l->cols = sh_tensor_numel(t) / (t->shape[0] ? t->shape[0] : 1);
            l->group = sh_attr_int(nd, "group", 1);
        } else if (gemm && sh_attr_int(nd, "transB", 0)) {
            l->out_axis = 0, l->in_axis = 1;
            l->rows = t->shape[0], l->cols = t->shape[1];
        } else {
            l->out_axis = 1, l->in_axis = 0, l->transposed = 1;
            l->rows = t->shape[1], l->cols = t->shape[0];
        }
        if (nd->n_in > 2 && nd->in[2] >= 0 && g->values[nd->in[2]].init &&
            g->values[nd->in[2]].init->fmt == SH_F32)
            l->bv = nd->in[2];
        cnt++;
    }
    *out = L;
    *n = cnt;
    return SH_OK;
}

int64_t sh_token_len(const sh_graph *g, int64_t seq_len, int64_t dflt)
{
    int64_t b, t;
    sh_graph_token_dims(g, &b, &t);
    return seq_len > 0 ? seq_len : t > 0 ? t : dflt;
}

int64_t sh_token_batch(const sh_graph *g)
{
    int64_t b, t;
    sh_graph_token_dims(g, &b, &t);
    return b;
}

int sh_name_in_list(const char *list, const char *a, const char *b)
{
    if (!list) return 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        while (len && *p == ' ') p++, len--;
        while (len && p[len - 1] == ' ') len--;
        if (len && ((a && strlen(a) == len && !strncmp(a, p, len)) || (b && strlen(b) == len && !strncmp(b, p, len))))
            return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

int sh_prune_select(const sh_graph *g, const sh_layer *L, int n, const sh_prune_opts *o, int *sel, sh_error *err)
{
    for (int i = 0; i < n; i++) {
        const char *wn = g->values[L[i].wv].name;
        sel[i] = 1;
        if (o->include && *o->include) sel[i] = sh_name_in_list(o->include, L[i].name, wn);
        if (sh_name_in_list(o->exclude, L[i].name, wn)) sel[i] = 0;
    }
    if (o->skip_first && n > 0) sel[0] = 0;
    if (o->skip_last && n > 0) sel[n - 1] = 0;
    /* every included name must name a layer */
    if (o->include && *o->include) {
        const char *p = o->include;
        while (*p) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            char nm[256];
            if (len >= sizeof nm) len = sizeof nm - 1;
            memcpy(nm, p, len);
            nm[len] = 0;
            char *s = nm;
            while (*s == ' ') s++;
            size_t sl = strlen(s);
            while (sl && s[sl - 1] == ' ') s[--sl] = 0;
            if (*s) {
                int found = 0;
                for (int i = 0; i < n && !found; i++)
                    found = !strcmp(s, L[i].name) || !strcmp(s, g->values[L[i].wv].name);
                if (!found)
                    return sh_err(err, SH_EINVAL,
                                  "include: '%s' is not a prunable layer (Conv/Gemm/MatMul with an f32 weight)", s);
            }
            if (!e) break;
            p = e + 1;
        }
    }
    return SH_OK;
}

int64_t sh_prune_count(double ratio, int64_t n)
{
    double x = ratio * (double)n;
    double r = nearbyint(x); /* default rounding mode: half to even, like Python round() */
    if (r < 0) r = 0;
    if (r > (double)n) r = (double)n;
    return (int64_t)r;
}

int sh_prune_check_opts(const sh_prune_opts *o, sh_error *err)
{
    if (!o) return sh_err(err, SH_EINVAL, "prune: options are NULL");
    if (o->method < SH_PRUNE_L1 || o->method > SH_PRUNE_SPARSEGPT)
        return sh_err(err, SH_EINVAL, "prune: unknown method %d (l1, l2, taylor, wanda, sparsegpt)", o->method);
    if (o->m <= 0 && o->threshold < 0 && !(o->ratio >= 0 && o->ratio < 1))
        return sh_err(err, SH_EINVAL, "prune: sparsity ratio %g is outside [0, 1)", o->ratio);
    if (o->threshold >= 0 && !isfinite(o->threshold))
        return sh_err(err, SH_EINVAL, "prune: threshold %g is not finite", o->threshold);
    if (o->m > 0 && (o->m > 64 || o->n < 1 || o->n >= o->m))
        return sh_err(err, SH_EINVAL, "prune: N:M needs 1 <= N < M <= 64 (got %d:%d)", o->n, o->m);
    if (o->m < 0 || o->n < 0) return sh_err(err, SH_EINVAL, "prune: N:M with a negative value (%d:%d)", o->n, o->m);
    if (o->block < 0 || o->block > 64) return sh_err(err, SH_EINVAL, "prune: block %d outside 0..64", o->block);
    if (o->method == SH_PRUNE_TAYLOR && !o->calib)
        return sh_err(err, SH_EINVAL, "prune: Taylor scores need a calibration data set");
    if ((o->method == SH_PRUNE_WANDA || o->method == SH_PRUNE_SPARSEGPT) && !o->calib)
        return sh_err(err, SH_EINVAL, "prune: %s needs a calibration data set",
                      o->method == SH_PRUNE_WANDA ? "Wanda" : "SparseGPT");
    return SH_OK;
}

/* ---- torch.topk(largest=False) on the CPU: libstdc++ algorithms ------- */

typedef struct { double v; int64_t i; } elem;

/* ATen's comparator for largest=False: NaN sorts last. */
static inline int lt(const elem *x, const elem *y) { return (!isnan(x->v) && isnan(y->v)) || x->v < y->v; }

static void adjust_heap(elem *first, int64_t hole, int64_t len, elem value)
{
    const int64_t top = hole;
    int64_t second = hole;
    while (second < (len - 1) / 2) {
        second = 2 * (second + 1);
        if (lt(&first[second], &first[second - 1])) second--;
        first[hole] = first[second];
        hole = second;
    }
    if ((len & 1) == 0 && second == (len - 2) / 2) {
        second = 2 * (second + 1);
        first[hole] = first[second - 1];
        hole = second - 1;
    }
    int64_t parent = (hole - 1) / 2;
    while (hole > top && lt(&first[parent], &value)) {
        first[hole] = first[parent];
        hole = parent;
        parent = (hole - 1) / 2;
    }
    first[hole] = value;
}

static void make_heap(elem *first, int64_t len)
{
    if (len < 2) return;
    int64_t parent = (len - 2) / 2;
    for (;;) {
        elem v = first[parent];
        adjust_heap(first, parent, len, v);
        if (parent == 0) return;
        parent--;
    }
}

/* std::__heap_select(first, middle, last) */
static void heap_select(elem *first, elem *middle, elem *last)
{
    int64_t len = middle - first;
    make_heap(first, len);
    for (elem *i = middle; i < last; i++)
        if (lt(i, first)) {
            elem v = *i;
            *i = *first;
            adjust_heap(first, 0, len, v);
        }
}

static inline void swap_e(elem *a, elem *b)
{
    elem t = *a;
    *a = *b;
    *b = t;
}

static void move_median_to_first(elem *result, elem *a, elem *b, elem *c)
{
    if (lt(a, b)) {
        if (lt(b, c)) swap_e(result, b);
        else if (lt(a, c)) swap_e(result, c);
        else swap_e(result, a);
    } else if (lt(a, c)) swap_e(result, a);
    else if (lt(b, c)) swap_e(result, c);
    else swap_e(result, b);
}

static elem *unguarded_partition(elem *first, elem *last, elem *pivot)
{
    for (;;) {
        while (lt(first, pivot)) ++first;
        --last;
        while (lt(pivot, last)) --last;
        if (!(first < last)) return first;
        swap_e(first, last);
        ++first;
    }
}

static void insertion_sort(elem *first, elem *last)
{
    if (first == last) return;
    for (elem *i = first + 1; i != last; ++i) {
        if (lt(i, first)) {
            elem v = *i;
            memmove(first + 1, first, sizeof(elem) * (size_t)(i - first));
            *first = v;
        } else {
            elem v = *i, *l = i, *nx = i - 1;
            while (lt(&v, nx)) {
                *l = *nx;
                l = nx;
                --nx;
            }
            *l = v;
        }
    }
}

static int lg2(int64_t n)
{
    int r = 0;
    while (n > 1) n >>= 1, r++;
    return r;
}

static void nth_element(elem *first, elem *nth, elem *last)
{
    if (first == last || nth == last) return;
    int64_t depth = (int64_t)lg2(last - first) * 2;
    while (last - first > 3) {
        if (depth == 0) {
            heap_select(first, nth + 1, last);
            swap_e(first, nth);
            return;
        }
        --depth;
        elem *mid = first + (last - first) / 2;
        move_median_to_first(first, first + 1, mid, last - 1);
        elem *cut = unguarded_partition(first + 1, last, first);
        if (cut <= nth) first = cut;
        else last = cut;
    }
    insertion_sort(first, last);
}

int sh_select_smallest(const float *s, int64_t n, int64_t k, unsigned char *pruned)
{
    memset(pruned, 0, (size_t)n);
    if (k <= 0) return SH_OK;
    if (k >= n) {
        memset(pruned, 1, (size_t)n);
        return SH_OK;
    }
    elem *q = malloc(sizeof(elem) * (size_t)n);
    if (!q) return SH_ENOMEM;
    for (int64_t i = 0; i < n; i++) q[i].v = (double)s[i], q[i].i = i;
    if (k * 64 <= n) heap_select(q, q + k, q + n);
    else nth_element(q, q + k - 1, q + n);
    for (int64_t i = 0; i < k; i++) pruned[q[i].i] = 1;
    free(q);
    return SH_OK;
}

/* ---- Taylor scores --------------------------------------------------- */

int sh_taylor_scores(const sh_graph *g0, const sh_layer *L, int n, const sh_prune_opts *o, float **scores,
                     sh_error *err)
{
    const sh_dataset *d = o->calib;
    for (int i = 0; i < n; i++) scores[i] = NULL;
    if (!d) return sh_err(err, SH_EINVAL, "Taylor scores need a calibration data set");
    if (g0->n_inputs != 1 || g0->n_outputs < 1)
        return sh_err(err, SH_EUNSUPPORTED, "Taylor scores: the model must have one input (has %d)", g0->n_inputs);
    int B = o->batch > 0 ? o->batch : 32, NB = o->calib_batches > 0 ? o->calib_batches : 4;
    int lm = d->kind == 2;
    int64_t T = lm ? sh_token_len(g0, o->seq_len, 64) : 1;
    if (lm && sh_token_batch(g0) > 0) B = (int)sh_token_batch(g0);
    int64_t items = lm ? (d->n - 1) / T : d->n;
    if (items < 1) return sh_err(err, SH_EINVAL, "Taylor scores: the calibration set is empty");
    if (items < (int64_t)B) B = (int)items;
    if ((int64_t)NB * B > items) NB = (int)(items / B);
    int rc = SH_OK;
    sh_graph *g = sh_graph_clone(g0, err); /* training mode updates BN statistics */
    sh_program *p = NULL;
    sh_tensor *x = NULL, *dl = NULL;
    int32_t *y = malloc(sizeof(int32_t) * (size_t)(B * T));
    if (!g || !y) {
        rc = g ? sh_err(err, SH_ENOMEM, "out of memory") : (err ? err->code : SH_ENOMEM);
        goto out;
    }
    const sh_value *iv = &g->values[g->inputs[0]];
    if (lm) {
        int64_t s[2] = {B, T};
        x = sh_tensor_new(SH_I64, 2, s, err);
    } else {
        int64_t per = (int64_t)d->c * d->h * d->w;
        int64_t s4[4] = {B, d->c, d->h, d->w}, s2[2] = {B, per};
        x = iv->ndim == 2 ? sh_tensor_new(SH_F32, 2, s2, err) : sh_tensor_new(SH_F32, 4, s4, err);
    }
    if (!x) {
        rc = err ? err->code : SH_ENOMEM;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        scores[i] = calloc((size_t)sh_tensor_numel(g->values[L[i].wv].init), sizeof(float));
        if (!scores[i]) {
            rc = sh_err(err, SH_ENOMEM, "out of memory");
            goto out;
        }
    }
    sh_run_opts ro = {.nthreads = o->nthreads, .training = 1};
    if ((rc = sh_program_new(g, &ro, &p, err))) goto out;
    for (int i = 0; i < n && !rc; i++) rc = sh_program_require_grad(p, g->values[L[i].wv].name, err);
    for (int b = 0; b < NB && !rc; b++) {
        if (lm) {
            int64_t *xi = x->data;
            for (int64_t r = 0; r < B; r++)
                for (int64_t t = 0; t < T; t++) {
                    xi[r * T + t] = d->tokens[(b * B + r) * T + t];
                    y[r * T + t] = d->tokens[(b * B + r) * T + t + 1];
                }
            sh_program_set_pos(p, 0);
        } else {
            int64_t per = (int64_t)d->c * d->h * d->w;
            memcpy(x->data, d->x + (int64_t)b * B * per, sizeof(float) * (size_t)(B * per));
            memcpy(y, d->y + (int64_t)b * B, sizeof(int32_t) * (size_t)B);
        }
        const sh_tensor *ins[1] = {x};
        if ((rc = sh_program_run(p, ins, 1, err))) break;
        sh_tensor *lo = sh_program_output(p, 0);
        int64_t C = lo->ndim > 0 ? lo->shape[lo->ndim - 1] : 1, rows = (int64_t)B * T;
        if (lo->fmt != SH_F32 || sh_tensor_numel(lo) != rows * C) {
            char s[96];
            rc = sh_err(err, SH_ESHAPE, "Taylor scores: model output is %s; expected %lld rows of logits",
                        sh_shape_str(lo->ndim, lo->shape, s, sizeof s), (long long)rows);
            break;
        }
        for (int64_t r = 0; r < rows; r++)
            if (y[r] < 0 || y[r] >= C) {
                rc = sh_err(err, SH_EINVAL, "Taylor scores: label %d but the model has %lld outputs", y[r],
                            (long long)C);
                goto out;
            }
        if (!dl) {
            dl = sh_tensor_new(SH_F32, lo->ndim, lo->shape, err);
            if (!dl) {
                rc = err ? err->code : SH_ENOMEM;
                break;
            }
        }
        sh_loss_xent(lo->data, y, rows, C, 0.0f, 1.0f, dl->data);
        sh_program_zero_grad(p);
        const sh_tensor *douts[16] = {dl};
        if ((rc = sh_program_backward(p, douts, g->n_outputs, err))) break;
        for (int i = 0; i < n; i++) {
            const sh_tensor *w = g->values[L[i].wv].init;
            const sh_tensor *gr = sh_program_grad(p, g->values[L[i].wv].name);
            if (!gr) {
                rc = sh_err(err, SH_EINTERNAL, "Taylor scores: no gradient for '%s'", g->values[L[i].wv].name);
                goto out;
            }
            const float *wd = w->data, *gd = gr->data;
            int64_t ne = sh_tensor_numel(w);
            for (int64_t e = 0; e < ne; e++) scores[i][e] += fabsf(wd[e] * gd[e]);
        }
    }
out:
    if (rc)
        for (int i = 0; i < n; i++) free(scores[i]), scores[i] = NULL;
    sh_program_free(p);
    sh_graph_free(g);
    sh_tensor_free(x);
    sh_tensor_free(dl);
    free(y);
    return rc;
}

/* ---- reports --------------------------------------------------------- */

void sh_prune_report_free(sh_prune_report *r)
{
    if (!r) return;
    free(r->layers);
    memset(r, 0, sizeof *r);
}

static int64_t count_zeros(const sh_tensor *t)
{
    int64_t z = 0, ne = sh_tensor_numel(t);
    const float *d = t->data;
    for (int64_t i = 0; i < ne; i++) z += d[i] == 0.0f;
    return z;
}

int sh_prune_report_begin(sh_prune_report *r, const sh_graph *g, const sh_layer *L, int n, sh_error *err)
{
    memset(r, 0, sizeof *r);
    r->layers = calloc((size_t)n + 1, sizeof *r->layers);
    if (!r->layers) return sh_err(err, SH_ENOMEM, "out of memory");
    r->n_layers = n;
    r->params_before = sh_graph_param_count(g);
    r->bytes_before = sh_graph_param_bytes(g);
    for (int i = 0; i < n; i++) {
        sh_prune_layer *pl = &r->layers[i];
        const sh_tensor *w = g->values[L[i].wv].init;
        snprintf(pl->name, sizeof pl->name, "%s", L[i].name);
        snprintf(pl->weight, sizeof pl->weight, "%s", g->values[L[i].wv].name);
        snprintf(pl->op, sizeof pl->op, "%s", L[i].op);
        pl->ndim_before = w->ndim;
        memcpy(pl->shape_before, w->shape, sizeof pl->shape_before);
        pl->params_before = sh_tensor_numel(w) + (L[i].bv >= 0 ? sh_tensor_numel(g->values[L[i].bv].init) : 0);
        pl->zeros_before = count_zeros(w);
        pl->sparsity_before = sh_tensor_numel(w) ? (double)pl->zeros_before / (double)sh_tensor_numel(w) : 0;
        r->weights += sh_tensor_numel(w);
        r->zeros_before += pl->zeros_before;
        /* until end() says otherwise */
        pl->ndim_after = pl->ndim_before;
        memcpy(pl->shape_after, pl->shape_before, sizeof pl->shape_after);
        pl->params_after = pl->params_before;
        pl->zeros_after = pl->zeros_before;
        pl->sparsity_after = pl->sparsity_before;
    }
    return SH_OK;
}

void sh_prune_report_end(sh_prune_report *r, const sh_graph *g)
{
    r->params_after = sh_graph_param_count(g);
    r->bytes_after = sh_graph_param_bytes(g);
    r->zeros_after = 0;
    for (int i = 0; i < r->n_layers; i++) {
        sh_prune_layer *pl = &r->layers[i];
        int k = -1;
        for (int j = 0; j < g->n_nodes && k < 0; j++)
            if (!strcmp(g->nodes[j].name, pl->name)) k = j;
        if (k < 0) continue;
        const sh_node *nd = &g->nodes[k];
        const sh_tensor *w = nd->n_in > 1 && nd->in[1] >= 0 ? g->values[nd->in[1]].init : NULL;
        if (!w || w->fmt != SH_F32) continue;
        const sh_tensor *b = nd->n_in > 2 && nd->in[2] >= 0 ? g->values[nd->in[2]].init : NULL;
        pl->ndim_after = w->ndim;
        memcpy(pl->shape_after, w->shape, sizeof pl->shape_after);
        pl->params_after = sh_tensor_numel(w) + (b && b->fmt == SH_F32 ? sh_tensor_numel(b) : 0);
        pl->zeros_after = count_zeros(w);
        pl->sparsity_after = sh_tensor_numel(w) ? (double)pl->zeros_after / (double)sh_tensor_numel(w) : 0;
        r->zeros_after += pl->zeros_after;
    }
}
