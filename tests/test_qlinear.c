/* test_qlinear.c - the integer ops (QLinearConv, QGemm, QLinearAdd,
 * QLinearGlobalAveragePool, dynamic QGemm) against PyTorch 1.13's quantized
 * kernels (tests/gen/gen_qlinear.py -> tests/data/qlinear/), the portable
 * int8 GEMM path against the SIMD one, bad input, inference-only, and the QDQ
 * rewrites (sh_graph_to_qdq / sh_graph_from_qdq).  The ONNX node tests of
 * these ops run in test_conformance.c. */
#include <string.h>

#include "ops/ops.h"
#include "ops/qlinear.h"
#include "test.h"

/* names are cut to their buffers on purpose */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define QDIR "tests/data/qlinear/"

typedef struct qcase {
    char name[64], op[64];
    int n_in;
    double tol;
    char attrs[16][128];
    int n_attrs;
    sh_tensor *t[16]; /* n_in inputs (NULL: omitted), then the expected output */
} qcase;

static void qcase_free(qcase *c)
{
    for (int i = 0; i < 16; i++) sh_tensor_free(c->t[i]);
    memset(c, 0, sizeof *c);
}

static const sh_format codes[] = {SH_F32, SH_F16, SH_BF16, SH_I8, SH_U8, SH_I32};

static int qcase_load(const char *name, qcase *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    char path[256];
    snprintf(path, sizeof path, QDIR "%s.bin", name);
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
    for (int f = 0; tok; tok = strtok_r(NULL, " ", &save), f++) {
        if (f == 0) snprintf(c->op, sizeof c->op, "%s", tok);
        else if (f == 1) c->n_in = atoi(tok);
        else if (f == 2) c->tol = atof(tok);
        else if (c->n_attrs < 16) snprintf(c->attrs[c->n_attrs++], 128, "%s", tok);
    }
    p = nl + 1;
    for (int i = 0; i < c->n_in + 1 && i < 16; i++) {
        int32_t code, nd;
        if (p + 4 > end) goto bad;
        memcpy(&code, p, 4);
        p += 4;
        if (code < 0) continue;
        if (code > 5 || p + 4 > end) goto bad;
        memcpy(&nd, p, 4);
        p += 4;
        int64_t shape[SH_MAX_DIMS];
        if (nd < 0 || nd > SH_MAX_DIMS || p + 8 * nd > end) goto bad;
        memcpy(shape, p, 8 * (size_t)nd);
        p += 8 * nd;
        c->t[i] = sh_tensor_new(codes[code], nd, shape, &err);
        if (!c->t[i] || p + c->t[i]->nbytes > end) goto bad;
        memcpy(c->t[i]->data, p, c->t[i]->nbytes);
        p += c->t[i]->nbytes;
    }
    free(buf);
    return 0;
bad:
    free(buf);
    qcase_free(c);
    return -1;
}

