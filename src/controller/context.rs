//! What a reconcile reads besides the API: the caches, and what this process remembers of its own
//! writes and decisions until the watches catch up.

use super::credentials::Credentials;
use super::managed_secrets::ManagedSecrets;
use super::source_index::SourceIndex;
use super::{Config, Key, name_id, notify};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;

use crate::budget::Budget;
use crate::crd::TenantApiCredentialStatus;
use crate::decide::publish::Volatile;
use crate::decide::rollouts::Rollouts;
use crate::metrics::Metrics;
use crate::outbound::ProviderClient;

/// Shared by every reconcile.
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
    /// Managed Secrets, watched by label selector (never every Secret of the cluster), as
    /// projections; with our own writes until the watch delivers them.
    pub(super) managed: Arc<ManagedSecrets>,
    /// The credentials as the watch delivered them, with the statuses we wrote since.
    pub(super) credentials: Arc<Credentials>,
    /// Who reads which Secret, and every unmanaged Secret's version (the source-version check).
    pub(super) sources: Arc<SourceIndex>,
    /// The `ApiProvider` definitions (shared by every scope).
    pub(super) providers: Arc<super::providers::Providers>,
    /// Per credential, `<source>/<resourceVersion>` of the latest read that found the token the
    /// managed Secret already holds (so an unrelated edit of the source costs one read, once).
    pub(super) source_versions: Arc<Mutex<HashMap<Key, Box<str>>>>,
    pub(super) errors: Arc<Mutex<HashMap<Key, u32>>>,
    /// Per credential, the per-probe status fields of the newest decision that was not worth a
    /// write (`publish`): the schedule continues from them.
    pub(super) live: Live,
    /// When the credentials, the managed Secrets and the Secret metadata had each been listed in
    /// full (`None` before).
    pub(super) listed: tokio::sync::watch::Receiver<Option<Timestamp>>,
}

/// Every credential has an entry once it has been probed twice, so it is keyed by a 64-bit hash
/// of namespace and name ([`live_key`]), not a string per entry.
pub(super) type Live = Arc<Mutex<HashMap<u64, Volatile>>>;

pub(super) fn live_key(meta: &ObjectMeta) -> u64 {
    name_id(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

impl Context {
    /// When this replica could begin to act: it leads, and its caches hold a full list (on a
    /// cold start the lease comes first; reconciles wait for the lists).
    pub(super) fn leading_since(&self) -> Timestamp {
        let leading = *self.leading_since.lock().unwrap_or_else(PoisonError::into_inner);
        crate::decide::leadership::acting_since(leading, *self.listed.borrow())
    }

    /// Waits until every cache of this scope holds a full list. Before that, a managed Secret
    /// that exists would look missing (a create that fails, then a read) and a source's version
    /// unknown (a read again): on a restart at scale, a request or two per credential for
    /// nothing. (A watch whose list keeps failing holds the reconciles here, and /readyz says so.)
    pub(super) async fn caches_listed(&self) {
        let mut listed = self.listed.clone();
        // An error means the watches were dropped: the controller is stopping.
        let _ = listed.wait_for(Option::is_some).await;
        self.providers.listed().await;
    }

    /// The status as last decided: as persisted, with the per-probe fields of decisions that
    /// were not worth a write.
    pub(super) fn current_status(
        &self,
        tac: &impl kube::Resource,
        persisted: &TenantApiCredentialStatus,
    ) -> TenantApiCredentialStatus {
        let mut current = persisted.clone();
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = live.get(&live_key(tac.meta())) {
            v.overlay(&mut current);
        }
        current
    }
}
