#!/bin/bash
# qdq_ort.sh - a static int8 model exported as QDQ ONNX (shrink convert --qdq)
# runs in ONNX Runtime (onnxruntime-node, offline) with the same outputs as
# shrink's int8 kernels on the QOperator model, and shrink runs the QDQ file
# too.  The model (QuantizeLinear -> QLinearConv+Relu -> QLinearConv 1x1 ->
# QLinearAdd+Relu -> MaxPool -> Flatten -> QGemm+Relu -> QGemm f32 out, and
# QLinearGlobalAveragePool -> DequantizeLinear) is built with the C API by a
# small helper compiled here against the build's libshrink.a.
# Exit 0 pass, 1 fail, 77 skip (no node / onnxruntime-node / compiler).
set -u
cd "$(dirname "$0")/../.."
. tests/cli/ort_env.bash
cat > "$T/helper.c" <<'C'
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "shrink.h"
#include "ort_compare.h"
static sh_error err;
static void f32i(sh_graph *g, const char *n, int nd, const int64_t *s, const float *v)
{ sh_tensor *t = sh_tensor_new(SH_F32, nd, s, &err); for (int64_t i = 0; i < sh_tensor_numel(t); i++) sh_f32(t)[i] = v[i]; sh_graph_add_init(g, n, t, &err); }
static void inti(sh_graph *g, const char *n, sh_format f, int nd, const int64_t *s, uint32_t seed, int lo, int hi)
{
    sh_tensor *t = sh_tensor_new(f, nd, s, &err);
    for (int64_t i = 0; i < sh_tensor_numel(t); i++) {
        seed = seed * 1664525u + 1013904223u;
        int v = lo + (int)((seed >> 8) % (uint32_t)(hi - lo + 1));
        if (f == SH_U8) ((uint8_t *)t->data)[i] = (uint8_t)v; else if (f == SH_I8) ((int8_t *)t->data)[i] = (int8_t)v; else ((int32_t *)t->data)[i] = v;
    }
    sh_graph_add_init(g, n, t, &err);
}
static int node(sh_graph *g, const char *op, const char *name, int n, const char *const *in, const char *out)
{ return sh_graph_add_node(g, op, name, n, in, 1, &out, &err); }
int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "compare")) return ort_compare(argv[2], argv[3], atof(argv[4])); /* shrink.pb ort.bin tol */
    const char *dir = argv[1]; char p[1024];
    sh_graph *g = sh_graph_new("int8"); g->opset = 13;
    sh_graph_add_input(g, "x", SH_F32, 4, (int64_t[]){4, 2, 8, 8}, &err);
    float w1s[4] = {0.004f, 0.006f, 0.005f, 0.007f}, g1s[8], g2s[3];
    for (int i = 0; i < 8; i++) g1s[i] = 0.002f + 0.0003f * (float)i;
    for (int i = 0; i < 3; i++) g2s[i] = 0.003f + 0.001f * (float)i;
    f32i(g, "xs", 0, NULL, (float[]){0.02f}); inti(g, "xz", SH_U8, 0, NULL, 1, 120, 120);
    inti(g, "w1", SH_I8, 4, (int64_t[]){4, 2, 3, 3}, 7, -127, 127); f32i(g, "w1s", 1, (int64_t[]){4}, w1s);
    inti(g, "w1z", SH_I8, 1, (int64_t[]){4}, 0, 0, 0); inti(g, "b1", SH_I32, 1, (int64_t[]){4}, 9, -3000, 3000);
    f32i(g, "c1s", 0, NULL, (float[]){0.03f}); inti(g, "c1z", SH_U8, 0, NULL, 0, 0, 0);
    inti(g, "w2", SH_I8, 4, (int64_t[]){4, 4, 1, 1}, 11, -127, 127); f32i(g, "w2s", 0, NULL, (float[]){0.01f});
    inti(g, "w2z", SH_I8, 0, NULL, 0, 0, 0); f32i(g, "c2s", 0, NULL, (float[]){0.035f}); inti(g, "c2z", SH_U8, 0, NULL, 0, 128, 128);
    f32i(g, "as", 0, NULL, (float[]){0.04f}); inti(g, "az", SH_U8, 0, NULL, 0, 0, 0);
    inti(g, "g1w", SH_I8, 2, (int64_t[]){8, 64}, 13, -127, 127); f32i(g, "g1s", 1, (int64_t[]){8}, g1s);
    inti(g, "g1z", SH_I8, 1, (int64_t[]){8}, 0, 0, 0); inti(g, "g1b", SH_I32, 1, (int64_t[]){8}, 17, -2000, 2000);
    f32i(g, "h1s", 0, NULL, (float[]){0.025f}); inti(g, "h1z", SH_U8, 0, NULL, 0, 0, 0);
    inti(g, "g2w", SH_I8, 2, (int64_t[]){3, 8}, 19, -127, 127); f32i(g, "g2s", 1, (int64_t[]){3}, g2s);
    inti(g, "g2z", SH_I8, 1, (int64_t[]){3}, 0, 0, 0); inti(g, "g2b", SH_I32, 1, (int64_t[]){3}, 23, -500, 500);
    f32i(g, "ps", 0, NULL, (float[]){0.01f}); inti(g, "pz", SH_U8, 0, NULL, 0, 3, 3);
    node(g, "QuantizeLinear", "quant_x", 3, (const char *[]){"x", "xs", "xz"}, "xq");
    int k = node(g, "QLinearConv", "conv1", 9, (const char *[]){"xq", "xs", "xz", "w1", "w1s", "w1z", "c1s", "c1z", "b1"}, "c1");
    sh_node_set_ints(g, k, "pads", 4, (int64_t[]){1, 1, 1, 1}); sh_node_set_string(g, k, "activation", "Relu");
    node(g, "QLinearConv", "conv2", 8, (const char *[]){"c1", "c1s", "c1z", "w2", "w2s", "w2z", "c2s", "c2z"}, "c2");
    k = node(g, "QLinearAdd", "add", 8, (const char *[]){"c1", "c1s", "c1z", "c2", "c2s", "c2z", "as", "az"}, "a");
    sh_node_set_string(g, k, "activation", "Relu");
    k = node(g, "MaxPool", "pool", 1, (const char *[]){"a"}, "pl");
    sh_node_set_ints(g, k, "kernel_shape", 2, (int64_t[]){2, 2}); sh_node_set_ints(g, k, "strides", 2, (int64_t[]){2, 2});
    node(g, "Flatten", "flat", 1, (const char *[]){"pl"}, "f");
    k = node(g, "QGemm", "fc1", 9, (const char *[]){"f", "as", "az", "g1w", "g1s", "g1z", "g1b", "h1s", "h1z"}, "h1");
    sh_node_set_int(g, k, "transB", 1); sh_node_set_string(g, k, "activation", "Relu");
    k = node(g, "QGemm", "fc2", 7, (const char *[]){"h1", "h1s", "h1z", "g2w", "g2s", "g2z", "g2b"}, "y");
    sh_node_set_int(g, k, "transB", 1);
    node(g, "QLinearGlobalAveragePool", "gap", 5, (const char *[]){"c1", "c1s", "c1z", "ps", "pz"}, "gp");
    node(g, "DequantizeLinear", "dq_gap", 3, (const char *[]){"gp", "ps", "pz"}, "y2");
    sh_graph_mark_output(g, "y", &err); sh_graph_mark_output(g, "y2", &err);
    for (int i = 0; i < g->n_nodes; i++)
        if (!strncmp(g->nodes[i].op, "QGemm", 5) || !strcmp(g->nodes[i].op, "QLinearAdd") || !strcmp(g->nodes[i].op, "QLinearGlobalAveragePool"))
            { free(g->nodes[i].domain); g->nodes[i].domain = strdup("com.microsoft"); }
    snprintf(p, sizeof p, "%s/int8.onnx", dir);
    if (sh_graph_check(g, &err) || sh_onnx_save(g, p, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    sh_tensor *x = sh_tensor_new(SH_F32, 4, (int64_t[]){4, 2, 8, 8}, &err);
    for (int64_t i = 0; i < 512; i++) sh_f32(x)[i] = (float)(((i * 37) % 101) / 25.0 - 1.5);
    snprintf(p, sizeof p, "%s/x.pb", dir);
    if (sh_tensorproto_save(x, "x", p, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    sh_tensor_free(x); sh_graph_free(g);
    return 0;
}
C
ort_build_helper
fails=0
"$T/helper" "$T" || { echo "FAIL: helper"; exit 1; }
"$SH" convert "$T/int8.onnx" -o "$T/qdq.onnx" --qdq >/dev/null || { echo "FAIL: convert --qdq"; exit 1; }
"$SH" run "$T/int8.onnx" --input "$T/x.pb" -o "$T/out_int8" >/dev/null || { echo "FAIL: shrink run int8"; exit 1; }
"$SH" run "$T/qdq.onnx" --input "$T/x.pb" -o "$T/out_qdq" >/dev/null || { echo "FAIL: shrink run qdq"; exit 1; }
# --from-qdq gives back int8 ops with bit-identical outputs
"$SH" convert "$T/qdq.onnx" -o "$T/back.onnx" --from-qdq >/dev/null || { echo "FAIL: convert --from-qdq"; exit 1; }
"$SH" run "$T/back.onnx" --input "$T/x.pb" --expect "$T/out_int8" --tol 0 >/dev/null || { echo "FAIL: from-qdq outputs differ"; fails=$((fails+1)); }
cat > "$T/ort.js" <<'JS'
const path = require('path');
const fs = require('fs');
const ort = require(path.join(process.argv[2], 'bench', 'node_modules', 'onnxruntime-node'));
const [model, outdir] = process.argv.slice(3);
(async () => {
  const s = await ort.InferenceSession.create(model, { intraOpNumThreads: 1, graphOptimizationLevel: 'all', logSeverityLevel: 3 });
  const x = new Float32Array(512);
  for (let i = 0; i < 512; i++) x[i] = ((i * 37) % 101) / 25.0 - 1.5;
  const r = await s.run({ x: new ort.Tensor('float32', x, [4, 2, 8, 8]) });
  s.outputNames.forEach((n, i) => fs.writeFileSync(path.join(outdir, `ort_${i}.bin`), Buffer.from(r[n].data.buffer)));
})().catch((e) => { console.error('ort: error: ' + e.message); process.exit(1); });
JS
node "$T/ort.js" "$PWD" "$T/qdq.onnx" "$T" || { echo "FAIL: ONNX Runtime could not run the QDQ model"; exit 1; }
# ORT (its int8 kernels on the fused QDQ graph) vs shrink's int8 kernels: within
# one output quantization step of the last layer's inputs (8 * 127 * 0.005 *
# 0.025 for y, 0.01 for the pooled y2)
"$T/helper" compare "$T/out_int8/output_0.pb" "$T/ort_0.bin" 0.13 || { echo "FAIL: y differs from ORT"; fails=$((fails+1)); }
"$T/helper" compare "$T/out_int8/output_1.pb" "$T/ort_1.bin" 0.0101 || { echo "FAIL: y2 differs from ORT"; fails=$((fails+1)); }
"$T/helper" compare "$T/out_qdq/output_0.pb" "$T/ort_0.bin" 0.13 || { echo "FAIL: shrink QDQ y differs from ORT"; fails=$((fails+1)); }
[ $fails -eq 0 ] && echo "qdq_ort: ok" || echo "qdq_ort: $fails failures"
[ $fails -eq 0 ]
