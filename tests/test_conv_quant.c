/* test_conv_quant.c - Conv with a weight-only quantized weight
 * (ops/conv_quant.c, ops/conv.c): against a direct f32 convolution with the
 * dequantized weight written here, within a bound derived from the q8_0
 * quantization of the activations (|x - x_q| <= d/2, d = f16(amax/127) per
 * 32-block of a patch, so |y - y_ref| <= sum_b d_b/2 * sum_{k in b} |w_k|);
 * groups, strides, dilation, asymmetric pads, Relu, a channel count that is
 * not a multiple of 16, batch 1 and 3, 1 and 2 threads; the AVX-512 kernel
 * against the portable sh_qweight path (SHRINK_CPU=avx2) and the f32-unpack
 * path (K <= 16, or below AVX-512 VNNI); the prepared state reused across
 * calls and re-prepared when the weight bytes change; bad inputs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/quant_formats.h"
#include "ops/gemm_quant.h"
#include "ops/ops.h"
#include "test.h"

typedef struct cq_case {
    int n, c, h, w, m, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, groups, relu;
    sh_format fmt;
} cq_case;

static uint32_t rnd(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}
static float frnd(uint32_t *s) { return (float)(rnd(s) % 20001) / 10000.0f - 1.0f; }

static int64_t kdim(const cq_case *c) { return (int64_t)(c->c / c->groups) * c->kh * c->kw; }
static int64_t kpad(const cq_case *c)
{
    int g = 32;
    sh_qbase_format(c->fmt, &g);
    return (kdim(c) + g - 1) / g * g;
}
static int64_t out_h(const cq_case *c) { return (c->h + c->pt + c->pb - c->dh * (c->kh - 1) - 1) / c->sh + 1; }
static int64_t out_w(const cq_case *c) { return (c->w + c->pl + c->pr - c->dw * (c->kw - 1) - 1) / c->sw + 1; }

/* quantized weight [M, Kp] from random f32 rows (zero-padded) */
static sh_tensor *make_weight(const cq_case *c, uint32_t seed, sh_error *err)
{
    int64_t K = kdim(c), Kp = kpad(c), s[2] = {c->m, Kp};
    sh_tensor *w = sh_tensor_new(c->fmt, 2, s, err);
    float *row = calloc((size_t)Kp, sizeof(float));
    size_t rb = sh_format_bytes(c->fmt, Kp);
    for (int64_t r = 0; r < c->m; r++) {
        for (int64_t k = 0; k < Kp; k++) row[k] = k < K ? frnd(&seed) * (1.0f + (float)(r % 3)) : 0.0f;
        sh_format_get(c->fmt)->from_f32(row, (char *)w->data + (size_t)r * rb, Kp);
    }
    free(row);
    return w;
}

static void make_bias(const cq_case *c, float *b)
{
    uint32_t s = 99;
    for (int i = 0; i < c->m; i++) b[i] = 0.3f * frnd(&s);
}

static sh_graph *make_graph(const cq_case *c, sh_tensor *w, sh_error *err)
{
    sh_graph *g = sh_graph_new("qconv");
    int64_t xs[4] = {c->n, c->c, c->h, c->w}, bs[1] = {c->m};
    sh_graph_add_input(g, "x", SH_F32, 4, xs, err);
    sh_graph_add_init(g, "w", w, err);
    sh_tensor *b = sh_tensor_new(SH_F32, 1, bs, err);
    make_bias(c, b->data);
    sh_graph_add_init(g, "b", b, err);
    const char *in[3] = {"x", "w", "b"}, *out[1] = {"y"};
    int k = sh_graph_add_node(g, "Conv", "qconv_node", 3, in, 1, out, err);
    int64_t ks[2] = {c->kh, c->kw}, st[2] = {c->sh, c->sw}, dl[2] = {c->dh, c->dw}, pd[4] = {c->pt, c->pl, c->pb, c->pr};
    sh_node_set_ints(g, k, "kernel_shape", 2, ks);
    sh_node_set_ints(g, k, "strides", 2, st);
    sh_node_set_ints(g, k, "dilations", 2, dl);
    sh_node_set_ints(g, k, "pads", 4, pd);
    sh_node_set_int(g, k, "group", c->groups);
    sh_node_set_int(g, k, "weight_k", kdim(c));
    if (c->relu) sh_node_set_string(g, k, "activation", "Relu");
    sh_graph_mark_output(g, "y", err);
    return g;
}

