#!/bin/bash
# trained_cnn.sh BUILD - prints the path of the trained Fashion-MNIST cnn the
# compression benchmarks start from: $CNN if set, else bench/out/cnn4.onnx,
# trained first (the README's 4-epoch recipe, ~92.6 % test accuracy, several
# minutes on 2 cores) when it is not there yet.
B=${1:-build}
if [ -n "${CNN:-}" ]; then echo "$CNN"; exit 0; fi
M=bench/out/cnn4.onnx
if [ ! -f "$M" ]; then
  mkdir -p bench/out
  echo "training the cnn (4 epochs) into $M" >&2
  "$B/shrink" train cnn --data fashion-mnist:train --val fashion-mnist:test --epochs 4 --threads 2 \
    --optimizer adamw --lr 0.004 --weight-decay 0.05 --label-smoothing 0.1 --schedule onecycle -o "$M" >&2 || exit 1
fi
echo "$M"
