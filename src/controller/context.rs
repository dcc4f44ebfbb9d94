//! What a reconcile reads besides the API: the caches, and what this process remembers of its own
//! writes and decisions until the watches catch up.

use super::managed_secrets::ManagedSecrets;
use super::source_index::SourceIndex;
use super::{Config, notify};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::budget::Budget;
use crate::crd::{TenantApiCredential, TenantApiCredentialStatus};
use crate::metrics::Metrics;
use crate::outbound::Prober;
use crate::publish::Volatile;
use crate::rollouts::Rollouts;

/// The key of the operator's per-credential maps: namespace and name only. (`ObjectRef::from_obj`
/// also carries the uid and resourceVersion, which the maps never compare: two more strings per
/// entry in every map.)
pub(super) fn credential_key(tac: &TenantApiCredential) -> ObjectRef<TenantApiCredential> {
    let r = ObjectRef::new(tac.metadata.name.as_deref().unwrap_or_default());
    match tac.metadata.namespace.as_deref() {
        Some(ns) => r.within(ns),
        None => r,
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub(super) client: Client,
    pub(super) notifier: notify::Notifier,
    pub(super) prober: Prober,
    pub(super) budget: Arc<Budget>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) rollouts: Arc<Mutex<Rollouts>>,
    pub(super) config: Config,
    pub(super) started_at: Timestamp,
    /// Managed Secrets, watched by label selector (never every Secret of the cluster), as
    /// projections; with our own writes until the watch delivers them.
    pub(super) managed: Arc<ManagedSecrets>,
    /// The credentials, as cached by the controller's watch.
    pub(super) credentials: Store<TenantApiCredential>,
    /// Who reads which Secret, and every Secret's version (the source-version check).
    pub(super) sources: Arc<SourceIndex>,
    /// Per credential, `<source>/<resourceVersion>` of the latest read that found the token the
    /// managed Secret already holds (so an unrelated edit of the source costs one read, once).
    pub(super) source_versions: Arc<Mutex<HashMap<ObjectRef<TenantApiCredential>, String>>>,
    pub(super) errors: Arc<Mutex<HashMap<ObjectRef<TenantApiCredential>, u32>>>,
    /// The status last written per credential, with the resourceVersion it was written over: until
    /// the watch delivers our write, the cache still holds that version, and reconciling from its
    /// stale status would probe and write again.
    pub(super) written: Arc<WrittenStatuses>,
    /// Per credential, the per-probe status fields of the newest decision that was not worth a
    /// write (`publish`): the schedule continues from them.
    pub(super) live: Arc<Mutex<HashMap<ObjectRef<TenantApiCredential>, Volatile>>>,
}

pub(super) type WrittenStatuses = Mutex<HashMap<ObjectRef<TenantApiCredential>, Written>>;

pub(super) struct Written {
    pub(super) over: Option<String>,
    /// Boxed: the map's slots stay small when it is empty again after a cold start.
    pub(super) status: Box<TenantApiCredentialStatus>,
}

/// Removes a per-credential entry, and gives back the map's table once it is mostly empty: the
/// maps that hold entries only until the watch catches up (every credential during a cold start,
/// a handful after) would otherwise keep their largest size for good.
pub(super) fn drop_entry<K, V, Q>(map: &mut HashMap<K, V>, key: &Q)
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
{
    if map.remove(key).is_some() && map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

impl Context {
    /// The credential's status as of our last write, even when the cache has not caught up.
    pub(super) fn observed_status(&self, tac: &TenantApiCredential) -> TenantApiCredentialStatus {
        let key = credential_key(tac);
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        match written.get(&key) {
            Some(w) if w.over == tac.metadata.resource_version => (*w.status).clone(),
            _ => {
                drop_entry(&mut written, &key);
                tac.status.clone().unwrap_or_default()
            }
        }
    }

    /// The status as last decided: as persisted, with the per-probe fields of decisions that
    /// were not worth a write.
    pub(super) fn current_status(
        &self,
        tac: &TenantApiCredential,
        persisted: &TenantApiCredentialStatus,
    ) -> TenantApiCredentialStatus {
        let mut current = persisted.clone();
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = live.get(&credential_key(tac)) {
            v.clone().overlay(&mut current);
        }
        current
    }

    pub(super) fn remember_status(&self, tac: &TenantApiCredential, status: &TenantApiCredentialStatus) {
        let key = credential_key(tac);
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        // The watch may have delivered our write before the API call returned: then the cache
        // is already past `over`, nothing would ever remove the entry until the next reconcile,
        // and a cold start would hold a status copy per credential. (Checked under the lock the
        // watch takes after updating the cache, so a delivery cannot slip in between.)
        let cached = self.credentials.get(&key);
        if cached.as_ref().map(|c| &c.metadata.resource_version) != Some(&tac.metadata.resource_version) {
            drop_entry(&mut written, &key);
            return;
        }
        let w = Written {
            over: tac.metadata.resource_version.clone(),
            status: Box::new(status.clone()),
        };
        written.insert(key, w);
    }
}
