//! A real Weir cluster for tests: the `weir-jobmanager` and `weir-taskmanager` binaries as child
//! processes on ephemeral loopback ports, driven through the `weir` CLI.
//!
//! Every child gets a null standard input and its standard output and error captured to files in
//! the cluster's temporary directory, so no pipe can fill up and the logs can be shown when a
//! test fails. Children are only ever stopped through their [`Child`] handles; dropping the
//! [`Cluster`] kills and reaps all of them.

use crate::harness::{CommandOutput, artifact, run_weir_within};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the jobmanager may take to print its ready line, and the taskmanagers to register.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `weir` command may take unless told otherwise.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);
/// Lines of each process's log shown by [`Cluster::logs`].
const LOG_TAIL_LINES: usize = 40;

/// Jobmanager flags for fault tests: lost taskmanagers noticed within 2 s, and up to 50
/// restarts 200 ms apart.
pub const FAULT_TOLERANT: [&str; 8] = [
    "--heartbeat-timeout-ms",
    "2000",
    "--restart-strategy",
    "fixed-delay",
    "--restart-attempts",
    "50",
    "--restart-delay-ms",
    "200",
];

/// A running jobmanager and its taskmanagers.
pub struct Cluster {
    dir: tempfile::TempDir,
    jobmanager: Child,
    rest: String,
    rpc: String,
    flags: Vec<String>,
    /// Environment of every process (for example the S3 store's `AWS_*` settings).
    env: Vec<(String, String)>,
    /// More environment for the jobmanager alone (for example fault injection), from its next
    /// start.
    jobmanager_env: Vec<(String, String)>,
    taskmanagers: BTreeMap<String, Child>,
    /// More jobmanagers on the same storage (high availability), by name.
    standbys: BTreeMap<String, Child>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir.path())
            .field("rest", &self.rest)
            .field("rpc", &self.rpc)
            .field("taskmanagers", &self.taskmanagers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Cluster {
    /// Starts a jobmanager with `jobmanager_flags` (on top of ephemeral addresses and a private
    /// storage) and one taskmanager per `(id, slots)`, and waits until all have registered.
    ///
    /// # Panics
    /// When a process does not start, the jobmanager prints no ready line within 20 s, or the
    /// taskmanagers do not all register within 20 s (with the logs in the message).
    pub fn start(jobmanager_flags: &[&str], taskmanagers: &[(&str, u32)]) -> Self {
        Self::start_with_env(jobmanager_flags, taskmanagers, &[])
    }

    /// [`Cluster::start`] with `env` set for every process of the cluster.
    ///
    /// # Panics
    /// As [`Cluster::start`].
    pub fn start_with_env(jobmanager_flags: &[&str], taskmanagers: &[(&str, u32)], env: &[(String, String)]) -> Self {
        let dir = tempfile::Builder::new().prefix("weir-cluster-").tempdir().expect("cluster temp dir");
        let flags: Vec<String> = jobmanager_flags.iter().map(|f| (*f).to_owned()).collect();
        let env = env.to_vec();
        let (jobmanager, rest, rpc) =
            spawn_jobmanager(dir.path(), "jobmanager", "127.0.0.1:0", "127.0.0.1:0", &flags, &env);
        let mut cluster = Self {
            dir,
            jobmanager,
            rest,
            rpc,
            flags,
            env,
            jobmanager_env: Vec::new(),
            taskmanagers: BTreeMap::new(),
            standbys: BTreeMap::new(),
        };
        for &(id, slots) in taskmanagers {
            let rpc = cluster.rpc.clone();
            cluster.spawn_taskmanager(id, slots, &rpc);
        }
        let ids: Vec<&str> = taskmanagers.iter().map(|&(id, _)| id).collect();
        cluster.wait_for_registration(&ids);
        cluster
    }

    /// Kills the jobmanager (SIGKILL, by handle) and starts a new one on the same addresses and
    /// with the same flags; it starts with no taskmanagers and no jobs.
    pub fn restart_jobmanager(&mut self) {
        let _ = self.jobmanager.kill();
        let _ = self.jobmanager.wait();
        let (rest, rpc) =
            (self.rest.trim_start_matches("http://").to_owned(), self.rpc.trim_start_matches("http://").to_owned());
        // The old process's sockets are closed; binding the same ports again may need a moment.
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let free = std::net::TcpListener::bind(&rest).is_ok() && std::net::TcpListener::bind(&rpc).is_ok();
            if free || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let env: Vec<(String, String)> = self.env.iter().chain(&self.jobmanager_env).cloned().collect();
        let (jobmanager, _, _) = spawn_jobmanager(self.dir.path(), "jobmanager", &rest, &rpc, &self.flags, &env);
        self.jobmanager = jobmanager;
    }

    /// Starts another jobmanager `name` on the same storage with the same flags (they include
    /// `--ha`) on new addresses; returns its REST and RPC URLs. Its logs are
    /// `<name>.stderr`/`.stdout`.
    pub fn start_standby_jobmanager(&mut self, name: &str) -> (String, String) {
        let env: Vec<(String, String)> = self.env.iter().chain(&self.jobmanager_env).cloned().collect();
        let (child, rest, rpc) =
            spawn_jobmanager(self.dir.path(), name, "127.0.0.1:0", "127.0.0.1:0", &self.flags, &env);
        self.standbys.insert(name.to_owned(), child);
        (rest, rpc)
    }

    /// Makes the CLI (`weir`) talk to `rest` (a Service in front of the jobmanagers) from now on.
    pub fn use_rest_url(&mut self, rest: &str) {
        rest.clone_into(&mut self.rest);
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the first jobmanager's process (by its handle's
    /// pid).
    pub fn signal_jobmanager(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.jobmanager.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits (up to `timeout`) for the first jobmanager to exit; its exit code.
    pub fn wait_for_jobmanager_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.jobmanager.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the first jobmanager (SIGKILL, by handle) without starting another.
    pub fn kill_jobmanager(&mut self) {
        let _ = self.jobmanager.kill();
        let _ = self.jobmanager.wait();
    }

    /// Sets more environment for the jobmanager alone, from its next (re)start.
    pub fn set_jobmanager_env(&mut self, env: &[(&str, &str)]) {
        self.jobmanager_env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    }

    /// Whether the jobmanager process has exited (for example by an injected crash).
    pub fn jobmanager_exited(&mut self) -> bool {
        matches!(self.jobmanager.try_wait(), Ok(Some(_)))
    }

    /// Waits until every listed taskmanager is registered with the current jobmanager.
    pub fn wait_for_taskmanagers(&mut self, ids: &[&str]) {
        self.wait_for_registration(ids);
    }

    /// The jobmanager's REST URL (`http://127.0.0.1:PORT`).
    pub fn rest_url(&self) -> &str {
        &self.rest
    }

    /// The jobmanager's RPC URL, which taskmanagers register at.
    pub fn rpc_url(&self) -> &str {
        &self.rpc
    }

    /// The cluster's temporary directory (logs, storage, plugin caches).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The jobmanager's storage directory (`plugins/` holds the uploaded plugins).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Runs `weir --jobmanager <rest> args...` (killed after 180 s).
    pub fn weir(&self, args: &[&str]) -> CommandOutput {
        self.weir_with_timeout(args, COMMAND_TIMEOUT)
    }

    /// Runs `weir --jobmanager <rest> args...`, killed after `timeout`.
    ///
    /// # Panics
    /// When it had to be killed: with what it printed and the cluster's logs.
    pub fn weir_with_timeout(&self, args: &[&str], timeout: Duration) -> CommandOutput {
        let mut all = vec!["--jobmanager", self.rest.as_str()];
        all.extend_from_slice(args);
        run_weir_within(&all, timeout)
            .unwrap_or_else(|out| panic!("weir {all:?} did not finish within {timeout:?}: {out:?}\n{}", self.logs()))
    }

    /// `GET <rest>/<path>` on the jobmanager's REST API: the status code and the JSON body.
    ///
    /// # Panics
    /// When the request fails or the body is not JSON.
    pub fn rest_get(&self, path: &str) -> (u16, Value) {
        let url = format!("{}/{}", self.rest, path.trim_start_matches('/'));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        runtime.block_on(async {
            let response = reqwest::get(&url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = response.status().as_u16();
            let body = response.json().await.unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"));
            (status, body)
        })
    }

    /// `POST <rest>/<path>` with the JSON `body`: the status code and the JSON answer.
    ///
    /// # Panics
    /// When the request fails or the answer is not JSON.
    pub fn rest_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let url = format!("{}/{}", self.rest, path.trim_start_matches('/'));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        runtime.block_on(async {
            let response =
                reqwest::Client::new().post(&url).json(body).send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
            let status = response.status().as_u16();
            let answer = response.json().await.unwrap_or_else(|e| panic!("POST {url}: not JSON: {e}"));
            (status, answer)
        })
    }

    /// `weir <args> --json` that must succeed, parsed.
    ///
    /// # Panics
    /// When the command fails or prints something that is not JSON.
    pub fn weir_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.weir(&all);
        assert_eq!(out.code, Some(0), "weir {all:?}: {out:?}\n{}", self.logs());
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("weir {all:?} printed no JSON ({e}): {out:?}"))
    }

    /// Starts taskmanager `id` with `slots` slots at this cluster's jobmanager and waits until it
    /// has registered.
    pub fn start_taskmanager(&mut self, id: &str, slots: u32) {
        let rpc = self.rpc.clone();
        self.spawn_taskmanager(id, slots, &rpc);
        self.wait_for_registration(&[id]);
    }

    /// Starts taskmanager `id` registering at `jobmanager_rpc` (any URL), without waiting.
    pub fn start_taskmanager_at(&mut self, id: &str, slots: u32, jobmanager_rpc: &str) {
        self.spawn_taskmanager(id, slots, jobmanager_rpc);
    }

    /// Starts taskmanager `id` with more environment (for example fault injection) and waits
    /// until it has registered.
    pub fn start_taskmanager_with_env(&mut self, id: &str, slots: u32, env: &[(&str, &str)]) {
        let rpc = self.rpc.clone();
        let saved = self.env.clone();
        self.env.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self.spawn_taskmanager(id, slots, &rpc);
        self.env = saved;
        self.wait_for_registration(&[id]);
    }

    /// Whether taskmanager `id` has exited (for example by an injected crash).
    pub fn taskmanager_exited(&mut self, id: &str) -> bool {
        self.taskmanagers.get_mut(id).is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))))
    }

    /// Forgets taskmanager `id`, which exited on its own (reaps it).
    pub fn reap_taskmanager(&mut self, id: &str) {
        if let Some(mut child) = self.taskmanagers.remove(id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn_taskmanager(&mut self, id: &str, slots: u32, jobmanager_rpc: &str) {
        assert!(!self.taskmanagers.contains_key(id), "taskmanager {id} is already running");
        let dir = self.dir.path();
        let stdout = File::create(dir.join(format!("{id}.stdout"))).expect("taskmanager stdout file");
        let stderr = File::create(dir.join(format!("{id}.stderr"))).expect("taskmanager stderr file");
        let slots = slots.to_string();
        let child = Command::new(artifact("weir-taskmanager"))
            .args(["--jobmanager-rpc", jobmanager_rpc, "--slots", &slots, "--id", id])
            .args(["--rpc-addr", "127.0.0.1:0", "--data-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .env("WEIR_PLUGIN_DIR", dir.join(format!("{id}-plugins")))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start weir-taskmanager");
        self.taskmanagers.insert(id.to_owned(), child);
    }

    /// Waits (up to 20 s) until `weir taskmanagers` lists every one of `ids`.
    fn wait_for_registration(&mut self, ids: &[&str]) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let out = self.weir(&["taskmanagers", "--json"]);
            let registered: Vec<String> = serde_json::from_str::<Value>(&out.stdout)
                .ok()
                .and_then(|v| v["taskmanagers"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|tm| tm["id"].as_str().map(str::to_owned))
                .collect();
            if ids.iter().all(|id| registered.iter().any(|r| r == id)) {
                return;
            }
            for id in ids {
                if let Some(status) = self.taskmanagers.get_mut(*id).and_then(|c| c.try_wait().ok().flatten()) {
                    panic!("taskmanager {id} exited ({status}) before registering\n{}", self.logs());
                }
            }
            assert!(
                Instant::now() < deadline,
                "taskmanagers {ids:?} did not all register within {STARTUP_TIMEOUT:?} (registered: {registered:?})\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills taskmanager `id` with SIGKILL (through its handle) and reaps it.
    ///
    /// # Panics
    /// When there is no such taskmanager.
    pub fn kill_taskmanager(&mut self, id: &str) {
        let mut child = self.taskmanagers.remove(id).unwrap_or_else(|| panic!("no taskmanager {id}"));
        let _ = child.kill();
        child.wait().expect("reap the killed taskmanager");
    }

    /// Sends `signal` (`TERM`, `STOP`, ...) to taskmanager `id` (by its handle's pid).
    ///
    /// # Panics
    /// When there is no such taskmanager or `kill` fails.
    pub fn signal_taskmanager(&self, id: &str, signal: &str) {
        let pid = self.taskmanager_pid(id);
        let status = Command::new("kill").args([format!("-{signal}"), pid.to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits (up to `timeout`) for taskmanager `id` to exit and reaps it; its exit code.
    ///
    /// # Panics
    /// When there is no such taskmanager or it does not exit in time.
    pub fn wait_for_taskmanager_exit(&mut self, id: &str, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.taskmanagers.get_mut(id).unwrap_or_else(|| panic!("no taskmanager {id}"));
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.taskmanagers.remove(id);
                return status.code();
            }
            assert!(Instant::now() < deadline, "taskmanager {id} did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL of taskmanager `id`'s HTTP endpoint (`/healthz`, `/readyz`, `/metrics`), from the
    /// line it prints when it is ready (waits up to 20 s for it).
    ///
    /// # Panics
    /// When it prints none in time.
    pub fn taskmanager_http(&self, id: &str) -> String {
        let path = self.dir.path().join(format!("{id}.stdout"));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(url) = text.split_whitespace().find_map(|w| w.strip_prefix("http=")) {
                return url.to_owned();
            }
            assert!(Instant::now() < deadline, "taskmanager {id} printed no HTTP address: {text:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether taskmanager `id` is still running.
    pub fn taskmanager_running(&mut self, id: &str) -> bool {
        self.taskmanagers.get_mut(id).is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The process id of taskmanager `id`.
    ///
    /// # Panics
    /// When there is no such taskmanager.
    pub fn taskmanager_pid(&self, id: &str) -> u32 {
        self.taskmanagers.get(id).unwrap_or_else(|| panic!("no taskmanager {id}")).id()
    }

    /// The peak resident set size (`VmHWM`) of process `pid` in KiB.
    ///
    /// # Panics
    /// When `/proc/PID/status` cannot be read or has no `VmHWM` line.
    pub fn peak_rss_kib(pid: u32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
    }

    /// Polls `weir status JOB --json` until the job is in one of `states`; returns its details.
    ///
    /// # Panics
    /// When it is not within `timeout`, or reaches another terminal state first (with the
    /// details and the logs in the message).
    pub fn wait_for_state(&self, job: &str, states: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.weir(&["status", job, "--json"]);
            let details: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
            let state = details["state"].as_str().unwrap_or_default();
            if states.contains(&state) {
                return details;
            }
            let terminal = ["FINISHED", "FAILED", "CANCELED"].contains(&state);
            assert!(
                !terminal && Instant::now() < deadline,
                "job {job} is {state:?}, not in {states:?} (after at most {timeout:?}): {out:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `weir status JOB --json` until the job is RUNNING and every one of its subtasks
    /// runs (the job turns RUNNING as soon as its deployment starts); returns its details.
    ///
    /// # Panics
    /// As [`Cluster::wait_for_state`].
    pub fn wait_for_running_subtasks(&self, job: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let details = self.wait_for_state(job, &["RUNNING"], deadline.saturating_duration_since(Instant::now()));
            let states: Vec<&str> = details["vertices"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|vertex| vertex["subtasks"].as_array().into_iter().flatten())
                .map(|subtask| subtask["state"].as_str().unwrap_or_default())
                .collect();
            if !states.is_empty() && states.iter().all(|state| *state == "RUNNING") {
                return details;
            }
            assert!(
                Instant::now() < deadline,
                "the subtasks of job {job} are not all running after {timeout:?}: {details}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything taskmanager `id` logged on standard error so far.
    pub fn taskmanager_stderr(&self, id: &str) -> String {
        read_or_empty(&self.dir.path().join(format!("{id}.stderr")))
    }

    /// Everything the jobmanager logged on standard error so far.
    pub fn jobmanager_stderr(&self) -> String {
        read_or_empty(&self.dir.path().join("jobmanager.stderr"))
    }

    /// The last lines of the jobmanager's and every taskmanager's (also killed ones') log, for
    /// assertion messages.
    pub fn logs(&self) -> String {
        let mut text = format!("--- jobmanager log (tail) ---\n{}\n", tail(&self.jobmanager_stderr(), LOG_TAIL_LINES));
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for path in files {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if let Some(id) = name.strip_suffix(".stderr").filter(|id| *id != "jobmanager") {
                let role = if id.starts_with("jobmanager") { "standby" } else { "taskmanager" };
                text.push_str(&format!(
                    "--- {role} {id} log (tail) ---\n{}\n",
                    tail(&read_or_empty(&path), LOG_TAIL_LINES)
                ));
            }
        }
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let all = self.taskmanagers.values_mut().chain(self.standbys.values_mut());
        for child in all.chain(std::iter::once(&mut self.jobmanager)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The job id from the output of `weir run` (`Job submitted: <id>`).
///
/// # Panics
/// When the output has no such line.
pub fn submitted_job_id(out: &CommandOutput) -> String {
    out.stdout
        .lines()
        .chain(out.stderr.lines())
        .find_map(|line| line.trim().strip_prefix("Job submitted: "))
        .unwrap_or_else(|| panic!("no `Job submitted:` line: {out:?}"))
        .trim()
        .to_owned()
}

impl Cluster {
    /// `weir checkpoints JOB --json`.
    ///
    /// # Panics
    /// When the command fails.
    pub fn checkpoints(&self, job: &str) -> Value {
        self.weir_json(&["checkpoints", job])
    }

    /// `weir status JOB --json`.
    ///
    /// # Panics
    /// When the command fails.
    pub fn details(&self, job: &str) -> Value {
        self.weir_json(&["status", job])
    }

    /// Waits (up to 90 s) until every subtask of the job runs and its completed checkpoints
    /// exceed `after`; returns their number.
    ///
    /// # Panics
    /// When the job finishes first or no checkpoint completes in time (with the logs).
    pub fn wait_for_progress(&self, job: &str, after: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let d = self.details(job);
            let running = d["state"] == "RUNNING"
                && d["vertices"].as_array().is_some_and(|vs| {
                    vs.iter().all(|v| {
                        v["subtasks"].as_array().is_some_and(|s| {
                            s.len() as u64 == v["parallelism"].as_u64().unwrap_or(0)
                                && s.iter().all(|t| t["state"] == "RUNNING")
                        })
                    })
                });
            if running {
                let completed = self.checkpoints(job)["counts"]["completed"].as_u64().unwrap_or(0);
                if completed > after {
                    return completed;
                }
            }
            assert!(d["state"] != "FINISHED", "the job finished before the planned failures: make it longer: {d}");
            assert!(Instant::now() < deadline, "no checkpoint completed after {after}: {d}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (up to 180 s) until the job ended; returns its details.
    ///
    /// # Panics
    /// When it does not end in time (with the logs).
    pub fn wait_for_end(&self, job: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let d = self.details(job);
            if ["FINISHED", "FAILED", "CANCELED"].contains(&d["state"].as_str().unwrap_or_default()) {
                return d;
            }
            assert!(Instant::now() < deadline, "the job did not end: {d}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The taskmanagers that ran subtasks of the job with `details` (from `status --json`).
pub fn taskmanagers_of(details: &Value) -> std::collections::BTreeSet<String> {
    details["vertices"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|vertex| vertex["subtasks"].as_array().into_iter().flatten())
        .filter_map(|subtask| subtask["taskmanager"].as_str())
        .filter(|tm| !tm.is_empty())
        .map(str::to_owned)
        .collect()
}

fn read_or_empty(path: &Path) -> String {
    std::fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts `weir-jobmanager` on the given addresses, waits for its ready line, and returns it with
/// its REST and RPC URLs. Its standard output is copied to `jobmanager.stdout` (appended, so a
/// restarted jobmanager's lines follow the first one's) by a thread, so the pipe never fills.
fn spawn_jobmanager(
    dir: &Path,
    name: &str,
    rest_addr: &str,
    rpc_addr: &str,
    flags: &[String],
    env: &[(String, String)],
) -> (Child, String, String) {
    let storage = format!("file://{}", dir.join("storage").display());
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.stderr")))
        .expect("jobmanager log file");
    let mut jobmanager = Command::new(artifact("weir-jobmanager"))
        .args(["--rest-addr", rest_addr, "--rpc-addr", rpc_addr, "--storage", &storage])
        .args(flags)
        .env("WEIR_PLUGIN_CACHE_DIR", dir.join("jm-plugins"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start weir-jobmanager");
    let stdout = jobmanager.stdout.take().expect("jobmanager stdout");
    let mut copy = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.stdout")))
        .expect("jobmanager stdout file");
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = Some(ready_tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(copy, "{line}");
            if let Some(tx) = ready.take() {
                let _ = tx.send(line);
            }
        }
    });
    let line = match ready_rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(line) => line,
        Err(e) => {
            let _ = jobmanager.kill();
            let _ = jobmanager.wait();
            let log = tail(&read_or_empty(&dir.join(format!("{name}.stderr"))), LOG_TAIL_LINES);
            panic!("weir-jobmanager printed no ready line ({e}); its log:\n{log}");
        }
    };
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|part| part.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in the jobmanager's ready line {line:?}"))
            .to_owned()
    };
    let (rest, rpc) = (field("rest"), field("rpc"));
    (jobmanager, rest, rpc)
}
