/* test_qat.c - quantization-aware training: the FakeQuant op against
 * PyTorch 1.13's learnable fake-quantize (forward, STE gradient of x, LSQ
 * gradient of the scale; tests/gen/gen_qat.py), finite differences (clipped
 * region through gradcheck; inside the range against the function with the
 * rounding residual held fixed, which is what LSQ differentiates), bad
 * attributes, and sh_qat_prepare / training / sh_qat_convert on small models. */
#include <string.h>
#include <sys/stat.h>

#include "core/quant_formats.h"
#include "gradcheck.h"
#include "ops/ops.h"
#include "test.h"

static char *gold_text;

static float *gold(const char *name, int64_t *n)
{
    if (!gold_text) {
        char p[512];
        struct stat st;
        snprintf(p, sizeof p, "tests/data/qat/golden.txt");
        if (stat(p, &st) != 0) {
            const char *f = __FILE__, *s = strrchr(f, '/');
            snprintf(p, sizeof p, "%.*s/data/qat/golden.txt", s ? (int)(s - f) : 1, s ? f : ".");
        }
        void *d;
        size_t sz;
        sh_error e = {0};
        if (sh_read_file(p, &d, &sz, &e)) {
            sh_test_fail(__FILE__, __LINE__, "cannot read golden file: %s", e.msg);
            return NULL;
        }
        gold_text = d;
    }
    size_t nl = strlen(name);
    for (const char *l = gold_text; l && *l;) {
        if (strncmp(l, name, nl) == 0 && l[nl] == ' ') {
            char *end;
            long long cnt = strtoll(l + nl + 1, &end, 10);
            float *v = malloc(sizeof(float) * (size_t)(cnt + 1));
            for (long long i = 0; i < cnt; i++) v[i] = strtof(end, &end);
            if (n) *n = cnt;
            return v;
        }
        l = strchr(l, '\n');
        if (l) l++;
    }
    sh_test_fail(__FILE__, __LINE__, "golden array %s missing", name);
    return NULL;
}

static sh_tensor *tens(int ndim, const int64_t *shape, const float *v)
{
    sh_error err = {0};
    sh_tensor *t = sh_tensor_new(SH_F32, ndim, shape, &err);
    if (v) memcpy(t->data, v, sizeof(float) * (size_t)sh_tensor_numel(t));
    return t;
}

/* Graph FakeQuant(x, s[, z]) with x and s graph inputs (training program:
 * gradients of both requested). */
static sh_graph *fq_graph(int nd, const int64_t *xs, int64_t ns, const float *z, int bits, int axis, int sym,
                          int narrow, float gs)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("fq");
    sh_graph_add_input(g, "x", SH_F32, nd, xs, &err);
    int64_t ss[1] = {ns};
    sh_graph_add_input(g, "s", SH_F32, 1, ss, &err);
    const char *in[3] = {"x", "s", "z"}, *out[1] = {"y"};
    if (z) sh_graph_add_init(g, "z", tens(1, ss, z), &err);
    int k = sh_graph_add_node(g, "FakeQuant", "fq", z ? 3 : 2, in, 1, out, &err);
    sh_node_set_int(g, k, "bits", bits);
    sh_node_set_int(g, k, "axis", axis);
    sh_node_set_int(g, k, "symmetric", sym);
    sh_node_set_int(g, k, "narrow", narrow);
    sh_node_set_float(g, k, "grad_scale", gs);
    sh_graph_mark_output(g, "y", &err);
    CHECK_OK(sh_graph_check(g, &err), &err);
    return g;
}

/* forward + backward of L = sum(y * r): y, dx, ds */
static void fq_run(sh_graph *g, sh_tensor *x, sh_tensor *s, sh_tensor *r, sh_tensor **y, sh_tensor **dx,
                   sh_tensor **ds)
{
    sh_error err = {0};
    sh_program *p = NULL;
    sh_run_opts ro = {.nthreads = 1, .training = 1};
    CHECK_OK(sh_program_new(g, &ro, &p, &err), &err);
    if (!p) return;
    CHECK_OK(sh_program_require_grad(p, "x", &err), &err);
    CHECK_OK(sh_program_require_grad(p, "s", &err), &err);
    const sh_tensor *ins[2] = {x, s};
    CHECK_OK(sh_program_run(p, ins, 2, &err), &err);
    *y = sh_tensor_clone(sh_program_output(p, 0), &err);
    const sh_tensor *douts[1] = {r};
    CHECK_OK(sh_program_backward(p, douts, 1, &err), &err);
    *dx = sh_tensor_clone(sh_program_grad(p, "x"), &err);
    *ds = sh_tensor_clone(sh_program_grad(p, "s"), &err);
    sh_program_free(p);
}

