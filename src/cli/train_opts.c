/* train_opts.c - the training options shared by `shrink train` and
 * `shrink distill` (and any later command that fine-tunes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stddef.h>

#include "cli.h"

static const char *const builtins[] = {"mlp", "mlp-small", "lenet5", "cnn", "cnn-small", "llama-tiny", "llama-2l", NULL};

int cli_train_option(const char *C, int argc, char **argv, int *i, sh_train_opts *o)
{
    static const struct {
        const char *flag;
        int64_t lo, hi;
        size_t off, size;
    } ints[] = {
#define I(flag, lo, hi, field) {flag, lo, hi, offsetof(sh_train_opts, field), sizeof(((sh_train_opts *)0)->field)}
        I("--epochs", 1, 100000, epochs),
        I("--batch", 1, 1 << 20, batch),
        I("--accum", 1, 1 << 20, accum),
        I("--seed", 0, INT64_MAX, seed),
        I("--threads", 0, 1024, nthreads),
        I("--checkpoint-every", 1, 1 << 30, checkpoint_every),
        I("--max-steps", 1, INT64_MAX / 2, max_steps),
        I("--seq-len", 2, 1 << 20, seq_len),
        I("--step-size", 1, 1 << 20, step_size),
#undef I
    };
    static const struct {
        const char *flag;
        double lo, hi;
        size_t off;
    } flts[] = {
        {"--lr", 1e-12, 1e3, offsetof(sh_train_opts, lr)},
        {"--momentum", 0, 0.999999, offsetof(sh_train_opts, momentum)},
        {"--weight-decay", 0, 10, offsetof(sh_train_opts, weight_decay)},
        {"--warmup", 0, 1, offsetof(sh_train_opts, warmup)},
        {"--gamma", 1e-9, 1, offsetof(sh_train_opts, gamma)},
        {"--label-smoothing", 0, 0.999, offsetof(sh_train_opts, label_smoothing)},
    };
    const char *a = argv[*i], *v;
    if (strcmp(a, "--nesterov") == 0) {
        o->nesterov = 1;
        return 1;
    }
    const char **str = strcmp(a, "--optimizer") == 0    ? &o->optimizer
                       : strcmp(a, "--schedule") == 0   ? &o->schedule
                       : strcmp(a, "--checkpoint") == 0 ? &o->checkpoint
                                                        : NULL;
    if (str) {
        if (!(v = cli_arg(C, argc, argv, i))) return -1;
        *str = v;
        return 1;
    }
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
        if (strcmp(a, ints[k].flag) != 0) continue;
        int64_t iv;
        if (!(v = cli_arg(C, argc, argv, i)) || cli_int(C, a, v, ints[k].lo, ints[k].hi, &iv)) return -1;
        char *dst = (char *)o + ints[k].off;
        if (ints[k].size == sizeof(int)) *(int *)dst = (int)iv;
        else *(int64_t *)dst = iv; /* int64_t and uint64_t fields */
        return 1;
    }
    for (size_t k = 0; k < sizeof flts / sizeof flts[0]; k++) {
        if (strcmp(a, flts[k].flag) != 0) continue;
        double fv;
        if (!(v = cli_arg(C, argc, argv, i)) || cli_float(C, a, v, flts[k].lo, flts[k].hi, &fv)) return -1;
        *(float *)((char *)o + flts[k].off) = (float)fv;
        return 1;
    }
    return 0;
}

int cli_train_check(const char *C, const sh_train_opts *o, const char *data, const char *tok)
{
    if (strcmp(o->optimizer, "sgd") && strcmp(o->optimizer, "adamw"))
        return cli_usage(C, "--optimizer must be sgd or adamw, got '%s'", o->optimizer);
    if (strcmp(o->schedule, "const") && strcmp(o->schedule, "cosine") && strcmp(o->schedule, "step") &&
        strcmp(o->schedule, "onecycle"))
        return cli_usage(C, "--schedule must be const, cosine, step or onecycle, got '%s'", o->schedule);
    if (tok && strncmp(data, "text:", 5) != 0)
        return cli_usage(C, "--tokenizer applies to text: data sets, not '%s'", data);
    return 0;
}

int cli_model_kind_ok(const char *C, const char *what, const char *name)
{
    for (int k = 0; builtins[k]; k++)
        if (strcmp(name, builtins[k]) == 0) return 0;
    if (access(name, F_OK) != 0 && !strchr(name, '.') && !strchr(name, '/'))
        return cli_usage(C, "unknown %s '%s' (built-in: mlp, mlp-small, lenet5, cnn, cnn-small, llama-tiny, llama-2l; or a model file)",
                         what, name);
    return 0;
}

int cli_load_model(const char *C, const char *in, int64_t seed, sh_graph **g)
{
    sh_error err = {0};
    int builtin = 0;
    for (int k = 0; builtins[k]; k++) builtin |= strcmp(in, builtins[k]) == 0;
    if (access(in, F_OK) != 0 && builtin) {
        if (sh_model_build(in, (uint64_t)seed, g, &err)) return cli_fail(C, &err);
    } else if (sh_model_load(in, g, &err))
        return cli_fail(C, &err);
    return EXIT_OK;
}

int cli_model_for_data(const char *name, const char *data, const sh_dataset *tr, const sh_train_opts *o,
                       sh_graph **g, sh_error *err)
{
    int builtin = 0;
    for (int k = 0; builtins[k]; k++) builtin |= strcmp(name, builtins[k]) == 0;
    if (!builtin) return sh_model_load(name, g, err);
    if (strcmp(name, "llama-tiny") == 0) {
        if (tr->kind != 2) return sh_err(err, SH_EINVAL, "llama-tiny trains on text (--data text:FILE), not %s", data);
        sh_llama_config c = {64, 172, 4, 4, 4, tr->vocab > 0 ? tr->vocab : 256, o->seq_len > 0 ? o->seq_len : 128, 1};
        return sh_llama_build(&c, o->seed, g, err);
    }
    if (strcmp(name, "llama-2l") == 0) { /* distill: 2-layer student, stories260K's dims */
        if (tr->kind != 2) return sh_err(err, SH_EINVAL, "llama-2l trains on text (--data text:FILE), not %s", data);
        sh_llama_config c = {64, 172, 2, 8, 4, tr->vocab > 0 ? tr->vocab : 512, o->seq_len > 0 ? o->seq_len : 256, 1};
        return sh_llama_build(&c, o->seed, g, err);
    }
    if (tr->kind != 1)
        return sh_err(err, SH_EINVAL, "%s trains on images (e.g. --data fashion-mnist:train), not %s", name, data);
    return sh_model_build(name, o->seed, g, err);
}

char *cli_with_tok(const char *spec, const char *tok)
{
    if (!tok || strncmp(spec, "text:", 5) != 0 || strstr(spec, ",tok=")) return NULL;
    size_t n = strlen(spec) + strlen(tok) + 8;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s,tok=%s", spec, tok);
    return s;
}
