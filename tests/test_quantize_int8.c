/* test_quantize_int8.c - the dynamic / static int8 pass (sh_quantize,
 * src/compress/quantize_int8.c): built-in lenet5 / cnn with random weights
 * against f32, option validation, layers left f32 with a note, save/reload. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/compress.h"
#include "test.h"

/* n synthetic 28x28 "images" in [0,1]: smooth blobs plus noise */
static sh_dataset *fake_images(int n, uint64_t seed)
{
    sh_dataset *d = calloc(1, sizeof *d);
    d->kind = 1;
    d->n = n;
    d->c = 1, d->h = 28, d->w = 28;
    d->n_classes = 10;
    d->x = malloc((size_t)n * 784 * sizeof(float));
    d->y = calloc((size_t)n, sizeof(int32_t));
    uint64_t s = seed * 2654435761u + 1;
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double cx = 6 + (double)((s >> 33) % 16), cy = 6 + (double)((s >> 45) % 16), r = 3 + (double)((s >> 20) % 6);
        for (int p = 0; p < 784; p++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            double dx = p % 28 - cx, dy = p / 28 - cy;
            double v = exp(-(dx * dx + dy * dy) / (2 * r * r)) + 0.1 * (double)((s >> 40) & 0xff) / 255.0;
            d->x[(size_t)i * 784 + p] = (float)(v > 1 ? 1 : v);
        }
        d->y[i] = i % 10;
    }
    return d;
}

static void free_images(sh_dataset *d) { sh_dataset_free(d); }

/* run g on items [0, n) of d (one batch); returns malloc'ed logits */
static float *run_logits(sh_graph *g, const sh_dataset *d, int n, sh_error *err)
{
    int64_t s[4] = {n, 1, 28, 28};
    sh_tensor *x = sh_tensor_view(SH_F32, 4, s, d->x, err);
    sh_program *p = NULL;
    sh_run_opts ro = {.nthreads = 1};
    float *out = NULL;
    if (sh_program_new(g, &ro, &p, err) == SH_OK) {
        const sh_tensor *ins[1] = {x};
        if (sh_program_run(p, ins, 1, err) == SH_OK) {
            sh_tensor *y = sh_program_output(p, 0);
            out = malloc(y->nbytes);
            memcpy(out, y->data, y->nbytes);
        }
    }
    sh_program_free(p);
    sh_tensor_free(x);
    return out;
}

static int count_op(const sh_graph *g, const char *op)
{
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++) n += !strcmp(g->nodes[i].op, op);
    return n;
}

/* static int8 of a built-in model: every Conv / Gemm int8; the logits stay
 * within a few quantization steps of f32 and the top-1 mostly agrees */
