#!/bin/bash
# bench_infer.sh [BUILD] - inference latency of the small CNN's ONNX export:
# shrink (bench_model: sh_program_run) vs ONNX Runtime 1.30 (onnxruntime-node,
# bench/ort_bench.js), same model file, same thread count, in the same run.
# Each tool runs REPS times alternately; each run reports the median of RUNS
# timed runs after warm-up; the line shows the median of those medians.
#   name shrink_ms peer_ms ratio      (ratio = shrink / peer: < 1 means shrink is faster)
# MODEL=path.onnx overrides the model (default: out/cnn.onnx from make demo,
# else a briefly trained cnn written to bench/out/cnn.onnx).
set -u
B=${1:-build}
cd "$(dirname "$0")/.."
SH=$PWD/$B/shrink
BM=$PWD/$B/bench_model
REPS=${REPS:-5}
RUNS=${RUNS:-300}
[ "$BM" -nt "$B/libshrink.a" ] || cc -std=c11 -O2 -fopenmp -Iinclude bench/bench_model.c "$B/libshrink.a" \
  -lprotobuf-c -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas -lz -lm -lpthread -o "$BM" || exit 1
M=${MODEL:-}
if [ -z "$M" ]; then
  if [ -f out/cnn.onnx ]; then M=out/cnn.onnx
  else
    M=bench/out/cnn.onnx
    if [ ! -f "$M" ]; then
      mkdir -p bench/out
      echo "bench_infer: training a cnn briefly for $M" >&2
      "$SH" train cnn --data fashion-mnist:train --epochs 1 --max-steps 50 -q -o "$M" >&2 || exit 1
    fi
  fi
fi
ORT_OK=${SHRINK_ORT:-}
if [ -z "$ORT_OK" ]; then node -e "require('./bench/node_modules/onnxruntime-node')" 2>/dev/null && ORT_OK=1 || ORT_OK=0; fi
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ms_of() { sed -nE 's/^median_ms ([0-9.]+).*/\1/p'; }
echo "# model $M; REPS=$REPS runs x RUNS=$RUNS timed iterations each; times in ms"
echo "name shrink peer ratio"
for cfg in "1 1" "1 2" "64 2"; do
  set -- $cfg; batch=$1; th=$2
  runs=$RUNS; [ "$batch" -gt 1 ] && runs=$((RUNS / 20 + 5))
  s_list=""; p_list=""
  for r in $(seq "$REPS"); do
    s=$(env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=$th "$BM" "$M" --threads "$th" --batch "$batch" --runs "$runs" --warmup 20 | ms_of)
    s_list="$s_list $s"
    if [ "$ORT_OK" = 1 ]; then
      p=$(env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=$th node bench/ort_bench.js "$M" "$th" "$runs" 20 "$batch" | ms_of)
      p_list="$p_list $p"
    fi
  done
  s=$(echo $s_list | tr ' ' '\n' | grep . | median)
  p=$(echo $p_list | tr ' ' '\n' | grep . | median)
  ratio=$(awk -v a="$s" -v b="$p" 'BEGIN { if (b + 0 > 0 && a + 0 > 0) printf "%.2f", a / b; else print "-" }')
  echo "cnn_b${batch}_t${th}_ms $s $p $ratio"
done
