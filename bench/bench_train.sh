#!/bin/bash
# bench_train.sh [BUILD] [MODELS...] - training throughput of `shrink train`
# vs PyTorch (same model, batch 64, AdamW, 2 threads) on Fashion-MNIST.
# Prints "name shrink peer ratio" (images/s, medians of 3 runs each, ratio =
# shrink / peer), peers measured in the same run.
#   REPS=N         runs per median (default 3)
#   BENCH_ENV="K=V ..."  extra environment for both sides, e.g.
#                  BENCH_ENV=OMP_WAIT_POLICY=passive on a busy machine
set -u
B=${1:-build}
shift || true
MODELS=${*:-"mlp lenet5 cnn"}
cd "$(dirname "$0")/.."
SHRINK="$PWD/$B/shrink"
PY=/usr/bin/python3
REPS=${REPS:-3}
BATCH=64
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
steps_for() { case $1 in mlp) echo 400;; lenet5) echo 150;; *) echo 40;; esac; }
echo "name shrink peer ratio"
for m in $MODELS; do
  st=$(steps_for "$m")
  s=$(for r in $(seq "$REPS"); do
        env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=2 ${BENCH_ENV:-} "$SHRINK" train "$m" --data fashion-mnist:train:20000 \
          --batch $BATCH --threads 2 --max-steps "$st" --json -q |
          sed -E 's/.*"items_per_s": ([0-9.]+).*/\1/'
      done | median)
  p=$(for r in $(seq "$REPS"); do
        env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=2 ${BENCH_ENV:-} "$PY" bench/train_torch.py "$m" "$st" $BATCH
      done | median)
  ratio=$(awk -v a="$s" -v b="$p" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
  echo "train_${m}_b${BATCH}_t2 $s $p $ratio"
done
