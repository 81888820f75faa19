/* test_train.c - losses, optimizers and schedules against PyTorch 1.13
 * golden values (tests/gen/gen_train.py -> tests/data/train/golden.txt),
 * built-in models, determinism, gradient accumulation, checkpoint resume and
 * a short real training run. */
#include <string.h>

#include "test.h"
#include "ops/ops.h"

/* ---- golden file ------------------------------------------------------ */

static int golden(const char *name, double *v, int max)
{
    FILE *f = fopen("tests/data/train/golden.txt", "r");
    if (!f) {
        sh_test_fail(__FILE__, __LINE__, "cannot open tests/data/train/golden.txt (run from the repo root)");
        return 0;
    }
    char key[64];
    int n, found = 0;
    while (fscanf(f, "%63s %d", key, &n) == 2) {
        int want = strcmp(key, name) == 0;
        for (int i = 0; i < n; i++) {
            double x;
            if (fscanf(f, "%lf", &x) != 1) break;
            if (want && i < max) v[i] = x;
        }
        if (want) {
            found = n;
            break;
        }
    }
    fclose(f);
    if (!found) sh_test_fail(__FILE__, __LINE__, "golden value '%s' missing", name);
    return found;
}

static void to_f(const double *d, float *f, int n)
{
    for (int i = 0; i < n; i++) f[i] = (float)d[i];
}

TEST(train_loss_xent_golden)
{
    double x[20], y[4], l[1], g[20];
    float xf[20], gf[20];
    int32_t yi[4];
    golden("xent_x", x, 20);
    golden("xent_y", y, 4);
    to_f(x, xf, 20);
    for (int i = 0; i < 4; i++) yi[i] = (int32_t)y[i];
    golden("xent_loss", l, 1);
    golden("xent_grad", g, 20);
    CHECK_NEAR(sh_loss_xent(xf, yi, 4, 5, 0.0f, 1.0f, gf), l[0], 1e-6);
    for (int i = 0; i < 20; i++) CHECK_NEAR(gf[i], g[i], 1e-6);
    golden("xent_ls_loss", l, 1);
    golden("xent_ls_grad", g, 20);
    CHECK_NEAR(sh_loss_xent(xf, yi, 4, 5, 0.1f, 1.0f, gf), l[0], 1e-6);
    for (int i = 0; i < 20; i++) CHECK_NEAR(gf[i], g[i], 1e-6);
    /* scale multiplies the gradient only */
    CHECK_NEAR(sh_loss_xent(xf, yi, 4, 5, 0.1f, 0.5f, gf), l[0], 1e-6);
    for (int i = 0; i < 20; i++) CHECK_NEAR(gf[i], 0.5 * g[i], 1e-6);
}

TEST(train_loss_lm_xent_golden)
{
    double x[36], y[6], l[1], g[36];
    float xf[36], gf[36];
    int32_t yi[6];
    golden("lm_x", x, 36);
    golden("lm_y", y, 6);
    golden("lm_loss", l, 1);
    golden("lm_grad", g, 36);
    to_f(x, xf, 36);
    for (int i = 0; i < 6; i++) yi[i] = (int32_t)y[i];
    CHECK_NEAR(sh_loss_xent(xf, yi, 6, 6, 0.0f, 1.0f, gf), l[0], 1e-6);
    for (int i = 0; i < 36; i++) CHECK_NEAR(gf[i], g[i], 1e-6);
}

TEST(train_loss_kl_mse_golden)
{
    double s[12], t[12], l[1], g[12];
    float sf[12], tf[12], gf[12];
    golden("kl_s", s, 12);
    golden("kl_t", t, 12);
    golden("kl_loss", l, 1);
    golden("kl_grad", g, 12);
    to_f(s, sf, 12);
    to_f(t, tf, 12);
    CHECK_NEAR(sh_loss_kl(sf, tf, 3, 4, 2.0f, 1.0f, gf), l[0], 1e-6);
    for (int i = 0; i < 12; i++) CHECK_NEAR(gf[i], g[i], 1e-6);
    CHECK_NEAR(sh_loss_kl(sf, sf, 3, 4, 2.0f, 1.0f, gf), 0.0, 1e-9);
    double a[7], b[7];
    float af[7], bf[7], df[7];
    golden("mse_a", a, 7);
    golden("mse_b", b, 7);
    golden("mse_loss", l, 1);
    golden("mse_grad", g, 7);
    to_f(a, af, 7);
    to_f(b, bf, 7);
    CHECK_NEAR(sh_loss_mse(af, bf, 7, 1.0f, df), l[0], 1e-6);
    for (int i = 0; i < 7; i++) CHECK_NEAR(df[i], g[i], 1e-6);
}

