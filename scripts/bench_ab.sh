#!/usr/bin/env bash
# A/B throughput of two Weir builds at -p 1 on the local mini-cluster (the nexmark queries of
# scripts/bench.sh with the blackhole sink), runs interleaved A, B, A, B, ... so that the
# machine's drift hits both alike. Prints per query the best and the median events/s of each
# build and the change of B against A.
#
#   scripts/bench_ab.sh DIR_A DIR_B            # each DIR holds weir and libweir_example_nexmark.so
#   ROUNDS=9 SCALE=2 scripts/bench_ab.sh A B   # 9 rounds (default 7); half the events (default 1)
#
# Events per run (SCALE=1): 200 M for q0-q2, 40 M for wcount and q7, 8 M for q5 (4x bench.sh's, so
# that one run takes seconds, not a fraction of one).
set -euo pipefail
A="${1:?usage: bench_ab.sh DIR_A DIR_B}"
B="${2:?usage: bench_ab.sh DIR_A DIR_B}"
ROUNDS="${ROUNDS:-7}"
SCALE="${SCALE:-1}"
QUERIES="${QUERIES:-q0 q1 q2 wcount q5 q7}"
for dir in "$A" "$B"; do
  for file in weir libweir_example_nexmark.so; do
    [ -e "$dir/$file" ] || { echo "bench_ab: $dir/$file is missing" >&2; exit 2; }
  done
done

events_for() {
  case "$1" in
    q0|q1|q2) echo $((200000000 / SCALE)) ;;
    wcount|q7) echo $((40000000 / SCALE)) ;;
    q5) echo $((8000000 / SCALE)) ;;
  esac
}

# Wall seconds of one run of `query` with the build in `dir`.
run() {
  local dir="$1" query="$2" events="$3" start end
  start="$(date +%s.%N)"
  if ! "$dir/weir" local run "$dir/libweir_example_nexmark.so" -p 1 -- --query "$query" --events "$events" \
    --sink blackhole > /dev/null; then
    echo "bench_ab: $query failed with the build in $dir" >&2
    return 1
  fi
  end="$(date +%s.%N)"
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f\n", e - s }'
}

# "best median" of the events/s (millions) for the wall times on stdin.
stats() {
  sort -n | awk -v n="$1" '{ t[NR] = $1 } END {
    best = n / t[1] / 1e6; median = n / t[int((NR + 1) / 2)] / 1e6; printf "%.2f %.2f\n", best, median }'
}

echo "A: $A"
echo "B: $B"
echo "$ROUNDS interleaved rounds per query, -p 1, blackhole sink; events/s in millions."
echo
echo "| query | events | A best | A median | B best | B median | B vs A (best) | B vs A (median) |"
echo "|---|---|---|---|---|---|---|---|"
for query in $QUERIES; do
  events="$(events_for "$query")"
  times_a=(); times_b=()
  for _ in $(seq "$ROUNDS"); do
    # A failed run (a plugin built against other weir-api sources, say) ends the comparison.
    times_a+=("$(run "$A" "$query" "$events")") || exit 1
    times_b+=("$(run "$B" "$query" "$events")") || exit 1
  done
  read -r best_a median_a < <(printf '%s\n' "${times_a[@]}" | stats "$events")
  read -r best_b median_b < <(printf '%s\n' "${times_b[@]}" | stats "$events")
  awk -v q="$query" -v n="$events" -v ba="$best_a" -v ma="$median_a" -v bb="$best_b" -v mb="$median_b" \
    'BEGIN { printf "| %s | %d | %.2f M | %.2f M | %.2f M | %.2f M | %+.1f %% | %+.1f %% |\n",
             q, n, ba, ma, bb, mb, (bb / ba - 1) * 100, (mb / ma - 1) * 100 }'
done
