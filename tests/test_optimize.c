/* test_optimize.c - inference graph rewrites (src/graph/optimize.c):
 * BatchNorm folding, Relu fusion, Identity/Dropout removal, and the
 * optimized copy inference programs run: same outputs as the graph as it is. */
#include <string.h>

#include "test.h"
#include "gradcheck.h"

/* Give every BN of g non-trivial parameters and running statistics. */
static void randomize_bn(sh_graph *g, uint64_t seed)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const sh_node *n = &g->nodes[i];
        if (strcmp(n->op, "BatchNormalization")) continue;
        for (int j = 1; j < 5; j++) {
            sh_tensor *t = g->values[n->in[j]].init;
            float lo = j == 4 ? 0.2f : (j == 1 ? 0.5f : -0.5f), hi = j == 4 ? 2.0f : 1.5f;
            if (j == 2 || j == 3) hi = 0.5f;
            gradcheck_fill(t, seed + (uint64_t)(i * 8 + j), lo, hi);
        }
    }
}

static int count_op(const sh_graph *g, const char *op)
{
    int c = 0;
    for (int i = 0; i < g->n_nodes; i++) c += strcmp(g->nodes[i].op, op) == 0;
    return c;
}

/* Run g on x with and without optimization; max |diff| of output 0. */
static double opt_vs_plain(sh_graph *g, const sh_tensor *x, int nthreads, sh_graph **ran)
{
    sh_error e = {0};
    sh_run_opts o1 = {.nthreads = nthreads}, o2 = {.nthreads = nthreads, .no_optimize = 1};
    sh_program *p1 = NULL, *p2 = NULL;
    CHECK_OK(sh_program_new(g, &o1, &p1, &e), &e);
    CHECK_OK(sh_program_new(g, &o2, &p2, &e), &e);
    if (!p1 || !p2) return 1e30;
    const sh_tensor *in[1] = {x};
    CHECK_OK(sh_program_run(p1, in, 1, &e), &e);
    CHECK_OK(sh_program_run(p2, in, 1, &e), &e);
    sh_tensor *a = sh_program_output(p1, 0), *b = sh_program_output(p2, 0);
    double md = 1e30;
    if (a && b && sh_tensor_numel(a) == sh_tensor_numel(b)) {
        md = 0;
        for (int64_t i = 0; i < sh_tensor_numel(a); i++) {
            double d = fabs((double)sh_f32(a)[i] - sh_f32(b)[i]);
            if (!(d <= md)) md = d > md ? d : 1e30;
        }
    }
    if (ran) *ran = sh_program_graph(p1) != g ? sh_graph_clone(sh_program_graph(p1), &e) : NULL;
    sh_program_free(p1);
    sh_program_free(p2);
    return md;
}

