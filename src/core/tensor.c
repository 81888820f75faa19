/* tensor.c - dense tensors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shrink.h"

int64_t sh_shape_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

int64_t sh_tensor_numel(const sh_tensor *t) { return sh_shape_numel(t->ndim, t->shape); }

static int check_shape(int ndim, const int64_t *shape, sh_error *err)
{
    if (ndim < 0 || ndim > SH_MAX_DIMS)
        return sh_err(err, SH_EINVAL, "tensor rank %d outside 0..%d", ndim, SH_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return sh_err(err, SH_ESHAPE, "negative dimension %lld", (long long)shape[i]);
        if (shape[i] > 0 && n > ((int64_t)1 << 40) / shape[i])
            return sh_err(err, SH_ENOMEM, "tensor too large");
        n *= shape[i];
    }
    return SH_OK;
}

sh_tensor *sh_tensor_new(sh_format fmt, int ndim, const int64_t *shape, sh_error *err)
{
    if (!sh_format_get(fmt)) { sh_err(err, SH_EINVAL, "unknown format %d", (int)fmt); return NULL; }
    if (check_shape(ndim, shape, err)) return NULL;
    sh_tensor *t = calloc(1, sizeof *t);
    if (!t) { sh_err(err, SH_ENOMEM, "out of memory"); return NULL; }
    t->fmt = fmt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = sh_format_bytes(fmt, sh_shape_numel(ndim, shape));
    t->data = calloc(1, t->nbytes ? t->nbytes : 1);
    if (!t->data) {
        free(t);
        char b[128];
        sh_err(err, SH_ENOMEM, "out of memory allocating tensor %s", sh_shape_str(ndim, shape, b, sizeof b));
        return NULL;
    }
    t->owns = 1;
    return t;
}

sh_tensor *sh_tensor_view(sh_format fmt, int ndim, const int64_t *shape, void *data, sh_error *err)
{
    if (!sh_format_get(fmt)) { sh_err(err, SH_EINVAL, "unknown format %d", (int)fmt); return NULL; }
    if (check_shape(ndim, shape, err)) return NULL;
    sh_tensor *t = calloc(1, sizeof *t);
    if (!t) { sh_err(err, SH_ENOMEM, "out of memory"); return NULL; }
    t->fmt = fmt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = sh_format_bytes(fmt, sh_shape_numel(ndim, shape));
    t->data = data;
    t->owns = 0;
    return t;
}

sh_tensor *sh_tensor_clone(const sh_tensor *src, sh_error *err)
{
    /* nbytes, not the shape, sizes the copy: packed (sparse) formats carry
     * their own size */
    sh_tensor *t = sh_tensor_view(src->fmt, src->ndim, src->shape, NULL, err);
    if (!t) return NULL;
    t->nbytes = src->nbytes;
    t->data = aligned_alloc(64, (src->nbytes + 63) / 64 * 64 + 64); /* sparse layouts align their arrays */
    if (!t->data) {
        free(t);
        sh_err(err, SH_ENOMEM, "out of memory copying a tensor of %zu bytes", src->nbytes);
        return NULL;
    }
    t->owns = 1;
    if (src->data && src->nbytes) memcpy(t->data, src->data, src->nbytes);
    else memset(t->data, 0, src->nbytes ? src->nbytes : 1);
    return t;
}

void sh_tensor_free(sh_tensor *t)
{
    if (!t) return;
    if (t->owns) free(t->data);
    free(t);
}

int sh_tensor_resize(sh_tensor *t, sh_format fmt, int ndim, const int64_t *shape, sh_error *err)
{
    if (check_shape(ndim, shape, err)) return err ? err->code : SH_EINVAL;
    size_t nb = sh_format_bytes(fmt, sh_shape_numel(ndim, shape));
    if (nb > t->nbytes || !t->data) {
        if (!t->owns && t->data) return sh_err(err, SH_EINVAL, "cannot resize a view");
        void *d = realloc(t->owns ? t->data : NULL, nb ? nb : 1);
        if (!d) return sh_err(err, SH_ENOMEM, "out of memory");
        t->data = d;
        t->owns = 1;
    }
    t->nbytes = nb;
    t->fmt = fmt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    return SH_OK;
}

char *sh_shape_str(int ndim, const int64_t *shape, char *buf, size_t n)
{
    size_t o = 0;
    if (n == 0) return buf;
    buf[0] = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}
