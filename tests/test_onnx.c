/* test_onnx.c - ONNX import/export, TensorProto files, model dispatch: round
 * trips (structure and bit-identical outputs), typed-field and Constant
 * import, and clean errors for bad files (missing, random bytes, truncated,
 * byte flips, external data, bad sizes, unsupported dtypes and ops). */
#include <string.h>
#include <sys/stat.h>

#include "onnx.pb-c.h"
#include "test.h"
#include "ops/ops.h"

#define NODE_DATA "/usr/share/libonnx-testdata/data/node"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33);
}
static float rndf(void) { return (float)rnd() / 2147483648.0f - 1.0f; }

static char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", sh_test_tmpdir(), name);
    return buf[k];
}

static sh_tensor *rand_tensor(sh_format f, int nd, const int64_t *shape)
{
    sh_tensor *t = sh_tensor_new(f, nd, shape, NULL);
    if (!t) return NULL;
    unsigned char *p = t->data;
    if (f == SH_F32) {
        for (int64_t i = 0; i < sh_tensor_numel(t); i++) sh_f32(t)[i] = rndf();
    } else if (f == SH_BOOL) {
        for (size_t i = 0; i < t->nbytes; i++) p[i] = rnd() & 1;
    } else {
        for (size_t i = 0; i < t->nbytes; i++) p[i] = (unsigned char)rnd();
    }
    return t;
}

static int same_tensor(const sh_tensor *a, const sh_tensor *b)
{
    if (!a || !b || a->fmt != b->fmt || a->ndim != b->ndim || a->nbytes != b->nbytes) return 0;
    if (memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim)) return 0;
    return a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0;
}

static int write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

/* ---- TensorProto files ------------------------------------------------ */

TEST(onnx_tensorproto_roundtrip_all_formats)
{
    sh_error err = {0};
    const sh_format fmts[] = {SH_F32, SH_F16, SH_BF16, SH_I8, SH_U8, SH_I32, SH_I64, SH_BOOL};
    for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
        int64_t shapes[3][3] = {{2, 3, 5}, {1, 1, 1}, {4, 0, 2}};
        int ndims[3] = {3, 0, 3}; /* a 3-d tensor, a scalar, an empty tensor */
        for (int s = 0; s < 3; s++) {
            sh_tensor *t = rand_tensor(fmts[f], ndims[s], shapes[s]), *back = NULL;
            char *name = NULL;
            const char *path = tmp_path("t.pb");
            CHECK_OK(sh_tensorproto_save(t, "my_tensor", path, &err), &err);
            CHECK_OK(sh_tensorproto_load(path, &back, &name, &err), &err);
            CHECK_MSG(same_tensor(t, back), "format %s shape #%d differs after a round trip",
                      sh_format_get(fmts[f])->name, s);
            CHECK(name && strcmp(name, "my_tensor") == 0);
            free(name);
            sh_tensor_free(t);
            sh_tensor_free(back);
        }
    }
}

/* A TensorProto with typed fields (not raw_data), as older exporters write. */
static void pack_tensor_file(const Onnx__TensorProto *tp, const char *path)
{
    size_t n = onnx__tensor_proto__get_packed_size(tp);
    uint8_t *buf = malloc(n + 1);
    onnx__tensor_proto__pack(tp, buf);
    write_bytes(path, buf, n);
    free(buf);
}

TEST(onnx_tensorproto_typed_fields)
{
    sh_error err = {0};
    int64_t dims[2] = {2, 2};
    const char *path = tmp_path("typed.pb");
    sh_tensor *t = NULL;
    {   /* float_data */
        Onnx__TensorProto tp = ONNX__TENSOR_PROTO__INIT;
        float v[4] = {1.5f, -2.0f, 3.25f, 0.0f};
        tp.n_dims = 2, tp.dims = dims, tp.has_data_type = 1, tp.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        tp.n_float_data = 4, tp.float_data = v;
        pack_tensor_file(&tp, path);
        CHECK_OK(sh_tensorproto_load(path, &t, NULL, &err), &err);
        CHECK(t && t->fmt == SH_F32 && t->ndim == 2 && memcmp(t->data, v, 16) == 0);
        sh_tensor_free(t);
    }
    {   /* double_data -> f32 */
        Onnx__TensorProto tp = ONNX__TENSOR_PROTO__INIT;
        double v[4] = {1.5, -2.0, 1e-3, 7.0};
        tp.n_dims = 2, tp.dims = dims, tp.has_data_type = 1, tp.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE;
        tp.n_double_data = 4, tp.double_data = v;
        pack_tensor_file(&tp, path);
        CHECK_OK(sh_tensorproto_load(path, &t, NULL, &err), &err);
        CHECK(t && t->fmt == SH_F32);
        for (int i = 0; t && i < 4; i++) CHECK(sh_f32(t)[i] == (float)v[i]);
        sh_tensor_free(t);
    }
    {   /* int64_data */
        Onnx__TensorProto tp = ONNX__TENSOR_PROTO__INIT;
        int64_t v[4] = {1, -2, 1ll << 40, 7};
        tp.n_dims = 2, tp.dims = dims, tp.has_data_type = 1, tp.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
        tp.n_int64_data = 4, tp.int64_data = v;
        pack_tensor_file(&tp, path);
        CHECK_OK(sh_tensorproto_load(path, &t, NULL, &err), &err);
        CHECK(t && t->fmt == SH_I64 && memcmp(t->data, v, 32) == 0);
        sh_tensor_free(t);
    }
    {   /* int32_data holding INT8, BOOL and FLOAT16 bit patterns */
        int32_t v[4] = {-5, 0, 127, -128};
        Onnx__TensorProto tp = ONNX__TENSOR_PROTO__INIT;
        tp.n_dims = 2, tp.dims = dims, tp.has_data_type = 1, tp.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT8;
        tp.n_int32_data = 4, tp.int32_data = v;
        pack_tensor_file(&tp, path);
        CHECK_OK(sh_tensorproto_load(path, &t, NULL, &err), &err);
        CHECK(t && t->fmt == SH_I8 && ((int8_t *)t->data)[0] == -5 && ((int8_t *)t->data)[3] == -128);
        sh_tensor_free(t);
        int32_t b[4] = {1, 0, 1, 1};
        tp.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__BOOL, tp.int32_data = b;
        pack_tensor_file(&tp, path);
        CHECK_OK(sh_tensorproto_load(path, &t, NULL, &err), &err);
        CHECK(t && t->fmt == SH_BOOL && ((uint8_t *)t->data)[0] == 1 && ((uint8_t *)t->data)[1] == 0);
        sh_tensor_free(t);
        int32_t h[4] = {0x3C00, 0xC000, 0x0000, 0x3800}; /* 1, -2, 0, 0.5 */
        tp.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16, tp.int32_data = h;
        pack_tensor_file(&tp, path);
        CHECK_OK(sh_tensorproto_load(path, &t, NULL, &err), &err);
        CHECK(t && t->fmt == SH_F16);
        if (t) {
            float f[4];
            sh_format_get(SH_F16)->to_f32(t->data, f, 4);
            CHECK(f[0] == 1.0f && f[1] == -2.0f && f[2] == 0.0f && f[3] == 0.5f);
        }
        sh_tensor_free(t);
    }
    {   /* errors: wrong count, no data, string type, not a TensorProto */
        Onnx__TensorProto tp = ONNX__TENSOR_PROTO__INIT;
        float v[3] = {1, 2, 3};
        tp.name = "w";
        tp.n_dims = 2, tp.dims = dims, tp.has_data_type = 1, tp.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        tp.n_float_data = 3, tp.float_data = v;
        pack_tensor_file(&tp, path);
        CHECK(sh_tensorproto_load(path, &t, NULL, &err) == SH_EFORMAT && !t);
        CHECK_MSG(strstr(err.msg, "'w'") && strstr(err.msg, "[2,2]"), "message: %s", err.msg);
        tp.n_float_data = 0;
        pack_tensor_file(&tp, path);
        CHECK(sh_tensorproto_load(path, &t, NULL, &err) == SH_EFORMAT && strstr(err.msg, "no data"));
        tp.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__STRING;
        pack_tensor_file(&tp, path);
        CHECK(sh_tensorproto_load(path, &t, NULL, &err) == SH_EUNSUPPORTED);
        CHECK_MSG(strstr(err.msg, "STRING") && strstr(err.msg, "'w'"), "message: %s", err.msg);
        write_bytes(path, "\xff\xff\xff\xff\xff", 5);
        CHECK(sh_tensorproto_load(path, &t, NULL, &err) == SH_EFORMAT);
        CHECK_MSG(strstr(err.msg, "not a valid TensorProto"), "message: %s", err.msg);
        CHECK(sh_tensorproto_load("/nonexistent/x.pb", &t, NULL, &err) == SH_EIO && !t);
    }
}

