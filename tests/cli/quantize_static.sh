#!/bin/bash
# quantize_static.sh - shrink quantize --mode static / dynamic end to end on a
# tiny Fashion-MNIST calibration set: the default with --calib is static int8
# per channel; the table lists every layer with its int8 / f32 state; the
# model is written, reloads, evaluates within a few points of f32 (random
# weights: accuracy is chance-level, so the check is on agreement via eval of
# both) and is >= 3.8x smaller; bad option combinations fail cleanly with one
# error line and write nothing.
# Exit 0 pass, 1 fail, 77 skip.
set -u
cd "$(dirname "$0")/../.."
SH=${SHRINK:-$PWD/build/shrink}
[ -x "$SH" ] || { echo "skip: $SH not built"; exit 77; }
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || { echo "skip: no fashion-mnist"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
CAL=fashion-mnist:test:256

# f32 reference model (a built-in cnn, random weights, seed 3)
"$SH" train cnn --data fashion-mnist:test:256 --epochs 1 --max-steps 4 --seed 3 -q -o "$T/cnn.onnx" >/dev/null 2>"$T/err" ||
  { cat "$T/err"; fail "could not make a small cnn"; }

# 1. --calib alone: static int8, per channel, minmax
"$SH" quantize "$T/cnn.onnx" -o "$T/q.onnx" --calib $CAL >"$T/out" 2>"$T/err" || { cat "$T/err"; fail "static quantize failed"; }
grep -q "static, weights per channel" "$T/out" || fail "default is not static per-channel: $(tail -3 "$T/out")"
grep -q "calibration entropy" "$T/out" || fail "default method is not entropy"
n8=$(grep -cE '^(layer|res|fc)[^ ]* +\[[0-9,]+\] +int8' "$T/out")
[ "$n8" = 6 ] || fail "expected 6 int8 layers in the table, got $n8"
[ -s "$T/q.onnx" ] || fail "no output file"
s32=$(stat -c %s "$T/cnn.onnx"); s8=$(stat -c %s "$T/q.onnx")
awk -v a="$s32" -v b="$s8" 'BEGIN { exit !(a >= 3.8 * b) }' || fail "file $s32 -> $s8 bytes is < 3.8x smaller"

# 2. the quantized model reloads and evaluates; accuracy close to f32
a32=$("$SH" eval "$T/cnn.onnx" --data fashion-mnist:test:1000 --json 2>/dev/null | sed -nE 's/.*"accuracy": ?([0-9.]+).*/\1/p')
a8=$("$SH" eval "$T/q.onnx" --data fashion-mnist:test:1000 --json 2>/dev/null | sed -nE 's/.*"accuracy": ?([0-9.]+).*/\1/p')
[ -n "$a32" ] && [ -n "$a8" ] || fail "eval gave no accuracy (f32 '$a32', int8 '$a8')"
if [ -n "$a32" ] && [ -n "$a8" ]; then
  awk -v a="$a32" -v b="$a8" 'BEGIN { d = a - b; if (d < 0) d = -d; if (a > 1.5) d /= 100; exit !(d <= 0.03) }' ||
    fail "int8 accuracy $a8 vs f32 $a32"
fi

# 3. methods and per-tensor weights, JSON report with activation ranges
for m in percentile:99.99 mse minmax; do
  "$SH" quantize "$T/cnn.onnx" -o "$T/m.onnx" --calib $CAL --calib-samples 64 --method $m --json >"$T/j" 2>"$T/err" ||
    { cat "$T/err"; fail "--method $m failed"; }
  grep -q '"input_range": \[' "$T/j" || fail "--method $m: no activation ranges in JSON"
done
"$SH" quantize "$T/cnn.onnx" -o "$T/t.onnx" --calib $CAL --calib-samples 64 --granularity tensor >"$T/out" 2>&1 ||
  fail "--granularity tensor failed"
grep -q "weights per tensor" "$T/out" || fail "per-tensor not reported"

# 4. dynamic: Convs stay f32 with a note, the Gemm is int8
"$SH" quantize "$T/cnn.onnx" -o "$T/d.onnx" --mode dynamic >"$T/out" 2>&1 || fail "dynamic failed"
grep -E '^layer1.conv' "$T/out" | grep -q "Conv needs --mode static" || fail "dynamic: no note on Conv"
grep -qE '^fc +\[10,128\] +int8' "$T/out" || fail "dynamic: fc not int8"

# 5. bad input: one error line, exit 2 (usage) or 1, no output file
bad() {
  local desc=$1 pat=$2; shift 2
  rm -f "$T/bad.onnx"
  "$SH" "$@" >"$T/bo" 2>"$T/be"; local rc=$?
  if [ "$rc" = 0 ] || [ "$rc" -ge 128 ]; then fail "$desc: exit $rc"; return; fi
  [ "$(grep -c 'error:' "$T/be")" = 1 ] || fail "$desc: $(grep -c 'error:' "$T/be") error lines"
  grep 'error:' "$T/be" | grep -qE -- "$pat" || fail "$desc: error '$(cat "$T/be")' does not match /$pat/"
  [ ! -e "$T/bad.onnx" ] || fail "$desc: wrote an output"
}
bad "static without --calib" "needs calibration data" quantize "$T/cnn.onnx" -o "$T/bad.onnx" --mode static
bad "int8 with 4 bits" "int8" quantize "$T/cnn.onnx" -o "$T/bad.onnx" --mode static --calib $CAL --bits 4
bad "bits 9" "outside 2-8" quantize "$T/cnn.onnx" -o "$T/bad.onnx" --mode static --calib $CAL --bits 9
bad "group granularity" "per tensor or per channel" quantize "$T/cnn.onnx" -o "$T/bad.onnx" --calib $CAL --granularity group:32
bad "unknown method" "unknown --method" quantize "$T/cnn.onnx" -o "$T/bad.onnx" --calib $CAL --method foo
bad "percentile out of range" "percentile" quantize "$T/cnn.onnx" -o "$T/bad.onnx" --calib $CAL --method percentile:20
bad "dynamic with calib" "dynamic" quantize "$T/cnn.onnx" -o "$T/bad.onnx" --mode dynamic --calib $CAL
bad "calibration data of the wrong shape" "do not fit" quantize "$T/cnn.onnx" -o "$T/bad.onnx" --calib text:README.md
bad "missing calibration set" "nope" quantize "$T/cnn.onnx" -o "$T/bad.onnx" --calib idx:/nope/a.gz,/nope/b.gz

if [ "$fails" = 0 ]; then echo "quantize_static: ok"; exit 0; fi
echo "quantize_static: $fails failure(s)"; exit 1