static void check_close(const char *what, const sh_tensor *t, const float *v, int64_t n, double tol)
{
    CHECK_MSG(t && sh_tensor_numel(t) == n, "%s: %lld elements, expected %lld", what,
              t ? (long long)sh_tensor_numel(t) : -1LL, (long long)n);
    if (!t) return;
    double worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(sh_f32(t)[i] - v[i]) / fmax(1.0, fabs(v[i]));
        if (d > worst) worst = d, at = i;
    }
    CHECK_MSG(worst <= tol, "%s[%lld] = %.9g, PyTorch %.9g", what, (long long)at, sh_f32(t)[at], v[at]);
}

TEST(fakequant_per_channel_matches_pytorch)
{
    int64_t n;
    float *x = gold("pc_x", &n), *s = gold("pc_s", NULL), *r = gold("pc_r", NULL), *y = gold("pc_y", NULL),
          *dx = gold("pc_dx", NULL), *ds = gold("pc_ds", NULL);
    if (!x) return;
    int64_t xs[4] = {4, 3, 2, 2}, ss[1] = {4};
    sh_graph *g = fq_graph(4, xs, 4, NULL, 4, 0, 1, 1, 0.37f);
    sh_tensor *X = tens(4, xs, x), *S = tens(1, ss, s), *R = tens(4, xs, r), *Y = NULL, *DX = NULL, *DS = NULL;
    fq_run(g, X, S, R, &Y, &DX, &DS);
    check_close("y", Y, y, n, 1e-6);
    check_close("dx", DX, dx, n, 1e-6);
    check_close("dscale", DS, ds, 4, 1e-4);
    sh_tensor_free(X), sh_tensor_free(S), sh_tensor_free(R), sh_tensor_free(Y), sh_tensor_free(DX), sh_tensor_free(DS);
    sh_graph_free(g);
    free(x), free(s), free(r), free(y), free(dx), free(ds);
}

TEST(fakequant_per_tensor_u8_matches_pytorch)
{
    int64_t n;
    float *x = gold("pt_x", &n), *s = gold("pt_s", NULL), *r = gold("pt_r", NULL), *y = gold("pt_y", NULL),
          *dx = gold("pt_dx", NULL), *ds = gold("pt_ds", NULL);
    if (!x) return;
    int64_t xs[3] = {2, 5, 3}, ss[1] = {1};
    float z = 37.0f;
    sh_graph *g = fq_graph(3, xs, 1, &z, 8, 0, 0, 0, 1.0f);
    sh_tensor *X = tens(3, xs, x), *S = tens(1, ss, s), *R = tens(3, xs, r), *Y = NULL, *DX = NULL, *DS = NULL;
    fq_run(g, X, S, R, &Y, &DX, &DS);
    check_close("y", Y, y, n, 1e-6);
    check_close("dx", DX, dx, n, 1e-6);
    check_close("dscale", DS, ds, 1, 1e-4);
    CHECK(DX && sh_f32(DX)[0] == 0.0f && sh_f32(DX)[n - 1] == 0.0f); /* clipped: no gradient */
    sh_tensor_free(X), sh_tensor_free(S), sh_tensor_free(R), sh_tensor_free(Y), sh_tensor_free(DX), sh_tensor_free(DS);
    sh_graph_free(g);
    free(x), free(s), free(r), free(y), free(dx), free(ds);
}

static void attrs_clip(sh_graph *g, int node, void *ctx)
{
    (void)ctx;
    sh_node_set_int(g, node, "bits", 3);
    sh_node_set_int(g, node, "axis", 1);
}

/* Outside the clip range y = s * qmax (or s * qmin): a true derivative, so
 * plain finite differences check dx = 0 and dscale = qmax / qmin. */
