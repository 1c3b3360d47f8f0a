//! Loading job plugins.
//!
//! A plugin is opened with `dlopen`; before any Rust type crosses, its C-ABI fingerprint symbol is
//! called and compared with this runtime's. Objects created by plugin code keep the library loaded
//! ([`Plugged`]), so the code behind their vtables is never unmapped while they live.

use crate::error::{Error, Result};
use std::ffi::{CStr, c_char};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir_api::graph::ChainSpec;
use weir_api::plugin::{ENTRY_SYMBOL, FINGERPRINT_SYMBOL, fingerprint, fingerprint_differences};
use weir_api::runtime::{JobEntry, JobGraph, TaskChain, TaskInfo};

/// Where a job's code comes from.
#[derive(Clone)]
pub enum JobArtifact {
    /// A compiled plugin (`.so`) on the local filesystem.
    Plugin(PathBuf),
    /// An uploaded plugin, addressed by the SHA-256 of its bytes, with a local copy at `path`.
    Stored {
        /// Lowercase hex SHA-256 of the plugin's bytes.
        sha256: String,
        /// A local copy to load it from.
        path: PathBuf,
    },
    /// A job linked into this process (tests and embedded use); `name` is for display.
    InProcess {
        /// Display name.
        name: String,
        /// The job.
        entry: Arc<dyn JobEntry>,
    },
}

impl fmt::Debug for JobArtifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plugin(path) => write!(f, "Plugin({})", path.display()),
            Self::Stored { sha256, .. } => write!(f, "Stored({sha256})"),
            Self::InProcess { name, .. } => write!(f, "InProcess({name})"),
        }
    }
}

/// A value created by plugin code, with the library it came from.
///
/// Fields drop in declaration order: the value first, then (possibly the last reference to) the
/// library.
pub struct Plugged<T> {
    value: T,
    library: Option<Arc<libloading::Library>>,
}

impl<T> std::ops::Deref for Plugged<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::DerefMut for Plugged<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Plugged<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

/// A job whose code is loaded and ready to build graphs and instantiate tasks.
pub struct LoadedJob {
    entry: Plugged<Arc<dyn JobEntry>>,
    name: String,
}

impl fmt::Debug for LoadedJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedJob").field("name", &self.name).finish()
    }
}

impl LoadedJob {
    /// Loads `artifact`.
    ///
    /// # Errors
    /// [`Error::PluginLoad`], [`Error::NotAPlugin`] or [`Error::FingerprintMismatch`] for a file
    /// that is not a compatible Weir plugin; nothing of it has run except its library
    /// initializers.
    pub fn load(artifact: &JobArtifact) -> Result<Self> {
        match artifact {
            JobArtifact::Plugin(path) => load_plugin(path, path.display().to_string()),
            // Name an upload by its hash: the jobmanager's cache path means nothing to the user.
            JobArtifact::Stored { path, sha256 } => {
                load_plugin(path, format!("the uploaded plugin {}", &sha256[..sha256.len().min(12)]))
            }
            JobArtifact::InProcess { name, entry } => {
                Ok(Self { entry: Plugged { value: entry.clone(), library: None }, name: name.clone() })
            }
        }
    }

    /// Keeps the job's library loaded as long as `value`, which its code made (a committer a
    /// task registered that outlives the task).
    pub fn plugged<T>(&self, value: T) -> Plugged<T> {
        Plugged { value, library: self.entry.library.clone() }
    }

    /// Display name of the job's code (the plugin's file name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the job's build function with `args`.
    pub fn build(&self, args: &[String]) -> Result<Plugged<JobGraph>> {
        let graph = self.entry.build(args)?;
        Ok(Plugged { value: graph, library: self.entry.library.clone() })
    }

    /// Reads a stored value of state `state` of node `node` as the type the job declares for
    /// it (see [`JobEntry::check_state_value`]): `Ok(false)` when nothing is declared to check.
    ///
    /// # Errors
    /// The value does not read as the declared type.
    pub fn check_state_value(
        &self,
        graph: &JobGraph,
        node: weir_api::graph::NodeId,
        state: &str,
        value: &[u8],
    ) -> Result<bool> {
        Ok(self.entry.check_state_value(graph, node, state, value)?)
    }

