//! A client of the jobmanager's REST API (see `weir_jobmanager::rest`).
//!
//! Each request method is generic over what it returns: a typed mirror of the answer (for
//! example [`JobSummary`]) or `serde_json::Value` to pass the server's JSON through unchanged.

use reqwest::multipart::{Form, Part};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where the jobmanager's REST API listens unless told otherwise.
pub const DEFAULT_JOBMANAGER: &str = "http://127.0.0.1:8081";
/// The jobmanager's REST port unless told otherwise (`-m host` means `host:8081`).
pub const DEFAULT_REST_PORT: u16 = 8081;

/// How long connecting to the jobmanager may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request other than an upload may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub use crate::error::{Error as ClientError, Result};

/// A job's details, as `GET /jobs/{id}` reports them (the fields this client uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// Job id.
    pub jid: String,
    /// Job name.
    pub name: String,
    /// Status, for example `RUNNING`.
    pub state: String,
    /// Submission time, ms since the epoch.
    #[serde(default)]
    pub start_time: u64,
    /// Time from submission to the end (or to now).
    pub duration_ms: u64,
    /// Why the job failed.
    #[serde(default)]
    pub failure: Option<String>,
    /// Restarts so far.
    #[serde(default)]
    pub restarts: u32,
    /// Records produced by the job's sources.
    #[serde(default)]
    pub source_records: u64,
    /// Where the job's sinks write, one line each.
    #[serde(default)]
    pub sinks: Vec<String>,
    /// What may go wrong with the job as configured, one line each.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Vertices.
    #[serde(default)]
    pub vertices: Vec<VertexSummary>,
}

impl JobSummary {
    /// Whether the job ended (FINISHED, FAILED or CANCELED).
    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "FINISHED" | "FAILED" | "CANCELED")
    }
}

/// A vertex of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertexSummary {
    /// Chained operator names.
    pub name: String,
    /// Number of subtasks.
    pub parallelism: u32,
    /// Records into the vertex.
    #[serde(default)]
    pub records_in: u64,
    /// Records out of the vertex.
    #[serde(default)]
    pub records_out: u64,
    /// Its subtasks.
    #[serde(default)]
    pub subtasks: Vec<SubtaskSummary>,
}

/// A subtask of a vertex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtaskSummary {
    /// Subtask index.
    pub subtask: u32,
    /// Its state, for example `Running`.
    pub state: String,
    /// The taskmanager running it.
    #[serde(default)]
    pub taskmanager: String,
    /// Records into the subtask.
    #[serde(default)]
    pub records_in: u64,
    /// Records out of the subtask.
    #[serde(default)]
    pub records_out: u64,
}

/// `GET /jobs`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JobList {
    /// Jobs, newest first.
    pub jobs: Vec<JobListEntry>,
}

/// One job of [`JobList`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JobListEntry {
    /// Job id.
    pub id: String,
    /// Job name.
    pub name: String,
    /// Status.
    pub status: String,
    /// Submission time, ms since the epoch.
    pub start_time: u64,
    /// Time from submission to the end (or to now).
    pub duration_ms: u64,
}

/// `GET /taskmanagers`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskManagerList {
    /// Registered taskmanagers.
    pub taskmanagers: Vec<TaskManagerSummary>,
}

/// One taskmanager of [`TaskManagerList`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskManagerSummary {
    /// Its id.
    pub id: String,
    /// Slots it offers.
    pub slots: u32,
    /// Slots no job holds.
    #[serde(default)]
    pub free_slots: u32,
    /// Its data-plane address.
    #[serde(default)]
    pub data_address: String,
    /// Seconds since its last heartbeat.
    #[serde(default)]
    pub seconds_since_heartbeat: f64,
}

/// `POST /jobs`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Submitted {
    /// The new job's id.
    pub jobid: String,
    /// What may go wrong with the job as configured, one line each.
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    errors: Vec<String>,
}

