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
#include "core/quant_formats.h"

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

/* Tokens per row for text data fed to g: seq_len when > 0, else the fixed
 * length of g's token input (an ONNX export with a static shape [B, T]),
 * else dflt.  sh_token_batch: g's fixed batch of its token input (0: any). */
int64_t sh_token_len(const sh_graph *g, int64_t seq_len, int64_t dflt);
int64_t sh_token_batch(const sh_graph *g);

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

/* ---- calibration statistics (src/compress/hessian.c) ----------------- */

/* Calibration input: images (kind 1: the first `samples` images, batches of
 * `batch`) or tokens (kind 2: `samples` rows of seq_len consecutive tokens of
 * the token stream, batches of `batch` rows, each run at position 0). */
typedef struct sh_calib_cfg {
    const sh_dataset *calib;
    int samples;     /* images (0: 256) or text rows (0: 32) */
    int batch;       /* items per run (0: 32 images / 8 rows) */
    int seq_len;     /* text: tokens per row (0: 64) */
    int nthreads;
    int want_h;      /* accumulate H (k*k); otherwise only the vectors */
} sh_calib_cfg;

/* What one layer sees: the columns of its [out, in] view (Gemm / MatMul: the
 * rows of its [.., K] input; Conv: im2col columns of Cin/group*kh*kw values,
 * one per output position; grouped convs pool their groups). */
typedef struct sh_layer_stats {
    int64_t k;         /* = layer cols */
    int64_t n;         /* input rows accumulated */
    double *H;         /* k*k, 2/n sum x x^T (NULL unless want_h) */
    double *mean;      /* k: mean of x (bias correction) */
    double *mean_abs;  /* k: mean |x| (AWQ) */
    double *l2;        /* k: ||x||_2 over all n rows (Wanda) */
    double *max_abs;   /* k: max |x| (SmoothQuant) */
} sh_layer_stats;
void sh_layer_stats_free(sh_layer_stats *s); /* frees the arrays, not s */

/* Statistics of every layer L[0..n) of g (f32, run as is: no_optimize,
 * keep_values) over the calibration data: st[i] for L[i]. */
int sh_calib_stats(const sh_graph *g, const sh_layer *L, int n, const sh_calib_cfg *c, sh_layer_stats *st,
                   sh_error *err);

/* Sequential mode (GPTQ / SparseGPT): a working copy of g is run; layers are
 * visited in order, layers that read the same input value (q/k/v, w1/w3)
 * together, and fn(ctx, work, &L[i], i, &stats) is called for each with the
 * statistics gathered after the earlier layers were changed by fn (fn
 * changes work's f32 weight of L[i] in place, e.g. to its dequantized
 * values).  Node / value indices of L are valid in work. */
typedef int (*sh_layer_fn)(void *ctx, sh_graph *work, const sh_layer *l, int i, const sh_layer_stats *st,
                           sh_error *err);
int sh_calib_sequential(const sh_graph *g, const sh_layer *L, int n, const sh_calib_cfg *c, sh_layer_fn fn,
                        void *ctx, sh_error *err);

/* Dense symmetric helpers (row-major double).  sh_chol: lower Cholesky in
 * place (upper triangle zeroed); SH_EINVAL if A is not positive definite.
 * sh_hinv_chol: H [k,k] -> U (upper, H^-1 = U^T U) after dead columns
 * (diag 0: diag set to 1) and damping damp * mean(diag) on the diagonal, as
 * GPTQ needs; dead[j] (may be NULL) = 1 for dead columns. */
int sh_chol(double *A, int64_t n);
int sh_hinv_chol(const double *H, int64_t k, double damp, double *U, unsigned char *dead, sh_error *err);
/* Inverse of a positive definite A [n,n] (with damping as above) into Ai. */
int sh_spd_inverse(const double *A, int64_t n, double damp, double *Ai, sh_error *err);

/* ---- GPTQ / round-to-nearest of one weight matrix (src/compress/gptq.c) ---- */

