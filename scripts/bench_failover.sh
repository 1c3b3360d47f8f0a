#!/usr/bin/env bash
# Jobmanager failover time: two `weir-jobmanager --ha` on one storage (default lease: 6 s lease,
# 1 s renewals, 4 s deadline), one taskmanager, a checkpointed wcount job; the leader is
# SIGKILLed (by its handle) and the time until the standby answers /readyz with 200 (it leads and
# has resumed the recorded jobs) is measured. Runs the process test `tests/tests/ha.rs` RUNS
# times (default 5) and prints each time and the median.
#
#   ./scripts/bench_failover.sh
#   RUNS=10 ./scripts/bench_failover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}"
cargo build --workspace --quiet
times=()
for run in $(seq 1 "$RUNS"); do
  line=$(cargo test -p weir-tests --quiet --test ha a_standby_jobmanager_takes_over -- --nocapture 2>&1 |
    grep -o 'the standby leads [0-9.]*s' || true)
  [ -n "$line" ] || { echo "run $run: no measurement (the test failed?)" >&2; exit 1; }
  seconds=${line##* }
  echo "run $run: ${seconds}"
  times+=("${seconds%s}")
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median %.2f s (min %.2f s, max %.2f s) over %d runs\n", a[int((NR+1)/2)], a[1], a[NR], NR}'
