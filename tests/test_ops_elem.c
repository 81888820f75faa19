/* test_ops_elem.c - elementwise op family: binary ops with broadcasting,
 * activations, Softmax/LogSoftmax, Clip, reductions.  Forward against the
 * PyTorch golden vectors (tests/gen/gen_elem.py), a finite-difference check
 * of every backward (tests/gradcheck.h), and clear errors on bad input. */
#include <string.h>

#include "golden_elem.h"
#include "gradcheck.h"
#include "ops/ops.h"
#include "test.h"

/* ---- forward vs PyTorch ---------------------------------------------------- */

TEST(elem_golden_binary_broadcast)
{
    golden_elem_run("bin_");
}

TEST(elem_golden_int_arith)
{
    golden_elem_run("int_");
}

TEST(elem_golden_pow)
{
    golden_elem_run("pow_");
}

TEST(elem_golden_unary)
{
    golden_elem_run("un_");
}

TEST(elem_golden_softmax)
{
    golden_elem_run("sm_");
    golden_elem_run("lsm_");
}

TEST(elem_golden_clip)
{
    golden_elem_run("clip_");
}

TEST(elem_golden_reduce)
{
    golden_elem_run("rmean_");
    golden_elem_run("rsum_");
    golden_elem_run("rmax_");
    golden_elem_run("rmin_");
}

/* ---- one-node runner for the checks below ---------------------------------- */

/* Run op on f32 graph inputs a (and b if not NULL); returns the program (caller
 * frees it and g) or NULL with err set. */
static sh_program *run1(const char *op, const char *attrs, sh_tensor *a, sh_tensor *b, sh_graph **gout, sh_error *err)
{
    sh_graph *g = sh_graph_new("t");
    g->opset = 17;
    const char *ins[2] = {"a", "b"}, *outs[1] = {"y"};
    sh_graph_add_input(g, "a", a->fmt, a->ndim, a->shape, err);
    if (b) sh_graph_add_input(g, "b", b->fmt, b->ndim, b->shape, err);
    int node = sh_graph_add_node(g, op, "n1", b ? 2 : 1, ins, 1, outs, err);
    if (node >= 0) golden_elem_attrs(g, node, (void *)attrs);
    sh_graph_mark_output(g, "y", err);
    *gout = g;
    sh_program *p = NULL;
    if (sh_program_new(g, NULL, &p, err)) return NULL;
    const sh_tensor *in[2] = {a, b};
    if (sh_program_run(p, in, b ? 2 : 1, err)) {
        sh_program_free(p);
        return NULL;
    }
    return p;
}

/* Large inputs take the threaded paths: compare with a naive loop. */
TEST(elem_binary_large_matches_naive)
{
    sh_error err = {0};
    int64_t sa[3] = {64, 128, 8}, sb[2] = {128, 1}, sc[1] = {8};
    sh_tensor *a = gradcheck_rand(3, sa, 1, -2, 2), *b = gradcheck_rand(2, sb, 2, 0.5f, 2), *c = gradcheck_rand(1, sc, 3, -1, 1);
    const char *ops[4] = {"Add", "Sub", "Mul", "Div"};
    for (int o = 0; o < 4; o++) {
        for (int which = 0; which < 3; which++) {
            sh_tensor *rhs = which == 0 ? b : which == 1 ? c : a;
            sh_graph *g = NULL;
            sh_program *p = run1(ops[o], NULL, a, rhs, &g, &err);
            CHECK_MSG(p, "%s: %s", ops[o], err.msg);
            if (!p) {
                sh_graph_free(g);
                continue;
            }
            const float *y = sh_f32(sh_program_output(p, 0)), *x = sh_f32(a), *r = sh_f32(rhs);
            int bad = 0;
            for (int64_t i = 0; i < 64 && !bad; i++)
                for (int64_t j = 0; j < 128 && !bad; j++)
                    for (int64_t k = 0; k < 8 && !bad; k++) {
                        int64_t ia = (i * 128 + j) * 8 + k;
                        float z = which == 0 ? r[j] : which == 1 ? r[k] : r[ia];
                        float e = o == 0 ? x[ia] + z : o == 1 ? x[ia] - z : o == 2 ? x[ia] * z : x[ia] / z;
                        if (y[ia] != e) {
                            CHECK_MSG(0, "%s case %d at %lld: %g vs %g", ops[o], which, (long long)ia, y[ia], e);
                            bad = 1;
                        }
                    }
            sh_program_free(p);
            sh_graph_free(g);
        }
    }
    sh_tensor_free(a), sh_tensor_free(b), sh_tensor_free(c);
}

