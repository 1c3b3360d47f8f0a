//! The task thread: drives one operator chain from its source or input channels until the end
//! of input, cancellation or failure, taking part in checkpoints on the way.

use crate::context::{TaskContext, now_ms};
use crate::exchange::ChannelEvent;
use crate::input_gate::{GateUpdate, InputGate};
use crossbeam_channel::{Receiver, RecvTimeoutError, Select};
use std::sync::atomic::Ordering;
use std::time::Duration;
use weir_api::runtime::{CheckpointBarrier, CheckpointId, InputBatch, SourceStatus, TaskChain};
use weir_api::{Error, Result};

/// The longest a task waits without checking for cancellation.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How a task ended without error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TaskOutcome {
    Finished,
    Canceled,
}

/// Requests to a running task from its taskmanager.
#[derive(Debug)]
pub(crate) enum TaskControl {
    /// Sources: take part in a checkpoint now (snapshot, then emit the barrier). Ignored when
    /// not newer than the last barrier the source emitted (a stale or repeated trigger).
    TriggerCheckpoint(CheckpointBarrier),
    /// The checkpoint was aborted: stop aligning its barriers and ignore those still to come.
    AbortCheckpoint(CheckpointId),
    /// Sources: the savepoint of a stop completed; a source waiting for it ends.
    SavepointComplete(CheckpointId),
}

/// What a source does after a control request.
#[derive(Debug, PartialEq, Eq)]
enum SourceFlow {
    /// Go on reading.
    Continue,
    /// The job stopped with a savepoint: end the stream.
    Finish,
    /// The task was cancelled while it waited.
    Canceled,
}

/// Runs a source chain: polls it until it is exhausted, taking checkpoints when triggered.
pub(crate) fn run_source(
    chain: &mut dyn TaskChain,
    cx: &mut TaskContext,
    control: &Receiver<TaskControl>,
) -> Result<TaskOutcome> {
    let mut last_barrier = SourceBarriers::default();
    loop {
        if cx.cancel.load(Ordering::Relaxed) {
            return Ok(TaskOutcome::Canceled);
        }
        while let Ok(request) = control.try_recv() {
            match handle_control(chain, cx, control, request, &mut last_barrier)? {
                SourceFlow::Continue => {}
                SourceFlow::Finish => return finish(chain, cx),
                SourceFlow::Canceled => return Ok(TaskOutcome::Canceled),
            }
        }
        fire_due_timers(chain, cx)?;
        match chain.poll_source(cx)? {
            SourceStatus::Ready => {}
            SourceStatus::Finished => break,
            SourceStatus::WaitUntil(until) => loop {
                if cx.cancel.load(Ordering::Relaxed) {
                    return Ok(TaskOutcome::Canceled);
                }
                let now = now_ms();
                if now >= until {
                    break;
                }
                let wake = chain.next_processing_time().map_or(until, |t| t.min(until));
                if wake <= now {
                    fire_due_timers(chain, cx)?;
                    continue;
                }
                // Wait for the next due time, or a checkpoint trigger, whichever comes first.
                let waiting = std::time::Instant::now();
                let request = control.recv_timeout(Duration::from_millis((wake - now) as u64).min(POLL_INTERVAL));
                cx.metrics.add_idle(waiting);
                match request {
                    Ok(request) => match handle_control(chain, cx, control, request, &mut last_barrier)? {
                        SourceFlow::Continue => {}
                        SourceFlow::Finish => return finish(chain, cx),
                        SourceFlow::Canceled => return Ok(TaskOutcome::Canceled),
                    },
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
                }
            },
        }
    }
    finish(chain, cx)
}

/// The barriers a source emitted: a trigger not newer than the last one is stale (late or
/// repeated) and dropped, since emitting it after a newer barrier would break the order
/// downstream tasks align in.
#[derive(Debug, Default)]
struct SourceBarriers {
    last: Option<CheckpointId>,
}

impl SourceBarriers {
    /// The last barrier emitted, when barrier `id` is older than it (it can never be emitted: a
    /// repeated trigger of the last one is not older).
    fn newer_than(&self, id: CheckpointId) -> Option<CheckpointId> {
        self.last.filter(|&last| id < last)
    }

    /// Whether barrier `id` may be emitted now (and is then the last one).
    fn admit(&mut self, id: CheckpointId) -> bool {
        if self.last.is_some_and(|last| id <= last) {
            return false;
        }
        self.last = Some(id);
        true
    }
}

