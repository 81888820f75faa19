#!/bin/bash
# distill_cli.sh - `shrink distill`: help and exit codes, strict option
# parsing with one error line, and a short real run (an mlp teacher trained on
# 512 Fashion-MNIST images distilled into mlp-small) that writes a model
# `shrink eval` accepts and reports JSON.
# Exit 0 pass, 1 fail, 77 skip.
set -u
cd "$(dirname "$0")/../.."
SH=${SHRINK:-$PWD/build/shrink}
[ -x "$SH" ] || { echo "skip: $SH not built"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

expect_rc() {
  local want=$1 pat=$2; shift 2
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  if [ "$rc" != "$want" ]; then fail "$* -> exit $rc, expected $want ($(head -2 "$T/err"))"; return; fi
  local n; n=$(grep -c 'error:' "$T/err")
  if [ "$n" != 1 ]; then fail "$*: $n error lines"; return; fi
  grep 'error:' "$T/err" | grep -qE -- "$pat" || fail "$*: error '$(cat "$T/err")' does not match /$pat/"
}

"$SH" distill --help >"$T/help" || fail "--help exit code"
grep -q "Exit codes" "$T/help" && grep -q -- "--temperature" "$T/help" && grep -q -- "--alpha" "$T/help" || fail "--help text"
"$SH" --help | grep -q "distill" || fail "distill not listed in shrink --help"

expect_rc 2 "missing --teacher" "$SH" distill --student mlp --data fashion-mnist:train -o x.onnx
expect_rc 2 "missing --student" "$SH" distill --teacher t.onnx --data fashion-mnist:train -o x.onnx
expect_rc 2 "missing --data" "$SH" distill --teacher t.onnx --student mlp -o x.onnx
expect_rc 2 "missing -o" "$SH" distill --teacher t.onnx --student mlp --data fashion-mnist:train
expect_rc 2 "--alpha must be between" "$SH" distill --teacher t.onnx --student mlp --data x:y -o x.onnx --alpha 1.5
expect_rc 2 "--temperature expects a number" "$SH" distill --teacher t.onnx --student mlp --data x:y -o x.onnx --temperature hot
expect_rc 2 "unknown option '--bogus'" "$SH" distill --teacher t.onnx --student mlp --data x:y -o x.onnx --bogus
expect_rc 2 "unknown student 'resnet'" "$SH" distill --teacher t.onnx --student resnet --data x:y -o x.onnx
expect_rc 2 "expects TEACHER:STUDENT" "$SH" distill --teacher t.onnx --student mlp --data x:y -o x.onnx --feature l4
expect_rc 2 "expects TEACHER:STUDENT" "$SH" distill --teacher t.onnx --student mlp --data x:y -o x.onnx --attention :1
expect_rc 2 "--samples needs --tokenizer" "$SH" distill --teacher t.bin --student llama-2l --samples 4 -o x.bin
expect_rc 2 "--samples N replaces --data" "$SH" distill --teacher t.bin --student llama-2l --samples 4 --data text:x --tokenizer t -o x.bin
expect_rc 2 "--bits 9 is outside 2-8" "$SH" quantize t.onnx -o x.onnx --qat 1 --data fashion-mnist:train --bits 9
expect_rc 2 "--qat needs training data" "$SH" quantize t.onnx -o x.onnx --qat 1
expect_rc 2 "--act-bits must be 0 or 8" "$SH" quantize t.onnx -o x.onnx --qat 1 --data x:y --act-bits 4
expect_rc 3 "/nonexistent/t.onnx" "$SH" distill --teacher /nonexistent/t.onnx --student mlp --data fashion-mnist:train:10 -o "$T/x.onnx"

if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "skip: Fashion-MNIST not installed"; [ $fails = 0 ] && exit 77 || exit 1
fi
"$SH" train mlp --data fashion-mnist:train:512 --epochs 2 --batch 32 --lr 0.002 --threads 2 -q \
  -o "$T/teacher.onnx" >/dev/null 2>"$T/e" || fail "train teacher: $(cat "$T/e")"
"$SH" distill --teacher "$T/teacher.onnx" --student mlp-small --data fashion-mnist:train:512 \
  --val fashion-mnist:test:200 --epochs 2 --batch 32 --lr 0.003 --threads 2 --temperature 3 --alpha 0.8 \
  --json -o "$T/student.onnx" >"$T/j" 2>"$T/e" || fail "distill: $(cat "$T/e")"
grep -q '"steps": 32' "$T/j" && grep -q '"val_accuracy": 0\.[5-9]' "$T/j" && grep -q '"params": 25450' "$T/j" ||
  fail "json: $(cat "$T/j")"
if [ -s "$T/student.onnx" ]; then
  "$SH" eval "$T/student.onnx" --data fashion-mnist:test:200 --no-speed --json >"$T/ev" 2>&1 || fail "eval: $(cat "$T/ev")"
  grep -qE '"accuracy": *0\.[5-9]' "$T/ev" || fail "eval accuracy: $(cat "$T/ev")"
else
  fail "no student written"
fi
# feature distillation through a learned projection (mlp x4 [B,100] -> mlp-small x2 [B,32]):
# the projection is dropped, the student keeps its 25,450 parameters
"$SH" distill --teacher "$T/teacher.onnx" --student mlp-small --data fashion-mnist:train:256 --epochs 1 --batch 32 \
  --threads 2 --feature x4:x2:0.5 --json -o "$T/feat.onnx" >"$T/j" 2>"$T/e" || fail "feature distill: $(cat "$T/e")"
grep -q '"params": 25450' "$T/j" || fail "feature distill json: $(cat "$T/j")"
expect_rc 1 "feature distillation: teacher 'x4'" "$SH" distill --teacher "$T/teacher.onnx" --student lenet5 \
  --data fashion-mnist:train:64 --feature x4:c1 -o "$T/z.onnx"
# QAT: 4-bit weights, one epoch, accuracy before / after on --val
"$SH" quantize "$T/teacher.onnx" -o "$T/q4.onnx" --qat 1 --bits 4 --data fashion-mnist:train:256 --batch 32 \
  --val fashion-mnist:test:200 --threads 2 --teacher --json >"$T/j" 2>"$T/e" || fail "qat: $(cat "$T/e")"
grep -q '"accuracy_qat": 0\.[5-9]' "$T/j" && grep -q '"bits": 4' "$T/j" || fail "qat json: $(cat "$T/j")"
"$SH" eval "$T/q4.onnx" --data fashion-mnist:test:200 --no-speed --json >"$T/ev" 2>&1 || fail "eval qat: $(cat "$T/ev")"
# a llama student cannot learn from an image teacher
expect_rc 2 "llama-tiny trains on text" "$SH" distill --teacher "$T/teacher.onnx" --student llama-tiny --data fashion-mnist:train:100 -o "$T/y.onnx"

[ $fails = 0 ] && echo "ok" || exit 1
