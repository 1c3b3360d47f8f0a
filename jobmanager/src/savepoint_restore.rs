//! Starting a job from a savepoint: reading the savepoint, and mapping its state onto the new
//! job's plan by operator uid.
//!
//! Keyed state is canonical and addressed by key group, so it restores at any parallelism (up to
//! the max parallelism, which must not change): each new subtask reads the files of the old
//! subtasks whose key groups overlap its own, and keeps its key groups. The state of sources and
//! sinks belongs to a subtask (a position, pending commits): at the parallelism it was taken with
//! each subtask reads its own; at another, every new subtask reads every old subtask's and the
//! connector keeps its share (Kafka partitions by the owner formula, the generator's remaining
//! numbers, text files still to read, sinks' pending commits by old subtask index), as Flink's
//! union list state; connectors that cannot (collection sources) refuse a change of
//! parallelism. State that maps to no operator of the new job is refused unless the user allows
//! dropping it (Flink's `--allowNonRestoredState`). The result is an ordinary restore
//! point ([`CheckpointMetadata`]) for the new plan, which the job master restores like a
//! checkpoint of its own.

use crate::error::{Error, Result};
use crate::plan::ExecutionPlan;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use weir_runtime::checkpoint::{CheckpointMetadata, StateBackendKind, StateHandle, TaskSnapshot, TaskStateEntry};
use weir_runtime::savepoint::{METADATA_FILE, SavepointFile, SavepointMetadata, SavepointSubtask, SavepointVertex};
use weir_runtime::storage::{Storage, StorageConfig, StorageError};

/// Where a submitted job restores from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavepointRestoreSettings {
    /// The savepoint: its directory (or its `_metadata` file), a storage URL or a path.
    pub path: String,
    /// Start even if some of the savepoint's state maps to no operator of the job (it is
    /// dropped).
    pub allow_non_restored_state: bool,
}

/// How long reading a savepoint's metadata may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory URL of the savepoint at `path` (its directory or its `_metadata`; a path without
/// a scheme is a local path).
pub fn savepoint_dir(path: &str) -> String {
    let path = path.trim();
    let path = path.strip_suffix(&format!("/{METADATA_FILE}")).unwrap_or(path).trim_end_matches('/');
    if path.contains("://") { path.to_owned() } else { format!("file://{path}") }
}

/// Reads the savepoint, or the retained checkpoint (`.../<job-id>/chk-<n>`), at `path`; returns
/// its directory URL, its metadata (a checkpoint's as a savepoint's, see [`RestoreSource`]) and
/// which of the two it is.
///
/// # Errors
/// [`Error::InvalidRequest`], one line, when there is no savepoint or checkpoint there, it cannot
/// be read, or it is corrupt.
pub async fn read(
    path: &str,
    options: &BTreeMap<String, String>,
) -> Result<(String, SavepointMetadata, RestoreSource)> {
    let dir = savepoint_dir(path);
    let storage = Storage::open(&StorageConfig { url: dir.clone(), options: options.clone() })
        .map_err(|e| Error::InvalidRequest(format!("savepoint {path}: {e}")))?;
    let url = storage.url_of(METADATA_FILE);
    let bytes = match tokio::time::timeout(READ_TIMEOUT, storage.get(&url)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(StorageError::NotFound { .. })) => {
            return Err(Error::InvalidRequest(format!("no savepoint at {path}: {url} does not exist")));
        }
        Ok(Err(e)) => return Err(Error::InvalidRequest(format!("cannot read savepoint {path}: {e}"))),
        Err(_) => {
            return Err(Error::InvalidRequest(format!(
                "cannot read savepoint {path}: no answer within {} s",
                READ_TIMEOUT.as_secs()
            )));
        }
    };
    match SavepointMetadata::decode(&bytes) {
        Ok(metadata) => Ok((dir, metadata, RestoreSource::Savepoint)),
        Err(e) => match CheckpointMetadata::decode(&bytes) {
            Ok(checkpoint) => {
                let native = checkpoint.backend == StateBackendKind::Rocksdb;
                Ok((dir, from_checkpoint(&checkpoint), RestoreSource::Checkpoint { native }))
            }
            Err(_) => Err(Error::InvalidRequest(format!("savepoint {path}: {e}"))),
        },
    }
}

/// What a job restores from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreSource {
    /// A savepoint: canonical state in its own directory.
    Savepoint,
    /// Another job's retained checkpoint (Flink's `-s <checkpoint>`, in no-claim mode: its files
    /// are read, never changed or deleted, and reused by no checkpoint of the new job). `native`:
    /// written by the RocksDB backend, whose files are the database's own (they restore only
    /// into the same operators at the same parallelism, on RocksDB).
    Checkpoint {
        /// RocksDB files rather than canonical state.
        native: bool,
    },
}

