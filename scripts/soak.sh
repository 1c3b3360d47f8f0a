#!/usr/bin/env bash
# Soak test of Weir's fault tolerance (issue 9): a cluster of one jobmanager and three taskmanagers
# (2 slots each) runs stateful Nexmark jobs (wcount: tumbling windows; q5: sliding windows, two
# keyed stages) with checkpoints every second to an S3 server (moto), while a seeded chaos loop
# SIGKILLs taskmanagers (replaced under new ids), SIGKILLs the jobmanager (restarted on the same
# ports and storage; it resumes the jobs), stops the S3 server for 3-10 s (SIGSTOP/SIGCONT), and
# sometimes kills a taskmanager and the jobmanager together. The processes also inject RPC and
# storage faults at low rates (fault points, cargo feature `failpoints`, `FAILPOINTS` variable).
# When the chaos time is up the jobs run to their end; then their committed output is compared
# with a fault-free run of the same queries on the local mini-cluster (as multisets: missing
# lines are lost records, extra ones duplicated records), and the bucket with what the retained
# checkpoints reference (anything else is an orphaned checkpoint file).
#
#   ./scripts/soak.sh                          # 30 minutes: 15 with heap state, 15 with RocksDB
#   ./scripts/soak.sh --minutes 4              # a short run
#   ./scripts/soak.sh --backend rocksdb --seed 42
#   ./scripts/soak.sh --queries wcount         # one job per phase instead of wcount and q5
#
# Options: --minutes N (chaos time in total, split evenly over the backends; default 30),
# --backend heap|rocksdb|both (default both), --seed S (default: the time; printed, and the
# sequence of faults and pauses follows from it), --queries "Q..." (default "wcount q5").
# Environment: SOAK_RATE (events/s of each job, default 5000), SOAK_TM_FAILPOINTS and
# SOAK_JM_FAILPOINTS (the fault points, defaults below), SOAK_HANG_SECONDS (a job without a
# completed checkpoint this long is a hang, default 180), SOAK_TOLERABLE_FAILURES (consecutive failed
# checkpoints a job tolerates before it fails and restarts, default 1), SOAK_KEEP=1 (keep the
# work directory on success too), SOAK_BIN_DIR (take the binaries and plugin from this directory
# instead of building them; they must have the fault points unless both FAILPOINTS lists are empty).
#
# Prints a summary table; exits 0 only if every job finished with no record lost or duplicated
# and no checkpoint file orphaned. The work directory (logs of every process, outputs, the
# chaos log) is kept and printed on failure, deleted on success.
#
# Builds the release binaries with the fault points (same CARGO_TARGET_DIR as the other scripts)
# and copies them into the work directory, so a concurrent build cannot swap them mid-run.
# Everything runs on 127.0.0.1 with ports the OS picks; only processes this script started are
# signalled, by their PIDs.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

MINUTES=30
BACKEND=both
SEED=""
QUERIES="wcount q5"
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES="${2:?--minutes needs a number}"; shift 2 ;;
    --backend) BACKEND="${2:?--backend needs heap, rocksdb or both}"; shift 2 ;;
    --seed) SEED="${2:?--seed needs a number}"; shift 2 ;;
    --queries) QUERIES="${2:?--queries needs a list such as \"wcount q5\"}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "soak: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$MINUTES" =~ ^[0-9]+$ ]] && [ "$MINUTES" -ge 1 ] || { echo "soak: --minutes must be a whole number >= 1" >&2; exit 2; }
case "$BACKEND" in heap|rocksdb) BACKENDS=("$BACKEND") ;; both) BACKENDS=(heap rocksdb) ;;
  *) echo "soak: --backend must be heap, rocksdb or both" >&2; exit 2 ;; esac
[ -n "$SEED" ] || SEED="$(date +%s)"
[[ "$SEED" =~ ^[0-9]+$ ]] || { echo "soak: --seed must be a non-negative number" >&2; exit 2; }
for q in $QUERIES; do
  case "$q" in wcount|q5|q7) ;; *) echo "soak: query $q: use wcount, q5 or q7 (stateful, timing-independent output)" >&2; exit 2 ;; esac