/* ---- errors ------------------------------------------------------------------ */

TEST(elem_errors_are_clear)
{
    sh_error err = {0};
    sh_graph *g = NULL;
    int64_t s1[2] = {2, 3}, s2[1] = {4}, s3[2] = {2, 2};
    sh_tensor *a = gradcheck_rand(2, s1, 1, -1, 1), *b = gradcheck_rand(1, s2, 2, -1, 1);
    sh_program *p = run1("Add", NULL, a, b, &g, &err);
    CHECK(!p && err.code == SH_ESHAPE);
    CHECK_MSG(strstr(err.msg, "[2,3]") && strstr(err.msg, "[4]") && strstr(err.msg, "n1"), "%s", err.msg);
    sh_graph_free(g);

    p = run1("Softmax", "i:axis=5", a, NULL, &g, &err);
    CHECK_MSG(!p && strstr(err.msg, "axis 5") && strstr(err.msg, "[2,3]"), "%s", err.msg);
    sh_graph_free(g);

    p = run1("Gelu", "s:approximate=fast", a, NULL, &g, &err);
    CHECK_MSG(!p && strstr(err.msg, "approximate"), "%s", err.msg);
    sh_graph_free(g);

    p = run1("ReduceMean", "i:axes=2", a, NULL, &g, &err);
    CHECK_MSG(!p && strstr(err.msg, "axis 2"), "%s", err.msg);
    sh_graph_free(g);

    /* integer inputs of different formats */
    sh_tensor *i1 = sh_tensor_new(SH_I64, 2, s3, &err), *i2 = sh_tensor_new(SH_I32, 2, s3, &err);
    p = run1("Mul", NULL, i1, i2, &g, &err);
    CHECK_MSG(!p && strstr(err.msg, "i64") && strstr(err.msg, "i32"), "%s", err.msg);
    sh_graph_free(g);
    /* integer division by zero: an error, not a trap */
    p = run1("Div", NULL, i1, i1, &g, &err);
    CHECK_MSG(!p && strstr(err.msg, "division by zero"), "%s", err.msg);
    sh_graph_free(g);
    sh_tensor_free(i1), sh_tensor_free(i2);
    sh_tensor_free(a), sh_tensor_free(b);
}

/* ---- backward: finite differences ------------------------------------------- */

static void gc(const char *op, const char *attrs, int n_in, sh_tensor **in, double tol)
{
    char rep[4096] = "";
    int r = gradcheck_node(op, golden_elem_attrs, (void *)attrs, n_in, in, tol, rep, sizeof rep);
    CHECK_MSG(r == 0, "%s %s:\n%s", op, attrs ? attrs : "", rep);
}

TEST(elem_grad_binary)
{
    const char *ops[4] = {"Add", "Sub", "Mul", "Div"};
    int64_t shapes[5][2][4] = {
        {{2, 3, 4, 5}, {3, 1, 1}}, {{3, 1}, {1, 4}}, {{2, 3}, {2, 3}}, {{2, 3}, {0}}, {{4}, {2, 3, 4}},
    };
    int nd[5][2] = {{4, 3}, {2, 2}, {2, 2}, {2, 0}, {1, 3}};
    for (int o = 0; o < 4; o++)
        for (int s = 0; s < 5; s++) {
            sh_tensor *in[2];
            in[0] = gradcheck_rand(nd[s][0], shapes[s][0], 10 + s, -2, 2);
            in[1] = o == 3 ? gradcheck_rand(nd[s][1], shapes[s][1], 20 + s, 0.5f, 2)
                           : gradcheck_rand(nd[s][1], shapes[s][1], 20 + s, -2, 2);
            gc(ops[o], NULL, 2, in, 1e-2);
            sh_tensor_free(in[0]), sh_tensor_free(in[1]);
        }
}