/// A retained checkpoint seen as a savepoint: per vertex its subtasks' files (absolute URLs),
/// the uids with state, and the key groups when the checkpoint recorded the max parallelism.
fn from_checkpoint(checkpoint: &CheckpointMetadata) -> SavepointMetadata {
    let mut by_vertex: BTreeMap<u32, Vec<&TaskStateEntry>> = BTreeMap::new();
    for task in &checkpoint.tasks {
        by_vertex.entry(task.vertex).or_default().push(task);
    }
    let vertices = by_vertex
        .into_iter()
        .map(|(vertex, mut tasks)| {
            tasks.sort_by_key(|t| t.subtask);
            let parallelism = tasks.last().map_or(0, |t| t.subtask + 1);
            let mut uids: Vec<String> = Vec::new();
            for uid in tasks.iter().flat_map(|t| &t.snapshot.operators) {
                if !uids.contains(uid) {
                    uids.push(uid.clone());
                }
            }
            let subtasks = tasks
                .iter()
                .map(|t| SavepointSubtask {
                    subtask: t.subtask,
                    key_groups: (checkpoint.max_parallelism > 0).then(|| {
                        let range =
                            weir_api::keygroup::key_group_range(checkpoint.max_parallelism, parallelism, t.subtask);
                        (*range.start(), *range.end())
                    }),
                    operators: t.snapshot.operators.clone(),
                    files: t
                        .snapshot
                        .handles
                        .iter()
                        .map(|h| SavepointFile { path: h.uri.clone(), size_bytes: h.size_bytes })
                        .collect(),
                })
                .collect();
            SavepointVertex { name: format!("vertex {vertex}"), uids, parallelism, states: BTreeMap::new(), subtasks }
        })
        .collect();
    SavepointMetadata {
        version: weir_runtime::savepoint::SAVEPOINT_VERSION,
        job_id: checkpoint.job_id.clone(),
        job_name: String::new(),
        checkpoint_id: checkpoint.checkpoint_id,
        trigger_ms: checkpoint.trigger_ms,
        backend: checkpoint.backend,
        max_parallelism: checkpoint.max_parallelism,
        vertices,
    }
}

/// Deletes the savepoint at `path`: its files, its metadata (last), and what else is in its
/// directory. Returns the directory's URL.
///
/// # Errors
/// [`Error::InvalidRequest`] when there is no readable savepoint there (nothing is deleted);
/// [`Error::Unavailable`] when a delete fails (a retry deletes the rest).
pub async fn dispose(path: &str, options: &BTreeMap<String, String>) -> Result<String> {
    let (dir, metadata, source) = read(path, options).await?;
    if source != RestoreSource::Savepoint {
        return Err(Error::InvalidRequest(format!(
            "{path} is a checkpoint, not a savepoint: its job's retention deletes it (or delete the job's directory)"
        )));
    }
    // A store at the parent, so that the directory itself is a prefix under its root.
    let parent = dir.rsplit_once('/').map_or(dir.as_str(), |(parent, _)| parent);
    let storage = Storage::open(&StorageConfig { url: parent.to_owned(), options: options.clone() })
        .map_err(|e| Error::InvalidRequest(format!("savepoint {path}: {e}")))?;
    let delete = |url: String| {
        let storage = storage.clone();
        async move {
            match storage.delete(&url).await {
                Ok(()) | Err(StorageError::NotFound { .. }) => Ok(()),
                Err(e) => Err(Error::Unavailable(format!("cannot delete {url}: {e}"))),
            }
        }
    };
    for file in metadata.vertices.iter().flat_map(|v| &v.subtasks).flat_map(|s| &s.files) {
        delete(format!("{dir}/{}", file.path)).await?;
    }
    delete(format!("{dir}/{METADATA_FILE}")).await?;
    storage.delete_prefix(&dir).await.map_err(|e| Error::Unavailable(format!("cannot delete {dir}: {e}")))?;
    if let Some(local) = dir.strip_prefix("file://") {
        // A local store leaves the empty directory behind.
        let _ = std::fs::remove_dir(local);
    }
    Ok(dir)
}

