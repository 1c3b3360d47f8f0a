//! Recovery of the job API's stateful functions on a real cluster: a jobmanager and two
//! taskmanager processes, checkpoints every 500 ms, taskmanagers killed (SIGKILL) mid-run and
//! replaced; the exactly-once output must equal a reference computed here from the job's
//! description, line for line.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use weir_tests::cluster::{Cluster, submitted_job_id, taskmanagers_of};
use weir_tests::harness::{artifact, read_lines};

/// One cluster at a time: they share the machine's cores.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Runs the test job `job_args` at `-p 2` with checkpoints every 500 ms, kills a taskmanager
/// running it after each of `kills` completed checkpoints (starting a replacement), and returns
/// the job's committed output lines, sorted.
fn run_through_kills(job_args: &[&str], kills: usize) -> Vec<String> {
    let _serial = serial();
    let mut cluster = Cluster::start(
        &["--heartbeat-timeout-ms", "2000", "--restart-attempts", "20", "--restart-delay-ms", "200"],
        &[("tm-1", 2), ("tm-2", 2)],
    );
    let output = tempfile::tempdir().unwrap();
    let plugin = artifact("libweir_test_jobs.so");
    let mut args = vec!["run", path_str(&plugin), "-p", "2", "--detached", "--checkpoint-interval", "500ms", "--"];
    args.extend_from_slice(job_args);
    args.extend_from_slice(&["--output", path_str(output.path())]);
    let out = cluster.weir(&args);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    let job = submitted_job_id(&out);
    let mut completed = 0;
    for n in 0..kills {
        completed = cluster.wait_for_progress(&job, completed);
        let busy: Vec<String> = taskmanagers_of(&cluster.details(&job)).into_iter().collect();
        let victim = busy[n % busy.len()].clone();
        eprintln!("kill {}: SIGKILL {victim} after {completed} completed checkpoints", n + 1);
        cluster.kill_taskmanager(&victim);
        cluster.start_taskmanager(&format!("tm-{}", n + 3), 2);
    }
    let end = cluster.wait_for_end(&job);
    assert_eq!(end["state"], "FINISHED", "{end}\n{}", cluster.logs());
    assert!(end["restarts"].as_u64().unwrap_or(0) >= kills as u64, "every kill restarted the job: {end}");
    read_lines(output.path())
}

/// The table-join job's output for `events` records and `users` users, from its description
/// (see `tests/jobs/src/table_join.rs`): record `seq` is a change of user `(seq / 5) % users`
/// when `seq % 5 == 0` (row `seq`, deleted when `seq % 45 == 0`), else a click of user
/// `seq % users`, joined with its user's latest change before it.
fn table_join_reference(events: u64, users: u64) -> Vec<String> {
    let mut rows: Vec<Option<u64>> = vec![None; users as usize];
    let mut lines = Vec::new();
    for seq in 1..=events {
        if seq % 5 == 0 {
            rows[((seq / 5) % users) as usize] = (seq % 45 != 0).then_some(seq);
        } else {
            let row = rows[(seq % users) as usize];
            lines.push(format!("{seq},{}", row.map_or("-".to_owned(), |r| r.to_string())));
        }
    }
    lines.sort();
    lines
}

#[test]
fn a_versioned_table_join_restores_its_table_and_waiting_elements_after_kills() {
    let (events, users) = (40_000, 7);
    let lines = run_through_kills(
        &["--job", "table-join", "--events", &events.to_string(), "--rate", "5000", "--users", &users.to_string()],
        2,
    );
    let reference = table_join_reference(events, users);
    assert_eq!(lines.len(), reference.len(), "line count");
    assert!(lines == reference, "the output differs from the reference");
}

/// The broadcast-rules job's output for `events` records and `categories` categories, from its
/// description (see `tests/jobs/src/broadcast_rules.rs`): record `seq` is a rule setting the
/// limit of category `(seq / 10) % categories` to `seq` when `seq % 10 == 0`, else an event of
/// category `seq % categories`, written with its category's latest limit before it.
fn broadcast_rules_reference(events: u64, categories: u64) -> Vec<String> {
    let mut limits: Vec<Option<u64>> = vec![None; categories as usize];
    let mut lines = Vec::new();
    for seq in 1..=events {
        if seq % 10 == 0 {
            limits[((seq / 10) % categories) as usize] = Some(seq);
        } else {
            let limit = limits[(seq % categories) as usize];
            lines.push(format!("{seq},{}", limit.map_or("-".to_owned(), |l| l.to_string())));
        }
    }
    lines.sort();
    lines
}

#[test]
fn broadcast_state_is_restored_on_every_subtask_after_kills() {
    let (events, categories) = (40_000, 7);
    let lines = run_through_kills(
        &[
            "--job",
            "broadcast-rules",
            "--events",
            &events.to_string(),
            "--rate",
            "5000",
            "--categories",
            &categories.to_string(),
        ],
        2,
    );
    let reference = broadcast_rules_reference(events, categories);
    assert_eq!(lines.len(), reference.len(), "line count");
    assert!(lines == reference, "the output differs from the reference");
}