TEST(elem_grad_pow)
{
    int64_t sx[2] = {3, 4}, se[1] = {4};
    sh_tensor *in[2] = {gradcheck_rand(2, sx, 1, 0.3f, 2), gradcheck_rand(1, se, 2, -1.5f, 2)};
    gc("Pow", NULL, 2, in, 1e-2);
    sh_tensor_free(in[1]);
    in[1] = sh_tensor_new(SH_F32, 0, NULL, NULL);
    sh_f32(in[1])[0] = 2.0f;
    gc("Pow", NULL, 2, in, 1e-2);
    sh_f32(in[1])[0] = 0.5f;
    gc("Pow", NULL, 2, in, 1e-2);
    sh_tensor_free(in[0]), sh_tensor_free(in[1]);
}

TEST(elem_grad_unary)
{
    static const struct {
        const char *op, *attrs;
        float lo, hi;
    } u[] = {
        {"Relu", NULL, -2, 2},       {"LeakyRelu", "f:alpha=0.2", -2, 2}, {"Sigmoid", NULL, -4, 4},
        {"Tanh", NULL, -2, 2},       {"Gelu", NULL, -3, 3},               {"Gelu", "s:approximate=tanh", -3, 3},
        {"Erf", NULL, -2, 2},        {"Exp", NULL, -2, 2},                {"Log", NULL, 0.2f, 3},
        {"Sqrt", NULL, 0.2f, 3},     {"Neg", NULL, -2, 2},                {"Abs", NULL, -2, 2},
        {"Reciprocal", NULL, 0.5f, 3},
        {"HardSigmoid", "f:alpha=0.3 f:beta=0.4", -4, 4}, {"HardSwish", NULL, -5, 5}, {"Softplus", NULL, -4, 4},
        {"Elu", "f:alpha=0.7", -2, 2}, {"Selu", NULL, -2, 2}, {"Softsign", NULL, -3, 3},
    };
    int64_t s[3] = {2, 3, 5};
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) {
        sh_tensor *x = gradcheck_rand(3, s, 100 + i, u[i].lo, u[i].hi);
        /* keep away from the kinks (Relu, LeakyRelu, Abs at 0; HardSwish at +-3;
         * HardSigmoid with alpha 0.3, beta 0.4 at -4/3 and 2) */
        static const float kinks[5] = {0.0f, 3.0f, -3.0f, -4.0f / 3.0f, 2.0f};
        for (int e = 0; e < 30; e++)
            for (int q = 0; q < 5; q++)
                if (fabsf(sh_f32(x)[e] - kinks[q]) < 0.05f) sh_f32(x)[e] = kinks[q] + 0.15f;
        gc(u[i].op, u[i].attrs, 1, &x, 1e-2);
        sh_tensor_free(x);
    }
}

TEST(elem_grad_softmax)
{
    int64_t s[3] = {2, 3, 4};
    const char *attrs[] = {NULL, "i:axis=1", "i:axis=0", "i:_opset=11", "i:_opset=11 i:axis=2"};
    for (int a = 0; a < 5; a++) {
        sh_tensor *x = gradcheck_rand(3, s, 7 + a, -3, 3);
        gc("Softmax", attrs[a], 1, &x, 1e-2);
        gc("LogSoftmax", attrs[a], 1, &x, 1e-2);
        sh_tensor_free(x);
    }
}

