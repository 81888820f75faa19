#!/bin/bash
# prune_pack.sh - `shrink prune --pack`: a 90 % global-L1 pruned mlp stored
# with packed sparse Gemm weights is < 0.25x the dense file, reloads and gives
# the dense model's outputs (shrink run --expect); packing an already pruned
# model (--ratio 0 --pack); --pack-measure reports dense / sparse times.
# Exit 0 pass, 1 fail, 77 skip.
set -u
cd "$(dirname "$0")/../.."
SH=${SHRINK:-$PWD/build/shrink}
[ -x "$SH" ] || { echo "skip: $SH not built"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
size() { stat -c %s "$1"; }

"$SH" prune mlp -o "$T/d.onnx" --ratio 0.9 --global >/dev/null 2>"$T/err" || fail "dense prune: $(cat "$T/err")"
"$SH" prune mlp -o "$T/p.onnx" --ratio 0.9 --global --pack >"$T/out" 2>"$T/err" || fail "prune --pack: $(cat "$T/err")"
grep -q "^fc1 .* csr" "$T/out" && grep -q "packed 2 layer(s)" "$T/out" && echo "ok:   pack table" \
  || fail "pack table: $(cat "$T/out")"
ds=$(size "$T/d.onnx"); ps=$(size "$T/p.onnx")
[ $((ps * 4)) -lt "$ds" ] && echo "ok:   packed file $ps bytes < 0.25 x dense $ds" || fail "packed $ps bytes vs dense $ds"

# standalone: pack an already pruned model
"$SH" prune "$T/d.onnx" -o "$T/p2.onnx" --ratio 0 --pack >/dev/null 2>"$T/err" || fail "--ratio 0 --pack: $(cat "$T/err")"
p2=$(size "$T/p2.onnx")
[ $((p2 * 4)) -lt "$ds" ] && echo "ok:   pruned model packed afterwards: $p2 bytes" || fail "repack size $p2"

# same outputs: input [2,1,28,28] as a TensorProto (dims, FLOAT, raw_data)
{
  printf '\x08\x02\x08\x01\x08\x1c\x08\x1c\x10\x01\x4a\x80\x31'   # raw_data: 6272 bytes
  for ((i = 0; i < 1568; i++)); do
    case $((i % 5)) in
      0) printf '\x00\x00\x80\x3f' ;; 1) printf '\x00\x00\x00\xbf' ;; 2) printf '\xcd\xcc\xcc\x3d' ;;
      3) printf '\x00\x00\x00\x40' ;; *) printf '\x00\x00\x80\xbe' ;;
    esac
  done
} >"$T/x.pb"
"$SH" run "$T/d.onnx" --input "$T/x.pb" -o "$T/ref" >/dev/null 2>"$T/err" || fail "run dense: $(cat "$T/err")"
for m in p p2; do
  "$SH" run "$T/$m.onnx" --input "$T/x.pb" --expect "$T/ref" --tol 1e-5 >"$T/out" 2>"$T/err" \
    && echo "ok:   $m.onnx outputs = dense outputs" || fail "$m outputs: $(cat "$T/out" "$T/err")"
done

"$SH" prune mlp -o "$T/m.onnx" --ratio 0.9 --global --pack-measure --pack-batch 16 --json >"$T/out" 2>"$T/err" \
  || fail "--pack-measure: $(cat "$T/err")"
grep -q '"pack": {' "$T/out" && grep -q '"dense_ms": 0\.[0-9]*[1-9]' "$T/out" && echo "ok:   measured pack report" \
  || fail "measure report: $(head -c 600 "$T/out")"

"$SH" prune mlp -o "$T/x.onnx" --pack-formats foo >/dev/null 2>&1; [ $? = 2 ] || fail "--pack-formats foo: want exit 2"
"$SH" prune llama-tiny -o "$T/l.bin" --ratio 0.9 --pack >/dev/null 2>"$T/err"; [ $? = 2 ] && grep -q "ONNX" "$T/err" \
  || fail "--pack to .bin: want exit 2 and a message: $(cat "$T/err")"
[ -e "$T/l.bin" ] && fail "--pack to .bin wrote a file"
[ $fails = 0 ] && echo "ok:   errors"
exit $((fails > 0))
