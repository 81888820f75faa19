/* test_quantize.c - weight-only quantization: sh_quantize_weights, the
 * quantized Gemm forward (vs dequantize-then-f32 Gemm), save / reload, and
 * quality on stories260K (perplexity, KL vs f32). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/quant_formats.h"
#include "test.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* x [M?,K] -> Gemm(W [N,K], transB=1, bias [N], act) -> y */
static sh_graph *linear_graph(int64_t N, int64_t K, int relu, int bias)
{
    sh_error e = {0};
    sh_graph *g = sh_graph_new("lin");
    int64_t xs[2] = {-1, K}, ws[2] = {N, K}, bs[1] = {N};
    sh_graph_add_input(g, "x", SH_F32, 2, xs, &e);
    sh_tensor *w = sh_tensor_new(SH_F32, 2, ws, &e);
    for (int64_t i = 0; i < N * K; i++) sh_f32(w)[i] = frand() * 0.5f;
    sh_graph_add_init(g, "w", w, &e);
    if (bias) {
        sh_tensor *b = sh_tensor_new(SH_F32, 1, bs, &e);
        for (int64_t i = 0; i < N; i++) sh_f32(b)[i] = frand();
        sh_graph_add_init(g, "b", b, &e);
    }
    const char *in[3] = {"x", "w", "b"}, *out[1] = {"y"};
    int k = sh_graph_add_node(g, "Gemm", "fc", bias ? 3 : 2, in, 1, out, &e);
    sh_node_set_int(g, k, "transB", 1);
    if (relu) sh_node_set_string(g, k, "activation", "Relu");
    sh_graph_mark_output(g, "y", &e);
    CHECK_OK(sh_graph_check(g, &e), &e);
    return g;
}

static sh_tensor *run1(sh_graph *g, const sh_tensor *x, sh_error *e)
{
    sh_program *p = NULL;
    sh_run_opts ro = {0};
    if (sh_program_new(g, &ro, &p, e)) return NULL;
    const sh_tensor *in[1] = {x};
    sh_tensor *y = NULL;
    if (!sh_program_run(p, in, 1, e)) y = sh_tensor_clone(sh_program_output(p, 0), e);
    sh_program_free(p);
    return y;
}

TEST(quantize_gemm_matches_dequantized_f32)
{
    static const int bits[] = {8, 4, 4, 3, 2};
    static const int scheme[] = {0, 1, 2, 0, 0};
    static const char *names[] = {"q8_0", "q4_0", "q4_1", "q3_0", "q2_1"};
    for (int relu = 0; relu < 2; relu++)
        for (int f = 0; f < 5; f++) {
            sh_error e = {0};
            sh_graph *g = linear_graph(70, 96, relu, 1 - relu), *q = NULL;
            sh_quant_opts o = {.bits = bits[f], .scheme = scheme[f]};
            sh_quant_report r;
            CHECK_OK(sh_quantize_weights(g, &o, &q, &r, &e), &e);
            CHECK(r.n_layers == 1 && !strcmp(sh_format_get(r.layers[0].fmt)->name, names[f]));
            CHECK(r.layers[0].bytes_before == 70 * 96 * 4);
            CHECK(r.layers[0].bytes_after == (int64_t)sh_format_bytes(r.layers[0].fmt, 70 * 96));
            CHECK(r.layers[0].max_err > 0 && r.layers[0].mean_err <= r.layers[0].max_err);
            /* the reference: the same graph with the dequantized weight in f32 */
            sh_graph *d = sh_graph_clone(q, &e);
            int wv = sh_graph_find(d, "w");
            sh_tensor *wq = d->values[wv].init, *wf = sh_tensor_new(SH_F32, 2, wq->shape, &e);
            sh_format_get(wq->fmt)->to_f32(wq->data, sh_f32(wf), 70 * 96);
            d->values[wv].init = wf;
            d->values[wv].fmt = SH_F32;
            sh_tensor_free(wq);
            for (int64_t M = 1; M <= 45; M += M < 9 ? 4 : 36) { /* 1, 5: integer kernels; 9: GEMM; 45: unpacked f32 */
                int64_t xs[2] = {M, 96};
                sh_tensor *x = sh_tensor_new(SH_F32, 2, xs, &e);
                for (int64_t i = 0; i < M * 96; i++) sh_f32(x)[i] = frand();
                sh_tensor *yq = run1(q, x, &e), *yd = run1(d, x, &e);
                CHECK_MSG(yq && yd, "%s: %s", names[f], e.msg);
                if (yq && yd) {
                    CHECK(yq->ndim == 2 && yq->shape[0] == M && yq->shape[1] == 70);
                    double mx = 0, ref = 0;
                    for (int64_t i = 0; i < M * 70; i++) {
                        double a = fabs(sh_f32(yq)[i] - sh_f32(yd)[i]);
                        if (a > mx) mx = a;
                        if (fabs(sh_f32(yd)[i]) > ref) ref = fabs(sh_f32(yd)[i]);
                        if (relu) CHECK(sh_f32(yq)[i] >= 0.0f);
                    }
                    /* only the activations' q8_0 rounding differs */
                    CHECK_MSG(mx <= 0.02 * ref + 1e-3, "%s M=%lld relu=%d: max |diff| %g (max |y| %g)", names[f],
                              (long long)M, relu, mx, ref);
                }
                sh_tensor_free(x);
                sh_tensor_free(yq);
                sh_tensor_free(yd);
            }
            sh_quant_report_free(&r);
            sh_graph_free(d);
            sh_graph_free(q);
            sh_graph_free(g);
        }
}