TEST(fakequant_gradcheck_clipped_region)
{
    int64_t xs[2] = {3, 4}, ss[1] = {4};
    sh_tensor *x = gradcheck_rand(2, xs, 11, 2.0f, 3.0f), *s = gradcheck_rand(1, ss, 12, 0.1f, 0.2f);
    for (int i = 0; i < 12; i += 2) sh_f32(x)[i] = -sh_f32(x)[i]; /* below and above */
    sh_tensor *in[2] = {x, s};
    char rep[2048];
    CHECK_MSG(gradcheck_node("FakeQuant", attrs_clip, NULL, 2, in, 1e-3, rep, sizeof rep) == 0, "%s", rep);
    sh_tensor_free(x);
    sh_tensor_free(s);
}

/* Inside the range, the gradients are those of y~(x, s) = s * (x/s + rho)
 * with the residual rho = round(x/s) - x/s held at its value (the STE / LSQ
 * surrogate): central differences of y~ in double vs the op's backward. */
TEST(fakequant_gradcheck_inside_with_fixed_residual)
{
    int64_t xs[2] = {2, 6}, ss[1] = {2};
    float s[2] = {0.07f, 0.13f}, x[12], r[12];
    for (int i = 0; i < 12; i++) {
        x[i] = (float)sin(i * 1.7) * 0.35f;
        r[i] = (float)cos(i * 0.9);
    }
    sh_graph *g = fq_graph(2, xs, 2, NULL, 4, 0, 1, 0, 1.0f);
    sh_tensor *X = tens(2, xs, x), *S = tens(1, ss, s), *R = tens(2, xs, r), *Y = NULL, *DX = NULL, *DS = NULL;
    fq_run(g, X, S, R, &Y, &DX, &DS);
    double eps = 1e-4;
    for (int c = 0; c < 2; c++) {
        double fd_s = 0;
        for (int j = 0; j < 6; j++) {
            int i = c * 6 + j;
            double v = (double)x[i] / s[c], q = nearbyint(v);
            double rho = q - v;
            CHECK(q >= -8 && q <= 7);
            /* y~ = s * (x/s + rho) = x + s * rho */
            double fx = ((x[i] + eps + s[c] * rho) - (x[i] - eps + s[c] * rho)) / (2 * eps);
            double fs = (((double)x[i] + (s[c] + eps) * rho) - ((double)x[i] + (s[c] - eps) * rho)) / (2 * eps);
            CHECK_NEAR(sh_f32(DX)[i], r[i] * fx, 1e-5);
            fd_s += r[i] * fs;
            CHECK_NEAR(sh_f32(Y)[i], q * s[c], 1e-6);
        }
        CHECK_NEAR(sh_f32(DS)[c], fd_s, 1e-4);
    }
    sh_tensor_free(X), sh_tensor_free(S), sh_tensor_free(R), sh_tensor_free(Y), sh_tensor_free(DX), sh_tensor_free(DS);
    sh_graph_free(g);
}

TEST(fakequant_bad_input)
{
    sh_error err = {0};
    int64_t xs[2] = {3, 4};
    /* bits outside 2..8 */
    sh_graph *g = fq_graph(2, xs, 1, NULL, 9, 0, 1, 0, 1.0f);
    sh_program *p = NULL;
    sh_run_opts ro = {.nthreads = 1};
    int rc = sh_program_new(g, &ro, &p, &err);
    sh_tensor *x = gradcheck_rand(2, xs, 1, -1, 1);
    int64_t ss[1] = {1}, s3[1] = {3};
    float one = 0.1f, three[3] = {0.1f, 0.1f, 0.1f}, neg = -1.0f;
    sh_tensor *s = tens(1, ss, &one);
    if (!rc) {
        const sh_tensor *ins[2] = {x, s};
        rc = sh_program_run(p, ins, 2, &err);
    }
    CHECK(rc == SH_EINVAL && strstr(err.msg, "bits 9"));
    sh_program_free(p);
    sh_graph_free(g);
    /* 3 scales for 3 rows along axis 1 (4 columns) */
    g = fq_graph(2, xs, 3, NULL, 8, 1, 1, 0, 1.0f);
    p = NULL;
    err.msg[0] = 0;
    sh_tensor *s3t = tens(1, s3, three);
    rc = sh_program_new(g, &ro, &p, &err);
    if (!rc) {
        const sh_tensor *ins[2] = {x, s3t};
        rc = sh_program_run(p, ins, 2, &err);
    }
    CHECK_MSG(rc == SH_ESHAPE && strstr(err.msg, "fq"), "rc %d: %s", rc, err.msg);
    sh_program_free(p);
    sh_graph_free(g);
    /* a scale <= 0 */
    g = fq_graph(2, xs, 1, NULL, 8, 0, 1, 0, 1.0f);
    p = NULL;
    sh_tensor *sn = tens(1, ss, &neg);
    rc = sh_program_new(g, &ro, &p, &err);
    if (!rc) {
        const sh_tensor *ins[2] = {x, sn};
        rc = sh_program_run(p, ins, 2, &err);
    }
    CHECK_MSG(rc == SH_EINVAL && strstr(err.msg, "must be > 0"), "rc %d: %s", rc, err.msg);
    sh_program_free(p);
    sh_graph_free(g);
    sh_tensor_free(x), sh_tensor_free(s), sh_tensor_free(s3t), sh_tensor_free(sn);
}