/// A source's control request.
fn handle_control(
    chain: &mut dyn TaskChain,
    cx: &mut TaskContext,
    control: &Receiver<TaskControl>,
    request: TaskControl,
    barriers: &mut SourceBarriers,
) -> Result<SourceFlow> {
    match request {
        TaskControl::TriggerCheckpoint(barrier) if barriers.admit(barrier.id) => {
            match cx.savepoints.target(barrier.id).and_then(|target| target.stop) {
                None => {
                    cx.checkpoint(chain, barrier, 0)?;
                    Ok(SourceFlow::Continue)
                }
                Some(drain) => {
                    if drain {
                        chain.stop_source(true, cx)?;
                    }
                    cx.checkpoint(chain, barrier, 0)?;
                    await_stop(chain, cx, control, barrier.id, drain, barriers)
                }
            }
        }
        TaskControl::TriggerCheckpoint(barrier) => {
            drop_stale_trigger(cx, barriers, barrier.id);
            Ok(SourceFlow::Continue)
        }
        TaskControl::AbortCheckpoint(_) | TaskControl::SavepointComplete(_) => Ok(SourceFlow::Continue),
    }
}

/// Drops a trigger that is not newer than the source's last barrier. A savepoint's is declined
/// when it is older (its barrier can never be emitted): the coordinator aborts it now instead of
/// waiting for it until it expires. An older checkpoint's is left to the newer checkpoint,
/// whose completion subsumes it.
fn drop_stale_trigger(cx: &TaskContext, barriers: &SourceBarriers, checkpoint: CheckpointId) {
    match barriers.newer_than(checkpoint) {
        Some(last) if cx.savepoints.target(checkpoint).is_some() => {
            tracing::warn!(task = %cx.id, checkpoint_id = checkpoint, last, "the savepoint's trigger came after a newer barrier: declining it");
            cx.events.checkpoint_declined(
                cx.id,
                checkpoint,
                format!("its trigger reached the source after the barrier of checkpoint {last}"),
            );
        }
        _ => tracing::debug!(task = %cx.id, checkpoint_id = checkpoint, "stale checkpoint trigger dropped"),
    }
}

/// A source that emitted the barrier of savepoint `savepoint` of a stop waits, emitting nothing
/// (Flink's synchronous savepoint): it ends once the savepoint completed; if the savepoint is
/// aborted, it reads on (without drain), or fails, so that the job restarts from its latest
/// checkpoint (with drain: the maximum watermark it emitted cannot be taken back). Later
/// checkpoints triggered meanwhile are taken.
fn await_stop(
    chain: &mut dyn TaskChain,
    cx: &mut TaskContext,
    control: &Receiver<TaskControl>,
    savepoint: CheckpointId,
    drain: bool,
    barriers: &mut SourceBarriers,
) -> Result<SourceFlow> {
    tracing::info!(task = %cx.id, checkpoint_id = savepoint, drain, "stopping with a savepoint: waiting for it to complete");
    loop {
        if cx.cancel.load(Ordering::Relaxed) {
            return Ok(SourceFlow::Canceled);
        }
        match control.recv_timeout(POLL_INTERVAL) {
            Ok(TaskControl::SavepointComplete(id)) if id == savepoint => {
                chain.stop_source(drain, cx)?;
                return Ok(SourceFlow::Finish);
            }
            Ok(TaskControl::AbortCheckpoint(id)) if id == savepoint => {
                if drain {
                    return Err(Error::runtime(
                        "stop with savepoint",
                        format!(
                            "savepoint {savepoint} failed after the sources drained (emitted the final watermark): \
                             the job restarts from its latest checkpoint"
                        ),
                    ));
                }
                tracing::info!(task = %cx.id, checkpoint_id = savepoint, "the stop's savepoint failed: reading on");
                return Ok(SourceFlow::Continue);
            }
            Ok(TaskControl::TriggerCheckpoint(barrier)) if barriers.admit(barrier.id) => {
                cx.checkpoint(chain, barrier, 0)?;
            }
            Ok(TaskControl::TriggerCheckpoint(barrier)) => drop_stale_trigger(cx, barriers, barrier.id),
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            // The taskmanager dropped the task's handle (it shuts down).
            Err(RecvTimeoutError::Disconnected) => return Ok(SourceFlow::Canceled),
        }
    }
}

