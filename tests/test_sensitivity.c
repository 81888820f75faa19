/* test_sensitivity.c - per-layer sensitivity (src/compress/sensitivity.c)
 * and automatic mixed precision / per-layer sparsity (autoselect.c) on
 * built-in models with fixed seeds and a small Fashion-MNIST slice. */
#include <string.h>
#include <unistd.h>

#include "test.h"

static int have_fmnist(void)
{
    return access("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", R_OK) == 0 &&
           access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) == 0;
}

static sh_dataset *load(const char *spec)
{
    sh_error err = {0};
    sh_dataset *d = NULL;
    CHECK_OK(sh_dataset_load(spec, &d, &err), &err);
    return d;
}

/* mlp (seed 1) trained one epoch on 2048 training images: ~70 % accuracy,
 * so that drops mean something. */
static sh_graph *trained_mlp(void)
{
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("mlp", 1, &g, &err), &err);
    sh_dataset *tr = load("fashion-mnist:train,n=2048");
    sh_train_opts o;
    sh_train_opts_default(&o);
    o.epochs = 2;
    o.batch = 32;
    o.nthreads = 2;
    sh_train_report rep;
    CHECK_OK(sh_train(g, tr, NULL, &o, &rep, &err), &err);
    sh_dataset_free(tr);
    return g;
}

static int64_t zeros_of(const sh_graph *g, const char *w)
{
    int v = sh_graph_find(g, w);
    if (v < 0 || !g->values[v].init) return -1;
    const float *x = g->values[v].init->data;
    int64_t n = sh_tensor_numel(g->values[v].init), z = 0;
    for (int64_t i = 0; i < n; i++) z += x[i] == 0.0f;
    return z;
}

/* The comparer: the original against itself gives KL 0, drop 0 and the
 * accuracy sh_eval_ex finds on the same items. */
TEST(sens_compare_self_matches_eval)
{
    if (!have_fmnist()) SKIP("Fashion-MNIST not installed (Debian package dataset-fashion-mnist)");
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("lenet5", 3, &g, &err), &err);
    sh_dataset *d = load("fashion-mnist:test,n=300");
    sh_compare *c = NULL;
    CHECK_OK(sh_compare_new(g, d, 256, 0, 2, &c, &err), &err);
    double base = 0;
    int64_t n = 0;
    CHECK(sh_compare_info(c, &base, &n) == 1);
    CHECK(n == 256);
    sh_eval_opts eo;
    memset(&eo, 0, sizeof eo);
    eo.limit = 256;
    eo.nthreads = 2;
    sh_eval_report er;
    CHECK_OK(sh_eval_ex(g, d, &eo, &er, &err), &err);
    CHECK_NEAR(base, (double)er.correct / 256.0, 1e-12);
    sh_compare_result r;
    CHECK_OK(sh_compare_eval(c, g, &r, &err), &err);
    CHECK_NEAR(r.kl, 0, 1e-12);
    CHECK_NEAR(r.drop, 0, 1e-12);
    CHECK_NEAR(r.metric, base, 1e-12);
    sh_compare_free(c);
    sh_dataset_free(d);
    sh_graph_free(g);
}

/* Quantization table: shape, sizes, monotone KL, and Conv layers marked as
 * simulated (weight-only quantization stores Gemm weights only). */
