#!/bin/bash
# run.sh BUILD - runs the C unit tests and the CLI tests; prints one closing
# line "N passed, N failed, N skipped".
set -u
B=${1:-build}
cd "$(dirname "$0")/.."
export SHRINK="$PWD/$B/shrink"
total_p=0; total_f=0; total_s=0
out=$(mktemp)
"$B/run_tests" 2>&1 | tee "$out"
line=$(grep -E '^unit: [0-9]+ passed' "$out" | tail -1)
if [ -z "$line" ]; then echo "unit tests did not finish"; total_f=$((total_f+1)); else
  total_p=$(echo "$line" | sed -E 's/.* ([0-9]+) passed.*/\1/')
  total_f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  total_s=$(echo "$line" | sed -E 's/.* ([0-9]+) skipped.*/\1/')
fi
for t in tests/cli/*.sh; do
  [ -e "$t" ] || continue
  start=$(date +%s%N)
  bash "$t" > "$out" 2>&1; rc=$?
  ms=$(( ($(date +%s%N) - start) / 1000000 )); dt=$(printf "%d.%02d" $((ms/1000)) $(((ms%1000)/10)))
  name=$(basename "$t" .sh)
  if [ $rc = 0 ]; then printf "%-8s %-50s %7.2fs\n" ok "cli/$name" "$dt"; total_p=$((total_p+1))
  elif [ $rc = 77 ]; then printf "%-8s %-50s\n" skipped "cli/$name"; total_s=$((total_s+1)); sed 's/^/    /' "$out" | tail -3
  else printf "%-8s %-50s\n" FAILED "cli/$name"; total_f=$((total_f+1)); sed 's/^/    /' "$out" | tail -30; fi
done
rm -f "$out"
echo "$total_p passed, $total_f failed, $total_s skipped"
[ "$total_f" = 0 ]