/// The jobmanager's REST URL from an address as the user gives it (`-m`, `--jobmanager`,
/// `WEIR_JOBMANAGER`): an `http://` or `https://` URL, kept (without a trailing `/`), or, as
/// Flink's `-m`, `host:port` without a scheme, which means `http://host:port` (`host` alone
/// means port 8081).
///
/// # Errors
/// [`ClientError::InvalidUrl`] naming what is wrong: another scheme, no host, a query or
/// fragment, an invalid port.
pub fn jobmanager_url(address: &str) -> Result<String> {
    let given = address.trim();
    let invalid = |reason: String| ClientError::InvalidUrl { url: address.to_owned(), reason };
    if given.is_empty() {
        return Err(invalid(format!("empty (expected host:port or a URL such as {DEFAULT_JOBMANAGER})")));
    }
    let with_scheme = given.contains("://");
    let text = if with_scheme { given.to_owned() } else { format!("http://{given}") };
    let mut url = Url::parse(&text)
        .map_err(|e| invalid(format!("{e} (expected host:port or a URL such as {DEFAULT_JOBMANAGER})")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(invalid(format!("unsupported scheme '{other}' (expected http:// or https://)"))),
    }
    if url.cannot_be_a_base() || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a query or fragment is not allowed".to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the address are not supported".to_owned()));
    }
    if !with_scheme && url.port().is_none() {
        // `-m host`: the REST port of a jobmanager by default.
        url.set_port(Some(DEFAULT_REST_PORT)).map_err(|()| invalid("cannot set the port".to_owned()))?;
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A client of one jobmanager's REST API.
#[derive(Debug, Clone)]
pub struct RestClient {
    base: String,
    http: reqwest::Client,
}

impl RestClient {
    /// A client of the jobmanager at `address`: its REST URL (`http://127.0.0.1:8081`,
    /// `https://weir.example.com/`) or, as Flink's `-m`, `host:port` (see [`jobmanager_url`]).
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] if `address` is neither.
    pub fn new(address: &str) -> Result<Self> {
        let base = jobmanager_url(address)?;
        let http = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).build().map_err(|e| {
            ClientError::InvalidUrl {
                url: address.to_owned(),
                reason: format!("cannot create an HTTP client: {}", error_chain(&e)),
            }
        })?;
        Ok(Self { base, http })
    }

    /// The jobmanager's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /overview`.
    pub async fn overview<T: DeserializeOwned>(&self) -> Result<T> {
        self.send(Method::GET, &["overview"], None).await
    }

    /// `GET /taskmanagers`; typed as [`TaskManagerList`].
    pub async fn taskmanagers<T: DeserializeOwned>(&self) -> Result<T> {
        self.send(Method::GET, &["taskmanagers"], None).await
    }

    /// `GET /jobs`; typed as [`JobList`].
    pub async fn jobs<T: DeserializeOwned>(&self) -> Result<T> {
        self.send(Method::GET, &["jobs"], None).await
    }

    /// `GET /jobs/{id}`; typed as [`JobSummary`].
    pub async fn job<T: DeserializeOwned>(&self, id: &str) -> Result<T> {
        self.send(Method::GET, &["jobs", id], None).await
    }

    /// `PATCH /jobs/{id}?mode=cancel`: asks the jobmanager to cancel the job.
    pub async fn cancel<T: DeserializeOwned>(&self, id: &str) -> Result<T> {
        self.send(Method::PATCH, &["jobs", id], Some(("mode", "cancel"))).await
    }

    /// `GET /jobs/{id}/checkpoints`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn checkpoints<T: DeserializeOwned>(&self, id: &str) -> Result<T> {
        self.send(Method::GET, &["jobs", id, "checkpoints"], None).await
    }

    /// `POST /jobs/{id}/savepoints` with Flink's JSON body.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn trigger_savepoint<T: DeserializeOwned>(&self, id: &str, body: &serde_json::Value) -> Result<T> {
        let url = self.url(&["jobs", id, "savepoints"], None)?;
        let response = self.http.post(url.clone()).json(body).timeout(REQUEST_TIMEOUT).send().await;
        self.answer(url, response).await
    }

    /// `POST /jobs/{id}/stop` with Flink's JSON body.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn stop<T: DeserializeOwned>(&self, id: &str, body: &serde_json::Value) -> Result<T> {
        let url = self.url(&["jobs", id, "stop"], None)?;
        let response = self.http.post(url.clone()).json(body).timeout(REQUEST_TIMEOUT).send().await;
        self.answer(url, response).await
    }

    /// `POST /savepoint-disposal` with `{"savepoint-path": path}`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn dispose_savepoint<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self.url(&["savepoint-disposal"], None)?;
        let body = serde_json::json!({ "savepoint-path": path });
        let response = self.http.post(url.clone()).json(&body).timeout(REQUEST_TIMEOUT).send().await;
        self.answer(url, response).await
    }

    /// `GET /savepoint-disposal/{request_id}`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn disposal_status<T: DeserializeOwned>(&self, request_id: &str) -> Result<T> {
        self.send(Method::GET, &["savepoint-disposal", request_id], None).await
    }

    /// `GET /jobs/{id}/savepoints/{request_id}`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn savepoint_status<T: DeserializeOwned>(&self, id: &str, request_id: &str) -> Result<T> {
        self.send(Method::GET, &["jobs", id, "savepoints", request_id], None).await
    }

    /// `POST /jobs`: uploads a plugin (`file_name` is informative) and submits a job of it with
    /// more form `fields` (name, value: checkpointing, state backend, savepoint; see
    /// [`crate::settings::checkpoint_form_fields`]); typed as [`Submitted`].
    pub async fn submit<T: DeserializeOwned>(
        &self,
        plugin: Vec<u8>,
        file_name: &str,
        args: &[String],
        parallelism: u32,
        fields: &[(&'static str, String)],
    ) -> Result<T> {
        let url = self.url(&["jobs"], None)?;
        let args = serde_json::to_string(args).map_err(|e| ClientError::Protocol {
            url: url.to_string(),
            message: format!("cannot encode the job arguments: {e}"),
        })?;
        let form = Form::new()
            .part("plugin", Part::bytes(plugin).file_name(file_name.to_owned()))
            .text("args", args)
            .text("parallelism", parallelism.to_string());
        let form = fields.iter().fold(form, |form, (name, value)| form.text(*name, value.clone()));
        // No overall timeout: an upload of a large plugin may take long.
        let response = self.http.post(url.clone()).multipart(form).send().await;
        self.answer(url, response).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<(&str, &str)>,
    ) -> Result<T> {
        let url = self.url(segments, query)?;
        let response = self.http.request(method, url.clone()).timeout(REQUEST_TIMEOUT).send().await;
        self.answer(url, response).await
    }

    /// The URL of `segments` under the base (each segment escaped).
    fn url(&self, segments: &[&str], query: Option<(&str, &str)>) -> Result<Url> {
        let mut url = Url::parse(&self.base)
            .map_err(|e| ClientError::InvalidUrl { url: self.base.clone(), reason: e.to_string() })?;
        url.path_segments_mut()
            .map_err(|()| ClientError::InvalidUrl { url: self.base.clone(), reason: "no host".to_owned() })?
            .pop_if_empty()
            .extend(segments);
        if let Some((key, value)) = query {
            url.query_pairs_mut().append_pair(key, value);
        }
        Ok(url)
    }

    async fn answer<T: DeserializeOwned>(&self, url: Url, response: reqwest::Result<reqwest::Response>) -> Result<T> {
        let response = response.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.transport_error(&e))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| ClientError::Protocol { url: url.to_string(), message: format!("{e}") });
        }
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .and_then(|b| b.errors.into_iter().next())
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&body);
                let text = one_line(&text);
                if text.is_empty() {
                    status.canonical_reason().unwrap_or("request failed").to_owned()
                } else {
                    text.chars().take(200).collect()
                }
            });
        Err(ClientError::Api { status: status.as_u16(), message: one_line(&message) })
    }

    fn transport_error(&self, e: &reqwest::Error) -> ClientError {
        let cause = if e.is_timeout() {
            "no answer in time".to_owned()
        } else if let Some(io) = io_error(e) {
            io.kind().to_string()
        } else {
            error_chain(e)
        };
        ClientError::Unreachable { base: self.base.clone(), cause }
    }
}

