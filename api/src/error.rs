//! The error type of the job API and of everything that crosses the plugin boundary.

/// Errors raised while building a job or running its operators.
///
/// Each variant says whose fault it is: [`Error::InvalidArgument`] and [`Error::InvalidJob`] are the
/// job author's or user's and are not retried; [`Error::UserPanic`] and [`Error::UserFunction`] fail
/// the task and the restart strategy decides; [`Error::Runtime`] comes from a runtime service
/// (storage, connector, network) and may succeed on retry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job argument is missing or malformed (the user's mistake).
    #[error("invalid job argument: {0}")]
    InvalidArgument(String),
    /// The job graph the build function produced is not valid (the job author's mistake).
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// User code panicked.
    #[error("user code panicked in operator '{operator}': {message}")]
    UserPanic {
        /// Name of the operator whose user code panicked.
        operator: String,
        /// The panic message, with its source location where known.
        message: String,
    },
    /// A user function returned an error.
    #[error("user function failed in operator '{operator}': {message}")]
    UserFunction {
        /// Name of the operator.
        operator: String,
        /// The error the function returned.
        message: String,
    },
    /// A record or state value could not be (de)serialized.
    #[error("cannot {action} {what}: {message}")]
    Serialization {
        /// `serialize` or `deserialize`.
        action: &'static str,
        /// What was being (de)serialized, for example `record of stream 'bids'`.
        what: String,
        /// The codec's message.
        message: String,
    },
    /// A runtime service (state backend, connector, exchange) failed.
    #[error("{service}: {message}")]
    Runtime {
        /// The service, for example `text file source` or `heap state backend`.
        service: String,
        /// What went wrong, with the path or address involved.
        message: String,
    },
    /// The task was cancelled while it was blocked on a runtime service.
    #[error("task cancelled")]
    Cancelled,
}

impl Error {
    /// A runtime service error.
    pub fn runtime(service: impl Into<String>, message: impl ToString) -> Self {
        Self::Runtime { service: service.into(), message: message.to_string() }
    }

    /// A user function's failure (`Err(Error::user("..."))` from `map`, `process_element`, ...):
    /// it fails the task, and the operator's name is added where it is caught.
    pub fn user(message: impl ToString) -> Self {
        Self::UserFunction { operator: String::new(), message: message.to_string() }
    }

    /// Names `operator` in a [`Error::UserFunction`] that does not name one yet.
    pub(crate) fn in_operator(self, operator: &str) -> Self {
        match self {
            Self::UserFunction { operator: o, message } if o.is_empty() => {
                Self::UserFunction { operator: operator.to_owned(), message }
            }
            other => other,
        }
    }

    /// A (de)serialization error.
    pub fn serialization(action: &'static str, what: impl Into<String>, err: impl ToString) -> Self {
        Self::Serialization { action, what: what.into(), message: err.to_string() }
    }

    /// Whether the error is the user's (bad arguments or job definition), so retrying cannot help.
    pub fn is_user_error(&self) -> bool {
        matches!(self, Self::InvalidArgument(_) | Self::InvalidJob(_))
    }
}

/// Result with the job API's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