    /// Instantiates the chain `spec` of `graph` for one subtask.
    pub fn instantiate(
        &self,
        graph: &JobGraph,
        spec: &ChainSpec,
        info: &TaskInfo,
    ) -> Result<Plugged<Box<dyn TaskChain>>> {
        let chain = self.entry.instantiate(graph, spec, info)?;
        Ok(Plugged { value: chain, library: self.entry.library.clone() })
    }
}

fn load_plugin(path: &Path, plugin: String) -> Result<LoadedJob> {
    let load_error = |message: String| Error::PluginLoad { plugin: plugin.clone(), message };
    let metadata = std::fs::metadata(path).map_err(|e| load_error(e.to_string()))?;
    if !metadata.is_file() {
        return Err(load_error("not a regular file".to_owned()));
    }
    // A relative path without a slash would make dlopen search the library path instead.
    let absolute = std::fs::canonicalize(path).map_err(|e| load_error(e.to_string()))?;
    // SAFETY: loading runs the library's initializers; that is the inherent risk of plugins and
    // the reason the user submits only code they trust. Nothing else of it runs before the
    // fingerprint check below.
    let library = unsafe { libloading::Library::new(&absolute) }.map_err(|e| load_error(one_line(&e.to_string())))?;
    let found = {
        // SAFETY: the symbol is looked up by name; a library that has it was built by
        // `export_job!`, which defines it as `extern "C" fn() -> *const c_char` returning a
        // static NUL-terminated string.
        let symbol = unsafe { library.get::<extern "C" fn() -> *const c_char>(FINGERPRINT_SYMBOL) }
            .map_err(|_| Error::NotAPlugin { plugin: plugin.clone() })?;
        let pointer = symbol();
        if pointer.is_null() {
            return Err(Error::NotAPlugin { plugin: plugin.clone() });
        }
        // SAFETY: non-null, NUL-terminated static string (see above).
        unsafe { CStr::from_ptr(pointer) }.to_string_lossy().into_owned()
    };
    let expected = fingerprint();
    if found != expected {
        // A fingerprint is one line; this keeps a foreign string from breaking the message.
        let found = one_line(&found);
        let mut differing = fingerprint_differences(&found, expected).join(", ");
        if differing.is_empty() {
            differing = "spelling".to_owned();
        }
        return Err(Error::FingerprintMismatch {
            plugin: plugin.clone(),
            expected: expected.to_owned(),
            found,
            differing,
        });
    }
    let entry = {
        // SAFETY: the fingerprint matched, so the plugin was compiled by this rustc, for this
        // target, against the same weir-api sources, whose `export_job!` defines the entry with
        // this signature.
        let symbol = unsafe { library.get::<fn() -> Box<dyn JobEntry>>(ENTRY_SYMBOL) }
            .map_err(|_| Error::NotAPlugin { plugin: plugin.clone() })?;
        symbol()
    };
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(LoadedJob { entry: Plugged { value: Arc::from(entry), library: Some(Arc::new(library)) }, name })
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_a_load_error() {
        let err = LoadedJob::load(&JobArtifact::Plugin("/nonexistent/libjob.so".into())).unwrap_err();
        assert!(matches!(err, Error::PluginLoad { .. }), "{err}");
        assert!(err.is_user_error());
    }

    #[test]
    fn a_file_that_is_no_library_is_a_load_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libjob.so");
        std::fs::write(&path, b"not an ELF file").unwrap();
        let err = LoadedJob::load(&JobArtifact::Plugin(path)).unwrap_err();
        assert!(matches!(err, Error::PluginLoad { .. }), "{err}");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn a_library_without_the_fingerprint_is_not_a_plugin() {
        // libc is on every Linux machine and is no Weir job.
        let candidates = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"];
        let Some(libc) = candidates.iter().map(Path::new).find(|p| p.exists()) else {
            return;
        };
        let err = LoadedJob::load(&JobArtifact::Plugin(libc.to_owned())).unwrap_err();
        assert!(matches!(err, Error::NotAPlugin { .. }), "{err}");
    }
}
