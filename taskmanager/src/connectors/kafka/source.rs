//! SCAFFOLD (to be replaced): the Kafka source reader.

use crate::connectors::OpenedSource;
use weir_api::connectors::kafka::KafkaSourceSpec;
use weir_api::runtime::TaskInfo;
use weir_api::{Error, Result};

/// Opens this subtask's Kafka reader.
///
/// # Errors
/// Always, for now.
pub fn open(spec: &KafkaSourceSpec, task: &TaskInfo) -> Result<OpenedSource> {
    let _ = (spec, task);
    Err(Error::InvalidJob("the Kafka source is under construction".into()))
}