TEST(sens_quant_table_shape_and_monotone)
{
    if (!have_fmnist()) SKIP("Fashion-MNIST not installed");
    sh_error err = {0};
    sh_graph *g = trained_mlp();
    sh_dataset *d = load("fashion-mnist:test,n=256");
    sh_sens_opts o;
    memset(&o, 0, sizeof o);
    o.data = d;
    o.nthreads = 2;
    sh_sens_report r;
    CHECK_OK(sh_sensitivity(g, &o, &r, &err), &err);
    CHECK(r.task == 1 && r.prune == 0);
    CHECK(r.n_levels == 4 && r.n_layers == 3);
    CHECK(r.samples == 256);
    CHECK(r.evaluations == 12);
    CHECK(r.base_metric > 0.5);
    static const char *names[3] = {"fc1", "fc2", "fc3"};
    static const int64_t rows[3] = {300, 100, 10}, cols[3] = {784, 300, 100};
    for (int i = 0; i < r.n_layers; i++) {
        const sh_sens_layer *l = &r.layers[i];
        CHECK(!strcmp(l->name, names[i]));
        CHECK(l->rows == rows[i] && l->cols == cols[i]);
        CHECK(l->params == rows[i] * cols[i]);
        CHECK(l->macs == rows[i] * cols[i]);
        CHECK(l->quantizable == 1);
        int64_t kp = (cols[i] + 31) / 32 * 32;
        /* q8_0 34 bytes, q4_0 18, q3_0 14, q2_1 12 per 32 weights */
        CHECK(l->cells[0].bytes == rows[i] * kp / 32 * 34);
        CHECK(l->cells[1].bytes == rows[i] * kp / 32 * 18);
        CHECK(l->cells[2].bytes == rows[i] * kp / 32 * 14);
        CHECK(l->cells[3].bytes == rows[i] * kp / 32 * 12);
        for (int j = 0; j < 4; j++) CHECK(l->cells[j].kl >= 0 && isfinite(l->cells[j].kl));
        /* fewer bits never lower the KL (within 10 % + 1e-7) */
        for (int j = 1; j < 4; j++)
            CHECK_MSG(l->cells[j].kl >= l->cells[j - 1].kl * 0.9 - 1e-7, "%s: KL %g at %s bits < %g at %s bits", l->name,
                      l->cells[j].kl, r.levels[j].label, l->cells[j - 1].kl, r.levels[j - 1].label);
        CHECK(l->cells[0].kl < 1e-3);
        CHECK(l->cells[3].kl > 10 * l->cells[0].kl);
    }
    sh_sens_report_free(&r);
    sh_dataset_free(d);
    sh_graph_free(g);
}

/* One program changed in place gives what a fresh program on the pruned
 * graph gives: the cell equals sh_compare_eval of sh_prune(include=layer),
 * also for a Conv whose weight is folded with BatchNorm (cnn). */
TEST(sens_prune_cells_match_fresh_variant)
{
    if (!have_fmnist()) SKIP("Fashion-MNIST not installed");
    if (sh_test_quick()) SKIP("slow under sanitizers");
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("cnn", 2, &g, &err), &err);
    sh_dataset *d = load("fashion-mnist:test,n=64");
    sh_sens_opts o;
    memset(&o, 0, sizeof o);
    o.prune = 1;
    o.data = d;
    o.samples = 64;
    o.nthreads = 2;
    o.include = "res.a.conv,fc";
    CHECK_OK(sh_sens_parse_levels("0.5,0.9,2:4", 1, &o, &err), &err);
    CHECK(o.n_levels == 3 && o.levels[2].n == 2 && o.levels[2].m == 4);
    CHECK_NEAR(o.levels[2].value, 0.5, 0);
    sh_sens_report r;
    CHECK_OK(sh_sensitivity(g, &o, &r, &err), &err);
    CHECK(r.n_layers == 2);
    CHECK(!strcmp(r.layers[0].name, "res.a.conv") && !strcmp(r.layers[1].name, "fc"));
    CHECK(r.layers[0].macs == 64LL * 576 * 49);
    sh_compare *c = NULL;
    CHECK_OK(sh_compare_new(g, d, 64, 0, 2, &c, &err), &err);
    for (int i = 0; i < 2; i++) {
        sh_prune_opts po;
        sh_prune_opts_default(&po);
        po.include = r.layers[i].name;
        po.ratio = 0.9;
        sh_graph *p = NULL;
        CHECK_OK(sh_prune(g, &po, &p, NULL, &err), &err);
        sh_compare_result cr;
        CHECK_OK(sh_compare_eval(c, p, &cr, &err), &err);
        CHECK_NEAR(r.layers[i].cells[1].kl, cr.kl, 1e-6 * (1 + cr.kl));
        CHECK_NEAR(r.layers[i].cells[1].drop, cr.drop, 1e-9);
        CHECK(r.layers[i].cells[1].bytes == r.layers[i].params - zeros_of(p, r.layers[i].weight));
        sh_graph_free(p);
        CHECK(r.layers[i].cells[1].kl >= r.layers[i].cells[0].kl * 0.9);
    }
    sh_compare_free(c);
    sh_sens_report_free(&r);
    sh_dataset_free(d);
    sh_graph_free(g);
}

/* Budget: the parameter bytes stay within it; at the size of the uniform
 * 4-bit model the choice's summed KL is at most uniform 4-bit's. */