/// Barrier alignment of a task with several input channels (Flink's aligned checkpoints): a
/// channel that delivered barrier `n` is blocked until every open channel has, so the snapshot
/// sees exactly the records before the barrier on every input.
#[derive(Debug, Default)]
struct Alignment {
    /// The checkpoint being aligned and the channels that delivered its barrier.
    current: Option<(CheckpointBarrier, Vec<bool>)>,
    /// When the first barrier of the current checkpoint arrived.
    started: Option<std::time::Instant>,
    /// The newest checkpoint this task completed or abandoned.
    last: Option<CheckpointId>,
    /// Checkpoints newer than `last` that were aborted before this task aligned them: their
    /// barriers are ignored when they arrive.
    aborted: std::collections::BTreeSet<CheckpointId>,
}

impl Alignment {
    fn is_blocked(&self, channel: usize) -> bool {
        self.current.as_ref().is_some_and(|(_, delivered)| delivered[channel])
    }

    /// A barrier arrived on `channel`; returns a checkpoint superseded by it (to decline).
    fn on_barrier(&mut self, channel: usize, barrier: CheckpointBarrier, channels: usize) -> Option<CheckpointId> {
        if self.last.is_some_and(|last| barrier.id <= last) || self.aborted.contains(&barrier.id) {
            return None;
        }
        let mut superseded = None;
        match &mut self.current {
            Some((current, delivered)) if current.id == barrier.id => delivered[channel] = true,
            Some((current, _)) if current.id > barrier.id => {}
            current => {
                superseded = current.take().map(|(old, _)| old.id);
                let mut delivered = vec![false; channels];
                delivered[channel] = true;
                *current = Some((barrier, delivered));
                self.started = Some(std::time::Instant::now());
            }
        }
        superseded
    }

    /// Checkpoint `checkpoint` was aborted: an alignment of it ends (its channels are released);
    /// its barriers that still arrive are ignored. Returns whether channels were released.
    fn abort(&mut self, checkpoint: CheckpointId) -> bool {
        if self.last.is_some_and(|last| checkpoint <= last) {
            return false;
        }
        if self.current.as_ref().is_some_and(|(current, _)| current.id == checkpoint) {
            self.current = None;
            self.started = None;
            self.finish(checkpoint);
            return true;
        }
        self.aborted.insert(checkpoint);
        false
    }

    /// `checkpoint` is done here (completed or abandoned): older barriers are ignored from now on.
    fn finish(&mut self, checkpoint: CheckpointId) {
        self.last = Some(self.last.map_or(checkpoint, |last| last.max(checkpoint)));
        self.aborted = self.aborted.split_off(&(checkpoint + 1));
    }

    /// The barrier to complete when every open channel delivered it, with the time the
    /// alignment took (ms).
    fn complete(&mut self, gate: &InputGate) -> Option<(CheckpointBarrier, u64)> {
        let (barrier, delivered) = self.current.as_ref()?;
        if (0..delivered.len()).all(|c| delivered[c] || gate.is_ended(c)) {
            let barrier = *barrier;
            self.current = None;
            self.finish(barrier.id);
            let took = self.started.take().map_or(0, |t| t.elapsed().as_millis() as u64);
            Some((barrier, took))
        } else {
            None
        }
    }
}