static void check_builtin(const char *kind, int n_bn, int n_relu)
{
    sh_error e = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build(kind, 7, &g, &e), &e);
    if (!g) return;
    randomize_bn(g, 11);
    int nodes = g->n_nodes;
    int64_t xs[4] = {3, 1, 28, 28};
    sh_tensor *x = gradcheck_rand(4, xs, 5, 0.0f, 1.0f);
    for (int th = 1; th <= 2; th++) {
        sh_graph *ran = NULL;
        double md = opt_vs_plain(g, x, th, &ran);
        CHECK_MSG(md < 1e-5, "%s, %d threads: optimized vs plain max |diff| %g", kind, th, md);
        CHECK_MSG(ran != NULL, "%s: the inference program did not optimize", kind);
        if (ran) {
            CHECK_MSG(count_op(ran, "BatchNormalization") == 0, "%s: %d BN left", kind,
                      count_op(ran, "BatchNormalization"));
            CHECK_MSG(count_op(ran, "Relu") == n_relu, "%s: %d Relu left, expected %d", kind, count_op(ran, "Relu"),
                      n_relu);
            CHECK(!strcmp(ran->values[ran->outputs[0]].name, "logits"));
            CHECK(!strcmp(ran->values[ran->inputs[0]].name, "input"));
        }
        sh_graph_free(ran);
    }
    /* the caller's graph is unchanged */
    CHECK(g->n_nodes == nodes);
    CHECK(count_op(g, "BatchNormalization") == n_bn);
    /* in place: same outputs */
    sh_graph *c = sh_graph_clone(g, &e);
    CHECK_OK(sh_graph_optimize(c, 1, &e), &e);
    CHECK(count_op(c, "BatchNormalization") == 0);
    CHECK(count_op(c, "Relu") == n_relu);
    {
        sh_run_opts o = {.nthreads = 1, .no_optimize = 1};
        sh_program *p1 = NULL, *p2 = NULL;
        CHECK_OK(sh_program_new(c, &o, &p1, &e), &e);
        CHECK_OK(sh_program_new(g, &o, &p2, &e), &e);
        const sh_tensor *in[1] = {x};
        CHECK_OK(sh_program_run(p1, in, 1, &e), &e);
        CHECK_OK(sh_program_run(p2, in, 1, &e), &e);
        sh_tensor *a = sh_program_output(p1, 0), *b = sh_program_output(p2, 0);
        for (int64_t i = 0; i < sh_tensor_numel(a); i++) CHECK_NEAR(sh_f32(a)[i], sh_f32(b)[i], 1e-5);
        sh_program_free(p1);
        sh_program_free(p2);
    }
    sh_graph_free(c);
    sh_tensor_free(x);
    sh_graph_free(g);
}

TEST(optimize_cnn_matches_unoptimized) { check_builtin("cnn", 5, 1); }

TEST(optimize_lenet5_matches_unoptimized) { check_builtin("lenet5", 0, 0); }

/* Training changes the weights the folded copy came from: the next run sees
 * them (fingerprint check), and sh_program_sync_weights forces it. */
TEST(optimize_follows_weight_changes)
{
    sh_error e = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("cnn", 3, &g, &e), &e);
    randomize_bn(g, 5);
    int64_t xs[4] = {2, 1, 28, 28};
    sh_tensor *x = gradcheck_rand(4, xs, 9, 0.0f, 1.0f);
    sh_run_opts o = {.nthreads = 1};
    sh_program *p = NULL;
    CHECK_OK(sh_program_new(g, &o, &p, &e), &e);
    const sh_tensor *in[1] = {x};
    CHECK_OK(sh_program_run(p, in, 1, &e), &e);
    /* change BN stats and every conv weight */
    randomize_bn(g, 99);
    for (int v = 0; v < g->n_values; v++)
        if (g->values[v].init && strstr(g->values[v].name, "conv.weight")) {
            float *w = sh_f32(g->values[v].init);
            for (int64_t i = 0; i < sh_tensor_numel(g->values[v].init); i++) w[i] *= 0.9f;
        }
    CHECK_OK(sh_program_run(p, in, 1, &e), &e);
    double md = opt_vs_plain(g, x, 1, NULL);
    CHECK(md < 1e-5);
    sh_tensor *a = sh_program_output(p, 0);
    sh_run_opts o2 = {.nthreads = 1, .no_optimize = 1};
    sh_program *q = NULL;
    CHECK_OK(sh_program_new(g, &o2, &q, &e), &e);
    CHECK_OK(sh_program_run(q, in, 1, &e), &e);
    sh_tensor *b = sh_program_output(q, 0);
    for (int64_t i = 0; i < sh_tensor_numel(a); i++) CHECK_NEAR(sh_f32(a)[i], sh_f32(b)[i], 1e-5);
    /* a single unsampled element: sync_weights */
    int wv = sh_graph_find(g, "layer2.conv.weight");
    CHECK(wv >= 0);
    sh_f32(g->values[wv].init)[5] += 0.25f;
    CHECK_OK(sh_program_sync_weights(p, &e), &e);
    CHECK_OK(sh_program_run(p, in, 1, &e), &e);
    CHECK_OK(sh_program_run(q, in, 1, &e), &e);
    a = sh_program_output(p, 0), b = sh_program_output(q, 0);
    for (int64_t i = 0; i < sh_tensor_numel(a); i++) CHECK_NEAR(sh_f32(a)[i], sh_f32(b)[i], 1e-5);
    sh_program_free(p);
    sh_program_free(q);
    sh_tensor_free(x);
    sh_graph_free(g);
}

