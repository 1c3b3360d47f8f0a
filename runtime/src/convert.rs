//! Conversions between the domain types and the gRPC messages of `weir-proto`. Messages come
//! from the network: every conversion from a message validates it and fails with a message that
//! names the bad field, never panics.

use crate::checkpoint::{CheckpointingSpec, StateHandle, TaskRestore, TaskSnapshot};
use crate::deployment::{ChannelLocation, InputSpec, JobId, TaskDeployment, TaskId};
use crate::gateway::{FailureKind, TaskEvent, TaskExecutionState};
use weir_api::graph::{ChainSpec, OutputSpec, Partitioning};
use weir_proto::control::v1 as pb;

/// A message that does not describe a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct InvalidMessage {
    /// The field, for example `task.job_id`.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidMessage {
    InvalidMessage { field, message: message.into() }
}

/// Parses a job id (32 hex digits or a hyphenated UUID).
pub fn job_id(field: &'static str, text: &str) -> Result<JobId, InvalidMessage> {
    text.parse().map_err(|e| invalid(field, format!("{text:?} is not a job id: {e}")))
}

impl From<TaskId> for pb::TaskId {
    fn from(t: TaskId) -> Self {
        pb::TaskId { job_id: t.job.to_string(), attempt: t.attempt, vertex: t.vertex, subtask: t.subtask }
    }
}

impl TryFrom<Option<pb::TaskId>> for TaskId {
    type Error = InvalidMessage;
    fn try_from(t: Option<pb::TaskId>) -> Result<Self, InvalidMessage> {
        let t = t.ok_or_else(|| invalid("task", "missing"))?;
        Ok(TaskId { job: job_id("task.job_id", &t.job_id)?, attempt: t.attempt, vertex: t.vertex, subtask: t.subtask })
    }
}

fn partitioning_to_pb(p: Partitioning) -> i32 {
    let p = match p {
        // The planner resolves Auto; a deployment never carries it.
        Partitioning::Auto | Partitioning::Forward => pb::Partitioning::Forward,
        Partitioning::Rebalance => pb::Partitioning::Rebalance,
        Partitioning::Hash => pb::Partitioning::Hash,
        Partitioning::Broadcast => pb::Partitioning::Broadcast,
    };
    p as i32
}

fn partitioning(field: &'static str, value: i32) -> Result<Partitioning, InvalidMessage> {
    match pb::Partitioning::try_from(value) {
        Ok(pb::Partitioning::Forward) => Ok(Partitioning::Forward),
        Ok(pb::Partitioning::Rebalance) => Ok(Partitioning::Rebalance),
        Ok(pb::Partitioning::Hash) => Ok(Partitioning::Hash),
        Ok(pb::Partitioning::Broadcast) => Ok(Partitioning::Broadcast),
        _ => Err(invalid(field, format!("unknown partitioning {value}"))),
    }
}

impl From<TaskExecutionState> for pb::TaskState {
    fn from(s: TaskExecutionState) -> Self {
        match s {
            TaskExecutionState::Deploying => pb::TaskState::Deploying,
            TaskExecutionState::Running => pb::TaskState::Running,
            TaskExecutionState::Finished => pb::TaskState::Finished,
            TaskExecutionState::Failed => pb::TaskState::Failed,
            TaskExecutionState::Canceled => pb::TaskState::Canceled,
        }
    }
}

/// The state in a task state update.
pub fn task_state(value: i32) -> Result<TaskExecutionState, InvalidMessage> {
    match pb::TaskState::try_from(value) {
        Ok(pb::TaskState::Deploying) => Ok(TaskExecutionState::Deploying),
        Ok(pb::TaskState::Running) => Ok(TaskExecutionState::Running),
        Ok(pb::TaskState::Finished) => Ok(TaskExecutionState::Finished),
        Ok(pb::TaskState::Failed) => Ok(TaskExecutionState::Failed),
        Ok(pb::TaskState::Canceled) => Ok(TaskExecutionState::Canceled),
        _ => Err(invalid("state", format!("unknown task state {value}"))),
    }
}

/// The update that reports `event` from taskmanager `taskmanager`.
pub fn task_event_to_update(taskmanager: &str, event: &TaskEvent) -> pb::UpdateTaskStateRequest {
    let (failure_kind, unusable_checkpoint_id) = match event.failure_kind {
        FailureKind::Task => (pb::FailureKind::Task, 0),
        FailureKind::CheckpointUnusable(checkpoint) => (pb::FailureKind::CheckpointUnusable, checkpoint),
        FailureKind::Unrecoverable => (pb::FailureKind::Unrecoverable, 0),
    };
    pb::UpdateTaskStateRequest {
        taskmanager_id: taskmanager.to_owned(),
        task: Some(event.task.into()),
        state: pb::TaskState::from(event.state) as i32,
        failure_message: event.failure.clone().unwrap_or_default(),
        records_in: event.records_in,
        records_out: event.records_out,
        failure_kind: failure_kind as i32,
        unusable_checkpoint_id,
        final_snapshot: event.final_snapshot.as_ref().map(|snapshot| pb::FinalSnapshot {
            handles: handles_to_pb(&snapshot.handles),
            operators: snapshot.operators.clone(),
        }),
    }
}