/* W [rows, cols] (the layer's [out, in] view, row-major; cols a multiple of
 * group) quantized in base format f (q4_0, q4_1, q8_0, q3_0, q2_1, log4)
 * with one sh_qparams per row and group of `group` columns (the RTN rule of
 * the format on the group's values when the group is reached).  H NULL:
 * round to nearest.  Otherwise GPTQ (Frantar et al. 2022: columns in order,
 * lazy batch updates in blocks of `block` (0: 128) columns, the error of
 * each column spread over the later ones with the upper Cholesky factor of
 * (H + damp * mean(diag H) I)^-1; dead columns (diag 0) quantize zeros).
 * Out: Q [rows, cols] dequantized values, codes [rows, cols] (as sh_qvalue),
 * params [rows, cols / group].  group 0: per tensor, one params[0] chosen
 * by the RTN rule over all of W. */
int sh_gptq_matrix(const float *W, int64_t rows, int64_t cols, const double *H, sh_format f, int64_t group,
                   double damp, int block, float *Q, uint8_t *codes, sh_qparams *params, sh_error *err);

/* ---- one-shot calibrated pruning (wanda.c, sparsegpt.c) -------------- */

/* sh_prune for SH_PRUNE_WANDA / SH_PRUNE_SPARSEGPT (sequential over layers
 * with sh_calib_sequential). */
int sh_prune_oneshot(const sh_graph *g, const sh_prune_opts *o, sh_graph **out, sh_prune_report *rep,
                     sh_error *err);
/* One layer, w in l's weight layout (sh_layer_at).  Unstructured: ratio of
 * each row (Wanda: floor(ratio * cols) per output row) / of each 128-column
 * block (SparseGPT); m > 0: keep the n best of every m along the input.
 * Wanda: xnorm[j] = ||x_j||_2.  SparseGPT: H [cols, cols] (2/n sum x x^T). */
int sh_wanda_layer(float *w, const sh_layer *l, const double *xnorm, double ratio, int n, int m, sh_error *err);
int sh_sparsegpt_layer(float *w, const sh_layer *l, const double *H, double ratio, int n, int m, int blocksize,
                       double damp, sh_error *err);

/* ---- AWQ (src/compress/awq.c) ---------------------------------------------- */

/* Activation-aware scaling of layers whose input comes straight from an
 * RMSNorm / LayerNorm (read only by those layers): per input channel
 * s = mean|x|^alpha (alpha searched on a grid to minimise the output error
 * tr(dW H dW^T) of the quantized layers, dW = W - Q(W s) / s), W <- W s,
 * norm weight (and bias) <- / s.  g changes in place; fmt[i] / group[i] (0:
 * per tensor/channel) are the formats layer i will get (SH_F32: not
 * quantized), notes[i] says what was done or why not. */
/* The RMSNorm / LayerNormalization (last axis) node producing value v,
 * whose f32 weight (and bias) of K values only it reads, so a per-channel
 * scale of its output can be folded into them (AWQ, SmoothQuant); -1 and
 * *why otherwise. */
int sh_foldable_norm(const sh_graph *g, int v, int64_t K, const char **why);
/* SmoothQuant (smoothquant.c) on g in place, before int8 calibration: for
 * every norm whose output only layers with qok[node] read (Gemm, transB=1),
 * s_c = max|x_c|^alpha / max|W[:,c]|^(1-alpha) over the calibration data
 * and those layers' weights; W[:,c] *= s_c and the norm's weight (and bias)
 * /= s_c, so the f32 function is unchanged and the int8 activation range
 * shrinks.  *n_norms: norms smoothed. */
int sh_smooth_apply(sh_graph *g, const int *qok, double alpha, const sh_quant_opts *o, int *n_norms, sh_error *err);
int sh_awq_apply(sh_graph *g, const sh_layer *L, int n, const sh_format *fmt, const int64_t *group,
                 const sh_quant_opts *o, char (*notes)[160], sh_error *err);

#endif
