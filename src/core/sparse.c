/* sparse.c - the sparse weight formats (csr, bcsr, nm): pack from dense,
 * unpack to dense, validate a packed buffer.  Layout: core/sparse.h.
 * Kernels that consume them: ops/spmm.c (+ _avx2, _avx512). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/sparse.h"
#include "shrink.h"

#define HDR_BYTES 128 /* header padded to a multiple of SH_SPARSE_ALIGN */
#define MAX_DIM ((int64_t)1 << 31)

static uint64_t align_up(uint64_t v) { return (v + SH_SPARSE_ALIGN - 1) / SH_SPARSE_ALIGN * SH_SPARSE_ALIGN; }

int sh_format_is_sparse(sh_format f) { return f == SH_CSR || f == SH_BCSR || f == SH_NM; }

static sh_format kind_fmt(int kind)
{
    return kind == SH_SPK_CSR ? SH_CSR : kind == SH_SPK_BCSR ? SH_BCSR : SH_NM;
}

int64_t sh_sp_nm_per_row(int64_t cols, int n, int m)
{
    int64_t tail = cols % m;
    return cols / m * n + (tail < n ? tail : n);
}

static int m_ok(int m) { return m == 2 || m == 4 || m == 8 || m == 16; }

/* Offsets and total from kind, rows, cols, nnz, idx_bytes, bw (no checks). */
static void layout(sh_sparse_hdr *h)
{
    uint64_t rows = (uint64_t)h->rows, nnz = (uint64_t)h->nnz;
    h->off_scale = 0;
    if (h->kind == SH_SPK_NM) {
        h->off_ptr = 0;
        h->off_idx = HDR_BYTES;
        uint64_t per = sh_sp_nm_codes(h) ? (uint64_t)sh_sp_words32(h) * 4 : (uint64_t)sh_sp_words(h) * 2;
        h->off_val = align_up(h->off_idx + rows * per);
    } else {
        uint64_t nblk = nnz / h->bw;
        h->off_ptr = HDR_BYTES;
        h->off_idx = align_up(h->off_ptr + (rows + 1) * 4);
        h->off_val = align_up(h->off_idx + nblk * h->idx_bytes);
    }
    h->total = h->off_val + nnz * 4;
}

static sh_sparse_hdr *alloc_buf(const sh_sparse_hdr *proto, sh_error *err)
{
    size_t n = (size_t)proto->total;
    sh_sparse_hdr *h = aligned_alloc(SH_SPARSE_ALIGN, align_up(n));
    if (!h) {
        sh_err(err, SH_ENOMEM, "out of memory for a %s buffer of %zu bytes", sh_format_get(kind_fmt(proto->kind))->name, n);
        return NULL;
    }
    memset(h, 0, n);
    *h = *proto;
    return h;
}

static int wrap_tensor(sh_sparse_hdr *h, int owns, sh_tensor **out, sh_error *err)
{
    sh_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        if (owns) free(h);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    t->fmt = kind_fmt(h->kind);
    t->ndim = 2;
    t->shape[0] = h->rows;
    t->shape[1] = h->cols;
    t->data = h;
    t->nbytes = (size_t)h->total;
    t->owns = owns;
    *out = t;
    return SH_OK;
}

/* Keep the n largest |w| of group g[0..len) (ties: lower column first; NaN
 * counts as the largest): sets keep[i]. */
static void top_n(const float *g, int len, int n, unsigned char *keep)
{
    memset(keep, 0, (size_t)len);
    for (int t = 0; t < n && t < len; t++) {
        int best = -1;
        float bm = -1.0f;
        for (int i = 0; i < len; i++) {
            if (keep[i]) continue;
            float a = isnan(g[i]) ? INFINITY : fabsf(g[i]);
            if (best < 0 || a > bm) { best = i; bm = a; }
        }
        if (best < 0) break;
        keep[best] = 1;
    }
}