static void set_attrs(sh_graph *g, int node, const qcase *c)
{
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

/* One-node graph: input 0 is the graph input "x", the others initializers
 * (clones), as in a quantized model. */
static sh_graph *one_node(const char *op, sh_tensor *const *in, int n_in, sh_error *err)
{
    sh_graph *g = sh_graph_new("q");
    char names[16][16];
    const char *pin[16];
    for (int i = 0; i < n_in; i++) {
        pin[i] = "";
        if (!in[i]) continue;
        snprintf(names[i], sizeof names[i], i ? "in%d" : "x", i);
        pin[i] = names[i];
        if (i == 0) sh_graph_add_input(g, "x", in[0]->fmt, in[0]->ndim, in[0]->shape, err);
        else sh_graph_add_init(g, names[i], sh_tensor_clone(in[i], err), err);
    }
    const char *outs[] = {"y"};
    sh_graph_add_node(g, op, "qnode", n_in, pin, 1, outs, err);
    sh_graph_mark_output(g, "y", err);
    return g;
}

/* Run c through a program; returns a clone of the output (NULL on error). */
static sh_tensor *run_case(sh_graph *g, const sh_tensor *x, sh_error *err)
{
    sh_run_opts o = {.nthreads = 2, .no_optimize = 1};
    sh_program *p = NULL;
    sh_tensor *y = NULL;
    if (sh_program_new(g, &o, &p, err) == SH_OK && sh_program_run(p, &x, 1, err) == SH_OK)
        y = sh_tensor_clone(sh_program_output(p, 0), err);
    sh_program_free(p);
    return y;
}

/* max |a - b| over elements, and the count of unequal elements */
static double max_diff(const sh_tensor *a, const sh_tensor *b, int64_t *unequal)
{
    double m = 0;
    *unequal = 0;
    for (int64_t i = 0; i < sh_tensor_numel(a); i++) {
        double d = fabs((double)sh_tensor_get_f(a, i) - (double)sh_tensor_get_f(b, i));
        if (d > m) m = d;
        if (d != 0) (*unequal)++;
    }
    return m;
}

/* The node forward at an explicit int8 GEMM level, outside any program. */
static sh_tensor *run_level(sh_graph *g, sh_tensor *const *in, int n_in, int level, sh_error *err)
{
    const sh_node *nd = &g->nodes[0];
    const sh_op_def *d = sh_op_find(nd->op);
    void *state = NULL;
    sh_kctx k = {.node = nd, .err = err, .nthreads = 2, .state = &state};
    sh_tensor shape = {0}, *outs[1] = {&shape};
    const sh_tensor *cin[16];
    for (int i = 0; i < n_in; i++) cin[i] = in[i];
    if (d->infer(&k, cin, n_in, outs, 1)) return NULL;
    sh_tensor *y = sh_tensor_new(shape.fmt, shape.ndim, shape.shape, err);
    int rc = !strcmp(nd->op, "QLinearConv") || !strcmp(nd->op, "ConvInteger")
                 ? sh_qlinear_conv_run(&k, cin, n_in, &y, level)
                 : sh_qgemm_node_run(&k, cin, n_in, &y, level);
    sh_qlinear_state_free(state);
    if (rc) {
        sh_tensor_free(y);
        return NULL;
    }
    return y;
}

static int case_names(char names[][64], int max)
{
    void *buf;
    size_t n;
    sh_error err = {0};
    if (sh_read_file(QDIR "index.txt", &buf, &n, &err)) return -1;
    int k = 0;
    char *s = buf, *end = s + n;
    while (s < end && k < max) {
        char *e = memchr(s, '\n', (size_t)(end - s));
        if (!e) e = end;
        if (e > s) snprintf(names[k++], 64, "%.*s", (int)(e - s), s);
        s = e + 1;
    }
    free(buf);
    return k;
}

static void run_golden(const char *prefix_op)
{
    char names[64][64];
    int n = case_names(names, 64);
    if (n < 0) {
        CHECK_MSG(0, QDIR "index.txt missing (run from the repository root)");
        return;
    }
    int ran = 0;
    for (int i = 0; i < n; i++) {
        qcase c;
        if (qcase_load(names[i], &c)) {
            CHECK_MSG(0, "cannot load %s", names[i]);
            continue;
        }
        if (strcmp(c.op, prefix_op) != 0) {
            qcase_free(&c);
            continue;
        }
        ran++;
        sh_error err = {0};
        sh_graph *g = one_node(c.op, c.t, c.n_in, &err);
        set_attrs(g, 0, &c);
        sh_tensor *y = run_case(g, c.t[0], &err);
        const sh_tensor *want = c.t[c.n_in];
        CHECK_MSG(y, "%s: run failed: %s", c.name, err.msg);
        if (y) {
            CHECK_MSG(y->fmt == want->fmt && y->ndim == want->ndim &&
                          !memcmp(y->shape, want->shape, sizeof(int64_t) * (size_t)want->ndim),
                      "%s: output format/shape differ", c.name);
            int64_t uneq;
            double md = max_diff(y, want, &uneq);
            int64_t tot = sh_tensor_numel(want);
            if (getenv("SHRINK_TEST_VERBOSE"))
                printf("    %-28s max diff %g, %lld of %lld differ\n", c.name, md, (long long)uneq, (long long)tot);
            CHECK_MSG(md <= c.tol, "%s: max diff %g > %g (%lld of %lld differ)", c.name, md, c.tol, (long long)uneq,
                      (long long)tot);
            /* integer outputs: tol 0, every element equals torch's */
            /* the portable int8 GEMM gives the same bytes as the SIMD path */
            if (!strcmp(c.op, "QLinearConv") || !strcmp(c.op, "QGemm")) {
                sh_tensor *yr = run_level(g, c.t, c.n_in, SH_CPU_REF, &err);
                sh_tensor *yb = run_level(g, c.t, c.n_in, -1, &err);
                CHECK_MSG(yr && yb, "%s: level run failed: %s", c.name, err.msg);
                if (yr && yb) {
                    CHECK_MSG(yr->nbytes == y->nbytes && !memcmp(yr->data, y->data, y->nbytes),
                              "%s: ref level differs from the program's output", c.name);
                    CHECK_MSG(!memcmp(yb->data, y->data, y->nbytes), "%s: best level differs", c.name);
                }
                sh_tensor_free(yr);
                sh_tensor_free(yb);
            }
        }
        sh_tensor_free(y);
        sh_graph_free(g);
        qcase_free(&c);
    }
    CHECK_MSG(ran > 0, "no %s cases in " QDIR, prefix_op);
}

TEST(qlinear_conv_golden) { run_golden("QLinearConv"); }
TEST(qlinear_qgemm_golden) { run_golden("QGemm"); }
TEST(qlinear_add_golden) { run_golden("QLinearAdd"); }
TEST(qlinear_gap_golden) { run_golden("QLinearGlobalAveragePool"); }

/* ---- bad input -------------------------------------------------------------- */

/* a small QLinearConv: x u8 [1,2,5,5], w s8 [3,2,3,3] per channel */
static void small_conv(sh_tensor **t)
{
    sh_error err = {0};
    int64_t xs[] = {1, 2, 5, 5}, wsh[] = {3, 2, 3, 3}, c3[] = {3};
    t[0] = sh_tensor_new(SH_U8, 4, xs, &err);
    for (int i = 0; i < 50; i++) ((uint8_t *)t[0]->data)[i] = (uint8_t)(i * 37 % 256);
    t[1] = sh_tensor_new(SH_F32, 0, NULL, &err);
    *(float *)t[1]->data = 0.02f;
    t[2] = sh_tensor_new(SH_U8, 0, NULL, &err);
    *(uint8_t *)t[2]->data = 100;
    t[3] = sh_tensor_new(SH_I8, 4, wsh, &err);
    for (int i = 0; i < 54; i++) ((int8_t *)t[3]->data)[i] = (int8_t)(i * 29 % 255 - 127);
    t[4] = sh_tensor_new(SH_F32, 1, c3, &err);
    for (int i = 0; i < 3; i++) ((float *)t[4]->data)[i] = 0.01f * (float)(i + 1);
    t[5] = sh_tensor_new(SH_I8, 1, c3, &err);
    t[6] = sh_tensor_new(SH_F32, 0, NULL, &err);
    *(float *)t[6]->data = 0.5f;
    t[7] = sh_tensor_new(SH_U8, 0, NULL, &err);
    *(uint8_t *)t[7]->data = 128;
    t[8] = sh_tensor_new(SH_I32, 1, c3, &err);
    for (int i = 0; i < 3; i++) ((int32_t *)t[8]->data)[i] = 1000 * (i - 1);
}

/* the one error of running QLinearConv on inputs t (n_in of them) */
static int conv_error(sh_tensor **t, int n_in, const char *want, const char *op)
{
    sh_error err = {0};
    sh_graph *g = one_node(op ? op : "QLinearConv", t, n_in, &err);
    if (op) sh_node_set_int(g, 0, "transB", 1);
    else sh_node_set_ints(g, 0, "pads", 4, (int64_t[]){1, 1, 1, 1});
    sh_run_opts o = {.nthreads = 1, .no_optimize = 1};
    sh_program *p = NULL;
    int rc = sh_program_new(g, &o, &p, &err);
    const sh_tensor *x = t[0];
    if (!rc) rc = sh_program_run(p, &x, 1, &err);
    sh_program_free(p);
    sh_graph_free(g);
    int ok = rc != SH_OK && strstr(err.msg, "qnode") && strstr(err.msg, want);
    if (!ok && *want) printf("    error was: %s\n", err.msg);
    return ok;
}

TEST(qlinear_bad_input)
{
    sh_tensor *t[9];
    sh_error err = {0};
    small_conv(t);
    /* the well-formed graph runs */
    CHECK(conv_error(t, 9, "", NULL) == 0);
    /* wrong zero-point type: x_zero_point i32 */
    sh_tensor *keep = t[2];
    t[2] = sh_tensor_new(SH_I32, 0, NULL, &err);
    CHECK(conv_error(t, 9, "x_zero_point has format i32", NULL));
    sh_tensor_free(t[2]);
    t[2] = keep;
    /* w_scale that does not match the 3 output channels */
    keep = t[4];
    t[4] = sh_tensor_new(SH_F32, 1, (int64_t[]){4}, &err);
    CHECK(conv_error(t, 9, "w_scale [4]", NULL));
    sh_tensor_free(t[4]);
    t[4] = keep;
    /* zero scale */
    *(float *)t[6]->data = 0.0f;
    CHECK(conv_error(t, 9, "y_scale[0] = 0", NULL));
    *(float *)t[6]->data = 0.5f;
    /* missing y_scale */
    keep = t[6];
    t[6] = NULL;
    CHECK(conv_error(t, 9, "needs x, x_scale", NULL));
    t[6] = keep;
    /* bias that is not i32 [M] */
    keep = t[8];
    t[8] = sh_tensor_new(SH_F32, 1, (int64_t[]){3}, &err);
    CHECK(conv_error(t, 9, "must be i32 [3]", NULL));
    sh_tensor_free(t[8]);
    t[8] = keep;
    /* QGemm: B of the wrong format, C of the wrong length */
    sh_tensor *q[9] = {0};
    q[0] = sh_tensor_new(SH_U8, 2, (int64_t[]){2, 4}, &err);
    q[1] = t[1], q[2] = t[2];
    q[3] = sh_tensor_new(SH_F32, 2, (int64_t[]){3, 4}, &err);
    q[4] = t[4], q[5] = t[5];
    CHECK(conv_error(q, 6, "B has format f32", "QGemm"));
    sh_tensor_free(q[3]);
    q[3] = sh_tensor_new(SH_I8, 2, (int64_t[]){3, 4}, &err);
    q[6] = sh_tensor_new(SH_I32, 1, (int64_t[]){5}, &err);
    CHECK(conv_error(q, 7, "C [5] (i32) must be i32 [3]", "QGemm"));
    sh_tensor_free(q[0]);
    sh_tensor_free(q[3]);
    sh_tensor_free(q[6]);
    for (int i = 0; i < 9; i++) sh_tensor_free(t[i]);
}

/* Training through an integer op is an error naming the node, not a silent
 * zero gradient. */
TEST(qlinear_no_training)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("qdq");
    int64_t s[] = {2, 3};
    sh_graph_add_input(g, "x", SH_F32, 2, s, &err);
    sh_tensor *sc = sh_tensor_new(SH_F32, 0, NULL, &err);
    *(float *)sc->data = 0.1f;
    sh_graph_add_init(g, "s", sc, &err);
    sh_graph_add_init(g, "z", sh_tensor_new(SH_U8, 0, NULL, &err), &err);
    CHECK(sh_graph_add_node(g, "QuantizeLinear", "quant", 3, (const char *[]){"x", "s", "z"}, 1,
                            (const char *[]){"q"}, &err) >= 0);
    CHECK(sh_graph_add_node(g, "DequantizeLinear", "dequant", 3, (const char *[]){"q", "s", "z"}, 1,
                            (const char *[]){"y"}, &err) >= 0);
    sh_graph_mark_output(g, "y", &err);
    sh_run_opts o = {.nthreads = 1, .training = 1};
    sh_program *p = NULL;
    CHECK_OK(sh_program_new(g, &o, &p, &err), &err);
    CHECK_OK(sh_program_require_grad(p, "x", &err), &err);
    sh_tensor *x = sh_tensor_new(SH_F32, 2, s, &err);
    for (int i = 0; i < 6; i++) sh_f32(x)[i] = 0.3f * (float)i - 0.5f;
    const sh_tensor *xi = x;
    CHECK_OK(sh_program_run(p, &xi, 1, &err), &err);
    /* forward is right: 0.3 i - 0.5 rounded to steps of 0.1, clamped at 0 (u8, zero point 0) */
    sh_tensor *y = sh_program_output(p, 0);
    CHECK_NEAR(sh_f32(y)[0], 0.0, 1e-6);
    CHECK_NEAR(sh_f32(y)[3], 0.4, 1e-6);
    sh_tensor *dy = sh_tensor_new(SH_F32, 2, s, &err);
    const sh_tensor *d = dy;
    int rc = sh_program_backward(p, &d, 1, &err);
    CHECK(rc == SH_EUNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "dequant") && strstr(err.msg, "inference only"), "message: %s", err.msg);
    sh_tensor_free(dy);
    sh_tensor_free(x);
    sh_program_free(p);
    sh_graph_free(g);
}

