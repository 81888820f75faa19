#!/bin/bash
# bench_qlinear.sh [BUILD] [args...] - int8 QLinearConv / QGemm vs f32 Conv / Gemm
# on the cnn's layers (bench/bench_qlinear.c), batch 1 and 64, one thread by
# default (--threads N).  Prints the load next to the figures.
set -eu
cd "$(dirname "$0")/.."
B=${1:-build}; shift || true
BLAS=/usr/lib/x86_64-linux-gnu/openblas-openmp
cc -O2 -fopenmp -Iinclude bench/bench_qlinear.c "$B/libshrink.a" -lprotobuf-c -L$BLAS -Wl,-rpath,$BLAS \
   -lopenblas -lz -lm -o /tmp/bench_qlinear.$$
unset OPENBLAS_CORETYPE
echo "load: $(uptime)"
/tmp/bench_qlinear.$$ "$@"
echo "load: $(uptime)"
rm -f /tmp/bench_qlinear.$$
