/* test_structured.c - structured pruning with physical removal
 * (src/compress/structured.c) on the built-in mlp / lenet5 / cnn and on
 * small hand-built graphs: exact parameter counts, exact equivalence with
 * the original model whose removed channels were made to output zero,
 * residual channel groups, depthwise propagation, ONNX round trip, errors. */
#include <string.h>

#include "test.h"
#include "train/train.h"

static void randomize_bn(sh_graph *g, uint64_t seed)
{
    /* BN parameters away from the identity so that slicing them is checked */
    uint64_t s = seed;
    for (int k = 0; k < g->n_nodes; k++) {
        const sh_node *nd = &g->nodes[k];
        if (strcmp(nd->op, "BatchNormalization")) continue;
        for (int j = 1; j < 5; j++) {
            sh_tensor *t = g->values[nd->in[j]].init;
            for (int64_t c = 0; c < sh_tensor_numel(t); c++) {
                double u = sh_rng_uniform(&s);
                sh_f32(t)[c] = (float)(j == 1 ? 0.5 + u : j == 2 ? u - 0.5 : j == 3 ? 0.2 * (u - 0.5) : 0.5 + u);
            }
        }
    }
}

/* Output of g on a fixed random batch (malloc'ed copy). */
static float *run(sh_graph *g, int batch, int64_t *n)
{
    sh_error err = {0};
    int64_t s[4] = {batch, 1, 28, 28};
    sh_tensor *x = sh_tensor_new(SH_F32, 4, s, &err);
    uint64_t r = 42;
    for (int64_t i = 0; i < sh_tensor_numel(x); i++) sh_f32(x)[i] = (float)sh_rng_uniform(&r);
    sh_program *p = NULL;
    sh_run_opts ro = {0};
    ro.nthreads = 1;
    CHECK_OK(sh_program_new(g, &ro, &p, &err), &err);
    const sh_tensor *ins[1] = {x};
    CHECK_OK(sh_program_run(p, ins, 1, &err), &err);
    sh_tensor *o = sh_program_output(p, 0);
    *n = sh_tensor_numel(o);
    float *c = malloc(sizeof(float) * (size_t)*n);
    memcpy(c, o->data, sizeof(float) * (size_t)*n);
    sh_program_free(p);
    sh_tensor_free(x);
    return c;
}

static sh_tensor *init_of(sh_graph *g, const char *name)
{
    int v = sh_graph_find(g, name);
    CHECK_MSG(v >= 0 && g->values[v].init, "no initializer '%s'", name);
    return v >= 0 ? g->values[v].init : NULL;
}

/* Make output channel c of layer `pre` (a Conv/Gemm node name) exactly zero:
 * filter and bias zero; its BatchNormalization `bn` (or NULL) gets beta = mean = 0. */
static void zero_channel(sh_graph *g, const char *w, const char *b, const char *bn, int64_t c)
{
    char nm[128];
    sh_tensor *t = init_of(g, w);
    int64_t per = sh_tensor_numel(t) / t->shape[0];
    memset(sh_f32(t) + c * per, 0, sizeof(float) * (size_t)per);
    if (b) sh_f32(init_of(g, b))[c] = 0;
    if (bn) {
        snprintf(nm, sizeof nm, "%s.bias", bn);
        sh_f32(init_of(g, nm))[c] = 0;
        snprintf(nm, sizeof nm, "%s.running_mean", bn);
        sh_f32(init_of(g, nm))[c] = 0;
    }
}

static void check_equivalent(sh_graph *a, sh_graph *b, double tol)
{
    int64_t na = 0, nb = 0;
    float *ya = run(a, 3, &na), *yb = run(b, 3, &nb);
    CHECK(na == nb && na == 30);
    double md = 0;
    for (int64_t i = 0; i < na && na == nb; i++) md = fmax(md, fabs((double)ya[i] - yb[i]));
    CHECK_MSG(md <= tol, "max |diff| %.3g > %.3g", md, tol);
    free(ya);
    free(yb);
}

