#!/usr/bin/env bash
# Jobmanager failover time: two `weir-jobmanager --ha` on one storage (default lease: 6 s lease,
# 1 s renewals, 4 s deadline), a taskmanager and the CLI reaching them through a loopback
# stand-in for a Kubernetes Service (forwards to the ready jobmanager), a checkpointed wcount job;
# the leader is SIGKILLed (by its handle) and the time until the job completes a new checkpoint
# under the new leader is measured. Runs the process test `tests/tests/ha.rs` RUNS times (default
# 5) and prints each time and the median.
#
#   ./scripts/bench_failover.sh
#   RUNS=10 ./scripts/bench_failover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}"
cargo build --workspace --quiet
times=()
for run in $(seq 1 "$RUNS"); do
  line=$(cargo test -p weir-tests --quiet --test ha taskmanagers_follow_the_new_leader -- --nocapture 2>&1 |
    grep -o 'the job checkpoints again [0-9.]*s' || true)
  [ -n "$line" ] || { echo "run $run: no measurement (the test failed?)" >&2; exit 1; }
  seconds=${line##* }
  echo "run $run: ${seconds}"
  times+=("${seconds%s}")
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median %.2f s (min %.2f s, max %.2f s) over %d runs\n", a[int((NR+1)/2)], a[1], a[NR], NR}'
