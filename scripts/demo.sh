#!/bin/bash
# demo.sh BUILD - what `make demo` runs after building (and after
# scripts/deps.sh demo installed the Debian packages):
#   1. train the built-in small CNN ("cnn") on the 60,000 Fashion-MNIST
#      training images and export it to out/cnn.onnx
#   2. shrink info on the export
#   3. shrink eval on the export: accuracy on the 10,000 test images, size,
#      batch-1 latency, batch-64 throughput
#   4. with ../shared present: a story from stories260K (shrink generate)
#   5. a results table
# Knobs: SHRINK_DEMO_EPOCHS (default 1), SHRINK_DEMO_THREADS (default: all cores),
# SHRINK_DEMO_OUT (default out), SHRINK_DEMO_TRAIN (training data spec, default
# fashion-mnist:train; e.g. fashion-mnist:train,n=5000 for a quick look).
set -euo pipefail
B=${1:-build}
cd "$(dirname "$0")/.."
SH=$PWD/$B/shrink
OUT=${SHRINK_DEMO_OUT:-out}
EPOCHS=${SHRINK_DEMO_EPOCHS:-1}
THREADS=${SHRINK_DEMO_THREADS:-$(nproc)}
TRAIN=${SHRINK_DEMO_TRAIN:-fashion-mnist:train}
SHARED=${SHRINK_SHARED:-../shared}
[ -x "$SH" ] || { echo "demo: $SH is not built (run make demo)" >&2; exit 1; }
mkdir -p "$OUT"
LOG=$(mktemp -d); trap 'rm -rf "$LOG"' EXIT
t_start=$(date +%s)

banner() { printf '\n==== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

banner "1. train the small CNN on Fashion-MNIST ($EPOCHS epochs, $THREADS threads)"
t0=$(date +%s)
run "$SH" train cnn --data "$TRAIN" --epochs "$EPOCHS" --threads "$THREADS" \
    --optimizer adamw --lr 0.004 --weight-decay 0.01 --schedule onecycle -o "$OUT/cnn.onnx"
train_s=$(( $(date +%s) - t0 ))

banner "2. what the exported model is made of"
run "$SH" info "$OUT/cnn.onnx"

banner "3. evaluate the export on the 10,000 test images"
run "$SH" eval "$OUT/cnn.onnx" --data fashion-mnist:test --threads "$THREADS" | tee "$LOG/eval.txt"

story_tps=""
ST=$SHARED/models/stories260K
if [ -f "$ST/stories260K.bin" ] && [ -f "$ST/tok512.bin" ]; then
  banner "4. a story from stories260K (a 260K-parameter Llama trained on TinyStories)"
  printf '$ %s\n' "$SH generate $ST/stories260K.bin --tokenizer $ST/tok512.bin --prompt \"Once upon a time\" --steps 200 --temp 0.8 --seed 7"
  "$SH" generate "$ST/stories260K.bin" --tokenizer "$ST/tok512.bin" --prompt "Once upon a time" \
      --steps 200 --temp 0.8 --seed 7 --threads "$THREADS" 2>"$LOG/gen.err"
  echo
  cat "$LOG/gen.err" >&2
  story_tps=$(grep -oE '[0-9]+(\.[0-9]+)? *tok(ens)?/s|tok(ens)?/s:? *[0-9]+(\.[0-9]+)?' "$LOG/gen.err" | grep -oE '[0-9]+(\.[0-9]+)?' | head -1 || true)
else
  banner "4. (no $SHARED/models/stories260K here: skipping the story)"
fi

# ---- results ------------------------------------------------------------------
field() { { grep -E "^$1 " "$LOG/eval.txt" || true; } | head -1 | sed -E "s/^$1 +//"; }
acc=$(field accuracy | sed -E 's/ .*//')
params=$(field parameters | sed -E 's/ .*//')
fbytes=$(field file | sed -E 's/.*\(([0-9]+) bytes\).*/\1/')
lat=$(field latency | sed -E 's/ ms.*/ ms/')
thr=$(field throughput | sed -E 's/ \(.*//')
banner "results ($(( $(date +%s) - t_start )) s in all, training ${train_s} s)"
printf '%-40s %s\n' "measure" "value"
printf '%-40s %s\n' "test accuracy (10,000 images, top-1)" "${acc:-?}"
printf '%-40s %s\n' "parameters" "${params:-?}"
printf '%-40s %s\n' "ONNX file bytes ($OUT/cnn.onnx)" "${fbytes:-?}"
printf '%-40s %s\n' "batch-1 latency (median)" "${lat:-?}"
printf '%-40s %s\n' "batch-64 throughput" "${thr:-?}"
printf '%-40s %s\n' "threads" "$THREADS"
if [ -n "$story_tps" ]; then printf '%-40s %s\n' "stories260K generation (tokens/s)" "$story_tps"
else printf '%-40s %s\n' "stories260K generation (tokens/s)" "(skipped: no $SHARED)"; fi
