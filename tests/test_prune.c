/* test_prune.c - unstructured, block, N:M and Taylor pruning
 * (src/compress/prune.c) against PyTorch 1.13 torch.nn.utils.prune masks
 * (tests/gen/gen_prune.py -> tests/data/prune/golden.txt), ties included. */
#include <string.h>

#include "test.h"

#define golden_(name, v, max) sh_test_golden("tests/data/prune/golden.txt", name, v, max)
#include "compress/compress.h"


static void add_w(sh_graph *g, const char *name, int nd, const int64_t *s, const double *v)
{
    sh_tensor *t = sh_tensor_new(SH_F32, nd, s, NULL);
    int64_t n = sh_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) sh_f32(t)[i] = v ? (float)v[i] : 0.01f * (float)(i % 7);
    CHECK(sh_graph_add_init(g, name, t, NULL) >= 0);
}

/* input [-1,2,5,5] -> conv1 [6,2,3,3] -> Flatten (54) -> fc1 [20,54] -> Relu -> fc2 [10,20] */
static sh_graph *golden_net(const double *w)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("net");
    int64_t in[4] = {-1, 2, 5, 5}, cw[4] = {6, 2, 3, 3}, cb[1] = {6}, f1[2] = {20, 54}, b1[1] = {20}, f2[2] = {10, 20},
            b2[1] = {10};
    sh_graph_add_input(g, "input", SH_F32, 4, in, &err);
    add_w(g, "conv1.weight", 4, cw, w);
    add_w(g, "conv1.bias", 1, cb, NULL);
    add_w(g, "fc1.weight", 2, f1, w + 108);
    add_w(g, "fc1.bias", 1, b1, NULL);
    add_w(g, "fc2.weight", 2, f2, w + 108 + 1080);
    add_w(g, "fc2.bias", 1, b2, NULL);
    const char *ci[3] = {"input", "conv1.weight", "conv1.bias"}, *co[1] = {"c"};
    int k = sh_graph_add_node(g, "Conv", "conv1", 3, ci, 1, co, &err);
    int64_t ks[2] = {3, 3};
    sh_node_set_ints(g, k, "kernel_shape", 2, ks);
    const char *fi[1] = {"c"}, *fo[1] = {"f"};
    k = sh_graph_add_node(g, "Flatten", "flatten", 1, fi, 1, fo, &err);
    sh_node_set_int(g, k, "axis", 1);
    const char *g1[3] = {"f", "fc1.weight", "fc1.bias"}, *g1o[1] = {"h"};
    k = sh_graph_add_node(g, "Gemm", "fc1", 3, g1, 1, g1o, &err);
    sh_node_set_int(g, k, "transB", 1);
    const char *ri[1] = {"h"}, *ro[1] = {"a"};
    sh_graph_add_node(g, "Relu", "relu", 1, ri, 1, ro, &err);
    const char *g2[3] = {"a", "fc2.weight", "fc2.bias"}, *g2o[1] = {"logits"};
    k = sh_graph_add_node(g, "Gemm", "fc2", 3, g2, 1, g2o, &err);
    sh_node_set_int(g, k, "transB", 1);
    sh_graph_mark_output(g, "logits", &err);
    CHECK_OK(sh_graph_check(g, &err), &err);
    return g;
}

/* mask (1 kept, 0 pruned) of the three weights, concatenated */
static void masks_of(const sh_graph *g, double *m)
{
    const char *names[3] = {"conv1.weight", "fc1.weight", "fc2.weight"};
    int o = 0;
    for (int i = 0; i < 3; i++) {
        const sh_tensor *t = g->values[sh_graph_find(g, names[i])].init;
        for (int64_t e = 0; e < sh_tensor_numel(t); e++) m[o++] = sh_f32(t)[e] != 0.0f;
    }
}

