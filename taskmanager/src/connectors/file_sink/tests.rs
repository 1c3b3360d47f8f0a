//! Unit tests of the text file sink: scripted writes, pre-commits, commits and restores against
//! a temporary directory.

use super::super::CheckpointCommitter;
use super::*;

const JOB: &str = "0123456789abcdef0123456789abcdef";

fn task(attempt: u32, subtask: u32, parallelism: u32) -> TaskInfo {
    TaskInfo {
        job_id: JOB.into(),
        job_name: "job".into(),
        task_name: "sink".into(),
        subtask,
        parallelism,
        max_parallelism: 128,
        attempt,
        heap_state: true,
    }
}

/// Opens subtask `subtask` of `parallelism` in attempt `attempt`.
fn open(
    dir: &Path,
    attempt: u32,
    subtask: u32,
    parallelism: u32,
    restored: Option<&[u8]>,
) -> Result<TextFileSinkWriter> {
    let restored: Vec<Vec<u8>> = restored.map(|state| vec![state.to_vec()]).unwrap_or_default();
    TextFileSinkWriter::open(dir, &task(attempt, subtask, parallelism), &restored)
}

fn pending(checkpoint: CheckpointId, attempt: u32, seq: u64) -> Pending {
    Pending { checkpoint, attempt, seq }
}

fn decode(state: &[u8]) -> SinkState {
    postcard::from_bytes(state).unwrap()
}

/// The names of the files in `dir`, sorted, without the markers.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.starts_with(MARKER_PREFIX))
        .collect();
    names.sort();
    names
}

/// The names of the markers in `dir`, sorted.
fn markers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(MARKER_PREFIX))
        .collect();
    names.sort();
    names
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn runtime_message(err: Error) -> String {
    match err {
        Error::Runtime { message, .. } => message,
        other => panic!("not a runtime error: {other}"),
    }
}

#[test]
fn without_checkpoints_output_is_visible_after_the_final_commit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a").join("b");
    let mut writer = open(&out, 0, 1, 2, None).unwrap();
    let committer = writer.committer();
    writer.write(b"one\n").unwrap();
    writer.write(b"two\nthree\n").unwrap();
    assert_eq!(files(&out), [".part-1-0.0.inprogress"]);
    writer.finish().unwrap();
    assert_eq!(files(&out), [".part-1-0.0.pending"]);
    assert!(writer.write(b"late\n").is_err());
    writer.finish().unwrap();
    assert_eq!(markers(&out), [".weir-sink-0-1"]);
    committer.commit(FINAL_CHECKPOINT).unwrap();
    assert_eq!(files(&out), ["part-1-0.txt"]);
    assert_eq!(read(&out, "part-1-0.txt"), "one\ntwo\nthree\n");
    assert!(markers(&out).is_empty());
    committer.commit(FINAL_CHECKPOINT).unwrap();
    assert_eq!(files(&out), ["part-1-0.txt"]);
}

#[test]
fn commit_makes_visible_only_the_checkpoints_up_to_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mut writer = open(out, 0, 0, 1, None).unwrap();
    let committer = writer.committer();
    writer.write(b"a\n").unwrap();
    writer.pre_commit(1).unwrap();
    writer.write(b"b\n").unwrap();
    writer.write(b"c\n").unwrap();
    assert_eq!(files(out), [".part-0-0.0.pending", ".part-0-1.0.inprogress"]);
    let state = writer.pre_commit(2).unwrap();
    assert_eq!(decode(&state), SinkState::new(0, 2, vec![pending(1, 0, 0), pending(2, 0, 1)], vec![]));
    writer.write(b"d\n").unwrap();

    committer.commit(1).unwrap();
    assert_eq!(files(out), [".part-0-1.0.pending", ".part-0-2.0.inprogress", "part-0-0.txt"]);
    assert_eq!(read(out, "part-0-0.txt"), "a\n");
    committer.commit(1).unwrap();
    assert_eq!(files(out), [".part-0-1.0.pending", ".part-0-2.0.inprogress", "part-0-0.txt"]);

    committer.commit(2).unwrap();
    assert_eq!(files(out), [".part-0-2.0.inprogress", "part-0-0.txt", "part-0-1.txt"]);
    assert_eq!(read(out, "part-0-1.txt"), "b\nc\n");
    committer.commit(2).unwrap();
    let state = writer.pre_commit(3).unwrap();
    assert_eq!(decode(&state), SinkState::new(0, 3, vec![pending(3, 0, 2)], vec![]));
    committer.commit(FINAL_CHECKPOINT).unwrap();
    assert_eq!(files(out), ["part-0-0.txt", "part-0-1.txt", "part-0-2.txt"]);
    assert_eq!(read(out, "part-0-2.txt"), "d\n");
}

