/* test_ops_nn.c - Conv, Gemm, MatMul, pooling, BatchNormalization,
 * LayerNormalization: PyTorch golden vectors (tests/gen/gen_nn.py writes
 * tests/data/nn/) and finite-difference checks of every backward. */
#include <string.h>

#include "test.h"
#include "gradcheck.h"
#include "ops/ops.h"

/* ---- case files ------------------------------------------------------ */

typedef struct nn_case {
    char name[64], op[64];
    int n_in, n_out, train;
    int n_attrs;
    char attrs[16][128];
    sh_tensor *t[16]; /* n_in inputs (NULL: omitted), then n_out outputs */
} nn_case;

static void case_free(nn_case *c)
{
    for (int i = 0; i < 16; i++) sh_tensor_free(c->t[i]);
    memset(c, 0, sizeof *c);
}

static int case_load(const char *name, nn_case *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    char path[256];
    snprintf(path, sizeof path, "tests/data/nn/%s.bin", name);
    void *buf;
    size_t n;
    sh_error err = {0};
    if (sh_read_file(path, &buf, &n, &err)) return -1;
    const char *p = buf, *end = p + n, *nl = memchr(p, '\n', n);
    if (!nl) {
        free(buf);
        return -1;
    }
    char line[2048];
    size_t ll = (size_t)(nl - p) < sizeof line - 1 ? (size_t)(nl - p) : sizeof line - 1;
    memcpy(line, p, ll);
    line[ll] = 0;
    char *save = NULL, *tok = strtok_r(line, " ", &save);
    int f = 0;
    for (; tok; tok = strtok_r(NULL, " ", &save), f++) {
        if (f == 0) snprintf(c->op, sizeof c->op, "%s", tok);
        else if (f == 1) c->n_in = atoi(tok);
        else if (f == 2) c->n_out = atoi(tok);
        else if (f == 3) c->train = atoi(tok);
        else if (c->n_attrs < 16) snprintf(c->attrs[c->n_attrs++], 128, "%s", tok);
    }
    p = nl + 1;
    for (int i = 0; i < c->n_in + c->n_out && i < 16; i++) {
        int32_t nd;
        if (p + 4 > end) goto bad;
        memcpy(&nd, p, 4);
        p += 4;
        if (nd < 0) continue;
        int64_t shape[SH_MAX_DIMS];
        if (nd > SH_MAX_DIMS || p + 8 * nd > end) goto bad;
        memcpy(shape, p, 8 * (size_t)nd);
        p += 8 * nd;
        c->t[i] = sh_tensor_new(SH_F32, nd, shape, &err);
        if (!c->t[i] || p + c->t[i]->nbytes > end) goto bad;
        memcpy(c->t[i]->data, p, c->t[i]->nbytes);
        p += c->t[i]->nbytes;
    }
    free(buf);
    return 0;
bad:
    free(buf);
    case_free(c);
    return -1;
}

/* attribute setter shared by the golden run and gradcheck */
static void case_attrs(sh_graph *g, int node, void *ctx)
{
    const nn_case *c = ctx;
    for (int a = 0; a < c->n_attrs; a++) {
        char buf[128], *eq;
        snprintf(buf, sizeof buf, "%s", c->attrs[a] + 2);
        if (!(eq = strchr(buf, '='))) continue;
        *eq++ = 0;
        char type = c->attrs[a][0];
        if (type == 'f') sh_node_set_float(g, node, buf, strtof(eq, NULL));
        else if (type == 's') sh_node_set_string(g, node, buf, eq);
        else {
            int64_t v[16];
            int nv = 0;
            for (char *s = eq; *s && nv < 16;) {
                v[nv++] = strtoll(s, &s, 10);
                if (*s == ',') s++;
            }
            const char *ints[] = {"pads", "strides", "dilations", "kernel_shape"};
            int is_list = 0;
            for (int q = 0; q < 4; q++) is_list |= !strcmp(buf, ints[q]);
            if (is_list) sh_node_set_ints(g, node, buf, nv, v);
            else sh_node_set_int(g, node, buf, v[0]);
        }
    }
}

