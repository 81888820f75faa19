/* test_prune_schedule.c - pruning with fine-tuning (src/compress/
 * prune_schedule.c) and the training engine's masks and L1 term
 * (src/train/train.c): masked AdamW and L1-regularised SGD against PyTorch
 * 1.13 (tests/gen/gen_prune_schedule.py -> tests/data/prune_schedule/
 * golden.txt), masks that hold exactly (unstructured, N:M, accumulation),
 * the gradual cubic schedule step by step, iterative structured pruning,
 * the L1 schedule, distillation during fine-tuning, bad input, and a short
 * Fashion-MNIST run. */
#include <string.h>

#include "test.h"

#define golden_(name, v, max) sh_test_golden("tests/data/prune_schedule/golden.txt", name, v, max)
#include "compress/compress.h"


static void add_w(sh_graph *g, const char *name, int nd, const int64_t *s, const char *key)
{
    sh_tensor *t = sh_tensor_new(SH_F32, nd, s, NULL);
    int64_t n = sh_tensor_numel(t);
    double v[64];
    CHECK(golden_(key, v, 64) == n);
    for (int64_t i = 0; i < n; i++) sh_f32(t)[i] = (float)v[i];
    CHECK(sh_graph_add_init(g, name, t, NULL) >= 0);
}

/* input [-1,1,2,4] -> Flatten -> fc1 Gemm [6,8] -> Relu -> fc2 Gemm [3,6] */
static sh_graph *tiny_net(void)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("tiny");
    int64_t in[4] = {-1, 1, 2, 4}, w1[2] = {6, 8}, b1[1] = {6}, w2[2] = {3, 6}, b2[1] = {3};
    sh_graph_add_input(g, "input", SH_F32, 4, in, &err);
    add_w(g, "fc1.weight", 2, w1, "w1");
    add_w(g, "fc1.bias", 1, b1, "b1");
    add_w(g, "fc2.weight", 2, w2, "w2");
    add_w(g, "fc2.bias", 1, b2, "b2");
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
    return g;
}

static sh_dataset *tiny_data(void)
{
    sh_dataset *d = calloc(1, sizeof *d);
    double x[128], y[16];
    CHECK(golden_("x", x, 128) == 128);
    CHECK(golden_("y", y, 16) == 16);
    d->kind = 1;
    d->n = 16;
    d->c = 1, d->h = 2, d->w = 4;
    d->n_classes = 3;
    d->x = malloc(sizeof(float) * 128);
    d->y = malloc(sizeof(int32_t) * 16);
    for (int i = 0; i < 128; i++) d->x[i] = (float)x[i];
    for (int i = 0; i < 16; i++) d->y[i] = (int32_t)y[i];
    d->desc = strdup("tiny");
    return d;
}

static const sh_tensor *init_of(const sh_graph *g, const char *name)
{
    for (int i = 0; i < g->n_values; i++)
        if (g->values[i].init && !strcmp(g->values[i].name, name)) return g->values[i].init;
    return NULL;
}

/* max |g's tensor - golden| */
static double golden_diff(const sh_graph *g, const char *name, const char *key)
{
    const sh_tensor *t = init_of(g, name);
    double v[64];
    int n = golden_(key, v, 64);
    if (!t || n != sh_tensor_numel(t)) {
        sh_test_fail(__FILE__, __LINE__, "%s: %d golden values", name, n);
        return 1e9;
    }
    double m = 0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs(sh_f32(t)[i] - v[i]));
    return m;
}

static int64_t zeros_of(const sh_tensor *t)
{
    int64_t z = 0;
    for (int64_t i = 0; i < sh_tensor_numel(t); i++) z += sh_f32(t)[i] == 0.0f;
    return z;
}

/* A: per-layer L1 50 % masks, 3 AdamW steps with weight decay = torch with
 * torch.nn.utils.prune masks; without keep_zeros the pruned weights move */
