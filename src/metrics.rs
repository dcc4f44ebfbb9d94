//! Prometheus metrics (OpenMetrics text). Labels name credentials and providers, never tokens or
//! fingerprints. A credential's series disappear with it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::conditions::{self, Type};
use crate::crd::{ProbeResult, TenantApiCredential, TenantApiCredentialStatus};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    pub namespace: String,
    pub name: String,
    pub tenant: String,
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub provider: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub verb: &'static str,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

/// Observes the reconcile duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    started: std::time::Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_duration
            .observe(self.started.elapsed().as_secs_f64());
    }
}

pub struct Metrics {
    registry: Registry,
    ready: Family<CredentialLabels, Gauge>,
    degraded: Family<CredentialLabels, Gauge>,
    expiry: Family<CredentialLabels, Gauge>,
    last_success: Family<CredentialLabels, Gauge>,
    last_probe: Family<CredentialLabels, Gauge>,
    rate_limit_remaining: Family<CredentialLabels, Gauge>,
    probes: Family<ProbeLabels, Counter>,
    probe_duration: Family<ProviderLabels, Histogram>,
    reconciles: Counter<u64, AtomicU64>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Histogram,
    api_requests: Family<ApiLabels, Counter>,
    /// The label set each credential's series carry now, to drop them when it goes or changes.
    known: Mutex<HashMap<(String, String), CredentialLabels>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tenantcred");
        let m = Self {
            ready: Family::default(),
            degraded: Family::default(),
            expiry: Family::default(),
            last_success: Family::default(),
            last_probe: Family::default(),
            rate_limit_remaining: Family::default(),
            probes: Family::default(),
            probe_duration: Family::new_with_constructor(|| {
                Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            }),
            reconciles: Counter::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Histogram::new([0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0]),
            api_requests: Family::default(),
            known: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "credential_ready",
            "1 when the credential is Ready=True",
            m.ready.clone(),
        );
        registry.register(
            "credential_degraded",
            "1 when the credential is Degraded=True",
            m.degraded.clone(),
        );
        registry.register(
            "credential_expiry_timestamp_seconds",
            "When the token expires (unix seconds), when known",
            m.expiry.clone(),
        );
        registry.register(
            "credential_last_successful_probe_timestamp_seconds",
            "When the provider last accepted the token (unix seconds)",
            m.last_success.clone(),
        );
        registry.register(
            "credential_last_probe_timestamp_seconds",
            "When the token was last probed (unix seconds), every probe (the status records them hourly)",
            m.last_probe.clone(),
        );
        registry.register(
            "provider_rate_limit_remaining",
            "Requests left in the key's rate-limit window, as the provider last reported",
            m.rate_limit_remaining.clone(),
        );
        registry.register("probe", "Probes sent, by provider and result", m.probes.clone());
        registry.register(
            "probe_duration_seconds",
            "How long probes took, by provider",
            m.probe_duration.clone(),
        );
        registry.register("reconcile", "Reconciles run", m.reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error kind",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles took, probes and API writes included, errors too",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "kube_api_requests",
            "Requests the operator sent to the Kubernetes API server, by verb and resource",
            m.api_requests.clone(),
        );
        Self { registry, ..m }
    }

    /// OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    /// Times a reconcile until the guard drops, on every exit path.
    pub fn time_reconcile(&self) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            started: std::time::Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, error: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { error: error.into() })
            .inc();
    }

    pub fn probed(&self, provider: &str, result: ProbeResult, took: Duration) {
        self.probes
            .get_or_create(&ProbeLabels {
                provider: provider.into(),
                result: result.as_str().into(),
            })
            .inc();
        self.probe_duration
            .get_or_create(&ProviderLabels {
                provider: provider.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// Sets a credential's series from its status.
    pub fn observe(&self, tac: &TenantApiCredential, status: &TenantApiCredentialStatus) {
        let labels = CredentialLabels {
            namespace: tac.metadata.namespace.clone().unwrap_or_default(),
            name: tac.metadata.name.clone().unwrap_or_default(),
            tenant: tac.spec.tenant.clone(),
            provider: tac.spec.provider.as_str().into(),
        };
        let key = (labels.namespace.clone(), labels.name.clone());
        let previous = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, labels.clone());
        if let Some(old) = previous.filter(|old| *old != labels) {
            self.remove(&old);
        }
        let flag = |t| i64::from(conditions::is_true(&status.conditions, t));
        self.ready.get_or_create(&labels).set(flag(Type::Ready));
        self.degraded.get_or_create(&labels).set(flag(Type::Degraded));
        match &status.expires_at {
            Some(t) => {
                self.expiry.get_or_create(&labels).set(t.0.as_second());
            }
            None => {
                self.expiry.remove(&labels);
            }
        }
        if let Some(t) = &status.last_probe_time {
            self.last_probe.get_or_create(&labels).set(t.0.as_second());
        }
        if let Some(t) = &status.last_successful_probe_time {
            self.last_success.get_or_create(&labels).set(t.0.as_second());
        }
        match status.rate_limit.as_ref().and_then(|r| r.remaining) {
            Some(r) => {
                self.rate_limit_remaining
                    .get_or_create(&labels)
                    .set(i64::try_from(r).unwrap_or(i64::MAX));
            }
            None => {
                self.rate_limit_remaining.remove(&labels);
            }
        }
    }

    /// One request to the Kubernetes API server.
    pub fn api_request(&self, verb: &'static str, resource: String) {
        self.api_requests.get_or_create(&ApiLabels { verb, resource }).inc();
    }

    /// Drops every series of a deleted credential.
    pub fn forget(&self, namespace: &str, name: &str) {
        let removed = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(namespace.to_owned(), name.to_owned()));
        if let Some(labels) = removed {
            self.remove(&labels);
        }
    }

    fn remove(&self, labels: &CredentialLabels) {
        self.ready.remove(labels);
        self.degraded.remove(labels);
        self.expiry.remove(labels);
        self.last_success.remove(labels);
        self.last_probe.remove(labels);
        self.rate_limit_remaining.remove(labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{Desired, Reason, Status, merge};
    use crate::crd::TenantApiCredentialSpec;

    fn tac(name: &str, tenant: &str) -> TenantApiCredential {
        let spec: TenantApiCredentialSpec = serde_json::from_value(serde_json::json!({
            "tenant": tenant, "provider": "raise", "credentialRef": {"name": "in"}
        }))
        .expect("spec");
        let mut t = TenantApiCredential::new(name, spec);
        t.metadata.namespace = Some("ns".into());
        t
    }

    fn ready_status() -> TenantApiCredentialStatus {
        let now = jiff::Timestamp::from_second(1_800_000_000).expect("valid");
        TenantApiCredentialStatus {
            conditions: merge(
                &[],
                &[Desired::new(Type::Ready, Status::True, Reason::TokenValid, "ok")],
                Some(1),
                now,
            ),
            expires_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
            last_successful_probe_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
            ..Default::default()
        }
    }

    #[test]
    fn credential_series_appear_change_and_disappear() {
        let m = Metrics::new();
        m.observe(&tac("a", "acme"), &ready_status());
        m.probed("raise", ProbeResult::Valid, Duration::from_millis(120));
        let text = m.render();
        assert!(
            text.contains(r#"tenantcred_credential_ready{namespace="ns",name="a",tenant="acme",provider="raise"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("tenantcred_credential_expiry_timestamp_seconds{"),
            "{text}"
        );
        assert!(
            text.contains(r#"tenantcred_probe_total{provider="raise",result="Valid"} 1"#),
            "{text}"
        );
        assert!(text.contains("tenantcred_probe_duration_seconds_bucket"), "{text}");
        m.observe(&tac("a", "renamed"), &ready_status());
        let text = m.render();
        assert!(!text.contains(r#"tenant="acme""#), "old label set dropped: {text}");
        m.forget("ns", "a");
        let text = m.render();
        assert!(
            !text.contains(r#"name="a""#),
            "deleted credential's series gone: {text}"
        );
    }
}
