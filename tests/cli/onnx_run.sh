#!/bin/bash
# onnx_run.sh - `shrink run` on ONNX backend node tests: outputs are written as
# DIR/output_N.pb TensorProtos, match the reference outputs (--expect), can be
# read back, and usage / data errors give the documented exit codes.
# Exit 0 pass, 1 fail, 77 skip (no libonnx-testdata or no binary).
set -u
cd "$(dirname "$0")/../.."
SH=${SHRINK:-$PWD/build/shrink}
[ -x "$SH" ] || { echo "skip: $SH not built"; exit 77; }
NODE=/usr/share/libonnx-testdata/data/node
[ -d "$NODE/test_relu" ] || { echo "skip: libonnx-testdata not installed"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0; checks=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

# check_rc DESC WANT CMD...: exit code must be WANT
check_rc() {
  local desc=$1 want=$2; shift 2
  checks=$((checks+1))
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  if [ "$rc" != "$want" ]; then
    fail "$desc: exit $rc, expected $want"; sed 's/^/  /' "$T/err" | head -5; sed 's/^/  /' "$T/out" | head -5
  else echo "ok:   $desc [exit $rc]"; fi
}

# 1. node tests whose ops run: outputs written, equal to the reference
ran=0
for t in test_relu test_conv_with_strides_padding test_gemm_all_attributes test_softmax_axis_1 \
         test_batchnorm_example test_maxpool_2d_pads test_layer_normalization_4d_axis1 test_constant; do
  D=$NODE/$t
  [ -d "$D" ] || continue
  out="$T/$t"
  checks=$((checks+1))
  if ! "$SH" run "$D/model.onnx" --inputs "$D/test_data_set_0" -o "$out" --expect "$D/test_data_set_0" >"$T/out" 2>"$T/err"; then
    if grep -q "unsupported op" "$T/err"; then echo "note: $t: op not implemented yet: $(cat "$T/err")"; continue; fi
    fail "$t: $(cat "$T/err") $(cat "$T/out")"; continue
  fi
  ran=$((ran+1))
  n=$(ls "$D/test_data_set_0" | grep -c '^output_')
  for i in $(seq 0 $((n-1))); do
    [ -s "$out/output_$i.pb" ] || fail "$t: $out/output_$i.pb not written"
  done
  ls "$out" | grep -q tmp && fail "$t: temporary files left in $out"
  # the written files are valid TensorProtos equal to what a second run gives (tolerance 0)
  args=()
  shopt -s nullglob
  for f in "$D"/test_data_set_0/input_*.pb; do args+=(--input "$f"); done
  shopt -u nullglob
  check_rc "$t: rerun with --input files, --expect own outputs at --tol 0" 0 \
    "$SH" run "$D/model.onnx" "${args[@]}" --expect "$out" --tol 0
  echo "ok:   $t $(grep -o 'max error [^ ]*' "$T/out" | head -1)"
done
[ "$ran" -gt 0 ] || fail "no node test ran at all"

# 2. --json
R=$NODE/test_relu
checks=$((checks+1))
if "$SH" run "$R/model.onnx" --inputs "$R/test_data_set_0" --expect "$R/test_data_set_0" --json >"$T/json" 2>"$T/err"; then
  grep -q '"ok": true' "$T/json" && grep -q '"name": "y"' "$T/json" && grep -q '"shape": \[3, 4, 5\]' "$T/json" \
    || fail "--json output: $(cat "$T/json")"
  python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$T/json" 2>/dev/null || fail "--json is not valid JSON: $(cat "$T/json")"
else fail "run --json: $(cat "$T/err")"; fi

# 3. a mismatch: relu outputs checked against sigmoid's reference -> exit 1
mkdir -p "$T/wrong"
X=$NODE/test_sigmoid/test_data_set_0
if [ -f "$X/output_0.pb" ]; then
  cp "$X/output_0.pb" "$T/wrong/output_0.pb"
  check_rc "outputs differing from --expect" 1 "$SH" run "$R/model.onnx" --inputs "$R/test_data_set_0" --expect "$T/wrong"
  grep -q "MISMATCH" "$T/out" || fail "mismatch not reported on stdout: $(cat "$T/out")"
  [ "$(grep -c 'error:' "$T/err")" = 1 ] || fail "mismatch: expected one error line: $(cat "$T/err")"
fi

# 4. usage and data errors
check_rc "--help" 0 "$SH" run --help
grep -q "Exit codes" "$T/out" || fail "run --help lacks exit codes"
check_rc "no model" 2 "$SH" run
check_rc "no -o and no --expect" 2 "$SH" run "$R/model.onnx" --inputs "$R/test_data_set_0"
check_rc "unknown option" 2 "$SH" run "$R/model.onnx" --frobnicate
check_rc "--threads abc" 2 "$SH" run "$R/model.onnx" --inputs "$R/test_data_set_0" -o "$T/o" --threads abc
check_rc "--input and --inputs together" 2 "$SH" run "$R/model.onnx" --inputs "$R/test_data_set_0" --input "$R/test_data_set_0/input_0.pb" -o "$T/o"
check_rc "too many inputs" 2 "$SH" run "$R/model.onnx" --input "$R/test_data_set_0/input_0.pb" --input "$R/test_data_set_0/input_0.pb" -o "$T/o"
check_rc "missing model file" 3 "$SH" run "$T/nope.onnx" --inputs "$R/test_data_set_0" -o "$T/o"
check_rc "missing input file" 3 "$SH" run "$R/model.onnx" --input "$T/nope.pb" -o "$T/o"
head -c $(( $(stat -c %s "$R/model.onnx") / 2 )) "$R/model.onnx" >"$T/cut.onnx"
check_rc "truncated model" 4 "$SH" run "$T/cut.onnx" --inputs "$R/test_data_set_0" -o "$T/o"
grep -q "cut.onnx" "$T/err" || fail "truncated model error does not name the file: $(cat "$T/err")"
check_rc "expect dir with the wrong number of outputs" 1 "$SH" run "$R/model.onnx" --inputs "$R/test_data_set_0" --expect "$T"

echo "$checks checks, $fails failed"
[ "$fails" = 0 ]
