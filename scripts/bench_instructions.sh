#!/usr/bin/env bash
# Instructions per event of two Weir builds at -p 1 on the local mini-cluster (nexmark queries,
# blackhole sink), counted by valgrind's callgrind: unlike wall time, the count does not depend on
# what else the machine is doing, so a small difference between two builds shows even on a busy
# machine. The fixed cost of a run (startup, plugin load) is removed by also counting a run of
# 1000 events: per event = (Ir(N) - Ir(1000)) / (N - 1000).
#
#   scripts/bench_instructions.sh DIR_A DIR_B   # each DIR holds weir and libweir_example_nexmark.so
#   QUERIES="wcount q5" scripts/bench_instructions.sh A B
set -euo pipefail
A="${1:?usage: bench_instructions.sh DIR_A DIR_B}"
B="${2:?usage: bench_instructions.sh DIR_A DIR_B}"
QUERIES="${QUERIES:-q0 q1 q2 wcount q5 q7}"
command -v valgrind > /dev/null || { echo "bench_instructions: valgrind is missing (apt-get install valgrind)" >&2; exit 2; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

events_for() {
  case "$1" in
    q0|q1|q2) echo 20000000 ;;
    wcount|q7) echo 4000000 ;;
    q5) echo 1000000 ;;
  esac
}

# Instructions (all threads) of one run.
instructions() {
  local dir="$1" query="$2" events="$3"
  valgrind --tool=callgrind --callgrind-out-file="$WORK/out.%p" --dump-instr=no --collect-jumps=no \
    "$dir/weir" local run "$dir/libweir_example_nexmark.so" -p 1 -- --query "$query" --events "$events" \
    --sink blackhole > /dev/null 2> "$WORK/log"
  local total=0 file
  for file in "$WORK"/out.*; do
    total=$((total + $(awk '/^summary:/ { print $2 }' "$file")))
  done
  rm -f "$WORK"/out.*
  echo "$total"
}

per_event() {
  local dir="$1" query="$2" events="$3" big small
  big="$(instructions "$dir" "$query" "$events")"
  small="$(instructions "$dir" "$query" 1000)"
  awk -v b="$big" -v s="$small" -v n="$events" 'BEGIN { printf "%.1f\n", (b - s) / (n - 1000) }'
}

echo "A: $A"
echo "B: $B"
echo
echo "| query | events | A instructions/event | B instructions/event | B vs A |"
echo "|---|---|---|---|---|"
for query in $QUERIES; do
  events="$(events_for "$query")"
  a="$(per_event "$A" "$query" "$events")"
  b="$(per_event "$B" "$query" "$events")"
  awk -v q="$query" -v n="$events" -v a="$a" -v b="$b" \
    'BEGIN { printf "| %s | %d | %.1f | %.1f | %+.1f %% |\n", q, n, a, b, (b / a - 1) * 100 }'
done