/// The innermost I/O error behind `e`, if any.
fn io_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut found = None;
    let mut current = Some(e);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            found = Some(io);
        }
        current = error.source();
    }
    found
}

/// An error's message with those of its sources it does not already include, on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let message = s.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = s.source();
    }
    one_line(&text)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_urls_or_flink_style_host_port() {
        for (given, url) in [
            ("http://127.0.0.1:8081", "http://127.0.0.1:8081"),
            ("http://jm.example:8081/weir/", "http://jm.example:8081/weir"),
            ("https://weir.example.com/", "https://weir.example.com"),
            ("https://weir.example.com:8443/api", "https://weir.example.com:8443/api"),
            // Flink's `-m host:port`: no scheme means http.
            ("127.0.0.1:8081", "http://127.0.0.1:8081"),
            ("localhost:9000", "http://localhost:9000"),
            ("jm.weir.svc:8081", "http://jm.weir.svc:8081"),
            ("[::1]:8081", "http://[::1]:8081"),
            (" jm:8081 ", "http://jm:8081"),
            // A host alone: the default REST port.
            ("jobmanager", "http://jobmanager:8081"),
            // An explicit scheme without a port keeps the scheme's port.
            ("http://jm", "http://jm"),
        ] {
            assert_eq!(jobmanager_url(given).as_deref(), Ok(url), "{given}");
            assert_eq!(RestClient::new(given).unwrap().base(), url, "{given}");
        }
        for (bad, reason) in [
            ("ftp://jm", "unsupported scheme 'ftp'"),
            ("http://", "empty host"),
            ("", "empty"),
            ("jm:notaport", "invalid port"),
            ("jm:99999", "invalid port"),
            ("http://jm:8081/?x=1", "query"),
            ("http://user:pw@jm:8081", "credentials"),
            ("not a url", "invalid"),
        ] {
            let err = RestClient::new(bad).unwrap_err();
            assert!(matches!(err, ClientError::InvalidUrl { .. }), "{bad}: {err}");
            let text = err.to_string();
            assert!(text.contains(reason) && !text.contains('\n'), "{bad}: {text}");
        }
    }

    #[test]
    fn urls_escape_user_input_and_keep_a_base_path() {
        let client = RestClient::new("http://jm:8081/weir/").unwrap();
        let url = client.url(&["jobs", "../x y"], Some(("mode", "cancel"))).unwrap();
        assert_eq!(url.as_str(), "http://jm:8081/weir/jobs/..%2Fx%20y?mode=cancel");
    }

    #[tokio::test]
    async fn an_unreachable_jobmanager_is_one_line_with_a_hint() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = RestClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = client.jobs::<JobList>().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the jobmanager at http://127.0.0.1:{port}: connection refused (is it running? set \
                 -m/--jobmanager or WEIR_JOBMANAGER)"
            )
        );
    }

    #[test]
    fn job_details_deserialize_with_unknown_fields() {
        let json = serde_json::json!({
            "jid": "abc", "name": "wordcount", "state": "FAILED", "start_time": 1, "duration_ms": 1500,
            "failure": "boom", "attempt": 1, "restarts": 1, "restart_failures": [], "source_records": 10,
            "sinks": ["counts: standard output"],
            "vertices": [{"id": 0, "name": "Source: lines", "parallelism": 1, "is_source": true,
                "records_in": 10, "records_out": 10,
                "subtasks": [{"subtask": 0, "state": "FAILED", "taskmanager": "tm-1", "records_in": 10, "records_out": 10}]}]
        });
        let summary: JobSummary = serde_json::from_value(json).unwrap();
        assert!(summary.is_terminal());
        assert_eq!(summary.vertices[0].subtasks[0].state, "FAILED");
        assert_eq!(summary.failure.as_deref(), Some("boom"));
    }
}