TEST(quantize_skips_and_errors)
{
    sh_error e = {0};
    sh_graph *g = linear_graph(8, 40, 0, 1), *q = NULL;
    sh_quant_opts o = {.bits = 4, .scheme = 0};
    sh_quant_report r;
    CHECK_OK(sh_quantize_weights(g, &o, &q, &r, &e), &e);
    /* K = 40: padded with zero weights to 64; same result as the dequantized f32 weight */
    CHECK(r.n_layers == 1 && r.layers[0].fmt == SH_Q4_0 && strstr(r.layers[0].note, "padded with zeros to 64"));
    CHECK(r.layers[0].bytes_after == 8 * 2 * 18 && r.layers[0].max_err > 0);
    {
        int wv = sh_graph_find(q, "w");
        sh_tensor *wq = q->values[wv].init;
        CHECK(wq->shape[0] == 8 && wq->shape[1] == 64);
        float wd[8 * 64];
        sh_format_get(wq->fmt)->to_f32(wq->data, wd, 8 * 64);
        int64_t xs[2] = {3, 40};
        sh_tensor *x = sh_tensor_new(SH_F32, 2, xs, &e);
        for (int i = 0; i < 120; i++) sh_f32(x)[i] = frand();
        sh_tensor *y = run1(q, x, &e);
        CHECK_MSG(y && y->shape[0] == 3 && y->shape[1] == 8, "%s", e.msg);
        const float *b = sh_f32(q->values[sh_graph_find(q, "b")].init);
        for (int m = 0; y && m < 3; m++)
            for (int n = 0; n < 8; n++) {
                double ref = b[n], mag = 0;
                for (int kk = 0; kk < 40; kk++) ref += wd[n * 64 + kk] * sh_f32(x)[m * 40 + kk], mag += fabs(wd[n * 64 + kk]);
                for (int kk = 40; kk < 64; kk++) CHECK(wd[n * 64 + kk] == 0.0f);
                CHECK_NEAR(sh_f32(y)[m * 8 + n], ref, 0.02 * mag + 1e-4);
            }
        /* reloads with the padding attribute */
        char pth[512];
        sh_graph *l = NULL;
        snprintf(pth, sizeof pth, "%s/wq_pad.onnx", sh_test_tmpdir());
        CHECK_OK(sh_model_save(q, pth, &e), &e);
        CHECK_OK(sh_model_load(pth, &l, &e), &e);
        sh_tensor *y2 = l ? run1(l, x, &e) : NULL;
        CHECK_MSG(y && y2 && !memcmp(y->data, y2->data, y->nbytes), "%s", e.msg);
        sh_tensor_free(y2);
        sh_graph_free(l);
        sh_tensor_free(y);
        sh_tensor_free(x);
    }
    sh_quant_report_free(&r);
    sh_graph_free(q);
    sh_graph_free(g);
    g = linear_graph(8, 64, 0, 1);
    o.skip_classifier = 1;
    CHECK_OK(sh_quantize_weights(g, &o, &q, &r, &e), &e);
    CHECK(r.layers[0].fmt == SH_F32 && strstr(r.layers[0].note, "classifier"));
    sh_quant_report_free(&r);
    sh_graph_free(q);
    o.skip_classifier = 0;
    o.exclude = "fc";
    CHECK_OK(sh_quantize_weights(g, &o, &q, NULL, &e), &e);
    CHECK(sh_graph_find(q, "w") >= 0 && q->values[sh_graph_find(q, "w")].init->fmt == SH_F32);
    sh_graph_free(q);
    /* bad options */
    sh_quant_opts bad[] = {{.bits = 5, .scheme = 0}, {.bits = 9, .scheme = 0}, {.bits = 8, .scheme = 2}, {.bits = 3, .scheme = 2}, {.bits = 2, .scheme = 1},
                           {.bits = 4, .scheme = 7}};
    for (int i = 0; i < 6; i++) {
        q = (sh_graph *)1;
        CHECK(sh_quantize_weights(g, &bad[i], &q, NULL, &e) == SH_EINVAL && !q);
        CHECK(e.msg[0]);
    }
    /* no backward through a quantized Gemm: one clear error */
    o.exclude = NULL;
    CHECK_OK(sh_quantize_weights(g, &o, &q, NULL, &e), &e);
    sh_program *p = NULL;
    sh_run_opts ro = {.training = 1};
    int64_t xs[2] = {2, 64};
    sh_tensor *x = sh_tensor_new(SH_F32, 2, xs, &e);
    int rc = sh_program_new(q, &ro, &p, &e);
    if (!rc) {
        const sh_tensor *in[1] = {x};
        sh_program_require_grad(p, "x", &e);
        rc = sh_program_run(p, in, 1, &e);
        if (!rc) {
            sh_tensor *dy = sh_tensor_new(SH_F32, 2, (int64_t[]){2, 8}, &e);
            const sh_tensor *dd[1] = {dy};
            rc = sh_program_backward(p, dd, 1, &e);
            sh_tensor_free(dy);
        }
    }
    CHECK_MSG(rc != SH_OK && strstr(e.msg, "q4_0"), "rc %d: %s", rc, e.msg);
    sh_program_free(p);
    sh_tensor_free(x);
    sh_graph_free(q);
    sh_graph_free(g);
}

/* x [2,3,K] / [3,K] / [K] (xrank 3 / 2 / 1) -> MatMul(W1 [K,N1]) -> Add(b1)
 * -> Relu -> MatMul(W2 [N1,N2]) -> Add(b2) -> y: PyTorch Linears exported to
 * ONNX; with xrank 2 the second layer is a TensorFlow-style Gemm with the
 * weight [K,N] (transB=0) and bias. */
static sh_graph *matmul_graph(int64_t K, int64_t N1, int64_t N2, int xrank)
{
    sh_error e = {0};
    sh_graph *g = sh_graph_new("mm");
    int64_t xs[3] = {2, 3, K}, w1s[2] = {K, N1}, b1s[1] = {N1}, w2s[2] = {N1, N2}, b2s[1] = {N2};
    sh_graph_add_input(g, "x", SH_F32, xrank, xs + 3 - xrank, &e);
    sh_tensor *w1 = sh_tensor_new(SH_F32, 2, w1s, &e), *b1 = sh_tensor_new(SH_F32, 1, b1s, &e);
    sh_tensor *w2 = sh_tensor_new(SH_F32, 2, w2s, &e), *b2 = sh_tensor_new(SH_F32, 1, b2s, &e);
    for (int64_t i = 0; i < K * N1; i++) sh_f32(w1)[i] = frand() * 0.3f;
    for (int64_t i = 0; i < N1; i++) sh_f32(b1)[i] = frand() * 0.1f;
    for (int64_t i = 0; i < N1 * N2; i++) sh_f32(w2)[i] = frand() * 0.3f;
    for (int64_t i = 0; i < N2; i++) sh_f32(b2)[i] = frand() * 0.1f;
    sh_graph_add_init(g, "w1", w1, &e);
    sh_graph_add_init(g, "b1", b1, &e);
    sh_graph_add_init(g, "w2", w2, &e);
    sh_graph_add_init(g, "b2", b2, &e);
    const char *i1[2] = {"x", "w1"}, *o1[1] = {"h0"}, *i2[2] = {"h0", "b1"}, *o2[1] = {"h1"}, *i3[1] = {"h1"},
               *o3[1] = {"h2"}, *i4[3] = {"h2", "w2", "b2"}, *o4[1] = {"y"};
    sh_graph_add_node(g, "MatMul", "fc1", 2, i1, 1, o1, &e);
    sh_graph_add_node(g, "Add", "add1", 2, i2, 1, o2, &e);
    sh_graph_add_node(g, "Relu", "relu1", 1, i3, 1, o3, &e);
    if (xrank != 2) { /* MatMul + Add again */
        const char *i5[2] = {"h2", "w2"}, *o5[1] = {"y0"}, *i6[2] = {"y0", "b2"};
        sh_graph_add_node(g, "MatMul", "fc2", 2, i5, 1, o5, &e);
        sh_graph_add_node(g, "Add", "add2", 2, i6, 1, o4, &e);
    } else {
        int k = sh_graph_add_node(g, "Gemm", "fc2", 3, i4, 1, o4, &e);
        sh_node_set_int(g, k, "transB", 0);
    }
    sh_graph_mark_output(g, "y", &e);
    CHECK_OK(sh_graph_check(g, &e), &e);
    return g;
}

/* MatMul and Gemm transB=0 weights are quantized (the node becomes Gemm
 * transB=1 over the transposed weight): the output follows the f32 model
 * within the format's error, on a 3-D and a 1-D activation, q8_0 / q4_0 /
 * per-channel q4_0_ch, and the file saves and reloads to identical outputs. */