/* finite-difference check of the cross-entropy gradient with smoothing */
TEST(train_loss_xent_finite_difference)
{
    float x[12] = {0.3f, -1.2f, 2.0f, 0.1f, 1.5f, 0.2f, -0.7f, 0.9f, -2.0f, 0.0f, 0.4f, 1.1f}, g[12];
    int32_t y[3] = {2, 0, 3};
    sh_loss_xent(x, y, 3, 4, 0.2f, 1.0f, g);
    for (int i = 0; i < 12; i++) {
        float s = x[i], h = 1e-3f;
        x[i] = s + h;
        double lp = sh_loss_xent(x, y, 3, 4, 0.2f, 1.0f, NULL);
        x[i] = s - h;
        double lm = sh_loss_xent(x, y, 3, 4, 0.2f, 1.0f, NULL);
        x[i] = s;
        CHECK_NEAR(g[i], (lp - lm) / (2 * h), 2e-4);
    }
}

static void opt_case(const char *tag, const char *kind, float lr, float mom, int nesterov, float wd)
{
    double w0[6], b0[3], gw[3][6], gb[3][3], ew[6], eb[3];
    char name[64];
    golden("opt_w0", w0, 6);
    golden("opt_b0", b0, 3);
    for (int k = 0; k < 3; k++) {
        snprintf(name, sizeof name, "opt_gw%d", k);
        golden(name, gw[k], 6);
        snprintf(name, sizeof name, "opt_gb%d", k);
        golden(name, gb[k], 3);
    }
    snprintf(name, sizeof name, "%s_w", tag);
    golden(name, ew, 6);
    snprintf(name, sizeof name, "%s_b", tag);
    golden(name, eb, 3);
    sh_train_opts o;
    sh_train_opts_default(&o);
    o.optimizer = kind;
    o.lr = lr;
    o.momentum = mom;
    o.nesterov = nesterov;
    o.weight_decay = wd;
    sh_error err = {0};
    sh_optimizer *opt = NULL;
    CHECK_OK(sh_optimizer_new(&o, 2, &opt, &err), &err);
    float w[6], b[3], g6[6], g3[3];
    to_f(w0, w, 6);
    to_f(b0, b, 3);
    for (int k = 0; k < 3; k++) {
        to_f(gw[k], g6, 6);
        to_f(gb[k], g3, 3);
        sh_optimizer_begin_step(opt);
        CHECK_OK(sh_optimizer_update(opt, 0, w, g6, 6, 1, lr, &err), &err);
        CHECK_OK(sh_optimizer_update(opt, 1, b, g3, 3, 0, lr, &err), &err);
    }
    for (int i = 0; i < 6; i++) CHECK_NEAR(w[i], ew[i], 2e-6);
    for (int i = 0; i < 3; i++) CHECK_NEAR(b[i], eb[i], 2e-6);
    sh_optimizer_free(opt);
}

TEST(train_optim_sgd_momentum_golden) { opt_case("sgd", "sgd", 0.1f, 0.9f, 0, 0.01f); }
TEST(train_optim_sgd_nesterov_golden) { opt_case("nesterov", "sgd", 0.1f, 0.9f, 1, 0.01f); }
TEST(train_optim_adamw_golden) { opt_case("adamw", "adamw", 0.01f, 0.9f, 0, 0.1f); }

TEST(train_optim_unknown)
{
    sh_train_opts o;
    sh_train_opts_default(&o);
    o.optimizer = "lion";
    sh_error err = {0};
    sh_optimizer *opt = NULL;
    CHECK(sh_optimizer_new(&o, 1, &opt, &err) == SH_EINVAL && !opt);
    CHECK_MSG(strstr(err.msg, "lion"), "%s", err.msg);
}

