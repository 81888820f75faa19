/* sparse.h - internal layout of the sparse weight formats (csr, bcsr, nm) and
 * the kernel entry points that consume them (ops/spmm*.c).
 *
 * A sparse tensor is a 2-D tensor [rows = N out, cols = K in] whose data is
 * one self-contained packed buffer: an 80-byte header followed by its arrays,
 * each starting at a multiple of 64 bytes from the buffer start.  nbytes is
 * the whole buffer, so a pruned model's file is about the size of its
 * non-zeros.  All integers are little-endian.
 *
 *   csr  : ptr u32[rows+1] (value offsets), idx u16|u32[nnz] (column), val f32[nnz]
 *   bcsr : blocks of 1 x bw along K, aligned to multiples of bw:
 *          ptr u32[rows+1] (block offsets), idx u16|u32[nblk] (column / bw),
 *          val f32[nblk * bw] (columns >= cols in the last block are 0)
 *   nm   : N:M along K (groups of m consecutive columns, the last one may be
 *          short): idx = a bitmap, u16[rows * words] with words = ceil(cols/16),
 *          bit (c % 16) of word c / 16 set when column c is kept.  Every full
 *          group keeps exactly n columns and the short tail group min(n, its
 *          width), so every row holds the same number of values `per_row`;
 *          val f32[rows * per_row] in column order.  For 4:8 this is 2 bits
 *          of index per kept value.  Bits past cols are 0.
 *          2:4 instead stores 2-bit codes (bw = 2, idx_bytes = 4): kept value
 *          j of a row sits at column 4*(j/2) + code_j, code_j being bits
 *          2*(j%16)..+1 of u32 word j/16 of the row (words32 = ceil(per_row/16)
 *          per row, unused bits 0, the codes of a group increase): also 2
 *          bits per kept value, decoded by a shift, a mask and an add.
 */
#ifndef SH_SPARSE_H
#define SH_SPARSE_H

#include <stdint.h>

#include "shrink.h"

#define SH_SPARSE_MAGIC 0x50534853u /* "SHSP" */
#define SH_SPARSE_VERSION 1
#define SH_SPARSE_ALIGN 64

enum { SH_SPK_CSR = 1, SH_SPK_BCSR = 2, SH_SPK_NM = 3 };
enum { SH_SPV_F32 = 0 }; /* value formats (int8 + per-row scale later) */

typedef struct sh_sparse_hdr {
    uint32_t magic;     /* SH_SPARSE_MAGIC */
    uint16_t version;   /* SH_SPARSE_VERSION */
    uint8_t kind;       /* SH_SPK_* */
    uint8_t vfmt;       /* SH_SPV_* */
    int64_t rows, cols; /* N out, K in */
    int64_t nnz;        /* stored values (csr: nnz; bcsr: blocks * bw; nm: rows * per_row) */
    uint8_t idx_bytes;  /* csr/bcsr: 2 or 4; nm: 2 (bitmap words), 4 (2:4 codes) */
    uint8_t bw;         /* bcsr block width (1 for csr; nm: 16 bitmap, 2 codes) */
    uint8_t n, m;       /* nm: keep n of m */
    uint32_t reserved;
    uint64_t off_ptr;   /* 0 when absent (nm) */
    uint64_t off_idx;
    uint64_t off_val;
    uint64_t off_scale; /* 0: none (reserved for int8 values) */
    uint64_t total;     /* bytes of the whole buffer */
} sh_sparse_hdr;

_Static_assert(sizeof(sh_sparse_hdr) == 80, "sparse header is 80 bytes");

