//! The test kit: one scenario source, two backends.
//!
//! A [`Harness`] runs the real controller against either the in-memory API server double
//! ([`Backend::Double`], always; fast) or a real kube-apiserver ([`Backend::Real`], when one can
//! be started: see [`envtest`]), with a provider server on 127.0.0.1. The tests talk to either
//! through the same async calls; [`scenarios!`] writes each scenario once and runs it on both.
//!
//! On the real server the operator authenticates as the Helm chart's ServiceAccount ([`chart`]),
//! with leader election, and any 403 it meets fails the test.

pub mod apiserver;
pub mod build;
pub mod chart;
pub mod echo;
pub mod envtest;
pub mod fixtures;
pub mod provider;
mod requests;
pub mod tap;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use tenantcred::controller::{self, Config, LeaseConfig, Shared};
use tower::Layer;

pub use apiserver::ApiServer;
pub use build::{Credential, Seen, credential, holds, secret_key};
pub use provider::{Account, Answer, Provider, Shape};
pub use tap::Tap;
pub use tenantcred::crd::DeletionPolicy;
pub use tenantcred::crd::WorkloadKind;
pub use tenantcred::decide::conditions::{Reason, Status, Type};

/// Serves `app` on a free port of 127.0.0.1 until the test ends.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The in-memory API server double.
    Double,
    /// A real kube-apiserver with etcd.
    Real,
}

/// Runs each scenario, an `async fn NAME(h: Harness)` written once, on both backends: as the
/// tests `NAME::double` and `NAME::real`. On the real backend, when no control plane is
/// available, the test says SKIPPED with the reason on stderr and returns.
#[macro_export]
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn double() {
                    $crate::run(super::$name, $crate::Backend::Double, module_path!()).await
                }

                #[tokio::test]
                async fn real() {
                    $crate::run(super::$name, $crate::Backend::Real, module_path!()).await
                }
            }
        )*
    };
}

/// Starts a harness on `backend` and runs `scenario` with it (see [`scenarios!`]).
pub async fn run<F, Fut>(scenario: F, backend: Backend, test: &str)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Some(h) = Harness::start(backend, test).await {
        scenario(h).await;
    }
}

static NAMESPACES: AtomicUsize = AtomicUsize::new(0);

/// The harness's `--restart-debounce`.
pub const RESTART_DEBOUNCE: Duration = Duration::from_secs(2);

/// The real controller between an API server (double or real) and a provider on 127.0.0.1.
pub struct Harness {
    pub backend: Backend,
    /// The namespace the harness acts in: this test's own, or another tenant's
    /// ([`Harness::add_tenants`], [`Harness::act_in`]). The operator watches only these.
    pub ns: String,
    /// Namespaces of other tenants the operator watches too.
    tenants: Vec<String>,
    /// The tests' own client: set-up and observation (admin on the real server).
    pub client: kube::Client,
    /// The double itself, on [`Backend::Double`].
    pub double: Option<ApiServer>,
    pub provider: Provider,
    pub metrics: Arc<tenantcred::metrics::Metrics>,
    /// Counts, and can fail, the operator's own requests.
    pub tap: Tap,
    operator_config: Option<kube::Config>,
    /// The operator's egress rules ([`local_egress`] unless a scenario changes them).
    egress: tenantcred::decide::egress::Egress,
    /// Changes a scenario makes to the operator's configuration (`restart_controller_tuned`).
    tune: fn(&mut Config),
    task: tokio::task::JoinHandle<()>,
    _stop: tokio::sync::watch::Sender<bool>,
    test: String,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
        record_verbs(self.backend, &self.tap);
        let forbidden = self.tap.forbidden();
        if forbidden.is_empty() {
            return;
        }
        let msg = format!(
            "{}: the API server refused the operator (403): {forbidden:?}",
            self.test
        );
        if std::thread::panicking() {
            // Already failing: say why it may have, where the failure is read.
            let _ = writeln!(std::io::stderr(), "{msg}");
        } else {
            panic!("{msg}");
        }
    }
}

