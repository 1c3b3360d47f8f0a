//! A jobmanager standing by for leadership (high availability) serves its addresses as the
//! leader's proxy, so that a Kubernetes Service in front of every jobmanager replica works
//! whichever pod a connection lands on, and every replica is *ready* (a Deployment whose standbys
//! never became ready would never be Available: `helm install --wait`, `kubectl rollout status`
//! and GitOps health checks would wait forever).
//!
//! - **REST**: `/healthz` and `/readyz` are answered here (`/readyz` is 200 while a leader other
//!   than this process is known); every other request is forwarded to the leader's REST address,
//!   body and answer streamed, and answered 503 naming the leader when it cannot be reached.
//! - **RPC** (taskmanagers): each connection is piped to the leader's RPC address (HTTP/2 passes
//!   through untouched, and the leader's epoch fencing with it).
//!
//! The leader is read from the election's record (cached for a second). A record naming this
//! process's own addresses is an earlier incarnation of this pod, dead: nothing is forwarded to
//! it, and a request that a standby already forwarded is not forwarded again (no loops between
//! standbys that read stale records). When this jobmanager takes over, the proxy stops and the
//! connections it piped are closed, so that clients reconnect to the new leader.

use crate::ha::{LeaderElection, LeaderInfo};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, info};

/// Marks a request a standby forwarded.
const FORWARDED: &str = "weir-forwarded-by-standby";

/// How long a looked-up leader is used before it is read again.
const LEADER_CACHE: Duration = Duration::from_secs(1);

/// The running proxy; [`Standby::stop`] ends it.
#[derive(Debug)]
pub(crate) struct Standby {
    stop: tokio::sync::watch::Sender<bool>,
    rest: tokio::task::JoinHandle<()>,
    rpc: tokio::task::JoinHandle<()>,
}

impl Standby {
    /// Serves `rest` and `rpc` (clones of the jobmanager's listening sockets) as the leader's
    /// proxy; `own` is this jobmanager's record.
    pub(crate) fn start(rest: TcpListener, rpc: TcpListener, election: LeaderElection, own: LeaderInfo) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let leader = Arc::new(LeaderLookup { election, own, cached: Mutex::new(None) });
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let metrics = Arc::new(crate::metrics::standby_registry());
        let scrape = move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, weir_runtime::metrics::CONTENT_TYPE)],
                    weir_runtime::metrics::encode(&metrics),
                )
            }
        };
        let app = Router::new()
            .route("/healthz", get(|| async { axum::Json(json!({ "status": "ok" })) }))
            // Its own process only, not forwarded: every replica is a scrape target of its own.
            .route("/metrics", get(scrape))
            .route("/readyz", get(ready))
            .fallback(forward)
            .with_state(Proxy { leader: Arc::clone(&leader), client });
        let rest = tokio::spawn({
            let mut stopped = stopped.clone();
            async move {
                let _ = axum::serve(rest, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await;
            }
        });
        let rpc = tokio::spawn(pipe_rpc(rpc, leader, stopped));
        Self { stop, rest, rpc }
    }

    /// Stops accepting, and closes every connection piped to the old leader. Requests being
    /// forwarded finish (or fail) on their own: the leader does not wait for them.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        drop(self.rest);
        let _ = self.rpc.await;
    }
}

/// A leader's epoch and record.
type Leader = (u64, LeaderInfo);

/// Who leads, as far as this standby knows.
#[derive(Debug)]
struct LeaderLookup {
    election: LeaderElection,
    own: LeaderInfo,
    /// When the leader was last read, and what was read.
    cached: Mutex<Option<(Instant, Option<Leader>)>>,
}

impl LeaderLookup {
    /// The leader's epoch and record, `None` when none is elected, the storage cannot be read, or
    /// the record names this process's addresses (an earlier incarnation of it).
    async fn get(&self) -> Option<Leader> {
        let cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let leader = match cached {
            Some((at, leader)) if at.elapsed() < LEADER_CACHE => leader,
            _ => {
                let leader = self.election.current().await.ok().flatten();
                *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), leader.clone()));
                leader
            }
        };
        leader.filter(|(_, info)| info.rest_url != self.own.rest_url && info.rpc_url != self.own.rpc_url)
    }
}

#[derive(Clone)]
struct Proxy {
    leader: Arc<LeaderLookup>,
    client: reqwest::Client,
}

