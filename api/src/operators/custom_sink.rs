//! The operators of sinks the job implements: [`SinkFunction`] (at least once) and
//! [`TwoPhaseCommitSink`] (exactly once).

use crate::chain::{Downstream, StreamRecord};
use crate::codec::{decode_state_value, encode_state_value};
use crate::error::{Error, Result};
use crate::functions::RuntimeContext;
use crate::plugin::{DropGuarded, guarded};
use crate::runtime::{CheckpointCommitter, CheckpointId, FINAL_CHECKPOINT, OperatorSnapshot, TaskRuntime};
use crate::sink::{Committer, SinkFunction, TwoPhaseCommitSink};
use crate::time::{NO_TIMESTAMP, Timestamp};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Hands every record of `batch` to `write` with its timestamp (`None` without one), counting
/// them as records out.
fn write_each<T>(
    batch: &mut Vec<StreamRecord<T>>,
    rt: &mut dyn TaskRuntime,
    name: &str,
    mut write: impl FnMut(T, Option<Timestamp>) -> Result<()>,
) -> Result<()> {
    rt.add_records_out(batch.len() as u64);
    for record in batch.drain(..) {
        let timestamp = (record.timestamp != NO_TIMESTAMP).then_some(record.timestamp);
        write(record.value, timestamp).map_err(|e| e.in_operator(name))?;
    }
    Ok(())
}

pub(crate) struct CustomSinkOperator<S> {
    pub(crate) sink: S,
    pub(crate) name: String,
}

impl<T: crate::Data, S: SinkFunction<T>> Downstream<T> for CustomSinkOperator<S> {
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.sink.open(&RuntimeContext { rt, operator: &self.name })
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        let sink = &mut self.sink;
        write_each(batch, rt, &self.name, |value, timestamp| sink.write(value, timestamp))
    }

    crate::operators::sink_events!();
    fn end(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        self.sink.flush().map_err(|e| e.in_operator(&self.name))
    }
    fn close(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        self.sink.close().map_err(|e| e.in_operator(&self.name))
    }
    fn snapshot(
        &mut self,
        _checkpoint: CheckpointId,
        _into: &mut Vec<OperatorSnapshot>,
        _rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        // Everything before the barrier is durable before the barrier goes on.
        self.sink.flush().map_err(|e| e.in_operator(&self.name))
    }
}

/// What one subtask of a [`TwoPhaseCommitSink`] pre-committed and has not committed yet, by
/// checkpoint, with its committer: shared by the operator (which adds to it at barriers and
/// stores it in every checkpoint) and the runtime (which commits it when checkpoints complete,
/// also after the task ended).
pub(crate) struct PendingCommits<C, K> {
    committables: Mutex<BTreeMap<CheckpointId, Vec<C>>>,
    committer: K,
    operator: String,
}

impl<C, K: Committer<C>> PendingCommits<C, K> {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<CheckpointId, Vec<C>>> {
        self.committables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, checkpoint: CheckpointId, committables: Vec<C>) {
        if !committables.is_empty() {
            self.lock().entry(checkpoint).or_default().extend(committables);
        }
    }

    /// Commits every committable of checkpoints `<= checkpoint`, oldest first, and forgets
    /// them once the committer succeeded. The lock is held throughout: a barrier that comes
    /// meanwhile waits, so every checkpoint holds what is not committed yet.
    fn commit_up_to(&self, checkpoint: CheckpointId) -> Result<()> {
        let mut pending = self.lock();
        let due: Vec<(CheckpointId, usize)> = pending.range(..=checkpoint).map(|(c, v)| (*c, v.len())).collect();
        if due.is_empty() {
            return Ok(());
        }
        let batch: Vec<C> = due.iter().flat_map(|(c, _)| pending.remove(c).unwrap_or_default()).collect();
        if let Err(e) = guarded(&self.operator, || self.committer.commit(&batch)) {
            // Back in place by checkpoint: the next completion (or a restore) tries again.
            let mut batch = batch.into_iter();
            for (c, len) in due {
                pending.insert(c, batch.by_ref().take(len).collect());
            }
            return Err(e.in_operator(&self.operator));
        }
        Ok(())
    }
}

