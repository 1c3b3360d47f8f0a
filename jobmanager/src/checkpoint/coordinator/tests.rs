//! The coordinator driven through scripted inputs: triggers, acknowledgements (late, repeated,
//! stale), declines, finished tasks, restarts, recovery.

use super::*;
use crate::checkpoint::StateHandle;
use crate::checkpoint::VertexCheckpointStats;
use CheckpointKind::{Checkpoint, Savepoint};
use weir_runtime::JobId;

const SOURCE: TaskId = TaskId { job: JobId(uuid::Uuid::nil()), attempt: 0, vertex: 0, subtask: 0 };
const SINK: TaskId = TaskId { job: JobId(uuid::Uuid::nil()), attempt: 0, vertex: 1, subtask: 0 };
/// The source of another execution attempt: not a task to acknowledge.
const STRANGER: TaskId = TaskId { job: JobId(uuid::Uuid::nil()), attempt: 1, vertex: 0, subtask: 0 };

fn config() -> CheckpointConfig {
    CheckpointConfig {
        interval_ms: 100,
        timeout_ms: 1000,
        max_concurrent: 1,
        min_pause_ms: 0,
        tolerable_failures: 10,
        retained: 1,
    }
}

fn coordinator(config: CheckpointConfig) -> Coordinator {
    Coordinator::new(config, [SOURCE, SINK].into(), [SOURCE].into(), None).unwrap()
}

/// A snapshot of files of 10 bytes, 4 of them new; those under `shared/` are shared.
fn snapshot(uris: &[&str]) -> TaskSnapshot {
    let handles = uris
        .iter()
        .map(|uri| StateHandle {
            uri: (*uri).to_owned(),
            size_bytes: 10,
            incremental_bytes: 4,
            shared: uri.starts_with("shared/"),
        })
        .collect();
    TaskSnapshot { handles, alignment_ms: 0, operators: Vec::new() }
}

fn triggered(checkpoint_id: u64, timestamp_ms: i64) -> Action {
    Action::Trigger { checkpoint_id, kind: Checkpoint, timestamp_ms }
}

fn aborted(checkpoint_id: u64, reason: AbortReason) -> Action {
    Action::Abort { checkpoint_id, reason }
}

fn decline(c: &mut Coordinator, checkpoint_id: u64, now_ms: i64) -> Vec<Action> {
    c.decline(SINK, checkpoint_id, "no space".into(), now_ms)
}

fn declined(checkpoint_id: u64) -> Action {
    aborted(checkpoint_id, AbortReason::Declined { task: SINK, reason: "no space".into() })
}

fn delete(uris: &[&str]) -> Action {
    Action::DeleteShared { uris: uris.iter().map(|u| (*u).to_owned()).collect() }
}

/// Both tasks acknowledge with these files (the second emits the metadata write).
fn ack_all(c: &mut Coordinator, id: u64, source: &[&str], sink: &[&str], now_ms: i64) {
    assert_eq!(c.acknowledge(SOURCE, id, snapshot(source), now_ms), vec![]);
    let actions = c.acknowledge(SINK, id, snapshot(sink), now_ms);
    assert!(matches!(actions[..], [Action::WriteMetadata { checkpoint_id, .. }] if checkpoint_id == id));
}

/// Both tasks acknowledge, then the metadata is written: the actions of the latter.
fn complete(c: &mut Coordinator, id: u64, source: &[&str], sink: &[&str], now_ms: i64) -> Vec<Action> {
    ack_all(c, id, source, sink, now_ms);
    c.metadata_written(id, now_ms)
}

fn restored(checkpoint_id: u64) -> RestoredCheckpoint {
    RestoredCheckpoint { checkpoint_id, restore_ms: 5, is_savepoint: false, external_path: None }
}

fn is_fail_job(action: &Action) -> bool {
    matches!(action, Action::FailJob { .. })
}

