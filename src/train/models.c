/* models.c - built-in model definitions, built node by node on the graph IR:
 * "mlp", "lenet5", "cnn" (BatchNorm + a residual block), "llama-tiny".
 *
 * Image models take "input" f32 [-1,1,28,28] and give "logits" [-1,10].
 * Weights use PyTorch's default initialisation (kaiming_uniform with
 * a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound
 * for biases), drawn from a seeded generator: same seed, same bytes.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "shrink.h"
#include "train/train.h"



typedef struct mb {
    sh_graph *g;
    uint64_t rng;
    sh_error *err;
    int rc;
    int uniq;
} mb;

static void param(mb *m, const char *name, int ndim, const int64_t *shape, double bound, double fill)
{
    if (m->rc) return;
    sh_tensor *t = sh_tensor_new(SH_F32, ndim, shape, m->err);
    if (!t) {
        m->rc = m->err ? m->err->code : SH_ENOMEM;
        return;
    }
    float *d = t->data;
    int64_t n = sh_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        d[i] = bound > 0 ? (float)((2.0 * sh_rng_uniform(&m->rng) - 1.0) * bound) : (float)fill;
    int rc = sh_graph_add_init(m->g, name, t, m->err);
    if (rc < 0) m->rc = rc;
}

static int node(mb *m, const char *op, const char *name, int n_in, const char *const *in, const char *out)
{
    if (m->rc) return -1;
    const char *outs[1] = {out};
    int k = sh_graph_add_node(m->g, op, name, n_in, in, 1, outs, m->err);
    if (k < 0) m->rc = k;
    return k;
}

/* Conv: weight [cout,cin,k,k] named PREFIX.weight (+ PREFIX.bias). */
static void conv(mb *m, const char *pre, const char *in, const char *out, int cin, int cout, int k, int stride,
                 int pad, int bias)
{
    char w[128], b[128];
    snprintf(w, sizeof w, "%s.weight", pre);
    snprintf(b, sizeof b, "%s.bias", pre);
    int64_t ws[4] = {cout, cin, k, k}, bs[1] = {cout};
    double bound = 1.0 / sqrt((double)cin * k * k);
    param(m, w, 4, ws, bound, 0);
    if (bias) param(m, b, 1, bs, bound, 0);
    const char *ins[3] = {in, w, b};
    int n = node(m, "Conv", pre, bias ? 3 : 2, ins, out);
    if (n < 0) return;
    int64_t ks[2] = {k, k}, st[2] = {stride, stride}, pads[4] = {pad, pad, pad, pad}, dil[2] = {1, 1};
    sh_node_set_ints(m->g, n, "kernel_shape", 2, ks);
    sh_node_set_ints(m->g, n, "strides", 2, st);
    sh_node_set_ints(m->g, n, "pads", 4, pads);
    sh_node_set_ints(m->g, n, "dilations", 2, dil);
    sh_node_set_int(m->g, n, "group", 1);
}

/* Linear layer as Gemm(transB=1): weight [out,in] like torch.nn.Linear. */
static void linear(mb *m, const char *pre, const char *in, const char *out, int fin, int fout)
{
    char w[128], b[128];
    snprintf(w, sizeof w, "%s.weight", pre);
    snprintf(b, sizeof b, "%s.bias", pre);
    int64_t ws[2] = {fout, fin}, bs[1] = {fout};
    double bound = 1.0 / sqrt((double)fin);
    param(m, w, 2, ws, bound, 0);
    param(m, b, 1, bs, bound, 0);
    const char *ins[3] = {in, w, b};
    int n = node(m, "Gemm", pre, 3, ins, out);
    if (n < 0) return;
    sh_node_set_int(m->g, n, "transB", 1);
    sh_node_set_float(m->g, n, "alpha", 1.0f);
    sh_node_set_float(m->g, n, "beta", 1.0f);
}

static void bn(mb *m, const char *pre, const char *in, const char *out, int ch)
{
    char s[128], b[128], mu[128], var[128];
    snprintf(s, sizeof s, "%s.weight", pre);
    snprintf(b, sizeof b, "%s.bias", pre);
    snprintf(mu, sizeof mu, "%s.running_mean", pre);
    snprintf(var, sizeof var, "%s.running_var", pre);
    int64_t cs[1] = {ch};
    param(m, s, 1, cs, 0, 1.0);
    param(m, b, 1, cs, 0, 0.0);
    param(m, mu, 1, cs, 0, 0.0);
    param(m, var, 1, cs, 0, 1.0);
    const char *ins[5] = {in, s, b, mu, var};
    int n = node(m, "BatchNormalization", pre, 5, ins, out);
    if (n < 0) return;
    sh_node_set_float(m->g, n, "epsilon", 1e-5f);
    sh_node_set_float(m->g, n, "momentum", 0.9f); /* PyTorch momentum 0.1 */
}

