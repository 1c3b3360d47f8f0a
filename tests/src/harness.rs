//! Running jobs for tests: in this process on the mini-cluster, or through the real binaries.

use std::path::{Path, PathBuf};
use weir_api::plugin::BuildFn;
use weir_cli::MiniCluster;
use weir_jobmanager::{JobDetails, JobSubmission};
use weir_runtime::JobArtifact;

/// Runs the job `build` with `args` at `parallelism` on an in-process mini-cluster and waits for
/// it to end.
pub fn run_job(build: BuildFn, args: &[&str], parallelism: u32) -> JobDetails {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        let cluster = MiniCluster::start();
        let entry = weir_api::plugin::job_entry(build);
        let submission = JobSubmission {
            artifact: JobArtifact::InProcess { name: "test job".into(), entry: entry.into() },
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            parallelism,
            checkpointing: None,
            state_backend: Default::default(),
            savepoint: None,
            restart: None,
        };
        let details = match tokio::time::timeout(std::time::Duration::from_secs(120), cluster.run(submission)).await {
            Ok(details) => details.expect("job submission failed"),
            Err(_) => panic!("job did not end within 120 s: {:#?}", cluster.jobmanager().jobs()),
        };
        assert_eq!(cluster.taskmanager().running_tasks(), 0, "tasks left running after the job ended");
        // The jobmanager releases the job's resources on the taskmanager right after the end.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while cluster.taskmanager().held_jobs() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(cluster.taskmanager().held_jobs(), 0, "the taskmanager still holds the ended job");
        details
    })
}

/// All lines of the `part-*.txt` files in `dir`, sorted.
pub fn read_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return lines };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("part-") && name.ends_with(".txt") {
            let text = std::fs::read_to_string(&path).expect("read output");
            lines.extend(text.lines().map(str::to_owned));
        }
    }
    lines.sort();
    lines
}

/// Sorted owned lines, for comparing with [`read_lines`].
pub fn sorted(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// The directory that holds the workspace's built binaries and plugins (the test executable
/// lives in its `deps/` folder).
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf()
}

/// A built artifact of the workspace, with a hint when it is missing.
pub fn artifact(name: &str) -> PathBuf {
    let path = build_dir().join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` before the tests", path.display());
    path
}

/// The output of a finished `weir` command.
#[derive(Debug)]
pub struct CommandOutput {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs the `weir` binary with `args`; kills it (by handle) if it runs longer than `timeout`.
///
/// # Panics
/// When it had to be killed (with what it printed until then).
pub fn run_weir(args: &[&str], timeout: std::time::Duration) -> CommandOutput {
    run_weir_within(args, timeout)
        .unwrap_or_else(|out| panic!("weir {args:?} did not finish within {timeout:?}: {out:?}"))
}

/// Runs the `weir` binary with `args`; kills it (by handle) if it runs longer than `timeout`,
/// and then returns what it printed until then as the error.
///
/// # Errors
/// It had to be killed.
pub fn run_weir_within(args: &[&str], timeout: std::time::Duration) -> Result<CommandOutput, CommandOutput> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(artifact("weir"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir");
    let mut stdout_pipe = child.stdout.take().expect("stdout");
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let deadline = std::time::Instant::now() + timeout;
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for weir") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            killed = true;
            break child.wait().expect("wait for the killed weir");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = CommandOutput {
        code: status.code(),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    if killed { Err(out) } else { Ok(out) }
}

/// Deterministic text that exercises the word definition: mixed case, digits, punctuation,
/// CRLF, tabs, empty lines, invalid UTF-8, multi-byte UTF-8, no final newline.
pub fn tricky_text(seed: u64, lines: usize) -> Vec<u8> {
    let pieces: [&[u8]; 16] = [
        b"Hello",
        b"WORLD",
        b"hello",
        b"r2d2",
        b"42",
        b"foo_bar",
        b"caf\xc3\xa9",
        b"\xff\xfe",
        b"don't",
        b"a",
        b"B",
        b"x-y",
        b"\t",
        b"  ",
        b"Zz9",
        b"\xe2\x82\xac",
    ];
    let mut state = seed;
    let mut text = Vec::new();
    for line in 0..lines {
        let words = (state % 9) as usize;
        for _ in 0..words {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            text.extend_from_slice(pieces[(state >> 33) as usize % pieces.len()]);
            text.push(if state.is_multiple_of(3) { b',' } else { b' ' });
        }
        text.extend_from_slice(if line % 5 == 0 { b"\r\n" } else { b"\n" });
    }
    text.extend_from_slice(b"last line without newline");
    text
}