#[test]
fn completes_once_every_task_acknowledged_and_the_metadata_is_written() {
    let mut c = coordinator(config());
    assert_eq!(c.tick(0), vec![triggered(1, 0)]);
    let source = snapshot(&["chk-1/source"]);
    let sink = TaskSnapshot { alignment_ms: 7, ..snapshot(&["chk-1/sink"]) };
    assert_eq!(c.acknowledge(SOURCE, 1, source.clone(), 10), vec![]);
    let pending = &c.pending()[0];
    assert_eq!((pending.acknowledged, pending.total, pending.incremental_size_bytes), (1, 2, 4));
    let source_vertex = VertexCheckpointStats {
        subtasks: 1,
        acknowledged: 1,
        state_size_bytes: 10,
        incremental_size_bytes: 4,
        latest_ack_ms: Some(10),
        max_alignment_ms: 0,
    };
    let waiting_sink = VertexCheckpointStats { subtasks: 1, ..VertexCheckpointStats::default() };
    assert_eq!(pending.vertices, BTreeMap::from([(0, source_vertex.clone()), (1, waiting_sink)]));
    let acknowledgements = BTreeMap::from([(SOURCE, source), (SINK, sink.clone())]);
    let write = Action::WriteMetadata { checkpoint_id: 1, kind: Checkpoint, acknowledgements };
    assert_eq!(c.acknowledge(SINK, 1, sink.clone(), 20), vec![write]);
    // Nothing is complete before the metadata is written, and it is written once.
    assert_eq!(c.acknowledge(SINK, 1, sink, 25), vec![]);
    assert_eq!(c.tick(100), vec![], "the checkpoint writing its metadata holds the only slot");
    assert!(c.latest_completed().is_none() && c.latest_completed_id().is_none());
    assert_eq!(c.stats(), CheckpointCounts { restored: 0, total: 1, in_progress: 1, completed: 0, failed: 0 });
    assert!(c.pending()[0].writing_metadata);
    assert_eq!(c.metadata_written(1, 130), vec![Action::NotifyComplete { checkpoint_id: 1 }]);
    assert_eq!(c.metadata_written(1, 131), vec![]);
    let done = c.latest_completed().unwrap();
    let figures = (done.checkpoint_id, done.completion_ms, done.duration_ms, done.state_size_bytes);
    assert_eq!(figures, (1, 130, 130, 20));
    assert_eq!((done.incremental_size_bytes, done.max_alignment_ms), (8, 7));
    assert_eq!(c.stats(), CheckpointCounts { restored: 0, total: 1, in_progress: 0, completed: 1, failed: 0 });
    let entry = c.history().next().unwrap();
    assert_eq!((entry.checkpoint_id, entry.status, entry.latest_ack_ms), (1, CheckpointStatus::Completed, Some(20)));
    let sink_vertex = VertexCheckpointStats { latest_ack_ms: Some(20), max_alignment_ms: 7, ..source_vertex.clone() };
    assert_eq!(entry.vertices, BTreeMap::from([(0, source_vertex), (1, sink_vertex)]), "a repeated ack counts once");
    assert_eq!(c.tick(130), vec![triggered(2, 130)]);
}

#[test]
fn a_task_finished_without_a_final_snapshot_aborts_checkpoints_waiting_for_it_and_stops_triggers() {
    let mut c = coordinator(CheckpointConfig { tolerable_failures: 0, ..config() });
    c.tick(0);
    c.acknowledge(SINK, 1, snapshot(&["chk-1/sink"]), 5);
    let actions = c.task_finished(SOURCE, None, 10);
    assert_eq!(actions, vec![aborted(1, AbortReason::TaskFinished(SOURCE))], "not a failure: no FailJob");
    assert_eq!(c.tick(1000), vec![], "no checkpoint can include the finished task");
    assert_eq!(c.task_finished(STRANGER, None, 1000), vec![]);
}

/// Two sources (one finishes early, as the idle subtasks of a source over one file do) and
/// a sink.
fn two_sources() -> Coordinator {
    Coordinator::new(config(), [SOURCE, SOURCE_2, SINK].into(), [SOURCE, SOURCE_2].into(), None).unwrap()
}

const SOURCE_2: TaskId = TaskId { job: JobId(uuid::Uuid::nil()), attempt: 0, vertex: 0, subtask: 1 };

#[test]
fn finished_tasks_do_not_stop_checkpoints_their_final_snapshot_stands_in_for_them() {
    // Regression (FLIP-147): once one task finished, no checkpoint was triggered any more.
    let mut c = two_sources();
    assert_eq!(c.tick(0), vec![triggered(1, 0)]);
    c.acknowledge(SOURCE, 1, snapshot(&["chk-1/source"]), 1);
    // Source 1 finishes before the trigger reached it: its final snapshot is its part of 1.
    let final_state = snapshot(&["shared/final-0-1-0"]);
    assert_eq!(c.task_finished(SOURCE_2, Some(final_state.clone()), 2), vec![]);
    let actions = c.acknowledge(SINK, 1, snapshot(&["chk-1/sink"]), 3);
    let Action::WriteMetadata { acknowledgements, .. } = &actions[0] else { panic!("{actions:?}") };
    assert_eq!(acknowledgements.get(&SOURCE_2), Some(&final_state));
    assert_eq!(c.metadata_written(1, 4), vec![Action::NotifyComplete { checkpoint_id: 1 }]);
    // Later checkpoints go on, triggered at the running source only, and include the final
    // snapshot without waiting for the finished task.
    assert_eq!(c.tick(100), vec![triggered(2, 100)]);
    assert_eq!(c.sources(), &BTreeSet::from([SOURCE]));
    c.acknowledge(SOURCE, 2, snapshot(&["chk-2/source"]), 101);
    let actions = c.acknowledge(SINK, 2, snapshot(&["chk-2/sink"]), 102);
    assert!(matches!(&actions[..], [Action::WriteMetadata { acknowledgements, .. }] if acknowledgements.len() == 3));
    // The final snapshot is a shared file: it outlives checkpoint 1 (retained = 1).
    let actions = c.metadata_written(2, 103);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::DeleteShared { uris } if uris.iter().any(|u| u.contains("final")))),
        "{actions:?}"
    );
    assert_eq!(c.shared().references("shared/final-0-1-0"), 1);
    // Once every source finished, nothing triggers checkpoints any more.
    c.task_finished(SOURCE, Some(snapshot(&["shared/final-0-0-0"])), 200);
    assert_eq!(c.tick(1000), vec![]);
    // When the job ends, final snapshots no retained checkpoint uses go; used ones stay.
    assert_eq!(c.stop(1100), vec![delete(&["shared/final-0-0-0"])]);
    assert_eq!(c.live_files().1, BTreeSet::from(["shared/final-0-1-0".to_owned()]));
}