/* ---- Graph round trips ------------------------------------------------ */

/* x [N,8] -> Relu (with one attribute of every type) -> RMSNorm(w) (domain
 * com.shrink) -> y; plus unused initializers of every format. */
static sh_graph *attr_graph(void)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("attrs");
    g->opset = 13;
    int64_t xs[2] = {-1, 8}, ws[1] = {8};
    sh_graph_add_input(g, "x", SH_F32, 2, xs, &err);
    sh_graph_add_init(g, "w", rand_tensor(SH_F32, 1, ws), &err);
    const sh_format fmts[] = {SH_F16, SH_BF16, SH_I8, SH_U8, SH_I32, SH_I64, SH_BOOL};
    for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
        char name[32];
        int64_t s[2] = {3, (int64_t)f + 1};
        snprintf(name, sizeof name, "extra_%s", sh_format_get(fmts[f])->name);
        sh_graph_add_init(g, name, rand_tensor(fmts[f], 2, s), &err);
    }
    const char *i1[1] = {"x"}, *o1[1] = {"r"}, *i2[2] = {"r", "w"}, *o2[1] = {"y"};
    int k = sh_graph_add_node(g, "Relu", "relu1", 1, i1, 1, o1, &err);
    sh_node_set_int(g, k, "an_int", -42);
    sh_node_set_float(g, k, "a_float", 0.125f);
    sh_node_set_string(g, k, "a_string", "hello onnx");
    int64_t ints[3] = {1, -2, 1ll << 40};
    float floats[2] = {1.5f, -0.25f};
    sh_node_set_ints(g, k, "some_ints", 3, ints);
    sh_node_set_ints(g, k, "no_ints", 0, NULL);
    sh_node_set_floats(g, k, "some_floats", 2, floats);
    /* a tensor attribute */
    sh_node *n = &g->nodes[k];
    n->attrs = realloc(n->attrs, sizeof(sh_attr) * (size_t)(n->n_attrs + 1));
    sh_attr *a = &n->attrs[n->n_attrs++];
    memset(a, 0, sizeof *a);
    a->name = strdup("a_tensor");
    a->type = SH_ATTR_TENSOR;
    int64_t ts[2] = {2, 3};
    a->t = rand_tensor(SH_F32, 2, ts);
    k = sh_graph_add_node(g, "RMSNorm", "norm1", 2, i2, 1, o2, &err);
    free(g->nodes[k].domain);
    g->nodes[k].domain = strdup("com.shrink");
    sh_node_set_float(g, k, "epsilon", 1e-5f);
    sh_graph_mark_output(g, "y", &err);
    g->values[sh_graph_find(g, "y")].ndim = 2;
    g->values[sh_graph_find(g, "y")].shape[0] = -1;
    g->values[sh_graph_find(g, "y")].shape[1] = 8;
    sh_graph_set_meta(g, "model_kind", "test");
    sh_graph_set_meta(g, "note", "key=value, with spaces");
    return g;
}

static int same_attr(const sh_attr *a, const sh_attr *b)
{
    if (strcmp(a->name, b->name) || a->type != b->type) return 0;
    switch (a->type) {
    case SH_ATTR_INT: return a->i == b->i;
    case SH_ATTR_FLOAT: return memcmp(&a->f, &b->f, sizeof a->f) == 0;
    case SH_ATTR_STRING: return strcmp(a->s, b->s) == 0;
    case SH_ATTR_INTS: return a->n == b->n && (a->n == 0 || memcmp(a->ints, b->ints, 8 * (size_t)a->n) == 0);
    case SH_ATTR_FLOATS: return a->n == b->n && (a->n == 0 || memcmp(a->floats, b->floats, 4 * (size_t)a->n) == 0);
    case SH_ATTR_TENSOR: return same_tensor(a->t, b->t);
    }
    return 0;
}

