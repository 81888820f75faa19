/* test_sparse.c - sparse weight formats (csr, bcsr, nm): pack / unpack /
 * validate, and every kernel path of the sparse linear against a dense
 * reference on random shapes (odd sizes, empty rows) and sparsities. */
#include <stdlib.h>
#include <string.h>

#include "core/sparse.h"
#include "test.h"

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}
static float rng_f(uint64_t *s) { return (float)((rng_next(s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

/* Random [rows, cols] with about `sparsity` zeros and rows r % 5 == 3 empty. */
static float *rand_matrix(int64_t rows, int64_t cols, double sparsity, uint64_t *s)
{
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double u = (rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
            float v = rng_f(s);
            w[r * cols + c] = (u < sparsity || (rows > 4 && r % 5 == 3)) ? 0.0f : (v == 0.0f ? 0.5f : v);
        }
    return w;
}

/* y = x w^T + bias in double; tol from sum |w x|. */
static void dense_ref(const float *w, int64_t n, int64_t k, const float *x, int64_t B, const float *bias, double *y,
                      double *mag)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t r = 0; r < n; r++) {
            double s = bias ? bias[r] : 0.0, m = bias ? fabs(bias[r]) : 0.0;
            for (int64_t c = 0; c < k; c++) {
                s += (double)w[r * k + c] * x[b * k + c];
                m += fabs((double)w[r * k + c] * x[b * k + c]);
            }
            y[b * n + r] = s;
            mag[b * n + r] = m;
        }
}

static const int paths[3] = {SH_SPMM_REF, SH_SPMM_AVX2, SH_SPMM_AVX512};
static const char *path_names[4] = {"auto", "ref", "avx2", "avx512"};

typedef struct fmt_case {
    sh_format fmt;
    sh_sparse_opts o;
    const char *name;
} fmt_case;

static const fmt_case cases[] = {
    {SH_CSR, {0}, "csr"},
    {SH_CSR, {.idx_bytes = 4}, "csr/u32"},
    {SH_BCSR, {.block = 2}, "bcsr1x2"},
    {SH_BCSR, {.block = 4}, "bcsr1x4"},
    {SH_BCSR, {.block = 8}, "bcsr1x8"},
    {SH_BCSR, {.block = 16, .idx_bytes = 4}, "bcsr1x16/u32"},
    {SH_NM, {.n = 2, .m = 4, .enforce = 1}, "nm2:4"},
    {SH_NM, {.n = 4, .m = 8, .enforce = 1}, "nm4:8"},
    {SH_NM, {.n = 1, .m = 4, .enforce = 1}, "nm1:4"},
    {SH_NM, {.n = 12, .m = 16, .enforce = 1}, "nm12:16"},
};

/* Check all paths and thread counts of one case; returns failures. */
static int check_case(const fmt_case *fc, int64_t n, int64_t k, double sparsity, const int64_t *batches, int nb,
                      int threads, uint64_t *s)
{
    sh_error err = {0};
    float *w = rand_matrix(n, k, sparsity, s);
    sh_tensor *t = NULL;
    int rc = sh_sparse_pack(fc->fmt, w, n, k, &fc->o, &t, &err);
    CHECK_OK(rc, &err);
    if (rc) { free(w); return 1; }
    CHECK(t->nbytes == ((sh_sparse_hdr *)t->data)->total);
    CHECK_OK(sh_sparse_validate(t->data, t->nbytes, NULL, &err), &err);
    float *wd = malloc((size_t)(n * k) * sizeof *wd);
    CHECK_OK(sh_sparse_unpack(t, wd, &err), &err);
    if (fc->fmt != SH_NM) CHECK(memcmp(w, wd, (size_t)(n * k) * sizeof *w) == 0);
    int64_t bmax = 1;
    for (int i = 0; i < nb; i++) bmax = batches[i] > bmax ? batches[i] : bmax;
    float *x = malloc((size_t)(bmax * k) * sizeof *x), *bias = malloc((size_t)n * sizeof *bias);
    float *y = malloc((size_t)(bmax * n) * sizeof *y);
    double *yr = malloc((size_t)(bmax * n) * sizeof *yr), *mag = malloc((size_t)(bmax * n) * sizeof *mag);
    for (int64_t i = 0; i < bmax * k; i++) x[i] = rng_f(s);
    for (int64_t i = 0; i < n; i++) bias[i] = rng_f(s);
    int fails = 0;
    for (int bi = 0; bi < nb; bi++) {
        int64_t B = batches[bi];
        int use_bias = (bi & 1) == 0;
        dense_ref(wd, n, k, x, B, use_bias ? bias : NULL, yr, mag);
        for (int pi = 0; pi < 3; pi++) {
            if (!sh_spmm_path_ok(paths[pi])) continue;
            for (int nt = threads ? 2 : 1; nt <= (threads ? 2 : 1); nt++) {
                for (int64_t i = 0; i < B * n; i++) y[i] = NAN;
                rc = sh_spmm(t, x, B, use_bias ? bias : NULL, y, nt, paths[pi], NULL, &err);
                CHECK_OK(rc, &err);
                for (int64_t i = 0; i < B * n && !rc; i++)
                    if (!(fabs(y[i] - yr[i]) <= 1e-5 * mag[i] + 1e-6)) {
                        sh_test_fail(__FILE__, __LINE__,
                                     "%s [%lld,%lld] sparsity %.2f B %lld path %s threads %d: y[%lld] = %.9g, want %.9g",
                                     fc->name, (long long)n, (long long)k, sparsity, (long long)B, path_names[paths[pi]],
                                     nt, (long long)i, y[i], yr[i]);
                        fails++;
                        break;
                    }
            }
        }
    }
    free(x), free(bias), free(y), free(yr), free(mag), free(w), free(wd);
    sh_tensor_free(t);
    return fails;
}

TEST(sparse_format_rows)
{
    const sh_format_traits *c = sh_format_get(SH_CSR), *b = sh_format_get(SH_BCSR), *m = sh_format_get(SH_NM);
    CHECK(c && b && m);
    CHECK(strcmp(c->name, "csr") == 0 && strcmp(b->name, "bcsr") == 0 && strcmp(m->name, "nm") == 0);
    CHECK(c->packed && b->packed && m->packed && c->is_float && !c->from_f32);
    CHECK(sh_format_from_name("nm") == SH_NM && sh_format_from_name("csr") == SH_CSR);
    CHECK(sh_format_bytes(SH_CSR, 100) == 0);
    CHECK(sh_format_is_sparse(SH_BCSR) && !sh_format_is_sparse(SH_F32));
    /* to_f32 of the table unpacks the whole matrix */
    float w[2 * 8] = {0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 0, 0, 0, -4, 0, 0};
    sh_error err = {0};
    sh_tensor *t = NULL;
    CHECK_OK(sh_sparse_pack(SH_CSR, w, 2, 8, NULL, &t, &err), &err);
    float back[16];
    c->to_f32(t->data, back, 16);
    CHECK(memcmp(back, w, sizeof w) == 0);
    sh_sparse_info info;
    CHECK_OK(sh_sparse_get_info(t, &info, &err), &err);
    CHECK(info.stored == 4 && info.nonzero == 4 && info.rows == 2 && info.cols == 8 && info.idx_bytes == 2);
    CHECK(t->nbytes == info.bytes && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 8);
    sh_tensor_free(t);
}

TEST(sparse_pack_unpack_and_sizes)
{
    uint64_t s = 12345;
    sh_error err = {0};
    int64_t n = 256, k = 512;
    float *w = rand_matrix(n, k, 0.9, &s);
    int64_t nz = 0;
    for (int64_t i = 0; i < n * k; i++) nz += w[i] != 0.0f;
    sh_tensor *t = NULL;
    CHECK_OK(sh_sparse_pack(SH_CSR, w, n, k, NULL, &t, &err), &err);
    /* header 128 + row pointers + u16 indices + f32 values (64-aligned arrays) */
    size_t want = 128 + (size_t)((n + 1) * 4 + 63) / 64 * 64 + (size_t)(nz * 2 + 63) / 64 * 64 + (size_t)nz * 4;
    CHECK_MSG(t->nbytes == want, "csr bytes %zu, want %zu", t->nbytes, want);
    CHECK(t->nbytes < (size_t)(n * k * 4) / 6);
    sh_tensor_free(t);

    /* 2:4 enforced: half the values, 1 bit of bitmap per column */
    CHECK_OK(sh_sparse_pack(SH_NM, w, n, k, &(sh_sparse_opts){.n = 2, .m = 4, .enforce = 1}, &t, &err), &err);
    want = 128 + (size_t)(n * (k / 16) * 2) + (size_t)(n * k / 2) * 4;
    CHECK_MSG(t->nbytes == want, "2:4 bytes %zu, want %zu", t->nbytes, want);
    sh_tensor_free(t);

    /* nm keeps the n largest magnitudes of each group */
    float g[2 * 6] = {1, -5, 3, 0.5f, 7, -8, /* 2:4 with cols=6: groups [0..3], [4..5] */
                      0, 0, 0, 2, 0, 0};
    CHECK_OK(sh_sparse_pack(SH_NM, g, 2, 6, &(sh_sparse_opts){.n = 2, .m = 4, .enforce = 1}, &t, &err), &err);
    float back[12], want_nm[12] = {0, -5, 3, 0, 7, -8, 0, 0, 0, 2, 0, 0};
    CHECK_OK(sh_sparse_unpack(t, back, &err), &err);
    CHECK(memcmp(back, want_nm, sizeof back) == 0);
    sh_tensor_free(t);

    /* N:M violated without enforce: one clear error naming the row/columns */
    int rc = sh_sparse_pack(SH_NM, g, 2, 6, &(sh_sparse_opts){.n = 2, .m = 4}, &t, &err);
    CHECK(rc == SH_EINVAL && t == NULL);
    CHECK_MSG(strstr(err.msg, "row 0") && strstr(err.msg, "columns 0..3") && strstr(err.msg, "2:4"), "msg: %s", err.msg);
    /* an N:M-conforming matrix packs without enforce, exactly */
    CHECK_OK(sh_sparse_pack(SH_NM, want_nm, 2, 6, &(sh_sparse_opts){.n = 2, .m = 4}, &t, &err), &err);
    CHECK_OK(sh_sparse_unpack(t, back, &err), &err);
    CHECK(memcmp(back, want_nm, sizeof back) == 0);
    sh_tensor_free(t);

    /* bad options */
    CHECK(sh_sparse_pack(SH_NM, g, 2, 6, &(sh_sparse_opts){.n = 2, .m = 5}, &t, &err) == SH_EINVAL);
    CHECK(sh_sparse_pack(SH_BCSR, g, 2, 6, &(sh_sparse_opts){.block = 3}, &t, &err) == SH_EINVAL);
    CHECK(sh_sparse_pack(SH_F32, g, 2, 6, NULL, &t, &err) == SH_EINVAL);
    CHECK(sh_sparse_pack(SH_CSR, g, 0, 6, NULL, &t, &err) == SH_ESHAPE);
    float *wide = calloc(70000, sizeof *wide);
    wide[69999] = 1.0f;
    CHECK(sh_sparse_pack(SH_CSR, wide, 1, 70000, &(sh_sparse_opts){.idx_bytes = 2}, &t, &err) == SH_EINVAL);
    CHECK_OK(sh_sparse_pack(SH_CSR, wide, 1, 70000, NULL, &t, &err), &err); /* auto: u32 indices */
    CHECK(((sh_sparse_hdr *)t->data)->idx_bytes == 4);
    float y = 0, x1[70000];
    for (int i = 0; i < 70000; i++) x1[i] = (float)(i % 3);
    CHECK_OK(sh_spmm(t, x1, 1, NULL, &y, 1, SH_SPMM_AUTO, NULL, &err), &err);
    CHECK(y == x1[69999]);
    sh_tensor_free(t);
    free(wide);
    free(w);
}

TEST(sparse_kernels_match_dense_small)
{
    /* odd shapes, every format, every path (one thread; the large test splits);
     * 9 x 128: the four-rows-at-once 2:4 kernel and its remainder row */
    static const int64_t shapes[][2] = {{1, 1}, {3, 5}, {7, 17}, {13, 33}, {32, 64}, {37, 100}, {5, 257}, {64, 48}, {9, 128}};
    static const double sp[] = {0.0, 0.5, 0.9, 0.99};
    static const int64_t batches[] = {1, 2, 8, 9, 17, 33, 64, 70};
    uint64_t s = 99;
    int fails = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            for (size_t p = 0; p < sizeof sp / sizeof sp[0] && fails < 5; p++)
                fails += check_case(&cases[c], shapes[i][0], shapes[i][1], sp[p], batches, 8, 0, &s);
}

TEST(sparse_kernels_match_dense_large)
{
    /* sizes that exercise the unrolled SIMD loops and the thread split */
    static const int64_t batches[] = {1, 8, 64};
    uint64_t s = 7;
    int64_t n = sh_test_quick() ? 64 : 150, k = sh_test_quick() ? 200 : 1031;
    static const double sp[] = {0.0, 0.5, 0.9, 0.99};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t p = 0; p < 4; p++) check_case(&cases[c], n, k, sp[p], batches, 3, 0, &s);
    /* two threads last (an idle OpenMP worker spins and slows what follows) */
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) check_case(&cases[c], n, k, 0.5, batches, 3, 1, &s);
}

