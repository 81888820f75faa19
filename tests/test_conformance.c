/* test_conformance.c - the ONNX backend node tests (libonnx-testdata) as one
 * TEST per op type.
 *
 * For every directory DATA/test_*  (DATA = /usr/share/libonnx-testdata/data/node,
 * or $SHRINK_ONNX_DATA) whose model.onnx uses only the ops in `ops[]` below, and
 * which uses op X, TEST(onnx_node_X) loads model.onnx with sh_onnx_load, runs
 * every test_data_set_N/input_*.pb (inputs in graph-input order) and compares
 * the outputs with test_data_set_N/output_*.pb.
 *
 * Comparison: shapes and storage formats must match exactly.  Float outputs
 * (f32/f16/bf16, compared as f32) pass when for every element
 *     |got - expected| <= 1e-4 * max(1, |expected|)
 * (absolute 1e-4 for |expected| <= 1, relative 1e-4 above); NaN matches NaN,
 * infinities must be equal.  Integer and bool outputs must be equal exactly.
 *
 * Skipped (with the reason printed): models whose inputs/outputs are not dense
 * tensors (sequence, optional), or use data types shrink's kernels do not
 * take (DOUBLE, FLOAT16, BFLOAT16, STRING, ...), and training-mode Dropout
 * with a nonzero ratio, whose outputs depend on the reference's RNG.
 *
 * How to run:
 *   make BUILD=build build/run_tests
 *   build/run_tests onnx_node_             every op
 *   build/run_tests onnx_node_Conv         only the Conv tests
 *   SHRINK_ONNX_NODE=conv_with build/run_tests onnx_node_Conv
 *                                          only directories whose name contains "conv_with"
 *   SHRINK_ONNX_VERBOSE=1 build/run_tests onnx_node_Relu
 *                                          also list the passing / skipped directories
 *   SHRINK_ONNX_DATA=/usr/share/libonnx-testdata/data/pytorch-converted build/run_tests onnx_node_
 *                                          the same per-op runs over another suite of
 *                                          the test data (pytorch-converted,
 *                                          pytorch-operator: initializers, old opsets)
 * A failing directory prints one line: its name and why (load error such as an
 * op that is not implemented, run error, shape/format mismatch, or the max
 * error with the first element over tolerance).  `shrink run MODEL --input ...
 * --expect DIR` checks one data set from the command line the same way.
 */
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

#include "onnx.pb-c.h"
#include "test.h"

/* messages are cut to their buffers on purpose */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define NODE_DATA "/usr/share/libonnx-testdata/data/node"
#define TOL 1e-4

static const char *const ops[] = {
    "Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "Sigmoid",
    "Tanh", "Gelu", "Erf", "Softmax", "LogSoftmax", "MaxPool", "AveragePool", "GlobalAveragePool",
    "BatchNormalization", "Flatten", "Reshape", "Transpose", "Concat", "Identity", "Dropout",
    "Constant", "Clip", "Pad", "ReduceMean", "LayerNormalization",
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "MatMulInteger", "ConvInteger", NULL,
};

static int allowed(const char *op)
{
    for (int i = 0; ops[i]; i++)
        if (strcmp(ops[i], op) == 0) return 1;
    return 0;
}

static const char *data_root(void)
{
    const char *e = getenv("SHRINK_ONNX_DATA");
    return e && *e ? e : NODE_DATA;
}

static int verbose(void)
{
    const char *e = getenv("SHRINK_ONNX_VERBOSE");
    return e && *e && strcmp(e, "0") != 0;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted names in dir starting with prefix (malloc'ed array of malloc'ed). */
static int list_dir(const char *dir, const char *prefix, char ***names)
{
    *names = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            *names = realloc(*names, sizeof(char *) * (size_t)cap);
        }
        (*names)[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n) qsort(*names, (size_t)n, sizeof(char *), cmp_str);
    return n;
}

static void free_list(char **names, int n)
{
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

static int dtype_ok(int dt)
{
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: return 1;
    default: return 0;
    }
}

/* Why a model's value cannot be tested, or NULL. */
static const char *value_skip_reason(const Onnx__ValueInfoProto *vi, char *buf, size_t n)
{
    const Onnx__TypeProto *ty = vi->type;
    if (!ty || ty->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !ty->tensor_type) {
        snprintf(buf, n, "'%s' is not a dense tensor (sequence/optional/map)", vi->name ? vi->name : "");
        return buf;
    }
    int dt = ty->tensor_type->elem_type;
    if (!dtype_ok(dt)) {
        snprintf(buf, n, "'%s' has ONNX data type %d (%s), not taken by shrink's kernels", vi->name ? vi->name : "",
                 dt, dt == 11 ? "DOUBLE" : dt == 10 ? "FLOAT16" : dt == 16 ? "BFLOAT16" : dt == 8 ? "STRING" : "other");
        return buf;
    }
    return NULL;
}