impl<C: Send + 'static, K: Committer<C>> CheckpointCommitter for DropGuarded<PendingCommits<C, K>> {
    fn commit(&self, checkpoint: CheckpointId) -> Result<()> {
        self.commit_up_to(checkpoint)
    }
}

/// A [`TwoPhaseCommitSink`]'s pending commits, as shared with the runtime.
type SharedPending<S, T> = Arc<
    DropGuarded<PendingCommits<<S as TwoPhaseCommitSink<T>>::Committable, <S as TwoPhaseCommitSink<T>>::Committer>>,
>;

/// The state of a [`TwoPhaseCommitSink`]'s subtask in a checkpoint: its index and what it had
/// not committed, by checkpoint.
type PendingState<C> = (u32, BTreeMap<CheckpointId, Vec<C>>);

/// The operator of a [`TwoPhaseCommitSink`].
pub(crate) struct TwoPhaseSinkOperator<S: TwoPhaseCommitSink<T>, T> {
    pub(crate) sink: S,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) pending: Option<SharedPending<S, T>>,
    pub(crate) subtask: u32,
    pub(crate) _records: std::marker::PhantomData<fn(T)>,
}

impl<T, S: TwoPhaseCommitSink<T>> TwoPhaseSinkOperator<S, T> {
    pub(crate) fn new(sink: S, name: &str, uid: &str) -> Self {
        Self {
            sink,
            name: name.to_owned(),
            uid: uid.to_owned(),
            pending: None,
            subtask: 0,
            _records: std::marker::PhantomData,
        }
    }

    fn pending(&self) -> Result<&PendingCommits<S::Committable, S::Committer>> {
        self.pending.as_deref().map(|p| &**p).ok_or_else(|| Error::runtime(&self.name, "the sink is not open"))
    }
}