#[test]
fn async_requests_in_flight_at_a_checkpoint_are_issued_again_after_kills() {
    let events = 30_000;
    let lines = run_through_kills(&["--job", "async-lookup", "--events", &events.to_string(), "--rate", "5000"], 2);
    let mut reference: Vec<String> = (1..=events).map(|seq: u64| format!("{seq},{}", (seq * seq) % 1009)).collect();
    reference.sort();
    assert_eq!(lines.len(), reference.len(), "line count");
    assert!(lines == reference, "the output differs from the reference");
}

#[test]
fn a_custom_split_source_reads_on_from_its_checkpointed_positions_after_kills() {
    let (splits, per_split) = (4_u64, 10_000_u64);
    let lines =
        run_through_kills(&["--job", "custom-source", "--splits", "4", "--per-split", "10000", "--rate", "1250"], 2);
    let mut reference: Vec<String> = (0..splits * per_split).map(|n| n.to_string()).collect();
    reference.sort();
    assert_eq!(lines.len(), reference.len(), "line count");
    assert!(lines == reference, "the output differs from the reference");
}

#[test]
fn a_custom_at_least_once_sink_loses_nothing_through_kills() {
    let (splits, per_split) = (4_u64, 10_000_u64);
    let lines = run_through_kills(
        &["--job", "custom-source", "--splits", "4", "--per-split", "10000", "--rate", "1250", "--sink", "append"],
        2,
    );
    let mut reference: Vec<String> = (0..splits * per_split).map(|n| n.to_string()).collect();
    reference.sort();
    let mut distinct = lines.clone();
    distinct.dedup();
    assert!(distinct == reference, "a number is missing (or unexpected): {} distinct lines", distinct.len());
    assert!(lines.len() >= reference.len());
}

#[test]
fn a_custom_two_phase_commit_sink_writes_exactly_once_through_kills() {
    let (splits, per_split) = (4_u64, 10_000_u64);
    let lines = run_through_kills(
        &[
            "--job",
            "custom-source",
            "--splits",
            "4",
            "--per-split",
            "10000",
            "--rate",
            "1250",
            "--sink",
            "transactional",
        ],
        2,
    );
    let mut reference: Vec<String> = (0..splits * per_split).map(|n| n.to_string()).collect();
    reference.sort();
    assert_eq!(lines.len(), reference.len(), "line count");
    assert!(lines == reference, "the output differs from the reference");
}

// A job with a split source and a two-phase-commit sink it implements, stopped with a savepoint
// mid-stream and resumed from it at another parallelism: the stop commits what the savepoint
// pre-committed, the resumed job reads each split on from its position and commits the rest,
// and the output is every number once.
#[test]
fn a_custom_source_and_two_phase_commit_sink_resume_exactly_once_from_a_savepoint_at_another_parallelism() {
    let _serial = serial();
    let cluster = Cluster::start(&[], &[("tm-1", 2), ("tm-2", 2)]);
    let output = tempfile::tempdir().unwrap();
    let savepoints = tempfile::tempdir().unwrap();
    let plugin = artifact("libweir_test_jobs.so");
    let (splits, per_split) = (4_u64, 10_000_u64);
    let run = |parallelism: &str, extra: &[&str]| {
        let mut args =
            vec!["run", path_str(&plugin), "-p", parallelism, "--detached", "--checkpoint-interval", "500ms"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "--job", "custom-source", "--splits", "4", "--per-split", "10000"]);
        args.extend_from_slice(&["--rate", "1250", "--sink", "transactional", "--output", path_str(output.path())]);
        let out = cluster.weir(&args);
        assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
        submitted_job_id(&out)
    };
    let first = run("2", &[]);
    cluster.wait_for_progress(&first, 2);
    let target = format!("file://{}", path_str(savepoints.path()));
    let out = cluster.weir(&["stop", &first, "-p", &target]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    let path = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
        .unwrap_or_else(|| panic!("no savepoint path: {out:?}"))
        .trim()
        .to_owned();
    assert_eq!(cluster.wait_for_end(&first)["state"], "FINISHED");
    let before = read_lines(output.path()).len();
    assert!(before > 0 && before < (splits * per_split) as usize, "stopped mid-stream: {before} lines");

    let second = run("3", &["-s", &path]);
    let end = cluster.wait_for_end(&second);
    assert_eq!(end["state"], "FINISHED", "{end}\n{}", cluster.logs());
    let lines = read_lines(output.path());
    let mut reference: Vec<String> = (0..splits * per_split).map(|n| n.to_string()).collect();
    reference.sort();
    assert_eq!(lines.len(), reference.len(), "line count");
    assert!(lines == reference, "the output differs from the reference");
}
