/*
 * shrink.h - the one public header of libshrink.
 *
 * libshrink makes neural networks smaller and faster (pruning, quantization,
 * distillation, low-rank, clustering) and runs them on CPUs.  Everything a
 * program needs is declared here: tensors and the storage-format table, the
 * graph IR, the runtime (Program), the training engine, model I/O (ONNX,
 * llama2.c), datasets and evaluation.
 *
 * Conventions (SQLite-like):
 *  - Functions that can fail return an int status: SH_OK (0) on success or a
 *    negative SH_E* code, and fill the caller's sh_error with one line that
 *    names the file, node, op and shapes involved.  The library never prints
 *    and never calls exit().
 *  - The library holds no global mutable state; everything lives in the
 *    objects the caller creates and frees.
 *  - Objects returned through an out-pointer are owned by the caller and are
 *    released with the matching *_free function (which accepts NULL).
 */
#ifndef SHRINK_H
#define SHRINK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHRINK_VERSION "0.1.0"

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

enum {
    SH_OK = 0,
    SH_EINVAL = -1,       /* bad argument or option value                     */
    SH_EIO = -2,          /* file cannot be opened / read / written           */
    SH_EFORMAT = -3,      /* corrupt or truncated file                         */
    SH_EUNSUPPORTED = -4, /* unsupported op, attribute or format              */
    SH_ESHAPE = -5,       /* shapes do not agree                               */
    SH_ENOMEM = -6,       /* allocation failed                                 */
    SH_EINTERNAL = -7     /* a bug in shrink                                   */
};

typedef struct sh_error {
    int code;        /* last SH_E* code, SH_OK if none */
    char msg[1024];  /* one line, no trailing newline   */
} sh_error;

/* Set err (may be NULL) to code and a printf-formatted message; returns code.
 * If err already holds a message, the new one is prefixed to it
 * ("outer: inner") only when sh_error_wrap is used. */
int sh_err(sh_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefix context to an existing error message; returns err->code. */
int sh_error_wrap(sh_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Name of an error code ("invalid argument", ...). */
const char *sh_strerror(int code);

/* ------------------------------------------------------------------------ */
/* Storage formats: the extension point.  One row per format.                */
/* ------------------------------------------------------------------------ */

typedef enum sh_format {
    SH_F32 = 0,
    SH_F16,
    SH_BF16,
    SH_I8,
    SH_U8,
    SH_I32,
    SH_I64,
    SH_BOOL,
    SH_CSR,      /* sparse [N,K]: CSR rows, u16/u32 column indices, f32 values */
    SH_BCSR,     /* sparse [N,K]: CSR of 1 x bw blocks along K (bw 2/4/8/16) */
    SH_NM,       /* sparse [N,K]: N:M semi-structured (2:4, 4:8): 2-bit codes
                    (2:4) or a bitmap (other n:m) + f32 values */
    /* Grouped quantized formats, 32 values per group (src/core/quant_formats.h) */
    SH_Q4_0,     /* "q4_0": int4 symmetric, f16 scale (ggml Q4_0 layout) */
    SH_Q4_1,     /* "q4_1": int4 asymmetric, f16 scale + min (ggml Q4_1) */
    SH_Q8_0,     /* "q8_0": int8 symmetric, f16 scale (ggml Q8_0); the activation
                    format ("vec_dot_type") of the low-bit kernels */
    SH_Q3_0,     /* "q3_0": int3 symmetric, f16 scale */
    SH_Q2_1,     /* "q2_1": int2 asymmetric, f16 scale + min */
    SH_LOG4,     /* "log4": 4-bit power of two (sign + exponent), f16 scale */
    /* the same with one scale (and min) per group of 64 / 128 values along K:
     * "q4_0_g64" ... (quant_formats.h); the kernels run them as 32-blocks */
    SH_Q4_0_G64, SH_Q4_1_G64, SH_Q8_0_G64, SH_Q3_0_G64, SH_Q2_1_G64, SH_LOG4_G64,
    SH_Q4_0_G128, SH_Q4_1_G128, SH_Q8_0_G128, SH_Q3_0_G128, SH_Q2_1_G128, SH_LOG4_G128,
    /* one f32 scale (and min) per output row ("q4_0_ch" ...) or for the whole
     * tensor ("q4_0_t" ...): packed whole-tensor buffers [N, K] (header, f32
     * scales, codes at their real size; quant_formats.h sh_qrows_*) */
    SH_Q4_0_CH, SH_Q4_1_CH, SH_Q8_0_CH, SH_Q3_0_CH, SH_Q2_1_CH, SH_LOG4_CH,
    SH_Q4_0_T, SH_Q4_1_T, SH_Q8_0_T, SH_Q3_0_T, SH_Q2_1_T, SH_LOG4_T,
    SH_FORMAT_COUNT
} sh_format;

/* Traits of a storage format.  Elements are stored in blocks of block_elems
 * elements taking block_bytes bytes each (1 and sizeof(T) for plain types). */
typedef struct sh_format_traits {
    const char *name;      /* "f32", "f16", ... */
    int block_elems;
    int block_bytes;
    int is_float;          /* 1 for formats that hold real numbers natively */
    /* Convert n elements (n a multiple of block_elems). */
    void (*to_f32)(const void *src, float *dst, int64_t n);
    void (*from_f32)(const float *src, void *dst, int64_t n);
    /* 1 for packed whole-tensor formats (sparse csr/bcsr/nm, and the
     * quantized _ch / _t rows): data is one self-describing buffer (header
     * + arrays) whose size depends on the values or the shape, block_elems =
     * block_bytes = 0, sh_format_bytes gives 0 (nbytes is the buffer's
     * size), to_f32 unpacks the first n elements of the whole matrix,
     * from_f32 is NULL: build them with sh_sparse_pack / sh_qrows_quantize.
     * A packed format with is_quantized set is a _ch / _t row. */
    int packed;
    /* 1 for the grouped quantized formats (q4_0 ... log4): block_elems = 32
     * values per group; to_f32 / from_f32 accept any n (a trailing partial
     * block is zero-padded, as sh_format_bytes rounds up). */
    int is_quantized;
} sh_format_traits;

/* Traits of format f, or NULL if f is out of range. */
const sh_format_traits *sh_format_get(sh_format f);
/* Format by name ("f32"...), or -1. */
int sh_format_from_name(const char *name);
/* Bytes needed for n elements of format f (0 for packed formats). */
size_t sh_format_bytes(sh_format f, int64_t n);

/* Sparse weights (src/core/sparse.c, kernels in src/ops/spmm*.c).
 * A sparse tensor is a Linear weight W [N out, K in] (a Conv weight viewed as
 * [Cout, Cin*kh*kw]) with fmt SH_CSR / SH_BCSR / SH_NM, shape [N, K] and data
 * one packed buffer (header with dims and counts, then the arrays); nbytes is
 * its real storage size. */
typedef struct sh_sparse_opts {
    int block;      /* bcsr block width along K: 2, 4, 8 or 16 (0: 4) */
    int n, m;       /* nm: keep n of every m columns (0: 2:4); m in 2,4,8,16 */
    int enforce;    /* nm: keep the n largest |w| of each group; otherwise a
                       group with more than n non-zeros is an SH_EINVAL error */
    int idx_bytes;  /* csr/bcsr: 0 (u16 when the columns fit), 2 or 4 */
} sh_sparse_opts;

typedef struct sh_sparse_info {
    sh_format fmt;
    int64_t rows, cols;
    int64_t stored;     /* values stored (explicit zeros in blocks / groups too) */
    int64_t nonzero;    /* stored values that are not 0 */
    int block, n, m, idx_bytes;
    size_t bytes;       /* whole packed buffer */
} sh_sparse_info;

/* Sparse functions: after the tensor section below. */

/* ------------------------------------------------------------------------ */
/* Tensors                                                                   */
/* ------------------------------------------------------------------------ */

#define SH_MAX_DIMS 8

/* A dense, contiguous (row-major) tensor. */
typedef struct sh_tensor {
    sh_format fmt;
    int ndim;
    int64_t shape[SH_MAX_DIMS];
    void *data;   /* NULL for a shape-only tensor */
    size_t nbytes;
    int owns;     /* data is freed by sh_tensor_free */
} sh_tensor;

/* Allocate a zero-filled tensor. */
sh_tensor *sh_tensor_new(sh_format fmt, int ndim, const int64_t *shape, sh_error *err);
/* A tensor that views caller memory (not freed by sh_tensor_free). */
sh_tensor *sh_tensor_view(sh_format fmt, int ndim, const int64_t *shape, void *data, sh_error *err);
sh_tensor *sh_tensor_clone(const sh_tensor *t, sh_error *err);
void sh_tensor_free(sh_tensor *t);
int64_t sh_tensor_numel(const sh_tensor *t);
int64_t sh_shape_numel(int ndim, const int64_t *shape);
/* Reallocate data for a new shape/format if needed (owned tensors only). */
int sh_tensor_resize(sh_tensor *t, sh_format fmt, int ndim, const int64_t *shape, sh_error *err);
/* Format "[1,3,28,28]" into buf; returns buf. */
char *sh_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);
static inline float *sh_f32(const sh_tensor *t) { return (float *)t->data; }

/* Sparse weights (formats SH_CSR, SH_BCSR, SH_NM; see the formats section). */
/* 1 if f is one of the sparse formats. */
int sh_format_is_sparse(sh_format f);
/* Pack a dense row-major w [rows, cols] into fmt (zeros are dropped; nm keeps
 * the n largest magnitudes per group when o->enforce).  o may be NULL. */
int sh_sparse_pack(sh_format fmt, const float *w, int64_t rows, int64_t cols,
                   const sh_sparse_opts *o, sh_tensor **out, sh_error *err);
/* Unpack to dense row-major w [rows, cols]. */
int sh_sparse_unpack(const sh_tensor *t, float *w, sh_error *err);
/* Check a packed buffer (e.g. read from a file): header, sizes, offsets,
 * monotone row pointers, every index in range, N:M counts.  SH_EFORMAT with
 * the reason when it is corrupt; *fmt (may be NULL) gets its format. */
int sh_sparse_validate(const void *data, size_t nbytes, sh_format *fmt, sh_error *err);
/* Validate data and wrap it in a tensor [rows, cols] (takes ownership of
 * data, which must come from malloc, when owns; otherwise a view). */
int sh_sparse_wrap(void *data, size_t nbytes, int owns, sh_tensor **out, sh_error *err);
int sh_sparse_get_info(const sh_tensor *t, sh_sparse_info *info, sh_error *err);

/* Y[B, N] = X[B, K] * W^T (+ bias[N]) for a sparse W [N, K]; B >= 1 (fast
 * paths tuned for B = 1 and B <= 64).  path: 0 best for this CPU, 1 portable
 * C, 2 AVX2, 3 AVX-512 (SH_EUNSUPPORTED when the CPU lacks it).  nthreads 0:
 * OpenMP default.  ws: 64-byte aligned workspace of at least
 * sh_spmm_workspace(w, B, nthreads) bytes (same nthreads), or NULL to
 * allocate one per call. */
size_t sh_spmm_workspace(const sh_tensor *w, int64_t B, int nthreads);
int sh_spmm(const sh_tensor *w, const float *x, int64_t B, const float *bias, float *y,
            int nthreads, int path, void *ws, sh_error *err);

/* ------------------------------------------------------------------------ */
/* Graph IR                                                                  */
/* ------------------------------------------------------------------------ */

typedef enum sh_attr_type {
    SH_ATTR_INT = 1,
    SH_ATTR_FLOAT,
    SH_ATTR_STRING,
    SH_ATTR_INTS,
    SH_ATTR_FLOATS,
    SH_ATTR_TENSOR
} sh_attr_type;

typedef struct sh_attr {
    char *name;
    sh_attr_type type;
    int64_t i;
    float f;
    char *s;
    int64_t *ints;
    float *floats;
    int n;          /* number of ints / floats */
    sh_tensor *t;
} sh_attr;

/* A value: a graph input, an initializer (weight), or a node output.
 * Dimensions that are unknown until run time (batch) are -1. */
typedef struct sh_value {
    char *name;
    sh_format fmt;
    int ndim;                      /* -1 if rank unknown */
    int64_t shape[SH_MAX_DIMS];
    sh_tensor *init;               /* initializer data, or NULL */
    int producer;                  /* node index, or -1 */
} sh_value;

typedef struct sh_node {
    char *name;
    char *op;        /* ONNX op type, e.g. "Conv"; shrink ops: "RMSNorm"... */
    char *domain;    /* "" for ONNX, "com.shrink" for shrink's own ops */
    int n_in, n_out;
    int *in;         /* value indices; -1 for an omitted optional input */
    int *out;
    int n_attrs;
    sh_attr *attrs;
} sh_node;

typedef struct sh_graph {
    char *name;
    int n_values, cap_values;
    sh_value *values;
    int n_nodes, cap_nodes;
    sh_node *nodes;          /* topologically ordered after sh_graph_check */
    int n_inputs, n_outputs;
    int *inputs;             /* value indices of graph inputs (not initializers) */
    int *outputs;
    int64_t opset;           /* ONNX opset of the default domain */
    /* free-form metadata (key=value) kept through I/O, e.g. model kind */
    int n_meta;
    char **meta_keys, **meta_vals;
} sh_graph;

sh_graph *sh_graph_new(const char *name);
void sh_graph_free(sh_graph *g);
sh_graph *sh_graph_clone(const sh_graph *g, sh_error *err);
/* Find a value by name; -1 if absent. */
int sh_graph_find(const sh_graph *g, const char *name);
/* Add a value (fails if the name exists).  Returns index or negative code. */
int sh_graph_add_value(sh_graph *g, const char *name, sh_format fmt, int ndim,
                       const int64_t *shape, sh_error *err);
/* Add an initializer; the graph takes ownership of t. */
int sh_graph_add_init(sh_graph *g, const char *name, sh_tensor *t, sh_error *err);
int sh_graph_add_input(sh_graph *g, const char *name, sh_format fmt, int ndim,
                       const int64_t *shape, sh_error *err);
int sh_graph_mark_output(sh_graph *g, const char *name, sh_error *err);
/* Add a node.  Input names must exist (or be "" for omitted optional inputs);
 * output values are created.  Returns node index or a negative code. */
int sh_graph_add_node(sh_graph *g, const char *op, const char *name, int n_in,
                      const char *const *inputs, int n_out,
                      const char *const *outputs, sh_error *err);
/* Attributes on node k (copied). */
int sh_node_set_int(sh_graph *g, int k, const char *name, int64_t v);
int sh_node_set_float(sh_graph *g, int k, const char *name, float v);
int sh_node_set_string(sh_graph *g, int k, const char *name, const char *v);
int sh_node_set_ints(sh_graph *g, int k, const char *name, int n, const int64_t *v);
int sh_node_set_floats(sh_graph *g, int k, const char *name, int n, const float *v);
/* Lookup attributes (NULL / default if absent). */
const sh_attr *sh_node_attr(const sh_node *n, const char *name);
int64_t sh_attr_int(const sh_node *n, const char *name, int64_t def);
float sh_attr_float(const sh_node *n, const char *name, float def);
const char *sh_attr_string(const sh_node *n, const char *name, const char *def);
/* Number of ints (sets *v to the array, or NULL); -1 if absent. */
int sh_attr_ints(const sh_node *n, const char *name, const int64_t **v);
void sh_graph_set_meta(sh_graph *g, const char *key, const char *val);
const char *sh_graph_get_meta(const sh_graph *g, const char *key);

/* Sort nodes topologically, check every input is defined, every op is known.
 * Unknown ops: one error listing every unsupported op and its nodes. */
int sh_graph_check(sh_graph *g, sh_error *err);
/* Shape inference with all graph-input dims known (-1 dims replaced by the
 * given concrete input shapes; pass NULL to infer with the declared shapes). */
int sh_graph_infer_shapes(sh_graph *g, const sh_tensor *const *inputs, sh_error *err);
/* Count of parameters (elements of float initializers) and their bytes. */
int64_t sh_graph_param_count(const sh_graph *g);
int64_t sh_graph_param_bytes(const sh_graph *g);
/* 1 if g takes tokens: one graph input of rank 2 in i32 / i64 ([B, T]);
 * *batch and *len get its declared dims, 0 where dynamic (an ONNX export
 * with a static shape has both).  0 (and both 0) otherwise. */
int sh_graph_token_dims(const sh_graph *g, int64_t *batch, int64_t *len);

/* Inference rewrites, in place (src/graph/optimize.c).  Each returns SH_OK
 * (also when nothing matched) and leaves graph inputs, outputs and their
 * names as they were.
 * fold_batchnorm: a BatchNormalization (inference: no training_mode, one
 *   output) whose input comes from a Conv or Gemm (2-D output, transA=0) read
 *   by nothing else, with f32 initializer weights, bias and BN parameters, is
 *   folded into that producer's weight and bias (a bias is added when absent;
 *   a weight shared with other nodes is copied first).
 * fuse_activations: Relu after a Conv or Gemm read by nothing else becomes
 *   that node's attribute activation="Relu" (a shrink extension that ONNX
 *   Runtime does not read).
 * remove_identities: Identity, and Dropout without training_mode and with
 *   an unused mask, are removed.
 * optimize: level 0 nothing; level >= 1 all of the above. */
int sh_graph_fold_batchnorm(sh_graph *g, sh_error *err);
int sh_graph_fuse_activations(sh_graph *g, sh_error *err);
int sh_graph_remove_identities(sh_graph *g, sh_error *err);
int sh_graph_optimize(sh_graph *g, int level, sh_error *err);

/* ------------------------------------------------------------------------ */
/* Runtime                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct sh_program sh_program;

typedef struct sh_run_opts {
    int nthreads;       /* 0: all cores (OpenMP; on a machine shared with other
                           busy processes OMP_WAIT_POLICY=passive can help
                           batched runs, while the default spinning gives the
                           best batch-1 latency) */
    int training;       /* keep activations, BN batch stats, dropout active */
    uint64_t seed;      /* dropout and other randomness */
    int no_optimize;    /* inference: run g as it is (no sh_graph_optimize) */
    int keep_values;    /* inference: every value keeps its own buffer, so
                           sh_program_value reads any intermediate after a
                           run (calibration, GPTQ statistics); combine with
                           no_optimize to read values by g's own names */
    int profile;        /* time every node of every run (sh_program_profile) */
} sh_run_opts;

