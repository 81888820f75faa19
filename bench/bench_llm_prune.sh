#!/bin/bash
# bench_llm_prune.sh - the stories260K one-shot pruning table (issue 4 item 9):
# perplexity on ../shared/data/text/tinystories_sample.txt of the dense model
# and of 50 % unstructured / 2:4 pruning by magnitude (L1 per layer), Wanda
# and SparseGPT, like the Wanda paper's table; plus structured pruning
# (heads, FFN neurons, layers) at 25 %.
#
# Calibration text differs from the evaluation text: stories sampled from
# stories260K itself (shrink generate, temperature 1.0, top-p 0.9, seeds
# 1..N, 256 positions each), the data-free recipe of LLM-QAT; 128 rows of 64
# tokens (--calib-batches 4 --batch 32).  Every linear layer of the 5 blocks
# is pruned; the classifier is tied to the token embedding and left alone
# (--exclude output), as the papers leave the embeddings and head dense.
#
# Usage (from the repo root): bash bench/bench_llm_prune.sh [BUILD]
#   env: SHARED (default ../shared), THREADS (default 1), CALIB_STORIES (64)
set -e
B=${1:-build}
S=${SHRINK:-$B/shrink}
SHARED=${SHARED:-../shared}
[ -d "$SHARED" ] || SHARED=/work/shared
M=$SHARED/models/stories260K
T=${THREADS:-1}
N=${CALIB_STORIES:-64}
unset OPENBLAS_CORETYPE
export OMP_NUM_THREADS=$T OMP_WAIT_POLICY=passive
[ -x "$S" ] || { echo "no shrink binary at $S (make first)"; exit 77; }
[ -f "$M/stories260K.bin" ] || { echo "no $M/stories260K.bin"; exit 77; }
W=$(mktemp -d /tmp/bench_llm_prune.XXXXXX)
trap 'rm -rf "$W"' EXIT
for s in $(seq 1 "$N"); do
    "$S" generate "$M/stories260K.bin" --tokenizer "$M/tok512.bin" --steps 256 --temp 1.0 --topp 0.9 --seed "$s" -q --threads "$T"
    printf '\n<|endoftext|>\n'
done > "$W/calib.txt"
CAL="text:$W/calib.txt,tok=$M/tok512.bin"
EV="text:$SHARED/data/text/tinystories_sample.txt,tok=$M/tok512.bin"
ppl() { "$S" eval "$1" --data "$EV" --threads "$T" | awk '/^perplexity/ {print $2}'; }
echo "# stories260K, ppl on tinystories_sample.txt (1804 tokens); calibration: $N sampled stories, 128 x 64 tokens"
echo "# $(date -u +%FT%TZ)  load: $(uptime | sed 's/.*load average: //')"
printf '%-12s %10s %10s %10s\n' method dense "50%" "2:4"
D=$(ppl "$M/stories260K.bin")
for me in magnitude wanda sparsegpt; do
    arg=$me; [ $me = magnitude ] && arg=l1
    t0=$(date +%s.%N)
    "$S" prune "$M/stories260K.bin" -o "$W/u.bin" --method $arg --ratio 0.5 --calib "$CAL" --exclude output --threads "$T" >/dev/null
    "$S" prune "$M/stories260K.bin" -o "$W/nm.bin" --method $arg --nm 2:4 --calib "$CAL" --exclude output --threads "$T" >/dev/null
    t1=$(date +%s.%N)
    printf '%-12s %10s %10s %10s   (%.1f s for both)\n' $me "$D" "$(ppl "$W/u.bin")" "$(ppl "$W/nm.bin")" "$(echo "$t1 - $t0" | bc)"
done
echo
echo "# structured removal: heads 0.5 = one query head of each KV pair (L1 of wq rows + wo columns, and"
echo "# Wanda-style activation scores with --calib), ffn 0.25 = 43 of 172 neurons per layer (L1),"
echo "# layers 0.2 = 1 of 5 layers (smallest L2 of wo + w2, or least KL on the calibration text)"
printf '%-22s %10s %10s\n' "structured" params ppl
for u in "heads 0.5" "heads 0.5 wanda" "ffn 0.25" "layers 0.2" "layers 0.2 kl"; do
    set -- $u
    c=""; m=""
    [ "$3" = wanda ] && c="--calib $CAL" && m="--method wanda"
    [ "$3" = kl ] && c="--calib $CAL" && m="--method l2"
    [ $1 = layers ] && [ -z "$3" ] && m="--method l2"
    p=$("$S" prune "$M/stories260K.bin" -o "$W/s.onnx" --structured $1 --ratio $2 $m $c --threads "$T" | awk '/^total/ {print $4}')
    printf '%-22s %10s %10s\n' "$u" "$p" "$(ppl "$W/s.onnx")"
done
