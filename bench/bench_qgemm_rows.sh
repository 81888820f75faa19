#!/bin/bash
# bench_qgemm_rows.sh [BUILD] [RUNS] - per-channel / per-tensor rows (issue 3
# items 1 and 8): one run of
#  1. GEMV 4096x4096 at batch 1, weights out of cache:
#     q4_0 (group 32), q4_0_g128, q4_0_ch, q4_1_ch, q8_0_ch, q3_0_ch, q2_1_ch:
#     bytes, ms/GEMV and GB/s vs the streaming read of the same bytes
#     (bench_qgemm.c gemvrows; medians of RUNS, one thread; BENCH_NM=12
#     matrices cycled so that even the 2-bit ones exceed the 32 MiB L3);
#  2. stories260K (../shared/models/stories260K) weight-only round to nearest,
#     --granularity group (32) / channel / tensor at 8 and 4 bits: file bytes
#     and perplexity on ../shared/data/text/tinystories_sample.txt vs f32.
# Not part of make test.  Run from anywhere: bash bench/bench_qgemm_rows.sh build
set -eu
B=${1:-build}
RUNS=${2:-15}
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE
make -s BUILD="$B" -j2 all >/dev/null
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
BENCH_NM=${BENCH_NM:-12} bash bench/bench_qgemm.sh "$B" "$RUNS" gemvrows | grep -v '^# load'
SH=${SHRINK_SHARED:-../shared}
M=$SH/models/stories260K
T=$SH/data/text/tinystories_sample.txt
if [ -f "$M/stories260K.bin" ] && [ -f "$T" ]; then
  W=$(mktemp -d /tmp/bench_qgemm_rows.XXXXXX)
  trap 'rm -rf "$W"' EXIT
  ppl() { OMP_NUM_THREADS=2 "$B/shrink" eval "$1" --data "text:$T" --tokenizer "$M/tok512.bin" \
          --no-speed --json -q | sed -n 's/.*"ppl": *\([0-9.]*\).*/\1/p'; }
  echo
  echo "| stories260K | granularity | bits | file bytes | perplexity |"
  echo "|---|---|---|---|---|"
  echo "| f32 | - | 32 | $(stat -c %s "$M/stories260K.bin") | $(ppl "$M/stories260K.bin") |"
  for bits in 8 4; do
    for gr in group:32 channel tensor; do
      "$B/shrink" quantize "$M/stories260K.bin" -o "$W/q.onnx" --mode weight --bits $bits --granularity $gr >/dev/null
      echo "| stories260K | $gr | $bits | $(stat -c %s "$W/q.onnx") | $(ppl "$W/q.onnx") |"
    done
  done
fi
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
