/* cmd_eval.c - shrink eval MODEL --data SPEC: accuracy (image classifiers)
 * or NLL/perplexity (language models), size, batch-1 latency, throughput. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char *usage_text =
    "Usage: shrink eval MODEL --data SPEC [options]\n"
    "\n"
    "Evaluate MODEL (.onnx or llama2.c .bin) on a data set: top-1 accuracy for\n"
    "image classifiers, NLL (nats/token) and perplexity for language models;\n"
    "parameters, file size, batch-1 median latency and batch-64 throughput\n"
    "(language models: latency of one token, throughput in tokens/s of the NLL pass).\n"
    "\n"
    "Options:\n"
    "  --data SPEC       data set (required): fashion-mnist:test, fashion-mnist:train,\n"
    "                    idx:IMAGES.gz,LABELS.gz, text:FILE, text:FILE,tok=TOK.bin\n"
    "  --tokenizer TOK   tokenizer (llama2.c tok*.bin) for a text: data set\n"
    "  --threads N       threads (default: all cores)\n"
    "  --batch N         items per inference batch for accuracy (default 64)\n"
    "  --limit N         evaluate only the first N items (images, or scored tokens)\n"
    "  --seq-len N       language models: context window (default: the model's)\n"
    "  --no-speed        skip the latency / throughput measurement\n"
    "  --json            one JSON object on stdout instead of a table\n"
    "  -q, --quiet       no progress lines\n"
    "  -h, --help        this help\n"
    "\n"
    "Examples:\n"
    "  shrink eval out/cnn.onnx --data fashion-mnist:test\n"
    "  shrink eval stories260K.bin --data text:stories.txt --tokenizer tok512.bin --json\n"
    "\n" CLI_EXIT_CODES;

static void progress_cb(void *ctx, int64_t done, int64_t total)
{
    cli_progress *p = ctx;
    p->total = total;
    cli_progress_update(p, done, NULL);
}

int cmd_eval(int argc, char **argv)
{
    const char *path = NULL, *spec = NULL, *tok = NULL, *v;
    int json = 0, speed = 1, quiet = 0;
    int64_t threads = 0, batch = 64, limit = 0, seq_len = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--json") == 0) json = 1;
        else if (strcmp(a, "--no-speed") == 0) speed = 0;
        else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) quiet = 1;
        else if (strcmp(a, "--data") == 0) {
            if (!(spec = cli_arg("eval", argc, argv, &i))) return EXIT_USAGE;
        } else if (strcmp(a, "--tokenizer") == 0) {
            if (!(tok = cli_arg("eval", argc, argv, &i))) return EXIT_USAGE;
        } else if (strcmp(a, "--threads") == 0) {
            if (!(v = cli_arg("eval", argc, argv, &i)) || cli_int("eval", a, v, 0, 1024, &threads)) return EXIT_USAGE;
        } else if (strcmp(a, "--batch") == 0) {
            if (!(v = cli_arg("eval", argc, argv, &i)) || cli_int("eval", a, v, 1, 1 << 20, &batch)) return EXIT_USAGE;
        } else if (strcmp(a, "--limit") == 0) {
            if (!(v = cli_arg("eval", argc, argv, &i)) || cli_int("eval", a, v, 1, INT64_MAX, &limit)) return EXIT_USAGE;
        } else if (strcmp(a, "--seq-len") == 0) {
            if (!(v = cli_arg("eval", argc, argv, &i)) || cli_int("eval", a, v, 2, 1 << 20, &seq_len)) return EXIT_USAGE;
        } else if (a[0] == '-' && a[1]) return cli_usage("eval", "unknown option '%s'", a);
        else if (!path) path = a;
        else return cli_usage("eval", "unexpected argument '%s' (one MODEL only)", a);
    }
    if (!path) return cli_usage("eval", "missing MODEL");
    if (!spec) return cli_usage("eval", "missing --data SPEC");

    /* --tokenizer TOK adds ",tok=TOK" to a text: spec that has none */
    char *full = NULL;
    if (tok) {
        if (strncmp(spec, "text:", 5) != 0)
            return cli_usage("eval", "--tokenizer applies to text: data sets, not '%s'", spec);
        if (!strstr(spec, ",tok=")) {
            size_t n = strlen(spec) + strlen(tok) + 8;
            full = malloc(n);
            if (!full) return EXIT_FAIL;
            snprintf(full, n, "%s,tok=%s", spec, tok);
        }
    }
    const char *use_spec = full ? full : spec;

    sh_error err = {0};
    sh_graph *g = NULL;
    sh_dataset *d = NULL;
    int rc = EXIT_OK;
    if (sh_model_load(path, &g, &err)) {
        rc = cli_fail("eval", &err);
        goto out;
    }
    if (sh_dataset_load(use_spec, &d, &err)) {
        rc = cli_fail("eval", &err);
        goto out;
    }
    struct stat st;
    int64_t file_bytes = stat(path, &st) == 0 ? (int64_t)st.st_size : -1;

    cli_progress prog;
    cli_progress_start(&prog, "eval", d->kind == 1 ? "images" : "tokens", d->n, quiet || json);
    sh_eval_opts o = {.nthreads = (int)threads,
                      .measure_speed = speed,
                      .batch = (int)batch,
                      .limit = limit,
                      .seq_len = (int)seq_len,
                      .progress = progress_cb,
                      .progress_ctx = &prog};
    sh_eval_report r;
    int erc = sh_eval_ex(g, d, &o, &r, &err);
    cli_progress_end(&prog);
    if (erc) {
        sh_error_wrap(&err, "%s on %s", path, use_spec);
        rc = cli_fail("eval", &err);
        goto out;
    }
    r.file_bytes = file_bytes;
    int nthreads = threads > 0 ? (int)threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    char b1[64], b2[64];
    if (json) {
        printf("{\"model\":");
        cli_json_str(stdout, path);
        printf(",\"data\":");
        cli_json_str(stdout, use_spec);
        printf(",\"kind\":\"%s\",\"n\":%lld", r.kind == 1 ? "classification" : "language_model", (long long)r.n);
        if (r.kind == 1) printf(",\"accuracy\":%.6f,\"correct\":%lld", r.accuracy, (long long)r.correct);
        else printf(",\"nll\":%.6f,\"ppl\":%.6f", r.nll, r.ppl);
        printf(",\"params\":%lld,\"param_bytes\":%lld,\"file_bytes\":%lld,\"threads\":%d,\"seconds\":%.3f",
               (long long)r.params, (long long)r.param_bytes, (long long)r.file_bytes, nthreads, r.seconds);
        if (speed)
            printf(",\"latency_ms_b1\":%.6f,\"latency_runs\":%d,\"throughput\":%.3f,\"throughput_batch\":%d",
                   r.latency_ms_b1, r.latency_runs, r.throughput, r.speed_batch);
        else printf(",\"latency_ms_b1\":null,\"throughput\":null");
        printf("}\n");
    } else {
        printf("model        %s\n", path);
        printf("data         %s (%lld %s)\n", use_spec, (long long)r.n, r.kind == 1 ? "images" : "tokens");
        if (r.kind == 1)
            printf("accuracy     %.2f%% (%lld/%lld correct, top-1)\n", 100.0 * r.accuracy, (long long)r.correct,
                   (long long)r.n);
        else {
            printf("nll          %.4f nats/token\n", r.nll);
            printf("perplexity   %.3f\n", r.ppl);
        }
        printf("parameters   %lld (%s of weights)\n", (long long)r.params, cli_bytes(r.param_bytes, b1, sizeof b1));
        printf("file         %s (%lld bytes)\n", cli_bytes(r.file_bytes, b2, sizeof b2), (long long)r.file_bytes);
        if (speed) {
            if (r.latency_ms_b1 > 0)
                printf("latency      %.3f ms (batch 1, median of %d runs, %d thread%s)\n", r.latency_ms_b1,
                       r.latency_runs, nthreads, nthreads == 1 ? "" : "s");
            if (r.throughput > 0) {
                if (r.kind == 1)
                    printf("throughput   %.0f images/s (batch %d, %d thread%s)\n", r.throughput, r.speed_batch,
                           nthreads, nthreads == 1 ? "" : "s");
                else printf("throughput   %.0f tokens/s\n", r.throughput);
            }
        }
        printf("eval time    %.2f s\n", r.seconds);
    }
out:
    free(full);
    sh_dataset_free(d);
    sh_graph_free(g);
    return rc;
}