int sh_sparse_pack(sh_format fmt, const float *w, int64_t rows, int64_t cols, const sh_sparse_opts *o,
                   sh_tensor **out, sh_error *err)
{
    static const sh_sparse_opts defaults = {0};
    if (!o) o = &defaults;
    *out = NULL;
    if (!sh_format_is_sparse(fmt))
        return sh_err(err, SH_EINVAL, "sparse pack: format %d is not csr, bcsr or nm", (int)fmt);
    const char *fname = sh_format_get(fmt)->name;
    if (rows < 1 || cols < 1 || rows >= MAX_DIM || cols >= MAX_DIM)
        return sh_err(err, SH_ESHAPE, "sparse pack (%s): matrix [%lld,%lld] must have 1..2^31-1 rows and columns",
                      fname, (long long)rows, (long long)cols);
    if (!w) return sh_err(err, SH_EINVAL, "sparse pack (%s): no data", fname);
    sh_sparse_hdr p = {0};
    p.magic = SH_SPARSE_MAGIC;
    p.version = SH_SPARSE_VERSION;
    p.vfmt = SH_SPV_F32;
    p.rows = rows;
    p.cols = cols;

    if (fmt == SH_NM) {
        int n = o->n ? o->n : 2, m = o->m ? o->m : 4;
        if (!m_ok(m) || n < 1 || n > m)
            return sh_err(err, SH_EINVAL, "sparse pack (nm): %d:%d unsupported (m must be 2, 4, 8 or 16 and 1 <= n <= m)", n, m);
        p.kind = SH_SPK_NM;
        int codes = n == 2 && m == 4;
        p.idx_bytes = codes ? 4 : 2;
        p.bw = codes ? 2 : 16;
        p.n = (uint8_t)n;
        p.m = (uint8_t)m;
        int64_t per_row = sh_sp_nm_per_row(cols, n, m);
        p.nnz = rows * per_row;
        if (!o->enforce) { /* check first: a clear error, no allocation */
            for (int64_t r = 0; r < rows; r++)
                for (int64_t c0 = 0; c0 < cols; c0 += m) {
                    int len = (int)(cols - c0 < m ? cols - c0 : m), cnt = 0;
                    for (int i = 0; i < len; i++) cnt += w[r * cols + c0 + i] != 0.0f;
                    if (cnt > n)
                        return sh_err(err, SH_EINVAL,
                                      "sparse pack (nm %d:%d): matrix [%lld,%lld] row %lld columns %lld..%lld hold %d "
                                      "non-zeros, more than %d of %d (enforce to keep the largest magnitudes)",
                                      n, m, (long long)rows, (long long)cols, (long long)r, (long long)c0,
                                      (long long)(c0 + len - 1), cnt, n, m);
                }
        }
        layout(&p);
        sh_sparse_hdr *h = alloc_buf(&p, err);
        if (!h) return err ? err->code : SH_ENOMEM;
        uint16_t *bm = (uint16_t *)((char *)h + h->off_idx);
        float *val = (float *)((char *)h + h->off_val);
        int64_t words = sh_sp_words(h), words32 = sh_sp_words32(h);
        uint32_t *cw = (uint32_t *)bm;
        unsigned char keep[16];
        for (int64_t r = 0; r < rows; r++) {
            const float *wr = w + r * cols;
            float *vr = val + r * per_row;
            int64_t q = 0;
            for (int64_t c0 = 0; c0 < cols; c0 += m) {
                int len = (int)(cols - c0 < m ? cols - c0 : m);
                top_n(wr + c0, len, n, keep);
                for (int i = 0; i < len; i++)
                    if (keep[i]) {
                        int64_t c = c0 + i;
                        if (h->bw == 2) cw[r * words32 + q / 16] |= (uint32_t)i << (2 * (q % 16));
                        else bm[r * words + c / 16] |= (uint16_t)(1u << (c % 16));
                        vr[q++] = wr[c];
                    }
            }
        }
        return wrap_tensor(h, 1, out, err);
    }

    int bw = 1;
    if (fmt == SH_BCSR) {
        bw = o->block ? o->block : 4;
        if (bw != 2 && bw != 4 && bw != 8 && bw != 16)
            return sh_err(err, SH_EINVAL, "sparse pack (bcsr): block width %d unsupported (2, 4, 8 or 16)", bw);
    }
    int64_t ncb = (cols + bw - 1) / bw; /* column blocks */
    int ib = o->idx_bytes ? o->idx_bytes : (ncb <= 65536 ? 2 : 4);
    if ((ib != 2 && ib != 4) || (ib == 2 && ncb > 65536))
        return sh_err(err, SH_EINVAL, "sparse pack (%s): %d-byte indices cannot address %lld column blocks", fname, ib,
                      (long long)ncb);
    int64_t nblk = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t b = 0; b < ncb; b++) {
            int64_t c1 = (b + 1) * bw < cols ? (b + 1) * bw : cols;
            for (int64_t c = b * bw; c < c1; c++)
                if (w[r * cols + c] != 0.0f) { nblk++; break; }
        }
    if (nblk >= ((int64_t)1 << 32))
        return sh_err(err, SH_EUNSUPPORTED, "sparse pack (%s): %lld blocks exceed the 2^32 limit", fname, (long long)nblk);
    p.kind = fmt == SH_CSR ? SH_SPK_CSR : SH_SPK_BCSR;
    p.idx_bytes = (uint8_t)ib;
    p.bw = (uint8_t)bw;
    p.nnz = nblk * bw;
    layout(&p);
    sh_sparse_hdr *h = alloc_buf(&p, err);
    if (!h) return err ? err->code : SH_ENOMEM;
    uint32_t *ptr = (uint32_t *)((char *)h + h->off_ptr);
    char *idx = (char *)h + h->off_idx;
    float *val = (float *)((char *)h + h->off_val);
    int64_t q = 0;
    for (int64_t r = 0; r < rows; r++) {
        ptr[r] = (uint32_t)q;
        for (int64_t b = 0; b < ncb; b++) {
            int64_t c0 = b * bw, c1 = (b + 1) * bw < cols ? (b + 1) * bw : cols, c;
            for (c = c0; c < c1; c++)
                if (w[r * cols + c] != 0.0f) break;
            if (c == c1) continue;
            if (ib == 2) ((uint16_t *)idx)[q] = (uint16_t)b;
            else ((uint32_t *)idx)[q] = (uint32_t)b;
            for (c = c0; c < c1; c++) val[q * bw + (c - c0)] = w[r * cols + c];
            q++;
        }
    }
    ptr[rows] = (uint32_t)q;
    return wrap_tensor(h, 1, out, err);
}