#[test]
fn a_late_or_repeated_acknowledgement_never_deletes_files_of_a_retained_checkpoint() {
    // Regression: a duplicated acknowledgement of a completed checkpoint deleted its files.
    let mut c = coordinator(config());
    c.tick(0);
    complete(&mut c, 1, &["chk-1/source", "shared/a"], &["chk-1/sink"], 10);
    assert_eq!(c.acknowledge(SINK, 1, snapshot(&["chk-1/sink"]), 20), vec![], "retained: nothing to delete");
    assert_eq!(c.acknowledge(SOURCE, 1, snapshot(&["chk-1/source", "shared/a"]), 20), vec![]);
    // A duplicate of an acknowledgement of a pending checkpoint changes nothing either.
    c.tick(100);
    c.acknowledge(SOURCE, 2, snapshot(&["chk-2/source"]), 101);
    assert_eq!(c.acknowledge(SOURCE, 2, snapshot(&["chk-2/source"]), 102), vec![]);
    assert_eq!(c.pending()[0].acknowledged, 1);
}

#[test]
fn a_late_acknowledgement_of_an_aborted_checkpoint_deletes_the_files_it_wrote_and_only_those() {
    // Regression: new SST files of aborted checkpoints stayed until the next restart.
    let mut c = coordinator(config());
    c.tick(0);
    complete(&mut c, 1, &["chk-1/source", "shared/a"], &[], 10);
    c.tick(100);
    decline(&mut c, 2, 150);
    // The sink's upload of 2 lands after the abort: its own file, a new SST file, and a
    // reused SST file that checkpoint 1 (retained) references.
    let mut late = snapshot(&["chk-2/sink", "shared/b"]);
    late.handles.push(StateHandle { uri: "shared/a".into(), size_bytes: 10, incremental_bytes: 0, shared: true });
    let actions = c.acknowledge(SINK, 2, late, 160);
    assert_eq!(actions, vec![Action::DeleteFiles { uris: vec!["chk-2/sink".into(), "shared/b".into()] }]);
    assert_eq!(c.shared().references("shared/a"), 1);
    // An acknowledgement naming a checkpoint never triggered is ignored.
    assert_eq!(c.acknowledge(SINK, 99, snapshot(&["chk-99/sink"]), 170), vec![]);
}

#[test]
fn a_checkpoint_that_reuses_a_discarded_shared_file_is_aborted_not_completed() {
    // Regression: with concurrent checkpoints and retained = 1, a task could reuse an SST
    // file of a checkpoint that was discarded meanwhile; completing would reference a
    // deleted file.
    let mut c = coordinator(CheckpointConfig { max_concurrent: 2, ..config() });
    c.tick(0);
    c.tick(100);
    complete(&mut c, 1, &["chk-1/source", "shared/x-1"], &[], 110);
    c.acknowledge(SINK, 2, snapshot(&["chk-2/sink"]), 120);
    let actions = c.acknowledge(SOURCE, 2, snapshot(&["chk-2/source", "shared/x-2"]), 120);
    assert!(matches!(actions[..], [Action::WriteMetadata { .. }]));
    c.tick(200);
    let actions = c.metadata_written(2, 210);
    assert!(actions.contains(&delete(&["shared/x-1"])), "1 is discarded with its file: {actions:?}");
    // Checkpoint 3's source reuses the file of checkpoint 1, gone now.
    let mut reused = snapshot(&["chk-3/source"]);
    reused.handles.push(StateHandle { uri: "shared/x-1".into(), size_bytes: 10, incremental_bytes: 0, shared: true });
    let actions = c.acknowledge(SOURCE, 3, reused, 220);
    let reason = AbortReason::ReusedDiscardedFile { task: SOURCE, uri: "shared/x-1".into() };
    assert_eq!(actions, vec![aborted(3, reason.clone())]);
    assert!(!reason.counts_as_failure());
    assert!(c.latest_completed().is_some_and(|l| l.checkpoint_id == 2));
}

#[test]
fn checkpoint_ids_beyond_the_reserved_ones_wait_for_a_reservation() {
    let mut c = coordinator(config());
    c.limit_ids(2);
    assert_eq!(c.tick(0), vec![triggered(1, 0)]);
    complete(&mut c, 1, &["chk-1/source"], &[], 10);
    assert_eq!(c.tick(100), vec![Action::ReserveIds { up_to: 2 + ID_BLOCK }]);
    assert_eq!(c.tick(200), vec![], "asked once until answered");
    assert_eq!(c.trigger_now(200, Checkpoint), Err(TriggerRefused::NoIdReserved));
    c.ids_reserved(2 + ID_BLOCK);
    assert_eq!(c.tick(300), vec![triggered(2, 300)]);
}

