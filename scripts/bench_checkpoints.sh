#!/usr/bin/env bash
# Checkpoint benchmarks of Weir (issue 4). Prints four Markdown tables:
#
# 1. Throughput: Nexmark wcount and q5 in local mode at -p 1 with the blackhole sink, without
#    checkpoints (heap state) and with checkpoints on the heap and RocksDB backends at the
#    intervals in $CONFIGS (the first checkpoint is taken as soon as the job runs; "@ 1h" takes only
#    that one, which isolates a backend's own cost). Best of $REPEAT runs each ($QUICK_REPEAT for
#    runs under 5 s; the configurations take turns); "lost" = throughput lost against the baseline.
# 2. Checkpoint size and duration: the `keyed-state` test job (one ValueState<u64> count per key)
#    with 1 M and 10 M keys on a cluster of one jobmanager and one taskmanager with one slot,
#    heap and RocksDB, checkpoints every 10 s (4 retained). The job writes every key in its first
#    seconds, then a trickle of 100 records/s. Reported: the first checkpoint triggered after every
#    key was written (full) and the next one (a small change).
# 3. Savepoints: the same job with 1 M and 10 M keys at -p 2 (its sources at 2) on one jobmanager
#    and two taskmanagers with two slots: a savepoint's duration and size, and the time to restore
#    it at -p 2 and at -p 4.
# 4. Recovery: wcount -p 2 at 100,000 events/s on one jobmanager (heartbeat timeout 2 s, restart
#    delay 0 and 1000 ms) and two taskmanagers with two slots, checkpoints every second; a
#    taskmanager running tasks is killed with SIGKILL and a replacement started. Reported: the
#    jobmanager's `last_recovery_time_ms` (failure detected -> all tasks running), the wall time
#    from the kill to every subtask running again and to the sources counting records again
#    (polled every 50 ms), and the phases read from the jobmanager's log.
#
#   ./scripts/bench_checkpoints.sh                 # everything
#   SCALE=10 ./scripts/bench_checkpoints.sh        # ten times fewer events and keys (quick check)
#   REPEAT=5 ./scripts/bench_checkpoints.sh        # best of 5 runs / 5 kills per configuration (default 3)
#   QUICK_REPEAT=20 ./scripts/bench_checkpoints.sh  # best of 20 for throughput runs under 5 s (default 10)
#   PARTS="throughput state savepoints recovery" ./scripts/bench_checkpoints.sh   # the parts to run (default all)
#   CONFIGS="none heap@10s rocksdb@10s" ./scripts/bench_checkpoints.sh  # throughput: backend@interval
#   STATE_BACKENDS=rocksdb ./scripts/bench_checkpoints.sh  # checkpoint size and duration: the backends
#   WCOUNT_EVENTS=600000000 Q5_EVENTS=60000000 ./scripts/bench_checkpoints.sh  # throughput: events per run
#
# Everything runs on 127.0.0.1 with ports chosen by the OS; all processes are stopped at the end.
# Needs python3 (for reading JSON), which scripts/setup.sh provides.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${SCALE:-1}"
REPEAT="${REPEAT:-3}"
QUICK_REPEAT="${QUICK_REPEAT:-10}"
PARTS="${PARTS:-throughput state savepoints recovery}"
CONFIGS="${CONFIGS:-none heap@10s heap@100ms rocksdb@1h rocksdb@10s}"
STATE_BACKENDS="${STATE_BACKENDS:-heap rocksdb}"
source scripts/bench_env.sh
NEXMARK="$BIN/libweir_example_nexmark.so"
TEST_JOBS="$BIN/libweir_test_jobs.so"
WEIR="$BIN/weir"

# Reads the JSON documents the CLI prints (python3 only, no other tool needed).
cat > "$WORK/bench_json.py" <<'PY'
import json, re, sys, time, urllib.request
from datetime import datetime

def job(path):
    with open(path) as f:
        return json.load(f)

def field(path, name):
    value = job(path)
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    print("" if value is None else value)

