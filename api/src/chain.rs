//! Operator chains inside the plugin: typed pushes between fused operators, and the assembly of a
//! task's chain from the logical graph.
//!
//! Types are erased only between nodes of the graph (as `Box<dyn Any>`), and every downcast happens
//! in this crate's generic code, monomorphized inside the plugin: `TypeId`s never cross the plugin
//! boundary, where they would not be comparable.

use crate::error::{Error, Result};
use crate::factory::GraphFactories;
use crate::graph::{ChainSpec, NodeId, Partitioning};
use crate::plugin::DropGuarded;
use crate::runtime::{
    ChainSnapshot, CheckpointBarrier, CheckpointId, InputBatch, JobGraph, OperatorSnapshot, SourceStatus, TaskChain,
    TaskInfo, TaskRuntime,
};
use crate::time::Timestamp;
use std::any::Any;
use std::cell::OnceCell;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A record inside the runtime: its value and its event timestamp.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StreamRecord<T> {
    pub(crate) timestamp: Timestamp,
    pub(crate) value: T,
}

/// A typed receiver of records inside a chain: an operator, a fan-out, or a network writer.
///
/// Every method forwards to the receiver's own downstream after doing its work, so a call on the
/// chain's head reaches every operator of the chain.
pub(crate) trait Downstream<T>: Send {
    /// Opens the operator (state, connectors) and everything downstream of it.
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()>;
    /// Processes and drains `batch`.
    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()>;
    /// The input watermark advanced.
    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()>;
    /// The input became idle or active.
    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()>;
    /// Processing time advanced to `now`.
    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()>;
    /// Earliest processing time this operator or anything downstream wants [`Downstream::time`].
    fn next_time(&self) -> Option<Timestamp>;
    /// End of input: flush everything.
    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()>;
    /// The task is over (finished, cancelled or failed): call the user functions' `close` and
    /// release resources, then close everything downstream, even when this operator's close
    /// fails (the first error is returned). Called once; nothing is emitted after it.
    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()>;
    /// Checkpoint `checkpoint`: flush what was emitted before it, append this operator's state
    /// (if it has any) to `into`, and continue downstream.
    fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()>;
}

/// An erased `Box<dyn Downstream<T>>`.
pub(crate) type ErasedDownstream = Box<dyn Any + Send>;

pub(crate) fn erase<T: 'static>(downstream: Box<dyn Downstream<T>>) -> ErasedDownstream {
    Box::new(downstream)
}

pub(crate) fn unerase<T: 'static>(erased: ErasedDownstream, what: &str) -> Result<Box<dyn Downstream<T>>> {
    erased
        .downcast::<Box<dyn Downstream<T>>>()
        .map(|b| *b)
        .map_err(|_| Error::InvalidJob(format!("record type mismatch at {what}")))
}

/// Closes every item, even after one fails; returns the first error.
pub(crate) fn close_all<I: IntoIterator>(items: I, mut close: impl FnMut(I::Item) -> Result<()>) -> Result<()> {
    let mut first = Ok(());
    for item in items {
        let closed = close(item);
        if first.is_ok() {
            first = closed;
        }
    }
    first
}

pub(crate) fn min_time(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// An operator's output: a reusable buffer in front of its downstream.
pub(crate) struct Output<T> {
    pub(crate) buffer: Vec<StreamRecord<T>>,
    pub(crate) downstream: Box<dyn Downstream<T>>,
}

impl<T: 'static> Output<T> {
    pub(crate) fn new(erased: ErasedDownstream, what: &str) -> Result<Self> {
        Ok(Self { buffer: Vec::new(), downstream: unerase(erased, what)? })
    }

    #[inline]
    pub(crate) fn emit(&mut self, value: T, timestamp: Timestamp) {
        self.buffer.push(StreamRecord { timestamp, value });
    }

    /// Pushes buffered records downstream.
    pub(crate) fn flush(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.downstream.push(&mut self.buffer, rt)
    }

    pub(crate) fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.downstream.open(rt)
    }

    pub(crate) fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.flush(rt)?;
        self.downstream.watermark(watermark, rt)
    }

    pub(crate) fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.flush(rt)?;
        self.downstream.idleness(idle, rt)
    }

    pub(crate) fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.flush(rt)?;
        self.downstream.time(now, rt)
    }

    pub(crate) fn next_time(&self) -> Option<Timestamp> {
        self.downstream.next_time()
    }

    pub(crate) fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.flush(rt)?;
        self.downstream.end(rt)
    }

    pub(crate) fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.buffer.clear();
        self.downstream.close(rt)
    }

    pub(crate) fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.flush(rt)?;
        self.downstream.snapshot(checkpoint, into, rt)
    }
}

