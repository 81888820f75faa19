/* cmd_run.c - shrink run: run a model on TensorProto inputs, write (and
 * optionally check) TensorProto outputs in the ONNX backend test layout. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

#define MAX_INPUTS 64

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: shrink run MODEL [--input FILE.pb ...] [-o DIR] [--expect DIR] [options]\n"
            "\n"
            "Runs MODEL (.onnx, or a .bin llama2.c checkpoint) on inputs stored as ONNX\n"
            "TensorProto files, given in graph-input order, and writes the outputs as\n"
            "DIR/output_0.pb, DIR/output_1.pb, ... (the layout of the ONNX backend test\n"
            "data).  Each file is written atomically.\n"
            "\n"
            "Options:\n"
            "  --input FILE.pb   an input tensor; repeat once per graph input, in order\n"
            "  --inputs DIR      use DIR/input_0.pb, DIR/input_1.pb, ... (an ONNX\n"
            "                    test_data_set_N directory)\n"
            "  -o, --output DIR  write the outputs here (created if missing)\n"
            "  --expect DIR      compare every output with DIR/output_N.pb: shapes and\n"
            "                    formats must match, integers exactly, floats within\n"
            "                    |got-expected| <= TOL*max(1,|expected|); prints the max\n"
            "                    error per output and exits 1 if any output differs\n"
            "  --tol TOL         tolerance for --expect (default 1e-4)\n"
            "  --threads N       threads (default: all cores)\n"
            "  --json            print the result as one JSON object on stdout\n"
            "  -h, --help        this help\n"
            "At least one of -o and --expect is needed.\n"
            "\n"
            "Example:\n"
            "  D=/usr/share/libonnx-testdata/data/node/test_relu\n"
            "  shrink run $D/model.onnx --inputs $D/test_data_set_0 --expect $D/test_data_set_0\n"
            "\n" CLI_EXIT_CODES);
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Compare got with exp; returns 1 on match.  *max_err: the largest error
 * (relative above 1, absolute below). */
static int compare(const sh_tensor *got, const sh_tensor *exp, double tol, double *max_err, char *why, size_t n)
{
    char a[160], b[160];
    *max_err = 0;
    why[0] = 0;
    if (got->ndim != exp->ndim || memcmp(got->shape, exp->shape, sizeof(int64_t) * (size_t)got->ndim) != 0) {
        snprintf(why, n, "shape %s, expected %s", sh_shape_str(got->ndim, got->shape, a, sizeof a),
                 sh_shape_str(exp->ndim, exp->shape, b, sizeof b));
        *max_err = INFINITY;
        return 0;
    }
    if (got->fmt != exp->fmt) {
        snprintf(why, n, "format %s, expected %s", sh_format_get(got->fmt)->name, sh_format_get(exp->fmt)->name);
        *max_err = INFINITY;
        return 0;
    }
    int64_t ne = sh_tensor_numel(exp);
    const sh_format_traits *ft = sh_format_get(exp->fmt);
    float g, e;
    int64_t first = -1;
    size_t es = sh_format_bytes(exp->fmt, 1);
    for (int64_t i = 0; i < ne; i++) {
        const char *pg = (const char *)got->data + (size_t)i * es, *pe = (const char *)exp->data + (size_t)i * es;
        double err;
        if (!ft->is_float) {
            err = memcmp(pg, pe, es) == 0 ? 0 : INFINITY;
            if (err > 0) {
                ft->to_f32(pg, &g, 1);
                ft->to_f32(pe, &e, 1);
                err = fabs((double)g - e) / fmax(1.0, fabs((double)e));
                if (err == 0) err = INFINITY;
                if (first < 0) {
                    first = i;
                    snprintf(why, n, "element %lld is %.9g, expected %.9g (integers must match exactly)",
                             (long long)i, (double)g, (double)e);
                }
            }
        } else {
            ft->to_f32(pg, &g, 1);
            ft->to_f32(pe, &e, 1);
            if (isnan(g) || isnan(e)) err = isnan(g) && isnan(e) ? 0 : INFINITY;
            else if (isinf(g) || isinf(e)) err = g == e ? 0 : INFINITY;
            else err = fabs((double)g - e) / fmax(1.0, fabs((double)e));
            if (err > tol && first < 0) {
                first = i;
                snprintf(why, n, "element %lld is %.9g, expected %.9g", (long long)i, (double)g, (double)e);
            }
        }
        if (err > *max_err) *max_err = err;
    }
    return first < 0;
}