TEST(prune_train_masked_adamw_matches_torch)
{
    sh_error err = {0};
    sh_graph *g = tiny_net(), *p = NULL, *q = NULL;
    sh_dataset *d = tiny_data();
    sh_prune_opts po;
    sh_prune_opts_default(&po);
    po.ratio = 0.5;
    CHECK_OK(sh_prune(g, &po, &p, NULL, &err), &err);
    sh_train_opts o;
    sh_train_opts_default(&o);
    o.optimizer = "adamw";
    o.lr = 0.05f;
    o.weight_decay = 0.1f;
    o.batch = 16;
    o.epochs = 3;
    o.nthreads = 1;
    o.keep_zeros = 1;
    q = sh_graph_clone(p, &err);
    CHECK_OK(sh_train(p, d, NULL, &o, NULL, &err), &err);
    CHECK_NEAR(golden_diff(p, "fc1.weight", "adamw_mask_w1"), 0, 2e-6);
    CHECK_NEAR(golden_diff(p, "fc1.bias", "adamw_mask_b1"), 0, 2e-6);
    CHECK_NEAR(golden_diff(p, "fc2.weight", "adamw_mask_w2"), 0, 2e-6);
    CHECK_NEAR(golden_diff(p, "fc2.bias", "adamw_mask_b2"), 0, 2e-6);
    CHECK(zeros_of(init_of(p, "fc1.weight")) == 24 && zeros_of(init_of(p, "fc2.weight")) == 9);
    /* the same through sh_prune_train (oneshot) */
    sh_prune_train_opts pt;
    sh_prune_train_opts_default(&pt);
    pt.prune = po;
    pt.train = o;
    pt.train.keep_zeros = 0; /* set by sh_prune_train */
    sh_graph *r = NULL;
    sh_prune_report rep;
    sh_train_report tr;
    CHECK_OK(sh_prune_train(g, d, NULL, &pt, &r, &rep, &tr, &err), &err);
    CHECK_NEAR(golden_diff(r, "fc1.weight", "adamw_mask_w1"), 0, 2e-6);
    CHECK_NEAR(golden_diff(r, "fc2.weight", "adamw_mask_w2"), 0, 2e-6);
    CHECK(tr.steps == 3);
    CHECK(rep.n_layers == 2 && rep.zeros_before == 0 && rep.zeros_after == 33 && rep.weights == 66);
    CHECK(rep.layers[0].pruned && rep.layers[1].pruned);
    CHECK(init_of(g, "fc1.weight")->data != init_of(r, "fc1.weight")->data);
    CHECK(zeros_of(init_of(g, "fc1.weight")) == 0); /* g unchanged */
    sh_prune_report_free(&rep);
    /* control: without masks pruned weights with a gradient come back
     * (those of dead ReLU units have none and only decay) */
    o.keep_zeros = 0;
    CHECK_OK(sh_train(q, d, NULL, &o, NULL, &err), &err);
    CHECK(zeros_of(init_of(q, "fc1.weight")) < 20);
    CHECK(golden_diff(q, "fc1.weight", "adamw_mask_w1") > 1e-3);
    sh_graph_free(g);
    sh_graph_free(p);
    sh_graph_free(q);
    sh_graph_free(r);
    sh_dataset_free(d);
}

/* B: l1 * sign(w) added to the weights' gradients = torch with
 * loss + l1 * sum |W| (SGD with momentum) */
TEST(prune_train_l1_gradient_matches_torch)
{
    sh_error err = {0};
    sh_graph *g = tiny_net();
    sh_dataset *d = tiny_data();
    sh_train_opts o;
    sh_train_opts_default(&o);
    o.optimizer = "sgd";
    o.lr = 0.1f;
    o.momentum = 0.9f;
    o.batch = 16;
    o.epochs = 3;
    o.nthreads = 1;
    o.l1 = 0.01f;
    CHECK_OK(sh_train(g, d, NULL, &o, NULL, &err), &err);
    CHECK_NEAR(golden_diff(g, "fc1.weight", "sgd_l1_w1"), 0, 2e-6);
    CHECK_NEAR(golden_diff(g, "fc1.bias", "sgd_l1_b1"), 0, 2e-6);
    CHECK_NEAR(golden_diff(g, "fc2.weight", "sgd_l1_w2"), 0, 2e-6);
    CHECK_NEAR(golden_diff(g, "fc2.bias", "sgd_l1_b2"), 0, 2e-6);
    o.l1 = -1;
    CHECK(sh_train(g, d, NULL, &o, NULL, &err) == SH_EINVAL && strstr(err.msg, "L1"));
    sh_graph_free(g);
    sh_dataset_free(d);
}

/* ---- larger cases on synthetic images --------------------------------- */


static sh_graph *model(const char *kind)
{
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build(kind, 7, &g, &err), &err);
    return g;
}

