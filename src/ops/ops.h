/* ops.h - the op table: one row per op (shape inference, forward, backward).
 *
 * Each op family lives in its own file (ops/conv.c, ops/elementwise.c, ...) and
 * exports a NULL-terminated array of sh_op_def rows that ops/registry.c lists.
 * Nothing here knows about files; kernels get tensors and attributes only.
 */
#ifndef SH_OPS_H
#define SH_OPS_H

#include <omp.h>

#include "shrink.h"

/* Per-call context handed to every op function. */
typedef struct sh_kctx {
    const sh_node *node;   /* attributes: sh_attr_int(k->node, "axis", 0) ... */
    sh_error *err;
    int nthreads;          /* threads the op may use (OpenMP) */
    int training;          /* BN batch statistics, dropout active */
    uint64_t seed;         /* per-node, per-run seed for randomness */
    int64_t pos;           /* sequence position of the first token (KV cache) */
    void **state;          /* per-node persistent state slot (KV cache); freed by
                              the runtime with free() unless the op sets a
                              state_free function in its def */
    void *scratch;         /* runtime-owned scratch: see sh_kctx_scratch */
    size_t scratch_size;
    void *scratch_owner;   /* the program (internal) */
    int64_t opset;         /* ONNX opset of the graph's default domain (e.g.
                              Softmax axis semantics changed at 13) */
} sh_kctx;

/* SH_PAR_FOR(cond, nthreads, for-loop): the loop runs in an OpenMP team
 * (static schedule) when cond holds and nthreads is not 1 (0: OpenMP's
 * default), otherwise on the calling thread without entering libgomp at
 * all.  `#pragma omp parallel for if (cond)` still starts a one-thread team
 * when cond is false, which costs about a microsecond: more than an
 * elementwise op on a 64-wide vector (small-model decode).
 * SH_PAR_FOR_S(cond, nthreads, clauses, for-loop): the same with other
 * clauses of the `omp parallel for`, e.g. schedule(dynamic, 2). */
#define SH_PRAGMA_(x) _Pragma(#x)
#define SH_PRAGMA(x) SH_PRAGMA_(x)
#define SH_PAR_FOR_S(cond, nthreads, clauses, ...)                                                        \
    do {                                                                                                  \
        int sh_pf_nt_ = (nthreads);                                                                       \
        if ((cond) && sh_pf_nt_ != 1) {                                                                   \
            if (sh_pf_nt_ <= 0) sh_pf_nt_ = omp_get_max_threads();                                       \
            SH_PRAGMA(omp parallel for num_threads(sh_pf_nt_) clauses) __VA_ARGS__                        \
        } else {                                                                                          \
            __VA_ARGS__                                                                                   \
        }                                                                                                 \
    } while (0)
#define SH_PAR_FOR(cond, nthreads, ...) SH_PAR_FOR_S(cond, nthreads, schedule(static), __VA_ARGS__)

/* Grow-on-demand scratch memory owned by the runtime (valid during the call). */
void *sh_kctx_scratch(sh_kctx *k, size_t bytes);

/* Shape inference.
 * in[i]: inputs, shape and format always set; data non-NULL when the value is
 * a constant (initializer or constant-folded), so Reshape/Pad/Clip can read
 * their shape/pads/min inputs.  in[i] is NULL for omitted optional inputs.
 * Fill out[j]->fmt, ndim, shape (data is not allocated here).
 * Return SH_OK or an error (sh_err(k->err, SH_ESHAPE, ...)) naming shapes. */
typedef int (*sh_infer_fn)(sh_kctx *k, const sh_tensor *const *in, int n_in,
                           sh_tensor *const *out, int n_out);

/* Forward: outputs are allocated by the runtime with the inferred shapes. */
typedef int (*sh_forward_fn)(sh_kctx *k, const sh_tensor *const *in, int n_in,
                             sh_tensor *const *out, int n_out);

/* Backward: given the inputs, outputs and output gradients dout[j] (NULL when
 * zero), ACCUMULATE (+=) input gradients into din[i].  din[i] is NULL when
 * that input needs no gradient.  Shapes of din[i] equal those of in[i]. */
typedef int (*sh_backward_fn)(sh_kctx *k, const sh_tensor *const *in, int n_in,
                              const sh_tensor *const *out, int n_out,
                              const sh_tensor *const *dout,
                              sh_tensor *const *din);