static int n_cases(char names[][64], int max, const char *prefix)
{
    void *buf;
    size_t n;
    sh_error err = {0};
    if (sh_read_file("tests/data/nn/index.txt", &buf, &n, &err)) return -1;
    int k = 0;
    char *s = buf, *save = NULL;
    s[n - 1] = 0;
    for (char *t = strtok_r(s, "\n", &save); t && k < max; t = strtok_r(NULL, "\n", &save))
        if (!strncmp(t, prefix, strlen(prefix))) snprintf(names[k++], 64, "%s", t);
    free(buf);
    return k;
}

/* Run one case: input 0 a graph input, the other inputs initializers.
 * Compares every output (|d| <= 1e-4 (1 + |expected|)); train cases also
 * check the in-place running statistics. */
static void run_golden(const char *name, int nthreads)
{
    nn_case c;
    if (case_load(name, &c)) {
        CHECK_MSG(0, "cannot load case %s", name);
        return;
    }
    sh_error err = {0};
    sh_graph *g = sh_graph_new(name);
    char in_names[16][16], out_names[16][16];
    const char *ins[16], *outs[16];
    int node_out = c.train ? 1 : c.n_out;
    for (int i = 0; i < c.n_in; i++) {
        snprintf(in_names[i], 16, "in%d", i);
        ins[i] = c.t[i] ? in_names[i] : "";
        if (!c.t[i]) continue;
        if (i == 0) sh_graph_add_input(g, ins[i], SH_F32, c.t[i]->ndim, c.t[i]->shape, &err);
        else sh_graph_add_init(g, ins[i], sh_tensor_clone(c.t[i], &err), &err);
    }
    for (int j = 0; j < node_out; j++) {
        snprintf(out_names[j], 16, "out%d", j);
        outs[j] = out_names[j];
    }
    int k = sh_graph_add_node(g, c.op, "n", c.n_in, ins, node_out, outs, &err);
    CHECK_OK(k < 0 ? k : 0, &err);
    case_attrs(g, k, &c);
    for (int j = 0; j < node_out; j++) sh_graph_mark_output(g, outs[j], &err);
    sh_run_opts o = {.nthreads = nthreads, .training = c.train};
    sh_program *p = NULL;
    CHECK_OK(sh_program_new(g, &o, &p, &err), &err);
    const sh_tensor *x[1] = {c.t[0]};
    int rc = sh_program_run(p, x, 1, &err);
    CHECK_MSG(rc == SH_OK, "%s: %s", name, err.msg);
    for (int j = 0; rc == SH_OK && j < c.n_out; j++) {
        const sh_tensor *got;
        if (c.train && j > 0) got = g->values[sh_graph_find(g, in_names[2 + j])].init; /* in-place stats */
        else got = sh_program_output(p, j);
        const sh_tensor *exp = c.t[c.n_in + j];
        char a[96], b[96];
        CHECK_MSG(got && got->ndim == exp->ndim && sh_tensor_numel(got) == sh_tensor_numel(exp), "%s out%d: shape %s, expected %s",
                  name, j, got ? sh_shape_str(got->ndim, got->shape, a, sizeof a) : "?",
                  sh_shape_str(exp->ndim, exp->shape, b, sizeof b));
        if (!got || sh_tensor_numel(got) != sh_tensor_numel(exp)) continue;
        for (int d = 0; d < exp->ndim; d++) CHECK_MSG(got->shape[d] == exp->shape[d], "%s out%d dim %d", name, j, d);
        double worst = 0;
        int64_t we = 0;
        for (int64_t e = 0; e < sh_tensor_numel(exp); e++) {
            double d = fabs((double)sh_tensor_get_f(got, e) - sh_f32(exp)[e]) / (1.0 + fabs(sh_f32(exp)[e]));
            if (d > worst) worst = d, we = e;
        }
        CHECK_MSG(worst <= 1e-4, "%s out%d: element %lld got %.7g expected %.7g", name, j, (long long)we,
                  sh_tensor_get_f(got, we), sh_f32(exp)[we]);
    }
    sh_program_free(p);
    sh_graph_free(g);
    case_free(&c);
}

