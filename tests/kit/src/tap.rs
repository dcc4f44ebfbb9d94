//! A tower layer on the operator's own client: counts its requests by (verb, resource), injects
//! faults, and remembers every 403. Client-side, so it counts exactly the operator's calls on
//! either backend (the real API server's `/metrics` would mix in the tests' own requests).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use tower::buffer::Buffer;
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::apiserver::request_key;
use crate::requests::RequestBook;

pub type TapBody = UnsyncBoxBody<Bytes, BoxError>;

#[derive(Default)]
struct State {
    requests: RequestBook,
    forbidden: Vec<String>,
    /// Requests held this long before they are sent, by (verb, resource).
    slow: BTreeMap<(String, String), std::time::Duration>,
}

/// Shared between the test and the operator's client.
#[derive(Clone, Default)]
pub struct Tap {
    state: Arc<Mutex<State>>,
}

impl Tap {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The operator's requests so far, by (verb, plural[/subresource]).
    pub fn requests(&self) -> BTreeMap<(String, String), u64> {
        self.lock().requests.counts().clone()
    }

    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.lock().requests.count(verb, resource)
    }

    /// Writes (create, update, patch, apply, delete) outside `events` and the leader lease.
    pub fn writes(&self) -> u64 {
        self.lock()
            .requests
            .counts()
            .iter()
            .filter(|((verb, res), _)| {
                matches!(verb.as_str(), "apply" | "patch" | "update" | "create" | "delete")
                    && res != "events"
                    && res != "leases"
            })
            .map(|(_, n)| n)
            .sum()
    }

    pub fn reset(&self) {
        self.lock().requests.clear();
    }

    /// The operator's next request with this verb on this resource fails with `code` (the API
    /// server is not reached).
    pub fn fail_next(&self, verb: &str, resource: &str, code: u16) {
        self.lock().requests.fail_next(verb, resource, code);
    }

    /// The operator's requests with this verb on this resource are sent `by` late from now on,
    /// as a busy API server answers a large list late.
    pub fn slow(&self, verb: &str, resource: &str, by: std::time::Duration) {
        self.lock().slow.insert((verb.into(), resource.into()), by);
    }

    /// Requests the API server refused with 403, as "verb resource".
    pub fn forbidden(&self) -> Vec<String> {
        self.lock().forbidden.clone()
    }

    pub fn layer(&self) -> TapLayer {
        TapLayer { tap: self.clone() }
    }
}

fn key_of<B>(req: &Request<B>) -> (String, String) {
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (verb, resource) = request_key(req.method(), req.uri(), content_type);
    (verb.to_owned(), resource)
}

pub struct TapLayer {
    tap: Tap,
}

impl<S, B> Layer<S> for TapLayer
where
    S: Service<Request<kube::client::Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Service = TapService<S::Future, B>;

    fn layer(&self, inner: S) -> Self::Service {
        TapService {
            inner: Buffer::new(inner, 1024),
            tap: self.tap.clone(),
            _body: std::marker::PhantomData,
        }
    }
}

pub struct TapService<F, B> {
    inner: Buffer<Request<kube::client::Body>, F>,
    tap: Tap,
    _body: std::marker::PhantomData<fn() -> B>,
}

impl<F: Send + 'static, B> Clone for TapService<F, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            tap: self.tap.clone(),
            _body: std::marker::PhantomData,
        }
    }
}

impl<F, B, E> Service<Request<kube::client::Body>> for TapService<F, B>
where
    F: std::future::Future<Output = Result<Response<B>, E>> + Send + 'static,
    E: Into<BoxError> + Send + Sync,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<TapBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        // The buffer is polled in `call` (oneshot on a clone), so a fault answered here never
        // holds a slot of it.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let key = key_of(&req);
        let fault = self.tap.lock().requests.record(&key.0, &key.1);
        if let Some(code) = fault {
            let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "fault injected by the test tap", "reason": "InternalError", "code": code});
            let resp = Response::builder()
                .status(code)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(
                    Full::new(Bytes::from(body.to_string()))
                        .map_err(|e| match e {})
                        .boxed_unsync(),
                )
                .map_err(BoxError::from);
            return Box::pin(async move { resp });
        }
        let inner = self.inner.clone();
        let tap = self.tap.clone();
        let late = self.tap.lock().slow.get(&key).copied();
        Box::pin(async move {
            if let Some(late) = late {
                tokio::time::sleep(late).await;
            }
            let resp = inner.oneshot(req).await?;
            if resp.status() == http::StatusCode::FORBIDDEN {
                tap.lock().forbidden.push(format!("{} {}", key.0, key.1));
            }
            Ok(resp.map(|b| b.map_err(Into::into).boxed_unsync()))
        })
    }
}