/// The first operator of a task's chain, as the task sees it.
pub(crate) trait HeadOperator: Send {
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()>;
    fn poll_source(&mut self, rt: &mut dyn TaskRuntime) -> Result<SourceStatus>;
    fn process_batch(&mut self, input: usize, batch: InputBatch<'_>, rt: &mut dyn TaskRuntime) -> Result<()>;
    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()>;
    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()>;
    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()>;
    fn next_time(&self) -> Option<Timestamp>;
    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()>;
    /// See [`Downstream::close`].
    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()>;
    /// Sources: stop emitting (see [`TaskChain::stop_source`]); other heads ignore it.
    fn stop(&mut self, _drain: bool, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }
    fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()>;
}

/// A one-input head: decodes serialized batches and pushes them into the operator.
pub(crate) struct DecodingHead<T> {
    pub(crate) operator: Box<dyn Downstream<T>>,
    pub(crate) buffer: Vec<StreamRecord<T>>,
    pub(crate) name: String,
}

impl<T: crate::Data> HeadOperator for DecodingHead<T> {
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.operator.open(rt)
    }

    fn poll_source(&mut self, _rt: &mut dyn TaskRuntime) -> Result<SourceStatus> {
        Err(Error::InvalidJob(format!("operator '{}' is not a source", self.name)))
    }

    fn process_batch(&mut self, _input: usize, batch: InputBatch<'_>, rt: &mut dyn TaskRuntime) -> Result<()> {
        crate::codec::take_batch(batch, &mut self.buffer, &self.name)?;
        rt.add_records_in(self.buffer.len() as u64);
        self.operator.push(&mut self.buffer, rt)
    }

    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.operator.watermark(watermark, rt)
    }

    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.operator.idleness(idle, rt)
    }

    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.operator.time(now, rt)
    }

    fn next_time(&self) -> Option<Timestamp> {
        self.operator.next_time()
    }

    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.operator.end(rt)
    }

    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.operator.close(rt)
    }

    fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.operator.snapshot(checkpoint, into, rt)
    }
}

/// A task's chain: the head, with every call guarded against panics in user code.
///
/// The runtime holds it as a `Box<dyn TaskChain>` made here, so its drop is this crate's copy
/// (the plugin's): the head's operators drop under the plugin's `catch_unwind` ([`DropGuarded`]).
struct Chain {
    head: DropGuarded<Box<dyn HeadOperator>>,
    name: String,
    failed: bool,
    closed: bool,
    /// A panic of [`TaskChain::next_processing_time`], which cannot return it: the next call
    /// that can returns it.
    deferred: OnceCell<Error>,
}