static void check_case(const char *wname, const char *mname, int global, double ratio)
{
    static double w[1388], want[1388], got[1388];
    CHECK(golden_(wname, w, 1388) == 1388);
    CHECK(golden_(mname, want, 1388) == 1388);
    sh_graph *g = golden_net(w);
    sh_prune_opts o;
    sh_prune_opts_default(&o);
    o.ratio = ratio;
    o.global = global;
    sh_graph *p = NULL;
    sh_prune_report rep;
    sh_error err = {0};
    CHECK_OK(sh_prune(g, &o, &p, &rep, &err), &err);
    masks_of(p, got);
    int bad = 0, first = -1;
    for (int i = 0; i < 1388; i++)
        if (got[i] != want[i]) {
            bad++;
            if (first < 0) first = i;
        }
    CHECK_MSG(bad == 0, "%s: %d of 1388 mask entries differ from PyTorch (first at %d)", mname, bad, first);
    /* the input graph is untouched */
    masks_of(g, got);
    for (int i = 0; i < 1388; i++) CHECK(got[i] == 1.0);
    CHECK(rep.n_layers == 3);
    CHECK(rep.weights == 1388);
    int64_t zeros = 0;
    for (int i = 0; i < 1388; i++) zeros += want[i] == 0;
    CHECK(rep.zeros_after == zeros);
    sh_prune_report_free(&rep);
    sh_graph_free(p);
    sh_graph_free(g);
}

TEST(prune_global_l1_matches_torch)
{
    check_case("cont_w", "cont_global30", 1, 0.3);
    check_case("cont_w", "cont_global1", 1, 0.01);
    check_case("cont_w", "cont_global75", 1, 0.75);
}

TEST(prune_global_l1_ties_match_torch)
{
    /* 8 magnitude levels: the pruned set among equal |w| is torch.topk's */
    check_case("ties_w", "ties_global30", 1, 0.3);
    check_case("ties_w", "ties_global1", 1, 0.01);  /* partial_sort path (k*64 <= n) */
    check_case("ties_w", "ties_global75", 1, 0.75); /* nth_element path */
}

TEST(prune_layer_l1_matches_torch)
{
    check_case("cont_w", "cont_layer50", 0, 0.5);
    check_case("ties_w", "ties_layer50", 0, 0.5);
    /* 0.0625 * 200 = 12.5 prunes 12 (round half to even), as PyTorch */
    check_case("cont_w", "cont_layer6", 0, 0.0625);
    check_case("ties_w", "ties_layer6", 0, 0.0625);
}

TEST(prune_topk_selection_edge_cases)
{
    float s[10] = {3, 1, 1, 2, 1, 0, 5, 1, 2, 0};
    unsigned char m[10];
    CHECK(sh_select_smallest(s, 10, 0, m) == SH_OK);
    for (int i = 0; i < 10; i++) CHECK(m[i] == 0);
    CHECK(sh_select_smallest(s, 10, 10, m) == SH_OK);
    for (int i = 0; i < 10; i++) CHECK(m[i] == 1);
    CHECK(sh_select_smallest(s, 10, 3, m) == SH_OK);
    int cnt = 0;
    for (int i = 0; i < 10; i++) cnt += m[i];
    CHECK(cnt == 3);
    CHECK(m[5] && m[9]); /* both zeros are among the 3 smallest */
    CHECK(sh_prune_count(0.5, 5) == 2);   /* 2.5 -> 2 */
    CHECK(sh_prune_count(0.5, 7) == 4);   /* 3.5 -> 4 */
    CHECK(sh_prune_count(0.3, 10) == 3);
}

