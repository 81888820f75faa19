/* common.c - CLI helpers: errors, strict number parsing, progress lines. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int cli_exit_code(int c)
{
    switch (c) {
    case SH_OK: return EXIT_OK;
    case SH_EINVAL: return EXIT_USAGE;
    case SH_EIO: return EXIT_IO;
    case SH_EFORMAT: case SH_EUNSUPPORTED: return EXIT_FORMAT;
    default: return EXIT_FAIL;
    }
}

int cli_fail(const char *cmd, const sh_error *err)
{
    fprintf(stderr, "shrink %s: error: %s\n", cmd, err->msg[0] ? err->msg : sh_strerror(err->code));
    int c = cli_exit_code(err->code);
    return c == EXIT_OK ? EXIT_FAIL : c;
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "shrink %s: error: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see shrink %s --help)\n", cmd);
    va_end(ap);
    return EXIT_USAGE;
}

int cli_int(const char *cmd, const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno)
        return cli_usage(cmd, "%s expects an integer, got '%s'", opt, s);
    if (v < lo || v > hi)
        return cli_usage(cmd, "%s must be between %lld and %lld, got %lld", opt, (long long)lo, (long long)hi, v);
    *out = v;
    return 0;
}

int cli_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v))
        return cli_usage(cmd, "%s expects a number, got '%s'", opt, s);
    if (v < lo || v > hi) return cli_usage(cmd, "%s must be between %g and %g, got %g", opt, lo, hi, v);
    *out = v;
    return 0;
}

const char *cli_arg(const char *cmd, int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        cli_usage(cmd, "option %s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int cli_is_help(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0; }

void cli_progress_start(cli_progress *p, const char *label, const char *unit, int64_t total, int quiet)
{
    memset(p, 0, sizeof *p);
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->t0 = p->last = sh_now();
    p->quiet = quiet;
}

void cli_progress_update(cli_progress *p, int64_t done, const char *extra)
{
    if (p->quiet) return;
    double now = sh_now(), el = now - p->t0;
    if (now - p->last < 0.5 || (el < 2.0 && !isatty(2))) return;
    p->last = now;
    double rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 && p->total > 0 ? (double)(p->total - done) / rate : 0;
    fprintf(stderr, "%s%s  %lld/%lld  %.1f %s/s  ETA %.0fs%s%s%s", isatty(2) ? "\r" : "", p->label, (long long)done,
            (long long)p->total, rate, p->unit, eta, extra ? "  " : "", extra ? extra : "", isatty(2) ? "\033[K" : "\n");
    fflush(stderr);
    p->shown = 1;
}

void cli_progress_end(cli_progress *p)
{
    if (p->shown && isatty(2)) fprintf(stderr, "\n");
}

const char *cli_bytes(int64_t b, char *buf, int n)
{
    if (b < 10 * 1024) snprintf(buf, (size_t)n, "%lld B", (long long)b);
    else if (b < 10 * 1024 * 1024) snprintf(buf, (size_t)n, "%.1f KiB", (double)b / 1024);
    else snprintf(buf, (size_t)n, "%.1f MiB", (double)b / (1024 * 1024));
    return buf;
}

void cli_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p == '\r') fputs("\\r", f);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}