/* Plan graph g (must outlive the program) into a program.  Shapes are
 * re-planned automatically when input shapes change.  Inference programs
 * (training = 0, no_optimize = 0) run an optimized copy of g (see
 * sh_graph_optimize; g itself is not changed): it shares g's weight memory
 * except for weights folded with BatchNorm, which are re-derived at a run
 * when g's BatchNorm parameters or (a sample of) the folded weights changed;
 * after changing only a few weight elements call sh_program_sync_weights.
 * sh_program_graph returns the graph that runs (the copy, if any). */
int sh_program_new(sh_graph *g, const sh_run_opts *opts, sh_program **out, sh_error *err);
void sh_program_free(sh_program *p);
/* Run with inputs in graph-input order.  Output tensors are owned by the
 * program and stay valid until the next run or free. */
int sh_program_run(sh_program *p, const sh_tensor *const *inputs, int n_inputs, sh_error *err);
int sh_program_num_outputs(const sh_program *p);
sh_tensor *sh_program_output(sh_program *p, int i);
/* Any value by name after a run (NULL if not kept by the memory plan; in
 * training mode and with keep_values all values are kept). */
sh_tensor *sh_program_value(sh_program *p, const char *name);
/* Sequence position of the first token of the next run (transformers with a
 * KV cache).  0 resets the cache. */
void sh_program_set_pos(sh_program *p, int64_t pos);
/* Bytes of activation memory in the current plan, and without reuse. */
size_t sh_program_arena_bytes(const sh_program *p, size_t *unplanned);

/* Reverse-mode gradients of the last run (training mode).  douts: gradient of
 * the loss w.r.t. each graph output (NULL entries mean zero). Gradients of
 * trainable initializers are accumulated (+=) into the program's gradient
 * buffers, read with sh_program_grad and cleared with sh_program_zero_grad. */
int sh_program_backward(sh_program *p, const sh_tensor *const *douts, int n, sh_error *err);
sh_tensor *sh_program_grad(sh_program *p, const char *value_name);
void sh_program_zero_grad(sh_program *p);
/* Request the gradient of a graph input (or a float initializer that is not a
 * trainable parameter) too: after sh_program_backward it is accumulated into
 * a buffer read with sh_program_grad and cleared by sh_program_zero_grad.
 * Training-mode programs only; call before or between runs. */
int sh_program_require_grad(sh_program *p, const char *value_name, sh_error *err);
/* Trainable parameters of a training-mode program: float initializers that
 * feed an op's weight/bias inputs.  For i in [0, n): the graph value index,
 * the parameter tensor (a view of the graph's initializer, so updates change
 * the graph) and its gradient buffer. */
int sh_program_num_params(const sh_program *p);
int sh_program_param(sh_program *p, int i, int *value, sh_tensor **data, sh_tensor **grad);
/* The graph the program runs. */
sh_graph *sh_program_graph(sh_program *p);
/* With opts.profile: the wall time spent in node i of sh_program_graph(p)
 * (seconds, summed over runs) and the number of runs that executed it, since
 * the program was made or sh_program_profile_reset.  Returns SH_EINVAL when
 * the program does not profile or i is out of range. */
int sh_program_profile(const sh_program *p, int i, double *seconds, int64_t *calls);
void sh_program_profile_reset(sh_program *p);
/* Re-derive an inference program's folded weights from its source graph
 * (after the caller changed weights in place). */