TEST(sparse_all_zero_and_workspace)
{
    sh_error err = {0};
    float w[4 * 20] = {0}, x[3 * 20], bias[4] = {1, 2, 3, 4}, y[12];
    for (int i = 0; i < 60; i++) x[i] = (float)i;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sh_tensor *t = NULL;
        CHECK_OK(sh_sparse_pack(cases[c].fmt, w, 4, 20, &cases[c].o, &t, &err), &err);
        size_t wsn = sh_spmm_workspace(t, 3, 2);
        void *ws = aligned_alloc(64, (wsn + 63) / 64 * 64);
        for (int pi = 0; pi < 3; pi++) {
            if (!sh_spmm_path_ok(paths[pi])) continue;
            CHECK_OK(sh_spmm(t, x, 3, bias, y, 2, paths[pi], ws, &err), &err);
            for (int i = 0; i < 12; i++) CHECK(y[i] == bias[i % 4]);
        }
        free(ws);
        CHECK(sh_spmm(t, x, 0, bias, y, 2, SH_SPMM_REF, NULL, &err) == SH_EINVAL);
        sh_tensor_free(t);
    }
    /* a dense (non-sparse) tensor is refused */
    int64_t sh2[2] = {2, 2};
    sh_tensor *d = sh_tensor_new(SH_F32, 2, sh2, &err);
    CHECK(sh_spmm(d, x, 1, NULL, y, 1, 0, NULL, &err) == SH_EINVAL);
    sh_tensor_free(d);
}