/* The model of one directory: ops used, and whether it can be tested. */
typedef struct {
    int ok;              /* model parsed */
    int only_allowed;    /* every op is in ops[] */
    int uses_op;         /* uses the op under test */
    char skip[512];      /* non-empty: skip with this reason */
} model_info;

static void scan_model(const char *dir, const char *op, model_info *mi)
{
    memset(mi, 0, sizeof *mi);
    char path[1024];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    void *buf = NULL;
    size_t n = 0;
    sh_error err = {0};
    if (sh_read_file(path, &buf, &n, &err)) return;
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n, buf);
    free(buf);
    if (!m || !m->graph) {
        if (m) onnx__model_proto__free_unpacked(m, NULL);
        return;
    }
    mi->ok = 1;
    mi->only_allowed = 1;
    const Onnx__GraphProto *g = m->graph;
    for (size_t i = 0; i < g->n_node; i++) {
        const char *t = g->node[i]->op_type ? g->node[i]->op_type : "";
        if (!allowed(t)) mi->only_allowed = 0;
        if (strcmp(t, op) == 0) mi->uses_op = 1;
    }
    char why[400];
    for (size_t i = 0; i < g->n_input && !mi->skip[0]; i++)
        if (value_skip_reason(g->input[i], why, sizeof why)) snprintf(mi->skip, sizeof mi->skip, "input %s", why);
    for (size_t i = 0; i < g->n_output && !mi->skip[0]; i++)
        if (value_skip_reason(g->output[i], why, sizeof why)) snprintf(mi->skip, sizeof mi->skip, "output %s", why);
    /* training-mode Dropout with a nonzero ratio: random outputs */
    for (size_t i = 0; i < g->n_node && !mi->skip[0]; i++) {
        const Onnx__NodeProto *nd = g->node[i];
        if (strcmp(nd->op_type ? nd->op_type : "", "Dropout") != 0) continue;
        if (nd->n_input < 3 || !nd->input[2] || !*nd->input[2]) continue;
        int ti = -1, ri = -1;
        for (size_t j = 0; j < g->n_input; j++) {
            if (strcmp(g->input[j]->name ? g->input[j]->name : "", nd->input[2]) == 0) ti = (int)j;
            if (nd->input[1] && *nd->input[1] && strcmp(g->input[j]->name ? g->input[j]->name : "", nd->input[1]) == 0)
                ri = (int)j;
        }
        if (ti < 0) {
            snprintf(mi->skip, sizeof mi->skip, "Dropout training_mode is not a graph input (cannot tell if random)");
            break;
        }
        /* look at data set 0 */
        sh_tensor *tm = NULL, *ratio = NULL;
        snprintf(path, sizeof path, "%s/test_data_set_0/input_%d.pb", dir, ti);
        int training = 1;
        float r = 0.5f;
        if (!sh_tensorproto_load(path, &tm, NULL, &err) && sh_tensor_numel(tm) > 0)
            training = ((unsigned char *)tm->data)[0] != 0;
        if (ri >= 0) {
            snprintf(path, sizeof path, "%s/test_data_set_0/input_%d.pb", dir, ri);
            if (!sh_tensorproto_load(path, &ratio, NULL, &err) && ratio->fmt == SH_F32 && sh_tensor_numel(ratio) > 0)
                r = ((float *)ratio->data)[0];
        }
        sh_tensor_free(tm);
        sh_tensor_free(ratio);
        if (training && r != 0.0f)
            snprintf(mi->skip, sizeof mi->skip, "training-mode Dropout with ratio %g: outputs are random", (double)r);
    }
    onnx__model_proto__free_unpacked(m, NULL);
}

