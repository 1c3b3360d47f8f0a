//! The OpenAPI document at `/openapi.json` against a live cluster, checked by Schemathesis
//! (`scripts/openapi_check.py`): every operation called with real ids and its answer validated
//! (status listed, content type, schema), then a property-based run with generated and invalid
//! input that must get documented answers and never a server error.

use std::process::Command;
use std::time::Duration;
use weir_tests::cluster::{Cluster, submitted_job_id};
use weir_tests::harness::artifact;
use weir_tests::kube::repo_root;

fn run_wcount(cluster: &Cluster) -> String {
    let out = cluster.weir(&[
        "run",
        artifact("libweir_example_nexmark.so").to_str().unwrap(),
        "-p",
        "2",
        "--detached",
        "--checkpoint-interval",
        "500ms",
        "--",
        "--query",
        "wcount",
        "--events",
        "100000000",
        "--rate",
        "5000",
        "--sink",
        "blackhole",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    submitted_job_id(&out)
}

#[test]
fn the_openapi_document_holds_against_a_live_cluster() {
    let cluster = Cluster::start(&[], &[("tm-1", 8)]);
    let job = run_wcount(&cluster);
    let victim = run_wcount(&cluster);
    for id in [&job, &victim] {
        cluster.wait_for_running_subtasks(id, Duration::from_secs(60));
    }
    cluster.wait_for_progress(&job, 0);
    let work = tempfile::tempdir().unwrap();
    let savepoints = work.path().join("savepoints");
    let reports = work.path().join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    let python = weir_tests::s3::moto_server_binary().parent().expect("the venv's bin").join("python");
    let plugin_args = r#"["--query", "q0", "--events", "1000000000", "--sink", "blackhole"]"#;
    let out = Command::new(&python)
        .arg(repo_root().join("scripts/openapi_check.py"))
        .args(["--url", cluster.rest_url(), "--job", &job, "--victim", &victim, "--taskmanager", "tm-1"])
        .args(["--plugin", artifact("libweir_example_nexmark.so").to_str().unwrap(), "--plugin-args", plugin_args])
        .args(["--savepoint-dir", savepoints.to_str().unwrap(), "--report-dir", reports.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| panic!("run {} (run ./scripts/setup.sh): {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}\n{}", cluster.logs());
    assert!(stdout.contains("OK: "), "{stdout}");
    // The victim was stopped with a savepoint; the job submitted by the check was cancelled.
    let end = cluster.wait_for_end(&victim);
    assert_eq!(end["state"], "FINISHED", "{end}");
    assert!(std::fs::read_dir(&savepoints).unwrap().count() >= 2, "a savepoint and the stop's");
}