impl Harness {
    /// Starts the controller on `backend` in a fresh namespace; `None` (after saying SKIPPED on
    /// stderr) when the real backend is not available.
    pub async fn start(backend: Backend, test: &str) -> Option<Self> {
        tenantcred::outbound::install_crypto_provider();
        let ns = format!("t{}", NAMESPACES.fetch_add(1, Ordering::Relaxed));
        let (client, double, operator_config) = match backend {
            Backend::Double => {
                let api = ApiServer::new();
                (api.client(), Some(api), None)
            }
            Backend::Real => {
                let plane = match envtest::control_plane() {
                    Ok(p) => p,
                    Err(why) => {
                        envtest::skipped(test, &why);
                        return None;
                    }
                };
                let operator = match chart::operator_config(plane).await {
                    Ok(c) => c,
                    Err(why) => {
                        envtest::skipped(test, &why);
                        return None;
                    }
                };
                let client = chart::admin(plane).await.expect("admin client of the control plane");
                chart::ensure_namespace(&client, &ns).await.expect("test namespace");
                (client, None, Some(operator))
            }
        };
        let provider = Provider::start().await;
        let metrics = Arc::new(tenantcred::metrics::Metrics::new());
        let tap = Tap::default();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let mut h = Self {
            backend,
            ns,
            tenants: Vec::new(),
            client,
            double,
            provider,
            metrics,
            tap,
            operator_config,
            egress: local_egress(),
            tune: |_| {},
            task: tokio::spawn(async {}),
            _stop: stop_tx,
            test: test.to_owned(),
        };
        let health = Arc::new(tenantcred::server::Readiness::default());
        h.task = h.spawn_operator(stop, health.clone());
        // As a Deployment waits for /readyz: the lease held and every cache listed, so a
        // scenario's time limits start when the operator can act.
        eventually(60, "the operator ready (leader, caches synced)", async || {
            health.ready().is_ok_and(|m| m.starts_with("leader"))
        })
        .await;
        Some(h)
    }