static sh_tensor *make_input(const cq_case *c, uint32_t seed, sh_error *err)
{
    int64_t xs[4] = {c->n, c->c, c->h, c->w};
    sh_tensor *x = sh_tensor_new(SH_F32, 4, xs, err);
    float *d = x->data;
    for (int64_t i = 0; i < sh_tensor_numel(x); i++) d[i] = frnd(&seed) * (i % 7 == 0 ? 3.0f : 1.0f);
    return x;
}

/* Reference y (with bias, Relu), the per-output error bound and the
 * expected variance of the error (rounding to a step d: uniform, d^2 / 12
 * per activation). */
static void reference(const cq_case *c, const sh_tensor *x, const sh_tensor *w, const float *bias, double *y,
                      double *bound, double *var)
{
    int64_t K = kdim(c), Kp = kpad(c), OH = out_h(c), OW = out_w(c), Cg = c->c / c->groups, Mg = c->m / c->groups;
    float *wd = malloc(sizeof(float) * (size_t)(c->m * Kp)), *patch = malloc(sizeof(float) * (size_t)Kp);
    size_t rb = sh_format_bytes(c->fmt, Kp);
    for (int64_t r = 0; r < c->m; r++) sh_format_get(c->fmt)->to_f32((const char *)w->data + (size_t)r * rb, wd + r * Kp, Kp);
    const float *xd = x->data;
    for (int64_t n = 0; n < c->n; n++)
        for (int64_t m = 0; m < c->m; m++) {
            int64_t gi = m / Mg;
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    for (int64_t k = 0; k < Kp; k++) {
                        patch[k] = 0.0f;
                        if (k >= K) continue;
                        int64_t ci = k / (c->kh * c->kw), i = k / c->kw % c->kh, j = k % c->kw;
                        int64_t ih = oh * c->sh - c->pt + i * c->dh, iw = ow * c->sw - c->pl + j * c->dw;
                        if (ih >= 0 && ih < c->h && iw >= 0 && iw < c->w)
                            patch[k] = xd[((n * c->c + gi * Cg + ci) * c->h + ih) * c->w + iw];
                    }
                    double s = bias[m], tol = 1e-5, mag = fabs(bias[m]), vr = 0;
                    for (int64_t b = 0; b < Kp / 32; b++) {
                        double amax = 0, ws = 0, w2 = 0;
                        for (int64_t k = b * 32; k < b * 32 + 32; k++) {
                            double wv = wd[m * Kp + k];
                            s += wv * patch[k];
                            mag += fabs(wv * patch[k]);
                            ws += fabs(wv);
                            w2 += wv * wv;
                            if (fabs(patch[k]) > amax) amax = fabs(patch[k]);
                        }
                        tol += (amax / 254.0 * 1.001 + 3e-8) * ws;
                        vr += (amax / 127.0) * (amax / 127.0) / 12.0 * w2;
                    }
                    int64_t o = ((n * c->m + m) * OH + oh) * OW + ow;
                    y[o] = c->relu && s < 0 ? 0 : s;
                    bound[o] = tol + 2e-6 * mag;
                    var[o] = vr;
                }
        }
    free(wd);
    free(patch);
}

/* Run c through a program at nth threads (twice: the second run reuses the
 * prepared state and must give the same bytes); check every output against
 * the reference bound.  Returns the output (caller frees). */