static sh_graph *prune_ch(sh_graph *g, double ratio, sh_prune_report *rep)
{
    sh_error err = {0};
    sh_prune_opts o;
    sh_prune_opts_default(&o);
    o.ratio = ratio;
    sh_graph *p = NULL;
    CHECK_OK(sh_prune_channels(g, &o, &p, rep, &err), &err);
    return p;
}

static void onnx_roundtrip(sh_graph *p, const char *file)
{
    sh_error err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/%s", sh_test_tmpdir(), file);
    CHECK_OK(sh_onnx_save(p, path, &err), &err);
    sh_graph *q = NULL;
    CHECK_OK(sh_onnx_load(path, &q, &err), &err);
    if (!q) return;
    CHECK(sh_graph_param_count(q) == sh_graph_param_count(p));
    check_equivalent(p, q, 0);
    sh_graph_free(q);
}

TEST(structured_cnn_half_channels)
{
    sh_graph *g = NULL;
    sh_error err = {0};
    CHECK_OK(sh_model_build("cnn", 7, &g, &err), &err);
    randomize_bn(g, 3);
    CHECK(sh_graph_param_count(g) == 168874);
    /* zero half of every group's channels (the residual group: the same
     * channels of layer2 and res.b), then remove them */
    for (int64_t c = 0; c < 32; c += 2) zero_channel(g, "layer1.conv.weight", NULL, "layer1.bn", c);
    for (int64_t c = 1; c < 64; c += 2) {
        zero_channel(g, "layer2.conv.weight", NULL, "layer2.bn", c);
        zero_channel(g, "res.b.conv.weight", NULL, "res.b.bn", c);
    }
    for (int64_t c = 0; c < 32; c++) zero_channel(g, "res.a.conv.weight", NULL, "res.a.bn", c);
    for (int64_t c = 64; c < 128; c++) zero_channel(g, "layer4.conv.weight", NULL, "layer4.bn", c);
    sh_prune_report rep;
    sh_graph *p = prune_ch(g, 0.5, &rep);
    if (!p) return;
    CHECK(rep.params_before == 168874);
    CHECK(rep.params_after == 42970);
    CHECK(sh_graph_param_count(p) == 42970);
    CHECK(sh_graph_param_bytes(p) == 42970 * 4);
    CHECK(sh_graph_param_bytes(g) == 168874 * 4);
    const sh_tensor *w = init_of(p, "layer2.conv.weight");
    CHECK(w->shape[0] == 32 && w->shape[1] == 16);
    w = init_of(p, "res.b.conv.weight");
    CHECK(w->shape[0] == 32 && w->shape[1] == 32);
    w = init_of(p, "fc.weight");
    CHECK(w->shape[0] == 10 && w->shape[1] == 64);
    CHECK(sh_tensor_numel(init_of(p, "layer4.bn.running_var")) == 64);
    /* report: fc is kept (graph output), layer2 + res.b form one group */
    int fc = -1, l2 = -1;
    for (int i = 0; i < rep.n_layers; i++) {
        if (!strcmp(rep.layers[i].name, "fc")) fc = i;
        if (!strcmp(rep.layers[i].name, "layer2.conv")) l2 = i;
    }
    CHECK(fc >= 0 && !rep.layers[fc].pruned && strstr(rep.layers[fc].note, "graph output") != NULL);
    CHECK(l2 >= 0 && rep.layers[l2].pruned && strstr(rep.layers[l2].note, "res.b.conv") != NULL);
    CHECK(rep.layers[l2].shape_before[0] == 64 && rep.layers[l2].shape_after[0] == 32);
    /* (b) same outputs as the original whose removed channels output zero */
    check_equivalent(g, p, 1e-5);
    /* also against the BN-folded original */
    sh_graph *f = sh_graph_clone(g, &err);
    CHECK_OK(sh_graph_fold_batchnorm(f, &err), &err);
    check_equivalent(f, p, 1e-5);
    sh_graph_free(f);
    /* (c) ONNX export reloads and runs */
    onnx_roundtrip(p, "cnn_pruned.onnx");
    sh_prune_report_free(&rep);
    sh_graph_free(p);
    sh_graph_free(g);
}