TEST(prune_ratio_threshold_and_options)
{
    sh_graph *g = NULL;
    sh_error err = {0};
    CHECK_OK(sh_model_build("mlp", 1, &g, &err), &err);
    sh_prune_opts o;
    sh_prune_opts_default(&o);
    sh_graph *p = NULL;
    o.ratio = 1.0;
    CHECK(sh_prune(g, &o, &p, NULL, &err) == SH_EINVAL && p == NULL);
    CHECK(strstr(err.msg, "outside [0, 1)") != NULL);
    o.ratio = -0.1;
    CHECK(sh_prune(g, &o, &p, NULL, &err) == SH_EINVAL);
    /* threshold: every |w| < t is zeroed, nothing else */
    o.ratio = 0.5;
    o.threshold = 0.01;
    sh_prune_report rep;
    CHECK_OK(sh_prune(g, &o, &p, &rep, &err), &err);
    int64_t want = 0;
    for (int v = 0; v < g->n_values; v++) {
        const sh_tensor *t = g->values[v].init;
        if (!t || t->ndim != 2) continue;
        const sh_tensor *q = p->values[sh_graph_find(p, g->values[v].name)].init;
        for (int64_t e = 0; e < sh_tensor_numel(t); e++) {
            float a = sh_f32(t)[e];
            want += fabsf(a) < 0.01f;
            CHECK(sh_f32(q)[e] == (fabsf(a) < 0.01f ? 0.0f : a));
        }
    }
    CHECK(rep.zeros_after == want);
    CHECK(rep.params_after == rep.params_before);
    sh_prune_report_free(&rep);
    sh_graph_free(p);
    /* include / exclude / skip */
    o.threshold = -1;
    o.include = "fc2";
    CHECK_OK(sh_prune(g, &o, &p, &rep, &err), &err);
    CHECK(rep.layers[0].zeros_after == 0 && rep.layers[2].zeros_after == 0);
    CHECK(rep.layers[1].zeros_after == 15000);
    CHECK_NEAR(rep.layers[1].sparsity_after, 0.5, 1e-12);
    sh_prune_report_free(&rep);
    sh_graph_free(p);
    o.include = "nope";
    CHECK(sh_prune(g, &o, &p, NULL, &err) == SH_EINVAL);
    CHECK(strstr(err.msg, "'nope'") != NULL);
    o.include = NULL;
    o.exclude = "fc1.weight";
    o.skip_last = 1;
    CHECK_OK(sh_prune(g, &o, &p, &rep, &err), &err);
    CHECK(rep.layers[0].zeros_after == 0 && rep.layers[2].zeros_after == 0 && rep.layers[1].zeros_after == 15000);
    sh_prune_report_free(&rep);
    sh_graph_free(p);
    sh_graph_free(g);
}

TEST(prune_nm_2_4_and_4_8)
{
    sh_graph *g = NULL;
    sh_error err = {0};
    CHECK_OK(sh_model_build("mlp", 2, &g, &err), &err);
    sh_prune_opts o;
    sh_prune_opts_default(&o);
    o.n = 2, o.m = 4;
    sh_graph *p = NULL;
    /* fc3 [10,100]: 100 is a multiple of 4 but not of 8 */
    CHECK_OK(sh_prune(g, &o, &p, NULL, &err), &err);
    const char *ws[3] = {"fc1.weight", "fc2.weight", "fc3.weight"};
    for (int i = 0; i < 3; i++) {
        const sh_tensor *t = g->values[sh_graph_find(g, ws[i])].init;
        const sh_tensor *q = p->values[sh_graph_find(p, ws[i])].init;
        int64_t K = t->shape[1];
        for (int64_t r = 0; r < t->shape[0]; r++)
            for (int64_t c0 = 0; c0 < K; c0 += 4) {
                const float *a = sh_f32(t) + r * K + c0, *b = sh_f32(q) + r * K + c0;
                int nz = 0;
                for (int j = 0; j < 4; j++) {
                    nz += b[j] != 0;
                    /* kept ones are unchanged and at least as large as pruned ones */
                    if (b[j] != 0) CHECK(b[j] == a[j]);
                    for (int l = 0; l < 4; l++)
                        if (b[j] != 0 && b[l] == 0) CHECK(fabsf(a[j]) >= fabsf(a[l]));
                }
                CHECK(nz == 2);
            }
    }
    sh_graph_free(p);
    o.n = 4, o.m = 8;
    o.exclude = "fc2";
    CHECK(sh_prune(g, &o, &p, NULL, &err) == SH_ESHAPE && !p);
    CHECK_MSG(strcmp(err.msg, "layer 'fc3' weight [10,100]: 4:8 needs the input dimension (100) to be a multiple of 8") == 0,
              "message: %s", err.msg);
    o.exclude = "fc2,fc3";
    sh_prune_report rep;
    CHECK_OK(sh_prune(g, &o, &p, &rep, &err), &err);
    CHECK_NEAR(rep.layers[0].sparsity_after, 0.5, 1e-9);
    CHECK(rep.layers[2].zeros_after == 0);
    /* the packed N:M tensor holds it */
    const sh_tensor *q = p->values[sh_graph_find(p, "fc1.weight")].init;
    sh_tensor *packed = NULL;
    sh_sparse_opts so = {0};
    so.n = 4, so.m = 8;
    CHECK_OK(sh_sparse_pack(SH_NM, sh_f32(q), 300, 784, &so, &packed, &err), &err);
    CHECK(packed && packed->nbytes < q->nbytes);
    sh_tensor_free(packed);
    sh_prune_report_free(&rep);
    sh_graph_free(p);
    /* lenet5 conv1 [6,1,5,5]: input dimension 25 */
    sh_graph *l = NULL;
    CHECK_OK(sh_model_build("lenet5", 1, &l, &err), &err);
    o.exclude = NULL, o.n = 2, o.m = 4;
    CHECK(sh_prune(l, &o, &p, NULL, &err) == SH_ESHAPE);
    CHECK(strstr(err.msg, "layer 'conv1' weight [6,1,5,5]: 2:4 needs the input dimension (25)") != NULL);
    sh_graph_free(l);
    o.n = 4, o.m = 4;
    CHECK(sh_prune(g, &o, &p, NULL, &err) == SH_EINVAL);
    sh_graph_free(g);
}