/* Compare got with expected; returns 1 on match, else 0 and a reason. */
static int compare(const sh_tensor *got, const sh_tensor *exp, double *max_err, char *why, size_t n)
{
    char a[160], b[160];
    *max_err = 0;
    if (got->ndim != exp->ndim || memcmp(got->shape, exp->shape, sizeof(int64_t) * (size_t)got->ndim) != 0) {
        snprintf(why, n, "shape %s, expected %s", sh_shape_str(got->ndim, got->shape, a, sizeof a),
                 sh_shape_str(exp->ndim, exp->shape, b, sizeof b));
        return 0;
    }
    if (got->fmt != exp->fmt) {
        snprintf(why, n, "format %s, expected %s", sh_format_get(got->fmt)->name, sh_format_get(exp->fmt)->name);
        return 0;
    }
    int64_t ne = sh_tensor_numel(exp);
    if (!got->data && ne) {
        snprintf(why, n, "no data");
        return 0;
    }
    if (!sh_format_get(exp->fmt)->is_float) {
        size_t es = sh_format_bytes(exp->fmt, 1);
        for (int64_t i = 0; i < ne; i++)
            if (memcmp((const char *)got->data + i * es, (const char *)exp->data + i * es, es) != 0) {
                float g = 0, e = 0;
                sh_format_get(exp->fmt)->to_f32((const char *)got->data + i * es, &g, 1);
                sh_format_get(exp->fmt)->to_f32((const char *)exp->data + i * es, &e, 1);
                *max_err = 1;
                snprintf(why, n, "element %lld is %.9g, expected %.9g (integers must match exactly)", (long long)i,
                         (double)g, (double)e);
                return 0;
            }
        return 1;
    }
    float *g = malloc(sizeof(float) * (size_t)(ne + 1)), *e = malloc(sizeof(float) * (size_t)(ne + 1));
    sh_format_get(exp->fmt)->to_f32(got->data, g, ne);
    sh_format_get(exp->fmt)->to_f32(exp->data, e, ne);
    int64_t first = -1, worst = -1;
    for (int64_t i = 0; i < ne; i++) {
        double x = g[i], y = e[i], err;
        if (isnan(y) || isnan(x)) err = isnan(x) && isnan(y) ? 0 : INFINITY;
        else if (isinf(y) || isinf(x)) err = x == y ? 0 : INFINITY;
        else err = fabs(x - y) / fmax(1.0, fabs(y));
        if (err > *max_err || worst < 0) {
            if (err > *max_err) *max_err = err;
            worst = i;
        }
        if (err > TOL && first < 0) first = i;
    }
    if (first >= 0)
        snprintf(why, n, "max error %.3g > %g (first at element %lld: got %.9g, expected %.9g)", *max_err, TOL,
                 (long long)first, (double)g[first], (double)e[first]);
    free(g);
    free(e);
    return first < 0;
}

/* Run one data set; returns 1 when it passes, else 0 with why filled. */
static int run_data_set(sh_program *p, sh_graph *g, const char *ds, double *max_err, char *why, size_t n)
{
    char path[1200];
    sh_error err = {0};
    sh_tensor *in[64] = {0};
    int n_in = 0, ok = 0;
    *max_err = 0;
    for (;;) {
        snprintf(path, sizeof path, "%s/input_%d.pb", ds, n_in);
        if (!is_file(path)) break;
        if (n_in == 64) {
            snprintf(why, n, "more than 64 inputs");
            goto done;
        }
        if (sh_tensorproto_load(path, &in[n_in], NULL, &err)) {
            snprintf(why, n, "%s", err.msg);
            goto done;
        }
        n_in++;
    }
    if (n_in != g->n_inputs) {
        snprintf(why, n, "%d input files for %d graph inputs", n_in, g->n_inputs);
        goto done;
    }
    if (sh_program_run(p, (const sh_tensor *const *)in, n_in, &err)) {
        snprintf(why, n, "run failed: %s", err.msg);
        goto done;
    }
    int n_out = 0;
    for (;;) {
        snprintf(path, sizeof path, "%s/output_%d.pb", ds, n_out);
        if (!is_file(path)) break;
        n_out++;
    }
    if (n_out != sh_program_num_outputs(p)) {
        snprintf(why, n, "%d expected outputs, the model has %d", n_out, sh_program_num_outputs(p));
        goto done;
    }
    ok = 1;
    for (int i = 0; i < n_out && ok; i++) {
        snprintf(path, sizeof path, "%s/output_%d.pb", ds, i);
        sh_tensor *exp = NULL;
        if (sh_tensorproto_load(path, &exp, NULL, &err)) {
            snprintf(why, n, "%s", err.msg);
            ok = 0;
            break;
        }
        const sh_tensor *got = sh_program_output(p, i);
        char w[600];
        double me = 0;
        if (!got) {
            snprintf(why, n, "output %d missing", i);
            ok = 0;
        } else if (!compare(got, exp, &me, w, sizeof w)) {
            snprintf(why, n, "output %d '%s': %s", i, g->values[g->outputs[i]].name, w);
            ok = 0;
        }
        if (me > *max_err) *max_err = me;
        sh_tensor_free(exp);
    }
done:
    for (int i = 0; i < n_in; i++) sh_tensor_free(in[i]);
    return ok;
}

