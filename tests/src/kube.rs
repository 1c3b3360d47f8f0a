//! A stand-in for a Kubernetes node, for tests of the helm chart where no cluster can run: the
//! chart is rendered by Helm's own engine (`scripts/render_chart.py`, helm-python-sdk), then every
//! pod of its Deployments and StatefulSets runs as a local process **exactly as its pod spec
//! says** (the image's entrypoint with the container's args, its env, its mounted ConfigMap and
//! volumes), and every Service with a cluster IP forwards to the ready pods it selects.
//!
//! What a node does and how it is reproduced here, on loopback only:
//! - **Network.** Each pod gets its own loopback address (`127.A.B.x`, all routed to `lo` on
//!   Linux) and each Service another one, so pods listen on the ports their spec names. Inside a
//!   pod, `0.0.0.0` means the pod's own interfaces: it becomes the pod's address. Cluster DNS is
//!   emulated by resolving Service names (`name`, `name.ns`, `name.ns.svc`,
//!   `name.ns.svc.cluster.local`) in URLs to the Service's address.
//! - **Filesystem.** Each volume is a directory on the host; a path under a `mountPath` becomes
//!   the path in that directory. A ConfigMap volume holds the ConfigMap's files.
//! - **Environment.** Only what Kubernetes gives a container: `PATH`, `HOSTNAME`, the spec's
//!   `env` (values with `$(VAR)` expansion, `fieldRef` to the pod's IP, name and namespace,
//!   `secretKeyRef` to the secrets given to [`Node::start`]).
//! - **Entrypoint.** The image's `ENTRYPOINT` from `deploy/docker/Dockerfile`, with the image's
//!   `weir-entrypoint` script itself and the built binaries on `PATH`; `tini` (PID 1's signal
//!   forwarding and reaping) is the one thing left out, as the test is the parent here.
//! - **Kubelet.** A container that exits is started again in the same pod (same address and
//!   volumes), after 1 s (Kubernetes waits 10 s and more; shortened for the test). Readiness
//!   probes decide a Service's endpoints, probed at the probe's period; liveness probes are not
//!   acted on.

use crate::harness::artifact;
use crate::service::{Backend, Service};
use anyhow::{Context, bail};
use regex::Regex;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the kubelet stand-in waits before it starts an exited container again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is in the workspace").to_owned()
}

/// Python of the test tools' venv (scripts/setup.sh), which has helm-python-sdk.
fn tools_python() -> PathBuf {
    let moto = crate::s3::moto_server_binary();
    moto.parent().expect("the venv's bin directory").join("python")
}

/// Rendered Kubernetes objects of a chart.
#[derive(Debug, Clone)]
pub struct Manifests {
    objects: Vec<Value>,
}

impl Manifests {
    /// Renders `chart` with `values` as release `release` in `namespace`, as `helm template`
    /// does (the chart's schema is enforced).
    ///
    /// # Errors
    /// The renderer cannot run, or refuses the values (its message).
    pub fn render(chart: &Path, values: &Value, release: &str, namespace: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("values.json");
        std::fs::write(&file, serde_json::to_vec_pretty(values)?)?;
        let python = tools_python();
        let out = Command::new(&python)
            .arg(repo_root().join("scripts/render_chart.py"))
            .arg(chart)
            .arg("--values")
            .arg(&file)
            .args(["--name", release, "--namespace", namespace])
            .output()
            .with_context(|| format!("run {} (run ./scripts/setup.sh)", python.display()))?;
        if !out.status.success() {
            bail!("rendering {} failed: {}", chart.display(), String::from_utf8_lossy(&out.stderr));
        }
        let objects: Vec<Value> = serde_json::from_slice(&out.stdout).context("the renderer's JSON")?;
        Ok(Self { objects })
    }

    /// Every object.
    pub fn objects(&self) -> &[Value] {
        &self.objects
    }

    /// The objects of `kind`.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    /// The object of `kind` named `name`.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }
}

/// The image's entrypoint (`ENTRYPOINT` of deploy/docker/Dockerfile, without `tini --`) as host
/// paths: the image's `weir-entrypoint` is deploy/docker/weir-entrypoint.sh.
fn image_entrypoint() -> anyhow::Result<Vec<String>> {
    let dockerfile = std::fs::read_to_string(repo_root().join("deploy/docker/Dockerfile"))?;
    let line = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("ENTRYPOINT"))
        .context("the Dockerfile has no ENTRYPOINT")?;
    let mut words: Vec<String> = serde_json::from_str(line.trim()).context("ENTRYPOINT is not in exec form")?;
    if words.first().is_some_and(|w| w.ends_with("/tini")) {
        words.remove(0);
        if words.first().is_some_and(|w| w == "--") {
            words.remove(0);
        }
    }
    let script = repo_root().join("deploy/docker/weir-entrypoint.sh");
    Ok(words
        .into_iter()
        .map(|w| if w.ends_with("/weir-entrypoint") { script.display().to_string() } else { w })
        .collect())
}