/// 503 saying that no leader can be reached from here.
fn no_leader(message: String, leader: Option<&Leader>) -> Response {
    let body = json!({
        "errors": [message],
        "leader": { "rest_url": leader.map(|(_, l)| l.rest_url.clone()), "epoch": leader.map(|(e, _)| *e) },
    });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

/// `/readyz` of a standby: ready to serve (by forwarding) while it knows a leader.
async fn ready(State(proxy): State<Proxy>) -> Response {
    match proxy.leader.get().await {
        Some((epoch, leader)) => {
            axum::Json(json!({ "status": "standby", "leader": { "rest_url": leader.rest_url, "epoch": epoch } }))
                .into_response()
        }
        None => no_leader("this jobmanager is a standby and knows no live leader".into(), None),
    }
}

/// Headers that belong to one connection, not to the request (RFC 9110 7.6.1), and `host`.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

fn end_to_end(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &axum::http::HeaderValue)> {
    headers.iter().filter(|(name, _)| !hop_by_hop(name))
}

/// Forwards a request to the leader and streams its answer back.
async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let leader = proxy.leader.get().await;
    let Some((epoch, info)) = leader.clone() else {
        return no_leader("this jobmanager is a standby and knows no live leader; try again shortly".into(), None);
    };
    if request.headers().contains_key(FORWARDED) {
        return no_leader(
            format!("this jobmanager is a standby; the leader is at {} (epoch {epoch})", info.rest_url),
            leader.as_ref(),
        );
    }
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", info.rest_url);
    debug!(%url, method = %parts.method, "forwarding a request to the leader");
    let mut outgoing = proxy.client.request(parts.method.clone(), &url).header(FORWARDED, "1");
    for (name, value) in end_to_end(&parts.headers) {
        outgoing = outgoing.header(name, value);
    }
    let outgoing = outgoing.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    match outgoing.send().await {
        Ok(answer) => {
            let mut response = Response::builder().status(answer.status());
            for (name, value) in end_to_end(answer.headers()) {
                response = response.header(name, value);
            }
            response
                .body(Body::from_stream(answer.bytes_stream()))
                .unwrap_or_else(|e| no_leader(format!("cannot relay the leader's answer: {e}"), leader.as_ref()))
        }
        Err(e) => no_leader(
            format!(
                "this jobmanager is a standby; the leader at {} (epoch {epoch}) did not answer: {e}",
                info.rest_url
            ),
            leader.as_ref(),
        ),
    }
}

/// Pipes every RPC connection to the leader until `stopped`; then closes them all.
async fn pipe_rpc(listener: TcpListener, leader: Arc<LeaderLookup>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut client, peer)) = accepted else { continue };
                let leader = Arc::clone(&leader);
                connections.spawn(async move {
                    let Some((epoch, info)) = leader.get().await else { return };
                    let address = info.rpc_url.trim_start_matches("http://").trim_start_matches("https://").to_owned();
                    let connected = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(&address)).await;
                    let Ok(Ok(mut upstream)) = connected else {
                        debug!(%peer, %address, epoch, "the leader's RPC address does not answer: connection closed");
                        return;
                    };
                    let _ = upstream.set_nodelay(true);
                    let _ = client.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped.wait_for(|s| *s) => break,
        }
    }
    info!(connections = connections.len(), "standby proxy stopped: closing the connections it piped to the old leader");
    connections.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::LeaseTiming;
    use weir_runtime::storage::{Storage, StorageConfig};

    async fn get(url: &str) -> (u16, serde_json::Value) {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let response = client.get(url).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or_default())
    }

    /// A pod restarted while its earlier incarnation's lease runs out finds its own addresses in
    /// the leader's record: it must not forward to itself.
    #[tokio::test]
    async fn a_record_naming_this_processs_own_addresses_is_never_forwarded_to() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let storage = Storage::open(&StorageConfig { url, options: Default::default() }).unwrap();
        let rest = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (rest_url, rpc_url) =
            (format!("http://{}", rest.local_addr().unwrap()), format!("http://{}", rpc.local_addr().unwrap()));
        let earlier = LeaderInfo { id: "earlier".into(), rest_url: rest_url.clone(), rpc_url };
        let election = LeaderElection::new(storage, earlier.clone(), LeaseTiming::default());
        assert_eq!(election.acquire().await.epoch(), 1, "the earlier incarnation led");
        let standby = Standby::start(rest, rpc, election, LeaderInfo { id: "now".into(), ..earlier });
        let (status, body) = get(&format!("{rest_url}/readyz")).await;
        assert_eq!(status, 503, "{body}");
        let (status, body) = get(&format!("{rest_url}/jobs")).await;
        assert_eq!(status, 503, "answered, not forwarded to itself: {body}");
        assert!(body["errors"][0].as_str().unwrap_or_default().contains("knows no live leader"), "{body}");
        assert_eq!(get(&format!("{rest_url}/healthz")).await.0, 200);
        standby.stop().await;
    }
}