TEST(structured_residual_group_ranked_by_summed_norm)
{
    sh_graph *g = NULL;
    sh_error err = {0};
    CHECK_OK(sh_model_build("cnn", 8, &g, &err), &err);
    /* channel 5 small in layer2 but large in res.b: the summed norm keeps it;
     * channel 9 moderate in both: removed */
    sh_tensor *a = init_of(g, "layer2.conv.weight"), *b = init_of(g, "res.b.conv.weight");
    int64_t pa = sh_tensor_numel(a) / 64, pb = sh_tensor_numel(b) / 64;
    for (int64_t c = 0; c < 64; c++) {
        for (int64_t e = 0; e < pa; e++) sh_f32(a)[c * pa + e] = c == 5 ? 0.001f : c == 9 ? 0.01f : 0.05f + 0.001f * c;
        for (int64_t e = 0; e < pb; e++) sh_f32(b)[c * pb + e] = c == 5 ? 1.0f : c == 9 ? 0.01f : 0.05f + 0.001f * c;
    }
    sh_prune_opts o;
    sh_prune_opts_default(&o);
    o.ratio = 1.0 / 64; /* one channel */
    o.include = "layer2.conv";
    sh_graph *p = NULL;
    CHECK_OK(sh_prune_channels(g, &o, &p, NULL, &err), &err);
    if (!p) return;
    const sh_tensor *q = init_of(p, "layer2.conv.weight"), *r = init_of(p, "res.b.conv.weight");
    CHECK(q->shape[0] == 63 && r->shape[0] == 63);
    CHECK(init_of(p, "res.a.conv.weight")->shape[1] == 63 && init_of(p, "layer4.conv.weight")->shape[1] == 63);
    CHECK(init_of(p, "res.a.conv.weight")->shape[0] == 64); /* res.a's own filters stay */
    /* channel 5 kept at index 5, channel 9 gone: index 9 now holds old 10 */
    CHECK(sh_f32(q)[5 * pa] == 0.001f);
    CHECK(sh_f32(r)[5 * pb] == 1.0f);
    CHECK(sh_f32(q)[9 * pa] == 0.05f + 0.001f * 10);
    CHECK(init_of(p, "res.b.bn.weight")->shape[0] == 63);
    int64_t n = 0;
    free(run(p, 2, &n));
    CHECK(n == 20);
    sh_graph_free(p);
    sh_graph_free(g);
}

TEST(structured_lenet5_and_mlp_exact)
{
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("lenet5", 3, &g, &err), &err);
    CHECK(sh_graph_param_count(g) == 61706);
    for (int64_t c = 0; c < 3; c++) zero_channel(g, "conv1.weight", "conv1.bias", NULL, 2 * c);
    for (int64_t c = 0; c < 8; c++) zero_channel(g, "conv2.weight", "conv2.bias", NULL, 15 - c);
    for (int64_t c = 0; c < 60; c++) zero_channel(g, "fc1.weight", "fc1.bias", NULL, 2 * c + 1);
    for (int64_t c = 0; c < 42; c++) zero_channel(g, "fc2.weight", "fc2.bias", NULL, c);
    sh_prune_report rep;
    sh_graph *p = prune_ch(g, 0.5, &rep);
    if (!p) return;
    CHECK(sh_graph_param_count(p) == 15738);
    CHECK(rep.params_after == 15738);
    /* Flatten: each of conv2's channels was 5*5 = 25 columns of fc1 */
    const sh_tensor *w = init_of(p, "fc1.weight");
    CHECK(w->shape[0] == 60 && w->shape[1] == 200);
    check_equivalent(g, p, 1e-5);
    onnx_roundtrip(p, "lenet5_pruned.onnx");
    sh_prune_report_free(&rep);
    sh_graph_free(p);
    sh_graph_free(g);

    CHECK_OK(sh_model_build("mlp", 3, &g, &err), &err);
    CHECK(sh_graph_param_count(g) == 266610);
    for (int64_t c = 0; c < 150; c++) zero_channel(g, "fc1.weight", "fc1.bias", NULL, 299 - 2 * c);
    for (int64_t c = 0; c < 50; c++) zero_channel(g, "fc2.weight", "fc2.bias", NULL, 2 * c);
    p = prune_ch(g, 0.5, NULL);
    if (!p) return;
    CHECK(sh_graph_param_count(p) == 125810);
    check_equivalent(g, p, 1e-5);
    onnx_roundtrip(p, "mlp_pruned.onnx");
    sh_graph_free(p);
    sh_graph_free(g);
}

