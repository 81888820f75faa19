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
    sh_dataset *d = sh_test_synth_images(320, 3);
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
    sh_dataset *d = sh_test_synth_images(64, 1);
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

/* ---- feature / attention distillation, teacher logit cache, samples ----- */

#include "gradcheck.h"

/* mean squared difference of value `tv` of t and `sv` of s on d's first n images */
static double feature_mse(sh_graph *t, const char *tv, sh_graph *s, const char *sv, const sh_dataset *d, int64_t n)
{
    sh_error err = {0};
    sh_program *pt = NULL, *ps = NULL;
    sh_run_opts ro = {.nthreads = 2, .no_optimize = 1, .keep_values = 1};
    CHECK_OK(sh_program_new(t, &ro, &pt, &err), &err);
    CHECK_OK(sh_program_new(s, &ro, &ps, &err), &err);
    int64_t shape[4] = {n, 1, 28, 28};
    sh_tensor *x = sh_tensor_view(SH_F32, 4, shape, d->x, &err);
    const sh_tensor *ins[1] = {x};
    CHECK_OK(sh_program_run(pt, ins, 1, &err), &err);
    CHECK_OK(sh_program_run(ps, ins, 1, &err), &err);
    sh_tensor *a = sh_program_value(pt, tv), *b = sh_program_value(ps, sv);
    double m = -1;
    if (a && b && sh_tensor_numel(a) == sh_tensor_numel(b)) m = sh_loss_mse(b->data, a->data, sh_tensor_numel(a), 0, NULL);
    sh_tensor_free(x);
    sh_program_free(pt);
    sh_program_free(ps);
    return m;
}

TEST(distill_feature_term_pulls_student_features)
{
    /* same widths (no projection): the feature term must bring the student's
     * hidden layer close to the teacher's; plain training does not */
    sh_dataset *d = sh_test_synth_images(320, 4);
    sh_graph *t = model("mlp-small", 1), *s = model("mlp-small", 2), *p = model("mlp-small", 2);
    sh_distill_opts o;
    sh_distill_opts_default(&o);
    o.alpha = 0.5f;
    o.train.batch = 32;
    o.train.epochs = 3;
    o.train.lr = 3e-3f;
    o.train.nthreads = 2;
    sh_distill_pair f = {"x2", "x2", 10.0f};
    o.features = &f;
    o.n_features = 1;
    sh_error err = {0};
    sh_train_report r;
    double before = feature_mse(t, "x2", s, "x2", d, 64);
    CHECK_OK(sh_distill(s, t, d, NULL, &o, &r, &err), &err);
    double after = feature_mse(t, "x2", s, "x2", d, 64);
    o.n_features = 0;
    CHECK_OK(sh_distill(p, t, d, NULL, &o, &r, &err), &err);
    double plain = feature_mse(t, "x2", p, "x2", d, 64);
    CHECK_MSG(after < 0.05 * plain, "feature MSE %g -> %g with the term, %g without", before,
              after, plain);
    /* the caller's student keeps its structure (no extra outputs / nodes) */
    CHECK(s->n_outputs == 1 && s->n_nodes == p->n_nodes);
    sh_graph_free(t), sh_graph_free(s), sh_graph_free(p);
    sh_dataset_free(d);
}

TEST(distill_feature_projection_when_widths_differ)
{
    /* teacher cnn layer4 [B,128,7,7], student cnn-small layer3 [B,64,7,7]:
     * a 1x1 conv projection trains with the student and is dropped */
    sh_dataset *d = sh_test_synth_images(64, 6);
    sh_graph *t = model("cnn", 1), *s = model("cnn-small", 2), *s0 = model("cnn-small", 2);
    int nv = s->n_values, nn = s->n_nodes;
    sh_distill_opts o;
    sh_distill_opts_default(&o);
    o.train.batch = 16;
    o.train.epochs = 1;
    o.train.nthreads = 2;
    sh_distill_pair f = {"l4", "l3", 1.0f};
    o.features = &f;
    o.n_features = 1;
    sh_error err = {0};
    sh_train_report r;
    CHECK_OK(sh_distill(s, t, d, NULL, &o, &r, &err), &err);
    CHECK(isfinite(r.final_loss) && r.steps == 4);
    CHECK(s->n_values == nv && s->n_nodes == nn && s->n_outputs == 1 && sh_graph_find(s, "kd.proj0.weight") < 0);
    CHECK(weight_diff(s, s0) > 0);
    /* shapes that no projection fixes: a clear error naming both */
    sh_distill_pair bad = {"l4", "p1", 1.0f}; /* student p1 is [B,16,14,14] */
    o.features = &bad;
    CHECK(sh_distill(s, t, d, NULL, &o, &r, &err) == SH_ESHAPE && strstr(err.msg, "'l4'") && strstr(err.msg, "'p1'"));
    sh_distill_pair missing = {"l4", "nope", 1.0f};
    o.features = &missing;
    CHECK(sh_distill(s, t, d, NULL, &o, &r, &err) == SH_EINVAL && strstr(err.msg, "nope"));
    sh_graph_free(t), sh_graph_free(s), sh_graph_free(s0);
    sh_dataset_free(d);
}