/* x -> Flatten -> Gemm(transB) -> BN -> Relu -> Identity -> Dropout -> y;
 * plus a Gemm without bias (transB=0, alpha 0.5) -> BN -> out2. */
TEST(optimize_gemm_bn_relu_identity_dropout)
{
    sh_error e = {0};
    sh_graph *g = sh_graph_new("t");
    int64_t xs[4] = {-1, 2, 3, 2};
    sh_graph_add_input(g, "x", SH_F32, 4, xs, &e);
    int64_t ws[2] = {5, 12}, w2s[2] = {12, 5}, bs[1] = {5}, cs[1] = {5};
    sh_graph_add_init(g, "w", gradcheck_rand(2, ws, 1, -1, 1), &e);
    sh_graph_add_init(g, "w2", gradcheck_rand(2, w2s, 2, -1, 1), &e);
    sh_graph_add_init(g, "b", gradcheck_rand(1, bs, 3, -1, 1), &e);
    const char *pn[4] = {"s", "bb", "m", "v"};
    for (int j = 0; j < 4; j++) {
        char n1[8], n2[8];
        snprintf(n1, sizeof n1, "%s1", pn[j]);
        snprintf(n2, sizeof n2, "%s2", pn[j]);
        sh_graph_add_init(g, n1, gradcheck_rand(1, cs, 10 + (uint64_t)j, j == 3 ? 0.3f : -1, j == 3 ? 2.0f : 1), &e);
        sh_graph_add_init(g, n2, gradcheck_rand(1, cs, 20 + (uint64_t)j, j == 3 ? 0.3f : -1, j == 3 ? 2.0f : 1), &e);
    }
    const char *i0[1] = {"x"}, *o0[1] = {"f"};
    int k = sh_graph_add_node(g, "Flatten", "flat", 1, i0, 1, o0, &e);
    sh_node_set_int(g, k, "axis", 1);
    const char *i1[3] = {"f", "w", "b"}, *o1[1] = {"h"};
    k = sh_graph_add_node(g, "Gemm", "fc", 3, i1, 1, o1, &e);
    sh_node_set_int(g, k, "transB", 1);
    sh_node_set_float(g, k, "beta", 0.7f);
    const char *i2[5] = {"h", "s1", "bb1", "m1", "v1"}, *o2[1] = {"hb"};
    sh_graph_add_node(g, "BatchNormalization", "bn", 5, i2, 1, o2, &e);
    const char *i3[1] = {"hb"}, *o3[1] = {"r"};
    sh_graph_add_node(g, "Relu", "relu", 1, i3, 1, o3, &e);
    const char *i4[1] = {"r"}, *o4[1] = {"id"};
    sh_graph_add_node(g, "Identity", "ident", 1, i4, 1, o4, &e);
    const char *i5[1] = {"id"}, *o5[1] = {"y"};
    sh_graph_add_node(g, "Dropout", "drop", 1, i5, 1, o5, &e);
    const char *i6[2] = {"f", "w2"}, *o6[1] = {"h2"};
    k = sh_graph_add_node(g, "Gemm", "fc2", 2, i6, 1, o6, &e);
    sh_node_set_float(g, k, "alpha", 0.5f);
    const char *i7[5] = {"h2", "s2", "bb2", "m2", "v2"}, *o7[1] = {"out2"};
    sh_graph_add_node(g, "BatchNormalization", "bn2", 5, i7, 1, o7, &e);
    sh_graph_mark_output(g, "y", &e);
    sh_graph_mark_output(g, "out2", &e);
    CHECK_OK(sh_graph_check(g, &e), &e);
    int64_t x1[4] = {4, 2, 3, 2};
    sh_tensor *x = gradcheck_rand(4, x1, 8, -1, 1);
    sh_run_opts o = {.nthreads = 1}, on = {.nthreads = 1, .no_optimize = 1};
    sh_program *p = NULL, *q = NULL;
    CHECK_OK(sh_program_new(g, &o, &p, &e), &e);
    CHECK_OK(sh_program_new(g, &on, &q, &e), &e);
    const sh_graph *r = sh_program_graph(p);
    CHECK_MSG(r->n_nodes == 3, "%d nodes after optimizing, expected Flatten, Gemm, Gemm", r->n_nodes);
    CHECK(count_op(r, "Gemm") == 2 && count_op(r, "Flatten") == 1);
    const sh_tensor *in[1] = {x};
    CHECK_OK(sh_program_run(p, in, 1, &e), &e);
    CHECK_OK(sh_program_run(q, in, 1, &e), &e);
    for (int oi = 0; oi < 2; oi++) {
        sh_tensor *a = sh_program_output(p, oi), *b = sh_program_output(q, oi);
        CHECK(a && b && sh_tensor_numel(a) == 20 && sh_tensor_numel(b) == 20);
        for (int64_t i = 0; a && b && i < 20; i++) CHECK_NEAR(sh_f32(a)[i], sh_f32(b)[i], 1e-5);
    }
    CHECK(!strcmp(r->values[r->outputs[0]].name, "y") && !strcmp(r->values[r->outputs[1]].name, "out2"));
    sh_program_free(p);
    sh_program_free(q);
    /* a BN whose input is also read elsewhere is not folded */
    sh_graph *c = sh_graph_clone(g, &e);
    sh_graph_mark_output(c, "h", &e);
    CHECK_OK(sh_graph_optimize(c, 1, &e), &e);
    CHECK(count_op(c, "BatchNormalization") == 1);
    sh_graph_free(c);
    sh_tensor_free(x);
    sh_graph_free(g);
}

