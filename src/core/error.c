/* error.c - error objects: every failure goes back to the caller with context. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "shrink.h"

int sh_err(sh_error *err, int code, const char *fmt, ...)
{
    if (!err) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
    return code;
}

int sh_error_wrap(sh_error *err, const char *fmt, ...)
{
    if (!err) return SH_EINTERNAL;
    char prefix[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t np = strlen(prefix);
    if (np > sizeof err->msg / 2) np = sizeof err->msg / 2;
    memcpy(err->msg, prefix, np);
    err->msg[np] = ':';
    err->msg[np + 1] = ' ';
    size_t room = sizeof err->msg - np - 3, no = strlen(old);
    if (no > room) no = room;
    memcpy(err->msg + np + 2, old, no);
    err->msg[np + 2 + no] = 0;
    if (err->code == SH_OK) err->code = SH_EINTERNAL;
    return err->code;
}

const char *sh_strerror(int code)
{
    switch (code) {
    case SH_OK: return "ok";
    case SH_EINVAL: return "invalid argument";
    case SH_EIO: return "I/O error";
    case SH_EFORMAT: return "corrupt or truncated file";
    case SH_EUNSUPPORTED: return "unsupported";
    case SH_ESHAPE: return "shape mismatch";
    case SH_ENOMEM: return "out of memory";
    case SH_EINTERNAL: return "internal error";
    default: return "unknown error";
    }
}
