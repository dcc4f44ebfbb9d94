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
pub mod oauth_server;
mod objects;
pub mod provider;
mod requests;
pub mod tap;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::api::ApiResource;
use kube::core::GroupVersionKind;
use serde_json::Value;
use tenantcred::controller::{self, Config, LeaseConfig, Shared};
use tower::Layer;

pub use apiserver::ApiServer;
pub use build::{Credential, Seen, credential, holds, secret_key};
pub use oauth_server::{ClientAuth, Fault, Flavor, OAuthServer};
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

/// (status, reason) of a condition of a stored ApiProvider (a credential's are read typed, through
/// [`Seen`]).
pub fn provider_condition(tac: &Value, ty: &str) -> Option<(String, String)> {
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
