/* test_dataset.c - dataset specs: Fashion-MNIST (gzipped IDX), idx:, text:,
 * and clear errors for missing, corrupt and truncated files. */
#include <string.h>
#include <zlib.h>

#include "test.h"

#define FM_DIR "/usr/share/datasets/fashion-mnist"

static int have_fmnist(void)
{
    FILE *f = fopen(FM_DIR "/t10k-labels-idx1-ubyte.gz", "rb");
    if (f) fclose(f);
    return f != NULL;
}

static double img_sum(const sh_dataset *d, int64_t i)
{
    double s = 0;
    for (int k = 0; k < 784; k++) s += d->x[i * 784 + k];
    return s * 255.0;
}

TEST(dataset_fashion_mnist_test_split)
{
    if (!have_fmnist()) SKIP("Fashion-MNIST not installed (Debian package dataset-fashion-mnist)");
    sh_error err = {0};
    sh_dataset *d = NULL;
    CHECK_OK(sh_dataset_load("fashion-mnist:test", &d, &err), &err);
    CHECK(d->kind == 1 && d->n == 10000 && d->c == 1 && d->h == 28 && d->w == 28 && d->n_classes == 10);
    int first[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
    for (int i = 0; i < 10; i++) CHECK(d->y[i] == first[i]);
    CHECK_NEAR(img_sum(d, 0), 33456, 0.05);
    CHECK_NEAR(img_sum(d, 9999), 24390, 0.05);
    CHECK_NEAR(d->x[404], 98.0 / 255.0, 1e-7);
    CHECK_NEAR(d->x[405], 136.0 / 255.0, 1e-7);
    float mn = 1, mx = 0;
    for (int64_t i = 0; i < d->n * 784; i++) {
        if (d->x[i] < mn) mn = d->x[i];
        if (d->x[i] > mx) mx = d->x[i];
    }
    CHECK(mn == 0.0f && mx == 1.0f);
    int counts[10] = {0};
    for (int64_t i = 0; i < d->n; i++) counts[d->y[i]]++;
    for (int c = 0; c < 10; c++) CHECK(counts[c] == 1000);
    sh_dataset_free(d);
}

TEST(dataset_fashion_mnist_train_prefix)
{
    if (!have_fmnist()) SKIP("Fashion-MNIST not installed");
    sh_error err = {0};
    sh_dataset *d = NULL, *e = NULL;
    CHECK_OK(sh_dataset_load("fashion-mnist:train:100", &d, &err), &err);
    CHECK(d->n == 100 && d->n_classes == 10);
    int first[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
    for (int i = 0; i < 10; i++) CHECK(d->y[i] == first[i]);
    CHECK_NEAR(img_sum(d, 0), 76247, 0.05);
    CHECK_NEAR(d->x[404], 237.0 / 255.0, 1e-7);
    CHECK_OK(sh_dataset_load("fashion-mnist:train,n=100", &e, &err), &err);
    CHECK(e->n == 100 && memcmp(d->x, e->x, 100 * 784 * sizeof(float)) == 0);
    sh_dataset_free(d);
    sh_dataset_free(e);
    if (sh_test_quick()) return;
    CHECK_OK(sh_dataset_load("fashion-mnist:train", &d, &err), &err);
    CHECK(d->n == 60000);
    CHECK_NEAR(img_sum(d, 0), 76247, 0.05);
    CHECK_NEAR(img_sum(d, 59999), 16684, 0.05);
    sh_dataset_free(d);
}

/* write raw bytes, optionally gzipped */
static void write_file(const char *path, const unsigned char *b, size_t n, int gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        gzwrite(f, b, (unsigned)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        fwrite(b, 1, n, f);
        fclose(f);
    }
}

static size_t make_idx(unsigned char *b, int rank, const int *dims, int fill_bytes)
{
    size_t n = 0;
    b[n++] = 0, b[n++] = 0, b[n++] = 8, b[n++] = (unsigned char)rank;
    for (int i = 0; i < rank; i++) {
        b[n++] = (unsigned char)(dims[i] >> 24), b[n++] = (unsigned char)(dims[i] >> 16);
        b[n++] = (unsigned char)(dims[i] >> 8), b[n++] = (unsigned char)dims[i];
    }
    for (int i = 0; i < fill_bytes; i++) b[n++] = (unsigned char)(i * 7);
    return n;
}

TEST(dataset_idx_files_and_errors)
{
    sh_error err = {0};
    sh_dataset *d = NULL;
    char img[512], lab[512], spec[1200];
    const char *tmp = sh_test_tmpdir();
    unsigned char b[4096];
    int di[3] = {3, 4, 5}, dl[1] = {3};
    snprintf(img, sizeof img, "%s/img.gz", tmp);
    snprintf(lab, sizeof lab, "%s/lab.gz", tmp);
    write_file(img, b, make_idx(b, 3, di, 60), 1);
    size_t nl = make_idx(b, 1, dl, 0);
    b[nl++] = 2, b[nl++] = 0, b[nl++] = 1;
    write_file(lab, b, nl, 1);
    snprintf(spec, sizeof spec, "idx:%s,%s", img, lab);
    CHECK_OK(sh_dataset_load(spec, &d, &err), &err);
    CHECK(d && d->n == 3 && d->h == 4 && d->w == 5 && d->n_classes == 3 && d->y[0] == 2 && d->y[2] == 1);
    if (d) CHECK_NEAR(d->x[1], 7.0 / 255.0, 1e-7);
    sh_dataset_free(d);
    d = NULL;
    /* plain (not gzipped) IDX also loads */
    char plain[512];
    snprintf(plain, sizeof plain, "%s/img.idx", tmp);
    write_file(plain, b, make_idx(b, 3, di, 60), 0);
    snprintf(spec, sizeof spec, "idx:%s,%s,n=2", plain, lab);
    CHECK_OK(sh_dataset_load(spec, &d, &err), &err);
    CHECK(d && d->n == 2);
    sh_dataset_free(d);
    d = NULL;

    /* count mismatch: 4 labels for 3 images */
    int dl4[1] = {4};
    nl = make_idx(b, 1, dl4, 4);
    char lab4[512];
    snprintf(lab4, sizeof lab4, "%s/lab4.gz", tmp);
    write_file(lab4, b, nl, 1);
    snprintf(spec, sizeof spec, "idx:%s,%s", img, lab4);
    CHECK(sh_dataset_load(spec, &d, &err) == SH_EFORMAT && !d);
    CHECK_MSG(strstr(err.msg, "3 images") && strstr(err.msg, "4 labels"), "%s", err.msg);

    /* header counts that do not match the data */
    char shortf[512];
    snprintf(shortf, sizeof shortf, "%s/short.gz", tmp);
    write_file(shortf, b, make_idx(b, 3, di, 59), 1);
    snprintf(spec, sizeof spec, "idx:%s,%s", shortf, lab);
    CHECK(sh_dataset_load(spec, &d, &err) == SH_EFORMAT);
    CHECK_MSG(strstr(err.msg, "short.gz") && strstr(err.msg, "60 bytes") && strstr(err.msg, "59"), "%s", err.msg);

    /* bad magic */
    char bad[512];
    snprintf(bad, sizeof bad, "%s/bad.gz", tmp);
    write_file(bad, (const unsigned char *)"hello world, not idx", 20, 1);
    snprintf(spec, sizeof spec, "idx:%s,%s", bad, lab);
    CHECK(sh_dataset_load(spec, &d, &err) == SH_EFORMAT);
    CHECK_MSG(strstr(err.msg, "bad magic"), "%s", err.msg);

    /* labels file given as images: wrong rank */
    snprintf(spec, sizeof spec, "idx:%s,%s", lab, lab);
    CHECK(sh_dataset_load(spec, &d, &err) == SH_EFORMAT);
    CHECK_MSG(strstr(err.msg, "rank 1, expected 3"), "%s", err.msg);

    /* truncated gzip stream */
    size_t ni = make_idx(b, 3, di, 60);
    unsigned char z[8192];
    uLongf zn = sizeof z;
    /* gzip framing via gzopen, then cut the file */
    write_file(img, b, ni, 1);
    FILE *f = fopen(img, "rb");
    zn = fread(z, 1, sizeof z, f);
    fclose(f);
    char trunc[512];
    snprintf(trunc, sizeof trunc, "%s/trunc.gz", tmp);
    write_file(trunc, z, zn - 12, 0);
    snprintf(spec, sizeof spec, "idx:%s,%s", trunc, lab);
    CHECK(sh_dataset_load(spec, &d, &err) == SH_EFORMAT);
    CHECK_MSG(strstr(err.msg, "trunc.gz"), "%s", err.msg);

    /* corrupt gzip payload */
    z[zn / 2] ^= 0x55;
    z[zn / 2 + 1] ^= 0xAA;
    char corrupt[512];
    snprintf(corrupt, sizeof corrupt, "%s/corrupt.gz", tmp);
    write_file(corrupt, z, zn, 0);
    snprintf(spec, sizeof spec, "idx:%s,%s", corrupt, lab);
    CHECK(sh_dataset_load(spec, &d, &err) == SH_EFORMAT);
    CHECK_MSG(strstr(err.msg, "corrupt.gz"), "%s", err.msg);
    CHECK(!d);
}

TEST(dataset_spec_errors)
{
    sh_error err = {0};
    sh_dataset *d = NULL;
    CHECK(sh_dataset_load("cifar:train", &d, &err) == SH_EINVAL);
    CHECK_MSG(strstr(err.msg, "unknown kind 'cifar'"), "%s", err.msg);
    CHECK(sh_dataset_load("nocolon", &d, &err) == SH_EINVAL);
    CHECK(sh_dataset_load("fashion-mnist:valid", &d, &err) == SH_EINVAL);
    CHECK_MSG(strstr(err.msg, "unknown split 'valid'"), "%s", err.msg);
    CHECK(sh_dataset_load("fashion-mnist:train:abc", &d, &err) == SH_EINVAL);
    CHECK(sh_dataset_load("idx:/nonexistent/a.gz,/nonexistent/b.gz", &d, &err) == SH_EIO);
    CHECK_MSG(strstr(err.msg, "cannot open /nonexistent/a.gz") && strstr(err.msg, "No such file"), "%s", err.msg);
    CHECK(sh_dataset_load("idx:onlyone.gz", &d, &err) == SH_EINVAL);
    CHECK(sh_dataset_load("text:/nonexistent/x.txt", &d, &err) == SH_EIO);
    CHECK_MSG(strstr(err.msg, "/nonexistent/x.txt"), "%s", err.msg);
    CHECK(sh_dataset_load("fashion-mnist:test,bogus=1", &d, &err) == SH_EINVAL);
    CHECK(!d);
}

TEST(dataset_text_bytes)
{
    sh_error err = {0};
    char path[512], spec[600];
    snprintf(path, sizeof path, "%s/t.txt", sh_test_tmpdir());
    FILE *f = fopen(path, "wb");
    fputs("Hello\nworld\xc3\xa9", f);
    fclose(f);
    snprintf(spec, sizeof spec, "text:%s", path);
    sh_dataset *d = NULL;
    CHECK_OK(sh_dataset_load(spec, &d, &err), &err);
    CHECK(d->kind == 2 && d->n == 13 && d->vocab == 256 && d->n_docs == 1);
    CHECK(d->tokens[0] == 'H' && d->tokens[5] == '\n' && d->tokens[11] == 0xc3 && d->tokens[12] == 0xa9);
    CHECK(d->doc_off[0] == 0 && d->doc_off[1] == 13);
    sh_dataset_free(d);
}

TEST(dataset_text_tokenized)
{
    const char *sh = sh_test_shared();
    if (!sh) SKIP("no ../shared");
    char spec[1024];
    snprintf(spec, sizeof spec, "text:%s/data/text/tinystories_sample.txt,tok=%s/models/stories260K/tok512.bin", sh, sh);
    sh_error err = {0};
    sh_dataset *d = NULL;
    CHECK_OK(sh_dataset_load(spec, &d, &err), &err);
    CHECK(d->kind == 2 && d->vocab == 512 && d->n > 100 && d->n_docs >= 1);
    CHECK(d->tokens[0] == 1); /* BOS */
    for (int64_t i = 0; i < d->n; i++) CHECK(d->tokens[i] >= 0 && d->tokens[i] < 512);
    sh_dataset_free(d);
    snprintf(spec, sizeof spec, "text:%s/data/text/tinystories_sample.txt,tok=/nonexistent/tok.bin", sh);
    CHECK(sh_dataset_load(spec, &d, &err) == SH_EIO);
    CHECK_MSG(strstr(err.msg, "/nonexistent/tok.bin"), "%s", err.msg);
}