static void run1(sh_graph *g, const sh_dataset *d, int64_t n, float *out)
{
    sh_error err = {0};
    sh_program *p = NULL;
    sh_run_opts ro = {.nthreads = 1};
    CHECK_OK(sh_program_new(g, &ro, &p, &err), &err);
    int64_t shape[4] = {n, 1, 28, 28};
    sh_tensor *x = sh_tensor_view(SH_F32, 4, shape, d->x, &err);
    const sh_tensor *ins[1] = {x};
    CHECK_OK(sh_program_run(p, ins, 1, &err), &err);
    sh_tensor *o = sh_program_output(p, 0);
    memcpy(out, o->data, sizeof(float) * (size_t)sh_tensor_numel(o));
    sh_tensor_free(x);
    sh_program_free(p);
}

static int count_op(const sh_graph *g, const char *op)
{
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++) n += !strcmp(g->nodes[i].op, op);
    return n;
}

static int weight_same(const sh_graph *a, const sh_graph *b)
{
    if (a->n_values != b->n_values) return 0;
    for (int i = 0; i < a->n_values; i++) {
        const sh_tensor *t = a->values[i].init, *u = b->values[i].init;
        if (!t != !u) return 0;
        if (t && (t->nbytes != u->nbytes || memcmp(t->data, u->data, t->nbytes))) return 0;
    }
    return 1;
}

/* prepare = per-channel round-to-nearest PTQ before training; after a short
 * training the converted graph (no FakeQuant) computes the same outputs as
 * the fake-quantized one, its weights lie on the 4-bit grids, and the
 * original graph is unchanged. */