/* Corrupt a copy of t's buffer with f and expect SH_EFORMAT. */
static void expect_corrupt(const sh_tensor *t, void (*f)(sh_sparse_hdr *h), const char *what, const char *needle)
{
    sh_error err = {0};
    sh_sparse_hdr *h = aligned_alloc(64, (t->nbytes + 63) / 64 * 64);
    memcpy(h, t->data, t->nbytes);
    f(h);
    int rc = sh_sparse_validate(h, t->nbytes, NULL, &err);
    CHECK_MSG(rc == SH_EFORMAT, "%s: validate gave %d (%s)", what, rc, err.msg);
    CHECK_MSG(!needle || strstr(err.msg, needle), "%s: message '%s' lacks '%s'", what, err.msg, needle);
    sh_tensor *w = NULL;
    CHECK(sh_sparse_wrap(h, t->nbytes, 1, &w, &err) == SH_EFORMAT && w == NULL); /* frees h */
}

static void bad_col(sh_sparse_hdr *h) { ((uint16_t *)((char *)h + h->off_idx))[3] = 60000; }
static void dup_col(sh_sparse_hdr *h)
{
    uint16_t *i = (uint16_t *)((char *)h + h->off_idx);
    i[1] = i[0];
}
static void bad_ptr(sh_sparse_hdr *h) { ((uint32_t *)((char *)h + h->off_ptr))[2] = 1u << 30; }
static void bad_last_ptr(sh_sparse_hdr *h) { ((uint32_t *)((char *)h + h->off_ptr))[h->rows] -= 1; }
static void bad_magic(sh_sparse_hdr *h) { h->magic ^= 1; }
static void bad_nnz(sh_sparse_hdr *h) { h->nnz += 1; }
static void bad_rows(sh_sparse_hdr *h) { h->rows = -5; }
static void bad_off(sh_sparse_hdr *h) { h->off_val += 64; }
static void nm_extra_bit(sh_sparse_hdr *h) { ((uint16_t *)((char *)h + h->off_idx))[0] |= 0xffff; }
static uint32_t *codes_of(sh_sparse_hdr *h) { return (uint32_t *)((char *)h + h->off_idx); }
static void nm24_not_increasing(sh_sparse_hdr *h) { codes_of(h)[0] = 0; }
static void nm24_past_cols(sh_sparse_hdr *h) { codes_of(h)[1] |= 3u << 10; } /* value 21: column 40 + 3 of 42 */
static void nm24_pad_bits(sh_sparse_hdr *h) { codes_of(h)[1] |= 1u << 31; }  /* 22 values: word 1 uses 6 codes */
static void nm_past_cols(sh_sparse_hdr *h)
{
    int64_t words = sh_sp_words(h);
    ((uint16_t *)((char *)h + h->off_idx))[words - 1] |= 0x8000;
}

