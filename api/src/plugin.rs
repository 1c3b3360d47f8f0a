//! The plugin boundary: the fingerprint a loader checks before touching any Rust type, the entry
//! points [`export_job!`](crate::export_job) generates, and the guards that keep a panic of user
//! code from unwinding into the runtime.
//!
//! A plugin and the runtime exchange Rust trait objects, which is sound only when both were
//! compiled from the same `weir-api` sources by the same compiler for the same target with the
//! same panic strategy. The fingerprint states exactly that; the loader refuses any difference.

use crate::args::JobArgs;
use crate::error::{Error, Result};
use crate::graph::ChainSpec;
use crate::runtime::{JobEntry, JobGraph, TaskChain, TaskInfo};
use crate::stream::StreamExecutionEnvironment;
use std::any::Any;
use std::borrow::Cow;
use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Name of the C-ABI symbol that returns the plugin's fingerprint as a NUL-terminated string.
pub const FINGERPRINT_SYMBOL: &[u8] = b"weir_plugin_fingerprint\0";
/// Name of the symbol that returns the plugin's [`JobEntry`]; called only after the fingerprint matched.
pub const ENTRY_SYMBOL: &[u8] = b"weir_plugin_entry\0";

// `api-src` hashes this crate's sources and `cfg` the target cfgs, features and layout flags
// (both computed by `build.rs`, which documents exactly what they cover).
macro_rules! fingerprint {
    ($panic:literal) => {
        concat!(
            "weir-plugin-abi=1;weir-api=",
            env!("CARGO_PKG_VERSION"),
            ";api-src=",
            env!("WEIR_API_SRC"),
            ";cfg=",
            env!("WEIR_API_CFG"),
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

/// This build's fingerprint, one line of `;`-separated `name=value` fields: plugin ABI,
/// `weir-api` version, hash of `weir-api`'s sources (`api-src`), hash of the layout-relevant
/// cfgs and features (`cfg`), rustc version, target, panic strategy.
pub fn fingerprint() -> &'static str {
    &FINGERPRINT_C[..FINGERPRINT_C.len() - 1]
}

/// The names of the fields in which two fingerprints differ, in the order of `a`, then fields
/// only `b` has; empty when they are equal.
pub fn fingerprint_differences<'a>(a: &'a str, b: &'a str) -> Vec<&'a str> {
    let fields = |s: &'a str| {
        s.split(';').filter(|field| !field.is_empty()).map(|field| field.split_once('=').unwrap_or((field, "")))
    };
    let mut differing: Vec<&str> =
        fields(a).filter(|(name, value)| !fields(b).any(|f| f == (*name, *value))).map(|(name, _)| name).collect();
    for (name, _) in fields(b) {
        if !fields(a).any(|(n, _)| n == name) && !differing.contains(&name) {
            differing.push(name);
        }
    }
    differing
}

/// A job's build function, as passed to [`export_job!`](crate::export_job).
pub type BuildFn = fn(&mut StreamExecutionEnvironment, &JobArgs) -> Result<()>;

struct FnJob(BuildFn);

pub(crate) fn guarded<R>(what: &str, call: impl FnOnce() -> Result<R>) -> Result<R> {
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

    fn check_state_value(
        &self,
        graph: &JobGraph,
        node: crate::graph::NodeId,
        state: &str,
        value: &[u8],
    ) -> Result<bool> {
        guarded("a state check", || {
            let checks = graph.factories.get().state_checks.get(&node);
            match checks.and_then(|c| c.iter().find(|(name, _)| name == state)) {
                Some((_, check)) => check(value).map(|()| true),
                None => Ok(false),
            }
        })
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
    // `try_with`: a drop may run while the thread's locals are being destroyed.
    match PANIC_LOCATION.try_with(|cell| cell.borrow_mut().take()).ok().flatten() {
        Some(location) => format!("{message} (at {location})"),
        None => message,
    }
}

/// A value created by plugin code that the runtime may drop: the drop runs under the plugin's
/// `catch_unwind`. A `Drop` of user code (a captured value, a record) that panicked would
/// otherwise unwind into the runtime, whose copy of `std` cannot catch the plugin's panics, and
/// abort the process.
///
/// The guard only helps where the runtime reaches its drop through a vtable the plugin made: a
/// `Box<dyn …>` created by plugin code, whose `drop_in_place` is the plugin's copy of this impl.
/// A guard inside a type the runtime drops directly would run the runtime's copy. Hence
/// [`TypedBatch`](crate::runtime::TypedBatch) and [`JobGraph`] box their guarded contents as trait
/// objects, and the task chain (itself a `Box<dyn TaskChain>`) guards its operators.
///
/// A panic while dropping is reported on stderr (there is no caller to return it to) and
/// otherwise ignored; the rest of the value is still dropped as the panic unwinds.
pub(crate) struct DropGuarded<T> {
    value: ManuallyDrop<T>,
    what: Cow<'static, str>,
}

impl<T> DropGuarded<T> {
    /// Guards `value`; `what` names it in the report of a panic.
    pub(crate) fn new(value: T, what: impl Into<Cow<'static, str>>) -> Self {
        Self { value: ManuallyDrop::new(value), what: what.into() }
    }

    /// The value, no longer guarded.
    pub(crate) fn into_inner(self) -> T {
        let mut this = ManuallyDrop::new(self);
        drop(std::mem::take(&mut this.what));
        // SAFETY: `this` is never dropped, so `value` is taken once and never dropped here.
        unsafe { ManuallyDrop::take(&mut this.value) }
    }
}

impl<T> std::ops::Deref for DropGuarded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::DerefMut for DropGuarded<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> Drop for DropGuarded<T> {
    fn drop(&mut self) {
        // SAFETY: `value` is dropped only here, once; `self` is not used for it afterwards.
        let dropped = catch_unwind(AssertUnwindSafe(|| unsafe { ManuallyDrop::drop(&mut self.value) }));
        if let Err(payload) = dropped {
            let message = panic_message(payload.as_ref());
            // `eprintln!` would panic if stderr is closed; this must not.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("weir job plugin: user code panicked while dropping {}: {message}\n", self.what).as_bytes(),
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::TypedBatch;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A user value whose drop panics, counting its drops.
    struct PanicsOnDrop(&'static AtomicUsize);

    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
            panic!("user drop panics");
        }
    }

    /// Whether dropping `value` unwinds (into the caller: the runtime, for a plugin's value).
    fn drop_unwinds<T>(value: T) -> bool {
        catch_unwind(AssertUnwindSafe(|| drop(value))).is_err()
    }

    #[test]
    fn the_fingerprint_is_one_line_of_named_fields_with_the_source_and_cfg_hashes() {
        let fingerprint = fingerprint();
        assert!(!fingerprint.contains('\n') && !fingerprint.contains('\0'), "{fingerprint}");
        let names: Vec<&str> = fingerprint.split(';').map(|f| f.split_once('=').unwrap().0).collect();
        assert_eq!(names, ["weir-plugin-abi", "weir-api", "api-src", "cfg", "rustc", "target", "panic"]);
        for hash in ["api-src=", "cfg="] {
            let value = fingerprint.split(';').find_map(|f| f.strip_prefix(hash)).unwrap();
            assert!(value.len() == 16 && value.chars().all(|c| c.is_ascii_hexdigit()), "{fingerprint}");
        }
        assert!(fingerprint.contains(";rustc=rustc "), "{fingerprint}");
    }

    #[test]
    fn fingerprint_differences_name_the_fields_that_differ() {
        let a = "weir-plugin-abi=1;weir-api=0.1.0;api-src=00000000000000aa;rustc=rustc 1.0";
        assert!(fingerprint_differences(a, a).is_empty());
        let b = "weir-plugin-abi=1;weir-api=0.1.0;api-src=00000000000000bb;rustc=rustc 1.0";
        assert_eq!(fingerprint_differences(a, b), ["api-src"]);
        assert_eq!(
            fingerprint_differences(a, "weir-plugin-abi=1;panic=abort"),
            ["weir-api", "api-src", "rustc", "panic"]
        );
        assert_eq!(fingerprint_differences("", "weir-plugin-abi=1"), ["weir-plugin-abi"]);
    }

    #[test]
    fn dropping_a_typed_batch_whose_records_panic_on_drop_does_not_unwind() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        assert!(!drop_unwinds(TypedBatch::new(vec![PanicsOnDrop(&DROPS)])));
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
        // Taken out of the batch, the records are no longer guarded.
        let records = TypedBatch::new(vec![PanicsOnDrop(&DROPS)]).take::<Vec<PanicsOnDrop>>().ok().unwrap();
        assert!(drop_unwinds(records));
        assert_eq!(DROPS.load(Ordering::SeqCst), 2);
        assert!(TypedBatch::new(1_u8).take::<u16>().is_err());
    }

    /// A job whose map function holds a value that panics when dropped, and one task chain of it.
    fn graph_and_chain(drops: &'static AtomicUsize) -> (JobGraph, Box<dyn TaskChain>) {
        let env = StreamExecutionEnvironment::new();
        let held = PanicsOnDrop(drops);
        env.from_collection(vec![1_i64])
            .uid("numbers")
            .map(move |x: i64| {
                std::hint::black_box(&held);
                x
            })
            .sink_to_blackhole();
        let graph = env.into_graph().unwrap();
        let spec = ChainSpec { head: 0, nodes: vec![0, 1, 2], chained_edges: vec![0, 1], outputs: Vec::new() };
        let info = TaskInfo {
            job_id: "job".into(),
            job_name: "job".into(),
            task_name: "task".into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            attempt: 0,
            heap_state: true,
        };
        let chain = job_entry(|_, _| Ok(())).instantiate(&graph, &spec, &info).unwrap();
        (graph, chain)
    }

    #[test]
    fn dropping_a_graph_or_chain_whose_user_function_panics_on_drop_does_not_unwind() {
        // The graph and the chain share the function; whichever is dropped last drops it.
        static GRAPH_LAST: AtomicUsize = AtomicUsize::new(0);
        let (graph, chain) = graph_and_chain(&GRAPH_LAST);
        assert!(!drop_unwinds(chain));
        assert_eq!(GRAPH_LAST.load(Ordering::SeqCst), 0);
        assert!(!drop_unwinds(graph));
        assert_eq!(GRAPH_LAST.load(Ordering::SeqCst), 1);

        static CHAIN_LAST: AtomicUsize = AtomicUsize::new(0);
        let (graph, chain) = graph_and_chain(&CHAIN_LAST);
        assert!(!drop_unwinds(graph));
        assert!(!drop_unwinds(chain));
        assert_eq!(CHAIN_LAST.load(Ordering::SeqCst), 1);
    }
}