/* ---- QDQ rewrites ------------------------------------------------------------ */

static void add_f32(sh_graph *g, const char *name, int nd, const int64_t *shape, const float *v)
{
    sh_error err = {0};
    sh_tensor *t = sh_tensor_new(SH_F32, nd, shape, &err);
    for (int64_t i = 0; i < sh_tensor_numel(t); i++) sh_f32(t)[i] = v[i];
    sh_graph_add_init(g, name, t, &err);
}

static void add_int(sh_graph *g, const char *name, sh_format f, int nd, const int64_t *shape, uint32_t seed, int lo,
                    int hi)
{
    sh_error err = {0};
    sh_tensor *t = sh_tensor_new(f, nd, shape, &err);
    for (int64_t i = 0; i < sh_tensor_numel(t); i++) {
        seed = seed * 1664525u + 1013904223u;
        int v = lo + (int)((seed >> 8) % (uint32_t)(hi - lo + 1));
        if (f == SH_U8) ((uint8_t *)t->data)[i] = (uint8_t)v;
        else if (f == SH_I8) ((int8_t *)t->data)[i] = (int8_t)v;
        else ((int32_t *)t->data)[i] = v;
    }
    sh_graph_add_init(g, name, t, &err);
}

static int add_node(sh_graph *g, const char *op, const char *name, int n_in, const char *const *in, const char *out)
{
    sh_error err = {0};
    int k = sh_graph_add_node(g, op, name, n_in, in, 1, &out, &err);
    if (k < 0) printf("    add_node %s: %s\n", name, err.msg);
    return k;
}

