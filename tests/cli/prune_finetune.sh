#!/bin/bash
# prune_finetune.sh - `shrink prune ... --finetune EPOCHS --data SPEC`: the
# pruned weights stay exactly zero through fine-tuning (unstructured global
# 90 %, 2:4 then --pack, gradual and l1 schedules, distillation from the
# unpruned model), iterative structured pruning reaches one-shot's shapes,
# and bad command lines fail cleanly without writing the output.
# Exit 0 pass, 1 fail, 77 skip.
set -u
cd "$(dirname "$0")/../.."
SH=${SHRINK:-$PWD/build/shrink}
[ -x "$SH" ] || { echo "skip: $SH not built"; exit 77; }
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || { echo "skip: Fashion-MNIST not installed"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
D="--data fashion-mnist:train,n=512 --val fashion-mnist:test,n=200 --batch 32 --threads 2 -q"

"$SH" prune mlp -o "$T/base.onnx" --ratio 0 >/dev/null 2>"$T/err" || fail "dense mlp: $(cat "$T/err")"

"$SH" prune "$T/base.onnx" -o "$T/g90.onnx" --ratio 0.9 --global --finetune 1 $D --lr 0.002 --json >"$T/out" 2>"$T/err" \
  || fail "global 90% + fine-tune: $(cat "$T/err")"
grep -q '"sparsity_after": 0.900000' "$T/out" && grep -q '"finetune": {"epochs": 1, "steps": 16' "$T/out" \
  && echo "ok:   global 90% fine-tuned 16 steps, still exactly 90% zeros" || fail "global 90%: $(head -c 600 "$T/out")"
# the file holds the fine-tuned weights: pruning it again at 90 % changes nothing
"$SH" prune "$T/g90.onnx" -o "$T/again.onnx" --ratio 0.9 --global --json >"$T/out" 2>"$T/err" || fail "re-prune: $(cat "$T/err")"
grep -q '"sparsity_before": 0.900000, "sparsity_after": 0.900000' "$T/out" || fail "written model is not 90% sparse: $(head -c 300 "$T/out")"

"$SH" prune "$T/base.onnx" -o "$T/nm.onnx" --nm 2:4 --finetune 1 $D --pack --json >"$T/out" 2>"$T/err" \
  || fail "2:4 + fine-tune + pack: $(cat "$T/err")"
grep -q '"sparsity_after": 0.500000' "$T/out" && grep -q '"packed": 3' "$T/out" && grep -q '"format": "nm"' "$T/out" \
  && echo "ok:   2:4 stays 2:4 through fine-tuning and packs as n:m" || fail "2:4: $(head -c 900 "$T/out")"

"$SH" prune "$T/base.onnx" -o "$T/gr.onnx" --ratio 0.8 --schedule gradual --prune-every 2 --finetune 1 $D --json \
  >"$T/out" 2>"$T/err" || fail "gradual: $(cat "$T/err")"
grep -q '"sparsity_after": 0.800000' "$T/out" && echo "ok:   gradual schedule ends at 80%" || fail "gradual: $(head -c 600 "$T/out")"

"$SH" prune "$T/base.onnx" -o "$T/l1.onnx" --ratio 0.7 --schedule l1:1e-4 --finetune 1 $D --json >"$T/out" 2>"$T/err" \
  || fail "l1: $(cat "$T/err")"
grep -q '"sparsity_after": 0.700000' "$T/out" && grep -q '"steps": 32' "$T/out" \
  && echo "ok:   l1 schedule: 16 regularised + 16 fine-tuning steps, 70%" || fail "l1: $(head -c 600 "$T/out")"

"$SH" prune "$T/base.onnx" -o "$T/kd.onnx" --ratio 0.8 --finetune 1 $D --teacher "$T/base.onnx" --temperature 2 --json \
  >"$T/out" 2>"$T/err" || fail "teacher: $(cat "$T/err")"
grep -q '"sparsity_after": 0.800000' "$T/out" && echo "ok:   fine-tuning with the dense model as teacher" \
  || fail "teacher: $(head -c 600 "$T/out")"

"$SH" prune lenet5 -o "$T/st.onnx" --structured channels --ratio 0.5 --schedule iterative:2 --finetune 1 $D >"$T/out" \
  2>"$T/err" || fail "iterative structured: $(cat "$T/err")"
grep -q "61706 -> 15738 parameters" "$T/out" && grep -q "fine-tuned: 32 steps" "$T/out" \
  && echo "ok:   iterative:2 structured lenet5 61706 -> 15738 parameters" || fail "iterative: $(cat "$T/out")"
"$SH" info "$T/st.onnx" --json >"$T/info" 2>"$T/err" && grep -q 15738 "$T/info" || fail "info of iterative result"

# bad input: exit code, one error line, no output file
bad() { # want_exit pattern args...
  local want=$1 pat=$2; shift 2
  rm -f "$T/x.onnx"
  "$SH" prune "$@" -o "$T/x.onnx" >/dev/null 2>"$T/err"; local rc=$?
  [ $rc = "$want" ] || fail "prune $* : exit $rc, want $want: $(cat "$T/err")"
  grep -q -- "$pat" "$T/err" || fail "prune $* : message lacks '$pat': $(cat "$T/err")"
  [ "$(grep -c 'error' "$T/err")" = 1 ] || fail "prune $* : not exactly one error line: $(cat "$T/err")"
  [ -e "$T/x.onnx" ] && fail "prune $* wrote its output"
}
bad 2 "needs training data (--data SPEC)" mlp --ratio 0.5 --finetune 1
bad 2 "need --finetune" mlp --ratio 0.5 --data fashion-mnist:train,n=64
bad 2 "need --finetune" mlp --ratio 0.5 --lr 0.1
bad 2 "unknown --schedule 'cubic'" mlp --finetune 1 --data fashion-mnist:train,n=64 --schedule cubic
bad 2 "iterative:K" mlp --finetune 1 --data fashion-mnist:train,n=64 --schedule iterative:x
bad 2 "outside \[0, 1)" mlp --ratio 1 --finetune 1 --data fashion-mnist:train,n=64
bad 1 "4:8 needs the input dimension (300)" mlp --nm 4:8 --finetune 1 --data fashion-mnist:train,n=64
bad 2 "every channel" lenet5 --structured channels --ratio 0.95 --finetune 1 --data fashion-mnist:train,n=64
bad 2 "keeps shapes" lenet5 --structured channels --schedule gradual --finetune 1 --data fashion-mnist:train,n=64
bad 2 "one sparsity" mlp --nm 2:4 --schedule iterative:3 --finetune 1 --data fashion-mnist:train,n=64
bad 3 "missing.onnx" mlp --finetune 1 --data fashion-mnist:train,n=64 --teacher "$T/missing.onnx"
bad 2 "must be sgd or adamw" mlp --finetune 1 --data fashion-mnist:train,n=64 --optimizer lion
[ $fails = 0 ] && echo "ok:   bad command lines"
exit $((fails > 0))
