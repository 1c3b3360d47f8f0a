//! Savepoints of running jobs on a real cluster (`weir-jobmanager` and two `weir-taskmanager`
//! processes on loopback ports), through the `weir` CLI and the REST API: what a savepoint
//! directory holds, that periodic checkpoints go on beside it, and how failures look.

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use weir_api::runtime::{ChainSnapshot, state_entries};
use weir_runtime::savepoint::SavepointMetadata;
use weir_tests::cluster::{Cluster, submitted_job_id, taskmanagers_of};
use weir_tests::harness::{artifact, read_lines};
use weir_tests::reference;
use weir_tests::verify::assert_same_lines;

static SERIAL: Mutex<()> = Mutex::new(());

/// One cluster at a time.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Starts an endless checkpointed `wcount` (20,000 bids/s) at `-p 2` on `backend`; returns its id.
fn start_wcount(cluster: &Cluster, backend: &str, output: &Path) -> String {
    run_wcount(cluster, backend, output, 1_000_000_000, &[])
}

/// Starts `wcount` over `events` bids (20,000/s) at `-p 2` on `backend` with `flags` for `weir
/// run`; returns its id.
fn run_wcount(cluster: &Cluster, backend: &str, output: &Path, events: u64, flags: &[&str]) -> String {
    run_wcount_at(cluster, "2", backend, output, events, flags)
}

