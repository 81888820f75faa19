/* test_distill.c - knowledge distillation: the combined loss and its
 * gradient (finite differences, and the formula from sh_loss_kl and
 * sh_loss_xent), alpha = 0 is plain training bit for bit, a clear error when
 * teacher and student output sizes differ, a language-model teacher per
 * position, and a short real run (lenet5 teacher -> mlp student on 2000
 * Fashion-MNIST images). */
#include <string.h>

#include "test.h"
#include "ops/ops.h"

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

static sh_dataset *synth(int n, uint64_t seed)
{
    sh_dataset *d = calloc(1, sizeof *d);
    d->kind = 1;
    d->n = n;
    d->c = 1, d->h = 28, d->w = 28;
    d->n_classes = 10;
    d->x = malloc(sizeof(float) * 784 * (size_t)n);
    d->y = malloc(sizeof(int32_t) * (size_t)n);
    uint64_t s = seed;
    for (int i = 0; i < n; i++) {
        int k = i % 10;
        d->y[i] = k;
        for (int p = 0; p < 784; p++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            float noise = (float)((s >> 40) & 0xFFFF) / 65536.0f * 0.3f;
            int r = p / 28, c = p % 28;
            d->x[i * 784 + p] = noise + ((r / 7) * 4 + c / 7 == k ? 0.7f : 0.0f);
        }
    }
    d->desc = strdup("synthetic");
    return d;
}

static sh_graph *model(const char *kind, uint64_t seed)
{
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build(kind, seed, &g, &err), &err);
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

TEST(distill_loss_formula_and_finite_difference)
{
    enum { N = 4, C = 7 };
    float s[N * C], t[N * C], g[N * C], gk[N * C], gx[N * C];
    int32_t y[N] = {0, 3, 6, -1}; /* the last row has no label: KL only */
    for (int i = 0; i < N * C; i++) {
        s[i] = (float)sin(i * 1.3) * 2.0f;
        t[i] = (float)cos(i * 0.7) * 3.0f;
    }
    const float T = 3.0f, alpha = 0.7f, ls = 0.1f, scale = 0.5f;
    double L = sh_loss_distill(s, t, y, N, C, T, alpha, ls, scale, g);
    double kl = sh_loss_kl(s, t, N, C, T, 1.0f, gk);
    double ce = sh_loss_xent(s, y, N, C, ls, 1.0f, gx);
    CHECK_NEAR(L, alpha * kl + (1 - alpha) * ce, 1e-9);
    for (int i = 0; i < N * C; i++) CHECK_NEAR(g[i], scale * (alpha * gk[i] + (1 - alpha) * gx[i]), 1e-6);
    /* finite differences of the loss (double accumulation, float inputs) */
    double maxerr = 0;
    for (int i = 0; i < N * C; i++) {
        float keep = s[i], h = 1e-2f;
        s[i] = keep + h;
        double lp = sh_loss_distill(s, t, y, N, C, T, alpha, ls, 1.0f, NULL);
        s[i] = keep - h;
        double lm = sh_loss_distill(s, t, y, N, C, T, alpha, ls, 1.0f, NULL);
        s[i] = keep;
        double fd = (lp - lm) / (2.0 * h) * scale;
        maxerr = fmax(maxerr, fabs(fd - g[i]));
    }
    CHECK_MSG(maxerr < 2e-5, "distillation gradient vs finite differences: max error %g", maxerr);
    /* a student equal to the teacher with alpha 1: zero loss and gradient */
    double z = sh_loss_distill(t, t, y, N, C, T, 1.0f, 0.0f, 1.0f, g);
    CHECK_NEAR(z, 0.0, 1e-7);
    for (int i = 0; i < N * C; i++) CHECK_NEAR(g[i], 0.0, 1e-7);
}

