/* cmd_convert.c - shrink convert: model format conversion (ONNX <-> llama2.c). */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: shrink convert IN OUT [--qdq | --from-qdq] [--json]   (or IN -o OUT)\n"
            "\n"
            "Converts a model between formats, chosen by each file's extension:\n"
            "  .onnx   ONNX model (weights inline; shrink's own ops in domain com.shrink)\n"
            "  .bin    llama2.c checkpoint (Llama-style models only)\n"
            "e.g.  shrink convert stories260K.bin stories.onnx   and back.\n"
            "OUT is written atomically (temporary file, then rename).\n"
            "\n"
            "Options:\n"
            "  -o OUT      the output file (instead of the second argument)\n"
            "  --qdq       write a static int8 model's QLinearConv / QGemm / QLinearAdd / ... as\n"
            "              DequantizeLinear -> f32 op -> QuantizeLinear (QDQ ONNX, read by ONNX Runtime);\n"
            "              a weight-only model's low-bit weights as int8 codes + DequantizeLinear\n"
            "              (ORT loads it and runs f32 with the same weights)\n"
            "  --from-qdq  fuse a QDQ model's patterns into shrink's int8 ops (QLinearConv, QGemm, ...)\n"
            "  --json      print a JSON summary on stdout\n"
            "  -h, --help  this help\n"
            "\n" CLI_EXIT_CODES);
}

int cmd_convert(int argc, char **argv)
{
    const char *cmd = "convert", *in = NULL, *out = NULL;
    int json = 0, qdq = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            usage(stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--qdq") == 0 || strcmp(a, "--from-qdq") == 0) {
            if (qdq) return cli_usage(cmd, "give only one of --qdq and --from-qdq");
            qdq = strcmp(a, "--qdq") == 0 ? 1 : 2;
        } else if (strcmp(a, "-o") == 0) {
            if (i + 1 >= argc) return cli_usage(cmd, "-o needs a file name");
            if (out) return cli_usage(cmd, "two output files given");
            out = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            return cli_usage(cmd, "unknown option '%s'", a);
        } else if (!in) {
            in = a;
        } else if (!out) {
            out = a;
        } else {
            return cli_usage(cmd, "unexpected argument '%s' (give IN and OUT)", a);
        }
    }
    if (!in || !out) return cli_usage(cmd, "need an input and an output file");
    if (strcmp(in, out) == 0) return cli_usage(cmd, "IN and OUT are the same file");
    sh_error err = {0};
    sh_graph *g = NULL;
    if (sh_model_load(in, &g, &err)) return cli_fail(cmd, &err);
    if (qdq) {
        sh_graph *q = NULL;
        if ((qdq == 1 ? sh_graph_to_qdq(g, &q, &err) : sh_graph_from_qdq(g, &q, &err)) != SH_OK) {
            sh_graph_free(g);
            return cli_fail(cmd, &err);
        }
        sh_graph_free(g);
        g = q;
    }
    int rc = sh_model_save(g, out, &err);
    if (rc) {
        sh_graph_free(g);
        return cli_fail(cmd, &err);
    }
    int64_t params = sh_graph_param_count(g), bytes = sh_graph_param_bytes(g);
    if (json) {
        printf("{\"input\": ");
        cli_json_str(stdout, in);
        printf(", \"output\": ");
        cli_json_str(stdout, out);
        printf(", \"nodes\": %d, \"params\": %lld, \"param_bytes\": %lld}\n", g->n_nodes, (long long)params,
               (long long)bytes);
    } else {
        char b[32];
        printf("%s -> %s: %d nodes, %lld parameters (%s)\n", in, out, g->n_nodes, (long long)params,
               cli_bytes(bytes, b, sizeof b));
    }
    sh_graph_free(g);
    return EXIT_OK;
}
