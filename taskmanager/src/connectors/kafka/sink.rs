//! SCAFFOLD (to be replaced): the Kafka sink writer.

use crate::connectors::OpenedSink;
use weir_api::connectors::kafka::KafkaSinkSpec;
use weir_api::runtime::TaskInfo;
use weir_api::{Error, Result};

/// Opens this subtask's Kafka writer.
///
/// # Errors
/// Always, for now.
pub fn open(spec: &KafkaSinkSpec, task: &TaskInfo, restored: Option<&[u8]>) -> Result<OpenedSink> {
    let _ = (spec, task, restored);
    Err(Error::InvalidJob("the Kafka sink is under construction".into()))
}
