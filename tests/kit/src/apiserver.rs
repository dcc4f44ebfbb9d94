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
            "tenantapicredentials" | "deployments" | "statefulsets" | "daemonsets"
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

    async fn handle_parts(&self, parts: http::request::Parts, bytes: Bytes) -> Response<Body> {
        let path = parts.uri.path().to_owned();
        let query: HashMap<String, String> = parts
            .uri
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let meta_only = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let Some(route) = parse_path(&path) else {
            return respond(404, &status_json(&err(404, "NotFound", format!("no route for {path}"))));
        };
        let (verb, resource) = request_key(&parts.method, &parts.uri, &content_type);
        if let Some(code) = self.lock().requests.record(verb, &resource) {
            return respond(code, &status_json(&err(code, "InternalError", "injected fault")));
        }
        if verb == "watch" {
            return self.watch(route, &query, meta_only);
        }
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes).or_else(|_| serde_yaml::from_slice(&bytes)) {
                Ok(v) => v,
                Err(e) => {
                    return respond(400, &status_json(&err(400, "BadRequest", format!("body: {e}"))));
                }
            }
        };
        let manager = query.get("fieldManager").cloned().unwrap_or_else(|| "unknown".into());
        let force = query.get("force").is_some_and(|f| f == "true");
        let result = match verb {
            "get" => self.get_one(&route),
            "list" => self.list_coll(&route, &query),
            "create" => {
                let mut st = self.lock();
                let ns = route.ns.clone().unwrap_or_default();
                self.create_locked(&mut st, &route.coll, &ns, body, &manager)
            }
            "update" => self.put(&route, body, &manager),
            "apply" => self.apply(&route, body, &manager, force),
            "patch" => self.patch(&route, body, &content_type, &manager),
            "delete" => self.delete_one(&route),
            _ => Err(err(405, "MethodNotAllowed", "unsupported")),
        };
        match result {
            Ok(v) if meta_only => respond(200, &to_meta(&v)),
            Ok(v) => respond(200, &v),
            Err(e) => respond(e.code, &status_json(&e)),
        }
    }

    fn key(route: &Route) -> Result<Key, ApiError> {
        let name = route
            .name
            .clone()
            .ok_or_else(|| err(405, "MethodNotAllowed", "needs a name"))?;
        Ok((route.coll.clone(), route.ns.clone().unwrap_or_default(), name))
    }

    fn get_one(&self, route: &Route) -> Result<Value, ApiError> {
        let key = Self::key(route)?;
        self.lock().objects.get(&key).cloned().ok_or_else(|| not_found(&key))
    }

    fn list_coll(&self, route: &Route, q: &HashMap<String, String>) -> Result<Value, ApiError> {
        let st = self.lock();
        let labels = q.get("labelSelector").map(|s| parse_selector(s)).unwrap_or_default();
        let fields = q.get("fieldSelector").map(|s| parse_selector(s)).unwrap_or_default();
        let limit: usize = q
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let (list_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(c) => {
                let (rv, k) = c
                    .split_once(':')
                    .ok_or_else(|| err(400, "BadRequest", "bad continue"))?;
                (rv.parse::<u64>().unwrap_or(st.rv), Some(k.to_owned()))
            }
            None => (st.rv, None),
        };
        let mut items = Vec::new();
        let mut next = None;
        for ((c, ns, name), obj) in &st.objects {
            if *c != route.coll || route.ns.as_ref().is_some_and(|n| n != ns) {
                continue;
            }
            let id = format!("{ns}/{name}");
            if after.as_ref().is_some_and(|a| id.as_str() <= a.as_str()) {
                continue;
            }
            if !matches(&labels, obj["metadata"]["labels"].as_object()) || !field_matches(&fields, obj) {
                continue;
            }
            if items.len() == limit {
                next = Some(format!("{list_rv}:{}", items_last_id(&items)));
                break;
            }
            items.push(obj.clone());
        }
        let kind = format!("{}List", kind_of(&route.coll));
        let mut meta = json!({"resourceVersion": list_rv.to_string()});
        if let Some(n) = next {
            meta["continue"] = n.into();
        }
        Ok(json!({"apiVersion": api_version(&route.coll), "kind": kind, "metadata": meta, "items": items}))
    }

    fn create_locked(
        &self,
        st: &mut State,
        coll: &Coll,
        ns: &str,
        obj: Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        self.create_owned(st, coll, ns, obj, manager, None)
    }

    /// Creates; `applied` is the field set of a server-side apply (else the creator owns every field).
    fn create_owned(
        &self,
        st: &mut State,
        coll: &Coll,
        ns: &str,
        mut obj: Value,
        manager: &str,
        applied: Option<BTreeSet<Vec<String>>>,
    ) -> Result<Value, ApiError> {
        if !obj["metadata"]["name"].is_string() {
            let prefix = obj["metadata"]["generateName"]
                .as_str()
                .ok_or_else(|| err(422, "Invalid", "name or generateName required"))?;
            obj["metadata"]["name"] = format!("{prefix}{:05x}", st.uid + 1).into();
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let key = (coll.clone(), ns.to_owned(), name);
        if st.objects.contains_key(&key) {
            return Err(err(
                409,
                "AlreadyExists",
                format!("{} {:?} already exists", coll.plural, key.2),
            ));
        }
        st.uid += 1;
        let meta = obj["metadata"]
            .as_object_mut()
            .ok_or_else(|| err(422, "Invalid", "metadata"))?;
        meta.insert("uid".into(), format!("uid-{:06}", st.uid).into());
        if !ns.is_empty() {
            meta.insert("namespace".into(), ns.into());
        }
        meta.insert("creationTimestamp".into(), now_rfc3339().into());
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        if coll.has_generation() {
            meta.insert("generation".into(), 1.into());
        }
        obj["apiVersion"] = api_version(coll).into();
        obj["kind"] = kind_of(coll).into();
        normalize(coll, &mut obj);
        validate(coll, &obj)?;
        let mut owners = Owners::new();
        let entry = match applied {
            Some(paths) => ("Apply".to_owned(), paths),
            None => (
                "Update".to_owned(),
                leaf_paths(&obj, &[]).into_iter().filter(|p| user_path(p)).collect(),
            ),
        };
        owners.insert(manager.into(), entry);
        st.owners.insert(key.clone(), owners);
        Ok(self.store(st, key, None, obj))
    }

    /// Writes `new` as the next version of `key` (after the checks), or keeps `old` when nothing
    /// changed: no resourceVersion bump, no event.
    fn update_locked(
        &self,
        st: &mut State,
        key: &Key,
        old: Value,
        mut new: Value,
        sub: Option<&str>,
        manager: &str,
    ) -> Result<Value, ApiError> {
        if let Some(rv) = new["metadata"]["resourceVersion"].as_str()
            && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or_default()
        {
            return Err(err(
                409,
                "Conflict",
                format!(
                    "the object has been modified; please apply your changes to the latest version ({rv} is stale)"
                ),
            ));
        }
        let coll = &key.0;
        if sub == Some("status") {
            let status = new.get("status").cloned();
            new = old.clone();
            match status {
                Some(s) if !s.is_null() => new["status"] = s,
                _ => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        } else if coll.has_status_subresource() {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        // The server owns these metadata fields.
        for f in [
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "deletionTimestamp",
            "generation",
        ] {
            match old["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        new["apiVersion"] = api_version(coll).into();
        new["kind"] = kind_of(coll).into();
        normalize(coll, &mut new);
        validate(coll, &new)?;
        if coll.has_generation() && spec_of(&old) != spec_of(&new) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = (g + 1).into();
        }
        // Non-apply writers take ownership of what they changed.
        let changed: BTreeSet<Vec<String>> = {
            let before: BTreeMap<_, _> = leaf_values(&old);
            leaf_values(&new)
                .into_iter()
                .filter(|(p, v)| before.get(p) != Some(v) && user_path(p))
                .map(|(p, _)| p)
                .collect()
        };
        if !changed.is_empty() && manager != "-" {
            let owners = st.owners.entry(key.clone()).or_default();
            for (_, (_, set)) in owners.iter_mut() {
                set.retain(|p| !changed.contains(p));
            }
            owners
                .entry(manager.into())
                .or_insert_with(|| ("Update".into(), BTreeSet::new()))
                .1
                .extend(changed);
        }
        Ok(self.commit(st, key, old, new))
    }

    fn commit(&self, st: &mut State, key: &Key, old: Value, mut new: Value) -> Value {
        render_managed_fields(st.owners.get(key), &mut new, &key.0);
        if comparable(&old) == comparable(&new) {
            return old;
        }
        let finalizing = new["metadata"]["deletionTimestamp"].is_string()
            && new["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty());
        let stored = self.store(st, key.clone(), Some(old), new);
        if finalizing {
            let _ = self.delete_locked(st, key);
        }
        stored
    }

    fn store(&self, st: &mut State, key: Key, old: Option<Value>, mut new: Value) -> Value {
        st.rv += 1;
        new["metadata"]["resourceVersion"] = st.rv.to_string().into();
        if old.is_none() {
            render_managed_fields(st.owners.get(&key), &mut new, &key.0);
        }
        let change = Change {
            rv: st.rv,
            coll: key.0.clone(),
            ns: key.1.clone(),
            type_: if old.is_some() { "MODIFIED" } else { "ADDED" },
            old,
            new: new.clone(),
        };
        st.objects.insert(key, new.clone());
        self.record(st, change);
        new
    }

    fn record(&self, st: &mut State, change: Change) {
        st.history.push(change.clone());
        if st.history.len() > 400_000 {
            st.history.drain(..100_000);
        }
        let _ = self.tx.send(change);
    }

    fn put(&self, route: &Route, body: Value, manager: &str) -> Result<Value, ApiError> {
        let key = Self::key(route)?;
        let mut st = self.lock();
        let old = st.objects.get(&key).cloned().ok_or_else(|| not_found(&key))?;
        self.update_locked(&mut st, &key, old, body, route.sub.as_deref(), manager)
    }

    fn patch(&self, route: &Route, patch: Value, content_type: &str, manager: &str) -> Result<Value, ApiError> {
        let key = Self::key(route)?;
        let mut st = self.lock();
        let old = st.objects.get(&key).cloned().ok_or_else(|| not_found(&key))?;
        let mut new = old.clone();
        if content_type.contains("json-patch") {
            let ops: Vec<Value> =
                serde_json::from_value(patch.clone()).map_err(|e| err(400, "BadRequest", e.to_string()))?;
            // Like the real server, `test` of a missing path against null succeeds.
            let ops: Vec<Value> = ops
                .into_iter()
                .filter(|op| {
                    !(op["op"] == "test"
                        && op["value"].is_null()
                        && new.pointer(op["path"].as_str().unwrap_or("")).is_none())
                })
                .collect();
            let p: json_patch::Patch =
                serde_json::from_value(Value::Array(ops)).map_err(|e| err(400, "BadRequest", e.to_string()))?;
            json_patch::patch(&mut new, &p).map_err(|e| err(422, "Invalid", format!("json patch: {e}")))?;
        } else {
            json_patch::merge(&mut new, &patch);
        }
        // A resourceVersion in a patch is a precondition.
        if patch["metadata"]["resourceVersion"].is_null() {
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        }
        self.update_locked(&mut st, &key, old, new, route.sub.as_deref(), manager)
    }

    fn apply(&self, route: &Route, applied: Value, manager: &str, force: bool) -> Result<Value, ApiError> {
        let key = Self::key(route)?;
        let sub = route.sub.as_deref();
        let mut st = self.lock();
        let in_scope = |p: &Vec<String>| match sub {
            Some("status") => p.first().is_some_and(|f| f == "status"),
            _ => user_path(p) && (!key.0.has_status_subresource() || p.first().is_none_or(|f| f != "status")),
        };
        let mut applied = applied;
        normalize(&key.0, &mut applied);
        let applied_leaves: BTreeMap<Vec<String>, Value> =
            leaf_values(&applied).into_iter().filter(|(p, _)| in_scope(p)).collect();
        let Some(old) = st.objects.get(&key).cloned() else {
            if sub.is_some() {
                return Err(not_found(&key));
            }
            let mut obj = applied.clone();
            obj["metadata"]["name"] = key.2.clone().into();
            let paths = applied_leaves.keys().cloned().collect();
            return self.create_owned(&mut st, &key.0, &key.1, obj, manager, Some(paths));
        };
        let current = leaf_values(&old);
        let owners = st.owners.get(&key).cloned().unwrap_or_default();
        let mut conflicts = Vec::new();
        for (m, (_, set)) in &owners {
            if m == manager {
                continue;
            }
            for p in set.iter().filter(|p| applied_leaves.contains_key(*p)) {
                if current.get(p) != applied_leaves.get(p) {
                    conflicts.push(format!("{} (owned by {m})", p.join(".")));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(err(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflicts: {}",
                    conflicts.len(),
                    conflicts.join(", ")
                ),
            ));
        }
        let mine: BTreeSet<Vec<String>> = owners.get(manager).map(|(_, s)| s.clone()).unwrap_or_default();
        let others: BTreeSet<Vec<String>> = owners
            .iter()
            .filter(|(m, _)| *m != manager)
            .flat_map(|(_, (_, s))| s.clone())
            .collect();
        let mut new = old.clone();
        for p in mine
            .iter()
            .filter(|p| in_scope(p) && !applied_leaves.contains_key(*p) && !others.contains(*p))
        {
            remove_path(&mut new, p);
        }
        for (p, v) in &applied_leaves {
            set_path(&mut new, p, v.clone());
        }
        let mut owners = owners;
        for (m, (_, set)) in owners.iter_mut() {
            if m != manager && force {
                set.retain(|p| !applied_leaves.contains_key(p));
            }
        }
        let keep: BTreeSet<Vec<String>> = mine.into_iter().filter(|p| !in_scope(p)).collect();
        owners.insert(
            manager.into(),
            (
                "Apply".into(),
                keep.into_iter().chain(applied_leaves.keys().cloned()).collect(),
            ),
        );
        owners.retain(|_, (_, s)| !s.is_empty());
        st.owners.insert(key.clone(), owners);
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        // Ownership was settled above; update_locked must not re-assign it.
        self.update_locked(&mut st, &key, old, new, sub, "-")
    }

    fn delete_one(&self, route: &Route) -> Result<Value, ApiError> {
        let key = Self::key(route)?;
        let mut st = self.lock();
        let old = st.objects.get(&key).cloned().ok_or_else(|| not_found(&key))?;
        let has_finalizers = old["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old["metadata"]["deletionTimestamp"].is_string() {
                return Ok(old);
            }
            let mut new = old.clone();
            new["metadata"]["deletionTimestamp"] = now_rfc3339().into();
            if key.0.has_generation() {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                new["metadata"]["generation"] = (g + 1).into();
            }
            return Ok(self.commit(&mut st, &key, old, new));
        }
        self.delete_locked(&mut st, &key).ok_or_else(|| not_found(&key))
    }

    /// Removes the object and, as the garbage collector would, everything it owns.
    fn delete_locked(&self, st: &mut State, key: &Key) -> Option<Value> {
        let obj = st.objects.remove(key)?;
        st.owners.remove(key);
        st.rv += 1;
        let mut gone = obj.clone();
        gone["metadata"]["resourceVersion"] = st.rv.to_string().into();
        let change = Change {
            rv: st.rv,
            coll: key.0.clone(),
            ns: key.1.clone(),
            type_: "DELETED",
            old: Some(obj.clone()),
            new: gone.clone(),
        };
        self.record(st, change);
        let uid = obj["metadata"]["uid"].clone();
        let dependents: Vec<Key> = st
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for d in dependents {
            let _ = self.delete_locked(st, &d);
        }
        Some(gone)
    }

    fn watch(&self, route: Route, q: &HashMap<String, String>, meta_only: bool) -> Response<Body> {
        let labels = q.get("labelSelector").map(|s| parse_selector(s)).unwrap_or_default();
        let fields = q.get("fieldSelector").map(|s| parse_selector(s)).unwrap_or_default();
        let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(290);
        let from: u64 = q.get("resourceVersion").and_then(|r| r.parse().ok()).unwrap_or(0);
        let (backlog, mut rx, current_rv, expired, lag) = {
            let st = self.lock();
            let lag = st.watch_lag.get(&route.coll.plural).copied();
            let rx = self.tx.subscribe();
            let oldest = st.history.first().map_or(st.rv + 1, |c| c.rv);
            let expired = from != 0 && from + 1 < oldest;
            let backlog: Vec<Change> = st.history.iter().filter(|c| c.rv > from).cloned().collect();
            (backlog, rx, st.rv, expired, lag)
        };
        let (tx, out) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(1024);
        let filter = WatchFilter {
            coll: route.coll.clone(),
            ns: route.ns.clone(),
            labels,
            fields,
            meta_only,
        };
        tokio::spawn(async move {
            let line = |v: Value| Ok(http_body::Frame::data(Bytes::from(format!("{v}\n"))));
            if expired {
                let e =
                    json!({"type": "ERROR", "object": status_json(&err(410, "Expired", "too old resource version"))});
                let _ = tx.send(line(e)).await;
                return;
            }
            let mut last = from.max(if from == 0 { current_rv } else { 0 });
            for c in backlog {
                last = c.rv;
                if let Some(ev) = filter.event(&c)
                    && tx.send(line(ev)).await.is_err()
                {
                    return;
                }
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                let tick = tokio::time::sleep(Duration::from_millis(500));
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = tick => {
                        if bookmarks {
                            let bm = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version(&filter.coll), "kind": kind_of(&filter.coll), "metadata": {"resourceVersion": last.to_string()}}});
                            if tx.send(line(bm)).await.is_err() { return; }
                        }
                    }
                    msg = rx.recv() => match msg {
                        Ok(c) if c.rv > last => {
                            last = c.rv;
                            if let Some(lag) = lag {
                                tokio::time::sleep(lag).await;
                            }
                            if let Some(ev) = filter.event(&c)
                                && tx.send(line(ev)).await.is_err()
                            {
                                return;
                            }
                        }
                        Ok(_) => {}
                        // Lagged or closed: end the watch; the client re-lists, as with a real server.
                        Err(_) => return,
                    }
                }
            }
        });
        let stream = tokio_stream_from(out);
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
            .unwrap_or_else(|_| Response::new(empty()))
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

struct WatchFilter {
    coll: Coll,
    ns: Option<String>,
    labels: Vec<Req>,
    fields: Vec<Req>,
    meta_only: bool,
}

impl WatchFilter {
    fn selects(&self, obj: &Value) -> bool {
        matches(&self.labels, obj["metadata"]["labels"].as_object()) && field_matches(&self.fields, obj)
    }

    fn event(&self, c: &Change) -> Option<Value> {
        if c.coll != self.coll || self.ns.as_ref().is_some_and(|n| *n != c.ns) {
            return None;
        }
        let now = self.selects(&c.new);
        let before = c.old.as_ref().is_some_and(|o| self.selects(o));
        let type_ = match (c.type_, before, now) {
            ("DELETED", true, _) => "DELETED",
            ("DELETED", false, _) => return None,
            ("ADDED", _, true) => "ADDED",
            ("MODIFIED", true, true) => "MODIFIED",
            ("MODIFIED", false, true) => "ADDED",
            ("MODIFIED", true, false) => "DELETED",
            _ => return None,
        };
        let obj = if self.meta_only { to_meta(&c.new) } else { c.new.clone() };
        Some(json!({"type": type_, "object": obj}))
    }
}

pub(crate) struct Route {
    pub(crate) coll: Coll,
    pub(crate) ns: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) sub: Option<String>,
}

/// A request as the API server counts it in `apiserver_request_total`: the operator's own
/// naming (`tenantcred::client::verb_and_resource`, RBAC's verbs), with server-side apply
/// patches told apart as `apply`.
pub(crate) fn request_key(method: &http::Method, uri: &http::Uri, content_type: &str) -> (&'static str, String) {
    match tenantcred::client::verb_and_resource(method, uri) {
        ("patch", resource) if content_type.contains("apply-patch") => ("apply", resource),
        key => key,
    }
}

pub(crate) fn parse_path(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let coll = Coll {
        group: group.into(),
        version: version.into(),
        plural: (*rest.first()?).into(),
    };
    Some(Route {
        coll,
        ns,
        name: rest.get(1).map(|s| (*s).to_owned()),
        sub: rest.get(2).map(|s| (*s).to_owned()),
    })
}

fn coll_of(obj: &Value) -> (Coll, String) {
    let av = obj["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = av.split_once('/').unwrap_or(("", av));
    let kind = obj["kind"].as_str().unwrap_or_default();
    let plural = match kind {
        "TenantApiCredential" => "tenantapicredentials".to_owned(),
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

fn items_last_id(items: &[Value]) -> String {
    items
        .last()
        .map(|o| {
            format!(
                "{}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .unwrap_or_default()
}

/// Secrets: `stringData` is folded into `data` (base64), as the real server does.
fn normalize(coll: &Coll, obj: &mut Value) {
    if coll.plural == "secrets"
        && let Some(sd) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
        && let Some(sd) = sd.as_object()
    {
        for (k, v) in sd {
            obj["data"][k] = b64(v.as_str().unwrap_or_default().as_bytes()).into();
        }
    }
}

/// What the real API server refuses as invalid (422) for the kinds the operator writes: label
/// values that are not label values, and Secrets over 1 MiB of data.
fn validate(coll: &Coll, obj: &Value) -> Result<(), ApiError> {
    let label_ok = |v: &str| {
        v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
            && v.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
    };
    for (key, value) in obj["metadata"]["labels"].as_object().into_iter().flatten() {
        let v = value.as_str().unwrap_or_default();
        if !label_ok(v) {
            return Err(err(
                422,
                "Invalid",
                format!(
                    "{} {:?} is invalid: metadata.labels: Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (label {key})",
                    kind_of(coll),
                    obj["metadata"]["name"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
    if coll.plural == "secrets" {
        let size: usize = obj["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| k.len() + unb64(v.as_str().unwrap_or_default()).len())
            .sum();
        if size > 1024 * 1024 {
            return Err(err(
                422,
                "Invalid",
                format!(
                    "Secret {:?} is invalid: data: Too long: must have at most 1048576 bytes",
                    obj["metadata"]["name"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
    Ok(())
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

fn spec_of(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

fn comparable(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    o
}

/// Paths a client may own (server-set metadata excluded).
fn user_path(p: &[String]) -> bool {
    match p {
        [first, ..] if first == "apiVersion" || first == "kind" => false,
        [m, f, ..] if m == "metadata" => {
            matches!(f.as_str(), "labels" | "annotations" | "ownerReferences" | "finalizers")
        }
        [m] if m == "metadata" => false,
        _ => true,
    }
}

fn leaf_paths(v: &Value, prefix: &[String]) -> Vec<Vec<String>> {
    leaf_values_at(v, prefix).into_iter().map(|(p, _)| p).collect()
}

fn leaf_values(v: &Value) -> BTreeMap<Vec<String>, Value> {
    leaf_values_at(v, &[]).into_iter().collect()
}

fn leaf_values_at(v: &Value, prefix: &[String]) -> Vec<(Vec<String>, Value)> {
    match v {
        Value::Object(m) if !m.is_empty() => m
            .iter()
            .filter(|(_, v)| !v.is_null())
            .flat_map(|(k, v)| {
                let mut p = prefix.to_vec();
                p.push(k.clone());
                leaf_values_at(v, &p)
            })
            .collect(),
        _ if prefix.is_empty() => Vec::new(),
        other => vec![(prefix.to_vec(), other.clone())],
    }
}

fn set_path(obj: &mut Value, p: &[String], v: Value) {
    let mut cur = obj;
    for k in &p[..p.len() - 1] {
        if !cur[k.as_str()].is_object() {
            cur[k.as_str()] = json!({});
        }
        cur = &mut cur[k.as_str()];
    }
    cur[p[p.len() - 1].as_str()] = v;
}

fn remove_path(obj: &mut Value, p: &[String]) {
    fn go(cur: &mut Value, p: &[String]) {
        let Some(m) = cur.as_object_mut() else { return };
        if p.len() == 1 {
            m.remove(&p[0]);
            return;
        }
        if let Some(child) = m.get_mut(&p[0]) {
            go(child, &p[1..]);
            if child.as_object().is_some_and(|c| c.is_empty()) {
                m.remove(&p[0]);
            }
        }
    }
    go(obj, p);
}

fn render_managed_fields(owners: Option<&Owners>, obj: &mut Value, coll: &Coll) {
    let entries: Vec<Value> = owners
        .into_iter()
        .flatten()
        .filter(|(_, (_, s))| !s.is_empty())
        .map(|(m, (op, set))| {
            let mut tree = json!({});
            for p in set {
                let fp: Vec<String> = p.iter().map(|k| format!("f:{k}")).collect();
                set_path(&mut tree, &fp, json!({}));
            }
            let status_only = set.iter().all(|p| p.first().is_some_and(|f| f == "status"));
            let mut e = json!({"manager": m, "operation": op, "apiVersion": api_version(coll), "fieldsType": "FieldsV1", "fieldsV1": tree});
            if status_only && coll.has_status_subresource() {
                e["subresource"] = "status".into();
            }
            e
        })
        .collect();
    if entries.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = Value::Array(entries);
    }
}

fn to_meta(v: &Value) -> Value {
    if v["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
        let items: Vec<Value> = v["items"].as_array().into_iter().flatten().map(to_meta).collect();
        return json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": v["metadata"], "items": items});
    }
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": v["metadata"]})
}

#[derive(Clone, Debug, Default)]
struct Req {
    key: String,
    op: &'static str,
    values: Vec<String>,
}

fn parse_selector(s: &str) -> Vec<Req> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    let mut parts = Vec::new();
    for ch in s.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    parts.push(cur);
    for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let req = if let Some((k, v)) = p.split_once("!=") {
            Req {
                key: k.trim().into(),
                op: "!=",
                values: vec![v.trim().into()],
            }
        } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
            Req {
                key: k.trim().into(),
                op: "=",
                values: vec![v.trim().into()],
            }
        } else if let Some((k, v)) = p.split_once(" notin ") {
            Req {
                key: k.trim().into(),
                op: "notin",
                values: set_values(v),
            }
        } else if let Some((k, v)) = p.split_once(" in ") {
            Req {
                key: k.trim().into(),
                op: "in",
                values: set_values(v),
            }
        } else if let Some(k) = p.strip_prefix('!') {
            Req {
                key: k.trim().into(),
                op: "!exists",
                values: vec![],
            }
        } else {
            Req {
                key: p.into(),
                op: "exists",
                values: vec![],
            }
        };
        out.push(req);
    }
    out
}

fn set_values(v: &str) -> Vec<String> {
    v.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect()
}

fn matches(reqs: &[Req], labels: Option<&serde_json::Map<String, Value>>) -> bool {
    reqs.iter().all(|r| {
        let v = labels.and_then(|l| l.get(&r.key)).and_then(|v| v.as_str());
        match r.op {
            "=" => v == Some(r.values[0].as_str()),
            "!=" => v != Some(r.values[0].as_str()),
            "in" => v.is_some_and(|v| r.values.iter().any(|x| x == v)),
            "notin" => v.is_none_or(|v| !r.values.iter().any(|x| x == v)),
            "exists" => v.is_some(),
            "!exists" => v.is_none(),
            _ => false,
        }
    })
}

fn field_matches(reqs: &[Req], obj: &Value) -> bool {
    reqs.iter().all(|r| {
        let path = format!("/{}", r.key.replace('.', "/"));
        let v = obj.pointer(&path).and_then(|v| v.as_str());
        match r.op {
            "=" => v == Some(r.values[0].as_str()),
            "!=" => v != Some(r.values[0].as_str()),
            _ => true,
        }
    })
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