/* Two Convs sharing one weight, each followed by its own BN: the weight is
 * copied for one of them; training-mode BN and training programs stay. */
TEST(optimize_shared_weight_and_training)
{
    sh_error e = {0};
    sh_graph *g = sh_graph_new("t");
    int64_t xs[4] = {-1, 3, 5, 5}, ws[4] = {4, 3, 3, 3}, cs[1] = {4};
    sh_graph_add_input(g, "x", SH_F32, 4, xs, &e);
    sh_graph_add_init(g, "w", gradcheck_rand(4, ws, 1, -1, 1), &e);
    for (int b = 0; b < 2; b++)
        for (int j = 0; j < 4; j++) {
            char n[16];
            snprintf(n, sizeof n, "p%d_%d", b, j);
            sh_graph_add_init(g, n, gradcheck_rand(1, cs, (uint64_t)(b * 4 + j + 3), j == 3 ? 0.3f : -1, j == 3 ? 2.f : 1.f),
                              &e);
        }
    const char *c0[2] = {"x", "w"}, *co0[1] = {"c0"}, *co1[1] = {"c1"};
    int64_t pads[4] = {1, 1, 1, 1};
    int k = sh_graph_add_node(g, "Conv", "conv0", 2, c0, 1, co0, &e);
    sh_node_set_ints(g, k, "pads", 4, pads);
    k = sh_graph_add_node(g, "Conv", "conv1", 2, c0, 1, co1, &e);
    const char *b0[5] = {"c0", "p0_0", "p0_1", "p0_2", "p0_3"}, *b1[5] = {"c1", "p1_0", "p1_1", "p1_2", "p1_3"};
    const char *bo0[1] = {"y0"}, *bo1[1] = {"y1"};
    sh_graph_add_node(g, "BatchNormalization", "bn0", 5, b0, 1, bo0, &e);
    sh_graph_add_node(g, "BatchNormalization", "bn1", 5, b1, 1, bo1, &e);
    sh_graph_mark_output(g, "y0", &e);
    sh_graph_mark_output(g, "y1", &e);
    int64_t x1[4] = {2, 3, 5, 5};
    sh_tensor *x = gradcheck_rand(4, x1, 8, -1, 1);
    sh_run_opts o = {.nthreads = 1}, on = {.nthreads = 1, .no_optimize = 1};
    sh_program *p = NULL, *q = NULL;
    CHECK_OK(sh_program_new(g, &o, &p, &e), &e);
    CHECK_OK(sh_program_new(g, &on, &q, &e), &e);
    CHECK(count_op(sh_program_graph(p), "BatchNormalization") == 0);
    const sh_tensor *in[1] = {x};
    CHECK_OK(sh_program_run(p, in, 1, &e), &e);
    CHECK_OK(sh_program_run(q, in, 1, &e), &e);
    for (int oi = 0; oi < 2; oi++) {
        sh_tensor *a = sh_program_output(p, oi), *b = sh_program_output(q, oi);
        for (int64_t i = 0; i < sh_tensor_numel(a); i++) CHECK_NEAR(sh_f32(a)[i], sh_f32(b)[i], 1e-5);
    }
    sh_program_free(p);
    sh_program_free(q);
    /* in place: the shared weight is copied, the original stays for the other conv */
    sh_graph *c = sh_graph_clone(g, &e);
    float w0 = sh_f32(c->values[sh_graph_find(c, "w")].init)[0];
    CHECK_OK(sh_graph_fold_batchnorm(c, &e), &e);
    CHECK(count_op(c, "BatchNormalization") == 0);
    CHECK(sh_graph_find(c, "w.bnfold") >= 0);
    CHECK(sh_f32(c->values[sh_graph_find(c, "w")].init)[0] != w0); /* folded for the second conv */
    sh_graph_free(c);
    /* training programs run the graph as it is */
    sh_run_opts ot = {.nthreads = 1, .training = 1};
    CHECK_OK(sh_program_new(g, &ot, &p, &e), &e);
    CHECK(sh_program_graph(p) == g);
    sh_program_free(p);
    /* training_mode BN is not folded */
    sh_node_set_int(g, 2, "training_mode", 1);
    c = sh_graph_clone(g, &e);
    CHECK_OK(sh_graph_fold_batchnorm(c, &e), &e);
    CHECK(count_op(c, "BatchNormalization") == 1);
    sh_graph_free(c);
    sh_tensor_free(x);
    sh_graph_free(g);
}