/* x f32 [N,2,8,8] -> QuantizeLinear -> QLinearConv 3x3 (relu) -> c1 ->
 * QLinearConv 1x1 -> c2 -> QLinearAdd(c1, c2, relu) -> MaxPool 2 -> Flatten ->
 * QGemm (u8, relu) -> QGemm (f32 out) -> y; plus QLinearGlobalAveragePool(c1)
 * -> DequantizeLinear -> y2 */
static sh_graph *static_int8_graph(void)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("int8");
    g->opset = 13;
    sh_graph_add_input(g, "x", SH_F32, 4, (int64_t[]){-1, 2, 8, 8}, &err);
    float s1[] = {0.02f}, w1s[4] = {0.004f, 0.006f, 0.005f, 0.007f}, s2[] = {0.03f}, w2s[] = {0.01f},
          s3[] = {0.035f}, s4[] = {0.04f}, g1s[8], g2s[3], sg[] = {0.025f};
    for (int i = 0; i < 8; i++) g1s[i] = 0.002f + 0.0003f * (float)i;
    for (int i = 0; i < 3; i++) g2s[i] = 0.003f + 0.001f * (float)i;
    add_f32(g, "xs", 0, NULL, s1);
    add_int(g, "xz", SH_U8, 0, NULL, 1, 120, 120);
    add_int(g, "w1", SH_I8, 4, (int64_t[]){4, 2, 3, 3}, 7, -127, 127);
    add_f32(g, "w1s", 1, (int64_t[]){4}, w1s);
    add_int(g, "w1z", SH_I8, 1, (int64_t[]){4}, 0, 0, 0);
    add_int(g, "b1", SH_I32, 1, (int64_t[]){4}, 9, -3000, 3000);
    add_f32(g, "c1s", 0, NULL, s2);
    add_int(g, "c1z", SH_U8, 0, NULL, 0, 0, 0);
    add_int(g, "w2", SH_I8, 4, (int64_t[]){4, 4, 1, 1}, 11, -127, 127);
    add_f32(g, "w2s", 0, NULL, w2s);
    add_int(g, "w2z", SH_I8, 0, NULL, 0, 0, 0);
    add_f32(g, "c2s", 0, NULL, s3);
    add_int(g, "c2z", SH_U8, 0, NULL, 0, 128, 128);
    add_f32(g, "as", 0, NULL, s4);
    add_int(g, "az", SH_U8, 0, NULL, 0, 0, 0);
    add_int(g, "g1w", SH_I8, 2, (int64_t[]){8, 64}, 13, -127, 127);
    add_f32(g, "g1s", 1, (int64_t[]){8}, g1s);
    add_int(g, "g1z", SH_I8, 1, (int64_t[]){8}, 0, 0, 0);
    add_int(g, "g1b", SH_I32, 1, (int64_t[]){8}, 17, -2000, 2000);
    add_f32(g, "h1s", 0, NULL, sg);
    add_int(g, "h1z", SH_U8, 0, NULL, 0, 0, 0);
    add_int(g, "g2w", SH_I8, 2, (int64_t[]){3, 8}, 19, -127, 127);
    add_f32(g, "g2s", 1, (int64_t[]){3}, g2s);
    add_int(g, "g2z", SH_I8, 1, (int64_t[]){3}, 0, 0, 0);
    add_int(g, "g2b", SH_I32, 1, (int64_t[]){3}, 23, -500, 500);
    add_f32(g, "ps", 0, NULL, (float[]){0.01f});
    add_int(g, "pz", SH_U8, 0, NULL, 0, 3, 3);
    add_node(g, "QuantizeLinear", "quant_x", 3, (const char *[]){"x", "xs", "xz"}, "xq");
    int k = add_node(g, "QLinearConv", "conv1", 9, (const char *[]){"xq", "xs", "xz", "w1", "w1s", "w1z", "c1s", "c1z", "b1"}, "c1");
    sh_node_set_ints(g, k, "pads", 4, (int64_t[]){1, 1, 1, 1});
    sh_node_set_ints(g, k, "kernel_shape", 2, (int64_t[]){3, 3});
    sh_node_set_string(g, k, "activation", "Relu");
    add_node(g, "QLinearConv", "conv2", 8, (const char *[]){"c1", "c1s", "c1z", "w2", "w2s", "w2z", "c2s", "c2z"}, "c2");
    k = add_node(g, "QLinearAdd", "add", 8, (const char *[]){"c1", "c1s", "c1z", "c2", "c2s", "c2z", "as", "az"}, "a");
    sh_node_set_string(g, k, "activation", "Relu");
    free(g->nodes[k].domain);
    g->nodes[k].domain = strdup("com.microsoft");
    k = add_node(g, "MaxPool", "pool", 1, (const char *[]){"a"}, "p");
    sh_node_set_ints(g, k, "kernel_shape", 2, (int64_t[]){2, 2});
    sh_node_set_ints(g, k, "strides", 2, (int64_t[]){2, 2});
    add_node(g, "Flatten", "flat", 1, (const char *[]){"p"}, "f");
    k = add_node(g, "QGemm", "fc1", 9, (const char *[]){"f", "as", "az", "g1w", "g1s", "g1z", "g1b", "h1s", "h1z"}, "h1");
    sh_node_set_int(g, k, "transB", 1);
    sh_node_set_string(g, k, "activation", "Relu");
    k = add_node(g, "QGemm", "fc2", 7, (const char *[]){"h1", "h1s", "h1z", "g2w", "g2s", "g2z", "g2b"}, "y");
    sh_node_set_int(g, k, "transB", 1);
    add_node(g, "QLinearGlobalAveragePool", "gap", 5, (const char *[]){"c1", "c1s", "c1z", "ps", "pz"}, "gp");
    add_node(g, "DequantizeLinear", "dq_gap", 3, (const char *[]){"gp", "ps", "pz"}, "y2");
    sh_graph_mark_output(g, "y", &err);
    sh_graph_mark_output(g, "y2", &err);
    return g;
}

