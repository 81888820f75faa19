#!/bin/bash
# bench_qlinear.sh [BUILD] [args...] - int8 QLinearConv / QGemm vs f32 Conv / Gemm
# on the cnn's layers (bench/bench_qlinear.c), batch 1 and 64, one thread by
# default (--threads N).  Prints the load next to the figures.
#        bench_qlinear.sh BUILD --model F32.onnx INT8.onnx [THREADS] [REPS]
# whole models instead: `shrink eval --limit 500 --json` batch-1 latency
# (median of 1024 runs each), f32 and int8 alternated REPS times (default 7),
# then the median of each and of the per-pair ratios.
set -eu
cd "$(dirname "$0")/.."
B=${1:-build}; shift || true
if [ "${1:-}" = --model ]; then
    F=$2; Q=$3; T=${4:-1}; R=${5:-7}
    unset OPENBLAS_CORETYPE
    echo "load: $(uptime)"
    for i in $(seq "$R"); do
        a=$("$B/shrink" eval "$F" --data fashion-mnist:test --limit 500 --threads "$T" --json -q |
            sed 's/.*"latency_ms_b1":\([0-9.]*\).*/\1/')
        b=$("$B/shrink" eval "$Q" --data fashion-mnist:test --limit 500 --threads "$T" --json -q |
            sed 's/.*"latency_ms_b1":\([0-9.]*\).*/\1/')
        echo "$a $b"
    done | awk -v t="$T" '{f[NR]=$1; q[NR]=$2; r[NR]=$1/$2; printf "run %d: f32 %.4f ms  int8 %.4f ms  %.2fx\n", NR, $1, $2, $1/$2}
        function med(a, n,   i, j, x) { for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
                                      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
        END { printf "threads %d, batch 1: median f32 %.4f ms, int8 %.4f ms, median ratio %.2fx\n", t, med(f, NR), med(q, NR), med(r, NR) }'
    echo "load: $(uptime)"
    exit 0
fi
BLAS=/usr/lib/x86_64-linux-gnu/openblas-openmp
cc -O2 -fopenmp -Iinclude bench/bench_qlinear.c "$B/libshrink.a" -lprotobuf-c -L$BLAS -Wl,-rpath,$BLAS \
   -lopenblas -lz -lm -o /tmp/bench_qlinear.$$
unset OPENBLAS_CORETYPE
echo "load: $(uptime)"
/tmp/bench_qlinear.$$ "$@"
echo "load: $(uptime)"
rm -f /tmp/bench_qlinear.$$