#[test]
fn a_recovered_coordinator_keeps_retained_checkpoints_and_never_reuses_an_id() {
    let acks = BTreeMap::from([(SOURCE, snapshot(&["chk-7/source", "shared/s"])), (SINK, snapshot(&["chk-7/sink"]))]);
    let seven = CompletedCheckpoint::new(7, Checkpoint, 1, 2, acks);
    let mut c = Coordinator::recover(config(), vec![seven], 2001, 2001).unwrap();
    assert_eq!(c.latest_completed_id(), Some(7));
    assert_eq!(c.shared().references("shared/s"), 1);
    c.new_attempt([SOURCE, SINK].into(), [SOURCE].into(), Some(restored(7)), 0);
    assert_eq!(c.tick(0), vec![Action::ReserveIds { up_to: 2001 + ID_BLOCK }]);
    c.ids_reserved(2001 + ID_BLOCK);
    assert_eq!(c.tick(1), vec![triggered(2001, 1)]);
    let (dirs, files) = c.live_files();
    assert_eq!(dirs, BTreeSet::from([7, 2001]));
    assert!(files.contains("shared/s"));
}

#[test]
fn a_new_attempt_aborts_old_checkpoints_and_keeps_completed_ones_and_ids() {
    let mut c = coordinator(CheckpointConfig { tolerable_failures: 0, ..config() });
    c.tick(0);
    complete(&mut c, 1, &["chk-1/source", "shared/a"], &[], 10);
    assert_eq!(c.tick(100), vec![triggered(2, 100)]);
    c.task_finished(SINK, None, 105);
    let actions = c.new_attempt([STRANGER].into(), [STRANGER].into(), Some(restored(1)), 110);
    assert!(actions.is_empty(), "checkpoint 2 was already aborted: {actions:?}");
    assert_eq!(c.tick(110), vec![triggered(3, 110)], "triggers resume at once in the new attempt");
    assert_eq!((c.stats().restored, c.restored()), (1, Some(&restored(1))));
    let actions = c.new_attempt([SOURCE, SINK].into(), [SOURCE].into(), Some(restored(1)), 120);
    assert_eq!(actions, vec![aborted(3, AbortReason::Restarted)], "a restart is not a checkpoint failure");
    assert_eq!(c.latest_completed_id(), Some(1));
    assert_eq!(c.shared().references("shared/a"), 1);
}

#[test]
fn discarding_an_unusable_completed_checkpoint_falls_back_to_the_previous_one() {
    let mut c = coordinator(CheckpointConfig { retained: 2, ..config() });
    c.tick(0);
    complete(&mut c, 1, &["chk-1/source", "shared/a"], &[], 10);
    c.tick(100);
    complete(&mut c, 2, &["chk-2/source", "shared/a", "shared/b"], &[], 110);
    assert_eq!(c.discard_completed(2), vec![Action::Discard { checkpoint_id: 2 }, delete(&["shared/b"])]);
    assert_eq!(c.latest_completed_id(), Some(1));
    assert_eq!(c.shared().references("shared/a"), 1);
    assert_eq!(c.discard_completed(2), vec![]);
    assert_eq!(c.discard_completed(1), vec![Action::Discard { checkpoint_id: 1 }, delete(&["shared/a"])]);
    assert_eq!(c.latest_completed_id(), None);
}

#[test]
fn a_failed_metadata_write_aborts_the_checkpoint_and_counts_as_a_failure() {
    let mut c = coordinator(CheckpointConfig { tolerable_failures: 0, ..config() });
    c.tick(0);
    assert_eq!(c.metadata_failed(1, "disk full".into(), 5), vec![], "not all tasks acknowledged yet");
    ack_all(&mut c, 1, &["chk-1/source"], &[], 10);
    let actions = c.metadata_failed(1, "disk full".into(), 40);
    assert_eq!(actions[0], aborted(1, AbortReason::MetadataFailed("disk full".into())));
    assert!(matches!(&actions[1..], [Action::FailJob { reason }] if reason.contains("disk full")));
    assert_eq!(c.metadata_written(1, 50), vec![]);
    assert!(c.latest_completed().is_none());
    assert_eq!((c.stats().completed, c.stats().failed), (0, 1));
    let entry = c.history().next().unwrap();
    assert_eq!((entry.status, entry.end_ms, entry.state_size_bytes), (CheckpointStatus::Failed, 40, 10));
    assert!(entry.failure.as_deref().unwrap().contains("disk full"));
}