static inline uint32_t idx_at(const sh_sparse_hdr *h, int64_t j)
{
    return h->idx_bytes == 2 ? ((const uint16_t *)sh_sp_idx(h))[j] : ((const uint32_t *)sh_sp_idx(h))[j];
}

/* Scatter into dst[0..n) (row-major [rows, cols]); indices out of range are
 * skipped, so a corrupt buffer never writes out of bounds. */
static void unpack_into(const sh_sparse_hdr *h, float *dst, int64_t n)
{
    memset(dst, 0, (size_t)n * sizeof *dst);
    const float *val = sh_sp_val(h);
    int64_t cols = h->cols;
    if (h->kind == SH_SPK_NM) {
        int64_t words = sh_sp_words(h), per_row = sh_sp_nm_per_row(cols, h->n, h->m);
        const uint16_t *bm = sh_sp_idx(h);
        if (sh_sp_nm_codes(h)) {
            for (int64_t r = 0; r < h->rows && r * cols < n; r++)
                for (int64_t j = 0; j < per_row; j++) {
                    int64_t c = 4 * (j / 2) + sh_sp_code((const uint32_t *)bm + r * sh_sp_words32(h), j), e = r * cols + c;
                    if (c < cols && e < n) dst[e] = val[r * per_row + j];
                }
            return;
        }
        for (int64_t r = 0; r < h->rows && r * cols < n; r++) {
            int64_t q = 0;
            for (int64_t wd = 0; wd < words; wd++)
                for (uint32_t b = bm[r * words + wd]; b && q < per_row; b &= b - 1) {
                    int64_t c = wd * 16 + __builtin_ctz(b), e = r * cols + c;
                    float v = val[r * per_row + q++];
                    if (c < cols && e < n) dst[e] = v;
                }
        }
        return;
    }
    const uint32_t *ptr = sh_sp_ptr(h);
    int bw = h->bw;
    for (int64_t r = 0; r < h->rows && r * cols < n; r++)
        for (int64_t j = ptr[r]; j < ptr[r + 1] && j < h->nnz / bw; j++) {
            int64_t c0 = (int64_t)idx_at(h, j) * bw;
            for (int l = 0; l < bw; l++) {
                int64_t c = c0 + l, e = r * cols + c;
                if (c < cols && e < n) dst[e] = val[j * bw + l];
            }
        }
}

