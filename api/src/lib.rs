//! # weir-api
//!
//! The only crate a Weir job depends on. A job is a `cdylib` crate whose build function declares
//! a dataflow with the DataStream API and exports it with [`export_job!`]:
//!
//! ```
//! use std::time::Duration;
//! use weir_api::prelude::*;
//!
//! fn build(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> weir_api::Result<()> {
//!     let output = args.required("output")?;
//!     env.from_generator(GeneratorSource::bounded(1_000_000), |seq| (seq % 100, seq))
//!         .uid("numbers") // every stateful operator needs a uid: savepoints map state by it
//!         .assign_timestamps_and_watermarks(
//!             WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_secs(1))
//!                 .with_timestamp_assigner(|&(_, seq): &(u64, u64), _| seq as i64),
//!         )
//!         .key_by(|&(key, _): &(u64, u64)| key)
//!         .window(TumblingEventTimeWindows::of(Duration::from_secs(10)))
//!         .reduce(|a, b| (a.0, a.1 + b.1))
//!         .uid("sum-per-key")
//!         .map(|(key, sum)| format!("{key},{sum}"))
//!         .write_as_text(output)
//!         .uid("sums");
//!     Ok(())
//! }
//!
//! weir_api::export_job!(build);
//! # fn main() {
//! #     let graph = weir_api::plugin::job_entry(build).build(&["--output".into(), "/tmp/x".into()]).unwrap();
//! #     assert_eq!(graph.descriptor.nodes.len(), 5); // source, assigner, window, map, sink
//! # }
//! ```
//!
//! Records are Rust values inside an operator chain and are serialized with serde only where
//! they cross a task boundary; every record type is [`Data`].

pub mod args;
pub mod async_io;
pub mod broadcast;
mod chain;
mod codec;
pub mod connectors;
pub mod error;
mod factory;
pub mod functions;
pub mod graph;
pub mod keygroup;
pub mod metrics;
mod operators;
pub mod plugin;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod state;
pub mod stream;
pub mod time;
pub mod timer;
pub mod trigger;
pub mod window;

pub use args::JobArgs;
pub use error::{Error, Result};
pub use stream::{DataStream, StreamExecutionEnvironment};

/// What a record, key or state value must be: serializable, cloneable, sendable.
pub trait Data: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static> Data for T {}

/// The names a job usually needs.
pub mod prelude {
    pub use crate::Data;
    pub use crate::args::JobArgs;
    pub use crate::async_io::{AsyncFunction, AsyncResult, async_result};
    pub use crate::broadcast::BroadcastState;
    pub use crate::connectors::kafka::{
        Delivery, Isolation, KafkaDeserializer, KafkaRecord, KafkaRecordOut, KafkaSerializer, KafkaSink, KafkaSource,
        MalformedPolicy, OffsetReset, StartingOffsets,
    };
    pub use crate::error::{Error, Result};
    pub use crate::functions::{
        AggregateFunction, BroadcastProcessFunction, CoProcessFunction, Collector, JoinContext,
        KeyedBroadcastProcessFunction, KeyedCoProcessFunction, KeyedContext, KeyedProcessFunction, ProcessContext,
        ProcessFunction, ProcessJoinFunction, ProcessWindowFunction, RichFilterFunction, RichFlatMapFunction,
        RichMapFunction, RuntimeContext, TimeDomain,
    };
    pub use crate::metrics::{Counter, Gauge, Histogram};
    pub use crate::state::{
        AggregatingStateDescriptor, DeclaredState, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
        StateTtlConfig, TtlUpdateType, ValueStateDescriptor,
    };
    pub use crate::stream::{
        DataStream, GeneratorSource, KeyedStream, StreamExecutionEnvironment, TimedEvent, WindowedStream,
    };
    pub use crate::time::{MAX_WATERMARK, Timestamp, WatermarkStrategy};
    pub use crate::trigger::{
        ContinuousEventTimeTrigger, ContinuousProcessingTimeTrigger, CountEvictor, CountTrigger, EventTimeTrigger,
        Evictor, ProcessingTimeTrigger, PurgingTrigger, TimeEvictor, Trigger, TriggerContext, TriggerResult,
    };
    pub use crate::window::{
        EventTimeSessionWindows, GlobalWindows, OutputTag, ProcessingTimeSessionWindows, SlidingEventTimeWindows,
        SlidingProcessingTimeWindows, TimeWindow, TumblingEventTimeWindows, TumblingProcessingTimeWindows,
    };
}