#[test]
fn a_decline_aborts_the_checkpoint_and_the_next_one_is_still_triggered() {
    let mut c = coordinator(config());
    assert_eq!(c.tick(0), vec![triggered(1, 0)]);
    assert_eq!(decline(&mut c, 1, 10), vec![declined(1)]);
    assert_eq!(c.acknowledge(SOURCE, 1, snapshot(&[]), 20), vec![]);
    assert_eq!(c.tick(50), vec![], "the interval counts from the previous trigger");
    assert_eq!(c.tick(100), vec![triggered(2, 100)]);
}

#[test]
fn a_checkpoint_expires_on_the_first_tick_after_its_timeout() {
    let mut c = coordinator(config());
    c.tick(0);
    c.acknowledge(SOURCE, 1, snapshot(&[]), 10);
    assert_eq!(c.tick(999), vec![]);
    assert_eq!(c.tick(1000), vec![aborted(1, AbortReason::Expired), triggered(2, 1000)]);
    assert_eq!(c.acknowledge(SINK, 1, snapshot(&[]), 1001), vec![], "too late");
    // Once every task acknowledged, the metadata write is the job master's: it does not expire.
    ack_all(&mut c, 2, &[], &[], 1010);
    assert_eq!(c.tick(2500), vec![]);
    assert_eq!(c.metadata_written(2, 2600), vec![Action::NotifyComplete { checkpoint_id: 2 }]);
}

#[test]
fn a_task_failure_aborts_the_checkpoints_waiting_on_it_without_counting_as_a_failure() {
    let mut c = coordinator(CheckpointConfig { max_concurrent: 2, tolerable_failures: 1, ..config() });
    c.tick(0);
    c.acknowledge(SINK, 1, snapshot(&[]), 10);
    c.tick(100);
    assert_eq!(c.task_failed(SINK, 110), vec![aborted(2, AbortReason::TaskFailed(SINK))], "1 has its ack");
    assert_eq!(c.task_failed(SOURCE, 120), vec![aborted(1, AbortReason::TaskFailed(SOURCE))]);
    assert_eq!(c.tick(200), vec![triggered(3, 200)]);
    assert_eq!(c.task_failed(SOURCE, 210), vec![aborted(3, AbortReason::TaskFailed(SOURCE))]);
    // Three task failures did not count: the first counted failure is tolerated, the second is not.
    assert_eq!(c.tick(300), vec![triggered(4, 300)]);
    assert_eq!(decline(&mut c, 4, 310), vec![declined(4)]);
    assert_eq!(c.tick(400), vec![triggered(5, 400)]);
    let actions = decline(&mut c, 5, 410);
    assert_eq!(actions[0], declined(5));
    assert!(matches!(&actions[1..], [a] if is_fail_job(a)));
}

#[test]
fn completing_a_checkpoint_subsumes_older_pending_ones_and_discards_beyond_retained() {
    let mut c = coordinator(CheckpointConfig { max_concurrent: 3, ..config() });
    c.tick(0);
    c.tick(100);
    c.tick(200);
    ack_all(&mut c, 1, &[], &[], 210);
    let subsumed = aborted(2, AbortReason::Subsumed);
    assert_eq!(complete(&mut c, 3, &[], &[], 250), vec![Action::NotifyComplete { checkpoint_id: 3 }, subsumed]);
    // 1 was writing its metadata: it is subsumed when the job master reports.
    assert_eq!(c.pending().iter().map(|p| p.checkpoint_id).collect::<Vec<_>>(), vec![1]);
    assert_eq!(c.metadata_written(1, 270), vec![aborted(1, AbortReason::Subsumed)]);
    assert_eq!(c.tick(300), vec![triggered(4, 300)]);
    let actions = complete(&mut c, 4, &[], &[], 350);
    assert_eq!(actions, vec![Action::NotifyComplete { checkpoint_id: 4 }, Action::Discard { checkpoint_id: 3 }]);
    assert_eq!(c.completed().iter().map(|c| c.checkpoint_id).collect::<Vec<_>>(), vec![4]);
    assert_eq!(c.stats(), CheckpointCounts { restored: 0, total: 4, in_progress: 0, completed: 2, failed: 2 });
}

#[test]
fn shared_files_are_deleted_once_no_retained_checkpoint_uses_them() {
    let mut c = coordinator(config());
    c.tick(0);
    let actions = complete(&mut c, 1, &["shared/a", "chk-1/s"], &["shared/b"], 10);
    assert_eq!(actions, vec![Action::NotifyComplete { checkpoint_id: 1 }]);
    c.tick(100);
    // 2 reuses a: only b is no longer used.
    let actions = complete(&mut c, 2, &["shared/a", "shared/c"], &["chk-2/k"], 110);
    let notify = |checkpoint_id| Action::NotifyComplete { checkpoint_id };
    assert_eq!(actions, vec![notify(2), Action::Discard { checkpoint_id: 1 }, delete(&["shared/b"])]);
    assert_eq!(c.shared().references("shared/a"), 1);
    c.tick(200);
    let actions = complete(&mut c, 3, &["shared/c"], &["shared/d"], 210);
    assert_eq!(actions, vec![notify(3), Action::Discard { checkpoint_id: 2 }, delete(&["shared/a"])]);
    assert_eq!((c.shared().references("shared/c"), c.shared().references("shared/a")), (1, 0));
}

