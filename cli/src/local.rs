//! The local mini-cluster: the jobmanager and a taskmanager in one process, connected directly
//! instead of over gRPC. The same components run in a real cluster.

use std::sync::Arc;
use weir_jobmanager::{JobDetails, JobManager, JobManagerSettings, JobSubmission, RestartPolicy};
use weir_runtime::JobId;
use weir_taskmanager::{TaskManager, TaskManagerConfig};

/// Slots of the local taskmanager: slots are logical (tasks are threads), so local mode offers
/// enough for any job.
pub const LOCAL_SLOTS: u32 = 4096;

/// A jobmanager and a taskmanager in this process.
#[derive(Debug, Clone)]
pub struct MiniCluster {
    jobmanager: JobManager,
    taskmanager: TaskManager,
}

impl MiniCluster {
    /// Starts the components on the current tokio runtime; failed jobs restart as Flink's default
    /// says (without limit when they take checkpoints, not at all otherwise).
    pub fn start() -> Self {
        Self::start_with_restarts(None)
    }

    /// Starts the components; with `Some(n)`, failed jobs restart up to `n` times (after a 1 s
    /// pause), from their latest completed checkpoint if they take checkpoints; with `None`, as
    /// [`MiniCluster::start`].
    pub fn start_with_restarts(restart_attempts: Option<u32>) -> Self {
        Self::start_with_policy(
            restart_attempts.map(|n| RestartPolicy::fixed_delay(n, std::time::Duration::from_secs(1))),
        )
    }

    /// Starts the components; failed jobs restart as `restart` says, or with `None` as
    /// [`MiniCluster::start`].
    pub fn start_with_policy(restart: Option<RestartPolicy>) -> Self {
        let settings = JobManagerSettings { restart, ..JobManagerSettings::default() };
        let jobmanager = JobManager::new(settings);
        let config =
            TaskManagerConfig { id: "local-taskmanager".into(), slots: LOCAL_SLOTS, ..TaskManagerConfig::default() };
        let taskmanager = TaskManager::new(config, jobmanager.event_sink());
        jobmanager.register_taskmanager(Arc::new(taskmanager.clone()), String::new(), false);
        Self { jobmanager, taskmanager }
    }

    /// The jobmanager.
    pub fn jobmanager(&self) -> &JobManager {
        &self.jobmanager
    }

    /// The taskmanager.
    pub fn taskmanager(&self) -> &TaskManager {
        &self.taskmanager
    }

    /// Submits a job.
    pub async fn submit(&self, submission: JobSubmission) -> weir_jobmanager::Result<JobId> {
        self.jobmanager.submit(submission).await
    }

    /// Submits a job and waits for it to end.
    pub async fn run(&self, submission: JobSubmission) -> weir_jobmanager::Result<JobDetails> {
        let id = self.submit(submission).await?;
        self.jobmanager.wait_for_termination(id).await
    }
}
