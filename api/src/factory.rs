//! Node factories: how the plugin instantiates each logical node for a subtask, and the typed
//! helpers for a node's outputs (network writers, fan-out).

use crate::chain::{
    DecodingHead, Downstream, ErasedDownstream, HeadOperator, OperatorSetup, StreamRecord, erase, min_time, unerase,
};
use crate::error::Result;
use crate::graph::{EdgeId, Partitioning};
use crate::operators::exchange::NetworkOutput;
use crate::plugin::DropGuarded;
use crate::runtime::{TaskInfo, TaskRuntime};
use crate::time::Timestamp;
use std::any::Any;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

/// Serializes the key of a record into a buffer: what a hash edge partitions by.
pub(crate) type KeyBytesFn<T> = Arc<dyn Fn(&T, &mut Vec<u8>) -> Result<()> + Send + Sync>;

/// Instantiates one logical node.
pub(crate) trait NodeFactory: Send + Sync {
    /// The node as a chained consumer of its (single) input: an erased `Box<dyn Downstream<In>>`.
    fn chained(&self, setup: &OperatorSetup<'_>, outputs: Vec<ErasedDownstream>) -> Result<ErasedDownstream>;
    /// The node as the head of a task.
    fn head(&self, setup: &OperatorSetup<'_>, outputs: Vec<ErasedDownstream>) -> Result<Box<dyn HeadOperator>>;
}

/// Typed helpers for one logical output of a node.
pub(crate) trait OutputKit: Send + Sync {
    /// A writer that serializes the output's records to task output `task_output`.
    fn network(
        &self,
        task_output: usize,
        consumer_parallelism: u32,
        partitioning: Partitioning,
        key: Option<&(dyn Any + Send + Sync)>,
        info: &TaskInfo,
    ) -> Result<ErasedDownstream>;
    /// Combines the output's consumers into one downstream (none: discard; one: itself).
    fn fan_out(&self, consumers: Vec<ErasedDownstream>) -> Result<ErasedDownstream>;
    /// The output `erased` (of this output's type) as a side output of operator `what`.
    fn side_output(
        &self,
        erased: ErasedDownstream,
        what: &str,
    ) -> Result<Box<dyn crate::operators::side_outputs::SideOutput>>;
}

/// A node with its factory and its outputs' helpers.
pub(crate) struct NodeFactoryBox {
    pub(crate) factory: Box<dyn NodeFactory>,
    pub(crate) outputs: Vec<Box<dyn OutputKit>>,
}

/// The typed half of a job graph: each node's factory, and the key selectors of hash edges.
pub(crate) struct GraphFactories {
    /// By node id.
    pub(crate) nodes: Vec<NodeFactoryBox>,
    /// Erased [`KeyBytesFn`]s by edge.
    pub(crate) edge_keys: HashMap<EdgeId, Box<dyn Any + Send + Sync>>,
    /// How each node's declared states are read back, by node and state name.
    pub(crate) state_checks: HashMap<crate::graph::NodeId, Vec<(String, crate::state::StateCheck)>>,
}

impl GraphFactories {
    /// Boxed as a trait object whose vtable is made here, in the code that built the graph (see
    /// [`DropGuarded`]).
    pub(crate) fn boxed(self) -> Box<dyn BuiltFactories> {
        Box::new(DropGuarded::new(self, "a job graph"))
    }
}

/// [`GraphFactories`] as a [`JobGraph`](crate::runtime::JobGraph) holds them.
pub(crate) trait BuiltFactories: Send + Sync {
    fn get(&self) -> &GraphFactories;
}

impl BuiltFactories for DropGuarded<GraphFactories> {
    fn get(&self) -> &GraphFactories {
        self
    }
}

pub(crate) struct TypedOutput<T>(PhantomData<fn() -> T>);

impl<T> TypedOutput<T> {
    pub(crate) fn boxed() -> Box<dyn OutputKit>
    where
        T: crate::Data,
    {
        Box::new(Self(PhantomData))
    }
}

impl<T: crate::Data> OutputKit for TypedOutput<T> {
    fn network(
        &self,
        task_output: usize,
        consumer_parallelism: u32,
        partitioning: Partitioning,
        key: Option<&(dyn Any + Send + Sync)>,
        info: &TaskInfo,
    ) -> Result<ErasedDownstream> {
        let key = match key {
            Some(k) => Some(
                k.downcast_ref::<KeyBytesFn<T>>()
                    .ok_or_else(|| crate::Error::InvalidJob("key selector type mismatch".into()))?
                    .clone(),
            ),
            None => None,
        };
        Ok(erase::<T>(Box::new(NetworkOutput::<T>::new(task_output, consumer_parallelism, partitioning, key, info)?)))
    }

    fn side_output(
        &self,
        erased: ErasedDownstream,
        what: &str,
    ) -> Result<Box<dyn crate::operators::side_outputs::SideOutput>> {
        Ok(Box::new(crate::chain::Output::<T>::new(erased, what)?))
    }

    fn fan_out(&self, mut consumers: Vec<ErasedDownstream>) -> Result<ErasedDownstream> {
        match consumers.len() {
            0 => Ok(erase::<T>(Box::new(Discard))),
            1 => Ok(consumers.pop().expect("one consumer")),
            _ => {
                let targets = consumers.into_iter().map(|c| unerase::<T>(c, "fan-out")).collect::<Result<Vec<_>>>()?;
                Ok(erase::<T>(Box::new(FanOut { targets, copy: Vec::new() })))
            }
        }
    }
}

/// An output nobody consumes.
struct Discard;

impl<T: Send> Downstream<T> for Discard {
    fn open(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }
    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, _rt: &mut dyn TaskRuntime) -> Result<()> {
        batch.clear();
        Ok(())
    }
    fn watermark(&mut self, _w: Timestamp, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }
    fn idleness(&mut self, _idle: bool, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }
    fn time(&mut self, _now: Timestamp, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }
    fn next_time(&self) -> Option<Timestamp> {
        None
    }
    fn end(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }
    fn close(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }
    fn snapshot(
        &mut self,
        _checkpoint: crate::runtime::CheckpointId,
        _into: &mut Vec<crate::runtime::OperatorSnapshot>,
        _rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        Ok(())
    }
}

/// One output consumed by several downstreams: every record goes to each (cloned for all but the last).
struct FanOut<T> {
    targets: Vec<Box<dyn Downstream<T>>>,
    copy: Vec<StreamRecord<T>>,
}

impl<T: crate::Data> Downstream<T> for FanOut<T> {
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.targets.iter_mut().try_for_each(|t| t.open(rt))
    }
    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        let last = self.targets.len() - 1;
        for target in &mut self.targets[..last] {
            self.copy.clone_from(batch);
            target.push(&mut self.copy, rt)?;
        }
        self.targets[last].push(batch, rt)
    }
    fn watermark(&mut self, w: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.targets.iter_mut().try_for_each(|t| t.watermark(w, rt))
    }
    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.targets.iter_mut().try_for_each(|t| t.idleness(idle, rt))
    }
    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.targets.iter_mut().try_for_each(|t| t.time(now, rt))
    }
    fn next_time(&self) -> Option<Timestamp> {
        self.targets.iter().fold(None, |acc, t| min_time(acc, t.next_time()))
    }
    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.targets.iter_mut().try_for_each(|t| t.end(rt))
    }
    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        crate::chain::close_all(self.targets.iter_mut(), |t| t.close(rt))
    }
    fn snapshot(
        &mut self,
        checkpoint: crate::runtime::CheckpointId,
        into: &mut Vec<crate::runtime::OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.targets.iter_mut().try_for_each(|t| t.snapshot(checkpoint, into, rt))
    }
}