TEST(qat_prepare_train_convert_cnn_small)
{
    sh_error err = {0};
    sh_graph *g = NULL, *q = NULL, *c = NULL;
    CHECK_OK(sh_model_build("cnn-small", 3, &g, &err), &err);
    sh_graph *orig = sh_graph_clone(g, &err);
    sh_qat_opts o;
    sh_qat_opts_default(&o);
    o.bits = 4;
    CHECK_OK(sh_qat_prepare(g, &o, &q, &err), &err);
    if (!q) return;
    CHECK(count_op(q, "FakeQuant") == 4);
    /* PTQ by hand: w -> round(w / s) * s, s = max|w_c| / 7 */
    sh_graph *ptq = sh_graph_clone(g, &err);
    for (int i = 0; i < ptq->n_nodes; i++) {
        sh_node *n = &ptq->nodes[i];
        if (strcmp(n->op, "Conv") && strcmp(n->op, "Gemm")) continue;
        sh_tensor *W = ptq->values[n->in[1]].init;
        int64_t C = W->shape[0], per = sh_tensor_numel(W) / C;
        for (int64_t ch = 0; ch < C; ch++) {
            float mx = 0, *w = sh_f32(W) + ch * per;
            for (int64_t j = 0; j < per; j++) mx = fmaxf(mx, fabsf(w[j]));
            for (int64_t j = 0; j < per; j++) w[j] = nearbyintf(w[j] / (mx / 7)) * (mx / 7);
        }
    }
    sh_dataset *d = sh_test_synth_images(64, 5);
    float a[640], b[640];
    run1(ptq, d, 64, a);
    run1(q, d, 64, b);
    double md = 0;
    for (int i = 0; i < 640; i++) md = fmax(md, fabs(a[i] - b[i]));
    CHECK_MSG(md < 1e-4, "prepared graph differs from PTQ by %g", md);
    /* train briefly: weights and scales move */
    sh_train_opts to;
    sh_train_opts_default(&to);
    to.batch = 16;
    to.epochs = 1;
    to.nthreads = 1;
    to.lr = 2e-3f;
    sh_train_report rep;
    CHECK_OK(sh_train(q, d, NULL, &to, &rep, &err), &err);
    int sv = sh_graph_find(q, "layer1.conv.weight.qat_scale");
    CHECK(sv >= 0);
    sh_qat_report qr;
    CHECK_OK(sh_qat_convert(q, &c, &qr, &err), &err);
    if (!c) return;
    CHECK(count_op(c, "FakeQuant") == 0 && qr.n_layers == 4);
    CHECK_MSG(c->n_nodes == g->n_nodes, "%d nodes after conversion, %d before", c->n_nodes, g->n_nodes);
    CHECK(sh_graph_find(c, "layer1.conv.weight.qat_scale") < 0 || !c->values[sh_graph_find(c, "layer1.conv.weight.qat_scale")].init);
    run1(q, d, 64, a);
    run1(c, d, 64, b);
    md = 0;
    for (int i = 0; i < 640; i++) md = fmax(md, fabs(a[i] - b[i]));
    CHECK_MSG(md < 1e-4, "converted graph differs from the fake-quantized one by %g", md);
    /* weights of the converted graph: at most 15 levels per channel */
    const sh_tensor *W = c->values[sh_graph_find(c, "layer2.conv.weight")].init;
    const float *s = sh_f32(q->values[sh_graph_find(q, "layer2.conv.weight.qat_scale")].init);
    int64_t per = sh_tensor_numel(W) / W->shape[0];
    for (int64_t ch = 0; ch < W->shape[0]; ch++)
        for (int64_t j = 0; j < per; j++) {
            float v = sh_f32(W)[ch * per + j] / s[ch];
            CHECK(fabsf(v - nearbyintf(v)) < 1e-3f && fabsf(v) <= 7.001f);
        }
    CHECK(weight_same(g, orig));
    sh_qat_report_free(&qr);
    sh_graph_free(g), sh_graph_free(orig), sh_graph_free(q), sh_graph_free(c), sh_graph_free(ptq);
    sh_dataset_free(d);
}

TEST(qat_bad_input)
{
    sh_error err = {0};
    sh_graph *g = NULL, *q = NULL;
    CHECK_OK(sh_model_build("mlp-small", 1, &g, &err), &err);
    sh_qat_opts o;
    sh_qat_opts_default(&o);
    o.bits = 9;
    CHECK(sh_qat_prepare(g, &o, &q, &err) == SH_EINVAL && strstr(err.msg, "bits 9") && !q);
    o.bits = 4;
    o.act_bits = 8; /* no calibration data */
    CHECK(sh_qat_prepare(g, &o, &q, &err) == SH_EINVAL && strstr(err.msg, "calibration") && !q);
    o.act_bits = 0;
    o.exclude = "fc1,fc2";
    CHECK(sh_qat_prepare(g, &o, &q, &err) == SH_EINVAL && strstr(err.msg, "no Conv") && !q);
    sh_graph_free(g);
}

