//! The jobmanager's error type.

use weir_runtime::JobId;

/// Errors of the jobmanager. [`Error::status_code`] says whose fault each is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job's code could not be loaded or built (bad plugin, bad arguments, invalid graph).
    #[error(transparent)]
    Job(#[from] weir_runtime::Error),
    /// The job graph cannot be executed as declared (the job author's mistake).
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// A request was malformed (the user's mistake).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No job has this id.
    #[error("job {0} not found")]
    JobNotFound(JobId),
    /// Something else the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The job is in a state that does not allow the request.
    #[error("job {job} is {status}: {action} is not possible")]
    IllegalState {
        /// The job.
        job: JobId,
        /// Its status.
        status: String,
        /// What was asked.
        action: String,
    },
    /// The cluster has fewer slots than the job needs.
    #[error("not enough task slots: the job needs {needed} (its highest parallelism), the cluster offers {available}")]
    NotEnoughSlots {
        /// Slots needed.
        needed: u32,
        /// Slots registered.
        available: u32,
    },
    /// A taskmanager refused or failed a request.
    #[error("taskmanager {taskmanager}: {message}")]
    TaskManager {
        /// Its id.
        taskmanager: String,
        /// What went wrong.
        message: String,
    },
    /// The plugin storage or the local plugin cache failed (the cluster's problem; a retry may
    /// help if the storage is back).
    #[error("plugin storage: {0}")]
    Storage(String),
    /// No stored plugin has this SHA-256.
    #[error("plugin {0} not found")]
    PluginNotFound(String),
    /// The request cannot be served now; a retry later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// The job is busy with an earlier request of the same kind (a checkpoint or savepoint in
    /// progress); a retry once it ended succeeds.
    #[error("{0}: retry when it has ended")]
    Busy(String),
    /// The job's record could not be written (the storage's problem; a retry may help).
    #[error("cannot record the job: {0}")]
    Record(String),
}

impl Error {
    /// The HTTP status this error maps to: 4xx for the user's mistakes, 5xx for the cluster's.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::Job(e) if e.is_user_error() => 400,
            Self::Job(_) => 500,
            Self::InvalidJob(_) | Self::InvalidRequest(_) => 400,
            Self::JobNotFound(_) | Self::NotFound(_) => 404,
            Self::IllegalState { .. } | Self::Busy(_) => 409,
            Self::NotEnoughSlots { .. } => 503,
            Self::TaskManager { .. } => 502,
            Self::Storage(_) => 500,
            Self::PluginNotFound(_) => 404,
            Self::Unavailable(_) => 503,
            Self::Record(_) => 500,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