TEST(quantize_matmul_and_gemm_transb0)
{
    for (int xr = 1; xr <= 3; xr++)
        for (int f = 0; f < 3; f++) {
            sh_error e = {0};
            sh_graph *g = matmul_graph(96, 64, 40, xr), *q = NULL, *l = NULL;
            sh_quant_opts o = {.bits = f == 0 ? 8 : 4, .granularity = f == 2 ? SH_QGRAN_CHANNEL : SH_QGRAN_DEFAULT};
            sh_quant_report r;
            CHECK_OK(sh_quantize_weights(g, &o, &q, &r, &e), &e);
            if (!q) {
                sh_graph_free(g);
                continue;
            }
            sh_format want = f == 0 ? SH_Q8_0 : f == 1 ? SH_Q4_0 : (sh_format)sh_qrows_format(SH_Q4_0, 0);
            CHECK(r.n_layers == 2);
            for (int i = 0; i < r.n_layers; i++)
                CHECK_MSG(r.layers[i].fmt == want && r.layers[i].rows == (i ? 40 : 64) && r.layers[i].cols == (i ? 64 : 96),
                          "layer %d: %s %lldx%lld (%s)", i, sh_format_get(r.layers[i].fmt)->name,
                          (long long)r.layers[i].rows, (long long)r.layers[i].cols, r.layers[i].note);
            for (int i = 0; i < q->n_nodes; i++)
                if (!strncmp(q->nodes[i].name, "fc", 2))
                    CHECK(!strcmp(q->nodes[i].op, "Gemm") && sh_attr_int(&q->nodes[i], "transB", 0) == 1);
            int w1 = sh_graph_find(q, "w1");
            CHECK(w1 >= 0 && q->values[w1].init->fmt == want && q->values[w1].init->shape[0] == 64);
            int64_t xs[3] = {2, 3, 96};
            sh_tensor *x = sh_tensor_new(SH_F32, xr, xs + 3 - xr, &e);
            for (int64_t i = 0; i < sh_tensor_numel(x); i++) sh_f32(x)[i] = frand();
            sh_tensor *y0 = run1(g, x, &e), *y1 = run1(q, x, &e);
            CHECK_MSG(y0 && y1, "%s", e.msg);
            if (y0 && y1) {
                CHECK(y1->ndim == xr && y1->shape[xr - 1] == 40 && sh_tensor_numel(y1) == sh_tensor_numel(y0));
                double num = 0, den = 0;
                for (int64_t i = 0; i < sh_tensor_numel(y0); i++) {
                    double d = sh_f32(y1)[i] - sh_f32(y0)[i];
                    num += d * d, den += (double)sh_f32(y0)[i] * sh_f32(y0)[i];
                }
                double rel = sqrt(num / den);
                /* q8_0 ~0.5 %, 4-bit ~10 % relative RMS error */
                CHECK_MSG(rel < (f == 0 ? 0.01 : 0.15) && rel > 0, "xrank %d fmt %d: relative RMS error %g", xr, f, rel);
            }
            char pth[512];
            snprintf(pth, sizeof pth, "%s/wq_mm.onnx", sh_test_tmpdir());
            CHECK_OK(sh_model_save(q, pth, &e), &e);
            CHECK_OK(sh_model_load(pth, &l, &e), &e);
            sh_tensor *y2 = l ? run1(l, x, &e) : NULL;
            CHECK_MSG(y1 && y2 && y1->nbytes == y2->nbytes && !memcmp(y1->data, y2->data, y1->nbytes), "%s", e.msg);
            sh_tensor_free(x);
            sh_tensor_free(y0);
            sh_tensor_free(y1);
            sh_tensor_free(y2);
            sh_quant_report_free(&r);
            sh_graph_free(l);
            sh_graph_free(q);
            sh_graph_free(g);
        }
    /* a MatMul weight also read by another node stays f32 and untouched */
    sh_error e = {0};
    sh_graph *g = matmul_graph(64, 32, 32, 3), *q = NULL;
    const char *ti[2] = {"w2", "w2"}, *to[1] = {"tied"};
    sh_graph_add_node(g, "Add", "tie", 2, ti, 1, to, &e);
    sh_graph_mark_output(g, "tied", &e);
    CHECK_OK(sh_graph_check(g, &e), &e);
    sh_quant_opts o = {.bits = 4};
    sh_quant_report r;
    CHECK_OK(sh_quantize_weights(g, &o, &q, &r, &e), &e);
    CHECK(r.n_layers == 2 && r.layers[0].fmt == SH_Q4_0 && r.layers[1].fmt == SH_F32 && strstr(r.layers[1].note, "shared"));
    for (int i = 0; q && i < q->n_nodes; i++)
        if (!strcmp(q->nodes[i].name, "fc2")) CHECK(!strcmp(q->nodes[i].op, "MatMul"));
    sh_quant_report_free(&r);
    sh_graph_free(q);
    sh_graph_free(g);
}

/* Mean over positions of KL(softmax(a) || softmax(b)), rows of V logits. */
static double mean_kl(const float *a, const float *b, int64_t rows, int64_t V)
{
    double s = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *x = a + r * V, *y = b + r * V;
        double mx = -1e30, my = -1e30, zx = 0, zy = 0;
        for (int64_t i = 0; i < V; i++) mx = fmax(mx, x[i]), my = fmax(my, y[i]);
        for (int64_t i = 0; i < V; i++) zx += exp(x[i] - mx), zy += exp(y[i] - my);
        for (int64_t i = 0; i < V; i++) {
            double p = exp(x[i] - mx) / zx;
            s += p * ((x[i] - mx - log(zx)) - (y[i] - my - log(zy)));
        }
    }
    return s / (double)rows;
}

/* A transformer as PyTorch 1.13 exports it (tests/gen/gen_transformer.py:
 * every Linear a MatMul with a [K,N] weight plus Add on a 3-D activation,
 * LayerNorm and GELU decomposed): shrink's f32 run matches torch's logits,
 * and weight-only 8 / 4-bit and dynamic int8 quantize all 13 linear layers
 * and stay close to the f32 next-token distribution. */