/// Runs a chain fed by input channels until all of them ended.
pub(crate) fn run_inputs(
    chain: &mut dyn TaskChain,
    cx: &mut TaskContext,
    receivers: Vec<Receiver<ChannelEvent>>,
    mut gate: InputGate,
    control: &Receiver<TaskControl>,
) -> Result<TaskOutcome> {
    let mut alignment = Alignment::default();
    // A stop without drain whose barrier this task passed: the ends of its inputs that follow
    // do not fire event time to the end.
    let mut stopping: Option<CheckpointId> = None;
    // The select covers the channels that are neither ended nor blocked, then the control
    // channel; `active[i]` is the channel of select index `i` (index `active.len()` is control).
    // It is rebuilt when that set changes (barriers, ends, aborts).
    let mut control_open = true;
    let build = |gate: &InputGate, alignment: &Alignment, control_open: bool| {
        let mut select = Select::new();
        let mut active = Vec::new();
        for (channel, receiver) in receivers.iter().enumerate() {
            if !gate.is_ended(channel) && !alignment.is_blocked(channel) {
                select.recv(receiver);
                active.push(channel);
            }
        }
        if control_open {
            select.recv(control);
        }
        (select, active)
    };
    let (mut select, mut active) = build(&gate, &alignment, control_open);
    while gate.open_channels() > 0 {
        if cx.cancel.load(Ordering::Relaxed) {
            return Ok(TaskOutcome::Canceled);
        }
        let now = now_ms();
        // After the barrier of a stop without drain, processing time stands still too: a timer
        // firing now would emit output the savepoint's state emits again after the restore.
        let next_time = if stopping.is_some() { None } else { chain.next_processing_time() };
        let wait = match next_time {
            Some(t) if t <= now => {
                chain.process_time(now, cx)?;
                continue;
            }
            Some(t) => Duration::from_millis((t - now) as u64).min(POLL_INTERVAL),
            None => POLL_INTERVAL,
        };
        if active.is_empty() {
            // Every open channel is blocked by an alignment that cannot complete: impossible, as
            // alignment completes once every open channel delivered the barrier.
            return Err(Error::runtime("barrier alignment", "all input channels blocked"));
        }
        let waiting = std::time::Instant::now();
        let selected = select.select_timeout(wait);
        cx.metrics.add_idle(waiting);
        let Ok(operation) = selected else { continue };
        if operation.index() == active.len() {
            match operation.recv(control) {
                Ok(TaskControl::AbortCheckpoint(checkpoint)) => {
                    if stopping == Some(checkpoint) {
                        stopping = None;
                        let update = gate.set_stopping(false);
                        apply_gate_update(chain, cx, update)?;
                    }
                    if alignment.abort(checkpoint) {
                        tracing::debug!(task = %cx.id, checkpoint_id = checkpoint, "aborted checkpoint: inputs released");
                        (select, active) = build(&gate, &alignment, control_open);
                    }
                }
                Ok(TaskControl::TriggerCheckpoint(_) | TaskControl::SavepointComplete(_)) => {}
                // The taskmanager dropped the task's handle (it shuts down): no more requests.
                Err(_) => {
                    control_open = false;
                    (select, active) = build(&gate, &alignment, control_open);
                }
            }
            continue;
        }
        let channel = active[operation.index()];
        let event = operation
            .recv(&receivers[channel])
            .map_err(|_| Error::runtime("exchange", "an upstream task is gone without ending its stream"))?;
        let mut rebuild = false;
        let update = match event {
            ChannelEvent::Batch(data) => {
                cx.metrics.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
                chain.process_batch(gate.input_of(channel), InputBatch::Bytes(&data), cx)?;
                GateUpdate::default()
            }
            ChannelEvent::Records(records) => {
                chain.process_batch(gate.input_of(channel), InputBatch::Records(records), cx)?;
                GateUpdate::default()
            }
            ChannelEvent::Watermark(watermark) => gate.on_watermark(channel, watermark),
            ChannelEvent::Idle(idle) => gate.on_idleness(channel, idle),
            ChannelEvent::Barrier(barrier) => {
                if let Some(old) = alignment.on_barrier(channel, barrier, receivers.len()) {
                    cx.events.checkpoint_declined(cx.id, old, format!("superseded by checkpoint {}", barrier.id));
                }
                rebuild = true;
                GateUpdate::default()
            }
            ChannelEvent::Failed(message) => return Err(Error::runtime("exchange", message)),
            ChannelEvent::EndOfStream => {
                rebuild = true;
                gate.on_end(channel)
            }
        };
        apply_gate_update(chain, cx, update)?;
        if let Some((barrier, alignment_ms)) = alignment.complete(&gate) {
            // The stop flag as the checkpoint read it: looked up again here, after the
            // acknowledgement went out, the savepoint may have completed and been forgotten, and
            // the ends that follow would fire event time to the end.
            let stop = cx.checkpoint(chain, barrier, alignment_ms)?;
            if stop == Some(false) {
                stopping = Some(barrier.id);
                gate.set_stopping(true);
            }
        }
        if rebuild {
            (select, active) = build(&gate, &alignment, control_open);
        }
    }
    finish(chain, cx)
}

/// Passes the gate's watermark and idleness changes to the chain: active before the watermark
/// that activity brings, idle after the last watermark.
fn apply_gate_update(chain: &mut dyn TaskChain, cx: &mut TaskContext, update: GateUpdate) -> Result<()> {
    if update.idleness == Some(false) {
        chain.process_idleness(false, cx)?;
    }
    if let Some(watermark) = update.watermark {
        cx.metrics.input_watermark.store(watermark, Ordering::Relaxed);
        chain.process_watermark(watermark, cx)?;
    }
    if update.idleness == Some(true) {
        chain.process_idleness(true, cx)?;
    }
    Ok(())
}