TEST(structured_real_model_runs_and_is_faster_shaped)
{
    /* random (not prepared) weights: pruning changes the outputs but the
     * model stays consistent, and L2 / global / Taylor all work */
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("cnn", 11, &g, &err), &err);
    sh_prune_opts o;
    sh_prune_opts_default(&o);
    o.method = SH_PRUNE_L2;
    o.ratio = 0.25;
    o.global = 1;
    sh_graph *p = NULL;
    sh_prune_report rep;
    CHECK_OK(sh_prune_channels(g, &o, &p, &rep, &err), &err);
    if (!p) return;
    /* 32 + 64 + 64 + 128 channels in four groups: a quarter of 288 = 72 removed */
    int64_t before = 0, after = 0;
    const char *ws[4] = {"layer1.conv.weight", "layer2.conv.weight", "res.a.conv.weight", "layer4.conv.weight"};
    for (int i = 0; i < 4; i++) {
        before += init_of(g, ws[i])->shape[0];
        after += init_of(p, ws[i])->shape[0];
    }
    CHECK(before == 288 && after == 216);
    CHECK(rep.params_after < rep.params_before);
    int64_t n = 0;
    free(run(p, 4, &n));
    CHECK(n == 40);
    sh_prune_report_free(&rep);
    sh_graph_free(p);
    /* Taylor on a few random labelled images */
    static float x[16 * 784];
    static int32_t y[16];
    uint64_t s = 5;
    for (int i = 0; i < 16 * 784; i++) x[i] = (float)sh_rng_uniform(&s);
    for (int i = 0; i < 16; i++) y[i] = i % 10;
    sh_dataset d = {0};
    d.kind = 1, d.n = 16, d.c = 1, d.h = 28, d.w = 28, d.x = x, d.y = y, d.n_classes = 10;
    sh_prune_opts_default(&o);
    o.method = SH_PRUNE_TAYLOR;
    o.calib = &d;
    o.batch = 8;
    o.calib_batches = 2;
    o.ratio = 0.5;
    o.nthreads = 1;
    CHECK_OK(sh_prune_channels(g, &o, &p, NULL, &err), &err);
    if (p) CHECK(sh_graph_param_count(p) == 42970);
    sh_graph_free(p);
    sh_graph_free(g);
}

/* input [-1,1,4,4] -> Conv [4,1,3,3] pad 1 -> Reshape(shape s0,s1) -> Gemm [3,fin] */
static sh_graph *reshape_net(int64_t s0, int64_t s1, int64_t fin)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("r");
    int64_t in[4] = {-1, 1, 4, 4}, ws[4] = {4, 1, 3, 3}, fs[2] = {3, fin}, sh[2] = {s0, s1};
    sh_graph_add_input(g, "input", SH_F32, 4, in, &err);
    sh_graph_add_init(g, "c.weight", sh_tensor_new(SH_F32, 4, ws, NULL), &err);
    sh_graph_add_init(g, "f.weight", sh_tensor_new(SH_F32, 2, fs, NULL), &err);
    sh_tensor *st = sh_tensor_new(SH_I64, 1, (int64_t[]){2}, NULL);
    memcpy(st->data, sh, sizeof sh);
    sh_graph_add_init(g, "shape", st, &err);
    const char *ci[2] = {"input", "c.weight"}, *co[1] = {"c"};
    int k = sh_graph_add_node(g, "Conv", "conv", 2, ci, 1, co, &err);
    sh_node_set_ints(g, k, "pads", 4, (int64_t[]){1, 1, 1, 1});
    const char *ri[2] = {"c", "shape"}, *ro[1] = {"r"};
    sh_graph_add_node(g, "Reshape", "reshape", 2, ri, 1, ro, &err);
    const char *gi[2] = {"r", "f.weight"}, *go[1] = {"logits"};
    k = sh_graph_add_node(g, "Gemm", "fc", 2, gi, 1, go, &err);
    sh_node_set_int(g, k, "transB", 1);
    sh_graph_mark_output(g, "logits", &err);
    CHECK_OK(sh_graph_check(g, &err), &err);
    return g;
}