int sh_program_sync_weights(sh_program *p, sh_error *err);

/* ------------------------------------------------------------------------ */
/* I/O                                                                       */
/* ------------------------------------------------------------------------ */

/* ONNX (protobuf).  Initializers inline or as Constant nodes both load. */
int sh_onnx_load(const char *path, sh_graph **out, sh_error *err);
int sh_onnx_load_mem(const void *buf, size_t n, const char *what, sh_graph **out, sh_error *err);
/* Written atomically: temporary file, then rename. */
int sh_onnx_save(const sh_graph *g, const char *path, sh_error *err);
/* One TensorProto file (.pb), as in the ONNX backend test data. */
int sh_tensorproto_load(const char *path, sh_tensor **out, char **name, sh_error *err);
int sh_tensorproto_save(const sh_tensor *t, const char *name, const char *path, sh_error *err);

/* Static int8 graphs as QDQ ONNX (src/io/onnx_qdq.c).  Both return a new
 * graph (g is not changed).
 * sh_graph_to_qdq: QLinearConv / QGemm / QLinearMatMul / QLinearAdd /
 *   QLinearGlobalAveragePool become DequantizeLinear -> Conv / Gemm / MatMul /
 *   Add / GlobalAveragePool (-> Relu for a fused activation) ->
 *   QuantizeLinear with the same scales and zero points (an int32 bias:
 *   DequantizeLinear with scale x_scale * w_scale, axis 0), the form ONNX
 *   Runtime reads and fuses back into its int8 kernels.  Opset >= 13.
 *   Weight-only Gemm / Conv weights (any low-bit format of
 *   sh_quantize_weights) become an int8 initializer of the block codes
 *   [N*Kp/32, 32] read by a per-axis DequantizeLinear (one f32 scale per
 *   32-block; + the block minimum for q4_1 / q2_1) -> Reshape -> Slice to
 *   weight_k -> Reshape to the Conv kernel: the same f32 weights shrink's
 *   kernels dequantize, in a file ORT loads (it runs them as f32).  A Gemm
 *   whose A is not known to be 2-D becomes MatMul(A, Transpose(W)) + Add.
 * sh_graph_from_qdq: the reverse fusion of those patterns (DequantizeLinear
 *   inputs with constant scales, a QuantizeLinear as the only consumer,
 *   optionally through a Relu; a Gemm with f32 output becomes an f32-output
 *   QGemm), so QDQ models from ORT's or PyTorch's quantizers run on shrink's
 *   int8 kernels; MaxPool / Flatten / Reshape / Identity between a
 *   DequantizeLinear and a QuantizeLinear of the same parameters run on the
 *   integers.  Unmatched Q/DQ nodes stay (shrink runs them as they are). */
int sh_graph_to_qdq(const sh_graph *g, sh_graph **out, sh_error *err);
int sh_graph_from_qdq(const sh_graph *g, sh_graph **out, sh_error *err);

/* llama2.c checkpoints (version 0 header) as a graph of the same IR.
 * The graph: input "tokens" (i64 [B,T]) -> Gather(tok_embeddings.weight) ->
 * per layer RMSNorm, Gemm wq/wk/wv (transB=1, weights [out,in]), RoPE,
 * Attention (KV cache in inference mode), Gemm wo, Add; RMSNorm, Gemm w1/w3,
 * SiluMul, Gemm w2, Add -> RMSNorm -> Gemm(output.weight, or the shared
 * tok_embeddings.weight) -> output "logits" [B,T,vocab].  Weight names are
 * PyTorch's (layers.{l}.attention.wq.weight ...).  The config is kept in graph
 * meta ("model_kind" = "llama", "llama.dim", ...). */
typedef struct sh_llama_config {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int shared_classifier;
} sh_llama_config;
/* Truncated files, nonsensical headers and missing files give one SH_EFORMAT /
 * SH_EIO error naming the file (and the tensor that is cut). */
int sh_llama2c_load(const char *path, sh_graph **out, sh_error *err);
/* Written atomically; load -> save reproduces the original file byte for byte
 * (the unused legacy RoPE tables are restored from meta "llama.rope_fix"). */
int sh_llama2c_save(const sh_graph *g, const char *path, sh_error *err);
/* Build a Llama graph with random (seeded) weights: N(0, 0.02), wo and w2
 * scaled by 1/sqrt(2 n_layers), norms 1. */
int sh_llama_build(const sh_llama_config *cfg, uint64_t seed, sh_graph **out, sh_error *err);
/* Config of a Llama graph: from weight shapes and Attention attributes, the
 * rest (seq_len) from meta (default 512). */
int sh_llama_config_of(const sh_graph *g, sh_llama_config *cfg, sh_error *err);

/* Load any supported model by extension / magic (.onnx, .bin). */
int sh_model_load(const char *path, sh_graph **out, sh_error *err);
int sh_model_save(const sh_graph *g, const char *path, sh_error *err);

/* Tokenizer (llama2.c tok*.bin format) */
typedef struct sh_tokenizer sh_tokenizer;
int sh_tokenizer_load(const char *path, int vocab_size, sh_tokenizer **out, sh_error *err);
void sh_tokenizer_free(sh_tokenizer *t);
/* Encode text; bos/eos add those tokens.  *tokens is malloc'ed. */
int sh_tokenizer_encode(const sh_tokenizer *t, const char *text, int bos, int eos,
                        int **tokens, int *n, sh_error *err);
/* Piece for token given the previous token (handles BOS leading space and
 * <0xHH> byte pieces).  Returned string is owned by the tokenizer or a static
 * byte buffer inside it. */
const char *sh_tokenizer_decode(const sh_tokenizer *t, int prev, int token);
int sh_tokenizer_vocab_size(const sh_tokenizer *t);

/* ------------------------------------------------------------------------ */
/* Datasets                                                                  */
/* ------------------------------------------------------------------------ */

/* A labelled image set (IDX) or a token stream (text). */
typedef struct sh_dataset {
    int kind;             /* 1 images, 2 tokens */
    int64_t n;            /* images, or tokens */
    int c, h, w;          /* image dims */
    float *x;             /* n*c*h*w, normalised to [0,1] */
    int32_t *y;           /* n labels */
    int n_classes;
    int32_t *tokens;      /* kind 2: all documents, each starting with BOS
                             when a tokenizer with BOS is used */
    int vocab;
    int64_t n_docs;       /* kind 2: documents (split on lines "<|endoftext|>") */
    int64_t *doc_off;     /* n_docs+1 offsets into tokens */
    char *desc;
} sh_dataset;

/* spec: "fashion-mnist:train", "fashion-mnist:test", "idx:IMAGES.gz,LABELS.gz",
 * "text:FILE" (bytes), "text:FILE,tok=TOKENIZER.bin".  See docs. */
int sh_dataset_load(const char *spec, sh_dataset **out, sh_error *err);
void sh_dataset_free(sh_dataset *d);

/* ------------------------------------------------------------------------ */
/* Training                                                                  */
/* ------------------------------------------------------------------------ */

/* Built-in model definitions: "mlp", "mlp-small" (784-32-10, a distillation
 * student), "lenet5", "cnn" (small CNN with BN and a residual block),
 * "cnn-small" (conv-BN-ReLU 16/32/64, 24,282 parameters: a distillation
 * student of cnn), "llama-tiny", "llama-2l" (stories260K's dims with 2
 * layers: dim 64, hidden 172, 8 heads, 4 kv heads, vocab 512).  in_shape: C,H,W for image models. */
int sh_model_build(const char *kind, uint64_t seed, sh_graph **out, sh_error *err);

typedef struct sh_train_opts {
    const char *optimizer;   /* "sgd" or "adamw" */
    float lr, momentum, weight_decay, beta1, beta2, eps;
    int nesterov;            /* sgd: Nesterov momentum */
    const char *schedule;    /* "const", "cosine", "step", "onecycle" */
    int step_size;           /* step schedule: epochs per decay */
    float gamma;             /* step schedule factor */
    float warmup;            /* fraction of steps for warm-up */
    int epochs;
    int batch;
    int accum;               /* gradient accumulation steps */
    uint64_t seed;
    int nthreads;
    int64_t max_steps;       /* 0: no limit */
    int seq_len;             /* language models: context per sample */
    const char *checkpoint;  /* path; resume from it if present */
    int checkpoint_every;    /* steps */
    int verbose;             /* progress lines on stderr (only when no callback) */
    int json;
    float label_smoothing;   /* cross-entropy label smoothing (0: none) */
    int64_t limit_val;       /* validate on the first N items only (0: all) */
    /* optional progress callback, called every few steps and after each
     * epoch (epoch_end=1, val = validation accuracy/NLL or -1) */
    void (*progress)(void *ctx, int epoch, int64_t step, int64_t total_steps, double loss,
                     double items_per_s, double eta_s, int epoch_end, double val);
    void *progress_ctx;
    /* optional loss hook (distillation) replacing the cross-entropy on output
     * 0: x is the input batch, logits rows x c, targets the labels / next
     * tokens; set *loss and write scale * d(loss)/d(logits) to dlogits. */
    int (*loss_fn)(void *ctx, const sh_tensor *x, const float *logits, const int32_t *targets, int64_t rows,
                   int64_t c, float scale, float *dlogits, double *loss, sh_error *err);
    void *loss_ctx;
    /* Pruning masks (prune-train).  keep_zeros: every weight of rank >= 2
     * keeps the zero pattern it has when training starts (the pruning
     * mask): the gradients of masked elements are zeroed before each
     * optimizer step, their optimizer moments are cleared and the elements
     * are set back to exactly 0 after it, so N:M patterns stay N:M. */
    int keep_zeros;
    /* l1 > 0: L1-regularised training, l1 * sign(w) is added to the
     * gradient of every weight of rank >= 2 (the loss l1 * sum |w|; the
     * reported loss leaves that term out). */
    float l1;
    /* optional hook after every optimizer step (step = steps done, of
     * total): it may change g's weights in place (gradual pruning); with
     * keep_zeros, setting *remask = 1 takes the weights' current zero
     * pattern as the new masks. */
    int (*step_fn)(void *ctx, sh_graph *g, int64_t step, int64_t total, int *remask, sh_error *err);
    void *step_ctx;
    /* distill: optional hook after the loss, for models with extra outputs
     * (feature / attention distillation): reads the training program's
     * outputs, sets douts[j] (1 <= j < n; NULL = zero) to scale * d(aux
     * loss)/d(output j) (tensors owned by ctx) and *loss to the aux loss. */
    int (*aux_fn)(void *ctx, sh_program *p, float scale, const sh_tensor **douts, int n, double *loss,
                  sh_error *err);
    void *aux_ctx;
} sh_train_opts;

void sh_train_opts_default(sh_train_opts *o);

