//! The deployment descriptors of one execution attempt: subtask `i` of every vertex runs in
//! slot `i` (slot sharing, as in Flink).

use crate::plan::ExecutionPlan;
use crate::registry::AssignedSlot;
use weir_runtime::checkpoint::{CheckpointMetadata, CheckpointingSpec, StateBackendKind, TaskRestore};
use weir_runtime::{ChannelLocation, JobId, TaskDeployment, TaskId};

/// What every task of an attempt shares.
pub(crate) struct AttemptSpec<'a> {
    pub(crate) job: JobId,
    pub(crate) attempt: u32,
    pub(crate) job_name: &'a str,
    pub(crate) args: &'a [String],
    pub(crate) plan: &'a ExecutionPlan,
    pub(crate) checkpointing: Option<CheckpointingSpec>,
    pub(crate) state_backend: StateBackendKind,
    /// The checkpoint the attempt restores from.
    pub(crate) restore: Option<&'a CheckpointMetadata>,
}

/// Each task's deployment and the index of its slot in `slots`.
pub(crate) fn deployments(spec: &AttemptSpec<'_>, slots: &[AssignedSlot]) -> Vec<(TaskDeployment, usize)> {
    let plan = spec.plan;
    let location = |edge: u32, producer: u32| {
        let slot = &slots[producer as usize];
        ChannelLocation {
            edge,
            producer,
            data_address: slot.data_address.clone(),
            taskmanager: slot.taskmanager.clone(),
        }
    };
    let mut out = Vec::with_capacity(plan.task_count());
    for vertex in &plan.vertices {
        for subtask in 0..vertex.parallelism {
            let mut input_locations = Vec::new();
            for input in &vertex.inputs {
                for producer in input.producers_for(subtask) {
                    input_locations.push(location(input.edge, producer));
                }
            }
            let deployment = TaskDeployment {
                task: TaskId { job: spec.job, attempt: spec.attempt, vertex: vertex.id, subtask },
                job_name: spec.job_name.to_owned(),
                task_name: vertex.name.clone(),
                parallelism: vertex.parallelism,
                max_parallelism: plan.max_parallelism,
                job_args: spec.args.to_vec(),
                chain: vertex.chain.clone(),
                inputs: vertex.inputs.clone(),
                input_locations,
                output_taskmanagers: vertex
                    .chain
                    .outputs
                    .iter()
                    .map(|o| (0..o.consumer_parallelism).map(|c| slots[c as usize].taskmanager.clone()).collect())
                    .collect(),
                checkpointing: spec.checkpointing.clone(),
                state_backend: spec.state_backend,
                restore: spec.restore.map(|m| TaskRestore {
                    checkpoint_id: m.checkpoint_id,
                    handles: m.task(vertex.id, subtask).map(|s| s.handles.clone()).unwrap_or_default(),
                }),
            };
            out.push((deployment, subtask as usize));
        }
    }
    out
}