#[test]
fn restore_discards_what_was_written_after_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mut writer = open(out, 0, 0, 1, None).unwrap();
    let committer = writer.committer();
    writer.write(b"a\n").unwrap();
    let state = writer.pre_commit(1).unwrap();
    writer.write(b"b\n").unwrap();
    writer.pre_commit(2).unwrap();
    committer.commit(2).unwrap();
    writer.write(b"c\n").unwrap();
    assert_eq!(files(out), [".part-0-2.0.inprogress", "part-0-0.txt", "part-0-1.txt"]);
    drop(writer);

    // Attempt 1 recovers from checkpoint 1 (say checkpoint 2's state was lost).
    let mut writer = open(out, 1, 0, 1, Some(&state)).unwrap();
    assert_eq!(files(out), ["part-0-0.txt"]);
    assert_eq!(read(out, "part-0-0.txt"), "a\n");
    writer.write(b"b\n").unwrap();
    assert_eq!(files(out), [".part-0-1.1.inprogress", "part-0-0.txt"]);
    writer.finish().unwrap();
    writer.committer().commit(FINAL_CHECKPOINT).unwrap();
    assert_eq!(files(out), ["part-0-0.txt", "part-0-1.txt"]);
    assert_eq!(read(out, "part-0-1.txt"), "b\n");
}

#[test]
fn restore_commits_what_the_failed_run_did_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mut writer = open(out, 0, 0, 1, None).unwrap();
    writer.write(b"a\n").unwrap();
    writer.pre_commit(1).unwrap();
    writer.write(b"b\n").unwrap();
    let state = writer.pre_commit(2).unwrap();
    writer.committer().commit(1).unwrap();
    // Checkpoint 2 completed but the process died before committing it.
    drop(writer);
    assert_eq!(files(out), [".part-0-1.0.pending", "part-0-0.txt"]);

    let mut writer = open(out, 1, 0, 1, Some(&state)).unwrap();
    assert_eq!(files(out), ["part-0-0.txt", "part-0-1.txt"]);
    assert_eq!(read(out, "part-0-0.txt"), "a\n");
    assert_eq!(read(out, "part-0-1.txt"), "b\n");
    // Nothing is pending any more; numbering continues.
    let restored = writer.pre_commit(3).unwrap();
    assert_eq!(decode(&restored), SinkState::new(0, 2, vec![], vec![]));
    writer.write(b"c\n").unwrap();
    let state4 = writer.pre_commit(4).unwrap();
    assert_eq!(decode(&state4), SinkState::new(0, 3, vec![pending(4, 1, 2)], vec![]));
    writer.committer().commit(4).unwrap();
    assert_eq!(read(out, "part-0-2.txt"), "c\n");

    // Restoring the same state again (a second failure) finds everything committed already.
    drop(writer);
    open(out, 2, 0, 1, Some(&state)).unwrap();
    assert_eq!(files(out), ["part-0-0.txt", "part-0-1.txt"]);
}