/* 1 where a prunable layer's weight is zero, concatenated in layer order */
static unsigned char *zero_pattern(const sh_graph *g, int64_t *n, int64_t *zeros)
{
    sh_layer *L = NULL;
    int nl = 0;
    sh_error err = {0};
    CHECK_OK(sh_prunable_layers(g, &L, &nl, &err), &err);
    int64_t tot = 0;
    for (int i = 0; i < nl; i++) tot += sh_tensor_numel(g->values[L[i].wv].init);
    unsigned char *m = malloc((size_t)tot + 1);
    int64_t off = 0, z = 0;
    for (int i = 0; i < nl; i++) {
        const sh_tensor *t = g->values[L[i].wv].init;
        for (int64_t j = 0; j < sh_tensor_numel(t); j++) {
            m[off + j] = sh_f32(t)[j] == 0.0f;
            z += m[off + j];
        }
        off += sh_tensor_numel(t);
    }
    free(L);
    *n = tot;
    *zeros = z;
    return m;
}

static sh_train_opts quick_train(void)
{
    sh_train_opts o;
    sh_train_opts_default(&o);
    o.batch = 32;
    o.epochs = 1;
    o.lr = 3e-3f;
    o.nthreads = 2;
    return o;
}

/* the zero set after fine-tuning is exactly the one after pruning (global
 * 80 %, AdamW with weight decay, gradient accumulation; SGD with Nesterov);
 * the weights that are left do train */
TEST(prune_train_masks_hold_exactly)
{
    sh_error err = {0};
    sh_dataset *d = sh_test_synth_images(320, 3);
    const char *optim[2] = {"adamw", "sgd"};
    for (int k = 0; k < 2; k++) {
        sh_graph *g = model("mlp"), *p = NULL;
        sh_prune_train_opts pt;
        sh_prune_train_opts_default(&pt);
        pt.prune.ratio = 0.8;
        pt.prune.global = 1;
        pt.train = quick_train();
        pt.train.optimizer = optim[k];
        if (k == 1) pt.train.lr = 0.05f;
        pt.train.weight_decay = 0.05f;
        pt.train.nesterov = k == 1;
        pt.train.accum = k == 0 ? 2 : 1;
        pt.train.batch = k == 0 ? 16 : 32;
        pt.train.epochs = 2;
        sh_graph *once = NULL;
        CHECK_OK(sh_prune(g, &pt.prune, &once, NULL, &err), &err);
        int64_t n0, z0, n1, z1;
        unsigned char *m0 = zero_pattern(once, &n0, &z0);
        sh_train_report tr;
        CHECK_OK(sh_prune_train(g, d, d, &pt, &p, NULL, &tr, &err), &err);
        unsigned char *m1 = zero_pattern(p, &n1, &z1);
        CHECK(n0 == n1 && z0 == sh_prune_count(0.8, n0));
        CHECK_MSG(z1 == z0 && !memcmp(m0, m1, (size_t)n0), "%s: %lld zeros after pruning, %lld after fine-tuning",
                  optim[k], (long long)z0, (long long)z1);
        /* kept weights changed */
        int64_t moved = 0;
        for (int i = 0; i < p->n_values; i++) {
            const sh_tensor *a = once->values[i].init, *b = p->values[i].init;
            if (!a || a->fmt != SH_F32 || a->ndim < 2) continue;
            for (int64_t j = 0; j < sh_tensor_numel(a); j++) moved += sh_f32(a)[j] != sh_f32(b)[j];
        }
        CHECK_MSG(moved > (n0 - z0) / 2, "%s: only %lld of %lld kept weights moved", optim[k], (long long)moved,
                  (long long)(n0 - z0));
        CHECK_MSG(tr.val_metric > (k ? 0.6 : 0.8), "%s: accuracy %.3f after fine-tuning at 80 %%", optim[k], tr.val_metric);
        free(m0);
        free(m1);
        sh_graph_free(g);
        sh_graph_free(p);
        sh_graph_free(once);
    }
    sh_dataset_free(d);
}

/* 2:4 stays 2:4 through fine-tuning (every group of 4 along the input
 * dimension has at most 2 non-zeros), with the l1 schedule too */