#[test]
fn an_aborted_checkpoint_deletes_only_shared_files_nobody_uses() {
    let mut c = coordinator(CheckpointConfig { max_concurrent: 2, ..config() });
    c.tick(0);
    complete(&mut c, 1, &["shared/a"], &[], 10);
    c.tick(100);
    c.tick(200);
    c.acknowledge(SOURCE, 2, snapshot(&["shared/a", "shared/x", "chk-2/s"]), 210);
    c.acknowledge(SOURCE, 3, snapshot(&["shared/a", "shared/x", "shared/y"]), 220);
    assert_eq!(decline(&mut c, 2, 230), vec![declined(2)], "a is retained, x used by 3");
    assert_eq!(decline(&mut c, 3, 240), vec![declined(3), delete(&["shared/x", "shared/y"])]);
    assert_eq!(c.shared().references("shared/a"), 1);
}

#[test]
fn max_concurrent_limits_overlapping_checkpoints() {
    let mut c = coordinator(config());
    assert_eq!(c.tick(0), vec![triggered(1, 0)]);
    assert_eq!(c.tick(100), vec![]);
    assert_eq!(c.tick(200), vec![]);
    assert_eq!(c.trigger_now(250, Checkpoint), Err(TriggerRefused::TooManyPending { pending: 1, max: 1 }));
    complete(&mut c, 1, &[], &[], 300);
    assert_eq!(c.tick(300), vec![triggered(2, 300)]);

    let mut c = coordinator(CheckpointConfig { max_concurrent: 2, ..config() });
    assert_eq!(c.tick(0), vec![triggered(1, 0)]);
    assert_eq!(c.tick(100), vec![triggered(2, 100)]);
    assert_eq!(c.tick(200), vec![]);
    assert_eq!(complete(&mut c, 1, &[], &[], 250), vec![Action::NotifyComplete { checkpoint_id: 1 }]);
    assert_eq!(c.tick(250), vec![triggered(3, 250)]);
}

#[test]
fn min_pause_delays_the_next_trigger_after_a_completion_or_an_abort() {
    let mut c = coordinator(CheckpointConfig { min_pause_ms: 300, ..config() });
    c.tick(0);
    complete(&mut c, 1, &[], &[], 50);
    assert_eq!(c.tick(100), vec![], "the interval elapsed, not the pause");
    assert_eq!(c.tick(349), vec![]);
    assert_eq!(c.tick(350), vec![triggered(2, 350)]);
    decline(&mut c, 2, 360);
    assert_eq!(c.tick(659), vec![]);
    assert_eq!(c.tick(660), vec![triggered(3, 660)]);
}

#[test]
fn one_more_than_the_tolerable_consecutive_failures_fails_the_job() {
    let mut c = coordinator(CheckpointConfig { tolerable_failures: 2, ..config() });
    c.tick(0);
    assert_eq!(decline(&mut c, 1, 10), vec![declined(1)]);
    assert_eq!(c.tick(100), vec![triggered(2, 100)]);
    assert_eq!(c.tick(1100), vec![aborted(2, AbortReason::Expired), triggered(3, 1100)]);
    let actions = c.tick(2100);
    assert_eq!(actions[0], aborted(3, AbortReason::Expired));
    assert!(matches!(&actions[1..], [Action::FailJob { reason }] if reason.contains("more than 2")), "no trigger");
    // The count starts again.
    assert_eq!(c.tick(2101), vec![triggered(4, 2101)]);
    assert_eq!(decline(&mut c, 4, 2110), vec![declined(4)]);
}

#[test]
fn a_completed_checkpoint_resets_the_failure_count() {
    let mut c = coordinator(CheckpointConfig { tolerable_failures: 2, ..config() });
    for (id, now) in [(1, 0), (2, 100)] {
        c.tick(now);
        assert_eq!(decline(&mut c, id, now + 10), vec![declined(id)]);
    }
    c.tick(200);
    complete(&mut c, 3, &[], &[], 210);
    for (id, now) in [(4, 300), (5, 400)] {
        c.tick(now);
        assert_eq!(decline(&mut c, id, now + 10), vec![declined(id)]);
    }
    c.tick(500);
    assert!(matches!(&decline(&mut c, 6, 510)[..], [abort, fail] if *abort == declined(6) && is_fail_job(fail)));
}

#[test]
fn failures_of_checkpoints_older_than_the_latest_completed_do_not_count() {
    let mut c = coordinator(CheckpointConfig { max_concurrent: 2, tolerable_failures: 0, ..config() });
    c.tick(0);
    c.tick(100);
    ack_all(&mut c, 1, &[], &[], 110);
    assert_eq!(complete(&mut c, 2, &[], &[], 120), vec![Action::NotifyComplete { checkpoint_id: 2 }]);
    let failed = aborted(1, AbortReason::MetadataFailed("disk full".into()));
    assert_eq!(c.metadata_failed(1, "disk full".into(), 130), vec![failed]);
}