TEST(structured_refusals_leave_graph_unchanged)
{
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("lenet5", 4, &g, &err), &err);
    int64_t pc = sh_graph_param_count(g);
    sh_prune_opts o;
    sh_prune_opts_default(&o);
    sh_graph *p = NULL;
    o.ratio = 0.95; /* conv1: round(0.95 * 6) = 6 of 6 channels */
    CHECK(sh_prune_channels(g, &o, &p, NULL, &err) == SH_EINVAL && !p);
    CHECK_MSG(strstr(err.msg, "every channel (6 of 6) of layer 'conv1'") != NULL, "%s", err.msg);
    o.ratio = 1.0;
    CHECK(sh_prune_channels(g, &o, &p, NULL, &err) == SH_EINVAL);
    CHECK(strstr(err.msg, "outside [0, 1)") != NULL);
    o.ratio = 0.5;
    o.include = "fc3";
    CHECK(sh_prune_channels(g, &o, &p, NULL, &err) == SH_EUNSUPPORTED && !p);
    CHECK_MSG(strstr(err.msg, "'fc3'") && strstr(err.msg, "graph output 'logits'"), "%s", err.msg);
    CHECK(sh_graph_param_count(g) == pc);
    CHECK(init_of(g, "conv1.weight")->shape[0] == 6);
    sh_graph_free(g);

    /* a Reshape that moves channels into the batch cannot be propagated through */
    g = reshape_net(-1, 16, 16);
    o.include = "conv";
    CHECK(sh_prune_channels(g, &o, &p, NULL, &err) == SH_EUNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "Reshape 'reshape' cannot be propagated through") != NULL, "%s", err.msg);
    /* without include: nothing prunable, reported, graph equal */
    o.include = NULL;
    sh_prune_report rep;
    CHECK_OK(sh_prune_channels(g, &o, &p, &rep, &err), &err);
    CHECK(rep.params_after == rep.params_before);
    CHECK(rep.n_layers == 2 && strstr(rep.layers[0].note, "Reshape") != NULL);
    sh_prune_report_free(&rep);
    sh_graph_free(p);
    sh_graph_free(g);
}

TEST(structured_reshape_as_flatten)
{
    /* x.view(-1, 64) after a Conv (PyTorch export): a Flatten whose constant
     * shape is rewritten; [0, -1] needs no rewrite */
    int64_t shapes[2][2] = {{-1, 64}, {0, -1}};
    for (int t = 0; t < 2; t++) {
        sh_error err = {0};
        sh_graph *g = reshape_net(shapes[t][0], shapes[t][1], 64);
        sh_tensor *w = init_of(g, "c.weight");
        for (int64_t e = 0; e < 36; e++) sh_f32(w)[e] = (e / 9 == 1 || e / 9 == 2) ? 0.0f : 0.1f * (float)(e % 5 + 1);
        sh_tensor *f = init_of(g, "f.weight");
        for (int64_t e = 0; e < 192; e++) sh_f32(f)[e] = 0.01f * (float)(e % 13) - 0.05f;
        sh_prune_opts o;
        sh_prune_opts_default(&o);
        sh_graph *p = NULL;
        CHECK_OK(sh_prune_channels(g, &o, &p, NULL, &err), &err);
        if (!p) continue;
        CHECK(init_of(p, "c.weight")->shape[0] == 2 && init_of(p, "f.weight")->shape[1] == 32);
        const int64_t *sv = init_of(p, "shape")->data;
        CHECK(sv[0] == shapes[t][0] && sv[1] == (t ? -1 : 32));
        int64_t xs[4] = {2, 1, 4, 4};
        sh_tensor *x = sh_tensor_new(SH_F32, 4, xs, NULL);
        for (int64_t e = 0; e < 32; e++) sh_f32(x)[e] = (float)((e * 7) % 11) / 11.0f;
        float y[2][6];
        sh_graph *gs[2] = {g, p};
        for (int q = 0; q < 2; q++) {
            sh_program *pr = NULL;
            sh_run_opts ro = {0};
            ro.nthreads = 1;
            CHECK_OK(sh_program_new(gs[q], &ro, &pr, &err), &err);
            const sh_tensor *ins[1] = {x};
            CHECK_OK(sh_program_run(pr, ins, 1, &err), &err);
            memcpy(y[q], sh_program_output(pr, 0)->data, sizeof y[q]);
            sh_program_free(pr);
        }
        for (int i = 0; i < 6; i++) CHECK_NEAR(y[0][i], y[1][i], 1e-6);
        sh_tensor_free(x);
        sh_graph_free(p);
        sh_graph_free(g);
    }
}

