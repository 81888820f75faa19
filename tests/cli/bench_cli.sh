#!/bin/bash
# bench_cli.sh - shrink bench: latency percentiles and a per-node profile of
# a float and an int8 model (the profile lists every node that ran, its share
# adds up to ~100 %, the op table names the int8 ops), --json is one object,
# a language model times one token; bad input fails with one error line.
# Exit 0 pass, 1 fail, 77 skip.
set -u
cd "$(dirname "$0")/../.."
SH=${SHRINK:-$PWD/build/shrink}
[ -x "$SH" ] || { echo "skip: $SH not built"; exit 77; }
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || { echo "skip: no fashion-mnist"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

"$SH" train cnn --data fashion-mnist:test:128 --epochs 1 --max-steps 2 --seed 3 -q -o "$T/cnn.onnx" >/dev/null 2>"$T/err" ||
  { cat "$T/err"; fail "could not make a small cnn"; }
"$SH" quantize "$T/cnn.onnx" -o "$T/q.onnx" --calib fashion-mnist:test:64 >/dev/null 2>"$T/err" || { cat "$T/err"; fail "quantize"; }

"$SH" bench "$T/cnn.onnx" --threads 1 --runs 20 --seconds 0.2 --profile >"$T/out" 2>"$T/err" || { cat "$T/err"; fail "bench f32"; }
grep -qE '^latency +median [0-9.]+ ms +\(p10 [0-9.]+, p90 [0-9.]+\)' "$T/out" || fail "no latency line: $(head -4 "$T/out")"
grep -qE '^ +[0-9]+ +layer2.conv +Conv ' "$T/out" || fail "profile misses layer2.conv"
share=$(awk '/^ +[0-9]+ +[^ ]+ +[A-Za-z]+ +[0-9.]+ +[0-9.]+%$/ { s += $NF } END { printf "%.0f", s }' "$T/out")
[ "$share" -ge 98 ] && [ "$share" -le 102 ] || fail "node shares add up to $share %"

"$SH" bench "$T/q.onnx" --threads 2 --runs 20 --seconds 0.2 --profile --batch 3 >"$T/out" 2>"$T/err" || { cat "$T/err"; fail "bench int8"; }
grep -q "QLinearConv" "$T/out" || fail "int8 profile has no QLinearConv"
grep -q "^batch    3" "$T/out" || fail "batch 3 not reported"

"$SH" bench "$T/q.onnx" --runs 5 --seconds 0.1 --json >"$T/out" 2>"$T/err" || fail "bench --json"
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['median_ms'] > 0 and r['runs'] >= 5" "$T/out" ||
  fail "--json: $(cat "$T/out")"

S=../shared/models/stories260K
if [ -f "$S/stories260K.bin" ]; then
  "$SH" bench "$S/stories260K.bin" --runs 5 --seconds 0.1 >"$T/out" 2>"$T/err" || { cat "$T/err"; fail "bench llama2.c"; }
  grep -q "tokens/s" "$T/out" || fail "language model speed not in tokens/s"
fi

# bad input: one error line, non-zero exit, no crash
printf 'not a model' >"$T/bad.onnx"
"$SH" bench "$T/bad.onnx" >"$T/out" 2>"$T/err"; rc=$?
[ $rc -ne 0 ] && [ $rc -lt 128 ] && [ "$(wc -l <"$T/err")" = 1 ] || fail "corrupt model: rc $rc, $(cat "$T/err")"
"$SH" bench "$T/cnn.onnx" --batch 0 >"$T/out" 2>"$T/err"; rc=$?
[ $rc = 2 ] || fail "--batch 0: rc $rc"
"$SH" bench >"$T/out" 2>"$T/err"; rc=$?
[ $rc = 2 ] || fail "no model: rc $rc"
"$SH" bench "$T/cnn.onnx" --data fashion-mnist:nope >"$T/out" 2>"$T/err"; rc=$?
[ $rc -ne 0 ] && [ $rc -lt 128 ] || fail "bad data spec: rc $rc"

[ $fails = 0 ] && echo "bench_cli: ok"
exit $((fails > 0))
