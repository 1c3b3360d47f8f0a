//! Weir's gRPC protocol: the code tonic and prost generate from the `.proto` files under
//! `proto/`.
//!
//! This crate holds generated code only; no domain logic. Conversions between these messages and
//! Weir's domain types live with the domain types.
//!
//! - [`control::v1`]: the control plane between the jobmanager and its taskmanagers
//!   (`weir/control.proto`).

/// Control-plane protocols.
pub mod control {
    /// Version 1 of the control plane (`weir.control.v1`): `JobManagerService`, served by the
    /// jobmanager, and `TaskManagerService`, served by each taskmanager.
    pub mod v1 {
        tonic::include_proto!("weir.control.v1");
    }
}

#[cfg(test)]
mod tests {
    use super::control::v1::{
        ChainSpec, ChannelAddress, CheckpointingSpec, ConsumerTaskManagers, DeployTaskRequest, InputSpec, OutputSpec,
        Partitioning, StateHandle, TaskId, TaskRestore,
    };
    use prost::Message;

    #[test]
    fn deploy_task_request_round_trips() {
        let request = DeployTaskRequest {
            task: Some(TaskId {
                job_id: "0123456789abcdef0123456789abcdef".to_owned(),
                attempt: 2,
                vertex: 1,
                subtask: 3,
            }),
            job_name: "wordcount".to_owned(),
            task_name: "split -> count".to_owned(),
            parallelism: 4,
            max_parallelism: 128,
            job_args: vec!["--input".to_owned(), "words.txt".to_owned()],
            plugin_sha256: "ab".repeat(32),
            checkpointing: Some(CheckpointingSpec { storage_url: "s3://bucket/checkpoints".to_owned() }),
            state_backend: "rocksdb".to_owned(),
            restore: Some(TaskRestore {
                checkpoint_id: 7,
                handles: vec![StateHandle {
                    uri: "s3://bucket/checkpoints/job/chk-7/1-3".to_owned(),
                    size_bytes: 10,
                    incremental_bytes: 10,
                    shared: false,
                }],
            }),
            chain: Some(ChainSpec {
                head: 2,
                nodes: vec![2, 3],
                chained_edges: vec![2],
                outputs: vec![OutputSpec {
                    edge: 3,
                    consumer_parallelism: 1,
                    partitioning: Partitioning::Rebalance.into(),
                }],
            }),
            inputs: vec![InputSpec {
                edge: 1,
                input: 0,
                producer_parallelism: 2,
                partitioning: Partitioning::Hash.into(),
            }],
            producer_addresses: vec![
                ChannelAddress {
                    edge: 1,
                    producer_subtask: 0,
                    data_address: "127.0.0.1:6121".to_owned(),
                    taskmanager_id: "tm-1".to_owned(),
                },
                ChannelAddress {
                    edge: 1,
                    producer_subtask: 1,
                    data_address: "127.0.0.1:6122".to_owned(),
                    taskmanager_id: "tm-2".to_owned(),
                },
            ],
            output_taskmanagers: vec![ConsumerTaskManagers {
                taskmanager_ids: vec!["tm-1".to_owned(), "tm-2".to_owned()],
            }],
        };

        let bytes = request.encode_to_vec();
        let decoded = DeployTaskRequest::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded, request);
        assert_eq!(decoded.inputs[0].partitioning(), Partitioning::Hash);
    }
}