static void gemm_relu_attrs(sh_graph *g, int node, void *ctx)
{
    sh_node_set_int(g, node, "transB", 1);
    sh_node_set_string(g, node, "activation", "Relu");
}

TEST(optimize_gemm_relu_backward)
{
    int64_t as[2] = {3, 4}, bs[2] = {5, 4}, cs[1] = {5};
    sh_tensor *in[3] = {gradcheck_rand(2, as, 1, -1, 1), gradcheck_rand(2, bs, 2, -1, 1), gradcheck_rand(1, cs, 3, -1, 1)};
    char rep[2048];
    CHECK_MSG(gradcheck_node("Gemm", gemm_relu_attrs, NULL, 3, in, 1e-2, rep, sizeof rep) == 0, "%s", rep);
    for (int i = 0; i < 3; i++) sh_tensor_free(in[i]);
}

/* The Conv kernels (direct over output channels for >= 16 output channels
 * per group, stride 1 / 2, dilation, groups, fused Relu, batches on 1 and 2
 * threads) against a naive loop. */
typedef struct conv_cfg {
    int n, c, m, h, w, k, s, p, d, g, relu, bias;
} conv_cfg;

static void naive_conv(const conv_cfg *q, const float *x, const float *wt, const float *b, float *y, int OH, int OW)
{
    int cg = q->c / q->g, mg = q->m / q->g;
    for (int n = 0; n < q->n; n++)
        for (int m = 0; m < q->m; m++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double s = b ? b[m] : 0.0;
                    int gi = m / mg;
                    for (int c = 0; c < cg; c++)
                        for (int i = 0; i < q->k; i++)
                            for (int j = 0; j < q->k; j++) {
                                int ih = oh * q->s - q->p + i * q->d, iw = ow * q->s - q->p + j * q->d;
                                if (ih < 0 || ih >= q->h || iw < 0 || iw >= q->w) continue;
                                s += (double)x[((n * q->c + gi * cg + c) * q->h + ih) * q->w + iw] *
                                     wt[((m * cg + c) * q->k + i) * q->k + j];
                            }
                    if (q->relu && s < 0) s = 0;
                    y[((n * q->m + m) * OH + oh) * OW + ow] = (float)s;
                }
}

