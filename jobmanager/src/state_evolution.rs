//! Whether a savepoint's keyed state reads as the types a new version of the job declares.
//!
//! State values are self-describing (see `weir_api::state`), so a type may change between job
//! versions as long as the new version reads what the old one wrote: fields added as `Option`
//! or with a default, fields renamed with an alias, fields removed. Names of types do not tell
//! that, so the values themselves are tried: a sample of each declared state's stored values is
//! read from the savepoint's files and handed to the new job's code, which decodes them as its
//! declared type. A submission with a savepoint is refused, and `weir savepoint check` reports a
//! mismatch, when one does not decode.

use crate::error::{Error, Result};
use crate::plan::ExecutionPlan;
use crate::savepoint_restore::RestoreSource;
use std::collections::BTreeMap;
use std::time::Duration;
use weir_api::graph::NodeId;
use weir_runtime::savepoint::SavepointMetadata;
use weir_runtime::storage::{Storage, StorageConfig};

/// Values read per declared state (a sample: values of one state have one type).
pub const SAMPLE_PER_STATE: usize = 10_000;

/// How long reading one file of a savepoint may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Stored values of a savepoint's keyed states, by operator uid and state name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StateSample {
    /// `(uid, state)` → stored values (canonical entries' values).
    pub values: BTreeMap<(String, String), Vec<Vec<u8>>>,
}

/// Reads up to [`SAMPLE_PER_STATE`] stored values of each keyed state the savepoint's operators
/// declared. A retained RocksDB checkpoint (its files are the database's own) gives none.
///
/// # Errors
/// [`Error::InvalidRequest`] when a file cannot be read.
pub async fn sample_state(
    dir: &str,
    metadata: &SavepointMetadata,
    source: RestoreSource,
    options: &BTreeMap<String, String>,
) -> Result<StateSample> {
    let mut sample = StateSample::default();
    if matches!(source, RestoreSource::Checkpoint { native: true }) {
        return Ok(sample);
    }
    let storage = Storage::open(&StorageConfig { url: dir.to_owned(), options: options.clone() })
        .map_err(|e| Error::InvalidRequest(format!("savepoint {dir}: {e}")))?;
    for vertex in metadata.vertices.iter().filter(|v| !v.states.is_empty()) {
        for file in vertex.subtasks.iter().flat_map(|s| &s.files) {
            let url = if file.path.contains("://") { file.path.clone() } else { format!("{dir}/{}", file.path) };
            let bytes = match tokio::time::timeout(READ_TIMEOUT, storage.get(&url)).await {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => return Err(Error::InvalidRequest(format!("cannot read {url}: {e}"))),
                Err(_) => return Err(Error::InvalidRequest(format!("cannot read {url}: no answer in time"))),
            };
            // Files that are not chain snapshots (none in savepoints) hold no canonical state.
            let Ok(snapshot) = postcard::from_bytes::<weir_api::runtime::ChainSnapshot>(&bytes) else { continue };
            for operator in snapshot.operators {
                let Some(declared) = vertex.states.get(&operator.uid) else { continue };
                for group in &operator.keyed {
                    for entry in weir_api::runtime::state_entries(&group.entries) {
                        let entry = entry.map_err(|e| Error::InvalidRequest(format!("{url}: {e}")))?;
                        if !declared.iter().any(|d| d.name == entry.state) {
                            continue;
                        }
                        let values = sample.values.entry((operator.uid.clone(), entry.state.to_owned())).or_default();
                        if values.len() < SAMPLE_PER_STATE {
                            values.push(entry.value.to_vec());
                        }
                    }
                }
            }
        }
    }
    Ok(sample)
}

/// The first declared state of `plan` whose sampled values do not read as the type the new job
/// declares: `(uid, reason)`. `check(node, state, value)` decodes a value with the new job's code
/// (`Ok(false)`: nothing declared to check). `nodes` maps the new job's uids to node ids.
pub fn incompatible_state(
    sample: &StateSample,
    metadata: &SavepointMetadata,
    plan: &ExecutionPlan,
    nodes: &BTreeMap<String, NodeId>,
    mut check: impl FnMut(NodeId, &str, &[u8]) -> std::result::Result<bool, String>,
) -> Option<(String, String)> {
    for ((uid, state), values) in &sample.values {
        let Some(&node) = nodes.get(uid) else { continue };
        let new_type = plan
            .vertices
            .iter()
            .filter_map(|v| v.states.get(uid))
            .flatten()
            .find(|d| &d.name == state)
            .map(|d| d.value_type.clone());
        let Some(new_type) = new_type else { continue };
        let old_type = metadata
            .vertices
            .iter()
            .filter_map(|v| v.states.get(uid))
            .flatten()
            .find(|d| &d.name == state)
            .map_or_else(|| "?".to_owned(), |d| d.value_type.clone());
        for value in values {
            match check(node, state, value) {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => {
                    let changed = if old_type == new_type {
                        format!("state '{state}' of type {new_type} holds values")
                    } else {
                        format!("state '{state}' changed its value type from {old_type} to {new_type} and holds values")
                    };
                    return Some((uid.clone(), format!("{changed} the new type does not read: {error}")));
                }
            }
        }
    }
    None
}
