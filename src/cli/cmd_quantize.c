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
            "Usage: shrink quantize IN -o OUT [--calib SPEC] [--mode weight|dynamic|static] [options]\n"
            "\n"
            "  shrink quantize IN -o OUT --calib SPEC      static int8 (per-channel weights,\n"
            "                                              calibrated u8 activations)\n"
            "  shrink quantize IN -o OUT --bits 4 [--gptq --calib SPEC]\n"
            "                                              weight-only, packed 4-bit groups\n"
            "  shrink quantize IN -o OUT --mode dynamic    int8 linear layers, activations\n"
            "                                              quantized per call\n"
            "\n"
            "Weight-only mode rounds the weight [out,in] of every Gemm, MatMul (constant\n"
            "weight: it becomes Gemm transB=1 over the transposed weight) and Conv\n"
            "in groups along the input dimension and stores it packed (q8_0: 8.5 bits per\n"
            "weight, q4_0 4.5, q4_1 5, q3_0 3.5, q2_1 3); those layers run on integer\n"
            "kernels.  An input size that is not a multiple of the group is padded with\n"
            "zero weights.  Weights shared with another node (a tied embedding read by\n"
            "Gather) stay f32; the table says why for every layer left f32.\n"
            "IN: a model file, or a built-in model\n"
            "mlp | lenet5 | cnn | llama-tiny.  OUT (.onnx) is written atomically.\n"
            "\n"
            "Options:\n"
            "  -o, --output FILE      the quantized model (required)\n"
            "  --mode M               weight (default without --calib) | dynamic (int8 Gemm/MatMul\n"
            "                         weights, activations quantized per call) | static (default\n"
            "                         with --calib: int8 weights per channel and u8 activations,\n"
            "                         BatchNorm folded, QLinearConv/QGemm chains; ops without an\n"
            "                         int8 form stay f32 and the table says so)\n"
            "  --calib SPEC           calibration data set, e.g. fashion-mnist:train:1000\n"
            "  --calib-samples N      items of --calib used (default 256)\n"
            "  --method M             activation ranges: entropy (TensorRT KL; default: best on\n"
            "                         the Fashion-MNIST cnn) | minmax | percentile:P | mse\n"
            "  --granularity G        int8 weights: channel (default) | tensor\n"
            "  --smooth A             SmoothQuant: scale activation outlier channels into the\n"
            "                         weights of the layers a norm feeds (alpha A in (0,1),\n"
            "                         e.g. 0.5; transformers)\n"
            "  --bits B               8 (q8_0, default), 4 (q4_0 / q4_1), 3 (q3_0), 2 (q2_1)\n"
            "  --scheme S             sym | asym | log (log4: 4-bit powers of two) (default:\n"
            "                         sym, asym for 2 bits)\n"
            "Weight mode (Gemm, MatMul and Conv weights; BatchNorm folded first):\n"
            "  --granularity G        group:32 (default) | group:64 | group:128 | channel |\n"
            "                         tensor (channel / tensor: the q4_0_ch / q4_0_t ... rows,\n"
            "                         one f32 scale per row / tensor, codes packed); group\n"
            "                         64 / 128: layers whose input size is not a multiple\n"
            "                         stay f32\n"
            "  --gptq                 GPTQ rounding with Hessians from --calib (sequential)\n"
            "  --awq                  AWQ scales folded into the RMSNorm / LayerNorm before\n"
            "                         the layer (others: noted, unscaled)\n"
            "  --bias-correction      add (W - Q) E[x] to each quantized layer's bias\n"
            "  --damp F               GPTQ damping, fraction of mean diag(H) (default 0.01)\n"
            "  --layer-bits L=B,...   per-layer bits (0 = keep f32), e.g. fc=8,conv1=0\n"
            "  --budget-bytes N | --max-drop X   mixed precision: the bits of each layer chosen\n"
            "                         from a sensitivity table on --calib (details:\n"
            "                         shrink quantize --budget-bytes 0 --help)\n"
            "  --seq-len N            text calibration: tokens per row (default 64)\n"
            "  --threads N            threads (default: all)\n"
            "  --qat EPOCHS           quantization-aware training on --data (fake-quant, STE,\n"
            "                         LSQ scales; [--teacher]): shrink quantize --qat 1 --help\n"
            "  --skip-classifier      leave the Gemm that writes a graph output f32\n"
            "  --exclude L1,L2        leave these layers (node or weight names) f32\n"
            "  --seed S               seed of a built-in model (default 0)\n"
            "  --json                 print a JSON report on stdout\n"
            "  -h, --help             this help\n"
            "\n" CLI_EXIT_CODES);
}