static void check_static(const char *kind, int method, double max_steps)
{
    sh_error err = {0};
    sh_graph *g = NULL, *q = NULL;
    CHECK_OK(sh_model_build(kind, 11, &g, &err), &err);
    sh_dataset *d = fake_images(96, 5);
    sh_quant_opts o = {.mode = SH_QMODE_STATIC, .calib = d, .calib_samples = 64, .method = method};
    sh_quant_report r;
    CHECK_OK(sh_quantize(g, &o, &q, &r, &err), &err);
    if (!q) goto out;
    CHECK(count_op(q, "Conv") == 0 && count_op(q, "Gemm") == 0);
    CHECK(count_op(q, "QLinearConv") >= 2 && count_op(q, "QGemm") >= 1);
    CHECK(count_op(q, "QuantizeLinear") == 1); /* only where the image enters */
    int n8 = 0;
    for (int i = 0; i < r.n_layers; i++) {
        n8 += r.layers[i].fmt == SH_I8;
        if (r.layers[i].fmt == SH_I8) {
            CHECK(r.layers[i].bytes_after < r.layers[i].bytes_before);
            CHECK(r.layers[i].act_in_hi > r.layers[i].act_in_lo);
            CHECK(r.layers[i].max_err > 0 && r.layers[i].mean_err <= r.layers[i].max_err);
        }
    }
    CHECK(n8 >= 4);
    CHECK(r.mode == SH_QMODE_STATIC && r.calib_method == method && r.calib_items == 64);
    CHECK_MSG(r.bytes_after * 3.5 < r.bytes_before, "bytes %lld -> %lld", (long long)r.bytes_before,
              (long long)r.bytes_after);
    /* held-out items (32 .. 95 were not all calibration: use 64..95) */
    int n = 32;
    sh_dataset tail = *d;
    tail.x = d->x + 64 * 784;
    float *a = run_logits(g, &tail, n, &err), *b = run_logits(q, &tail, n, &err);
    CHECK(a && b);
    if (a && b) {
        /* one u8 step of the logits' f32 range */
        double lo = a[0], hi = a[0];
        for (int i = 0; i < n * 10; i++) lo = fmin(lo, a[i]), hi = fmax(hi, a[i]);
        double step = (hi - lo) / 255.0, md = 0;
        int agree = 0;
        for (int i = 0; i < n; i++) {
            int ia = 0, ib = 0;
            for (int j = 0; j < 10; j++) {
                md = fmax(md, fabs(a[i * 10 + j] - b[i * 10 + j]));
                if (a[i * 10 + j] > a[i * 10 + ia]) ia = j;
                if (b[i * 10 + j] > b[i * 10 + ib]) ib = j;
            }
            agree += ia == ib;
        }
        CHECK_MSG(md <= max_steps * step, "%s method %d: max |logit diff| %g = %.2f steps of %g", kind, method, md,
                  md / step, step);
        CHECK_MSG(agree >= n * 3 / 4, "%s: top-1 agrees on %d of %d", kind, agree, n);
    }
    free(a);
    free(b);
    sh_quant_report_free(&r);
out:
    sh_graph_free(q);
    sh_graph_free(g);
    free_images(d);
}

TEST(int8_static_lenet5_close_to_f32) { check_static("lenet5", SH_CALIB_MINMAX, 8); }
TEST(int8_static_cnn_close_to_f32) { check_static("cnn", SH_CALIB_MINMAX, 8); }
TEST(int8_static_cnn_methods)
{
    if (sh_test_quick()) SKIP("quick mode");
    check_static("cnn", SH_CALIB_PERCENTILE, 12);
    check_static("cnn", SH_CALIB_MSE, 12);
    check_static("cnn", SH_CALIB_ENTROPY, 16);
}

TEST(int8_static_cnn_structure)
{
    /* BN folded, Relu fused, u8 through MaxPool, QLinearAdd for the residual
     * (with its Relu), QLinearGlobalAveragePool, f32 logits from QGemm */
    sh_error err = {0};
    sh_graph *g = NULL, *q = NULL;
    CHECK_OK(sh_model_build("cnn", 2, &g, &err), &err);
    sh_dataset *d = fake_images(16, 1);
    sh_quant_opts o = {.mode = SH_QMODE_STATIC, .calib = d};
    CHECK_OK(sh_quantize(g, &o, &q, NULL, &err), &err);
    if (q) {
        CHECK(count_op(q, "BatchNormalization") == 0);
        CHECK(count_op(q, "QLinearConv") == 5);
        CHECK(count_op(q, "QLinearAdd") == 1);
        CHECK(count_op(q, "Relu") == 0);
        CHECK(count_op(q, "QLinearGlobalAveragePool") == 1);
        CHECK(count_op(q, "QGemm") == 1);
        CHECK(count_op(q, "DequantizeLinear") == 0);
        CHECK(count_op(q, "MaxPool") == 2);
        int o0 = q->outputs[0];
        CHECK(!strcmp(q->values[o0].name, "logits"));
        for (int i = 0; i < q->n_nodes; i++)
            if (!strcmp(q->nodes[i].op, "QLinearConv")) {
                const sh_tensor *w = q->values[q->nodes[i].in[3]].init;
                const sh_tensor *ws = q->values[q->nodes[i].in[4]].init;
                CHECK(w && w->fmt == SH_I8 && ws && ws->fmt == SH_F32 && ws->ndim == 1 &&
                      ws->shape[0] == w->shape[0]); /* per channel */
                CHECK(q->nodes[i].n_in == 9 && q->values[q->nodes[i].in[8]].init->fmt == SH_I32);
            }
    }
    sh_graph_free(q);
    /* per tensor */
    o.granularity = SH_QGRAN_TENSOR;
    CHECK_OK(sh_quantize(g, &o, &q, NULL, &err), &err);
    for (int i = 0; q && i < q->n_nodes; i++)
        if (!strcmp(q->nodes[i].op, "QLinearConv")) CHECK(q->values[q->nodes[i].in[4]].init->ndim == 0);
    sh_graph_free(q);
    sh_graph_free(g);
    free_images(d);
}

