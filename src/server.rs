//! The operator's HTTP endpoints: `/metrics` (OpenMetrics), `/healthz` (alive) and `/readyz`
//! (caches synced as leader, or a standby that knows it is one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

use crate::decide::leadership::{self, Role};

const LEADER: u8 = 1;
const STANDBY: u8 = 2;

/// What `/readyz` reports: this replica's role and whether its caches are listed, as they
/// change; what that means is `decide::leadership::readiness`.
#[derive(Default)]
pub struct Readiness {
    leadership: AtomicU8,
    synced: AtomicBool,
}

impl Readiness {
    pub fn leader(&self) {
        self.leadership.store(LEADER, Ordering::Release);
    }
    pub fn standby(&self) {
        self.leadership.store(STANDBY, Ordering::Release);
    }
    /// Every cache (each scope's, and the ApiProviders') holds a full list.
    pub fn caches_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    /// `Ok(detail)` when ready.
    pub fn ready(&self) -> Result<&'static str, &'static str> {
        let role = match self.leadership.load(Ordering::Acquire) {
            LEADER => Role::Leader,
            STANDBY => Role::Standby,
            _ => Role::Unknown,
        };
        leadership::readiness(role, self.synced.load(Ordering::Acquire))
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Readiness>,
}

pub fn router(metrics: Arc<Metrics>, health: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}

async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.ready() {
        Ok(m) => (StatusCode::OK, m),
        Err(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_synced_caches_or_a_known_standby() {
        let h = Readiness::default();
        assert!(h.ready().is_err());
        h.standby();
        assert_eq!(h.ready(), Ok("standby: listing; another replica holds the lease"));
        h.leader();
        assert!(h.ready().is_err());
        h.caches_synced();
        assert!(h.ready().is_ok());
        h.standby();
        assert_eq!(h.ready(), Ok("standby: caches synced; another replica holds the lease"));
    }
}