/* 8-bit activations: u8 fake-quant on the layer inputs with min/max ranges */
TEST(qat_activation_fakequant_ranges)
{
    sh_error err = {0};
    sh_graph *g = NULL, *q = NULL;
    CHECK_OK(sh_model_build("mlp-small", 1, &g, &err), &err);
    sh_dataset *d = sh_test_synth_images(64, 9);
    sh_qat_opts o;
    sh_qat_opts_default(&o);
    o.bits = 8;
    o.act_bits = 8;
    o.calib = d;
    o.calib_samples = 64;
    CHECK_OK(sh_qat_prepare(g, &o, &q, &err), &err);
    if (!q) return;
    CHECK(count_op(q, "FakeQuant") == 4);
    /* the input of fc1 is the flattened image: [0, max] over 64 images */
    int sv = sh_graph_find(q, "x0.qat_scale"), zv = sh_graph_find(q, "x0.qat_zero");
    CHECK(sv >= 0 && zv >= 0);
    float mx = 0;
    for (int64_t i = 0; i < 64 * 784; i++) mx = fmaxf(mx, d->x[i]);
    CHECK_NEAR(sh_f32(q->values[sv].init)[0], mx / 255.0f, 1e-6);
    CHECK(sh_f32(q->values[zv].init)[0] == 0.0f);
    float a[640], b[640];
    run1(g, d, 64, a);
    run1(q, d, 64, b);
    double md = 0;
    for (int i = 0; i < 640; i++) md = fmax(md, fabs(a[i] - b[i]));
    CHECK_MSG(md > 0 && md < 0.05, "8-bit fake-quant changes the logits by %g", md);
    sh_graph_free(g), sh_graph_free(q);
    sh_dataset_free(d);
}

/* mse_init: per channel, the clip with the least squared rounding error:
 * never more error than max|w| / qmax, and at 2 bits a smaller scale */
TEST(qat_mse_init_scales)
{
    sh_error err = {0};
    sh_graph *g = NULL, *a = NULL, *b = NULL;
    CHECK_OK(sh_model_build("mlp-small", 2, &g, &err), &err);
    sh_qat_opts o;
    sh_qat_opts_default(&o);
    o.bits = 2;
    CHECK_OK(sh_qat_prepare(g, &o, &a, &err), &err);
    o.mse_init = 1;
    CHECK_OK(sh_qat_prepare(g, &o, &b, &err), &err);
    if (!a || !b) return;
    const sh_tensor *W = g->values[sh_graph_find(g, "fc1.weight")].init;
    const float *sa = sh_f32(a->values[sh_graph_find(a, "fc1.weight.qat_scale")].init);
    const float *sb = sh_f32(b->values[sh_graph_find(b, "fc1.weight.qat_scale")].init);
    int64_t C = W->shape[0], K = W->shape[1];
    int smaller = 0;
    for (int64_t c = 0; c < C; c++) {
        double ea = 0, eb = 0;
        for (int64_t j = 0; j < K; j++) {
            float v = sh_f32(W)[c * K + j];
            float qa = fminf(fmaxf(nearbyintf(v / sa[c]), -1), 1), qb = fminf(fmaxf(nearbyintf(v / sb[c]), -1), 1);
            ea += (v - qa * sa[c]) * (v - qa * sa[c]);
            eb += (v - qb * sb[c]) * (v - qb * sb[c]);
        }
        CHECK(eb <= ea + 1e-12);
        smaller += sb[c] < sa[c];
    }
    CHECK_MSG(smaller == C, "%d of %lld channels got a smaller scale", smaller, (long long)C);
    sh_graph_free(g), sh_graph_free(a), sh_graph_free(b);
}

/* QAT export packed: each Gemm weight becomes the _ch / _t row of its bit
 * width holding exactly the learned scales; its dequantized values equal the
 * f32 grid sh_qat_convert gives, bit for bit; the file round-trips */
