//! Fault injection for tests and soaks: named points in the code where a configured fault — an
//! error, a delay, a crash — is injected. Built only with the cargo feature `failpoints`
//! (without it every point is a no-op the compiler removes); configured through the `fail`
//! crate, in process (`fail::cfg`) or for a whole process by the `FAILPOINTS` environment
//! variable, for example `FAILPOINTS='storage::put=5%return;jobmanager::metadata::delay=return(2000)'`.
//!
//! | point | where | effect of `return[(arg)]` |
//! |---|---|---|
//! | `storage::put`, `storage::get`, `storage::delete`, `storage::list` | checkpoint storage | the operation fails (a transient error) |
//! | `storage::delay` | every storage operation | waits `arg` ms first |
//! | `jobmanager::metadata::delay` | before a checkpoint's `_metadata` write | waits `arg` ms |
//! | `jobmanager::metadata::crash` | right after a `_metadata` write | the jobmanager process aborts |
//! | `taskmanager::upload` | a task's snapshot upload | the upload fails (the task declines) |
//! | `taskmanager::commit::crash` | before a sink commits a completed checkpoint | the taskmanager process aborts |
//! | `taskmanager::kafka_sink::commit::crash` | in an exactly-once Kafka sink's commit: its records and progress marker flushed to the brokers, the transaction not committed | the taskmanager process aborts |
//! | `taskmanager::report::drop` | a report to the jobmanager (task state, ack, decline) | it is lost |
//! | `taskmanager::report::duplicate` | a report to the jobmanager | it is sent twice |

/// Whether fault injection is built in.
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Starts fault injection for a process: reads `FAILPOINTS`. Keep the guard for the process's
/// life. Without the feature, or without the variable, nothing is injected.
#[must_use = "fault injection ends when the guard is dropped"]
pub fn setup() -> Guard {
    #[cfg(feature = "failpoints")]
    {
        if std::env::var_os("FAILPOINTS").is_some() {
            tracing::warn!("fault injection is on: FAILPOINTS={:?}", std::env::var("FAILPOINTS").unwrap_or_default());
        }
        Guard(Some(fail::FailScenario::setup()))
    }
    #[cfg(not(feature = "failpoints"))]
    Guard(())
}

/// Keeps fault injection configured (see [`setup`]); dropping it clears the points.
pub struct Guard(
    #[cfg(feature = "failpoints")]
    #[allow(dead_code, reason = "held for its Drop, which clears the configured points")]
    Option<fail::FailScenario<'static>>,
    #[cfg(not(feature = "failpoints"))] (),
);

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("enabled", &ENABLED).finish()
    }
}

/// `Some(argument)` when point `name` fires (configured with `return[(argument)]`; an empty
/// argument without one), else `None`.
#[inline]
pub fn fires(name: &str) -> Option<String> {
    #[cfg(feature = "failpoints")]
    {
        fail::eval(name, |arg| arg.unwrap_or_default())
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        None
    }
}

/// Waits as long as point `name` says (`return(ms)`), without blocking the async runtime.
#[inline]
pub async fn delay(name: &str) {
    if let Some(ms) = fires(name).and_then(|arg| arg.trim().parse::<u64>().ok()) {
        tracing::warn!("fault injection: {name} delays {ms} ms");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// Aborts the process (as a crash or SIGKILL would end it) when point `name` fires.
#[inline]
pub fn crash(name: &str) {
    if fires(name).is_some() {
        eprintln!("fault injection: {name}: aborting the process");
        std::process::abort();
    }
}