typedef struct sh_op_def {
    const char *name;        /* op type, e.g. "Conv" */
    int min_in, max_in;      /* accepted input counts */
    int min_out, max_out;
    sh_infer_fn infer;
    sh_forward_fn forward;
    sh_backward_fn backward; /* NULL if not differentiable */
    /* bitmask of inputs that never take gradients (shape inputs, BN running
     * stats, indices...). */
    unsigned nondiff_inputs;
    /* bitmask of inputs which, when initializers, are trainable parameters
     * (weights and biases: Conv 0b110, Gemm 0b110, BN scale/bias 0b110). */
    unsigned param_inputs;
    void (*state_free)(void *state);
    /* 1 if forward needs only the input shapes (Shape, Size): folded to a
     * constant at plan time. */
    int shape_only;
} sh_op_def;

/* state_free of the ops whose node state holds one sequence (Attention's
 * KV cache): sh_program_set_pos(p, 0) drops exactly these states.  Other
 * node state (the prepared weights of the quantized ops) lives as long as
 * the program. */
void sh_kv_cache_free(void *state);

/* Look up an op by type (domain is ignored: shrink's own op names don't
 * clash with ONNX's). */
const sh_op_def *sh_op_find(const char *name);
/* The i-th row (for listing), NULL past the end. */
const sh_op_def *sh_op_at(int i);

/* Helpers for op implementations -------------------------------------- */

/* Error with node context: "node 'conv1' (Conv): <message>". */
int sh_op_err(sh_kctx *k, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Numpy-style broadcast of two shapes into out; SH_ESHAPE on mismatch. */
int sh_broadcast_shape(int na, const int64_t *a, int nb, const int64_t *b,
                       int *nout, int64_t *out);
/* Copy shape/format from src. */
void sh_tensor_set_shape(sh_tensor *t, sh_format fmt, int ndim, const int64_t *shape);
/* Read an integer-like constant input (i64/i32) into v (up to max values);
 * returns count or -1 if the tensor has no data. */
int sh_tensor_read_ints(const sh_tensor *t, int64_t *v, int max);
/* Read element i of any numeric tensor as float. */
float sh_tensor_get_f(const sh_tensor *t, int64_t i);

/* f32 GEMM: C = alpha * op(A) * op(B) + beta * C, row-major (OpenBLAS). */
void sh_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K,
              float alpha, const float *A, int64_t lda, const float *B,
              int64_t ldb, float beta, float *C, int64_t ldc);

/* Gemm with a packed sparse weight B (csr/bcsr/nm, transB=1), ops/gemm_sparse.c:
 * called by nn.c's Gemm when B's format is packed; bwd returns a clear error. */
int sh_gemm_sparse_infer(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out);
int sh_gemm_sparse(sh_kctx *k, const sh_tensor *const *in, int n_in, sh_tensor *const *out, int n_out);
int sh_gemm_sparse_bwd(sh_kctx *k);

/* Epilogue of the compressed-weight Gemm kernels: the fused activation
 * attribute (only "Relu") and the broadcast of C ([N], [1,N], [M,N], scalar)
 * to the [M,N] output; *cm, *cn are C's two dims (0 when C is absent). */
int sh_gemm_epilogue(sh_kctx *k, const sh_tensor *C, int64_t M, int64_t N, int *relu, int64_t *cm, int64_t *cn);

/* Family tables, each NULL-terminated, listed by registry.c. */
extern const sh_op_def *const sh_ops_nn[];      /* ops/nn.c: Conv, Gemm, MatMul, pools, BN, LayerNorm */
extern const sh_op_def *const sh_ops_elem[];    /* ops/elementwise.c: binary, unary, softmax, reduce */
extern const sh_op_def *const sh_ops_shape[];   /* ops/shape.c: Flatten, Reshape, Transpose, Concat, Pad, ... */
extern const sh_op_def *const sh_ops_llm[];     /* ops/llm.c: RMSNorm, RoPE, Attention, SiluMul */
extern const sh_op_def *const sh_ops_qlinear[]; /* ops/qlinear*.c: QuantizeLinear, DequantizeLinear, QLinearConv, QGemm, ... */

#endif