TEST(sens_autoquant_budget)
{
    if (!have_fmnist()) SKIP("Fashion-MNIST not installed");
    sh_error err = {0};
    sh_graph *g = trained_mlp();
    sh_dataset *d = load("fashion-mnist:test,n=256");
    sh_autoquant_opts o;
    memset(&o, 0, sizeof o);
    o.sens_opts.data = d;
    o.sens_opts.nthreads = 2;
    sh_sens_report sr;
    CHECK_OK(sh_sensitivity(g, &o.sens_opts, &sr, &err), &err);
    o.sens = &sr;
    sh_quant_opts qo = {0};
    qo.bits = 4;
    sh_graph *u = NULL;
    CHECK_OK(sh_quantize_weights(g, &qo, &u, NULL, &err), &err);
    int64_t b4 = sh_graph_param_bytes(u);
    double kl4 = 0;
    for (int i = 0; i < sr.n_layers; i++) kl4 += sr.layers[i].cells[1].kl;
    o.budget_bytes = b4;
    sh_graph *q = NULL;
    sh_auto_report r;
    CHECK_OK(sh_autoquant(g, &o, &q, &r, &err), &err);
    CHECK(r.bytes_after <= b4);
    CHECK(sh_graph_param_bytes(q) == r.bytes_after);
    CHECK(r.est_kl <= kl4 + 1e-12);
    CHECK(r.n_layers == 3 && r.evaluations == 1);
    /* the model holds the chosen formats */
    for (int i = 0; i < r.n_layers; i++) {
        int v = sh_graph_find(q, sr.layers[i].weight);
        CHECK(v >= 0);
        sh_format f = q->values[v].init->fmt;
        if (r.layers[i].choice == 0) CHECK(f == SH_F32);
        else CHECK(f == (sh_format)sh_quant_format((int)r.layers[i].choice, 0, NULL));
    }
    /* the reported drop is the combined model's */
    sh_compare *c = NULL;
    CHECK_OK(sh_compare_new(g, d, 0, 0, 2, &c, &err), &err);
    sh_compare_result cr;
    CHECK_OK(sh_compare_eval(c, q, &cr, &err), &err);
    CHECK_NEAR(cr.drop, r.drop, 1e-9);
    CHECK_NEAR(cr.kl, r.kl, 1e-9);
    sh_compare_free(c);
    sh_auto_report_free(&r);
    sh_graph_free(q);
    /* a tighter budget gives a smaller model; below all-2-bit: a clear error */
    o.budget_bytes = b4 * 3 / 4;
    CHECK_OK(sh_autoquant(g, &o, &q, &r, &err), &err);
    CHECK(r.bytes_after <= b4 * 3 / 4);
    sh_auto_report_free(&r);
    sh_graph_free(q);
    o.budget_bytes = 1000;
    CHECK(sh_autoquant(g, &o, &q, &r, &err) == SH_EINVAL);
    CHECK(q == NULL);
    CHECK(strstr(err.msg, "smallest reachable") != NULL);
    sh_graph_free(u);
    sh_sens_report_free(&sr);
    sh_dataset_free(d);
    sh_graph_free(g);
}

/* --max-drop: the result, evaluated again, is within the drop. */
TEST(sens_autoquant_max_drop_verified)
{
    if (!have_fmnist()) SKIP("Fashion-MNIST not installed");
    if (sh_test_quick()) SKIP("slow under sanitizers");
    sh_error err = {0};
    sh_graph *g = trained_mlp();
    sh_dataset *d = load("fashion-mnist:test,n=512");
    sh_autoquant_opts o;
    memset(&o, 0, sizeof o);
    o.sens_opts.data = d;
    o.sens_opts.nthreads = 2;
    sh_sens_report sr;
    CHECK_OK(sh_sensitivity(g, &o.sens_opts, &sr, &err), &err);
    o.sens = &sr;
    sh_compare *c = NULL;
    CHECK_OK(sh_compare_new(g, d, 0, 0, 2, &c, &err), &err);
    static const double drops[3] = {2.0, 0.5, 0.0};
    for (int k = 0; k < 3; k++) {
        o.max_drop = drops[k];
        sh_graph *q = NULL;
        sh_auto_report r;
        CHECK_OK(sh_autoquant(g, &o, &q, &r, &err), &err);
        sh_compare_result cr;
        CHECK_OK(sh_compare_eval(c, q, &cr, &err), &err);
        CHECK_MSG(cr.drop <= drops[k] + 1e-9, "max drop %g: measured %g", drops[k], cr.drop);
        CHECK_NEAR(cr.drop, r.drop, 1e-9);
        CHECK(r.bytes_after <= r.bytes_before);
        if (k == 0) CHECK(r.bytes_after < r.bytes_before / 3); /* 2 pp allows mostly 4 bits or fewer */
        sh_auto_report_free(&r);
        sh_graph_free(q);
    }
    o.max_drop = -1;
    sh_graph *q = NULL;
    sh_auto_report r;
    CHECK(sh_autoquant(g, &o, &q, &r, &err) == SH_EINVAL);
    CHECK(strstr(err.msg, ">= 0") != NULL);
    sh_compare_free(c);
    sh_sens_report_free(&sr);
    sh_dataset_free(d);
    sh_graph_free(g);
}

