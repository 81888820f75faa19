#!/bin/bash
# qdq_weight_ort.sh - weight-only quantized models export as QDQ ONNX that
# ONNX Runtime loads and runs: the PyTorch-exported transformer of
# tests/data/transformer (every Linear a MatMul on a 3-D activation)
# quantized to 8 and 4 bits (group 32) and 4 bits per channel, converted with
# shrink convert --qdq; ORT's logits on the golden tokens equal shrink's run
# of the same QDQ file (the same f32 weights) and stay close to the
# weight-only model's own run (whose kernels round activations to q8_0).
# Exit 0 pass, 1 fail, 77 skip (no node / onnxruntime-node / compiler).
set -u
cd "$(dirname "$0")/../.."
. tests/cli/ort_env.bash
GPT=tests/data/transformer/tiny_gpt.onnx GOLD=tests/data/transformer/golden.bin
cat > "$T/helper.c" <<'C'
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shrink.h"
#include "ort_compare.h"
static sh_error err;
int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "tokens")) { /* golden.bin -> tokens.pb (int64 [1,T]) */
        FILE *f = fopen(argv[2], "rb"); int32_t tv[2];
        if (!f || fread(tv, 4, 2, f) != 2) return 1;
        sh_tensor *t = sh_tensor_new(SH_I64, 2, (int64_t[]){1, tv[0]}, &err);
        if (fread(t->data, 8, (size_t)tv[0], f) != (size_t)tv[0]) return 1;
        fclose(f);
        if (sh_tensorproto_save(t, "tokens", argv[3], &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        sh_tensor_free(t);
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "compare")) return ort_compare(argv[2], argv[3], atof(argv[4])); /* shrink.pb ort.bin tol */
    return 2;
}
C
ort_build_helper
"$T/helper" tokens "$GOLD" "$T/tokens.pb" || { echo "FAIL: tokens"; exit 1; }
cat > "$T/ort.js" <<'JS'
const path = require('path');
const fs = require('fs');
const ort = require(path.join(process.argv[2], 'bench', 'node_modules', 'onnxruntime-node'));
const [model, gold, out] = process.argv.slice(3);
(async () => {
  const s = await ort.InferenceSession.create(model, { intraOpNumThreads: 1, logSeverityLevel: 3 });
  const b = fs.readFileSync(gold);
  const T = b.readInt32LE(0);
  const tok = new BigInt64Array(T);
  for (let i = 0; i < T; i++) tok[i] = b.readBigInt64LE(8 + 8 * i);
  const r = await s.run({ [s.inputNames[0]]: new ort.Tensor('int64', tok, [1, T]) });
  fs.writeFileSync(out, Buffer.from(r[s.outputNames[0]].data.buffer));
})().catch((e) => { console.error('ort: error: ' + e.message); process.exit(1); });
JS
fails=0
for spec in "8 group" "4 group" "4 channel"; do
  set -- $spec
  tag="$1-$2"
  "$SH" quantize "$GPT" -o "$T/q.onnx" --bits "$1" --granularity "$2" >/dev/null || { echo "FAIL: quantize $tag"; exit 1; }
  "$SH" convert "$T/q.onnx" -o "$T/qdq.onnx" --qdq >/dev/null || { echo "FAIL: convert --qdq $tag"; exit 1; }
  "$SH" run "$T/q.onnx" --input "$T/tokens.pb" -o "$T/out_q" >/dev/null || { echo "FAIL: shrink run q $tag"; exit 1; }
  "$SH" run "$T/qdq.onnx" --input "$T/tokens.pb" -o "$T/out_qdq" >/dev/null || { echo "FAIL: shrink run qdq $tag"; exit 1; }
  node "$T/ort.js" "$PWD" "$T/qdq.onnx" "$GOLD" "$T/ort.bin" || { echo "FAIL: ONNX Runtime could not run the $tag QDQ model"; fails=$((fails+1)); continue; }
  echo "$tag: weight-only file $(stat -c %s "$T/q.onnx") bytes, QDQ file $(stat -c %s "$T/qdq.onnx") bytes (f32 $(stat -c %s "$GPT"))"
  # the same f32 weights in both runtimes: float summation order only
  "$T/helper" compare "$T/out_qdq/output_0.pb" "$T/ort.bin" 2e-4 || { echo "FAIL: $tag shrink QDQ vs ORT"; fails=$((fails+1)); }
  # shrink's low-bit kernels (activations rounded to q8_0 per 32) vs ORT on the QDQ file
  "$T/helper" compare "$T/out_q/output_0.pb" "$T/ort.bin" 0.3 || { echo "FAIL: $tag weight-only kernels vs ORT"; fails=$((fails+1)); }
done
[ $fails -eq 0 ] && echo "qdq_weight_ort: ok" || echo "qdq_weight_ort: $fails failures"
[ $fails -eq 0 ]
