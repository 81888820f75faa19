#!/bin/bash
# onnx_convert.sh - `shrink convert`: llama2.c .bin -> .onnx -> .bin gives the
# same bytes; ONNX -> ONNX keeps outputs bit-identical; errors and --help.
# Exit 0 pass, 1 fail, 77 skip.
set -u
cd "$(dirname "$0")/../.."
SH=${SHRINK:-$PWD/build/shrink}
[ -x "$SH" ] || { echo "skip: $SH not built"; exit 77; }
SHARED=${SHRINK_SHARED:-../shared}
ST=$SHARED/models/stories260K/stories260K.bin
NODE=/usr/share/libonnx-testdata/data/node
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0; did=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

if [ -f "$ST" ]; then
  did=1
  "$SH" convert "$ST" "$T/s.onnx" >"$T/out" 2>"$T/err" || fail "bin -> onnx: $(cat "$T/err")"
  "$SH" convert "$T/s.onnx" "$T/s.bin" >"$T/out" 2>"$T/err" || fail "onnx -> bin: $(cat "$T/err")"
  cmp -s "$ST" "$T/s.bin" && echo "ok:   stories260K.bin -> .onnx -> .bin is byte-identical" \
    || fail "stories260K round trip changed bytes"
  "$SH" convert "$T/s.onnx" "$T/s2.onnx" --json >"$T/out" 2>"$T/err" || fail "onnx -> onnx: $(cat "$T/err")"
  grep -q '"params": 260032' "$T/out" || fail "--json: $(cat "$T/out")"
  cmp -s "$T/s.onnx" "$T/s2.onnx" && echo "ok:   .onnx -> .onnx is byte-identical" || fail "onnx -> onnx changed bytes"
else
  echo "note: $ST absent: skipping llama2.c round trip"
fi

D=$NODE/test_conv_with_strides_padding
if [ -d "$D" ] && "$SH" run "$D/model.onnx" --inputs "$D/test_data_set_0" -o "$T/ref" >/dev/null 2>&1; then
  did=1
  "$SH" convert "$D/model.onnx" "$T/conv.onnx" >/dev/null 2>"$T/err" || fail "convert conv: $(cat "$T/err")"
  "$SH" run "$T/conv.onnx" --inputs "$D/test_data_set_0" --expect "$T/ref" --tol 0 >"$T/out" 2>"$T/err" \
    && echo "ok:   converted conv model gives bit-identical outputs" || fail "converted conv model: $(cat "$T/err" "$T/out")"
fi
[ "$did" = 1 ] || { echo "skip: no stories260K and no runnable node test"; exit 77; }

"$SH" convert --help >"$T/out" 2>&1 && grep -q "Exit codes" "$T/out" || fail "convert --help"
"$SH" convert onlyone.onnx >/dev/null 2>&1; [ $? = 2 ] || fail "convert with one argument: want exit 2"
"$SH" convert "$T/missing.onnx" "$T/x.onnx" >/dev/null 2>&1; [ $? = 3 ] || fail "convert of a missing file: want exit 3"
if [ -f "$T/s.onnx" ]; then
  "$SH" convert "$T/s.onnx" "$T/x.weird" >/dev/null 2>"$T/err"; rc=$?
  [ $rc = 2 ] && grep -q "x.weird" "$T/err" || fail "convert to an unknown extension: exit $rc, $(cat "$T/err")"
  [ -e "$T/x.weird" ] && fail "convert to an unknown extension left a file"
fi
echo "$fails failed"
[ "$fails" = 0 ]