TEST(int8_static_save_reload_identical)
{
    sh_error err = {0};
    sh_graph *g = NULL, *q = NULL, *r = NULL;
    CHECK_OK(sh_model_build("cnn", 4, &g, &err), &err);
    sh_dataset *d = fake_images(40, 3);
    sh_quant_opts o = {.mode = SH_QMODE_STATIC, .calib = d, .calib_samples = 32};
    CHECK_OK(sh_quantize(g, &o, &q, NULL, &err), &err);
    char path[512];
    snprintf(path, sizeof path, "%s/cnn_int8.onnx", sh_test_tmpdir());
    CHECK_OK(sh_model_save(q, path, &err), &err);
    CHECK_OK(sh_model_load(path, &r, &err), &err);
    float *a = run_logits(q, d, 8, &err), *b = r ? run_logits(r, d, 8, &err) : NULL;
    CHECK(a && b);
    if (a && b) CHECK(memcmp(a, b, 80 * sizeof(float)) == 0);
    /* the file really is int8: about 4x smaller than the f32 model's */
    char p32[512];
    snprintf(p32, sizeof p32, "%s/cnn_f32.onnx", sh_test_tmpdir());
    CHECK_OK(sh_model_save(g, p32, &err), &err);
    FILE *f1 = fopen(path, "rb"), *f2 = fopen(p32, "rb");
    CHECK(f1 && f2);
    if (f1 && f2) {
        fseek(f1, 0, SEEK_END);
        fseek(f2, 0, SEEK_END);
        long s1 = ftell(f1), s2 = ftell(f2);
        CHECK_MSG(s2 >= 3.8 * s1, "f32 %ld bytes, int8 %ld bytes (%.2fx)", s2, s1, (double)s2 / s1);
    }
    if (f1) fclose(f1);
    if (f2) fclose(f2);
    free(a);
    free(b);
    sh_graph_free(r);
    sh_graph_free(q);
    sh_graph_free(g);
    free_images(d);
}

/* QLinearConv picks its thread count by timing (the first 16 calls at a
 * shape alternate nthreads and 1 thread): the outputs are the same bits
 * before, during and after the choice. */
TEST(int8_conv_thread_choice_same_outputs)
{
    sh_error err = {0};
    sh_graph *g = NULL, *q = NULL;
    CHECK_OK(sh_model_build("cnn", 4, &g, &err), &err);
    sh_dataset *d = fake_images(8, 5);
    sh_quant_opts o = {.mode = SH_QMODE_STATIC, .calib = d, .calib_samples = 8};
    CHECK_OK(sh_quantize(g, &o, &q, NULL, &err), &err);
    sh_program *p = NULL;
    sh_run_opts ro = {.nthreads = 2};
    int64_t xs[4] = {1, 1, 28, 28};
    sh_tensor *x = sh_tensor_view(SH_F32, 4, xs, d->x, &err);
    float first[10];
    CHECK_OK(q ? sh_program_new(q, &ro, &p, &err) : SH_EINVAL, &err);
    for (int i = 0; p && x && i < 24; i++) {
        const sh_tensor *in[1] = {x};
        CHECK_OK(sh_program_run(p, in, 1, &err), &err);
        const sh_tensor *y = sh_program_output(p, 0);
        if (!y || sh_tensor_numel(y) != 10) break;
        if (!i) memcpy(first, y->data, sizeof first);
        else CHECK_MSG(!memcmp(first, y->data, sizeof first), "run %d differs from run 0", i);
    }
    sh_program_free(p);
    sh_tensor_free(x);
    sh_graph_free(q);
    sh_graph_free(g);
    free_images(d);
}