static sh_tensor *qdq_input(int64_t n)
{
    sh_error err = {0};
    sh_tensor *x = sh_tensor_new(SH_F32, 4, (int64_t[]){n, 2, 8, 8}, &err);
    for (int64_t i = 0; i < sh_tensor_numel(x); i++) sh_f32(x)[i] = 2.0f * sinf(0.37f * (float)i) + 0.4f;
    return x;
}

/* outputs of g on x (clones) */
static int run_all(sh_graph *g, const sh_tensor *x, sh_tensor **y, int no_opt, sh_error *err)
{
    sh_run_opts o = {.nthreads = 2, .no_optimize = no_opt};
    sh_program *p = NULL;
    int rc = sh_program_new(g, &o, &p, err);
    if (!rc) rc = sh_program_run(p, &x, 1, err);
    for (int i = 0; !rc && i < sh_program_num_outputs(p); i++) y[i] = sh_tensor_clone(sh_program_output(p, i), err);
    sh_program_free(p);
    return rc;
}

static int count_op(const sh_graph *g, const char *op)
{
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++) n += !strcmp(g->nodes[i].op, op);
    return n;
}

TEST(qlinear_qdq_roundtrip)
{
    sh_error err = {0};
    sh_graph *g = static_int8_graph();
    CHECK_OK(sh_graph_check(g, &err), &err);
    sh_tensor *x = qdq_input(3), *y0[2] = {0}, *y1[2] = {0}, *y2[2] = {0}, *y3[2] = {0};
    CHECK_OK(run_all(g, x, y0, 1, &err), &err);
    /* QOperator -> QDQ: only standard ops */
    sh_graph *q = NULL, *back = NULL;
    CHECK_OK(sh_graph_to_qdq(g, &q, &err), &err);
    if (!q || !y0[0]) goto out;
    static const char *const qops[] = {"QLinearConv", "QGemm", "QLinearAdd", "QLinearGlobalAveragePool", "QLinearMatMul"};
    for (int i = 0; i < 5; i++) CHECK_MSG(count_op(q, qops[i]) == 0, "QDQ graph still has %s", qops[i]);
    CHECK(count_op(q, "Conv") == 2 && count_op(q, "Gemm") == 2 && count_op(q, "Add") == 1);
    CHECK(count_op(q, "Relu") == 3 && count_op(q, "GlobalAveragePool") == 1);
    for (int i = 0; i < q->n_nodes; i++) CHECK_MSG(!*q->nodes[i].domain, "node %s has domain %s", q->nodes[i].name, q->nodes[i].domain);
    /* the QDQ graph on shrink's f32 ops agrees with the int8 kernels: the
     * int8 graph's intermediate roundings differ at most by one step, which
     * the last layer sees as sum |w| * step */
    CHECK_OK(run_all(q, x, y1, 0, &err), &err);
    if (y1[0]) {
        int64_t uneq;
        double md = max_diff(y0[0], y1[0], &uneq), md2 = max_diff(y0[1], y1[1], &uneq);
        if (getenv("SHRINK_TEST_VERBOSE")) printf("    QDQ f32 vs int8: max diff %g (y), %g (gap)\n", md, md2);
        /* fc2: |w| <= 127 * 0.005, 8 inputs of step 0.025 */
        CHECK_MSG(md <= 8 * 127 * 0.005 * 0.025 + 1e-5, "QDQ vs QOperator max diff %g", md);
        CHECK_MSG(md2 <= 0.01 + 1e-6, "QDQ vs QOperator GAP max diff %g (one step 0.01)", md2);
    }
    /* and back: the same ops and bit-identical outputs */
    CHECK_OK(sh_graph_from_qdq(q, &back, &err), &err);
    if (!back) goto out;
    CHECK(count_op(back, "QLinearConv") == 2 && count_op(back, "QGemm") == 2 && count_op(back, "QLinearAdd") == 1);
    CHECK(count_op(back, "QLinearGlobalAveragePool") == 1 && count_op(back, "MaxPool") == 1);
    CHECK(count_op(back, "Conv") == 0 && count_op(back, "Gemm") == 0 && count_op(back, "Relu") == 0);
    CHECK(count_op(back, "DequantizeLinear") == 1 && count_op(back, "QuantizeLinear") == 1);
    CHECK_OK(run_all(back, x, y2, 1, &err), &err);
    for (int i = 0; i < 2 && y2[i]; i++)
        CHECK_MSG(y2[i]->nbytes == y0[i]->nbytes && !memcmp(y2[i]->data, y0[i]->data, y0[i]->nbytes),
                  "round trip output %d differs", i);
    /* the QDQ graph saves as ONNX and loads back to the same outputs */
    char path[512];
    snprintf(path, sizeof path, "%s/qdq.onnx", sh_test_tmpdir());
    CHECK_OK(sh_onnx_save(q, path, &err), &err);
    sh_graph *l = NULL;
    CHECK_OK(sh_onnx_load(path, &l, &err), &err);
    if (l) {
        CHECK_OK(run_all(l, x, y3, 0, &err), &err);
        for (int i = 0; i < 2 && y3[i] && y1[i]; i++) CHECK(!memcmp(y3[i]->data, y1[i]->data, y1[i]->nbytes));
        sh_graph_free(l);
    }
out:
    for (int i = 0; i < 2; i++) {
        sh_tensor_free(y0[i]);
        sh_tensor_free(y1[i]);
        sh_tensor_free(y2[i]);
        sh_tensor_free(y3[i]);
    }
    sh_tensor_free(x);
    sh_graph_free(back);
    sh_graph_free(q);
    sh_graph_free(g);
}

