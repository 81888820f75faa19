#!/bin/bash
# bench_qgemm.sh [BUILD] [RUNS] [gemm|gemv] - integer kernel benchmarks (one core):
# int8 GEMM 1024^3 vs oneDNN, q4_0 GEMV 4096x4096 vs streaming read bandwidth.
# Prints "name shrink peer ratio" lines (medians of RUNS runs).  Needs
# libdnnl-dev.  Not part of make test.  SHRINK_CPU=ref|avx2|avx512 forces a path.
set -eu
B=${1:-build}
RUNS=${2:-11}
cd "$(dirname "$0")/.."
make --no-print-directory BUILD="$B" "$B/libshrink.a" >/dev/null
cc -std=c11 -D_GNU_SOURCE -O2 -fopenmp -Iinclude -Isrc bench/bench_qgemm.c -o "$B/bench_qgemm" \
   "$B/libshrink.a" -ldnnl -lprotobuf-c -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas -lz -lm -lpthread
# one core for both libraries; the machine is shared, so medians of RUNS runs
env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=1 DNNL_VERBOSE=0 taskset -c "${CORE:-1}" "$B/bench_qgemm" "$RUNS" "${3:-}"