TEST(distill_alpha0_is_plain_training)
{
    need_ops(mlp_ops, 3);
    sh_dataset *d = synth(320, 3);
    sh_graph *a = model("mlp-small", 5), *b = model("mlp-small", 5), *teacher = model("mlp", 9);
    sh_distill_opts o;
    sh_distill_opts_default(&o);
    CHECK(o.temperature == 4.0f && o.alpha > 0.0f && o.alpha <= 1.0f);
    o.alpha = 0.0f;
    o.train.batch = 32;
    o.train.epochs = 2;
    o.train.lr = 3e-3f;
    o.train.schedule = "cosine";
    o.train.label_smoothing = 0.05f;
    o.train.nthreads = 2;
    sh_error err = {0};
    sh_train_report r1, r2;
    CHECK_OK(sh_train(a, d, d, &o.train, &r1, &err), &err);
    CHECK_OK(sh_distill(b, teacher, d, d, &o, &r2, &err), &err);
    CHECK(r1.steps == 20 && r2.steps == 20);
    CHECK_MSG(weight_diff(a, b) == 0.0, "alpha 0 differs from plain training: %g", weight_diff(a, b));
    CHECK(r1.final_loss == r2.final_loss);
    CHECK(r1.val_metric == r2.val_metric);
    /* alpha > 0 with an untrained teacher: a different run */
    sh_graph *c = model("mlp-small", 5);
    o.alpha = 0.5f;
    o.train.epochs = 1;
    CHECK_OK(sh_distill(c, teacher, d, NULL, &o, &r2, &err), &err);
    CHECK(weight_diff(a, c) > 0);
    sh_graph_free(a);
    sh_graph_free(b);
    sh_graph_free(c);
    sh_graph_free(teacher);
    sh_dataset_free(d);
}

/* flatten - fc 784 -> k */
static sh_graph *linear_model(int k)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("linear12");
    int64_t is[4] = {-1, 1, 28, 28}, ws[2] = {k, 784}, bs[1] = {k};
    sh_graph_add_input(g, "input", SH_F32, 4, is, &err);
    sh_tensor *w = sh_tensor_new(SH_F32, 2, ws, &err), *b = sh_tensor_new(SH_F32, 1, bs, &err);
    for (int64_t j = 0; j < sh_tensor_numel(w); j++) sh_f32(w)[j] = (float)sin(j * 0.37) * 0.05f;
    sh_graph_add_init(g, "w", w, &err);
    sh_graph_add_init(g, "b", b, &err);
    const char *f_in[1] = {"input"}, *f_out[1] = {"f"};
    sh_graph_add_node(g, "Flatten", "flatten", 1, f_in, 1, f_out, &err);
    const char *g_in[3] = {"f", "w", "b"}, *g_out[1] = {"logits"};
    int n = sh_graph_add_node(g, "Gemm", "fc", 3, g_in, 1, g_out, &err);
    sh_node_set_int(g, n, "transB", 1);
    sh_graph_mark_output(g, "logits", &err);
    CHECK_OK(sh_graph_check(g, &err), &err);
    return g;
}

TEST(distill_errors)
{
    need_ops(mlp_ops, 3);
    sh_dataset *d = synth(64, 1);
    sh_graph *student = model("mlp", 1), *teacher = linear_model(12);
    sh_distill_opts o;
    sh_distill_opts_default(&o);
    o.train.batch = 16;
    o.train.nthreads = 1;
    sh_error err = {0};
    CHECK(sh_distill(student, teacher, d, NULL, &o, NULL, &err) == SH_ESHAPE);
    CHECK_MSG(strstr(err.msg, "teacher has 12 outputs per item, student 10") != NULL, "message: %s", err.msg);
    /* and the other way round */
    sh_graph *s12 = linear_model(12), *t10 = model("mlp", 2);
    memset(&err, 0, sizeof err);
    CHECK(sh_distill(s12, t10, d, NULL, &o, NULL, &err) == SH_ESHAPE);
    CHECK_MSG(strstr(err.msg, "teacher has 10 outputs per item, student 12") != NULL, "message: %s", err.msg);
    o.temperature = 0;
    CHECK(sh_distill(student, t10, d, NULL, &o, NULL, &err) == SH_EINVAL);
    CHECK(strstr(err.msg, "temperature") != NULL);
    o.temperature = 2;
    o.alpha = 1.5f;
    CHECK(sh_distill(student, t10, d, NULL, &o, NULL, &err) == SH_EINVAL);
    CHECK(strstr(err.msg, "alpha") != NULL);
    o.alpha = 0.5f;
    CHECK(sh_distill(student, NULL, d, NULL, &o, NULL, &err) == SH_EINVAL);
    sh_graph_free(student);
    sh_graph_free(teacher);
    sh_graph_free(s12);
    sh_graph_free(t10);
    sh_dataset_free(d);
}