TEST(quantize_torch_exported_transformer)
{
    FILE *f = fopen("tests/data/transformer/golden.bin", "rb");
    if (!f) SKIP("tests/data/transformer/golden.bin not found (run tests from the repository root)");
    int32_t tv[2] = {0, 0};
    CHECK(fread(tv, 4, 2, f) == 2 && tv[0] == 32 && tv[1] == 128);
    int64_t T = tv[0], V = tv[1], ts[2] = {1, T};
    sh_error e = {0};
    sh_tensor *tok = sh_tensor_new(SH_I64, 2, ts, &e);
    float *ref = malloc(sizeof(float) * (size_t)(T * V));
    CHECK(tok && ref && fread(tok->data, 8, (size_t)T, f) == (size_t)T && fread(ref, 4, (size_t)(T * V), f) == (size_t)(T * V));
    fclose(f);
    sh_graph *g = NULL;
    CHECK_OK(sh_model_load("tests/data/transformer/tiny_gpt.onnx", &g, &e), &e);
    sh_tensor *y = g ? run1(g, tok, &e) : NULL;
    CHECK_MSG(y && sh_tensor_numel(y) == T * V, "%s", e.msg);
    if (y) {
        double mx = 0;
        for (int64_t i = 0; i < T * V; i++) mx = fmax(mx, fabs(sh_f32(y)[i] - ref[i]));
        CHECK_MSG(mx < 1e-3, "f32 logits differ from torch's by %g", mx);
    }
    /* bits 8 / 4 weight-only, dynamic int8: KL bound from the f32 logits */
    static const struct { int bits, mode; double kl_max; } cs[] = {{8, SH_QMODE_WEIGHT, 5e-4}, {4, SH_QMODE_WEIGHT, 0.05},
                                                                    {8, SH_QMODE_DYNAMIC, 2e-3}};
    double kl[3] = {0};
    for (int c = 0; c < 3 && y; c++) {
        sh_quant_opts o = {.bits = cs[c].bits, .mode = cs[c].mode};
        sh_quant_report r;
        sh_graph *q = NULL;
        int rc = cs[c].mode == SH_QMODE_WEIGHT ? sh_quantize_weights(g, &o, &q, &r, &e) : sh_quantize(g, &o, &q, &r, &e);
        CHECK_OK(rc, &e);
        if (rc) continue;
        int nq = 0;
        for (int i = 0; i < r.n_layers; i++) nq += r.layers[i].fmt != SH_F32;
        CHECK_MSG(nq == 13, "case %d: %d of %d layers quantized", c, nq, r.n_layers);
        int mm = 0;
        for (int i = 0; i < q->n_nodes; i++) mm += !strcmp(q->nodes[i].op, "MatMul") && q->values[q->nodes[i].in[1]].init;
        CHECK_MSG(mm == 0, "case %d: %d MatMul with a constant weight left", c, mm);
        sh_tensor *yq = run1(q, tok, &e);
        CHECK_MSG(yq && sh_tensor_numel(yq) == T * V, "%s", e.msg);
        if (yq) {
            kl[c] = mean_kl(ref, sh_f32(yq), T, V);
            CHECK_MSG(kl[c] > 0 && kl[c] < cs[c].kl_max, "case %d: KL %g", c, kl[c]);
        }
        if (getenv("SHRINK_VERBOSE")) printf("    case %d: mean KL %.3g\n", c, kl[c]);
        sh_tensor_free(yq);
        sh_quant_report_free(&r);
        sh_graph_free(q);
    }
    CHECK(kl[0] < kl[1]);
    sh_tensor_free(y);
    sh_tensor_free(tok);
    free(ref);
    sh_graph_free(g);
}

/* max |a - b| over the elements, *mag = max |b| (the QDQ test). */
static double max_diff(const sh_tensor *a, const sh_tensor *b, double *mag)
{
    double d = 0;
    *mag = 0;
    for (int64_t i = 0; i < sh_tensor_numel(a); i++)
        d = fmax(d, fabs(sh_f32(a)[i] - sh_f32(b)[i])), *mag = fmax(*mag, fabs(sh_f32(b)[i]));
    return d;
}

/* q with every low-bit weight replaced by its dequantized f32 values (the
 * first weight_k columns, in the node's f32 weight shape). */
static sh_graph *dequantized(const sh_graph *q, sh_error *e)
{
    sh_graph *d = sh_graph_clone(q, e);
    for (int i = 0; d && i < d->n_nodes; i++) {
        sh_node *n = &d->nodes[i];
        if (n->n_in < 2 || n->in[1] < 0) continue;
        sh_value *v = &d->values[n->in[1]];
        if (!v->init || !sh_format_get(v->init->fmt)->is_quantized) continue;
        int64_t N = v->init->shape[0], Kp = v->init->shape[1], K = sh_attr_int(n, "weight_k", Kp);
        float *all = malloc(sizeof(float) * (size_t)(N * Kp));
        CHECK_OK(sh_qtensor_to_f32(v->init, all, e), e);
        int64_t shp[SH_MAX_DIMS] = {N, K};
        int nd = 2;
        const int64_t *ks = NULL;
        int nk = !strcmp(n->op, "Conv") ? sh_attr_ints(n, "kernel_shape", &ks) : 0;
        if (nk) {
            int64_t sp = 1;
            for (int j = 0; j < nk; j++) sp *= ks[j], shp[2 + j] = ks[j];
            shp[1] = K / sp, nd = 2 + nk;
        }
        sh_tensor *t = sh_tensor_new(SH_F32, nd, shp, e);
        for (int64_t r = 0; r < N; r++) memcpy(sh_f32(t) + r * K, all + r * Kp, sizeof(float) * (size_t)K);
        free(all);
        sh_tensor_free(v->init);
        v->init = t, v->fmt = SH_F32, v->ndim = nd;
        memcpy(v->shape, shp, sizeof(int64_t) * (size_t)nd); /* weight_k stays: f32 Gemm / Conv ignore it */
    }
    return d;
}

/* Weight-only models export as QDQ ONNX (sh_graph_to_qdq, shrink convert
 * --qdq): int8 codes + per-block DequantizeLinear (+ min, Reshape, Slice),
 * no shrink format or attribute left, and the exported graph computes the
 * dequantized f32 model (exactly the same weights) -- Gemm on 2-D inputs,
 * MatMul + Add on 3-D ones, Conv with a K that is not a multiple of 32; every
 * format family, group 32 / 64 / 128, per channel, per tensor; the file
 * reloads to the same outputs. */
