#!/usr/bin/env bash
# Jobmanager failover time with the default lease (6 s lease, 1 s renewals, 4 s deadline): the
# leader is SIGKILLed (by its handle) and the time until the job completes a new checkpoint under
# the new leader is measured. Two setups:
# - SETUP=processes (default): two `weir-jobmanager --ha` on one local storage, a taskmanager and
#   the CLI reaching them through a loopback stand-in for a Kubernetes Service, a checkpointed
#   wcount job (tests/tests/ha.rs, one kill per run);
# - SETUP=chart: the helm chart's pods (2 jobmanagers, 2 taskmanagers) run as local processes
#   from the rendered specs, S3 (moto) and Kafka exactly-once output (tests/tests/chart.rs, two
#   kills per run). Needs what ./scripts/test.sh sets up.
# Prints each time and the median.
#
#   ./scripts/bench_failover.sh
#   SETUP=chart RUNS=3 ./scripts/bench_failover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}"
SETUP="${SETUP:-processes}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
export WEIR_MOTO_SERVER="${WEIR_MOTO_SERVER:-${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}/venv/bin/moto_server}"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)"
export WEIR_KAFKA_LIBS="${WEIR_KAFKA_LIBS:-${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}/kafka-$kafka_version/libs}"
case "$SETUP" in
  processes) test_args=(--test ha taskmanagers_follow_the_new_leader) pattern='the job checkpoints again [0-9.]*s' ;;
  chart) test_args=(--test chart) pattern='the job checkpoints again after [0-9.]*s' ;;
  *) echo "SETUP must be processes or chart, not $SETUP" >&2; exit 2 ;;
esac
cargo build --workspace --quiet
times=()
for run in $(seq 1 "$RUNS"); do
  lines=$(cargo test -p weir-tests --quiet "${test_args[@]}" -- --nocapture 2>&1 | grep -o "$pattern" || true)
  [ -n "$lines" ] || { echo "run $run: no measurement (the test failed?)" >&2; exit 1; }
  while read -r line; do
    seconds=${line##* }
    echo "run $run: ${seconds}"
    times+=("${seconds%s}")
  done <<< "$lines"
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median %.2f s (min %.2f s, max %.2f s) over %d kills\n", a[int((NR+1)/2)], a[1], a[NR], NR}'