TEST(int8_dynamic_mlp_and_conv_note)
{
    sh_error err = {0};
    sh_graph *g = NULL, *q = NULL;
    /* lenet5: Convs stay f32 (noted), Gemms become QGemm with f32 input */
    CHECK_OK(sh_model_build("lenet5", 6, &g, &err), &err);
    sh_quant_opts o = {.mode = SH_QMODE_DYNAMIC};
    sh_quant_report r;
    CHECK_OK(sh_quantize(g, &o, &q, &r, &err), &err);
    if (q) {
        CHECK(count_op(q, "QGemm") == 3 && count_op(q, "Conv") == 2 && count_op(q, "QuantizeLinear") == 0);
        int conv_notes = 0;
        for (int i = 0; i < r.n_layers; i++)
            if (!strncmp(r.layers[i].name, "conv", 4))
                conv_notes += r.layers[i].fmt == SH_F32 && strstr(r.layers[i].note, "dynamic") != NULL;
        CHECK(conv_notes == 2);
        sh_dataset *d = fake_images(16, 9);
        float *a = run_logits(g, d, 16, &err), *b = run_logits(q, d, 16, &err);
        CHECK(a && b);
        double md = 0, mx = 0;
        for (int i = 0; a && b && i < 160; i++) md = fmax(md, fabs(a[i] - b[i])), mx = fmax(mx, fabs(a[i]));
        CHECK_MSG(md < 0.02 * mx + 1e-3, "dynamic: max diff %g (max |logit| %g)", md, mx);
        free(a);
        free(b);
        free_images(d);
        sh_quant_report_free(&r);
    }
    sh_graph_free(q);
    sh_graph_free(g);
}

TEST(int8_layer_that_cannot_be_quantized_stays_f32)
{
    /* a Conv whose weight is a graph input, and an excluded Gemm */
    sh_error err = {0};
    sh_graph *g = sh_graph_new("odd");
    int64_t xs[4] = {-1, 1, 8, 8}, ws[4] = {2, 1, 3, 3}, fs[2] = {3, 72};
    CHECK(sh_graph_add_input(g, "x", SH_F32, 4, xs, &err) >= 0);
    CHECK(sh_graph_add_input(g, "w", SH_F32, 4, ws, &err) >= 0);
    sh_tensor *fw = sh_tensor_new(SH_F32, 2, fs, &err);
    for (int i = 0; i < 216; i++) sh_f32(fw)[i] = (float)((i * 37) % 11 - 5) / 20.0f;
    CHECK(sh_graph_add_init(g, "fc.weight", fw, &err) >= 0);
    const char *ci[2] = {"x", "w"}, *co[1] = {"c"};
    int k = sh_graph_add_node(g, "Conv", "conv", 2, ci, 1, co, &err);
    int64_t pads[4] = {1, 1, 1, 1};
    sh_node_set_ints(g, k, "pads", 4, pads);
    const char *fi[1] = {"c"}, *fo[1] = {"f"};
    k = sh_graph_add_node(g, "Flatten", "flat", 1, fi, 1, fo, &err);
    const char *gi[2] = {"f", "fc.weight"}, *go[1] = {"y"};
    k = sh_graph_add_node(g, "Gemm", "fc", 2, gi, 1, go, &err);
    sh_node_set_int(g, k, "transB", 1);
    CHECK(sh_graph_mark_output(g, "y", &err) >= 0);
    CHECK_OK(sh_graph_check(g, &err), &err);
    sh_quant_opts o = {.mode = SH_QMODE_DYNAMIC};
    sh_graph *q = NULL;
    sh_quant_report r;
    CHECK_OK(sh_quantize(g, &o, &q, &r, &err), &err);
    if (q) {
        CHECK(r.n_layers == 2);
        CHECK(r.layers[0].fmt == SH_F32 && strstr(r.layers[0].note, "not a constant"));
        CHECK(r.layers[1].fmt == SH_I8 && count_op(q, "QGemm") == 1);
        sh_quant_report_free(&r);
    }
    sh_graph_free(q);
    o.exclude = "fc";
    CHECK_OK(sh_quantize(g, &o, &q, &r, &err), &err);
    if (q) {
        CHECK(r.layers[1].fmt == SH_F32 && strstr(r.layers[1].note, "exclude"));
        CHECK(count_op(q, "QGemm") == 0);
        sh_quant_report_free(&r);
    }
    sh_graph_free(q);
    sh_graph_free(g);
}