impl Chain {
    fn guard<R>(&mut self, call: impl FnOnce(&mut dyn HeadOperator) -> Result<R>) -> Result<R> {
        if let Some(error) = self.deferred.take() {
            self.failed = true;
            return Err(error);
        }
        if self.failed {
            return Err(Error::InvalidJob(format!("chain '{}' already failed", self.name)));
        }
        let head = &mut **self.head;
        let result = match catch_unwind(AssertUnwindSafe(|| call(head))) {
            Ok(result) => result,
            Err(payload) => Err(self.panicked(payload.as_ref())),
        };
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn panicked(&self, payload: &(dyn Any + Send)) -> Error {
        Error::UserPanic { operator: self.name.clone(), message: crate::plugin::panic_message(payload) }
    }
}

impl TaskChain for Chain {
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.guard(|head| head.open(rt))
    }
    fn poll_source(&mut self, rt: &mut dyn TaskRuntime) -> Result<SourceStatus> {
        self.guard(|head| head.poll_source(rt))
    }
    fn process_batch(&mut self, input: usize, batch: InputBatch<'_>, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.guard(|head| head.process_batch(input, batch, rt))
    }
    fn process_watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.guard(|head| head.watermark(watermark, rt))
    }
    fn process_idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.guard(|head| head.idleness(idle, rt))
    }
    fn process_time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.guard(|head| head.time(now, rt))
    }
    fn next_processing_time(&self) -> Option<Timestamp> {
        if self.deferred.get().is_some() {
            return Some(Timestamp::MIN);
        }
        if self.failed {
            return None;
        }
        match catch_unwind(AssertUnwindSafe(|| self.head.next_time())) {
            Ok(next) => next,
            Err(payload) => {
                let _ = self.deferred.set(self.panicked(payload.as_ref()));
                Some(Timestamp::MIN)
            }
        }
    }
    fn end_input(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.guard(|head| head.end(rt))
    }
    fn stop_source(&mut self, drain: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.guard(|head| head.stop(drain, rt))
    }
    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        // Also after a failure (user functions release what they hold), but only once.
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        let head = &mut **self.head;
        match catch_unwind(AssertUnwindSafe(|| head.close(rt))) {
            Ok(result) => result,
            Err(payload) => Err(self.panicked(payload.as_ref())),
        }
    }
    fn snapshot(&mut self, barrier: CheckpointBarrier, rt: &mut dyn TaskRuntime) -> Result<ChainSnapshot> {
        self.guard(|head| {
            let mut operators = Vec::new();
            head.snapshot(barrier.id, &mut operators, rt)?;
            Ok(ChainSnapshot { checkpoint: barrier.id, operators })
        })
    }
}

/// What an operator factory gets to know about the subtask it instantiates an operator for.
pub(crate) struct OperatorSetup<'a> {
    pub(crate) uid: &'a str,
    pub(crate) name: &'a str,
    /// The names of the node's outputs (main first, then side outputs).
    pub(crate) output_names: &'a [String],
    /// The typed helpers of the node's outputs, in the same order.
    pub(crate) output_kits: &'a [Box<dyn crate::factory::OutputKit>],
    /// Whether keyed state lives in memory (operators may then keep typed state themselves).
    pub(crate) heap_state: bool,
}

/// Builds the chain `spec` of `graph` for the subtask `info`.
pub(crate) fn instantiate(graph: &JobGraph, spec: &ChainSpec, info: &TaskInfo) -> Result<Box<dyn TaskChain>> {
    let descriptor = &graph.descriptor;
    let factories = graph.factories.get();
    let check_node = |id: NodeId| {
        if (id as usize) < factories.nodes.len() {
            Ok(())
        } else {
            Err(Error::InvalidJob(format!("chain names node {id}, the job has {}", factories.nodes.len())))
        }
    };
    check_node(spec.head)?;
    for &edge in &spec.chained_edges {
        let e = descriptor
            .edges
            .get(edge as usize)
            .ok_or_else(|| Error::InvalidJob(format!("chain names unknown edge {edge}")))?;
        // A chain runs at one parallelism; at parallelism 1 every edge keeps records on subtask 0.
        if !matches!(e.partitioning, Partitioning::Forward | Partitioning::Auto) && info.parallelism != 1 {
            return Err(Error::InvalidJob(format!("edge {edge} is not forward and cannot be chained")));
        }
    }
    let outputs = build_outputs(graph, factories, spec, spec.head, info)?;
    let head_desc = &descriptor.nodes[spec.head as usize];
    let setup = OperatorSetup {
        uid: &head_desc.uid,
        name: &head_desc.name,
        output_names: &head_desc.outputs,
        output_kits: &factories.nodes[spec.head as usize].outputs,
        heap_state: info.heap_state,
    };
    let head = factories.nodes[spec.head as usize].factory.head(&setup, outputs)?;
    Ok(Box::new(Chain {
        head: DropGuarded::new(head, format!("the operators of task '{}'", info.task_name)),
        name: info.task_name.clone(),
        failed: false,
        closed: false,
        deferred: OnceCell::new(),
    }))
}

