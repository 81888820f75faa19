#!/bin/bash
# bench_wconv.sh [BUILD] - weight-only quantized convolutions of the
# Fashion-MNIST cnn (src/ops/conv_quant.c): f32 vs 8-bit (q8_0) vs 4-bit
# (q4_0) weights (`shrink quantize M --bits 8|4`), in one run:
#   - whole-model latency with `shrink bench --json` at batch 1 and 64, 1 and
#     2 threads: the median over REPS interleaved rounds (f32, w8, w4, f32,
#     ...) of each run's median latency;
#   - accuracy on the Fashion-MNIST test set (shrink eval --json);
#   - memory: conv weight bytes f32 vs packed, the bytes the conv nodes
#     prepare into their state (the packed bytes; a layer whose rows are more
#     than half zero padding, K <= 16, is unpacked to f32: M*K*4), and the
#     peak RSS of a `shrink bench` process (/usr/bin/time).
# MODEL (default bench/out/cnn4.onnx), REPS (5), SECONDS_PER_RUN (1).
set -u
B=${1:-build}
cd "$(dirname "$0")/.."
SH=$PWD/$B/shrink
M=${MODEL:-bench/out/cnn4.onnx}
REPS=${REPS:-5}
SEC=${SECONDS_PER_RUN:-1}
[ -x "$SH" ] || { echo "bench_wconv: build $SH first (make BUILD=$B)"; exit 1; }
[ -f "$M" ] || { echo "bench_wconv: no model $M (MODEL=path to the trained cnn, bench/trained_cnn.sh)"; exit 1; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
acc_of() { sed -nE 's/.*"accuracy": ?([0-9.]+).*/\1/p'; }
ms_of() { sed -nE 's/.*"median_ms": ?([0-9.]+).*/\1/p'; }
run() { env -u OPENBLAS_CORETYPE "$@"; }

echo "# model $M; REPS=$REPS x ${SEC}s runs; $(date -u +%FT%TZ);$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "# load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
cp "$M" "$T/f32.onnx"
for b in 8 4; do
  "$SH" quantize "$M" -o "$T/w$b.onnx" --bits "$b" >"$T/q$b.txt" 2>&1 || { cat "$T/q$b.txt"; exit 1; }
done
sed 's/^/# /' "$T/q4.txt"

# memory: conv weights f32, packed (file), prepared (node state)
for b in 8 4; do
  awk -v b="$b" '$1 ~ /conv/ && $2 ~ /^\[/ {
      split(substr($2, 2, length($2) - 2), s, ","); m = s[1]; k = s[2]; kp = int((k + 31) / 32) * 32;
      f += $4; q += $5; p += (2 * k <= kp) ? m * k * 4 : $5 }
    END { printf "conv_weight_bytes f32 %d w%s_packed %d w%s_prepared %d (ratio f32/prepared %.2f)\n", f, b, q, b, p, f / p }' "$T/q$b.txt"
done
for v in f32 w8 w4; do
  /usr/bin/time -f "%M" -o "$T/rss" "$SH" bench "$T/$v.onnx" --threads 1 --seconds 0.3 >/dev/null 2>&1
  echo "peak_rss_kib $v $(tail -1 "$T/rss")"
done

# accuracy
for v in f32 w8 w4; do
  echo "acc_$v $(run "$SH" eval "$T/$v.onnx" --data fashion-mnist:test --threads 2 --json 2>/dev/null | acc_of)"
done

# latency, interleaved
for r in $(seq "$REPS"); do
  for th in 1 2; do
    for bs in 1 64; do
      for v in f32 w8 w4; do
        ms=$(run "$SH" bench "$T/$v.onnx" --threads "$th" --batch "$bs" --seconds "$SEC" --json 2>/dev/null | ms_of)
        echo "$ms" >>"$T/lat_${v}_${th}_${bs}"
      done
    done
  done
done
echo "# load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-8s %-6s %10s %10s %10s %9s %9s\n" threads batch f32_ms w8_ms w4_ms f32/w8 f32/w4
for th in 1 2; do
  for bs in 1 64; do
    a=$(median <"$T/lat_f32_${th}_${bs}"); b=$(median <"$T/lat_w8_${th}_${bs}"); c=$(median <"$T/lat_w4_${th}_${bs}")
    printf "%-8s %-6s %10s %10s %10s %9s %9s\n" "$th" "$bs" "$a" "$b" "$c" "$(ratio "$a" "$b")" "$(ratio "$a" "$c")"
  done
done