static void golden_family(const char *prefix)
{
    char names[64][64];
    int n = n_cases(names, 64, prefix);
    if (n < 0) {
        CHECK_MSG(0, "tests/data/nn/index.txt missing (run from the repository root)");
        return;
    }
    CHECK(n > 0);
    for (int i = 0; i < n; i++) {
        run_golden(names[i], 1);
        run_golden(names[i], 2);
    }
}

TEST(nn_conv_golden) { golden_family("conv_"); }
TEST(nn_gemm_golden) { golden_family("gemm_"); }
TEST(nn_matmul_golden) { golden_family("matmul_"); }
TEST(nn_maxpool_golden) { golden_family("maxpool_"); }
TEST(nn_avgpool_golden) { golden_family("avgpool_"); }
TEST(nn_globalpool_golden) { golden_family("global"); }
TEST(nn_batchnorm_golden) { golden_family("bn_"); }
TEST(nn_layernorm_golden) { golden_family("ln_"); }

/* ---- finite-difference checks over the same cases -------------------- */

static void grad_family(const char *prefix)
{
    char names[64][64];
    int n = n_cases(names, 64, prefix);
    CHECK(n > 0);
    for (int i = 0; i < n; i++) {
        nn_case c;
        if (case_load(names[i], &c)) {
            CHECK_MSG(0, "cannot load %s", names[i]);
            continue;
        }
        gradcheck_opts o = {0};
        o.tol = 1e-2;
        o.n_out = 1; /* Y only: BN running stats / LN Mean, InvStdDev are not differentiated */
        o.inference = !c.train && !strcmp(c.op, "BatchNormalization");
        if (sh_test_quick()) o.max_checks = 60;
        char rep[4096];
        int rc = gradcheck_node_ex(c.op, case_attrs, &c, c.n_in, c.t, &o, rep, sizeof rep);
        CHECK_MSG(rc == 0, "%s:\n%s", names[i], rep);
        /* weights as trainable initializers (the parameter path) */
        const sh_op_def *d = sh_op_find(c.op);
        unsigned pm = d->param_inputs & ~1u;
        if (!o.inference && pm) {
            o.as_param = pm;
            rc = gradcheck_node_ex(c.op, case_attrs, &c, c.n_in, c.t, &o, rep, sizeof rep);
            CHECK_MSG(rc == 0, "%s (as params):\n%s", names[i], rep);
        }
        case_free(&c);
    }
}

TEST(nn_conv_gradcheck) { grad_family("conv_"); }
TEST(nn_gemm_gradcheck) { grad_family("gemm_"); }
TEST(nn_matmul_gradcheck) { grad_family("matmul_"); }
TEST(nn_maxpool_gradcheck) { grad_family("maxpool_"); }
TEST(nn_avgpool_gradcheck) { grad_family("avgpool_"); }
TEST(nn_globalpool_gradcheck) { grad_family("global"); }
TEST(nn_batchnorm_gradcheck) { grad_family("bn_"); }
TEST(nn_layernorm_gradcheck) { grad_family("ln_"); }

TEST(gradcheck_relu_selftest)
{
    int64_t s[2] = {3, 5};
    sh_tensor *x = gradcheck_rand(2, s, 1, -1.0f, 1.0f);
    char rep[2048];
    sh_tensor *in[1] = {x};
    int rc = gradcheck_node("Relu", NULL, NULL, 1, in, 1e-2, rep, sizeof rep);
    CHECK_MSG(rc == 0, "%s", rep);
    CHECK_MSG(strstr(rep, "in0 [3,5]: 15/15 checked"), "%s", rep);
    sh_tensor_free(x);
}

/* ---- errors: one clear message naming the shapes, never a crash ------- */

typedef struct err_case {
    const char *op;
    int n_in;
    int ndim[4];
    int64_t shape[4][5];
    const char *attr_name; /* one int or ints attribute, or NULL */
    int n_attr;
    int64_t attr[4];
    int code;
    const char *needle[3];
} err_case;

static void err_attrs(sh_graph *g, int node, void *ctx)
{
    const err_case *e = ctx;
    if (!e->attr_name) return;
    if (e->n_attr == 1 && (!strcmp(e->attr_name, "group") || !strcmp(e->attr_name, "axis")))
        sh_node_set_int(g, node, e->attr_name, e->attr[0]);
    else sh_node_set_ints(g, node, e->attr_name, e->n_attr, e->attr);
}