/// A pod: one container (the chart's pods have one).
#[derive(Debug)]
struct Pod {
    name: String,
    ip: Ipv4Addr,
    labels: BTreeMap<String, String>,
    /// The container's spec.
    container: Value,
    /// Program and arguments, translated.
    command: Vec<String>,
    /// The container's environment, translated.
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// When the container exited (a restart is due after [`RESTART_DELAY`]).
    exited_at: Option<Instant>,
    /// Exit codes of ended runs (`None`: killed by a signal).
    exits: Vec<Option<i32>>,
    starts: u32,
}

impl Pod {
    fn start(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new().create(true).append(true).open(&self.log)?;
        let (program, args) = self.command.split_first().context("an empty command")?;
        let mut command = Command::new(program);
        command.args(args).env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        self.child = Some(command.spawn().with_context(|| format!("start pod {}: {program}", self.name))?);
        self.exited_at = None;
        self.starts += 1;
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `http://IP:PORT/PATH` of a probe of the container (`readinessProbe`, ...).
    fn probe_url(&self, probe: &str) -> Option<String> {
        let get = &self.container[probe]["httpGet"];
        let port = container_port(&self.container, &get["port"])?;
        Some(format!("http://{}:{port}{}", self.ip, get["path"].as_str().unwrap_or("/")))
    }
}

/// The number of a container's port named or numbered `port`.
fn container_port(container: &Value, port: &Value) -> Option<u64> {
    if let Some(n) = port.as_u64() {
        return Some(n);
    }
    let name = port.as_str()?;
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    container["ports"].as_array()?.iter().find(|p| p["name"] == name)?["containerPort"].as_u64()
}

/// The label map at `value` (`metadata.labels`, `spec.selector`).
fn labels(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
        .unwrap_or_default()
}

/// A Service's address and how names of it look in URLs.
#[derive(Debug)]
struct ServiceName {
    pattern: Regex,
    ip: Ipv4Addr,
}

/// What a pod sees: Service names resolve to Service addresses, `0.0.0.0` is the pod's own
/// address, mount paths are the volumes' host directories.
#[derive(Debug)]
struct PodView<'a> {
    ip: Ipv4Addr,
    services: &'a [ServiceName],
    /// (mountPath, host directory), longest mount path first.
    mounts: Vec<(String, PathBuf)>,
}

impl PodView<'_> {
    fn translate(&self, text: &str) -> String {
        let mut out = text.replace("0.0.0.0:", &format!("{}:", self.ip));
        for service in self.services {
            out = service.pattern.replace_all(&out, format!("://{}${{end}}", service.ip).as_str()).into_owned();
        }
        if self.mounts.is_empty() {
            return out;
        }
        // One pass over every mount path (longest first): a host directory put in is never
        // translated again.
        let alternatives: Vec<String> = self.mounts.iter().map(|(mount, _)| regex::escape(mount)).collect();
        let pattern = Regex::new(&format!(r#"(?P<mount>{})(?P<end>[/"'\s]|$)"#, alternatives.join("|")))
            .expect("the mounts' pattern");
        pattern
            .replace_all(&out, |c: &regex::Captures<'_>| {
                let host = self.mounts.iter().find(|(mount, _)| *mount == c["mount"]).map(|(_, host)| host);
                format!("{}{}", host.map_or_else(|| c["mount"].to_owned(), |h| h.display().to_string()), &c["end"])
            })
            .into_owned()
    }
}

/// Expands `$(NAME)` with the variables defined so far (Kubernetes' rule; unknown names stay).
fn expand(text: &str, env: &[(String, String)]) -> String {
    let pattern = Regex::new(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)").expect("the $(VAR) pattern");
    pattern
        .replace_all(text, |c: &regex::Captures<'_>| {
            env.iter().rev().find(|(k, _)| k == &c[1]).map_or_else(|| c[0].to_owned(), |(_, v)| v.clone())
        })
        .into_owned()
}