#[test]
fn zombie_of_an_older_attempt_cannot_change_the_new_attempts_output() {
    // Regression: hidden names did not carry the attempt, so a task of attempt 0 still running
    // on a taskmanager cut off from the jobmanager wrote into the in-progress file of attempt
    // 1, which committed the zombie's records instead of its own.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mut zombie = open(out, 0, 0, 1, None).unwrap();
    zombie.write(b"a\n").unwrap();
    let state = zombie.pre_commit(1).unwrap();

    // Checkpoint 1 completed; the job restarts from it elsewhere while attempt 0 runs on.
    let mut writer = open(out, 1, 0, 1, Some(&state)).unwrap();
    assert_eq!(files(out), ["part-0-0.txt"]);
    zombie.write(b"zombie\n").unwrap();
    writer.write(b"b\n").unwrap();
    assert_eq!(files(out), [".part-0-1.0.inprogress", ".part-0-1.1.inprogress", "part-0-0.txt"]);
    let state2 = writer.pre_commit(2).unwrap();
    zombie.pre_commit(2).unwrap();
    writer.committer().commit(2).unwrap();
    zombie.write(b"zombie again\n").unwrap();
    zombie.finish().unwrap();
    assert_eq!(
        files(out),
        [".part-0-1.0.pending", ".part-0-2.0.pending", "part-0-0.txt", "part-0-1.txt"],
        "the zombie's files are hidden, never committed"
    );
    assert_eq!(read(out, "part-0-0.txt"), "a\n");
    assert_eq!(read(out, "part-0-1.txt"), "b\n");

    // The next restore (attempt 2, from checkpoint 2) deletes what the zombie left.
    drop(writer);
    open(out, 2, 0, 1, Some(&state2)).unwrap();
    assert_eq!(files(out), ["part-0-0.txt", "part-0-1.txt"]);
    assert_eq!(read(out, "part-0-0.txt"), "a\n");
    assert_eq!(read(out, "part-0-1.txt"), "b\n");
}

#[test]
fn restore_commits_exactly_the_listed_pending_files_whatever_else_other_attempts_left() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    // Subtask 0 of 2: attempt 1 had committed part 0 and pre-committed parts 1 and 2 for
    // checkpoints 5 and 6, then part 3 after checkpoint 6; attempt 0 (a zombie) and attempt 2
    // (which failed before any checkpoint completed) left files with the same numbers.
    let written = [
        ("part-0-0.txt", "a\n"),
        (".part-0-1.1.pending", "b\n"),
        (".part-0-2.1.pending", "c\n"),
        (".part-0-3.1.pending", "after the checkpoint\n"),
        ("part-0-3.txt", "committed after the checkpoint\n"),
        (".part-0-1.0.pending", "zombie 1\n"),
        (".part-0-2.0.inprogress", "zombie 2\n"),
        (".part-0-1.2.pending", "attempt 2\n"),
        (".part-0-4.2.inprogress", "attempt 2\n"),
        (".part-0-1.txt.pending", "older layout\n"),
        ("part-1-0.txt", "subtask 1\n"),
        (".part-1-1.1.pending", "subtask 1\n"),
        (".part-1-2.1.inprogress", "subtask 1\n"),
    ];
    for (name, content) in written {
        std::fs::write(out.join(name), content).unwrap();
    }
    let state = SinkState::new(0, 3, vec![pending(5, 1, 1), pending(6, 1, 2)], vec![]);
    let state = postcard::to_allocvec(&state).unwrap();

    let mut writer = open(out, 3, 0, 2, Some(&state)).unwrap();
    assert_eq!(
        files(out),
        [
            ".part-1-1.1.pending",
            ".part-1-2.1.inprogress",
            "part-0-0.txt",
            "part-0-1.txt",
            "part-0-2.txt",
            "part-1-0.txt"
        ]
    );
    assert_eq!(read(out, "part-0-0.txt"), "a\n");
    assert_eq!(read(out, "part-0-1.txt"), "b\n");
    assert_eq!(read(out, "part-0-2.txt"), "c\n");
    assert_eq!(read(out, "part-1-0.txt"), "subtask 1\n");
    assert_eq!(read(out, ".part-1-1.1.pending"), "subtask 1\n");

    writer.write(b"d\n").unwrap();
    assert!(files(out).contains(&".part-0-3.3.inprogress".to_owned()), "{:?}", files(out));
    writer.finish().unwrap();
    writer.committer().commit(FINAL_CHECKPOINT).unwrap();
    assert_eq!(read(out, "part-0-3.txt"), "d\n");
}

