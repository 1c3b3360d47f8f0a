//! Kafka connectors on the taskmanager, with librdkafka (`rdkafka`): the source reader (one split
//! per partition) and the sink writer (exactly-once through write-ahead epochs, at-least-once,
//! none). See `weir_api::connectors::kafka` for what a job declares.

pub mod sink;
pub mod source;