TEST(prune_train_nm_stays_nm)
{
    sh_error err = {0};
    sh_dataset *d = sh_test_synth_images(320, 4);
    for (int sched = 0; sched < 2; sched++) {
        sh_graph *g = model("mlp"), *p = NULL;
        sh_prune_train_opts pt;
        sh_prune_train_opts_default(&pt);
        pt.prune.n = 2, pt.prune.m = 4;
        pt.schedule = sched ? SH_PRUNE_SCHED_L1 : SH_PRUNE_SCHED_ONESHOT;
        pt.l1 = 1e-4f;
        pt.train = quick_train();
        pt.train.weight_decay = 0.01f;
        sh_prune_report rep;
        CHECK_OK(sh_prune_train(g, d, NULL, &pt, &p, &rep, NULL, &err), &err);
        sh_layer *L = NULL;
        int nl = 0;
        CHECK_OK(sh_prunable_layers(p, &L, &nl, &err), &err);
        CHECK(nl == 3);
        int64_t bad = 0, groups = 0;
        for (int i = 0; i < nl; i++) {
            const float *w = sh_f32(p->values[L[i].wv].init);
            for (int64_t r = 0; r < L[i].rows; r++)
                for (int64_t c = 0; c < L[i].cols; c += 4) {
                    int nz = 0;
                    for (int j = 0; j < 4; j++) nz += w[sh_layer_at(&L[i], r, c + j)] != 0.0f;
                    bad += nz > 2;
                    groups++;
                }
        }
        CHECK_MSG(bad == 0, "schedule %d: %lld of %lld groups of 4 have more than 2 non-zeros", sched, (long long)bad,
                  (long long)groups);
        CHECK(rep.zeros_after == rep.weights / 2);
        free(L);
        sh_prune_report_free(&rep);
        sh_graph_free(g);
        sh_graph_free(p);
    }
    sh_dataset_free(d);
}

/* gradual: the sparsity after every step follows Zhu & Gupta's cubic
 * schedule, pruned every `every` steps from begin to end */
typedef struct watch {
    int64_t n;
    double sp[64];
    int64_t steps;
} watch;

static int watch_step(void *ctx, sh_graph *g, int64_t step, int64_t total, int *remask, sh_error *err)
{
    watch *w = ctx;
    int64_t n, z;
    unsigned char *m = zero_pattern(g, &n, &z);
    free(m);
    if (step < 64) w->sp[step] = (double)z / (double)n;
    w->n = n;
    w->steps = total;
    return SH_OK;
}

TEST(prune_train_gradual_cubic_schedule)
{
    sh_error err = {0};
    sh_dataset *d = sh_test_synth_images(320, 5);
    sh_graph *g = model("mlp"), *p = NULL;
    sh_prune_train_opts pt;
    sh_prune_train_opts_default(&pt);
    pt.schedule = SH_PRUNE_SCHED_GRADUAL;
    pt.prune.ratio = 0.9;
    pt.prune.global = 1;
    pt.initial_sparsity = 0.1;
    pt.begin = 0.1;
    pt.end = 0.6;
    pt.every = 2;
    pt.train = quick_train();
    pt.train.epochs = 2; /* 20 steps: pruning at 2, 4, ..., 12 */
    watch w = {0};
    pt.train.step_fn = watch_step;
    pt.train.step_ctx = &w;
    sh_train_report tr;
    CHECK_OK(sh_prune_train(g, d, d, &pt, &p, NULL, &tr, &err), &err);
    CHECK(w.steps == 20 && tr.steps == 20);
    for (int t = 1; t <= 20; t++) {
        int e = t < 2 ? -1 : t > 12 ? 12 : t - t % 2; /* last pruning step */
        double s = e < 0 ? 0 : 0.9 + (0.1 - 0.9) * pow(1.0 - (e - 2) / 10.0, 3);
        double want = (double)sh_prune_count(s, w.n) / (double)w.n;
        CHECK_MSG(fabs(w.sp[t] - want) < 1e-12, "step %d: sparsity %.6f, want %.6f", t, w.sp[t], want);
    }
    int64_t n, z;
    free(zero_pattern(p, &n, &z));
    CHECK(z == sh_prune_count(0.9, n));
    CHECK_MSG(tr.val_metric > 0.7, "accuracy %.3f after gradual pruning to 90 %%", tr.val_metric);
    sh_graph_free(g);
    sh_graph_free(p);
    sh_dataset_free(d);
}

/* iterative structured: 2 rounds of channel removal with fine-tuning reach
 * the same shapes as one-shot 50 % (lenet5: 61706 -> 15738 parameters) */
