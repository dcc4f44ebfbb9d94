//! tenantcred: per-customer API tokens as Kubernetes resources, kept valid, probed and mounted.
//!
//! The functional core decides, in `decide/` (no I/O, an injected clock). A reconcile is an
//! owning machine (`decide::step::Reconcile`): the shell gathers a read-only world, asks for one
//! action at a time, performs it and hands back the result with the time it arrived. `plan` decides the status, from spec, observed state,
//! probe outcome and clock to the status and the next wake-up, with the policies it calls (`verdict`, `schedule`, `rotation`, `oauth`, `publish`, `rollouts`,
//! `conditions`, `events`, `secret`, `token`, `provider`, `egress`). The shell does the I/O: `controller`
//! against the Kubernetes API (start at `controller::run`), `outbound` against the providers, `cli`,
//! `server`, `metrics`, `client`, `budget` (the shared probe budget: the decisions of
//! `decide::fair_share`, `ledger` and `back_off`, behind locks).

pub mod budget;
pub mod cli;
pub mod client;
pub mod controller;
pub mod crd;
pub mod decide;
pub mod fence;
pub mod metrics;
pub mod outbound;
pub mod server;
pub mod telemetry;
#[cfg(test)]
mod testing;

/// Everything a reconcile can fail with. Input problems are not errors: they become conditions.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] kube::Error),
    #[error("the resource has no {0}")]
    MissingMetadata(&'static str),
    #[error("serializing the status: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A write or request the fence refused: this replica does not lead (not an API failure).
    #[error(transparent)]
    NotLeading(#[from] fence::NotLeading),
}

impl From<kube::Error> for Error {
    /// A write the fenced client refused comes back as the client's service error; it is the
    /// fence's refusal, not the API server's.
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Service(inner) if inner.is::<fence::NotLeading>() => Self::NotLeading(fence::NotLeading),
            e => Self::Kube(e),
        }
    }
}

impl Error {
    /// A stable, low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::MissingMetadata(_) => "metadata",
            Self::Serialize(_) => "serialize",
            Self::NotLeading(_) => "not_leading",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