TEST(optimize_conv_kernels_match_naive)
{
    static const conv_cfg cfgs[] = {
        {1, 64, 128, 7, 7, 3, 1, 1, 1, 1, 1, 1}, {2, 32, 64, 14, 14, 3, 1, 1, 1, 1, 0, 0},
        {1, 8, 20, 9, 11, 3, 2, 1, 1, 1, 1, 1},  {3, 6, 40, 13, 10, 5, 1, 2, 1, 1, 0, 1},
        {1, 16, 32, 12, 12, 3, 1, 2, 2, 1, 1, 1}, {2, 8, 48, 8, 8, 3, 2, 0, 1, 2, 0, 1},
        {5, 4, 16, 30, 29, 3, 1, 1, 1, 1, 1, 0}, {1, 3, 17, 5, 5, 3, 1, 1, 1, 1, 0, 1},
        {3, 1, 32, 28, 28, 3, 1, 1, 1, 1, 1, 1}, {1, 1, 32, 28, 28, 3, 1, 1, 1, 1, 1, 1},
    };
    for (size_t ci = 0; ci < sizeof cfgs / sizeof cfgs[0]; ci++) {
        const conv_cfg *q = &cfgs[ci];
        sh_error e = {0};
        sh_graph *g = sh_graph_new("conv");
        int64_t xs[4] = {-1, q->c, q->h, q->w}, ws[4] = {q->m, q->c / q->g, q->k, q->k}, bs[1] = {q->m};
        sh_graph_add_input(g, "x", SH_F32, 4, xs, &e);
        sh_tensor *wt = gradcheck_rand(4, ws, 40 + ci, -0.5f, 0.5f), *bt = gradcheck_rand(1, bs, 50 + ci, -1, 1);
        sh_graph_add_init(g, "w", wt, &e);
        sh_graph_add_init(g, "b", bt, &e);
        const char *in[3] = {"x", "w", "b"}, *out[1] = {"y"};
        int k = sh_graph_add_node(g, "Conv", "conv", q->bias ? 3 : 2, in, 1, out, &e);
        int64_t pads[4] = {q->p, q->p, q->p, q->p}, st[2] = {q->s, q->s}, dl[2] = {q->d, q->d};
        sh_node_set_ints(g, k, "pads", 4, pads);
        sh_node_set_ints(g, k, "strides", 2, st);
        sh_node_set_ints(g, k, "dilations", 2, dl);
        sh_node_set_int(g, k, "group", q->g);
        if (q->relu) sh_node_set_string(g, k, "activation", "Relu");
        sh_graph_mark_output(g, "y", &e);
        int64_t x1[4] = {q->n, q->c, q->h, q->w};
        sh_tensor *x = gradcheck_rand(4, x1, 60 + ci, -1, 1);
        int ek = (q->k - 1) * q->d + 1, OH = (q->h + 2 * q->p - ek) / q->s + 1, OW = (q->w + 2 * q->p - ek) / q->s + 1;
        float *ref = malloc(sizeof(float) * (size_t)(q->n * q->m * OH * OW));
        naive_conv(q, sh_f32(x), sh_f32(wt), q->bias ? sh_f32(bt) : NULL, ref, OH, OW);
        for (int th = 1; th <= 2; th++)
            for (int rep = 0; rep < 2; rep++) { /* the second run uses the packed-weight cache */
                sh_run_opts o = {.nthreads = th};
                sh_program *p = NULL;
                CHECK_OK(sh_program_new(g, &o, &p, &e), &e);
                const sh_tensor *ins[1] = {x};
                CHECK_OK(sh_program_run(p, ins, 1, &e), &e);
                if (rep) CHECK_OK(sh_program_run(p, ins, 1, &e), &e);
                sh_tensor *y = sh_program_output(p, 0);
                CHECK(y && sh_tensor_numel(y) == (int64_t)q->n * q->m * OH * OW);
                double md = 0;
                for (int64_t i = 0; y && i < sh_tensor_numel(y); i++) {
                    double d = fabs((double)sh_f32(y)[i] - ref[i]);
                    if (!(d <= md)) md = d;
                }
                CHECK_MSG(md < 1e-4, "config %zu, %d threads: max |diff| %g", ci, th, md);
                sh_program_free(p);
            }
        /* a changed weight (same pointer) is re-packed */
        sh_run_opts o = {.nthreads = 1};
        sh_program *p = NULL;
        CHECK_OK(sh_program_new(g, &o, &p, &e), &e);
        const sh_tensor *ins[1] = {x};
        CHECK_OK(sh_program_run(p, ins, 1, &e), &e);
        for (int64_t i = 0; i < sh_tensor_numel(wt); i++) sh_f32(wt)[i] *= -1.0f;
        naive_conv(q, sh_f32(x), sh_f32(wt), q->bias ? sh_f32(bt) : NULL, ref, OH, OW);
        CHECK_OK(sh_program_run(p, ins, 1, &e), &e);
        sh_tensor *y = sh_program_output(p, 0);
        for (int64_t i = 0; i < sh_tensor_numel(y); i += 7) CHECK_NEAR(sh_f32(y)[i], ref[i], 1e-4);
        sh_program_free(p);
        free(ref);
        sh_tensor_free(x);
        sh_graph_free(g);
    }
}