TEST(prune_blocks_l2)
{
    sh_graph *g = NULL;
    sh_error err = {0};
    CHECK_OK(sh_model_build("mlp", 3, &g, &err), &err);
    sh_prune_opts o;
    sh_prune_opts_default(&o);
    o.method = SH_PRUNE_L2;
    o.block = 4;
    o.ratio = 0.5;
    o.include = "fc2";
    sh_graph *p = NULL;
    CHECK_OK(sh_prune(g, &o, &p, NULL, &err), &err);
    const sh_tensor *t = g->values[sh_graph_find(g, "fc2.weight")].init;
    const sh_tensor *q = p->values[sh_graph_find(p, "fc2.weight")].init;
    /* whole blocks are zero or intact; every pruned block's norm <= every kept one's */
    double maxp = 0, mink = 1e30;
    int64_t pruned = 0;
    for (int64_t b = 0; b < 100 * 75; b++) {
        const float *a = sh_f32(t) + b * 4, *c = sh_f32(q) + b * 4;
        int z = 0;
        double nrm = 0;
        for (int j = 0; j < 4; j++) z += c[j] == 0, nrm += (double)a[j] * a[j];
        CHECK(z == 0 || z == 4);
        if (z == 4) pruned++, maxp = fmax(maxp, nrm);
        else mink = fmin(mink, nrm);
    }
    CHECK(pruned == 3750);
    CHECK(maxp <= mink);
    sh_graph_free(p);
    sh_graph_free(g);
}