/* Target sparsity is met within 0.5 % (counted in the returned model), the
 * uniform baseline is measured, sensitive layers get less. */
TEST(sens_autoprune_target_sparsity_and_flops)
{
    if (!have_fmnist()) SKIP("Fashion-MNIST not installed");
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("lenet5", 4, &g, &err), &err);
    sh_dataset *d = load("fashion-mnist:test,n=256");
    sh_autoprune_opts o;
    sh_autoprune_opts_default(&o);
    o.sens_opts.data = d;
    o.sens_opts.nthreads = 2;
    sh_sens_report sr;
    CHECK_OK(sh_sensitivity(g, &o.sens_opts, &sr, &err), &err);
    CHECK(sr.prune == 1 && sr.n_layers == 5);
    o.sens = &sr;
    o.target_sparsity = 0.8;
    sh_graph *p = NULL;
    sh_auto_report r;
    CHECK_OK(sh_autoprune(g, &o, &p, &r, &err), &err);
    int64_t z = 0, n = 0;
    for (int i = 0; i < sr.n_layers; i++) {
        int64_t zi = zeros_of(p, sr.layers[i].weight);
        CHECK(zi == r.layers[i].zeros);
        z += zi, n += sr.layers[i].params;
        CHECK(r.layers[i].choice <= 0.98 + 1e-9);
    }
    CHECK_NEAR((double)z / (double)n, 0.8, 0.005);
    /* the choice's summed KL (convex-hull model) is at most uniform 0.8's,
     * interpolated between the measured 0.75 and 0.9 */
    double uni = 0;
    for (int i = 0; i < sr.n_layers; i++)
        uni += sr.layers[i].cells[2].kl + (sr.layers[i].cells[3].kl - sr.layers[i].cells[2].kl) * (0.05 / 0.15);
    CHECK_MSG(r.est_kl <= uni + 1e-12, "per-layer choice: summed KL %g > uniform %g", r.est_kl, uni);
    CHECK_NEAR(r.sparsity, (double)z / (double)n, 1e-12);
    CHECK(r.uniform_drop > -1e9 && r.uniform_metric >= 0);
    CHECK(r.evaluations == 2);
    sh_auto_report_free(&r);
    sh_graph_free(p);
    /* FLOPs: remaining MACs at most half */
    o.target_sparsity = -1;
    o.target_flops = 0.5;
    CHECK_OK(sh_autoprune(g, &o, &p, &r, &err), &err);
    CHECK(r.flops_frac <= 0.5 + 1e-9);
    CHECK(r.flops_frac >= 0.45);
    double rem = 0, tot = 0;
    for (int i = 0; i < sr.n_layers; i++) {
        double perw = (double)sr.layers[i].macs / (double)sr.layers[i].params;
        tot += (double)sr.layers[i].macs;
        rem += perw * (double)(sr.layers[i].params - zeros_of(p, sr.layers[i].weight));
    }
    CHECK_NEAR(rem / tot, r.flops_frac, 1e-9);
    sh_auto_report_free(&r);
    sh_graph_free(p);
    /* bad targets */
    o.target_flops = -1;
    o.target_sparsity = 1.0;
    CHECK(sh_autoprune(g, &o, &p, &r, &err) == SH_EINVAL && p == NULL);
    CHECK(strstr(err.msg, "outside [0, 1)") != NULL);
    o.target_sparsity = -0.5;
    CHECK(sh_autoprune(g, &o, &p, &r, &err) == SH_EINVAL);
    CHECK(strstr(err.msg, "exactly one target") != NULL);
    o.target_sparsity = 0.5;
    o.target_flops = 0.5;
    CHECK(sh_autoprune(g, &o, &p, &r, &err) == SH_EINVAL);
    o.target_flops = -1;
    o.target_sparsity = 0.97;
    o.max_layer_sparsity = 0.9;
    CHECK(sh_autoprune(g, &o, &p, &r, &err) == SH_EINVAL);
    CHECK(strstr(err.msg, "unreachable") != NULL);
    /* a quantization table is not a pruning table */
    sh_sens_opts qs;
    memset(&qs, 0, sizeof qs);
    qs.data = d;
    qs.n_levels = 1;
    qs.levels[0].value = 8;
    qs.include = "fc3";
    sh_sens_report qr;
    CHECK_OK(sh_sensitivity(g, &qs, &qr, &err), &err);
    o.sens = &qr;
    o.max_layer_sparsity = 0;
    o.target_sparsity = 0.5;
    CHECK(sh_autoprune(g, &o, &p, &r, &err) == SH_EINVAL);
    sh_sens_report_free(&qr);
    sh_sens_report_free(&sr);
    sh_dataset_free(d);
    sh_graph_free(g);
}