TEST(onnx_roundtrip_structure)
{
    sh_error err = {0};
    sh_graph *g = attr_graph(), *h = NULL;
    const char *path = tmp_path("attrs.onnx");
    CHECK_OK(sh_onnx_save(g, path, &err), &err);
    CHECK_OK(sh_onnx_load(path, &h, &err), &err);
    if (!h) {
        sh_graph_free(g);
        return;
    }
    CHECK(h->opset == 13);
    CHECK(strcmp(h->name, "attrs") == 0);
    CHECK(h->n_inputs == 1 && h->n_outputs == 1 && h->n_nodes == 2);
    const sh_value *x = &h->values[h->inputs[0]];
    CHECK(strcmp(x->name, "x") == 0 && x->fmt == SH_F32 && x->ndim == 2 && x->shape[0] == -1 && x->shape[1] == 8);
    const sh_value *y = &h->values[h->outputs[0]];
    CHECK(strcmp(y->name, "y") == 0 && y->ndim == 2 && y->shape[0] == -1 && y->shape[1] == 8);
    /* every initializer, bit for bit */
    int n_init = 0;
    for (int i = 0; i < g->n_values; i++) {
        if (!g->values[i].init) continue;
        n_init++;
        int j = sh_graph_find(h, g->values[i].name);
        CHECK_MSG(j >= 0 && same_tensor(g->values[i].init, h->values[j].init), "initializer '%s' differs",
                  g->values[i].name);
    }
    int h_init = 0;
    for (int i = 0; i < h->n_values; i++) h_init += h->values[i].init != NULL;
    CHECK(h_init == n_init);
    /* nodes, domains, attributes */
    for (int i = 0; i < 2; i++) {
        const sh_node *a = &g->nodes[i], *b = &h->nodes[i];
        CHECK(strcmp(a->name, b->name) == 0 && strcmp(a->op, b->op) == 0 && strcmp(a->domain, b->domain) == 0);
        CHECK(a->n_attrs == b->n_attrs);
        for (int k = 0; k < a->n_attrs && k < b->n_attrs; k++)
            CHECK_MSG(same_attr(&a->attrs[k], &b->attrs[k]), "attribute '%s' of '%s' differs", a->attrs[k].name,
                      a->name);
    }
    CHECK(strcmp(h->nodes[1].domain, "com.shrink") == 0);
    CHECK(sh_graph_get_meta(h, "model_kind") && strcmp(sh_graph_get_meta(h, "model_kind"), "test") == 0);
    CHECK(sh_graph_get_meta(h, "note") && strcmp(sh_graph_get_meta(h, "note"), "key=value, with spaces") == 0);
    /* the file itself: IR 8, producer, opsets "" 13 and com.shrink 1 */
    void *buf;
    size_t n;
    CHECK_OK(sh_read_file(path, &buf, &n, &err), &err);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n, buf);
    CHECK(m && m->ir_version == 8 && m->producer_name && strcmp(m->producer_name, "shrink") == 0);
    int has_default = 0, has_shrink = 0;
    for (size_t i = 0; m && i < m->n_opset_import; i++) {
        const char *d = m->opset_import[i]->domain ? m->opset_import[i]->domain : "";
        if (!*d && m->opset_import[i]->version == 13) has_default = 1;
        if (strcmp(d, "com.shrink") == 0) has_shrink = 1;
    }
    CHECK(has_default && has_shrink);
    /* raw_data initializers, -1 dims as dim_param */
    for (size_t i = 0; m && i < m->graph->n_initializer; i++) CHECK(m->graph->initializer[i]->has_raw_data);
    const Onnx__TensorShapeProto *sp = m ? m->graph->input[0]->type->tensor_type->shape : NULL;
    CHECK(sp && sp->n_dim == 2 && sp->dim[0]->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
          strcmp(sp->dim[0]->dim_param, "N") == 0 && sp->dim[1]->dim_value == 8);
    if (m) onnx__model_proto__free_unpacked(m, NULL);
    free(buf);
    /* no temporary file left behind */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q 'attrs.onnx.tmp'", sh_test_tmpdir());
    CHECK(system(cmd) != 0);
    sh_graph_free(g);
    sh_graph_free(h);
}

/* Run g on the inputs; returns clones of the outputs (n_out set). */
static int run_graph(sh_graph *g, sh_tensor **in, int n_in, sh_tensor **out, int *n_out, sh_error *err)
{
    sh_program *p = NULL;
    int rc = sh_program_new(g, NULL, &p, err);
    if (!rc) rc = sh_program_run(p, (const sh_tensor *const *)in, n_in, err);
    *n_out = 0;
    for (int i = 0; !rc && i < sh_program_num_outputs(p) && i < 8; i++) {
        out[i] = sh_tensor_clone(sh_program_output(p, i), err);
        *n_out = i + 1;
    }
    sh_program_free(p);
    return rc;
}

/* Load dir/model.onnx, run data set 0, save, reload, run: bit-identical.
 * Returns 1 if it ran, 0 if an op is missing (skip). */
static int roundtrip_node_dir(const char *name)
{
    char path[600];
    sh_error err = {0};
    sh_graph *g = NULL, *h = NULL;
    snprintf(path, sizeof path, "%s/%s/model.onnx", NODE_DATA, name);
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    if (sh_onnx_load(path, &g, &err)) return 0; /* op not implemented yet */
    sh_tensor *in[8] = {0}, *o1[8] = {0}, *o2[8] = {0};
    int n_in = 0, n1 = 0, n2 = 0, ran = 0;
    for (; n_in < g->n_inputs && n_in < 8; n_in++) {
        snprintf(path, sizeof path, "%s/%s/test_data_set_0/input_%d.pb", NODE_DATA, name, n_in);
        if (sh_tensorproto_load(path, &in[n_in], NULL, &err)) break;
    }
    if (n_in == g->n_inputs && run_graph(g, in, n_in, o1, &n1, &err) == SH_OK) {
        ran = 1;
        const char *out = tmp_path("node_rt.onnx");
        CHECK_OK(sh_onnx_save(g, out, &err), &err);
        CHECK_OK(sh_onnx_load(out, &h, &err), &err);
        if (h) CHECK_OK(run_graph(h, in, n_in, o2, &n2, &err), &err);
        CHECK(n1 == n2);
        for (int i = 0; i < n1 && i < n2; i++) CHECK_MSG(same_tensor(o1[i], o2[i]), "%s: output %d differs after export", name, i);
    }
    for (int i = 0; i < 8; i++) {
        sh_tensor_free(in[i]);
        sh_tensor_free(o1[i]);
        sh_tensor_free(o2[i]);
    }
    sh_graph_free(g);
    sh_graph_free(h);
    return ran;
}

TEST(onnx_roundtrip_node_models_bit_identical)
{
    struct stat st;
    if (stat(NODE_DATA, &st) != 0) SKIP("no ONNX node test data (libonnx-testdata)");
    const char *dirs[] = {"test_conv_with_strides_padding", "test_gemm_all_attributes", "test_batchnorm_example",
                          "test_softmax_axis_1", "test_relu", "test_reshape_negative_dim", "test_constant_pad",
                          "test_maxpool_2d_pads", "test_layer_normalization_4d_axis1", "test_constant", "test_add_bcast"};
    int ran = 0;
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) ran += roundtrip_node_dir(dirs[i]);
    fprintf(stderr, "    %d of %zu node models ran and round-tripped\n", ran, sizeof dirs / sizeof dirs[0]);
    if (!ran) SKIP("none of the node models' ops is implemented yet");
}

/* A small CNN built with sh_graph_add_node: Conv-BN-Relu-MaxPool-Conv-Add
 * (residual)-GlobalAveragePool-Flatten-Gemm-Softmax. */
