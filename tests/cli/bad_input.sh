#!/bin/bash
# bad_input.sh - every bad input to the CLI gives a non-zero exit code below
# 128 (no crash), exactly one "error:" line on stderr that says what and where,
# no sanitizer report, and no half-written output file.
#   truncated / empty / random-byte ONNX models, truncated llama2.c checkpoints
#   and tokenizers, wrong data set paths and specs, mismatched input shapes,
#   unsupported ops, non-numeric / unknown / valueless options, writes into
#   missing or unwritable directories, and that outputs replace files by
#   rename (a hard link to the old file keeps the old bytes).
# Exit 0 pass, 1 fail, 77 skip.
set -u
cd "$(dirname "$0")/../.."
SH=${SHRINK:-$PWD/build/shrink}
[ -x "$SH" ] || { echo "skip: $SH not built"; exit 77; }
T=$(mktemp -d); trap 'chmod -R u+w "$T" 2>/dev/null; rm -rf "$T"' EXIT
SHARED=${SHRINK_SHARED:-../shared}
NODE=/usr/share/libonnx-testdata/data/node
CONV=$NODE/test_conv_with_strides_padding
RELU=$NODE/test_relu
UNSUP=tests/data/cli/unsupported_ops.onnx
fails=0; checks=0

# expect_fail DESC PATTERN CMD...: CMD must fail cleanly; PATTERN (grep -E) must
# match the one error line (it names the file, option, op or shape involved).
expect_fail() {
  local desc=$1 pat=$2; shift 2
  checks=$((checks+1))
  timeout 300 "$@" >"$T/out" 2>"$T/err"; local rc=$?
  local nerr; nerr=$(grep -c 'error:' "$T/err")
  local why=""
  if [ "$rc" = 0 ]; then why="exit 0"
  elif [ "$rc" = 124 ]; then why="timed out"
  elif [ "$rc" -ge 128 ]; then why="crashed (exit $rc, signal $((rc-128)))"
  elif grep -qE 'Sanitizer|runtime error:|Segmentation|Aborted|core dumped' "$T/out" "$T/err"; then why="sanitizer/crash report"
  elif [ "$nerr" != 1 ]; then why="$nerr 'error:' lines on stderr, expected 1"
  elif ! grep 'error:' "$T/err" | grep -qE -- "$pat"; then why="error line does not match /$pat/"
  fi
  if [ -n "$why" ]; then
    fails=$((fails+1))
    echo "FAIL: $desc: $why"
    echo "  command: $*"
    sed 's/^/  stderr: /' "$T/err" | head -8
    sed 's/^/  stdout: /' "$T/out" | head -4
  else
    echo "ok:   $desc  [exit $rc] $(grep 'error:' "$T/err" | head -1 | cut -c1-150)"
  fi
}

# no_new_files DIR DESC: DIR holds nothing but what was there (no temp files)
leftovers() { find "$1" -name '*.tmp*' | head -3; }

# ---- models to damage ------------------------------------------------------
good=""
if [ -f "$CONV/model.onnx" ]; then good="$CONV/model.onnx"; fi
# a trained model written by shrink itself (if training works in this build)
if "$SH" train mlp --data fashion-mnist:train,n=256 --epochs 1 --batch 64 -o "$T/trained.onnx" >/dev/null 2>&1 \
   && [ -s "$T/trained.onnx" ]; then
  good="$good $T/trained.onnx"
else
  echo "note: shrink train did not produce a model; using node-test models only"
fi
[ -n "$good" ] || echo "note: no valid ONNX model available (libonnx-testdata missing): skipping truncation checks"

# ---- truncated and empty ONNX ----------------------------------------------
k=0
for m in $good; do
  size=$(stat -c %s "$m")
  for cut in 1 10 $((size/3)) $((size/2)) $((size*3/4)) $((size-1)); do
    [ "$cut" -ge 1 ] && [ "$cut" -lt "$size" ] || continue
    k=$((k+1)); f="$T/trunc$k.onnx"
    head -c "$cut" "$m" >"$f"
    expect_fail "info on $(basename "$m") cut to $cut of $size bytes" "trunc$k\.onnx" "$SH" info "$f"
    expect_fail "convert of $(basename "$m") cut to $cut bytes" "trunc$k\.onnx" "$SH" convert "$f" "$T/conv_out$k.onnx"
    [ -e "$T/conv_out$k.onnx" ] && { echo "FAIL: convert of a truncated model left $T/conv_out$k.onnx"; fails=$((fails+1)); }
  done