/* 1 pass, 0 fail, -1 skip.  why: reason for fail/skip. */
static int run_dir(const char *dir, double *max_err, char *why, size_t n)
{
    char path[1100];
    sh_error err = {0};
    sh_graph *g = NULL;
    sh_program *p = NULL;
    *max_err = 0;
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    if (sh_onnx_load(path, &g, &err)) {
        /* drop the "DIR/model.onnx: " prefix, the directory is printed anyway */
        const char *m = err.msg;
        if (strncmp(m, path, strlen(path)) == 0 && m[strlen(path)] == ':') m += strlen(path) + 2;
        snprintf(why, n, "load failed: %s", m);
        return 0;
    }
    sh_run_opts o = {0};
    if (sh_program_new(g, &o, &p, &err)) {
        snprintf(why, n, "%s", err.msg);
        sh_graph_free(g);
        return 0;
    }
    char **sets;
    int ns = list_dir(dir, "test_data_set_", &sets), ok = ns > 0;
    if (!ns) snprintf(why, n, "no test_data_set_* directories");
    for (int s = 0; s < ns && ok; s++) {
        char ds[1100], w[900];
        double me = 0;
        snprintf(ds, sizeof ds, "%s/%s", dir, sets[s]);
        if (!run_data_set(p, g, ds, &me, w, sizeof w)) {
            snprintf(why, n, "%s: %s", sets[s], w);
            ok = 0;
        }
        if (me > *max_err) *max_err = me;
    }
    free_list(sets, ns);
    sh_program_free(p);
    sh_graph_free(g);
    return ok;
}

static void run_op(const char *op)
{
    const char *root = data_root();
    if (!is_dir(root)) SKIP("no ONNX node test data (install libonnx-testdata or set SHRINK_ONNX_DATA)");
    const char *filter = getenv("SHRINK_ONNX_NODE");
    char **dirs;
    int nd = list_dir(root, "test_", &dirs);
    int passed = 0, failed = 0, skipped = 0, v = verbose();
    double worst = 0;
    for (int i = 0; i < nd; i++) {
        if (filter && *filter && !strstr(dirs[i], filter)) continue;
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", root, dirs[i]);
        model_info mi;
        scan_model(dir, op, &mi);
        if (!mi.ok || !mi.uses_op || !mi.only_allowed) continue;
        if (mi.skip[0]) {
            skipped++;
            fprintf(stderr, "    skip %-50s %s\n", dirs[i], mi.skip);
            continue;
        }
        char why[1500] = "";
        double me = 0;
        int r = run_dir(dir, &me, why, sizeof why);
        if (me > worst && r) worst = me;
        if (r) {
            passed++;
            if (v) fprintf(stderr, "    ok   %-50s max error %.3g\n", dirs[i], me);
        } else {
            failed++;
            fprintf(stderr, "    FAIL %-50s %s\n", dirs[i], why);
        }
    }
    free_list(dirs, nd);
    fprintf(stderr, "    onnx_node_%s: %d passed, %d failed, %d skipped (max error of passing tests %.3g)\n", op, passed,
            failed, skipped, worst);
    if (passed + failed == 0) {
        if (filter && *filter) SKIP("no node test matches SHRINK_ONNX_NODE");
        if (skipped) SKIP("every node test of this op is skipped");
        SKIP("no node tests use this op in this version of the ONNX test data");
    }
    CHECK_MSG(failed == 0, "%d of %d node tests of %s failed", failed, passed + failed, op);
}

#define NODE_TEST(OP) \
    TEST(onnx_node_##OP) { run_op(#OP); }

NODE_TEST(Conv)
NODE_TEST(Gemm)
NODE_TEST(MatMul)
NODE_TEST(Add)
NODE_TEST(Sub)
NODE_TEST(Mul)
NODE_TEST(Div)
NODE_TEST(Relu)
NODE_TEST(LeakyRelu)
NODE_TEST(Sigmoid)
NODE_TEST(Tanh)
NODE_TEST(Gelu)
NODE_TEST(Erf)
NODE_TEST(Softmax)
NODE_TEST(LogSoftmax)
NODE_TEST(MaxPool)
NODE_TEST(AveragePool)
NODE_TEST(GlobalAveragePool)
NODE_TEST(BatchNormalization)
NODE_TEST(Flatten)
NODE_TEST(Reshape)
NODE_TEST(Transpose)
NODE_TEST(Concat)
NODE_TEST(Identity)
NODE_TEST(Dropout)
NODE_TEST(Constant)
NODE_TEST(Clip)
NODE_TEST(Pad)
NODE_TEST(ReduceMean)
NODE_TEST(LayerNormalization)
NODE_TEST(QuantizeLinear)
NODE_TEST(DequantizeLinear)
NODE_TEST(DynamicQuantizeLinear)
NODE_TEST(QLinearConv)
NODE_TEST(QLinearMatMul)
NODE_TEST(MatMulInteger)
NODE_TEST(ConvInteger)
