//! The `weir` CLI as a Flink user drives it (issue 13, point 4), each habit against a real
//! cluster (`weir-jobmanager` and `weir-taskmanager` processes on loopback ports): `-d`, `-m
//! host:port`, `-D key=value`, Ctrl-C on an attached run, job arguments after the plugin,
//! `weir list` / `-a`, `weir info`, one environment variable per meaning, `--json` on every verb
//! and progress on standard error.
//!
//! The tests take turns, one cluster at a time, as in `cluster.rs`.

use serde_json::Value;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use weir_tests::cluster::{Cluster, submitted_job_id};
use weir_tests::harness::{CommandOutput, artifact, read_lines, run_weir};

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time (a failed test must not block the others).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn test_jobs() -> PathBuf {
    artifact("libweir_test_jobs.so")
}

fn nexmark() -> PathBuf {
    artifact("libweir_example_nexmark.so")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `host:port` of the cluster's REST API, as Flink's `-m` takes it.
fn host_port(cluster: &Cluster) -> String {
    cluster.rest_url().trim_start_matches("http://").to_owned()
}

fn assert_ok(out: &CommandOutput, what: &str, cluster: &Cluster) {
    assert_eq!(out.code, Some(0), "{what}: {out:?}\n{}", cluster.logs());
}

/// A one-line error on standard error, exit code 2, naming `needle`.
fn assert_one_line_error(out: &CommandOutput, needle: &str) {
    assert_eq!(out.code, Some(2), "{out:?}");
    let stderr = out.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("weir: ") && stderr.contains(needle), "{needle:?} in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn json(out: &CommandOutput, what: &str) -> Value {
    assert_eq!(out.code, Some(0), "{what}: {out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {out:?}"))
}

/// The ids in `weir list [-a] --json`.
fn listed(cluster: &Cluster, all: bool) -> Vec<String> {
    let args: &[&str] = if all { &["list", "-a"] } else { &["list"] };
    let list = cluster.weir_json(args);
    list["jobs"].as_array().expect("jobs").iter().map(|j| j["id"].as_str().expect("id").to_owned()).collect()
}

/// A `weir` process running in the background, its output collected as it comes.
struct Background {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(artifact("weir"))
            .args(args)
            .env_remove("WEIR_JOBMANAGER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weir");
        let (stdout, stderr) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
        let mut readers = Vec::new();
        for (mut pipe, sink) in [
            (Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>, stdout.clone()),
            (Box::new(child.stderr.take().expect("stderr")), stderr.clone()),
        ] {
            readers.push(std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            }));
        }
        Self { child, stdout, stderr, readers }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until standard output or error contains `needle`.
    fn wait_for(&mut self, needle: &str, timeout: Duration, cluster: &Cluster) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return;
            }
            let exited = self.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "weir printed no {needle:?} (exited: {exited:?}); stdout {:?}, stderr {:?}\n{}",
                self.stdout(),
                self.stderr(),
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The job id it printed (`Job submitted: <id>`).
    fn job_id(&mut self, cluster: &Cluster) -> String {
        self.wait_for("Job submitted: ", Duration::from_secs(60), cluster);
        let out = CommandOutput { code: None, stdout: self.stdout(), stderr: self.stderr() };
        submitted_job_id(&out)
    }

    /// Sends `signal` (`INT`, ...) to the process, by its pid.
    fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").args([format!("-{signal}"), self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits (up to `timeout`) for the process to exit; its output.
    fn finish(mut self, timeout: Duration) -> CommandOutput {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for weir") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("weir did not exit within {timeout:?}: stdout {:?}, stderr {:?}", self.stdout(), self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        CommandOutput { code: status.code(), stdout: self.stdout(), stderr: self.stderr() }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `weir run` with `args` and then `job_args` for the endless test job (`--rate 100`).
fn endless<'a>(args: &[&'a str], plugin: &'a str) -> Vec<&'a str> {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[plugin, "--job", "endless", "--rate", "100"]);
    all
}