/* Losses.  Rows of c logits; the loss is the mean over rows (rows whose
 * target is < 0 are ignored).  When the gradient pointer is non-NULL it
 * receives scale * d(loss)/d(input) (assigned, not accumulated).  Language
 * models: n = B*T rows of V logits, targets = next tokens. */
double sh_loss_xent(const float *logits, const int32_t *targets, int64_t n, int64_t c,
                    float label_smoothing, float scale, float *dlogits);
/* T^2 * mean over rows of KL(softmax(teacher/T) || softmax(student/T)), the
 * Hinton distillation loss (PyTorch kl_div(..., 'batchmean') * T^2). */
double sh_loss_kl(const float *student, const float *teacher, int64_t n, int64_t c,
                  float temperature, float scale, float *dstudent);
/* mean((y - target)^2) over n elements. */
double sh_loss_mse(const float *y, const float *target, int64_t n, float scale, float *dy);

/* Learning rate of optimizer step `step` (0-based) out of `total` steps for
 * schedule o->schedule: "const"; "cosine" (linear warm-up over o->warmup of
 * the steps, then cosine to 0); "step" (o->gamma every o->step_size epochs);
 * "onecycle" (PyTorch OneCycleLR: cosine from lr/25 up to lr over o->warmup
 * (default 0.3) of the steps, then down to lr/25e4). */
double sh_lr_at(const sh_train_opts *o, int64_t step, int64_t total, int64_t steps_per_epoch);

/* Optimizers: "sgd" (momentum, nesterov when o->nesterov, L2 weight decay)
 * and "adamw" (decoupled weight decay), as in PyTorch.  Parameter i's state
 * is created on its first update. */
typedef struct sh_optimizer sh_optimizer;
int sh_optimizer_new(const sh_train_opts *o, int n_params, sh_optimizer **out, sh_error *err);
void sh_optimizer_free(sh_optimizer *opt);
/* Start a new step (advances the step count used by Adam's bias correction). */
void sh_optimizer_begin_step(sh_optimizer *opt);
/* Update w (n elements) with gradient g at learning rate lr; decay: apply
 * weight decay to this tensor (the trainer does so for rank >= 2 tensors). */
int sh_optimizer_update(sh_optimizer *opt, int i, float *w, const float *g, int64_t n, int decay,
                        double lr, sh_error *err);

typedef struct sh_train_report {
    int64_t steps;          /* optimizer steps done (including resumed ones) */
    double final_loss;      /* mean training loss of the last epoch */
    double seconds;
    double items_per_s;     /* images or tokens per second (without validation) */
    double val_metric;      /* accuracy or NLL on the validation set, if any (-1: none) */
} sh_train_report;

/* Train g in place (its initializers become the trained weights).  Images:
 * input f32 [B,C,H,W], output 0 logits [B,classes].  Text (kind 2): input
 * tokens [B,seq_len], output 0 logits [B,seq_len,vocab], targets the next
 * tokens.  Epoch e visits the data in a permutation drawn from (seed, e); the
 * last incomplete batch (and accumulation group) of an epoch is dropped.  One
 * optimizer step per opts->accum micro-batches of opts->batch (gradients
 * averaged: the same update as one batch of accum*batch, BatchNorm statistics
 * aside).  With opts->checkpoint, resumes from that file if it exists and
 * saves to it every checkpoint_every steps and at the end; a resumed run ends
 * with the same weights as an uninterrupted one.  opts NULL: defaults. */
int sh_train(sh_graph *g, const sh_dataset *train, const sh_dataset *val,
             const sh_train_opts *opts, sh_train_report *rep, sh_error *err);

/* ------------------------------------------------------------------------ */
/* Evaluation                                                                */
/* ------------------------------------------------------------------------ */

typedef struct sh_eval_report {
    int kind;              /* 1 classification, 2 language model */
    int64_t n;             /* images or scored tokens */
    double accuracy;       /* top-1 */
    double nll, ppl;       /* nats/token, perplexity */
    int64_t params, param_bytes, file_bytes;
    double latency_ms_b1;  /* median batch-1 latency */
    double throughput;     /* items/s at batch 64 (classification) or tokens/s */
    /* filled by sh_eval_ex (0 when not measured) */
    int64_t correct;       /* classification: correctly classified items */
    int speed_batch;       /* batch used for the throughput figure */
    int latency_runs;      /* timed batch-1 runs behind the median */
    double seconds;        /* wall time of the accuracy / NLL pass */
} sh_eval_report;

/* Options of sh_eval_ex.  Zero-initialise and set what you need; zero fields
 * take the defaults shown. */
typedef struct sh_eval_opts {
    int nthreads;          /* 0: all cores */
    int measure_speed;     /* batch-1 median latency and batched throughput */
    int batch;             /* items per inference batch (0: 64) */
    int speed_batch;       /* batch of the throughput measurement (0: 64) */
    int warmup;            /* untimed runs before timing (0: 5) */
    int min_runs;          /* timed batch-1 runs, at least (0: 50) */
    double max_seconds;    /* time budget per speed measurement (0: 2 s) */
    int64_t limit;         /* evaluate only the first N items (0: all) */
    int seq_len;           /* language models: context window (0: model's) */
    /* optional progress callback (items done of total), called between batches */
    void (*progress)(void *ctx, int64_t done, int64_t total);
    void *progress_ctx;
} sh_eval_opts;

/* Evaluate g on d.  Classification (kind 1): top-1 accuracy over the data set
 * in batches; the first graph output holds the logits ([N, classes] or any
 * shape with N leading).  Language models (kind 2): NLL and perplexity (via
 * sh_eval_lm).  Parameters and bytes always; latency/throughput when
 * measure_speed.  rep->file_bytes is left to the caller (0). */
int sh_eval_ex(sh_graph *g, const sh_dataset *d, const sh_eval_opts *opts,
               sh_eval_report *rep, sh_error *err);
/* The same with default options. */
int sh_eval(sh_graph *g, const sh_dataset *d, int nthreads, int measure_speed,
            sh_eval_report *rep, sh_error *err);
/* Median batch-1 latency (ms) and throughput (items/s at batch opts->speed_batch)
 * of a classifier on inputs shaped like d's items (d may be NULL: random input of
 * the graph's declared input shape). */
int sh_eval_speed(sh_graph *g, const sh_dataset *d, const sh_eval_opts *opts,
                  sh_eval_report *rep, sh_error *err);

/* Language models (src/eval/lm.c).  The graph takes "tokens" (i64 [B,T]) and
 * gives "logits" ([B,T,vocab]), e.g. a Llama graph. */

/* Teacher-forced NLL over a token data set (kind 2): every token after the
 * first of each document is scored, in windows of the model's seq_len
 * (opts->seq_len overrides; longer documents slide with half-window overlap,
 * each token scored once with as much context as the window gives).
 * Windows of equal length run as one batch of up to opts->batch rows (0: 16;
 * at most 8192 tokens per run); opts->limit caps the tokens scored.
 * Fills rep->kind = 2, n (tokens scored), nll (nats/token), ppl, throughput
 * (tokens/s), seconds, params, param_bytes.  opts may be NULL. */
int sh_eval_lm(sh_graph *g, const sh_dataset *d, int nthreads, sh_eval_report *rep, sh_error *err);
int sh_eval_lm_ex(sh_graph *g, const sh_dataset *d, const sh_eval_opts *opts, sh_eval_report *rep,
                  sh_error *err);
/* Mean KL(ref || g) in nats of the next-token distributions over the same
 * scored positions as sh_eval_lm (e.g. a quantized model vs the original). */
int sh_lm_kl(sh_graph *ref, sh_graph *g, const sh_dataset *d, const sh_eval_opts *opts, double *kl,
             sh_error *err);

/* A token data set from a text file: documents are separated by lines that
 * read "<|endoftext|>"; each is stripped of surrounding white space, encoded
 * with the tokenizer (dummy prefix) and gets BOS in front.  tok NULL: bytes as
 * tokens (vocab 256, no BOS); empty documents are dropped. */
int sh_dataset_from_text(const char *path, const sh_tokenizer *tok, sh_dataset **out, sh_error *err);

typedef struct sh_generate_stats {
    int prompt_tokens;      /* including BOS */
    int generated_tokens;   /* sampled tokens */
    double prefill_seconds, gen_seconds;
    double tokens_per_s;    /* sampled tokens per second (after prefill) */
} sh_generate_stats;

/* Generate text as llama2.c's run.c does: BOS + encoded prompt, positions
 * 0..steps-1 (steps <= 0 or > seq_len: seq_len), greedy at temperature 0,
 * else temperature and top-p (nucleus; topp <= 0 or >= 1: plain sampling)
 * with a xorshift RNG seeded by seed (same seed, same text).  Stops at BOS.
 * Each piece of text (prompt pieces included; unprintable control bytes
 * dropped as llama2.c's safe_printf does) goes to emit.  Uses a KV-cache
 * program: the prompt in one run, then one token per run. */
int sh_generate(sh_graph *g, const sh_tokenizer *tok, const char *prompt, int steps, float temperature,
                float topp, uint64_t seed, int nthreads, void (*emit)(const char *piece, void *ud), void *ud,
                sh_generate_stats *stats, sh_error *err);

/* ------------------------------------------------------------------------ */
/* Quantization: CPU features, int8 layouts (src/core/cpu.c, ops/qgemm*.c)  */
/* ------------------------------------------------------------------------ */

/* CPU feature bits (cpuid + xgetbv: a bit is set only when the OS saves the
 * registers it needs). */
enum {
    SH_CPU_AVX2 = 1 << 0,
    SH_CPU_FMA = 1 << 1,
    SH_CPU_F16C = 1 << 2,
    SH_CPU_AVX512F = 1 << 3,
    SH_CPU_AVX512BW = 1 << 4,
    SH_CPU_AVX512VL = 1 << 5,
    SH_CPU_AVX512VNNI = 1 << 6,
    SH_CPU_AVXVNNI = 1 << 7,
    SH_CPU_FEATURE_COUNT = 8
};
/* Bitmask of SH_CPU_* of this CPU. */
int sh_cpu_features(void);
/* Name of feature bit i (0 <= i < SH_CPU_FEATURE_COUNT): "avx2", "fma", ...;
 * NULL out of range. */
const char *sh_cpu_feature_name(int i);
/* Kernel levels, best last. */
enum { SH_CPU_REF = 0, SH_CPU_LEVEL_AVX2 = 1, SH_CPU_LEVEL_AVX512 = 2 };
/* Kernel level to use: the best the CPU supports (avx512 = AVX-512
 * F/BW/VL + VNNI; avx2 = AVX2 + FMA + F16C), lowered by the environment
 * variable SHRINK_CPU=ref|avx2|avx512 (read at each call; a level above what
 * the CPU supports is capped). */
int sh_cpu_level(void);
const char *sh_cpu_level_name(int level);

