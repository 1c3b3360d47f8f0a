//! Errors of plugin loading and deployment.

/// Errors of `weir-runtime`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened as a shared library (the user's input).
    #[error("cannot load job plugin {plugin}: {message}")]
    PluginLoad {
        /// The plugin: its path, or `the uploaded plugin <hash>`.
        plugin: String,
        /// The loader's message.
        message: String,
    },
    /// The library does not export Weir's entry points (the user's input).
    #[error(
        "{plugin} is not a Weir job plugin (no `weir_plugin_fingerprint` symbol): build the job as a \
         `cdylib` crate that calls `weir_api::export_job!`"
    )]
    NotAPlugin {
        /// The library: its path, or `the uploaded plugin <hash>`.
        plugin: String,
    },
    /// The plugin was built against other `weir-api` sources, or by another rustc, for another
    /// target or with another panic strategy.
    #[error(
        "job plugin {plugin} is incompatible with this runtime, their fingerprints differ in {differing}: \
         plugin [{found}], runtime [{expected}]; rebuild the job against this runtime's weir-api sources \
         (the same commit, not only the same version) with the same rustc, target and panic strategy"
    )]
    FingerprintMismatch {
        /// The plugin: its path, or `the uploaded plugin <hash>`.
        plugin: String,
        /// This runtime's fingerprint.
        expected: String,
        /// The plugin's fingerprint (on one line).
        found: String,
        /// The names of the fields that differ, comma-separated (for example `api-src`).
        differing: String,
    },
    /// The job's own code failed (bad arguments, invalid graph, panic).
    #[error(transparent)]
    Job(#[from] weir_api::Error),
}

impl Error {
    /// Whether the error is the user's (bad plugin, bad arguments, invalid job).
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::PluginLoad { .. } | Self::NotAPlugin { .. } | Self::FingerprintMismatch { .. } => true,
            Self::Job(e) => e.is_user_error() || matches!(e, weir_api::Error::UserPanic { .. }),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
