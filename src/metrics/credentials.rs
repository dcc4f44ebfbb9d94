//! The per-credential series, kept as one small record per credential and rendered at scrape
//! time. (A `Family` per metric would hold the four label strings six times over, about 1.7 KB
//! per credential; this holds them once, in two allocations: `namespace/name` and the tenant.)

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

/// What the series of one credential say now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Series {
    pub tenant: Box<str>,
    /// A built-in provider's name is static: no allocation per credential.
    pub provider: Cow<'static, str>,
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

/// Every credential's series, by `namespace/name` (a namespace holds no `/`).
#[derive(Debug, Default)]
pub struct CredentialSeries {
    by_credential: Mutex<BTreeMap<Box<str>, Series>>,
}

impl CredentialSeries {
    pub fn set(&self, namespace: &str, name: &str, series: Series) {
        let mut map = self.lock();
        let key = format!("{namespace}/{name}");
        match map.get_mut(key.as_str()) {
            Some(old) => *old = series,
            None => {
                map.insert(key.into_boxed_str(), series);
            }
        }
    }

    /// The credential is not Ready and nothing else of it is known (its spec cannot be read): its
    /// series stay, saying so, with the labels they had (none, if it never had series), and the
    /// figures of a token no longer known go.
    pub fn not_ready(&self, namespace: &str, name: &str) {
        let mut map = self.lock();
        let key = format!("{namespace}/{name}");
        let old = map.remove(key.as_str()).unwrap_or_default();
        let series = Series {
            tenant: old.tenant,
            provider: old.provider,
            ..Series::default()
        };
        map.insert(key.into_boxed_str(), series);
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        self.lock().remove(format!("{namespace}/{name}").as_str());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Box<str>, Series>> {
        self.by_credential.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Collector for CredentialSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let map = self.lock();
        for gauge in &GAUGES {
            let mut family = encoder.encode_descriptor(gauge.name, gauge.help, None, MetricType::Gauge)?;
            for (key, series) in map.iter() {
                let (Some(v), Some((namespace, name))) = ((gauge.value)(series), key.split_once('/')) else {
                    continue;
                };
                let labels = [
                    ("namespace", namespace),
                    ("name", name),
                    ("tenant", &*series.tenant),
                    ("provider", &*series.provider),
                ];
                ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