TEST(train_schedules_golden)
{
    sh_train_opts o;
    sh_train_opts_default(&o);
    o.lr = 0.1f;
    double e[10];
    o.schedule = "onecycle";
    o.warmup = 0.3f;
    golden("onecycle_lr", e, 10);
    for (int i = 0; i < 10; i++) CHECK_NEAR(sh_lr_at(&o, i, 10, 2), e[i], 1e-7);
    o.schedule = "cosine";
    o.warmup = 0;
    golden("cosine_lr", e, 10);
    for (int i = 0; i < 10; i++) CHECK_NEAR(sh_lr_at(&o, i, 10, 2), e[i], 1e-7);
    o.schedule = "step";
    o.step_size = 2;
    o.gamma = 0.5f;
    golden("step_lr", e, 10);
    for (int i = 0; i < 10; i++) CHECK_NEAR(sh_lr_at(&o, i, 10, 2), e[i], 1e-7);
    o.schedule = "const";
    CHECK_NEAR(sh_lr_at(&o, 7, 10, 2), 0.1, 1e-7);
    /* cosine with 20% warm-up: linear to lr over 2 steps, then cosine */
    o.schedule = "cosine";
    o.warmup = 0.2f;
    CHECK_NEAR(sh_lr_at(&o, 0, 10, 2), 0.05, 1e-7);
    CHECK_NEAR(sh_lr_at(&o, 1, 10, 2), 0.1, 1e-7);
    CHECK_NEAR(sh_lr_at(&o, 2, 10, 2), 0.1, 1e-7);
    CHECK_NEAR(sh_lr_at(&o, 6, 10, 2), 0.05, 1e-7);
}

/* ---- models ------------------------------------------------------------ */

static void need_ops(const char *const *ops, int n)
{
    for (int i = 0; i < n; i++)
        if (!sh_op_find(ops[i])) {
            static char why[96];
            snprintf(why, sizeof why, "op %s not in the op table yet", ops[i]);
            SKIP(why);
        }
}
static const char *const mlp_ops[] = {"Flatten", "Gemm", "Relu"};
static const char *const cnn_ops[] = {"Conv", "Gemm", "Relu", "MaxPool", "Flatten", "BatchNormalization", "Add",
                                      "GlobalAveragePool"};

static float max_abs(const sh_graph *g, const char *name)
{
    int v = sh_graph_find(g, name);
    if (v < 0 || !g->values[v].init) return -1;
    const sh_tensor *t = g->values[v].init;
    float m = 0;
    for (int64_t i = 0; i < sh_tensor_numel(t); i++) m = fmaxf(m, fabsf(sh_f32(t)[i]));
    return m;
}

TEST(train_models_build)
{
    need_ops(cnn_ops, 8);
    sh_error err = {0};
    sh_graph *g = NULL, *h = NULL;
    CHECK_OK(sh_model_build("mlp", 1, &g, &err), &err);
    CHECK(sh_graph_param_count(g) == 266610);
    CHECK(max_abs(g, "fc1.weight") <= 1.0f / sqrtf(784.0f) && max_abs(g, "fc1.weight") > 0.03f);
    CHECK_OK(sh_model_build("mlp", 1, &h, &err), &err);
    int v = sh_graph_find(g, "fc2.weight");
    CHECK(memcmp(g->values[v].init->data, h->values[v].init->data, g->values[v].init->nbytes) == 0);
    sh_graph_free(h);
    CHECK_OK(sh_model_build("mlp", 2, &h, &err), &err);
    CHECK(memcmp(g->values[v].init->data, h->values[v].init->data, g->values[v].init->nbytes) != 0);
    sh_graph_free(h);
    sh_graph_free(g);
    CHECK_OK(sh_model_build("lenet5", 1, &g, &err), &err);
    CHECK(sh_graph_param_count(g) == 61706);
    CHECK(max_abs(g, "conv2.weight") <= 1.0f / sqrtf(150.0f));
    /* shapes: [3,1,28,28] -> [3,10] */
    int64_t s[4] = {3, 1, 28, 28};
    sh_tensor *x = sh_tensor_new(SH_F32, 4, s, &err);
    const sh_tensor *ins[1] = {x};
    CHECK_OK(sh_graph_infer_shapes(g, ins, &err), &err);
    int lo = sh_graph_find(g, "logits");
    CHECK(g->values[lo].ndim == 2 && g->values[lo].shape[0] == 3 && g->values[lo].shape[1] == 10);
    sh_graph_free(g);
    CHECK_OK(sh_model_build("cnn", 1, &g, &err), &err);
    CHECK_OK(sh_graph_infer_shapes(g, ins, &err), &err);
    lo = sh_graph_find(g, "logits");
    CHECK(g->values[lo].shape[0] == 3 && g->values[lo].shape[1] == 10);
    /* 168170 trainable (as PyTorch counts) + 704 BatchNorm running statistics */
    CHECK(sh_graph_param_count(g) == 168874);
    sh_graph_free(g);
    sh_tensor_free(x);
    CHECK(sh_model_build("resnet50", 1, &g, &err) == SH_EINVAL && !g);
    CHECK_MSG(strstr(err.msg, "resnet50") && strstr(err.msg, "lenet5"), "%s", err.msg);
}

