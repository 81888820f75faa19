#!/bin/bash
# prune_cli.sh - `shrink prune`: structured channel pruning really shrinks a
# built-in model (exact parameter counts, reloads and runs), unstructured /
# N:M pruning keeps shapes and reaches the requested sparsity, errors and
# --help.  Exit 0 pass, 1 fail, 77 skip.
set -u
cd "$(dirname "$0")/../.."
SH=${SHRINK:-$PWD/build/shrink}
[ -x "$SH" ] || { echo "skip: $SH not built"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

"$SH" prune cnn -o "$T/cnn.onnx" --structured channels --ratio 0.5 --json >"$T/out" 2>"$T/err" \
  || fail "structured cnn: $(cat "$T/err")"
grep -q '"params_before": 168874, "params_after": 42970' "$T/out" && echo "ok:   cnn 168874 -> 42970 parameters" \
  || fail "cnn parameter counts: $(cat "$T/out")"
"$SH" info "$T/cnn.onnx" --json >"$T/info" 2>"$T/err" || fail "info of the pruned cnn: $(cat "$T/err")"
grep -q '42970' "$T/info" || fail "pruned cnn reloads with 42970 parameters: $(head -c 300 "$T/info")"

"$SH" prune lenet5 -o "$T/l.onnx" --structured channels --ratio 0.5 >"$T/out" 2>"$T/err" \
  || fail "structured lenet5: $(cat "$T/err")"
grep -q "61706 -> 15738 parameters" "$T/out" && echo "ok:   lenet5 table and totals" || fail "lenet5 table: $(cat "$T/out")"
grep -q "outputs kept: its channels reach the graph output" "$T/out" || fail "fc3 note missing: $(cat "$T/out")"

"$SH" prune cnn -o "$T/b.onnx" --structured blocks --include res.add >"$T/out" 2>"$T/err" \
  || fail "structured blocks: $(cat "$T/err")"
grep -q "168874 -> 94634 parameters" "$T/out" && grep -q "removed with block 'res.add'" "$T/out" \
  && echo "ok:   cnn without its residual block" || fail "blocks table: $(cat "$T/out")"

"$SH" prune mlp -o "$T/m.onnx" --ratio 0.9 --global --json >"$T/out" 2>"$T/err" || fail "global l1: $(cat "$T/err")"
grep -q '"params_after": 266610' "$T/out" && grep -q '"sparsity_after": 0.900000' "$T/out" \
  && echo "ok:   global 90% keeps shapes, 90% zeros" || fail "global l1 report: $(head -c 400 "$T/out")"

"$SH" prune mlp -o "$T/nm.onnx" --method nm --exclude fc2,fc3 >"$T/out" 2>"$T/err" || fail "2:4: $(cat "$T/err")"
grep -q "^fc1 .* 50.0%" "$T/out" && echo "ok:   2:4 on fc1" || fail "2:4 table: $(cat "$T/out")"

# errors
"$SH" prune mlp -o "$T/x.onnx" --n 4 --m 8 >/dev/null 2>"$T/err"; rc=$?
[ $rc = 1 ] && grep -q "4:8 needs the input dimension (300) to be a multiple of 8" "$T/err" \
  && echo "ok:   4:8 on [100,300] refused" || fail "4:8 error (exit $rc): $(cat "$T/err")"
"$SH" prune mlp -o "$T/x.onnx" --ratio 1.5 >/dev/null 2>"$T/err"; [ $? = 2 ] && grep -q "outside \[0, 1)" "$T/err" \
  || fail "ratio 1.5: $(cat "$T/err")"
"$SH" prune lenet5 -o "$T/x.onnx" --structured channels --include fc3 >/dev/null 2>"$T/err"; [ $? != 0 ] \
  && grep -q "graph output" "$T/err" || fail "structured fc3: $(cat "$T/err")"
[ -e "$T/x.onnx" ] && fail "a failed prune wrote its output"
"$SH" prune mlp --ratio abc -o "$T/x.onnx" >/dev/null 2>&1; [ $? = 2 ] || fail "--ratio abc: want exit 2"
"$SH" prune mlp >/dev/null 2>&1; [ $? = 2 ] || fail "no -o: want exit 2"
"$SH" prune "$T/missing.onnx" -o "$T/x.onnx" >/dev/null 2>&1; [ $? = 3 ] || fail "missing model: want exit 3"
"$SH" prune --help >"$T/out" 2>&1 && grep -q "Exit codes" "$T/out" || fail "prune --help"
[ $fails = 0 ] && echo "ok:   errors and --help"
exit $((fails > 0))