def running(path):
    """Whether the job and all its subtasks are running."""
    j = job(path)
    subtasks = [s for v in j["vertices"] for s in v["subtasks"]]
    print("yes" if j["state"] == "RUNNING" and subtasks and all(s["state"].upper() == "RUNNING" for s in subtasks) else "no")

def taskmanager(path):
    """A taskmanager running subtasks of the job (the first by id)."""
    j = job(path)
    print(min(s["taskmanager"] for v in j["vertices"] for s in v["subtasks"] if s["taskmanager"]))

def savepoint_duration(path):
    """The duration (ms) of the newest completed savepoint in a checkpoint report's history."""
    entries = [h for h in job(path)["history"] if h["is_savepoint"] and h["status"] == "COMPLETED"]
    print(max(entries, key=lambda h: h["id"])["end_to_end_duration"] if entries else "")

def completed(path):
    print(job(path)["counts"]["completed"])

def pick(path, after_ms, log):
    """The first checkpoint triggered at or after `after_ms` that completed and the next three
    completed ones, as 'id duration_ms state_size incremental_size' lines, then the checkpoints
    completed before the first of them (from the jobmanager's log) as 'count longest_ms
    uploaded_bytes'; nothing while there are not four yet."""
    report = job(path)
    retained = {c["id"]: c for c in report["retained"]}
    done = sorted(h["id"] for h in report["history"]
                  if h["status"] == "COMPLETED" and h["trigger_timestamp"] >= int(after_ms))
    if len(done) < 4:
        return
    for cid in done[:4]:
        c = retained.get(cid)
        if c is None:
            sys.exit(f"checkpoint {cid} is no longer retained")
        print(c["id"], c["end_to_end_duration"], c["state_size"], c["checkpointed_size"])
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    count = longest = uploaded = 0
    for line in open(log, errors="replace"):
        line = ansi.sub("", line)
        if "checkpoint completed" not in line:
            continue
        f = dict(re.findall(r"(\w+)=(\S+)", line))
        if int(f["checkpoint_id"]) < done[0]:
            count += 1
            longest = max(longest, int(f["duration_ms"]))
            uploaded += int(f["incremental_size"])
    print(count, longest, uploaded)

def poll_recovery(rest, jid, killed_ns, attempt):
    """Polls GET /jobs/{id} (what `weir status --json` prints) every 50 ms after a kill at
    `killed_ns` (CLOCK_REALTIME ns) until a later attempt than `attempt` runs all its subtasks and
    its sources count records; prints the ms from the kill to: the job leaving RUNNING, every
    subtask running again, source_records growing again."""
    killed_ns, attempt = int(killed_ns), int(attempt)
    left = back = flowing = None
    baseline = None
    deadline = time.time() + 120
    while time.time() < deadline:
        with urllib.request.urlopen(f"{rest}/jobs/{jid}", timeout=5) as r:
            j = json.load(r)
        now = (time.time_ns() - killed_ns) / 1e6
        subtasks = [s for v in j["vertices"] for s in v["subtasks"]]
        if left is None and (j["state"] != "RUNNING" or j["attempt"] > attempt):
            left = now
        if back is None and j["attempt"] > attempt and j["state"] == "RUNNING" \
                and all(s["state"].upper() == "RUNNING" for s in subtasks):
            back, baseline = now, j["source_records"]
        if back is not None and j["source_records"] > baseline:
            flowing = now
            break
        time.sleep(0.05)
    print(*("-" if t is None else f"{t:.0f}" for t in (left, back, flowing)))

def phases(log, killed_ns):
    """ms from the kill to the jobmanager's log lines of the recovery: the first task failure
    reported, the killed taskmanager declared lost (no heartbeat), the restore from the latest
    checkpoint (the new attempt is being deployed), every task running again."""
    killed_ns = int(killed_ns)
    stamp = re.compile(r"^(\S+Z)\s")
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    marks = {"failed": "task failed", "lost": "taskmanager lost", "restoring": "restoring the job from checkpoint",
             "running": "running again after a failure"}
    found = {}
    for line in open(log, errors="replace"):
        line = ansi.sub("", line)
        m = stamp.match(line)
        if not m:
            continue
        t = datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp() * 1e9
        if t < killed_ns:
            continue
        for name, text in marks.items():
            if name not in found and text in line:
                found[name] = (t - killed_ns) / 1e6
    print(*(f"{found[k]:.0f}" if k in found else "-" for k in marks))