/* input [-1,1,8,8] -> conv1 [8,1,3,3]+b -> Relu -> dw [8,1,3,3] group 8 +b -> BN -> Relu
 *   -> pw [4,8,1,1] -> GlobalAveragePool -> Flatten -> Gemm [3,4] -> logits */
TEST(structured_depthwise_propagates)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("dw");
    uint64_t s = 9;
    int64_t in[4] = {-1, 1, 8, 8};
    sh_graph_add_input(g, "input", SH_F32, 4, in, &err);
    struct { const char *n; int nd; int64_t s[4]; } P[] = {
        {"c1.w", 4, {8, 1, 3, 3}}, {"c1.b", 1, {8}}, {"dw.w", 4, {8, 1, 3, 3}}, {"dw.b", 1, {8}},
        {"bn.s", 1, {8}}, {"bn.b", 1, {8}}, {"bn.m", 1, {8}}, {"bn.v", 1, {8}},
        {"pw.w", 4, {4, 8, 1, 1}}, {"fc.w", 2, {3, 4}}};
    for (int i = 0; i < 10; i++) {
        sh_tensor *t = sh_tensor_new(SH_F32, P[i].nd, P[i].s, NULL);
        for (int64_t e = 0; e < sh_tensor_numel(t); e++)
            sh_f32(t)[e] = (float)(i == 7 ? 0.5 + sh_rng_uniform(&s) : sh_rng_uniform(&s) - 0.4);
        sh_graph_add_init(g, P[i].n, t, &err);
    }
    const char *a[3] = {"input", "c1.w", "c1.b"}, *ao[1] = {"x1"};
    int k = sh_graph_add_node(g, "Conv", "c1", 3, a, 1, ao, &err);
    sh_node_set_ints(g, k, "pads", 4, (int64_t[]){1, 1, 1, 1});
    sh_graph_add_node(g, "Relu", "r1", 1, (const char *[]){"x1"}, 1, (const char *[]){"x2"}, &err);
    k = sh_graph_add_node(g, "Conv", "dw", 3, (const char *[]){"x2", "dw.w", "dw.b"}, 1, (const char *[]){"x3"}, &err);
    sh_node_set_int(g, k, "group", 8);
    sh_graph_add_node(g, "BatchNormalization", "bn", 5, (const char *[]){"x3", "bn.s", "bn.b", "bn.m", "bn.v"}, 1,
                      (const char *[]){"x4"}, &err);
    sh_graph_add_node(g, "Relu", "r2", 1, (const char *[]){"x4"}, 1, (const char *[]){"x5"}, &err);
    sh_graph_add_node(g, "Conv", "pw", 2, (const char *[]){"x5", "pw.w"}, 1, (const char *[]){"x6"}, &err);
    sh_graph_add_node(g, "GlobalAveragePool", "gap", 1, (const char *[]){"x6"}, 1, (const char *[]){"x7"}, &err);
    sh_graph_add_node(g, "Flatten", "flat", 1, (const char *[]){"x7"}, 1, (const char *[]){"x8"}, &err);
    k = sh_graph_add_node(g, "Gemm", "fc", 2, (const char *[]){"x8", "fc.w"}, 1, (const char *[]){"logits"}, &err);
    sh_node_set_int(g, k, "transB", 1);
    sh_graph_mark_output(g, "logits", &err);
    CHECK_OK(sh_graph_check(g, &err), &err);
    /* channels 1, 2, 5, 6 of c1 output zero all the way through the depthwise conv and BN */
    int64_t z[4] = {1, 2, 5, 6};
    for (int i = 0; i < 4; i++) {
        int64_t c = z[i];
        memset(sh_f32(init_of(g, "c1.w")) + 9 * c, 0, 9 * sizeof(float));
        sh_f32(init_of(g, "c1.b"))[c] = 0;
        sh_f32(init_of(g, "dw.b"))[c] = 0;
        sh_f32(init_of(g, "bn.b"))[c] = 0;
        sh_f32(init_of(g, "bn.m"))[c] = 0;
    }
    sh_prune_opts o;
    sh_prune_opts_default(&o);
    o.include = "c1";
    sh_graph *p = NULL;
    CHECK_OK(sh_prune_channels(g, &o, &p, NULL, &err), &err);
    if (!p) return;
    CHECK(init_of(p, "dw.w")->shape[0] == 4 && init_of(p, "pw.w")->shape[1] == 4);
    CHECK(init_of(p, "bn.v")->shape[0] == 4 && init_of(p, "c1.b")->shape[0] == 4);
    int dwn = -1;
    for (int i = 0; i < p->n_nodes; i++)
        if (!strcmp(p->nodes[i].name, "dw")) dwn = i;
    CHECK(dwn >= 0 && sh_attr_int(&p->nodes[dwn], "group", 0) == 4);
    /* kept channels 0,3,4,7 in order */
    CHECK(sh_f32(init_of(p, "bn.v"))[1] == sh_f32(init_of(g, "bn.v"))[3]);
    /* equal outputs on an 8x8 input */
    int64_t xs[4] = {2, 1, 8, 8};
    sh_tensor *x = sh_tensor_new(SH_F32, 4, xs, NULL);
    for (int64_t e = 0; e < 128; e++) sh_f32(x)[e] = (float)sh_rng_uniform(&s);
    float ya[6], yb[6];
    sh_graph *gs[2] = {g, p};
    for (int t = 0; t < 2; t++) {
        sh_program *pr = NULL;
        sh_run_opts ro = {0};
        ro.nthreads = 1;
        CHECK_OK(sh_program_new(gs[t], &ro, &pr, &err), &err);
        const sh_tensor *ins[1] = {x};
        CHECK_OK(sh_program_run(pr, ins, 1, &err), &err);
        memcpy(t ? yb : ya, sh_program_output(pr, 0)->data, sizeof ya);
        sh_program_free(pr);
    }
    for (int i = 0; i < 6; i++) CHECK_NEAR(ya[i], yb[i], 1e-5);
    sh_tensor_free(x);
    sh_graph_free(p);
    sh_graph_free(g);
}