/* u8 tensors pass through the shape ops a static int8 graph uses between
 * integer layers: MaxPool, Flatten, Reshape, Identity, Concat */
TEST(qlinear_u8_shape_ops)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("u8");
    sh_graph_add_input(g, "x", SH_U8, 4, (int64_t[]){2, 3, 4, 4}, &err);
    sh_tensor *shp = sh_tensor_new(SH_I64, 1, (int64_t[]){2}, &err);
    ((int64_t *)shp->data)[0] = 2, ((int64_t *)shp->data)[1] = 12;
    sh_graph_add_init(g, "shape", shp, &err);
    int k = add_node(g, "MaxPool", "pool", 1, (const char *[]){"x"}, "p");
    sh_node_set_ints(g, k, "kernel_shape", 2, (int64_t[]){2, 2});
    sh_node_set_ints(g, k, "strides", 2, (int64_t[]){2, 2});
    add_node(g, "Identity", "id", 1, (const char *[]){"p"}, "i");
    add_node(g, "Flatten", "flat", 1, (const char *[]){"i"}, "f");
    add_node(g, "Reshape", "resh", 2, (const char *[]){"f", "shape"}, "r");
    k = add_node(g, "Concat", "cat", 2, (const char *[]){"r", "f"}, "y");
    sh_node_set_int(g, k, "axis", 1);
    sh_graph_mark_output(g, "y", &err);
    sh_tensor *x = sh_tensor_new(SH_U8, 4, (int64_t[]){2, 3, 4, 4}, &err);
    for (int i = 0; i < 96; i++) ((uint8_t *)x->data)[i] = (uint8_t)(i * 53 % 256);
    sh_tensor *y[1] = {0};
    CHECK_OK(run_all(g, x, y, 1, &err), &err);
    if (y[0]) {
        CHECK(y[0]->fmt == SH_U8 && y[0]->ndim == 2 && y[0]->shape[0] == 2 && y[0]->shape[1] == 24);
        const uint8_t *xv = x->data, *yv = y[0]->data;
        for (int n = 0; n < 2; n++)
            for (int c = 0; c < 3; c++)
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 2; j++) {
                        int m = 0;
                        for (int a = 0; a < 2; a++)
                            for (int b = 0; b < 2; b++) {
                                int v = xv[((n * 3 + c) * 4 + 2 * i + a) * 4 + 2 * j + b];
                                m = v > m ? v : m;
                            }
                        int o = (c * 2 + i) * 2 + j;
                        CHECK(yv[n * 24 + o] == m && yv[n * 24 + 12 + o] == m);
                    }
    }
    sh_tensor_free(y[0]);
    sh_tensor_free(x);
    sh_graph_free(g);
}