TEST(onnx_roundtrip_small_cnn_bit_identical)
{
    const char *need[] = {"Conv", "BatchNormalization", "Relu", "MaxPool", "Add", "GlobalAveragePool", "Flatten",
                          "Gemm", "Softmax"};
    char missing[256] = "";
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (!sh_op_find(need[i])) {
            strcat(missing, " ");
            strcat(missing, need[i]);
        }
    if (missing[0]) {
        char why[300];
        snprintf(why, sizeof why, "ops not implemented yet:%s", missing);
        SKIP(why);
    }
    sh_error err = {0};
    sh_graph *g = sh_graph_new("cnn");
    int64_t xs[4] = {-1, 1, 12, 12}, w1[4] = {4, 1, 3, 3}, c4[1] = {4}, w2[4] = {4, 4, 3, 3}, fw[2] = {10, 4},
            fb[1] = {10};
    int64_t pads[4] = {1, 1, 1, 1}, k2[2] = {2, 2}, k3[2] = {3, 3};
    int k;
    sh_graph_add_input(g, "x", SH_F32, 4, xs, &err);
    const char *names[] = {"w1", "b1", "bn_s", "bn_b", "bn_m", "bn_v", "w2", "fw", "fb"};
    int64_t *shp[] = {w1, c4, c4, c4, c4, c4, w2, fw, fb};
    int nds[] = {4, 1, 1, 1, 1, 1, 4, 2, 1};
    for (int i = 0; i < 9; i++) {
        sh_tensor *t = rand_tensor(SH_F32, nds[i], shp[i]);
        if (i == 5)
            for (int j = 0; j < 4; j++) sh_f32(t)[j] = 0.5f + fabsf(sh_f32(t)[j]);
        CHECK(sh_graph_add_init(g, names[i], t, &err) >= 0);
    }
    const char *c1_in[] = {"x", "w1", "b1"}, *c1_out[] = {"c1"};
    const char *bn_in[] = {"c1", "bn_s", "bn_b", "bn_m", "bn_v"}, *bn_out[] = {"bn"};
    const char *r_in[] = {"bn"}, *r_out[] = {"r"};
    const char *mp_in[] = {"r"}, *mp_out[] = {"mp"};
    const char *c2_in[] = {"mp", "w2"}, *c2_out[] = {"c2"};
    const char *add_in[] = {"c2", "mp"}, *add_out[] = {"res"};
    const char *gp_in[] = {"res"}, *gp_out[] = {"gp"};
    const char *fl_in[] = {"gp"}, *fl_out[] = {"flat"};
    const char *fc_in[] = {"flat", "fw", "fb"}, *fc_out[] = {"logits"};
    const char *sm_in[] = {"logits"}, *sm_out[] = {"prob"};
    k = sh_graph_add_node(g, "Conv", "conv1", 3, c1_in, 1, c1_out, &err);
    sh_node_set_ints(g, k, "pads", 4, pads);
    sh_node_set_ints(g, k, "kernel_shape", 2, k3);
    k = sh_graph_add_node(g, "BatchNormalization", "bn1", 5, bn_in, 1, bn_out, &err);
    sh_node_set_float(g, k, "epsilon", 1e-5f);
    sh_graph_add_node(g, "Relu", "relu1", 1, r_in, 1, r_out, &err);
    k = sh_graph_add_node(g, "MaxPool", "pool1", 1, mp_in, 1, mp_out, &err);
    sh_node_set_ints(g, k, "kernel_shape", 2, k2);
    sh_node_set_ints(g, k, "strides", 2, k2);
    k = sh_graph_add_node(g, "Conv", "conv2", 2, c2_in, 1, c2_out, &err);
    sh_node_set_ints(g, k, "pads", 4, pads);
    sh_graph_add_node(g, "Add", "res1", 2, add_in, 1, add_out, &err);
    sh_graph_add_node(g, "GlobalAveragePool", "gap", 1, gp_in, 1, gp_out, &err);
    sh_graph_add_node(g, "Flatten", "flat", 1, fl_in, 1, fl_out, &err);
    k = sh_graph_add_node(g, "Gemm", "fc", 3, fc_in, 1, fc_out, &err);
    sh_node_set_int(g, k, "transB", 1);
    sh_graph_add_node(g, "Softmax", "softmax", 1, sm_in, 1, sm_out, &err);
    CHECK(sh_graph_mark_output(g, "prob", &err) >= 0);
    CHECK(sh_graph_mark_output(g, "logits", &err) >= 0);
    int64_t in_s[4] = {3, 1, 12, 12};
    sh_tensor *x = rand_tensor(SH_F32, 4, in_s), *o1[8] = {0}, *o2[8] = {0};
    int n1 = 0, n2 = 0;
    const char *path = tmp_path("cnn.onnx");
    CHECK_OK(sh_onnx_save(g, path, &err), &err); /* before running: output shapes inferred */
    CHECK_OK(run_graph(g, &x, 1, o1, &n1, &err), &err);
    sh_graph *h = NULL;
    CHECK_OK(sh_onnx_load(path, &h, &err), &err);
    if (h) {
        const sh_value *pv = &h->values[h->outputs[0]];
        CHECK_MSG(pv->ndim == 2 && pv->shape[0] == -1 && pv->shape[1] == 10, "exported output shape: ndim %d", pv->ndim);
        CHECK_OK(run_graph(h, &x, 1, o2, &n2, &err), &err);
    }
    CHECK(n1 == 2 && n2 == 2);
    for (int i = 0; i < n1 && i < n2; i++) CHECK_MSG(same_tensor(o1[i], o2[i]), "output %d differs after export", i);
    for (int i = 0; i < 8; i++) {
        sh_tensor_free(o1[i]);
        sh_tensor_free(o2[i]);
    }
    sh_tensor_free(x);
    sh_graph_free(g);
    sh_graph_free(h);
}

/* ---- Hand-made ModelProtos: Constant nodes, node order, errors -------- */

/* Pack a model whose graph is x[2,3] -> nodes -> outputs. */
static uint8_t *pack_model(Onnx__GraphProto *gp, size_t *n)
{
    Onnx__ModelProto m = ONNX__MODEL_PROTO__INIT;
    Onnx__OperatorSetIdProto op = ONNX__OPERATOR_SET_ID_PROTO__INIT, *ops[1] = {&op};
    op.domain = "";
    op.has_version = 1;
    op.version = 13;
    m.has_ir_version = 1;
    m.ir_version = 7;
    m.n_opset_import = 1;
    m.opset_import = ops;
    m.graph = gp;
    *n = onnx__model_proto__get_packed_size(&m);
    uint8_t *buf = malloc(*n + 1);
    onnx__model_proto__pack(&m, buf);
    return buf;
}