TEST(quantize_weight_only_exports_qdq)
{
    static const struct { int bits, scheme, gran, group; } cs[] = {
        {8, 1, SH_QGRAN_GROUP, 32}, {4, 1, SH_QGRAN_GROUP, 32}, {4, 2, SH_QGRAN_GROUP, 64}, {3, 0, SH_QGRAN_GROUP, 128},
        {2, 2, SH_QGRAN_GROUP, 32}, {4, 3, SH_QGRAN_GROUP, 32}, {4, 1, SH_QGRAN_CHANNEL, 0}, {4, 2, SH_QGRAN_CHANNEL, 0},
        {8, 1, SH_QGRAN_TENSOR, 0}, {4, 3, SH_QGRAN_CHANNEL, 0}, {2, 2, SH_QGRAN_TENSOR, 0}};
    int nc = (int)(sizeof cs / sizeof cs[0]);
    for (int c = 0; c < 2 * nc + 3; c++) {
        sh_error e = {0};
        static const int conv_ci[3] = {1, 7, 4}; /* g32, asym per channel, 2-bit (K = 27: no g64 / g128) */
        int conv = c >= 2 * nc, xr = conv ? 4 : 2 + c % 2, ci = conv ? conv_ci[c - 2 * nc] : c / 2;
        sh_graph *g = NULL;
        int64_t xs[4] = {1, 3, 9, 8};
        if (conv) { /* Conv 3 -> 4 channels 3x3: K = 27, padded to 32 */
            g = sh_graph_new("conv");
            sh_graph_add_input(g, "x", SH_F32, 4, xs, &e);
            sh_tensor *w = sh_tensor_new(SH_F32, 4, (int64_t[]){4, 3, 3, 3}, &e), *bv = sh_tensor_new(SH_F32, 1, (int64_t[]){4}, &e);
            for (int64_t i = 0; i < 108; i++) sh_f32(w)[i] = frand();
            for (int64_t i = 0; i < 4; i++) sh_f32(bv)[i] = frand();
            sh_graph_add_init(g, "w", w, &e);
            sh_graph_add_init(g, "b", bv, &e);
            const char *in[3] = {"x", "w", "b"}, *out[1] = {"y"};
            int k = sh_graph_add_node(g, "Conv", "conv", 3, in, 1, out, &e);
            sh_node_set_ints(g, k, "kernel_shape", 2, (int64_t[]){3, 3});
            sh_node_set_ints(g, k, "pads", 4, (int64_t[]){1, 1, 1, 1});
            sh_graph_mark_output(g, "y", &e);
            CHECK_OK(sh_graph_check(g, &e), &e);
        } else
            g = matmul_graph(128, 64, 40, xr);
        sh_quant_opts o = {.bits = cs[ci].bits, .scheme = cs[ci].scheme, .granularity = cs[ci].gran, .group = cs[ci].group};
        sh_graph *q = NULL, *d = NULL, *x2 = NULL, *l = NULL;
        CHECK_OK(sh_quantize_weights(g, &o, &q, NULL, &e), &e);
        if (q) d = dequantized(q, &e);
        if (q) CHECK_OK(sh_graph_to_qdq(q, &x2, &e), &e);
        if (!x2 || !d) {
            sh_graph_free(q), sh_graph_free(d), sh_graph_free(g);
            continue;
        }
        int ndq = 0;
        for (int i = 0; i < x2->n_values; i++)
            if (x2->values[i].init) CHECK(!sh_format_get(x2->values[i].init->fmt)->is_quantized);
        for (int i = 0; i < x2->n_nodes; i++) {
            ndq += !strcmp(x2->nodes[i].op, "DequantizeLinear");
            CHECK_MSG(sh_attr_int(&x2->nodes[i], "weight_k", -7) == -7, "case %d: weight_k left on '%s'", c, x2->nodes[i].name);
        }
        CHECK_MSG(ndq >= 1, "case %d: %d DequantizeLinear", c, ndq);
        int64_t xsh[3] = {2, 3, 128};
        sh_tensor *x = conv ? sh_tensor_new(SH_F32, 4, xs, &e) : sh_tensor_new(SH_F32, xr, xsh + 3 - xr, &e);
        for (int64_t i = 0; i < sh_tensor_numel(x); i++) sh_f32(x)[i] = frand();
        sh_tensor *y0 = run1(d, x, &e), *y1 = run1(x2, x, &e);
        CHECK_MSG(y0 && y1, "case %d: %s", c, e.msg);
        if (y0 && y1) {
            double mag, df = max_diff(y1, y0, &mag);
            CHECK_MSG(sh_tensor_numel(y0) == sh_tensor_numel(y1) && df <= 1e-5 * mag + 1e-6,
                      "case %d (bits %d scheme %d gran %d): QDQ vs dequantized f32: max |diff| %g (max %g)", c,
                      cs[ci].bits, cs[ci].scheme, cs[ci].gran, df, mag);
        }
        char pth[512];
        snprintf(pth, sizeof pth, "%s/wq_qdq.onnx", sh_test_tmpdir());
        CHECK_OK(sh_model_save(x2, pth, &e), &e);
        CHECK_OK(sh_model_load(pth, &l, &e), &e);
        sh_tensor *y2 = l ? run1(l, x, &e) : NULL;
        CHECK_MSG(y1 && y2 && !memcmp(y1->data, y2->data, y1->nbytes), "case %d reloaded: %s", c, e.msg);
        sh_tensor_free(x), sh_tensor_free(y0), sh_tensor_free(y1), sh_tensor_free(y2);
        sh_graph_free(l), sh_graph_free(x2), sh_graph_free(d), sh_graph_free(q), sh_graph_free(g);
    }
}

static int64_t file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (int64_t)st.st_size : -1;
}

TEST(quantize_save_reload_identical_and_smaller)
{
    sh_error e = {0};
    sh_graph *g = linear_graph(256, 128, 1, 1), *q = NULL, *l = NULL;
    char p0[512], p1[512];
    snprintf(p0, sizeof p0, "%s/wq_f32.onnx", sh_test_tmpdir());
    snprintf(p1, sizeof p1, "%s/wq_q4.onnx", sh_test_tmpdir());
    sh_quant_opts o = {.bits = 4, .scheme = 2};
    CHECK_OK(sh_quantize_weights(g, &o, &q, NULL, &e), &e);
    CHECK_OK(sh_model_save(g, p0, &e), &e);
    CHECK_OK(sh_model_save(q, p1, &e), &e);
    int64_t b0 = file_size(p0), b1 = file_size(p1);
    /* 128 KiB of f32 weights -> 20 bytes per 32 weights (q4_1) */
    CHECK_MSG(b1 > 0 && b1 < b0 / 5, "f32 file %lld bytes, q4_1 file %lld bytes", (long long)b0, (long long)b1);
    CHECK(b1 >= 256 * 128 / 32 * 20);
    CHECK_OK(sh_model_load(p1, &l, &e), &e);
    if (l) {
        int wv = sh_graph_find(l, "w");
        CHECK(wv >= 0 && l->values[wv].init && l->values[wv].init->fmt == SH_Q4_1);
        int64_t xs[2] = {3, 128};
        sh_tensor *x = sh_tensor_new(SH_F32, 2, xs, &e);
        for (int64_t i = 0; i < 3 * 128; i++) sh_f32(x)[i] = frand();
        sh_tensor *ya = run1(q, x, &e), *yb = run1(l, x, &e);
        CHECK(ya && yb && ya->nbytes == yb->nbytes && !memcmp(ya->data, yb->data, ya->nbytes));
        sh_tensor_free(x);
        sh_tensor_free(ya);
        sh_tensor_free(yb);
    }
    sh_graph_free(l);
    sh_graph_free(q);
    sh_graph_free(g);
}

/* Table mode: best of 3 NLL passes (tokens/s, all windows batched: like
 * llama.cpp's pp) and 1000 / median batch-1 one-token latency (like tg). */
static void speed(sh_graph *g, const sh_dataset *d, double *pp, double *tg)
{
    sh_error e = {0};
    sh_eval_opts o = {0};
    o.nthreads = 1;
    *pp = *tg = 0;
    for (int i = 0; i < 3; i++) {
        sh_eval_report r;
        o.measure_speed = i == 0;
        o.min_runs = 300;
        if (sh_eval_ex(g, d, &o, &r, &e)) return;
        if (r.throughput > *pp) *pp = r.throughput;
        if (i == 0 && r.latency_ms_b1 > 0) *tg = 1000.0 / r.latency_ms_b1;
    }
}