/// The event a task state update reports.
///
/// # Errors
/// An invalid task id, state, failure kind or handle.
pub fn task_event_from_update(update: pb::UpdateTaskStateRequest) -> Result<TaskEvent, InvalidMessage> {
    let state = task_state(update.state)?;
    let failure_kind = match pb::FailureKind::try_from(update.failure_kind) {
        Ok(pb::FailureKind::Unspecified | pb::FailureKind::Task) => FailureKind::Task,
        Ok(pb::FailureKind::CheckpointUnusable) if update.unusable_checkpoint_id > 0 => {
            FailureKind::CheckpointUnusable(update.unusable_checkpoint_id)
        }
        Ok(pb::FailureKind::Unrecoverable) => FailureKind::Unrecoverable,
        Ok(pb::FailureKind::CheckpointUnusable) => {
            return Err(invalid("unusable_checkpoint_id", "0 with failure kind CHECKPOINT_UNUSABLE"));
        }
        Err(_) => return Err(invalid("failure_kind", format!("unknown failure kind {}", update.failure_kind))),
    };
    let final_snapshot = match update.final_snapshot {
        Some(snapshot) if state == TaskExecutionState::Finished => Some(TaskSnapshot {
            handles: handles_from_pb(snapshot.handles)?,
            alignment_ms: 0,
            operators: snapshot.operators,
        }),
        Some(_) => return Err(invalid("final_snapshot", "only a FINISHED task has a final snapshot")),
        None => None,
    };
    let failed = state == TaskExecutionState::Failed;
    Ok(TaskEvent {
        task: update.task.try_into()?,
        state,
        failure: failed.then(|| {
            if update.failure_message.is_empty() { "unknown failure".to_owned() } else { update.failure_message }
        }),
        failure_kind: if failed { failure_kind } else { FailureKind::Task },
        records_in: update.records_in,
        records_out: update.records_out,
        final_snapshot,
    })
}

/// The request that deploys `deployment` with the plugin `plugin_sha256`.
pub fn deployment_to_request(deployment: &TaskDeployment, plugin_sha256: &str) -> pb::DeployTaskRequest {
    let chain = &deployment.chain;
    pb::DeployTaskRequest {
        task: Some(deployment.task.into()),
        job_name: deployment.job_name.clone(),
        task_name: deployment.task_name.clone(),
        parallelism: deployment.parallelism,
        max_parallelism: deployment.max_parallelism,
        job_args: deployment.job_args.clone(),
        plugin_sha256: plugin_sha256.to_owned(),
        chain: Some(pb::ChainSpec {
            head: chain.head,
            nodes: chain.nodes.clone(),
            chained_edges: chain.chained_edges.clone(),
            outputs: chain
                .outputs
                .iter()
                .map(|o| pb::OutputSpec {
                    edge: o.edge,
                    consumer_parallelism: o.consumer_parallelism,
                    partitioning: partitioning_to_pb(o.partitioning),
                })
                .collect(),
        }),
        inputs: deployment
            .inputs
            .iter()
            .map(|i| pb::InputSpec {
                edge: i.edge,
                input: i.input,
                producer_parallelism: i.producer_parallelism,
                partitioning: partitioning_to_pb(i.partitioning),
            })
            .collect(),
        producer_addresses: deployment
            .input_locations
            .iter()
            .map(|l| pb::ChannelAddress {
                edge: l.edge,
                producer_subtask: l.producer,
                data_address: l.data_address.clone(),
                taskmanager_id: l.taskmanager.clone(),
            })
            .collect(),
        output_taskmanagers: deployment
            .output_taskmanagers
            .iter()
            .map(|ids| pb::ConsumerTaskManagers { taskmanager_ids: ids.clone() })
            .collect(),
        checkpointing: deployment
            .checkpointing
            .as_ref()
            .map(|c| pb::CheckpointingSpec { storage_url: c.storage_url.clone() }),
        state_backend: deployment.state_backend.to_string(),
        restore: deployment
            .restore
            .as_ref()
            .map(|r| pb::TaskRestore { checkpoint_id: r.checkpoint_id, handles: handles_to_pb(&r.handles) }),
    }
}