static Onnx__ValueInfoProto *vinfo(const char *name, int dt, int nd, const int64_t *dims)
{
    static Onnx__ValueInfoProto vi[8];
    static Onnx__TypeProto ty[8];
    static Onnx__TypeProto__Tensor tt[8];
    static Onnx__TensorShapeProto sp[8];
    static Onnx__TensorShapeProto__Dimension dm[8][4], *dp[8][4];
    static int k;
    k = (k + 1) % 8;
    Onnx__ValueInfoProto v0 = ONNX__VALUE_INFO_PROTO__INIT;
    Onnx__TypeProto t0 = ONNX__TYPE_PROTO__INIT;
    Onnx__TypeProto__Tensor tt0 = ONNX__TYPE_PROTO__TENSOR__INIT;
    Onnx__TensorShapeProto s0 = ONNX__TENSOR_SHAPE_PROTO__INIT;
    vi[k] = v0, ty[k] = t0, tt[k] = tt0, sp[k] = s0;
    vi[k].name = (char *)name;
    vi[k].type = &ty[k];
    ty[k].value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    ty[k].tensor_type = &tt[k];
    tt[k].has_elem_type = 1;
    tt[k].elem_type = dt;
    tt[k].shape = &sp[k];
    sp[k].n_dim = (size_t)nd;
    sp[k].dim = dp[k];
    for (int i = 0; i < nd; i++) {
        Onnx__TensorShapeProto__Dimension d0 = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
        dm[k][i] = d0;
        if (dims[i] >= 0) {
            dm[k][i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dm[k][i].dim_value = dims[i];
        } else {
            dm[k][i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            dm[k][i].dim_param = "batch";
        }
        dp[k][i] = &dm[k][i];
    }
    return &vi[k];
}

TEST(onnx_constant_nodes_become_initializers)
{
    sh_error err = {0};
    int64_t dims[2] = {2, 3};
    float cv[6] = {1, 2, 3, 4, 5, 6};
    Onnx__TensorProto ct = ONNX__TENSOR_PROTO__INIT;
    ct.n_dims = 2, ct.dims = dims, ct.has_data_type = 1, ct.data_type = 1;
    ct.has_raw_data = 1, ct.raw_data.len = 24, ct.raw_data.data = (uint8_t *)cv;
    Onnx__AttributeProto a1 = ONNX__ATTRIBUTE_PROTO__INIT, a2 = ONNX__ATTRIBUTE_PROTO__INIT,
                         a3 = ONNX__ATTRIBUTE_PROTO__INIT;
    a1.name = "value", a1.has_type = 1, a1.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR, a1.t = &ct;
    a2.name = "value_float", a2.has_type = 1, a2.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    a2.has_f = 1, a2.f = 2.5f;
    int64_t iv[3] = {7, 8, 9};
    a3.name = "value_ints", a3.has_type = 1, a3.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    a3.n_ints = 3, a3.ints = iv;
    Onnx__AttributeProto *at1[1] = {&a1}, *at2[1] = {&a2}, *at3[1] = {&a3};
    /* nodes deliberately out of order: Relu(sum) first, then the Add that makes sum, then the Constants */
    Onnx__NodeProto relu = ONNX__NODE_PROTO__INIT, add = ONNX__NODE_PROTO__INIT, c1 = ONNX__NODE_PROTO__INIT,
                    c2 = ONNX__NODE_PROTO__INIT, c3 = ONNX__NODE_PROTO__INIT;
    char *relu_in[1] = {"sum"}, *relu_out[1] = {"y"}, *add_in[2] = {"x", "k"}, *add_out[1] = {"sum"};
    char *c1_out[1] = {"k"}, *c2_out[1] = {"scalar"}, *c3_out[1] = {"ints"};
    relu.op_type = "Relu", relu.name = "r", relu.n_input = 1, relu.input = relu_in, relu.n_output = 1, relu.output = relu_out;
    add.op_type = "Add", add.name = "a", add.n_input = 2, add.input = add_in, add.n_output = 1, add.output = add_out;
    c1.op_type = "Constant", c1.name = "c1", c1.n_output = 1, c1.output = c1_out, c1.n_attribute = 1, c1.attribute = at1;
    c2.op_type = "Constant", c2.name = "c2", c2.n_output = 1, c2.output = c2_out, c2.n_attribute = 1, c2.attribute = at2;
    c3.op_type = "Constant", c3.name = "c3", c3.n_output = 1, c3.output = c3_out, c3.n_attribute = 1, c3.attribute = at3;
    Onnx__NodeProto *nodes[5] = {&relu, &add, &c1, &c2, &c3};
    Onnx__GraphProto gp = ONNX__GRAPH_PROTO__INIT;
    Onnx__ValueInfoProto *ins[1] = {vinfo("x", 1, 2, (int64_t[]){-1, 3})}, *outs[3];
    outs[0] = vinfo("y", 1, 2, (int64_t[]){-1, 3});
    outs[1] = vinfo("scalar", 1, 0, NULL);
    outs[2] = vinfo("ints", 7, 1, (int64_t[]){3});
    gp.name = "consts", gp.n_node = 5, gp.node = nodes, gp.n_input = 1, gp.input = ins, gp.n_output = 3, gp.output = outs;
    size_t n;
    uint8_t *buf = pack_model(&gp, &n);
    sh_graph *g = NULL;
    CHECK_OK(sh_onnx_load_mem(buf, n, "consts.onnx", &g, &err), &err);
    free(buf);
    if (!g) return;
    CHECK(g->n_nodes == 2 && g->n_inputs == 1 && g->n_outputs == 3);
    int k = sh_graph_find(g, "k"), s = sh_graph_find(g, "scalar"), iv_ = sh_graph_find(g, "ints");
    CHECK(k >= 0 && g->values[k].init && g->values[k].init->ndim == 2 && memcmp(g->values[k].init->data, cv, 24) == 0);
    CHECK(s >= 0 && g->values[s].init && g->values[s].init->ndim == 0 && sh_f32(g->values[s].init)[0] == 2.5f);
    CHECK(iv_ >= 0 && g->values[iv_].init && g->values[iv_].init->fmt == SH_I64 &&
          memcmp(g->values[iv_].init->data, iv, 24) == 0);
    CHECK(g->values[g->inputs[0]].shape[0] == -1 && g->values[g->inputs[0]].shape[1] == 3);
    /* topologically sorted: Add before Relu */
    CHECK(strcmp(g->nodes[0].op, "Add") == 0 && strcmp(g->nodes[1].op, "Relu") == 0);
    if (sh_op_find("Add") && sh_op_find("Relu")) {
        int64_t xs[2] = {1, 3};
        sh_tensor *x = sh_tensor_new(SH_F32, 2, xs, &err), *o[8] = {0};
        float xv[3] = {-5, 0, 1};
        memcpy(x->data, xv, 12);
        int no = 0;
        CHECK_OK(run_graph(g, &x, 1, o, &no, &err), &err);
        if (no == 3) {
            /* broadcast [1,3] + [2,3] -> [2,3]: relu(x + k) */
            CHECK(o[0]->ndim == 2 && o[0]->shape[0] == 2);
            CHECK_NEAR(sh_f32(o[0])[0], 0.0f, 0);
            CHECK_NEAR(sh_f32(o[0])[1], 2.0f, 0);
            CHECK_NEAR(sh_f32(o[0])[5], 7.0f, 0);
            CHECK(sh_f32(o[1])[0] == 2.5f);
            CHECK(((int64_t *)o[2]->data)[2] == 9);
        }
        for (int i = 0; i < 8; i++) sh_tensor_free(o[i]);
        sh_tensor_free(x);
    }
    sh_graph_free(g);
}

/* A model x -> Relu -> y with initializer W given by the caller. */
static int load_with_init(Onnx__TensorProto *w, sh_error *err)
{
    Onnx__NodeProto relu = ONNX__NODE_PROTO__INIT;
    char *in[1] = {"x"}, *out[1] = {"y"};
    relu.op_type = "Relu", relu.n_input = 1, relu.input = in, relu.n_output = 1, relu.output = out;
    Onnx__NodeProto *nodes[1] = {&relu};
    Onnx__TensorProto *inits[1] = {w};
    Onnx__ValueInfoProto *ins[1] = {vinfo("x", 1, 1, (int64_t[]){4})}, *outs[1] = {vinfo("y", 1, 1, (int64_t[]){4})};
    Onnx__GraphProto gp = ONNX__GRAPH_PROTO__INIT;
    gp.n_node = 1, gp.node = nodes, gp.n_input = 1, gp.input = ins, gp.n_output = 1, gp.output = outs;
    gp.n_initializer = 1, gp.initializer = inits;
    size_t n;
    uint8_t *buf = pack_model(&gp, &n);
    sh_graph *g = NULL;
    int rc = sh_onnx_load_mem(buf, n, "model.onnx", &g, err);
    free(buf);
    sh_graph_free(g);
    return rc;
}

TEST(onnx_error_external_data_size_dtype)
{
    sh_error err = {0};
    int64_t dims[2] = {3, 4};
    float data[12] = {0};
    Onnx__TensorProto w = ONNX__TENSOR_PROTO__INIT;
    w.name = "W", w.n_dims = 2, w.dims = dims, w.has_data_type = 1, w.data_type = 1;
    /* fine */
    w.has_raw_data = 1, w.raw_data.len = 48, w.raw_data.data = (uint8_t *)data;
    CHECK_OK(load_with_init(&w, &err), &err);
    /* raw_data size mismatch */
    w.raw_data.len = 40;
    CHECK(load_with_init(&w, &err) == SH_EFORMAT);
    CHECK_MSG(strstr(err.msg, "model.onnx") && strstr(err.msg, "'W'") && strstr(err.msg, "[3,4]") &&
                  strstr(err.msg, "48") && strstr(err.msg, "40"),
              "message: %s", err.msg);
    /* external data */
    Onnx__StringStringEntryProto loc = ONNX__STRING_STRING_ENTRY_PROTO__INIT, *ext[1] = {&loc};
    loc.key = "location", loc.value = "weights.bin";
    w.has_raw_data = 0;
    w.has_data_location = 1, w.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    w.n_external_data = 1, w.external_data = ext;
    CHECK(load_with_init(&w, &err) == SH_EUNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "external data") && strstr(err.msg, "'W'") && strstr(err.msg, "not supported"),
              "message: %s", err.msg);
    /* unsupported dtype */
    w.has_data_location = 0, w.n_external_data = 0;
    w.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__COMPLEX64;
    CHECK(load_with_init(&w, &err) == SH_EUNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "'W'") && strstr(err.msg, "COMPLEX64"), "message: %s", err.msg);
    /* negative dim */
    int64_t bad[2] = {3, -4};
    w.data_type = 1, w.dims = bad;
    CHECK(load_with_init(&w, &err) == SH_EFORMAT && strstr(err.msg, "negative"));
    /* huge dims with no data: an error, not an allocation */
    int64_t huge[2] = {1ll << 30, 1ll << 30};
    w.dims = huge;
    w.has_raw_data = 1, w.raw_data.len = 48;
    CHECK(load_with_init(&w, &err) == SH_EFORMAT);
}