/// Maps the savepoint (`metadata`, in directory `dir`) onto `plan`: the restore point of the new
/// job, with each new subtask's files.
///
/// # Errors
/// [`Error::InvalidRequest`], one line, when the max parallelism changed, state of a source or
/// sink that does not rescale would change parallelism, or state maps to no operator and `allow_non_restored_state`
/// is off (naming the operators).
pub fn restore_point(
    dir: &str,
    metadata: &SavepointMetadata,
    source: RestoreSource,
    plan: &ExecutionPlan,
    allow_non_restored_state: bool,
) -> Result<CheckpointMetadata> {
    // 0: a checkpoint written before the max parallelism was recorded (assumed unchanged).
    if metadata.max_parallelism != 0 && metadata.max_parallelism != plan.max_parallelism {
        return Err(Error::InvalidRequest(format!(
            "the savepoint's max parallelism is {} and the job's is {}: its key groups cannot be mapped (set the job's \
             max parallelism to {})",
            metadata.max_parallelism, plan.max_parallelism, metadata.max_parallelism
        )));
    }
    // Where each uid of the new plan runs.
    let mut owner: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, vertex) in plan.vertices.iter().enumerate() {
        for uid in &vertex.uids {
            owner.insert(uid, index);
        }
    }
    let mut dropped = Vec::new();
    // Per new vertex: (old vertex index, uid) pairs to restore.
    let mut restored: BTreeMap<usize, Vec<(usize, &str)>> = BTreeMap::new();
    for (old_index, old) in metadata.vertices.iter().enumerate() {
        let stateful: BTreeSet<&str> = old.subtasks.iter().flat_map(|s| &s.operators).map(String::as_str).collect();
        for uid in stateful {
            let Some(&new_index) = owner.get(uid) else {
                dropped.push(format!("'{uid}'"));
                continue;
            };
            let new = &plan.vertices[new_index];
            if let Some(reason) = rescale_refusal(uid, old.parallelism, new) {
                return Err(Error::InvalidRequest(reason));
            }
            if source == (RestoreSource::Checkpoint { native: true }) && new.parallelism != old.parallelism {
                return Err(Error::InvalidRequest(format!(
                    "operator '{uid}' ran at parallelism {} in the checkpoint, whose RocksDB files restore only at the \
                     same parallelism: run at -p {0}, or take a savepoint of that job to change it",
                    old.parallelism
                )));
            }
            if let Some(reason) = state_mismatch(uid, old, new) {
                return Err(Error::InvalidRequest(format!(
                    "operator '{uid}': {reason}, so the savepoint's state cannot be read into it (keep the type, or give \
                     the operator a new uid and restore with --allow-non-restored-state to start it empty)"
                )));
            }
            restored.entry(new_index).or_default().push((old_index, uid));
        }
    }
    if source == (RestoreSource::Checkpoint { native: true }) {
        // A task's database holds every operator of its chain: the old vertex must map onto one
        // new vertex whole.
        for (new_index, pairs) in &restored {
            let olds: BTreeSet<usize> = pairs.iter().map(|(old, _)| *old).collect();
            let whole = olds.len() == 1
                && olds.iter().all(|&old| {
                    let uids: BTreeSet<&str> = metadata.vertices[old].uids.iter().map(String::as_str).collect();
                    uids.len() == pairs.len()
                });
            if !whole {
                return Err(Error::InvalidRequest(format!(
                    "the operators with state of vertex '{}' do not map onto the checkpoint's vertices one to one; a \
                     RocksDB checkpoint restores only into the same chains: take a savepoint to change the graph",
                    plan.vertices[*new_index].name
                )));
            }
        }
    }
    if !dropped.is_empty() && !allow_non_restored_state {
        return Err(Error::InvalidRequest(format!(
            "the savepoint has state of operators the job does not have ({}): restore with --allow-non-restored-state \
             (-n) to drop it",
            dropped.join(", ")
        )));
    }
    let mut tasks = Vec::new();
    for (new_index, pairs) in &restored {
        let vertex = &plan.vertices[*new_index];
        for subtask in 0..vertex.parallelism {
            let range = weir_api::keygroup::key_group_range(plan.max_parallelism, vertex.parallelism, subtask);
            let mut handles: Vec<StateHandle> = Vec::new();
            for &(old_index, uid) in pairs {
                let old = &metadata.vertices[old_index];
                let per_subtask = vertex.subtask_state.iter().any(|s| s.uid == uid);
                let rescaled = vertex.parallelism != old.parallelism;
                // The same subtask's files first.
                let mut sources: Vec<_> = old
                    .subtasks
                    .iter()
                    .filter(|s| s.operators.iter().any(|o| o == uid))
                    .filter(|s| match (per_subtask, rescaled) {
                        // A source's or sink's own state, or every old subtask's to take a share of.
                        (true, false) => s.subtask == subtask,
                        (true, true) => true,
                        (false, _) => {
                            s.key_groups.is_none_or(|(first, last)| first <= *range.end() && *range.start() <= last)
                        }
                    })
                    .collect();
                sources.sort_by_key(|s| s.subtask != subtask);
                for file in sources.iter().flat_map(|s| &s.files) {
                    // A checkpoint's files are named by their own URLs.
                    let uri =
                        if file.path.contains("://") { file.path.clone() } else { format!("{dir}/{}", file.path) };
                    if !handles.iter().any(|h| h.uri == uri) {
                        handles.push(StateHandle {
                            uri,
                            size_bytes: file.size_bytes,
                            incremental_bytes: 0,
                            shared: false,
                        });
                    }
                }
            }
            if !handles.is_empty() {
                let operators = pairs.iter().map(|(_, uid)| (*uid).to_owned()).collect();
                tasks.push(TaskStateEntry {
                    vertex: vertex.id,
                    subtask,
                    snapshot: TaskSnapshot { handles, alignment_ms: 0, operators },
                });
            }
        }
    }
    Ok(CheckpointMetadata {
        version: 1,
        job_id: metadata.job_id.clone(),
        checkpoint_id: metadata.checkpoint_id,
        kind: match source {
            RestoreSource::Savepoint => "SAVEPOINT".into(),
            RestoreSource::Checkpoint { .. } => "CHECKPOINT".into(),
        },
        trigger_ms: metadata.trigger_ms,
        backend: metadata.backend,
        max_parallelism: plan.max_parallelism,
        leader_epoch: 0,
        tasks,
    })
}