/* Quantization parameters of a plain SH_I8 / SH_U8 tensor (static int8):
 * real = scale[c] * (q - zero_point[c]) where c is the index along `axis`
 * (axis -1: one scale for the whole tensor, n = 1).  Proposed as an
 * owned member of sh_tensor (`sh_qlayout *q`), so scales travel with the
 * tensor's format layout rather than as loose side arrays; until then the
 * int8 kernels take it as an argument. */
typedef struct sh_qlayout {
    int axis;             /* -1: per tensor */
    int64_t n;            /* number of scales: 1 or shape[axis] */
    float *scale;
    int32_t *zero_point;  /* NULL: symmetric (all zero) */
} sh_qlayout;

/* ------------------------------------------------------------------------ */
/* Compression: distillation (src/compress/distill.c)                       */
/* ------------------------------------------------------------------------ */

/* A feature pair: teacher value name and student value name; an attention
 * pair: Attention node names (or their 0-based indices among the Attention
 * nodes, e.g. "4" and "1").  weight 0: 1. */
typedef struct sh_distill_pair {
    const char *teacher, *student;
    float weight;
} sh_distill_pair;

typedef struct sh_distill_opts {
    sh_train_opts train;   /* optimizer, schedule, epochs, batch, seed, ... */
    float temperature;     /* softmax temperature T (default 4) */
    float alpha;           /* weight of the KL term (default 0.9) */
    /* feature distillation: weight * mean((s - t)^2) between teacher value
     * t and student value s, through a learned projection (1x1 Conv for
     * [B,C,H,W], Gemm for [B,C]; trained with the student, then dropped)
     * when the channel counts differ */
    int n_features;
    const sh_distill_pair *features;
    /* attention distillation (language models): the probabilities [B,H,T,T]
     * of the named Attention nodes, weight * mean over query rows of the
     * squared L2 distance of the rows (heads averaged if H differs) */
    int n_attention;
    const sh_distill_pair *attention;
    int no_cache;          /* images: run the teacher on every batch instead of
                              computing its logits of the training set once */
} sh_distill_opts;

void sh_distill_opts_default(sh_distill_opts *o);

/* alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) *
 * cross-entropy(student, targets) (label smoothing `smoothing`), means over
 * n rows of c logits; dstudent (optional) gets scale * d(loss)/d(student). */
double sh_loss_distill(const float *student, const float *teacher, const int32_t *targets, int64_t n, int64_t c,
                       float temperature, float alpha, float smoothing, float scale, float *dstudent);

/* Attention-map distillation loss: s [B,Hs,T,T] and t [B,Ht,T,T] attention
 * probabilities; the mean over the B*H*T query rows of the squared L2
 * distance between rows (Hs == Ht: per head; else of the head-averaged maps,
 * mean over B*T rows).  ds (optional) gets scale * d(loss)/ds.  NAN when out
 * of memory. */
double sh_loss_attention(const float *s, const float *t, int64_t B, int64_t Hs, int64_t Ht, int64_t T, float scale,
                         float *ds);

/* Train student in place on train with the distillation loss above; the
 * teacher runs in an inference program on the same batches (images: logits
 * per image; language models: logits per position, targets the next tokens).
 * Teacher and student must have the same number of outputs per item.  Uses
 * sh_train (optimizers, schedules, checkpoints, validation on val). */
int sh_distill(sh_graph *student, const sh_graph *teacher, const sh_dataset *train, const sh_dataset *val,
               const sh_distill_opts *o, sh_train_report *rep, sh_error *err);

/* Teacher samples as training text (a language model without data): n
 * stories generated by teacher from BOS (sh_generate, `steps` positions,
 * temperature, plain sampling, seeds seed + i * golden), each re-encoded with
 * BOS as one document of a token data set (*out, sh_dataset_free). */
int sh_distill_samples(sh_graph *teacher, const sh_tokenizer *tok, int n, int steps, float temperature, uint64_t seed,
                       int nthreads, sh_dataset **out, sh_error *err);

/* ------------------------------------------------------------------------ */
/* Compression: pruning (src/compress/prune.c, structured.c)                */
/* ------------------------------------------------------------------------ */

/* Prunable layers: Conv, Gemm and MatMul nodes whose weight (input 1) is an
 * f32 initializer.  A weight is seen as [out, in] (Conv: [Cout,
 * Cin*kh*kw]; Gemm transB=0 and MatMul weights [K, N] transposed). */
typedef enum sh_prune_method {
    SH_PRUNE_L1 = 0,     /* |w| (a block / channel: sum of |w|)            */
    SH_PRUNE_L2 = 1,     /* L2 norm of a block / channel (= |w| per weight) */
    SH_PRUNE_TAYLOR = 2, /* sum over calibration batches of |w * dL/dw|     */
    /* One-shot, calibrated, unstructured / N:M only (src/compress/wanda.c,
     * sparsegpt.c); layers visited in order, each calibrated on the inputs
     * the already-pruned earlier layers produce (q/k/v and w1/w3 together):
     * calib rows (calib_batches * batch, of seq_len tokens for text).  Only
     * Gemm / MatMul / Conv layers whose weight no other node reads (a tied
     * embedding / classifier is left alone, with a note). */
    SH_PRUNE_WANDA = 3,  /* Sun et al. 2023: |w_ij| * ||x_j||_2, the
                            floor(ratio * in) lowest of each output row (or
                            M-N of every M) go; no weight update */
    SH_PRUNE_SPARSEGPT = 4 /* Frantar & Alistarh 2023: OBS column by column
                            with the Cholesky factor of the damped inverse
                            Hessian (1 % of mean diag), lazy blocks of 128
                            columns, adaptive mask per 128-column block (or
                            N:M per group); kept weights updated to
                            reconstruct the layer output */
} sh_prune_method;

typedef struct sh_prune_opts {
    int method;            /* sh_prune_method */
    double ratio;          /* fraction to prune, in [0,1) (when threshold < 0);
                              unstructured: the target fraction of zeros
                              (zeros already there score 0 and count) */
    double threshold;      /* >= 0: prune scores below it instead (set < 0 to use ratio) */
    int global;            /* rank all selected layers together (PyTorch
                              global_unstructured); else each layer alone */
    int n, m;              /* m > 0: N:M semi-structured along the input
                              dimension (keep the n largest of every m) */
    int block;             /* unstructured: prune 1 x block groups along the
                              input dimension (0 or 1: single weights) */
    const char *include;   /* comma-separated node or weight names (NULL: all) */
    const char *exclude;   /* comma-separated node or weight names to skip */
    int skip_first, skip_last; /* leave the first / last prunable layer alone */
    /* Taylor scores: cross-entropy on the first calib_batches batches of
     * `batch` items of calib (images: labels; text: next tokens) */
    const sh_dataset *calib;
    int calib_batches;     /* 0: 4 */
    int batch;             /* 0: 32 */
    int seq_len;           /* text: tokens per row (0: 64) */
    int nthreads;
} sh_prune_opts;

/* Defaults: L1, ratio 0.5, threshold -1, per layer, no N:M. */
void sh_prune_opts_default(sh_prune_opts *o);

typedef struct sh_prune_layer {
    char name[128];        /* node name */
    char weight[128];      /* weight initializer name */
    char op[24];
    int ndim_before, ndim_after;
    int64_t shape_before[SH_MAX_DIMS], shape_after[SH_MAX_DIMS];
    int64_t params_before, params_after;   /* weight (+ bias) elements */
    int64_t zeros_before, zeros_after;     /* zero weight elements */
    double sparsity_before, sparsity_after;/* zeros / weight elements */
    int pruned;            /* 1 if this pass changed the layer */
    char note[160];        /* why a layer was left alone (structured) */
} sh_prune_layer;

typedef struct sh_prune_report {
    int n_layers;
    sh_prune_layer *layers;
    int64_t params_before, params_after;   /* sh_graph_param_count */
    int64_t bytes_before, bytes_after;     /* sh_graph_param_bytes */
    int64_t weights, zeros_before, zeros_after; /* over the layers' weights */
} sh_prune_report;
void sh_prune_report_free(sh_prune_report *r);

/* Unstructured / block / N:M pruning: returns a copy of g (g is not changed)
 * whose pruned weights are zero (pack them with sh_sparse_pack to store and
 * run them sparse).  Ties are broken as torch.topk on the CPU does, so per
 * layer and global L1 give PyTorch's masks (the count pruned is
 * round-half-even(ratio * n) as in torch.nn.utils.prune).  rep may be NULL. */
int sh_prune(const sh_graph *g, const sh_prune_opts *o, sh_graph **out, sh_prune_report *rep,
             sh_error *err);

/* Structured pruning with physical removal: output channels of Conv
 * (filters) and output neurons of Gemm / MatMul are removed, and every
 * consumer shrinks with them (BatchNormalization parameters, the next Conv's
 * input channels (depthwise convs pass the removal on), Gemm columns after
 * Flatten, a Reshape to [N, C*H*W] or GlobalAveragePool, constants of
 * elementwise ops).  Producers that meet at an elementwise op (a residual
 * Add; the SiluMul of a Llama FFN) are one channel group, ranked by the sum
 * of their filters' norms.  o->ratio of each group's channels go (rounded half
 * to even); method L1 / L2 / Taylor; o->global ranks all groups together by
 * mean score per weight.  Layers whose channels reach a graph output or an
 * op that cannot be propagated through are left alone (their note says why)
 * unless named in o->include: then SH_EUNSUPPORTED.  Removing every channel
 * of a group is SH_EINVAL.  Returns a new graph (checked, shapes inferred);
 * g is not changed. */
int sh_prune_channels(const sh_graph *g, const sh_prune_opts *o, sh_graph **out, sh_prune_report *rep,
                      sh_error *err);

/* Whole residual blocks: an Add(b, s) whose input b is computed from s by a
 * branch that nothing else reads (identity shortcut) is replaced by s, the
 * branch's nodes and weights removed.  Blocks named (by their Add node) in
 * o->include go; otherwise round-half-even(o->ratio * blocks) with the
 * smallest score (L2 / L1 norm of the branch's output scale: its last
 * BatchNormalization's |gamma| / sqrt(var + eps), else of its last weight),
 * or those scoring below o->threshold.  The layers of removed branches get
 * params_after 0 and a note in the report. */
int sh_prune_blocks(const sh_graph *g, const sh_prune_opts *o, sh_graph **out, sh_prune_report *rep,
                    sh_error *err);