/// [`run_wcount`] at `parallelism`.
fn run_wcount_at(
    cluster: &Cluster,
    parallelism: &str,
    backend: &str,
    output: &Path,
    events: u64,
    flags: &[&str],
) -> String {
    let nexmark = artifact("libweir_example_nexmark.so");
    let events = events.to_string();
    let mut args = vec!["run", path_str(&nexmark), "-p", parallelism, "--detached"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--checkpoint-interval", "300ms", "--state-backend", backend, "--"]);
    args.extend_from_slice(&[
        "--query",
        "wcount",
        "--events",
        &events,
        "--rate",
        "20000",
        "--output",
        path_str(output),
    ]);
    let out = cluster.weir(&args);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    submitted_job_id(&out)
}

/// `weir run` of wcount from `location` at `parallelism` on `backend`, which must be refused at
/// submission in one line; returns it.
fn refused_restore(cluster: &Cluster, location: &str, parallelism: &str, backend: &str, output: &Path) -> String {
    let nexmark = artifact("libweir_example_nexmark.so");
    let out = cluster.weir(&[
        "run",
        path_str(&nexmark),
        "-p",
        parallelism,
        "--state-backend",
        backend,
        "-s",
        location,
        "--",
        "--query",
        "wcount",
        "--events",
        "10",
        "--output",
        path_str(output),
    ]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    out.stderr
}

/// The directory of a `file://` location.
fn local_dir(location: &str) -> &Path {
    Path::new(location.strip_prefix("file://").unwrap_or_else(|| panic!("not a file URL: {location}")))
}

/// Checks what a savepoint of the wcount job holds: its metadata names every vertex by its
/// operators' uids with relative files that exist; every file is a canonical snapshot of the
/// savepoint's checkpoint; the window operator's keyed state is there, each subtask's within its
/// key groups. Returns the number of window-state entries.
fn check_wcount_savepoint(dir: &Path, job: &str) -> usize {
    let metadata = SavepointMetadata::decode(&std::fs::read(dir.join("_metadata")).unwrap()).unwrap();
    assert_eq!(metadata.job_id, job);
    assert_eq!(metadata.max_parallelism, 128);
    let uids: BTreeSet<&str> = metadata.vertices.iter().flat_map(|v| &v.uids).map(String::as_str).collect();
    for uid in ["bids", "bid-timestamps", "wcount-count", "wcount-sink"] {
        assert!(uids.contains(uid), "{uid} in {uids:?}");
    }
    let mut window_entries = 0;
    for vertex in &metadata.vertices {
        assert_eq!(vertex.parallelism, 2, "{vertex:?}");
        assert_eq!(vertex.subtasks.len(), 2, "{vertex:?}");
        for subtask in &vertex.subtasks {
            assert!(!subtask.files.is_empty(), "every subtask wrote its file: {subtask:?}");
            let (first, last) = subtask.key_groups.expect("key groups");
            for file in &subtask.files {
                assert!(!file.path.contains(".rocksdb") && !file.path.ends_with(".sst"), "canonical only: {file:?}");
                let bytes = std::fs::read(dir.join(&file.path)).unwrap();
                assert_eq!(bytes.len() as u64, file.size_bytes, "{file:?}");
                let snapshot: ChainSnapshot = postcard::from_bytes(&bytes).unwrap();
                assert_eq!(snapshot.checkpoint, metadata.checkpoint_id);
                for operator in &snapshot.operators {
                    assert!(vertex.uids.contains(&operator.uid), "{} in {:?}", operator.uid, vertex.uids);
                    for group in &operator.keyed {
                        assert!((first..=last).contains(&group.key_group), "{} in {first}..={last}", group.key_group);
                        if operator.uid == "wcount-count" {
                            window_entries += state_entries(&group.entries)
                                .map(Result::unwrap)
                                .filter(|e| e.state == "window-contents")
                                .count();
                        }
                    }
                }
            }
        }
    }
    window_entries
}

fn savepoint_of_a_running_job(backend: &str) {
    let _serial = serial();
    let cluster = Cluster::start(&[], &[("tm-1", 2), ("tm-2", 2)]);
    let output = tempfile::tempdir().unwrap();
    let savepoints = tempfile::tempdir().unwrap();
    let job = start_wcount(&cluster, backend, output.path());
    let completed = cluster.wait_for_progress(&job, 1);

    // `weir savepoint JOB DIR`, as `flink savepoint`.
    let out = cluster.weir(&["savepoint", &job, path_str(savepoints.path())]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    let location = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
        .unwrap_or_else(|| panic!("no path: {out:?}"))
        .trim()
        .to_owned();
    let prefix = format!("file://{}/savepoint-{}-", savepoints.path().display(), &job[..6]);
    assert!(location.starts_with(&prefix), "{location} under {prefix}");
    let entries = check_wcount_savepoint(local_dir(&location), &job);
    assert!(entries > 0, "the running windows are in the savepoint ({backend})");

    // Periodic checkpoints went on, and go on.
    let after = cluster.wait_for_progress(&job, completed + 2);
    let history = cluster.checkpoints(&job);
    assert!(history["counts"]["failed"].as_u64() == Some(0), "no checkpoint failed: {history}");
    assert!(after > completed);

    // REST, in Flink's shapes: trigger (202, request-id), poll, retry with the same triggerId.
    let trigger_id = "0123456789abcdef0123456789abcdef";
    let body =
        json!({ "target-directory": format!("file://{}", savepoints.path().display()), "triggerId": trigger_id });
    let (status, answer) = cluster.rest_post(&format!("jobs/{job}/savepoints"), &body);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer, json!({ "request-id": trigger_id }));
    let status = poll(&cluster, &job, trigger_id);
    let second = status["operation"]["location"].as_str().expect("a location").to_owned();
    assert_ne!(second, location);
    assert_eq!(status, json!({ "status": { "id": "COMPLETED" }, "operation": { "location": second } }));
    let (_, again) = cluster.rest_post(&format!("jobs/{job}/savepoints"), &body);
    assert_eq!(again, json!({ "request-id": trigger_id }), "the same triggerId starts nothing new");
    assert_eq!(poll(&cluster, &job, trigger_id), status);
    assert_eq!(std::fs::read_dir(savepoints.path()).unwrap().count(), 2, "two savepoints");

    // An unknown request id is a 404 in Flink's words; a bad body a 400.
    let unknown = "f".repeat(32);
    let (code, body) = cluster.rest_get(&format!("jobs/{job}/savepoints/{unknown}"));
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["errors"][0], format!("there is no savepoint operation with triggerId={unknown} for job {job}"));
    let (code, body) = cluster.rest_post(&format!("jobs/{job}/savepoints"), &json!({ "target-dir": "x" }));
    assert_eq!(code, 400, "{body}");
    let (code, body) = cluster.rest_post(&format!("jobs/{job}/savepoints"), &json!({ "formatType": "NATIVE" }));
    assert_eq!(code, 400, "{body}");
    assert!(body["errors"][0].as_str().unwrap().contains("canonical"), "{body}");

    // No directory given and none configured: one line, exit 2, nothing changes.
    let out = cluster.weir(&["savepoint", &job]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("--savepoint-dir"), "{out:?}");

    // An unwritable target: the savepoint fails with one line, the job runs on.
    let unwritable = savepoints.path().join("file");
    std::fs::write(&unwritable, b"not a directory").unwrap();
    let out = cluster.weir(&["savepoint", &job, path_str(&unwritable)]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{out:?}");
    assert!(line.starts_with(&format!("weir: the savepoint of job {job} failed: cannot write")), "{line}");
    let details = cluster.details(&job);
    assert_eq!(details["state"], "RUNNING", "{details}");
    cluster.wait_for_progress(&job, after + 1);

    let out = cluster.weir(&["cancel", &job]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(cluster.wait_for_end(&job)["state"], "CANCELED");
}

/// Polls a savepoint request until it completed (up to 60 s).
fn poll(cluster: &Cluster, job: &str, request: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, status) = cluster.rest_get(&format!("jobs/{job}/savepoints/{request}"));
        assert_eq!(code, 200, "{status}");
        if status["status"]["id"] == "COMPLETED" {
            return status;
        }
        assert_eq!(status, json!({ "status": { "id": "IN_PROGRESS" }, "operation": null }));
        assert!(std::time::Instant::now() < deadline, "the savepoint did not complete\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_job_cancelled_with_a_savepoint_and_run_again_from_it_writes_every_line_once() {
    const EVENTS: u64 = 120_000;
    let _serial = serial();
    let cluster = Cluster::start(&[], &[("tm-1", 2), ("tm-2", 2)]);
    let output = tempfile::tempdir().unwrap();
    let savepoints = tempfile::tempdir().unwrap();
    let job = run_wcount(&cluster, "heap", output.path(), EVENTS, &[]);
    cluster.wait_for_progress(&job, 2);
    // Flink's cancel-job: the job is cancelled right after the savepoint, so that nothing after
    // it is committed.
    let body = json!({ "target-directory": format!("file://{}", savepoints.path().display()), "cancel-job": true });
    let (code, answer) = cluster.rest_post(&format!("jobs/{job}/savepoints"), &body);
    assert_eq!(code, 202, "{answer}");
    let status = poll(&cluster, &job, answer["request-id"].as_str().unwrap());
    let location = status["operation"]["location"].as_str().unwrap_or_else(|| panic!("{status}")).to_owned();
    assert_eq!(cluster.wait_for_end(&job)["state"], "CANCELED");
    let before = read_lines(output.path()).len();
    assert!(before > 0, "the first run committed output");

    // The savepoint copied elsewhere (relative paths) restores, at another parallelism: into
    // the same output directory (the text file sink's part files of subtask 2 start after the
    // first run's), every line once, as one run without a stop would write.
    let copy = savepoints.path().join("moved").join("copy");
    copy_dir(local_dir(&location), &copy);
    let second = run_wcount_at(&cluster, "3", "heap", output.path(), EVENTS, &["-s", path_str(&copy)]);
    let end = cluster.wait_for_end(&second);
    assert_eq!(end["state"], "FINISHED", "{end}\n{}", cluster.logs());
    let restored = cluster.checkpoints(&second)["latest"]["restored"].clone();
    assert!(restored["id"].as_u64().is_some(), "the second job restored the savepoint: {restored}");
    assert_eq!(restored["is_savepoint"], true, "{restored}");
    assert_eq!(restored["external_path"], format!("file://{}", path_str(&copy)), "{restored}");
    assert_same_lines(
        "wcount through a savepoint",
        read_lines(output.path()),
        reference::nexmark("wcount", EVENTS),
        &cluster.logs(),
    );

    // Disposal, as `flink savepoint -d`: the files go; a second one finds nothing, in one line.
    for dir in [copy.display().to_string(), location.clone()] {
        let out = cluster.weir(&["savepoint", "--dispose", &dir]);
        assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
        assert!(out.stdout.contains("disposed."), "{out:?}");
        assert!(!local_dir(&storage_url(&dir)).exists(), "{dir} is gone");
    }
    let out = cluster.weir(&["savepoint", "--dispose", &location]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("no savepoint at"), "{out:?}");
    let (code, body) = cluster.rest_get(&format!("savepoint-disposal/{}", "0".repeat(32)));
    assert_eq!(code, 404, "{body}");
}

/// A path or URL as a storage URL.
fn storage_url(location: &str) -> String {
    if location.contains("://") { location.to_owned() } else { format!("file://{location}") }
}

/// Copies directory `from` (files only) to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The bids the generator (uid `bids`) of the savepoint at `location` had emitted: subtask `i`
/// of `p` emits `1 + i, 1 + i + p, ...` and keeps the progression still to emit as its position.
fn bids_before(location: &str) -> Vec<u64> {
    let dir = local_dir(location);
    let metadata = SavepointMetadata::decode(&std::fs::read(dir.join("_metadata")).unwrap()).unwrap();
    let vertex = metadata.vertices.iter().find(|v| v.uids.iter().any(|u| u == "bids")).expect("the bids' vertex");
    let p = u64::from(vertex.parallelism);
    let mut seqs = Vec::new();
    for subtask in &vertex.subtasks {
        for file in &subtask.files {
            let snapshot: ChainSnapshot = postcard::from_bytes(&std::fs::read(dir.join(&file.path)).unwrap()).unwrap();
            for operator in snapshot.operators.iter().filter(|o| o.uid == "bids") {
                let (_, _, progressions) =
                    weir_taskmanager::connectors::generator::Position::decode(&operator.operator_state).unwrap();
                let [rest] = progressions.as_slice() else {
                    panic!("a generator stopped mid-stream: {progressions:?}")
                };
                seqs.extend((1 + u64::from(subtask.subtask)..rest.next).step_by(p as usize));
            }
        }
    }
    seqs.sort_unstable();
    seqs
}

/// `weir stop JOB -p DIR [--drain]`: the savepoint's location, once the job finished.
fn stop(cluster: &Cluster, job: &str, dir: &Path, drain: bool) -> String {
    let mut args = vec!["stop", job, "-p", path_str(dir)];
    if drain {
        args.push("--drain");
    }
    let out = cluster.weir(&args);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    let how = if drain { "Draining" } else { "Suspending" };
    assert!(out.stdout.starts_with(&format!("{how} job \"{job}\" with a savepoint.")), "{out:?}");
    assert_eq!(cluster.details(job)["state"], "FINISHED");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
        .unwrap_or_else(|| panic!("no path: {out:?}"))
        .trim()
        .to_owned()
}

/// Stops wcount on `first` without drain, checks that only closed windows fired, and resumes it
/// on `second`: together, exactly the reference.
fn stop_and_resume(first: &str, second: &str) {
    const EVENTS: u64 = 120_000;
    let _serial = serial();
    let cluster = Cluster::start(&[], &[("tm-1", 2), ("tm-2", 2)]);
    let output = tempfile::tempdir().unwrap();
    let savepoints = tempfile::tempdir().unwrap();
    let job = run_wcount(&cluster, first, output.path(), EVENTS, &[]);
    cluster.wait_for_progress(&job, 2);
    let location = stop(&cluster, &job, savepoints.path(), false);

    // Only windows the watermark closed before the stop: fewer than all of the bids read.
    let read = bids_before(&location);
    assert!(!read.is_empty() && (read.len() as u64) < EVENTS, "stopped mid-stream: {} bids", read.len());
    let all_read = reference::nexmark_of("wcount", read.iter().copied());
    let stopped = read_lines(output.path());
    let unexpected: Vec<_> = stopped.iter().filter(|l| all_read.binary_search(l).is_err()).take(5).collect();
    assert!(unexpected.is_empty(), "only windows of the bids read: {unexpected:?}");
    assert!(stopped.len() < all_read.len(), "open windows did not fire: {} of {}", stopped.len(), all_read.len());

    // Resumed from the savepoint: every line once, as one uninterrupted run.
    let resumed = run_wcount(&cluster, second, output.path(), EVENTS, &["-s", &location]);
    assert_eq!(cluster.wait_for_end(&resumed)["state"], "FINISHED", "{}", cluster.logs());
    let what = format!("wcount stopped on {first}, resumed on {second}");
    assert_same_lines(&what, read_lines(output.path()), reference::nexmark("wcount", EVENTS), "");
}

#[test]
fn stop_without_drain_fires_no_window_and_a_heap_job_resumes_on_rocksdb_exactly() {
    stop_and_resume("heap", "rocksdb");
}

#[test]
fn stop_without_drain_fires_no_window_and_a_rocksdb_job_resumes_on_heap_exactly() {
    stop_and_resume("rocksdb", "heap");
}

#[test]
fn stop_with_drain_fires_every_window_of_the_bids_read() {
    let _serial = serial();
    let cluster = Cluster::start(&[], &[("tm-1", 2), ("tm-2", 2)]);
    let output = tempfile::tempdir().unwrap();
    let savepoints = tempfile::tempdir().unwrap();
    let job = start_wcount(&cluster, "heap", output.path());
    cluster.wait_for_progress(&job, 2);
    let location = stop(&cluster, &job, savepoints.path(), true);
    let read = bids_before(&location);
    assert!(!read.is_empty());
    assert_same_lines(
        "wcount drained",
        read_lines(output.path()),
        reference::nexmark_of("wcount", read.iter().copied()),
        &cluster.logs(),
    );
}

#[test]
fn a_savepoint_of_a_heap_job_is_canonical_and_self_contained_and_checkpoints_go_on() {
    savepoint_of_a_running_job("heap");
}

#[test]
fn a_savepoint_of_a_rocksdb_job_is_canonical_not_native() {
    savepoint_of_a_running_job("rocksdb");
}

/// The newest checkpoint of `job` with metadata in the cluster's storage, and the sizes of its
/// files (its directory's, and the shared files its metadata names).
fn newest_checkpoint(cluster: &Cluster, job: &str) -> (std::path::PathBuf, Vec<(String, u64)>) {
    let job_dir = cluster.storage_dir().join(job);
    let newest = std::fs::read_dir(&job_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("_metadata").exists())
        .filter_map(|p| {
            let id: u64 = p.file_name()?.to_str()?.strip_prefix("chk-")?.parse().ok()?;
            Some((id, p))
        })
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("no completed checkpoint of {job} in {}", job_dir.display()));
    let metadata =
        weir_runtime::checkpoint::CheckpointMetadata::decode(&std::fs::read(newest.join("_metadata")).unwrap())
            .unwrap();
    let mut files: Vec<String> = vec![newest.join("_metadata").display().to_string()];
    files.extend(
        metadata
            .tasks
            .iter()
            .flat_map(|t| &t.snapshot.handles)
            .map(|h| h.uri.strip_prefix("file://").unwrap_or(&h.uri).to_owned()),
    );
    files.sort();
    files.dedup();
    let sized = files
        .into_iter()
        .map(|f| {
            let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or_else(|e| panic!("{f}: {e}"));
            (f, size)
        })
        .collect();
    (newest, sized)
}

/// A job started from another job's retained checkpoint (Flink's `weir run -s <checkpoint>`, in
/// no-claim mode): from a heap checkpoint into RocksDB, and from a RocksDB checkpoint (its own
/// database files) into RocksDB at the same parallelism; the output is every line once and the
/// checkpoint's files are left exactly as they were. A RocksDB checkpoint at another parallelism
/// is refused in one line.
#[test]
fn a_job_restores_from_another_jobs_retained_checkpoint_and_leaves_it_as_it_was() {
    const EVENTS: u64 = 100_000;
    let _serial = serial();
    let mut cluster = Cluster::start(&[], &[("tm-1", 2), ("tm-2", 2)]);
    for (backend, replacement) in [("heap", "tm-3"), ("rocksdb", "tm-4")] {
        let output = tempfile::tempdir().unwrap();
        let job = run_wcount(&cluster, backend, output.path(), EVENTS, &[]);
        cluster.wait_for_progress(&job, 2);
        assert_eq!(cluster.weir(&["cancel", &job]).code, Some(0));
        assert_eq!(cluster.wait_for_end(&job)["state"], "CANCELED");
        // The job's final sweep keeps its retained checkpoints.
        std::thread::sleep(Duration::from_millis(500));
        let (checkpoint, files) = newest_checkpoint(&cluster, &job);
        if backend == "rocksdb" {
            assert!(files.iter().any(|(f, _)| f.contains("/shared/")), "incremental SST files: {files:?}");
        }
        let location = checkpoint.display().to_string();

        if backend == "rocksdb" {
            let refusal = refused_restore(&cluster, &location, "3", "rocksdb", output.path());
            assert!(refusal.contains("RocksDB files restore only at the same parallelism"), "{refusal}");
        }

        let second = run_wcount(&cluster, "rocksdb", output.path(), EVENTS, &["-s", &location]);
        cluster.wait_for_progress(&second, 0);
        let (_, after) = newest_checkpoint(&cluster, &job);
        assert_eq!(after, files, "{backend}: the restored checkpoint's files are as they were");
        // No claim: once the new job has a checkpoint of its own, it needs nothing of the old
        // job's (its first checkpoint uploaded every database file anew). The old job's directory
        // goes, a taskmanager dies, and the job restores from its own checkpoint.
        std::fs::remove_dir_all(cluster.storage_dir().join(&job)).unwrap();
        let victim = taskmanagers_of(&cluster.details(&second)).into_iter().next().expect("a taskmanager runs the job");
        cluster.kill_taskmanager(&victim);
        cluster.start_taskmanager(replacement, 2);
        let end = cluster.wait_for_end(&second);
        assert_eq!(end["state"], "FINISHED", "{backend}: {end}\n{}", cluster.logs());
        assert_same_lines(
            &format!("wcount through a retained {backend} checkpoint"),
            read_lines(output.path()),
            reference::nexmark("wcount", EVENTS),
            &cluster.logs(),
        );
        assert!(end["restarts"].as_u64().unwrap_or(0) >= 1, "the kill restarted the job: {end}");
    }
}

/// `weir savepoint check` and `inspect` against a savepoint of the test plugin's `keyed-state`
/// job, with variants of the job as upgrades.
#[test]
fn the_upgrade_preflight_says_per_operator_whether_state_restores_and_matches_weir_run() {
    let _serial = serial();
    let cluster = Cluster::start(&[], &[("tm-1", 2), ("tm-2", 2)]);
    let savepoints = tempfile::tempdir().unwrap();
    let jobs = artifact("libweir_test_jobs.so");
    let job_args =
        ["--job", "keyed-state", "--keys", "1000", "--events", "5000", "--rate", "20000", "--trickle", "100"];
    let mut run = vec!["run", path_str(&jobs), "-p", "2", "--detached", "--checkpoint-interval", "300ms", "--"];
    run.extend_from_slice(&job_args);
    let out = cluster.weir(&run);
    assert_eq!(out.code, Some(0), "{out:?}");
    let job = submitted_job_id(&out);
    cluster.wait_for_progress(&job, 1);
    let out = cluster.weir(&["savepoint", &job, path_str(savepoints.path())]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    let location =
        out.stdout.lines().find_map(|l| l.strip_prefix("Savepoint completed. Path: ")).unwrap().trim().to_owned();
    assert_eq!(cluster.weir(&["cancel", &job]).code, Some(0));

    let check = |parallelism: &str, variant: Option<&str>, extra: &[&str]| {
        let mut args = vec!["savepoint", "check", path_str(&jobs), location.as_str(), "-p", parallelism];
        args.extend_from_slice(extra);
        args.push("--");
        args.extend_from_slice(&job_args);
        if let Some(variant) = variant {
            args.extend_from_slice(&["--variant", variant]);
        }
        cluster.weir(&args)
    };
    let line_of = |out: &weir_tests::harness::CommandOutput, uid: &str| {
        out.stdout.lines().find(|l| l.trim_start().starts_with(&format!("{uid} "))).unwrap_or_default().to_owned()
    };
    // The same job, and one with an added stateless map: everything restores.
    for variant in [None, Some("extra-map")] {
        let out = check("2", variant, &[]);
        assert_eq!(out.code, Some(0), "{variant:?}: {out:?}");
        assert!(line_of(&out, "count-per-key").contains("restores (parallelism 2)"), "{out:?}");
        assert!(line_of(&out, "numbers").contains("restores"), "{out:?}");
        assert!(line_of(&out, "extra").is_empty(), "a stateless operator has nothing to restore: {out:?}");
        assert!(out.stdout.contains("Compatible: `weir run -s"), "{out:?}");
    }
    // The stateful operator removed: needs -n, and restores with it.
    let out = check("2", Some("no-count"), &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(line_of(&out, "count-per-key").contains("dropped: no such operator in the job (needs -n)"), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("--allow-non-restored-state"), "{out:?}");
    let out = check("2", Some("no-count"), &["-n"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    // The counting operator's state declared with another value type: a mismatch, refused.
    let out = check("2", Some("text-count"), &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        line_of(&out, "count-per-key").contains("mismatch: state 'seen' changed its value type from u64 to"),
        "{out:?}"
    );
    let mut run = vec!["run", path_str(&jobs), "-p", "2", "-s", location.as_str(), "--"];
    run.extend_from_slice(&job_args);
    run.extend_from_slice(&["--variant", "text-count"]);
    let refused = cluster.weir(&run);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(refused.stderr.contains("changed its value type from u64 to alloc::string::String"), "{refused:?}");
    // A stateful operator without a uid: refused at submission, naming it; the check too.
    let mut run = vec!["run", path_str(&jobs), "-p", "2", "--detached", "--"];
    run.extend_from_slice(&job_args);
    run.extend_from_slice(&["--variant", "no-uid"]);
    let refused = cluster.weir(&run);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert_eq!(refused.stderr.trim().lines().count(), 1, "{refused:?}");
    assert!(refused.stderr.contains("without a uid: 'count per key'"), "{refused:?}");
    let out = check("2", Some("no-uid"), &[]);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("without a uid: 'count per key'"), "{out:?}");
    // ... and says so as `weir run -s` does (the same refusal).
    let out = check("2", Some("no-count"), &["--json"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["compatible"], false);
    let mut run = vec!["run", path_str(&jobs), "-p", "2", "-s", location.as_str(), "--"];
    run.extend_from_slice(&job_args);
    run.extend_from_slice(&["--variant", "no-count"]);
    let refused = cluster.weir(&run);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    let error = json["error"].as_str().unwrap();
    assert!(refused.stderr.contains(error), "the check names weir run's refusal: {error} / {refused:?}");
    // Another parallelism: keyed state moves by key group and the generator's remaining numbers
    // are shared out among the new subtasks; the check says so, and the job starts at -p 4.
    let out = check("4", None, &["--json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["compatible"], true);
    for uid in ["numbers", "count-per-key"] {
        let operator = json["operators"].as_array().unwrap().iter().find(|o| o["uid"] == uid).unwrap();
        assert_eq!(operator["verdict"], "restores", "{json}");
        assert_eq!(operator["to_parallelism"], 4, "{json}");
    }
    let mut run = vec!["run", path_str(&jobs), "-p", "4", "--detached", "-s", location.as_str()];
    run.extend_from_slice(&["--checkpoint-interval", "300ms", "--"]);
    run.extend_from_slice(&job_args);
    let out = cluster.weir(&run);
    assert_eq!(out.code, Some(0), "{out:?}");
    let rescaled = submitted_job_id(&out);
    cluster.wait_for_progress(&rescaled, 0);
    assert_eq!(cluster.weir(&["cancel", &rescaled]).code, Some(0));
    // With -n, the job without the operator starts from the savepoint.
    let mut run = vec!["run", path_str(&jobs), "-p", "2", "--detached", "-s", location.as_str(), "-n"];
    run.extend_from_slice(&["--checkpoint-interval", "300ms", "--"]);
    run.extend_from_slice(&job_args);
    run.extend_from_slice(&["--variant", "no-count"]);
    let out = cluster.weir(&run);
    assert_eq!(out.code, Some(0), "{out:?}");
    let resumed = submitted_job_id(&out);
    cluster.wait_for_progress(&resumed, 0);
    assert_eq!(cluster.weir(&["cancel", &resumed]).code, Some(0));

    // `inspect` lists the vertices, the operators with state and the files.
    let out = cluster.weir(&["savepoint", "inspect", &location]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(&format!("job 'test keyed-state' {job}")), "{out:?}");
    assert!(out.stdout.contains("state of count-per-key"), "{out:?}");
    assert!(out.stdout.contains("count-per-key: value state 'seen' of u64 keyed by u64"), "{out:?}");
    assert!(out.stdout.contains("key groups 64..=127"), "{out:?}");
}

/// Schema evolution: a savepoint of the `profiles` test job at version 1 of its state type
/// restores into version 2 (a field renamed with an alias, an optional field added), which
/// counts on from version 1's values; version 3 (a field's type changed) is reported by the
/// preflight and refused by `weir run -s`, both naming the state.
#[test]
fn state_of_one_type_version_restores_into_a_compatible_one_and_an_incompatible_one_is_caught() {
    const EVENTS: u64 = 6_000;
    const KEYS: u64 = 50;
    let _serial = serial();
    let cluster = Cluster::start(&[], &[("tm-1", 2), ("tm-2", 2)]);
    let (savepoints, output) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let jobs = artifact("libweir_test_jobs.so");
    let (events, keys) = (EVENTS.to_string(), KEYS.to_string());
    let job_args = |version: &'static str| -> Vec<String> {
        ["--job", "profiles", "--version", version, "--events", &events, "--keys", &keys, "--rate", "2000"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain(["--output".to_owned(), path_str(output.path()).to_owned()])
            .collect()
    };
    let run = |version: &'static str, extra: &[&str]| {
        let mut args = vec!["run".to_owned(), path_str(&jobs).to_owned(), "-p".into(), "2".into()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push("--".into());
        args.extend(job_args(version));
        cluster.weir(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run("v1", &["--detached", "--checkpoint-interval", "300ms"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let job = submitted_job_id(&out);
    cluster.wait_for_progress(&job, 1);
    // Stopped without drain mid-stream: version 1 writes nothing (its lines come at the end).
    let location = stop(&cluster, &job, savepoints.path(), false);
    assert!(read_lines(output.path()).is_empty(), "version 1 wrote lines before the end");

    let check = |version: &'static str| {
        let mut args = vec!["savepoint".to_owned(), "check".into(), path_str(&jobs).into(), location.clone()];
        args.extend(["-p".to_owned(), "2".into(), "--".into()]);
        args.extend(job_args(version));
        cluster.weir(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = check("v2");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("count-visits") && out.stdout.contains("Compatible"), "{out:?}");
    let out = check("v3");
    assert_eq!(out.code, Some(1), "{out:?}");
    let line = out.stdout.lines().find(|l| l.trim_start().starts_with("count-visits ")).unwrap_or_default();
    assert!(line.contains("mismatch: state 'profile' changed its value type from"), "{out:?}");
    assert!(line.contains("ProfileV1 to") && line.contains("ProfileV3"), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    let refused = run("v3", &["-s", &location]);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(refused.stderr.contains("state 'profile' changed its value type"), "{refused:?}");

    // Version 2 from the savepoint: every key's count covers both runs (EVENTS / KEYS visits),
    // read through the alias; the added field is absent from version 1's values.
    let out = run("v2", &["-s", &location]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    let end = cluster.wait_for_end(&submitted_job_id(&out));
    assert_eq!(end["state"], "FINISHED", "{end}\n{}", cluster.logs());
    let expected: Vec<String> = (0..KEYS).map(|k| format!("{k},{},-", EVENTS / KEYS)).collect();
    let mut expected = expected;
    expected.sort();
    assert_eq!(read_lines(output.path()), expected);
}
