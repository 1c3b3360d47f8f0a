//! A stand-in for a Kubernetes Service: a loopback address that forwards every connection to one
//! of the backends that are ready (their readiness URL answers 200), picked at random per
//! connection, as kube-proxy forwards to a Service's ready endpoints. With high availability
//! every jobmanager is ready and a standby forwards to the leader, so taskmanagers and the CLI
//! that use the Service's address reach the leader whichever replica they land on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// One endpoint behind the Service.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Its readiness probe (`http://host:port/readyz`): ready while it answers 200.
    pub ready: String,
    /// Where connections to the Service go (`host:port`).
    pub target: String,
}

/// A running Service; stops when dropped.
#[derive(Debug)]
pub struct Service {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Service {
    /// Listens on a free loopback port and forwards to the ready one of `backends` (probed every
    /// 100 ms); a connection that arrives while none is ready is closed.
    ///
    /// # Panics
    /// When the runtime or the listener cannot be created.
    pub fn start(backends: Vec<Backend>) -> Self {
        Self::start_at("127.0.0.1:0", backends, Duration::from_millis(100))
    }

    /// [`Self::start`] listening on `address` (`host:port`), probing every `period` (a
    /// readiness probe's `periodSeconds`).
    ///
    /// # Panics
    /// When the runtime or the listener cannot be created.
    pub fn start_at(address: &str, backends: Vec<Backend>, period: Duration) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("service runtime");
        let listener = runtime
            .block_on(TcpListener::bind(address))
            .unwrap_or_else(|e| panic!("cannot listen on {address} for a service: {e}"));
        let addr = listener.local_addr().expect("service address");
        let ready: Arc<Mutex<Vec<String>>> = Arc::default();
        runtime.spawn(probe(backends, Arc::clone(&ready), period));
        runtime.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = {
                    let ready = ready.lock().unwrap_or_else(PoisonError::into_inner);
                    // A random ready endpoint per connection, as kube-proxy picks one.
                    let pick = (uuid::Uuid::new_v4().as_u128() % ready.len().max(1) as u128) as usize;
                    ready.get(pick).cloned()
                };
                let Some(target) = target else { continue };
                tokio::spawn(async move {
                    if let Ok(mut backend) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                    }
                });
            }
        });
        Self { addr, _runtime: runtime }
    }

    /// The Service's URL, `http://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Keeps `ready` set to the targets of the backends whose readiness URL answers 200.
async fn probe(backends: Vec<Backend>, ready: Arc<Mutex<Vec<String>>>, period: Duration) {
    let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().expect("HTTP client");
    loop {
        let mut found = Vec::new();
        for backend in &backends {
            if client.get(&backend.ready).send().await.is_ok_and(|r| r.status().as_u16() == 200) {
                found.push(backend.target.clone());
            }
        }
        *ready.lock().unwrap_or_else(PoisonError::into_inner) = found;
        tokio::time::sleep(period).await;
    }
}