/* Transformer structured pruning with physical removal (src/compress/
 * prune_llm.c) on Llama graphs (sh_llama_config_of; see sh_llama2c_load).
 *  SH_LLM_HEADS: attention heads of every layer: the head's rows of wq (and
 *    of wk / wv without GQA) and its columns of wo go, the Attention node's
 *    n_heads / n_kv_heads shrink.  With grouped-query attention (n_kv_heads <
 *    n_heads) the same number of query heads goes from every KV group
 *    (round-half-even(ratio * heads per group)), KV heads stay.  Score per
 *    head: L1 / L2 norm of its weights (wq rows and wo columns), or with
 *    o->calib (method TAYLOR or WANDA) sum_j ||wo[:,j]||_2 * ||x_j||_2 over
 *    its attention-output columns x_j (Wanda-style).
 *  SH_LLM_FFN: FFN neurons (rows of w1 / w3, columns of w2): the SiluMul
 *    channel groups of sh_prune_channels (L1 / L2 / Taylor), ratio per layer.
 *  SH_LLM_LAYERS: whole transformer layers (both residual branches),
 *    round-half-even(ratio * n_layers) of them: with o->calib, those whose
 *    skipping raises KL(dense || skipped) on the calibration text least;
 *    otherwise the smallest norm of the branch outputs' weights (wo, w2).
 *    Later layers are renumbered, so the graph still saves as llama2.c.
 * o->include / o->exclude name layers.N prefixes ("layers.0,layers.3") for
 * heads / ffn / layers.  Removing every head / neuron / layer is SH_EINVAL.
 * The result is checked and its shapes inferred; g is not changed. */
typedef enum sh_llm_unit { SH_LLM_HEADS = 0, SH_LLM_FFN = 1, SH_LLM_LAYERS = 2 } sh_llm_unit;
int sh_prune_llm(const sh_graph *g, int unit, const sh_prune_opts *o, sh_graph **out, sh_prune_report *rep,
                 sh_error *err);

/* Pruning with fine-tuning (src/compress/prune_schedule.c).  s = the target
 * (prune.ratio: fraction of zeros, or of channels removed when structured). */
typedef enum sh_prune_schedule {
    SH_PRUNE_SCHED_ONESHOT = 0,   /* prune to s, fine-tune train.epochs */
    SH_PRUNE_SCHED_ITERATIVE = 1, /* `rounds` K rounds: prune to
                                     s_k = s * (1 - (1 - k/K)^3), fine-tune
                                     train.epochs after each */
    SH_PRUNE_SCHED_GRADUAL = 2,   /* Zhu & Gupta: train train.epochs, pruning
                                     every `every` steps from t0 to t0 + n*dt
                                     to s_t = s + (s_i - s)(1 - (t - t0)/(n dt))^3,
                                     masks updated at each pruning step */
    SH_PRUNE_SCHED_L1 = 3         /* train l1_epochs with l1 * sum|w| added to
                                     the loss, prune to s, fine-tune train.epochs */
} sh_prune_schedule;

typedef struct sh_prune_train_opts {
    sh_prune_opts prune;     /* method, ratio, global, N:M, block, layers */
    int structured;          /* 1: remove channels (sh_prune_channels);
                                oneshot or iterative only */
    int schedule;            /* sh_prune_schedule */
    int rounds;              /* iterative: K (default 3) */
    double initial_sparsity; /* gradual: s_i (default 0) */
    double begin, end;       /* gradual: pruning from begin to end, as
                                fractions of the training steps
                                (defaults 0 and 0.5) */
    int64_t every;           /* gradual: steps between pruning steps
                                (0: (end - begin) / 16 of the steps) */
    float l1;                /* l1 schedule: lambda (default 1e-5) */
    int l1_epochs;           /* l1 schedule: regularised epochs (0: train.epochs) */
    sh_train_opts train;     /* fine-tuning; epochs 0: no fine-tuning.
                                keep_zeros is set: pruned weights stay
                                exactly zero (a step_fn still runs, after
                                the gradual schedule's pruning) */
    const sh_graph *teacher; /* non-NULL: fine-tune with sh_distill */
    float temperature, alpha;/* distillation (defaults 4, 0.9) */
    /* optional: called before each pruning step of oneshot / iterative /
     * l1 (round k of rounds, target sparsity) */
    void (*on_round)(void *ctx, int round, int rounds, double sparsity);
    void *round_ctx;
} sh_prune_train_opts;
void sh_prune_train_opts_default(sh_prune_train_opts *o);

/* Prune g (not changed) with o's schedule, fine-tuning on train (val:
 * validation after each epoch), and return the result in *out.  rep (may
 * be NULL): per layer, g's weights before and *out's after; trep (may be
 * NULL): the last training run's figures, steps and seconds summed.  N:M
 * and threshold pruning take the oneshot or l1 schedule only. */
int sh_prune_train(const sh_graph *g, const sh_dataset *train, const sh_dataset *val, const sh_prune_train_opts *o,
                   sh_graph **out, sh_prune_report *rep, sh_train_report *trep, sh_error *err);

/* Sparse storage and execution (src/compress/sparsify.c, ops/gemm_sparse.c,
 * ops/conv_sparse.c): the f32 initializer weight of every Gemm (transA=0; a
 * transB=0 weight is transposed and the node gets transB=1) and of every 1-D
 * / 2-D Conv (stored [M, Cg*kh*kw], kernel_shape set; BatchNorm after a Conv
 * is folded first) with at least min_sparsity zeros is packed into the
 * smallest allowed sparse format (nm only when the weight already satisfies
 * 2:4 or 4:8).  Such a Gemm then runs through sh_spmm, such a Conv through a
 * direct sparse convolution, and neither has a backward.  With measure, dense (OpenBLAS) and sparse Gemm of that
 * layer are timed at batch 1 (and at o->batch, interleaved, median of
 * o->runs; a Conv as one-node programs at its inferred input shape) and the
 * layer stays dense unless sparse is faster (product of the sparse/dense
 * time ratios < 1).  A weight read by another node stays f32.
 * Returns a new graph; g is not changed; rep may be NULL. */
typedef struct sh_sparsify_opts {
    double min_sparsity;   /* fraction of zeros needed (default 0.5) */
    int csr, bcsr, nm;     /* formats allowed (default all 1) */
    int block;             /* bcsr block width 2/4/8/16 (default 4) */
    int measure;           /* time dense vs sparse, keep the faster */
    int batch;             /* measure also at this batch (0 / 1: batch 1 only) */
    int runs;              /* timed runs per variant (default 30) */
    int nthreads;          /* 0: OpenMP default */
    const char *exclude;   /* comma-separated node or weight names to skip */
} sh_sparsify_opts;
void sh_sparsify_opts_default(sh_sparsify_opts *o);

typedef struct sh_sparsify_layer {
    char name[128];        /* node name */
    char weight[128];
    int64_t rows, cols;    /* [N out, K in] */
    double sparsity;       /* fraction of zeros */
    sh_format fmt;         /* chosen format (SH_F32: stays dense) */
    int64_t bytes_before, bytes_after;
    double dense_ms, sparse_ms;      /* batch 1 (0 when not measured) */
    double dense_ms_b, sparse_ms_b;  /* at o->batch (0 when not measured) */
    char note[128];        /* why it stays dense, or "" */
} sh_sparsify_layer;

typedef struct sh_sparsify_report {
    int n_layers;
    sh_sparsify_layer *layers;
    int64_t bytes_before, bytes_after;  /* weights of the Gemms considered */
    int packed;                         /* layers packed */
} sh_sparsify_report;
void sh_sparsify_report_free(sh_sparsify_report *r);

int sh_sparsify(const sh_graph *g, const sh_sparsify_opts *o, sh_graph **out, sh_sparsify_report *rep,
                sh_error *err);

/* ------------------------------------------------------------------------ */
/* Compression: quantization (src/compress/quantize.c, ops/gemm_quant.c)    */
/* ------------------------------------------------------------------------ */

/* Weight-only quantization (src/compress/quantize.c, gptq.c, awq.c): the
 * weight [N out, K in] of every Gemm with transB=1 (Llama linear layers,
 * PyTorch Linear exports; a Gemm with transB=0 and a MatMul with a 2-D f32
 * initializer weight [K,N] -- a Linear of a transformer exported to ONNX --
 * become Gemm transB=1 with the weight transposed, shrink's Gemm taking an
 * A of any rank [...,K]) and of every 2-D Conv ([Cout, Cin/group*kh*kw],
 * BatchNorm folded first; stored [Cout, Kp] with attributes kernel_shape and
 * weight_k, run by ops/conv_quant.c) becomes a grouped format:
 *   bits 8: q8_0 (sym)   4: q4_0 (sym, default), q4_1 (asym), log4 (scheme 3)
 *   bits 3: q3_0 (sym)   2: q2_1 (asym)
 * granularity group (32 values per scale along K; 64 / 128: the _g64 /
 * _g128 rows),
 * channel or tensor (one scale per row / tensor: Gemm and Conv weights
 * become the _ch / _t row, f32 scales and codes packed at their real size,
 * e.g. 4.008 bits per weight for 4096 x 4096 q4_0_ch; the AVX-512 conv
 * kernel uses the row scale as an f16 block scale).  Rounding:
 * to nearest, or o->gptq (GPTQ with Hessians from o->calib, sequential:
 * each layer calibrated on the outputs of the already quantized layers),
 * after optional o->awq (per-input-channel scales folded into the RMSNorm /
 * LayerNorm that feeds the layer; other layers noted and unscaled) and with
 * optional o->bias_correction (bias += (W - Q) E[x], a bias added if none).
 * o->layer_bits "name=bits,..." (0 = f32) overrides the bits per layer
 * (a name that is no layer, or bits other than 0/2/3/4/8: SH_EINVAL).
 * Gemm then runs on the low-bit kernels (activations quantized on the fly to
 * q8_0); such a Gemm has no backward.  K not a multiple of the group (32,
 * 64 or 128; 32 per channel / tensor): each row is
 * padded with zero weights to Kp (the initializer is [N, Kp], the node gets
 * the attribute weight_k = K and pads its activations with zeros: the same
 * sums).  Layers left f32, with the reason in the
 * report: transA=1 / alpha != 1, a weight
 * that is not an f32 initializer, and a weight also read by another node
 * (e.g. a tied embedding read by Gather): it stays f32 so the file never holds
 * the same matrix twice. */
typedef enum sh_quant_mode {
    SH_QMODE_WEIGHT = 0,   /* quantized weights, f32 activations */
    SH_QMODE_DYNAMIC = 1,  /* int8 weights, activations quantized per call */
    SH_QMODE_STATIC = 2    /* int8 weights and activations (calibrated ranges) */
} sh_quant_mode;

typedef enum sh_calib_method {
    SH_CALIB_MINMAX = 0, SH_CALIB_PERCENTILE = 1, SH_CALIB_MSE = 2, SH_CALIB_ENTROPY = 3
} sh_calib_method;

typedef enum sh_quant_gran {
    SH_QGRAN_DEFAULT = 0,  /* weight mode: group 32; dynamic / static: channel */
    SH_QGRAN_TENSOR = 1, SH_QGRAN_CHANNEL = 2, SH_QGRAN_GROUP = 3
} sh_quant_gran;