/// The erased outputs of `node`: for each logical output, its chained consumers and network
/// writers, fanned out.
fn build_outputs(
    graph: &JobGraph,
    factories: &GraphFactories,
    spec: &ChainSpec,
    node: NodeId,
    info: &TaskInfo,
) -> Result<Vec<ErasedDownstream>> {
    let descriptor = &graph.descriptor;
    let factory = &factories.nodes[node as usize];
    let mut outputs = Vec::with_capacity(factory.outputs.len());
    for (output_index, kit) in factory.outputs.iter().enumerate() {
        let mut consumers = Vec::new();
        for edge in descriptor.outputs_of(node).filter(|e| e.source_output as usize == output_index) {
            if spec.chained_edges.contains(&edge.id) {
                let target = &descriptor.nodes[edge.target as usize];
                let target_outputs = build_outputs(graph, factories, spec, edge.target, info)?;
                let setup = OperatorSetup {
                    uid: &target.uid,
                    name: &target.name,
                    output_names: &target.outputs,
                    output_kits: &factories.nodes[edge.target as usize].outputs,
                    heap_state: info.heap_state,
                };
                consumers.push(factories.nodes[edge.target as usize].factory.chained(&setup, target_outputs)?);
            } else if let Some(task_output) = spec.outputs.iter().position(|o| o.edge == edge.id) {
                let out = &spec.outputs[task_output];
                let key = factories.edge_keys.get(&edge.id).map(|k| k.as_ref());
                consumers.push(kit.network(task_output, out.consumer_parallelism, out.partitioning, key, info)?);
            } else {
                return Err(Error::InvalidJob(format!(
                    "edge {} of node '{}' is neither chained nor a task output",
                    edge.id, descriptor.nodes[node as usize].name
                )));
            }
        }
        outputs.push(kit.fan_out(consumers)?);
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A head whose `next_time` panics and whose drop panics (counting its drops).
    struct PanickingHead(&'static AtomicUsize);

    impl Drop for PanickingHead {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
            panic!("user drop panics");
        }
    }

    impl HeadOperator for PanickingHead {
        fn open(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
            Ok(())
        }
        fn poll_source(&mut self, _rt: &mut dyn TaskRuntime) -> Result<SourceStatus> {
            Ok(SourceStatus::Finished)
        }
        fn process_batch(&mut self, _input: usize, _batch: InputBatch<'_>, _rt: &mut dyn TaskRuntime) -> Result<()> {
            Ok(())
        }
        fn watermark(&mut self, _watermark: Timestamp, _rt: &mut dyn TaskRuntime) -> Result<()> {
            Ok(())
        }
        fn idleness(&mut self, _idle: bool, _rt: &mut dyn TaskRuntime) -> Result<()> {
            Ok(())
        }
        fn time(&mut self, _now: Timestamp, _rt: &mut dyn TaskRuntime) -> Result<()> {
            Ok(())
        }
        fn next_time(&self) -> Option<Timestamp> {
            panic!("next_time panics");
        }
        fn end(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
            Ok(())
        }
        fn close(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
            Ok(())
        }
        fn snapshot(
            &mut self,
            _checkpoint: CheckpointId,
            _into: &mut Vec<OperatorSnapshot>,
            _rt: &mut dyn TaskRuntime,
        ) -> Result<()> {
            Ok(())
        }
    }

    fn chain(drops: &'static AtomicUsize) -> Chain {
        Chain {
            head: DropGuarded::new(Box::new(PanickingHead(drops)), "the operators of task 't'"),
            name: "t".to_owned(),
            failed: false,
            closed: false,
            deferred: OnceCell::new(),
        }
    }

    #[test]
    fn a_panic_of_next_processing_time_is_returned_by_the_next_call() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let mut chain = chain(&DROPS);
        // Due at once, so that the task makes the next call now; asked again, still due.
        assert_eq!(chain.next_processing_time(), Some(Timestamp::MIN));
        assert_eq!(chain.next_processing_time(), Some(Timestamp::MIN));
        let err = chain.guard(|_| Ok(())).unwrap_err();
        assert!(
            matches!(&err, Error::UserPanic { operator, message } if operator == "t" && message.contains("next_time panics")),
            "{err}"
        );
        // Then the chain is failed: no more timers, every call refused.
        assert_eq!(chain.next_processing_time(), None);
        assert!(chain.guard(|_| Ok(())).is_err());
    }

    #[test]
    fn dropping_a_chain_whose_operator_panics_on_drop_does_not_unwind() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let chain: Box<dyn TaskChain> = Box::new(chain(&DROPS));
        assert!(catch_unwind(AssertUnwindSafe(|| drop(chain))).is_ok());
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    }
}
