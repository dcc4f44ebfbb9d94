//! What a reconcile reads besides the API: the caches, and what this process remembers of its own
//! writes and decisions until the watches catch up.

use super::source_index::SourceIndex;
use super::{Config, notify};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::budget::Budget;
use crate::crd::{TenantApiCredential, TenantApiCredentialStatus};
use crate::metrics::Metrics;
use crate::outbound::Prober;
use crate::publish::Volatile;
use crate::rollouts::Rollouts;

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
    /// Managed Secrets, cached by label selector (never every Secret of the cluster).
    pub(super) managed: Store<Secret>,
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
    /// Managed Secrets as we last wrote them, until the cache shows a version after that write
    /// (the same idea as `written` for statuses: a reconcile that outruns the watch must not
    /// create or write again).
    pub(super) secrets_written: Arc<Mutex<HashMap<ObjectRef<Secret>, WrittenSecret>>>,
    /// Per credential, the per-probe status fields of the newest decision that was not worth a
    /// write (`publish`): the schedule continues from them.
    pub(super) live: Arc<Mutex<HashMap<ObjectRef<TenantApiCredential>, Volatile>>>,
}

pub(super) struct WrittenSecret {
    /// The version the cache held when we wrote (None: there was none).
    pub(super) over: Option<String>,
    pub(super) secret: Arc<Secret>,
}

pub(super) type WrittenStatuses = Mutex<HashMap<ObjectRef<TenantApiCredential>, Written>>;

pub(super) struct Written {
    pub(super) over: Option<String>,
    pub(super) status: TenantApiCredentialStatus,
}

impl Context {
    /// The credential's status as of our last write, even when the cache has not caught up.
    pub(super) fn observed_status(&self, tac: &TenantApiCredential) -> TenantApiCredentialStatus {
        let key = ObjectRef::from_obj(tac);
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        match written.get(&key) {
            Some(w) if w.over == tac.metadata.resource_version => w.status.clone(),
            _ => {
                written.remove(&key);
                tac.status.clone().unwrap_or_default()
            }
        }
    }

    /// The managed Secret at `ns/name` as the cache has it, or as we last wrote it when the
    /// cache has not caught up with that write yet.
    pub(super) fn managed_secret(&self, ns: &str, name: &str) -> Option<Arc<Secret>> {
        let key = ObjectRef::new(name).within(ns);
        let cached = self.managed.get(&key);
        let mut written = self.secrets_written.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(w) = written.get(&key) else {
            return cached;
        };
        let cached_version = cached.as_ref().and_then(|s| s.metadata.resource_version.clone());
        if cached_version == w.over {
            return Some(w.secret.clone());
        }
        written.remove(&key);
        cached
    }

    pub(super) fn remember_secret(&self, ns: &str, before: Option<&Secret>, mut secret: Secret) {
        let Some(name) = secret.metadata.name.clone() else {
            return;
        };
        // As the cache keeps it: only our own field ownership is read.
        crate::secret::compact_field_ownership(&mut secret);
        let w = WrittenSecret {
            over: before.and_then(|s| s.metadata.resource_version.clone()),
            secret: Arc::new(secret),
        };
        self.secrets_written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ObjectRef::new(&name).within(ns), w);
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
        if let Some(v) = live.get(&ObjectRef::from_obj(tac)) {
            v.clone().overlay(&mut current);
        }
        current
    }

    pub(super) fn remember_status(&self, tac: &TenantApiCredential, status: &TenantApiCredentialStatus) {
        let w = Written {
            over: tac.metadata.resource_version.clone(),
            status: status.clone(),
        };
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ObjectRef::from_obj(tac), w);
    }
}