/// Creates the one-input operator of a node from its setup and erased outputs.
pub(crate) type MakeOneInput<I> =
    Arc<dyn Fn(&OperatorSetup<'_>, Vec<ErasedDownstream>) -> Result<Box<dyn Downstream<I>>> + Send + Sync>;

/// Factory of a node with one input of type `I`.
pub(crate) struct OneInputFactory<I> {
    pub(crate) make: MakeOneInput<I>,
}

impl<I: crate::Data> NodeFactory for OneInputFactory<I> {
    fn chained(&self, setup: &OperatorSetup<'_>, outputs: Vec<ErasedDownstream>) -> Result<ErasedDownstream> {
        let operator = (self.make)(setup, outputs)?;
        Ok(erase::<I>(Box::new(WatermarkProbe { operator, name: setup.name.to_owned() })))
    }

    fn head(&self, setup: &OperatorSetup<'_>, outputs: Vec<ErasedDownstream>) -> Result<Box<dyn HeadOperator>> {
        let operator = (self.make)(setup, outputs)?;
        let operator = Box::new(WatermarkProbe { operator, name: setup.name.to_owned() });
        Ok(Box::new(DecodingHead { operator, buffer: Vec::new(), name: setup.name.to_owned() }))
    }
}

/// Reports the watermarks that reach an operator of a chain to the runtime (its
/// `currentInputWatermark`), then passes every call on.
struct WatermarkProbe<I> {
    operator: Box<dyn Downstream<I>>,
    name: String,
}

impl<I: crate::Data> Downstream<I> for WatermarkProbe<I> {
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.operator.open(rt)
    }
    #[inline]
    fn push(&mut self, batch: &mut Vec<crate::chain::StreamRecord<I>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.operator.push(batch, rt)
    }
    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        rt.operator_input_watermark(&self.name, watermark);
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
        checkpoint: crate::runtime::CheckpointId,
        into: &mut Vec<crate::runtime::OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.operator.snapshot(checkpoint, into, rt)
    }
}