/// A node running a rendered chart's pods; stops them all when dropped.
pub struct Node {
    pods: Arc<Mutex<BTreeMap<String, Pod>>>,
    stop: Arc<AtomicBool>,
    kubelet: Option<std::thread::JoinHandle<()>>,
    services: Vec<(String, Ipv4Addr, Vec<Service>)>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("dir", &self.dir.path()).finish_non_exhaustive()
    }
}

impl Node {
    /// Starts every pod of `manifests` (Deployments and StatefulSets, `replicas` each) and
    /// every Service with a cluster IP. `secrets`: the Secrets the pods refer to (name → key →
    /// value), which a chart never renders (`existingSecret`).
    ///
    /// # Errors
    /// A pod spec this stand-in cannot run (named), or a process that cannot start.
    pub fn start(
        manifests: &Manifests,
        namespace: &str,
        secrets: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("weir-node-").tempdir()?;
        // A /16 of loopback of our own: 127.A.B.0/24, pods from .10, Services from .200.
        let seed = u16::try_from(uuid::Uuid::new_v4().as_u128() % 60_000)?;
        let (a, b) = (100 + (seed / 250) as u8 % 150, 1 + (seed % 250) as u8);
        let mut next_pod = 10u8;
        let mut next_service = 200u8;

        let mut names = Vec::new();
        let mut cluster_services = Vec::new();
        for service in manifests.of_kind("Service") {
            if service["spec"]["clusterIP"] == "None" {
                continue;
            }
            let name = service["metadata"]["name"].as_str().context("a Service without a name")?.to_owned();
            let ip = Ipv4Addr::new(127, a, b, next_service);
            next_service += 1;
            let (n, ns) = (regex::escape(&name), regex::escape(namespace));
            let pattern = Regex::new(&format!(r#"://{n}(\.{ns}(\.svc(\.cluster\.local)?)?)?(?P<end>[:/"'\s]|$)"#))?;
            names.push(ServiceName { pattern, ip });
            cluster_services.push((name, ip, service.clone()));
        }

        let config_maps: BTreeMap<String, &Value> = manifests
            .of_kind("ConfigMap")
            .filter_map(|c| Some((c["metadata"]["name"].as_str()?.to_owned(), c)))
            .collect();
        let entrypoint = image_entrypoint()?;
        let bin_dir = artifact("weir-jobmanager").parent().context("the binaries' directory")?.to_owned();
        let mut pods = BTreeMap::new();
        for workload in manifests.of_kind("Deployment").chain(manifests.of_kind("StatefulSet")) {
            let workload_name = workload["metadata"]["name"].as_str().context("a workload without a name")?;
            let replicas = workload["spec"]["replicas"].as_u64().unwrap_or(1);
            let template = &workload["spec"]["template"];
            let containers = template["spec"]["containers"].as_array().context("no containers")?;
            let [container] = containers.as_slice() else {
                bail!("{workload_name}: {} containers; this stand-in runs pods of one", containers.len())
            };
            for ordinal in 0..replicas {
                let name = format!("{workload_name}-{ordinal}");
                let ip = Ipv4Addr::new(127, a, b, next_pod);
                next_pod += 1;
                let pod_dir = dir.path().join(&name);
                // Volumes: host directories (emptyDir, the claim of a volumeClaimTemplate,
                // ConfigMap files).
                let mut volumes: BTreeMap<String, (PathBuf, Option<&Value>)> = BTreeMap::new();
                for volume in template["spec"]["volumes"].as_array().into_iter().flatten() {
                    let volume_name = volume["name"].as_str().context("a volume without a name")?;
                    let host = pod_dir.join("volumes").join(volume_name);
                    std::fs::create_dir_all(&host)?;
                    let config_map = if volume["configMap"].is_object() {
                        let cm = volume["configMap"]["name"].as_str().unwrap_or_default();
                        Some(*config_maps.get(cm).with_context(|| format!("{name}: no ConfigMap {cm}"))?)
                    } else if volume["emptyDir"].is_object() || volume["persistentVolumeClaim"].is_object() {
                        None
                    } else {
                        bail!("{name}: volume {volume_name} is of a kind this stand-in does not emulate: {volume}")
                    };
                    volumes.insert(volume_name.to_owned(), (host, config_map));
                }
                for claim in workload["spec"]["volumeClaimTemplates"].as_array().into_iter().flatten() {
                    let claim_name = claim["metadata"]["name"].as_str().context("a claim without a name")?;
                    let host = pod_dir.join("claims").join(claim_name);
                    std::fs::create_dir_all(&host)?;
                    volumes.insert(claim_name.to_owned(), (host, None));
                }
                let mut mounts = Vec::new();
                for mount in container["volumeMounts"].as_array().into_iter().flatten() {
                    let volume = mount["name"].as_str().unwrap_or_default();
                    let (host, _) = volumes.get(volume).with_context(|| format!("{name}: no volume {volume}"))?;
                    let path = mount["mountPath"].as_str().context("a mount without a path")?;
                    let host = match mount["subPath"].as_str() {
                        Some(sub) => host.join(sub),
                        None => host.clone(),
                    };
                    mounts.push((path.trim_end_matches('/').to_owned(), host));
                }
                mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
                let view = PodView { ip, services: &names, mounts };
                // ConfigMap files as the process sees them.
                for (host, config_map) in volumes.values() {
                    let Some(config_map) = config_map else { continue };
                    for (key, text) in config_map["data"].as_object().into_iter().flatten() {
                        std::fs::write(host.join(key), view.translate(text.as_str().unwrap_or_default()))?;
                    }
                }
                let tmp = view.mounts.iter().find(|(p, _)| p == "/tmp").map(|(_, h)| h.clone());
                let tmp = match tmp {
                    Some(tmp) => tmp,
                    None => {
                        std::fs::create_dir_all(pod_dir.join("tmp"))?;
                        pod_dir.join("tmp")
                    }
                };
                let mut env: Vec<(String, String)> = vec![
                    ("PATH".into(), format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir.display())),
                    ("HOSTNAME".into(), name.clone()),
                    ("HOME".into(), pod_dir.display().to_string()),
                    ("TMPDIR".into(), tmp.display().to_string()),
                ];
                for var in container["env"].as_array().into_iter().flatten() {
                    let key = var["name"].as_str().context("an env var without a name")?.to_owned();
                    let value = if let Some(value) = var["value"].as_str() {
                        expand(&view.translate(value), &env)
                    } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                        match field {
                            "status.podIP" => ip.to_string(),
                            "metadata.name" => name.clone(),
                            "metadata.namespace" => namespace.to_owned(),
                            other => bail!("{name}: env {key} from field {other}, which this stand-in does not know"),
                        }
                    } else if var["valueFrom"]["secretKeyRef"].is_object() {
                        let r = &var["valueFrom"]["secretKeyRef"];
                        let (secret, k) =
                            (r["name"].as_str().unwrap_or_default(), r["key"].as_str().unwrap_or_default());
                        secrets
                            .get(secret)
                            .and_then(|s| s.get(k))
                            .with_context(|| format!("{name}: env {key} from secret {secret} key {k}: not given"))?
                            .clone()
                    } else {
                        bail!("{name}: env {key}: {var} is a source this stand-in does not emulate")
                    };
                    env.push((key, value));
                }
                let mut command: Vec<String> = match container["command"].as_array() {
                    Some(command) => command.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect(),
                    None => entrypoint.clone(),
                };
                for arg in container["args"].as_array().into_iter().flatten() {
                    command.push(expand(&view.translate(arg.as_str().unwrap_or_default()), &env));
                }
                let mut pod = Pod {
                    name: name.clone(),
                    ip,
                    labels: labels(&template["metadata"]["labels"]),
                    container: container.clone(),
                    command,
                    env,
                    log: dir.path().join(format!("{name}.log")),
                    child: None,
                    exited_at: None,
                    exits: Vec::new(),
                    starts: 0,
                };
                pod.start()?;
                pods.insert(name, pod);
            }
        }

        let mut services = Vec::new();
        for (name, ip, service) in cluster_services {
            let selector = labels(&service["spec"]["selector"]);
            let mut forwards = Vec::new();
            for port in service["spec"]["ports"].as_array().into_iter().flatten() {
                let number = port["port"].as_u64().context("a Service port without a number")?;
                let target = if port["targetPort"].is_null() { &port["port"] } else { &port["targetPort"] };
                let mut backends = Vec::new();
                let mut period = Duration::from_secs(10);
                for pod in pods.values().filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))) {
                    let target_port = container_port(&pod.container, target)
                        .with_context(|| format!("Service {name}: pod {} has no port {target}", pod.name))?;
                    // Without a readiness probe a running pod is ready: its port answers.
                    let ready =
                        pod.probe_url("readinessProbe").unwrap_or_else(|| format!("http://{}:{target_port}/", pod.ip));
                    period =
                        pod.container["readinessProbe"]["periodSeconds"].as_u64().map_or(period, Duration::from_secs);
                    backends.push(Backend { ready, target: format!("{}:{target_port}", pod.ip) });
                }
                forwards.push(Service::start_at(&format!("{ip}:{number}"), backends, period));
            }
            services.push((name, ip, forwards));
        }

        let pods = Arc::new(Mutex::new(pods));
        let stop = Arc::new(AtomicBool::new(false));
        let kubelet = std::thread::spawn({
            let (pods, stop) = (Arc::clone(&pods), Arc::clone(&stop));
            move || kubelet(&pods, &stop)
        });
        Ok(Self { pods, stop, kubelet: Some(kubelet), services, dir })
    }

    /// The URL of Service `name` on `port` (`http://IP:PORT`).
    ///
    /// # Panics
    /// When there is no such Service.
    pub fn service_url(&self, name: &str, port: u16) -> String {
        let (_, ip, _) =
            self.services.iter().find(|(n, _, _)| n == name).unwrap_or_else(|| panic!("no Service {name}"));
        format!("http://{ip}:{port}")
    }

    /// The names of the pods whose labels include `selector`'s.
    pub fn pods(&self, selector: &[(&str, &str)]) -> Vec<String> {
        let pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        pods.values()
            .filter(|p| selector.iter().all(|(k, v)| p.labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|p| p.name.clone())
            .collect()
    }

    /// `http://IP:PORT` of pod `name`'s container port `port` (a name or a number).
    ///
    /// # Panics
    /// When there is no such pod or port.
    pub fn pod_url(&self, name: &str, port: &str) -> String {
        self.with_pod(name, |p| {
            let number = container_port(&p.container, &Value::String(port.to_owned()))
                .unwrap_or_else(|| panic!("pod {name} has no port {port}"));
            format!("http://{}:{number}", p.ip)
        })
    }

    /// Whether pod `name`'s readiness probe answers 200 now.
    pub fn ready(&self, name: &str) -> bool {
        let url = self.with_pod(name, |p| p.probe_url("readinessProbe"));
        let Some(url) = url else { return self.with_pod(name, |p| p.child.is_some()) };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().expect("client");
            client.get(&url).send().await.is_ok_and(|r| r.status().as_u16() == 200)
        })
    }

    /// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`) to pod `name`'s process (by its pid).
    ///
    /// # Panics
    /// When there is no such pod, it runs no process, or `kill` fails.
    pub fn signal(&self, name: &str, signal: &str) {
        let pid = self.with_pod(name, Pod::pid).unwrap_or_else(|| panic!("pod {name} runs no process"));
        let status = Command::new("kill").args([format!("-{signal}"), pid.to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} ({name}) failed");
    }

    /// Exit codes of pod `name`'s ended runs, oldest first (`None`: killed by a signal).
    pub fn exits(&self, name: &str) -> Vec<Option<i32>> {
        self.with_pod(name, |p| p.exits.clone())
    }

    /// How often pod `name`'s container was started.
    pub fn starts(&self, name: &str) -> u32 {
        self.with_pod(name, |p| p.starts)
    }

    /// Pod `name`'s log (the container's stdout and stderr, every run).
    pub fn log(&self, name: &str) -> String {
        let path = self.with_pod(name, |p| p.log.clone());
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// The last lines of every pod's log, for failure messages.
    pub fn logs(&self) -> String {
        let names: Vec<String> = self.pods.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        let mut out = String::new();
        for name in names {
            let log = self.log(&name);
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- pod {name} (last 40 lines) ---\n"));
            for line in &lines[lines.len().saturating_sub(40)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The node's directory (pods' volumes and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn with_pod<T>(&self, name: &str, f: impl FnOnce(&Pod) -> T) -> T {
        let pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        f(pods.get(name).unwrap_or_else(|| panic!("no pod {name}")))
    }
}

/// Starts exited containers again (restartPolicy Always) until `stop`.
fn kubelet(pods: &Mutex<BTreeMap<String, Pod>>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        {
            let mut pods = pods.lock().unwrap_or_else(PoisonError::into_inner);
            for pod in pods.values_mut() {
                if let Some(child) = pod.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    pod.exits.push(status.code());
                    pod.child = None;
                    pod.exited_at = Some(Instant::now());
                }
                if pod.child.is_none()
                    && pod.exited_at.is_some_and(|at| at.elapsed() >= RESTART_DELAY)
                    && let Err(e) = pod.start()
                {
                    eprintln!("kubelet stand-in: cannot restart pod {}: {e:#}", pod.name);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(kubelet) = self.kubelet.take() {
            let _ = kubelet.join();
        }
        let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        for pod in pods.values_mut() {
            if let Some(mut child) = pod.child.take() {
                // SIGKILL ends a stopped (SIGSTOP) process too.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