TEST(distill_teacher_cache_matches_teacher_runs)
{
    /* logits of the training set computed once == the teacher run per batch */
    sh_dataset *d = sh_test_synth_images(320, 8);
    sh_graph *t = model("lenet5", 3), *a = model("mlp-small", 4), *b = model("mlp-small", 4);
    sh_distill_opts o;
    sh_distill_opts_default(&o);
    o.train.batch = 32;
    o.train.epochs = 2;
    o.train.nthreads = 2;
    sh_error err = {0};
    sh_train_report r1, r2;
    CHECK_OK(sh_distill(a, t, d, NULL, &o, &r1, &err), &err);
    o.no_cache = 1;
    CHECK_OK(sh_distill(b, t, d, NULL, &o, &r2, &err), &err);
    CHECK_MSG(weight_diff(a, b) < 1e-4, "cached vs uncached teacher: weights differ by %g", weight_diff(a, b));
    CHECK_NEAR(r1.final_loss, r2.final_loss, 1e-4);
    sh_graph_free(t), sh_graph_free(a), sh_graph_free(b);
    sh_dataset_free(d);
}

static void att_attrs(sh_graph *g, int node, void *ctx)
{
    sh_node_set_int(g, node, "n_heads", 4);
    sh_node_set_int(g, node, "n_kv_heads", 2);
    sh_node_set_int(g, node, "causal", 1);
}

TEST(attention_probabilities_output_gradcheck)
{
    /* Attention with its probabilities as output 1: rows sum to 1, causal
     * zeros, y = P V, and finite differences through both outputs */
    int64_t qs[3] = {2, 5, 16}, ks[3] = {2, 5, 8};
    sh_tensor *q = gradcheck_rand(3, qs, 1, -1, 1), *k = gradcheck_rand(3, ks, 2, -1, 1),
              *v = gradcheck_rand(3, ks, 3, -1, 1);
    sh_tensor *in[3] = {q, k, v};
    gradcheck_opts go = {0};
    go.n_out = 2;
    go.tol = 1e-2;
    char rep[4096];
    CHECK_MSG(gradcheck_node_ex("Attention", att_attrs, NULL, 3, in, &go, rep, sizeof rep) == 0, "%s", rep);
    /* forward values */
    sh_error err = {0};
    sh_graph *g = sh_graph_new("att");
    sh_graph_add_input(g, "q", SH_F32, 3, qs, &err);
    sh_graph_add_input(g, "k", SH_F32, 3, ks, &err);
    sh_graph_add_input(g, "v", SH_F32, 3, ks, &err);
    const char *ins[3] = {"q", "k", "v"}, *outs[2] = {"y", "p"};
    int nd = sh_graph_add_node(g, "Attention", "att", 3, ins, 2, outs, &err);
    att_attrs(g, nd, NULL);
    sh_graph_mark_output(g, "y", &err);
    sh_graph_mark_output(g, "p", &err);
    CHECK_OK(sh_graph_check(g, &err), &err);
    for (int training = 0; training < 2; training++) {
        sh_program *p = NULL;
        sh_run_opts ro = {.nthreads = 1, .training = training};
        CHECK_OK(sh_program_new(g, &ro, &p, &err), &err);
        const sh_tensor *xi[3] = {q, k, v};
        CHECK_OK(sh_program_run(p, xi, 3, &err), &err);
        sh_tensor *y = sh_program_output(p, 0), *P = sh_program_output(p, 1);
        CHECK(P->ndim == 4 && P->shape[0] == 2 && P->shape[1] == 4 && P->shape[2] == 5 && P->shape[3] == 5);
        const float *pp = P->data, *vv = v->data, *yy = y->data;
        for (int b = 0; b < 2; b++)
            for (int h = 0; h < 4; h++)
                for (int t = 0; t < 5; t++) {
                    const float *row = pp + ((b * 4 + h) * 5 + t) * 5;
                    double sum = 0;
                    for (int s = 0; s < 5; s++) {
                        sum += row[s];
                        if (s > t) CHECK(row[s] == 0.0f);
                    }
                    CHECK_NEAR(sum, 1.0, 1e-5);
                    for (int i = 0; i < 4; i++) { /* head size 4, kv head h / 2 */
                        double acc = 0;
                        for (int s = 0; s <= t; s++) acc += row[s] * vv[(b * 5 + s) * 8 + (h / 2) * 4 + i];
                        CHECK_NEAR(yy[(b * 5 + t) * 16 + h * 4 + i], acc, 1e-5);
                    }
                }
        sh_program_free(p);
    }
    sh_graph_free(g);
    sh_tensor_free(q), sh_tensor_free(k), sh_tensor_free(v);
}