TEST(train_models_llama_tiny)
{
    sh_error err = {0};
    sh_graph *g = NULL;
    int rc = sh_model_build("llama-tiny", 1, &g, &err);
    if (rc == SH_EUNSUPPORTED) SKIP(err.msg);
    CHECK_OK(rc, &err);
    sh_llama_config c;
    CHECK_OK(sh_llama_config_of(g, &c, &err), &err);
    CHECK(c.dim == 64 && c.n_layers == 4 && c.n_heads == 4 && c.vocab_size == 256 && c.seq_len == 128);
    sh_graph_free(g);
}

/* ---- training ------------------------------------------------------------ */


/* "bn-tiny": conv 3x3/2 (1->4) - BN - ReLU - maxpool 2 - flatten - fc 196->10,
 * a cheap model with BatchNormalization running statistics. */
static sh_graph *bn_tiny(void)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("bn-tiny");
    int64_t is[4] = {-1, 1, 28, 28}, ws[4] = {4, 1, 3, 3}, cs[1] = {4}, fs[2] = {10, 196}, bs[1] = {10};
    sh_graph_add_input(g, "input", SH_F32, 4, is, &err);
    const char *names[6] = {"w", "scale", "bias", "mean", "var", "fw"};
    const int64_t *shapes[6] = {ws, cs, cs, cs, cs, fs};
    int nd[6] = {4, 1, 1, 1, 1, 2};
    for (int i = 0; i < 6; i++) {
        sh_tensor *t = sh_tensor_new(SH_F32, nd[i], shapes[i], &err);
        for (int64_t j = 0; j < sh_tensor_numel(t); j++)
            sh_f32(t)[j] = i == 1 || i == 4 ? 1.0f : i == 2 || i == 3 ? 0.0f : (float)sin(j * 1.7 + i) * 0.3f;
        sh_graph_add_init(g, names[i], t, &err);
    }
    sh_tensor *fb = sh_tensor_new(SH_F32, 1, bs, &err);
    sh_graph_add_init(g, "fb", fb, &err);
    const char *c_in[2] = {"input", "w"}, *c_out[1] = {"c"};
    int k = sh_graph_add_node(g, "Conv", "conv", 2, c_in, 1, c_out, &err);
    int64_t ks[2] = {3, 3}, st[2] = {2, 2}, pads[4] = {1, 1, 1, 1};
    sh_node_set_ints(g, k, "kernel_shape", 2, ks);
    sh_node_set_ints(g, k, "strides", 2, st);
    sh_node_set_ints(g, k, "pads", 4, pads);
    const char *b_in[5] = {"c", "scale", "bias", "mean", "var"}, *b_out[1] = {"b"};
    k = sh_graph_add_node(g, "BatchNormalization", "bn", 5, b_in, 1, b_out, &err);
    sh_node_set_float(g, k, "momentum", 0.9f);
    const char *r_in[1] = {"b"}, *r_out[1] = {"r"};
    sh_graph_add_node(g, "Relu", "relu", 1, r_in, 1, r_out, &err);
    const char *p_in[1] = {"r"}, *p_out[1] = {"p"};
    k = sh_graph_add_node(g, "MaxPool", "pool", 1, p_in, 1, p_out, &err);
    int64_t two[2] = {2, 2};
    sh_node_set_ints(g, k, "kernel_shape", 2, two);
    sh_node_set_ints(g, k, "strides", 2, two);
    const char *f_in[1] = {"p"}, *f_out[1] = {"f"};
    sh_graph_add_node(g, "Flatten", "flatten", 1, f_in, 1, f_out, &err);
    const char *g_in[3] = {"f", "fw", "fb"}, *g_out[1] = {"logits"};
    k = sh_graph_add_node(g, "Gemm", "fc", 3, g_in, 1, g_out, &err);
    sh_node_set_int(g, k, "transB", 1);
    sh_graph_mark_output(g, "logits", &err);
    CHECK_OK(sh_graph_check(g, &err), &err);
    return g;
}

