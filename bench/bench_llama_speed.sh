#!/bin/bash
# bench_llama_speed.sh [BUILD] [DIM] [LAYERS] [THREADS] [REPS] - decode and
# prefill speed of f32, weight-only q8_0 / q4_0, dynamic and static int8 on a
# random-weight Llama whose matrices do not fit in cache (bench/bench_llama_speed.c).
set -eu
cd "$(dirname "$0")/.."
B=${1:-build}; shift || true
BLAS=/usr/lib/x86_64-linux-gnu/openblas-openmp
cc -std=c11 -O2 -fopenmp -Iinclude bench/bench_llama_speed.c "$B/libshrink.a" -lprotobuf-c -L$BLAS -Wl,-rpath,$BLAS \
   -lopenblas -lz -lm -lpthread -o /tmp/bench_llama_speed.$$
unset OPENBLAS_CORETYPE
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
/tmp/bench_llama_speed.$$ "$@"
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -f /tmp/bench_llama_speed.$$