TEST(sparse_validate_rejects_corruption)
{
    uint64_t s = 5;
    sh_error err = {0};
    float *w = rand_matrix(16, 40, 0.5, &s);
    sh_tensor *csr = NULL, *nm = NULL, *nm24 = NULL;
    CHECK_OK(sh_sparse_pack(SH_CSR, w, 16, 40, NULL, &csr, &err), &err);
    CHECK_OK(sh_sparse_pack(SH_NM, w, 16, 40, &(sh_sparse_opts){.n = 4, .m = 8, .enforce = 1}, &nm, &err), &err);
    float *w42 = rand_matrix(16, 42, 0.5, &s);
    CHECK_OK(sh_sparse_pack(SH_NM, w42, 16, 42, &(sh_sparse_opts){.enforce = 1}, &nm24, &err), &err);
    CHECK(((sh_sparse_hdr *)nm24->data)->bw == 2); /* 2:4 uses 2-bit codes */
    expect_corrupt(nm24, nm24_not_increasing, "2:4 codes not increasing", "not increasing");
    expect_corrupt(nm24, nm24_past_cols, "2:4 code past cols", "past column");
    expect_corrupt(nm24, nm24_pad_bits, "2:4 padding codes", "codes past");
    expect_corrupt(csr, bad_col, "column out of range", "out of range");
    expect_corrupt(csr, dup_col, "repeated column", "not increasing");
    expect_corrupt(csr, bad_ptr, "row pointer", "row pointers");
    expect_corrupt(csr, bad_last_ptr, "last row pointer", "row pointers");
    expect_corrupt(csr, bad_magic, "magic", "magic");
    expect_corrupt(csr, bad_nnz, "nnz", NULL);
    expect_corrupt(csr, bad_rows, "rows", "dims");
    expect_corrupt(csr, bad_off, "offset", "offsets");
    expect_corrupt(nm, nm_extra_bit, "nm popcount", "keep");
    expect_corrupt(nm, nm_past_cols, "nm past cols", "past column");
    /* truncated / short buffers */
    CHECK(sh_sparse_validate(csr->data, csr->nbytes - 4, NULL, &err) == SH_EFORMAT);
    CHECK(sh_sparse_validate(csr->data, 10, NULL, &err) == SH_EFORMAT);
    CHECK(sh_sparse_validate(NULL, 0, NULL, &err) == SH_EFORMAT);

    /* random byte flips: validation either accepts (and the kernels then run
     * in bounds, checked under ASan) or says SH_EFORMAT; never crashes */
    sh_tensor *ts[3] = {csr, nm, nm24};
    int accepted = 0, rejected = 0;
    for (int it = 0; it < 400; it++) {
        const sh_tensor *t = ts[it % 3];
        sh_sparse_hdr *h = aligned_alloc(64, (t->nbytes + 63) / 64 * 64);
        memcpy(h, t->data, t->nbytes);
        for (int f = 0; f < 1 + (int)(rng_next(&s) % 3); f++) {
            size_t at = (size_t)(rng_next(&s) % t->nbytes);
            ((unsigned char *)h)[at] ^= (unsigned char)(1u << (rng_next(&s) % 8));
        }
        sh_tensor *wt = NULL;
        int rc = sh_sparse_wrap(h, t->nbytes, 1, &wt, &err);
        CHECK(rc == SH_OK || rc == SH_EFORMAT);
        if (rc == SH_OK) {
            accepted++;
            /* a flip in the dims may survive validation: use the tensor's shape */
            int64_t R = wt->shape[0], C = wt->shape[1];
            float *xx = calloc((size_t)C, sizeof *xx), *yy = malloc((size_t)R * sizeof *yy);
            for (int pi = 0; pi < 3; pi++)
                if (sh_spmm_path_ok(paths[pi])) CHECK_OK(sh_spmm(wt, xx, 1, NULL, yy, 1, paths[pi], NULL, &err), &err);
            free(xx), free(yy);
            float *d = malloc((size_t)(R * C) * sizeof *d);
            CHECK_OK(sh_sparse_unpack(wt, d, &err), &err);
            free(d);
            sh_tensor_free(wt);
        } else rejected++;
    }
    CHECK(rejected > 100 && accepted > 10);

    /* round trip through a file; a misaligned copy is re-aligned by wrap */
    char path[512];
    snprintf(path, sizeof path, "%s/w.csr", sh_test_tmpdir());
    CHECK_OK(sh_write_atomic(path, nm->data, nm->nbytes, &err), &err);
    void *buf = NULL;
    size_t nb = 0;
    CHECK_OK(sh_read_file(path, &buf, &nb, &err), &err);
    char *mis = malloc(nb + 8);
    memcpy(mis + 8, buf, nb);
    free(buf);
    sh_tensor *back = NULL;
    sh_format f = SH_F32;
    CHECK_OK(sh_sparse_validate(mis + 8, nb, &f, &err), &err);
    CHECK(f == SH_NM);
    CHECK_OK(sh_sparse_wrap(mis + 8, nb, 0, &back, &err), &err);
    CHECK(back->fmt == SH_NM && back->nbytes == nm->nbytes && memcmp(back->data, nm->data, nb) == 0);
    sh_tensor_free(back);
    free(mis);
    sh_tensor_free(csr);
    sh_tensor_free(nm);
    sh_tensor_free(nm24);
    free(w42);
    free(w);
}