impl<T: crate::Data, S: TwoPhaseCommitSink<T>> Downstream<T> for TwoPhaseSinkOperator<S, T> {
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        let (subtask, parallelism) = (rt.info().subtask, rt.info().parallelism);
        self.subtask = subtask;
        let pending = PendingCommits {
            committables: Mutex::new(BTreeMap::new()),
            committer: self.sink.committer(),
            operator: self.name.clone(),
        };
        // What the checkpoint restored from had not committed: this subtask's own, or after a
        // change of parallelism, that of every old subtask `j` with `j % parallelism ==
        // subtask`. Its checkpoint is complete, so it is committed now, before `open` may
        // discard what earlier runs left staged.
        if let Some(restored) = rt.restored_state(&self.uid) {
            for bytes in &restored.operator_states {
                let (old, by_checkpoint): PendingState<S::Committable> =
                    decode_state_value(bytes, "a sink's pending commits")?;
                if old % parallelism == subtask {
                    for (checkpoint, committables) in by_checkpoint {
                        pending.add(checkpoint, committables);
                    }
                }
            }
            pending.commit_up_to(FINAL_CHECKPOINT).map_err(|e| {
                Error::runtime(&self.name, format!("cannot commit what the restored checkpoint pre-committed: {e}"))
            })?;
        }
        let pending = Arc::new(DropGuarded::new(pending, format!("the committer of sink '{}'", self.name)));
        rt.add_committer(pending.clone())?;
        self.pending = Some(pending);
        self.sink.open(&RuntimeContext { rt, operator: &self.name }).map_err(|e| e.in_operator(&self.name))
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        let sink = &mut self.sink;
        write_each(batch, rt, &self.name, |value, timestamp| sink.write(value, timestamp))
    }

    crate::operators::sink_events!();
    fn end(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        // The last transaction: committed when the whole job has finished.
        let committables = self.sink.pre_commit(FINAL_CHECKPOINT).map_err(|e| e.in_operator(&self.name))?;
        self.pending()?.add(FINAL_CHECKPOINT, committables);
        Ok(())
    }
    fn close(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        self.sink.close().map_err(|e| e.in_operator(&self.name))
    }
    fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        _rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        let committables = self.sink.pre_commit(checkpoint).map_err(|e| e.in_operator(&self.name))?;
        let pending = self.pending()?;
        pending.add(checkpoint, committables);
        let mut operator_state = Vec::new();
        encode_state_value(&(self.subtask, &*pending.lock()), &mut operator_state, "a sink's pending commits")?;
        into.push(OperatorSnapshot { uid: self.uid.clone(), keyed: Vec::new(), operator_state });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::testing::TestRuntime;
    use crate::runtime::RestoredState;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// A transaction: (subtask, checkpoint) and its records.
    type Txn = ((u32, CheckpointId), Vec<u64>);

    /// What the committer made visible, by transaction (a set: commits are idempotent), and
    /// how its next commits behave (0: succeed, 1: fail, 2: panic).
    type Visible = BTreeMap<(u32, CheckpointId), Vec<u64>>;

    #[derive(Clone, Default)]
    struct External {
        visible: Arc<Mutex<Visible>>,
        mode: Arc<AtomicU8>,
    }

    impl External {
        fn visible(&self) -> BTreeSet<u64> {
            self.visible.lock().unwrap().values().flatten().copied().collect()
        }
    }

    impl Committer<Txn> for External {
        fn commit(&self, committables: &[Txn]) -> Result<()> {
            match self.mode.load(Ordering::SeqCst) {
                1 => return Err(Error::user("the external system is down")),
                2 => panic!("committer bug"),
                _ => {}
            }
            let mut visible = self.visible.lock().unwrap();
            for (id, records) in committables {
                visible.insert(*id, records.clone());
            }
            Ok(())
        }
    }

    #[derive(Clone)]
    struct Buffering {
        open: Vec<u64>,
        subtask: u32,
        external: External,
    }

    impl TwoPhaseCommitSink<u64> for Buffering {
        type Committable = Txn;
        type Committer = External;
        fn open(&mut self, ctx: &RuntimeContext<'_>) -> Result<()> {
            self.subtask = ctx.task_info().subtask;
            Ok(())
        }
        fn write(&mut self, value: u64, _timestamp: Option<Timestamp>) -> Result<()> {
            self.open.push(value);
            Ok(())
        }
        fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Vec<Txn>> {
            let records = std::mem::take(&mut self.open);
            Ok(if records.is_empty() { Vec::new() } else { vec![((self.subtask, checkpoint), records)] })
        }
        fn committer(&self) -> External {
            self.external.clone()
        }
    }

    fn operator(external: &External) -> TwoPhaseSinkOperator<Buffering, u64> {
        let sink = Buffering { open: Vec::new(), subtask: 0, external: external.clone() };
        TwoPhaseSinkOperator::new(sink, "sink", "sink-uid")
    }

    fn write(op: &mut TwoPhaseSinkOperator<Buffering, u64>, values: &[u64], rt: &mut TestRuntime) {
        let mut batch = values.iter().map(|v| StreamRecord { timestamp: NO_TIMESTAMP, value: *v }).collect();
        op.push(&mut batch, rt).unwrap();
    }

    fn snapshot(
        op: &mut TwoPhaseSinkOperator<Buffering, u64>,
        checkpoint: CheckpointId,
        rt: &mut TestRuntime,
    ) -> OperatorSnapshot {
        let mut into = Vec::new();
        op.snapshot(checkpoint, &mut into, rt).unwrap();
        into.pop().unwrap()
    }

    fn set(values: impl IntoIterator<Item = u64>) -> BTreeSet<u64> {
        values.into_iter().collect()
    }

    #[test]
    fn records_become_visible_only_when_their_checkpoint_completes_and_failed_commits_are_retried() {
        let external = External::default();
        let mut rt = TestRuntime::new(0, 1, true);
        let mut op = operator(&external);
        op.open(&mut rt).unwrap();
        let committer = rt.committers[0].clone();
        write(&mut op, &[1, 2], &mut rt);
        snapshot(&mut op, 1, &mut rt);
        write(&mut op, &[3], &mut rt);
        snapshot(&mut op, 2, &mut rt);
        write(&mut op, &[4], &mut rt);
        assert!(external.visible().is_empty(), "nothing is visible before a checkpoint completes");
        committer.commit(1).unwrap();
        assert_eq!(external.visible(), set([1, 2]), "checkpoint 1's transaction, not 2's");
        // Checkpoint 2's notification fails, then one panics: nothing is lost, the next
        // completion commits it with its own.
        external.mode.store(1, Ordering::SeqCst);
        let e = committer.commit(2).unwrap_err().to_string();
        assert!(e.contains("the external system is down") && e.contains("sink"), "{e}");
        external.mode.store(2, Ordering::SeqCst);
        let e = committer.commit(2).unwrap_err().to_string();
        assert!(e.contains("committer bug"), "{e}");
        external.mode.store(0, Ordering::SeqCst);
        assert_eq!(external.visible(), set([1, 2]));
        snapshot(&mut op, 3, &mut rt);
        committer.commit(3).unwrap();
        assert_eq!(external.visible(), set([1, 2, 3, 4]));
        // The end of the input: the last transaction waits for the job's final commit.
        write(&mut op, &[5], &mut rt);
        op.end(&mut rt).unwrap();
        op.close(&mut rt).unwrap();
        drop(op);
        assert_eq!(external.visible(), set([1, 2, 3, 4]));
        committer.commit(FINAL_CHECKPOINT).unwrap();
        assert_eq!(external.visible(), set([1, 2, 3, 4, 5]), "the committer outlives the operator");
    }

    #[test]
    fn a_restore_commits_what_its_checkpoint_pre_committed_and_never_what_came_after() {
        let external = External::default();
        let mut rt = TestRuntime::new(0, 1, true);
        let mut op = operator(&external);
        op.open(&mut rt).unwrap();
        write(&mut op, &[1], &mut rt);
        snapshot(&mut op, 1, &mut rt);
        rt.committers[0].commit(1).unwrap();
        write(&mut op, &[2], &mut rt);
        let state = snapshot(&mut op, 2, &mut rt);
        write(&mut op, &[3], &mut rt);
        snapshot(&mut op, 3, &mut rt);
        write(&mut op, &[4], &mut rt);
        // Checkpoint 2 completes, the process dies before its commit; checkpoint 3 never
        // completes. The restore from 2 commits 2's transaction (1's was committed and left
        // the state) and nothing of 3's or later.
        drop(op);
        assert_eq!(external.visible(), set([1]));
        let mut rt = TestRuntime::new(0, 1, true).restoring([state]);
        let mut op = operator(&external);
        op.open(&mut rt).unwrap();
        assert_eq!(external.visible(), set([1, 2]));
        write(&mut op, &[5], &mut rt);
        op.end(&mut rt).unwrap();
        rt.committers[0].commit(FINAL_CHECKPOINT).unwrap();
        assert_eq!(external.visible(), set([1, 2, 5]));
    }

    #[test]
    fn after_a_change_of_parallelism_each_old_subtasks_pending_commits_are_committed_once() {
        let external = External::default();
        let mut states = Vec::new();
        for subtask in 0..3 {
            let mut rt = TestRuntime::new(subtask, 3, true);
            let mut op = operator(&external);
            op.open(&mut rt).unwrap();
            write(&mut op, &[u64::from(subtask) * 10], &mut rt);
            states.push(snapshot(&mut op, 7, &mut rt).operator_state);
        }
        let commits = Arc::new(Mutex::new(Vec::new()));
        for subtask in 0..2 {
            let mut rt = TestRuntime::new(subtask, 2, true);
            let restored = RestoredState { keyed: Vec::new(), operator_states: states.clone() };
            rt.restored.insert("sink-uid".into(), restored);
            let before = external.visible.lock().unwrap().len();
            operator(&external).open(&mut rt).unwrap();
            commits.lock().unwrap().push(external.visible.lock().unwrap().len() - before);
        }
        assert_eq!(external.visible(), set([0, 10, 20]));
        // Old subtasks 0 and 2 go to new subtask 0, old subtask 1 to new subtask 1.
        assert_eq!(*commits.lock().unwrap(), vec![2, 1]);
    }

    #[test]
    fn a_restore_whose_commit_fails_fails_the_task_with_one_line() {
        let external = External::default();
        let mut rt = TestRuntime::new(0, 1, true);
        let mut op = operator(&external);
        op.open(&mut rt).unwrap();
        write(&mut op, &[1], &mut rt);
        let state = snapshot(&mut op, 1, &mut rt);
        external.mode.store(1, Ordering::SeqCst);
        let mut rt = TestRuntime::new(0, 1, true).restoring([state]);
        let e = operator(&external).open(&mut rt).unwrap_err().to_string();
        assert!(e.contains("cannot commit what the restored checkpoint pre-committed") && e.contains("down"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
