/* conv_sparse.h - Conv with an unstructured-sparse weight (ops/conv_sparse.c).
 *
 * The weight is a packed sparse tensor (csr, bcsr, nm) of shape [M, Cg*kh*kw]
 * (the 4-D [M, Cg, kh, kw] filter flattened; column (c*kh + i)*kw + j); the
 * Conv node must carry kernel_shape.  Each kept weight w at (c, i, j) of
 * output channel m becomes one offset into a source plane and the output is
 *   y[m][p] = bias[m] + sum_q w_q * src[off_q + p]    (p over an output tile)
 * with src the zero-padded input (stride 1: p runs over OH x Wp, the padded
 * row width, and the columns >= OW are dropped) or, for strides > 1, its
 * im2col matrix [Cg*kh*kw][OH*OW].  The sum runs in the stored order with a
 * separate multiply and add, so the portable C, AVX2 and AVX-512 paths give
 * bit-identical results. */
#ifndef SH_CONV_SPARSE_H
#define SH_CONV_SPARSE_H

#include "core/sparse.h"
#include "nn_ops.h"

/* The kept weights of h as (offset, value) lists for input geometry w:
 * output channel m owns entries [rp[m], rp[m+1]).  Made once per weight and
 * geometry (the Conv node caches it). */
typedef struct sh_conv_sparse_plan {
    const void *src;       /* weight buffer it was made from */
    uint64_t total;        /* its size */
    int64_t key[8];        /* geometry it was made for */
    int64_t M, nnz;
    int32_t *rp, *off;
    float *val;
} sh_conv_sparse_plan;

/* NULL when out of memory. */
sh_conv_sparse_plan *sh_conv_sparse_plan_new(const sh_sparse_hdr *h, const sh_win *w, int64_t G);
/* 1 if plan p was made for h and w */
int sh_conv_sparse_plan_fits(const sh_conv_sparse_plan *p, const sh_sparse_hdr *h, const sh_win *w, int64_t G);
void sh_conv_sparse_plan_free(sh_conv_sparse_plan *p);

/* Scratch bytes sh_conv_sparse_run needs (x: one image's input, NCHW). */
size_t sh_conv_sparse_scratch(const sh_sparse_hdr *h, const sh_win *w, int64_t G, int nthreads);

/* y [N, M, OH, OW] = conv(x [N, C, H, W], h) + bias (may be NULL), then ReLU
 * when relu, with plan p of h (NULL: made and freed here).  path:
 * SH_SPMM_AUTO / REF / AVX2 / AVX512 (core/sparse.h).  scratch:
 * sh_conv_sparse_scratch bytes, 64-byte aligned.  Returns SH_OK,
 * SH_ENOMEM or SH_EUNSUPPORTED (path not available on this CPU). */
int sh_conv_sparse_run(const sh_sparse_hdr *h, const sh_conv_sparse_plan *p, const float *x, const sh_win *w,
                       int64_t G, const float *bias, int relu, float *y, int nthreads, int path, void *scratch);

/* Best sparse kernel path of this CPU (SHRINK_CPU=ref|avx2 lowers it). */
int sh_spmm_best_path(void);

#endif