globals()[sys.argv[1]](*sys.argv[2:])
PY
json() { python3 "$WORK/bench_json.py" "$@"; }

peak_rss_mib() {
  awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Starts a jobmanager with the given extra flags; sets JM (its PID), REST and RPC.
start_jobmanager() {
  local name="$1"; shift
  "$BIN/weir-jobmanager" --rest-addr 127.0.0.1:0 --rpc-addr 127.0.0.1:0 --storage "file://$WORK/$name-storage" "$@" \
    > "$WORK/$name.out" 2> "$WORK/$name.err" &
  JM=$!
  PIDS+=("$JM")
  for _ in $(seq 100); do grep -q rest= "$WORK/$name.out" 2>/dev/null && break; sleep 0.1; done
  REST="$(sed -n 's/.*rest=\([^ ]*\).*/\1/p' "$WORK/$name.out")"
  RPC="$(sed -n 's/.*rpc=\([^ ]*\).*/\1/p' "$WORK/$name.out")"
  export WEIR_JOBMANAGER="$REST"
}

# Starts a taskmanager `id` with `slots` slots; sets TM (its PID). See wait_for_taskmanagers.
start_taskmanager() {
  local id="$1" slots="$2"
  WEIR_PLUGIN_DIR="$WORK/$id-plugins" WEIR_STATE_DIR="$WORK/$id-state" \
    "$BIN/weir-taskmanager" --jobmanager-rpc "$RPC" --slots "$slots" --id "$id" > "$WORK/$id.out" 2> "$WORK/$id.err" &
  TM=$!
  PIDS+=("$TM")
}

wait_for_taskmanagers() {
  for _ in $(seq 100); do
    [ "$("$WEIR" taskmanagers --json 2>/dev/null | grep -o '"id"' | wc -l)" -ge "$1" ] && return
    sleep 0.1
  done
  echo "bench: fewer than $1 taskmanagers registered" >&2
  exit 1
}

# Stops one of our processes and forgets it (the trap must not signal a PID the OS reused).
stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local kept=() pid
  for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
  PIDS=("${kept[@]}")
}

submit() {
  "$WEIR" run --detached "$@" | sed -n 's/^Job submitted: //p'
}

status_json() {
  "$WEIR" status "$1" --json > "$WORK/status.json"
}

cancel_and_wait() {
  "$WEIR" cancel "$1" > /dev/null
  for _ in $(seq 600); do
    status_json "$1"
    case "$(json field "$WORK/status.json" state)" in CANCELED|FAILED|FINISHED) return ;; esac
    sleep 0.1
  done
}