static sh_graph *model(const char *kind)
{
    if (strcmp(kind, "bn-tiny") == 0) return bn_tiny();
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build(kind, 7, &g, &err), &err);
    return g;
}

static double weight_diff(const sh_graph *a, const sh_graph *b)
{
    double m = 0;
    for (int i = 0; i < a->n_values; i++) {
        const sh_tensor *t = a->values[i].init, *u = b->values[i].init;
        if (!t || t->fmt != SH_F32) continue;
        for (int64_t j = 0; j < sh_tensor_numel(t); j++) m = fmax(m, fabs(sh_f32(t)[j] - sh_f32(u)[j]));
    }
    return m;
}

TEST(train_deterministic_and_learns)
{
    need_ops(mlp_ops, 3);
    sh_dataset *d = sh_test_synth_images(320, 1);
    sh_graph *a = model("mlp"), *b = model("mlp");
    sh_train_opts o;
    sh_train_opts_default(&o);
    o.batch = 32;
    o.epochs = 3;
    o.lr = 3e-3f;
    o.schedule = "cosine";
    o.nthreads = 2;
    sh_error err = {0};
    sh_train_report r1, r2;
    CHECK_OK(sh_train(a, d, d, &o, &r1, &err), &err);
    CHECK_OK(sh_train(b, d, d, &o, &r2, &err), &err);
    CHECK(r1.steps == 30 && r2.steps == 30);
    CHECK_MSG(weight_diff(a, b) == 0.0, "same seed, different weights: %g", weight_diff(a, b));
    CHECK_MSG(r1.val_metric > 0.9, "accuracy on synthetic data %g", r1.val_metric);
    CHECK(r1.final_loss < 1.0);
    /* another seed: a different run */
    sh_graph *c = model("mlp");
    o.seed = 2;
    CHECK_OK(sh_train(c, d, NULL, &o, &r2, &err), &err);
    CHECK(weight_diff(a, c) > 0);
    sh_graph_free(a);
    sh_graph_free(b);
    sh_graph_free(c);
    sh_dataset_free(d);
}

TEST(train_accumulation_matches_big_batch)
{
    need_ops(mlp_ops, 3);
    sh_dataset *d = sh_test_synth_images(256, 3);
    const char *opts[2] = {"sgd", "adamw"};
    for (int k = 0; k < 2; k++) {
        sh_graph *a = model("mlp"), *b = model("mlp");
        sh_train_opts o;
        sh_train_opts_default(&o);
        o.optimizer = opts[k];
        o.lr = k ? 1e-3f : 0.05f;
        o.weight_decay = 0.01f;
        o.epochs = 2;
        o.nthreads = 2;
        o.batch = 64;
        sh_error err = {0};
        sh_train_report r1, r2;
        CHECK_OK(sh_train(a, d, NULL, &o, &r1, &err), &err);
        o.batch = 16;
        o.accum = 4;
        CHECK_OK(sh_train(b, d, NULL, &o, &r2, &err), &err);
        CHECK(r1.steps == 8 && r2.steps == 8);
        double diff = weight_diff(a, b);
        CHECK_MSG(diff < 2e-5, "%s: accumulated vs big batch max |dw| = %g", opts[k], diff);
        /* and differs from a plain small-batch run */
        sh_graph *c = model("mlp");
        o.accum = 1;
        CHECK_OK(sh_train(c, d, NULL, &o, &r2, &err), &err);
        CHECK(weight_diff(a, c) > 1e-3);
        sh_graph_free(a);
        sh_graph_free(b);
        sh_graph_free(c);
    }
    sh_dataset_free(d);
}

