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
} sh_format_traits;

/* Traits of format f, or NULL if f is out of range. */
const sh_format_traits *sh_format_get(sh_format f);
/* Format by name ("f32"...), or -1. */
int sh_format_from_name(const char *name);
/* Bytes needed for n elements of format f. */
size_t sh_format_bytes(sh_format f, int64_t n);

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

/* ------------------------------------------------------------------------ */
/* Runtime                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct sh_program sh_program;

typedef struct sh_run_opts {
    int nthreads;       /* 0: all cores */
    int training;       /* keep activations, BN batch stats, dropout active */
    uint64_t seed;      /* dropout and other randomness */
} sh_run_opts;

/* Plan graph g (not copied; must outlive the program) into a program.
 * Shapes are re-planned automatically when input shapes change. */
int sh_program_new(sh_graph *g, const sh_run_opts *opts, sh_program **out, sh_error *err);
void sh_program_free(sh_program *p);
/* Run with inputs in graph-input order.  Output tensors are owned by the
 * program and stay valid until the next run or free. */
int sh_program_run(sh_program *p, const sh_tensor *const *inputs, int n_inputs, sh_error *err);
int sh_program_num_outputs(const sh_program *p);
sh_tensor *sh_program_output(sh_program *p, int i);
/* Any value by name after a run (NULL if not kept by the memory plan; in
 * training mode all values are kept). */
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
/* Trainable parameters of a training-mode program: float initializers that
 * feed an op's weight/bias inputs.  For i in [0, n): the graph value index,
 * the parameter tensor (a view of the graph's initializer, so updates change
 * the graph) and its gradient buffer. */
int sh_program_num_params(const sh_program *p);
int sh_program_param(sh_program *p, int i, int *value, sh_tensor **data, sh_tensor **grad);
/* The graph the program runs. */
sh_graph *sh_program_graph(sh_program *p);

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

/* llama2.c checkpoints (version 0 header) as a graph of the same IR. */
typedef struct sh_llama_config {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int shared_classifier;
} sh_llama_config;
int sh_llama2c_load(const char *path, sh_graph **out, sh_error *err);
int sh_llama2c_save(const sh_graph *g, const char *path, sh_error *err);
/* Build a Llama graph with random (seeded) weights. */
int sh_llama_build(const sh_llama_config *cfg, uint64_t seed, sh_graph **out, sh_error *err);
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

/* Built-in model definitions: "mlp", "lenet5", "cnn" (small CNN with BN and a
 * residual block), "llama-tiny".  in_shape: C,H,W for image models. */
int sh_model_build(const char *kind, uint64_t seed, sh_graph **out, sh_error *err);

typedef struct sh_train_opts {
    const char *optimizer;   /* "sgd" or "adamw" */
    float lr, momentum, weight_decay, beta1, beta2, eps;
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
    int verbose;             /* progress lines on stderr */
    int json;
} sh_train_opts;

void sh_train_opts_default(sh_train_opts *o);

typedef struct sh_train_report {
    int64_t steps;
    double final_loss;
    double seconds;
    double items_per_s;
    double val_metric;      /* accuracy or NLL on the validation set, if any */
} sh_train_report;

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
} sh_eval_report;

int sh_eval(sh_graph *g, const sh_dataset *d, int nthreads, int measure_speed,
            sh_eval_report *rep, sh_error *err);

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
