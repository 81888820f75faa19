/* idx.c - IDX files (the MNIST / Fashion-MNIST container), plain or gzipped.
 *
 * An IDX file is a big-endian header: two zero bytes, a type byte (0x08 =
 * unsigned byte), a rank byte, then one u32 per dimension, then the data.
 * zlib's gz* functions read gzipped and plain files alike.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "shrink.h"

/* Read the whole of a (possibly gzipped) file; what names it in errors. */
static int gz_slurp(const char *what, const char *path, unsigned char **out, size_t *n, sh_error *err)
{
    *out = NULL;
    *n = 0;
    errno = 0;
    FILE *probe = fopen(path, "rb");
    if (!probe) return sh_err(err, SH_EIO, "%s: cannot open %s: %s", what, path, strerror(errno));
    fclose(probe);
    gzFile f = gzopen(path, "rb");
    if (!f) return sh_err(err, SH_EIO, "%s: cannot open %s: %s", what, path, strerror(errno ? errno : ENOMEM));
    gzbuffer(f, 1 << 17);
    size_t cap = 1 << 20, len = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        gzclose(f);
        return sh_err(err, SH_ENOMEM, "%s: out of memory", what);
    }
    for (;;) {
        if (len == cap) {
            if (cap > ((size_t)1 << 33)) {
                free(buf);
                gzclose(f);
                return sh_err(err, SH_EFORMAT, "%s: %s: decompressed data larger than 8 GiB", what, path);
            }
            unsigned char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                gzclose(f);
                return sh_err(err, SH_ENOMEM, "%s: out of memory", what);
            }
            buf = nb;
            cap *= 2;
        }
        size_t want = cap - len;
        if (want > (1u << 30)) want = 1u << 30;
        int r = gzread(f, buf + len, (unsigned)want);
        if (r < 0) {
            int ze;
            const char *m = gzerror(f, &ze);
            int rc = sh_err(err, SH_EFORMAT, "%s: %s: corrupt gzip data (%s)", what, path, m ? m : "error");
            free(buf);
            gzclose(f);
            return rc;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    int ze = Z_OK;
    const char *m = gzerror(f, &ze);
    if (ze != Z_OK && ze != Z_STREAM_END) {
        int rc = sh_err(err, SH_EFORMAT, "%s: %s: truncated or corrupt gzip data (%s)", what, path, m ? m : "error");
        free(buf);
        gzclose(f);
        return rc;
    }
    gzclose(f);
    *out = buf;
    *n = len;
    return SH_OK;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Load an IDX file of unsigned bytes with the given rank (3 images, 1 labels).
 * dims receives the dimensions; *data the payload (malloc'ed). */
int sh_idx_load_u8(const char *what, const char *path, int rank, int64_t *dims, unsigned char **data,
                   sh_error *err)
{
    unsigned char *buf;
    size_t n;
    *data = NULL;
    int rc = gz_slurp(what, path, &buf, &n, err);
    if (rc) return rc;
    if (n < 4 || buf[0] != 0 || buf[1] != 0) {
        free(buf);
        return sh_err(err, SH_EFORMAT, "%s: %s: not an IDX file (bad magic)", what, path);
    }
    if (buf[2] != 0x08) {
        int t = buf[2];
        free(buf);
        return sh_err(err, SH_EFORMAT, "%s: %s: IDX element type 0x%02x, expected 0x08 (unsigned byte)", what, path, t);
    }
    if (buf[3] != rank) {
        int r = buf[3];
        free(buf);
        return sh_err(err, SH_EFORMAT, "%s: %s: IDX rank %d, expected %d (%s)", what, path, r, rank,
                      rank == 3 ? "images" : "labels");
    }
    size_t hdr = 4 + 4 * (size_t)rank;
    if (n < hdr) {
        free(buf);
        return sh_err(err, SH_EFORMAT, "%s: %s: truncated IDX header", what, path);
    }
    uint64_t total = 1;
    for (int i = 0; i < rank; i++) {
        dims[i] = be32(buf + 4 + 4 * i);
        if (dims[i] == 0 || dims[i] > (1 << 28)) {
            free(buf);
            return sh_err(err, SH_EFORMAT, "%s: %s: IDX dimension %d is %lld", what, path, i, (long long)dims[i]);
        }
        total *= (uint64_t)dims[i];
    }
    if (total > ((uint64_t)1 << 36) || n - hdr != total) {
        char s[96];
        sh_shape_str(rank, dims, s, sizeof s);
        free(buf);
        return sh_err(err, SH_EFORMAT, "%s: %s: IDX header says %s = %llu bytes of data, file has %zu", what, path, s,
                      (unsigned long long)total, n - hdr);
    }
    memmove(buf, buf + hdr, (size_t)total);
    *data = buf;
    return SH_OK;
}