    /// Builds an operator client through `tap` where it is called: for a replica on a runtime of
    /// its own (a client's workers run on the runtime that builds it).
    pub fn client_factory(
        &self,
        tap: Tap,
        metrics: Arc<tenantcred::metrics::Metrics>,
    ) -> impl FnOnce() -> kube::Client + Send + 'static {
        use tenantcred::client::counted;
        let (double, config, ns) = (self.double.clone(), self.operator_config.clone(), self.ns.clone());
        move || match (double, config) {
            (Some(api), _) => kube::Client::new(tap.layer().layer(counted(metrics).layer(api.service())), ns),
            (None, Some(config)) => kube::client::ClientBuilder::try_from(config)
                .expect("operator client")
                .with_layer(&counted(metrics))
                .with_layer(&tap.layer())
                .build(),
            (None, None) => unreachable!("a harness has a backend"),
        }
    }

    /// The operator's client: through the tap, as the chart's ServiceAccount on the real server.
    pub fn operator_client(&self) -> kube::Client {
        use tenantcred::client::counted;
        match (&self.double, &self.operator_config) {
            (Some(api), _) => kube::Client::new(
                self.tap
                    .layer()
                    .layer(counted(self.metrics.clone()).layer(api.service())),
                self.ns.clone(),
            ),
            (None, Some(config)) => kube::client::ClientBuilder::try_from(config.clone())
                .expect("operator client")
                .with_layer(&counted(self.metrics.clone()))
                .with_layer(&self.tap.layer())
                .build(),
            (None, None) => unreachable!("a harness has a backend"),
        }
    }

    fn spawn_operator(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
        health: Arc<tenantcred::server::Readiness>,
    ) -> tokio::task::JoinHandle<()> {
        let client = self.operator_client();
        let mut config = Config {
            namespaces: std::iter::once(self.ns.clone())
                .chain(self.tenants.iter().cloned())
                .collect(),
            egress: self.egress.clone(),
            instance: self.ns.clone(),
            // Short, so a gathered restart is seen within a test.
            restart_debounce: RESTART_DEBOUNCE,
            lists: list_mode(),
            ..Config::default()
        };
        (self.tune)(&mut config);
        // As the chart runs it: with leader election (a lease of this test's own).
        let lease = (self.backend == Backend::Real).then(|| LeaseConfig {
            name: format!("tenantcred-{}", self.ns),
            namespace: chart::RELEASE_NAMESPACE.into(),
            identity: self.ns.clone(),
            duration_seconds: 15,
            grace_seconds: 5,
        });
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let shared = Shared::new(&config, metrics, health).expect("shared");
            if let Err(e) = controller::run(client, config, shared, lease, stop).await {
                panic!("the operator stopped: {e:#}");
            }
        })
    }

    /// Stops the controller (as a crash would) and starts a fresh one on the same API server.
    pub fn restart_controller(&mut self) {
        self.task.abort();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        self._stop = stop_tx;
        self.task = self.spawn_operator(stop, Default::default());
    }

    /// Restarts the controller with other egress rules (as an owner changing `allowedHosts`).
    pub fn restart_controller_with(&mut self, egress: tenantcred::decide::egress::Egress) {
        self.egress = egress;
        self.restart_controller();
    }

    /// Restarts the controller with `tune` applied to its configuration (as an owner changing
    /// flags).
    pub fn restart_controller_tuned(&mut self, tune: fn(&mut Config)) {
        self.tune = tune;
        self.restart_controller();
    }

    /// Namespaces for other tenants (`{ns}-{name}`), watched by a restarted operator; waits until
    /// it leads with every cache listed. Call before [`Harness::act_in`] moves away from the
    /// test's own namespace.
    pub async fn add_tenants(&mut self, names: &[&str]) -> Vec<String> {
        let added: Vec<String> = names.iter().map(|n| format!("{}-{n}", self.ns)).collect();
        if self.backend == Backend::Real {
            for ns in &added {
                chart::ensure_namespace(&self.client, ns)
                    .await
                    .expect("tenant namespace");
            }
        }
        self.tenants.extend(added.iter().cloned());
        self.task.abort();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        self._stop = stop_tx;
        let health = Arc::new(tenantcred::server::Readiness::default());
        self.task = self.spawn_operator(stop, health.clone());
        eventually(60, "the operator ready for every tenant", async || {
            health.ready().is_ok_and(|m| m.starts_with("leader"))
        })
        .await;
        added
    }

    /// Acts in `ns` from now on (creating, reading, editing): as that namespace's tenant would.
    pub fn act_in(&mut self, ns: &str) {
        self.ns = ns.to_owned();
    }

    /// Stops the controller, for scenarios that run operators of their own.
    pub fn stop_controller(&mut self) {
        self.task.abort();
    }

    /// Whether deleting an owner deletes what it owns (always on the double; on the real
    /// server only with kube-controller-manager's garbage collector).
    pub fn garbage_collects(&self) -> bool {
        match self.backend {
            Backend::Double => true,
            Backend::Real => envtest::control_plane().is_ok_and(|p| p.garbage_collector),
        }
    }

    /// Says the rest of this scenario does not apply to this backend.
    pub fn skip(&self, why: &str) {
        envtest::skipped(&format!("{} (on {:?})", self.test, self.backend), why);
    }

    fn api(&self, plural: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &resource(plural))
    }

    pub async fn get(&self, plural: &str, name: &str) -> Option<Value> {
        self.get_in(plural, &self.ns, name).await
    }

    pub async fn get_in(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &resource(plural));
        match api.get_opt(name).await {
            Ok(o) => o.map(|o| serde_json::to_value(o).expect("json")),
            Err(e) => panic!("get {plural} {ns}/{name}: {e}"),
        }
    }

    pub async fn list(&self, plural: &str) -> Vec<Value> {
        self.api(plural)
            .list(&Default::default())
            .await
            .unwrap_or_else(|e| panic!("list {plural}: {e}"))
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).expect("json"))
            .collect()
    }

    /// Creates an object in this test's namespace, as another client would.
    pub async fn create(&self, mut obj: Value) -> Value {
        obj["metadata"]["namespace"] = json!(self.ns);
        let plural = plural_of(obj["kind"].as_str().unwrap_or_default());
        let dynamic: DynamicObject = serde_json::from_value(obj).expect("object");
        let created = self
            .api(plural)
            .create(&PostParams::default(), &dynamic)
            .await
            .unwrap_or_else(|e| panic!("create {plural}: {e}"));
        serde_json::to_value(created).expect("json")
    }

    /// Applies an object server-side in this test's namespace, as `kubectl apply --server-side`.
    pub async fn apply(&self, mut obj: Value) -> Result<Value, String> {
        obj["metadata"]["namespace"] = json!(self.ns);
        let plural = plural_of(obj["kind"].as_str().unwrap_or_default());
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        self.api(plural)
            .patch(
                &name,
                &kube::api::PatchParams::apply("kubectl").force(),
                &kube::api::Patch::Apply(&obj),
            )
            .await
            .map(|o| serde_json::to_value(o).expect("json"))
            .map_err(|e| format!("apply {plural} {name}: {e}"))
    }

    /// Reads, edits and replaces an object (again on a conflict with a concurrent writer).
    pub async fn edit(&self, plural: &str, name: &str, f: impl Fn(&mut Value)) -> Value {
        for _ in 0..20 {
            let mut obj = self
                .get(plural, name)
                .await
                .unwrap_or_else(|| panic!("edit of a missing {plural} {name}"));
            f(&mut obj);
            let dynamic: DynamicObject = serde_json::from_value(obj).expect("object");
            match self.api(plural).replace(name, &PostParams::default(), &dynamic).await {
                Ok(o) => return serde_json::to_value(o).expect("json"),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => panic!("replace {plural} {name}: {e}"),
            }
        }
        panic!("replace {plural} {name}: conflicts kept coming");
    }

    /// Merge-patches a credential's status, as another writer of the status subresource would.
    pub async fn patch_status(&self, name: &str, status: Value) {
        self.api("tenantapicredentials")
            .patch_status(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap_or_else(|e| panic!("patch the status of {name}: {e}"));
    }

    /// A cluster-scoped collection (`apiproviders`).
    fn cluster_api(&self, plural: &str) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &resource(plural))
    }

    /// Applies a cluster-scoped object server-side, as `kubectl apply --server-side` would.
    pub async fn apply_cluster(&self, plural: &str, obj: &Value) {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        self.cluster_api(plural)
            .patch(
                &name,
                &kube::api::PatchParams::apply("kubectl").force(),
                &kube::api::Patch::Apply(obj),
            )
            .await
            .unwrap_or_else(|e| panic!("apply {plural} {name}: {e}"));
    }

    pub async fn get_cluster(&self, plural: &str, name: &str) -> Value {
        match self.cluster_api(plural).get_opt(name).await {
            Ok(o) => o.map_or(Value::Null, |o| serde_json::to_value(o).expect("json")),
            Err(e) => panic!("get {plural} {name}: {e}"),
        }
    }

    pub async fn delete_cluster(&self, plural: &str, name: &str) {
        match self.cluster_api(plural).delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => panic!("delete {plural} {name}: {e}"),
        }
    }

    pub async fn delete(&self, plural: &str, name: &str) {
        match self.api(plural).delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => panic!("delete {plural} {name}: {e}"),
        }
    }

    /// Creates or updates a source Secret holding `token` under the key `token`.
    pub async fn source_secret(&self, name: &str, token: &str) {
        self.secret(name, &[("token", token)]).await;
    }

    /// Creates or updates an Opaque Secret with these string values.
    pub async fn secret(&self, name: &str, values: &[(&str, &str)]) {
        let data: serde_json::Map<String, Value> = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(apiserver::b64(v.as_bytes()))))
            .collect();
        if self.get("secrets", name).await.is_some() {
            self.edit("secrets", name, |s| s["data"] = Value::Object(data.clone()))
                .await;
        } else {
            self.create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "type": "Opaque", "data": data}))
                .await;
        }
    }

    /// A credential of the local provider server (its base URL and probe path), to describe
    /// further with the builder's methods.
    pub fn local(&self, name: &str) -> Credential {
        build::credential(name)
            .base_url(&self.provider.base_url)
            .probe_path("/probe")
    }

    /// Creates a credential described by a builder; answers it as stored.
    pub async fn create_credential(&self, c: Credential) -> tenantcred::crd::TenantApiCredential {
        let stored = self.create(c.to_json()).await;
        serde_json::from_value(stored).expect("a stored credential reads as the type")
    }

    /// What the credential's status says, typed (empty while it has none).
    pub async fn seen(&self, name: &str) -> Seen {
        Seen::of(&self.tac(name).await)
    }

    /// A credential of a generic-style provider served by the local provider server.
    pub async fn credential(&self, name: &str, provider: &str, extra: Value) -> Value {
        let mut spec = json!({
            "tenant": "acme",
            "provider": provider,
            "baseUrl": self.provider.base_url,
            "probe": {"path": "/probe"},
            "credentialRef": {"name": format!("{name}-input")},
        });
        json_patch::merge(&mut spec, &extra);
        self.create(
            json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
            "metadata": {"name": name}, "spec": spec}),
        )
        .await
    }

    /// Creates the credential `c` with its source holding `token`, which the provider accepts;
    /// waits until it is Ready.
    pub async fn ready_credential(&self, c: Credential, token: &str) {
        let name = c.name().to_owned();
        self.provider.answer(token, Answer::Ok);
        self.source_secret(&format!("{name}-input"), token).await;
        self.create_credential(c).await;
        eventually(10, &format!("{name} Ready"), async || {
            self.seen(&name).await.ready_because(Reason::TokenValid)
        })
        .await;
    }

    /// The credential as stored, or `Null` when it does not exist.
    pub async fn tac(&self, name: &str) -> Value {
        self.get("tenantapicredentials", name).await.unwrap_or(Value::Null)
    }

    /// Edits a credential's spec through its type (what a person's `kubectl edit` changes).
    pub async fn edit_spec(&self, name: &str, f: impl Fn(&mut tenantcred::crd::TenantApiCredentialSpec)) {
        self.edit("tenantapicredentials", name, |o| {
            let mut spec = serde_json::from_value(o["spec"].clone()).expect("a stored spec reads as the type");
            f(&mut spec);
            o["spec"] = serde_json::to_value(spec).expect("a spec serializes");
        })
        .await;
    }

    /// Asks for a probe now, as `tenantcred probe-now` does: the request annotation, stamped `at`.
    pub async fn request_probe(&self, name: &str, at: &str) {
        self.edit("tenantapicredentials", name, |o| {
            o["metadata"]["annotations"][tenantcred::crd::PROBE_REQUESTED_ANNOTATION] = json!(at);
        })
        .await;
    }

    pub async fn edit_tac(&self, name: &str, f: impl Fn(&mut Value)) {
        self.edit("tenantapicredentials", name, f).await;
    }

    pub async fn delete_tac(&self, name: &str) {
        self.delete("tenantapicredentials", name).await;
    }

    /// (status, reason) of a condition.
    pub async fn condition(&self, name: &str, ty: &str) -> Option<(String, String)> {
        condition_of(&self.tac(name).await, ty)
    }

    /// Whether every one of these credentials is `Ready=True TokenValid`.
    pub async fn all_ready<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) -> bool {
        for name in names {
            if !self.seen(name.as_ref()).await.ready_because(Reason::TokenValid) {
                return false;
            }
        }
        true
    }

    pub async fn managed_token(&self, secret: &str) -> Option<String> {
        let s = self.get("secrets", secret).await?;
        String::from_utf8(apiserver::unb64(s["data"]["token"].as_str()?)).ok()
    }

    /// Waits until `n` events with this reason exist (the operator writes events after the
    /// status they explain), then checks there are no more than `n`.
    pub async fn expect_events(&self, reason: &str, n: usize) {
        eventually(10, &format!("{n} {reason} event(s)"), async || {
            self.events(reason).await >= n
        })
        .await;
        assert_eq!(self.events(reason).await, n, "{reason} events");
    }

    /// Events with this reason in the test's namespace.
    pub async fn events(&self, reason: &str) -> usize {
        self.list("events")
            .await
            .iter()
            .filter(|e| e["reason"] == reason)
            .count()
    }
}

