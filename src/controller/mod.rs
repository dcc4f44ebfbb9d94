//! The imperative shell: gathers what a reconcile needs from the Kubernetes API and the caches,
//! asks the reconcile machine (`decide::step::Reconcile`) for one action at a time and performs it (managed
//! Secret, probe, status, events), writing only what changed.

mod backlog;
mod cache;
mod context;
mod leadership;
mod lists;
mod logins;
mod notify;
mod provider_reports;
mod reconcile;
mod requests;
mod restart;
mod run;
mod scope;
#[cfg(test)]
mod scripted;
mod secret_read;
mod writes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::budget::Budget;
use crate::decide::egress::Egress;
use crate::decide::rollouts::Rollouts;
use crate::fence::Fence;
use crate::metrics::Metrics;
use crate::outbound::ProviderClient;
use crate::server::Readiness;

pub use cache::packed::CachedCredential;
pub use context::Context;
pub use lists::ListMode;
pub use reconcile::{error_policy, reconcile};
pub use run::run;

/// A 64-bit hash: what the operator's in-memory tables keep instead of strings. std's
/// `DefaultHasher::new` has fixed keys, so a value hashes the same throughout one build, but its
/// algorithm may change with any Rust release: nothing kept or compared across an upgrade may
/// depend on it.
fn hash64(v: impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// A task that ends with its owner: the watches of a scope, the lease followers.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn abort_on_drop(f: impl std::future::Future<Output = ()> + Send + 'static) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(f))
}

/// Reconciles in flight at once by default (`--concurrency`); the policies' defaults live with
/// their decisions (`decide::fair_share`, `decide::rollouts`).
pub const DEFAULT_CONCURRENCY: u16 = 64;

/// How the operator runs; set from `tenantcred run` flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Where tokens may be sent (`--allowed-host`, `--allow-insecure-http`).
    pub egress: Egress,
    pub max_concurrent_probes: usize,
    pub max_probes_per_host: usize,
    /// Reconciles in flight at once (each holds at most one probe).
    pub concurrency: u16,
    /// Name reported on events (`reportingController`).
    pub reporter: String,
    /// This replica, reported on events (`reportingInstance`).
    pub instance: String,
    /// A workload is restarted at most once per this window; changes within it are gathered.
    pub restart_debounce: Duration,
    /// Rollouts started per minute, across all workloads.
    pub max_rollouts_per_minute: u32,
    /// How the watches list: streamed where the API server offers it, or paged.
    pub lists: ListMode,
    /// Catch-up probes per second per provider host after a gap (`schedule::catch_up`).
    pub catch_up_per_second: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            egress: Egress::default(),
            max_concurrent_probes: crate::decide::fair_share::DEFAULT_TOTAL,
            max_probes_per_host: crate::decide::fair_share::DEFAULT_PER_HOST,
            concurrency: DEFAULT_CONCURRENCY,
            reporter: "tenantcred".into(),
            instance: "tenantcred".into(),
            restart_debounce: crate::decide::rollouts::DEFAULT_DEBOUNCE,
            max_rollouts_per_minute: crate::decide::rollouts::DEFAULT_PER_MINUTE,
            lists: ListMode::Auto,
            catch_up_per_second: crate::decide::schedule::DEFAULT_CATCH_UP_PER_SECOND,
        }
    }
}

/// Where the lease of leader election lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a lease holds without renewal: the longest a dead leader blocks the standby.
    pub duration_seconds: u64,
    /// Renewal happens this long before expiry.
    pub grace_seconds: u64,
}

/// The process's long-lived handles, made once before `run`: one probe budget, one HTTP client,
/// one set of metrics, one readiness, one rollout gate, one fence. (The caches are `run`'s; what a
/// reconcile reads is its scope's [`Context`], made from these and the caches.)
#[derive(Clone)]
pub struct Shared {
    pub provider_client: ProviderClient,
    /// Open only while this replica leads (`fence`).
    pub fence: Arc<Fence>,
    pub budget: Arc<Budget>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Readiness>,
    pub rollouts: Arc<Mutex<Rollouts>>,
}

impl Shared {
    pub fn new(config: &Config, metrics: Arc<Metrics>, health: Arc<Readiness>) -> anyhow::Result<Self> {
        let fence = Arc::new(Fence::default());
        Ok(Self {
            provider_client: ProviderClient::new(Arc::new(config.egress.clone()), fence.clone())?,
            fence,
            budget: Arc::new(Budget::new(config.max_concurrent_probes, config.max_probes_per_host)),
            metrics,
            health,
            rollouts: Arc::new(Mutex::new(Rollouts::new(
                config.restart_debounce,
                config.max_rollouts_per_minute,
            ))),
        })
    }
}