/// Why operator `uid`'s per-subtask state, taken at `old_parallelism`, cannot restore into
/// `vertex`: its connector does not rescale and the parallelism changed. `None` otherwise.
fn rescale_refusal(uid: &str, old_parallelism: u32, vertex: &crate::plan::ExecutionVertex) -> Option<String> {
    let state = vertex.subtask_state.iter().find(|s| s.uid == uid)?;
    (!state.rescales && vertex.parallelism != old_parallelism).then(|| {
        format!(
            "operator '{uid}' keeps per-subtask state that does not rescale (a collection source) and ran at parallelism {old_parallelism} in the savepoint: restore it at parallelism \
             {old_parallelism}"
        )
    })
}

/// How the keyed states operator `uid` declared in the savepoint (`old`) differ from those its
/// counterpart in `new` declares under the same names: kind or key type changed. `None` when
/// they match (states declared on one side only are not compared). A changed value type is not
/// refused here: state values are self-describing, so a compatible later version of a type
/// reads them (an added optional field, a renamed field with an alias); `weir savepoint check`
/// tries the job's types on the savepoint's values.
fn state_mismatch(
    uid: &str,
    old: &weir_runtime::savepoint::SavepointVertex,
    new: &crate::plan::ExecutionVertex,
) -> Option<String> {
    let (before, after) = (old.states.get(uid)?, new.states.get(uid)?);
    before.iter().find_map(|b| {
        let a = after.iter().find(|a| a.name == b.name)?;
        let name = &b.name;
        if a.kind != b.kind {
            Some(format!("state '{name}' changed from {} state to {} state", b.kind, a.kind))
        } else if a.key_type != b.key_type {
            Some(format!("state '{name}' changed its key type from {} to {}", b.key_type, a.key_type))
        } else if let (Some(before), Some(after)) = (map_key_type(b), map_key_type(a))
            && before != after
        {
            // Map keys are positional (their bytes address the entries): they do not evolve.
            Some(format!("state '{name}' changed its map key type from {before} to {after}"))
        } else {
            None
        }
    })
}

/// The user-key type of a map state (its `value_type` is `UserKey -> Value`).
fn map_key_type(state: &weir_api::graph::StateDeclaration) -> Option<&str> {
    (state.kind == "map").then(|| state.value_type.split_once(" -> ").map(|(key, _)| key)).flatten()
}

/// What restoring a savepoint would do with one operator's state (`weir savepoint check`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum OperatorVerdict {
    /// Its state restores, from the savepoint's parallelism to the job's.
    Restores {
        /// Parallelism in the savepoint.
        from_parallelism: u32,
        /// Parallelism in the job.
        to_parallelism: u32,
    },
    /// Its state maps to no operator of the job: dropped with `--allow-non-restored-state`,
    /// refused without.
    Dropped,
    /// A stateful operator of the job without state in the savepoint: it starts empty.
    New,
    /// Its state cannot restore into the job as planned.
    Mismatch {
        /// Why, one line.
        reason: String,
    },
}

/// One operator's line of a compatibility check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OperatorCheck {
    /// The operator's uid.
    pub uid: String,
    /// What happens to its state.
    #[serde(flatten)]
    pub verdict: OperatorVerdict,
}

/// Whether a job as planned can start from a savepoint, operator by operator (Weir's upgrade
/// preflight): `error` is exactly the refusal a submission with the same flags would get.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Compatibility {
    /// Every operator with state in the savepoint or in the job, by uid.
    pub operators: Vec<OperatorCheck>,
    /// Why `weir run -s` would refuse the savepoint; `None`: it would restore.
    pub error: Option<String>,
}