#[test]
fn unknown_duplicate_and_late_messages_are_ignored() {
    let mut c = coordinator(config());
    assert_eq!(c.acknowledge(SOURCE, 1, snapshot(&[]), 0), vec![]);
    assert_eq!(decline(&mut c, 1, 0), vec![]);
    assert_eq!(c.metadata_written(1, 0), vec![]);
    assert_eq!(c.metadata_failed(1, "?".into(), 0), vec![]);
    c.tick(0);
    assert_eq!(c.acknowledge(STRANGER, 1, snapshot(&[]), 1), vec![]);
    assert_eq!(c.decline(STRANGER, 1, "?".into(), 1), vec![]);
    assert_eq!(c.task_failed(STRANGER, 1), vec![]);
    assert_eq!(c.acknowledge(SOURCE, 7, snapshot(&[]), 1), vec![]);
    assert_eq!(c.metadata_written(1, 1), vec![], "still waiting for acknowledgements");
    assert_eq!(c.acknowledge(SOURCE, 1, snapshot(&[]), 2), vec![]);
    assert_eq!(c.acknowledge(SOURCE, 1, snapshot(&[]), 3), vec![]);
    assert_eq!(c.pending()[0].acknowledged, 1);
    assert_eq!(c.acknowledge(SINK, 1, snapshot(&[]), 4).len(), 1);
    assert_eq!(c.acknowledge(SINK, 1, snapshot(&[]), 5), vec![]);
    assert_eq!(c.decline(SOURCE, 1, "?".into(), 5), vec![], "every task acknowledged");
    assert_eq!(c.task_failed(SOURCE, 5), vec![]);
    c.metadata_written(1, 6);
    assert_eq!(c.acknowledge(SINK, 1, snapshot(&[]), 7), vec![]);
    assert_eq!(decline(&mut c, 1, 7), vec![]);
    assert_eq!(c.metadata_failed(1, "?".into(), 7), vec![]);
    c.tick(100);
    decline(&mut c, 2, 110);
    assert_eq!(c.acknowledge(SOURCE, 2, snapshot(&[]), 111), vec![]);
    assert_eq!(decline(&mut c, 2, 112), vec![]);
    assert_eq!(c.tick(50), vec![], "time going backwards triggers nothing");
    assert_eq!((c.stats().total, c.stats().completed, c.stats().failed), (2, 1, 1));
}

#[test]
fn ids_continue_after_the_restored_checkpoint() {
    let mut c = Coordinator::new(config(), [SOURCE, SINK].into(), [SOURCE].into(), Some(41)).unwrap();
    assert_eq!((c.stats().restored, c.latest_completed_id()), (0, Some(41)), "restores count when an attempt deploys");
    assert_eq!(c.acknowledge(SOURCE, 41, snapshot(&[]), 0), vec![]);
    assert_eq!(c.tick(0), vec![triggered(42, 0)]);
    complete(&mut c, 42, &[], &[], 10);
    assert_eq!(c.latest_completed_id(), Some(42));
    assert_eq!(c.tick(100), vec![triggered(43, 100)]);
}

#[test]
fn savepoints_are_never_subsumed_retained_or_counted_as_failures() {
    let mut c = coordinator(CheckpointConfig { max_concurrent: 2, tolerable_failures: 0, ..config() });
    c.tick(0);
    let savepoint = Action::Trigger { checkpoint_id: 2, kind: Savepoint, timestamp_ms: 10 };
    assert_eq!(c.trigger_now(10, Savepoint), Ok(vec![savepoint]));
    assert_eq!(complete(&mut c, 2, &[], &[], 30), vec![Action::NotifyComplete { checkpoint_id: 2 }]);
    assert!(c.completed().is_empty() && c.latest_completed_id().is_none());
    assert_eq!(complete(&mut c, 1, &[], &[], 40), vec![Action::NotifyComplete { checkpoint_id: 1 }]);
    assert_eq!(c.latest_completed_id(), Some(1));
    c.trigger_now(50, Savepoint).unwrap();
    assert_eq!(decline(&mut c, 3, 60), vec![declined(3)]);
    let history: Vec<_> = c.history().map(|h| (h.checkpoint_id, h.kind, h.status)).collect();
    let (completed, failed) = (CheckpointStatus::Completed, CheckpointStatus::Failed);
    assert_eq!(history, vec![(3, Savepoint, failed), (1, Checkpoint, completed), (2, Savepoint, completed)]);
}

