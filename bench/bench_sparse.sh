#!/bin/bash
# bench_sparse.sh [BUILD] [RUNS] - sparse linear kernels (csr 90 %, bcsr 1x8,
# 2:4, 4:8) vs dense f32 (OpenBLAS sgemv/sgemm and shrink's own dense GEMV) on
# a 4096x4096 Linear at batch 1, 8, 64, with 1 and 2 threads, hot and cold
# cache.  Not part of `make test`.  OPENBLAS_CORETYPE is unset only for the
# benchmark commands (OpenBLAS then picks its kernels for this CPU).
set -eu
B=${1:-build}
RUNS=${2:-15}
cd "$(dirname "$0")/.."
make --no-print-directory BUILD="$B" "$B/libshrink.a" >/dev/null
cc -O2 -fopenmp -Iinclude -Isrc -I/usr/include/x86_64-linux-gnu/openblas-openmp \
   bench/bench_sparse.c "$B/libshrink.a" -lprotobuf-c -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas -lz -lm -lpthread -o "$B/bench_sparse"
# one thread: CPU time of the process (--cpu; robust to time slicing on the
# shared machine); two threads: wall clock.  BATCHES=1 for batch 1 only.
for cache in "" --cold; do
  for t in 1 2; do
    cpu=""; [ "$t" = 1 ] && cpu=--cpu
    env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=$t OMP_WAIT_POLICY=passive "$B/bench_sparse" --threads $t --runs "$RUNS" \
        --batches "${BATCHES:-1,8,64}" $cache $cpu
  done
done
