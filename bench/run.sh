#!/bin/bash
# run.sh BUILD - `make bench`: builds the benchmark drivers, installs ONNX
# Runtime for node (onnxruntime-node 1.30.0 into bench/node_modules, offline
# friendly: ONNXRUNTIME_NODE_INSTALL=skip, the native binding ships in the npm
# tarball), then runs every bench/bench_*.sh.  Each prints lines
#   name shrink peer ratio
# (medians of several runs, the peer measured in the same run).
set -u
B=${1:-build}
cd "$(dirname "$0")/.."
[ -f "$B/libshrink.a" ] || { echo "bench: $B/libshrink.a not built (make bench builds it)" >&2; exit 1; }
LIBS="-lprotobuf-c -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas -lz -lm -lpthread"
cc -std=c11 -O2 -fopenmp -Iinclude bench/bench_model.c "$B/libshrink.a" $LIBS -o "$B/bench_model" || exit 1
if [ -f bench/bench_conv.c ]; then
  cc -std=c11 -O2 -fopenmp -Iinclude bench/bench_conv.c "$B/libshrink.a" $LIBS -o "$B/bench_conv" || exit 1
fi
ORT=bench/node_modules/onnxruntime-node
if [ ! -d "$ORT" ]; then
  echo "bench: installing onnxruntime-node@1.30.0 into bench/node_modules" >&2
  ONNXRUNTIME_NODE_INSTALL=skip npm install --prefix bench --no-save --no-package-lock --no-audit --no-fund \
    onnxruntime-node@1.30.0 >&2 || echo "bench: npm install onnxruntime-node failed" >&2
fi
if node -e "require('./$ORT')" 2>/dev/null; then export SHRINK_ORT=1
else echo "bench: onnxruntime-node does not load; peer columns will be '-'" >&2; export SHRINK_ORT=0; fi
status=0
for s in bench/bench_*.sh; do
  [ -f "$s" ] || continue
  echo "== $s"
  bash "$s" "$B" || { echo "bench: $s failed" >&2; status=1; }
done
exit $status