#[test]
fn a_savepoint_runs_beside_periodic_checkpoints_without_moving_their_schedule() {
    // Regression (issue 11): with `max_concurrent = 1` a savepoint was refused while a periodic
    // checkpoint was pending, counted as one while it ran, and moved the periodic schedule.
    let mut c = coordinator(config());
    assert_eq!(c.tick(0), vec![triggered(1, 0)]);
    let savepoint = Action::Trigger { checkpoint_id: 2, kind: Savepoint, timestamp_ms: 10 };
    assert_eq!(c.trigger_now(10, Savepoint), Ok(vec![savepoint]));
    assert_eq!(c.trigger_now(20, Savepoint), Err(TriggerRefused::SavepointInProgress(2)));
    assert_eq!(c.trigger_now(20, Checkpoint), Err(TriggerRefused::TooManyPending { pending: 1, max: 1 }));
    assert_eq!(complete(&mut c, 1, &[], &[], 50), vec![Action::NotifyComplete { checkpoint_id: 1 }]);
    // The schedule follows checkpoint 1 (triggered at 0), not the savepoint (10), which is
    // still running.
    assert_eq!(c.tick(99), vec![]);
    assert_eq!(c.tick(100), vec![triggered(3, 100)]);
    assert_eq!(complete(&mut c, 2, &[], &[], 120), vec![Action::NotifyComplete { checkpoint_id: 2 }]);
    assert_eq!(c.latest_completed_id(), Some(1), "a savepoint is not a restore point of the job");
    let discard = Action::Discard { checkpoint_id: 1 };
    assert_eq!(complete(&mut c, 3, &[], &[], 150), vec![Action::NotifyComplete { checkpoint_id: 3 }, discard]);
    assert_eq!(c.tick(199), vec![]);
    assert_eq!(c.tick(200), vec![triggered(4, 200)]);
}

#[test]
fn stop_aborts_the_waiting_checkpoints_and_triggers_nothing_more() {
    let mut c = coordinator(CheckpointConfig { max_concurrent: 2, ..config() });
    c.tick(0);
    c.tick(100);
    ack_all(&mut c, 1, &[], &[], 110);
    assert_eq!(c.stop(150), vec![aborted(2, AbortReason::Stopped)]);
    assert_eq!(c.tick(5000), vec![]);
    assert_eq!(c.trigger_now(5000, Savepoint), Err(TriggerRefused::Stopped));
    assert_eq!(c.metadata_written(1, 5001), vec![Action::NotifyComplete { checkpoint_id: 1 }]);
    assert_eq!(c.stop(5002), vec![]);
}

#[test]
fn the_history_keeps_the_latest_finished_checkpoints() {
    let mut c = coordinator(CheckpointConfig { tolerable_failures: 100, ..config() });
    for id in 1..=40 {
        c.tick(id as i64 * 100);
        decline(&mut c, id, id as i64 * 100 + 1);
    }
    let ids: Vec<u64> = c.history().map(|h| h.checkpoint_id).collect();
    assert_eq!(ids, (9..=40).rev().collect::<Vec<_>>());
}

#[test]
fn nonsense_configs_are_rejected() {
    assert_eq!(CheckpointConfig::default().validate(), Ok(()));
    let bad = [
        CheckpointConfig { interval_ms: 0, ..config() },
        CheckpointConfig { timeout_ms: -1, ..config() },
        CheckpointConfig { max_concurrent: 0, ..config() },
        CheckpointConfig { min_pause_ms: -5, ..config() },
        CheckpointConfig { retained: 0, ..config() },
    ];
    let fields: Vec<_> = bad.iter().map(|c| c.validate().unwrap_err().field).collect();
    assert_eq!(fields, ["interval_ms", "timeout_ms", "max_concurrent", "min_pause_ms", "retained"]);
    assert!(Coordinator::new(bad[0].clone(), BTreeSet::new(), BTreeSet::new(), None).is_err());
}

#[test]
fn a_terminal_checkpoint_of_the_final_snapshots_is_written_at_once_when_every_task_finished() {
    // Regression (found by the Kafka exactly-once test): without it, a failed final commit
    // restored the last periodic checkpoint and ran the job's tail again, whose records took
    // other round-robin routes to sinks that had already committed everything.
    let mut c = coordinator(config());
    assert_eq!(c.tick(0), vec![triggered(1, 0)]);
    complete(&mut c, 1, &[], &[], 10);
    assert_eq!(c.terminal_checkpoint(20), None, "tasks still run");
    c.task_finished(SOURCE, Some(snapshot(&["shared/final-0"])), 30);
    assert_eq!(c.terminal_checkpoint(40), None, "the sink still runs");
    c.task_finished(SINK, Some(snapshot(&["shared/final-1"])), 50);
    let (id, actions) = c.terminal_checkpoint(60).expect("every task finished");
    assert_eq!(id, 2);
    let Action::WriteMetadata { checkpoint_id, acknowledgements, .. } = &actions[1] else { panic!("{actions:?}") };
    assert_eq!(*checkpoint_id, 2);
    assert_eq!(acknowledgements.len(), 2, "both final snapshots, nothing asked of a task");
    assert_eq!(
        c.metadata_written(2, 70),
        vec![Action::NotifyComplete { checkpoint_id: 2 }, Action::Discard { checkpoint_id: 1 }]
    );
    assert_eq!(c.latest_completed_id(), Some(2));

    let mut c = coordinator(config());
    c.task_finished(SOURCE, Some(snapshot(&["shared/final-0"])), 30);
    c.task_finished(SINK, None, 50);
    assert_eq!(c.terminal_checkpoint(60), None, "a task finished without a final snapshot");
}
