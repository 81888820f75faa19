/* compress.h - internals shared by the compression passes (not public API).
 *
 * A "layer" is a Conv / Gemm / MatMul node whose weight (input 1) is an f32
 * initializer.  Its weight is seen as a matrix [rows = out, cols = in]:
 *   Conv  [Cout, Cin/group, kh, kw]  -> [Cout, Cin/group*kh*kw], out axis 0
 *   Gemm  transB=1 [N, K]            -> [N, K], out axis 0
 *   Gemm  transB=0 [K, N], MatMul B  -> transposed view, out axis 1
 * sh_layer_at gives the flat index of element (r, c) of that view.
 */
#ifndef SH_COMPRESS_H
#define SH_COMPRESS_H
#include "shrink.h"

typedef struct sh_layer {
    int node;            /* node index in the graph */
    int wv, bv;          /* weight value; bias value (-1 if none / not an initializer) */
    const char *name;    /* node name (points into the graph) */
    const char *op;
    int out_axis;        /* output-channel axis of the weight tensor */
    int in_axis;         /* input axis of the weight tensor */
    int64_t rows, cols;  /* [out, in] view */
    int transposed;      /* stored [in, out] */
    int64_t group;       /* Conv groups (1 otherwise) */
} sh_layer;

static inline int64_t sh_layer_at(const sh_layer *l, int64_t r, int64_t c)
{
    return l->transposed ? c * l->rows + r : r * l->cols + c;
}

/* Prunable layers of g in node order; *out malloc'ed (free()). */
int sh_prunable_layers(const sh_graph *g, sh_layer **out, int *n, sh_error *err);

/* sel[i] = 1 for the layers o selects (include / exclude / skip_first /
 * skip_last).  A name in o->include that matches no layer is SH_EINVAL. */
int sh_prune_select(const sh_graph *g, const sh_layer *L, int n, const sh_prune_opts *o, int *sel,
                    sh_error *err);
/* 1 if list (comma-separated) contains a or b. */
int sh_name_in_list(const char *list, const char *a, const char *b);

/* Number pruned of n for ratio (round half to even, as Python's round()). */
int64_t sh_prune_count(double ratio, int64_t n);
/* Validate ratio / threshold / method; SH_EINVAL with a clear message. */
int sh_prune_check_opts(const sh_prune_opts *o, sh_error *err);

/* pruned[i] = 1 for the k indices torch.topk(s, k, largest=False) returns on
 * the CPU (libstdc++ partial_sort when k*64 <= n, else nth_element): the same
 * ties broken the same way.  pruned is zeroed first. */
int sh_select_smallest(const float *s, int64_t n, int64_t k, unsigned char *pruned);

/* Taylor scores: for each layer i, scores[i] (malloc'ed, weight layout)
 * = sum over o->calib_batches batches of |w * dL/dw| with L the mean
 * cross-entropy of the batch (training-mode program on a copy of g). */
int sh_taylor_scores(const sh_graph *g, const sh_layer *L, int n, const sh_prune_opts *o, float **scores,
                     sh_error *err);

/* Report: one row per layer, "before" filled from g. */
int sh_prune_report_begin(sh_prune_report *r, const sh_graph *g, const sh_layer *L, int n, sh_error *err);
/* Fill the "after" fields from the pruned graph (layers found by node name). */
void sh_prune_report_end(sh_prune_report *r, const sh_graph *after);

#endif