TEST(elem_grad_clip)
{
    int64_t s[2] = {4, 5};
    sh_tensor *lo = sh_tensor_new(SH_F32, 0, NULL, NULL), *hi = sh_tensor_new(SH_F32, 0, NULL, NULL);
    sh_f32(lo)[0] = -0.7f, sh_f32(hi)[0] = 0.9f;
    sh_tensor *x = gradcheck_rand(2, s, 3, -2, 2);
    for (int e = 0; e < 20; e++) /* away from the bounds */
        if (fabsf(sh_f32(x)[e] + 0.7f) < 0.02f || fabsf(sh_f32(x)[e] - 0.9f) < 0.02f) sh_f32(x)[e] = 0.1f;
    sh_tensor *in[3] = {x, lo, hi};
    gc("Clip", NULL, 3, in, 1e-2);
    gc("Clip", "f:min=-0.5 f:max=0.5", 1, in, 1e-2);
    sh_tensor_free(x), sh_tensor_free(lo), sh_tensor_free(hi);
}

TEST(elem_grad_reduce)
{
    int64_t s[4] = {2, 3, 4, 5};
    const char *ops[4] = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"};
    const char *attrs[4] = {"i:axes=2,3", "i:axes=1 i:keepdims=0", "i:axes=-1", NULL};
    for (int o = 0; o < 4; o++)
        for (int a = 0; a < 4; a++) {
            sh_tensor *x = gradcheck_rand(4, s, 50 + o * 4 + a, -2, 2);
            gc(ops[o], attrs[a], 1, &x, 1e-2);
            sh_tensor_free(x);
        }
    /* axes as an input (opset 13 ReduceSum, opset 18 others) */
    sh_tensor *x = gradcheck_rand(4, s, 99, -2, 2);
    int64_t na = 2;
    sh_tensor *ax = sh_tensor_new(SH_I64, 1, &na, NULL);
    ((int64_t *)ax->data)[0] = 0, ((int64_t *)ax->data)[1] = -2;
    sh_tensor *in[2] = {x, ax};
    gc("ReduceSum", NULL, 2, in, 1e-2);
    gc("ReduceMean", "i:keepdims=0", 2, in, 1e-2);
    sh_tensor_free(x), sh_tensor_free(ax);
}

/* Scalars, empty and zero-size tensors through every op of both families:
 * each run either works or returns one clear error (never a crash). */
TEST(elem_shape_ops_odd_shapes_never_crash)
{
    static const char *ops1[] = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Gelu", "Erf", "Exp", "Log", "Sqrt",
                                 "Neg", "Abs", "Reciprocal", "Softmax", "LogSoftmax", "Clip", "ReduceMean",
                                 "ReduceSum", "ReduceMax", "ReduceMin", "Identity", "Dropout", "Flatten",
                                 "Transpose", "Shape", "Squeeze", "Cast", "Concat", "Add", "Mul", "Div", "Pow"};
    int64_t shapes[5][3] = {{0}, {0}, {2, 0, 3}, {1}, {1, 1, 1}};
    int nds[5] = {0, 1, 3, 1, 3};
    for (size_t o = 0; o < sizeof ops1 / sizeof ops1[0]; o++)
        for (int s = 0; s < 5; s++) {
            sh_error err = {0};
            sh_tensor *a = gradcheck_rand(nds[s], shapes[s], 1, 0.5f, 1);
            sh_graph *g = sh_graph_new("t");
            const char *attrs = !strcmp(ops1[o], "Concat") ? "i:axis=0" : !strcmp(ops1[o], "Cast") ? "i:to=7" : NULL;
            int bin = !strcmp(ops1[o], "Add") || !strcmp(ops1[o], "Mul") || !strcmp(ops1[o], "Div") || !strcmp(ops1[o], "Pow");
            sh_program *p = run1(ops1[o], attrs, a, bin ? a : NULL, &g, &err);
            CHECK_MSG(p || (err.code != SH_OK && err.msg[0]), "%s on shape %d: no error message", ops1[o], s);
            sh_program_free(p);
            sh_graph_free(g);
            sh_tensor_free(a);
        }
}
