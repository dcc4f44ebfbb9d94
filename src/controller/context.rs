//! What a scope's reconciles read: made once per scope from the process's long-lived handles
//! ([`super::Shared`]) and the caches ([`super::cache::Caches`]), which own them.

use super::cache::providers::Providers;
use super::cache::{Cache, Caches, Listed, ScopeCache};
use super::{Config, Shared, notify};
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use kube::Client;

use crate::budget::Budget;
use crate::decide::rollouts::Rollouts;
use crate::metrics::Metrics;
use crate::outbound::ProviderClient;

/// Shared by every reconcile of a scope.
pub struct Context {
    pub(super) client: Client,
    pub(super) notifier: notify::Notifier,
    pub(super) provider_client: ProviderClient,
    pub(super) budget: Arc<Budget>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) rollouts: Arc<Mutex<Rollouts>>,
    pub(super) config: Config,
    /// When this replica last began to lead: probes that fell due before it (while no replica
    /// acted, or during a failover) are spread from here (`schedule::catch_up`), not fired at once.
    pub(super) leading_since: Mutex<Timestamp>,
    /// Changes the watches queued ahead of the backlog that have not started yet.
    pub(super) changes: Arc<super::backlog::Changes>,
    /// What the watches deliver and what this process holds per credential until they do.
    pub(super) cache: Arc<Cache>,
    /// The OAuth logins being renewed: one token-endpoint call per login at a time.
    pub(super) logins: super::logins::Logins,
    /// The `ApiProvider` definitions (shared by every scope).
    pub(super) providers: Arc<Providers>,
    /// When every watch had its first list in.
    pub(super) listed: Listed,
}

impl Context {
    /// The context of one scope of `caches`. `client` is fenced: it writes only as leader.
    pub(super) fn new(client: Client, config: Config, shared: &Shared, caches: &Caches, scope: &ScopeCache) -> Self {
        Self {
            notifier: notify::Notifier::new(client.clone(), config.reporter.clone(), config.instance.clone()),
            client,
            provider_client: shared.provider_client.clone(),
            budget: shared.budget.clone(),
            metrics: shared.metrics.clone(),
            rollouts: shared.rollouts.clone(),
            config,
            leading_since: Mutex::new(Timestamp::now()),
            changes: scope.wake.changes.clone(),
            cache: scope.cache.clone(),
            logins: super::logins::Logins::default(),
            providers: caches.providers.clone(),
            listed: caches.listed.clone(),
        }
    }

    /// When this replica could begin to act: it leads, and its caches hold a full list (on a
    /// cold start the lease comes first; reconciles wait for the lists).
    pub(super) fn leading_since(&self) -> Timestamp {
        let leading = *self.leading_since.lock().unwrap_or_else(PoisonError::into_inner);
        crate::decide::leadership::acting_since(leading, self.listed.at())
    }

    /// Waits until every cache holds a full list. Before that, a managed Secret that exists would
    /// look missing (a create that fails, then a read) and a source's version unknown (a read
    /// again): on a restart at scale, a request or two per credential for nothing.
    pub(super) async fn caches_listed(&self) {
        self.listed.wait().await;
    }
}

#[cfg(test)]
impl Context {
    /// A context for the shell's unit tests: every Kubernetes request goes to `script` (the
    /// scripted API server) and is recorded there; the caches are empty and fully listed, no
    /// `ApiProvider` is defined, this replica leads, and the rest is `Config::default()`.
    pub(super) fn test(script: &super::scripted::Script) -> Self {
        let config = Config::default();
        let client = script.client();
        let provider_client = ProviderClient::new(
            Arc::new(config.egress.clone()),
            Arc::new(crate::fence::Fence::unfenced()),
        )
        .expect("a provider client");
        Self {
            notifier: notify::Notifier::new(client.clone(), config.reporter.clone(), config.instance.clone()),
            client,
            provider_client,
            budget: Arc::new(Budget::new(config.max_concurrent_probes, config.max_probes_per_host)),
            metrics: Arc::default(),
            rollouts: Arc::new(Mutex::new(Rollouts::new(
                config.restart_debounce,
                config.max_rollouts_per_minute,
            ))),
            leading_since: Mutex::new(Timestamp::now()),
            changes: Arc::default(),
            cache: Arc::default(),
            logins: super::logins::Logins::default(),
            providers: Arc::new(Providers::listed_as(Vec::new())),
            listed: Listed::done(),
            config,
        }
    }
}