if [[ " $PARTS " == *" throughput "* ]]; then
  # The same q5 run took anywhere from 0.7 to 1.8 s on this machine, in phases: the configurations
  # run in turns (so that a slow phase hits all of them), runs under 5 s at least $QUICK_REPEAT times.
  rounds=$((REPEAT > QUICK_REPEAT ? REPEAT : QUICK_REPEAT))
  echo "### Throughput with checkpoints (local -p 1, blackhole sink, best of $REPEAT, of $QUICK_REPEAT for runs under 5 s)"
  echo
  echo "| query | events | checkpoints | runs | best wall s | events/s | lost vs none | lost vs the same backend @ 1h | checkpoints completed | peak RSS MiB |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for query in wcount q5; do
    case "$query" in wcount) events=$((${WCOUNT_EVENTS:-10000000} / SCALE)) ;; q5) events=$((${Q5_EVENTS:-2000000} / SCALE)) ;; esac
    declare -A best=() runs=()
    for round in $(seq "$rounds"); do
      for config in $CONFIGS; do
        if [ "$round" -gt "$REPEAT" ] && awk -v b="${best[$config]%% *}" 'BEGIN { exit !(b >= 5) }'; then continue; fi
        flags=()
        if [ "$config" != none ]; then
          flags=(--checkpoint-interval "${config#*@}" --state-backend "${config%@*}" --checkpoint-dir "file://$WORK/chk")
        fi
        rm -rf "$WORK/chk"
        WEIR_LOG="warn,weir_jobmanager::checkpoint=info" /usr/bin/time -f "%e %M" -o "$WORK/time" \
          "$WEIR" local run "$NEXMARK" -p 1 "${flags[@]}" -- --query "$query" --events "$events" --sink blackhole \
          > "$WORK/out" 2> "$WORK/err"
        read -r wall rss_kb < "$WORK/time"
        completed="$(grep -c "checkpoint completed" "$WORK/err" || true)"
        runs[$config]=$((${runs[$config]:-0} + 1))
        if [ -z "${best[$config]:-}" ] || awk -v a="$wall" -v b="${best[$config]%% *}" 'BEGIN { exit !(a < b) }'; then
          best[$config]="$wall $rss_kb $completed"
        fi
      done
    done
    for config in $CONFIGS; do
      read -r wall rss_kb completed <<< "${best[$config]}"
      backend="${config%@*}"
      label="none"
      [ "$config" != none ] && label="$backend @ ${config#*@}" || completed="–"
      # Throughput lost against a baseline: 1 - (events / wall) / (events / baseline wall).
      lost() {
        if [ -n "${best[$1]:-}" ] && [ "$1" != "$config" ]; then
          awk -v w="$wall" -v b="${best[$1]%% *}" 'BEGIN { printf "%.1f %%", (1 - b / w) * 100 }'
        else
          echo "–"
        fi
      }
      awk -v q="$query" -v n="$events" -v c="$label" -v w="$wall" -v o="$(lost none)" -v o1="$(lost "$backend@1h")" \
        -v d="$completed" -v r="$rss_kb" -v k="${runs[$config]}" \
        'BEGIN { printf "| %s | %d | %s | %d | %.2f | %.2f M | %s | %s | %s | %.0f |\n", q, n, c, k, w, n / w / 1e6, o, o1, d, r / 1024 }'
    done
  done
  echo
fi

if [[ " $PARTS " == *" state "* ]]; then
  echo "### Checkpoint duration and size (keyed-state job, 1 jobmanager + 1 taskmanager with 1 slot, every 10 s)"
  echo
  echo "| backend | keys | every key written after | checkpoints before: count, longest, uploaded | first checkpoint with every key: id, duration, state size, incremental size | next three checkpoints: id, duration, state size, incremental size | taskmanager peak RSS MiB |"
  echo "|---|---|---|---|---|---|---|"
  rate=5000000
  for keys in $((1000000 / SCALE)) $((10000000 / SCALE)); do
    events=$((keys + 1000))
    for backend in $STATE_BACKENDS; do
      # A fresh cluster per configuration, so that the peak RSS is this job's.
      start_jobmanager "jm-state"
      start_taskmanager "tm-state" 1
      wait_for_taskmanagers 1
      rm -rf "$WORK/chk-state"
      id="$(submit "$TEST_JOBS" -p 1 --checkpoint-interval 10s --checkpoints-retained 4 --state-backend "$backend" \
        --checkpoint-dir "file://$WORK/chk-state" -- --job keyed-state --keys "$keys" --events "$events" \
        --rate "$rate" --trickle 100)"
      # When the sources have produced the first pass over the keys (the counters come with the
      # taskmanager's heartbeats, so this is up to about 1.5 s late, never early).
      filled=""
      for _ in $(seq 1200); do
        status_json "$id"
        if [ "$(json field "$WORK/status.json" source_records)" -ge "$events" ]; then filled="$(now_ms)"; break; fi
        sleep 0.5
      done
      [ -n "$filled" ] || { echo "bench: job $id did not write its $keys keys in 10 minutes" >&2; exit 1; }
      start_time="$(json field "$WORK/status.json" start_time)"
      picked=""
      for _ in $(seq 600); do
        "$WEIR" checkpoints "$id" --json > "$WORK/checkpoints.json"
        picked="$(json pick "$WORK/checkpoints.json" "$filled" "$WORK/jm-state.err")"
        [ -n "$picked" ] && break
        sleep 1
      done
      [ -n "$picked" ] || { echo "bench: no four checkpoints of job $id completed after its keys were written" >&2; exit 1; }
      cp "$WORK/checkpoints.json" "$WORK/checkpoints-$backend-$keys.json"
      cancel_and_wait "$id"
      rss="$(peak_rss_mib "$TM")"
      stop "$TM"
      stop "$JM"
      awk -v b="$backend" -v k="$keys" -v f="$((filled - start_time))" -v r="$rss" -v p="${picked//$'\n'/ }" 'BEGIN {
        split(p, c, / /)
        next_three = ""
        for (i = 5; i <= 13; i += 4) {
          next_three = next_three sprintf("%s#%d: %d ms, %.1f MiB, %.3f MiB", i > 5 ? "; " : "", c[i], c[i + 1], c[i + 2] / 1048576, c[i + 3] / 1048576)
        }
        printf "| %s | %d | ≤ %.1f s | %d, %d ms, %.1f MiB | #%d: %d ms, %.1f MiB, %.1f MiB | %s | %s |\n",
          b, k, f / 1000, c[17], c[18], c[19] / 1048576, c[1], c[2], c[3] / 1048576, c[4] / 1048576, next_three, r
      }'
    done
  done
  echo