static inline const uint32_t *sh_sp_ptr(const sh_sparse_hdr *h)
{
    return (const uint32_t *)((const char *)h + h->off_ptr);
}
static inline const void *sh_sp_idx(const sh_sparse_hdr *h) { return (const char *)h + h->off_idx; }
static inline const float *sh_sp_val(const sh_sparse_hdr *h)
{
    return (const float *)((const char *)h + h->off_val);
}
/* nm: u16 bitmap words per row, values per row */
static inline int64_t sh_sp_words(const sh_sparse_hdr *h) { return (h->cols + 15) / 16; }
int64_t sh_sp_nm_per_row(int64_t cols, int n, int m);
/* nm stored as 2-bit codes (2:4), and its u32 code words per row */
static inline int sh_sp_nm_codes(const sh_sparse_hdr *h) { return h->kind == SH_SPK_NM && h->bw == 2; }
static inline int64_t sh_sp_words32(const sh_sparse_hdr *h) { return (sh_sp_nm_per_row(h->cols, h->n, h->m) + 15) / 16; }
static inline uint32_t sh_sp_code(const uint32_t *row_codes, int64_t j) { return (row_codes[j / 16] >> (2 * (j % 16))) & 3; }
/* sh_nm_pos4[b]: positions (one per byte, lowest first) of the first 4 set
 * bits of byte b: the kept columns of a 2:4 / 4:8 bitmap byte. */
extern const uint32_t sh_nm_pos4[256];
/* nm words [0, half) of a row hold exactly 4 kept columns per byte (n = m/2,
 * m <= 8, away from the short tail group); 0 otherwise. */
static inline int64_t sh_sp_nm_half(const sh_sparse_hdr *h)
{
    return h->kind == SH_SPK_NM && h->bw == 16 && h->m <= 8 && h->n * 2 == h->m ? h->cols / h->m * h->m / 16 : 0;
}
/* Format-table to_f32 of the sparse rows: unpacks the first n elements. */
void sh_sparse_to_f32(const void *src, float *dst, int64_t n);

/* Kernel paths. */
enum { SH_SPMM_AUTO = 0, SH_SPMM_REF = 1, SH_SPMM_AVX2 = 2, SH_SPMM_AVX512 = 3 };

/* Work shared by the kernels of one call.
 *   B == 1: x is the input row padded with zeros to kp columns (kp = cols
 *           rounded up to 64).
 *   B  > 1: xt is X transposed, [kp][bp] (bp = 8 when B <= 8, else B rounded
 *           up to 16), zero-padded.
 * Kernels compute output rows [r0, r1): y[b*ldy + r] for b < B. */
typedef struct sh_spmm_job {
    const sh_sparse_hdr *h;
    const float *x;    /* B == 1 */
    const float *xt;   /* B > 1 */
    int64_t B, bp, kp;
    const float *bias; /* may be NULL */
    float *y;
    int64_t ldy;
} sh_spmm_job;

/* rows [r0, r1); tmp: per-thread scratch of sh_spmm_tmp_floats(h) floats. */
typedef void (*sh_spmm_rows_fn)(const sh_spmm_job *j, int64_t r0, int64_t r1, void *tmp);
size_t sh_spmm_tmp_bytes(const sh_sparse_hdr *h);

void sh_spmm_rows_ref(const sh_spmm_job *j, int64_t r0, int64_t r1, void *tmp);
void sh_spmm_rows_avx2(const sh_spmm_job *j, int64_t r0, int64_t r1, void *tmp);
void sh_spmm_rows_avx512(const sh_spmm_job *j, int64_t r0, int64_t r1, void *tmp);

/* Decode row r of any kind into column indices cols[] (u32) and a pointer to
 * its values; returns the count.  cols needs room for the row's count + 16. */
int64_t sh_sp_row_decode(const sh_sparse_hdr *h, int64_t r, uint32_t *cols, const float **vals);

/* Dense peers (bench and tests): Y[B,N] = X[B,K] W[N,K]^T (+ bias), own
 * AVX-512 / AVX2 / C code, OpenMP over rows. path: SH_SPMM_*. */
int sh_dense_linear(const float *w, int64_t n, int64_t k, const float *x, int64_t B, const float *bias,
                    float *y, int nthreads, int path);
void sh_dense_gemv_rows_avx512(const float *w, int64_t k, const float *x, const float *bias, float *y,
                               int64_t r0, int64_t r1);
void sh_dense_gemv_rows_avx2(const float *w, int64_t k, const float *x, const float *bias, float *y,
                             int64_t r0, int64_t r1);

/* 1 when the CPU runs kernel path `path` (sh_cpu_features + a few extra bits). */
int sh_spmm_path_ok(int path);

#endif