TEST(prune_taylor_scores_match_torch)
{
    double x[96], y[8], w1[96], b1[8], w2[24], b2[3], s1[96], s2[24];
    golden_("ty_x", x, 96);
    golden_("ty_y", y, 8);
    golden_("ty_fc1_w", w1, 96);
    golden_("ty_fc1_b", b1, 8);
    golden_("ty_fc2_w", w2, 24);
    golden_("ty_fc2_b", b2, 3);
    golden_("ty_s1", s1, 96);
    golden_("ty_s2", s2, 24);
    sh_error err = {0};
    sh_graph *g = sh_graph_new("t");
    int64_t in[4] = {-1, 1, 3, 4}, a1[2] = {8, 12}, c1[1] = {8}, a2[2] = {3, 8}, c2[1] = {3};
    sh_graph_add_input(g, "input", SH_F32, 4, in, &err);
    add_w(g, "fc1.weight", 2, a1, w1);
    add_w(g, "fc1.bias", 1, c1, b1);
    add_w(g, "fc2.weight", 2, a2, w2);
    add_w(g, "fc2.bias", 1, c2, b2);
    const char *fi[1] = {"input"}, *fo[1] = {"f"};
    int k = sh_graph_add_node(g, "Flatten", "flatten", 1, fi, 1, fo, &err);
    sh_node_set_int(g, k, "axis", 1);
    const char *g1[3] = {"f", "fc1.weight", "fc1.bias"}, *g1o[1] = {"h"};
    k = sh_graph_add_node(g, "Gemm", "fc1", 3, g1, 1, g1o, &err);
    sh_node_set_int(g, k, "transB", 1);
    const char *ri[1] = {"h"}, *ro[1] = {"a"};
    sh_graph_add_node(g, "Relu", "relu", 1, ri, 1, ro, &err);
    const char *g2[3] = {"a", "fc2.weight", "fc2.bias"}, *g2o[1] = {"logits"};
    k = sh_graph_add_node(g, "Gemm", "fc2", 3, g2, 1, g2o, &err);
    sh_node_set_int(g, k, "transB", 1);
    sh_graph_mark_output(g, "logits", &err);
    CHECK_OK(sh_graph_check(g, &err), &err);
    float xf[96];
    int32_t yi[8];
    for (int i = 0; i < 96; i++) xf[i] = (float)x[i];
    for (int i = 0; i < 8; i++) yi[i] = (int32_t)y[i];
    sh_dataset d = {0};
    d.kind = 1, d.n = 8, d.c = 1, d.h = 3, d.w = 4, d.x = xf, d.y = yi, d.n_classes = 3;
    sh_prune_opts o;
    sh_prune_opts_default(&o);
    o.method = SH_PRUNE_TAYLOR;
    o.calib = &d;
    o.batch = 4;
    o.calib_batches = 2;
    o.nthreads = 1;
    sh_layer *L = NULL;
    int n = 0;
    CHECK_OK(sh_prunable_layers(g, &L, &n, &err), &err);
    CHECK(n == 2);
    float *sc[2] = {0};
    CHECK_OK(sh_taylor_scores(g, L, n, &o, sc, &err), &err);
    for (int i = 0; i < 96; i++) CHECK_NEAR(sc[0][i], s1[i], 1e-6 + 1e-4 * s1[i]);
    for (int i = 0; i < 24; i++) CHECK_NEAR(sc[1][i], s2[i], 1e-6 + 1e-4 * s2[i]);
    /* pruning by Taylor score zeroes the smallest scores of each layer */
    sh_graph *p = NULL;
    o.ratio = 0.25;
    CHECK_OK(sh_prune(g, &o, &p, NULL, &err), &err);
    const sh_tensor *q = p->values[sh_graph_find(p, "fc1.weight")].init;
    int z = 0;
    float maxz = 0, mink = 1e30f;
    for (int i = 0; i < 96; i++) {
        if (sh_f32(q)[i] == 0) z++, maxz = fmaxf(maxz, sc[0][i]);
        else mink = fminf(mink, sc[0][i]);
    }
    CHECK(z == 24);
    CHECK(maxz <= mink);
    /* Taylor without data is an error; BN statistics of the input graph stay */
    o.calib = NULL;
    CHECK(sh_prune(g, &o, &p, NULL, &err) == SH_EINVAL);
    sh_graph_free(p);
    free(sc[0]);
    free(sc[1]);
    free(L);
    sh_graph_free(g);
}

TEST(prune_channels_match_torch_ln_structured)
{
    /* torch.nn.utils.prune.ln_structured(conv1, amount=0.5, n=1|2, dim=0) */
    static double w[1388];
    double keep[6];
    for (int i = 0; i < 1388; i++) w[i] = 0.01 * ((i * 37) % 11 - 5);
    CHECK(golden_("ln_w", w, 108) == 108);
    const char *tags[2] = {"ln_l1", "ln_l2"};
    for (int t = 0; t < 2; t++) {
        CHECK(golden_(tags[t], keep, 6) == 6);
        sh_graph *g = golden_net(w);
        sh_prune_opts o;
        sh_prune_opts_default(&o);
        o.method = t ? SH_PRUNE_L2 : SH_PRUNE_L1;
        o.include = "conv1";
        sh_graph *p = NULL;
        sh_error err = {0};
        CHECK_OK(sh_prune_channels(g, &o, &p, NULL, &err), &err);
        if (!p) continue;
        const sh_tensor *a = g->values[sh_graph_find(g, "conv1.weight")].init;
        const sh_tensor *b = p->values[sh_graph_find(p, "conv1.weight")].init;
        CHECK(b->shape[0] == 3);
        int j = 0;
        for (int c = 0; c < 6 && b->shape[0] == 3; c++)
            if (keep[c] == 1.0) {
                CHECK(memcmp(sh_f32(a) + c * 18, sh_f32(b) + j * 18, 18 * sizeof(float)) == 0);
                j++;
            }
        CHECK(j == 3);
        /* Flatten: fc1 lost conv1's 3 channels x 3*3 columns */
        const sh_tensor *f = p->values[sh_graph_find(p, "fc1.weight")].init;
        CHECK(f->shape[0] == 20 && f->shape[1] == 27);
        sh_graph_free(p);
        sh_graph_free(g);
    }
}
