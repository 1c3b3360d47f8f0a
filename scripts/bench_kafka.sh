#!/usr/bin/env bash
# Kafka benchmark of Weir: a real Apache Kafka broker on loopback (1 GiB heap, as Kafka's own start
# script), librdkafka's produce and consume rates measured alone, then Kafka -> q0 -> Kafka and
# Kafka -> wcount -> Kafka on the local mini-cluster at -p 1 and -p 2 with exactly-once and
# at-least-once delivery (checkpoints every second), and the end-to-end latency at half the
# measured maximum rate. Prints Markdown tables; every output topic is checked against the count
# of lines the query must give.
#
#   ./scripts/bench_kafka.sh            # 4 M bids (2 partitions)
#   SCALE=4 ./scripts/bench_kafka.sh    # four times fewer (quick check)
#   INTERVAL=500ms ./scripts/bench_kafka.sh
#
# "events/s per Weir core" divides the bids by the CPU seconds of the `weir` process (which runs
# the whole job); the broker's CPU seconds over the same run are shown beside it: on a 2-vCPU
# machine the broker and the job share the cores, so wall-clock rates are the machine's, and the
# per-core figures are what scales. Everything runs on 127.0.0.1 with ports chosen by the OS; the
# broker and every job are stopped by their handles at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${SCALE:-1}"
INTERVAL="${INTERVAL:-1s}"
EVENTS=$((4000000 / SCALE))
PARTITIONS=2
source scripts/bench_env.sh
PLUGIN="$BIN/libweir_example_nexmark.so"
TOOL="$BIN/kafka_bench"

cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}
# The value of field $1 in the key=value line $2.
field() {
  sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<< "$2"
}

# The broker: runs until its standard input (a fifo this script holds open) closes.
mkfifo "$WORK/broker.in"
"$TOOL" broker < "$WORK/broker.in" > "$WORK/broker.out" 2> "$WORK/broker.err" &
PIDS+=($!)
exec 3> "$WORK/broker.in"
for _ in $(seq 600); do grep -q bootstrap= "$WORK/broker.out" 2>/dev/null && break; sleep 0.1; done
if ! grep -q bootstrap= "$WORK/broker.out"; then
  echo "the broker did not start:" >&2
  cat "$WORK/broker.err" >&2
  exit 1
fi
BROKER_LINE="$(cat "$WORK/broker.out")"
BOOTSTRAP="$(field bootstrap "$BROKER_LINE")"
JVM="$(field pid "$BROKER_LINE")"

echo "Kafka $(grep -o 'Kafka [0-9.]*' "$WORK/broker.err" | head -1 | cut -d' ' -f2) broker on $BOOTSTRAP; $EVENTS bids (\`seq,auction,bidder,price\`, about 30 bytes) in $PARTITIONS partitions; checkpoints every $INTERVAL."
echo
echo "### librdkafka alone"
echo
echo "| what | records | wall s | records/s | MB/s | client CPU s | broker CPU s |"
echo "|---|---|---|---|---|---|---|"
run_alone() { # label, command...
  local label="$1"; shift
  local before after line
  before="$(cpu_seconds "$JVM")"
  line="$("$@")"
  after="$(cpu_seconds "$JVM")"
  awk -v l="$label" -v r="$(field records "$line")" -v w="$(field wall_s "$line")" -v c="$(field cpu_s "$line")" \
    -v b="$(awk -v a="$before" -v b="$after" 'BEGIN { print b - a }')" \
    -v mb="$(field mb_per_s "$line")" \
    'BEGIN { printf "| %s | %d | %.2f | %.2f M | %.1f | %.2f | %.2f |\n", l, r, w, r / w / 1e6, mb, c, b }'
}
run_alone "produce (idempotent, acks all)" "$TOOL" produce -b "$BOOTSTRAP" -t bids --events "$EVENTS" --partitions "$PARTITIONS" --create
run_alone "consume (read_committed)" "$TOOL" consume -b "$BOOTSTRAP" -t bids
run_alone "consume (read_committed, fetch.queue.backoff.ms=10)" "$TOOL" consume -b "$BOOTSTRAP" -t bids --set fetch.queue.backoff.ms=10

