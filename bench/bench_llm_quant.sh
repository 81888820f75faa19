#!/bin/bash
# bench_llm_quant.sh - weight-only quantization tables (issue 3 item 10).
#
# 1. stories260K, like llama.cpp's perplexity table: every format with round
#    to nearest, GPTQ, AWQ: bits per weight of the linear layers, file bytes,
#    perplexity on ../shared/data/text/tinystories_sample.txt, mean KL of the
#    next-token distribution vs f32, pp tok/s (batched NLL pass) and tg tok/s
#    (1000 / batch-1 one-token latency), then greedy 3-bit stories (f32, RTN,
#    GPTQ).  It is the test quantize_stories260k_gptq in table mode
#    (SHRINK_QUANT_TABLE=1).  Calibration text is not the evaluation text: 16
#    stories of 256 positions that the f32 model samples itself (temperature
#    1, top-p 0.95, seeds 1000-1015; data-free, as LLM-QAT), 32 rows of 64
#    tokens.  The classifier is tied to the token embedding: it stays f32.
# 2. Fashion-MNIST cnn ($CNN, else bench/trained_cnn.sh): 4-bit q4_0 group-32
#    weight-only, round to nearest vs GPTQ (512 calibration images of the
#    training set), test accuracy; and with --bias-correction.
#
# Usage (from the repo root): bash bench/bench_llm_quant.sh
#   env: BUILD (default build), CNN (default: bench/trained_cnn.sh)
set -e
BUILD=${1:-${BUILD:-build}}
CNN=${CNN:-$(bash bench/trained_cnn.sh "$BUILD")}
unset OPENBLAS_CORETYPE
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
make -s BUILD="$BUILD" -j2 all "$BUILD/run_tests" >/dev/null
echo "load: $(uptime)"
SHRINK_QUANT_TABLE=1 "$BUILD/run_tests" quantize_stories260k_gptq
S=$BUILD/shrink
if [ -f "$CNN" ]; then
    W=$(mktemp -d /tmp/bench_llm_quant.XXXXXX)
    trap 'rm -rf "$W"' EXIT
    acc() { "$S" eval "$1" --data fashion-mnist:test --no-speed --threads 1 -q | awk '/^accuracy/ {print $2}'; }
    echo
    echo "| cnn (Fashion-MNIST test) | format | method | file bytes | accuracy |"
    echo "|---|---|---|---|---|"
    echo "| $CNN | f32 | - | $(stat -c %s "$CNN") | $(acc "$CNN") |"
    for m in rtn gptq rtn+bc gptq+bc; do
        a=""
        case $m in gptq*) a="--gptq --calib fashion-mnist:train --calib-samples 512" ;; esac
        case $m in rtn+bc) a="--calib fashion-mnist:train --calib-samples 512" ;; esac
        case $m in *+bc) a="$a --bias-correction" ;; esac
        "$S" quantize "$CNN" -o "$W/q.onnx" --mode weight --bits 4 $a --threads 1 >/dev/null
        echo "| cnn | q4_0 | $m | $(stat -c %s "$W/q.onnx") | $(acc "$W/q.onnx") |"
    done
fi
echo "load: $(uptime)"
