//! Prometheus metrics (OpenMetrics text). Labels name credentials and providers, never tokens or
//! fingerprints. A credential's series disappear with it.

mod credentials;

use credentials::{CredentialSeries, Series};

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::{ProbeResult, TenantApiCredential, TenantApiCredentialStatus};
use crate::decide::conditions::{self, Type};

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
    credentials: std::sync::Arc<CredentialSeries>,
    probes: Family<ProbeLabels, Counter>,
    probe_duration: Family<ProviderLabels, Histogram>,
    reconciles: Counter<u64, AtomicU64>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Histogram,
    api_requests: Family<ApiLabels, Counter>,
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
            credentials: std::sync::Arc::default(),
            probes: Family::default(),
            probe_duration: Family::new_with_constructor(|| {
                Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            }),
            reconciles: Counter::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Histogram::new([0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0]),
            api_requests: Family::default(),
            registry: Registry::default(),
        };
        registry.register_collector(Box::new(m.credentials.clone()));
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
        let seconds =
            |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| t.as_ref().map(|t| t.0.as_second());
        let series = Series {
            tenant: tac.spec.tenant.as_str().into(),
            provider: crate::decide::provider::builtin::static_name(tac.spec.provider.as_str()).map_or_else(
                || std::borrow::Cow::Owned(tac.spec.provider.as_str().to_owned()),
                std::borrow::Cow::Borrowed,
            ),
            ready: conditions::is_true(&status.conditions, Type::Ready),
            degraded: conditions::is_true(&status.conditions, Type::Degraded),
            expiry: seconds(&status.expires_at),
            last_success: seconds(&status.last_successful_probe_time),
            last_probe: seconds(&status.last_probe_time),
            rate_limit_remaining: status
                .rate_limit
                .as_ref()
                .and_then(|r| r.remaining)
                .map(|r| i64::try_from(r).unwrap_or(i64::MAX)),
        };
        self.credentials.set(
            tac.metadata.namespace.as_deref().unwrap_or_default(),
            tac.metadata.name.as_deref().unwrap_or_default(),
            series,
        );
    }

    /// One request to the Kubernetes API server.
    pub fn api_request(&self, verb: &'static str, resource: String) {
        self.api_requests.get_or_create(&ApiLabels { verb, resource }).inc();
    }

    /// A credential whose spec cannot be read: still counted, not Ready (an alert on
    /// `credential_ready == 0` sees it).
    pub fn unreadable(&self, namespace: &str, name: &str) {
        self.credentials.not_ready(namespace, name);
    }

    /// Drops every series of a deleted credential.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.credentials.remove(namespace, name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::conditions::{Desired, Reason, Status, merge};

    fn tac(name: &str, tenant: &str) -> TenantApiCredential {
        crate::testing::credential(
            name,
            serde_json::json!({"tenant": tenant, "provider": "raise", "credentialRef": {"name": "in"}}),
        )
    }

    fn ready_status() -> TenantApiCredentialStatus {
        let now = crate::testing::t(0);
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
        m.unreadable("ns", "a");
        let text = m.render();
        let series = |metric: &str| {
            text.lines()
                .filter(|l| l.starts_with(metric) && l.contains(r#"name="a""#))
                .count()
        };
        assert_eq!(series("tenantcred_credential_ready{"), 1, "still counted: {text}");
        assert!(
            text.lines().any(|l| l.starts_with("tenantcred_credential_ready{")
                && l.contains(r#"name="a""#)
                && l.ends_with(" 0")),
            "an unreadable spec is not Ready: {text}"
        );
        assert_eq!(series("tenantcred_credential_expiry_timestamp_seconds{"), 0, "{text}");
        m.forget("ns", "a");
        let text = m.render();
        assert!(
            !text.contains(r#"name="a""#),
            "deleted credential's series gone: {text}"
        );
    }
}