TEST(prune_train_iterative_structured)
{
    sh_error err = {0};
    sh_dataset *d = sh_test_synth_images(320, 6);
    sh_graph *g = model("lenet5"), *p = NULL;
    sh_prune_train_opts pt;
    sh_prune_train_opts_default(&pt);
    pt.schedule = SH_PRUNE_SCHED_ITERATIVE;
    pt.rounds = 2;
    pt.structured = 1;
    pt.prune.ratio = 0.5;
    pt.train = quick_train();
    pt.train.lr = 5e-3f;
    sh_prune_report rep;
    sh_train_report tr;
    CHECK_OK(sh_prune_train(g, d, d, &pt, &p, &rep, &tr, &err), &err);
    CHECK_MSG(rep.params_before == 61706 && rep.params_after == 15738, "params %lld -> %lld",
              (long long)rep.params_before, (long long)rep.params_after);
    CHECK(sh_graph_param_count(p) == 15738);
    CHECK(tr.steps == 20);
    CHECK_MSG(tr.val_metric > 0.6, "accuracy %.3f", tr.val_metric);
    int fc3 = -1;
    for (int i = 0; i < rep.n_layers; i++)
        if (!strcmp(rep.layers[i].name, "fc3")) fc3 = i;
    CHECK(fc3 >= 0 && strstr(rep.layers[fc3].note, "graph output") && rep.layers[fc3].shape_after[0] == 10);
    sh_prune_report_free(&rep);
    sh_graph_free(p);
    /* unstructured iterative: 3 rounds to 70 % per layer */
    pt.structured = 0;
    pt.rounds = 3;
    pt.prune.ratio = 0.7;
    CHECK_OK(sh_prune_train(g, d, NULL, &pt, &p, &rep, &tr, &err), &err);
    for (int i = 0; i < rep.n_layers; i++) {
        int64_t n = rep.layers[i].params_after - rep.layers[i].shape_after[0]; /* weight = params - bias */
        CHECK_MSG(rep.layers[i].zeros_after == sh_prune_count(0.7, n), "%s: %lld zeros of %lld", rep.layers[i].name,
                  (long long)rep.layers[i].zeros_after, (long long)n);
    }
    CHECK(tr.steps == 30);
    sh_prune_report_free(&rep);
    sh_graph_free(p);
    sh_graph_free(g);
    sh_dataset_free(d);
}

/* fine-tuning with the unpruned model as teacher (sh_distill): masks hold */
TEST(prune_train_with_teacher)
{
    sh_error err = {0};
    sh_dataset *d = sh_test_synth_images(320, 7);
    sh_graph *g = model("mlp"), *p = NULL;
    sh_prune_train_opts pt;
    sh_prune_train_opts_default(&pt);
    pt.prune.ratio = 0.7;
    pt.train = quick_train();
    pt.teacher = g;
    sh_train_report tr;
    CHECK_OK(sh_prune_train(g, d, d, &pt, &p, NULL, &tr, &err), &err);
    int64_t n, z;
    free(zero_pattern(p, &n, &z));
    CHECK(z == sh_prune_count(0.7, 235200) + sh_prune_count(0.7, 30000) + sh_prune_count(0.7, 1000));
    CHECK(tr.steps == 10 && isfinite(tr.final_loss));
    sh_graph_free(p);
    /* a teacher that does not fit the data: an error naming the teacher */
    sh_graph *t = tiny_net();
    pt.teacher = t;
    CHECK(sh_prune_train(g, d, NULL, &pt, &p, NULL, NULL, &err) != SH_OK && !p);
    CHECK_MSG(strstr(err.msg, "teacher"), "%s", err.msg);
    sh_graph_free(t);
    sh_graph_free(g);
    sh_dataset_free(d);
}