TEST(nn_shape_errors)
{
    static const err_case cases[] = {
        {"Conv", 2, {4, 4}, {{1, 3, 28, 28}, {8, 1, 3, 3}}, NULL, 0, {0}, SH_ESHAPE,
         {"input [1,3,28,28] has 3 channels, weight [8,1,3,3] with group 1 expects 1"}},
        {"Conv", 2, {4, 4}, {{1, 4, 8, 8}, {6, 2, 3, 3}}, "group", 1, {3}, SH_ESHAPE, {"group 3", "[1,4,8,8]"}},
        {"Conv", 3, {4, 4, 1}, {{1, 3, 8, 8}, {8, 3, 3, 3}, {5}}, NULL, 0, {0}, SH_ESHAPE, {"bias [5]", "[8,3,3,3]"}},
        {"Conv", 2, {4, 4}, {{1, 3, 2, 2}, {8, 3, 3, 3}}, NULL, 0, {0}, SH_ESHAPE, {"[1,3,2,2]", "smaller than the kernel"}},
        {"Conv", 2, {4, 3}, {{1, 3, 8, 8}, {8, 3, 3}}, NULL, 0, {0}, SH_ESHAPE, {"[1,3,8,8]", "[8,3,3]"}},
        {"Conv", 2, {5, 5}, {{1, 3, 4, 4, 4}, {8, 3, 3, 3, 3}}, NULL, 0, {0}, SH_EUNSUPPORTED, {"[1,3,4,4,4]"}},
        {"Conv", 2, {4, 4}, {{1, 3, 8, 8}, {8, 3, 3, 3}}, "strides", 1, {2}, SH_EINVAL, {"strides has 1 values, expected 2"}},
        {"Gemm", 2, {2, 2}, {{3, 4}, {5, 6}}, NULL, 0, {0}, SH_ESHAPE, {"A [3,4]", "B [5,6]", "4 and 5"}},
        {"Gemm", 3, {2, 2, 1}, {{3, 4}, {4, 6}, {4}}, NULL, 0, {0}, SH_ESHAPE, {"C [4]", "[3,6]"}},
        {"MatMul", 2, {3, 3}, {{2, 3, 4}, {3, 4, 5}}, NULL, 0, {0}, SH_ESHAPE, {"[2,3,4]", "[3,4,5]", "batch"}},
        {"MatMul", 2, {2, 2}, {{3, 4}, {5, 6}}, NULL, 0, {0}, SH_ESHAPE, {"[3,4]", "[5,6]", "4 and 5"}},
        {"MaxPool", 1, {4}, {{1, 3, 8, 8}}, NULL, 0, {0}, SH_EINVAL, {"kernel_shape"}},
        {"MaxPool", 1, {4}, {{1, 3, 2, 2}}, "kernel_shape", 2, {3, 3}, SH_ESHAPE, {"[1,3,2,2]"}},
        {"AveragePool", 1, {2}, {{3, 8}}, "kernel_shape", 1, {2}, SH_ESHAPE, {"[3,8]"}},
        {"GlobalAveragePool", 1, {2}, {{3, 8}}, NULL, 0, {0}, SH_ESHAPE, {"[3,8]"}},
        {"BatchNormalization", 4, {4, 1, 1, 1}, {{2, 3, 4, 4}, {3}, {4}, {3}}, NULL, 0, {0}, SH_ESHAPE,
         {"[2,3,4,4] has 3 channels", "bias is [4]"}},
        {"LayerNormalization", 2, {3, 1}, {{2, 3, 5}, {3}}, NULL, 0, {0}, SH_ESHAPE, {"[2,3,5]", "scale [3]"}},
        {"LayerNormalization", 2, {3, 1}, {{2, 3, 5}, {5}}, "axis", 1, {3}, SH_EINVAL, {"axis 3"}},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const err_case *e = &cases[ci];
        sh_tensor *in[5] = {0};
        int n_in = e->op[0] == 'B' ? 5 : e->n_in;
        for (int i = 0; i < n_in; i++) {
            int j = i < e->n_in ? i : e->n_in - 1; /* BN: var shaped like the last given */
            in[i] = sh_tensor_new(SH_F32, e->ndim[j], e->shape[j], NULL);
            for (int64_t q = 0; q < sh_tensor_numel(in[i]); q++) sh_f32(in[i])[q] = 1.0f;
        }
        char rep[2048];
        gradcheck_opts o = {0};
        int rc = gradcheck_node_ex(e->op, err_attrs, (void *)e, n_in, in, &o, rep, sizeof rep);
        CHECK_MSG(rc == e->code, "case %zu (%s): rc %d, expected %d: %s", ci, e->op, rc, e->code, rep);
        for (int q = 0; q < 3 && e->needle[q]; q++)
            CHECK_MSG(strstr(rep, e->needle[q]), "case %zu (%s): '%s' not in: %s", ci, e->op, e->needle[q], rep);
        for (int i = 0; i < n_in; i++) sh_tensor_free(in[i]);
    }
}

