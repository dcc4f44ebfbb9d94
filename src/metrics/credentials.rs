//! The per-credential series, kept as one small record per credential and rendered at scrape
//! time. (A `Family` per metric would hold the four label strings six times over, about 1.7 KB
//! per credential; this holds them once.)

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

/// What the series of one credential say now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Series {
    pub tenant: String,
    pub provider: String,
    pub ready: bool,
    pub degraded: bool,
    pub expiry: Option<i64>,
    pub last_success: Option<i64>,
    pub last_probe: Option<i64>,
    pub rate_limit_remaining: Option<i64>,
}

/// One gauge per credential and metric; a metric without a value for a credential has no series.
struct Gauge {
    name: &'static str,
    help: &'static str,
    value: fn(&Series) -> Option<i64>,
}

const GAUGES: [Gauge; 6] = [
    Gauge {
        name: "credential_ready",
        help: "1 when the credential is Ready=True",
        value: |s| Some(i64::from(s.ready)),
    },
    Gauge {
        name: "credential_degraded",
        help: "1 when the credential is Degraded=True",
        value: |s| Some(i64::from(s.degraded)),
    },
    Gauge {
        name: "credential_expiry_timestamp_seconds",
        help: "When the token expires (unix seconds), when known",
        value: |s| s.expiry,
    },
    Gauge {
        name: "credential_last_successful_probe_timestamp_seconds",
        help: "When the provider last accepted the token (unix seconds)",
        value: |s| s.last_success,
    },
    Gauge {
        name: "credential_last_probe_timestamp_seconds",
        help: "When the token was last probed (unix seconds), every probe (the status records them hourly)",
        value: |s| s.last_probe,
    },
    Gauge {
        name: "provider_rate_limit_remaining",
        help: "Requests left in the key's rate-limit window, as the provider last reported",
        value: |s| s.rate_limit_remaining,
    },
];

/// Every credential's series, by (namespace, name).
#[derive(Debug, Default)]
pub struct CredentialSeries {
    by_credential: Mutex<BTreeMap<(String, String), Series>>,
}

impl CredentialSeries {
    pub fn set(&self, namespace: &str, name: &str, series: Series) {
        self.lock().insert((namespace.to_owned(), name.to_owned()), series);
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        self.lock().remove(&(namespace.to_owned(), name.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Series>> {
        self.by_credential.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Collector for CredentialSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let map = self.lock();
        for gauge in &GAUGES {
            let mut family = encoder.encode_descriptor(gauge.name, gauge.help, None, MetricType::Gauge)?;
            for ((namespace, name), series) in map.iter() {
                let Some(v) = (gauge.value)(series) else {
                    continue;
                };
                let labels = [
                    ("namespace", namespace.as_str()),
                    ("name", name.as_str()),
                    ("tenant", series.tenant.as_str()),
                    ("provider", series.provider.as_str()),
                ];
                ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