#[test]
fn the_first_checkpoint_fails_unless_every_subtask_of_the_attempt_sees_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    // Attempt 3 of a sink of parallelism 3: subtasks 0 and 1 write to one taskmanager's local
    // disk (`a`), subtask 2 to another's (`b`): the same path on two machines.
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let mut writers = [open(&a, 3, 0, 3, None).unwrap(), open(&a, 3, 1, 3, None).unwrap()];
    let mut other = open(&b, 3, 2, 3, None).unwrap();
    assert_eq!(markers(&a), [".weir-sink-3-0", ".weir-sink-3-1"]);
    assert_eq!(markers(&b), [".weir-sink-3-2"]);
    writers[0].write(b"x\n").unwrap();

    let message = runtime_message(writers[0].pre_commit(1).unwrap_err());
    assert!(message.contains(&format!("the output directory {} is not shared by all taskmanagers", a.display())));
    assert!(
        message
            .contains("subtask 0 of attempt 3 does not see the files .weir-sink-3-<subtask> that subtask(s) 2 wrote")
    );
    assert!(message.contains("filesystem that every taskmanager mounts at the same path"), "{message}");
    assert!(!message.contains('\n'));
    // The checkpoint is declined before anything changed.
    assert_eq!(files(&a), [".part-0-0.3.inprogress"]);
    let message = runtime_message(other.pre_commit(1).unwrap_err());
    assert!(
        message.contains(
            "subtask 2 of attempt 3 does not see the files .weir-sink-3-<subtask> that subtask(s) 0, 1 wrote"
        )
    );
    // The final snapshot of a finished subtask does not check.
    other.finish().unwrap();
    other.pre_commit(FINAL_CHECKPOINT).unwrap();

    // A marker of another job under the right name does not count.
    std::fs::write(a.join(".weir-sink-3-2"), "fedcba9876543210fedcba9876543210").unwrap();
    assert!(writers[1].pre_commit(1).is_err());
    // Once subtask 2's marker is visible (one shared filesystem), checkpoints pass.
    std::fs::write(a.join(".weir-sink-3-2"), JOB).unwrap();
    for writer in &mut writers {
        writer.pre_commit(1).unwrap();
    }
    // The check is made once per attempt.
    std::fs::remove_file(a.join(".weir-sink-3-1")).unwrap();
    writers[0].pre_commit(2).unwrap();
    assert_eq!(files(&a), [".part-0-0.3.pending"]);

    // A sink of parallelism 1 has no peer to check.
    let mut single = open(&dir.path().join("c"), 0, 0, 1, None).unwrap();
    single.pre_commit(1).unwrap();
}

#[test]
fn subtask_zero_deletes_markers_of_other_attempts_and_the_final_commit_each_subtasks_own() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let another_job = "fedcba9876543210fedcba9876543210";
    for (name, job) in [
        (".weir-sink-0-0", JOB),
        (".weir-sink-1-1", JOB),
        (".weir-sink-1-7", another_job),
        (".weir-sink-3-0", JOB),
        (".weir-sink-4-1", another_job),
        (".weir-sink-x-1", JOB),
    ] {
        std::fs::write(out.join(name), job).unwrap();
    }

    // Attempt 2. Only subtask 0 deletes markers.
    let mut one = open(out, 2, 1, 2, None).unwrap();
    assert_eq!(
        markers(out),
        [
            ".weir-sink-0-0",
            ".weir-sink-1-1",
            ".weir-sink-1-7",
            ".weir-sink-2-1",
            ".weir-sink-3-0",
            ".weir-sink-4-1",
            ".weir-sink-x-1"
        ]
    );
    // Subtask 0 deletes those of older attempts and of newer ones of another job; it keeps its
    // peer's, and attempt 3's of this job (this attempt would be a zombie).
    let mut zero = open(out, 2, 0, 2, None).unwrap();
    assert_eq!(markers(out), [".weir-sink-2-0", ".weir-sink-2-1", ".weir-sink-3-0", ".weir-sink-x-1"]);
    assert_eq!(read(out, ".weir-sink-2-0"), JOB);

    zero.pre_commit(1).unwrap();
    one.pre_commit(1).unwrap();
    zero.committer().commit(1).unwrap();
    assert_eq!(markers(out), [".weir-sink-2-0", ".weir-sink-2-1", ".weir-sink-3-0", ".weir-sink-x-1"]);
    zero.finish().unwrap();
    one.finish().unwrap();
    // The final commit comes once every task of the attempt finished.
    zero.committer().commit(FINAL_CHECKPOINT).unwrap();
    one.committer().commit(FINAL_CHECKPOINT).unwrap();
    assert_eq!(markers(out), [".weir-sink-3-0", ".weir-sink-x-1"]);
}

