//! A real S3-compatible object store for tests: moto's server (`moto_server`, installed into a
//! Python venv by `scripts/setup.sh`) as a child process on a free loopback port.
//!
//! The binary is `$WEIR_MOTO_SERVER` (which `scripts/test.sh` exports), else
//! `${WEIR_TOOLS_DIR:-~/.cache/weir/tools}/venv/bin/moto_server`. Starting fails, with a hint to
//! run `./scripts/setup.sh`, when it is missing: tests that need S3 never skip silently.
//!
//! moto does not check request signatures, so any access key and secret work. The server runs
//! with its working directory in a temporary directory that also holds its log; dropping the
//! [`S3Server`] kills and reaps it through its [`Child`] handle.

use anyhow::{Context, bail, ensure};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long moto may take to answer after it was started (it usually takes under a second).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a start is retried on a fresh port when moto exits early (e.g. the port was taken).
const START_ATTEMPTS: usize = 3;
/// Timeout of one request of the built-in HTTP client (readiness probe, bucket creation).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of moto's log included in an error.
const LOG_TAIL_LINES: usize = 30;
/// The region in [`S3Server::options`]; moto accepts any.
const REGION: &str = "us-east-1";

/// A moto S3 server on a free loopback port, with one bucket; killed (by handle) on drop.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    port: u16,
    bucket: String,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts [`moto_server_binary`] on 127.0.0.1 with a free port, waits until it answers and
    /// creates bucket `bucket`.
    ///
    /// # Errors
    /// When the binary is missing (with a hint to run `./scripts/setup.sh`), moto does not come
    /// up within 20 s (with its log's tail), or the bucket cannot be created.
    pub fn start(bucket: &str) -> anyhow::Result<Self> {
        Self::start_with(&moto_server_binary(), bucket)
    }

    /// Like [`S3Server::start`], with the `moto_server` binary given explicitly.
    ///
    /// # Errors
    /// As [`S3Server::start`].
    pub fn start_with(binary: &Path, bucket: &str) -> anyhow::Result<Self> {
        ensure!(
            binary.is_file(),
            "moto_server not found at {} (set WEIR_MOTO_SERVER, or run ./scripts/setup.sh to install it)",
            binary.display()
        );
        let dir = tempfile::Builder::new().prefix("weir-moto-").tempdir().context("moto temp dir")?;
        let log_path = dir.path().join("moto.log");
        let mut attempt = 1;
        let (child, port) = loop {
            match spawn_and_wait(binary, dir.path(), &log_path) {
                Ok(started) => break started,
                Err(Start::Exited(status)) if attempt < START_ATTEMPTS => {
                    eprintln!("moto_server exited ({status}) on attempt {attempt}, retrying on another port");
                    attempt += 1;
                }
                Err(Start::Exited(status)) => {
                    bail!("moto_server exited ({status}) {attempt} times; its log tail:\n{}", log_tail(&log_path))
                }
                Err(Start::Failed(e)) => bail!("{e:#}; moto_server's log tail:\n{}", log_tail(&log_path)),
            }
        };
        let server = Self { child, port, bucket: bucket.to_owned(), _dir: dir };
        let (status, body) = http_request(port, "PUT", &format!("/{bucket}"))
            .with_context(|| format!("creating bucket {bucket:?} on moto at {}", server.endpoint()))?;
        ensure!(status == 200, "creating bucket {bucket:?} on moto: HTTP {status}: {body}");
        Ok(server)
    }

    /// The server's URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Storage options for `object_store` (`parse_url_opts`, `AmazonS3Builder::with_config`):
    /// endpoint, region, static credentials, plain HTTP and path-style requests.
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", self.endpoint()),
            ("aws_region", REGION.to_owned()),
            ("aws_access_key_id", "test".to_owned()),
            ("aws_secret_access_key", "test".to_owned()),
            ("aws_allow_http", "true".to_owned()),
            ("aws_virtual_hosted_style_request", "false".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The standard `AWS_*` environment variables that point a process at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        self.options().into_iter().map(|(k, v)| (k.to_ascii_uppercase(), v)).collect()
    }

    /// Object keys under `prefix` (recursive, by path segments; `""` for all), sorted, with sizes.
    ///
    /// # Errors
    /// When the listing fails.
    pub fn list(&self, prefix: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let store = self.store()?;
        let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let metas: Vec<_> = runtime
            .block_on(store.list(prefix.as_ref()).try_collect())
            .with_context(|| format!("listing s3://{}/{}", self.bucket, prefix.as_ref().map_or("", |p| p.as_ref())))?;
        let mut objects: Vec<(String, u64)> = metas.into_iter().map(|m| (m.location.to_string(), m.size)).collect();
        objects.sort();
        Ok(objects)
    }

    /// An `object_store` client for the bucket, configured from [`S3Server::options`].
    /// The bytes of object `key`.
    ///
    /// # Errors
    /// When the read fails.
    pub fn get(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let store = self.store()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let path = ObjectPath::from(key);
        let bytes = runtime
            .block_on(async { store.get(&path).await?.bytes().await })
            .with_context(|| format!("reading s3://{}/{key}", self.bucket))?;
        Ok(bytes.to_vec())
    }

    fn store(&self) -> anyhow::Result<AmazonS3> {
        let mut builder = AmazonS3Builder::new().with_bucket_name(&self.bucket);
        for (key, value) in self.options() {
            builder = builder.with_config(key.parse::<AmazonS3ConfigKey>()?, value);
        }
        Ok(builder.build()?)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `moto_server` binary: `$WEIR_MOTO_SERVER`, else the one `scripts/setup.sh` installs,
/// `${WEIR_TOOLS_DIR:-~/.cache/weir/tools}/venv/bin/moto_server`.
pub fn moto_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_MOTO_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let tools = std::env::var_os("WEIR_TOOLS_DIR").filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache").join("weir").join("tools")
    });
    tools.join("venv").join("bin").join("moto_server")
}

