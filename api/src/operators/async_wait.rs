//! The async I/O operator (Flink's `AsyncWaitOperator`; see [`crate::async_io`]).
//!
//! A queue holds, in input order, the records whose results have not left yet and the
//! watermarks between them. Requests run on the operator's Tokio runtime and report to a
//! channel; the task thread takes the reports when records, watermarks or processing-time
//! calls arrive (every millisecond while requests are in flight) and emits what the mode allows:
//! ordered, the complete records at the head; unordered, every complete record before the first
//! watermark still queued. A watermark leaves once everything before it has.

use crate::async_io::AsyncFunction;
use crate::chain::{Downstream, Output, StreamRecord, min_time};
use crate::codec::{decode, encode_into};
use crate::error::{Error, Result};
use crate::functions::RuntimeContext;
use crate::runtime::{CheckpointId, OperatorSnapshot, TaskRuntime};
use crate::time::Timestamp;
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

/// The report of request `id`.
type Report<O> = (u64, Completion<O>);

/// How a request ended.
enum Completion<O> {
    Done(Result<Vec<O>>),
    TimedOut,
    Panicked(String),
}

enum Slot<I, O> {
    /// A record whose request is in flight, or complete (`result`) but not yet emitted.
    Record {
        timestamp: Timestamp,
        input: I,
        result: Option<Vec<O>>,
    },
    /// A record already emitted (unordered mode), waiting to be popped.
    Emitted,
    Watermark(Timestamp),
}

/// The checkpointed in-flight inputs of one subtask.
#[derive(serde::Serialize, serde::Deserialize)]
struct Pending<I> {
    subtask: u32,
    inputs: Vec<(Timestamp, I)>,
}

pub(crate) struct AsyncWaitOperator<I, O, F> {
    pub(crate) function: F,
    pub(crate) ordered: bool,
    pub(crate) timeout: Duration,
    pub(crate) capacity: usize,
    pub(crate) uid: String,
    pub(crate) name: String,
    pub(crate) out: Output<O>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Slots by id: the front's id is `front_id`, ids increase by one.
    queue: VecDeque<Slot<I, O>>,
    front_id: u64,
    /// Records in the queue not emitted yet.
    pending: usize,
    reports: (Sender<Report<O>>, Receiver<Report<O>>),
    now: Timestamp,
    subtask: u32,
}

impl<I, O, F> AsyncWaitOperator<I, O, F>
where
    I: crate::Data,
    O: crate::Data,
    F: AsyncFunction<I, O>,
{
    pub(crate) fn new(
        function: F,
        (ordered, timeout, capacity): (bool, Duration, usize),
        (uid, name): (&str, &str),
        out: Output<O>,
    ) -> Self {
        Self {
            function,
            ordered,
            timeout,
            capacity: capacity.max(1),
            uid: uid.to_owned(),
            name: name.to_owned(),
            out,
            runtime: None,
            queue: VecDeque::new(),
            front_id: 0,
            pending: 0,
            reports: channel(),
            now: 0,
            subtask: 0,
        }
    }

    /// Starts the request for `input` (after waiting for room).
    fn issue(&mut self, timestamp: Timestamp, input: I, rt: &mut dyn TaskRuntime) -> Result<()> {
        while self.pending >= self.capacity {
            self.wait_for_one(rt)?;
        }
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| Error::InvalidJob(format!("async operator '{}' used before open", self.name)))?;
        let id = self.front_id + self.queue.len() as u64;
        // In the runtime's context, so that the function may create Tokio resources.
        let _context = runtime.enter();
        let future = self.function.invoke(input.clone());
        let (report, timeout) = (self.reports.0.clone(), self.timeout);
        let request = runtime.spawn(async move { tokio::time::timeout(timeout, future).await });
        runtime.spawn(async move {
            let completion = match request.await {
                Ok(Ok(result)) => Completion::Done(result),
                Ok(Err(_)) => Completion::TimedOut,
                Err(e) => Completion::Panicked(match e.try_into_panic() {
                    Ok(payload) => crate::plugin::panic_message(payload.as_ref()),
                    Err(e) => e.to_string(),
                }),
            };
            let _ = report.send((id, completion));
        });
        self.queue.push_back(Slot::Record { timestamp, input, result: None });
        self.pending += 1;
        Ok(())
    }

    /// Records the report of request `id`.
    fn complete(&mut self, id: u64, completion: Completion<O>) -> Result<()> {
        let Some(Slot::Record { input, result, .. }) =
            id.checked_sub(self.front_id).and_then(|i| self.queue.get_mut(i as usize))
        else {
            return Ok(()); // a request of before a restore or a duplicate report
        };
        let records = match completion {
            Completion::Done(records) => records,
            Completion::TimedOut => self.function.timeout(input.clone()),
            Completion::Panicked(message) => {
                return Err(Error::UserPanic { operator: self.name.clone(), message });
            }
        };
        *result = Some(records.map_err(|e| e.in_operator(&self.name))?);
        Ok(())
    }

    /// Takes every report already there, then emits what the mode allows.
    fn poll(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        while let Ok((id, completion)) = self.reports.1.try_recv() {
            self.complete(id, completion)?;
        }
        self.emit(rt)
    }

    /// Blocks until one request reports (each ends within its timeout), then emits.
    fn wait_for_one(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        match self.reports.1.recv_timeout(self.timeout + Duration::from_secs(10)) {
            Ok((id, completion)) => self.complete(id, completion)?,
            Err(RecvTimeoutError::Timeout) => {
                return Err(Error::runtime("async I/O", format!("operator '{}': no request reported", self.name)));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::runtime("async I/O", format!("operator '{}': its runtime stopped", self.name)));
            }
        }
        self.poll(rt)
    }

    fn pop_front(&mut self) -> Option<Slot<I, O>> {
        let slot = self.queue.pop_front()?;
        self.front_id += 1;
        Some(slot)
    }

    /// Emits complete records and the watermarks they no longer hold back.
    fn emit(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        loop {
            if !self.ordered {
                // Every complete record before the first queued watermark may leave.
                for slot in self.queue.iter_mut() {
                    match slot {
                        Slot::Watermark(_) => break,
                        Slot::Record { result: Some(_), .. } => {
                            let Slot::Record { timestamp, result: Some(records), .. } =
                                std::mem::replace(slot, Slot::Emitted)
                            else {
                                unreachable!("matched above")
                            };
                            self.pending -= 1;
                            for value in records {
                                self.out.emit(value, timestamp);
                            }
                        }
                        _ => {}
                    }
                }
            }
            match self.queue.front() {
                Some(Slot::Emitted) => {
                    self.pop_front();
                }
                Some(Slot::Record { result: Some(_), .. }) => {
                    if let Some(Slot::Record { timestamp, result: Some(records), .. }) = self.pop_front() {
                        self.pending -= 1;
                        for value in records {
                            self.out.emit(value, timestamp);
                        }
                    }
                }
                Some(Slot::Watermark(watermark)) => {
                    let watermark = *watermark;
                    self.pop_front();
                    self.out.watermark(watermark, rt)?;
                }
                Some(Slot::Record { result: None, .. }) | None => break,
            }
        }
        self.out.flush(rt)
    }
}