void sh_sparse_to_f32(const void *src, float *dst, int64_t n)
{
    const sh_sparse_hdr *h = src;
    if (n <= 0) return;
    if (!h || h->magic != SH_SPARSE_MAGIC) {
        memset(dst, 0, (size_t)n * sizeof *dst);
        return;
    }
    unpack_into(h, dst, n < h->rows * h->cols ? n : h->rows * h->cols);
    if (n > h->rows * h->cols) memset(dst + h->rows * h->cols, 0, (size_t)(n - h->rows * h->cols) * sizeof *dst);
}

int sh_sparse_unpack(const sh_tensor *t, float *w, sh_error *err)
{
    sh_sparse_info info;
    int rc = sh_sparse_get_info(t, &info, err);
    if (rc) return rc;
    unpack_into(t->data, w, info.rows * info.cols);
    return SH_OK;
}

#define BAD(...) sh_err(err, SH_EFORMAT, "corrupt sparse buffer: " __VA_ARGS__)

int sh_sparse_validate(const void *data, size_t nbytes, sh_format *fmt, sh_error *err)
{
    if (!data || nbytes < sizeof(sh_sparse_hdr))
        return BAD("%zu bytes, shorter than its %zu-byte header", nbytes, sizeof(sh_sparse_hdr));
    if ((uintptr_t)data % 8)
        return sh_err(err, SH_EINVAL, "sparse buffer at %p is not 8-byte aligned (copy it to malloc'ed memory)", data);
    const sh_sparse_hdr *h = data;
    if (h->magic != SH_SPARSE_MAGIC) return BAD("bad magic 0x%08x", h->magic);
    if (h->version != SH_SPARSE_VERSION) return BAD("version %u, expected %u", h->version, SH_SPARSE_VERSION);
    if (h->kind < SH_SPK_CSR || h->kind > SH_SPK_NM) return BAD("unknown kind %u", h->kind);
    const char *fname = sh_format_get(kind_fmt(h->kind))->name;
    if (h->vfmt != SH_SPV_F32 || h->off_scale != 0 || h->reserved != 0)
        return BAD("%s: value format %u / scale offset / reserved fields unsupported", fname, h->vfmt);
    if (h->rows < 1 || h->cols < 1 || h->rows >= MAX_DIM || h->cols >= MAX_DIM)
        return BAD("%s: dims [%lld,%lld] out of range", fname, (long long)h->rows, (long long)h->cols);
    sh_sparse_hdr e = *h;
    if (h->kind == SH_SPK_NM) {
        int codes = h->n == 2 && h->m == 4;
        if (!m_ok(h->m) || h->n < 1 || h->n > h->m || h->idx_bytes != (codes ? 4 : 2) || h->bw != (codes ? 2 : 16))
            return BAD("nm: %u:%u, index bytes %u, word %u unsupported", h->n, h->m, h->idx_bytes, h->bw);
        if (h->nnz != h->rows * sh_sp_nm_per_row(h->cols, h->n, h->m))
            return BAD("nm %u:%u [%lld,%lld]: %lld values, expected %lld", h->n, h->m, (long long)h->rows,
                       (long long)h->cols, (long long)h->nnz, (long long)(h->rows * sh_sp_nm_per_row(h->cols, h->n, h->m)));
    } else {
        int bw = h->bw;
        if (h->kind == SH_SPK_CSR ? bw != 1 : (bw != 2 && bw != 4 && bw != 8 && bw != 16))
            return BAD("%s: block width %u", fname, bw);
        if (h->idx_bytes != 2 && h->idx_bytes != 4) return BAD("%s: index bytes %u", fname, h->idx_bytes);
        if (h->n || h->m) return BAD("%s: n:m fields set", fname);
        int64_t ncb = (h->cols + bw - 1) / bw;
        if (h->nnz < 0 || h->nnz % bw || h->nnz / bw > h->rows * ncb)
            return BAD("%s [%lld,%lld]: %lld values", fname, (long long)h->rows, (long long)h->cols, (long long)h->nnz);
    }
    layout(&e);
    if (e.off_ptr != h->off_ptr || e.off_idx != h->off_idx || e.off_val != h->off_val || e.total != h->total)
        return BAD("%s [%lld,%lld]: array offsets or total size disagree with the header counts", fname,
                   (long long)h->rows, (long long)h->cols);
    if (h->total != nbytes)
        return BAD("%s [%lld,%lld]: header says %llu bytes, buffer holds %zu", fname, (long long)h->rows,
                   (long long)h->cols, (unsigned long long)h->total, nbytes);
    const float *val = sh_sp_val(h);
    if (sh_sp_nm_codes(h)) {
        int64_t w32 = sh_sp_words32(h), per_row = sh_sp_nm_per_row(h->cols, 2, 4);
        for (int64_t r = 0; r < h->rows; r++) {
            const uint32_t *cr = (const uint32_t *)sh_sp_idx(h) + r * w32;
            for (int64_t j = 0; j < per_row; j++) {
                int64_t c0 = 4 * (j / 2), c = c0 + sh_sp_code(cr, j);
                if (c >= h->cols)
                    return BAD("nm 2:4: row %lld value %lld at column %lld, past column %lld", (long long)r, (long long)j,
                               (long long)c, (long long)h->cols - 1);
                if ((j & 1) && c <= c0 + (int64_t)sh_sp_code(cr, j - 1))
                    return BAD("nm 2:4: row %lld columns %lld..%lld: codes not increasing", (long long)r, (long long)c0,
                               (long long)c0 + 3);
            }
            if (per_row % 16 && cr[w32 - 1] >> (2 * (per_row % 16)))
                return BAD("nm 2:4: row %lld has codes past its %lld values", (long long)r, (long long)per_row);
        }
    } else if (h->kind == SH_SPK_NM) {
        const uint16_t *bm = sh_sp_idx(h);
        int64_t words = sh_sp_words(h);
        int n = h->n, m = h->m;
        for (int64_t r = 0; r < h->rows; r++)
            for (int64_t wd = 0; wd < words; wd++) {
                uint32_t b = bm[r * words + wd];
                for (int g = 0; g < 16; g += m) {
                    int64_t c0 = wd * 16 + g;
                    int len = c0 >= h->cols ? 0 : (int)(h->cols - c0 < m ? h->cols - c0 : m);
                    uint32_t gb = (b >> g) & ((1u << m) - 1);
                    int want = len < n ? len : n;
                    if (gb >> len) return BAD("nm: row %lld has bits set past column %lld", (long long)r, (long long)h->cols);
                    if (__builtin_popcount(gb) != want)
                        return BAD("nm %d:%d: row %lld columns %lld..%lld keep %d values, expected %d", n, m, (long long)r,
                                   (long long)c0, (long long)(c0 + len - 1), __builtin_popcount(gb), want);
                }
            }
    } else {
        const uint32_t *ptr = sh_sp_ptr(h);
        int bw = h->bw;
        int64_t ncb = (h->cols + bw - 1) / bw, nblk = h->nnz / bw;
        if (ptr[0] != 0 || ptr[h->rows] != (uint64_t)nblk)
            return BAD("%s: row pointers start at %u and end at %u, expected 0 and %lld", fname, ptr[0], ptr[h->rows],
                       (long long)nblk);
        for (int64_t r = 0; r < h->rows; r++) /* all pointers first: no index is read past the array */
            if (ptr[r + 1] < ptr[r]) return BAD("%s: row pointers decrease at row %lld", fname, (long long)r);
        for (int64_t r = 0; r < h->rows; r++) {
            int64_t prev = -1;
            for (int64_t j = ptr[r]; j < ptr[r + 1]; j++) {
                int64_t c = idx_at(h, j);
                if (c >= ncb || c <= prev)
                    return BAD("%s: row %lld entry %lld has column%s %lld (%s, %lld column%s)", fname, (long long)r,
                               (long long)(j - ptr[r]), bw > 1 ? " block" : "", (long long)c,
                               c >= ncb ? "out of range" : "not increasing", (long long)ncb, bw > 1 ? " blocks" : "s");
                prev = c;
                if (c == ncb - 1)
                    for (int64_t cc = c * bw; cc < (c + 1) * bw; cc++)
                        if (cc >= h->cols && val[j * bw + (cc - c * bw)] != 0.0f)
                            return BAD("bcsr: row %lld has a value past column %lld", (long long)r, (long long)h->cols);
            }
        }
    }
    if (fmt) *fmt = kind_fmt(h->kind);
    return SH_OK;
}