/// `-d`/`--detached` returns once the job is submitted; `-m host:port` without a scheme reaches
/// the cluster before and after the verb, as does `WEIR_JOBMANAGER=host:port`.
#[test]
fn detached_runs_and_flink_style_jobmanager_addresses() {
    let _serial = serial();
    let cluster = Cluster::start(&[], &[("tm-a", 2)]);
    let plugin = test_jobs();
    let address = host_port(&cluster);

    // -d, with -m host:port before the verb.
    let mut args = vec!["-m", address.as_str()];
    args.extend(endless(&["-d"], path_str(&plugin)));
    let out = run_weir(&args, Duration::from_secs(60));
    assert_ok(&out, "run -d", &cluster);
    let job = submitted_job_id(&out);
    cluster.wait_for_state(&job, &["RUNNING"], Duration::from_secs(30));
    // --detached, with -m after the verb.
    let out = run_weir(
        &["run", "-m", &address, "--detached", path_str(&plugin), "--job", "endless", "--rate", "50"],
        Duration::from_secs(60),
    );
    assert_ok(&out, "run --detached -m", &cluster);
    let second = submitted_job_id(&out);

    // -m host:port with another verb, before and after it; and the environment variable.
    for args in [vec!["-m", address.as_str(), "list", "--json"], vec!["list", "--json", "-m", address.as_str()]] {
        let list = json(&run_weir(&args, Duration::from_secs(30)), &format!("{args:?}"));
        let ids: Vec<&str> = list["jobs"].as_array().unwrap().iter().filter_map(|j| j["id"].as_str()).collect();
        assert!(ids.contains(&job.as_str()) && ids.contains(&second.as_str()), "{args:?}: {list}");
    }
    let out = Command::new(artifact("weir"))
        .args(["status", &job, "--json"])
        .env("WEIR_JOBMANAGER", &address)
        .output()
        .expect("run weir");
    let out = CommandOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(json(&out, "WEIR_JOBMANAGER=host:port")["jid"], job.as_str());

    // A bad address is one line naming it.
    let out = run_weir(&["-m", "jm:notaport", "list"], Duration::from_secs(30));
    assert_one_line_error(&out, "invalid jobmanager address 'jm:notaport'");
    let out = run_weir(&["-m", "ftp://jm:21", "list"], Duration::from_secs(30));
    assert_one_line_error(&out, "unsupported scheme 'ftp'");

    for id in [&job, &second] {
        assert_ok(&cluster.weir(&["cancel", id]), "cancel", &cluster);
    }
}