TEST(sens_autoprune_latency_bounds)
{
    if (!have_fmnist()) SKIP("Fashion-MNIST not installed");
    if (sh_test_quick()) SKIP("slow under sanitizers");
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("lenet5", 5, &g, &err), &err);
    sh_dataset *d = load("fashion-mnist:test,n=128");
    sh_autoprune_opts o;
    sh_autoprune_opts_default(&o);
    o.sens_opts.data = d;
    o.sens_opts.samples = 128;
    o.sens_opts.nthreads = 1;
    o.latency_runs = 10;
    /* unreachable: a clear error with the latency reached */
    o.target_latency_ms = 1e-6;
    sh_graph *p = NULL;
    sh_auto_report r;
    CHECK(sh_autoprune(g, &o, &p, &r, &err) == SH_EINVAL && p == NULL);
    CHECK(strstr(err.msg, "unreachable") != NULL);
    /* already fast enough: nothing removed */
    o.target_latency_ms = 1e4;
    CHECK_OK(sh_autoprune(g, &o, &p, &r, &err), &err);
    CHECK(r.latency_ms > 0 && r.latency_ms <= 1e4);
    CHECK(r.n_layers >= 2);
    CHECK(sh_graph_param_count(p) == sh_graph_param_count(g));
    for (int i = 0; i < r.n_layers; i++) CHECK(r.layers[i].choice == 0);
    sh_auto_report_free(&r);
    sh_graph_free(p);
    sh_dataset_free(d);
    sh_graph_free(g);
}

TEST(sens_bad_input)
{
    sh_error err = {0};
    sh_sens_opts o;
    memset(&o, 0, sizeof o);
    CHECK(sh_sens_parse_levels("8,4,9", 0, &o, &err) == SH_EINVAL);
    CHECK(strstr(err.msg, "9 bits") != NULL);
    CHECK(sh_sens_parse_levels("0.5", 0, &o, &err) == SH_EINVAL);
    CHECK(sh_sens_parse_levels("0.5,1.2", 1, &o, &err) == SH_EINVAL);
    CHECK(strstr(err.msg, "outside [0, 1)") != NULL);
    CHECK(sh_sens_parse_levels("3:2", 1, &o, &err) == SH_EINVAL);
    CHECK(sh_sens_parse_levels("0.5,,0.7", 1, &o, &err) == SH_EINVAL);
    CHECK(sh_sens_parse_levels("abc", 1, &o, &err) == SH_EINVAL);
    CHECK_OK(sh_sens_parse_levels("8,2", 0, &o, &err), &err);
    CHECK(o.n_levels == 2 && o.levels[1].value == 2 && !strcmp(o.levels[1].label, "2"));
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("mlp", 1, &g, &err), &err);
    sh_sens_report r;
    /* no data */
    CHECK(sh_sensitivity(g, &o, &r, &err) == SH_EINVAL);
    CHECK(strstr(err.msg, "evaluation data") != NULL);
    if (have_fmnist()) {
        sh_dataset *d = load("fashion-mnist:test,n=32");
        o.data = d;
        o.include = "fc9";
        CHECK(sh_sensitivity(g, &o, &r, &err) == SH_EINVAL);
        CHECK(strstr(err.msg, "fc9") != NULL);
        o.include = NULL;
        o.scheme = 2; /* 8-bit has no asymmetric format */
        CHECK(sh_sensitivity(g, &o, &r, &err) == SH_EINVAL);
        /* a language-model data set for an image model */
        sh_dataset_free(d);
    }
    sh_graph_free(g);
}

/* A language model: the KL grows from 8 to 2 bits; the original against
 * itself has KL 0 and its own perplexity. */