/// Why one start attempt failed.
enum Start {
    /// moto exited before answering (retryable: most likely its port was taken meanwhile).
    Exited(std::process::ExitStatus),
    /// Anything else.
    Failed(anyhow::Error),
}

/// Starts moto on a free port, logging to `log_path`, and waits until it answers as an S3 server.
fn spawn_and_wait(binary: &Path, dir: &Path, log_path: &Path) -> Result<(Child, u16), Start> {
    let fail = Start::Failed;
    let port = free_port().map_err(|e| fail(e.context("picking a free loopback port")))?;
    let log = File::create(log_path).map_err(|e| fail(anyhow::Error::new(e).context("creating moto's log")))?;
    let stderr = log.try_clone().map_err(|e| fail(e.into()))?;
    let mut child = Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .spawn()
        .map_err(|e| fail(anyhow::Error::new(e).context(format!("starting {}", binary.display()))))?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Err(Start::Exited(status)),
            Ok(None) => {}
            Err(e) => {
                kill(&mut child);
                return Err(fail(e.into()));
            }
        }
        // A bucket listing tells moto apart from anything else that might have grabbed the port.
        if let Ok((200, body)) = http_request(port, "GET", "/")
            && body.contains("ListAllMyBucketsResult")
            && matches!(child.try_wait(), Ok(None))
        {
            return Ok((child, port));
        }
        if Instant::now() >= deadline {
            kill(&mut child);
            return Err(fail(anyhow::anyhow!(
                "moto_server did not answer on 127.0.0.1:{port} within {}s",
                STARTUP_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A loopback port that was free a moment ago (bound to port 0, then released).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// One HTTP/1.1 request without body to `127.0.0.1:port`; returns the status and the body (with
/// any chunked framing left in, which is enough for the checks here).
fn http_request(port: u16, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), REQUEST_TIMEOUT)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {:?}", response.lines().next().unwrap_or_default()))?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_owned();
    Ok((status, body))
}

/// The last lines of moto's log.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}
