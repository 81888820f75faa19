# ort_env.bash - sourced by the ONNX Runtime CLI tests (qdq_ort.sh,
# qdq_weight_ort.sh; not run by itself: tests/run.sh runs *.sh).  From the
# repository root: sets SH (the shrink binary), LIB (its libshrink.a) and T
# (a temporary directory removed on exit), exits 77 (skip) when shrink, node
# or onnxruntime-node (bench/node_modules) is missing, and defines
# ort_build_helper, which compiles $T/helper.c (it may include
# ort_compare.h) into $T/helper against LIB, with the sanitizers when LIB
# has them; a helper that does not build is a skip.
SH=${SHRINK:-$PWD/build/shrink}
[ -x "$SH" ] || { echo "skip: $SH not built"; exit 77; }
ORT=$PWD/bench/node_modules/onnxruntime-node
command -v node >/dev/null && [ -d "$ORT" ] || { echo "skip: node or onnxruntime-node missing"; exit 77; }
LIB=$(dirname "$SH")/libshrink.a
[ -f "$LIB" ] || { echo "skip: $LIB missing"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT

ort_build_helper() {
  local san="" blas=/usr/lib/x86_64-linux-gnu/openblas-openmp
  nm "$LIB" 2>/dev/null | grep -q __asan_ && san="-fsanitize=address,undefined"
  cc -std=c11 -D_GNU_SOURCE -Iinclude -Itests/cli $san -o "$T/helper" "$T/helper.c" "$LIB" -fopenmp -lprotobuf-c \
     -L$blas -Wl,-rpath,$blas -lopenblas -lz -lm -lpthread 2>"$T/cc.err" \
    || { cat "$T/cc.err"; echo "skip: cannot build the helper"; exit 77; }
}