done
: >"$T/empty.onnx"
expect_fail "info on an empty .onnx" "empty\.onnx" "$SH" info "$T/empty.onnx"
expect_fail "eval on an empty .onnx" "empty\.onnx" "$SH" eval "$T/empty.onnx" --data fashion-mnist:test --no-speed
if [ -f "$CONV/model.onnx" ]; then
  head -c $(( $(stat -c %s "$CONV/model.onnx") / 2 )) "$CONV/model.onnx" >"$T/half.onnx"
  expect_fail "run on a truncated model" "half\.onnx" "$SH" run "$T/half.onnx" --inputs "$CONV/test_data_set_0" -o "$T/run_out"
fi

# ---- random bytes as .onnx --------------------------------------------------
for seed in 1 2 3; do
  perl -e "srand($seed); print map { chr(int(rand(256))) } 1..4096" >"$T/random$seed.onnx"
  expect_fail "info on random bytes (seed $seed)" "random$seed\.onnx" "$SH" info "$T/random$seed.onnx"
  expect_fail "run on random bytes (seed $seed)" "random$seed\.onnx" "$SH" run "$T/random$seed.onnx" --input "$T/random$seed.onnx" -o "$T/rnd_out"
done
printf 'not a model\n' >"$T/text.bin"
expect_fail "info on a text file named .bin" "text\.bin" "$SH" info "$T/text.bin"
expect_fail "info on a missing file" "no_such_model\.onnx" "$SH" info "$T/no_such_model.onnx"
expect_fail "info on a directory" "$T" "$SH" info "$T"

# ---- truncated llama2.c checkpoint and tokenizer ----------------------------
ST=$SHARED/models/stories260K
if [ -f "$ST/stories260K.bin" ] && [ -f "$ST/tok512.bin" ]; then
  size=$(stat -c %s "$ST/stories260K.bin")
  for cut in 12 28 1000 $((size/2)) $((size-4)); do
    head -c "$cut" "$ST/stories260K.bin" >"$T/st$cut.bin"
    expect_fail "info on stories260K.bin cut to $cut bytes" "st$cut\.bin" "$SH" info "$T/st$cut.bin"
    expect_fail "generate with stories260K.bin cut to $cut bytes" "st$cut\.bin" \
      "$SH" generate "$T/st$cut.bin" --tokenizer "$ST/tok512.bin" --steps 8 --temp 0
  done
  tsize=$(stat -c %s "$ST/tok512.bin")
  head -c $((tsize/2)) "$ST/tok512.bin" >"$T/tokhalf.bin"
  expect_fail "generate with a truncated tokenizer" "tokhalf\.bin" \
    "$SH" generate "$ST/stories260K.bin" --tokenizer "$T/tokhalf.bin" --steps 8 --temp 0
  expect_fail "generate with a missing tokenizer" "no_tok\.bin" \
    "$SH" generate "$ST/stories260K.bin" --tokenizer "$T/no_tok.bin" --steps 8
  expect_fail "convert truncated checkpoint" "st1000\.bin" "$SH" convert "$T/st1000.bin" "$T/st_out.onnx"
  [ -e "$T/st_out.onnx" ] && { echo "FAIL: convert of a truncated checkpoint left a file"; fails=$((fails+1)); }
else
  echo "note: $SHARED/models/stories260K absent: skipping checkpoint checks"
fi

# ---- wrong data sets --------------------------------------------------------
M=""
[ -f "$T/trained.onnx" ] && M="$T/trained.onnx"
[ -z "$M" ] && [ -f "$RELU/model.onnx" ] && M="$RELU/model.onnx"
if [ -n "$M" ]; then
  expect_fail "eval with missing IDX files" "/nonexistent/imgs\.gz" \
    "$SH" eval "$M" --data idx:/nonexistent/imgs.gz,/nonexistent/labels.gz
  expect_fail "eval with a missing text file" "/nonexistent/corpus\.txt" "$SH" eval "$M" --data text:/nonexistent/corpus.txt
  expect_fail "eval with an unknown split" "bogus" "$SH" eval "$M" --data fashion-mnist:bogus
  expect_fail "eval with an unknown data set kind" "nonsense" "$SH" eval "$M" --data nonsense:foo
  expect_fail "eval with a random-bytes IDX file" "random1\.onnx" "$SH" eval "$M" --data "idx:$T/random1.onnx,$T/random2.onnx"