TEST(distill_language_model_per_position)
{
    /* a llama-tiny teacher and a smaller student on a byte stream: the hook
     * sees B*T rows of vocab logits; a short run must lower the loss */
    sh_error err = {0};
    sh_dataset *d = calloc(1, sizeof *d);
    d->kind = 2;
    d->n = 4096;
    d->vocab = 256;
    d->tokens = malloc(sizeof(int32_t) * (size_t)d->n);
    for (int64_t i = 0; i < d->n; i++) d->tokens[i] = "the cat sat on the mat. "[i % 24];
    d->desc = strdup("synthetic text");
    sh_llama_config tc = {32, 64, 1, 2, 2, 256, 32, 1}, sc = {16, 32, 1, 2, 2, 256, 32, 1};
    sh_graph *t = NULL, *s = NULL;
    CHECK_OK(sh_llama_build(&tc, 1, &t, &err), &err);
    CHECK_OK(sh_llama_build(&sc, 2, &s, &err), &err);
    if (!t || !s) return;
    sh_distill_opts o;
    sh_distill_opts_default(&o);
    o.alpha = 0.5f;
    o.temperature = 2.0f;
    o.train.batch = 4;
    o.train.seq_len = 16;
    o.train.max_steps = 30;
    o.train.lr = 1e-2f;
    o.train.nthreads = 2;
    sh_train_report r;
    CHECK_OK(sh_distill(s, t, d, d, &o, &r, &err), &err);
    CHECK(r.steps == 30);
    CHECK_MSG(isfinite(r.final_loss), "final loss %g", r.final_loss);
    CHECK_MSG(r.val_metric < 4.0, "validation NLL %g after 30 steps (ln 256 = 5.55 at start)", r.val_metric);
    sh_graph_free(t);
    sh_graph_free(s);
    sh_dataset_free(d);
}

TEST(distill_lenet5_into_mlp_fashion_subset)
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
    sh_graph *teacher = model("lenet5", 1), *student = model("mlp-small", 1);
    sh_train_opts o;
    sh_train_opts_default(&o);
    o.batch = 32;
    o.epochs = 2;
    o.lr = 3e-3f;
    o.schedule = "onecycle";
    o.nthreads = 2;
    sh_train_report r;
    CHECK_OK(sh_train(teacher, tr, te, &o, &r, &err), &err);
    double t_acc = r.val_metric;
    sh_eval_report e0;
    CHECK_OK(sh_eval(student, te, 2, 0, &e0, &err), &err);
    sh_distill_opts d;
    sh_distill_opts_default(&d);
    d.train = o;
    d.train.epochs = 2;
    d.train.lr = 1e-2f;
    CHECK_OK(sh_distill(student, teacher, tr, te, &d, &r, &err), &err);
    CHECK_MSG(r.val_metric > e0.accuracy + 0.3 && r.val_metric > 0.6,
              "student accuracy %.3f after distillation (initial %.3f)", r.val_metric, e0.accuracy);
    fprintf(stderr, "    lenet5 teacher %.3f -> mlp-small student %.3f (initial %.3f), 2000 images\n", t_acc,
            r.val_metric, e0.accuracy);
    sh_graph_free(teacher);
    sh_graph_free(student);
    sh_dataset_free(tr);
    sh_dataset_free(te);
}