echo
echo "### Kafka -> query -> Kafka (local mini-cluster, bounded source)"
echo
echo "| query | delivery | -p | bids | output records | wall s | bids/s | bids/s per Weir core | Weir CPU s | broker CPU s | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
declare -A BEST_RATE
for query in q0 wcount; do
  for delivery in exactly-once at-least-once; do
    for p in 1 2; do
      out="out-$query-$delivery-p$p"
      "$TOOL" create-topic -b "$BOOTSTRAP" -t "$out" --partitions "$PARTITIONS"
      before="$(cpu_seconds "$JVM")"
      /usr/bin/time -f "%e %U %S %M" -o "$WORK/time" \
        "$BIN/weir" local run "$PLUGIN" -p "$p" --checkpoint-interval "$INTERVAL" -- \
        --query "$query" --source kafka --bootstrap-servers "$BOOTSTRAP" --source-topic bids --bounded \
        --sink kafka --sink-topic "$out" --delivery "$delivery" --transactional-id-prefix "$out" \
        > "$WORK/out" 2> "$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
      after="$(cpu_seconds "$JVM")"
      read -r wall user sys rss_kb < "$WORK/time"
      counted="$("$TOOL" count -b "$BOOTSTRAP" -t "$out" --expect "$query" --events "$EVENTS")"
      records="$(field records "$counted")"
      expected="$(field expected "$counted")"
      if [ "$records" != "$expected" ]; then
        echo "$out holds $records records, expected $expected" >&2
        exit 1
      fi
      rate="$(awk -v n="$EVENTS" -v w="$wall" 'BEGIN { printf "%.0f", n / w }')"
      if [ "$delivery" = exactly-once ] && [ "$p" = 1 ]; then BEST_RATE[$query]="$rate"; fi
      awk -v q="$query" -v d="$delivery" -v p="$p" -v n="$EVENTS" -v o="$records" -v w="$wall" -v u="$user" -v s="$sys" \
        -v b="$(awk -v a="$before" -v b="$after" 'BEGIN { print b - a }')" -v r="$rss_kb" \
        'BEGIN { printf "| %s | %s | %s | %d | %d | %.2f | %.2f M | %.2f M | %.2f | %.2f | %.0f |\n", q, d, p, n, o, w, n / w / 1e6, n / (u + s) / 1e6, u + s, b, r / 1024 }'
    done
  done
done

echo
echo "### End-to-end latency at half the maximum rate (-p 1)"
echo
echo "Bids are produced at a fixed rate (half the exactly-once -p 1 rate above) into a new topic that an"
echo "unbounded job reads; latency is from a bid's sending to the moment its result is visible to a"
echo "\`read_committed\` consumer (for wcount: a window's last bid to its last output line, which"
echo "includes the 500 ms out-of-orderness bound of the watermarks). \"to sink send\" stops at the"
echo "output record's timestamp (the sink's time of sending): the rest is the wait for the commit."
echo
echo "| query | delivery | rate bids/s | measured | p50 ms | p99 ms | max ms | to sink send p50 / p99 ms |"
echo "|---|---|---|---|---|---|---|---|"
for query in q0 wcount; do
  for delivery in exactly-once at-least-once; do
    rate="$(awk -v r="${BEST_RATE[$query]}" 'BEGIN { printf "%.0f", r / 2 }')"
    in="lat-in-$query-$delivery"
    out="lat-out-$query-$delivery"
    "$TOOL" create-topic -b "$BOOTSTRAP" -t "$in" --partitions "$PARTITIONS"
    "$TOOL" create-topic -b "$BOOTSTRAP" -t "$out" --partitions "$PARTITIONS"
    "$BIN/weir" local run "$PLUGIN" -p 1 --checkpoint-interval "$INTERVAL" -- \
      --query "$query" --source kafka --bootstrap-servers "$BOOTSTRAP" --source-topic "$in" \
      --starting-offsets earliest --sink kafka --sink-topic "$out" --delivery "$delivery" \
      --transactional-id-prefix "$out" > "$WORK/lat.out" 2> "$WORK/lat.err" &
    job=$!
    PIDS+=("$job")
    # wcount needs 10 s windows: 30 s of measured input covers at least two whole windows.
    seconds=10; [ "$query" = wcount ] && seconds=30
    line="$("$TOOL" latency -b "$BOOTSTRAP" --input-topic "$in" --output-topic "$out" --query "$query" \
      --rate "$rate" --partitions "$PARTITIONS" --seconds "$seconds")" || { cat "$WORK/lat.err" >&2; exit 1; }
    kill -INT "$job"
    wait "$job" 2>/dev/null || true
    echo "| $query | $delivery | $(field achieved_rate "$line") | $(field measured "$line") (missing $(field missing "$line"), duplicates $(field duplicates "$line")) | $(field p50_ms "$line") | $(field p99_ms "$line") | $(field max_ms "$line") | $(field sink_p50_ms "$line") / $(field sink_p99_ms "$line") |"
  done
done
echo
echo "Machine: $(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem/ { print $2 }') GiB."
exec 3>&-