#[test]
fn fresh_start_deletes_this_subtasks_files_and_subtask_zero_those_beyond_the_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    // Subtasks 0, 1 and 2 of an earlier run (with parallelism 3), in every layout.
    for s in 0..3 {
        for name in [
            format!("part-{s}-0.txt"),
            format!("part-{s}-7.txt"),
            format!(".part-{s}-1.0.pending"),
            format!(".part-{s}-2.4.inprogress"),
            format!(".part-{s}-1.txt.pending"),
            format!(".part-{s}-2.txt.inprogress"),
            format!("part-{s}.txt"),
            format!(".part-{s}.txt.inprogress"),
        ] {
            std::fs::write(out.join(name), format!("old {s}\n")).unwrap();
        }
    }
    // Names the sink does not own.
    let others = [
        "other.txt",
        "part-x.txt",
        "part-1-0.txt.bak",
        "part-01-0.txt",
        ".part-1.txt.pending",
        "part-1-.txt",
        ".part-1-0.01.pending",
        ".part-1-0.pending",
    ];
    for name in others {
        std::fs::write(out.join(name), "other\n").unwrap();
    }

    // Subtask 0 of 2 deletes its own files and subtask 2's, not subtask 1's.
    let mut writer = open(out, 5, 0, 2, None).unwrap();
    assert_eq!(
        files(out),
        [
            ".part-1-0.01.pending",
            ".part-1-0.pending",
            ".part-1-1.0.pending",
            ".part-1-1.txt.pending",
            ".part-1-2.4.inprogress",
            ".part-1-2.txt.inprogress",
            ".part-1.txt.inprogress",
            ".part-1.txt.pending",
            "other.txt",
            "part-01-0.txt",
            "part-1-.txt",
            "part-1-0.txt",
            "part-1-0.txt.bak",
            "part-1-7.txt",
            "part-1.txt",
            "part-x.txt",
        ]
    );
    assert_eq!(read(out, "part-1-0.txt"), "old 1\n");

    // Subtask 1 of 2 deletes its own files.
    open(out, 5, 1, 2, None).unwrap();
    assert_eq!(
        files(out),
        [
            ".part-1-0.01.pending",
            ".part-1-0.pending",
            ".part-1.txt.pending",
            "other.txt",
            "part-01-0.txt",
            "part-1-.txt",
            "part-1-0.txt.bak",
            "part-x.txt"
        ]
    );
    for name in others {
        assert_eq!(read(out, name), "other\n", "{name}");
    }

    writer.write(b"new\n").unwrap();
    writer.finish().unwrap();
    writer.committer().commit(FINAL_CHECKPOINT).unwrap();
    assert_eq!(read(out, "part-0-0.txt"), "new\n");
}

#[test]
fn missing_pending_files_and_corrupt_or_old_state_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mut writer = open(out, 0, 0, 1, None).unwrap();
    writer.write(b"a\n").unwrap();
    let state = writer.pre_commit(1).unwrap();
    drop(writer);
    let pending_file = out.join(".part-0-0.0.pending");
    std::fs::remove_file(&pending_file).unwrap();
    // Say attempt 1 runs on another taskmanager, with a directory of the same path that is
    // not the same filesystem.
    let message = runtime_message(open(out, 1, 0, 1, Some(&state)).unwrap_err());
    assert!(
        message.starts_with(&format!(
            "cannot restore the output of subtask 0: {} (pending in the checkpoint, written by attempt 0) is \
             missing and {} does not exist",
            pending_file.display(),
            out.join("part-0-0.txt").display()
        )),
        "{message}"
    );
    assert!(message.contains("must be on a filesystem that all taskmanagers share"), "{message}");

    // The committer reports a missing pending file too.
    let mut writer = open(out, 2, 0, 1, None).unwrap();
    writer.write(b"a\n").unwrap();
    writer.pre_commit(1).unwrap();
    let pending_file = out.join(".part-0-0.2.pending");
    std::fs::remove_file(&pending_file).unwrap();
    let message = runtime_message(writer.committer().commit(1).unwrap_err());
    assert!(message.contains(&*pending_file.to_string_lossy()), "{message}");
    assert!(message.contains("missing"), "{message}");

    let corrupt = postcard::to_allocvec(&SinkState::new(0, 1, vec![pending(1, 0, 1)], vec![])).unwrap();
    let message = runtime_message(open(out, 3, 0, 1, Some(&corrupt)).unwrap_err());
    assert!(message.contains("sink state of the checkpoint (subtask 0 into"), "{message}");
    assert!(message.contains("is corrupt: pending part 1 is not below the next part number 1"), "{message}");
    // The state before part files were named by attempt: `(checkpoint, seq)` pairs.
    let old: (u64, Vec<(u64, u64)>) = (2, vec![(1, 0), (2, 1)]);
    for bytes in [vec![0xff; 3], postcard::to_allocvec(&old).unwrap()] {
        let message = runtime_message(open(out, 3, 0, 1, Some(&bytes)).unwrap_err());
        assert!(message.contains("is corrupt or of an older format"), "{message}");
        assert!(message.contains("cancel the job and submit it again"), "{message}");
    }
}