/* keep_values: every intermediate stays readable after a run, and equals the
 * same value recomputed by a program whose output it is. */
TEST(runtime_keep_values_reads_intermediates)
{
    sh_error e = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("lenet5", 3, &g, &e), &e);
    if (!g) return;
    int64_t xs[4] = {2, 1, 28, 28};
    sh_tensor *x = gradcheck_rand(4, xs, 9, 0.0f, 1.0f);
    sh_run_opts ko = {.nthreads = 1, .no_optimize = 1, .keep_values = 1};
    sh_run_opts po = {.nthreads = 1, .no_optimize = 1};
    sh_program *pk = NULL, *pp = NULL;
    CHECK_OK(sh_program_new(g, &ko, &pk, &e), &e);
    CHECK_OK(sh_program_new(g, &po, &pp, &e), &e);
    const sh_tensor *in[1] = {x};
    CHECK_OK(sh_program_run(pk, in, 1, &e), &e);
    CHECK_OK(sh_program_run(pp, in, 1, &e), &e);
    int checked = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const char *name = g->values[g->nodes[i].out[0]].name;
        sh_tensor *v = sh_program_value(pk, name);
        CHECK_MSG(v != NULL, "value %s not kept", name);
        if (!v) continue;
        /* the plain program does not keep intermediates */
        if (i + 1 < g->n_nodes) CHECK(sh_program_value(pp, name) == NULL);
        checked++;
    }
    CHECK(checked == g->n_nodes);
    /* the output of the last node is the graph output in both */
    sh_tensor *a = sh_program_output(pk, 0), *b = sh_program_output(pp, 0);
    for (int64_t i = 0; i < sh_tensor_numel(a); i++) CHECK_NEAR(sh_f32(a)[i], sh_f32(b)[i], 0);
    sh_program_free(pk);
    sh_program_free(pp);
    sh_tensor_free(x);
    sh_graph_free(g);
}
