/* test_qlinear_tinyk.c - the direct QLinearConv kernel for a tiny K
 * (Cin*kh*kw <= 32, ops/qlinear_conv.c qconv_tinyk) against a plain scalar
 * formula written here and against the portable level (SH_CPU_REF), byte for
 * byte: u8 and s8 inputs and outputs, stride 1 and 2, dilation, asymmetric
 * padding, 1 to 3 input channels, fused Relu, batch 1 and 3, 1 and 2
 * threads, repeated calls on the cached state.  The PyTorch golden of the
 * first cnn layer (conv_first_c1) is in test_qlinear.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/ops.h"
#include "ops/qlinear.h"
#include "test.h"

typedef struct tk_case {
    int n, c, h, w, m, kh, kw, s, d, pt, pl, pb, pr, relu, xs8, ys8;
    int groups; /* 0: 1 */
} tk_case;

static uint32_t rnd(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* inputs of QLinearConv: x, xs, xz, w, ws, wz, ys, yz, B */
static void make_inputs(const tk_case *c, sh_tensor **t, uint32_t seed, sh_error *err)
{
    int G = c->groups > 0 ? c->groups : 1;
    int64_t xs[4] = {c->n, c->c, c->h, c->w}, ws[4] = {c->m, c->c / G, c->kh, c->kw}, m1[1] = {c->m};
    sh_format xf = c->xs8 ? SH_I8 : SH_U8, yf = c->ys8 ? SH_I8 : SH_U8;
    t[0] = sh_tensor_new(xf, 4, xs, err);
    for (int64_t i = 0; i < sh_tensor_numel(t[0]); i++) ((uint8_t *)t[0]->data)[i] = (uint8_t)rnd(&seed);
    t[1] = sh_tensor_new(SH_F32, 0, NULL, err);
    *(float *)t[1]->data = 0.0123f;
    t[2] = sh_tensor_new(xf, 0, NULL, err);
    *(uint8_t *)t[2]->data = (uint8_t)(c->xs8 ? -7 : 131);
    t[3] = sh_tensor_new(SH_I8, 4, ws, err);
    for (int64_t i = 0; i < sh_tensor_numel(t[3]); i++) ((int8_t *)t[3]->data)[i] = (int8_t)(rnd(&seed) % 255 - 127);
    t[4] = sh_tensor_new(SH_F32, 1, m1, err);
    for (int i = 0; i < c->m; i++) ((float *)t[4]->data)[i] = 0.002f + 0.0007f * (float)(rnd(&seed) % 16);
    t[5] = sh_tensor_new(SH_I8, 1, m1, err); /* zeros: symmetric weights */
    t[6] = sh_tensor_new(SH_F32, 0, NULL, err);
    *(float *)t[6]->data = 0.031f;
    t[7] = sh_tensor_new(yf, 0, NULL, err);
    *(uint8_t *)t[7]->data = (uint8_t)(c->ys8 ? 5 : 17);
    t[8] = sh_tensor_new(SH_I32, 1, m1, err);
    for (int i = 0; i < c->m; i++) ((int32_t *)t[8]->data)[i] = (int32_t)(rnd(&seed) % 4001) - 2000;
}

static int32_t q8(const sh_tensor *t, int64_t i)
{
    return t->fmt == SH_I8 ? ((const int8_t *)t->data)[i] : ((const uint8_t *)t->data)[i];
}

/* the ONNX formula, one output at a time */
static void reference(const tk_case *c, sh_tensor *const *t, int64_t oh_n, int64_t ow_n, uint8_t *y)
{
    float xs = *(float *)t[1]->data, ys = *(float *)t[6]->data;
    int32_t xz = q8(t[2], 0), yz = q8(t[7], 0);
    int32_t lo = c->ys8 ? -128 : 0, hi = c->ys8 ? 127 : 255;
    if (c->relu && yz > lo) lo = yz;
    for (int n = 0; n < c->n; n++)
        for (int m = 0; m < c->m; m++)
            for (int64_t oh = 0; oh < oh_n; oh++)
                for (int64_t ow = 0; ow < ow_n; ow++) {
                    int32_t acc = ((int32_t *)t[8]->data)[m];
                    int G = c->groups > 0 ? c->groups : 1, cg = c->c / G, c0 = m / (c->m / G) * cg;
                    for (int ci = 0; ci < cg; ci++)
                        for (int i = 0; i < c->kh; i++)
                            for (int j = 0; j < c->kw; j++) {
                                int64_t ih = oh * c->s - c->pt + i * c->d, iw = ow * c->s - c->pl + j * c->d;
                                if (ih < 0 || ih >= c->h || iw < 0 || iw >= c->w) continue;
                                int32_t xv = q8(t[0], ((int64_t)(n * c->c + c0 + ci) * c->h + ih) * c->w + iw);
                                int32_t wv = ((int8_t *)t[3]->data)[((m * cg + ci) * c->kh + i) * c->kw + j];
                                acc += (xv - xz) * wv;
                            }
                    float mult = xs * ((float *)t[4]->data)[m] / ys;
                    int32_t q = (int32_t)nearbyintf((float)acc * mult) + yz;
                    q = q < lo ? lo : q > hi ? hi : q;
                    y[((n * c->m + m) * oh_n + oh) * ow_n + ow] = (uint8_t)q;
                }
}

/* forward at `level` with nthreads, `calls` times on one state */
static sh_tensor *run(const tk_case *c, sh_graph *g, sh_tensor *const *t, int level, int nt, int calls, int *used_tinyk,
                      sh_error *err)
{
    const sh_node *nd = &g->nodes[0];
    const sh_op_def *d = sh_op_find("QLinearConv");
    void *state = NULL;
    sh_kctx k = {.node = nd, .err = err, .nthreads = nt, .state = &state};
    sh_tensor shape = {0}, *outs[1] = {&shape};
    const sh_tensor *cin[9];
    for (int i = 0; i < 9; i++) cin[i] = t[i];
    if (d->infer(&k, cin, 9, outs, 1)) return NULL;
    sh_tensor *y = sh_tensor_new(shape.fmt, shape.ndim, shape.shape, err);
    int rc = SH_OK;
    for (int r = 0; r < calls && !rc; r++) {
        memset(y->data, 0xA5, y->nbytes);
        rc = sh_qlinear_conv_run(&k, cin, 9, &y, level);
    }
    if (used_tinyk) *used_tinyk = state && ((sh_qstate *)state)->dw != NULL;
    sh_qlinear_state_free(state);
    if (rc) {
        sh_tensor_free(y);
        return NULL;
    }
    return y;
}

static int check_cases(const tk_case *cases, size_t n_cases)
{
    int any_tinyk = 0;
    for (size_t ci = 0; ci < n_cases; ci++) {
        const tk_case *c = &cases[ci];
        sh_error err = {0};
        sh_tensor *t[9];
        make_inputs(c, t, 1234u + (uint32_t)ci, &err);
        sh_graph *g = sh_graph_new("tinyk");
        sh_graph_add_input(g, "x", t[0]->fmt, 4, t[0]->shape, &err);
        const char *names[9] = {"x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"}, *outs[1] = {"y"};
        for (int i = 1; i < 9; i++) sh_graph_add_init(g, names[i], sh_tensor_clone(t[i], &err), &err);
        int node = sh_graph_add_node(g, "QLinearConv", "conv", 9, names, 1, outs, &err);
        int64_t pads[4] = {c->pt, c->pl, c->pb, c->pr}, st[2] = {c->s, c->s}, dl[2] = {c->d, c->d},
                ks[2] = {c->kh, c->kw};
        sh_node_set_ints(g, node, "pads", 4, pads);
        sh_node_set_ints(g, node, "strides", 2, st);
        sh_node_set_ints(g, node, "dilations", 2, dl);
        sh_node_set_ints(g, node, "kernel_shape", 2, ks);
        if (c->relu) sh_node_set_string(g, node, "activation", "Relu");
        if (c->groups > 1) sh_node_set_int(g, node, "group", c->groups);
        int64_t oh = (c->h + c->pt + c->pb - c->d * (c->kh - 1) - 1) / c->s + 1;
        int64_t ow = (c->w + c->pl + c->pr - c->d * (c->kw - 1) - 1) / c->s + 1;
        size_t ny = (size_t)(c->n * c->m * oh * ow);
        uint8_t *want = malloc(ny);
        reference(c, t, oh, ow, want);
        for (int nt = 1; nt <= 2; nt++) {
            int used = 0;
            sh_tensor *yb = run(c, g, t, -1, nt, 3, &used, &err);
            sh_tensor *yr = run(c, g, t, SH_CPU_REF, nt, 1, NULL, &err);
            CHECK_MSG(yb && yr, "case %zu: run failed: %s", ci, err.msg);
            if (yb && yr) {
                CHECK_MSG(yb->nbytes == ny && !memcmp(yb->data, want, ny), "case %zu (%d threads): best level differs "
                          "from the formula", ci, nt);
                CHECK_MSG(yr->nbytes == ny && !memcmp(yr->data, want, ny), "case %zu: ref level differs", ci);
            }
            any_tinyk |= used;
            sh_tensor_free(yb);
            sh_tensor_free(yr);
        }
        free(want);
        sh_graph_free(g);
        for (int i = 0; i < 9; i++) sh_tensor_free(t[i]);
    }
    return any_tinyk;
}

TEST(qlinear_tinyk_matches_reference)
{
    static const tk_case cases[] = {
        /* n  c   h   w   m kh kw s d pt pl pb pr relu xs8 ys8 */
        {1, 1, 28, 28, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0}, /* the cnn's first layer */
        {3, 1, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        {2, 3, 13, 11, 24, 3, 3, 1, 1, 1, 0, 2, 1, 1, 1, 0, 0}, /* K = 27, s8 x, asymmetric pads */
        {1, 2, 17, 19, 8, 3, 3, 2, 1, 1, 1, 1, 1, 0, 0, 1, 0},  /* stride 2 (scalar patches), s8 y */
        {1, 2, 12, 12, 20, 2, 2, 1, 2, 0, 0, 1, 1, 0, 1, 1, 0}, /* dilation 2, K = 8 */
        {2, 1, 5, 37, 33, 1, 5, 1, 1, 0, 2, 0, 2, 1, 0, 0, 0},  /* 1x5, M not a multiple of 16 */
        {1, 1, 6, 6, 4, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0},    /* K = 1 */
        {1, 2, 9, 9, 7, 4, 4, 1, 1, 2, 2, 1, 1, 1, 0, 0, 0},    /* K = 32 */
    };
    int any_tinyk = check_cases(cases, sizeof cases / sizeof cases[0]);
    int f = SH_CPU_AVX512F | SH_CPU_AVX512BW | SH_CPU_AVX512VNNI;
    if ((sh_cpu_features() & f) == f && sh_cpu_level() == SH_CPU_LEVEL_AVX512)
        CHECK_MSG(any_tinyk, "the tiny-K kernel was not used on an AVX-512 VNNI CPU");
}

/* The general path (im2col + int8 GEMM, qconv_fast): batch 1 and 3, 1 and 2
 * threads (a batch-1 layer above ~0.5M multiply-adds splits its rows over
 * the threads), channels a multiple of 16 (pixel-block NHWC transposition)
 * or not, 1x1 direct, strides, dilation, asymmetric pads, rows that do not
 * fill the 6-row tiles. */
TEST(qlinear_conv_fast_matches_reference)
{
    static const tk_case cases[] = {
        /* n  c   h   w   m kh kw s d pt pl pb pr relu xs8 ys8 */
        {1, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0}, /* the cnn's layer2 */
        {1, 64, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},   /* res convs: 49 rows */
        {1, 64, 7, 7, 128, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0},  /* layer4, s8 y */
        {3, 16, 9, 13, 24, 3, 3, 1, 1, 0, 1, 2, 1, 1, 1, 0, 0},  /* batch 3, s8 x, asymmetric pads */
        {1, 48, 11, 10, 40, 3, 3, 2, 1, 1, 1, 1, 1, 0, 0, 0, 0}, /* stride 2 */
        {1, 24, 12, 12, 72, 3, 3, 1, 2, 2, 2, 2, 2, 1, 0, 0, 0}, /* C % 16 != 0, dilation 2 */
        {1, 64, 15, 15, 96, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0}, /* 1x1 direct */
        {2, 32, 5, 5, 20, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},   /* small: one thread */
        {1, 64, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 4}, /* 4 groups of 16 channels, 2 threads */
        {2, 48, 9, 9, 24, 3, 3, 2, 1, 1, 0, 1, 0, 0, 1, 0, 3},   /* 3 groups, stride 2 */
    };
    check_cases(cases, sizeof cases / sizeof cases[0]);
}

/* QuantizeLinear f32 -> u8 / s8 per tensor (the model input; a 4-wide path in
 * ops/qlinear.c) against the formula: halves round to even, saturation,
 * +-inf saturate, NaN -> zero point; 4k + 3 elements so the scalar tail runs */
TEST(qlinear_quantize_input_formula)
{
    for (int sgn = 0; sgn < 2; sgn++) {
        sh_error err = {0};
        int64_t n = 67, shp[1] = {67};
        sh_graph *g = sh_graph_new("q");
        sh_graph_add_input(g, "x", SH_F32, 1, shp, &err);
        sh_tensor *s = sh_tensor_new(SH_F32, 0, NULL, &err), *z = sh_tensor_new(sgn ? SH_I8 : SH_U8, 0, NULL, &err);
        *(float *)s->data = 0.5f;
        *(uint8_t *)z->data = (uint8_t)(sgn ? -3 : 100);
        sh_graph_add_init(g, "s", s, &err);
        sh_graph_add_init(g, "z", z, &err);
        const char *in[3] = {"x", "s", "z"}, *out[1] = {"y"};
        sh_graph_add_node(g, "QuantizeLinear", "q", 3, in, 1, out, &err);
        sh_graph_mark_output(g, "y", &err);
        sh_tensor *x = sh_tensor_new(SH_F32, 1, shp, &err);
        float *xv = x->data;
        for (int64_t i = 0; i < n; i++) xv[i] = 0.25f * (float)(i - 33) + (i % 3 ? 0.0f : 0.0001f);
        xv[5] = NAN, xv[6] = INFINITY, xv[7] = -INFINITY, xv[8] = 1e30f, xv[9] = -1e30f, xv[10] = 0.75f;
        xv[11] = 1.25f, xv[12] = -0.75f, xv[66] = NAN;
        sh_run_opts o = {.nthreads = 1, .no_optimize = 1};
        sh_program *p = NULL;
        CHECK_OK(sh_program_new(g, &o, &p, &err), &err);
        const sh_tensor *xs = x;
        CHECK_OK(sh_program_run(p, &xs, 1, &err), &err);
        const sh_tensor *y = sh_program_output(p, 0);
        int32_t zp = sgn ? -3 : 100, lo = sgn ? -128 : 0, hi = sgn ? 127 : 255;
        for (int64_t i = 0; i < n; i++) {
            int32_t want;
            if (xv[i] != xv[i]) want = zp;
            else {
                float v = xv[i] / 0.5f;
                v = v > 1e6f ? 1e6f : v < -1e6f ? -1e6f : v;
                want = (int32_t)nearbyintf(v) + zp;
                want = want < lo ? lo : want > hi ? hi : want;
            }
            int32_t got = sgn ? ((int8_t *)y->data)[i] : ((uint8_t *)y->data)[i];
            CHECK_MSG(got == want, "%s: x[%lld] = %g: got %d, want %d", sgn ? "s8" : "u8", (long long)i, (double)xv[i],
                      got, want);
        }
        sh_program_free(p);
        sh_tensor_free(x);
        sh_graph_free(g);
    }
}
