/* cmd_bench.c - shrink bench MODEL: latency distribution and throughput of
 * one model at a given batch and thread count, with an optional per-node
 * profile (which layers the time goes to). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char *usage_text =
    "Usage: shrink bench MODEL [options]\n"
    "\n"
    "Time inference runs of MODEL (.onnx or llama2.c .bin) on inputs of its\n"
    "declared shape: median, 10th and 90th percentile latency, items/s, and with\n"
    "--profile the time of every node (of the optimized graph that runs).\n"
    "Float inputs are filled with the first items of --data, or with fixed noise;\n"
    "token inputs (language models) with token 1 at position 0 (one decode step\n"
    "with an empty cache, at --seq tokens).\n"
    "\n"
    "Options:\n"
    "  --batch N         items per run (default 1)\n"
    "  --seq N           language models: tokens per run (default 1)\n"
    "  --threads N       threads (default: all cores)\n"
    "  --runs N          timed runs, at least (default 200)\n"
    "  --seconds S       time budget for the timed runs (default 2)\n"
    "  --warmup N        untimed runs first (default 10)\n"
    "  --data SPEC       image data set whose first items are the input\n"
    "  --profile         time each node; print a per-node and a per-op table\n"
    "  --json            one JSON object on stdout instead of a table\n"
    "  -h, --help        this help\n"
    "\n"
    "Examples:\n"
    "  shrink bench out/cnn.int8.onnx --threads 1 --profile\n"
    "  shrink bench out/cnn.onnx --batch 64 --threads 2\n"
    "\n" CLI_EXIT_CODES;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *s, int n, double q)
{
    double r = q * (n - 1);
    int i = (int)r;
    if (i >= n - 1) return s[n - 1];
    return s[i] + (r - i) * (s[i + 1] - s[i]);
}

/* The input tensor: the graph's declared input with batch (and seq) set. */
static int make_input(sh_graph *g, int64_t batch, int64_t seq, const sh_dataset *d, sh_tensor **out, sh_error *err)
{
    *out = NULL;
    if (g->n_inputs != 1) return sh_err(err, SH_EUNSUPPORTED, "bench: the model has %d inputs (1 supported)", g->n_inputs);
    const sh_value *v = &g->values[g->inputs[0]];
    int64_t shape[SH_MAX_DIMS];
    char a[160];
    int tokens = v->fmt == SH_I64 || v->fmt == SH_I32;
    if (v->ndim < 1) return sh_err(err, SH_ESHAPE, "bench: input '%s' has no shape", v->name);
    for (int i = 0; i < v->ndim; i++) shape[i] = v->shape[i];
    shape[0] = batch;
    if (tokens && v->ndim == 2) shape[1] = seq;
    if (d && !tokens) {
        int64_t item = (int64_t)d->c * d->h * d->w, known = 1, unknown = 0;
        for (int i = 1; i < v->ndim; i++) {
            if (shape[i] > 0) known *= shape[i];
            else unknown++;
        }
        if (unknown == 0 && known != item)
            return sh_err(err, SH_ESHAPE, "bench: input '%s' has shape %s but the data set's items have %lld values",
                          v->name, sh_shape_str(v->ndim, v->shape, a, sizeof a), (long long)item);
        if (unknown == 1 && item % known == 0)
            for (int i = 1; i < v->ndim; i++)
                if (shape[i] <= 0) shape[i] = item / known;
    }
    for (int i = 1; i < v->ndim; i++)
        if (shape[i] <= 0)
            return sh_err(err, SH_ESHAPE, "bench: input '%s' has shape %s with an unknown dimension; give --data",
                          v->name, sh_shape_str(v->ndim, v->shape, a, sizeof a));
    sh_format f = tokens ? v->fmt : SH_F32;
    sh_tensor *t = sh_tensor_new(f, v->ndim, shape, err);
    if (!t) return err->code ? err->code : SH_ENOMEM;
    int64_t n = sh_tensor_numel(t);
    if (tokens) {
        for (int64_t i = 0; i < n; i++) {
            if (f == SH_I64) ((int64_t *)t->data)[i] = 1;
            else ((int32_t *)t->data)[i] = 1;
        }
    } else if (d && d->kind == 1 && d->n > 0) {
        int64_t item = (int64_t)d->c * d->h * d->w;
        float *x = t->data;
        for (int64_t i = 0; i < batch; i++)
            memcpy(x + i * item, d->x + (i % d->n) * item, sizeof(float) * (size_t)item);
    } else {
        uint64_t s = 0x9E3779B97F4A7C15ull;
        float *x = t->data;
        for (int64_t i = 0; i < n; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            x[i] = (float)((s >> 40) & 0xFFFF) / 65536.0f;
        }
    }
    *out = t;
    return SH_OK;
}