static float *run_case(const cq_case *c, int nth)
{
    sh_error err = {0};
    sh_tensor *w = make_weight(c, 7u + (uint32_t)c->m, &err), *x = make_input(c, 11u + (uint32_t)c->c, &err);
    float *bias = malloc(sizeof(float) * (size_t)c->m);
    make_bias(c, bias);
    int64_t ny = c->n * c->m * out_h(c) * out_w(c);
    double *ref = malloc(sizeof(double) * (size_t)ny), *bnd = malloc(sizeof(double) * (size_t)ny);
    double *var = malloc(sizeof(double) * (size_t)ny);
    reference(c, x, w, bias, ref, bnd, var);
    sh_graph *g = make_graph(c, w, &err);
    sh_run_opts o = {.nthreads = nth};
    sh_program *p = NULL;
    CHECK_OK(sh_program_new(g, &o, &p, &err), &err);
    float *y = malloc(sizeof(float) * (size_t)ny);
    const sh_tensor *in[1] = {x};
    for (int rep = 0; rep < 2 && p; rep++) {
        CHECK_OK(sh_program_run(p, in, 1, &err), &err);
        const sh_tensor *out = sh_program_output(p, 0);
        CHECK(out && sh_tensor_numel(out) == ny);
        if (!out || sh_tensor_numel(out) != ny) break;
        if (rep == 1) {
            CHECK_MSG(!memcmp(y, out->data, sizeof(float) * (size_t)ny), "second run differs (threads %d)", nth);
            break;
        }
        memcpy(y, out->data, sizeof(float) * (size_t)ny);
        int64_t bad = 0, worst = 0;
        double wr = 0, se = 0, sv = 0;
        for (int64_t i = 0; i < ny; i++) {
            double e = fabs(y[i] - ref[i]);
            se += e * e, sv += var[i];
            if (!(e <= bnd[i])) bad++;
            if (e / bnd[i] > wr) wr = e / bnd[i], worst = i;
        }
        CHECK_MSG(bad == 0, "%s n%d c%d %dx%d m%d k%dx%d s%d,%d g%d threads %d: %lld of %lld outputs outside the bound "
                  "(worst %lld: %g vs %g, bound %g)",
                  sh_format_get(c->fmt)->name, c->n, c->c, c->h, c->w, c->m, c->kh, c->kw, c->sh, c->sw, c->groups,
                  nth, (long long)bad, (long long)ny, (long long)worst, y[worst], ref[worst], bnd[worst]);
        /* the error is the activation rounding: its RMS matches the expected
         * one (a wrong offset or scale would add a bias far above it) */
        double rms = sqrt(se / (double)ny), erms = sqrt(sv / (double)ny);
        CHECK_MSG(rms <= 1.5 * erms + 1e-6, "%s c%d m%d threads %d: RMS error %g, expected about %g",
                  sh_format_get(c->fmt)->name, c->c, c->m, nth, rms, erms);
    }
    sh_program_free(p);
    sh_graph_free(g);
    sh_tensor_free(x);
    free(bias);
    free(ref);
    free(bnd);
    free(var);
    return y;
}

static const cq_case cases[] = {
    /* n  c   h   w   m kh kw sh sw dh dw pt pl pb pr  g relu fmt */
    {1, 8, 10, 12, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, SH_Q4_0},    /* 20 channels: a partial group of 16 */
    {3, 6, 9, 9, 32, 5, 5, 2, 2, 1, 1, 2, 1, 0, 2, 1, 0, SH_Q8_0},      /* stride 2, asymmetric pads */
    {3, 16, 11, 7, 32, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 2, 1, SH_Q4_0},    /* groups, dilation */
    {1, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, SH_Q4_0},   /* the cnn's layer2 (tiles of rows) */
    {3, 64, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, SH_Q8_0},     /* the cnn's res layers */
    {2, 14, 8, 8, 16, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, SH_Q4_0_G64}, /* g64 (expanded), no pads */
    {1, 4, 9, 9, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, SH_Q4_1},      /* asymmetric (min term) */
    {3, 6, 8, 8, 16, 3, 3, 2, 1, 1, 1, 1, 0, 1, 0, 2, 0, SH_Q3_0},      /* 3-bit, groups, stride (2, 1) */
    {2, 8, 7, 7, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, SH_Q2_1},      /* 2-bit asymmetric */
    {1, 8, 6, 6, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, SH_LOG4},      /* log4: sh_qweight (portable kernels) */
    {2, 1, 12, 12, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, SH_Q4_0},     /* K 9 <= 16: unpacked to f32 */
};
#define NCASES (int)(sizeof cases / sizeof cases[0])

TEST(conv_quant_matches_dequantized_reference)
{
    for (int i = 0; i < NCASES; i++)
        for (int nth = 1; nth <= 2; nth++) free(run_case(&cases[i], nth));
}

/* sh_conv_quantized called directly (no conv.c: below AVX-512 conv.c
 * would unpack the weight to f32) at nth threads; returns the output. */