/* stories260K: perplexity / KL of every weight-only format vs f32. */
TEST(quantize_stories260k_quality)
{
    const char *sh = sh_test_shared();
    if (!sh) SKIP("no ../shared");
    char mp[512], tp[512], dp[512];
    snprintf(mp, sizeof mp, "%s/models/stories260K/stories260K.bin", sh);
    snprintf(tp, sizeof tp, "%s/models/stories260K/tok512.bin", sh);
    snprintf(dp, sizeof dp, "%s/data/text/tinystories_sample.txt", sh);
    sh_error e = {0};
    sh_graph *g = NULL;
    sh_tokenizer *tok = NULL;
    sh_dataset *d = NULL;
    CHECK_OK(sh_model_load(mp, &g, &e), &e);
    CHECK_OK(sh_tokenizer_load(tp, 512, &tok, &e), &e);
    CHECK_OK(sh_dataset_from_text(dp, tok, &d, &e), &e);
    if (!g || !d) goto out;
    int full = getenv("SHRINK_QUANT_TABLE") != NULL;
    sh_eval_opts eo = {0};
    eo.nthreads = full ? 1 : 0;
    if (!full) eo.limit = sh_test_quick() ? 300 : 900;
    sh_eval_report r0;
    CHECK_OK(sh_eval_lm_ex(g, d, &eo, &r0, &e), &e);
    char f0[512];
    snprintf(f0, sizeof f0, "%s/st_f32.onnx", sh_test_tmpdir());
    CHECK_OK(sh_model_save(g, f0, &e), &e);
    double pp = 0, tg = 0;
    if (full) {
        speed(g, d, &pp, &tg);
        printf("\n| model | format | bits/w (linear) | file bytes | ppl | d ppl | mean KL vs f32 | pp tok/s | tg tok/s |\n"
               "|---|---|---|---|---|---|---|---|---|\n| stories260K | f32 | 32 | %lld | %.4f | - | 0 | %.0f | %.0f |\n",
               (long long)file_size(f0), r0.ppl, pp, tg);
    }
    static const int bits[] = {8, 4, 4, 3, 2}, scheme[] = {0, 1, 2, 0, 0};
    double ppl[5] = {0};
    for (int f = 0; f < (full ? 5 : 3); f++) { /* q3_0 / q2_1 only in table mode */
        sh_graph *q = NULL;
        sh_quant_opts o = {.bits = bits[f], .scheme = scheme[f]};
        CHECK_OK(sh_quantize_weights(g, &o, &q, NULL, &e), &e);
        if (!q) continue;
        sh_eval_report r;
        double kl = -1;
        CHECK_OK(sh_eval_lm_ex(q, d, &eo, &r, &e), &e);
        CHECK_OK(sh_lm_kl(g, q, d, &eo, &kl, &e), &e);
        char fp[512];
        snprintf(fp, sizeof fp, "%s/st_q%d.onnx", sh_test_tmpdir(), f);
        CHECK_OK(sh_model_save(q, fp, &e), &e);
        int64_t fb = file_size(fp);
        CHECK(fb > 0 && fb < file_size(f0));
        ppl[f] = r.ppl;
        CHECK(kl >= 0 && isfinite(kl));
        if (full) {
            sh_format qf = (sh_format)sh_quant_format(bits[f], scheme[f], NULL);
            const sh_format_traits *t = sh_format_get(qf);
            speed(q, d, &pp, &tg);
            printf("| stories260K | %s | %.1f | %lld | %.4f | %+.2f%% | %.5f | %.0f | %.0f |\n", t->name,
                   8.0 * t->block_bytes / t->block_elems, (long long)fb, r.ppl, 100 * (r.ppl / r0.ppl - 1), kl, pp,
                   tg);
        }
        sh_graph_free(q);
    }
    /* int8 within +0.5 % of f32; 4-bit worse than 8-bit but sane */
    CHECK_MSG(ppl[0] <= r0.ppl * 1.005, "q8_0 ppl %.4f vs f32 %.4f", ppl[0], r0.ppl);
    CHECK_MSG(ppl[1] > ppl[0] && ppl[1] < 2 * r0.ppl, "q4_0 ppl %.4f, q8_0 %.4f, f32 %.4f", ppl[1], ppl[0], r0.ppl);
    CHECK_MSG(ppl[2] < 2 * r0.ppl, "q4_1 ppl %.4f vs f32 %.4f", ppl[2], r0.ppl);
out:
    sh_dataset_free(d);
    sh_tokenizer_free(tok);
    sh_graph_free(g);
}

static void emit_file(const char *piece, void *ud) { fputs(piece, (FILE *)ud); }
static void emit_buf(const char *piece, void *ud)
{
    char *b = ud;
    size_t n = strlen(b);
    snprintf(b + n, 4096 - n, "%s", piece);
}

/* Calibration text that is not the evaluation text: n stories the f32 model
 * samples itself (temperature 1, top-p 0.95, seeds 1000..), as a text file. */
static sh_dataset *self_calib(sh_graph *g, sh_tokenizer *tok, int n, int steps, sh_error *e)
{
    char path[512];
    snprintf(path, sizeof path, "%s/calib_self.txt", sh_test_tmpdir());
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    for (int s = 0; s < n; s++) {
        if (s) fputs("\n<|endoftext|>\n", f);
        if (sh_generate(g, tok, "", steps, 1.0f, 0.95f, 1000 + (uint64_t)s, 1, emit_file, f, NULL, e)) break;
    }
    fclose(f);
    sh_dataset *d = NULL;
    if (sh_dataset_from_text(path, tok, &d, e)) return NULL;
    return d;
}

/* stories260K: GPTQ (calibrated on the model's own samples) against round to
 * nearest at 4 bits; with SHRINK_QUANT_TABLE=1 (bench/bench_llm_quant.sh)
 * the whole table and the 3-bit greedy stories. */