TEST(onnx_error_missing_random_truncated)
{
    sh_error err = {0};
    sh_graph *g = NULL;
    CHECK(sh_onnx_load("/nonexistent/dir/model.onnx", &g, &err) == SH_EIO && !g);
    CHECK_MSG(strstr(err.msg, "/nonexistent/dir/model.onnx"), "message: %s", err.msg);
    /* random bytes */
    const char *path = tmp_path("random.onnx");
    uint8_t junk[512];
    for (int i = 0; i < 512; i++) junk[i] = (uint8_t)rnd();
    junk[0] = 0xff; /* an invalid field key (field 31, wire type 7) */
    write_bytes(path, junk, sizeof junk);
    CHECK(sh_onnx_load(path, &g, &err) == SH_EFORMAT && !g);
    CHECK_MSG(strstr(err.msg, "random.onnx") && strstr(err.msg, "not a valid ONNX model (protobuf parse failed)"),
              "message: %s", err.msg);
    /* empty file */
    write_bytes(path, "", 0);
    CHECK(sh_onnx_load(path, &g, &err) == SH_EFORMAT && strstr(err.msg, "not a valid ONNX model"));
    /* truncated in the middle of a weight */
    sh_graph *a = attr_graph();
    const char *full = tmp_path("full.onnx");
    CHECK_OK(sh_onnx_save(a, full, &err), &err);
    sh_graph_free(a);
    void *buf;
    size_t n;
    CHECK_OK(sh_read_file(full, &buf, &n, &err), &err);
    write_bytes(path, buf, n / 2);
    CHECK(sh_onnx_load(path, &g, &err) == SH_EFORMAT && !g);
    CHECK_MSG(strstr(err.msg, "not a valid ONNX model"), "message: %s", err.msg);
    free(buf);
}

/* Fuzz: every truncation and many random byte flips of a valid model either
 * load or fail with a message; never crash (run under ASan by make asan). */
static void fuzz_buffer(const uint8_t *buf, size_t n, int flips, int *ok, int *bad)
{
    sh_error err;
    size_t step = n > 3000 ? n / 1500 : 1;
    for (size_t cut = 0; cut < n; cut += step) {
        sh_graph *g = NULL;
        memset(&err, 0, sizeof err);
        int rc = sh_onnx_load_mem(buf, cut, "fuzz.onnx", &g, &err);
        if (rc == SH_OK) {
            (*ok)++;
            CHECK(g != NULL);
        } else {
            (*bad)++;
            CHECK(g == NULL && err.msg[0] && rc == err.code);
        }
        sh_graph_free(g);
    }
    uint8_t *c = malloc(n);
    for (int it = 0; it < flips; it++) {
        memcpy(c, buf, n);
        int nf = 1 + (int)(rnd() % 3);
        for (int f = 0; f < nf; f++) c[rnd() % n] ^= (uint8_t)(1 + rnd() % 255);
        sh_graph *g = NULL;
        memset(&err, 0, sizeof err);
        int rc = sh_onnx_load_mem(c, n, "fuzz.onnx", &g, &err);
        if (rc == SH_OK) {
            (*ok)++;
            CHECK(g != NULL);
        } else {
            (*bad)++;
            CHECK(g == NULL && err.msg[0] && rc == err.code);
        }
        if (g && *ok < 60) { /* whatever loaded must also export (a few: each save fsyncs) */
            sh_error e2 = {0};
            int r2 = sh_onnx_save(g, tmp_path("fuzz_out.onnx"), &e2);
            CHECK(r2 == SH_OK || e2.msg[0]);
        }
        sh_graph_free(g);
    }
    free(c);
}

TEST(onnx_fuzz_truncate_and_flip_no_crash)
{
    sh_error err = {0};
    int ok = 0, bad = 0, flips = sh_test_quick() ? 300 : 1500;
    sh_graph *a = attr_graph();
    const char *full = tmp_path("fuzz.onnx");
    CHECK_OK(sh_onnx_save(a, full, &err), &err);
    sh_graph_free(a);
    void *buf;
    size_t n;
    CHECK_OK(sh_read_file(full, &buf, &n, &err), &err);
    fuzz_buffer(buf, n, flips, &ok, &bad);
    free(buf);
    /* a model from the ONNX test data (typed attributes, value_info) when present */
    const char *node = NODE_DATA "/test_conv_with_strides_and_asymmetric_padding/model.onnx";
    struct stat st;
    if (stat(node, &st) == 0 && sh_read_file(node, &buf, &n, &err) == SH_OK) {
        fuzz_buffer(buf, n, flips / 3, &ok, &bad);
        free(buf);
    }
    fprintf(stderr, "    fuzz: %d loads succeeded, %d failed cleanly\n", ok, bad);
    CHECK(bad > 0);
}

