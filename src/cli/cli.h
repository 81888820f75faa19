/* cli.h - shared helpers of the shrink command-line tool. */
#ifndef SH_CLI_H
#define SH_CLI_H
#include <stdint.h>
#include <stdio.h>

#include "shrink.h"

/* Exit codes, the same for every command (documented in --help). */
enum {
    EXIT_OK = 0,
    EXIT_FAIL = 1,      /* the operation failed (error message says why) */
    EXIT_USAGE = 2,     /* bad command line: unknown option, non-numeric value */
    EXIT_IO = 3,        /* a file could not be read or written */
    EXIT_FORMAT = 4,    /* corrupt, truncated or unsupported model/data */
};

#define CLI_EXIT_CODES                                                                  \
    "Exit codes: 0 success, 1 operation failed, 2 bad command line,\n"                  \
    "            3 file not readable/writable, 4 corrupt or unsupported model or data.\n"

/* Print "shrink CMD: message" to stderr; returns the exit code for an error code. */
int cli_fail(const char *cmd, const sh_error *err);
int cli_exit_code(int sh_code);
/* Usage error: prints "shrink CMD: message (see shrink CMD --help)", returns EXIT_USAGE. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Strict numeric parsing: whole string must be a number.  On failure print a
 * usage error naming the option and return nonzero. */
int cli_int(const char *cmd, const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out);
int cli_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out);
/* The value of option argv[*i] (advances *i); prints a usage error if missing. */
const char *cli_arg(const char *cmd, int argc, char **argv, int *i);
int cli_is_help(const char *a);

/* Progress line on stderr with rate and ETA: "label  done/total  rate unit/s  ETA 12s".
 * Printed only when stderr is a terminal or after > 2 s, at most every 0.5 s. */
typedef struct cli_progress {
    const char *label, *unit;
    int64_t total;
    double t0, last;
    int shown, quiet;
} cli_progress;
void cli_progress_start(cli_progress *p, const char *label, const char *unit, int64_t total, int quiet);
void cli_progress_update(cli_progress *p, int64_t done, const char *extra);
void cli_progress_end(cli_progress *p);

/* s as a JSON string literal (quotes, escapes; NULL as ""). */
void cli_json_str(FILE *f, const char *s);

/* Human-friendly numbers. */
const char *cli_bytes(int64_t b, char *buf, int n);

/* Training options shared by train and distill (train_opts.c).
 * cli_train_option: 1 if argv[*i] was a training option (consumed, *i
 * advanced past its value), 0 if not, -1 after printing a usage error. */
int cli_train_option(const char *cmd, int argc, char **argv, int *i, sh_train_opts *o);
/* Checks optimizer/schedule names and --tokenizer use; prints and returns
 * EXIT_USAGE on error, 0 if fine. */
int cli_train_check(const char *cmd, const sh_train_opts *o, const char *data, const char *tok);
/* 0 if name is a built-in model kind or looks like a file; else a usage error. */
/* Load a model file, or build a built-in model (a name that is not an
 * existing file) with seed; EXIT_OK or the exit code after printing the error. */
int cli_load_model(const char *cmd, const char *in, int64_t seed, sh_graph **g);
int cli_model_kind_ok(const char *cmd, const char *what, const char *name);
/* The model to train: a built-in kind (built for the dataset: llama-tiny for
 * text, the others for images, seeded by o->seed) or a model file. */
int cli_model_for_data(const char *name, const char *data, const sh_dataset *tr, const sh_train_opts *o,
                       sh_graph **g, sh_error *err);
/* "SPEC,tok=TOK" for text: specs given --tokenizer (malloc'ed), else NULL. */
char *cli_with_tok(const char *spec, const char *tok);

/* commands */
int cmd_info(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_distill(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
/* cmd_sensitivity.c: shrink sensitivity; the automatic modes of quantize
 * (--budget-bytes, --max-drop) and prune (--target-*), which cmd_quantize /
 * cmd_prune hand over when argv holds one of those options (cli_has_opt:
 * 1 if argv[1..] holds one of the NULL-terminated names). */
int cmd_sensitivity(int argc, char **argv);
int cmd_quantize_auto(int argc, char **argv);
int cmd_prune_auto(int argc, char **argv);
int cli_has_opt(int argc, char **argv, const char *const *names);
/* cmd_distill.c: shrink quantize --qat (quantization-aware training) */
int cmd_quantize_qat(int argc, char **argv);
#endif