TEST(quantize_stories260k_gptq)
{
    const char *sh = sh_test_shared();
    if (!sh) SKIP("no ../shared");
    if (sh_test_quick()) SKIP("long test (SHRINK_TEST_QUICK)");
    char mp[512], tp[512], dp[512];
    snprintf(mp, sizeof mp, "%s/models/stories260K/stories260K.bin", sh);
    snprintf(tp, sizeof tp, "%s/models/stories260K/tok512.bin", sh);
    snprintf(dp, sizeof dp, "%s/data/text/tinystories_sample.txt", sh);
    sh_error e = {0};
    sh_graph *g = NULL;
    sh_tokenizer *tok = NULL;
    sh_dataset *d = NULL, *cd = NULL;
    CHECK_OK(sh_model_load(mp, &g, &e), &e);
    CHECK_OK(sh_tokenizer_load(tp, 512, &tok, &e), &e);
    CHECK_OK(sh_dataset_from_text(dp, tok, &d, &e), &e);
    int full = getenv("SHRINK_QUANT_TABLE") != NULL;
    if (g && tok) cd = self_calib(g, tok, full ? 16 : 8, full ? 256 : 160, &e);
    CHECK_MSG(cd != NULL, "calibration text: %s", e.msg);
    if (!g || !d || !cd) goto out;
    sh_eval_opts eo = {0};
    eo.nthreads = 1;
    if (!full) eo.limit = 900;
    sh_eval_report r0;
    CHECK_OK(sh_eval_lm_ex(g, d, &eo, &r0, &e), &e);
    char f0[512];
    snprintf(f0, sizeof f0, "%s/stg_f32.onnx", sh_test_tmpdir());
    CHECK_OK(sh_model_save(g, f0, &e), &e);
    double pp = 0, tg = 0;
    if (full) {
        speed(g, d, &pp, &tg);
        printf("\ncalibration: %lld tokens sampled from the f32 model (16 stories, seeds 1000-1015); "
               "evaluation: %lld tokens of tinystories_sample.txt\n",
               (long long)cd->n, (long long)r0.n);
        printf("\n| format | method | bits/w (linear) | file bytes | ppl | d ppl | mean KL vs f32 | pp tok/s | tg tok/s |\n"
               "|---|---|---|---|---|---|---|---|---|\n| f32 | - | 32 | %lld | %.4f | - | 0 | %.0f | %.0f |\n",
               (long long)file_size(f0), r0.ppl, pp, tg);
    }
    typedef struct { int bits, scheme, group, gptq, awq, gran; } cfg;
    /* gran: 0 group, else SH_QGRAN_CHANNEL / SH_QGRAN_TENSOR (the _ch / _t rows) */
    static const cfg quick[] = {{4, 1, 32, 0, 0, 0}, {4, 1, 32, 1, 0, 0}, {4, 1, 0, 0, 0, SH_QGRAN_CHANNEL},
                                {4, 1, 0, 1, 0, SH_QGRAN_CHANNEL}};
    static const cfg table[] = {{8, 0, 32, 0, 0, 0}, {8, 0, 32, 1, 0, 0}, {4, 1, 32, 0, 0, 0}, {4, 1, 32, 1, 0, 0},
                                {4, 1, 32, 0, 1, 0}, {4, 1, 32, 1, 1, 0}, {4, 2, 32, 0, 0, 0}, {4, 2, 32, 1, 0, 0},
                                {4, 1, 64, 0, 0, 0}, {4, 1, 64, 1, 0, 0}, {4, 3, 32, 0, 0, 0}, {4, 3, 32, 1, 0, 0},
                                {3, 0, 32, 0, 0, 0}, {3, 0, 32, 1, 0, 0}, {3, 0, 32, 1, 1, 0}, {2, 0, 32, 0, 0, 0},
                                {2, 0, 32, 1, 0, 0}, {8, 0, 0, 0, 0, SH_QGRAN_CHANNEL}, {8, 0, 0, 1, 0, SH_QGRAN_CHANNEL},
                                {4, 1, 0, 0, 0, SH_QGRAN_CHANNEL}, {4, 1, 0, 1, 0, SH_QGRAN_CHANNEL},
                                {4, 1, 0, 0, 0, SH_QGRAN_TENSOR}};
    const cfg *cf = full ? table : quick;
    int ncf = full ? (int)(sizeof table / sizeof *table) : (int)(sizeof quick / sizeof *quick);
    double ppl[32] = {0}, kls[32] = {0};
    for (int k = 0; k < ncf; k++) {
        sh_graph *q = NULL;
        sh_quant_opts o = {.bits = cf[k].bits, .scheme = cf[k].scheme, .group = cf[k].group, .gptq = cf[k].gptq,
                           .awq = cf[k].awq, .calib = cd, .nthreads = 1,
                           .granularity = cf[k].gran ? cf[k].gran : SH_QGRAN_GROUP};
        sh_quant_report rep;
        CHECK_OK(sh_quantize_weights(g, &o, &q, &rep, &e), &e);
        if (!q) continue;
        sh_eval_report r;
        CHECK_OK(sh_eval_lm_ex(q, d, &eo, &r, &e), &e);
        CHECK_OK(sh_lm_kl(g, q, d, &eo, &kls[k], &e), &e);
        ppl[k] = r.ppl;
        char fp[512];
        snprintf(fp, sizeof fp, "%s/stg_%d.onnx", sh_test_tmpdir(), k);
        CHECK_OK(sh_model_save(q, fp, &e), &e);
        if (full) {
            const sh_format_traits *t = sh_format_get(rep.layers[0].fmt);
            int64_t w = 0, wb = 0; /* bits per weight over the quantized layers */
            for (int i = 0; i < rep.n_layers; i++)
                if (rep.layers[i].fmt != SH_F32) w += rep.layers[i].rows * rep.layers[i].cols, wb += rep.layers[i].bytes_after;
            speed(q, d, &pp, &tg);
            printf("| %s | %s | %.2f | %lld | %.4f | %+.2f%% | %.5f | %.0f | %.0f |\n", t->name,
                   cf[k].gptq && cf[k].awq ? "awq+gptq" : cf[k].gptq ? "gptq" : cf[k].awq ? "awq" : "rtn",
                   w ? 8.0 * wb / w : 0.0, (long long)file_size(fp), r.ppl, 100 * (r.ppl / r0.ppl - 1), kls[k], pp, tg);
        }
        sh_quant_report_free(&rep);
        sh_graph_free(q);
    }
    /* 4-bit group 32: GPTQ closer to f32 than round to nearest, both ways */
    int ir = full ? 2 : 0, ig = full ? 3 : 1;
    CHECK_MSG(fabs(ppl[ig] - r0.ppl) < fabs(ppl[ir] - r0.ppl), "q4_0 ppl: gptq %.4f, rtn %.4f, f32 %.4f", ppl[ig],
              ppl[ir], r0.ppl);
    CHECK_MSG(kls[ig] < kls[ir], "q4_0 KL: gptq %.5f, rtn %.5f", kls[ig], kls[ir]);
    /* per channel (q4_0_ch, one f32 scale per row): GPTQ beats round to
     * nearest too, and group 32 beats per channel at 4 bits */
    int cr = full ? 19 : 2, cg = full ? 20 : 3;
    CHECK_MSG(kls[cg] < kls[cr], "q4_0_ch KL: gptq %.5f, rtn %.5f", kls[cg], kls[cr]);
    CHECK_MSG(kls[ir] < kls[cr], "KL: q4_0 rtn %.5f, q4_0_ch rtn %.5f", kls[ir], kls[cr]);
    if (full) {
        CHECK_MSG(ppl[0] <= r0.ppl * 1.005, "q8_0 ppl %.4f vs f32 %.4f", ppl[0], r0.ppl);
        /* 3-bit greedy stories: f32, round to nearest, GPTQ */
        for (int k = -1; k < 2; k++) {
            sh_graph *q = NULL;
            sh_quant_opts o = {.bits = 3, .gptq = k == 1, .calib = cd, .nthreads = 1};
            if (k >= 0) CHECK_OK(sh_quantize_weights(g, &o, &q, NULL, &e), &e);
            char buf[4096] = "";
            CHECK_OK(sh_generate(k >= 0 ? q : g, tok, "", 200, 0.0f, 0.0f, 0, 1, emit_buf, buf, NULL, &e), &e);
            printf("\n3-bit greedy story (%s):\n%s\n", k < 0 ? "f32" : k ? "q3_0 gptq" : "q3_0 rtn", buf);
            sh_graph_free(q);
        }
    }
out:
    sh_dataset_free(cd);
    sh_dataset_free(d);
    sh_tokenizer_free(tok);
    sh_graph_free(g);
}

/* --granularity channel / tensor: the Gemm weight is stored in the _ch / _t
 * row at its real size (report bytes = buffer bytes), runs at batch 1 and
 * 40 rows like the dequantized f32 Gemm, and saves -> reloads to identical
 * outputs; K = 100 is padded to 128 with weight_k */