TEST(int8_option_errors)
{
    sh_error err = {0};
    sh_graph *g = NULL, *q = NULL;
    CHECK_OK(sh_model_build("lenet5", 1, &g, &err), &err);
    sh_dataset *d = fake_images(8, 2);
    sh_quant_opts o = {.mode = SH_QMODE_STATIC, .calib = d};
    o.bits = 4;
    CHECK(sh_quantize(g, &o, &q, NULL, &err) == SH_EINVAL && strstr(err.msg, "int8 only") && !q);
    o.bits = 9;
    CHECK(sh_quantize(g, &o, &q, NULL, &err) == SH_EINVAL && strstr(err.msg, "outside 2-8"));
    o.bits = 1;
    CHECK(sh_quantize(g, &o, &q, NULL, &err) == SH_EINVAL && strstr(err.msg, "outside 2-8"));
    o.bits = 8;
    o.granularity = SH_QGRAN_GROUP;
    CHECK(sh_quantize(g, &o, &q, NULL, &err) == SH_EINVAL && strstr(err.msg, "group"));
    o.granularity = 0;
    o.calib = NULL;
    CHECK(sh_quantize(g, &o, &q, NULL, &err) == SH_EINVAL && strstr(err.msg, "--calib"));
    o.calib = d;
    o.method = 7;
    CHECK(sh_quantize(g, &o, &q, NULL, &err) == SH_EINVAL && strstr(err.msg, "method"));
    o.method = SH_CALIB_PERCENTILE;
    o.percentile = 30;
    CHECK(sh_quantize(g, &o, &q, NULL, &err) == SH_EINVAL && strstr(err.msg, "percentile"));
    o.percentile = 0;
    o.method = 0;
    o.mode = 5;
    CHECK(sh_quantize(g, &o, &q, NULL, &err) == SH_EINVAL && strstr(err.msg, "mode"));
    /* calibration data of the wrong shape */
    o.mode = SH_QMODE_STATIC;
    d->h = 14;
    d->w = 56;
    CHECK(sh_quantize(g, &o, &q, NULL, &err) == SH_ESHAPE && strstr(err.msg, "[N,1,14,56]") && !q);
    d->h = d->w = 28;
    /* weight mode goes to sh_quantize_weights */
    sh_quant_opts w = {.mode = SH_QMODE_WEIGHT, .bits = 4};
    sh_quant_report r;
    CHECK_OK(sh_quantize(g, &w, &q, &r, &err), &err);
    CHECK(q && count_op(q, "Gemm") == 3);
    if (q) sh_quant_report_free(&r);
    sh_graph_free(q);
    sh_graph_free(g);
    free_images(d);
}

/* static int8 of a Llama graph (stories260K, ../shared): every linear layer
 * but the tied output becomes QGemm; QGemm outputs read only by f32 ops
 * (RoPE, Attention, SiluMul, the residual Adds) are f32 straight from the
 * accumulators (no DequantizeLinear after a QGemm); perplexity on 2000
 * tokens stays within 3 % of f32 (measured +1.1 % on the whole sample) and
 * a KV-cache generation runs on the quantized graph. */
