//! What the verbs print: tables, times, summaries, and progress on standard error.

use std::time::{Duration, Instant, UNIX_EPOCH};
use weir_cli::client::JobSummary;

/// How long a wait goes on before progress is shown, and how often after that.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// An error on one line (the CLI's errors never span lines).
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Prints `JSON` pretty on standard output.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A progress line on standard error (never standard output: that is for results).
pub fn progress(line: &str) {
    eprintln!("{line}");
}

/// When a long wait shows its progress: first after [`PROGRESS_INTERVAL`], then every
/// [`PROGRESS_INTERVAL`].
#[derive(Debug)]
pub struct ProgressTimer {
    started: Instant,
    next: Instant,
}

impl ProgressTimer {
    /// Starts the clock.
    pub fn start() -> Self {
        Self::starting_after(PROGRESS_INTERVAL)
    }

    /// Starts the clock; the first report is due after `first`.
    pub fn starting_after(first: Duration) -> Self {
        let now = Instant::now();
        Self { started: now, next: now + first }
    }

    /// The time waited so far, when a report is due (then not again for an interval).
    pub fn due(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if now < self.next {
            return None;
        }
        self.next = now + PROGRESS_INTERVAL;
        Some(now - self.started)
    }
}

pub fn print_summary(details: &JobSummary) {
    let seconds = details.duration_ms as f64 / 1000.0;
    let rate = if seconds > 0.0 { details.source_records as f64 / seconds } else { 0.0 };
    outln!("Job '{}' ({}) {} in {seconds:.3} s", details.name, details.jid, details.state);
    outln!("  {} records from sources, {rate:.0} records/s", details.source_records);
    for sink in &details.sinks {
        outln!("  output {sink}");
    }
}

/// Left-aligned columns, two spaces apart.
pub fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        outln!("{}", text.trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// An epoch-milliseconds time as RFC 3339 (UTC), or `-` if unknown.
pub fn format_start(epoch_ms: u64) -> String {
    if epoch_ms == 0 {
        return "-".to_owned();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(epoch_ms)).to_string()
}

/// A duration for people: `0.250 s`, `12.3 s`, `4m 05s`, `2h 03m 04s`.
pub fn format_duration(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0 => format!("{:.3} s", ms as f64 / 1000.0),
        1..60 => format!("{:.1} s", ms as f64 / 1000.0),
        60..3600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h {:02}m {:02}s", seconds / 3600, seconds / 60 % 60, seconds % 60),
    }
}

/// A path given for a storage location made absolute (the jobmanager does not share our working
/// directory); URLs unchanged.
pub fn storage_location(location: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    if location.contains("://") {
        return Ok(location.to_owned());
    }
    let path = std::path::absolute(location).with_context(|| format!("cannot resolve the path {location}"))?;
    Ok(format!("file://{}", path.display()))
}