/// With `TENANTCRED_RECORD_VERBS=FILE`, appends the operator's (verb, resource) pairs seen on
/// the real server to FILE: the record of which of the chart's grants the operator uses.
fn record_verbs(backend: Backend, tap: &Tap) {
    let Some(path) = std::env::var_os("TENANTCRED_RECORD_VERBS") else {
        return;
    };
    if backend != Backend::Real {
        return;
    }
    let lines: String = tap
        .requests()
        .keys()
        .map(|(verb, resource)| format!("{resource} {verb}\n"))
        .collect();
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(lines.as_bytes());
    }
}

/// (status, reason) of a condition of a stored credential.
pub fn condition_of(tac: &Value, ty: &str) -> Option<(String, String)> {
    tac["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

pub fn resource(plural: &str) -> ApiResource {
    let (group, version, kind) = match plural {
        "secrets" => ("", "v1", "Secret"),
        "namespaces" => ("", "v1", "Namespace"),
        "tenantapicredentials" => ("tenantcred.dev", "v1alpha1", "TenantApiCredential"),
        "apiproviders" => ("tenantcred.dev", "v1alpha1", "ApiProvider"),
        "events" => ("events.k8s.io", "v1", "Event"),
        "deployments" => ("apps", "v1", "Deployment"),
        "statefulsets" => ("apps", "v1", "StatefulSet"),
        "daemonsets" => ("apps", "v1", "DaemonSet"),
        "leases" => ("coordination.k8s.io", "v1", "Lease"),
        other => panic!("the kit knows no resource {other}"),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn plural_of(kind: &str) -> &'static str {
    match kind {
        "Secret" => "secrets",
        "TenantApiCredential" => "tenantapicredentials",
        "Event" => "events",
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "DaemonSet" => "daemonsets",
        "Lease" => "leases",
        other => panic!("the kit knows no kind {other}"),
    }
}

/// Polls until `f` holds, for at most `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Lets the controller run for a while (to show that nothing happens).
pub async fn settle(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

pub fn pair(s: &str, r: &str) -> Option<(String, String)> {
    Some((s.to_owned(), r.to_owned()))
}

/// How the test operators list: `TENANTCRED_LISTS=page|stream|auto` (default auto), so CI runs
/// the suites both ways.
pub fn list_mode() -> tenantcred::controller::ListMode {
    use tenantcred::controller::ListMode;
    match std::env::var("TENANTCRED_LISTS").as_deref() {
        Ok("page") => ListMode::Page,
        Ok("stream") => ListMode::Stream,
        _ => ListMode::Auto,
    }
}

/// The egress rules every test operator runs with: the test providers listen on plain http at
/// 127.0.0.1 on ports chosen when they start, which is neither public, nor https, nor 443, so all
/// three are allowed explicitly (as an owner would; `:*` is every port).
pub fn local_egress() -> tenantcred::decide::egress::Egress {
    let loopback = "127.0.0.1:*".parse().expect("a valid pattern");
    tenantcred::decide::egress::Egress::new(vec![loopback], true)
}