fi

if [[ " $PARTS " == *" savepoints "* ]]; then
  echo "### Savepoints (keyed-state job at -p 2, sources at 2, 1 jobmanager + 2 taskmanagers with 2 slots)"
  echo
  echo "Savepoint duration: trigger to completion, from the job's checkpoint history (the taskmanagers write every key canonically: RocksDB iterates its column families). Restore: \`weir run -s\` submitted until every subtask runs (polled every 50 ms), at the same and at double parallelism (key groups reassigned)."
  echo
  echo "| backend | keys | savepoint duration | savepoint size | restore at -p 2 | restore at -p 4 |"
  echo "|---|---|---|---|---|---|"
  rate=5000000
  for keys in $((1000000 / SCALE)) $((10000000 / SCALE)); do
    events=$((keys + 1000))
    for backend in $STATE_BACKENDS; do
      start_jobmanager "jm-sp"
      start_taskmanager "tm-sp-1" 2
      TM1="$TM"
      start_taskmanager "tm-sp-2" 2
      TM2="$TM"
      wait_for_taskmanagers 2
      job_args=(--job keyed-state --keys "$keys" --events "$events" --rate "$rate" --trickle 100 --source-parallelism 2)
      id="$(submit "$TEST_JOBS" -p 2 --checkpoint-interval 10s --state-backend "$backend" \
        --checkpoint-dir "file://$WORK/chk-sp" -- "${job_args[@]}")"
      filled=""
      for _ in $(seq 1200); do
        status_json "$id"
        if [ "$(json field "$WORK/status.json" source_records)" -ge "$events" ]; then filled=yes; break; fi
        sleep 0.5
      done
      [ -n "$filled" ] || { echo "bench: job $id did not write its $keys keys in 10 minutes" >&2; exit 1; }
      rm -rf "$WORK/sp"
      "$WEIR" savepoint "$id" "$WORK/sp" --json > "$WORK/sp.json"
      location="$(json field "$WORK/sp.json" operation.location)"
      [ -n "$location" ] || { echo "bench: the savepoint of job $id failed: $(cat "$WORK/sp.json")" >&2; exit 1; }
      "$WEIR" checkpoints "$id" --json > "$WORK/checkpoints.json"
      duration="$(json savepoint_duration "$WORK/checkpoints.json")"
      size="$(du -sb "${location#file://}" | cut -f1)"
      cancel_and_wait "$id"
      restores=()
      for p in 2 4; do
        start="$(now_ms)"
        restored="$(submit "$TEST_JOBS" -p "$p" -s "$location" --checkpoint-interval 10s --state-backend "$backend" \
          --checkpoint-dir "file://$WORK/chk-sp" -- "${job_args[@]}")"
        running=""
        for _ in $(seq 6000); do
          status_json "$restored"
          if [ "$(json running "$WORK/status.json")" = yes ]; then running="$(now_ms)"; break; fi
          sleep 0.05
        done
        [ -n "$running" ] || { echo "bench: job $restored did not run in 5 minutes" >&2; exit 1; }
        restores+=("$((running - start))")
        cancel_and_wait "$restored"
      done
      stop "$TM1"
      stop "$TM2"
      stop "$JM"
      awk -v b="$backend" -v k="$keys" -v d="$duration" -v s="$size" -v r2="${restores[0]}" -v r4="${restores[1]}" \
        'BEGIN { printf "| %s | %d | %.2f s | %.1f MiB | %.2f s | %.2f s |\n", b, k, d / 1000, s / 1048576, r2 / 1000, r4 / 1000 }'
    done
  done
  echo
fi

if [[ " $PARTS " == *" recovery "* ]]; then
  echo "### Recovery after a taskmanager SIGKILL (wcount -p 2, 100,000 events/s, checkpoints every 1 s, heartbeat timeout 2 s)"
  echo
  echo "Times in ms after the kill. From the jobmanager's log: the first task failure reported, the killed taskmanager declared lost, the restore from the latest checkpoint started, every task running again. Polled every 50 ms from outside: every subtask RUNNING, source_records growing (the counters come with heartbeats, once a second)."
  echo
  echo "| restart delay | run | task failed (log) | taskmanager lost (log) | restoring (log) | running (log) | last_recovery_time_ms | all subtasks RUNNING (polled) | source_records growing (polled) |"
  echo "|---|---|---|---|---|---|---|---|---|"
  tm_count=0
  for delay in 0 1000; do
    start_jobmanager "jm-recovery-$delay" --heartbeat-timeout-ms 2000 --restart-attempts 5 --restart-delay-ms "$delay"
    log="$WORK/jm-recovery-$delay.err"
    declare -A TM_PIDS=()
    for _ in 1 2; do
      tm_count=$((tm_count + 1))
      start_taskmanager "tm-$tm_count" 2
      TM_PIDS["tm-$tm_count"]="$TM"
    done
    wait_for_taskmanagers 2
    for run in $(seq "$REPEAT"); do
      rm -rf "$WORK/chk-recovery"
      id="$(submit "$NEXMARK" -p 2 --checkpoint-interval 1s --checkpoint-dir "file://$WORK/chk-recovery" -- \
        --query wcount --rate 100000 --events 100000000 --sink blackhole)"
      for _ in $(seq 600); do
        status_json "$id"
        if [ "$(json running "$WORK/status.json")" = yes ]; then
          "$WEIR" checkpoints "$id" --json > "$WORK/checkpoints.json"
          [ "$(json completed "$WORK/checkpoints.json")" -ge 1 ] && break
        fi
        sleep 0.1
      done
      attempt="$(json field "$WORK/status.json" attempt)"
      victim="$(json taskmanager "$WORK/status.json")"
      killed_ns="$(date +%s%N)"
      kill -KILL "${TM_PIDS[$victim]}"
      stop "${TM_PIDS[$victim]}"
      unset "TM_PIDS[$victim]"
      tm_count=$((tm_count + 1))
      start_taskmanager "tm-$tm_count" 2
      TM_PIDS["tm-$tm_count"]="$TM"
      read -r left back flowing <<< "$(json poll_recovery "$REST" "$id" "$killed_ns" "$attempt")"
      recovery=""
      for _ in $(seq 100); do
        status_json "$id"
        recovery="$(json field "$WORK/status.json" last_recovery_time_ms)"
        [ -n "$recovery" ] && break
        sleep 0.1
      done
      read -r failed lost restoring running <<< "$(json phases "$log" "$killed_ns")"
      echo "| $delay ms | $run | $failed | $lost | $restoring | $running | ${recovery:--} | $back | $flowing |"
      cancel_and_wait "$id"
      wait_for_taskmanagers 2
    done
    for pid in "${TM_PIDS[@]}"; do stop "$pid"; done
    stop "$JM"
  done
  echo
fi
echo "Machine: $(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem/ { print $2 }') GiB."
