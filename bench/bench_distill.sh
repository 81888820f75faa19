#!/bin/bash
# bench_distill.sh - issue 4 target: a student with at most a quarter of the
# teacher's parameters, trained with distillation, beats the same student
# trained without it (same data, epochs, seed) by >= 0.5 pp, mean of 3 seeds.
#
#   bench/bench_distill.sh [BUILD [TEACHER.onnx]]
#
# LM=1: instead, the language-model target: a 2-layer student (llama-2l,
# stories260K's dims) distilled from stories260K on NS (200) teacher stories
# (sampled at temperature 1, saved as text) vs the same student trained on
# the same text without the teacher (alpha 0: plain cross-entropy), same
# steps (LM_EPOCHS, 5); perplexity on the held-out tinystories_sample.txt.
#
# QAT=1: instead, issue 3's QAT target on the teacher: per-channel weights
# at QAT_BITS ("4 2") bits, accuracy after round-to-nearest PTQ (max-abs and
# least-squares scales) and after QAT_EPOCHS (1) epoch(s) of QAT on DATA
# with the f32 model as teacher.
#
# Environment (defaults): SHRINK (BUILD/shrink), STUDENT (cnn-small),
# DATA (fashion-mnist:train:6000), TEST (fashion-mnist:test), EPOCHS (3),
# T (4), ALPHA (0.9), LR (0.002), SEEDS ("1 2 3"), THREADS (1), OUT (/tmp/bench_distill).
# OMP_WAIT_POLICY defaults to passive (single-threaded runs on a busy machine).
# Both runs use adamw, cosine schedule, batch 64; the student without the
# teacher is `shrink train`, with it `shrink distill` (teacher logits of the
# training set computed once per run).  Prints the accuracy per seed, the
# means and the difference.
set -euo pipefail
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
B=${1:-build}
SHRINK=${SHRINK:-$B/shrink}
TEACHER=${2:-${TEACHER:-$(bash bench/trained_cnn.sh "$B")}}
STUDENT=${STUDENT:-cnn-small}
DATA=${DATA:-fashion-mnist:train:6000}
TEST=${TEST:-fashion-mnist:test}
EPOCHS=${EPOCHS:-3}
T=${T:-4}
ALPHA=${ALPHA:-0.9}
LR=${LR:-0.002}
SEEDS=${SEEDS:-"1 2 3"}
THREADS=${THREADS:-1}
OUT=${OUT:-/tmp/bench_distill}
mkdir -p "$OUT"
if [ "${QAT:-0}" = 1 ]; then
    echo "load: $(uptime | sed 's/.*load average: //')"
    for b in ${QAT_BITS:-4 2}; do
        for init in max-abs mse; do
            flag=(); [ "$init" = mse ] && flag=(--mse-init)
            "$SHRINK" quantize "$TEACHER" -o "$OUT/qat_${b}_$init.onnx" --qat "${QAT_EPOCHS:-1}" --bits "$b" "${flag[@]}" \
                --data "$DATA" --val "$TEST" --threads "$THREADS" --teacher --json >"$OUT/qat_${b}_$init.json"
            j=$(cat "$OUT/qat_${b}_$init.json")
            f=$(echo "$j" | sed -n 's/.*"accuracy_f32": \([0-9.]*\).*/\1/p')
            p=$(echo "$j" | sed -n 's/.*"accuracy_ptq": \([0-9.]*\).*/\1/p')
            q=$(echo "$j" | sed -n 's/.*"accuracy_qat": \([0-9.]*\).*/\1/p')
            printf '%s-bit per-channel, %s scales: f32 %.2f %%, PTQ %.2f %%, QAT %.2f %% (%s epoch on %s, teacher)\n' \
                "$b" "$init" "$(echo "$f*100" | bc -l)" "$(echo "$p*100" | bc -l)" "$(echo "$q*100" | bc -l)" \
                "${QAT_EPOCHS:-1}" "$DATA"
        done
    done
    echo "load: $(uptime | sed 's/.*load average: //')"
    exit 0
