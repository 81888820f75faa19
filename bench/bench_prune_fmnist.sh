#!/bin/bash
# bench_prune_fmnist.sh [BUILD] - issue 4's Fashion-MNIST pruning targets with
# the trained small CNN (MODEL, default: bench/trained_cnn.sh):
#   torch50 / torch90  one-shot global L1 at 50 % / 90 % (no fine-tuning):
#                      shrink's accuracy vs torch.nn.utils.prune.global_unstructured
#                      on the same weights (bench/prune_torch.py), and the number
#                      of weights whose mask differs (target: within 0.2 pp)
#   ft90               90 % unstructured (global L1) + fine-tuning: loss <= 1 pp
#   nm24               2:4 + fine-tuning: loss <= 0.5 pp
#   ch50               50 % of the channels removed + fine-tuning: loss <= 1.5 pp
#   latency            batch-1 latency dense vs 50 % channels (bench_model,
#                      1 and 2 threads, interleaved, median of REPS): >= 1.8x
# Fine-tuning: EPOCHS (default 1; ft90: EPOCHS_90, default 2) epochs of AdamW at LR (default 1e-3, cosine;
# FTX: more training options, default weight decay 0.05 and label smoothing
# 0.1 as the cnn was trained) on the first N (default 60000) training images,
# THREADS (default 2) threads; SCHED_90 (default oneshot) the 90 % schedule;
# SCHED_CH (default iterative:2) is the channel schedule.  PARTS picks parts
# (default "torch50 torch90 ft90 nm24 ch50 latency").  Output lines:
#   name shrink peer ratio              (latency; accuracy lines say what they compare)
set -u
B=${1:-build}
cd "$(dirname "$0")/.."
SH=$PWD/$B/shrink
BM=$PWD/$B/bench_model
M=${MODEL:-$(bash bench/trained_cnn.sh "$B")}
[ -f "$M" ] || { echo "bench_prune_fmnist: no model (make demo writes out/cnn.onnx)" >&2; exit 1; }
EPOCHS=${EPOCHS:-1}
LR=${LR:-1e-3}
N=${N:-60000}
THREADS=${THREADS:-2}
REPS=${REPS:-5}
SCHED_CH=${SCHED_CH:-iterative:2}
PARTS=${PARTS:-torch50 torch90 ft90 nm24 ch50 latency}
O=${OUT:-/tmp/bench_prune_fmnist}
mkdir -p "$O"
DATA="fashion-mnist:train"; [ "$N" -lt 60000 ] && DATA="fashion-mnist:train,n=$N"
FTX=${FTX:---weight-decay 0.05 --label-smoothing 0.1}  # as the cnn was trained (README)
FT="--finetune $EPOCHS --data $DATA --lr $LR --lr-schedule cosine --threads $THREADS $FTX -q"
acc() { "$SH" eval "$1" --data fashion-mnist:test --no-speed --threads "$THREADS" --json 2>/dev/null |
  sed -nE 's/.*"accuracy": ?([0-9.]+).*/\1/p'; }
want() { echo "$PARTS" | tr ' ' '\n' | grep -qx "$1"; }
pp() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", 100 * (a - b) }'; }
verdict() { awk -v x="$1" -v t="$2" 'BEGIN { print (x <= t) ? "met" : "NOT met" }'; }

echo "# model $M; fine-tuning: $EPOCHS epoch(s) on $DATA, lr $LR cosine, $FTX, $THREADS threads; load: $(cut -d' ' -f1-3 /proc/loadavg)"
dense=$(acc "$M")
echo "dense_accuracy $dense"

for r in 50 90; do
  want torch$r || continue
  ratio=0.$r
  "$SH" prune "$M" -o "$O/g$r.onnx" --ratio "$ratio" --global >/dev/null || exit 1
  s=$(acc "$O/g$r.onnx")
  line=$(/usr/bin/python3 bench/prune_torch.py "$M" --ratio "$ratio" --shrink-model "$O/g$r.onnx" --threads "$THREADS")
  t=$(echo "$line" | sed -nE 's/.*accuracy ([0-9.]+).*/\1/p')
  mm=$(echo "$line" | sed -nE 's/.*mask_mismatches (-?[0-9]+).*/\1/p')
  d=$(awk -v a="$s" -v b="$t" 'BEGIN { d = 100 * (a - b); printf "%.2f", d < 0 ? -d : d }')
  echo "oneshot_global_l1_${r}_accuracy shrink $s torch $t diff_pp $d mask_mismatches $mm (target <= 0.2 pp: $(verdict "$d" 0.2))"
done

ft() { # name target_pp args...
  local name=$1 target=$2; shift 2
  local t0=$(date +%s)
  "$SH" prune "$M" -o "$O/$name.onnx" "$@" $FT --json >"$O/$name.json" 2>"$O/$name.err" || { echo "$name failed: $(cat "$O/$name.err")"; return; }
  local a=$(acc "$O/$name.onnx") l
  l=$(pp "$dense" "$a")
  local sp=$(sed -nE 's/.*"sparsity_after": ([0-9.]+), "seconds".*/\1/p' "$O/$name.json")
  local pa=$(sed -nE 's/.*"params_before": ([0-9]+), "params_after": ([0-9]+), "bytes_before".*/\1 -> \2/p' "$O/$name.json")
  echo "${name}_accuracy $a dense $dense loss_pp $l sparsity $sp params $pa seconds $(( $(date +%s) - t0 )) (target <= $target pp: $(verdict "$l" "$target"))"
}
want ft90 && FT=${FT/--finetune $EPOCHS/--finetune ${EPOCHS_90:-2}} ft ft90 1.0 --ratio 0.9 --global --schedule "${SCHED_90:-oneshot}"
want nm24 && ft nm24 0.5 --nm 2:4 --skip-first  # layer1.conv has 9 inputs per filter
want ch50 && ft ch50 1.5 --structured channels --ratio 0.5 --schedule "$SCHED_CH"

if want latency; then
  [ "$BM" -nt "$B/libshrink.a" ] || cc -std=c11 -O2 -fopenmp -Iinclude bench/bench_model.c "$B/libshrink.a" \
    -lprotobuf-c -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp \
    -lopenblas -lz -lm -lpthread -o "$BM" || exit 1
  P="$O/ch50.onnx"
  [ -f "$P" ] || { "$SH" prune "$M" -o "$O/ch50_oneshot.onnx" --structured channels --ratio 0.5 >/dev/null || exit 1; P="$O/ch50_oneshot.onnx"; }
  median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
  ms_of() { sed -nE 's/^median_ms ([0-9.]+).*/\1/p'; }
  echo "# batch-1 latency in ms, $REPS interleaved runs of 300 timed iterations; load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "name shrink_ch50 dense speedup"
  for th in 1 2; do
    sl=""; dl=""
    for r in $(seq "$REPS"); do
      dl="$dl $(env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=$th "$BM" "$M" --threads $th --batch 1 --runs 300 --warmup 20 | ms_of)"
      sl="$sl $(env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=$th "$BM" "$P" --threads $th --batch 1 --runs 300 --warmup 20 | ms_of)"
    done
    s=$(echo $sl | tr ' ' '\n' | grep . | median)
    d=$(echo $dl | tr ' ' '\n' | grep . | median)
    x=$(awk -v a="$s" -v b="$d" 'BEGIN { printf "%.2f", b / a }')
    echo "cnn_ch50_b1_t${th}_ms $s $d ${x}x (target >= 1.8x: $(awk -v x="$x" 'BEGIN { print (x >= 1.8) ? "met" : "NOT met" }'))"
  done
fi
