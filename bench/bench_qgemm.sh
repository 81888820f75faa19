#!/bin/bash
# bench_qgemm.sh [BUILD] [RUNS] [gemm|gemv|gemvrows] - integer kernel benchmarks, one
# run: the VNNI issue-rate probe (bench/vnni_peak.c: the real int8 peak of one
# core and its clock), int8 GEMM 1024^3 on one core vs oneDNN's s8 matmul, and
# int4 (q4_0, q4_1) GEMV 4096x4096 with weights out of cache vs the best
# streaming read of the same bytes, 1 and 2 threads.  Prints "name shrink
# peer ratio" lines (medians of RUNS runs, CPU time of the benchmark threads:
# the machine is shared).  Needs libdnnl-dev.  Not part of make test.
# SHRINK_CPU=ref|avx2|avx512 forces a path.
set -eu
B=${1:-build}
RUNS=${2:-11}
WHAT=${3:-}
cd "$(dirname "$0")/.."
make --no-print-directory BUILD="$B" "$B/libshrink.a" >/dev/null
cc -std=c11 -D_GNU_SOURCE -O2 -fopenmp -Iinclude -Isrc bench/bench_qgemm.c -o "$B/bench_qgemm" \
   "$B/libshrink.a" -ldnnl -lprotobuf-c -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas -lz -lm -lpthread
cc -std=c11 -O2 -Wall -mavx512f -mavx512vl -mavx512bw -mavx512vnni bench/vnni_peak.c -o "$B/vnni_peak"
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
if [ -z "$WHAT" ] || [ "$WHAT" = gemm ]; then
  # one core for the probe and both GEMM libraries
  env -u OPENBLAS_CORETYPE taskset -c "${CORE:-1}" "$B/vnni_peak" 7
  env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=1 DNNL_VERBOSE=0 taskset -c "${CORE:-1}" "$B/bench_qgemm" "$RUNS" gemm
fi
if [ -z "$WHAT" ] || [ "$WHAT" = gemv ]; then
  # passive waiting: the process CPU time / 2 is then the work of each thread
  env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive "$B/bench_qgemm" "$RUNS" gemv
fi
if [ "$WHAT" = gemvrows ]; then
  # one scale per 32 (q4_0) / 128 (q4_0_g128) / row (q4_0_ch ...; BENCH_FMT=q4_0,... picks): weights at
  # their own size in memory, GEMV 4096x4096 batch 1, one thread (BENCH_NT)
  env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=${BENCH_NT:-1} OMP_WAIT_POLICY=passive "$B/bench_qgemm" "$RUNS" gemvrows
fi
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