TEST(int8_static_llama_stories)
{
    const char *sh = sh_test_shared();
    if (!sh) SKIP("no ../shared");
    char p[512], tp[512], dp[512];
    snprintf(p, sizeof p, "%s/models/stories260K/stories260K.bin", sh);
    snprintf(tp, sizeof tp, "%s/models/stories260K/tok512.bin", sh);
    snprintf(dp, sizeof dp, "%s/data/text/tinystories_sample.txt", sh);
    sh_error err = {0};
    sh_graph *g = NULL, *q = NULL;
    sh_tokenizer *tok = NULL;
    sh_dataset *d = NULL;
    CHECK_OK(sh_llama2c_load(p, &g, &err), &err);
    CHECK_OK(sh_tokenizer_load(tp, 512, &tok, &err), &err);
    CHECK_OK(sh_dataset_from_text(dp, tok, &d, &err), &err);
    if (!g || !tok || !d) goto out;
    sh_quant_opts o = {.mode = SH_QMODE_STATIC, .calib = d, .calib_samples = 8};
    sh_quant_report r;
    CHECK_OK(sh_quantize(g, &o, &q, &r, &err), &err);
    if (!q) goto out;
    sh_quant_report_free(&r);
    CHECK_MSG(count_op(q, "QGemm") == 35, "%d QGemm", count_op(q, "QGemm"));
    for (int i = 0; i < q->n_nodes; i++) {
        if (strcmp(q->nodes[i].op, "DequantizeLinear")) continue;
        int v = q->nodes[i].in[0];
        for (int j = 0; j < q->n_nodes; j++)
            if (q->nodes[j].n_out == 1 && q->nodes[j].out[0] == v)
                CHECK_MSG(strcmp(q->nodes[j].op, "QGemm") != 0, "DequantizeLinear after QGemm '%s'", q->nodes[j].name);
    }
    sh_eval_opts eo = {.nthreads = 2, .limit = 2000};
    sh_eval_report ra, rb;
    CHECK_OK(sh_eval_lm_ex(g, d, &eo, &ra, &err), &err);
    CHECK_OK(sh_eval_lm_ex(q, d, &eo, &rb, &err), &err);
    CHECK_MSG(rb.ppl > 1 && rb.ppl < ra.ppl * 1.03, "perplexity f32 %.4f, int8 %.4f", ra.ppl, rb.ppl);
    /* SmoothQuant alpha 0.5 with percentile ranges: every norm smoothed and
     * closer to f32 (whole sample: +0.19 % against +1.1 % for the default) */
    sh_graph *q2 = NULL;
    sh_quant_opts o2 = {.mode = SH_QMODE_STATIC, .calib = d, .calib_samples = 8, .smooth = 0.5,
                        .method = SH_CALIB_PERCENTILE};
    sh_quant_report r2;
    CHECK_OK(sh_quantize(g, &o2, &q2, &r2, &err), &err);
    if (q2) {
        CHECK_MSG(r2.smoothed_norms == 10, "%d norms smoothed", r2.smoothed_norms);
        sh_eval_report rc;
        CHECK_OK(sh_eval_lm_ex(q2, d, &eo, &rc, &err), &err);
        CHECK_MSG(rc.ppl > 1 && rc.ppl < rb.ppl && rc.ppl < ra.ppl * 1.01, "perplexity f32 %.4f, int8 %.4f, "
                  "smoothed %.4f", ra.ppl, rb.ppl, rc.ppl);
        sh_quant_report_free(&r2);
        sh_graph_free(q2);
    }
    sh_generate_stats st;
    CHECK_OK(sh_generate(q, tok, "Once upon a time", 20, 0.0f, 0.9f, 1, 1, NULL, NULL, &st, &err), &err);
    CHECK(st.generated_tokens > 0);
out:
    sh_dataset_free(d);
    sh_tokenizer_free(tok);
    sh_graph_free(q);
    sh_graph_free(g);
}

