/* cmd_sensitivity.c - shrink sensitivity (per-layer table of the KL and the
 * accuracy / perplexity change when one layer alone is quantized or pruned),
 * and the automatic modes of quantize (--budget-bytes, --max-drop) and prune
 * (--target-sparsity, --target-flops, --target-latency-ms), which
 * cmd_quantize.c / cmd_prune.c hand over to cmd_quantize_auto /
 * cmd_prune_auto. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"


int cli_has_opt(int argc, char **argv, const char *const *names)
{
    for (int i = 1; i < argc; i++)
        for (int k = 0; names[k]; k++)
            if (!strcmp(argv[i], names[k])) return 1;
    return 0;
}

static int load_data(const char *cmd, const char *spec, const char *tok, sh_dataset **d)
{
    sh_error err = {0};
    if (tok && strncmp(spec, "text:", 5)) return cli_usage(cmd, "--tokenizer applies to text: data sets, not '%s'", spec);
    char *full = cli_with_tok(spec, tok);
    int rc = sh_dataset_load(full ? full : spec, d, &err);
    free(full);
    return rc ? cli_fail(cmd, &err) : EXIT_OK;
}

/* JSON string into a memstream */
static void jstr(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void jnum(FILE *f, double v)
{
    if (v != v || v > 1e300 || v < -1e300) fputs("null", f);
    else fprintf(f, "%.9g", v);
}

static void sens_json(FILE *f, const char *model, const char *data, const sh_sens_report *r)
{
    fprintf(f, "{\"model\": ");
    jstr(f, model);
    fprintf(f, ", \"data\": ");
    jstr(f, data);
    fprintf(f, ", \"kind\": \"%s\", \"task\": \"%s\", \"metric\": \"%s\", \"base_metric\": ", r->prune ? "prune" : "quant",
            r->task == 1 ? "classification" : "language-model", r->task == 1 ? "accuracy" : "perplexity");
    jnum(f, r->base_metric);
    fprintf(f, ", \"samples\": %lld, \"evaluations\": %d, \"seconds\": %.3f, \"levels\": [", (long long)r->samples,
            r->evaluations, r->seconds);
    for (int j = 0; j < r->n_levels; j++) {
        fprintf(f, "%s", j ? ", " : "");
        jstr(f, r->levels[j].label);
    }
    fprintf(f, "], \"layers\": [");
    for (int i = 0; i < r->n_layers; i++) {
        const sh_sens_layer *l = &r->layers[i];
        fprintf(f, "%s{\"name\": ", i ? ", " : "");
        jstr(f, l->name);
        fprintf(f, ", \"weight\": ");
        jstr(f, l->weight);
        fprintf(f, ", \"op\": ");
        jstr(f, l->op);
        fprintf(f, ", \"rows\": %lld, \"cols\": %lld, \"params\": %lld, \"zeros\": %lld, \"macs\": %lld, \"bytes\": %lld",
                (long long)l->rows, (long long)l->cols, (long long)l->params, (long long)l->zeros, (long long)l->macs,
                (long long)l->bytes);
        if (!r->prune) fprintf(f, ", \"quantizable\": %s", l->quantizable ? "true" : "false");
        fprintf(f, ", \"note\": ");
        jstr(f, l->note);
        fprintf(f, ", \"cells\": [");
        for (int j = 0; j < r->n_levels; j++) {
            const sh_sens_cell *c = &l->cells[j];
            fprintf(f, "%s{\"level\": ", j ? ", " : "");
            jstr(f, r->levels[j].label);
            fprintf(f, ", \"metric\": ");
            jnum(f, c->metric);
            fprintf(f, ", \"drop\": ");
            jnum(f, c->drop);
            fprintf(f, ", \"kl\": ");
            jnum(f, c->kl);
            fprintf(f, ", \"%s\": %lld}", r->prune ? "nonzeros" : "bytes", (long long)c->bytes);
        }
        fprintf(f, "]}");
    }
    fprintf(f, "]}\n");
}

static int write_json(const char *cmd, const char *path, char *buf, size_t n)
{
    sh_error err = {0};
    if (sh_write_atomic(path, buf, n, &err)) return cli_fail(cmd, &err);
    return EXIT_OK;
}

static void sens_table(const sh_sens_report *r)
{
    const char *unit = r->task == 1 ? "pp" : "%";
    printf("%-22s %-6s %9s", "layer", "op", "params");
    for (int j = 0; j < r->n_levels; j++) {
        char h[40];
        snprintf(h, sizeof h, "%s%s KL", r->levels[j].label, r->prune ? "" : "b");
        printf(" %10s %7s", h, unit);
    }
    printf("\n");
    for (int i = 0; i < r->n_layers; i++) {
        const sh_sens_layer *l = &r->layers[i];
        printf("%-22s %-6s %9lld", l->name, l->op, (long long)l->params);
        for (int j = 0; j < r->n_levels; j++) {
            if (l->cells[j].kl != l->cells[j].kl) printf(" %10s %7s", "n/a", "");
            else printf(" %10.3g %+7.2f", l->cells[j].kl, l->cells[j].drop);
        }
        if (!r->prune && !l->quantizable) printf("  (simulated: %s)", l->note);
        else if (l->note[0]) printf("  (%s)", l->note);
        printf("\n");
    }
    if (r->task == 1)
        printf("original accuracy %.2f%% on %lld items; columns: mean KL (nats) and accuracy drop (pp) with only that "
               "layer %s; %d evaluations, %.2fs\n",
               100 * r->base_metric, (long long)r->samples, r->prune ? "pruned" : "quantized", r->evaluations,
               r->seconds);
    else
        printf("original perplexity %.4f on %lld tokens; columns: mean KL (nats) and perplexity change (%%) with only "
               "that layer %s; %d evaluations, %.2fs\n",
               r->base_metric, (long long)r->samples, r->prune ? "pruned" : "quantized", r->evaluations, r->seconds);
}

static void sens_usage(FILE *f)
{
    fprintf(f,
            "Usage: shrink sensitivity MODEL --calib SPEC [--quant | --prune] [options]\n"
            "\n"
            "Per-layer sensitivity: each Conv / Gemm / MatMul layer alone is quantized (weight-\n"
            "only, rounded through the 8/4/3/2-bit format) or pruned (unstructured L1 at each\n"
            "sparsity, or N:M), and the model is evaluated on a fixed slice of SPEC against\n"
            "the original: the mean KL divergence of the output distribution and the drop in\n"
            "accuracy (pp; image data) or the perplexity change (%%; text data).  MODEL: a\n"
            "model file or a built-in model (mlp, lenet5, cnn, llama-tiny; --seed).\n"
            "\n"
            "Options:\n"
            "  --calib SPEC         evaluation data (fashion-mnist:test, text:FILE, ...)\n"
            "  --quant              quantization levels (default): bits 8,4,3,2\n"
            "  --prune              pruning levels: sparsity 0.25,0.5,0.75,0.9\n"
            "  --levels L           e.g. 8,4,2 (bits) or 0.5,0.9,2:4 (pruning)\n"
            "  --samples N          images (default 1000) or scored tokens (default 2048)\n"
            "  --seq-len N          text: tokens per window (default: the model's, <= 256)\n"
            "  --tokenizer TOK      tokenizer (tok*.bin) for a text: data set\n"
            "  --scheme sym|asym    quantization scheme (default per bit width)\n"
            "  --method l1|l2       pruning scores (default l1)\n"
            "  --include L1,L2      only these layers;  --exclude L1,L2  not these\n"
            "  --json FILE          also write the table as JSON (atomically)\n"
            "  --threads N          threads (default: all cores)\n"
            "  --seed S             seed of a built-in model (default 0)\n"
            "  -h, --help           this help\n"
            "\n" CLI_EXIT_CODES);
}

/* Options shared by the three commands; returns 1 consumed, 0 not, -1 error. */
typedef struct common_opts {
    const char *calib, *tok, *json, *levels, *scheme, *method, *include, *exclude;
    int64_t samples, seq_len, threads, seed;
} common_opts;

static int common_opt(const char *cmd, int argc, char **argv, int *i, common_opts *c)
{
    const char *a = argv[*i], *val;
    const char **sp = NULL;
    if (!strcmp(a, "--calib")) sp = &c->calib;
    else if (!strcmp(a, "--tokenizer")) sp = &c->tok;
    else if (!strcmp(a, "--levels")) sp = &c->levels;
    else if (!strcmp(a, "--scheme")) sp = &c->scheme;
    else if (!strcmp(a, "--method")) sp = &c->method;
    else if (!strcmp(a, "--include")) sp = &c->include;
    else if (!strcmp(a, "--exclude")) sp = &c->exclude;
    if (sp) return (*sp = cli_arg(cmd, argc, argv, i)) ? 1 : -1;
    int64_t *ip = NULL, lo = 0;
    if (!strcmp(a, "--samples")) ip = &c->samples, lo = 1;
    else if (!strcmp(a, "--seq-len")) ip = &c->seq_len, lo = 2;
    else if (!strcmp(a, "--threads")) ip = &c->threads, lo = 0;
    else if (!strcmp(a, "--seed")) ip = &c->seed, lo = 0;
    if (ip) return (val = cli_arg(cmd, argc, argv, i)) && !cli_int(cmd, a, val, lo, 1000000000, ip) ? 1 : -1;
    return 0;
}

/* Fill sensitivity options from the common ones; EXIT_OK or an exit code. */
static int sens_fill(const char *cmd, const common_opts *c, int prune, const sh_dataset *d, sh_sens_opts *so)
{
    memset(so, 0, sizeof *so);
    so->prune = prune;
    so->data = d;
    so->samples = c->samples;
    so->seq_len = (int)c->seq_len;
    so->nthreads = (int)c->threads;
    so->include = c->include;
    so->exclude = c->exclude;
    so->method = SH_PRUNE_L1;
    if (c->scheme) {
        if (!strcmp(c->scheme, "sym")) so->scheme = 1;
        else if (!strcmp(c->scheme, "asym")) so->scheme = 2;
        else return cli_usage(cmd, "unknown --scheme '%s' (sym, asym)", c->scheme);
    }
    if (c->method) {
        if (!strcmp(c->method, "l1")) so->method = SH_PRUNE_L1;
        else if (!strcmp(c->method, "l2")) so->method = SH_PRUNE_L2;
        else return cli_usage(cmd, "unknown --method '%s' (l1, l2)", c->method);
    }
    if (c->levels) {
        sh_error err = {0};
        if (sh_sens_parse_levels(c->levels, prune, so, &err)) return cli_usage(cmd, "--levels: %s", err.msg);
    }
    return EXIT_OK;
}

static void progress(void *ctx, int done, int total)
{
    cli_progress *p = ctx;
    p->total = total;
    cli_progress_update(p, done, NULL);
}

int cmd_sensitivity(int argc, char **argv)
{
    const char *cmd = "sensitivity", *in = NULL;
    int prune = 0;
    common_opts c = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int k;
        if (cli_is_help(a)) {
            sens_usage(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--prune")) {
            prune = 1;
        } else if (!strcmp(a, "--quant")) {
            prune = 0;
        } else if (!strcmp(a, "--json")) {
            if (!(c.json = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if ((k = common_opt(cmd, argc, argv, &i, &c)) != 0) {
            if (k < 0) return EXIT_USAGE;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage(cmd, "unknown option '%s'", a);
        } else if (!in) {
            in = a;
        } else {
            return cli_usage(cmd, "unexpected argument '%s'", a);
        }
    }
    if (!in) return cli_usage(cmd, "need a model");
    if (!c.calib) return cli_usage(cmd, "need evaluation data (--calib SPEC)");
    sh_sens_opts so;
    int rc = sens_fill(cmd, &c, prune, NULL, &so);
    if (rc) return rc;
    sh_graph *g = NULL;
    sh_dataset *d = NULL;
    if ((rc = cli_load_model(cmd, in, c.seed, &g))) return rc;
    if ((rc = load_data(cmd, c.calib, c.tok, &d))) {
        sh_graph_free(g);
        return rc;
    }
    so.data = d;
    cli_progress prog;
    cli_progress_start(&prog, "sensitivity", "layers", 0, 0);
    so.progress = progress, so.progress_ctx = &prog;
    sh_sens_report r;
    sh_error err = {0};
    rc = sh_sensitivity(g, &so, &r, &err);
    cli_progress_end(&prog);
    if (rc) {
        sh_graph_free(g);
        sh_dataset_free(d);
        return cli_fail(cmd, &err);
    }
    printf("sensitivity of %s to %s (%s)\n", in, prune ? "unstructured pruning" : "weight-only quantization", c.calib);
    sens_table(&r);
    int ec = EXIT_OK;
    if (c.json) {
        char *buf = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&buf, &n);
        if (!f) {
            fprintf(stderr, "shrink %s: error: out of memory\n", cmd);
            ec = EXIT_FAIL;
        } else {
            sens_json(f, in, c.calib, &r);
            fclose(f);
            ec = write_json(cmd, c.json, buf, n);
            if (!ec) printf("wrote %s\n", c.json);
        }
        free(buf);
    }
    sh_sens_report_free(&r);
    sh_graph_free(g);
    sh_dataset_free(d);
    return ec;
}

/* ---- shrink quantize --budget-bytes / --max-drop ------------------------------- */

static void auto_print(const sh_auto_report *r, int prune, const char *what)
{
    int zeros = prune && r->latency_ms <= 0;
    printf("%-22s %10s %-8s %10s %11s %s\n", "layer", "params", what, zeros ? "zeros" : "bytes",
           r->latency_ms > 0 ? "KL at 0.5" : "est. KL", "");
    for (int i = 0; i < r->n_layers; i++) {
        const sh_auto_layer *l = &r->layers[i];
        printf("%-22s %10lld %-8s %10lld %11.4g %s\n", l->name, (long long)l->params, l->label,
               (long long)(zeros ? l->zeros : l->bytes), l->est_kl, l->note);
    }
}

static void auto_json(FILE *f, const sh_auto_report *r, const char *out, int64_t file_bytes)
{
    fprintf(f, "{\"output\": ");
    jstr(f, out);
    fprintf(f, ", \"task\": \"%s\", \"base_metric\": ", r->task == 1 ? "classification" : "language-model");
    jnum(f, r->base_metric);
    fprintf(f, ", \"metric\": ");
    jnum(f, r->metric);
    fprintf(f, ", \"drop\": ");
    jnum(f, r->drop);
    fprintf(f, ", \"kl\": ");
    jnum(f, r->kl);
    fprintf(f, ", \"est_kl\": ");
    jnum(f, r->est_kl);
    fprintf(f, ", \"bytes_before\": %lld, \"bytes_after\": %lld, \"file_bytes\": %lld, \"sparsity\": ",
            (long long)r->bytes_before, (long long)r->bytes_after, (long long)file_bytes);
    jnum(f, r->sparsity);
    fprintf(f, ", \"flops_frac\": ");
    jnum(f, r->flops_frac);
    fprintf(f, ", \"latency_ms_before\": ");
    jnum(f, r->latency_ms_before);
    fprintf(f, ", \"latency_ms\": ");
    jnum(f, r->latency_ms);
    fprintf(f, ", \"uniform_metric\": ");
    jnum(f, r->uniform_metric);
    fprintf(f, ", \"uniform_drop\": ");
    jnum(f, r->uniform_drop);
    fprintf(f, ", \"evaluations\": %d, \"seconds\": %.3f, \"layers\": [", r->evaluations, r->seconds);
    for (int i = 0; i < r->n_layers; i++) {
        const sh_auto_layer *l = &r->layers[i];
        fprintf(f, "%s{\"name\": ", i ? ", " : "");
        jstr(f, l->name);
        fprintf(f, ", \"choice\": ");
        jnum(f, l->choice);
        fprintf(f, ", \"label\": ");
        jstr(f, l->label);
        fprintf(f, ", \"params\": %lld, \"bytes\": %lld, \"zeros\": %lld, \"est_kl\": ", (long long)l->params,
                (long long)l->bytes, (long long)l->zeros);
        jnum(f, l->est_kl);
        fprintf(f, ", \"note\": ");
        jstr(f, l->note);
        fputc('}', f);
    }
    fprintf(f, "]}\n");
}

static void metric_line(const sh_auto_report *r)
{
    if (r->est_kl < 0) { /* channel pruning: no per-layer estimate */
        if (r->task == 1)
            printf("accuracy %.2f%% -> %.2f%% (drop %+.2f pp), KL %.4g\n", 100 * r->base_metric, 100 * r->metric,
                   r->drop, r->kl);
        else
            printf("perplexity %.4f -> %.4f (%+.2f %%), KL %.4g\n", r->base_metric, r->metric, r->drop, r->kl);
        return;
    }
    if (r->task == 1)
        printf("accuracy %.2f%% -> %.2f%% (drop %+.2f pp), KL %.4g (sum of the layers' own: %.4g)\n",
               100 * r->base_metric, 100 * r->metric, r->drop, r->kl, r->est_kl);
    else
        printf("perplexity %.4f -> %.4f (%+.2f %%), KL %.4g (sum of the layers' own: %.4g)\n", r->base_metric,
               r->metric, r->drop, r->kl, r->est_kl);
}

static int64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

static void auto_quant_usage(FILE *f)
{
    fprintf(f,
            "Usage: shrink quantize IN -o OUT --calib SPEC --budget-bytes N | --max-drop X [options]\n"
            "\n"
            "Mixed precision: the bits of each layer (8, 4, 3, 2 or f32) are chosen from a\n"
            "per-layer sensitivity table (see shrink sensitivity) measured on SPEC.\n"
            "  --budget-bytes N   the output file is at most N bytes; least summed KL\n"
            "  --max-drop X       the smallest model whose measured drop is <= X (accuracy\n"
            "                     pp for image data, perplexity %% for text)\n"
            "Only layers weight-only quantization stores quantized are chosen (Gemm with\n"
            "transB=1, Conv; BatchNorm folded first); the rest stay f32.  The combined\n"
            "model is evaluated on SPEC and its size, drop and KL reported.\n"
            "Options: --levels 8,4,3,2  --samples N  --seq-len N  --tokenizer TOK\n"
            "  --scheme sym|asym  --exclude L1,L2  --include L1,L2 (layers measured)\n"
            "  --threads N  --seed S  --json (report on stdout)  -h, --help\n"
            "\n" CLI_EXIT_CODES);
}

int cmd_quantize_auto(int argc, char **argv)
{
    const char *cmd = "quantize", *in = NULL, *out = NULL, *val;
    int json = 0, have_budget = 0, have_drop = 0;
    int64_t budget = 0;
    double max_drop = 0;
    common_opts c = {0};
    for (int i = 1; i < argc; i++)
        if (cli_is_help(argv[i])) {
            auto_quant_usage(stdout);
            return EXIT_OK;
        }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int k;
        if (!strcmp(a, "--json")) { /* --help: handled above */
            json = 1;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!(out = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--budget-bytes")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_int(cmd, a, val, 1, INT64_MAX / 2, &budget)) return EXIT_USAGE;
            have_budget = 1;
        } else if (!strcmp(a, "--max-drop")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_float(cmd, a, val, -1e9, 1e9, &max_drop)) return EXIT_USAGE;
            have_drop = 1;
        } else if (!strcmp(a, "--mode")) {
            if (!(val = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
            if (strcmp(val, "weight"))
                return cli_usage(cmd, "--budget-bytes / --max-drop choose weight-only bits (--mode weight), not '%s'", val);
        } else if ((k = common_opt(cmd, argc, argv, &i, &c)) != 0) {
            if (k < 0) return EXIT_USAGE;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage(cmd, "option '%s' does not combine with --budget-bytes / --max-drop", a);
        } else if (!in) {
            in = a;
        } else {
            return cli_usage(cmd, "unexpected argument '%s'", a);
        }
    }
    if (!in) return cli_usage(cmd, "need a model to quantize");
    if (!out) return cli_usage(cmd, "need an output file (-o OUT)");
    if (have_budget && have_drop) return cli_usage(cmd, "give --budget-bytes or --max-drop, not both");
    if (have_drop && !(max_drop >= 0)) return cli_usage(cmd, "--max-drop %g must be >= 0", max_drop);
    if (!c.calib) return cli_usage(cmd, "--budget-bytes / --max-drop need evaluation data (--calib SPEC)");
    if (strcmp(in, out) == 0) return cli_usage(cmd, "IN and OUT are the same file");
    size_t ol = strlen(out);
    if (ol < 5 || strcmp(out + ol - 5, ".onnx")) return cli_usage(cmd, "OUT must be an .onnx file (packed quantized weights)");
    sh_autoquant_opts o;
    memset(&o, 0, sizeof o);
    int rc = sens_fill(cmd, &c, 0, NULL, &o.sens_opts);
    if (rc) return rc;
    o.scheme = o.sens_opts.scheme;
    o.exclude = c.exclude;
    o.budget_bytes = have_budget ? budget : 0;
    o.max_drop = max_drop;
    sh_graph *g = NULL, *q = NULL;
    sh_dataset *d = NULL;
    if ((rc = cli_load_model(cmd, in, c.seed, &g))) return rc;
    if ((rc = load_data(cmd, c.calib, c.tok, &d))) {
        sh_graph_free(g);
        return rc;
    }
    o.sens_opts.data = d;
    sh_error err = {0};
    sh_sens_report sr;
    sh_auto_report r;
    memset(&r, 0, sizeof r);
    int64_t fb = -1;
    cli_progress prog;
    cli_progress_start(&prog, "sensitivity", "layers", 0, json);
    o.sens_opts.progress = progress, o.sens_opts.progress_ctx = &prog;
    rc = sh_sensitivity(g, &o.sens_opts, &sr, &err);
    cli_progress_end(&prog);
    o.sens_opts.progress = NULL;
    if (!rc) {
        o.sens = &sr;
        /* the budget is for the file: measure the bytes beyond the parameters
         * and tighten until the written file fits */
        for (int attempt = 0; attempt < 6 && !rc; attempt++) {
            sh_graph_free(q);
            q = NULL;
            sh_auto_report_free(&r);
            rc = sh_autoquant(g, &o, &q, &r, &err);
            if (!rc) rc = sh_model_save(q, out, &err);
            if (rc) break;
            fb = file_size(out);
            if (!have_budget || fb <= budget) break;
            o.overhead_bytes += fb - budget + 16 * (attempt + 1);
            if (attempt == 5)
                rc = sh_err(&err, SH_EINVAL, "budget %lld bytes: the file still takes %lld bytes", (long long)budget,
                            (long long)fb);
        }
        sh_sens_report_free(&sr);
    }
    if (rc) {
        if (have_budget && fb > budget) unlink(out);
        sh_graph_free(g), sh_graph_free(q), sh_dataset_free(d);
        sh_auto_report_free(&r);
        return cli_fail(cmd, &err);
    }
    if (json) {
        auto_json(stdout, &r, out, fb);
    } else {
        auto_print(&r, 0, "bits");
        metric_line(&r);
        char b1[32], b2[32];
        printf("parameters %s -> %s, file %lld bytes", cli_bytes(r.bytes_before, b1, sizeof b1),
               cli_bytes(r.bytes_after, b2, sizeof b2), (long long)fb);
        if (have_budget) printf(" (budget %lld bytes)", (long long)budget);
        else printf(" (max drop %g)", max_drop);
        printf("; %d evaluations, %.2fs\nwrote %s\n", r.evaluations, r.seconds, out);
    }
    sh_auto_report_free(&r);
    sh_graph_free(g), sh_graph_free(q), sh_dataset_free(d);
    return EXIT_OK;
}

/* ---- shrink prune --target-sparsity / --target-flops / --target-latency-ms ----- */

static void auto_prune_usage(FILE *f)
{
    fprintf(f,
            "Usage: shrink prune IN -o OUT --calib SPEC --target-sparsity S | --target-flops F |\n"
            "                    --target-latency-ms L [options]\n"
            "\n"
            "Automatic per-layer pruning from a sensitivity table measured on SPEC (see shrink\n"
            "sensitivity --prune): less on sensitive layers.\n"
            "  --target-sparsity S    fraction of zero weights over all layers, in [0,1)\n"
            "  --target-flops F       remaining fraction of the layers' dense multiply-adds\n"
            "                         (MACs of zero weights count as removed), in (0,1]\n"
            "  --target-latency-ms L  structured channel pruning with per-layer ratios until\n"
            "                         the measured batch-1 latency is <= L (image models)\n"
            "Options: --levels 0.25,0.5,0.75,0.9  --samples N  --seq-len N  --tokenizer TOK\n"
            "  --method l1|l2  --max-layer S (largest per-layer sparsity / channel ratio)\n"
            "  --exclude L1,L2  --include L1,L2 (layers measured)  --no-uniform\n"
            "  --threads N  --seed S  --json (report on stdout)  -h, --help\n"
            "\n" CLI_EXIT_CODES);
}

int cmd_prune_auto(int argc, char **argv)
{
    const char *cmd = "prune", *in = NULL, *out = NULL, *val;
    int json = 0;
    double v = 0, maxl = 0;
    common_opts c = {0};
    sh_autoprune_opts o;
    sh_autoprune_opts_default(&o);
    for (int i = 1; i < argc; i++)
        if (cli_is_help(argv[i])) {
            auto_prune_usage(stdout);
            return EXIT_OK;
        }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int k;
        if (!strcmp(a, "--json")) { /* --help: handled above */
            json = 1;
        } else if (!strcmp(a, "--no-uniform")) {
            o.uniform = 0;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!(out = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--target-sparsity") || !strcmp(a, "--target-flops") ||
                   !strcmp(a, "--target-latency-ms") || !strcmp(a, "--max-layer")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_float(cmd, a, val, -1e9, 1e9, &v)) return EXIT_USAGE;
            if (!strcmp(a, "--target-sparsity")) {
                if (!(v >= 0 && v < 1)) return cli_usage(cmd, "--target-sparsity %g is outside [0, 1)", v);
                o.target_sparsity = v;
            } else if (!strcmp(a, "--target-flops")) {
                if (!(v > 0 && v <= 1)) return cli_usage(cmd, "--target-flops %g is outside (0, 1]", v);
                o.target_flops = v;
            } else if (!strcmp(a, "--target-latency-ms")) {
                if (!(v > 0)) return cli_usage(cmd, "--target-latency-ms %g must be > 0", v);
                o.target_latency_ms = v;
            } else {
                if (!(v > 0 && v < 1)) return cli_usage(cmd, "--max-layer %g is outside (0, 1)", v);
                maxl = v;
            }
        } else if ((k = common_opt(cmd, argc, argv, &i, &c)) != 0) {
            if (k < 0) return EXIT_USAGE;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage(cmd, "option '%s' does not combine with --target-sparsity / --target-flops / "
                                  "--target-latency-ms", a);
        } else if (!in) {
            in = a;
        } else {
            return cli_usage(cmd, "unexpected argument '%s'", a);
        }
    }
    if (!in) return cli_usage(cmd, "need a model to prune");
    if (!out) return cli_usage(cmd, "need an output file (-o OUT)");
    int nt = (o.target_sparsity >= 0) + (o.target_flops >= 0) + (o.target_latency_ms > 0);
    if (nt != 1) return cli_usage(cmd, "give one of --target-sparsity, --target-flops, --target-latency-ms");
    if (!c.calib) return cli_usage(cmd, "automatic pruning needs evaluation data (--calib SPEC)");
    if (strcmp(in, out) == 0) return cli_usage(cmd, "IN and OUT are the same file");
    if (maxl > 0) o.max_layer_sparsity = o.max_layer_ratio = maxl;
    int rc = sens_fill(cmd, &c, 1, NULL, &o.sens_opts);
    if (rc) return rc;
    o.exclude = c.exclude;
    sh_graph *g = NULL, *p = NULL;
    sh_dataset *d = NULL;
    if ((rc = cli_load_model(cmd, in, c.seed, &g))) return rc;
    if ((rc = load_data(cmd, c.calib, c.tok, &d))) {
        sh_graph_free(g);
        return rc;
    }
    o.sens_opts.data = d;
    sh_error err = {0};
    sh_auto_report r;
    cli_progress prog;
    cli_progress_start(&prog, "sensitivity", "layers", 0, json);
    o.sens_opts.progress = progress, o.sens_opts.progress_ctx = &prog;
    rc = sh_autoprune(g, &o, &p, &r, &err);
    cli_progress_end(&prog);
    if (!rc) rc = sh_model_save(p, out, &err);
    if (rc) {
        if (p) sh_auto_report_free(&r);
        sh_graph_free(g), sh_graph_free(p), sh_dataset_free(d);
        return cli_fail(cmd, &err);
    }
    int64_t fb = file_size(out);
    if (json) {
        auto_json(stdout, &r, out, fb);
    } else {
        auto_print(&r, 1, o.target_latency_ms > 0 ? "ratio" : "sparsity");
        metric_line(&r);
        if (o.target_latency_ms > 0)
            printf("batch-1 latency %.4f ms -> %.4f ms (target %.4g ms)\n", r.latency_ms_before, r.latency_ms,
                   o.target_latency_ms);
        else
            printf("weight sparsity %.2f%%, remaining MACs %.2f%% of dense\n", 100 * r.sparsity, 100 * r.flops_frac);
        if (r.uniform_drop > -1 || r.uniform_metric >= 0) {
            if (r.task == 1)
                printf("uniform (one sparsity for every layer, same target): accuracy %.2f%% (drop %+.2f pp)\n",
                       100 * r.uniform_metric, r.uniform_drop);
            else
                printf("uniform (one sparsity for every layer, same target): perplexity %.4f (%+.2f %%)\n",
                       r.uniform_metric, r.uniform_drop);
        }
        printf("%d evaluations, %.2fs\nwrote %s (%lld bytes)\n", r.evaluations, r.seconds, out, (long long)fb);
    }
    sh_auto_report_free(&r);
    sh_graph_free(g), sh_graph_free(p), sh_dataset_free(d);
    return EXIT_OK;
}