#[test]
fn unwritable_directory_is_a_runtime_error_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let message = runtime_message(open(&file.join("sub"), 0, 0, 1, None).unwrap_err());
    assert!(message.contains(&*file.to_string_lossy()), "{message}");
    assert!(matches!(open(dir.path(), 0, 1, 1, None), Err(Error::InvalidJob(_))));
}

#[test]
fn nothing_written_creates_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mut writer = open(out, 0, 0, 1, None).unwrap();
    let committer = writer.committer();
    writer.write(b"").unwrap();
    let state = writer.pre_commit(1).unwrap();
    assert_eq!(decode(&state), SinkState::new(0, 0, vec![], vec![]));
    committer.commit(1).unwrap();
    writer.write(b"").unwrap();
    writer.finish().unwrap();
    committer.commit(FINAL_CHECKPOINT).unwrap();
    assert!(std::fs::read_dir(out).unwrap().next().is_none(), "{:?}", files(out));
}

#[test]
fn the_names_the_writer_makes_parse_back() {
    let layout =
        Layout { directory: PathBuf::from("/out"), job_id: JOB.into(), attempt: 7, subtask: 3, parallelism: 4 };
    let parse = |path: PathBuf| parse_name(path.file_name().unwrap().to_str().unwrap());
    let part = |kind, seq, attempt| Some(Name::Part(PartName { kind, subtask: 3, seq: Some(seq), attempt }));
    assert_eq!(layout.committed(3, 12), Path::new("/out/part-3-12.txt"));
    assert_eq!(parse(layout.committed(3, 12)), part(Kind::Committed, 12, None));
    assert_eq!(layout.pending(3, 5, 12), Path::new("/out/.part-3-12.5.pending"));
    assert_eq!(parse(layout.pending(3, 5, 12)), part(Kind::Pending, 12, Some(5)));
    assert_eq!(layout.in_progress(12), Path::new("/out/.part-3-12.7.inprogress"));
    assert_eq!(parse(layout.in_progress(12)), part(Kind::InProgress, 12, Some(7)));
    assert_eq!(layout.marker(2), Path::new("/out/.weir-sink-7-2"));
    assert_eq!(parse(layout.marker(2)), Some(Name::Marker { attempt: 7, subtask: 2 }));
}

/// The committed part files in `dir` and their contents, by name.
fn committed(dir: &Path) -> std::collections::BTreeMap<String, String> {
    files(dir)
        .into_iter()
        .filter(|name| name.starts_with("part-"))
        .map(|name| (name.clone(), read(dir, &name)))
        .collect()
}

/// Opens every subtask of `parallelism` in `attempt`, each given every state in `states` (a
/// restore at another parallelism), writes `<tag><subtask>` into each, pre-commits it as
/// `checkpoint` and commits it; returns the subtasks' states.
fn run_all(out: &Path, attempt: u32, parallelism: u32, states: &[Vec<u8>], tag: &str, checkpoint: u64) -> Vec<Vec<u8>> {
    // Every subtask opens before the first pre-commit (which checks their markers).
    let mut writers: Vec<TextFileSinkWriter> = (0..parallelism)
        .map(|s| TextFileSinkWriter::open(out, &task(attempt, s, parallelism), states).unwrap())
        .collect();
    let mut taken = Vec::new();
    for (writer, s) in writers.iter_mut().zip(0..) {
        writer.write(format!("{tag}{s}\n").as_bytes()).unwrap();
        taken.push(writer.pre_commit(checkpoint).unwrap());
    }
    for writer in &writers {
        writer.committer().commit(checkpoint).unwrap();
    }
    taken
}