/* Zero-initialise, then set what you need ({0} = weight-only 8-bit). */
typedef struct sh_quant_opts {
    int bits;              /* 8, 4, 3, 2 (0: 8) */
    int scheme;            /* 0 default for bits, 1 sym, 2 asym, 3 log (SH_EINVAL
                              if the bit width has no such format) */
    int skip_classifier;   /* leave a Gemm that writes a graph output f32 */
    const char *exclude;   /* comma-separated node or weight names to skip */
    int mode;              /* sh_quant_mode */
    int granularity;       /* sh_quant_gran */
    int group;             /* SH_QGRAN_GROUP: 32, 64 or 128 (0: 32) */
    /* calibration data (static mode, GPTQ, AWQ, bias correction, sensitivity) */
    const sh_dataset *calib;
    int calib_samples;     /* items of calib used (0: 256 images / 32 rows of text) */
    int batch;             /* 0: 32 */
    int seq_len;           /* text rows: tokens per row (0: 64) */
    int method;            /* sh_calib_method for activation ranges */
    double percentile;     /* SH_CALIB_PERCENTILE: e.g. 99.99 (0: 99.99) */
    /* error compensation */
    int gptq;              /* GPTQ rounding with the calibration Hessian */
    double gptq_damp;      /* fraction of mean diag(H) added (0: 0.01) */
    int awq;               /* activation-aware per-channel scaling */
    double smooth;         /* dynamic / static int8: SmoothQuant alpha in (0, 1)
                              (0: off): outlier channels of the activations
                              that norms feed into linear layers are scaled
                              into the weights (src/compress/smoothquant.c) */
    int bias_correction;   /* correct the output mean shift of quantized convs */
    /* mixed precision: "name=bits,name=bits" overrides per layer (0 = f32) */
    const char *layer_bits;
    int nthreads;          /* 0: OpenMP default */
} sh_quant_opts;

typedef struct sh_quant_layer {
    char name[128];        /* node name */
    char weight[128];
    int64_t rows, cols;    /* [N, K] */
    sh_format fmt;         /* format after (SH_F32 when skipped) */
    int64_t bytes_before, bytes_after;
    double max_err, mean_err;  /* |w - dequant(quant(w))| */
    char note[160];        /* why a layer stayed f32 */
    /* static int8 (quantize_int8.c): calibrated activation ranges of the
     * layer's input and output (real values; 0 when not calibrated) */
    float act_in_lo, act_in_hi, act_out_lo, act_out_hi;
} sh_quant_layer;

typedef struct sh_quant_report {
    int n_layers;
    sh_quant_layer *layers;
    int64_t bytes_before, bytes_after;   /* sh_graph_param_bytes */
    /* dynamic / static int8 (quantize_int8.c): the mode, the calibration
     * method (sh_calib_method) and percentile used, calibration items */
    int mode, calib_method;
    double percentile;
    int64_t calib_items;
    int smoothed_norms;   /* norms whose outputs SmoothQuant rescaled */
} sh_quant_report;
void sh_quant_report_free(sh_quant_report *r);
/* Format for bits / scheme (see above), or -1 with err set. */
int sh_quant_format(int bits, int scheme, sh_error *err);
/* Per-channel / per-tensor rows (formats q4_0_ch ... log4_ch, q4_0_t ...
 * log4_t; layout in src/core/quant_formats.h): a [rows, cols] weight (cols a
 * multiple of 32) with one f32 scale (and min) per row or per tensor and the
 * codes packed at their real size (4-bit: 2 per byte, 3-bit: 12 bytes per
 * 32, 2-bit: 4 per byte).  sh_qrows_quantize rounds w to nearest (the base
 * format's rule over each row / the whole tensor); sh_qrows_wrap validates a
 * buffer read from a file and wraps it (takes ownership of malloc'd data
 * when owns); sh_qrows_bytes is the buffer size (0 for a bad format/shape). */
int sh_qrows_quantize(sh_format f, const float *w, int64_t rows, int64_t cols, sh_tensor **out, sh_error *err);
int sh_qrows_wrap(void *data, size_t nbytes, int owns, sh_tensor **out, sh_error *err);
size_t sh_qrows_bytes(sh_format f, int64_t rows, int64_t cols);
/* Returns a quantized copy of g (g is not changed); rep may be NULL. */
int sh_quantize_weights(const sh_graph *g, const sh_quant_opts *o, sh_graph **out, sh_quant_report *rep,
                        sh_error *err);

/* Quantization entry point (src/compress/quantize_int8.c): dispatches on
 * o->mode.  SH_QMODE_WEIGHT: sh_quantize_weights.  SH_QMODE_DYNAMIC: every
 * Gemm (transA=0) / MatMul with a constant f32 weight becomes a QGemm with f32
 * input and output (activations quantized per call, s8 weights per channel
 * or per tensor); Conv stays f32 (noted).  SH_QMODE_STATIC (needs o->calib):
 * on a copy with BatchNorm folded and Relu fused, the input and output of
 * every Conv / Gemm / MatMul with a constant weight (and of residual Adds)
 * are calibrated with o->method, then the graph is rewritten to u8
 * activations (asymmetric per tensor) and s8 weights (symmetric per channel
 * by default, o->granularity): QuantizeLinear where f32 enters, QLinearConv /
 * QGemm chains (u8 flows through MaxPool, Flatten, Reshape), QLinearAdd for
 * residual adds, DequantizeLinear before ops without an int8 form and graph
 * outputs.  o->bits must be 8 (or 0).  Layers left f32 get a note.  Returns
 * a new graph; g is not changed; rep may be NULL. */
int sh_quantize(const sh_graph *g, const sh_quant_opts *o, sh_graph **out, sh_quant_report *rep, sh_error *err);

/* Activation calibration (src/compress/calibrate.c).  Per value: the exact
 * min / max and a histogram of |x| with SH_CALIB_BINS bins over [0, R] (R
 * doubles, merging bin pairs, when a larger |x| arrives), positive and
 * negative values counted apart.  Range methods give [lo, hi] (always
 * containing 0):
 *   minmax      [min, max]
 *   percentile  [P_(100-p), P_p] of the signed values (p e.g. 99.99)
 *   mse         the symmetric clip T (a bin edge) minimising the expected
 *               u8 quantization MSE of the histogram, [max(min,-T), min(max,T)]
 *   entropy     TensorRT's threshold T: for i = 128..bins, P = the first i
 *               bins of the |x| histogram (outliers added to bin i-1), Q = P
 *               merged into 128 bins and expanded over P's non-empty bins;
 *               T = i * width for the i minimising KL(P || Q); exact
 *               zeros (exact in u8: a Relu output's many) are left out. */
#define SH_CALIB_BINS 2048
typedef struct sh_calib sh_calib;
int sh_calib_new(int n_values, sh_calib **out, sh_error *err);
void sh_calib_free(sh_calib *c);
/* Add n samples of value i. */
int sh_calib_observe(sh_calib *c, int i, const float *x, int64_t n, sh_error *err);
/* Range of value i by method (sh_calib_method; percentile for SH_CALIB_PERCENTILE). */
int sh_calib_range(const sh_calib *c, int i, int method, double percentile, float *lo, float *hi, sh_error *err);
/* Histogram of value i: bins of |x| (positive + negative counts), bin width,
 * exact min / max and count of the samples seen. */
int sh_calib_hist(const sh_calib *c, int i, const double **pos, const double **neg, double *width, float *mn,
                  float *mx, int64_t *count);
/* TensorRT's KL threshold (in bins: the chosen i) of a histogram of |x| with
 * n bins, target bins (128 for 8 bits). */
int sh_calib_entropy_bins(const double *hist, int n, int target);
/* Run g (f32; as it is: no_optimize) over o->calib_samples items of
 * o->calib in batches of o->batch and calibrate the n named values (any
 * intermediate); *out (sh_calib_free) holds value i at index i. */
int sh_calibrate(const sh_graph *g, const sh_quant_opts *o, int n, const char *const *names, sh_calib **out,
                 sh_error *err);

/* ------------------------------------------------------------------------ */
/* Compression: sensitivity and automatic selection                         */
/* (src/compress/sensitivity.c, src/compress/autoselect.c)                  */
/* ------------------------------------------------------------------------ */

/* A fixed, small evaluation set and the original model's outputs on it, so
 * that variants of the model are compared cheaply and always on the same
 * items.  Images (kind 1): the first `samples` items (0: 1000); the metric is
 * top-1 accuracy, the drop is in percentage points.  Tokens (kind 2): the
 * documents cut into windows of seq_len tokens (0: the model's, at most 256),
 * up to `samples` scored next tokens (0: 2048); the metric is perplexity, the
 * drop is its increase in %.  kl: mean over items / scored tokens of
 * KL(softmax(original) || softmax(variant)) in nats. */
typedef struct sh_compare sh_compare;
typedef struct sh_compare_result {
    double metric;     /* accuracy in [0, 1], or perplexity */
    double drop;       /* accuracy pp lost, or perplexity % gained (vs original) */
    double kl;         /* mean KL(original || variant), nats */
} sh_compare_result;
/* ref is only run inside sh_compare_new (its log-probabilities are kept). */
int sh_compare_new(sh_graph *ref, const sh_dataset *d, int64_t samples, int seq_len, int nthreads,
                   sh_compare **out, sh_error *err);
void sh_compare_free(sh_compare *c);
/* 1 classification, 2 language model; *base (may be NULL): the original's
 * metric; *n (may be NULL): items / scored tokens. */
int sh_compare_info(const sh_compare *c, double *base, int64_t *n);
/* Evaluate variant g (same inputs and outputs as the original). */
int sh_compare_eval(sh_compare *c, sh_graph *g, sh_compare_result *r, sh_error *err);

/* Sensitivity: every prunable layer (Conv / Gemm / MatMul with an f32
 * weight, see pruning) is compressed alone at each level and the model
 * evaluated with sh_compare.  Quantization levels are bit widths (8, 4, 3,
 * 2): the layer's weight (BatchNorm folded into it first, as
 * sh_quantize_weights does), seen as [out, in] and each row padded to a
 * multiple of 32, is rounded through the weight-only format of that width
 * (sh_quant_format(bits, scheme): quantize then dequantize, activations stay
 * f32), whether or not sh_quantize_weights can store that layer quantized
 * (`quantizable` says; the note says why not).  Pruning levels are
 * sparsities (unstructured, sh_prune with include = the layer, method L1 or
 * L2) or N:M patterns.  One program runs all variants: the layer's weight is
 * changed in place and restored. */
#define SH_SENS_MAX_LEVELS 16
typedef struct sh_sens_level {
    double value;          /* bits, or sparsity in [0, 1) */
    int n, m;              /* pruning: m > 0 for N:M (value: its sparsity (m-n)/m) */
    char label[16];        /* "4", "0.5", "2:4" */
} sh_sens_level;