int cmd_run(int argc, char **argv)
{
    const char *cmd = "run", *model = NULL, *outdir = NULL, *expect = NULL, *inputs_dir = NULL;
    const char *in_files[MAX_INPUTS];
    char *owned[MAX_INPUTS] = {0};
    int n_in_files = 0, json = 0, rc = EXIT_OK;
    int64_t threads = 0;
    double tol = 1e-4;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (cli_is_help(a)) {
            usage(stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--input") == 0) {
            if (!(v = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
            if (n_in_files == MAX_INPUTS) return cli_usage(cmd, "at most %d --input files", MAX_INPUTS);
            in_files[n_in_files++] = v;
        } else if (strcmp(a, "--inputs") == 0) {
            if (!(inputs_dir = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) {
            if (!(outdir = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (strcmp(a, "--expect") == 0) {
            if (!(expect = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (strcmp(a, "--tol") == 0) {
            if (!(v = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
            if (cli_float(cmd, "--tol", v, 0.0, 1e30, &tol)) return EXIT_USAGE;
        } else if (strcmp(a, "--threads") == 0) {
            if (!(v = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
            if (cli_int(cmd, "--threads", v, 0, 1024, &threads)) return EXIT_USAGE;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage(cmd, "unknown option '%s'", a);
        } else if (!model) {
            model = a;
        } else {
            return cli_usage(cmd, "unexpected argument '%s' (the model is '%s')", a, model);
        }
    }
    if (!model) return cli_usage(cmd, "no MODEL given");
    if (!outdir && !expect) return cli_usage(cmd, "nothing to do: give -o DIR and/or --expect DIR");
    if (inputs_dir && n_in_files) return cli_usage(cmd, "give either --input files or --inputs DIR, not both");

    sh_error err = {0};
    sh_graph *g = NULL;
    sh_program *p = NULL;
    sh_tensor *in[MAX_INPUTS] = {0};
    int n_in = 0;
    double secs = 0;
    if (inputs_dir) {
        struct stat st;
        if (stat(inputs_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            sh_err(&err, SH_EIO, "--inputs %s: not a directory", inputs_dir);
            rc = cli_fail(cmd, &err);
            goto out;
        }
        for (;;) {
            char path[4096];
            snprintf(path, sizeof path, "%s/input_%d.pb", inputs_dir, n_in_files);
            if (!file_exists(path)) break;
            if (n_in_files == MAX_INPUTS) {
                rc = cli_usage(cmd, "%s: more than %d inputs", inputs_dir, MAX_INPUTS);
                goto out;
            }
            owned[n_in_files] = strdup(path);
            if (!owned[n_in_files]) {
                sh_err(&err, SH_ENOMEM, "out of memory");
                rc = cli_fail(cmd, &err);
                goto out;
            }
            in_files[n_in_files] = owned[n_in_files];
            n_in_files++;
        }
    }
    if (sh_model_load(model, &g, &err)) {
        rc = cli_fail(cmd, &err);
        goto out;
    }
    if (n_in_files != g->n_inputs) {
        char names[512];
        size_t o = 0;
        names[0] = 0;
        for (int i = 0; i < g->n_inputs && o < sizeof names - 1; i++)
            o += (size_t)snprintf(names + o, sizeof names - o, "%s'%s'", i ? ", " : "", g->values[g->inputs[i]].name);
        rc = cli_usage(cmd, "%s takes %d input%s (%s), %d given", model, g->n_inputs, g->n_inputs == 1 ? "" : "s",
                       g->n_inputs ? names : "none", n_in_files);
        goto out;
    }
    for (int i = 0; i < n_in_files; i++) {
        if (sh_tensorproto_load(in_files[i], &in[i], NULL, &err)) {
            rc = cli_fail(cmd, &err);
            goto out;
        }
        n_in = i + 1;
        const sh_value *v = &g->values[g->inputs[i]];
        if (v->ndim >= 0 && in[i]->fmt != v->fmt) {
            fprintf(stderr, "shrink run: error: %s: input %d ('%s') is %s, the model expects %s\n", in_files[i], i,
                    v->name, sh_format_get(in[i]->fmt)->name, sh_format_get(v->fmt)->name);
            rc = EXIT_FORMAT;
            goto out;
        }
    }
    sh_run_opts o = {0};
    o.nthreads = (int)threads;
    if (sh_program_new(g, &o, &p, &err)) {
        rc = cli_fail(cmd, &err);
        goto out;
    }
    double t0 = sh_now();
    if (sh_program_run(p, (const sh_tensor *const *)in, n_in, &err)) {
        rc = cli_fail(cmd, &err);
        goto out;
    }
    secs = sh_now() - t0;
    if (outdir && mkdir(outdir, 0755) != 0 && errno != EEXIST) {
        sh_err(&err, SH_EIO, "%s: cannot create directory: %s", outdir, strerror(errno));
        rc = cli_fail(cmd, &err);
        goto out;
    }
    int n_out = sh_program_num_outputs(p), all_ok = 1;
    if (expect) {
        char path[4096];
        int k = 0;
        for (;; k++) {
            snprintf(path, sizeof path, "%s/output_%d.pb", expect, k);
            if (!file_exists(path)) break;
        }
        if (k != n_out) {
            fprintf(stderr, "shrink run: error: %s holds %d expected output%s (output_N.pb), the model has %d\n",
                    expect, k, k == 1 ? "" : "s", n_out);
            rc = EXIT_FAIL;
            goto out;
        }
    }
    if (json) {
        printf("{\"model\": ");
        cli_json_str(stdout, model);
        printf(", \"seconds\": %.6f, \"outputs\": [", secs);
    }
    for (int i = 0; i < n_out; i++) {
        const sh_tensor *t = sh_program_output(p, i);
        const char *name = g->values[g->outputs[i]].name;
        char path[4096], shp[160], why[512] = "";
        double max_err = 0;
        int ok = 1;
        if (!t) {
            sh_err(&err, SH_EINTERNAL, "output %d ('%s') was not computed", i, name);
            rc = cli_fail(cmd, &err);
            goto out;
        }
        if (outdir) {
            snprintf(path, sizeof path, "%s/output_%d.pb", outdir, i);
            if (sh_tensorproto_save(t, name, path, &err)) {
                rc = cli_fail(cmd, &err);
                goto out;
            }
        }
        if (expect) {
            char ep[4096];
            sh_tensor *e = NULL;
            snprintf(ep, sizeof ep, "%s/output_%d.pb", expect, i);
            if (sh_tensorproto_load(ep, &e, NULL, &err)) {
                rc = cli_fail(cmd, &err);
                goto out;
            }
            ok = compare(t, e, tol, &max_err, why, sizeof why);
            sh_tensor_free(e);
            all_ok &= ok;
        }
        sh_shape_str(t->ndim, t->shape, shp, sizeof shp);
        if (json) {
            printf("%s{\"name\": ", i ? ", " : "");
            cli_json_str(stdout, name);
            printf(", \"format\": \"%s\", \"shape\": [", sh_format_get(t->fmt)->name);
            for (int d = 0; d < t->ndim; d++) printf("%s%lld", d ? ", " : "", (long long)t->shape[d]);
            printf("]");
            if (outdir) {
                printf(", \"file\": ");
                cli_json_str(stdout, path);
            }
            if (expect) {
                printf(", \"max_error\": ");
                if (isfinite(max_err)) printf("%.6g", max_err);
                else printf("null");
                printf(", \"ok\": %s", ok ? "true" : "false");
                if (!ok) {
                    printf(", \"error\": ");
                    cli_json_str(stdout, why);
                }
            }
            printf("}");
        } else {
            printf("output %d '%s' %s %s", i, name, sh_format_get(t->fmt)->name, shp);
            if (outdir) printf(" -> %s", path);
            if (expect) {
                if (ok) printf("  max error %.3g (ok)", max_err);
                else printf("  MISMATCH: %s (max error %.3g > %g)", why, max_err, tol);
            }
            printf("\n");
        }
    }
    if (json) {
        printf("]");
        if (expect) printf(", \"tolerance\": %g, \"ok\": %s", tol, all_ok ? "true" : "false");
        printf("}\n");
    } else {
        if (expect) printf("%s: %s (%d output%s, tolerance %g)\n", all_ok ? "ok" : "FAILED", expect, n_out,
                           n_out == 1 ? "" : "s", tol);
    }
    if (!all_ok) {
        fprintf(stderr, "shrink run: error: outputs differ from %s\n", expect);
        rc = EXIT_FAIL;
    }
out:
    sh_program_free(p);
    for (int i = 0; i < n_in; i++) sh_tensor_free(in[i]);
    for (int i = 0; i < MAX_INPUTS; i++) free(owned[i]);
    sh_graph_free(g);
    return rc;
}
