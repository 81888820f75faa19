/* cmd_quantize.c - shrink quantize: weight-only quantization of the Gemm
 * (linear) weights into q8_0 / q4_0 / q4_1 / q3_0 / q2_1, with a per-layer
 * table (bytes, round-trip error) and totals. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: shrink quantize IN -o OUT --mode weight --bits 8|4|3|2 [options]\n"
            "\n"
            "Weight-only quantization: the weight [out,in] of every Gemm with transB=1\n"
            "(Llama linear layers, PyTorch Linear exports) is rounded to nearest in groups\n"
            "of 32 along the input dimension and stored packed (q8_0: 8.5 bits per weight,\n"
            "q4_0 4.5, q4_1 5, q3_0 3.5, q2_1 3).  Those Gemms then run on integer kernels\n"
            "(activations quantized on the fly to q8_0).  An input size that is not a\n"
            "multiple of 32 is padded with zero weights.  Weights shared with another node\n"
            "(a tied embedding read by Gather) and Gemms with transB=0 stay f32; the table\n"
            "says why.  IN: a model file, or a built-in model\n"
            "mlp | lenet5 | cnn | llama-tiny.  OUT (.onnx) is written atomically.\n"
            "\n"
            "Options:\n"
            "  -o, --output FILE      the quantized model (required)\n"
            "  --mode weight          weight-only quantization (the only mode so far)\n"
            "  --bits B               8 (q8_0, default), 4 (q4_0 / q4_1), 3 (q3_0), 2 (q2_1)\n"
            "  --scheme S             sym | asym (default: sym, asym for 2 bits)\n"
            "  --skip-classifier      leave the Gemm that writes a graph output f32\n"
            "  --exclude L1,L2        leave these layers (node or weight names) f32\n"
            "  --seed S               seed of a built-in model (default 0)\n"
            "  --json                 print a JSON report on stdout\n"
            "  -h, --help             this help\n"
            "\n" CLI_EXIT_CODES);
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

int cmd_quantize(int argc, char **argv)
{
    const char *cmd = "quantize", *in = NULL, *out = NULL, *mode = NULL, *scheme = NULL;
    int json = 0;
    int64_t bits = 8, seed = 0;
    sh_quant_opts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
        if (cli_is_help(a)) {
            usage(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--skip-classifier")) {
            o.skip_classifier = 1;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!(out = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--mode")) {
            if (!(mode = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--scheme")) {
            if (!(scheme = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--exclude")) {
            if (!(o.exclude = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--bits")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_int(cmd, a, val, -1000000, 1000000, &bits))
                return EXIT_USAGE;
        } else if (!strcmp(a, "--seed")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_int(cmd, a, val, 0, 1000000000, &seed)) return EXIT_USAGE;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage(cmd, "unknown option '%s'", a);
        } else if (!in) {
            in = a;
        } else {
            return cli_usage(cmd, "unexpected argument '%s'", a);
        }
    }
    if (!in) return cli_usage(cmd, "need a model to quantize");
    if (!out) return cli_usage(cmd, "need an output file (-o OUT)");
    if (mode && strcmp(mode, "weight")) {
        if (!strcmp(mode, "static") || !strcmp(mode, "dynamic") || !strcmp(mode, "qat")) {
            fprintf(stderr, "shrink quantize: --mode %s is not implemented yet (only --mode weight)\n", mode);
            return EXIT_FAIL;
        }
        return cli_usage(cmd, "unknown --mode '%s' (weight; static, dynamic, qat: not implemented yet)", mode);
    }
    if (bits < 2 || bits > 8) return cli_usage(cmd, "--bits %lld is outside 2-8 (weight-only: 8, 4, 3 or 2)", (long long)bits);
    if (bits != 8 && bits != 4 && bits != 3 && bits != 2)
        return cli_usage(cmd, "--bits %lld has no weight-only format (8, 4, 3 or 2)", (long long)bits);
    o.bits = (int)bits;
    if (scheme) {
        if (!strcmp(scheme, "sym")) o.scheme = 1;
        else if (!strcmp(scheme, "asym")) o.scheme = 2;
        else return cli_usage(cmd, "unknown --scheme '%s' (sym, asym)", scheme);
    }
    sh_error err = {0};
    if (sh_quant_format(o.bits, o.scheme, &err) < 0) return cli_usage(cmd, "%s", err.msg);
    if (strcmp(in, out) == 0) return cli_usage(cmd, "IN and OUT are the same file");
    size_t ol = strlen(out);
    if (ol < 5 || strcmp(out + ol - 5, ".onnx"))
        return cli_usage(cmd, "OUT must be an .onnx file (packed quantized weights; llama2.c .bin holds f32 only)");

    sh_graph *g = NULL, *q = NULL;
    if (access(in, F_OK) != 0 &&
        (!strcmp(in, "mlp") || !strcmp(in, "lenet5") || !strcmp(in, "cnn") || !strcmp(in, "llama-tiny"))) {
        if (sh_model_build(in, (uint64_t)seed, &g, &err)) return cli_fail(cmd, &err);
    } else if (sh_model_load(in, &g, &err))
        return cli_fail(cmd, &err);
    sh_quant_report r;
    double t0 = sh_now();
    int rc = sh_quantize_weights(g, &o, &q, &r, &err);
    double secs = sh_now() - t0;
    if (!rc) rc = sh_model_save(q, out, &err);
    if (rc) {
        if (q) sh_quant_report_free(&r);
        sh_graph_free(g);
        sh_graph_free(q);
        return cli_fail(cmd, &err);
    }
    int nq = 0;
    for (int i = 0; i < r.n_layers; i++) nq += r.layers[i].fmt != SH_F32;
    const char *fname = sh_format_get((sh_format)sh_quant_format(o.bits, o.scheme, NULL))->name;
    if (json) {
        printf("{\"input\": ");
        json_str(in);
        printf(", \"output\": ");
        json_str(out);
        printf(", \"mode\": \"weight\", \"bits\": %d, \"format\": \"%s\", \"layers\": [", o.bits, fname);
        for (int i = 0; i < r.n_layers; i++) {
            const sh_quant_layer *l = &r.layers[i];
            printf("%s{\"name\": ", i ? ", " : "");
            json_str(l->name);
            printf(", \"weight\": ");
            json_str(l->weight);
            printf(", \"shape\": [%lld, %lld], \"format\": \"%s\", \"bytes_before\": %lld, \"bytes_after\": %lld, "
                   "\"max_abs_err\": %.9g, \"mean_abs_err\": %.9g, \"note\": ",
                   (long long)l->rows, (long long)l->cols, sh_format_get(l->fmt)->name, (long long)l->bytes_before,
                   (long long)l->bytes_after, l->max_err, l->mean_err);
            json_str(l->note);
            putchar('}');
        }
        printf("], \"quantized_layers\": %d, \"bytes_before\": %lld, \"bytes_after\": %lld, \"seconds\": %.3f}\n", nq,
               (long long)r.bytes_before, (long long)r.bytes_after, secs);
    } else {
        char s1[64], b1[32], b2[32];
        printf("%-24s %-14s %-6s %10s %10s %11s %11s\n", "layer", "shape", "format", "bytes", "-> after", "max |err|",
               "mean |err|");
        for (int i = 0; i < r.n_layers; i++) {
            const sh_quant_layer *l = &r.layers[i];
            int64_t s[2] = {l->rows, l->cols};
            printf("%-24s %-14s %-6s %10lld %10lld %11.3g %11.3g%s%s\n", l->name, sh_shape_str(2, s, s1, sizeof s1),
                   sh_format_get(l->fmt)->name, (long long)l->bytes_before, (long long)l->bytes_after, l->max_err,
                   l->mean_err, l->note[0] ? "  " : "", l->note);
        }
        printf("total: %d of %d layers -> %s, parameters %s -> %s (%.2fx), %.2fs\n", nq, r.n_layers, fname,
               cli_bytes(r.bytes_before, b1, sizeof b1), cli_bytes(r.bytes_after, b2, sizeof b2),
               r.bytes_after ? (double)r.bytes_before / (double)r.bytes_after : 0.0, secs);
        printf("wrote %s\n", out);
    }
    sh_quant_report_free(&r);
    sh_graph_free(g);
    sh_graph_free(q);
    return EXIT_OK;
}
