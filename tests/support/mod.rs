//! Test harness: the API server double, a provider on 127.0.0.1, and the real controller between them.
#![allow(dead_code)]

pub mod apiserver;
pub mod provider;

use std::time::Duration;

use serde_json::{Value, json};
use tenantcred::controller::{self, Config};

pub use apiserver::ApiServer;
pub use provider::{Answer, Provider};

pub const NS: &str = "partner-prod";

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

pub struct Harness {
    pub api: ApiServer,
    pub provider: Provider,
    pub metrics: std::sync::Arc<tenantcred::metrics::Metrics>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(ApiServer::new()).await
    }

    pub async fn start_with(api: ApiServer) -> Self {
        let provider = Provider::start().await;
        let metrics = std::sync::Arc::new(tenantcred::metrics::Metrics::new());
        let task = spawn_controller(&api, metrics.clone());
        Self {
            api,
            provider,
            metrics,
            task,
        }
    }

    /// Stops the controller (as a crash would) and starts a fresh one on the same API server.
    pub fn restart_controller(&mut self) {
        self.task.abort();
        self.task = spawn_controller(&self.api, self.metrics.clone());
    }

    pub fn source_secret(&self, name: &str, token: &str) {
        let obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "type": "Opaque", "stringData": {"token": token}});
        if self.api.get("secrets", NS, name).is_some() {
            self.api.replace(obj);
        } else {
            self.api.create(obj);
        }
    }

    /// A credential of a generic-style provider served by the local provider server.
    pub fn credential(&self, name: &str, provider: &str, extra: Value) -> Value {
        let mut spec = json!({
            "tenant": "acme",
            "provider": provider,
            "baseUrl": self.provider.base_url,
            "probe": {"path": "/probe"},
            "credentialRef": {"name": format!("{name}-input")},
        });
        merge(&mut spec, extra);
        let obj = json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
            "metadata": {"name": name, "namespace": NS}, "spec": spec});
        self.api.create(obj)
    }

    pub fn tac(&self, name: &str) -> Value {
        self.api.get("tenantapicredentials", NS, name).unwrap_or(Value::Null)
    }

    pub fn condition(&self, name: &str, ty: &str) -> Option<(String, String)> {
        let tac = self.tac(name);
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

    pub fn managed_token(&self, secret: &str) -> Option<String> {
        let s = self.api.get("secrets", NS, secret)?;
        let b = apiserver::unb64(s["data"]["token"].as_str()?);
        String::from_utf8(b).ok()
    }

    pub fn edit_tac(&self, name: &str, f: impl FnOnce(&mut Value)) {
        let mut obj = self.tac(name);
        f(&mut obj);
        self.api.replace(obj);
    }

    pub fn events(&self, reason: &str) -> usize {
        self.api.list("events").iter().filter(|e| e["reason"] == reason).count()
    }
}

fn spawn_controller(
    api: &ApiServer,
    metrics: std::sync::Arc<tenantcred::metrics::Metrics>,
) -> tokio::task::JoinHandle<()> {
    let client = api.client();
    let config = Config {
        allow_insecure_http: true,
        ..Config::default()
    };
    tokio::spawn(async move {
        use futures::StreamExt;
        let shared = controller::Shared::new(&config, metrics, Default::default()).expect("shared");
        let (ctx, c) = controller::controller(client, config, shared, None);
        c.run(controller::reconcile, controller::error_policy, ctx)
            .for_each(|_| async {})
            .await;
    })
}

pub fn merge(base: &mut Value, extra: Value) {
    json_patch::merge(base, &extra);
}

/// Polls until `f` holds, for at most `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
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
