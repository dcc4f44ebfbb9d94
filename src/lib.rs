//! tenantcred: per-customer API tokens as Kubernetes resources, kept valid, probed and mounted.
//!
//! The functional core decides (`plan`, `verdict`, `schedule`, `conditions`, `secret`, `events`);
//! the shell does the I/O (`controller` against the Kubernetes API, `probe` against providers).

pub mod budget;
pub mod cli;
pub mod client;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod events;
pub mod metrics;
pub mod oauth;
pub mod plan;
pub mod probe;
pub mod provider;
pub mod publish;
pub mod rollouts;
pub mod rotation;
pub mod schedule;
pub mod secret;
pub mod server;
pub mod telemetry;
pub mod token;
pub mod verdict;

/// Everything a reconcile can fail with. Input problems are not errors: they become conditions.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("the resource has no {0}")]
    MissingMetadata(&'static str),
    #[error("serializing the status: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    /// A stable, low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::MissingMetadata(_) => "metadata",
            Self::Serialize(_) => "serialize",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
