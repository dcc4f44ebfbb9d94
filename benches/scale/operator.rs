//! The operator process as the real-server benchmark watches it: its ports and signals, what its
//! /readyz and /metrics say, a failover timed from the outside, and credentials made by hand.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use tenantcred::crd::TenantApiCredential;
use tenantcred_testkit::Provider;

use crate::percentile;

pub(crate) fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

pub(crate) fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

pub(crate) async fn readyz_says(http: &reqwest::Client, port: u16, prefix: &str) -> bool {
    match http.get(format!("http://127.0.0.1:{port}/readyz")).send().await {
        Ok(r) => r.text().await.is_ok_and(|t| t.starts_with(prefix)),
        Err(_) => false,
    }
}

/// What an operator counts as its own writes to the API server (leader election excluded).
pub(crate) async fn operator_writes(http: &reqwest::Client, port: u16) -> u64 {
    metrics_text(http, port)
        .await
        .lines()
        .filter(|l| l.starts_with("tenantcred_kube_api_requests_total{"))
        .filter(|l| {
            ["\"create\"", "\"patch\"", "\"update\"", "\"delete\""]
                .iter()
                .any(|v| l.contains(v))
        })
        .filter(|l| !l.contains("leases"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// An operator's `/metrics` (empty when it does not answer).
pub(crate) async fn metrics_text(http: &reqwest::Client, port: u16) -> String {
    match http.get(format!("http://127.0.0.1:{port}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Reconciles an operator has run (`tenantcred_reconcile_total`).
pub(crate) async fn reconciles(http: &reqwest::Client, port: u16) -> u64 {
    metrics_text(http, port)
        .await
        .lines()
        .find(|l| l.starts_with("tenantcred_reconcile_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Times a failover that has just begun: until `port`'s operator leads, until a credential
/// created now by hand is Ready, and until the new leader has reconciled all `credentials` once
/// (its backlog done).
pub(crate) async fn failover(
    client: &kube::Client,
    http: &reqwest::Client,
    port: u16,
    (ns, name): (&str, &str),
    provider: &Provider,
    ready_rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    credentials: usize,
) -> String {
    let began = Instant::now();
    let reconciled_before = reconciles(http, port).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let tacs: Api<TenantApiCredential> = Api::namespaced(client.clone(), ns);
    let made = async {
        let secret: Secret = serde_json::from_value(json!({"metadata": {"name": format!("{name}-input")},
            "type": "Opaque", "stringData": {"token": "failover-token"}}))
        .map_err(kube::Error::SerdeError)?;
        secrets.create(&PostParams::default(), &secret).await?;
        let tac: TenantApiCredential = serde_json::from_value(json!({"apiVersion": "tenantcred.dev/v1alpha1",
            "kind": "TenantApiCredential", "metadata": {"name": name},
            "spec": {"tenant": "by-hand", "provider": "generic", "baseUrl": provider.base_url,
                     "probe": {"path": "/probe"}, "credentialRef": {"name": format!("{name}-input")}}}))
        .map_err(kube::Error::SerdeError)?;
        tacs.create(&PostParams::default(), &tac).await.map(|_| ())
    };
    if let Err(e) = made.await {
        return format!("could not create {ns}/{name}: {e}");
    }
    let mut leads = None;
    let mut ready = None;
    let mut caught_up = None;
    let key = format!("{ns}/{name}");
    while began.elapsed() < Duration::from_secs(600) && (leads.is_none() || ready.is_none() || caught_up.is_none()) {
        if leads.is_none() && readyz_says(http, port, "leader").await {
            leads = Some(began.elapsed().as_secs_f64());
        }
        if leads.is_some()
            && caught_up.is_none()
            && reconciles(http, port).await.saturating_sub(reconciled_before) >= credentials as u64
        {
            caught_up = Some(began.elapsed().as_secs_f64());
        }
        while let Ok((k, at)) = ready_rx.try_recv() {
            if k == key {
                ready = Some(at.duration_since(began).as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let show = |v: Option<f64>| v.map_or("not within 600 s".into(), |s| format!("{s:.1}s"));
    format!(
        "the standby led after {}, a credential made by hand at the failure was Ready after {}, every credential ({credentials}) reconciled once after {}",
        show(leads),
        show(ready),
        show(caught_up)
    )
}

/// Credentials a person creates by hand during a run, one every `spacing` after `delay`, each
/// timed from its creation to Ready (as the benchmark's watch sees it).
pub(crate) struct ByHand {
    created: std::sync::Arc<std::sync::Mutex<BTreeMap<String, Instant>>>,
    ready: std::sync::Mutex<BTreeMap<String, f64>>,
    total: usize,
    /// Creations the API server refused (they will never be Ready).
    failures: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl ByHand {
    pub(crate) fn start(
        client: kube::Client,
        namespaces: Vec<String>,
        prefix: &'static str,
        base_url: String,
        delay: Duration,
        spacing: Duration,
    ) -> Self {
        let created: std::sync::Arc<std::sync::Mutex<BTreeMap<String, Instant>>> = Default::default();
        let total = namespaces.len();
        let record = created.clone();
        let failed: std::sync::Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let failures = failed.clone();
        let task = tokio::spawn(async move {
            let began = Instant::now();
            for (k, ns) in namespaces.into_iter().enumerate() {
                tokio::time::sleep_until((began + delay + spacing * k as u32).into()).await;
                let name = format!("{prefix}-{k}");
                let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
                let tacs: Api<TenantApiCredential> = Api::namespaced(client.clone(), &ns);
                let key = format!("{ns}/{name}");
                let made = async {
                    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": format!("{name}-input")},
                        "type": "Opaque", "stringData": {"token": format!("{name}-token")}}))
                    .map_err(kube::Error::SerdeError)?;
                    // Timed from the first request, and recorded before the credential exists
                    // (its Ready cannot come first).
                    record
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key.clone(), Instant::now());
                    secrets.create(&PostParams::default(), &secret).await?;
                    let tac: TenantApiCredential =
                        serde_json::from_value(json!({"apiVersion": "tenantcred.dev/v1alpha1",
                        "kind": "TenantApiCredential", "metadata": {"name": name},
                        "spec": {"tenant": "by-hand", "provider": "generic", "baseUrl": base_url,
                                 "probe": {"path": "/probe"}, "credentialRef": {"name": format!("{name}-input")}}}))
                        .map_err(kube::Error::SerdeError)?;
                    tacs.create(&PostParams::default(), &tac).await.map(|_| ())
                };
                if let Err(e) = made.await {
                    eprintln!("could not create {key} by hand: {e}");
                    record.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        Self {
            created,
            ready: Default::default(),
            total,
            failures,
            _task: task,
        }
    }

    /// Takes a Ready report; true when it is one of these credentials.
    pub(crate) fn saw_ready(&self, key: &str, at: Instant) -> bool {
        let created = self.created.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied();
        match created {
            Some(made) => {
                self.ready
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key.to_owned())
                    .or_insert_with(|| at.saturating_duration_since(made).as_secs_f64());
                true
            }
            // Not (yet) recorded as created: one of ours by its name all the same.
            None => key.contains("/hand-"),
        }
    }

    pub(crate) fn all_ready(&self) -> bool {
        let failed = self.failures.load(std::sync::atomic::Ordering::Relaxed);
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).len() + failed >= self.total
    }

    pub(crate) fn summary(&self) -> String {
        let mut secs: Vec<f64> = self
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .copied()
            .collect();
        secs.sort_by(f64::total_cmp);
        let each: Vec<String> = secs.iter().map(|s| format!("{s:.2}")).collect();
        format!(
            "{} of {} Ready; creation to Ready p50 {:.2}s, p99 {:.2}s, max {:.2}s (each, sorted: {})",
            secs.len(),
            self.total,
            percentile(&secs, 0.5),
            percentile(&secs, 0.99),
            secs.last().copied().unwrap_or(f64::NAN),
            each.join(" ")
        )
    }
}