static void unary(mb *m, const char *op, const char *name, const char *in, const char *out)
{
    const char *ins[1] = {in};
    node(m, op, name, 1, ins, out);
}

static void maxpool(mb *m, const char *name, const char *in, const char *out, int k)
{
    const char *ins[1] = {in};
    int n = node(m, "MaxPool", name, 1, ins, out);
    if (n < 0) return;
    int64_t ks[2] = {k, k}, pads[4] = {0, 0, 0, 0};
    sh_node_set_ints(m->g, n, "kernel_shape", 2, ks);
    sh_node_set_ints(m->g, n, "strides", 2, ks);
    sh_node_set_ints(m->g, n, "pads", 4, pads);
}

static void flatten(mb *m, const char *name, const char *in, const char *out)
{
    const char *ins[1] = {in};
    int n = node(m, "Flatten", name, 1, ins, out);
    if (n >= 0) sh_node_set_int(m->g, n, "axis", 1);
}

static void build_mlp(mb *m)
{
    flatten(m, "flatten", "input", "x0");
    linear(m, "fc1", "x0", "x1", 784, 300);
    unary(m, "Relu", "relu1", "x1", "x2");
    linear(m, "fc2", "x2", "x3", 300, 100);
    unary(m, "Relu", "relu2", "x3", "x4");
    linear(m, "fc3", "x4", "logits", 100, 10);
}

/* a small student for distillation: 784-32-10 (25,450 parameters) */
static void build_mlp_small(mb *m)
{
    flatten(m, "flatten", "input", "x0");
    linear(m, "fc1", "x0", "x1", 784, 32);
    unary(m, "Relu", "relu1", "x1", "x2");
    linear(m, "fc2", "x2", "logits", 32, 10);
}

/* distill: a small CNN student for distillation from "cnn" (24,282
 * parameters with BN statistics, 1/7 of the teacher): three conv-BN-ReLU layers 16/32/64
 * (two 2x2 max pools), global average pool, Linear 64-10. */
static void cbr(mb *m, const char *pre, const char *in, const char *out, int cin, int cout, int k, int relu);
static void build_cnn_small(mb *m)
{
    cbr(m, "layer1", "input", "l1", 1, 16, 3, 1);      /* 16x28x28 */
    maxpool(m, "pool1", "l1", "p1", 2);                 /* 16x14x14 */
    cbr(m, "layer2", "p1", "l2", 16, 32, 3, 1);        /* 32x14x14 */
    maxpool(m, "pool2", "l2", "p2", 2);                 /* 32x7x7 */
    cbr(m, "layer3", "p2", "l3", 32, 64, 3, 1);        /* 64x7x7 */
    unary(m, "GlobalAveragePool", "gap", "l3", "g");
    flatten(m, "flatten", "g", "f");
    linear(m, "fc", "f", "logits", 64, 10);
}
/* end distill */

static void build_lenet5(mb *m)
{
    conv(m, "conv1", "input", "c1", 1, 6, 5, 1, 2, 1);
    unary(m, "Relu", "relu1", "c1", "r1");
    maxpool(m, "pool1", "r1", "p1", 2);
    conv(m, "conv2", "p1", "c2", 6, 16, 5, 1, 0, 1);
    unary(m, "Relu", "relu2", "c2", "r2");
    maxpool(m, "pool2", "r2", "p2", 2);
    flatten(m, "flatten", "p2", "f");
    linear(m, "fc1", "f", "h1", 400, 120);
    unary(m, "Relu", "relu3", "h1", "a1");
    linear(m, "fc2", "a1", "h2", 120, 84);
    unary(m, "Relu", "relu4", "h2", "a2");
    linear(m, "fc3", "a2", "logits", 84, 10);
}

