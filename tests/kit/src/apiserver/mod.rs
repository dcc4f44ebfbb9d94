//! An in-memory Kubernetes API server, served to `kube::Client` as a tower service. It does what a
//! real API server does for the calls tenantcred makes: list (paged) and watch from a
//! resourceVersion with bookmarks, label and field selectors, get/create/replace/delete, merge,
//! JSON and server-side-apply patches with field ownership and 409 conflicts, the status
//! subresource and generation, deletionTimestamp with finalizers, owner-reference garbage
//! collection, Secret `stringData`, metadata-only (PartialObjectMetadata) requests. A write that
//! changes nothing bumps no resourceVersion and emits no watch event. Every request is counted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::requests::RequestBook;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// (group, version, plural)
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Coll {
    pub group: String,
    pub version: String,
    pub plural: String,
}

impl Coll {
    fn has_status_subresource(&self) -> bool {
        matches!(
            self.plural.as_str(),
            "tenantapicredentials" | "apiproviders" | "deployments" | "statefulsets" | "daemonsets"
        )
    }
    fn has_generation(&self) -> bool {
        self.has_status_subresource()
    }
}

type Key = (Coll, String, String); // collection, namespace, name

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    coll: Coll,
    ns: String,
    type_: &'static str,
    old: Option<Value>,
    new: Value,
}

/// Ownership of fields per manager: manager -> (operation, set of paths).
type Owners = BTreeMap<String, (String, BTreeSet<Vec<String>>)>;

#[derive(Default)]
struct State {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    owners: HashMap<Key, Owners>,
    history: Vec<Change>,
    requests: RequestBook,
    /// Watch events of these kinds reach watchers this much later (a lagging watch cache).
    watch_lag: HashMap<String, Duration>,
}

#[derive(Clone)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
    tx: broadcast::Sender<Change>,
}

impl Default for ApiServer {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
}

fn err(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        reason,
        message: message.into(),
    }
}

mod apply;
mod router;
mod selector;
mod store;
mod watch;

use apply::*;
pub(crate) use router::request_key;
use router::*;
use selector::*;
use store::*;
use watch::*;

impl ApiServer {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(200_000);
        Self {
            state: Arc::new(Mutex::new(State::default())),
            tx,
        }
    }

    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.service(), "default")
    }

    /// The double as a tower service, for a client with layers of its own (the tests' tap).
    pub fn service(
        &self,
    ) -> impl tower::Service<
        Request<kube::client::Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    > + Clone
    + Send
    + 'static {
        let server = self.clone();
        tower::service_fn(move |req: Request<kube::client::Body>| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.handle(req).await) }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests seen, by (verb, plural[/subresource]).
    pub fn requests(&self) -> BTreeMap<(String, String), u64> {
        self.lock().requests.counts().clone()
    }

    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.lock().requests.count(verb, resource)
    }

    pub fn reset_counts(&self) {
        self.lock().requests.clear();
    }

    /// The next request with this verb on this resource fails with `code`.
    pub fn fail_next(&self, verb: &str, resource: &str, code: u16) {
        self.lock().requests.fail_next(verb, resource, code);
    }

    /// Delivers watch events of `plural` late, as a busy API server's watch cache does: clients
    /// then act on objects older than their own last write.
    pub fn lag_watch(&self, plural: &str, lag: Duration) {
        self.lock().watch_lag.insert(plural.to_owned(), lag);
    }

    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let st = self.lock();
        st.objects
            .iter()
            .find(|((c, n, m), _)| c.plural == plural && n == ns && m == name)
            .map(|(_, v)| v.clone())
    }

    pub fn list(&self, plural: &str) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((c, _, _), _)| c.plural == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Visits every object of a kind without cloning it (for polling thousands).
    pub fn scan(&self, plural: &str, mut f: impl FnMut(&str, &str, &Value)) {
        let st = self.lock();
        for ((c, ns, name), obj) in &st.objects {
            if c.plural == plural {
                f(ns, name, obj);
            }
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Direct writes for test set-up, as another client would make them (manager `test`).
    pub fn create(&self, obj: Value) -> Value {
        let (coll, ns) = coll_of(&obj);
        let mut st = self.lock();
        self.create_locked(&mut st, &coll, &ns, obj, "test")
            .expect("create in test set-up")
    }

    pub fn replace(&self, obj: Value) -> Value {
        let (coll, ns) = coll_of(&obj);
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let mut st = self.lock();
        let key = (coll.clone(), ns.clone(), name);
        let old = st.objects.get(&key).cloned().expect("replace of a missing object");
        let mut new = obj;
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        self.update_locked(&mut st, &key, old, new, None, "test")
            .expect("replace in test set-up")
    }

    pub fn delete(&self, plural: &str, ns: &str, name: &str) {
        let mut st = self.lock();
        let key = st
            .objects
            .keys()
            .find(|(c, n, m)| c.plural == plural && n == ns && m == name)
            .cloned();
        if let Some(key) = key {
            let _ = self.delete_locked(&mut st, &key);
        }
    }

    async fn handle(&self, req: Request<kube::client::Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        self.handle_parts(parts, bytes).await
    }

    /// Serves the same API over plain HTTP on 127.0.0.1, for a `tenantcred run` in another
    /// process (the benchmark), with a kubeconfig pointing at the returned address.
    pub async fn serve_http(&self) -> std::net::SocketAddr {
        let server = self.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let server = server.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let resp = server.handle_parts(parts, bytes).await;
                resp.map(axum::body::Body::new)
            }
        });
        crate::serve(app).await
    }
}

fn coll_of(obj: &Value) -> (Coll, String) {
    let av = obj["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = av.split_once('/').unwrap_or(("", av));
    let kind = obj["kind"].as_str().unwrap_or_default();
    let plural = match kind {
        "TenantApiCredential" => "tenantapicredentials".to_owned(),
        "ApiProvider" => "apiproviders".to_owned(),
        k => format!("{}s", k.to_lowercase()),
    };
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
    (
        Coll {
            group: group.into(),
            version: version.into(),
            plural,
        },
        ns,
    )
}

fn api_version(c: &Coll) -> String {
    if c.group.is_empty() {
        c.version.clone()
    } else {
        format!("{}/{}", c.group, c.version)
    }
}

fn kind_of(c: &Coll) -> String {
    match c.plural.as_str() {
        "tenantapicredentials" => "TenantApiCredential".into(),
        "apiproviders" => "ApiProvider".into(),
        "statefulsets" => "StatefulSet".into(),
        "daemonsets" => "DaemonSet".into(),
        p => {
            let s = p.strip_suffix('s').unwrap_or(p);
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }
    }
}

pub fn b64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn unb64(input: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = input.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, c)| acc | (u32::from(val(*c)) << (18 - 6 * i)));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn not_found(key: &Key) -> ApiError {
    err(404, "NotFound", format!("{} {:?} not found", key.0.plural, key.2))
}

fn status_json(e: &ApiError) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": e.message, "reason": e.reason, "code": e.code, "metadata": {}})
}

fn empty() -> Body {
    BodyExt::boxed_unsync(Full::new(Bytes::new()))
}

fn respond(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(BodyExt::boxed_unsync(Full::new(Bytes::from(v.to_string()))))
        .unwrap_or_else(|_| Response::new(empty()))
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
