#!/usr/bin/env bash
# Nexmark benchmark of Weir: local mode at -p 1 and -p 2, and a cluster of one jobmanager and two
# taskmanagers (2 slots each) at -p 2, all with the blackhole sink. Prints a Markdown table:
# events/s (wall clock), events/s per busy core (events / CPU seconds of the processes doing the
# work), and peak RSS.
#
#   ./scripts/bench.sh            # full run: 100 M events for q0-q2, 10 M for wcount/q7, 2 M for q5
#   SCALE=10 ./scripts/bench.sh   # ten times fewer events (quick check)
#   REPEAT=5 ./scripts/bench.sh   # best of 5 runs per configuration (default 3)
#
# Everything runs on 127.0.0.1 with ports chosen by the OS; all processes are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${SCALE:-1}"
REPEAT="${REPEAT:-3}"
source scripts/bench_env.sh
PLUGIN="$BIN/libweir_example_nexmark.so"

events_for() {
  case "$1" in
    q0|q1|q2) echo $((100000000 / SCALE)) ;;
    wcount|q7) echo $((10000000 / SCALE)) ;;
    q5) echo $((2000000 / SCALE)) ;;
  esac
}

# CPU seconds (user + system) a process has used so far.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

peak_rss_mib() {
  awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"
}

rss_mib() {
  awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"
}

echo "Local runs: best of $REPEAT; cluster runs: one each, wall time including the CLI's upload and 200 ms status polling."
echo
echo "| query | mode | events | wall s | events/s | events/s per busy core | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|"

for query in q0 q1 q2 wcount q5 q7; do
  events="$(events_for "$query")"
  for p in 1 2; do
    # Best of $REPEAT runs: this machine's throughput varies by tens of percent from run to run.
    best=""
    for _ in $(seq "$REPEAT"); do
      /usr/bin/time -f "%e %U %S %M" -o "$WORK/time" \
        "$BIN/weir" local run "$PLUGIN" -p "$p" -- --query "$query" --events "$events" --sink blackhole > "$WORK/out"
      read -r wall user sys rss_kb < "$WORK/time"
      if [ -z "$best" ] || awk -v a="$wall" -v b="$best" 'BEGIN { exit !(a < b) }'; then
        best="$wall"; best_line="$wall $user $sys $rss_kb"
      fi
    done
    read -r wall user sys rss_kb <<< "$best_line"
    awk -v q="$query" -v p="$p" -v n="$events" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss_kb" \
      'BEGIN { printf "| %s | local -p %s | %d | %.2f | %.2f M | %.2f M | %.0f |\n", q, p, n, w, n / w / 1e6, n / (u + s) / 1e6, r / 1024 }'
  done
done

# A cluster: one jobmanager, two taskmanagers with two slots each.
"$BIN/weir-jobmanager" --rest-addr 127.0.0.1:0 --rpc-addr 127.0.0.1:0 --storage "file://$WORK/storage" \
  > "$WORK/jm.out" 2> "$WORK/jm.err" &
PIDS+=($!)
for _ in $(seq 100); do grep -q rest= "$WORK/jm.out" 2>/dev/null && break; sleep 0.1; done
REST="$(sed -n 's/.*rest=\([^ ]*\).*/\1/p' "$WORK/jm.out")"
RPC="$(sed -n 's/.*rpc=\([^ ]*\).*/\1/p' "$WORK/jm.out")"
TMS=()
for tm in tm-1 tm-2; do
  WEIR_PLUGIN_DIR="$WORK/$tm-plugins" "$BIN/weir-taskmanager" --jobmanager-rpc "$RPC" --slots 2 --id "$tm" \
    > "$WORK/$tm.out" 2> "$WORK/$tm.err" &
  PIDS+=($!)
  TMS+=($!)
done
export WEIR_JOBMANAGER="$REST"
for _ in $(seq 100); do
  [ "$("$BIN/weir" taskmanagers --json 2>/dev/null | grep -o '"id"' | wc -l)" -ge 2 ] && break
  sleep 0.1
done
sleep 1
idle="$(rss_mib "${TMS[0]}") MiB and $(rss_mib "${TMS[1]}") MiB"
for query in q0 q1 q2 wcount q5 q7; do
  events="$(events_for "$query")"
  before=0
  for pid in "${TMS[@]}"; do before="$(awk -v a="$before" -v b="$(cpu_seconds "$pid")" 'BEGIN { print a + b }')"; done
  start="$(date +%s.%N)"
  "$BIN/weir" run "$PLUGIN" -p 2 -- --query "$query" --events "$events" --sink blackhole > "$WORK/out"
  end="$(date +%s.%N)"
  after=0
  for pid in "${TMS[@]}"; do after="$(awk -v a="$after" -v b="$(cpu_seconds "$pid")" 'BEGIN { print a + b }')"; done
  peak="$(peak_rss_mib "${TMS[0]}")/$(peak_rss_mib "${TMS[1]}")"
  awk -v q="$query" -v n="$events" -v s="$start" -v e="$end" -v c="$(awk -v a="$before" -v b="$after" 'BEGIN { print b - a }')" -v r="$peak" \
    'BEGIN { w = e - s; printf "| %s | cluster 2 TMs -p 2 | %d | %.2f | %.2f M | %.2f M | %s |\n", q, n, w, n / w / 1e6, n / c / 1e6, r }'
done
echo
echo "Idle taskmanager RSS after registration: $idle."
echo "Machine: $(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem/ { print $2 }') GiB."