TEST(sens_lm_llama_tiny)
{
    const char *sh = sh_test_shared();
    if (!sh) SKIP("../shared not found");
    if (sh_test_quick()) SKIP("slow under sanitizers");
    char spec[1024];
    snprintf(spec, sizeof spec, "text:%s/data/text/tinystories_sample.txt", sh);
    sh_error err = {0};
    sh_dataset *d = NULL;
    CHECK_OK(sh_dataset_load(spec, &d, &err), &err);
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("llama-tiny", 1, &g, &err), &err);
    sh_sens_opts o;
    memset(&o, 0, sizeof o);
    o.data = d;
    o.samples = 256;
    o.seq_len = 64;
    o.nthreads = 2;
    o.include = "layers.0.attention.wq,layers.3.feed_forward.w2";
    CHECK_OK(sh_sens_parse_levels("8,2", 0, &o, &err), &err);
    sh_sens_report r;
    CHECK_OK(sh_sensitivity(g, &o, &r, &err), &err);
    CHECK(r.task == 2 && r.samples == 256 && r.n_layers == 2);
    CHECK(r.base_metric > 1 && r.base_metric < 1000);
    for (int i = 0; i < 2; i++) {
        CHECK(r.layers[i].quantizable);
        CHECK(r.layers[i].macs == r.layers[i].params);
        CHECK(r.layers[i].cells[1].kl > r.layers[i].cells[0].kl);
    }
    sh_compare *c = NULL;
    CHECK_OK(sh_compare_new(g, d, 256, 64, 2, &c, &err), &err);
    double base = 0;
    CHECK(sh_compare_info(c, &base, NULL) == 2);
    CHECK_NEAR(base, r.base_metric, 1e-9 * base);
    sh_compare_result cr;
    CHECK_OK(sh_compare_eval(c, g, &cr, &err), &err);
    CHECK_NEAR(cr.kl, 0, 1e-9);
    CHECK_NEAR(cr.metric, base, 1e-9 * base);
    sh_compare_free(c);
    sh_sens_report_free(&r);
    sh_dataset_free(d);
    sh_graph_free(g);
}

/* The simulated rounding matches the real weight-only quantizer: with only
 * that layer stored at 2 bits (layer_bits, BatchNorm folded), the KL is the
 * same within what the q8_0 activations of the real kernel add. */
TEST(sens_quant_simulation_matches_real_layer)
{
    if (!have_fmnist()) SKIP("Fashion-MNIST not installed");
    if (sh_test_quick()) SKIP("slow under sanitizers");
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build("cnn", 7, &g, &err), &err);
    sh_dataset *d = load("fashion-mnist:test,n=64");
    sh_sens_opts o;
    memset(&o, 0, sizeof o);
    o.data = d;
    o.samples = 64;
    o.nthreads = 2;
    o.include = "layer4.conv,fc";
    CHECK_OK(sh_sens_parse_levels("2", 0, &o, &err), &err);
    sh_sens_report r;
    CHECK_OK(sh_sensitivity(g, &o, &r, &err), &err);
    CHECK(r.n_layers == 2);
    sh_compare *c = NULL;
    CHECK_OK(sh_compare_new(g, d, 64, 0, 2, &c, &err), &err);
    static const char *lb[2] = {"layer4.conv=2,layer1.conv=0,layer2.conv=0,res.a.conv=0,res.b.conv=0,fc=0",
                                "fc=2,layer1.conv=0,layer2.conv=0,res.a.conv=0,res.b.conv=0,layer4.conv=0"};
    for (int i = 0; i < 2; i++) {
        sh_quant_opts qo = {0};
        qo.bits = 2;
        qo.layer_bits = lb[i];
        sh_graph *q = NULL;
        sh_quant_report qr;
        CHECK_OK(sh_quantize_weights(g, &qo, &q, &qr, &err), &err);
        CHECK(r.layers[i].quantizable);
        for (int k = 0; k < qr.n_layers; k++)
            if (!strcmp(qr.layers[k].name, r.layers[i].name)) CHECK(qr.layers[k].bytes_after == r.layers[i].cells[0].bytes);
        sh_compare_result cr;
        CHECK_OK(sh_compare_eval(c, q, &cr, &err), &err);
        CHECK_MSG(fabs(cr.kl - r.layers[i].cells[0].kl) <= 0.25 * cr.kl + 1e-6, "%s: simulated KL %g, real %g",
                  r.layers[i].name, r.layers[i].cells[0].kl, cr.kl);
        sh_quant_report_free(&qr);
        sh_graph_free(q);
    }
    sh_compare_free(c);
    sh_sens_report_free(&r);
    sh_dataset_free(d);
    sh_graph_free(g);
}