done
read -r -a QUERY_LIST <<< "$QUERIES"
[ "${#QUERY_LIST[@]}" -ge 1 ] && [ "${#QUERY_LIST[@]}" -le 2 ] || { echo "soak: one or two queries (6 slots, 3 per job)" >&2; exit 2; }

RATE="${SOAK_RATE:-5000}"
HANG_SECONDS="${SOAK_HANG_SECONDS:-180}"
KEEP="${SOAK_KEEP:-0}"
# Fault points (runtime/src/faults.rs; the `fail` crate's syntax: `name=[pct%][cnt*]action;...`).
# Taskmanagers: a report (task state, checkpoint ack or decline) to the jobmanager is sent twice
# or lost; a checkpoint upload or any storage write fails. Jobmanager: storage writes (metadata,
# job records) and reads (restore points) fail.
TM_FAILPOINTS="${SOAK_TM_FAILPOINTS-taskmanager::report::duplicate=1%return;taskmanager::report::drop=0.2%return;storage::put=0.5%return;taskmanager::upload=0.5%return}"
JM_FAILPOINTS="${SOAK_JM_FAILPOINTS-storage::put=1%return;storage::get=1%return}"
PARALLELISM=3
BUCKET=weir
# One failed checkpoint in a row is tolerated, two fail the job (which restarts): with 0, the
# injected storage faults alone restarted the RocksDB jobs every few seconds.
TOLERABLE_FAILURES="${SOAK_TOLERABLE_FAILURES:-1}"
CHECKPOINT_FLAGS=(--checkpoint-interval 1s --checkpoint-dir "s3://$BUCKET/checkpoints" --checkpoints-retained 2
  --checkpoint-timeout 20s --checkpoint-tolerable-failures "$TOLERABLE_FAILURES")
JM_FLAGS=(--heartbeat-timeout-ms 2000 --restart-strategy fixed-delay --restart-attempts 100000 --restart-delay-ms 500)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
VENV="${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}/venv"
MOTO="${WEIR_MOTO_SERVER:-$VENV/bin/moto_server}"
PY="$VENV/bin/python"
HELPER="$PWD/scripts/soak.py"

echo "== soak: seed $SEED, $MINUTES min of chaos over ${BACKENDS[*]}, queries ${QUERY_LIST[*]} at $RATE events/s each"
echo "== build prerequisites"
./scripts/setup.sh
if [ -n "${SOAK_BIN_DIR:-}" ]; then
  SOURCE_BIN="$SOAK_BIN_DIR"
  echo "== using the binaries in $SOURCE_BIN (SOAK_BIN_DIR; no build)"