static int wants_int8(int argc, char **argv);
static int cmd_quantize_int8(int argc, char **argv);

/* Options that the weight-mode and the int8 parsers of quantize share. */
typedef struct q_common {
    const char *out, *mode, *calib, *gran, *scheme;
    int json;
    int64_t bits, seed, samples, threads;
} q_common;

/* argv[*i] as one of the shared options: 1 consumed (*i advanced past its
 * value), 0 not one of them, -1 after printing a usage error. */
static int q_common_opt(const char *cmd, int argc, char **argv, int *i, q_common *c, sh_quant_opts *o)
{
    const char *a = argv[*i], *val;
    const char **str = !strcmp(a, "-o") || !strcmp(a, "--output") ? &c->out
                       : !strcmp(a, "--mode")                     ? &c->mode
                       : !strcmp(a, "--calib")                    ? &c->calib
                       : !strcmp(a, "--granularity")              ? &c->gran
                       : !strcmp(a, "--scheme")                   ? &c->scheme
                       : !strcmp(a, "--exclude")                  ? &o->exclude
                                                                  : NULL;
    if (str) return (*str = cli_arg(cmd, argc, argv, i)) ? 1 : -1;
    if (!strcmp(a, "--json")) c->json = 1;
    else if (!strcmp(a, "--skip-classifier")) o->skip_classifier = 1;
    else if (!strcmp(a, "--bits")) {
        if (!(val = cli_arg(cmd, argc, argv, i)) || cli_int(cmd, a, val, -1000000, 1000000, &c->bits)) return -1;
    } else if (!strcmp(a, "--seed")) {
        if (!(val = cli_arg(cmd, argc, argv, i)) || cli_int(cmd, a, val, 0, 1000000000, &c->seed)) return -1;
    } else if (!strcmp(a, "--calib-samples")) {
        if (!(val = cli_arg(cmd, argc, argv, i)) || cli_int(cmd, a, val, 1, 1000000000, &c->samples)) return -1;
    } else if (!strcmp(a, "--threads")) {
        if (!(val = cli_arg(cmd, argc, argv, i)) || cli_int(cmd, a, val, 0, 1024, &c->threads)) return -1;
    } else
        return 0;
    return 1;
}