static void packed_grid_case(const char *model)
{
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK_OK(sh_model_build(model, 3, &g, &err), &err);
    if (!g) return;
    int bits[] = {4, 3, 2, 8, 4}, pt[] = {0, 0, 0, 0, 1};
    for (int t = 0; t < 5; t++) {
        sh_qat_opts o;
        sh_qat_opts_default(&o);
        o.bits = bits[t];
        o.per_tensor = pt[t];
        sh_graph *p = NULL, *c1 = NULL, *c2 = NULL;
        CHECK_OK(sh_qat_prepare(g, &o, &p, &err), &err);
        if (!p) continue;
        /* learned scales stand in: perturb them off the f16 grid */
        for (int v = 0; v < p->n_values; v++) {
            size_t l = strlen(p->values[v].name);
            if (l > 10 && !strcmp(p->values[v].name + l - 10, ".qat_scale") && p->values[v].init)
                for (int64_t i = 0; i < sh_tensor_numel(p->values[v].init); i++)
                    sh_f32(p->values[v].init)[i] *= 1.0f + 1e-4f * (float)(i % 7) + 3.1e-7f;
        }
        sh_qat_report r1, r2;
        CHECK_OK(sh_qat_convert(p, &c1, &r1, &err), &err);
        CHECK_OK(sh_qat_convert_packed(p, &c2, &r2, &err), &err);
        if (!c1 || !c2) continue;
        int npacked = 0, ncmp = 0;
        for (int i = 0; i < r2.n_layers; i++) npacked += r2.layers[i].packed;
        CHECK_MSG(npacked >= 2, "bits %d: %d weights packed", bits[t], npacked);
        for (int v = 0; v < c2->n_values; v++) {
            const sh_tensor *q = c2->values[v].init;
            if (!q || !sh_format_get(q->fmt)->is_quantized) continue;
            int per_t = 0, b = sh_qrows_base(q->fmt, &per_t);
            int want = bits[t] == 8 ? SH_Q8_0 : bits[t] == 4 ? SH_Q4_0 : bits[t] == 3 ? SH_Q3_0 : SH_Q2_1;
            CHECK_MSG(b == want && per_t == pt[t], "%s: %s", c2->values[v].name, sh_format_get(q->fmt)->name);
            const sh_tensor *f = c1->values[sh_graph_find(c1, c2->values[v].name)].init;
            int64_t N = q->shape[0], Kp = q->shape[1], K = sh_tensor_numel(f) / N;
            float *dq = malloc(sizeof(float) * (size_t)(N * Kp));
            CHECK_OK(sh_qtensor_to_f32(q, dq, &err), &err);
            int64_t diff = 0;
            for (int64_t r = 0; r < N; r++)
                for (int64_t k = 0; k < Kp; k++) {
                    float want_v = k < K ? sh_f32(f)[r * K + k] : 0.0f;
                    diff += memcmp(&dq[r * Kp + k], &want_v, 4) != 0 && !(dq[r * Kp + k] == 0 && want_v == 0);
                }
            CHECK_MSG(diff == 0, "%s (%s): %lld values differ from the f32 grid", c2->values[v].name,
                      sh_format_get(q->fmt)->name, (long long)diff);
            /* the learned f32 scale is stored as is */
            float m, d = sh_qrows_scale(q->data, 0, &m);
            CHECK(d > 0 && (b != SH_Q2_1 || m == -d));
            free(dq);
            ncmp++;
        }
        CHECK(ncmp == npacked);
        /* both run; outputs agree to the q8_0 activation rounding; save -> reload -> identical */
        sh_dataset *d = sh_test_synth_images(8, 5);
        float y1[80], y2[80], y3[80];
        run1(c1, d, 8, y1);
        run1(c2, d, 8, y2);
        double mx = 0, dm = 0;
        for (int i = 0; i < 80; i++) mx = fmax(mx, fabs(y1[i])), dm = fmax(dm, fabs(y1[i] - y2[i]));
        CHECK_MSG(dm <= 0.03 * mx + 1e-4, "%s bits %d: max |diff| %g of max %g", model, bits[t], dm, mx);
        char path[512];
        snprintf(path, sizeof path, "%s/qat_packed_%s_%d.onnx", sh_test_tmpdir(), model, t);
        CHECK_OK(sh_model_save(c2, path, &err), &err);
        sh_graph *l = NULL;
        CHECK_OK(sh_model_load(path, &l, &err), &err);
        if (l) {
            run1(l, d, 8, y3);
            CHECK(memcmp(y2, y3, sizeof y2) == 0);
            sh_graph_free(l);
        }
        sh_dataset_free(d);
        sh_qat_report_free(&r1), sh_qat_report_free(&r2);
        sh_graph_free(p), sh_graph_free(c1), sh_graph_free(c2);
    }
    sh_graph_free(g);
}

/* the MLP's Gemm weights and the CNN's Conv weights ([M, C, kh, kw] as rows
 * of C*kh*kw, kernel_shape / weight_k set on the Conv) */
TEST(qat_convert_packed_exact_grid)
{
    packed_grid_case("mlp-small");
    packed_grid_case("cnn-small");
}