/// `-D key=value` with Flink's keys sets the job's checkpointing, state backend, parallelism and
/// restart strategy (on a cluster and on `weir local run`); an unknown key or a bad value is
/// refused in one line naming the key, and nothing is submitted.
#[test]
fn dynamic_properties_set_per_job_options() {
    let _serial = serial();
    let cluster = Cluster::start(&[], &[("tm-a", 2)]);
    let plugin = test_jobs();
    let out = cluster.weir(&endless(
        &[
            "-d",
            "-D",
            "execution.checkpointing.interval=700ms",
            "-Dexecution.checkpointing.timeout=1 min",
            "-D",
            "execution.checkpointing.min-pause=100",
            "-D",
            "execution.checkpointing.max-concurrent-checkpoints=2",
            "-D",
            "execution.checkpointing.tolerable-failed-checkpoints=3",
            "-D",
            "state.checkpoints.num-retained=2",
            "-D",
            "state.backend.type=rocksdb",
            "-D",
            "parallelism.default=2",
        ],
        path_str(&plugin),
    ));
    assert_ok(&out, "run -D", &cluster);
    let job = submitted_job_id(&out);
    let details = cluster.wait_for_running_subtasks(&job, Duration::from_secs(60));
    let parallelism: Vec<u64> =
        details["vertices"].as_array().unwrap().iter().map(|v| v["parallelism"].as_u64().unwrap()).collect();
    assert!(!parallelism.is_empty() && parallelism.iter().all(|p| *p == 2), "parallelism.default=2: {details}");
    let checkpoints = cluster.checkpoints(&job);
    assert_eq!(checkpoints["interval_ms"], 700, "{checkpoints}");
    assert_eq!(checkpoints["state_backend"], "rocksdb", "{checkpoints}");
    let config = &checkpoints["config"];
    assert_eq!(
        (
            &config["timeout_ms"],
            &config["min_pause_ms"],
            &config["max_concurrent"],
            &config["tolerable_failures"],
            &config["retained"]
        ),
        (&Value::from(60_000), &Value::from(100), &Value::from(2), &Value::from(3), &Value::from(2)),
        "{checkpoints}"
    );
    assert_ok(&cluster.weir(&["cancel", &job]), "cancel", &cluster);
    cluster.wait_for_state(&job, &["CANCELED"], Duration::from_secs(30));

    // Mistakes: one line naming the key, exit 2, nothing submitted.
    let before = listed(&cluster, true);
    for (settings, needle) in [
        (vec!["-D", "pipeline.name=x"], "-D pipeline.name: unknown setting"),
        (
            vec!["-D", "execution.checkpointing.interval=soon"],
            "-D execution.checkpointing.interval: 'soon' is not a duration",
        ),
        (vec!["-D", "state.backend.type=forst"], "-D state.backend.type: unknown state backend 'forst'"),
        (vec!["-D", "parallelism.default"], "-D parallelism.default: expected KEY=VALUE"),
        (
            vec!["-D", "execution.checkpointing.interval=1s", "--checkpoint-interval", "2s"],
            "-D execution.checkpointing.interval: is also given as --checkpoint-interval",
        ),
        (
            vec!["-D", "restart-strategy.type=sometimes"],
            "-D restart-strategy.type: unknown restart strategy 'sometimes'",
        ),
        (
            vec!["-D", "restart-strategy.exponential-delay.backoff-multiplier=0.5"],
            "-D restart-strategy.exponential-delay.backoff-multiplier: '0.5' is not a number of at least 1",
        ),
    ] {
        let mut args = vec!["-d"];
        args.extend(settings);
        let out = cluster.weir(&endless(&args, path_str(&plugin)));
        assert_one_line_error(&out, needle);
    }
    assert_eq!(listed(&cluster, true), before, "nothing was submitted");

    // The job's restart strategy on the cluster: the jobmanager's own would not restart a job
    // without checkpoints; this one restarts it twice, then it fails.
    let output = tempfile::tempdir().unwrap();
    let out = cluster.weir(&[
        "run",
        "-d",
        "-D",
        "restart-strategy.type=fixed-delay",
        "-D",
        "restart-strategy.fixed-delay.attempts=2",
        "-D",
        "restart-strategy.fixed-delay.delay=10ms",
        path_str(&plugin),
        "--job",
        "panic",
        "--at",
        "5",
        "--output",
        path_str(output.path()),
    ]);
    assert_ok(&out, "run -D restart-strategy", &cluster);
    let job = submitted_job_id(&out);
    let details = cluster.wait_for_state(&job, &["FAILED"], Duration::from_secs(60));
    assert_eq!(details["restarts"], 2, "the job's restart strategy, not the jobmanager's: {details}");

    // weir local run: the mini-cluster takes the restart strategy.
    let output = tempfile::tempdir().unwrap();
    let out = run_weir(
        &[
            "local",
            "run",
            "--json",
            "-D",
            "restart-strategy.type=fixed-delay",
            "-D",
            "restart-strategy.fixed-delay.attempts=2",
            "-D",
            "restart-strategy.fixed-delay.delay=10ms",
            path_str(&plugin),
            "--job",
            "panic",
            "--at",
            "5",
            "--output",
            path_str(output.path()),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    let details: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!((&details["state"], &details["restarts"]), (&Value::from("FAILED"), &Value::from(2)), "{details}");
    let out = run_weir(
        &[
            "local",
            "run",
            "-D",
            "restart-strategy.type=exponential-delay",
            "--restart-attempts",
            "1",
            path_str(&plugin),
        ],
        Duration::from_secs(30),
    );
    assert_one_line_error(&out, "-D restart-strategy.type: is given together with --restart-attempts");
}

/// Ctrl-C on an attached `weir run` stops waiting and leaves the job running (exit 130, with
/// how to cancel it); with `--shutdown-on-attached-exit` (or Flink's `-sae`) it cancels the job.
/// `weir local run` cancels its job on Ctrl-C: the mini-cluster ends with the process.
#[test]
fn ctrl_c_leaves_an_attached_job_running_unless_asked_to_cancel() {
    let _serial = serial();
    let cluster = Cluster::start(&[], &[("tm-a", 2)]);
    let plugin = test_jobs();
    let rest = cluster.rest_url().to_owned();

    let mut args = vec!["-m", rest.as_str()];
    args.extend(endless(&[], path_str(&plugin)));
    let mut run = Background::start(&args);
    let job = run.job_id(&cluster);
    cluster.wait_for_running_subtasks(&job, Duration::from_secs(60));
    run.signal("INT");
    let out = run.finish(Duration::from_secs(20));
    assert_eq!(out.code, Some(130), "{out:?}");
    assert!(out.stderr.contains(&format!("stopped waiting for job {job}")), "{out:?}");
    assert!(out.stderr.contains(&format!("weir -m {rest} cancel {job}")), "how to cancel: {out:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(cluster.details(&job)["state"], "RUNNING", "the job runs on after Ctrl-C");
    assert_eq!(listed(&cluster, false), [job.as_str()]);
    assert_ok(&cluster.weir(&["cancel", &job]), "cancel", &cluster);
    cluster.wait_for_state(&job, &["CANCELED"], Duration::from_secs(30));

    // Flink's -sae: Ctrl-C cancels the job, waits for it to end, and exits 130.
    for flag in ["-sae", "--shutdown-on-attached-exit"] {
        let mut args = vec!["-m", rest.as_str()];
        args.extend(endless(&[flag], path_str(&plugin)));
        let mut run = Background::start(&args);
        let job = run.job_id(&cluster);
        cluster.wait_for_running_subtasks(&job, Duration::from_secs(60));
        run.signal("INT");
        let out = run.finish(Duration::from_secs(30));
        assert_eq!(out.code, Some(130), "{flag}: {out:?}");
        assert!(out.stderr.contains(&format!("cancelling job {job}")), "{flag}: {out:?}");
        assert!(out.stdout.contains("CANCELED"), "{flag}: the final summary: {out:?}");
        assert_eq!(cluster.details(&job)["state"], "CANCELED", "{flag}");
    }

    // weir local run: Ctrl-C cancels the job (the cluster lives in the process).
    let local = Background::start(&["local", "run", path_str(&plugin), "--job", "endless", "--rate", "100"]);
    std::thread::sleep(Duration::from_secs(2));
    local.signal("INT");
    let out = local.finish(Duration::from_secs(30));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("cancelling job") && out.stdout.contains("CANCELED"), "{out:?}");
}

/// Everything after the plugin goes to the job, `--` or not; weir's options come before it, and
/// the older form with weir's options between the plugin and `--` still works.
#[test]
fn job_arguments_follow_the_plugin_without_a_separator() {
    let _serial = serial();
    let cluster = Cluster::start(&[], &[("tm-a", 2)]);
    let work = tempfile::tempdir().unwrap();
    let plugin = nexmark();
    let forms: [(&str, Vec<&str>); 3] = [
        ("flink", vec!["run", "-p", "2", path_str(&plugin), "--query", "q0", "--events", "300"]),
        ("separator", vec!["run", "-p", "2", path_str(&plugin), "--", "--query", "q0", "--events", "300"]),
        ("older", vec!["run", path_str(&plugin), "-p", "2", "--", "--query", "q0", "--events", "300"]),
    ];
    for (name, mut args) in forms {
        let output = work.path().join(name);
        args.extend_from_slice(&["--output", path_str(&output)]);
        let out = cluster.weir(&args);
        assert_ok(&out, name, &cluster);
        let details = cluster.details(&submitted_job_id(&out));
        assert_eq!(details["state"], "FINISHED", "{name}: {details}");
        assert!(details["vertices"].as_array().unwrap().iter().all(|v| v["parallelism"] == 2), "{name}: {details}");
        assert_eq!(read_lines(&output).len(), 300, "{name}: the job got its arguments");
    }
    // weir's options after the plugin are the job's (nexmark ignores `-p`): the job runs at
    // weir's default parallelism 1.
    let out =
        cluster.weir(&["run", path_str(&plugin), "--query", "q0", "--events", "10", "--sink", "blackhole", "-p", "2"]);
    assert_ok(&out, "-p after the plugin", &cluster);
    let details = cluster.details(&submitted_job_id(&out));
    assert!(details["vertices"].as_array().unwrap().iter().all(|v| v["parallelism"] == 1), "{details}");
}

/// `weir list` shows the jobs that have not ended; `-a` every job; the JSON likewise.
#[test]
fn list_shows_running_jobs_unless_all() {
    let _serial = serial();
    let cluster = Cluster::start(&[], &[("tm-a", 2)]);
    let out = cluster.weir(&["run", path_str(&nexmark()), "--query", "q0", "--events", "10", "--sink", "blackhole"]);
    assert_ok(&out, "a finished job", &cluster);
    let finished = submitted_job_id(&out);
    let out = cluster.weir(&["list"]);
    assert_ok(&out, "list", &cluster);
    assert_eq!(out.stdout.trim(), "No running jobs (weir list -a shows every job).", "{out:?}");
    let out = cluster.weir(&endless(&["-d"], path_str(&test_jobs())));
    assert_ok(&out, "a running job", &cluster);
    let running = submitted_job_id(&out);

    assert_eq!(listed(&cluster, false), [running.as_str()]);
    assert_eq!(listed(&cluster, true), [running.as_str(), finished.as_str()], "newest first");
    let out = cluster.weir(&["list"]);
    assert!(out.stdout.contains(&running) && !out.stdout.contains(&finished), "{out:?}");
    let out = cluster.weir(&["list", "-a"]);
    assert!(out.stdout.contains(&running) && out.stdout.contains(&finished), "{out:?}");
    let out = cluster.weir(&["list", "--all"]);
    assert!(out.stdout.contains("FINISHED") && out.stdout.contains("RUNNING"), "{out:?}");
    assert_ok(&cluster.weir(&["cancel", &running]), "cancel", &cluster);
}

/// `weir info PLUGIN [-p N] [JOB_ARGS]` prints the plan as JSON without a cluster.
#[test]
fn info_prints_the_plan_without_a_cluster() {
    // Nothing listens at this address: `info` must not need it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = format!("127.0.0.1:{port}");
    let out = run_weir(
        &[
            "-m",
            &nowhere,
            "info",
            "-p",
            "3",
            path_str(&nexmark()),
            "--query",
            "q5",
            "--events",
            "10",
            "--sink",
            "blackhole",
        ],
        Duration::from_secs(60),
    );
    let info = json(&out, "info");
    let plan = &info["plan"];
    assert_eq!(plan["type"], "STREAMING", "{info}");
    assert!(plan["name"].as_str().is_some_and(|n| !n.is_empty()), "{info}");
    let nodes = plan["nodes"].as_array().expect("nodes");
    assert!(nodes.len() >= 2, "q5 has a keyed window after its source: {info}");
    assert!(nodes.iter().all(|n| n["parallelism"] == 3), "-p 3: {info}");
    assert_eq!(plan["required_slots"], 3, "{info}");
    // Flink's field names: ids as strings, inputs naming their producer and ship strategy.
    let ids: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().expect("id")).collect();
    let inputs: Vec<&Value> = nodes.iter().flat_map(|n| n["inputs"].as_array().unwrap()).collect();
    assert!(!inputs.is_empty(), "{info}");
    for input in &inputs {
        assert!(ids.contains(&input["id"].as_str().unwrap_or_default()), "{input}");
        assert!(input["ship_strategy"].is_string() && input["num"].is_u64(), "{input}");
    }
    assert!(inputs.iter().any(|i| i["ship_strategy"] == "HASH"), "q5 keys by auction: {info}");
    assert!(nodes.iter().all(|n| n["description"].is_string() && n["operators"].is_array()), "{info}");
    assert!(nodes.iter().any(|n| n["is_source"] == true), "{info}");

    // A job the plugin refuses and a file that is not a plugin: one line each.
    let out =
        run_weir(&["info", path_str(&nexmark()), "--query", "q99", "--sink", "blackhole"], Duration::from_secs(60));
    assert_one_line_error(&out, "q99");
    let out = run_weir(&["info", "/nonexistent/job.so"], Duration::from_secs(60));
    assert_one_line_error(&out, "/nonexistent/job.so");
}

/// `WEIR_JOBMANAGER` is the REST URL, for the CLI only: a taskmanager reads its RPC URL from
/// `jobmanager_rpc` (`WEIR_JOBMANAGER_RPC`, `--jobmanager-rpc`), so a shell that exports
/// `WEIR_JOBMANAGER` for the CLI does not misdirect a taskmanager started from it; the old
/// `--jobmanager` flag still works, with a warning.
#[test]
fn one_environment_variable_per_meaning() {
    let _serial = serial();
    let mut cluster = Cluster::start(&[], &[("tm-a", 1)]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tm-env.stderr");
    let mut taskmanager = Command::new(artifact("weir-taskmanager"))
        .args(["--id", "tm-env", "--slots", "1", "--rpc-addr", "127.0.0.1:0", "--data-addr", "127.0.0.1:0"])
        // The CLI's variable, as a user's shell would have it, beside the taskmanager's own.
        .env("WEIR_JOBMANAGER", cluster.rest_url())
        .env("WEIR_JOBMANAGER_RPC", cluster.rpc_url())
        .env("WEIR_PLUGIN_DIR", dir.path().join("plugins"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start weir-taskmanager");
    cluster.wait_for_taskmanagers(&["tm-a", "tm-env"]);
    let _ = taskmanager.kill();
    let _ = taskmanager.wait();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!stderr.contains("WEIR_JOBMANAGER ("), "no warning when the RPC URL is set: {stderr}");

    // WEIR_JOBMANAGER alone: not the taskmanager's; it says so in one line (and the RocksDB
    // budget of 1 MiB stops it right after).
    let start = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(artifact("weir-taskmanager"))
            .args(args)
            .args(["--rocksdb-memory-mb", "1"])
            .env_remove("WEIR_JOBMANAGER")
            .env_remove("WEIR_JOBMANAGER_RPC")
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .output()
            .expect("run weir-taskmanager");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = start(&[], &[("WEIR_JOBMANAGER", cluster.rest_url())]);
    let warning: Vec<&str> = stderr.lines().filter(|l| l.contains("WEIR_JOBMANAGER")).collect();
    assert_eq!(warning.len(), 1, "{stderr}");
    assert!(warning[0].contains("is the weir CLI's REST URL and is not read by the taskmanager"), "{stderr}");
    assert!(warning[0].contains("WEIR_JOBMANAGER_RPC"), "{stderr}");
    // The old flag works, with a warning naming the new one.
    let stderr = start(&["--jobmanager", cluster.rpc_url()], &[]);
    assert!(stderr.contains("--jobmanager is deprecated: use --jobmanager-rpc"), "{stderr}");
    assert!(stderr.contains("rocksdb_memory_mb must be at least 16"), "{stderr}");
    // The new one alone: no warning.
    let stderr = start(&["--jobmanager-rpc", cluster.rpc_url()], &[]);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// `--json` on every verb prints JSON on standard output, and nothing else there; long waits
/// (task slots, a savepoint) show their progress on standard error.
#[test]
fn json_everywhere_and_progress_on_standard_error() {
    let _serial = serial();
    let mut cluster = Cluster::start(&[], &[("tm-a", 1)]);
    let plugin = test_jobs();
    let work = tempfile::tempdir().unwrap();
    let savepoints = work.path().join("savepoints");
    let rest = cluster.rest_url().to_owned();

    // Waiting for slots: -p 2 on one slot waits, and says so, until a second taskmanager joins.
    let mut run = Background::start(&[
        "-m",
        &rest,
        "run",
        "-p",
        "2",
        path_str(&nexmark()),
        "--query",
        "q0",
        "--events",
        "100",
        "--sink",
        "blackhole",
    ]);
    run.wait_for("is waiting for 2 task slot(s)", Duration::from_secs(30), &cluster);
    cluster.start_taskmanager("tm-b", 1);
    let out = run.finish(Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    assert!(!out.stdout.contains("waiting"), "progress is not on standard output: {out:?}");

    // --json on each verb.
    let submitted =
        json(&cluster.weir(&endless(&["-d", "--json", "--checkpoint-interval", "500ms"], path_str(&plugin))), "run -d");
    let job = submitted["jobid"].as_str().expect("jobid").to_owned();
    cluster.wait_for_progress(&job, 0);
    for args in [
        vec!["list", "--json"],
        vec!["list", "-a", "--json"],
        vec!["status", &job, "--json"],
        vec!["taskmanagers", "--json"],
        vec!["checkpoints", &job, "--json"],
    ] {
        let value = json(&cluster.weir(&args), &format!("{args:?}"));
        assert!(value.is_object(), "{args:?}: {value}");
    }
    let status = json(&cluster.weir(&["savepoint", &job, path_str(&savepoints), "--json"]), "savepoint --json");
    let location = status.pointer("/operation/location").and_then(Value::as_str).expect("a location").to_owned();
    let inspect = json(&cluster.weir(&["savepoint", "inspect", &location, "--json"]), "savepoint inspect");
    assert!(inspect.is_object(), "{inspect}");
    let check = json(
        &cluster.weir(&[
            "savepoint",
            "check",
            "--json",
            path_str(&plugin),
            &location,
            "--job",
            "endless",
            "--rate",
            "100",
        ]),
        "savepoint check",
    );
    assert_eq!(check["compatible"], true, "{check}");
    let stopped = json(&cluster.weir(&["stop", &job, "-p", path_str(&savepoints), "--json"]), "stop");
    assert!(stopped.pointer("/operation/location").is_some(), "{stopped}");
    let disposed = json(&cluster.weir(&["savepoint", "--dispose", &location, "--json"]), "savepoint --dispose");
    assert!(disposed.is_object(), "{disposed}");
    let out = cluster.weir(&endless(&["-d"], path_str(&plugin)));
    let running = submitted_job_id(&out);
    let cancelled = json(&cluster.weir(&["cancel", &running, "--json"]), "cancel");
    assert!(cancelled.is_object() || cancelled.is_null(), "{cancelled}");
    let finished = json(
        &cluster.weir(&[
            "run",
            "--json",
            path_str(&nexmark()),
            "--query",
            "q0",
            "--events",
            "10",
            "--sink",
            "blackhole",
        ]),
        "run --json",
    );
    assert_eq!(finished["state"], "FINISHED", "{finished}");
    let local = json(
        &run_weir(
            &["local", "run", "--json", path_str(&nexmark()), "--query", "q0", "--events", "10", "--sink", "blackhole"],
            Duration::from_secs(60),
        ),
        "local run --json",
    );
    assert_eq!(local["state"], "FINISHED", "{local}");
    let info = json(
        &run_weir(
            &["info", "--json", path_str(&nexmark()), "--query", "q0", "--events", "10", "--sink", "blackhole"],
            Duration::from_secs(60),
        ),
        "info",
    );
    assert!(info["plan"]["nodes"].is_array(), "{info}");

    // A savepoint that takes long shows its progress on standard error: its barrier waits behind
    // the backlog of a slow map (1 ms per record) that its generator fills.
    let output = work.path().join("slow");
    let out = cluster.weir(&[
        "run",
        "-d",
        "-p",
        "2",
        "--checkpoint-interval",
        "1h",
        path_str(&plugin),
        "--job",
        "slow-sink",
        "--records",
        "100000000",
        "--payload-bytes",
        "64",
        "--sleep-every",
        "1",
        "--output",
        path_str(&output),
    ]);
    assert_ok(&out, "slow job", &cluster);
    let slow = submitted_job_id(&out);
    cluster.wait_for_running_subtasks(&slow, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let savepoint = Background::start(&["-m", &rest, "savepoint", &slow, path_str(&savepoints)]);
    let out = savepoint.finish(Duration::from_secs(240));
    assert_ok(&out, "slow savepoint", &cluster);
    assert!(out.stdout.contains("Savepoint completed. Path: "), "{out:?}");
    assert!(
        out.stderr.contains(&format!("weir: the savepoint of job {slow} is in progress (5 s")),
        "progress after {:?}: {out:?}",
        started.elapsed()
    );
    assert!(!out.stdout.contains("in progress"), "{out:?}");
    assert_ok(&cluster.weir(&["cancel", &slow]), "cancel", &cluster);
}
