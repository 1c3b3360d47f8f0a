//! The taskmanager's HTTP endpoint (`http_addr`): `/healthz` (the process serves) and `/readyz`
//! (it is registered with a jobmanager and not shutting down), for Kubernetes probes, and
//! `/metrics` (Prometheus, see [`crate::metrics`]).

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the taskmanager can take work: shared by the registration loop, the shutdown and
/// the HTTP endpoint.
#[derive(Debug, Default, Clone)]
pub(crate) struct Readiness {
    registered: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
}

impl Readiness {
    /// The jobmanager accepted (`true`) or lost (`false`) the registration.
    pub(crate) fn set_registered(&self, registered: bool) {
        self.registered.store(registered, Ordering::Relaxed);
    }

    /// The taskmanager shuts down: never ready again.
    pub(crate) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn ready(&self) -> Result<(), &'static str> {
        if self.stopping.load(Ordering::Relaxed) {
            Err("the taskmanager is shutting down")
        } else if !self.registered.load(Ordering::Relaxed) {
            Err("the taskmanager is not registered with a jobmanager")
        } else {
            Ok(())
        }
    }
}

/// The routes of the endpoint.
pub(crate) fn router(readiness: Readiness, id: String, metrics: Arc<prometheus_client::registry::Registry>) -> Router {
    let scrape = move || {
        let metrics = Arc::clone(&metrics);
        async move {
            (
                [(axum::http::header::CONTENT_TYPE, weir_runtime::metrics::CONTENT_TYPE)],
                weir_runtime::metrics::encode(&metrics),
            )
        }
    };
    let ready = move || {
        let readiness = readiness.clone();
        let id = id.clone();
        async move {
            match readiness.ready() {
                Ok(()) => (StatusCode::OK, Json(json!({ "status": "ok", "taskmanager": id }))),
                Err(why) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": why, "taskmanager": id }))),
            }
        }
    };
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(ready)).route("/metrics", get(scrape))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_registered_and_not_stopping() {
        let readiness = Readiness::default();
        assert!(readiness.ready().unwrap_err().contains("not registered"));
        readiness.set_registered(true);
        assert_eq!(readiness.ready(), Ok(()));
        readiness.set_registered(false);
        assert!(readiness.ready().is_err());
        readiness.set_registered(true);
        readiness.set_stopping();
        assert!(readiness.ready().unwrap_err().contains("shutting down"));
    }
}
