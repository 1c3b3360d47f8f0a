//! The plugin boundary: the fingerprint a loader checks before touching any Rust type, and the
//! entry points [`export_job!`](crate::export_job) generates.
//!
//! A plugin and the runtime exchange Rust trait objects, which is sound only when both were
//! compiled from the same `weir-api` by the same compiler for the same target with the same panic
//! strategy. The fingerprint states exactly that; the loader refuses any difference.

use crate::args::JobArgs;
use crate::error::{Error, Result};
use crate::graph::ChainSpec;
use crate::runtime::{JobEntry, JobGraph, TaskChain, TaskInfo};
use crate::stream::StreamExecutionEnvironment;
use std::any::Any;
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Name of the C-ABI symbol that returns the plugin's fingerprint as a NUL-terminated string.
pub const FINGERPRINT_SYMBOL: &[u8] = b"weir_plugin_fingerprint\0";
/// Name of the symbol that returns the plugin's [`JobEntry`]; called only after the fingerprint matched.
pub const ENTRY_SYMBOL: &[u8] = b"weir_plugin_entry\0";

macro_rules! fingerprint {
    ($panic:literal) => {
        concat!(
            "weir-plugin-abi=1;weir-api=",
            env!("CARGO_PKG_VERSION"),
            ";rustc=",
            env!("WEIR_RUSTC_VERSION"),
            ";target=",
            env!("WEIR_TARGET"),
            ";panic=",
            $panic,
            "\0"
        )
    };
}

/// The fingerprint, NUL-terminated.
#[cfg(panic = "unwind")]
pub const FINGERPRINT_C: &str = fingerprint!("unwind");
/// The fingerprint, NUL-terminated.
#[cfg(not(panic = "unwind"))]
pub const FINGERPRINT_C: &str = fingerprint!("abort");

/// This build's fingerprint: plugin ABI, `weir-api` version, rustc version, target, panic strategy.
pub fn fingerprint() -> &'static str {
    &FINGERPRINT_C[..FINGERPRINT_C.len() - 1]
}

/// A job's build function, as passed to [`export_job!`](crate::export_job).
pub type BuildFn = fn(&mut StreamExecutionEnvironment, &JobArgs) -> Result<()>;

struct FnJob(BuildFn);

fn guarded<R>(what: &str, call: impl FnOnce() -> Result<R>) -> Result<R> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(result) => result,
        Err(payload) => Err(Error::UserPanic { operator: what.to_owned(), message: panic_message(payload.as_ref()) }),
    }
}

impl JobEntry for FnJob {
    fn build(&self, args: &[String]) -> Result<JobGraph> {
        guarded("job build function", || {
            let mut env = StreamExecutionEnvironment::new();
            (self.0)(&mut env, &JobArgs::new(args.to_vec()))?;
            env.into_graph()
        })
    }

    fn instantiate(&self, graph: &JobGraph, spec: &ChainSpec, info: &TaskInfo) -> Result<Box<dyn TaskChain>> {
        guarded(&info.task_name, || crate::chain::instantiate(graph, spec, info))
    }
}

/// A job built by `build`, for running it in the same process (tests, embedded use).
pub fn job_entry(build: BuildFn) -> Box<dyn JobEntry> {
    Box::new(FnJob(build))
}

/// What [`export_job!`](crate::export_job) returns from a plugin: also installs the plugin's
/// panic hook, which records where user code panicked instead of printing to stderr (the
/// taskmanager reports and logs the failure).
#[doc(hidden)]
pub fn plugin_entry(build: BuildFn) -> Box<dyn JobEntry> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            PANIC_LOCATION.with(|cell| *cell.borrow_mut() = location);
        }));
    });
    job_entry(build)
}

thread_local! {
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The message of a caught panic, with its location when the plugin's hook recorded it.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    };
    match PANIC_LOCATION.with(|cell| cell.borrow_mut().take()) {
        Some(location) => format!("{message} (at {location})"),
        None => message,
    }
}

/// Exports a job's build function from a plugin crate (`crate-type = ["cdylib"]`).
///
/// ```ignore
/// fn build(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> weir_api::Result<()> { ... }
/// weir_api::export_job!(build);
/// ```
#[macro_export]
macro_rules! export_job {
    ($build:path) => {
        /// The plugin's fingerprint; see `weir_api::plugin`.
        #[unsafe(no_mangle)]
        pub extern "C" fn weir_plugin_fingerprint() -> *const ::std::ffi::c_char {
            $crate::plugin::FINGERPRINT_C.as_ptr().cast()
        }

        /// The plugin's job; only called by a runtime whose fingerprint matched.
        #[unsafe(no_mangle)]
        pub fn weir_plugin_entry() -> ::std::boxed::Box<dyn $crate::runtime::JobEntry> {
            $crate::plugin::plugin_entry($build)
        }
    };
}