fi
expect_fail "train with a missing data set" "/nonexistent/imgs\.gz" \
  "$SH" train cnn --data idx:/nonexistent/imgs.gz,/nonexistent/labels.gz --epochs 1 -o "$T/never.onnx"
[ -e "$T/never.onnx" ] && { echo "FAIL: failed train left $T/never.onnx"; fails=$((fails+1)); }
if [ -f "$T/trained.onnx" ] && [ -f "$ST/stories260K.bin" ]; then
  expect_fail "eval of an image model on text" "trained\.onnx|tokens|input" \
    "$SH" eval "$T/trained.onnx" --data "text:$SHARED/data/text/tinystories_sample.txt" --no-speed
fi

# ---- mismatched input shapes ------------------------------------------------
if [ -f "$CONV/model.onnx" ] && [ -f "$RELU/model.onnx" ]; then
  expect_fail "run with inputs of the wrong shape" "'x'.*\[1,1,7,5\]|\[1,1,7,5\].*'x'" \
    "$SH" run "$CONV/model.onnx" --input "$RELU/test_data_set_0/input_0.pb" --input "$CONV/test_data_set_0/input_1.pb" -o "$T/shape_out"
  [ -e "$T/shape_out/output_0.pb" ] && { echo "FAIL: failed run wrote an output"; fails=$((fails+1)); }
  expect_fail "run with too few inputs" "2 inputs|input" \
    "$SH" run "$CONV/model.onnx" --input "$CONV/test_data_set_0/input_0.pb" -o "$T/shape_out"
  expect_fail "run with a truncated input .pb" "in_trunc\.pb" \
    bash -c "head -c 20 '$CONV/test_data_set_0/input_0.pb' > '$T/in_trunc.pb'; exec '$SH' run '$CONV/model.onnx' --input '$T/in_trunc.pb' --input '$CONV/test_data_set_0/input_1.pb' -o '$T/shape_out'"
fi
if [ -f "$T/trained.onnx" ]; then
  # 16 images of 8x8 in IDX format (gzipped), labels 0..9
  perl -e 'print pack("N4", 0x803, 16, 8, 8), map { chr($_ % 256) } 1..1024' | gzip >"$T/digits-images.gz"
  perl -e 'print pack("N2", 0x801, 16), map { chr($_ % 10) } 1..16' | gzip >"$T/digits-labels.gz"
  expect_fail "eval of a 28x28 model on 8x8 images" "input|shape" \
    "$SH" eval "$T/trained.onnx" --data "idx:$T/digits-images.gz,$T/digits-labels.gz" --no-speed
fi

# ---- unsupported ops --------------------------------------------------------
expect_fail "info on a model with unsupported ops" "Unique.*unique_1|unique_1.*Unique" "$SH" info "$UNSUP"
expect_fail "run on a model with unsupported ops" "FancyOp" "$SH" run "$UNSUP" --input "$RELU/test_data_set_0/input_0.pb" -o "$T/unsup_out"
expect_fail "eval on a model with unsupported ops" "Unique" "$SH" eval "$UNSUP" --data fashion-mnist:test
expect_fail "convert of a model with unsupported ops" "Unique|FancyOp" "$SH" convert "$UNSUP" "$T/unsup.bin"

# ---- options ----------------------------------------------------------------
expect_fail "train --epochs abc" "--epochs.*abc" "$SH" train cnn --data fashion-mnist:train --epochs abc -o "$T/x.onnx"
expect_fail "train --lr 1e" "--lr" "$SH" train cnn --data fashion-mnist:train --lr 1e -o "$T/x.onnx"
expect_fail "eval --threads two" "--threads.*two" "$SH" eval "$UNSUP" --data fashion-mnist:test --threads two
expect_fail "eval --batch 0" "--batch" "$SH" eval "$UNSUP" --data fashion-mnist:test --batch 0
expect_fail "eval --batch 12x" "--batch.*12x" "$SH" eval "$UNSUP" --data fashion-mnist:test --batch 12x
expect_fail "generate --steps ten" "--steps.*ten" "$SH" generate m.bin --tokenizer t.bin --steps ten
expect_fail "generate --temp hot" "--temp.*hot" "$SH" generate m.bin --tokenizer t.bin --temp hot
expect_fail "run --tol x" "--tol" "$SH" run "$UNSUP" --expect "$T" --tol x
for cmd in info eval train generate convert run; do
  expect_fail "$cmd --bogus-option" "bogus-option" "$SH" $cmd --bogus-option