/* conv-BN-ReLU helper */
static void cbr(mb *m, const char *pre, const char *in, const char *out, int cin, int cout, int k, int relu)
{
    char c[96], b[96], bn_name[96], cv[96];
    snprintf(cv, sizeof cv, "%s.conv", pre);
    snprintf(bn_name, sizeof bn_name, "%s.bn", pre);
    snprintf(c, sizeof c, "%s_c", pre);
    snprintf(b, sizeof b, "%s_b", pre);
    conv(m, cv, in, c, cin, cout, k, 1, k / 2, 0);
    bn(m, bn_name, c, relu ? b : out, cout);
    if (relu) {
        char rn[96];
        snprintf(rn, sizeof rn, "%s.relu", pre);
        unary(m, "Relu", rn, b, out);
    }
}

/* A small ResNet-style CNN for 28x28: ~11 M multiply-adds per image
 * (forward), so a Fashion-MNIST epoch trains in minutes on 2 cores. */
static void build_cnn(mb *m)
{
    cbr(m, "layer1", "input", "l1", 1, 32, 3, 1);     /* 32x28x28 */
    maxpool(m, "pool1", "l1", "p1", 2);                /* 32x14x14 */
    cbr(m, "layer2", "p1", "l2", 32, 64, 3, 1);       /* 64x14x14 */
    maxpool(m, "pool2", "l2", "s", 2);                 /* 64x7x7: block input */
    cbr(m, "res.a", "s", "ra", 64, 64, 3, 1);
    cbr(m, "res.b", "ra", "rb", 64, 64, 3, 0);
    const char *ai[2] = {"rb", "s"};
    node(m, "Add", "res.add", 2, ai, "rs");            /* identity shortcut */
    unary(m, "Relu", "res.relu", "rs", "r");
    cbr(m, "layer4", "r", "l4", 64, 128, 3, 1);       /* 128x7x7 */
    unary(m, "GlobalAveragePool", "gap", "l4", "g");   /* 128x1x1 */
    flatten(m, "flatten", "g", "f");
    linear(m, "fc", "f", "logits", 128, 10);
}

int sh_model_build(const char *kind, uint64_t seed, sh_graph **out, sh_error *err)
{
    *out = NULL;
    if (!kind) return sh_err(err, SH_EINVAL, "model kind is NULL");
    if (strcmp(kind, "llama-tiny") == 0) {
        sh_llama_config c = {0};
        c.dim = 64;
        c.hidden_dim = 172; /* llama2.c: multiple_of 4 of 2/3 * 4 * dim */
        c.n_layers = 4;
        c.n_heads = 4;
        c.n_kv_heads = 4;
        c.vocab_size = 256;
        c.seq_len = 128;
        c.shared_classifier = 1;
        return sh_llama_build(&c, seed, out, err);
    }
    if (strcmp(kind, "llama-2l") == 0) { /* distill: 2-layer student with stories260K's dims */
        sh_llama_config c = {0};
        c.dim = 64;
        c.hidden_dim = 172;
        c.n_layers = 2;
        c.n_heads = 8;
        c.n_kv_heads = 4;
        c.vocab_size = 512;
        c.seq_len = 256;
        c.shared_classifier = 1;
        return sh_llama_build(&c, seed, out, err);
    }
    void (*fn)(mb *) = NULL;
    if (strcmp(kind, "mlp") == 0) fn = build_mlp;
    else if (strcmp(kind, "mlp-small") == 0) fn = build_mlp_small;
    else if (strcmp(kind, "lenet5") == 0) fn = build_lenet5;
    else if (strcmp(kind, "cnn") == 0) fn = build_cnn;
    else if (strcmp(kind, "cnn-small") == 0) fn = build_cnn_small; /* distill */
    else
        return sh_err(err, SH_EINVAL, "unknown model '%s' (built-in models: mlp, mlp-small, lenet5, cnn, cnn-small, llama-tiny, llama-2l)", kind);
    mb m = {0};
    m.g = sh_graph_new(kind);
    if (!m.g) return sh_err(err, SH_ENOMEM, "out of memory");
    m.rng = seed * 0x9E3779B97F4A7C15ull + 0x5EEDull;
    m.err = err;
    int64_t in_shape[4] = {-1, 1, 28, 28};
    int rc = sh_graph_add_input(m.g, "input", SH_F32, 4, in_shape, err);
    if (rc < 0) m.rc = rc;
    fn(&m);
    if (!m.rc) {
        rc = sh_graph_mark_output(m.g, "logits", err);
        if (rc < 0) m.rc = rc;
    }
    if (!m.rc) {
        sh_graph_set_meta(m.g, "shrink.model", kind);
        m.rc = sh_graph_check(m.g, err);
    }
    if (m.rc) {
        sh_graph_free(m.g);
        return m.rc;
    }
    *out = m.g;
    return SH_OK;
}
