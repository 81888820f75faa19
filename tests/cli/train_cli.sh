#!/bin/bash
# train_cli.sh - `shrink train`: help and exit codes, strict option parsing
# with one error line, a short real run (mlp on 512 Fashion-MNIST images)
# that writes a model `shrink eval` accepts and reports JSON, checkpoint
# resume through the CLI, and a tiny language-model run.
# Exit 0 pass, 1 fail, 77 skip.
set -u
cd "$(dirname "$0")/../.."
SH=${SHRINK:-$PWD/build/shrink}
[ -x "$SH" ] || { echo "skip: $SH not built"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

# expect_rc RC PATTERN CMD...: exit code RC and one error line matching PATTERN
expect_rc() {
  local want=$1 pat=$2; shift 2
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  if [ "$rc" != "$want" ]; then fail "$* -> exit $rc, expected $want ($(head -2 "$T/err"))"; return; fi
  local n; n=$(grep -c 'error:' "$T/err")
  if [ "$n" != 1 ]; then fail "$*: $n error lines"; return; fi
  grep 'error:' "$T/err" | grep -qE -- "$pat" || fail "$*: error '$(cat "$T/err")' does not match /$pat/"
}

"$SH" train --help >"$T/help" || fail "--help exit code"
grep -q "Exit codes" "$T/help" && grep -q -- "--checkpoint-every" "$T/help" || fail "--help text"

expect_rc 2 "missing MODEL" "$SH" train
expect_rc 2 "missing --data" "$SH" train mlp
expect_rc 2 "--epochs expects an integer, got 'two'" "$SH" train mlp --data fashion-mnist:train --epochs two
expect_rc 2 "--lr expects a number" "$SH" train mlp --data fashion-mnist:train --lr 1e-3x
expect_rc 2 "--batch must be between" "$SH" train mlp --data fashion-mnist:train --batch 0
expect_rc 2 "unknown option '--bogus'" "$SH" train mlp --data fashion-mnist:train --bogus
expect_rc 2 "option --data needs a value" "$SH" train mlp --data
expect_rc 2 "--optimizer must be sgd or adamw, got 'rmsprop'" "$SH" train mlp --data x:y --optimizer rmsprop
expect_rc 2 "--schedule must be .*'linear'" "$SH" train mlp --data x:y --schedule linear
expect_rc 2 "unknown model 'resnet'" "$SH" train resnet --data fashion-mnist:train
expect_rc 2 "unknown kind 'cifar'" "$SH" train mlp --data cifar:train
expect_rc 3 "cannot open /nonexistent/a.gz" "$SH" train mlp --data idx:/nonexistent/a.gz,/nonexistent/b.gz
expect_rc 3 "/nonexistent/model.onnx" "$SH" train /nonexistent/model.onnx --data fashion-mnist:train:10

if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "skip: Fashion-MNIST not installed"; [ $fails = 0 ] && exit 77 || exit 1
fi
expect_rc 2 "fewer than batch 64" "$SH" train mlp --data fashion-mnist:train:10 --threads 2

# a short run: JSON on stdout, a model file that loads and evaluates
"$SH" train mlp --data fashion-mnist:train:512 --val fashion-mnist:test:200 --epochs 2 --batch 32 \
  --lr 0.002 --threads 2 --json -o "$T/mlp.onnx" >"$T/j" 2>"$T/e" || fail "train mlp: $(cat "$T/e")"
grep -q '"steps": 32' "$T/j" && grep -q '"val_accuracy": 0\.[5-9]' "$T/j" || fail "json: $(cat "$T/j")"
[ -s "$T/mlp.onnx" ] || fail "no model written"
if [ -s "$T/mlp.onnx" ]; then
  "$SH" eval "$T/mlp.onnx" --data fashion-mnist:test:200 --no-speed --json >"$T/ev" 2>&1 || fail "eval: $(cat "$T/ev")"
  grep -qE '"accuracy": *0\.[5-9]' "$T/ev" || fail "eval accuracy: $(cat "$T/ev")"
  # the saved model trains further as a model file
  "$SH" train "$T/mlp.onnx" --data fashion-mnist:train:256 --threads 2 --batch 64 -q >"$T/o" 2>&1 || fail "train model file: $(cat "$T/o")"
fi

# checkpoint: 4 steps, then resume to 8 = 8 straight (same weights => same eval)
"$SH" train mlp --data fashion-mnist:train:256 --batch 32 --threads 2 --schedule cosine -q \
  -o "$T/straight.onnx" >/dev/null 2>&1 || fail "straight run"
"$SH" train mlp --data fashion-mnist:train:256 --batch 32 --threads 2 --schedule cosine -q \
  --checkpoint "$T/ck" --max-steps 4 >/dev/null 2>&1 || fail "first half"
[ -s "$T/ck" ] || fail "no checkpoint"
"$SH" train mlp --data fashion-mnist:train:256 --batch 32 --threads 2 --schedule cosine -q --json \
  --checkpoint "$T/ck" -o "$T/resumed.onnx" >"$T/j2" 2>&1 || fail "resume: $(cat "$T/j2")"
grep -q '"steps": 8' "$T/j2" || fail "resumed steps: $(cat "$T/j2")"
cmp -s "$T/straight.onnx" "$T/resumed.onnx" || fail "resumed model differs from the straight run"
expect_rc 2 "written with batch 32" "$SH" train mlp --data fashion-mnist:train:256 --batch 16 --threads 2 -q --checkpoint "$T/ck"
printf 'garbage' > "$T/bad.ck"
expect_rc 4 "not a shrink checkpoint" "$SH" train mlp --data fashion-mnist:train:256 --threads 2 -q --checkpoint "$T/bad.ck"

# language model on bytes: a few steps, loss below ln(256)
printf 'to be or not to be, that is the question. ' > "$T/t.txt"
for i in $(seq 6); do cat "$T/t.txt" "$T/t.txt" > "$T/t2.txt"; mv "$T/t2.txt" "$T/t.txt"; done
"$SH" train llama-tiny --data "text:$T/t.txt" --seq-len 32 --batch 4 --max-steps 6 --lr 0.003 --threads 2 --json \
  >"$T/lm" 2>&1 || fail "llama-tiny: $(cat "$T/lm")"
grep -qE '"final_loss": [0-4]\.' "$T/lm" || fail "llama-tiny loss: $(cat "$T/lm")"
expect_rc 2 "llama-tiny trains on text" "$SH" train llama-tiny --data fashion-mnist:train:100
expect_rc 2 "lenet5 trains on images" "$SH" train lenet5 --data "text:$T/t.txt"

[ $fails = 0 ] && echo "ok" || exit 1