impl<I, O, F> Downstream<I> for AsyncWaitOperator<I, O, F>
where
    I: crate::Data,
    O: crate::Data,
    F: AsyncFunction<I, O>,
{
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.now = rt.processing_time();
        self.subtask = rt.info().subtask;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("async-io {}", self.name))
            .enable_all()
            .build()
            .map_err(|e| Error::runtime("async I/O", format!("cannot start the runtime of '{}': {e}", self.name)))?;
        self.runtime = Some(runtime);
        self.function.open(&RuntimeContext { rt, operator: &self.name })?;
        self.out.open(rt)?;
        // Issue again the requests that were in flight at the checkpoint: this subtask's own, or
        // its share of every old subtask's after a change of parallelism.
        if let Some(restored) = rt.restored_state(&self.uid) {
            let parallelism = rt.info().parallelism;
            for bytes in &restored.operator_states {
                let pending: Pending<I> = decode(bytes, "in-flight async requests")?;
                if pending.subtask % parallelism == self.subtask {
                    for (timestamp, input) in pending.inputs {
                        self.issue(timestamp, input, rt)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<I>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.now = rt.processing_time();
        for record in batch.drain(..) {
            self.issue(record.timestamp, record.value, rt)?;
        }
        self.poll(rt)
    }

    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.queue.push_back(Slot::Watermark(watermark));
        self.poll(rt)
    }

    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.poll(rt)?;
        self.out.idleness(idle, rt)
    }

    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.now = now;
        self.poll(rt)?;
        self.out.time(now, rt)
    }

    fn next_time(&self) -> Option<Timestamp> {
        // While requests are in flight, look for their reports every millisecond.
        let poll = (self.pending > 0).then(|| self.now + 1);
        min_time(poll, self.out.next_time())
    }

    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        while self.pending > 0 {
            self.wait_for_one(rt)?;
        }
        self.poll(rt)?;
        self.out.end(rt)
    }

    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        let closed = self.function.close();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        closed.and(self.out.close(rt))
    }

    fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.poll(rt)?;
        let inputs: Vec<(Timestamp, I)> = self
            .queue
            .iter()
            .filter_map(|slot| match slot {
                Slot::Record { timestamp, input, .. } => Some((*timestamp, input.clone())),
                _ => None,
            })
            .collect();
        let mut operator_state = Vec::new();
        encode_into(&Pending { subtask: self.subtask, inputs }, &mut operator_state, "in-flight async requests")?;
        into.push(OperatorSnapshot { uid: self.uid.clone(), keyed: Vec::new(), operator_state });
        self.out.snapshot(checkpoint, into, rt)
    }
}