/* QLinearAdd on s8 (the SIMD same-shape path, 37 elements: a scalar tail)
 * against the formula q = sat(nearbyint((a - za) sa/sc + (b - zb) sb/sc) + zc) */
TEST(qlinear_add_s8)
{
    sh_error err = {0};
    sh_tensor *t[8] = {0};
    int64_t s[] = {37};
    t[0] = sh_tensor_new(SH_I8, 1, s, &err);
    t[3] = sh_tensor_new(SH_I8, 1, s, &err);
    for (int i = 0; i < 37; i++) {
        ((int8_t *)t[0]->data)[i] = (int8_t)(i * 41 % 256 - 128);
        ((int8_t *)t[3]->data)[i] = (int8_t)(i * 97 % 256 - 128);
    }
    float sc[3] = {0.05f, 0.03f, 0.06f};
    int8_t zp[3] = {-5, 7, 2};
    for (int j = 0; j < 3; j++) {
        int si = j < 2 ? 1 + 3 * j : 6;
        t[si] = sh_tensor_new(SH_F32, 0, NULL, &err);
        *(float *)t[si]->data = sc[j];
        t[si + 1] = sh_tensor_new(SH_I8, 0, NULL, &err);
        *(int8_t *)t[si + 1]->data = zp[j];
    }
    sh_graph *g = one_node("QLinearAdd", t, 8, &err);
    sh_tensor *y = run_case(g, t[0], &err);
    CHECK_MSG(y && y->fmt == SH_I8, "run: %s", err.msg);
    for (int i = 0; y && i < 37; i++) {
        float a = (float)((int8_t *)t[0]->data)[i] - (float)zp[0], b = (float)((int8_t *)t[3]->data)[i] - (float)zp[1];
        float q = nearbyintf(a * (sc[0] / sc[2]) + b * (sc[1] / sc[2])) + (float)zp[2];
        q = q < -128 ? -128 : q > 127 ? 127 : q;
        CHECK_MSG(((int8_t *)y->data)[i] == (int8_t)q, "element %d: %d, want %d", i, ((int8_t *)y->data)[i], (int)q);
    }
    sh_tensor_free(y);
    sh_graph_free(g);
    for (int i = 0; i < 8; i++) sh_tensor_free(t[i]);
}

