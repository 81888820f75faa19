#!/bin/bash
# bench_sparse_conv.sh [BUILD] [MODEL.onnx] - batch-1 latency of the cnn
# pruned 90 % unstructured: dense (pruned f32) vs packed sparse Conv / Gemm
# (sh_sparsify), per-layer times and the whole model, 1 and 2 threads.  Not
# part of `make test`.  Without MODEL the built-in cnn (random weights).
set -eu
B=${1:-build}
M=${2:-}
cd "$(dirname "$0")/.."
make --no-print-directory BUILD="$B" "$B/libshrink.a" >/dev/null
cc -std=c11 -D_GNU_SOURCE -O2 -fopenmp -Iinclude -Isrc bench/bench_sparse_conv.c "$B/libshrink.a" -lprotobuf-c \
   -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas -lz -lm -lpthread \
   -o "$B/bench_sparse_conv"
for t in 1 2; do
  env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=$t "$B/bench_sparse_conv" $M --threads $t --runs "${RUNS:-201}"
done