typedef struct {
    const char *op;
    double s;
    int nodes;
} op_sum;

int cmd_bench(int argc, char **argv)
{
    const char *path = NULL, *spec = NULL, *v;
    int json = 0, profile = 0;
    int64_t threads = 0, batch = 1, seq = 1, runs = 200, warmup = 10;
    double seconds = 2.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--json") == 0) json = 1;
        else if (strcmp(a, "--profile") == 0) profile = 1;
        else if (strcmp(a, "--data") == 0) {
            if (!(spec = cli_arg("bench", argc, argv, &i))) return EXIT_USAGE;
        } else if (strcmp(a, "--threads") == 0) {
            if (!(v = cli_arg("bench", argc, argv, &i)) || cli_int("bench", a, v, 0, 1024, &threads)) return EXIT_USAGE;
        } else if (strcmp(a, "--batch") == 0) {
            if (!(v = cli_arg("bench", argc, argv, &i)) || cli_int("bench", a, v, 1, 1 << 16, &batch)) return EXIT_USAGE;
        } else if (strcmp(a, "--seq") == 0) {
            if (!(v = cli_arg("bench", argc, argv, &i)) || cli_int("bench", a, v, 1, 1 << 16, &seq)) return EXIT_USAGE;
        } else if (strcmp(a, "--runs") == 0) {
            if (!(v = cli_arg("bench", argc, argv, &i)) || cli_int("bench", a, v, 1, 1 << 20, &runs)) return EXIT_USAGE;
        } else if (strcmp(a, "--warmup") == 0) {
            if (!(v = cli_arg("bench", argc, argv, &i)) || cli_int("bench", a, v, 0, 1 << 20, &warmup)) return EXIT_USAGE;
        } else if (strcmp(a, "--seconds") == 0) {
            if (!(v = cli_arg("bench", argc, argv, &i)) || cli_float("bench", a, v, 0.0, 3600.0, &seconds))
                return EXIT_USAGE;
        } else if (a[0] == '-' && a[1]) return cli_usage("bench", "unknown option '%s'", a);
        else if (!path) path = a;
        else return cli_usage("bench", "unexpected argument '%s' (one MODEL only)", a);
    }
    if (!path) return cli_usage("bench", "missing MODEL");

    sh_error err = {0};
    sh_graph *g = NULL;
    sh_dataset *d = NULL;
    sh_program *p = NULL;
    sh_tensor *t = NULL;
    double *ms = NULL;
    op_sum *ops = NULL;
    int rc = EXIT_OK, n = 0;
    if (sh_model_load(path, &g, &err)) { rc = cli_fail("bench", &err); goto out; }
    if (spec && sh_dataset_load(spec, &d, &err)) { rc = cli_fail("bench", &err); goto out; }
    if (make_input(g, batch, seq, d, &t, &err)) { sh_error_wrap(&err, "%s", path); rc = cli_fail("bench", &err); goto out; }
    sh_run_opts ro = {.nthreads = (int)threads, .profile = profile};
    if (sh_program_new(g, &ro, &p, &err)) { rc = cli_fail("bench", &err); goto out; }
    const sh_tensor *in[1] = {t};
    int lm = t->fmt != SH_F32;
    for (int64_t i = 0; i < warmup; i++) {
        if (lm) sh_program_set_pos(p, 0);
        if (sh_program_run(p, in, 1, &err)) { sh_error_wrap(&err, "%s", path); rc = cli_fail("bench", &err); goto out; }
    }
    sh_program_profile_reset(p);
    int cap = (int)(runs > 100000 ? runs : 100000);
    ms = malloc(sizeof(double) * (size_t)cap);
    if (!ms) { fprintf(stderr, "shrink bench: out of memory\n"); rc = EXIT_FAIL; goto out; }
    double start = sh_now();
    while (n < cap) {
        if (lm) sh_program_set_pos(p, 0);
        double t0 = sh_now();
        if (sh_program_run(p, in, 1, &err)) { sh_error_wrap(&err, "%s", path); rc = cli_fail("bench", &err); goto out; }
        double t1 = sh_now();
        ms[n++] = (t1 - t0) * 1e3;
        if (n >= runs && t1 - start >= seconds * 0.5) break;
        if (n >= 3 && t1 - start >= seconds && n >= runs / 10) break;
    }
    qsort(ms, (size_t)n, sizeof(double), cmp_double);
    double med = pct(ms, n, 0.5), p10 = pct(ms, n, 0.1), p90 = pct(ms, n, 0.9), mean = 0;
    for (int i = 0; i < n; i++) mean += ms[i] / n;
    double per_s = med > 0 ? (double)batch * (lm ? (double)seq : 1.0) * 1e3 / med : 0;
    sh_graph *rg = sh_program_graph(p);
    double total = 0;
    int nops = 0;
    if (profile) {
        ops = calloc((size_t)rg->n_nodes + 1, sizeof *ops);
        if (!ops) { fprintf(stderr, "shrink bench: out of memory\n"); rc = EXIT_FAIL; goto out; }
        for (int i = 0; i < rg->n_nodes; i++) {
            double s = 0;
            sh_program_profile(p, i, &s, NULL);
            total += s;
            int j = 0;
            while (j < nops && strcmp(ops[j].op, rg->nodes[i].op) != 0) j++;
            if (j == nops) ops[nops++].op = rg->nodes[i].op;
            ops[j].s += s;
            ops[j].nodes++;
        }
    }
    const char *unit = lm ? "tokens" : "items";
    if (json) {
        printf("{\"model\":");
        cli_json_str(stdout, path);
        printf(",\"batch\":%lld,\"threads\":%lld,\"runs\":%d,\"median_ms\":%.6f,\"p10_ms\":%.6f,\"p90_ms\":%.6f,"
               "\"%s_per_s\":%.3f",
               (long long)batch, (long long)(threads ? threads : sysconf(_SC_NPROCESSORS_ONLN)), n, med, p10, p90, unit,
               per_s);
        if (profile) {
            printf(",\"nodes\":[");
            for (int i = 0; i < rg->n_nodes; i++) {
                double s = 0;
                sh_program_profile(p, i, &s, NULL);
                printf("%s{\"name\":", i ? "," : "");
                cli_json_str(stdout, rg->nodes[i].name);
                printf(",\"op\":");
                cli_json_str(stdout, rg->nodes[i].op);
                printf(",\"ms\":%.6f}", s * 1e3 / n);
            }
            printf("]");
        }
        printf("}\n");
    } else {
        printf("model    %s\nbatch    %lld%s, threads %lld%s, %d timed runs\n", path, (long long)batch,
               lm ? " (tokens per run: --seq)" : "", (long long)(threads ? threads : sysconf(_SC_NPROCESSORS_ONLN)),
               threads ? "" : " (all cores)", n);
        printf("latency  median %.4f ms  (p10 %.4f, p90 %.4f)\n", med, p10, p90);
        printf("speed    %.1f %s/s\n", per_s, unit);
        if (profile) {
            printf("\n   #  %-24s %-26s %10s %7s\n", "node", "op", "ms/run", "share");
            for (int i = 0; i < rg->n_nodes; i++) {
                double s = 0;
                int64_t c = 0;
                sh_program_profile(p, i, &s, &c);
                if (!c) continue;
                printf("%4d  %-24.24s %-26.26s %10.4f %6.1f%%\n", i, rg->nodes[i].name, rg->nodes[i].op, s * 1e3 / n,
                       total > 0 ? 100.0 * s / total : 0);
            }
            printf("\n      %-24s %-26s %10s %7s\n", "op", "nodes", "ms/run", "share");
            for (int j = 0; j < nops; j++)
                printf("      %-24.24s %-26d %10.4f %6.1f%%\n", ops[j].op, ops[j].nodes, ops[j].s * 1e3 / n,
                       total > 0 ? 100.0 * ops[j].s / total : 0);
            printf("      %-24s %-26s %10.4f  (mean run %.4f ms)\n", "sum of nodes", "", total * 1e3 / n, mean);
        }
    }
out:
    free(ops);
    free(ms);
    sh_tensor_free(t);
    sh_program_free(p);
    sh_dataset_free(d);
    sh_graph_free(g);
    return rc;
}