/* Llama FFN: w1 and w3 meet at SiluMul (one channel group), w2 loses the
 * matching input columns; attention projections are left alone (RoPE). */
TEST(structured_llama_ffn_hidden_units)
{
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("llama-tiny", 5, &g, &err), &err);
    /* hidden units 86..171 of every layer output silu(0) * 0 = 0 */
    char n1[96], n3[96];
    for (int l = 0; l < 4; l++) {
        snprintf(n1, sizeof n1, "layers.%d.feed_forward.w1.weight", l);
        snprintf(n3, sizeof n3, "layers.%d.feed_forward.w3.weight", l);
        for (int64_t c = 86; c < 172; c++) {
            zero_channel(g, n1, NULL, NULL, c);
            zero_channel(g, n3, NULL, NULL, c);
        }
    }
    sh_prune_report rep;
    sh_graph *p = prune_ch(g, 0.5, &rep);
    if (!p) return;
    CHECK(init_of(p, "layers.2.feed_forward.w1.weight")->shape[0] == 86);
    CHECK(init_of(p, "layers.2.feed_forward.w3.weight")->shape[0] == 86);
    CHECK(init_of(p, "layers.2.feed_forward.w2.weight")->shape[1] == 86);
    CHECK(init_of(p, "layers.2.attention.wq.weight")->shape[0] == 64);
    CHECK(rep.params_before - rep.params_after == 4 * 3 * 86 * 64);
    int64_t ts[2] = {1, 9};
    sh_tensor *x = sh_tensor_new(SH_I64, 2, ts, NULL);
    for (int i = 0; i < 9; i++) ((int64_t *)x->data)[i] = (i * 37 + 11) % 256;
    float *ya = NULL;
    int64_t n = 0;
    sh_graph *gs[2] = {g, p};
    for (int t = 0; t < 2; t++) {
        sh_program *pr = NULL;
        sh_run_opts ro = {0};
        ro.nthreads = 1;
        CHECK_OK(sh_program_new(gs[t], &ro, &pr, &err), &err);
        const sh_tensor *ins[1] = {x};
        CHECK_OK(sh_program_run(pr, ins, 1, &err), &err);
        sh_tensor *o = sh_program_output(pr, 0);
        if (o && !t) {
            n = sh_tensor_numel(o);
            ya = malloc(sizeof(float) * (size_t)n);
            memcpy(ya, o->data, sizeof(float) * (size_t)n);
        } else if (o && ya) {
            CHECK(sh_tensor_numel(o) == n);
            double md = 0;
            for (int64_t i = 0; i < n; i++) md = fmax(md, fabs((double)ya[i] - sh_f32(o)[i]));
            CHECK_MSG(md <= 1e-5, "max |diff| %.3g", md);
        }
        sh_program_free(pr);
    }
    free(ya);
    sh_tensor_free(x);
    sh_prune_report_free(&rep);
    sh_graph_free(p);
    sh_graph_free(g);
}

