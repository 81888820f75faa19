#!/bin/bash
# example_run.sh - examples/run_model.c builds against the installed library
# (make install + pkg-config --static) and computes a node-test Conv right.
set -u
cd "$(dirname "$0")/../.."
B=$(basename "$(dirname "${SHRINK:-$PWD/build/shrink}")")
M=/usr/share/libonnx-testdata/data/node/test_conv_with_strides_padding
[ -f "$M/model.onnx" ] || { echo "skip: libonnx-testdata not installed"; exit 77; }
command -v pkg-config >/dev/null || { echo "skip: pkg-config not installed"; exit 77; }
# make install depends on `all`: never let it rebuild $B here (it would not
# know the flags, e.g. the sanitizer ones of build-asan)
make --no-print-directory -q BUILD="$B" all 2>/dev/null || { echo "skip: $B is not up to date with the sources"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
make --no-print-directory -s install BUILD="$B" PREFIX="$T/prefix" >"$T/install.log" 2>&1 \
  || { echo "FAIL: make install"; tail -20 "$T/install.log"; exit 1; }
for f in lib/libshrink.a lib/libshrink.so include/shrink.h lib/pkgconfig/shrink.pc bin/shrink; do
  [ -e "$T/prefix/$f" ] || { echo "FAIL: make install did not install $f"; exit 1; }
done
SAN=""
case "$B" in *asan*) SAN="-fsanitize=address,undefined";; esac
flags=$(PKG_CONFIG_PATH="$T/prefix/lib/pkgconfig" pkg-config --cflags --libs --static shrink) \
  || { echo "FAIL: pkg-config shrink"; exit 1; }
cc -std=c11 -O1 $SAN examples/run_model.c -o "$T/run_model" $flags 2>"$T/cc.log" \
  || { echo "FAIL: cc examples/run_model.c \$(pkg-config ...)"; cat "$T/cc.log"; exit 1; }
# the same program linked statically against libshrink.a
cc -std=c11 -O1 $SAN examples/run_model.c -o "$T/run_model_static" \
  $(PKG_CONFIG_PATH="$T/prefix/lib/pkgconfig" pkg-config --cflags shrink) "$T/prefix/lib/libshrink.a" \
  $(PKG_CONFIG_PATH="$T/prefix/lib/pkgconfig" pkg-config --libs-only-other --libs-only-l --static shrink | sed 's/-lshrink//') \
  2>"$T/cc2.log" || { echo "FAIL: static link"; cat "$T/cc2.log"; exit 1; }
export LD_LIBRARY_PATH="$T/prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# with the test's inputs: x = 0..34 in [1,1,7,5], W = ones(3x3), stride 2, pad 1
"$T/run_model" "$M/model.onnx" "$M/test_data_set_0/input_0.pb" "$M/test_data_set_0/input_1.pb" >"$T/out" 2>&1 \
  || { echo "FAIL: run_model exited $?"; cat "$T/out"; exit 1; }
cat "$T/out"
expect='output y [1,1,4,3]
  [7] 198
  [10] 177
  [8] 141
  [11] 124
  [6] 123'
[ "$(cat "$T/out")" = "$expect" ] || { echo "FAIL: expected:"; echo "$expect"; exit 1; }
"$T/run_model_static" "$M/model.onnx" "$M/test_data_set_0/input_0.pb" "$M/test_data_set_0/input_1.pb" >"$T/out_s" 2>&1 \
  || { echo "FAIL: run_model (static) exited $?"; cat "$T/out_s"; exit 1; }
[ "$(cat "$T/out_s")" = "$expect" ] || { echo "FAIL: static build printed:"; cat "$T/out_s"; exit 1; }
# random inputs of the declared shapes
"$T/run_model" "$M/model.onnx" >"$T/out2" 2>&1 || { echo "FAIL: run_model (random input)"; cat "$T/out2"; exit 1; }
grep -q '^output y \[1,1,4,3\]' "$T/out2" || { echo "FAIL: random-input run"; cat "$T/out2"; exit 1; }
echo "ok"