/// Handles as protobuf messages.
pub fn handles_to_pb(handles: &[StateHandle]) -> Vec<pb::StateHandle> {
    handles
        .iter()
        .map(|h| pb::StateHandle {
            uri: h.uri.clone(),
            size_bytes: h.size_bytes,
            incremental_bytes: h.incremental_bytes,
            shared: h.shared,
        })
        .collect()
}

/// Handles from protobuf messages.
///
/// # Errors
/// A handle without a URI.
pub fn handles_from_pb(handles: Vec<pb::StateHandle>) -> Result<Vec<StateHandle>, InvalidMessage> {
    handles
        .into_iter()
        .map(|h| {
            if h.uri.is_empty() {
                return Err(invalid("handles.uri", "empty"));
            }
            Ok(StateHandle {
                uri: h.uri,
                size_bytes: h.size_bytes,
                incremental_bytes: h.incremental_bytes,
                shared: h.shared,
            })
        })
        .collect()
}

/// The deployment a request asks for, and the plugin's SHA-256.
pub fn deployment_from_request(request: pb::DeployTaskRequest) -> Result<(TaskDeployment, String), InvalidMessage> {
    let task: TaskId = request.task.try_into()?;
    if request.parallelism == 0 || task.subtask >= request.parallelism {
        return Err(invalid("parallelism", format!("subtask {} of parallelism {}", task.subtask, request.parallelism)));
    }
    if request.max_parallelism == 0 || request.max_parallelism > weir_api::keygroup::UPPER_MAX_PARALLELISM {
        return Err(invalid("max_parallelism", format!("{} is out of range", request.max_parallelism)));
    }
    let sha = &request.plugin_sha256;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(invalid("plugin_sha256", format!("{sha:?} is not 64 lowercase hex digits")));
    }
    let chain = request.chain.ok_or_else(|| invalid("chain", "missing"))?;
    if !chain.nodes.contains(&chain.head) {
        return Err(invalid("chain", "the head is not one of the chain's nodes"));
    }
    let outputs = chain
        .outputs
        .into_iter()
        .map(|o| {
            Ok(OutputSpec {
                edge: o.edge,
                consumer_parallelism: o.consumer_parallelism,
                partitioning: partitioning("chain.outputs.partitioning", o.partitioning)?,
            })
        })
        .collect::<Result<Vec<_>, InvalidMessage>>()?;
    let inputs = request
        .inputs
        .into_iter()
        .map(|i| {
            Ok(InputSpec {
                edge: i.edge,
                input: i.input,
                producer_parallelism: i.producer_parallelism,
                partitioning: partitioning("inputs.partitioning", i.partitioning)?,
            })
        })
        .collect::<Result<Vec<_>, InvalidMessage>>()?;
    let input_locations = request
        .producer_addresses
        .into_iter()
        .map(|a| ChannelLocation {
            edge: a.edge,
            producer: a.producer_subtask,
            taskmanager: a.taskmanager_id,
            data_address: a.data_address,
        })
        .collect();
    let output_taskmanagers: Vec<Vec<String>> =
        request.output_taskmanagers.into_iter().map(|c| c.taskmanager_ids).collect();
    if output_taskmanagers.len() != outputs.len()
        || output_taskmanagers.iter().zip(&outputs).any(|(ids, o)| ids.len() != o.consumer_parallelism as usize)
    {
        return Err(invalid("output_taskmanagers", "does not match the chain's outputs and their parallelism"));
    }
    let checkpointing = request
        .checkpointing
        .map(|c| {
            if c.storage_url.is_empty() {
                return Err(invalid("checkpointing.storage_url", "empty"));
            }
            Ok(CheckpointingSpec { storage_url: c.storage_url })
        })
        .transpose()?;
    let restore = request
        .restore
        .map(|r| {
            if r.checkpoint_id == 0 {
                return Err(invalid("restore.checkpoint_id", "0"));
            }
            Ok(TaskRestore { checkpoint_id: r.checkpoint_id, handles: handles_from_pb(r.handles)? })
        })
        .transpose()?;
    let state_backend = match request.state_backend.as_str() {
        "" => crate::checkpoint::StateBackendKind::Heap,
        name => name.parse().map_err(|e: String| invalid("state_backend", e))?,
    };
    let deployment = TaskDeployment {
        checkpointing,
        state_backend,
        restore,
        task,
        output_taskmanagers,
        job_name: request.job_name,
        task_name: request.task_name,
        parallelism: request.parallelism,
        max_parallelism: request.max_parallelism,
        job_args: request.job_args,
        chain: ChainSpec { head: chain.head, nodes: chain.nodes, chained_edges: chain.chained_edges, outputs },
        inputs,
        input_locations,
    };
    Ok((deployment, request.plugin_sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> TaskDeployment {
        TaskDeployment {
            task: TaskId { job: JobId::random(), attempt: 2, vertex: 1, subtask: 1 },
            job_name: "j".into(),
            task_name: "a -> b".into(),
            parallelism: 2,
            max_parallelism: 128,
            job_args: vec!["--x".into(), "1".into()],
            chain: ChainSpec {
                head: 3,
                nodes: vec![3, 4],
                chained_edges: vec![7],
                outputs: vec![OutputSpec { edge: 8, consumer_parallelism: 4, partitioning: Partitioning::Hash }],
            },
            inputs: vec![InputSpec {
                edge: 2,
                input: 0,
                producer_parallelism: 3,
                partitioning: Partitioning::Rebalance,
            }],
            input_locations: vec![ChannelLocation {
                edge: 2,
                producer: 0,
                taskmanager: "tm-1".into(),
                data_address: "127.0.0.1:9".into(),
            }],
            output_taskmanagers: vec![vec!["tm-1".into(), "tm-2".into(), "tm-1".into(), "tm-2".into()]],
            checkpointing: Some(CheckpointingSpec { storage_url: "s3://bucket/checkpoints".into() }),
            state_backend: crate::checkpoint::StateBackendKind::Rocksdb,
            restore: Some(TaskRestore {
                checkpoint_id: 4,
                handles: vec![StateHandle {
                    uri: "s3://bucket/checkpoints/j/shared/a.sst".into(),
                    size_bytes: 9,
                    incremental_bytes: 0,
                    shared: true,
                }],
            }),
        }
    }

    #[test]
    fn deployments_round_trip() {
        let d = deployment();
        let sha = "ab".repeat(32);
        let (back, back_sha) = deployment_from_request(deployment_to_request(&d, &sha)).unwrap();
        assert_eq!(back, d);
        assert_eq!(back_sha, sha);
    }

    #[test]
    fn malformed_deployments_name_the_field() {
        let d = deployment();
        let mut bad = deployment_to_request(&d, &"ab".repeat(32));
        bad.plugin_sha256 = "../../etc/passwd".into();
        assert_eq!(deployment_from_request(bad).unwrap_err().field, "plugin_sha256");
        let mut bad = deployment_to_request(&d, &"ab".repeat(32));
        bad.task.as_mut().unwrap().job_id = "nope".into();
        assert_eq!(deployment_from_request(bad).unwrap_err().field, "task.job_id");
        let mut bad = deployment_to_request(&d, &"ab".repeat(32));
        bad.inputs[0].partitioning = 99;
        assert_eq!(deployment_from_request(bad).unwrap_err().field, "inputs.partitioning");
    }

    #[test]
    fn task_events_round_trip() {
        let failed = TaskEvent {
            failure: Some("boom".into()),
            failure_kind: FailureKind::CheckpointUnusable(7),
            ..TaskEvent::new(deployment().task, TaskExecutionState::Failed, 3, 4)
        };
        assert_eq!(task_event_from_update(task_event_to_update("tm", &failed)).unwrap(), failed);
        let handle =
            StateHandle { uri: "s3://b/j/shared/final-0-1".into(), size_bytes: 9, incremental_bytes: 9, shared: true };
        let finished = TaskEvent {
            final_snapshot: Some(TaskSnapshot { handles: vec![handle], alignment_ms: 0, operators: vec!["op".into()] }),
            ..TaskEvent::new(deployment().task, TaskExecutionState::Finished, 3, 4)
        };
        assert_eq!(task_event_from_update(task_event_to_update("tm", &finished)).unwrap(), finished);
        let unrecoverable = TaskEvent { failure_kind: FailureKind::Unrecoverable, ..failed.clone() };
        assert_eq!(task_event_from_update(task_event_to_update("tm", &unrecoverable)).unwrap(), unrecoverable);
        let running = TaskEvent::new(deployment().task, TaskExecutionState::Running, 0, 0);
        assert_eq!(task_event_from_update(task_event_to_update("tm", &running)).unwrap(), running);
    }

    #[test]
    fn inconsistent_task_events_are_refused() {
        let mut update =
            task_event_to_update("tm", &TaskEvent::new(deployment().task, TaskExecutionState::Failed, 0, 0));
        update.failure_kind = pb::FailureKind::CheckpointUnusable as i32;
        assert_eq!(task_event_from_update(update.clone()).unwrap_err().field, "unusable_checkpoint_id");
        update.failure_kind = 42;
        assert_eq!(task_event_from_update(update).unwrap_err().field, "failure_kind");
        let mut update =
            task_event_to_update("tm", &TaskEvent::new(deployment().task, TaskExecutionState::Running, 0, 0));
        update.final_snapshot = Some(pb::FinalSnapshot { handles: Vec::new(), operators: Vec::new() });
        assert_eq!(task_event_from_update(update).unwrap_err().field, "final_snapshot");
    }
}