/* u8 2x2 stride-2 MaxPool (ops/pool.c: 8 or 4 outputs per SIMD step, the
 * last step overlapping, a scalar loop below 4 outputs) against the scalar
 * max, for widths 4 .. 31 (odd ones drop the last column) and odd heights */
TEST(qlinear_u8_maxpool_widths)
{
    static const int hw[][2] = {{28, 28}, {14, 14}, {7, 7}, {9, 9}, {5, 30}, {3, 31}, {6, 16}, {4, 17}, {11, 8}, {2, 4}};
    for (size_t ci = 0; ci < sizeof hw / sizeof hw[0]; ci++) {
        int H = hw[ci][0], W = hw[ci][1], C = 3, OH = H / 2, OW = W / 2;
        sh_error err = {0};
        sh_graph *g = sh_graph_new("pool");
        sh_graph_add_input(g, "x", SH_U8, 4, (int64_t[]){1, C, H, W}, &err);
        int k = add_node(g, "MaxPool", "pool", 1, (const char *[]){"x"}, "y");
        sh_node_set_ints(g, k, "kernel_shape", 2, (int64_t[]){2, 2});
        sh_node_set_ints(g, k, "strides", 2, (int64_t[]){2, 2});
        sh_graph_mark_output(g, "y", &err);
        sh_tensor *x = sh_tensor_new(SH_U8, 4, (int64_t[]){1, C, H, W}, &err);
        uint32_t s = 77u + (uint32_t)ci;
        for (int i = 0; i < C * H * W; i++) {
            s = s * 1664525u + 1013904223u;
            ((uint8_t *)x->data)[i] = (uint8_t)(s >> 24);
        }
        sh_tensor *y[1] = {0};
        CHECK_OK(run_all(g, x, y, 1, &err), &err);
        if (y[0]) {
            CHECK(y[0]->fmt == SH_U8 && y[0]->shape[2] == OH && y[0]->shape[3] == OW);
            const uint8_t *xv = x->data, *yv = y[0]->data;
            int bad = 0;
            for (int c = 0; c < C; c++)
                for (int i = 0; i < OH; i++)
                    for (int j = 0; j < OW; j++) {
                        int m = 0;
                        for (int a = 0; a < 2; a++)
                            for (int b = 0; b < 2; b++) {
                                int v = xv[(c * H + 2 * i + a) * W + 2 * j + b];
                                m = v > m ? v : m;
                            }
                        bad += yv[(c * OH + i) * OW + j] != m;
                    }
            CHECK_MSG(bad == 0, "%dx%d: %d outputs differ", H, W, bad);
        }
        sh_tensor_free(y[0]);
        sh_tensor_free(x);
        sh_graph_free(g);
    }
}
