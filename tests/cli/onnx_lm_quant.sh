#!/bin/bash
# onnx_lm_quant.sh - a transformer as PyTorch exports it to ONNX
# (tests/data/transformer/tiny_gpt.onnx: static input [1,32] of byte tokens,
# every Linear a MatMul with a [K,N] weight + Add) through the whole
# quantization CLI on TinyShakespeare: eval (windows and batch fitted to the
# fixed input shape), weight-only 4-bit RTN and GPTQ (GPTQ closer to f32),
# static int8 with calibration, sensitivity (13 linear layers) and
# --max-drop.  Needs ../shared.  Exit 0 pass, 1 fail, 77 skip.
set -u
cd "$(dirname "$0")/../.."
SH=${SHRINK:-$PWD/build/shrink}
[ -x "$SH" ] || { echo "skip: $SH not built"; exit 77; }
TXT=../shared/data/text/tinyshakespeare.txt
[ -r "$TXT" ] || { echo "skip: no ../shared (TinyShakespeare)"; exit 77; }
G=tests/data/transformer/tiny_gpt.onnx
D="text:$TXT"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
ppl() { "$SH" eval "$1" --data "$D" --limit 20000 --threads 1 2>&1 | awk '/^perplexity/ {print $2}'; }
"$SH" quantize $G -o "$T/rtn.onnx" --bits 4 >/dev/null 2>"$T/err" || fail "rtn: $(cat "$T/err")"
"$SH" quantize $G -o "$T/gptq.onnx" --bits 4 --gptq --calib "$D" >/dev/null 2>"$T/err" || fail "gptq: $(cat "$T/err")"
"$SH" quantize $G -o "$T/i8.onnx" --calib "$D" >"$T/out" 2>"$T/err" || fail "static: $(cat "$T/err")"
grep -q "13 of 13 layers int8" "$T/out" || fail "static int8 did not quantize the 13 MatMul layers: $(tail -3 "$T/out")"
p0=$(ppl $G) p1=$(ppl "$T/rtn.onnx") p2=$(ppl "$T/gptq.onnx") p3=$(ppl "$T/i8.onnx")
echo "perplexity (20,000 tokens): f32 $p0, 4-bit RTN $p1, 4-bit GPTQ $p2, static int8 $p3"
awk -v a="$p0" -v r="$p1" -v g="$p2" -v s="$p3" 'BEGIN { exit !(a > 1 && a < 20 && g < r && g > a * 0.98 && s < a * 1.02) }' \
  && echo "ok:   GPTQ closer to f32 than RTN, static int8 within 2 %" || fail "perplexities $p0 $p1 $p2 $p3"
"$SH" sensitivity $G --calib "$D" >"$T/sens" 2>"$T/err" || fail "sensitivity: $(cat "$T/err")"
n=$(grep -c "MatMul  " "$T/sens")
[ "$n" = 13 ] && echo "ok:   sensitivity table 13 layers" || fail "sensitivity rows $n: $(head -5 "$T/sens")"
"$SH" quantize $G -o "$T/mp.onnx" --max-drop 1 --calib "$D" >"$T/mp" 2>"$T/err" || fail "max-drop: $(cat "$T/err")"
grep -q "max drop 1" "$T/mp" && [ -s "$T/mp.onnx" ] && echo "ok:   --max-drop 1" || fail "max-drop: $(tail -3 "$T/mp")"
[ $fails -eq 0 ] && echo "onnx_lm_quant: ok" || echo "onnx_lm_quant: $fails failures"
[ $fails -eq 0 ]
