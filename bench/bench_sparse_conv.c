/* bench_sparse_conv.c - batch-1 latency of a 90 %-unstructured-pruned CNN,
 * dense (the pruned f32 model) vs packed (sh_sparsify: sparse Conv and Gemm
 * weights), run by bench/bench_sparse_conv.sh; not part of make test.
 *
 *   bench_sparse_conv [MODEL.onnx] [--ratio R] [--runs N] [--threads T]
 *
 * Without MODEL the built-in "cnn" (random weights) is used: latency does
 * not depend on the weight values, only on where the zeros are.  Prints the
 * per-layer table of sh_sparsify with measure (dense vs sparse time of each
 * Conv / Gemm at batch 1) and the whole model's median latency, dense and
 * packed runs interleaved; then the same for 50 % of the channels removed
 * (sh_prune_channels, L1) vs the unpruned model.  PROFILE=1 adds per-layer
 * tables (each Conv / Gemm alone, BN folded) of the three models.
 */
#include <shrink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(const sh_error *e)
{
    fprintf(stderr, "error: %s\n", e->msg);
    exit(1);
}

/* Median ms of node k (a Conv) of g alone at batch 1, its input shape from
 * gs (g with inferred shapes). */
static double layer_ms(const sh_graph *g, const sh_graph *gs, int k, int threads, int runs)
{
    sh_error e = {0};
    const sh_node *nd = &g->nodes[k];
    const sh_value *xv = &gs->values[nd->in[0]];
    sh_graph *one = sh_graph_new("one");
    int64_t xs[4];
    for (int d = 0; d < xv->ndim; d++) xs[d] = d == 0 ? 1 : xv->shape[d];
    sh_graph_add_input(one, "x", SH_F32, xv->ndim, xs, &e);
    const char *ins[3] = {"x", "W", "b"}, *outs[1] = {"y"};
    int nin = 1;
    for (int i = 1; i < nd->n_in && i < 3; i++)
        if (nd->in[i] >= 0 && g->values[nd->in[i]].init)
            sh_graph_add_init(one, ins[i], sh_tensor_clone(g->values[nd->in[i]].init, &e), &e), nin = i + 1;
    int kk = sh_graph_add_node(one, nd->op, "n", nin, ins, 1, outs, &e);
    for (int a = 0; a < nd->n_attrs; a++) {
        const sh_attr *at = &nd->attrs[a];
        if (at->type == SH_ATTR_INT) sh_node_set_int(one, kk, at->name, at->i);
        else if (at->type == SH_ATTR_STRING) sh_node_set_string(one, kk, at->name, at->s);
        else if (at->type == SH_ATTR_INTS) sh_node_set_ints(one, kk, at->name, at->n, at->ints);
        else if (at->type == SH_ATTR_FLOAT) sh_node_set_float(one, kk, at->name, at->f);
    }
    sh_graph_mark_output(one, "y", &e);
    sh_program *p = NULL;
    sh_run_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.nthreads = threads;
    if (sh_graph_check(one, &e) || sh_program_new(one, &ro, &p, &e)) die(&e);
    sh_tensor *x = sh_tensor_new(SH_F32, xv->ndim, xs, &e);
    for (int64_t i = 0; i < sh_tensor_numel(x); i++) ((float *)x->data)[i] = (float)(i % 13) / 13.0f;
    const sh_tensor *in[1] = {x};
    double *t = malloc(sizeof(double) * (size_t)runs);
    for (int r = -5; r < runs; r++) {
        double t0 = sh_now();
        if (sh_program_run(p, in, 1, &e)) die(&e);
        if (r >= 0) t[r] = sh_now() - t0;
    }
    qsort(t, (size_t)runs, sizeof(double), cmp);
    double m = t[runs / 2] * 1e3;
    free(t);
    sh_tensor_free(x);
    sh_program_free(p);
    sh_graph_free(one);
    return m;
}

/* Per-layer table (Conv / Gemm) of the inference graph of g, batch 1. */
static void profile(const char *title, const sh_graph *g0, int threads, int runs)
{
    sh_error e = {0};
    sh_graph *g = sh_graph_clone(g0, &e), *gs = NULL;
    if (!g || sh_graph_optimize(g, 1, &e) || !(gs = sh_graph_clone(g, &e)) || sh_graph_infer_shapes(gs, NULL, &e)) die(&e);
    printf("# per-layer batch-1 ms, %s (BN folded, one-node programs)\n", title);
    double tot = 0;
    for (int k = 0; k < g->n_nodes; k++) {
        const sh_node *nd = &g->nodes[k];
        if (strcmp(nd->op, "Conv") && strcmp(nd->op, "Gemm")) continue;
        const sh_value *wv = &g->values[nd->in[1]], *yv = &gs->values[nd->out[0]];
        double ms = layer_ms(g, gs, k, threads, runs);
        tot += ms;
        printf("  %-12s %-5s W %-18s out [%lld,%lld,%lld,%lld] %8.4f ms\n", nd->name, nd->op,
               sh_format_get(wv->fmt)->name, (long long)yv->shape[0], (long long)(yv->ndim > 1 ? yv->shape[1] : 1),
               (long long)(yv->ndim > 2 ? yv->shape[2] : 1), (long long)(yv->ndim > 3 ? yv->shape[3] : 1), ms);
    }
    printf("  %-12s %38s %8.4f ms\n", "sum", "", tot);
    sh_graph_free(g), sh_graph_free(gs);
}