else
  SOURCE_BIN="$CARGO_TARGET_DIR/release"
  echo "== release build with fault points (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  cargo build --release --quiet -p weir-cli -p weir-jobmanager -p weir-taskmanager -p weir-example-nexmark \
    --features weir-cli/failpoints,weir-jobmanager/failpoints,weir-taskmanager/failpoints
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/weir-soak.XXXXXX")"
PIDS=()         # every live child process of this script
MOTO_PID=""
FAILED=0
cleanup() {
  local rc=$? pid
  set +e
  [ -n "$MOTO_PID" ] && kill -CONT "$MOTO_PID" 2> /dev/null
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2> /dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2> /dev/null; done
  if [ "$rc" -ne 0 ] || [ "$KEEP" = 1 ]; then
    echo "soak: logs and outputs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

BIN="$WORK/bin"
mkdir -p "$BIN"
for f in weir weir-jobmanager weir-taskmanager libweir_example_nexmark.so; do
  cp "$SOURCE_BIN/$f" "$BIN/"
done
PLUGIN="$BIN/libweir_example_nexmark.so"
[ -x "$MOTO" ] && [ -x "$PY" ] || { echo "soak: $MOTO or $PY missing: run ./scripts/setup.sh" >&2; exit 1; }
START=$SECONDS

clock() { local s=$((SECONDS - START)); printf '%02d:%02d' $((s / 60)) $((s % 60)); }
say() { printf '[%s] %s\n' "$(clock)" "$*" | tee -a "$WORK/chaos.log"; }

# The seeded pseudo-random sequence (the LCG of tests/tests/exactly_once.rs): `rand N` sets R to
# a number in [0, N).
LCG="$SEED"
rand() {
  LCG=$((LCG * 6364136223846793005 + 1442695040888963407))
  R=$((((LCG >> 33) & 0x7fffffff) % $1))
}

alive() { [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2> /dev/null)" != Z ]; }

forget() {
  local kept=() pid
  for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
  PIDS=("${kept[@]}")
}

# SIGKILLs one of our children and reaps it.
kill_child() {
  kill -KILL "$1" 2> /dev/null || true
  wait "$1" 2> /dev/null || true
  forget "$1"
}

tail_logs() {
  local f
  for f in "$PH"/jm.log "$PH"/tm-*.log "$PH"/moto.log; do
    [ -f "$f" ] || continue
    echo "--- $(basename "$f") (last 30 lines) ---"
    tail -n 30 "$f"
  done
}

# Stops the soak at once: a hang, a crash, or a broken harness. The logs stay.
die() {
  say "FAILURE ($BACKEND_NOW): $*"
  tail_logs >&2 || true
  echo "soak: seed $SEED; logs in $WORK/$BACKEND_NOW" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
# One phase: a fresh cluster and fresh jobs on one state backend.

start_moto() {
  local port
  port="$("$PY" "$HELPER" free-port)"
  (cd "$PH" && exec "$MOTO" -H 127.0.0.1 -p "$port") > "$PH/moto.log" 2>&1 < /dev/null &
  MOTO_PID=$!
  PIDS+=("$MOTO_PID")
  S3="http://127.0.0.1:$port"
  "$PY" "$HELPER" wait-s3 "$S3" || die "moto did not start"
  "$PY" "$HELPER" make-bucket "$S3" "$BUCKET" || die "cannot create the bucket"
  S3_ENV=(AWS_ENDPOINT="$S3" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
    AWS_ALLOW_HTTP=true AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false)
}

# Starts the jobmanager on JM_REST_ADDR/JM_RPC_ADDR (port 0 the first time, then the same ports);
# retries while the ports are not free again yet. Sets JM_PID, REST and RPC.
start_jobmanager() {
  local try out
  for try in $(seq 40); do
    JM_STARTS=$((JM_STARTS + 1))
    out="$PH/jm-$JM_STARTS.out"
    env "${S3_ENV[@]}" FAILPOINTS="$JM_FAILPOINTS" NO_COLOR=1 WEIR_PLUGIN_CACHE_DIR="$PH/jm-plugins" \
      "$BIN/weir-jobmanager" --rest-addr "$JM_REST_ADDR" --rpc-addr "$JM_RPC_ADDR" --storage "file://$PH/storage" \
      "${JM_FLAGS[@]}" > "$out" 2>> "$PH/jm.log" < /dev/null &
    JM_PID=$!
    PIDS+=("$JM_PID")
    for _ in $(seq 300); do
      grep -q ' rest=' "$out" 2> /dev/null && break
      alive "$JM_PID" || break
      sleep 0.1
    done
    if grep -q ' rest=' "$out" 2> /dev/null; then
      REST="$(sed -n 's/.* rest=\([^ ]*\).*/\1/p' "$out")"
      RPC="$(sed -n 's/.* rpc=\([^ ]*\).*/\1/p' "$out")"
      JM_REST_ADDR="${REST#http://}"
      JM_RPC_ADDR="${RPC#http://}"
      export WEIR_JOBMANAGER="$REST"
      return
    fi
    alive "$JM_PID" && die "the jobmanager printed no ready line within 30 s"
    kill_child "$JM_PID"
    sleep 0.5
  done
  die "the jobmanager did not start in 40 attempts (ports $JM_REST_ADDR, $JM_RPC_ADDR)"
}

start_taskmanager() {
  local id="$1"
  env "${S3_ENV[@]}" FAILPOINTS="$TM_FAILPOINTS" NO_COLOR=1 WEIR_PLUGIN_DIR="$PH/$id-plugins" \
    WEIR_STATE_DIR="$PH/$id-state" "$BIN/weir-taskmanager" --jobmanager-rpc "$RPC" --slots 2 --id "$id" \
    --rpc-addr 127.0.0.1:0 --data-addr 127.0.0.1:0 > "$PH/$id.out" 2> "$PH/$id.log" < /dev/null &
  TM_PID[$id]=$!
  PIDS+=("$!")
}

# Waits (up to 60 s) until every live taskmanager is registered with the jobmanager.
wait_registered() {
  local deadline=$((SECONDS + 60)) registered id missing
  while :; do
    registered=" $("$PY" "$HELPER" registered "$REST" | tr '\n' ' ') "
    missing=""
    for id in "${!TM_PID[@]}"; do [[ "$registered" == *" $id "* ]] || missing+=" $id"; done
    [ -z "$missing" ] && return
    [ "$SECONDS" -lt "$deadline" ] || die "taskmanagers not registered after 60 s:$missing"
    check_alive
    sleep 0.5
  done
}

# Every process that should run does (one that dies on its own is a finding).
check_alive() {
  local id
  alive "$MOTO_PID" || die "the S3 server (moto) exited"
  alive "$JM_PID" || die "the jobmanager exited on its own"
  for id in "${!TM_PID[@]}"; do alive "${TM_PID[$id]}" || die "taskmanager $id exited on its own"; done
}

submit() {
  local query="$1" out id try
  for try in 1 2 3 4 5; do
    if out="$("$BIN/weir" run --detached "$PLUGIN" -p "$PARALLELISM" "${CHECKPOINT_FLAGS[@]}" --state-backend "$BACKEND_NOW" \
      -- --query "$query" --events "$EVENTS" --rate "$RATE" --output "$PH/out-$query" 2>&1)"; then
      id="$(sed -n 's/^Job submitted: //p' <<< "$out")"
      [ -n "$id" ] && { JOB_OF[$query]="$id"; JOBS+=("$id"); QUERY_OF[$id]="$query"; return; }
    fi
    say "submission of $query failed (attempt $try): $out"
    sleep 2
  done
  die "cannot submit $query"
}

# Completed checkpoints per job, from the jobmanager's log (it survives jobmanager restarts,
# whose REST counts start again): sets CKPT[job].
count_checkpoints() {
  local job n
  for job in "${JOBS[@]}"; do CKPT[$job]=0; done
  while read -r job n; do CKPT[$job]="$n"; done < <(awk '/checkpoint completed/ {
      for (i = 1; i <= NF; i++) if ($i ~ /^job_id=/) c[substr($i, 8)]++ }
      END { for (j in c) print j, c[j] }' "$PH/jm.log")
}

# Reads the jobs' states, checks that everything lives and progresses, and advances the recovery
# tracking of the latest fault.
poll() {
  local job state running records restarts attempt tms key
  check_alive
  count_checkpoints
  while read -r job state running records restarts attempt tms; do
    # While the jobmanager restarts, its REST API may not answer: keep what was known.
    [ "$state" = UNREACHABLE ] && { RUNNING[$job]=0; continue; }
    STATE[$job]="$state"; RUNNING[$job]="$running"; RECORDS[$job]="$records"; RESTARTS[$job]="$restarts"
    ATTEMPT[$job]="$attempt"; TMS[$job]="$tms"
  done < <("$PY" "$HELPER" status "$REST" "${JOBS[@]}")
  for job in "${JOBS[@]}"; do
    state="${STATE[$job]:-UNKNOWN}"
    case "$state" in
      FAILED|CANCELED|CANCELLING|FAILING) die "job ${QUERY_OF[$job]} ($job) is $state" ;;
    esac
    # Progress is a completed checkpoint (a job that restarts over and over without one hangs).
    key="${CKPT[$job]}"
    if [ "$key" != "${PROGRESS_KEY[$job]:-}" ]; then
      PROGRESS_KEY[$job]="$key"
      PROGRESS_AT[$job]=$SECONDS
    elif [ "$state" != FINISHED ] && [ $((SECONDS - ${PROGRESS_AT[$job]})) -ge "$HANG_SECONDS" ]; then
      die "HANG: job ${QUERY_OF[$job]} ($job) completed no checkpoint for $HANG_SECONDS s and is $state (attempt ${ATTEMPT[$job]:-?})"
    fi
    # Recovery after the latest fault: every subtask running, then a new completed checkpoint.
    if [ "$state" = FINISHED ]; then
      STAGE[$job]=2
    elif [ "${STAGE[$job]}" = 0 ] && [ "${RUNNING[$job]}" = 1 ]; then
      STAGE[$job]=1; BASE[$job]="${CKPT[$job]}"
    elif [ "${STAGE[$job]}" = 1 ] && [ "${CKPT[$job]}" -gt "${BASE[$job]}" ]; then
      STAGE[$job]=2
    fi
  done
}

recovered() {
  local job
  for job in "${JOBS[@]}"; do [ "${STAGE[$job]}" = 2 ] || return 1; done
}

all_finished() {
  local job
  for job in "${JOBS[@]}"; do [ "${STATE[$job]:-}" = FINISHED ] || return 1; done
}

fault_started() {
  local job
  FAULT_AT=$SECONDS
  for job in "${JOBS[@]}"; do [ "${STATE[$job]}" = FINISHED ] || STAGE[$job]=0; done
}

# A taskmanager running subtasks of a job (any live one if none is known): sets VICTIM.
pick_victim() {
  local job tm busy=() seen=" "
  for job in "${JOBS[@]}"; do
    [ "${STATE[$job]}" = FINISHED ] && continue
    for tm in ${TMS[$job]//,/ }; do
      [ -n "${TM_PID[$tm]:-}" ] && [[ "$seen" != *" $tm "* ]] && { busy+=("$tm"); seen+="$tm "; }
    done
  done
  [ "${#busy[@]}" -gt 0 ] || busy=("${!TM_PID[@]}")
  mapfile -t busy < <(printf '%s\n' "${busy[@]}" | sort)
  rand "${#busy[@]}"
  VICTIM="${busy[$R]}"
}

kill_taskmanager() {
  kill_child "${TM_PID[$VICTIM]}"
  unset "TM_PID[$VICTIM]"
}

replace_taskmanager() {
  TM_COUNT=$((TM_COUNT + 1))
  start_taskmanager "tm-$TM_COUNT"
}

restart_jobmanager() {
  kill_child "$JM_PID"
  start_jobmanager
}

checkpoint_summary() {
  local job out=""
  for job in "${JOBS[@]}"; do out+="${QUERY_OF[$job]} ${CKPT[$job]} checkpoints ${STATE[$job]:-?}; "; done
  echo "${out%; }"
}

inject_fault() {
  local pause
  rand 100
  if [ "$R" -lt 40 ]; then
    pick_victim
    say "fault $((FAULTS + 1)): SIGKILL taskmanager $VICTIM (pid ${TM_PID[$VICTIM]}) [$(checkpoint_summary)]"
    kill_taskmanager
    fault_started
    replace_taskmanager
    wait_registered
    TM_KILLS=$((TM_KILLS + 1))
  elif [ "$R" -lt 60 ]; then
    say "fault $((FAULTS + 1)): SIGKILL the jobmanager (pid $JM_PID) [$(checkpoint_summary)]"
    fault_started
    restart_jobmanager
    wait_registered
    JM_KILLS=$((JM_KILLS + 1))
  elif [ "$R" -lt 90 ]; then
    rand 8
    pause=$((3 + R))
    say "fault $((FAULTS + 1)): S3 outage of $pause s (SIGSTOP moto) [$(checkpoint_summary)]"
    fault_started
    kill -STOP "$MOTO_PID"
    sleep "$pause"
    kill -CONT "$MOTO_PID"
    OUTAGES=$((OUTAGES + 1))
  else
    pick_victim
    say "fault $((FAULTS + 1)): SIGKILL taskmanager $VICTIM and the jobmanager together [$(checkpoint_summary)]"
    kill -KILL "${TM_PID[$VICTIM]}" "$JM_PID" 2> /dev/null || true
    kill_taskmanager
    fault_started
    restart_jobmanager
    replace_taskmanager
    wait_registered
    DOUBLE_KILLS=$((DOUBLE_KILLS + 1))
  fi
  FAULTS=$((FAULTS + 1))
}

# Lines of the logs of this phase's processes that match `pattern` (fault injection reports).
count_lines() {
  cat "$PH"/*.log 2> /dev/null | grep -cE "$1" || true
}

run_phase() {
  BACKEND_NOW="$1"
  local seconds="$2" job query
  PH="$WORK/$BACKEND_NOW"
  mkdir -p "$PH"
  EVENTS=$((RATE * seconds))
  JM_REST_ADDR=127.0.0.1:0 JM_RPC_ADDR=127.0.0.1:0 JM_STARTS=0 TM_COUNT=0
  TM_KILLS=0 JM_KILLS=0 DOUBLE_KILLS=0 OUTAGES=0 FAULTS=0 RECOVERY_TOTAL=0 RECOVERY_MAX=0 RECOVERIES=0
  unset TM_PID JOB_OF QUERY_OF CKPT STATE RUNNING RECORDS RESTARTS ATTEMPT TMS STAGE BASE PROGRESS_KEY PROGRESS_AT
  declare -gA TM_PID=() JOB_OF=() QUERY_OF=() CKPT=() STATE=() RUNNING=() RECORDS=() RESTARTS=() ATTEMPT=() TMS=() STAGE=() \
    BASE=() PROGRESS_KEY=() PROGRESS_AT=()
  JOBS=()

  say "== phase $BACKEND_NOW: $seconds s of chaos, ${QUERY_LIST[*]} with $EVENTS events each at $RATE/s"
  for query in "${QUERY_LIST[@]}"; do
    "$BIN/weir" local run "$PLUGIN" -- --query "$query" --events "$EVENTS" --output "$PH/ref-$query" > "$PH/ref-$query.log" 2>&1 \
      || die "the reference run of $query failed: $(tail -n 5 "$PH/ref-$query.log")"
    find "$PH/ref-$query" -maxdepth 1 -name 'part-*.txt' -exec cat {} + | LC_ALL=C sort > "$PH/$query.expected"
    rm -rf "$PH/ref-$query"
    say "reference $query: $(wc -l < "$PH/$query.expected") lines (local mini-cluster, no faults)"
  done

  start_moto
  start_jobmanager
  if [ -n "$JM_FAILPOINTS$TM_FAILPOINTS" ]; then
    grep -q "fault injection is on" "$PH/jm.log" || die "the binaries have no fault points (built without the failpoints feature?)"
  fi
  for _ in 1 2 3; do replace_taskmanager; done
  wait_registered
  say "cluster up: S3 $S3, jobmanager $REST, taskmanagers ${!TM_PID[*]}"
  for query in "${QUERY_LIST[@]}"; do
    submit "$query"
    say "submitted $query: job ${JOB_OF[$query]}"
  done
  for job in "${JOBS[@]}"; do STAGE[$job]=0; done
  FAULT_AT=$SECONDS

  local phase_end=$((SECONDS + seconds)) next_fault report_at=$((SECONDS + 60)) gap
  rand 31; next_fault=$((SECONDS + 10 + R))
  while [ "$SECONDS" -lt "$phase_end" ]; do
    poll
    all_finished && break
    # FAULT_AT: when the latest fault began (the submission before the first), -1 once every
    # job runs and completed a checkpoint since; the next fault waits for that.
    if [ "$FAULT_AT" -ge 0 ] && recovered; then
      if [ "$FAULTS" -gt 0 ]; then
        gap=$((SECONDS - FAULT_AT))
        say "recovered after $gap s"
        RECOVERY_TOTAL=$((RECOVERY_TOTAL + gap)); RECOVERIES=$((RECOVERIES + 1))
        [ "$gap" -le "$RECOVERY_MAX" ] || RECOVERY_MAX=$gap
      fi
      FAULT_AT=-1
    fi
    if [ "$SECONDS" -ge "$next_fault" ] && [ "$FAULT_AT" -lt 0 ]; then
      inject_fault
      rand 31; next_fault=$((SECONDS + 10 + R))
    fi
    if [ "$SECONDS" -ge "$report_at" ]; then
      say "$BACKEND_NOW: $FAULTS faults so far; $(checkpoint_summary)"
      report_at=$((SECONDS + 60))
    fi
    sleep 1
  done
  say "chaos over after $FAULTS faults; waiting for the jobs to finish [$(checkpoint_summary)]"
  until all_finished; do
    poll
    all_finished || sleep 1
  done
  say "every job FINISHED [$(checkpoint_summary)]"

  # Output: committed part files against the reference, as multisets.
  local lost dup unexpected lines total_lost=0 total_dup=0 total_orphans=0 total_missing=0 restarts=0 ckpts=0 objects retained orphaned missing
  for query in "${QUERY_LIST[@]}"; do
    job="${JOB_OF[$query]}"
    find "$PH/out-$query" -maxdepth 1 -name 'part-*.txt' -exec cat {} + | LC_ALL=C sort > "$PH/$query.actual"
    lines="$(wc -l < "$PH/$query.actual")"
    LC_ALL=C comm -23 "$PH/$query.expected" "$PH/$query.actual" > "$PH/$query.lost"
    LC_ALL=C comm -13 "$PH/$query.expected" "$PH/$query.actual" > "$PH/$query.extra"
    lost="$(wc -l < "$PH/$query.lost")"
    dup="$(wc -l < "$PH/$query.extra")"
    unexpected="$(LC_ALL=C comm -13 <(LC_ALL=C uniq "$PH/$query.expected") <(LC_ALL=C uniq "$PH/$query.extra") | wc -l)"
    [ "$lost" -gt 0 ] && say "LOST $lost records of $query, e.g.: $(head -n 3 "$PH/$query.lost" | tr '\n' ' ')"
    [ "$dup" -gt 0 ] && say "DUPLICATED $dup records of $query ($unexpected distinct lines not in the reference at all), e.g.: $(head -n 3 "$PH/$query.extra" | tr '\n' ' ')"
    JOB_ROWS+=("| $BACKEND_NOW | $query | $EVENTS | $(wc -l < "$PH/$query.expected") | $lines | $lost | $dup | ${RESTARTS[$job]} | ${CKPT[$job]} |")
    total_lost=$((total_lost + lost)); total_dup=$((total_dup + dup))
    restarts=$((restarts + ${RESTARTS[$job]})); ckpts=$((ckpts + ${CKPT[$job]}))
  done

  # Checkpoint files: the bucket against the retained checkpoints (after the final sweep).
  local deadline=$((SECONDS + 30)) other
  while :; do
    total_orphans=0; total_missing=0
    while read -r job objects retained orphaned missing; do
      if [ "$job" = other ]; then other="$objects"; total_orphans=$((total_orphans + objects)); continue; fi
      [ "$orphaned" = "?" ] && die "cannot read the checkpoint report of $job"
      total_orphans=$((total_orphans + orphaned)); total_missing=$((total_missing + missing))
      OBJ_SUMMARY[$job]="${QUERY_OF[$job]}: $objects objects, retained $retained, orphaned $orphaned, missing $missing"
    done < <("$PY" "$HELPER" orphans "$S3" "$BUCKET" "$REST" "$PH/checkpoint-files.txt" "${JOBS[@]}")
    [ "$total_orphans" -eq 0 ] && [ "$total_missing" -eq 0 ] && break
    [ "$SECONDS" -lt "$deadline" ] || break
    sleep 2
  done
  for job in "${JOBS[@]}"; do say "bucket: ${OBJ_SUMMARY[$job]}"; done
  [ "${other:-0}" -gt 0 ] && say "bucket: $other objects under checkpoints/ of no job"
  [ "$total_orphans" -gt 0 ] && say "ORPHANED checkpoint files: $(grep -E '^(orphaned|other) ' "$PH/checkpoint-files.txt" | head -n 5 | tr '\n' ' ')"
  [ "$total_missing" -gt 0 ] && say "MISSING files of retained checkpoints: $(grep '^missing ' "$PH/checkpoint-files.txt" | head -n 5 | tr '\n' ' ')"

  # Injected faults, from the processes' logs.
  # Each fault is logged once by the process it hit: a taskmanager's report dropped or sent twice,
  # a checkpoint upload that failed (the task declines); the jobmanager's own storage faults (the
  # lines that do not just repeat a task's decline). Faults in operations whose failure is not
  # logged (a retried record write, a submission's probe) are not counted.
  local dropped duplicated tm_storage jm_storage failed_ckpts recovery_avg="-" wall
  dropped="$(count_lines 'fault injection: report dropped')"
  duplicated="$(count_lines 'fault injection: report sent twice')"
  tm_storage="$(cat "$PH"/tm-*.log | grep -cE 'failpoint (storage|taskmanager)::' || true)"
  jm_storage="$(grep -E 'failpoint storage::' "$PH/jm.log" | grep -cv 'declined by task' || true)"
  failed_ckpts="$(grep -c 'checkpoint failed' "$PH/jm.log" || true)"
  wall="$(awk -v s=$((SECONDS - PHASE_START)) 'BEGIN { printf "%.1f", s / 60 }')"
  [ "$RECOVERIES" -gt 0 ] && recovery_avg="$((RECOVERY_TOTAL / RECOVERIES))"
  local result=ok
  if [ "$total_lost" -gt 0 ] || [ "$total_dup" -gt 0 ] || [ "$total_orphans" -gt 0 ] || [ "$total_missing" -gt 0 ]; then
    result=FAILED
    FAILED=1
  fi
  PHASE_ROWS+=("| $BACKEND_NOW | $(awk -v s="$seconds" 'BEGIN { printf "%.1f", s / 60 }') | $wall | $TM_KILLS | $JM_KILLS | $DOUBLE_KILLS | $OUTAGES | $dropped / $duplicated | $tm_storage / $jm_storage | $failed_ckpts | $restarts | $ckpts | $recovery_avg / $RECOVERY_MAX | $total_lost | $total_dup | $total_orphans | $result |")
  say "phase $BACKEND_NOW: $result (lost $total_lost, duplicated $total_dup, orphaned $total_orphans, missing $total_missing)"

  # Stop this phase's cluster.
  for job in "${!TM_PID[@]}"; do kill_child "${TM_PID[$job]}"; done
  kill_child "$JM_PID"
  kill -CONT "$MOTO_PID" 2> /dev/null || true
  kill_child "$MOTO_PID"
  MOTO_PID=""
}

PHASE_ROWS=()
JOB_ROWS=()
declare -A OBJ_SUMMARY=()
phase_seconds=$((MINUTES * 60 / ${#BACKENDS[@]}))
for backend in "${BACKENDS[@]}"; do
  PHASE_START=$SECONDS
  run_phase "$backend" "$phase_seconds"
done

echo
echo "Seed $SEED, $MINUTES min of chaos, queries ${QUERY_LIST[*]} at $RATE events/s each, -p $PARALLELISM, 3 taskmanagers x 2 slots."
echo "Fault points: taskmanagers '$TM_FAILPOINTS'; jobmanager '$JM_FAILPOINTS'; checkpoint failures tolerated: $TOLERABLE_FAILURES."
echo "Recovery: from a fault to every job running all its subtasks and completing a checkpoint again (polled every second)."
echo
echo "| backend | chaos min | wall min | taskmanager kills | jobmanager kills | double kills | S3 outages | reports dropped / duplicated | storage faults taskmanagers / jobmanager | checkpoints failed | restarts | checkpoints completed | recovery s avg / max | records lost | records duplicated | orphaned files | result |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${PHASE_ROWS[@]}"
echo
echo "| backend | query | events | expected lines | output lines | lost | duplicated | restarts | checkpoints completed |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${JOB_ROWS[@]}"
echo
if [ "$FAILED" -ne 0 ]; then
  echo "soak: FAILED (seed $SEED): records lost or duplicated, or checkpoint files orphaned; see above"
  exit 1
fi
echo "soak: passed (seed $SEED)"
