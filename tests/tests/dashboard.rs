//! The web dashboard in a real browser: a cluster of the real binaries runs the backpressured
//! slow-sink job with checkpoints every 500 ms, and `scripts/dashboard_check.py` drives headless
//! Chromium through the jobmanager's page with Selenium, as a user would: the job in the
//! overview, its graph with the source shown as backpressured and an edge's records/s, at least
//! two completed checkpoints in the table and the charts, then the cancel button (and its
//! confirmation), until the page shows the job CANCELED. The REST API must agree afterwards.
//!
//! Screenshots (overview, job graph, checkpoints, canceled) go to a temporary directory, and
//! also to `$WEIR_SCREENSHOT_DIR` when it is set.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir_tests::cluster::{Cluster, submitted_job_id};
use weir_tests::harness::artifact;
use weir_tests::kube::repo_root;

/// How long the browser check may take in all (each of its steps waits at most 90 s).
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);
/// The screenshots the check saves.
const SCREENSHOTS: [&str; 4] = ["overview.png", "job-graph.png", "checkpoints.png", "canceled.png"];

/// `GET url`: status, content type and body.
fn get(url: &str) -> (u16, String, Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let response = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let body = response.bytes().await.expect("the body").to_vec();
        (status, content_type, body)
    })
}

/// The test tools' venv python (scripts/setup.sh installs selenium there).
fn venv_python() -> PathBuf {
    weir_tests::s3::moto_server_binary().parent().expect("the venv's bin").join("python")
}

/// Runs the browser check; kills it (by handle) after [`CHECK_TIMEOUT`]. Its exit code (None
/// when killed) and its standard output and error.
fn run_check(rest: &str, job: &str, screenshots: &Path, logs: &Path) -> (Option<i32>, String, String) {
    let python = venv_python();
    let (stdout, stderr) = (logs.join("check.stdout"), logs.join("check.stderr"));
    let mut child = Command::new(&python)
        .arg(repo_root().join("scripts/dashboard_check.py"))
        .args([rest, job, screenshots.to_str().expect("a UTF-8 path")])
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).expect("stdout file"))
        .stderr(File::create(&stderr).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("run {} (run ./scripts/setup.sh): {e}", python.display()));
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for the check") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    (code, read(&stdout), read(&stderr))
}

#[test]
fn the_dashboard_shows_the_backpressured_job_and_its_checkpoints_and_cancels_it() {
    let cluster = Cluster::start(&[], &[("tm-1", 4)]);

    // The page and its assets come from the jobmanager's binary.
    let (status, content_type, page) = get(&format!("{}/", cluster.rest_url()));
    assert_eq!((status, content_type.as_str()), (200, "text/html; charset=utf-8"));
    assert!(String::from_utf8_lossy(&page).contains("/web/app.js"), "the page loads its script");
    for (file, kind) in
        [("app.js", "text/javascript"), ("vendor/dagre.min.js", "text/javascript"), ("app.css", "text/css")]
    {
        let (status, content_type, body) = get(&format!("{}/web/{file}", cluster.rest_url()));
        assert_eq!(status, 200, "{file}");
        assert!(content_type.starts_with(kind) && !body.is_empty(), "{file}: {content_type}");
    }
    let (status, _, body) = get(&format!("{}/web/missing.js", cluster.rest_url()));
    assert_eq!(status, 404);
    let body: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
    assert_eq!(body["errors"][0], "not found: /web/missing.js");

    // The generator pushes into a map that sleeps every other record: the source waits for room
    // in its outputs (backpressure high). Long enough not to finish before it is cancelled.
    let output = tempfile::tempdir().unwrap();
    let run = cluster.weir(&[
        "run",
        artifact("libweir_test_jobs.so").to_str().unwrap(),
        "-p",
        "2",
        "--detached",
        "--checkpoint-interval",
        "500ms",
        "--",
        "--job",
        "slow-sink",
        "--records",
        "5000000",
        "--payload-bytes",
        "1024",
        "--sleep-every",
        "2",
        "--output",
        output.path().to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{run:?}\n{}", cluster.logs());
    let job = submitted_job_id(&run);
    cluster.wait_for_running_subtasks(&job, Duration::from_secs(60));

    let screenshots = tempfile::Builder::new().prefix("weir-dashboard-").tempdir().unwrap();
    let started = Instant::now();
    let (code, stdout, stderr) = run_check(cluster.rest_url(), &job, screenshots.path(), cluster.dir());
    let took = started.elapsed();
    eprintln!("dashboard check ({took:.1?}):\n{stdout}{stderr}");
    if let Some(dir) = std::env::var_os("WEIR_SCREENSHOT_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("WEIR_SCREENSHOT_DIR");
        for entry in std::fs::read_dir(screenshots.path()).expect("the screenshots") {
            let path = entry.expect("a screenshot").path();
            std::fs::copy(&path, dir.join(path.file_name().expect("a file name"))).expect("copy a screenshot");
        }
        eprintln!("screenshots copied to {}", dir.display());
    }
    assert_eq!(
        code,
        Some(0),
        "the dashboard check failed (None: killed after {CHECK_TIMEOUT:?}):\n{stdout}{stderr}\n{}",
        cluster.logs()
    );
    for name in SCREENSHOTS {
        let bytes = std::fs::read(screenshots.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000, "{name} is not a real screenshot");
    }

    // The cancel button did cancel the job.
    let (status, details) = cluster.rest_get(&format!("/jobs/{job}"));
    assert_eq!(status, 200, "{details}");
    assert_eq!(details["state"], "CANCELED", "{details}");
}
