/* test_eval.c - sh_eval: accuracy over batches (last one partial), sizes,
 * speed figures, and errors for mismatched inputs. */
#include <string.h>

#include "test.h"

/* x[N,1,1,4] -> Relu -> logits; an initializer makes params/bytes nonzero. */
static sh_graph *relu_classifier(int64_t c, int64_t h, int64_t w)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("relu");
    int64_t s[4] = {-1, c, h, w};
    sh_graph_add_input(g, "x", SH_F32, 4, s, &err);
    const char *in[1] = {"x"}, *out[1] = {"y"};
    sh_graph_add_node(g, "Relu", "relu1", 1, in, 1, out, &err);
    sh_graph_mark_output(g, "y", &err);
    int64_t ws[1] = {6};
    sh_tensor *t = sh_tensor_new(SH_F32, 1, ws, &err);
    sh_graph_add_init(g, "unused_w", t, &err);
    return g;
}

static sh_dataset *toy_set(void)
{
    sh_dataset *d = calloc(1, sizeof *d);
    d->kind = 1;
    d->n = 5;
    d->c = 1, d->h = 1, d->w = 4;
    d->n_classes = 4;
    static const float x[5][4] = {
        {0.1f, 0.9f, 0.2f, 0.0f}, /* argmax 1 */
        {-1.0f, -2.0f, 3.0f, 0.5f}, /* 2 */
        {0.0f, 0.0f, 0.0f, 7.0f}, /* 3 */
        {5.0f, 1.0f, 1.0f, 1.0f}, /* 0 */
        {0.3f, 0.2f, 0.1f, 0.4f}, /* 3 */
    };
    static const int32_t y[5] = {1, 2, 0, 0, 1}; /* items 0,1,3 right */
    d->x = malloc(sizeof x);
    memcpy(d->x, x, sizeof x);
    d->y = malloc(sizeof y);
    memcpy(d->y, y, sizeof y);
    d->desc = NULL;
    return d;
}

static void toy_free(sh_dataset *d)
{
    free(d->x);
    free(d->y);
    free(d);
}

TEST(eval_accuracy_batches)
{
    sh_error err = {0};
    sh_graph *g = relu_classifier(1, 1, 4);
    sh_dataset *d = toy_set();
    for (int b = 1; b <= 6; b++) {
        sh_eval_opts o = {.batch = b, .nthreads = 1};
        sh_eval_report r;
        CHECK_OK(sh_eval_ex(g, d, &o, &r, &err), &err);
        CHECK(r.kind == 1);
        CHECK(r.n == 5);
        CHECK(r.correct == 3);
        CHECK_NEAR(r.accuracy, 0.6, 1e-12);
        CHECK(r.params == 6);
        CHECK(r.param_bytes == 24);
        CHECK(r.latency_ms_b1 == 0 && r.throughput == 0);
    }
    sh_eval_opts o = {.batch = 2, .limit = 2};
    sh_eval_report r;
    CHECK_OK(sh_eval_ex(g, d, &o, &r, &err), &err);
    CHECK(r.n == 2 && r.correct == 2);
    /* the old entry point */
    CHECK_OK(sh_eval(g, d, 1, 0, &r, &err), &err);
    CHECK_NEAR(r.accuracy, 0.6, 1e-12);
    toy_free(d);
    sh_graph_free(g);
}

TEST(eval_speed_figures)
{
    sh_error err = {0};
    sh_graph *g = relu_classifier(1, 1, 4);
    sh_dataset *d = toy_set();
    sh_eval_opts o = {.measure_speed = 1, .nthreads = 1, .max_seconds = 0.05, .min_runs = 5, .speed_batch = 8};
    sh_eval_report r;
    CHECK_OK(sh_eval_ex(g, d, &o, &r, &err), &err);
    CHECK(r.latency_ms_b1 > 0 && r.latency_ms_b1 < 100);
    CHECK(r.latency_runs >= 5);
    CHECK(r.throughput > 0);
    CHECK(r.speed_batch == 8);
    /* no data set: random input of the declared shape ([-1,...] -> batch) */
    sh_graph *g2 = relu_classifier(3, 8, 8);
    memset(&r, 0, sizeof r);
    CHECK_OK(sh_eval_speed(g2, NULL, &o, &r, &err), &err);
    CHECK(r.latency_ms_b1 > 0 && r.throughput > 0);
    sh_graph_free(g2);
    toy_free(d);
    sh_graph_free(g);
}

TEST(eval_errors)
{
    sh_error err = {0};
    sh_graph *g = relu_classifier(1, 28, 28); /* expects 784 values per item */
    sh_dataset *d = toy_set();                /* has 4 */
    sh_eval_report r;
    int rc = sh_eval(g, d, 1, 0, &r, &err);
    CHECK(rc == SH_ESHAPE);
    CHECK_MSG(strstr(err.msg, "'x'") && strstr(err.msg, "[-1,1,28,28]") && strstr(err.msg, "1x1x4"), "msg: %s", err.msg);
    sh_graph_free(g);
    /* a label outside the class range is a data error, not a crash */
    g = relu_classifier(1, 1, 4);
    d->y[4] = 9;
    memset(&err, 0, sizeof err);
    rc = sh_eval(g, d, 1, 0, &r, &err);
    CHECK(rc == SH_EFORMAT);
    CHECK_MSG(strstr(err.msg, "label 9 of item 4"), "msg: %s", err.msg);
    /* unknown kind */
    d->kind = 7;
    CHECK(sh_eval(g, d, 1, 0, &r, &err) == SH_EINVAL);
    toy_free(d);
    sh_graph_free(g);
}

TEST(eval_lm_delegates)
{
    /* a tiny random Llama and a token data set of two documents: sh_eval_ex
     * gives the same NLL as sh_eval_lm_ex and a token latency when asked */
    sh_error err = {0};
    sh_llama_config cfg = {.dim = 16, .hidden_dim = 32, .n_layers = 1, .n_heads = 2, .n_kv_heads = 2,
                           .vocab_size = 20, .seq_len = 8, .shared_classifier = 1};
    sh_graph *g = NULL;
    CHECK_OK(sh_llama_build(&cfg, 3, &g, &err), &err);
    if (!g) return;
    sh_dataset d = {0};
    int32_t toks[12] = {1, 5, 7, 9, 3, 2, 1, 4, 4, 8, 19, 0};
    int64_t off[3] = {0, 6, 12};
    d.kind = 2;
    d.n = 12;
    d.tokens = toks;
    d.vocab = 20;
    d.n_docs = 2;
    d.doc_off = off;
    sh_eval_report a, b;
    sh_eval_opts o = {.nthreads = 1, .measure_speed = 1, .max_seconds = 0.05, .min_runs = 3};
    CHECK_OK(sh_eval_ex(g, &d, &o, &a, &err), &err);
    o.measure_speed = 0;
    CHECK_OK(sh_eval_lm_ex(g, &d, &o, &b, &err), &err);
    CHECK(a.kind == 2 && a.n == 10 && b.n == 10);
    CHECK_NEAR(a.nll, b.nll, 1e-9);
    CHECK_NEAR(a.ppl, exp(a.nll), 1e-9 * a.ppl);
    CHECK(a.nll > 0 && a.nll < 10);
    CHECK(a.latency_ms_b1 > 0 && a.latency_runs >= 3);
    CHECK(a.params == sh_graph_param_count(g));
    sh_graph_free(g);
}