/* whole model at batch 1: median ms of a and b, runs interleaved */
static void versus(const char *name, const sh_graph *a, const sh_graph *b, int threads, int runs, const char *what)
{
    sh_error e = {0};
    sh_run_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.nthreads = threads;
    sh_program *pa = NULL, *pb = NULL;
    if (sh_program_new((sh_graph *)a, &ro, &pa, &e) || sh_program_new((sh_graph *)b, &ro, &pb, &e)) die(&e);
    int64_t xs[4] = {1, 1, 28, 28};
    sh_tensor *x = sh_tensor_new(SH_F32, 4, xs, &e);
    for (int i = 0; i < 784; i++) ((float *)x->data)[i] = (float)((i * 37) % 101) / 101.0f;
    const sh_tensor *in[1] = {x};
    double *ta = malloc(sizeof(double) * (size_t)runs), *tb = malloc(sizeof(double) * (size_t)runs);
    for (int r = -10; r < runs; r++) {
        double t0 = sh_now();
        if (sh_program_run(pa, in, 1, &e)) die(&e);
        double t1 = sh_now();
        if (sh_program_run(pb, in, 1, &e)) die(&e);
        double t2 = sh_now();
        if (r >= 0) ta[r] = t1 - t0, tb[r] = t2 - t1;
    }
    qsort(ta, (size_t)runs, sizeof(double), cmp);
    qsort(tb, (size_t)runs, sizeof(double), cmp);
    printf("%-34s %9.4f %9.4f %6.2fx   median ms batch 1, %s, %d thread(s), %d runs, min %.4f / %.4f\n", name,
           ta[runs / 2] * 1e3, tb[runs / 2] * 1e3, tb[runs / 2] / ta[runs / 2], what, threads, runs, ta[0] * 1e3,
           tb[0] * 1e3);
    free(ta), free(tb);
    sh_tensor_free(x);
    sh_program_free(pa), sh_program_free(pb);
}

int main(int argc, char **argv)
{
    const char *model = NULL;
    double ratio = 0.9;
    int runs = 201, threads = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ratio") && i + 1 < argc) ratio = atof(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else model = argv[i];
    }
    if (runs < 1) runs = 1;
    sh_error e = {0};
    sh_graph *g = NULL, *p = NULL, *s = NULL;
    if (model ? sh_model_load(model, &g, &e) : sh_model_build("cnn", 1, &g, &e)) die(&e);
    sh_prune_opts po;
    sh_prune_opts_default(&po);
    po.ratio = ratio;
    if (sh_prune(g, &po, &p, NULL, &e)) die(&e);
    sh_sparsify_opts so;
    sh_sparsify_opts_default(&so);
    so.measure = 1, so.runs = 31, so.nthreads = threads;
    sh_sparsify_report rep;
    if (sh_sparsify(p, &so, &s, &rep, &e)) die(&e);
    printf("# %s pruned %.0f %% (per layer, L1), %d thread(s), load:", model ? model : "cnn (built-in)", ratio * 100,
           threads);
    fflush(stdout);
    if (system("cut -d' ' -f1-3 /proc/loadavg")) printf("\n");
    printf("%-12s %-10s %8s %8s %10s %10s %7s  %s\n", "layer", "format", "sparsity", "rows", "dense_ms", "sparse_ms",
           "ratio", "note");
    for (int i = 0; i < rep.n_layers; i++) {
        const sh_sparsify_layer *L = &rep.layers[i];
        printf("%-12s %-10s %8.3f %8lld %10.4f %10.4f %6.2fx  %s\n", L->name, sh_format_get(L->fmt)->name, L->sparsity,
               (long long)L->rows, L->dense_ms, L->sparse_ms, L->sparse_ms > 0 ? L->dense_ms / L->sparse_ms : 0,
               L->note);
    }
    printf("weights %lld -> %lld bytes, %d layers packed\n", (long long)rep.bytes_before, (long long)rep.bytes_after,
           rep.packed);
    versus("cnn_b1_unstructured90_packed", s, p, threads, runs, "packed 90 %-sparse vs the same pruned model dense");
    /* structured: 50 % of the channels removed (L1), vs the unpruned model */
    sh_graph *c = NULL;
    sh_prune_opts co;
    sh_prune_opts_default(&co);
    co.ratio = 0.5;
    if (sh_prune_channels(g, &co, &c, NULL, &e)) die(&e);
    versus("cnn_b1_channels50", c, g, threads, runs, "50 % channels removed vs the unpruned model");
    if (getenv("PROFILE")) {
        profile("unpruned", g, threads, runs);
        profile("50 % channels removed", c, threads, runs);
        profile("90 % unstructured, packed", s, threads, runs);
    }
    sh_graph_free(c);
    sh_sparsify_report_free(&rep);
    sh_graph_free(g), sh_graph_free(p), sh_graph_free(s);
    return 0;
}