fn fire_due_timers(chain: &mut dyn TaskChain, cx: &mut TaskContext) -> Result<()> {
    let now = now_ms();
    if chain.next_processing_time().is_some_and(|t| t <= now) {
        chain.process_time(now, cx)?;
    }
    Ok(())
}

/// End of input: flush the chain, then end every output channel.
fn finish(chain: &mut dyn TaskChain, cx: &mut TaskContext) -> Result<TaskOutcome> {
    chain.end_input(cx)?;
    cx.broadcast_all(|| ChannelEvent::EndOfStream)?;
    Ok(TaskOutcome::Finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn barrier(id: u64) -> CheckpointBarrier {
        CheckpointBarrier { id, timestamp: 0 }
    }

    #[test]
    fn alignment_completes_when_every_open_channel_delivered_the_barrier() {
        let mut gate = InputGate::new([0, 0, 1]);
        let mut a = Alignment::default();
        assert_eq!(a.on_barrier(0, barrier(1), 3), None);
        assert!(a.is_blocked(0) && !a.is_blocked(1));
        assert_eq!(a.complete(&gate), None);
        a.on_barrier(2, barrier(1), 3);
        assert_eq!(a.complete(&gate), None);
        // An ended channel counts as aligned.
        gate.on_end(1);
        assert_eq!(a.complete(&gate).map(|(b, _)| b), Some(barrier(1)));
        assert!(!a.is_blocked(0));
        // Old barriers are ignored afterwards.
        assert_eq!(a.on_barrier(0, barrier(1), 3), None);
        assert!(!a.is_blocked(0));
    }

    #[test]
    fn an_abort_releases_the_aligning_channels_and_its_late_barriers_are_ignored() {
        let gate = InputGate::new([0, 0]);
        let mut a = Alignment::default();
        a.on_barrier(0, barrier(3), 2);
        assert!(a.is_blocked(0));
        assert!(a.abort(3), "the alignment of 3 ends");
        assert!(!a.is_blocked(0) && !a.is_blocked(1));
        assert_eq!(a.on_barrier(1, barrier(3), 2), None);
        assert!(!a.is_blocked(1), "a barrier of the aborted checkpoint blocks nothing");
        assert_eq!(a.complete(&gate), None);
        // Aborted before its first barrier arrives: its barriers never block.
        assert!(!a.abort(5));
        a.on_barrier(0, barrier(5), 2);
        assert!(!a.is_blocked(0));
        // An older checkpoint still aligning is not affected by a newer one's abort.
        a.on_barrier(0, barrier(4), 2);
        assert!(!a.abort(6));
        assert!(a.is_blocked(0));
        a.on_barrier(1, barrier(4), 2);
        assert_eq!(a.complete(&gate).map(|(b, _)| b.id), Some(4));
        // The next checkpoint aligns normally.
        a.on_barrier(1, barrier(7), 2);
        assert!(a.is_blocked(1));
    }

    #[test]
    fn a_source_never_emits_a_trigger_older_than_its_last_barrier() {
        // Regression: triggers were sent by one spawned task each and could overtake each other;
        // a source emitted barrier 4 after barrier 5.
        let mut barriers = SourceBarriers::default();
        assert!(barriers.admit(5));
        assert!(!barriers.admit(4), "stale");
        assert_eq!(barriers.newer_than(4), Some(5), "an older trigger can never be emitted");
        assert!(!barriers.admit(5), "repeated");
        assert_eq!(barriers.newer_than(5), None, "a repeated trigger is not older");
        assert!(barriers.admit(6));
    }

    #[test]
    fn a_newer_barrier_supersedes_an_unfinished_alignment() {
        let gate = InputGate::new([0, 0]);
        let mut a = Alignment::default();
        a.on_barrier(0, barrier(1), 2);
        assert_eq!(a.on_barrier(1, barrier(2), 2), Some(1));
        assert!(a.is_blocked(1) && !a.is_blocked(0));
        a.on_barrier(0, barrier(2), 2);
        assert_eq!(a.complete(&gate).map(|(b, _)| b), Some(barrier(2)));
    }
}