/// Checks the savepoint (`metadata`, in `dir`) against `plan`, whose operators `stateful` keep
/// state (sources, sinks, keyed operators).
pub fn check(
    dir: &str,
    metadata: &SavepointMetadata,
    source: RestoreSource,
    plan: &ExecutionPlan,
    stateful: &BTreeSet<String>,
    allow_non_restored_state: bool,
) -> Compatibility {
    let mut operators = Vec::new();
    let mut in_savepoint = BTreeSet::new();
    for old in &metadata.vertices {
        let uids: BTreeSet<&str> = old.subtasks.iter().flat_map(|s| &s.operators).map(String::as_str).collect();
        for uid in uids {
            in_savepoint.insert(uid.to_owned());
            let new = plan.vertices.iter().find(|v| v.uids.iter().any(|u| u == uid));
            let verdict = match new {
                None => OperatorVerdict::Dropped,
                // 0: not recorded (assumed unchanged), as `restore_point` does.
                Some(_) if metadata.max_parallelism != 0 && metadata.max_parallelism != plan.max_parallelism => {
                    OperatorVerdict::Mismatch {
                        reason: format!(
                            "max parallelism changed from {} to {}: key groups do not map",
                            metadata.max_parallelism, plan.max_parallelism
                        ),
                    }
                }
                Some(new) => match (state_mismatch(uid, old, new), rescale_refusal(uid, old.parallelism, new)) {
                    (Some(reason), _) => OperatorVerdict::Mismatch { reason },
                    (None, Some(_)) => OperatorVerdict::Mismatch {
                        reason: format!(
                            "per-subtask state that does not rescale (a collection source) at parallelism {}, planned at {}",
                            old.parallelism, new.parallelism
                        ),
                    },
                    (None, None) => {
                        OperatorVerdict::Restores { from_parallelism: old.parallelism, to_parallelism: new.parallelism }
                    }
                },
            };
            operators.push(OperatorCheck { uid: uid.to_owned(), verdict });
        }
    }
    for uid in stateful.iter().filter(|uid| !in_savepoint.contains(*uid)) {
        operators.push(OperatorCheck { uid: uid.clone(), verdict: OperatorVerdict::New });
    }
    let error = restore_point(dir, metadata, source, plan, allow_non_restored_state).err().map(|e| e.to_string());
    Compatibility { operators, error }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ExecutionVertex;
    use weir_api::graph::ChainSpec;
    use weir_runtime::checkpoint::StateBackendKind;
    use weir_runtime::savepoint::{SavepointFile, SavepointSubtask, SavepointVertex};

    /// `vertex` whose sources and sinks do not rescale.
    fn fixed(mut vertex: ExecutionVertex) -> ExecutionVertex {
        vertex.subtask_state.iter_mut().for_each(|s| s.rescales = false);
        vertex
    }

    /// A vertex of `uids` at `parallelism`; `sources` of them keep per-subtask state (that
    /// rescales).
    fn vertex(id: u32, uids: &[&str], sources: &[&str], parallelism: u32) -> ExecutionVertex {
        ExecutionVertex {
            id,
            name: uids.join(" -> "),
            parallelism,
            chain: ChainSpec { head: 0, nodes: Vec::new(), chained_edges: Vec::new(), outputs: Vec::new() },
            inputs: Vec::new(),
            is_source: !sources.is_empty(),
            uids: uids.iter().map(|u| (*u).to_owned()).collect(),
            subtask_state: sources
                .iter()
                .map(|u| crate::plan::SubtaskState { uid: (*u).to_owned(), rescales: true })
                .collect(),
            states: BTreeMap::new(),
        }
    }

    /// A value state `name` of `u64` keys and `value` values.
    fn declared(name: &str, value: &str) -> Vec<weir_api::graph::StateDeclaration> {
        vec![weir_api::graph::StateDeclaration {
            name: name.into(),
            kind: "value".into(),
            key_type: "u64".into(),
            value_type: value.into(),
        }]
    }

    /// A savepoint of a source vertex ("src", p 2) and a keyed vertex ("count" with state, "map"
    /// without, p 2), 128 key groups.
    fn savepoint() -> SavepointMetadata {
        let old = |name: &str, uids: &[&str], stateful: &[&str]| SavepointVertex {
            name: name.into(),
            uids: uids.iter().map(|u| (*u).to_owned()).collect(),
            parallelism: 2,
            states: stateful
                .iter()
                .filter(|u| **u == "count")
                .map(|u| ((*u).to_owned(), declared("n", "u64")))
                .collect(),
            subtasks: (0..2)
                .map(|s| SavepointSubtask {
                    subtask: s,
                    key_groups: Some(if s == 0 { (0, 63) } else { (64, 127) }),
                    operators: stateful.iter().map(|u| (*u).to_owned()).collect(),
                    files: vec![SavepointFile { path: format!("{name}-{s}"), size_bytes: 10 }],
                })
                .collect(),
        };
        SavepointMetadata {
            version: 1,
            job_id: "ab".repeat(16),
            job_name: "j".into(),
            checkpoint_id: 42,
            trigger_ms: 7,
            backend: StateBackendKind::Heap,
            max_parallelism: 128,
            vertices: vec![old("0", &["src"], &["src"]), old("1", &["map", "count"], &["count"])],
        }
    }

    fn plan(vertices: Vec<ExecutionVertex>) -> ExecutionPlan {
        ExecutionPlan { vertices, max_parallelism: 128 }
    }

    fn files(m: &CheckpointMetadata, vertex: u32, subtask: u32) -> Vec<&str> {
        m.task(vertex, subtask).map(|s| s.handles.iter().map(|h| h.uri.as_str()).collect()).unwrap_or_default()
    }

    #[test]
    fn keyed_state_rescales_by_key_group_and_sources_keep_their_subtask() {
        let p = plan(vec![vertex(0, &["src"], &["src"], 2), vertex(1, &["count", "new-map"], &[], 4)]);
        let m = restore_point("s3://b/sp", &savepoint(), RestoreSource::Savepoint, &p, false).unwrap();
        assert_eq!((m.checkpoint_id, m.kind.as_str()), (42, "SAVEPOINT"));
        assert_eq!(files(&m, 0, 0), vec!["s3://b/sp/0-0"]);
        assert_eq!(files(&m, 0, 1), vec!["s3://b/sp/0-1"]);
        // New key groups: 0..=31, 32..=63, 64..=95, 96..=127.
        assert_eq!(files(&m, 1, 0), vec!["s3://b/sp/1-0"]);
        assert_eq!(files(&m, 1, 1), vec!["s3://b/sp/1-0"]);
        assert_eq!(files(&m, 1, 2), vec!["s3://b/sp/1-1"]);
        assert_eq!(files(&m, 1, 3), vec!["s3://b/sp/1-1"]);
        // Down to one subtask: both files, its own index first.
        let p = plan(vec![vertex(0, &["src"], &["src"], 2), vertex(1, &["count"], &[], 1)]);
        let m = restore_point("file:///sp", &savepoint(), RestoreSource::Savepoint, &p, false).unwrap();
        assert_eq!(files(&m, 1, 0), vec!["file:///sp/1-0", "file:///sp/1-1"]);
    }

    #[test]
    fn unmapped_state_needs_allow_non_restored_state_and_stateless_operators_do_not_matter() {
        // "map" was stateless: removing it is fine; "count" is gone: refused, naming it.
        let p = plan(vec![vertex(0, &["src"], &["src"], 2), vertex(1, &["other"], &[], 2)]);
        let e = restore_point("file:///sp", &savepoint(), RestoreSource::Savepoint, &p, false).unwrap_err().to_string();
        assert!(e.contains("'count'") && e.contains("--allow-non-restored-state") && !e.contains("'map'"), "{e}");
        assert_eq!(e.lines().count(), 1);
        let m = restore_point("file:///sp", &savepoint(), RestoreSource::Savepoint, &p, true).unwrap();
        assert!(m.task(1, 0).is_none(), "nothing restores into 'other'");
        assert_eq!(files(&m, 0, 1), vec!["file:///sp/0-1"]);
    }

    #[test]
    fn rescaled_sources_read_every_old_position_and_fixed_ones_are_refused() {
        let p = plan(vec![vertex(0, &["src"], &["src"], 3), vertex(1, &["count"], &[], 3)]);
        let m = restore_point("file:///sp", &savepoint(), RestoreSource::Savepoint, &p, false).unwrap();
        assert_eq!(files(&m, 0, 0), vec!["file:///sp/0-0", "file:///sp/0-1"]);
        assert_eq!(files(&m, 0, 1), vec!["file:///sp/0-1", "file:///sp/0-0"], "its own index first");
        assert_eq!(files(&m, 0, 2), vec!["file:///sp/0-0", "file:///sp/0-1"]);
        let p = plan(vec![fixed(vertex(0, &["src"], &["src"], 3)), vertex(1, &["count"], &[], 3)]);
        let e = restore_point("file:///sp", &savepoint(), RestoreSource::Savepoint, &p, false).unwrap_err().to_string();
        assert!(e.contains("'src'") && e.contains("does not rescale") && e.contains("parallelism 2"), "{e}");
        let c = check("file:///sp", &savepoint(), RestoreSource::Savepoint, &p, &BTreeSet::new(), false);
        assert!(c.operators.iter().any(|o| o.uid == "src" && matches!(o.verdict, OperatorVerdict::Mismatch { .. })));
        let mut p = plan(vec![vertex(0, &["src"], &["src"], 2), vertex(1, &["count"], &[], 2)]);
        p.max_parallelism = 256;
        let e = restore_point("file:///sp", &savepoint(), RestoreSource::Savepoint, &p, false).unwrap_err().to_string();
        assert!(e.contains("max parallelism is 128 and the job's is 256"), "{e}");
    }

    #[test]
    fn the_check_agrees_with_the_restore_on_a_checkpoint_without_max_parallelism() {
        // Checkpoints written before the max parallelism was recorded say 0.
        let mut old = savepoint();
        old.max_parallelism = 0;
        let p = plan(vec![vertex(0, &["src"], &["src"], 2), vertex(1, &["count"], &[], 2)]);
        assert!(restore_point("file:///sp", &old, RestoreSource::Savepoint, &p, false).is_ok());
        let c = check("file:///sp", &old, RestoreSource::Savepoint, &p, &BTreeSet::new(), false);
        assert_eq!(c.error, None);
        let count = c.operators.iter().find(|o| o.uid == "count").unwrap();
        assert_eq!(count.verdict, OperatorVerdict::Restores { from_parallelism: 2, to_parallelism: 2 });
    }

    #[test]
    fn the_check_says_per_operator_what_a_restore_would_do() {
        let p = plan(vec![fixed(vertex(0, &["src"], &["src"], 3)), vertex(1, &["count2"], &[], 4)]);
        let stateful: BTreeSet<String> = ["src", "count2"].iter().map(|u| (*u).to_owned()).collect();
        let c = check("file:///sp", &savepoint(), RestoreSource::Savepoint, &p, &stateful, false);
        let verdicts: BTreeMap<&str, &OperatorVerdict> =
            c.operators.iter().map(|o| (o.uid.as_str(), &o.verdict)).collect();
        assert!(matches!(verdicts["src"], OperatorVerdict::Mismatch { .. }), "{verdicts:?}");
        assert_eq!(verdicts["count"], &OperatorVerdict::Dropped);
        assert_eq!(verdicts["count2"], &OperatorVerdict::New);
        assert!(c.error.as_deref().unwrap_or_default().contains("'src'"), "{c:?}");
        let p = plan(vec![vertex(0, &["src"], &["src"], 2), vertex(1, &["count"], &[], 4)]);
        let c = check("file:///sp", &savepoint(), RestoreSource::Savepoint, &p, &stateful, false);
        assert_eq!(c.error, None);
        let count = c.operators.iter().find(|o| o.uid == "count").unwrap();
        assert_eq!(count.verdict, OperatorVerdict::Restores { from_parallelism: 2, to_parallelism: 4 });
        let json = serde_json::to_value(count).unwrap();
        assert_eq!(json["verdict"], "restores");
    }

    #[test]
    fn a_state_whose_kind_changed_is_a_mismatch_and_a_changed_value_type_is_left_to_the_values() {
        let mut counting = vertex(1, &["count"], &[], 2);
        // Another value type: the values decide (state_evolution), not the type's name.
        counting.states.insert("count".into(), declared("n", "alloc::string::String"));
        let p = plan(vec![vertex(0, &["src"], &["src"], 2), counting.clone()]);
        assert!(restore_point("file:///sp", &savepoint(), RestoreSource::Savepoint, &p, false).is_ok());
        // Another kind: refused.
        let mut list = declared("n", "u64");
        list[0].kind = "list".into();
        counting.states.insert("count".into(), list);
        let p = plan(vec![vertex(0, &["src"], &["src"], 2), counting.clone()]);
        let e = restore_point("file:///sp", &savepoint(), RestoreSource::Savepoint, &p, false).unwrap_err().to_string();
        assert!(e.contains("operator 'count': state 'n' changed from value state to list state"), "{e}");
        let c = check("file:///sp", &savepoint(), RestoreSource::Savepoint, &p, &BTreeSet::new(), false);
        let count = c.operators.iter().find(|o| o.uid == "count").unwrap();
        assert!(
            matches!(&count.verdict, OperatorVerdict::Mismatch { reason } if reason.contains("list state")),
            "{c:?}"
        );
        assert_eq!(c.error.as_deref(), Some(e.as_str()));
        // The same types, another state added, or none declared: restores.
        for states in [declared("n", "u64"), [declared("n", "u64"), declared("m", "bool")].concat(), Vec::new()] {
            counting.states.insert("count".into(), states);
            let p = plan(vec![vertex(0, &["src"], &["src"], 2), counting.clone()]);
            assert!(restore_point("file:///sp", &savepoint(), RestoreSource::Savepoint, &p, false).is_ok());
        }
    }

    #[test]
    fn a_map_state_whose_user_key_type_changed_is_a_mismatch_and_its_value_type_is_left_to_the_values() {
        // Map keys are positional bytes: another map key type cannot read them.
        let map = |types: &str| {
            let mut state = declared("buffer", types);
            state[0].kind = "map".into();
            state
        };
        let mut sp = savepoint();
        sp.vertices[1].states.insert("count".into(), map("i64 -> alloc::vec::Vec<u8>"));
        let mut counting = vertex(1, &["count"], &[], 2);
        counting.states.insert("count".into(), map("OrderedTime -> alloc::vec::Vec<u8>"));
        let p = plan(vec![vertex(0, &["src"], &["src"], 2), counting.clone()]);
        let e = restore_point("file:///sp", &sp, RestoreSource::Savepoint, &p, false).unwrap_err().to_string();
        assert!(e.contains("state 'buffer' changed its map key type from i64 to OrderedTime"), "{e}");
        counting.states.insert("count".into(), map("i64 -> alloc::vec::Vec<u16>"));
        let p = plan(vec![vertex(0, &["src"], &["src"], 2), counting]);
        assert!(restore_point("file:///sp", &sp, RestoreSource::Savepoint, &p, false).is_ok());
    }

    #[test]
    fn a_retained_checkpoint_maps_by_uid_with_its_own_urls_and_native_files_keep_their_chains() {
        let handle = |uri: &str| StateHandle { uri: uri.into(), size_bytes: 5, incremental_bytes: 5, shared: true };
        let task = |vertex, subtask, uri: &str, operators: &[&str]| TaskStateEntry {
            vertex,
            subtask,
            snapshot: TaskSnapshot {
                handles: vec![handle(uri)],
                alignment_ms: 0,
                operators: operators.iter().map(|o| (*o).to_owned()).collect(),
            },
        };
        let checkpoint = CheckpointMetadata {
            version: 1,
            job_id: "cd".repeat(16),
            checkpoint_id: 9,
            kind: "CHECKPOINT".into(),
            trigger_ms: 1,
            backend: StateBackendKind::Rocksdb,
            max_parallelism: 128,
            leader_epoch: 0,
            tasks: vec![
                task(0, 0, "file:///c/j/chk-9/0-0", &["src"]),
                task(0, 1, "file:///c/j/chk-9/0-1", &["src"]),
                task(1, 0, "file:///c/j/shared/1-0-0-9-000012.sst", &["count"]),
                task(1, 1, "file:///c/j/shared/1-1-0-9-000013.sst", &["count"]),
            ],
        };
        let metadata = from_checkpoint(&checkpoint);
        assert_eq!(metadata.vertices[1].subtasks[1].key_groups, Some((64, 127)));
        let native = RestoreSource::Checkpoint { native: true };
        let p = plan(vec![vertex(0, &["src"], &["src"], 2), vertex(1, &["count"], &[], 2)]);
        let m = restore_point("file:///c/j/chk-9", &metadata, native, &p, false).unwrap();
        assert_eq!(files(&m, 1, 1), vec!["file:///c/j/shared/1-1-0-9-000013.sst"]);
        assert!(m.tasks.iter().flat_map(|t| &t.snapshot.handles).all(|h| !h.shared), "no claim on its files");
        let p = plan(vec![vertex(0, &["src"], &["src"], 2), vertex(1, &["count"], &[], 4)]);
        let e = restore_point("file:///c/j/chk-9", &metadata, native, &p, false).unwrap_err().to_string();
        assert!(e.contains("'count' ran at parallelism 2") && e.contains("same parallelism"), "{e}");
        // The keyed vertex merged into the source's chain: refused for native files.
        let p = plan(vec![vertex(0, &["src", "count"], &["src"], 2)]);
        let e = restore_point("file:///c/j/chk-9", &metadata, native, &p, false).unwrap_err().to_string();
        assert!(e.contains("one to one"), "{e}");
        // Canonical (heap) checkpoint files rescale like a savepoint's.
        let heap = RestoreSource::Checkpoint { native: false };
        let p = plan(vec![vertex(0, &["src"], &["src"], 2), vertex(1, &["count"], &[], 4)]);
        assert!(restore_point("file:///c/j/chk-9", &metadata, heap, &p, false).is_ok());
    }

    #[test]
    fn savepoint_paths_name_the_directory() {
        assert_eq!(savepoint_dir("/tmp/sp/"), "file:///tmp/sp");
        assert_eq!(savepoint_dir("/tmp/sp/_metadata"), "file:///tmp/sp");
        assert_eq!(savepoint_dir("s3://b/savepoints/savepoint-ab-1/_metadata"), "s3://b/savepoints/savepoint-ab-1");
    }
}