TEST(structured_remove_residual_block)
{
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("cnn", 12, &g, &err), &err);
    randomize_bn(g, 4);
    /* the branch res.a -> res.b outputs exactly 0: res.b.bn gamma = beta = 0 */
    sh_tensor *ga = init_of(g, "res.b.bn.weight"), *be = init_of(g, "res.b.bn.bias");
    memset(ga->data, 0, ga->nbytes);
    memset(be->data, 0, be->nbytes);
    sh_prune_opts o;
    sh_prune_opts_default(&o);
    o.ratio = 0.9; /* round(0.9 * 1 block) = 1 */
    sh_graph *p = NULL;
    sh_prune_report rep;
    CHECK_OK(sh_prune_blocks(g, &o, &p, &rep, &err), &err);
    if (!p) return;
    /* res.a.conv + bn + res.b.conv + bn: 2 * (36864 + 256) parameters */
    CHECK(sh_graph_param_count(p) == 168874 - 74240);
    CHECK(rep.params_after == 168874 - 74240);
    CHECK(sh_graph_find(p, "res.a.conv.weight") < 0 || !p->values[sh_graph_find(p, "res.a.conv.weight")].init);
    int ra = -1;
    for (int i = 0; i < rep.n_layers; i++)
        if (!strcmp(rep.layers[i].name, "res.a.conv")) ra = i;
    CHECK(ra >= 0 && rep.layers[ra].params_after == 0 && strstr(rep.layers[ra].note, "res.add") != NULL);
    int adds = 0;
    for (int i = 0; i < p->n_nodes; i++) adds += !strcmp(p->nodes[i].op, "Add") || !strcmp(p->nodes[i].op, "Identity");
    CHECK_MSG(adds == 0 && p->n_nodes == g->n_nodes - 6, "adds %d, nodes %d of %d", adds, p->n_nodes, g->n_nodes);
    check_equivalent(g, p, 1e-5);
    onnx_roundtrip(p, "cnn_noblock.onnx");
    sh_prune_report_free(&rep);
    sh_graph_free(p);
    /* by name; a name that is not a block is an error; ratio 0.4 rounds to 0 */
    o.include = "res.add";
    CHECK_OK(sh_prune_blocks(g, &o, &p, NULL, &err), &err);
    CHECK(p && sh_graph_param_count(p) == 168874 - 74240);
    sh_graph_free(p);
    o.include = "layer4.conv";
    CHECK(sh_prune_blocks(g, &o, &p, NULL, &err) == SH_EINVAL && !p);
    CHECK(strstr(err.msg, "'layer4.conv' is not the Add of a residual block") != NULL);
    o.include = NULL;
    o.ratio = 0.4;
    CHECK_OK(sh_prune_blocks(g, &o, &p, NULL, &err), &err);
    CHECK(p && sh_graph_param_count(p) == 168874);
    sh_graph_free(p);
    sh_graph_free(g);
}