fi
if [ "${LM:-0}" = 1 ]; then
    M=${SHARED:-../shared}/models/stories260K
    [ -f "$M/stories260K.bin" ] || M=/work/shared/models/stories260K
    TXT=$(dirname "$M")/../data/text/tinystories_sample.txt
    NS=${NS:-200}; LM_EPOCHS=${LM_EPOCHS:-5}
    echo "load: $(uptime | sed 's/.*load average: //')"
    # 1. the teacher writes NS stories (saved as text; this run's student is discarded)
    "$SHRINK" distill --teacher "$M/stories260K.bin" --student llama-2l --tokenizer "$M/tok512.bin" --samples "$NS" \
        --save-samples "$OUT/samples.txt" --seq-len 128 --batch 8 --max-steps 1 --threads "$THREADS" -q -o "$OUT/gen.bin" >/dev/null
    lm=(--data "text:$OUT/samples.txt" --tokenizer "$M/tok512.bin" --seq-len 128 --batch 8 --epochs "$LM_EPOCHS"
        --lr 0.003 --schedule cosine --threads "$THREADS" -q)
    ppl() { "$SHRINK" eval "$1" --data "text:$TXT,tok=$M/tok512.bin" --no-speed --json | sed -n 's/.*"ppl":\([0-9.]*\).*/\1/p'; }
    for s in $SEEDS; do
        "$SHRINK" distill --teacher "$M/stories260K.bin" --student llama-2l "${lm[@]}" --seed "$s" --alpha 0 -o "$OUT/lm_base_$s.bin" >/dev/null
        "$SHRINK" distill --teacher "$M/stories260K.bin" --student llama-2l "${lm[@]}" --seed "$s" --alpha "$ALPHA" \
            --temperature "${LM_T:-1}" -o "$OUT/lm_kd_$s.bin" >/dev/null
        echo "seed $s: perplexity on tinystories_sample.txt: without teacher $(ppl "$OUT/lm_base_$s.bin"), distilled $(ppl "$OUT/lm_kd_$s.bin") (teacher $(ppl "$M/stories260K.bin"))"
    done
    echo "samples: $(grep -c '<|endoftext|>' "$OUT/samples.txt") stories, $(wc -c < "$OUT/samples.txt") bytes"
    echo "load: $(uptime | sed 's/.*load average: //')"
    exit 0
fi
[ -f "$TEACHER" ] || { echo "teacher $TEACHER not found (train it: shrink train cnn --data fashion-mnist:train --epochs 4 -o cnn.onnx)" >&2; exit 1; }
acc() { "$SHRINK" eval "$1" --data "$TEST" --threads "$THREADS" --json | sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p'; }
common=(--data "$DATA" --epochs "$EPOCHS" --lr "$LR" --schedule cosine --batch 64 --threads "$THREADS" -q)
echo "teacher $TEACHER: $(acc "$TEACHER") on $TEST; student $STUDENT; data $DATA; $EPOCHS epochs; T $T alpha $ALPHA lr $LR"
echo "load: $(uptime | sed 's/.*load average: //')"
sb=0; sk=0; n=0
for s in $SEEDS; do
    "$SHRINK" train "$STUDENT" "${common[@]}" --seed "$s" -o "$OUT/base_$s.onnx" >/dev/null
    "$SHRINK" distill --teacher "$TEACHER" --student "$STUDENT" "${common[@]}" --seed "$s" \
        --temperature "$T" --alpha "$ALPHA" -o "$OUT/kd_$s.onnx" >/dev/null
    b=$(acc "$OUT/base_$s.onnx"); k=$(acc "$OUT/kd_$s.onnx")
    printf 'seed %s: without teacher %.2f %%, distilled %.2f %%, difference %+.2f pp\n' "$s" \
        "$(echo "$b*100" | bc -l)" "$(echo "$k*100" | bc -l)" "$(echo "($k-$b)*100" | bc -l)"
    sb=$(echo "$sb+$b" | bc -l); sk=$(echo "$sk+$k" | bc -l); n=$((n+1))
done
mb=$(echo "$sb*100/$n" | bc -l); mk=$(echo "$sk*100/$n" | bc -l)
printf 'mean of %d seeds: without teacher %.2f %%, distilled %.2f %%, difference %+.2f pp (target >= +0.5)\n' \
    "$n" "$mb" "$mk" "$(echo "$mk-$mb" | bc -l)"
echo "load: $(uptime | sed 's/.*load average: //')"