/* SmoothQuant (smoothquant.c) on a random Llama: every norm feeding only
 * quantized Gemms is smoothed (2 per layer), the f32 function is unchanged
 * (logits within 1e-4 relative), the weights and norm weights did change;
 * an alpha outside (0, 1) or no calibration data is a clear error. */
TEST(int8_smoothquant_preserves_function)
{
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("llama-tiny", 5, &g, &err), &err);
    if (!g) return;
    sh_dataset d = {.kind = 2, .n = 512, .vocab = 256, .n_docs = 8};
    d.tokens = malloc(sizeof(int32_t) * 512);
    d.doc_off = malloc(sizeof(int64_t) * 9);
    for (int i = 0; i < 512; i++) d.tokens[i] = (int32_t)((i * 37 + i / 7) % 256);
    for (int i = 0; i <= 8; i++) d.doc_off[i] = i * 64;
    /* one outlier channel in the activations: a large norm weight */
    int nw = sh_graph_find(g, "layers.0.attention_norm.weight");
    CHECK(nw >= 0);
    if (nw >= 0) ((float *)g->values[nw].init->data)[3] = 20.0f;
    sh_graph *s = sh_graph_clone(g, &err);
    int *qok = calloc((size_t)s->n_nodes, sizeof(int));
    for (int i = 0; i < s->n_nodes; i++) qok[i] = !strcmp(s->nodes[i].op, "Gemm");
    sh_quant_opts o = {.mode = SH_QMODE_STATIC, .calib = &d, .calib_samples = 8};
    int nn = 0;
    CHECK_OK(sh_smooth_apply(s, qok, 0.5, &o, &nn, &err), &err);
    CHECK_MSG(nn == 8, "%d norms smoothed (4 layers x 2)", nn);
    int64_t shp[2] = {2, 16};
    sh_tensor *t = sh_tensor_new(SH_I64, 2, shp, &err);
    for (int i = 0; i < 32; i++) ((int64_t *)t->data)[i] = (i * 11) % 256;
    float *ya = NULL, *yb = NULL;
    size_t ny = 0;
    for (int m = 0; m < 2; m++) {
        sh_program *p = NULL;
        sh_run_opts ro = {.nthreads = 1};
        const sh_tensor *in[1] = {t};
        CHECK_OK(sh_program_new(m ? s : g, &ro, &p, &err), &err);
        CHECK_OK(sh_program_run(p, in, 1, &err), &err);
        sh_tensor *y = sh_program_output(p, 0);
        ny = y->nbytes / 4;
        float *c = malloc(y->nbytes);
        memcpy(c, y->data, y->nbytes);
        if (m) yb = c;
        else ya = c;
        sh_program_free(p);
    }
    double md = 0, mx = 0;
    for (size_t i = 0; i < ny; i++) md = fmax(md, fabs(ya[i] - yb[i])), mx = fmax(mx, fabs(ya[i]));
    CHECK_MSG(md <= 1e-4 * mx + 1e-5, "smoothing changed the logits by %g (max %g)", md, mx);
    int sv = sh_graph_find(s, "layers.0.attention_norm.weight");
    CHECK(sv >= 0 && ((float *)s->values[sv].init->data)[3] < 20.0f);
    CHECK(sh_smooth_apply(s, qok, 1.5, &o, &nn, &err) == SH_EINVAL);
    sh_quant_opts bad = {.mode = SH_QMODE_STATIC, .calib = &d, .smooth = 1.0};
    sh_graph *q = NULL;
    CHECK(sh_quantize(g, &bad, &q, NULL, &err) == SH_EINVAL && !q);
    sh_quant_opts nocal = {.mode = SH_QMODE_DYNAMIC, .smooth = 0.5};
    CHECK(sh_quantize(g, &nocal, &q, NULL, &err) == SH_EINVAL && !q);
    free(ya), free(yb), free(qok);
    sh_tensor_free(t);
    sh_graph_free(s);
    sh_graph_free(g);
    free(d.tokens), free(d.doc_off);
}