static float *run_direct(const cq_case *c, int nth)
{
    sh_error err = {0};
    sh_tensor *w = make_weight(c, 7u + (uint32_t)c->m, &err), *x = make_input(c, 11u + (uint32_t)c->c, &err);
    sh_graph *g = make_graph(c, w, &err);
    int bi = sh_graph_find(g, "b");
    const sh_tensor *b = bi >= 0 ? g->values[bi].init : NULL;
    int64_t ys[4] = {c->n, c->m, out_h(c), out_w(c)}, ny = c->n * c->m * ys[2] * ys[3];
    sh_tensor *y = sh_tensor_new(SH_F32, 4, ys, &err);
    size_t scr_n = 16u << 20;
    void *state = NULL, *scr = malloc(scr_n);
    sh_kctx k = {.node = &g->nodes[0], .err = &err, .nthreads = nth, .state = &state, .scratch = scr,
                 .scratch_size = scr_n};
    const sh_tensor *in[3] = {x, w, b};
    sh_tensor *out[1] = {y};
    CHECK_OK(sh_conv_quantized(&k, in, 3, out, 1), &err);
    float *r = malloc(sizeof(float) * (size_t)ny);
    memcpy(r, y->data, sizeof(float) * (size_t)ny);
    sh_conv_qstate_free(state);
    free(scr);
    sh_tensor_free(y);
    sh_tensor_free(x);
    sh_graph_free(g);
    return r;
}

/* The portable path (one sh_qweight per group, SHRINK_CPU=avx2) agrees with
 * the AVX-512 kernel up to f32 summation order (both quantize the
 * activations the same way); through a program below AVX-512 the weight is
 * unpacked to f32 and the result is the reference's (no activation
 * rounding). */
TEST(conv_quant_simd_matches_portable)
{
    if (sh_cpu_level() < SH_CPU_LEVEL_AVX512) SKIP("no AVX-512 VNNI: only the portable path runs");
    int which[] = {0, 1, 2, 3, 5, 6, 7, 8, 9};
    for (int t = 0; t < 9; t++) {
        const cq_case *c = &cases[which[t]];
        float *a = run_direct(c, 2);
        setenv("SHRINK_CPU", "avx2", 1);
        float *b = run_direct(c, 1);
        float *f = run_case(c, 2);
        unsetenv("SHRINK_CPU");
        int64_t ny = c->n * c->m * out_h(c) * out_w(c);
        double worst = 0, scale = 0, fdiff = 0;
        for (int64_t i = 0; i < ny; i++) {
            if (fabs(a[i] - b[i]) > worst) worst = fabs(a[i] - b[i]);
            if (fabs(b[i]) > scale) scale = fabs(b[i]);
            if (fabs(a[i] - f[i]) > fdiff) fdiff = fabs(a[i] - f[i]);
        }
        CHECK_MSG(worst <= 2e-5 * (scale + 1), "case %d: AVX-512 vs portable max |diff| %g (scale %g)", which[t], worst,
                  scale);
        CHECK_MSG(fdiff > 0, "case %d: the program below AVX-512 should run the f32 copy", which[t]);
        free(a);
        free(b);
        free(f);
    }
}

/* Direct calls with a state slot: the weight is prepared once (the packed
 * bytes only, as many as the format's), reused while its bytes stay, and
 * prepared again when they change. */