TEST(onnx_error_unsupported_ops_listed)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("t");
    int64_t s[2] = {1, 4};
    sh_graph_add_input(g, "x", SH_F32, 2, s, &err);
    const char *in[1] = {"x"}, *o1[1] = {"a"}, *o2[1] = {"b"}, *i2[1] = {"a"}, *o3[1] = {"c"}, *i3[1] = {"b"};
    const char *i4[1] = {"c"}, *o4[1] = {"d"};
    sh_graph_add_node(g, "FooOp", "foo1", 1, in, 1, o1, &err);
    sh_graph_add_node(g, "BarOp", "bar1", 1, i2, 1, o2, &err);
    sh_graph_add_node(g, "FooOp", "foo2", 1, i3, 1, o3, &err);
    sh_graph_add_node(g, "Relu", "relu", 1, i4, 1, o4, &err);
    sh_graph_mark_output(g, "d", &err);
    const char *path = tmp_path("unsupported.onnx");
    CHECK_OK(sh_onnx_save(g, path, &err), &err); /* saving needs no kernels */
    sh_graph_free(g);
    g = NULL;
    CHECK(sh_onnx_load(path, &g, &err) == SH_EUNSUPPORTED && !g);
    CHECK_MSG(strstr(err.msg, "unsupported.onnx") && strstr(err.msg, "FooOp") && strstr(err.msg, "'foo1'") &&
                  strstr(err.msg, "'foo2'") && strstr(err.msg, "BarOp") && strstr(err.msg, "'bar1'") &&
                  !strstr(err.msg, "Relu"),
              "message: %s", err.msg);
}

TEST(onnx_error_undefined_input_and_cycle)
{
    sh_error err = {0};
    Onnx__NodeProto a = ONNX__NODE_PROTO__INIT, b = ONNX__NODE_PROTO__INIT;
    char *a_in[1] = {"nowhere"}, *a_out[1] = {"y"};
    a.op_type = "Relu", a.name = "lost", a.n_input = 1, a.input = a_in, a.n_output = 1, a.output = a_out;
    Onnx__NodeProto *nodes[2] = {&a, &b};
    Onnx__ValueInfoProto *ins[1] = {vinfo("x", 1, 1, (int64_t[]){4})}, *outs[1] = {vinfo("y", 1, 1, (int64_t[]){4})};
    Onnx__GraphProto gp = ONNX__GRAPH_PROTO__INIT;
    gp.n_node = 1, gp.node = nodes, gp.n_input = 1, gp.input = ins, gp.n_output = 1, gp.output = outs;
    size_t n;
    uint8_t *buf = pack_model(&gp, &n);
    sh_graph *g = NULL;
    CHECK(sh_onnx_load_mem(buf, n, "m.onnx", &g, &err) == SH_EFORMAT && !g);
    CHECK_MSG(strstr(err.msg, "'lost'") && strstr(err.msg, "'nowhere'") && strstr(err.msg, "not defined"),
              "message: %s", err.msg);
    free(buf);
    /* a cycle: y = Relu(z), z = Relu(y) */
    char *b_in[1] = {"y"}, *b_out[1] = {"z"};
    a_in[0] = "z";
    b.op_type = "Relu", b.name = "other", b.n_input = 1, b.input = b_in, b.n_output = 1, b.output = b_out;
    gp.n_node = 2;
    buf = pack_model(&gp, &n);
    CHECK(sh_onnx_load_mem(buf, n, "m.onnx", &g, &err) == SH_EFORMAT && !g);
    CHECK_MSG(strstr(err.msg, "cycle"), "message: %s", err.msg);
    free(buf);
    /* a sequence-typed input */
    Onnx__ValueInfoProto seq = ONNX__VALUE_INFO_PROTO__INIT;
    Onnx__TypeProto st = ONNX__TYPE_PROTO__INIT;
    Onnx__TypeProto__Sequence sq = ONNX__TYPE_PROTO__SEQUENCE__INIT;
    seq.name = "x", seq.type = &st, st.value_case = ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE, st.sequence_type = &sq;
    ins[0] = &seq;
    a_in[0] = "x";
    gp.n_node = 1;
    buf = pack_model(&gp, &n);
    CHECK(sh_onnx_load_mem(buf, n, "m.onnx", &g, &err) == SH_EUNSUPPORTED && !g);
    CHECK_MSG(strstr(err.msg, "'x'") && strstr(err.msg, "sequence"), "message: %s", err.msg);
    free(buf);
}

/* ---- sh_model_load / sh_model_save dispatch ---------------------------- */

TEST(model_load_save_dispatch)
{
    sh_error err = {0};
    sh_graph *g = attr_graph(), *h = NULL;
    const char *p1 = tmp_path("dispatch.onnx"), *p2 = tmp_path("dispatch.model");
    CHECK_OK(sh_model_save(g, p1, &err), &err);
    CHECK_OK(sh_model_load(p1, &h, &err), &err);
    CHECK(h && h->n_nodes == 2);
    sh_graph_free(h);
    h = NULL;
    /* unknown extension: recognised by its first byte when loading */
    void *buf;
    size_t n;
    CHECK_OK(sh_read_file(p1, &buf, &n, &err), &err);
    write_bytes(p2, buf, n);
    free(buf);
    CHECK_OK(sh_model_load(p2, &h, &err), &err);
    sh_graph_free(h);
    h = NULL;
    CHECK(sh_model_save(g, p2, &err) == SH_EINVAL && strstr(err.msg, ".onnx"));
    write_bytes(p2, "GGUF....", 8);
    CHECK(sh_model_load(p2, &h, &err) == SH_EUNSUPPORTED && strstr(err.msg, "unknown model format"));
    CHECK(sh_model_load("/nonexistent.onnx", &h, &err) == SH_EIO);
    sh_graph_free(g);
}

TEST(model_convert_llama2c_roundtrip)
{
    const char *sh = sh_test_shared();
    if (!sh) SKIP("no ../shared");
    char bin[512];
    snprintf(bin, sizeof bin, "%s/models/stories260K/stories260K.bin", sh);
    struct stat st;
    if (stat(bin, &st) != 0) SKIP("no stories260K.bin");
    sh_error err = {0};
    sh_graph *g = NULL, *h = NULL;
    CHECK_OK(sh_model_load(bin, &g, &err), &err);
    if (!g) return;
    const char *onnx = tmp_path("stories.onnx"), *back = tmp_path("stories.bin");
    CHECK_OK(sh_model_save(g, onnx, &err), &err);
    CHECK_OK(sh_model_load(onnx, &h, &err), &err);
    if (h) CHECK_OK(sh_model_save(h, back, &err), &err);
    /* .bin -> .onnx -> .bin gives the same bytes */
    void *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    CHECK_OK(sh_read_file(bin, &a, &na, &err), &err);
    CHECK_OK(sh_read_file(back, &b, &nb, &err), &err);
    CHECK(a && b && na == nb && memcmp(a, b, na) == 0);
    free(a);
    free(b);
    sh_graph_free(g);
    sh_graph_free(h);
}

