#!/bin/bash
# quantize_cli.sh - `shrink quantize --mode weight`: the per-layer table and
# totals, the file really shrinks and still runs (eval), JSON report, errors
# (bits outside 2-8, unsupported scheme, static without calibration, dynamic, strict
# parsing) and --help.  Exit 0 pass, 1 fail, 77 skip.
set -u
cd "$(dirname "$0")/../.."
SH=${SHRINK:-$PWD/build/shrink}
[ -x "$SH" ] || { echo "skip: $SH not built"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

"$SH" quantize llama-tiny -o "$T/f.onnx" --bits 8 >/dev/null 2>"$T/err" || fail "q8: $(cat "$T/err")"
"$SH" convert llama-tiny "$T/f32.onnx" >/dev/null 2>&1 || "$SH" prune llama-tiny -o "$T/f32.onnx" --ratio 0 >/dev/null 2>&1

"$SH" quantize llama-tiny -o "$T/q4.onnx" --mode weight --bits 4 >"$T/out" 2>"$T/err" || fail "q4: $(cat "$T/err")"
grep -q "^layers.0.attention.wq .*q4_0 .* 16384 .* 2304" "$T/out" && echo "ok:   q4_0 table row" || fail "q4 table: $(cat "$T/out")"
grep -q "^layers.0.feed_forward.w2 .*q4_0 .*K 172 padded with zeros to 192" "$T/out" && grep -q "tied embedding" "$T/out" \
  && echo "ok:   notes for f32 layers" || fail "notes: $(cat "$T/out")"
grep -q "^total: 28 of 29 layers -> q4_0" "$T/out" && echo "ok:   totals" || fail "totals: $(tail -2 "$T/out")"
s8=$(stat -c %s "$T/f.onnx"); s4=$(stat -c %s "$T/q4.onnx")
[ "$s4" -lt "$s8" ] && echo "ok:   q4_0 file ($s4 bytes) smaller than q8_0 ($s8)" || fail "sizes q4 $s4 q8 $s8"
if [ -f "$T/f32.onnx" ]; then
  s0=$(stat -c %s "$T/f32.onnx")
  [ "$s8" -lt "$s0" ] && echo "ok:   q8_0 file ($s8) smaller than f32 ($s0)" || fail "sizes q8 $s8 f32 $s0"
fi
"$SH" info "$T/q4.onnx" >/dev/null 2>"$T/err" || fail "info of the quantized model: $(cat "$T/err")"

"$SH" quantize llama-tiny -o "$T/q41.onnx" --bits 4 --scheme asym --json >"$T/out" 2>"$T/err" || fail "q4_1: $(cat "$T/err")"
grep -q '"format": "q4_1"' "$T/out" && grep -q '"quantized_layers": 28' "$T/out" && echo "ok:   json q4_1" \
  || fail "json: $(head -c 400 "$T/out")"
for b in 3 2; do
  "$SH" quantize llama-tiny -o "$T/q$b.onnx" --bits $b >"$T/out" 2>"$T/err" || fail "bits $b: $(cat "$T/err")"
done
grep -q "q2_1" "$T/out" && echo "ok:   2-bit is q2_1" || fail "2-bit: $(tail -3 "$T/out")"

S=${SHRINK_SHARED:-../shared}
if [ -f "$S/models/stories260K/stories260K.bin" ]; then
  "$SH" quantize "$S/models/stories260K/stories260K.bin" -o "$T/s8.onnx" --bits 8 >/dev/null 2>"$T/err" || fail "stories q8: $(cat "$T/err")"
  "$SH" eval "$T/s8.onnx" --data "text:$S/data/text/tinystories_sample.txt" --tokenizer "$S/models/stories260K/tok512.bin" \
    --limit 200 --no-speed -q >"$T/out" 2>"$T/err" && grep -q perplexity "$T/out" && echo "ok:   quantized stories260K evaluates" \
    || fail "eval of quantized stories: $(cat "$T/err")"
fi

# errors
chk() { # expected-rc pattern args...
  local want=$1 pat=$2; shift 2
  "$SH" quantize "$@" >/dev/null 2>"$T/err"; local rc=$?
  [ $rc = "$want" ] && grep -q -- "$pat" "$T/err" && echo "ok:   $* -> $rc" || fail "$* -> rc $rc: $(cat "$T/err")"
}
chk 2 "outside 2-8" llama-tiny -o "$T/x.onnx" --bits 9
chk 2 "outside 2-8" llama-tiny -o "$T/x.onnx" --bits 1
chk 2 "no weight-only format" llama-tiny -o "$T/x.onnx" --bits 5
chk 2 "not a number\|invalid\|integer" llama-tiny -o "$T/x.onnx" --bits 4x
chk 2 "only a symmetric" llama-tiny -o "$T/x.onnx" --bits 8 --scheme asym
chk 2 "unknown --scheme" llama-tiny -o "$T/x.onnx" --scheme foo
chk 2 "needs calibration data" llama-tiny -o "$T/x.onnx" --mode static
# dynamic int8 needs no calibration: the linear layers become QGemm
"$SH" quantize llama-tiny -o "$T/dyn.onnx" --mode dynamic >"$T/out" 2>"$T/err" && grep -q QGemm "$T/dyn.onnx" \
  && echo "ok:   --mode dynamic writes QGemm layers" || fail "--mode dynamic: $(cat "$T/err")"
chk 2 "unknown --mode" llama-tiny -o "$T/x.onnx" --mode foo
chk 2 "unknown option" llama-tiny -o "$T/x.onnx" --frobnicate
chk 2 "need an output" llama-tiny
chk 2 "must be an .onnx" llama-tiny -o "$T/x.bin"
chk 3 "" "$T/does_not_exist.onnx" -o "$T/x.onnx"
"$SH" quantize --help | grep -q "Usage: shrink quantize" && echo "ok:   --help" || fail "--help"

[ $fails = 0 ] && echo "quantize_cli: all passed" && exit 0
echo "quantize_cli: $fails failed"; exit 1