typedef struct sh_sens_opts {
    int prune;             /* 0: quantization (bits), 1: pruning (sparsity) */
    int n_levels;          /* 0: bits 8,4,3,2 / sparsity 0.25,0.5,0.75,0.9 */
    sh_sens_level levels[SH_SENS_MAX_LEVELS];
    int scheme;            /* quantization scheme (0 default, 1 sym, 2 asym) */
    int method;            /* pruning: SH_PRUNE_L1 or SH_PRUNE_L2 */
    const sh_dataset *data;/* evaluation data (images or tokens) */
    int64_t samples;       /* see sh_compare_new (0: 1000 images / 2048 tokens) */
    int seq_len;
    const char *include;   /* only these layers (node or weight names) */
    const char *exclude;   /* not these layers */
    int nthreads;
    /* optional progress (layer i of n done) */
    void (*progress)(void *ctx, int done, int total);
    void *progress_ctx;
} sh_sens_opts;

/* Parse "8,4,3,2" (bits) or "0.25,0.5,2:4" (pruning) into o->levels. */
int sh_sens_parse_levels(const char *s, int prune, sh_sens_opts *o, sh_error *err);

typedef struct sh_sens_cell {
    double metric, drop, kl;   /* sh_compare_result of that variant */
    int64_t bytes;             /* quantization: the weight's bytes in that format
                                  (rows padded to 32); pruning: non-zero weights */
} sh_sens_cell;

typedef struct sh_sens_layer {
    char name[128], weight[128], op[24];
    int64_t rows, cols;        /* [out, in] view of the weight */
    int64_t params;            /* weight elements */
    int64_t zeros;             /* zero weights now */
    int64_t macs;              /* multiply-adds per item (image, or token) */
    int64_t bytes;             /* weight bytes now */
    int quantizable;           /* quantization: sh_quantize_weights stores it quantized */
    char note[160];
    sh_sens_cell *cells;       /* n_levels */
} sh_sens_layer;

typedef struct sh_sens_report {
    int prune;
    int task;                  /* 1 classification, 2 language model */
    int n_levels;
    sh_sens_level levels[SH_SENS_MAX_LEVELS];
    int n_layers;
    sh_sens_layer *layers;
    double base_metric;        /* accuracy or perplexity of the original */
    int64_t samples;           /* items / scored tokens per evaluation */
    int evaluations;
    double seconds;
} sh_sens_report;
void sh_sens_report_free(sh_sens_report *r);
int sh_sensitivity(const sh_graph *g, const sh_sens_opts *o, sh_sens_report *rep, sh_error *err);

/* Automatic selection: per-layer choices from a sensitivity table (o->sens,
 * or measured with o->sens_opts when NULL), applied together and measured
 * with sh_compare (the drop and KL in the report are of the combined model).
 *
 * sh_autoquant: bits per layer from the levels of the table and f32, for
 * the layers sh_quantize_weights can store quantized (the others stay f32).
 *  - budget_bytes > 0: parameter bytes + overhead_bytes <= budget_bytes
 *    with the least summed KL (multiple-choice knapsack, exact in units of
 *    budget/20000 bytes, sizes rounded up); below the smallest reachable
 *    size: SH_EINVAL naming it.
 *  - else max_drop >= 0: the smallest model whose measured drop is <=
 *    max_drop: bisection over the budget, each candidate (least summed KL
 *    for that budget) quantized and evaluated; the all-f32 model always
 *    qualifies.
 * sh_autoprune: per-layer L1 sparsity minimising the summed KL (each
 * layer's KL curve through the measured levels, lower convex hull,
 * linear interpolation; beyond the last level the last slope x 4, at most
 * max_layer_sparsity), greedy by KL per weight removed:
 *  - target_sparsity in [0, 1): zeros / weights over the layers' weights
 *    reaches it (integer counts; within 1 weight per layer);
 *  - target_flops in (0, 1]: remaining MACs of the layers (MACs of zero
 *    weights count as removed) <= target_flops x the dense MACs;
 *  - target_latency_ms > 0: structured channel pruning (sh_prune_channels,
 *    one include list per layer) with ratios r_i = min(max_layer_ratio,
 *    r * w_i) (w_i from each layer's KL when half its channels go), r found
 *    by bisection on the measured batch-1 latency; SH_EINVAL when even the
 *    largest ratios miss the target (the message gives the latency reached).
 * Exactly one target must be set. */
typedef struct sh_auto_layer {
    char name[128];
    double choice;             /* quant: bits (0 f32); prune: sparsity or channel ratio */
    char label[16];            /* "f32", "4", "0.73" */
    int64_t params, bytes;     /* weight elements, bytes after */
    int64_t zeros;             /* zero weights after (prune) */
    double est_kl, est_drop;   /* from the sensitivity table (interpolated) */
    char note[160];
} sh_auto_layer;

typedef struct sh_auto_report {
    int task;                  /* 1 classification, 2 language model */
    int n_layers;
    sh_auto_layer *layers;
    double base_metric, metric, drop, kl;  /* measured: original, combined */
    double est_kl;             /* summed per-layer KL of the choice (-1: latency target) */
    int64_t bytes_before, bytes_after;     /* sh_graph_param_bytes */
    double sparsity;           /* zeros / weights over the layers (prune) */
    double flops_frac;         /* remaining fraction of the layers' dense MACs */
    double latency_ms_before, latency_ms;  /* target_latency_ms: measured, batch 1 */
    double uniform_metric, uniform_drop;   /* target sparsity / flops: the same
                                              target met with one sparsity for
                                              every layer, measured (-1: not) */
    int evaluations;           /* combined models evaluated */
    double seconds;
} sh_auto_report;
void sh_auto_report_free(sh_auto_report *r);

typedef struct sh_autoquant_opts {
    int64_t budget_bytes;      /* > 0: byte budget */
    double max_drop;           /* used when budget_bytes <= 0; must be >= 0 */
    int64_t overhead_bytes;    /* file bytes beyond the parameters (0: none) */
    int scheme;                /* 0 default, 1 sym, 2 asym */
    const char *exclude;       /* layers kept f32 */
    const sh_sens_report *sens;/* quantization sensitivity of g, or NULL */
    sh_sens_opts sens_opts;    /* data, samples, levels, ... (always: data) */
} sh_autoquant_opts;
int sh_autoquant(const sh_graph *g, const sh_autoquant_opts *o, sh_graph **out, sh_auto_report *rep,
                 sh_error *err);

typedef struct sh_autoprune_opts {
    double target_sparsity;    /* < 0: unset */
    double target_flops;       /* < 0: unset */
    double target_latency_ms;  /* <= 0: unset */
    double max_layer_sparsity; /* 0: 0.98 */
    double max_layer_ratio;    /* channel pruning: 0: 0.75 */
    int uniform;               /* also measure the uniform baseline */
    int latency_runs;          /* 0: 30 timed batch-1 runs per measurement */
    const char *exclude;       /* layers left alone */
    const sh_sens_report *sens;/* pruning sensitivity of g, or NULL */
    sh_sens_opts sens_opts;
} sh_autoprune_opts;
/* Defaults: no target, uniform 1. */
void sh_autoprune_opts_default(sh_autoprune_opts *o);
int sh_autoprune(const sh_graph *g, const sh_autoprune_opts *o, sh_graph **out, sh_auto_report *rep,
                 sh_error *err);

/* Quantization-aware training (src/compress/qat.c, ops/fakequant.c).
 * sh_qat_prepare returns a copy of g with FakeQuant(x, scale[, zero_point])
 * nodes (forward dequant(quant(x)); backward: straight-through estimator for
 * x, LSQ gradient for the scale) on the f32 weight of every Conv / Gemm /
 * MatMul (symmetric narrow range, per output channel unless per_tensor,
 * scale max|w| / (2^(bits-1) - 1): the prepared graph starts as
 * round-to-nearest PTQ) and, with act_bits 8, on their f32 inputs (u8 per
 * tensor, min/max ranges from calib).  Train it with sh_train or sh_distill
 * (the original model as teacher); the scales train with the weights.
 * sh_qat_convert replaces each fake-quantized weight by its dequantized
 * values (the grid the trained model used) and drops the FakeQuant nodes
 * (activation ranges are left to a static int8 pass: sh_quantize). */
typedef struct sh_qat_opts {
    int bits;              /* weight bits 2..8 (0: 8) */
    int act_bits;          /* 0: f32 activations; 8: u8 fake-quant inputs */
    int per_tensor;        /* one weight scale per tensor (default: per channel) */
    int mse_init;          /* weight scales: least-squares clip instead of max|w| */
    const char *exclude;   /* comma-separated node or weight names to skip */
    const sh_dataset *calib; /* activation ranges (act_bits 8) */
    int calib_samples;     /* 0: 256 */
    int nthreads;
} sh_qat_opts;
void sh_qat_opts_default(sh_qat_opts *o);
int sh_qat_prepare(const sh_graph *g, const sh_qat_opts *o, sh_graph **out, sh_error *err);

typedef struct sh_qat_layer {
    char name[128];        /* FakeQuant node */
    char value[128];       /* weight or activation it quantized */
    int bits, weight;      /* weight: 1, activation: 0 */
    int64_t channels;      /* scales */
    double mean_scale;     /* mean learned scale */
    int64_t clipped;       /* weight elements outside the grid (clipped) */
    int packed;            /* sh_qat_convert_packed: saved in a _ch / _t row */
} sh_qat_layer;
typedef struct sh_qat_report {
    int n_layers;
    sh_qat_layer *layers;
} sh_qat_report;
void sh_qat_report_free(sh_qat_report *r);
int sh_qat_convert(const sh_graph *g, sh_graph **out, sh_qat_report *rep, sh_error *err);
/* As sh_qat_convert, and then each symmetric per-channel (or per-tensor)
 * 2 / 3 / 4 / 8-bit weight of a Gemm (transB=1, transA=0, alpha 1, the
 * weight read only there) or of a 2-D Conv (rows of C/G*kh*kw, with
 * kernel_shape and weight_k set) is stored packed with exactly the learned f32
 * scales: q4_0_ch / q3_0_ch / q8_0_ch (q = u - off), and for 2 bits (narrow
 * range) q2_1_ch with min -s (q = u - 1); _t rows for per-tensor scales.
 * The dequantized values equal sh_qat_convert's f32 grid values bit for bit.
 * K not a multiple of 32: rows zero-padded, attribute weight_k = K.
 * MatMul weights (and 5-7 bits, 8-bit wide range) stay the f32 grid. */
int sh_qat_convert_packed(const sh_graph *g, sh_graph **out, sh_qat_report *rep, sh_error *err);

/* ------------------------------------------------------------------------ */
/* Utilities                                                                 */
/* ------------------------------------------------------------------------ */

/* Write a file atomically: data goes to PATH.tmp.XXXXXX then is renamed. */
int sh_write_atomic(const char *path, const void *data, size_t n, sh_error *err);
/* Read a whole file (malloc'ed). */
int sh_read_file(const char *path, void **data, size_t *n, sh_error *err);
/* Monotonic seconds. */
double sh_now(void);

#ifdef __cplusplus
}
#endif
#endif /* SHRINK_H */