static void resume_case(const char *kind, int n)
{
    sh_dataset *d = sh_test_synth_images(n, 5);
    sh_graph *a = model(kind), *b = model(kind);
    sh_train_opts o;
    sh_train_opts_default(&o);
    o.batch = 32;
    o.epochs = 2;
    o.schedule = "onecycle";
    o.weight_decay = 0.05f;
    o.nthreads = 2;
    sh_error err = {0};
    sh_train_report r;
    CHECK_OK(sh_train(a, d, NULL, &o, &r, &err), &err);
    char ck[512];
    snprintf(ck, sizeof ck, "%s/%s.ckpt", sh_test_tmpdir(), kind);
    remove(ck);
    o.checkpoint = ck;
    o.checkpoint_every = 3;
    int64_t spe = n / 32;
    o.max_steps = spe; /* "interrupted" after one epoch */
    CHECK_OK(sh_train(b, d, NULL, &o, &r, &err), &err);
    CHECK(r.steps == spe);
    CHECK(weight_diff(a, b) > 0);
    /* resume in a fresh model object: weights come from the checkpoint */
    sh_graph *c = model(kind);
    o.max_steps = 0;
    CHECK_OK(sh_train(c, d, NULL, &o, &r, &err), &err);
    CHECK(r.steps == 2 * spe);
    CHECK_MSG(weight_diff(a, c) == 0.0, "%s: resumed run differs by %g", kind, weight_diff(a, c));
    /* resume from a mid-epoch checkpoint too (stopped at step spe + 2) */
    remove(ck);
    sh_graph *e = model(kind);
    o.max_steps = spe + 2;
    o.checkpoint_every = 0;
    CHECK_OK(sh_train(e, d, NULL, &o, &r, &err), &err);
    sh_graph *f = model(kind);
    o.max_steps = 0;
    CHECK_OK(sh_train(f, d, NULL, &o, &r, &err), &err);
    CHECK_MSG(weight_diff(a, f) == 0.0, "%s: mid-epoch resume differs by %g", kind, weight_diff(a, f));
    /* a different batch size refuses the checkpoint */
    o.batch = 16;
    CHECK(sh_train(f, d, NULL, &o, &r, &err) == SH_EINVAL);
    CHECK_MSG(strstr(err.msg, "batch 32"), "%s", err.msg);
    /* a corrupt checkpoint is reported, not trusted */
    FILE *fp = fopen(ck, "r+b");
    fseek(fp, 200, SEEK_SET);
    fputc(0x5A, fp);
    fclose(fp);
    o.batch = 32;
    CHECK(sh_train(f, d, NULL, &o, &r, &err) == SH_EFORMAT);
    CHECK_MSG(strstr(err.msg, "checksum"), "%s", err.msg);
    sh_graph_free(a);
    sh_graph_free(b);
    sh_graph_free(c);
    sh_graph_free(e);
    sh_graph_free(f);
    sh_dataset_free(d);
}

TEST(train_checkpoint_resume_exact) 
{
    need_ops(mlp_ops, 3);
    resume_case("mlp", 256);
}

TEST(train_checkpoint_resume_exact_bn)
{
    need_ops(cnn_ops, 8);
    resume_case("bn-tiny", 256);
    /* the BN running statistics were trained and restored too */
    sh_graph *g = bn_tiny();
    sh_dataset *d = sh_test_synth_images(64, 9);
    sh_train_opts o;
    sh_train_opts_default(&o);
    o.batch = 32;
    sh_error err = {0};
    CHECK_OK(sh_train(g, d, NULL, &o, NULL, &err), &err);
    const sh_tensor *mean = g->values[sh_graph_find(g, "mean")].init;
    CHECK(sh_f32(mean)[0] != 0.0f);
    sh_graph_free(g);
    sh_dataset_free(d);
}