#[test]
fn restored_at_another_parallelism_the_output_rewinds_to_the_savepoint_and_numbering_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    // A job at parallelism 4: part 0 committed; part 1 pre-committed for checkpoint 2 (the
    // savepoint), not committed yet; then part 2 written and committed after it.
    let mut writers: Vec<TextFileSinkWriter> = (0..4).map(|s| open(out, 0, s, 4, None).unwrap()).collect();
    let mut savepoint = Vec::new();
    for (writer, s) in writers.iter_mut().zip(0..) {
        writer.write(format!("a{s}\n").as_bytes()).unwrap();
        writer.pre_commit(1).unwrap();
        writer.committer().commit(1).unwrap();
        writer.write(format!("b{s}\n").as_bytes()).unwrap();
        savepoint.push(writer.pre_commit(2).unwrap());
        writer.write(format!("late{s}\n").as_bytes()).unwrap();
        writer.finish().unwrap();
    }
    for (writer, s) in writers.iter().zip(0..) {
        writer.committer().commit(FINAL_CHECKPOINT).unwrap();
        assert_eq!(read(out, &format!("part-{s}-2.txt")), format!("late{s}\n"));
    }
    let expected = |runs: &[(&str, u32, u64)]| -> std::collections::BTreeMap<String, String> {
        let mut files: std::collections::BTreeMap<String, String> = (0..4)
            .flat_map(|s| {
                [(format!("part-{s}-0.txt"), format!("a{s}\n")), (format!("part-{s}-1.txt"), format!("b{s}\n"))]
            })
            .collect();
        for (tag, subtask, seq) in runs {
            files.insert(format!("part-{subtask}-{seq}.txt"), format!("{tag}{subtask}\n"));
        }
        files
    };

    // Restored at parallelism 2: subtask 0 owns indices 0 and 2, subtask 1 owns 1 and 3. The
    // savepoint's pending parts are committed, what came after it is gone, and the two subtasks
    // number on from their own index's next part.
    let at_2 = run_all(out, 1, 2, &savepoint, "c", 5);
    assert_eq!(committed(out), expected(&[("c", 0, 2), ("c", 1, 2)]));
    assert_eq!(
        decode(&at_2[1]),
        SinkState::new(1, 3, vec![pending(5, 1, 2)], vec![(3, 2)]),
        "index 3 is kept by subtask 1"
    );

    // Back to parallelism 4: subtask 3 numbers on after index 3's parts, which subtask 1 kept.
    let at_4 = run_all(out, 2, 4, &at_2, "d", 7);
    assert_eq!(
        committed(out),
        expected(&[("c", 0, 2), ("c", 1, 2), ("d", 0, 3), ("d", 1, 3), ("d", 2, 2), ("d", 3, 2)])
    );

    // Down to one subtask, which owns every index; restored twice (a failure right after the
    // restore): the second restore deletes what the first wrote after the checkpoint.
    let mut writer = TextFileSinkWriter::open(out, &task(3, 0, 1), &at_4).unwrap();
    writer.write(b"lost\n").unwrap();
    writer.finish().unwrap();
    writer.committer().commit(FINAL_CHECKPOINT).unwrap();
    assert_eq!(read(out, "part-0-4.txt"), "lost\n");
    let at_1 = run_all(out, 4, 1, &at_4, "e", 9);
    let all = expected(&[("c", 0, 2), ("c", 1, 2), ("d", 0, 3), ("d", 1, 3), ("d", 2, 2), ("d", 3, 2), ("e", 0, 4)]);
    assert_eq!(committed(out), all);
    assert_eq!(decode(&at_1[0]), SinkState::new(0, 5, vec![pending(9, 4, 4)], vec![(1, 4), (2, 3), (3, 3)]));
    assert!(files(out).iter().all(|name| !name.starts_with('.')), "no hidden file is left: {:?}", files(out));
}