TEST(conv_quant_state_reused_and_refreshed)
{
    const cq_case *c = &cases[3];
    sh_error err = {0};
    sh_tensor *w = make_weight(c, 5, &err), *x = make_input(c, 6, &err);
    sh_graph *g = make_graph(c, w, &err);
    float bias[64];
    make_bias(c, bias);
    int bi = sh_graph_find(g, "b");
    const sh_tensor *b = bi >= 0 ? g->values[bi].init : NULL;
    CHECK(b != NULL);
    if (!b) return;
    int64_t ys[4] = {c->n, c->m, out_h(c), out_w(c)}, ny = c->n * c->m * ys[2] * ys[3];
    sh_tensor *y = sh_tensor_new(SH_F32, 4, ys, &err);
    size_t scr_n = 8u << 20;
    void *state = NULL, *scr = malloc(scr_n);
    sh_kctx k = {.node = &g->nodes[0], .err = &err, .nthreads = 2, .state = &state, .scratch = scr, .scratch_size = scr_n};
    const sh_tensor *in[3] = {x, w, b};
    sh_tensor *out[1] = {y};
    double *ref = malloc(sizeof(double) * (size_t)ny), *bnd = malloc(sizeof(double) * (size_t)ny);
    double *var = malloc(sizeof(double) * (size_t)ny);
    CHECK_OK(sh_conv_quantized(&k, in, 3, out, 1), &err);
    void *first = state;
    CHECK(first != NULL);
    size_t fb = sh_format_bytes(c->fmt, c->m * kpad(c));
    CHECK_MSG(sh_conv_qstate_bytes(state) == fb, "prepared %zu bytes, the format has %zu", sh_conv_qstate_bytes(state),
              fb);
    float *y1 = malloc(sizeof(float) * (size_t)ny);
    memcpy(y1, y->data, sizeof(float) * (size_t)ny);
    CHECK_OK(sh_conv_quantized(&k, in, 3, out, 1), &err);
    CHECK(state == first);
    CHECK(!memcmp(y1, y->data, sizeof(float) * (size_t)ny));
    /* new weight bytes in the same buffer: prepared again, new results */
    sh_tensor *w2 = make_weight(c, 77, &err);
    memcpy(w->data, w2->data, w->nbytes);
    CHECK_OK(sh_conv_quantized(&k, in, 3, out, 1), &err);
    reference(c, x, w, bias, ref, bnd, var);
    int64_t bad = 0;
    for (int64_t i = 0; i < ny; i++) bad += !(fabs(((float *)y->data)[i] - ref[i]) <= bnd[i]);
    CHECK_MSG(bad == 0, "%lld outputs of the changed weight outside the bound", (long long)bad);
    CHECK(memcmp(y1, y->data, sizeof(float) * (size_t)ny) != 0);
    sh_conv_qstate_free(state);
    /* no state slot: prepared and freed within the call, same results */
    sh_kctx k2 = k;
    k2.state = NULL;
    memcpy(y1, y->data, sizeof(float) * (size_t)ny);
    CHECK_OK(sh_conv_quantized(&k2, in, 3, out, 1), &err);
    CHECK(!memcmp(y1, y->data, sizeof(float) * (size_t)ny));
    free(y1);
    free(ref);
    free(bnd);
    free(var);
    free(scr);
    sh_tensor_free(w2);
    sh_tensor_free(y);
    sh_tensor_free(x);
    sh_graph_free(g);
}

/* Bad inputs: one clear error naming the problem, never a crash. */
static void expect_error(const cq_case *c, int64_t weight_k, int64_t kp, const char *want, const char *bias_shape_bad)
{
    sh_error err = {0};
    int64_t s[2] = {c->m, kp};
    sh_tensor *w = sh_tensor_new(c->fmt, 2, s, &err);
    memset(w->data, 0, w->nbytes);
    sh_graph *g = make_graph(c, w, &err);
    int k = 0;
    sh_node_set_int(g, k, "weight_k", weight_k);
    if (bias_shape_bad) {
        int64_t bs[1] = {c->m + 1};
        sh_tensor *b2 = sh_tensor_new(SH_F32, 1, bs, &err);
        memset(b2->data, 0, b2->nbytes);
        sh_graph_add_init(g, "b2", b2, &err);
        const char *in[3] = {"x", "w", "b2"}, *out[1] = {"y2"};
        sh_graph_add_node(g, "Conv", "qconv_bad_bias", 3, in, 1, out, &err);
        int64_t ks[2] = {c->kh, c->kw};
        sh_node_set_ints(g, g->n_nodes - 1, "kernel_shape", 2, ks);
        sh_node_set_int(g, g->n_nodes - 1, "weight_k", weight_k);
        sh_graph_mark_output(g, "y2", &err);
    }
    sh_tensor *x = make_input(c, 3, &err);
    sh_run_opts o = {.nthreads = 1};
    sh_program *p = NULL;
    sh_error e2 = {0};
    int rc = sh_program_new(g, &o, &p, &e2);
    if (!rc) {
        const sh_tensor *in[1] = {x};
        rc = sh_program_run(p, in, 1, &e2);
    }
    CHECK_MSG(rc != SH_OK, "expected an error (%s)", want);
    CHECK_MSG(strstr(e2.msg, want) != NULL, "error '%s' does not mention '%s'", e2.msg, want);
    sh_program_free(p);
    sh_graph_free(g);
    sh_tensor_free(x);
}

TEST(conv_quant_bad_inputs)
{
    cq_case c = cases[0]; /* K 72, Kp 96 */
    expect_error(&c, 70, 96, "weight_k 70 should be 72", NULL);   /* weight_k disagrees with the kernel */
    expect_error(&c, 72, 128, "less than one group zero-padded", NULL);      /* K not padded to the next group */
    expect_error(&c, 72, 96, "does not match the 20 output channels", "bad");
    cq_case g3 = cases[0];
    g3.groups = 3; /* 8 channels */
    expect_error(&g3, 72, 96, "group 3 does not divide", NULL);
}
