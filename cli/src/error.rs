//! The errors of the `weir` command's library: talking to the jobmanager and reading the user's
//! job settings. Each displays as one line.

use std::fmt;

/// An error of the REST client ([`crate::client`]) or of the job settings ([`crate::settings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The jobmanager address is unusable (the user's input).
    InvalidUrl {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The jobmanager could not be reached or did not answer (a retry may help once it runs).
    Unreachable {
        /// The jobmanager's URL.
        base: String,
        /// Why, for example `connection refused`.
        cause: String,
    },
    /// The jobmanager refused or failed the request; 4xx is the user's mistake, 5xx the
    /// cluster's.
    Api {
        /// HTTP status.
        status: u16,
        /// The server's message (`errors[0]`).
        message: String,
    },
    /// The answer was not what this client understands (another Weir version?).
    Protocol {
        /// The request's URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// A `-D KEY=VALUE` job setting that is unknown, has a bad value, or cannot apply (the
    /// user's input).
    Setting {
        /// The key as given (or the whole argument when it has no `=`).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// A [`Error::Setting`].
    pub fn setting(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Setting { key: key.into(), reason: reason.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl { url, reason } => write!(f, "invalid jobmanager address '{url}': {reason}"),
            Self::Unreachable { base, cause } => write!(
                f,
                "cannot reach the jobmanager at {base}: {cause} (is it running? set -m/--jobmanager or WEIR_JOBMANAGER)"
            ),
            Self::Api { status, message } => write!(f, "{message} (HTTP {status})"),
            Self::Protocol { url, message } => write!(f, "unexpected answer from {url}: {message}"),
            Self::Setting { key, reason } => write!(f, "-D {key}: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
