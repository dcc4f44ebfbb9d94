//! The operator's Kubernetes client: the current kubeconfig context or the in-cluster config,
//! with a client-side request rate (`--kube-qps`, `--kube-burst`). kube-rs itself has none: the
//! limit keeps one operator from monopolising an API server shared with the whole cluster, and
//! its defaults sit above what a small control plane takes anyway (see BENCHMARKS.md), so they
//! never throttle below that floor.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use http::Request;
use tokio::time::Instant;
use tower::buffer::Buffer;
use tower::util::MapRequestLayer;
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::metrics::Metrics;

pub const DEFAULT_QPS: f64 = 1000.0;
pub const DEFAULT_BURST: u32 = 2000;

/// Builds the client; `qps <= 0` turns the limit off. Every request is counted in `metrics`.
pub async fn build(qps: f64, burst: u32, metrics: Arc<Metrics>) -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer().await?;
    let builder = kube::client::ClientBuilder::try_from(config)?.with_layer(&counted(metrics));
    if qps <= 0.0 {
        return Ok(builder.build());
    }
    Ok(builder.with_layer(&RateLimitLayer::new(qps, burst)).build())
}

/// Counts each request by verb and resource (`tenantcred_kube_api_requests_total`).
pub fn counted(
    metrics: Arc<Metrics>,
) -> MapRequestLayer<impl Fn(Request<kube::client::Body>) -> Request<kube::client::Body> + Clone> {
    MapRequestLayer::new(move |req: Request<kube::client::Body>| {
        let (verb, resource) = verb_and_resource(req.method(), req.uri());
        metrics.api_request(verb, resource);
        req
    })
}

/// `GET /api/v1/namespaces/a/secrets/b` is (get, secrets); `PATCH .../tenantapicredentials/x/status`
/// is (patch, tenantapicredentials/status); a GET with `watch=true` is a watch.
pub fn verb_and_resource(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let resource = match rest {
        [r, _, sub, ..] => format!("{r}/{sub}"),
        [r, ..] => (*r).to_owned(),
        [] => "other".to_owned(),
    };
    let named = rest.len() != 1;
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PATCH => "patch",
        http::Method::PUT => "update",
        http::Method::DELETE => "delete",
        _ => "other",
    };
    (verb, resource)
}

/// A token bucket: `burst` requests at once, refilled at `qps` per second.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Clone)]
pub struct RateLimitLayer {
    bucket: Arc<Mutex<Bucket>>,
    qps: f64,
    burst: f64,
}

impl RateLimitLayer {
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            bucket: Arc::new(Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
            })),
            qps: qps.max(f64::MIN_POSITIVE),
            burst,
        }
    }

    /// Takes a token, or says how long until one is there (it is then reserved).
    fn take(&self) -> Duration {
        let mut b = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.qps;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.qps)
        }
    }

    /// Waits for the right to send one request.
    pub async fn acquire(&self) {
        let wait = self.take();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

impl<S> Layer<S> for RateLimitLayer
where
    S: Service<Request<kube::client::Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
{
    type Service = RateLimited<S::Future>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner: Buffer::new(inner, 1024),
            limit: self.clone(),
        }
    }
}

pub struct RateLimited<F> {
    inner: Buffer<Request<kube::client::Body>, F>,
    limit: RateLimitLayer,
}

impl<F: Send + 'static> Clone for RateLimited<F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limit: self.limit.clone(),
        }
    }
}

impl<F, R, E> Service<Request<kube::client::Body>> for RateLimited<F>
where
    F: std::future::Future<Output = Result<R, E>> + Send + 'static,
    E: Into<BoxError> + Send + Sync,
    R: Send + 'static,
{
    type Response = R;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<R, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        // The buffer is polled in `call` (oneshot on a clone), after the wait.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let inner = self.inner.clone();
        let limit = self.limit.clone();
        Box::pin(async move {
            limit.acquire().await;
            inner.oneshot(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_as_rbac_names_them() {
        let cases = [
            ("GET", "/api/v1/namespaces/a/secrets/b", ("get", "secrets")),
            (
                "GET",
                "/api/v1/secrets?watch=true&resourceVersion=1",
                ("watch", "secrets"),
            ),
            ("GET", "/api/v1/namespaces/a/secrets", ("list", "secrets")),
            ("POST", "/api/v1/namespaces/a/secrets", ("create", "secrets")),
            (
                "PATCH",
                "/apis/tenantcred.dev/v1alpha1/namespaces/a/tenantapicredentials/x/status?fieldManager=f",
                ("patch", "tenantapicredentials/status"),
            ),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/a/events",
                ("create", "events"),
            ),
            (
                "PATCH",
                "/apis/coordination.k8s.io/v1/namespaces/s/leases/l",
                ("patch", "leases"),
            ),
            ("GET", "/version", ("get", "other")),
        ];
        for (method, uri, (verb, resource)) in cases {
            let m: http::Method = method.parse().expect("method");
            let u: http::Uri = uri.parse().expect("uri");
            let got = verb_and_resource(&m, &u);
            assert_eq!((got.0, got.1.as_str()), (verb, resource), "{method} {uri}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate() {
        let limit = RateLimitLayer::new(10.0, 5);
        let start = Instant::now();
        for _ in 0..5 {
            limit.acquire().await;
        }
        assert_eq!(Instant::now(), start, "the burst goes at once");
        for _ in 0..10 {
            limit.acquire().await;
        }
        let waited = Instant::now() - start;
        assert!(
            (Duration::from_millis(990)..=Duration::from_millis(1010)).contains(&waited),
            "then 10 per second: {waited:?}"
        );
    }
}