/* sh_program_require_grad: graph-input gradients accumulate, zero_grad
 * clears them, and bad requests get one clear error. */
TEST(runtime_require_grad)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("t");
    int64_t as[2] = {2, 3}, bs[2] = {3, 2};
    sh_graph_add_input(g, "a", SH_F32, 2, as, &err);
    sh_graph_add_init(g, "b", gradcheck_rand(2, bs, 5, -1, 1), &err);
    const char *in[2] = {"a", "b"}, *out[1] = {"y"};
    CHECK(sh_graph_add_node(g, "MatMul", "mm", 2, in, 1, out, &err) >= 0);
    sh_graph_mark_output(g, "y", &err);
    sh_program *pi = NULL, *p = NULL;
    CHECK_OK(sh_program_new(g, NULL, &pi, &err), &err);
    CHECK(sh_program_require_grad(pi, "a", &err) == SH_EINVAL && strstr(err.msg, "training"));
    sh_run_opts o = {.nthreads = 1, .training = 1};
    CHECK_OK(sh_program_new(g, &o, &p, &err), &err);
    CHECK(sh_program_require_grad(p, "nope", &err) == SH_EINVAL && strstr(err.msg, "'nope'"));
    CHECK(sh_program_require_grad(p, "y", &err) == SH_EINVAL);
    sh_tensor *a = gradcheck_rand(2, as, 6, -1, 1);
    const sh_tensor *ins[1] = {a};
    CHECK_OK(sh_program_run(p, ins, 1, &err), &err);
    CHECK(sh_program_grad(p, "a") == NULL); /* not requested yet */
    CHECK_OK(sh_program_require_grad(p, "a", &err), &err);
    CHECK_OK(sh_program_run(p, ins, 1, &err), &err); /* re-plans */
    int64_t ys[2] = {2, 2};
    sh_tensor *dy = sh_tensor_new(SH_F32, 2, ys, &err);
    for (int i = 0; i < 4; i++) sh_f32(dy)[i] = 1.0f;
    const sh_tensor *d[1] = {dy};
    CHECK_OK(sh_program_backward(p, d, 1, &err), &err);
    CHECK_OK(sh_program_backward(p, d, 1, &err), &err);
    sh_tensor *ga = sh_program_grad(p, "a"), *gb = sh_program_grad(p, "b");
    CHECK(ga && gb);
    const float *B = g->values[sh_graph_find(g, "b")].init->data;
    for (int i = 0; ga && i < 2; i++)
        for (int k = 0; k < 3; k++) CHECK_NEAR(sh_f32(ga)[i * 3 + k], 2.0 * (B[k * 2] + B[k * 2 + 1]), 1e-5);
    CHECK(sh_program_num_params(p) == 1); /* b only: a is an input, not a parameter */
    sh_program_zero_grad(p);
    for (int i = 0; ga && i < 6; i++) CHECK(sh_f32(ga)[i] == 0.0f);
    sh_tensor_free(a);
    sh_tensor_free(dy);
    sh_program_free(p);
    sh_program_free(pi);
    sh_graph_free(g);
}