TEST(train_errors)
{
    need_ops(mlp_ops, 3);
    sh_dataset *d = sh_test_synth_images(20, 1);
    sh_graph *g = model("mlp");
    sh_train_opts o;
    sh_train_opts_default(&o);
    sh_error err = {0};
    o.batch = 64;
    CHECK(sh_train(g, d, NULL, &o, NULL, &err) == SH_EINVAL);
    CHECK_MSG(strstr(err.msg, "20 items") && strstr(err.msg, "batch 64"), "%s", err.msg);
    o.batch = 4;
    o.schedule = "linear";
    CHECK(sh_train(g, d, NULL, &o, NULL, &err) == SH_EINVAL);
    CHECK_MSG(strstr(err.msg, "linear"), "%s", err.msg);
    o.schedule = "const";
    o.lr = -1;
    CHECK(sh_train(g, d, NULL, &o, NULL, &err) == SH_EINVAL);
    o.lr = 1e-3f;
    d->y[3] = 12; /* label out of range */
    CHECK(sh_train(g, d, NULL, &o, NULL, &err) == SH_EINVAL);
    CHECK_MSG(strstr(err.msg, "label 12"), "%s", err.msg);
    sh_graph_free(g);
    sh_dataset_free(d);
}

TEST(train_mlp_fashion_subset)
{
    need_ops(mlp_ops, 3);
    if (sh_test_quick()) SKIP("long test");
    FILE *f = fopen("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", "rb");
    if (!f) SKIP("Fashion-MNIST not installed");
    fclose(f);
    sh_error err = {0};
    sh_dataset *tr = NULL, *te = NULL;
    CHECK_OK(sh_dataset_load("fashion-mnist:train:2000", &tr, &err), &err);
    CHECK_OK(sh_dataset_load("fashion-mnist:test:1000", &te, &err), &err);
    sh_graph *g = model("mlp");
    sh_train_opts o;
    sh_train_opts_default(&o);
    o.batch = 16;
    o.epochs = 1;
    o.lr = 3e-3f;
    o.schedule = "onecycle";
    o.nthreads = 2;
    sh_train_report r;
    CHECK_OK(sh_train(g, tr, te, &o, &r, &err), &err);
    CHECK_MSG(r.val_metric > 0.70, "test accuracy %.3f after one epoch on 2000 images", r.val_metric);
    fprintf(stderr, "    mlp, 2000 images, 1 epoch: test accuracy %.3f, %.0f images/s\n", r.val_metric,
            r.items_per_s);
    sh_graph_free(g);
    sh_dataset_free(tr);
    sh_dataset_free(te);
}

TEST(train_llama_tiny_bytes)
{
    sh_error err = {0};
    sh_graph *g = NULL;
    if (sh_test_quick()) SKIP("slow under sanitizers");
    int rc = sh_model_build("llama-tiny", 3, &g, &err);
    if (rc == SH_EUNSUPPORTED) SKIP(err.msg);
    CHECK_OK(rc, &err);
    /* a repetitive byte stream: the loss must fall well below ln(256) */
    sh_dataset *d = calloc(1, sizeof *d);
    const char *text = "the cat sat on the mat. ";
    int64_t n = 24 * 200;
    d->kind = 2;
    d->n = n;
    d->vocab = 256;
    d->tokens = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) d->tokens[i] = (unsigned char)text[i % 24];
    d->n_docs = 1;
    d->doc_off = calloc(2, sizeof(int64_t));
    d->doc_off[1] = n;
    sh_train_opts o;
    sh_train_opts_default(&o);
    o.batch = 4;
    o.seq_len = 32;
    o.lr = 1e-2f;
    o.nthreads = 2;
    sh_train_report r;
    CHECK_OK(sh_train(g, d, d, &o, &r, &err), &err);
    CHECK(r.steps == 37); /* 149 windows of 32+1 tokens / batch 4 */
    CHECK_MSG(r.val_metric > 0 && r.val_metric < 3.0, "validation NLL %g after one epoch", r.val_metric);
    sh_graph_free(g);
    sh_dataset_free(d);
}
