/* checkpoint.c - training checkpoints: model initializers (weights and
 * BatchNorm statistics), optimizer state and training position.
 *
 * Layout (little-endian):
 *   "SHRKCKPT" u32 version(1) u32 0
 *   position: step epoch micro rng batch accum done   (7 x 64-bit)
 *   optimizer: i32 kind, i32 n, i64 t, then per parameter i64 numel
 *              followed by numel f32 (m) and, for AdamW, numel f32 (v)
 *   i32 count of f32 initializers, each: u32 name length, name bytes,
 *              i32 ndim, i64 dims, f32 data
 *   u32 CRC-32 of everything before it
 * Written atomically (temporary file + rename).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "shrink.h"
#include "train/train.h"

#define CK_MAGIC "SHRKCKPT"
#define CK_VERSION 1u

typedef struct buf {
    unsigned char *p;
    size_t n, cap;
    int oom;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_i32(buf *b, int32_t v) { put(b, &v, 4); }
static void put_i64(buf *b, int64_t v) { put(b, &v, 8); }

int sh_checkpoint_save(const char *path, const sh_graph *g, const sh_optimizer *opt, const sh_train_pos *pos,
                       sh_error *err)
{
    buf b = {0};
    put(&b, CK_MAGIC, 8);
    put_u32(&b, CK_VERSION);
    put_u32(&b, 0);
    put_i64(&b, pos->step);
    put_i64(&b, pos->epoch);
    put_i64(&b, pos->micro);
    put_i64(&b, (int64_t)pos->rng);
    put_i64(&b, pos->batch);
    put_i64(&b, pos->accum);
    put_i64(&b, pos->done);
    put_i32(&b, opt ? opt->kind : 0);
    put_i32(&b, opt ? opt->n : 0);
    put_i64(&b, opt ? opt->t : 0);
    for (int i = 0; opt && i < opt->n; i++) {
        int64_t n = opt->m[i] ? opt->numel[i] : 0;
        put_i64(&b, n);
        if (!n) continue;
        put(&b, opt->m[i], sizeof(float) * (size_t)n);
        if (opt->kind == SH_OPT_ADAMW) put(&b, opt->v[i], sizeof(float) * (size_t)n);
    }
    int32_t count = 0;
    for (int i = 0; i < g->n_values; i++)
        if (g->values[i].init && g->values[i].init->fmt == SH_F32) count++;
    put_i32(&b, count);
    for (int i = 0; i < g->n_values; i++) {
        const sh_tensor *t = g->values[i].init;
        if (!t || t->fmt != SH_F32) continue;
        uint32_t len = (uint32_t)strlen(g->values[i].name);
        put_u32(&b, len);
        put(&b, g->values[i].name, len);
        put_i32(&b, t->ndim);
        for (int d = 0; d < t->ndim; d++) put_i64(&b, t->shape[d]);
        put(&b, t->data, sizeof(float) * (size_t)sh_tensor_numel(t));
    }
    uint32_t crc = b.oom ? 0 : (uint32_t)crc32(crc32(0L, Z_NULL, 0), b.p, (uInt)b.n);
    put_u32(&b, crc);
    if (b.oom) {
        free(b.p);
        return sh_err(err, SH_ENOMEM, "checkpoint %s: out of memory", path);
    }
    int rc = sh_write_atomic(path, b.p, b.n, err);
    free(b.p);
    return rc;
}

typedef struct rd {
    const unsigned char *p;
    size_t n, off;
    int bad;
} rd;

static void get(rd *r, void *d, size_t n)
{
    if (r->bad || n > r->n - r->off) {
        r->bad = 1;
        memset(d, 0, n);
        return;
    }
    memcpy(d, r->p + r->off, n);
    r->off += n;
}
static int64_t get_i64(rd *r)
{
    int64_t v;
    get(r, &v, 8);
    return v;
}
static int32_t get_i32(rd *r)
{
    int32_t v;
    get(r, &v, 4);
    return v;
}

int sh_checkpoint_load(const char *path, sh_graph *g, sh_optimizer *opt, sh_train_pos *pos, int *found,
                       sh_error *err)
{
    *found = 0;
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) return SH_OK;
        return sh_err(err, SH_EIO, "checkpoint %s: %s", path, strerror(errno));
    }
    void *data;
    size_t n;
    int rc = sh_read_file(path, &data, &n, err);
    if (rc) return rc;
    rd r = {data, n, 0, 0};
    rc = SH_OK;
    if (n < 8 + 8 + 56 + 16 + 4 + 4 || memcmp(data, CK_MAGIC, 8) != 0) {
        rc = sh_err(err, SH_EFORMAT, "checkpoint %s: not a shrink checkpoint (bad magic or too short)", path);
        goto out;
    }
    uint32_t stored;
    memcpy(&stored, (unsigned char *)data + n - 4, 4);
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), data, (uInt)(n - 4));
    if (crc != stored) {
        rc = sh_err(err, SH_EFORMAT, "checkpoint %s: checksum mismatch (file corrupt or truncated)", path);
        goto out;
    }
    r.n = n - 4;
    r.off = 8;
    uint32_t ver = (uint32_t)get_i32(&r);
    get_i32(&r);
    if (ver != CK_VERSION) {
        rc = sh_err(err, SH_EUNSUPPORTED, "checkpoint %s: version %u, this build reads version %u", path, ver,
                    CK_VERSION);
        goto out;
    }
    sh_train_pos p;
    p.step = get_i64(&r);
    p.epoch = get_i64(&r);
    p.micro = get_i64(&r);
    p.rng = (uint64_t)get_i64(&r);
    p.batch = get_i64(&r);
    p.accum = get_i64(&r);
    p.done = get_i64(&r);
    int kind = get_i32(&r), np = get_i32(&r);
    int64_t t = get_i64(&r);
    if (opt && (kind != opt->kind || np != opt->n)) {
        rc = sh_err(err, SH_EINVAL, "checkpoint %s: written by optimizer %s with %d parameters, now %s with %d", path,
                    kind == SH_OPT_ADAMW ? "adamw" : "sgd", np, opt->kind == SH_OPT_ADAMW ? "adamw" : "sgd", opt->n);
        goto out;
    }
    if (opt) opt->t = t;
    for (int i = 0; i < np && !r.bad; i++) {
        int64_t ne = get_i64(&r);
        if (ne < 0 || (uint64_t)ne > (r.n - r.off) / 4) {
            r.bad = 1;
            break;
        }
        if (!ne) continue;
        if (opt) {
            if ((rc = sh_optimizer_alloc_state(opt, i, ne, err))) goto out;
            get(&r, opt->m[i], sizeof(float) * (size_t)ne);
            if (kind == SH_OPT_ADAMW) get(&r, opt->v[i], sizeof(float) * (size_t)ne);
        } else {
            r.off += sizeof(float) * (size_t)ne * (kind == SH_OPT_ADAMW ? 2 : 1);
        }
    }
    int32_t count = get_i32(&r);
    int matched = 0;
    for (int k = 0; k < count && !r.bad; k++) {
        uint32_t len = (uint32_t)get_i32(&r);
        if (len > 4096 || len > r.n - r.off) {
            r.bad = 1;
            break;
        }
        char name[4097];
        get(&r, name, len);
        name[len] = 0;
        int nd = get_i32(&r);
        if (nd < 0 || nd > SH_MAX_DIMS) {
            r.bad = 1;
            break;
        }
        int64_t dims[SH_MAX_DIMS];
        for (int d = 0; d < nd; d++) dims[d] = get_i64(&r);
        int64_t ne = sh_shape_numel(nd, dims);
        if (r.bad || ne < 0 || (uint64_t)ne > (r.n - r.off) / 4) {
            r.bad = 1;
            break;
        }
        int v = sh_graph_find(g, name);
        sh_tensor *t = v >= 0 ? g->values[v].init : NULL;
        char a[128], b[128];
        if (!t || t->fmt != SH_F32) {
            rc = sh_err(err, SH_EINVAL, "checkpoint %s: weight '%s' is not in the model (different model?)", path,
                        name);
            goto out;
        }
        if (t->ndim != nd || sh_tensor_numel(t) != ne || memcmp(t->shape, dims, sizeof(int64_t) * (size_t)nd)) {
            rc = sh_err(err, SH_ESHAPE, "checkpoint %s: weight '%s' is %s, the model's is %s", path, name,
                        sh_shape_str(nd, dims, a, sizeof a), sh_shape_str(t->ndim, t->shape, b, sizeof b));
            goto out;
        }
        get(&r, t->data, sizeof(float) * (size_t)ne);
        matched++;
    }
    if (r.bad) {
        rc = sh_err(err, SH_EFORMAT, "checkpoint %s: truncated or malformed record", path);
        goto out;
    }
    *pos = p;
    *found = 1;
out:
    free(data);
    return rc;
}