/* Every model of the ONNX test data (node, pytorch-converted,
 * pytorch-operator, simple, real) loads or fails with one clean message:
 * exercises opsets 1..17, typed and raw tensors, every attribute type,
 * sequences, optionals, subgraphs and unsupported ops. */
TEST(onnx_load_every_test_model_cleanly)
{
    const char *root = "/usr/share/libonnx-testdata/data";
    const char *suites[] = {"node", "pytorch-converted", "pytorch-operator", "simple", "real"};
    struct stat st;
    if (stat(root, &st) != 0) SKIP("no ONNX test data (libonnx-testdata)");
    int loaded = 0, failed = 0, bad_msg = 0;
    int by_code[8] = {0};
    for (size_t s = 0; s < sizeof suites / sizeof suites[0]; s++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s", root, suites[s]);
        char cmd[700];
        snprintf(cmd, sizeof cmd, "ls %s 2>/dev/null", dir);
        FILE *ls = popen(cmd, "r");
        if (!ls) continue;
        char name[256];
        while (fgets(name, sizeof name, ls)) {
            name[strcspn(name, "\n")] = 0;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s/model.onnx", dir, name);
            if (stat(path, &st) != 0) continue;
            sh_error err = {0};
            sh_graph *g = NULL;
            int rc = sh_onnx_load(path, &g, &err);
            if (rc == SH_OK) {
                loaded++;
                CHECK(g != NULL);
            } else {
                failed++;
                if (rc < 0 && -rc < 8) by_code[-rc]++;
                if (g || !err.msg[0] || !strstr(err.msg, "model.onnx") || strchr(err.msg, '\n')) {
                    bad_msg++;
                    fprintf(stderr, "    %s: rc %d, message '%s'\n", path, rc, err.msg);
                }
            }
            sh_graph_free(g);
        }
        pclose(ls);
    }
    fprintf(stderr, "    %d models loaded, %d refused (%d unsupported, %d format, %d invalid)\n", loaded, failed,
            by_code[-SH_EUNSUPPORTED], by_code[-SH_EFORMAT], by_code[-SH_EINVAL]);
    CHECK(loaded > 0);
    CHECK(bad_msg == 0);
}

/* Initializers in shrink's own formats (quantized, sparse) are stored as
 * UINT8 bytes plus a "shrink.format.NAME" metadata entry, and come back
 * exactly; other metadata is untouched. */
TEST(onnx_roundtrip_native_formats)
{
    sh_error err = {0};
    sh_graph *g = attr_graph(), *h = NULL;
    int64_t qs[2] = {4, 64};
    float w[4 * 64];
    for (int i = 0; i < 4 * 64; i++) w[i] = (i % 3 == 0) ? rndf() : 0.0f;
    const char *qnames[] = {"q4_0", "q8_0", "q2_1"};
    int nq = 0;
    for (int i = 0; i < 3; i++) {
        int f = sh_format_from_name(qnames[i]);
        if (f < 0) continue;
        sh_tensor *t = sh_tensor_new((sh_format)f, 2, qs, &err);
        CHECK(t != NULL);
        if (!t) continue;
        sh_format_get((sh_format)f)->from_f32(w, t->data, 4 * 64);
        char name[32];
        snprintf(name, sizeof name, "w_%s", qnames[i]);
        CHECK(sh_graph_add_init(g, name, t, &err) >= 0);
        nq++;
    }
    int csr = sh_format_from_name("csr");
    if (csr >= 0) {
        sh_tensor *t = NULL;
        CHECK_OK(sh_sparse_pack((sh_format)csr, w, 4, 64, NULL, &t, &err), &err);
        if (t) CHECK(sh_graph_add_init(g, "w_csr", t, &err) >= 0);
        nq++;
    }
    if (!nq) {
        sh_graph_free(g);
        SKIP("no quantized or sparse formats in this build");
    }
    const char *path = tmp_path("native.onnx");
    CHECK_OK(sh_onnx_save(g, path, &err), &err);
    CHECK_OK(sh_onnx_load(path, &h, &err), &err);
    for (int i = 0; h && i < g->n_values; i++) {
        if (!g->values[i].init) continue;
        int j = sh_graph_find(h, g->values[i].name);
        CHECK_MSG(j >= 0 && same_tensor(g->values[i].init, h->values[j].init), "initializer '%s' (%s) differs",
                  g->values[i].name, sh_format_get(g->values[i].init->fmt)->name);
    }
    for (int i = 0; h && i < h->n_meta; i++) CHECK(strncmp(h->meta_keys[i], "shrink.format.", 14) != 0);
    CHECK(h && h->n_meta == g->n_meta);
    /* saving again gives the same file */
    const char *path2 = tmp_path("native2.onnx");
    if (h) CHECK_OK(sh_onnx_save(h, path2, &err), &err);
    void *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    sh_read_file(path, &a, &na, &err);
    sh_read_file(path2, &b, &nb, &err);
    CHECK(a && b && na == nb && memcmp(a, b, na) == 0);
    free(a);
    free(b);
    sh_graph_free(g);
    sh_graph_free(h);
}

/* A graph built in C with a Constant node (tensor attribute 'value') exports
 * the node as is; importing folds it into an initializer of the same name. */
TEST(onnx_constant_node_export_import)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("c");
    int64_t s[1] = {3};
    sh_graph_add_input(g, "x", SH_F32, 1, s, &err);
    const char *co[1] = {"k"}, *ai[2] = {"x", "k"}, *ao[1] = {"y"};
    int k = sh_graph_add_node(g, "Constant", "const_k", 0, NULL, 1, co, &err);
    CHECK(k >= 0);
    sh_node *n = &g->nodes[k];
    n->attrs = calloc(1, sizeof(sh_attr));
    n->attrs[0].name = strdup("value");
    n->attrs[0].type = SH_ATTR_TENSOR;
    n->attrs[0].t = sh_tensor_new(SH_F32, 1, s, &err);
    float kv[3] = {0.5f, -1.0f, 2.0f};
    memcpy(n->attrs[0].t->data, kv, sizeof kv);
    n->n_attrs = 1;
    CHECK(sh_graph_add_node(g, "Add", "add", 2, ai, 1, ao, &err) >= 0);
    sh_graph_mark_output(g, "y", &err);
    const char *path = tmp_path("const_node.onnx");
    CHECK_OK(sh_onnx_save(g, path, &err), &err);
    sh_graph *h = NULL;
    CHECK_OK(sh_onnx_load(path, &h, &err), &err);
    if (h) {
        int v = sh_graph_find(h, "k");
        CHECK(h->n_nodes == 1 && strcmp(h->nodes[0].op, "Add") == 0);
        CHECK(v >= 0 && h->values[v].init && memcmp(h->values[v].init->data, kv, sizeof kv) == 0);
    }
    sh_graph_free(g);
    sh_graph_free(h);
}