int cmd_quantize(int argc, char **argv)
{
    static const char *const auto_opts[] = {"--budget-bytes", "--max-drop", NULL};
    if (cli_has_opt(argc, argv, auto_opts)) return cmd_quantize_auto(argc, argv); /* cmd_sensitivity.c */
    static const char *const qat_opts[] = {"--qat", NULL};
    if (cli_has_opt(argc, argv, qat_opts)) return cmd_quantize_qat(argc, argv); /* cmd_distill.c */
    if (wants_int8(argc, argv)) return cmd_quantize_int8(argc, argv); /* dynamic / static int8, below */
    const char *cmd = "quantize", *in = NULL;
    int64_t wseq = 0;
    double damp = 0;
    sh_quant_opts o = {0};
    q_common c = {.bits = 8}; /* --calib: weight mode's GPTQ / AWQ / bias correction */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
        int co = q_common_opt(cmd, argc, argv, &i, &c, &o);
        if (co < 0) return EXIT_USAGE;
        if (co) continue;
        if (cli_is_help(a)) {
            usage(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--gptq")) {
            o.gptq = 1;
        } else if (!strcmp(a, "--awq")) {
            o.awq = 1;
        } else if (!strcmp(a, "--bias-correction")) {
            o.bias_correction = 1;
        } else if (!strcmp(a, "--layer-bits")) {
            if (!(o.layer_bits = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--seq-len")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_int(cmd, a, val, 2, 1000000, &wseq)) return EXIT_USAGE;
        } else if (!strcmp(a, "--damp")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_float(cmd, a, val, 0.0, 10.0, &damp)) return EXIT_USAGE;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage(cmd, "unknown option '%s'", a);
        } else if (!in) {
            in = a;
        } else {
            return cli_usage(cmd, "unexpected argument '%s'", a);
        }
    }
    const char *out = c.out, *mode = c.mode, *scheme = c.scheme, *calib = c.calib, *gran = c.gran;
    int json = c.json;
    int64_t bits = c.bits, seed = c.seed, wsamples = c.samples, wthreads = c.threads;
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
        else if (!strcmp(scheme, "log")) o.scheme = 3;
        else return cli_usage(cmd, "unknown --scheme '%s' (sym, asym, log)", scheme);
    }
    if (gran) {
        int64_t gsz = 0;
        if (!strcmp(gran, "tensor")) o.granularity = SH_QGRAN_TENSOR;
        else if (!strcmp(gran, "channel")) o.granularity = SH_QGRAN_CHANNEL;
        else if (!strcmp(gran, "group")) o.granularity = SH_QGRAN_GROUP;
        else if (!strncmp(gran, "group:", 6)) {
            if (cli_int(cmd, "--granularity group:N", gran + 6, 1, 1 << 20, &gsz)) return EXIT_USAGE;
            if (gsz != 32 && gsz != 64 && gsz != 128)
                return cli_usage(cmd, "--granularity group:%lld: weight-only groups are 32, 64 or 128", (long long)gsz);
            o.granularity = SH_QGRAN_GROUP;
            o.group = (int)gsz;
        } else
            return cli_usage(cmd, "unknown --granularity '%s' (tensor, channel, group:N)", gran);
    }
    if ((o.gptq || o.awq || o.bias_correction) && !calib)
        return cli_usage(cmd, "--gptq, --awq and --bias-correction need calibration data: --calib SPEC");
    o.calib_samples = (int)wsamples;
    o.seq_len = (int)wseq;
    o.nthreads = (int)wthreads;
    o.gptq_damp = damp;
    sh_error err = {0};
    if (sh_quant_format(o.bits, o.scheme, &err) < 0) return cli_usage(cmd, "%s", err.msg);
    if (strcmp(in, out) == 0) return cli_usage(cmd, "IN and OUT are the same file");
    size_t ol = strlen(out);
    if (ol < 5 || strcmp(out + ol - 5, ".onnx"))
        return cli_usage(cmd, "OUT must be an .onnx file (packed quantized weights; llama2.c .bin holds f32 only)");

    sh_graph *g = NULL, *q = NULL;
    int lrc = cli_load_model(cmd, in, seed, &g);
    if (lrc) return lrc;
    sh_dataset *wd = NULL;
    if (calib && sh_dataset_load(calib, &wd, &err)) {
        sh_graph_free(g);
        return cli_fail(cmd, &err);
    }
    o.calib = wd;
    sh_quant_report r;
    double t0 = sh_now();
    int rc = sh_quantize_weights(g, &o, &q, &r, &err);
    double secs = sh_now() - t0;
    sh_dataset_free(wd);
    o.calib = NULL;
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
    int fsame = -1; /* the stored format when every quantized layer has the same (e.g. q4_0_ch) */
    for (int i = 0; i < r.n_layers; i++)
        if (r.layers[i].fmt != SH_F32) fsame = fsame == -1 || fsame == (int)r.layers[i].fmt ? (int)r.layers[i].fmt : -2;
    if (fsame >= 0) fname = sh_format_get((sh_format)fsame)->name;
    if (json) {
        printf("{\"input\": ");
        cli_json_str(stdout, in);
        printf(", \"output\": ");
        cli_json_str(stdout, out);
        printf(", \"mode\": \"weight\", \"bits\": %d, \"format\": \"%s\", \"layers\": [", o.bits, fname);
        for (int i = 0; i < r.n_layers; i++) {
            const sh_quant_layer *l = &r.layers[i];
            printf("%s{\"name\": ", i ? ", " : "");
            cli_json_str(stdout, l->name);
            printf(", \"weight\": ");
            cli_json_str(stdout, l->weight);
            printf(", \"shape\": [%lld, %lld], \"format\": \"%s\", \"bytes_before\": %lld, \"bytes_after\": %lld, "
                   "\"max_abs_err\": %.9g, \"mean_abs_err\": %.9g, \"note\": ",
                   (long long)l->rows, (long long)l->cols, sh_format_get(l->fmt)->name, (long long)l->bytes_before,
                   (long long)l->bytes_after, l->max_err, l->mean_err);
            cli_json_str(stdout, l->note);
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

/* ---- dynamic / static int8 (src/compress/quantize_int8.c) ----------------- */

/* 1 if this command line asks for int8: --mode dynamic|static, or --calib
 * without --mode, --gptq, --awq and with --bits 8 (or none). */
static int wants_int8(int argc, char **argv)
{
    const char *mode = NULL, *bits = NULL;
    int calib = 0, other = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mode") && i + 1 < argc) mode = argv[++i];
        else if (!strcmp(argv[i], "--bits") && i + 1 < argc) bits = argv[++i];
        else if (!strcmp(argv[i], "--calib")) calib = 1;
        else if (!strcmp(argv[i], "--gptq") || !strcmp(argv[i], "--awq") || !strcmp(argv[i], "--qat") ||
                 !strcmp(argv[i], "--bias-correction"))
            other = 1;
    }
    if (mode) return !strcmp(mode, "static") || !strcmp(mode, "dynamic");
    return calib && !other && (!bits || !strcmp(bits, "8"));
}

static int parse_method(const char *cmd, const char *s, sh_quant_opts *o)
{
    if (!strcmp(s, "minmax")) o->method = SH_CALIB_MINMAX;
    else if (!strcmp(s, "mse")) o->method = SH_CALIB_MSE;
    else if (!strcmp(s, "entropy") || !strcmp(s, "kl")) o->method = SH_CALIB_ENTROPY;
    else if (!strcmp(s, "percentile")) o->method = SH_CALIB_PERCENTILE;
    else if (!strncmp(s, "percentile:", 11)) {
        o->method = SH_CALIB_PERCENTILE;
        if (cli_float(cmd, "--method percentile:P", s + 11, 50.000001, 100.0, &o->percentile)) return EXIT_USAGE;
    } else
        return cli_usage(cmd, "unknown --method '%s' (minmax, percentile:P, mse, entropy)", s);
    return EXIT_OK;
}

static const char *method_name(int m)
{
    static const char *const names[] = {"minmax", "percentile", "mse", "entropy"};
    return m >= 0 && m < 4 ? names[m] : "?";
}

static int cmd_quantize_int8(int argc, char **argv)
{
    const char *cmd = "quantize", *in = NULL, *method = NULL;
    sh_quant_opts o = {0};
    q_common c = {.bits = 8};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
        int co = q_common_opt(cmd, argc, argv, &i, &c, &o);
        if (co < 0) return EXIT_USAGE;
        if (co) continue;
        if (cli_is_help(a)) {
            usage(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--method")) {
            if (!(method = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--smooth")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_float(cmd, a, val, 1e-6, 0.999999, &o.smooth))
                return EXIT_USAGE;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage(cmd, "unknown option '%s' for int8 quantization", a);
        } else if (!in) {
            in = a;
        } else {
            return cli_usage(cmd, "unexpected argument '%s'", a);
        }
    }
    const char *out = c.out, *mode = c.mode, *calib = c.calib, *gran = c.gran, *scheme = c.scheme;
    int json = c.json;
    int64_t bits = c.bits, seed = c.seed, samples = c.samples, threads = c.threads;
    if (!in) return cli_usage(cmd, "need a model to quantize");
    if (!out) return cli_usage(cmd, "need an output file (-o OUT)");
    if (!mode) mode = "static"; /* --calib alone: static int8 */
    o.mode = !strcmp(mode, "static") ? SH_QMODE_STATIC : SH_QMODE_DYNAMIC;
    int stat = o.mode == SH_QMODE_STATIC;
    if (stat && !calib)
        return cli_usage(cmd, "--mode static needs calibration data: --calib SPEC (e.g. fashion-mnist:train:1000)");
    if (!stat && (method || (calib && o.smooth == 0.0)))
        return cli_usage(cmd, "--mode dynamic quantizes activations per call: no --calib / --method (--calib only "
                              "with --smooth)");
    if (o.smooth != 0.0 && !calib) return cli_usage(cmd, "--smooth needs calibration data: --calib SPEC");
    if (bits < 2 || bits > 8) return cli_usage(cmd, "--bits %lld is outside 2-8", (long long)bits);
    if (bits != 8)
        return cli_usage(cmd, "--mode %s is int8: --bits 8 (use --mode weight for %lld-bit weights)", mode,
                         (long long)bits);
    o.bits = 8;
    if (scheme && strcmp(scheme, "sym"))
        return cli_usage(cmd, "--mode %s uses symmetric int8 weights (--scheme sym), not '%s'", mode, scheme);
    if (gran) {
        if (!strcmp(gran, "tensor")) o.granularity = SH_QGRAN_TENSOR;
        else if (!strcmp(gran, "channel")) o.granularity = SH_QGRAN_CHANNEL;
        else if (!strncmp(gran, "group", 5))
            return cli_usage(cmd, "--granularity %s: int8 %s weights are per tensor or per channel (groups: --mode weight)",
                             gran, mode);
        else return cli_usage(cmd, "unknown --granularity '%s' (tensor, channel, group:N)", gran);
    }
    o.method = SH_CALIB_ENTROPY; /* default: the best accuracy measured on the cnn */
    if (method && parse_method(cmd, method, &o)) return EXIT_USAGE;
    o.calib_samples = (int)samples;
    o.nthreads = (int)threads;
    if (strcmp(in, out) == 0) return cli_usage(cmd, "IN and OUT are the same file");
    size_t ol = strlen(out);
    if (ol < 5 || strcmp(out + ol - 5, ".onnx")) return cli_usage(cmd, "OUT must be an .onnx file");

    sh_error err = {0};
    sh_graph *g = NULL, *q = NULL;
    sh_dataset *d = NULL;
    int lrc = cli_load_model(cmd, in, seed, &g);
    if (lrc) return lrc;
    if (calib && sh_dataset_load(calib, &d, &err)) {
        sh_graph_free(g);
        return cli_fail(cmd, &err);
    }
    o.calib = d;
    sh_quant_report r;
    double t0 = sh_now();
    int rc = sh_quantize(g, &o, &q, &r, &err);
    double secs = sh_now() - t0;
    if (!rc) rc = sh_model_save(q, out, &err);
    if (rc) {
        if (q) sh_quant_report_free(&r);
        sh_graph_free(g);
        sh_graph_free(q);
        sh_dataset_free(d);
        return cli_fail(cmd, &err);
    }
    int nq = 0, nl = 0;
    for (int i = 0; i < r.n_layers; i++) {
        nq += r.layers[i].fmt == SH_I8;
        nl += r.layers[i].rows > 0;
    }
    char mdesc[64];
    if (r.calib_method == SH_CALIB_PERCENTILE) snprintf(mdesc, sizeof mdesc, "percentile:%g", r.percentile);
    else snprintf(mdesc, sizeof mdesc, "%s", method_name(r.calib_method));
    const char *gname = o.granularity == SH_QGRAN_TENSOR ? "tensor" : "channel";
    if (json) {
        printf("{\"input\": ");
        cli_json_str(stdout, in);
        printf(", \"output\": ");
        cli_json_str(stdout, out);
        printf(", \"mode\": \"%s\", \"bits\": 8, \"granularity\": \"%s\"", mode, gname);
        if (stat) printf(", \"method\": \"%s\", \"calib_items\": %lld", mdesc, (long long)r.calib_items);
        if (o.smooth != 0.0) printf(", \"smooth\": %g, \"smoothed_norms\": %d", o.smooth, r.smoothed_norms);
        printf(", \"layers\": [");
        for (int i = 0; i < r.n_layers; i++) {
            const sh_quant_layer *l = &r.layers[i];
            printf("%s{\"name\": ", i ? ", " : "");
            cli_json_str(stdout, l->name);
            printf(", \"weight\": ");
            cli_json_str(stdout, l->weight);
            printf(", \"shape\": [%lld, %lld], \"format\": \"%s\", \"bytes_before\": %lld, \"bytes_after\": %lld, "
                   "\"max_abs_err\": %.9g, \"mean_abs_err\": %.9g",
                   (long long)l->rows, (long long)l->cols, l->fmt == SH_I8 ? "int8" : "f32",
                   (long long)l->bytes_before, (long long)l->bytes_after, l->max_err, l->mean_err);
            if (stat && l->fmt == SH_I8)
                printf(", \"input_range\": [%.9g, %.9g], \"output_range\": [%.9g, %.9g]", l->act_in_lo, l->act_in_hi,
                       l->act_out_lo, l->act_out_hi);
            printf(", \"note\": ");
            cli_json_str(stdout, l->note);
            putchar('}');
        }
        printf("], \"quantized_layers\": %d, \"bytes_before\": %lld, \"bytes_after\": %lld, \"seconds\": %.3f}\n", nq,
               (long long)r.bytes_before, (long long)r.bytes_after, secs);
    } else {
        char s1[64], b1[32], b2[32], rin[48], rout[48];
        printf("%-20s %-12s %-5s %9s %9s %10s %-21s %-21s\n", "layer", "shape", "state", "bytes", "-> after",
               "max |err|", stat ? "input range" : "", stat ? "output range" : "");
        for (int i = 0; i < r.n_layers; i++) {
            const sh_quant_layer *l = &r.layers[i];
            int64_t s[2] = {l->rows, l->cols};
            rin[0] = rout[0] = 0;
            if (stat && l->fmt == SH_I8) {
                snprintf(rin, sizeof rin, "[%.4g, %.4g]", l->act_in_lo, l->act_in_hi);
                snprintf(rout, sizeof rout, "[%.4g, %.4g]", l->act_out_lo, l->act_out_hi);
            }
            if (l->rows > 0)
                printf("%-20s %-12s %-5s %9lld %9lld %10.3g %-21s %-21s%s%s\n", l->name,
                       sh_shape_str(2, s, s1, sizeof s1), l->fmt == SH_I8 ? "int8" : "f32", (long long)l->bytes_before,
                       (long long)l->bytes_after, l->max_err, rin, rout, l->note[0] ? " " : "", l->note);
            else
                printf("%-20s %-12s %-5s %9s %9s %10s %-21s %-21s %s\n", l->name, l->weight, "f32", "-", "-", "-", "",
                       "", l->note);
        }
        printf("total: %d of %d layers int8 (%s, weights per %s%s%s), parameters %s -> %s (%.2fx), %.2fs\n", nq, nl,
               mode, gname, stat ? ", activations u8 per tensor, calibration " : "", stat ? mdesc : "",
               cli_bytes(r.bytes_before, b1, sizeof b1), cli_bytes(r.bytes_after, b2, sizeof b2),
               r.bytes_after ? (double)r.bytes_before / (double)r.bytes_after : 0.0, secs);
        if (stat) printf("calibration: %lld items of %s\n", (long long)r.calib_items, calib);
        if (o.smooth != 0.0) printf("smoothquant: alpha %g on the outputs of %d norms\n", o.smooth, r.smoothed_norms);
        printf("wrote %s\n", out);
    }
    sh_quant_report_free(&r);
    sh_graph_free(g);
    sh_graph_free(q);
    sh_dataset_free(d);
    return EXIT_OK;
}