TEST(prune_train_bad_input)
{
    sh_error err = {0};
    sh_dataset *d = sh_test_synth_images(64, 8);
    sh_graph *g = model("lenet5"), *p = (sh_graph *)1;
    sh_prune_train_opts pt;
    sh_prune_train_opts_default(&pt);
    pt.train = quick_train();
#define REFUSE(code, text)                                                                                   \
    do {                                                                                                     \
        p = (sh_graph *)1;                                                                                   \
        int _rc = sh_prune_train(g, d, NULL, &pt, &p, NULL, NULL, &err);                                     \
        CHECK_MSG(_rc == (code) && !p && strstr(err.msg, text), "rc %d, want %d; '%s' lacks '%s'", _rc, code, \
                  err.msg, text);                                                                            \
        sh_prune_train_opts_default(&pt);                                                                    \
        pt.train = quick_train();                                                                            \
    } while (0)
    pt.prune.ratio = 1.0;
    REFUSE(SH_EINVAL, "outside [0, 1)");
    pt.prune.ratio = -0.1;
    REFUSE(SH_EINVAL, "outside [0, 1)");
    pt.prune.n = 2, pt.prune.m = 8; /* conv1 has 25 inputs per filter */
    REFUSE(SH_ESHAPE, "2:8 needs the input dimension (25) to be a multiple of 8");
    pt.structured = 1, pt.prune.ratio = 0.95; /* 6 filters of conv1: all would go */
    REFUSE(SH_EINVAL, "every");
    sh_prune_report rep;
    p = (sh_graph *)1;
    CHECK(sh_prune_train(g, NULL, NULL, &pt, &p, &rep, NULL, &err) == SH_EINVAL && !p && rep.n_layers == 0);
    CHECK_MSG(strstr(err.msg, "needs training data"), "%s", err.msg);
    pt.schedule = SH_PRUNE_SCHED_GRADUAL, pt.prune.n = 2, pt.prune.m = 4;
    REFUSE(SH_EINVAL, "one sparsity");
    pt.schedule = SH_PRUNE_SCHED_GRADUAL, pt.structured = 1;
    REFUSE(SH_EINVAL, "keeps shapes");
    pt.schedule = SH_PRUNE_SCHED_GRADUAL, pt.end = 1.5;
    REFUSE(SH_EINVAL, "begin <= end <= 1");
    pt.schedule = SH_PRUNE_SCHED_ITERATIVE, pt.rounds = 0;
    REFUSE(SH_EINVAL, "0 rounds");
    pt.schedule = SH_PRUNE_SCHED_L1, pt.l1 = 0;
    REFUSE(SH_EINVAL, "L1 regularisation 0");
    pt.schedule = 9;
    REFUSE(SH_EINVAL, "schedule 9 unknown");
    /* epochs 0: pruning only, no data needed */
    pt.train.epochs = 0;
    pt.prune.ratio = 0.5;
    CHECK_OK(sh_prune_train(g, NULL, NULL, &pt, &p, NULL, NULL, &err), &err);
    sh_graph_free(p);
#undef REFUSE
    sh_graph_free(g);
    sh_dataset_free(d);
}

/* Fashion-MNIST slice: lenet5 trained briefly, pruned to 90 % (global),
 * fine-tuned one epoch: sparsity exact, accuracy recovers */
TEST(prune_train_fashion_subset)
{
    if (sh_test_quick()) SKIP("long test");
    FILE *f = fopen("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", "rb");
    if (!f) SKIP("Fashion-MNIST not installed");
    fclose(f);
    sh_error err = {0};
    sh_dataset *tr = NULL, *te = NULL;
    CHECK_OK(sh_dataset_load("fashion-mnist:train:2000", &tr, &err), &err);
    CHECK_OK(sh_dataset_load("fashion-mnist:test:1000", &te, &err), &err);
    sh_graph *g = model("lenet5"), *once = NULL, *p = NULL;
    sh_train_opts o = quick_train();
    o.epochs = 2;
    CHECK_OK(sh_train(g, tr, NULL, &o, NULL, &err), &err);
    sh_eval_report dense, pruned, tuned;
    CHECK_OK(sh_eval(g, te, 2, 0, &dense, &err), &err);
    sh_prune_train_opts pt;
    sh_prune_train_opts_default(&pt);
    pt.prune.ratio = 0.9;
    pt.prune.global = 1;
    pt.train = quick_train();
    CHECK_OK(sh_prune(g, &pt.prune, &once, NULL, &err), &err);
    CHECK_OK(sh_eval(once, te, 2, 0, &pruned, &err), &err);
    CHECK_OK(sh_prune_train(g, tr, NULL, &pt, &p, NULL, NULL, &err), &err);
    CHECK_OK(sh_eval(p, te, 2, 0, &tuned, &err), &err);
    int64_t n, z;
    free(zero_pattern(p, &n, &z));
    CHECK(z == sh_prune_count(0.9, n));
    fprintf(stderr, "    lenet5, 2000 images: dense %.3f, 90 %% pruned %.3f, fine-tuned 1 epoch %.3f\n", dense.accuracy,
            pruned.accuracy, tuned.accuracy);
    CHECK_MSG(dense.accuracy > 0.6, "dense accuracy %.3f", dense.accuracy);
    CHECK_MSG(tuned.accuracy > pruned.accuracy + 0.02 && tuned.accuracy > dense.accuracy - 0.1,
              "fine-tuned %.3f, pruned %.3f, dense %.3f", tuned.accuracy, pruned.accuracy, dense.accuracy);
    sh_graph_free(g);
    sh_graph_free(once);
    sh_graph_free(p);
    sh_dataset_free(tr);
    sh_dataset_free(te);
}