/// Creates the head operator of a source or two-input node.
pub(crate) type MakeHead =
    Arc<dyn Fn(&OperatorSetup<'_>, Vec<ErasedDownstream>) -> Result<Box<dyn HeadOperator>> + Send + Sync>;

/// Factory of a node that can only be a chain head (sources, two-input operators).
pub(crate) struct HeadOnlyFactory {
    pub(crate) make: MakeHead,
}

impl NodeFactory for HeadOnlyFactory {
    fn chained(&self, setup: &OperatorSetup<'_>, _outputs: Vec<ErasedDownstream>) -> Result<ErasedDownstream> {
        Err(crate::Error::InvalidJob(format!(
            "operator '{}' has no single input and cannot be chained to a predecessor",
            setup.name
        )))
    }

    fn head(&self, setup: &OperatorSetup<'_>, outputs: Vec<ErasedDownstream>) -> Result<Box<dyn HeadOperator>> {
        Ok(Box::new(HeadProbe { head: (self.make)(setup, outputs)?, name: setup.name.to_owned() }))
    }
}

/// [`WatermarkProbe`] for a head that is not a one-input operator (a two-input operator; a
/// source is given no input watermark).
struct HeadProbe {
    head: Box<dyn HeadOperator>,
    name: String,
}

impl HeadOperator for HeadProbe {
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.head.open(rt)
    }
    fn poll_source(&mut self, rt: &mut dyn TaskRuntime) -> Result<crate::runtime::SourceStatus> {
        self.head.poll_source(rt)
    }
    fn process_batch(
        &mut self,
        input: usize,
        batch: crate::runtime::InputBatch<'_>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.head.process_batch(input, batch, rt)
    }
    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        rt.operator_input_watermark(&self.name, watermark);
        self.head.watermark(watermark, rt)
    }
    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.head.idleness(idle, rt)
    }
    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.head.time(now, rt)
    }
    fn next_time(&self) -> Option<Timestamp> {
        self.head.next_time()
    }
    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.head.end(rt)
    }
    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.head.close(rt)
    }
    fn stop(&mut self, drain: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.head.stop(drain, rt)
    }
    fn snapshot(
        &mut self,
        checkpoint: crate::runtime::CheckpointId,
        into: &mut Vec<crate::runtime::OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.head.snapshot(checkpoint, into, rt)
    }
}
