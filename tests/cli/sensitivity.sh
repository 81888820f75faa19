#!/bin/bash
# sensitivity.sh - `shrink sensitivity` (table, --json), `shrink quantize
# --budget-bytes / --max-drop` (the file fits the budget, the choice is
# reported) and `shrink prune --target-sparsity / --target-flops` on built-in
# models (fixed seeds) and a Fashion-MNIST slice; bad input gives one clear
# error and exit 2.  Exit 0 pass, 1 fail, 77 skip.
set -u
cd "$(dirname "$0")/../.."
SH=${SHRINK:-$PWD/build/shrink}
[ -x "$SH" ] || { echo "skip: $SH not built"; exit 77; }
[ -r /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || { echo "skip: no Fashion-MNIST"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
D=fashion-mnist:test,n=256

# sensitivity table: one row per layer, one KL + drop column pair per level
"$SH" sensitivity lenet5 --calib $D --threads 2 --json "$T/s.json" >"$T/out" 2>"$T/err" || fail "sensitivity: $(cat "$T/err")"
rows=$(grep -cE "^(conv1|conv2|fc1|fc2|fc3) " "$T/out")
hdr=$(grep -c "8b KL .* 4b KL .* 3b KL .* 2b KL" "$T/out")
[ "$rows" = 5 ] && [ "$hdr" = 1 ] && echo "ok:   quantization table 5 layers x 4 levels" || fail "table: $(cat "$T/out")"
python3 - "$T/s.json" <<'EOF' && echo "ok:   json table" || fail "json: $(head -c 300 "$T/s.json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["kind"] == "quant" and j["levels"] == ["8", "4", "3", "2"] and j["samples"] == 256
assert [l["name"] for l in j["layers"]] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
for l in j["layers"]:
    assert len(l["cells"]) == 4 and all(c["kl"] >= 0 for c in l["cells"])
    assert l["quantizable"] in (True, False) and (l["quantizable"] or l["note"])
    assert l["cells"][3]["kl"] >= 0.9 * l["cells"][0]["kl"]
EOF
"$SH" sensitivity mlp --calib $D --prune --levels 0.5,0.9,2:4 --threads 2 >"$T/out" 2>"$T/err" || fail "prune table: $(cat "$T/err")"
grep -q "0.5 KL .* 0.9 KL .* 2:4 KL" "$T/out" && [ "$(grep -cE '^fc[123] ' "$T/out")" = 3 ] \
  && echo "ok:   pruning table with 2:4" || fail "prune table: $(cat "$T/out")"

# mixed precision under a byte budget: the budget of the all-4-bit model file
"$SH" quantize mlp -o "$T/q4.onnx" --bits 4 >/dev/null 2>"$T/err" || fail "q4: $(cat "$T/err")"
B=$(stat -c %s "$T/q4.onnx")
"$SH" quantize mlp -o "$T/mp.onnx" --calib $D --budget-bytes "$B" --threads 2 >"$T/out" 2>"$T/err" || fail "budget: $(cat "$T/err")"
S=$(stat -c %s "$T/mp.onnx" 2>/dev/null || echo 999999999)
[ "$S" -le "$B" ] && echo "ok:   budget $B bytes, file $S bytes" || fail "file $S > budget $B"
grep -qE "^fc1 .* (f32|8|4|3|2) " "$T/out" && grep -q "accuracy .* -> .* (drop" "$T/out" \
  && echo "ok:   choice and measured drop reported" || fail "report: $(cat "$T/out")"
"$SH" eval "$T/mp.onnx" --data $D >/dev/null 2>"$T/err" && echo "ok:   mixed-precision model evaluates" || fail "eval: $(cat "$T/err")"
"$SH" quantize mlp -o "$T/md.onnx" --calib $D --max-drop 1 --threads 2 --json >"$T/out" 2>"$T/err" || fail "max-drop: $(cat "$T/err")"
python3 - "$T/out" <<'EOF' && echo "ok:   --max-drop json (drop <= 1)" || fail "max-drop json: $(head -c 300 "$T/out")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["drop"] <= 1 and j["bytes_after"] <= j["bytes_before"] and len(j["layers"]) == 3
EOF

# per-layer sparsity
"$SH" prune lenet5 -o "$T/p.onnx" --calib $D --target-sparsity 0.8 --threads 2 >"$T/out" 2>"$T/err" || fail "target sparsity: $(cat "$T/err")"
grep -qE "^weight sparsity 80\.0[0-9]%" "$T/out" && grep -q "^uniform" "$T/out" \
  && echo "ok:   target sparsity 0.8 reached, uniform baseline" || fail "sparsity: $(cat "$T/out")"
"$SH" prune lenet5 -o "$T/f.onnx" --calib $D --target-flops 0.5 --threads 2 --json >"$T/out" 2>"$T/err" || fail "flops: $(cat "$T/err")"
python3 -c "import json,sys; j=json.load(open('$T/out')); assert 0.45 <= j['flops_frac'] <= 0.5" \
  && echo "ok:   target flops 0.5" || fail "flops json: $(head -c 300 "$T/out")"

# bad input: one line, exit 2
chk() { # expected-exit pattern command...
  local want=$1 pat=$2; shift 2
  "$@" >/dev/null 2>"$T/err"; local rc=$?
  [ $rc = "$want" ] && grep -q -- "$pat" "$T/err" && [ "$(wc -l <"$T/err")" = 1 ] \
    && echo "ok:   exit $rc: $(cat "$T/err")" || fail "want exit $want /$pat/, got $rc: $(cat "$T/err")"
}
chk 2 "smallest reachable" "$SH" quantize mlp -o "$T/x.onnx" --calib $D --budget-bytes 1000
chk 2 "must be >= 0" "$SH" quantize mlp -o "$T/x.onnx" --calib $D --max-drop -1
chk 2 "outside \[0, 1)" "$SH" prune mlp -o "$T/x.onnx" --calib $D --target-sparsity 1
chk 2 "outside \[0, 1)" "$SH" prune mlp -o "$T/x.onnx" --calib $D --target-sparsity -0.1
chk 2 "'fc9' is not a prunable layer" "$SH" sensitivity mlp --calib $D --include fc9
chk 2 "9 bits" "$SH" sensitivity mlp --calib $D --levels 8,9
chk 2 "need evaluation data" "$SH" sensitivity mlp
chk 2 "not both" "$SH" quantize mlp -o "$T/x.onnx" --calib $D --max-drop 1 --budget-bytes 100000
[ ! -e "$T/x.onnx" ] && echo "ok:   no output written on errors" || fail "x.onnx written"
"$SH" sensitivity --help | grep -q "Usage: shrink sensitivity" && echo "ok:   --help" || fail "--help"

[ $fails = 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "sensitivity.sh: all passed"