TEST(quantize_channel_tensor_rows_save_reload)
{
    sh_error e = {0};
    sh_graph *g = linear_graph(70, 100, 0, 1);
    int bits[] = {8, 4, 3, 2, 4}, scheme[] = {0, 0, 0, 0, 2};
    const char *want[] = {"q8_0", "q4_0", "q3_0", "q2_1", "q4_1"};
    int64_t xs[2] = {40, 100};
    sh_tensor *x = sh_tensor_new(SH_F32, 2, xs, &e);
    for (int64_t i = 0; i < 40 * 100; i++) sh_f32(x)[i] = frand();
    for (int t = 0; t < 5; t++)
        for (int gr = SH_QGRAN_TENSOR; gr <= SH_QGRAN_CHANNEL; gr++) {
            sh_quant_opts o = {.bits = bits[t], .scheme = scheme[t], .granularity = gr};
            sh_graph *q = NULL, *l = NULL;
            sh_quant_report r;
            CHECK_OK(sh_quantize_weights(g, &o, &q, &r, &e), &e);
            if (!q) continue;
            char name[16];
            snprintf(name, sizeof name, "%s_%s", want[t], gr == SH_QGRAN_TENSOR ? "t" : "ch");
            const sh_tensor *w = q->values[sh_graph_find(q, "w")].init;
            CHECK_MSG(!strcmp(sh_format_get(w->fmt)->name, name), "%s, want %s", sh_format_get(w->fmt)->name, name);
            CHECK(w->shape[0] == 70 && w->shape[1] == 128 && w->nbytes == sh_qrows_bytes(w->fmt, 70, 128));
            CHECK(r.layers[0].bytes_after == (int64_t)w->nbytes && r.layers[0].fmt == w->fmt);
            /* codes: 70 * 128 * bits / 8 bytes, plus header and f32 scales */
            CHECK((int64_t)w->nbytes < 70 * 128 * bits[t] / 8 + 64 + 70 * 8 + 64);
            /* against the dequantized f32 Gemm (the report's dequantized error is real) */
            CHECK(r.layers[0].max_err > 0 && r.layers[0].max_err < 0.5 * (bits[t] == 2 ? 1.0 : 0.5));
            char path[512];
            snprintf(path, sizeof path, "%s/wq_rows_%d_%d.onnx", sh_test_tmpdir(), t, gr);
            CHECK_OK(sh_model_save(q, path, &e), &e);
            CHECK_OK(sh_model_load(path, &l, &e), &e);
            for (int m = 0; m < 2 && l; m++) {
                int64_t M = m ? 1 : 40, s2[2] = {M, 100};
                sh_tensor *xv = sh_tensor_view(SH_F32, 2, s2, x->data, &e);
                sh_tensor *ya = run1(q, xv, &e), *yb = run1(l, xv, &e), *yf = run1(g, xv, &e);
                CHECK(ya && yb && ya->nbytes == yb->nbytes && !memcmp(ya->data, yb->data, ya->nbytes));
                /* near the f32 model: within what the weight error allows */
                double d = 0, mag = 0;
                for (int64_t i = 0; ya && yf && i < M * 70; i++)
                    d = fmax(d, fabs(sh_f32(ya)[i] - sh_f32(yf)[i])), mag = fmax(mag, fabs(sh_f32(yf)[i]));
                CHECK_MSG(d < r.layers[0].max_err * 100 * 0.6 + 0.02 * mag, "%s M %lld: max diff %g", name, (long long)M, d);
                sh_tensor_free(xv), sh_tensor_free(ya), sh_tensor_free(yb), sh_tensor_free(yf);
            }
            if (l) {
                const sh_tensor *lw = l->values[sh_graph_find(l, "w")].init;
                CHECK(lw->fmt == w->fmt && lw->nbytes == w->nbytes && !memcmp(lw->data, w->data, w->nbytes));
            }
            sh_graph_free(l);
            sh_graph_free(q);
            sh_quant_report_free(&r);
        }
    /* a corrupt _ch buffer in a file: a clear load error, not a crash */
    sh_quant_opts o = {.bits = 4, .granularity = SH_QGRAN_CHANNEL};
    sh_graph *q = NULL, *l = NULL;
    CHECK_OK(sh_quantize_weights(g, &o, &q, NULL, &e), &e);
    if (q) {
        sh_tensor *w = q->values[sh_graph_find(q, "w")].init;
        ((unsigned char *)w->data)[8] ^= 1; /* rows */
        char path[512];
        snprintf(path, sizeof path, "%s/wq_rows_bad.onnx", sh_test_tmpdir());
        CHECK_OK(sh_model_save(q, path, &e), &e);
        CHECK(sh_model_load(path, &l, &e) == SH_EFORMAT && !l && strstr(e.msg, "'w'"));
        sh_graph_free(q);
    }
    sh_tensor_free(x);
    sh_graph_free(g);
}

/* A Conv whose weight is a _ch row (quantize.c writes them for Conv with
 * --granularity channel) runs like the dequantized f32 Conv (activations
 * rounded to q8_0, the row scale as an f16 block scale on AVX-512 VNNI; the
 * f32 copy below), or fails with a clear error naming the format: never a
 * crash or a silently wrong output */
static void conv_row_case(sh_format f)
{
    sh_error e = {0};
    int64_t M = 4, C = 3, Kc = 27, Kp = 32;
    float wf[4 * 32] = {0}, wd[4 * 32];
    for (int64_t r = 0; r < M; r++)
        for (int64_t k = 0; k < Kc; k++) wf[r * Kp + k] = frand();
    sh_tensor *wq = NULL;
    CHECK_OK(sh_qrows_quantize(f, wf, M, Kp, &wq, &e), &e);
    if (!wq) return;
    CHECK_OK(sh_qtensor_to_f32(wq, wd, &e), &e);
    float xv[3 * 72];
    for (int64_t i = 0; i < C * 72; i++) xv[i] = frand();
    for (int q = 0; q < 2; q++) {
        sh_graph *g = sh_graph_new("conv");
        int64_t xs[4] = {1, C, 9, 8}, ws[4] = {M, C, 3, 3};
        sh_graph_add_input(g, "x", SH_F32, 4, xs, &e);
        if (q) sh_graph_add_init(g, "w", sh_tensor_clone(wq, &e), &e);
        else {
            sh_tensor *w4 = sh_tensor_new(SH_F32, 4, ws, &e);
            for (int64_t r = 0; r < M; r++) memcpy(sh_f32(w4) + r * Kc, wd + r * Kp, sizeof(float) * (size_t)Kc);
            sh_graph_add_init(g, "w", w4, &e);
        }
        const char *in[2] = {"x", "w"}, *out[1] = {"y"};
        int k = sh_graph_add_node(g, "Conv", "conv", 2, in, 1, out, &e);
        int64_t ks[2] = {3, 3};
        sh_node_set_ints(g, k, "kernel_shape", 2, ks);
        if (q) sh_node_set_int(g, k, "weight_k", Kc);
        sh_graph_mark_output(g, "y", &e);
        static float y0[4 * 7 * 6];
        sh_tensor *x = sh_tensor_new(SH_F32, 4, xs, &e);
        for (int64_t i = 0; i < C * 72; i++) sh_f32(x)[i] = xv[i]; /* the same input both times */
        sh_program *p = NULL;
        sh_run_opts ro = {0};
        int rc = sh_program_new(g, &ro, &p, &e);
        const sh_tensor *ins[1] = {x};
        if (!rc) rc = sh_program_run(p, ins, 1, &e);
        if (!q) {
            CHECK_OK(rc, &e);
            if (!rc) memcpy(y0, sh_program_output(p, 0)->data, sizeof y0);
        } else if (rc) {
            CHECK_MSG(0, "%s: rc %d: %s", sh_format_get(f)->name, rc, e.msg);
        } else {
            const sh_tensor *y = sh_program_output(p, 0);
            double d = 0;
            for (int64_t i = 0; i < 4 * 7 * 6; i++) d = fmax(d, fabs(sh_f32(y)[i] - y0[i]));
            CHECK_MSG(d < 0.05, "Conv with a %s weight: max |diff| %g vs the dequantized f32 Conv",
                      sh_format_get(f)->name, d);
        }
        sh_program_free(p);
        sh_tensor_free(x);
        sh_graph_free(g);
    }
    sh_tensor_free(wq);
}

TEST(quantize_conv_with_channel_row_weight)
{
    static const sh_format fs[] = {SH_Q4_0_CH, SH_Q4_1_CH, SH_Q8_0_CH, SH_Q3_0_CH, SH_Q2_1_CH, SH_LOG4_CH, SH_Q4_0_T};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) conv_row_case(fs[i]);
}