done
# an unknown command: usage exit code, the name in the message, no crash
checks=$((checks+1))
"$SH" frobnicate >"$T/out" 2>"$T/err"; rc=$?
if [ "$rc" != 2 ] || ! grep -q frobnicate "$T/err"; then
  echo "FAIL: unknown command: exit $rc, stderr: $(cat "$T/err")"; fails=$((fails+1))
else echo "ok:   unknown command  [exit $rc] $(head -1 "$T/err")"; fi
expect_fail "eval --data without a value" "--data" "$SH" eval "$UNSUP" --data
expect_fail "eval without --data" "--data" "$SH" eval "$UNSUP"
expect_fail "info without a model" "MODEL|model" "$SH" info
expect_fail "train --epochs without a value" "--epochs" "$SH" train cnn --data fashion-mnist:train --epochs
expect_fail "generate --tokenizer without a value" "--tokenizer" "$SH" generate m.bin --tokenizer
expect_fail "run --input without a value" "--input" "$SH" run "$UNSUP" --input

# ---- failed writes leave nothing behind --------------------------------------
SRC=""
[ -f "$T/trained.onnx" ] && SRC="$T/trained.onnx"
[ -z "$SRC" ] && [ -f "$CONV/model.onnx" ] && SRC="$CONV/model.onnx"
if [ -n "$SRC" ]; then
  expect_fail "convert into a missing directory" "/nonexistent-dir/out\.onnx" "$SH" convert "$SRC" "$T/nonexistent-dir/out.onnx"
  [ -e "$T/nonexistent-dir" ] && { echo "FAIL: convert created $T/nonexistent-dir"; fails=$((fails+1)); }
  : >"$T/plainfile"
  expect_fail "convert below a regular file" "plainfile/out\.onnx" "$SH" convert "$SRC" "$T/plainfile/out.onnx"
  expect_fail "train -o into a missing directory" "/nonexistent-dir/t\.onnx" \
    "$SH" train mlp --data fashion-mnist:train,n=128 --epochs 1 -o "$T/nonexistent-dir/t.onnx"
  if [ "$(id -u)" != 0 ]; then # root writes anywhere
    mkdir "$T/ro"; chmod 555 "$T/ro"
    expect_fail "convert into a read-only directory" "ro/out\.onnx" "$SH" convert "$SRC" "$T/ro/out.onnx"
    [ -z "$(ls -A "$T/ro")" ] || { echo "FAIL: files left in read-only dir: $(ls -A "$T/ro")"; fails=$((fails+1)); }
    chmod 755 "$T/ro"
  fi
  lo=$(leftovers "$T")
  [ -z "$lo" ] || { echo "FAIL: temporary files left behind: $lo"; fails=$((fails+1)); }
  # replacing an existing file goes through a new file + rename: a hard link to
  # the old file still holds the old bytes, the name gets a new inode
  mkdir -p "$T/atomic"
  echo "old contents" >"$T/atomic/out.onnx"
  ln "$T/atomic/out.onnx" "$T/atomic/link"
  ino=$(stat -c %i "$T/atomic/out.onnx")
  checks=$((checks+1))
  if "$SH" convert "$SRC" "$T/atomic/out.onnx" >/dev/null 2>"$T/err"; then
    if [ "$(cat "$T/atomic/link")" != "old contents" ] || [ "$(stat -c %i "$T/atomic/out.onnx")" = "$ino" ]; then
      echo "FAIL: convert rewrote the output in place instead of temp file + rename"; fails=$((fails+1))
    elif ! "$SH" info "$T/atomic/out.onnx" >/dev/null 2>&1; then
      echo "FAIL: converted model does not load"; fails=$((fails+1))
    elif [ "$(ls "$T/atomic" | wc -l)" != 2 ]; then
      echo "FAIL: extra files in output dir: $(ls "$T/atomic")"; fails=$((fails+1))
    else echo "ok:   convert replaces its output by rename (old inode kept by the hard link)"; fi
  else
    echo "FAIL: convert $SRC failed: $(cat "$T/err")"; fails=$((fails+1))
  fi
fi

echo "$checks checks, $fails failed"
[ "$fails" = 0 ]
