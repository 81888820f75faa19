#!/bin/bash
# bench_int8.sh [BUILD] - static int8 of the Fashion-MNIST cnn, in one run:
#   accuracy f32 vs int8 (shrink eval, full test set), file sizes, and batch-1
#   latency (1 and 2 threads) of shrink f32, shrink int8, ONNX Runtime on the
#   QDQ export (shrink convert --qdq; when that is not available, ORT on
#   shrink's own QLinearConv/QGemm file, which it also runs) and PyTorch 1.13
#   static int8 of the same architecture and weights (bench/int8_torch.py,
#   onednn engine, calibrated on the same images).
# Each latency is the median over REPS alternating runs of the median of RUNS
# timed iterations (after warm-up).  Prints name/value lines and the ratios
# the issue asks for (targets: int8 loses <= 0.3 pp, file >= 3.8x smaller,
# int8 >= 2x faster than shrink f32 and faster than ORT and PyTorch int8).
# MODEL (default: the trained cnn of bench/trained_cnn.sh), CALIB (default fashion-mnist:train:256,
# the first 256 training images), METHOD (default entropy, the CLI's default), REPS (5), RUNS (300).
set -u
B=${1:-build}
cd "$(dirname "$0")/.."
SH=$PWD/$B/shrink
BM=$PWD/$B/bench_model
M=${MODEL:-$(bash bench/trained_cnn.sh "$B")}
N=${CALIB_N:-256}
CALIB=${CALIB:-fashion-mnist:train:$N}
METHOD=${METHOD:-entropy}
REPS=${REPS:-5}
RUNS=${RUNS:-300}
[ -x "$SH" ] || { echo "bench_int8: build $SH first (make BUILD=$B)"; exit 1; }
[ -f "$M" ] || { echo "bench_int8: no model $M (MODEL=path to shrink's trained cnn)"; exit 1; }
[ "$BM" -nt "$B/libshrink.a" ] || cc -std=c11 -O2 -fopenmp -Iinclude bench/bench_model.c "$B/libshrink.a" \
  -lprotobuf-c -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp \
  -lopenblas -lz -lm -lpthread -o "$BM" || exit 1
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ms_of() { sed -nE 's/^median_ms ([0-9.]+).*/\1/p'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
acc_of() { sed -nE 's/.*"accuracy": ?([0-9.]+).*/\1/p'; }

echo "# model $M; calibration $CALIB ($METHOD); REPS=$REPS x RUNS=$RUNS; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
"$SH" quantize "$M" -o "$T/int8.onnx" --calib "$CALIB" --method "$METHOD" >"$T/q.txt" 2>&1 || { cat "$T/q.txt"; exit 1; }
sed 's/^/# /' "$T/q.txt"
QDQ=$T/qdq.onnx
if "$SH" convert "$T/int8.onnx" "$QDQ" --qdq >/dev/null 2>"$T/c.txt"; then ORT_WHAT="qdq"
else ORT_WHAT="qlinear"; QDQ=$T/int8.onnx; echo "# shrink convert --qdq failed ($(head -1 "$T/c.txt")): ORT runs shrink's QLinear file"; fi

# accuracy (full test set)
a32=$(env -u OPENBLAS_CORETYPE "$SH" eval "$M" --data fashion-mnist:test --json 2>/dev/null | acc_of)
a8=$(env -u OPENBLAS_CORETYPE "$SH" eval "$T/int8.onnx" --data fashion-mnist:test --json 2>/dev/null | acc_of)
echo "acc_f32 $a32"
echo "acc_int8 $a8"
echo "acc_drop_pp $(awk -v a="$a32" -v b="$a8" 'BEGIN { if (a != "" && b != "") printf "%.2f", 100 * (a - b); else print "-" }')"
s32=$(stat -c %s "$M"); s8=$(stat -c %s "$T/int8.onnx")
echo "file_f32_bytes $s32"
echo "file_int8_bytes $s8"
echo "file_ratio $(ratio "$s32" "$s8")"

ORT_OK=0
node -e "require('./bench/node_modules/onnxruntime-node')" 2>/dev/null && ORT_OK=1
TORCH_OK=0
/usr/bin/python3 -c "import torch, onnx" 2>/dev/null && TORCH_OK=1
if [ "$TORCH_OK" = 1 ]; then
  env -u OPENBLAS_CORETYPE /usr/bin/python3 bench/int8_torch.py "$M" --calib "$N" --eval 10000 --threads 1,2 \
    --runs "$RUNS" --reps "$REPS" >"$T/torch.txt" 2>"$T/torch.err" || { echo "# int8_torch.py failed: $(tail -1 "$T/torch.err")"; }
  sed -n 's/^\(engine\|torch_.*_acc\) /torch_\1 /p' "$T/torch.txt" | sed 's/^torch_torch_/torch_/'
fi

echo "name shrink_f32 shrink_int8 ort_$ORT_WHAT torch_int8 | f32/int8 int8/ort int8/torch"
for th in 1 2; do
  f=""; q=""; o=""
  for r in $(seq "$REPS"); do
    f="$f $(env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=$th "$BM" "$M" --threads $th --runs "$RUNS" --warmup 30 | ms_of)"
    q="$q $(env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=$th "$BM" "$T/int8.onnx" --threads $th --runs "$RUNS" --warmup 30 | ms_of)"
    [ "$ORT_OK" = 1 ] && o="$o $(env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=$th node bench/ort_bench.js "$QDQ" $th "$RUNS" 30 1 | ms_of)"
  done
  f=$(echo $f | tr ' ' '\n' | grep . | median)
  q=$(echo $q | tr ' ' '\n' | grep . | median)
  o=$(echo $o | tr ' ' '\n' | grep . | median)
  p=$(sed -nE "s/^torch_int8_b1_t${th}_ms ([0-9.]+)/\1/p" "$T/torch.txt" 2>/dev/null)
  echo "cnn_b1_t${th}_ms $f $q ${o:--} ${p:--} | $(ratio "$f" "$q") $(ratio "$q" "$o") $(ratio "$q" "$p")"
done
grep -E '^torch_f32_b1' "$T/torch.txt" 2>/dev/null
echo "# ratios: f32/int8 >= 2 (speed-up over shrink f32); int8/ort and int8/torch < 1 (shrink int8 faster)"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