int sh_sparse_wrap(void *data, size_t nbytes, int owns, sh_tensor **out, sh_error *err)
{
    *out = NULL;
    void *buf = data;
    if ((uintptr_t)data % SH_SPARSE_ALIGN) { /* kernels want aligned arrays: copy */
        buf = aligned_alloc(SH_SPARSE_ALIGN, align_up(nbytes ? nbytes : 1));
        if (!buf) return sh_err(err, SH_ENOMEM, "out of memory for a sparse buffer of %zu bytes", nbytes);
        memcpy(buf, data, nbytes);
        if (owns) free(data);
        owns = 1;
    }
    int rc = sh_sparse_validate(buf, nbytes, NULL, err);
    if (rc) {
        if (owns) free(buf);
        return rc;
    }
    return wrap_tensor(buf, owns, out, err);
}

int sh_sparse_get_info(const sh_tensor *t, sh_sparse_info *info, sh_error *err)
{
    memset(info, 0, sizeof *info);
    if (!t || !sh_format_is_sparse(t->fmt) || !t->data)
        return sh_err(err, SH_EINVAL, "tensor is not a sparse (csr, bcsr, nm) tensor with data");
    const sh_sparse_hdr *h = t->data;
    if (h->magic != SH_SPARSE_MAGIC || kind_fmt(h->kind) != t->fmt || t->ndim != 2 || t->shape[0] != h->rows ||
        t->shape[1] != h->cols || t->nbytes != h->total)
        return sh_err(err, SH_EFORMAT, "sparse tensor: header disagrees with the tensor's format, shape or size");
    info->fmt = t->fmt;
    info->rows = h->rows;
    info->cols = h->cols;
    info->stored = h->nnz;
    const float *v = sh_sp_val(h);
    for (int64_t i = 0; i < h->nnz; i++) info->nonzero += v[i] != 0.0f;
    info->block = h->kind == SH_SPK_BCSR ? h->bw : 1;
    info->n = h->n;
    info->m = h->m;
    info->idx_bytes = h->idx_bytes;
    info->bytes = (size_t)h->total;
    return SH_OK;
}