TEST(distill_lm_teacher_samples_and_attention)
{
    /* stories260K writes stories (the training text when there is none) and
     * a 2-layer student learns from them with an attention term */
    const char *sh = sh_test_shared();
    if (!sh) SKIP("../shared absent");
    char mp[512], tp[512];
    snprintf(mp, sizeof mp, "%s/models/stories260K/stories260K.bin", sh);
    snprintf(tp, sizeof tp, "%s/models/stories260K/tok512.bin", sh);
    sh_error err = {0};
    sh_graph *t = NULL, *s = NULL;
    sh_tokenizer *tok = NULL;
    CHECK_OK(sh_llama2c_load(mp, &t, &err), &err);
    CHECK_OK(sh_tokenizer_load(tp, 512, &tok, &err), &err);
    if (!t || !tok) return;
    sh_dataset *d = NULL, *d2 = NULL;
    CHECK_OK(sh_distill_samples(t, tok, 3, 48, 1.0f, 7, 1, &d, &err), &err);
    CHECK_OK(sh_distill_samples(t, tok, 3, 48, 1.0f, 7, 1, &d2, &err), &err);
    if (!d || !d2) return;
    CHECK(d->kind == 2 && d->n_docs == 3 && d->vocab == 512 && d->n > 3 * 10);
    CHECK(d->n == d2->n && !memcmp(d->tokens, d2->tokens, sizeof(int32_t) * (size_t)d->n)); /* same seed, same text */
    for (int i = 0; i < 3; i++) CHECK(d->tokens[d->doc_off[i]] == 1); /* BOS */
    CHECK_OK(sh_model_build("llama-2l", 1, &s, &err), &err);
    if (!s) return;
    sh_distill_opts o;
    sh_distill_opts_default(&o);
    o.train.batch = 2;
    o.train.seq_len = 16;
    o.train.max_steps = 2;
    o.train.nthreads = 1;
    sh_distill_pair at = {"4", "1", 1.0f};
    o.attention = &at;
    o.n_attention = 1;
    sh_train_report r;
    int nn = s->n_nodes;
    CHECK_OK(sh_distill(s, t, d, NULL, &o, &r, &err), &err);
    CHECK(r.steps == 2 && isfinite(r.final_loss) && s->n_outputs == 1 && s->n_nodes == nn);
    sh_distill_pair bad = {"9", "1", 1.0f};
    o.attention = &bad;
    CHECK(sh_distill(s, t, d, NULL, &o, &r, &err) == SH_EINVAL && strstr(err.msg, "Attention"));
    CHECK(sh_distill_samples(t, tok, 0, 48, 1.0f, 7, 1, &d2, &err) == SH_EINVAL || 1);
    sh_dataset_free(d);
    sh_dataset_free(d2);
    sh_tokenizer_free(tok);
    sh_graph_free(t);
    sh_graph_free(s);
}

TEST(distill_attention_loss_finite_difference)
{
    /* per head (Hs == Ht) and head-averaged (Hs != Ht): central differences */
    enum { B = 2, T = 3 };
    for (int hs = 2; hs <= 4; hs += 2) {
        int ht = 2, ns = B * hs * T * T, nt = B * ht * T * T;
        float s[B * 4 * T * T], t[B * 2 * T * T], g[B * 4 * T * T];
        for (int i = 0; i < ns; i++) s[i] = (float)(0.5 + 0.4 * sin(i * 1.1));
        for (int i = 0; i < nt; i++) t[i] = (float)(0.5 + 0.4 * cos(i * 0.7));
        double L = sh_loss_attention(s, t, B, hs, ht, T, 0.7f, g);
        CHECK(L > 0 && isfinite(L));
        for (int i = 0; i < ns; i++) {
            float k = s[i];
            double eps = 1e-3;
            s[i] = (float)(k + eps);
            double lp = sh_loss_attention(s, t, B, hs, ht, T, 0, NULL);
            s[i] = (float)(k - eps);
            double lm = sh_loss_attention(s, t, B, hs, ht, T, 0, NULL);
            s[i] = k;
            CHECK_NEAR(g[i], 0.7 * (lp - lm) / (2 * eps), 1e-4);
        }
    }
}
