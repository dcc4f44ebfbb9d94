//! The cache component: everything held between reconciles. Per scope, three watches feed it
//! (credentials; managed Secrets by label; every other Secret as metadata only), each into its
//! table the same way ([`mirror`]: one re-list diff), as the `ApiProvider` watch feeds the
//! definitions ([`providers`]); [`Caches::start`] starts them all. Our writes the watches have not
//! delivered serve by one rule ([`own_writes`]): the statuses in the one entry per credential of
//! what this process holds beyond the watches ([`memory`]), the managed Secrets in their table.
//! Every table is keyed by one [`Id`]; [`Cache::forget`] drops everything held for a credential.

mod credentials;
mod keys;
mod managed;
mod memory;
mod mirror;
mod own_writes;
pub(super) mod packed;
pub(super) mod providers;
mod readers;
pub(super) mod watch;

pub(super) use credentials::slim;
pub(super) use keys::{CredentialRef, Id, credential_key};
pub(super) use watch::{Caches, Listed, ScopeCache, Wake};

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::runtime::watcher::Event;

use crate::crd::TenantApiCredentialStatus;
use crate::decide::publish::Volatile;
use crate::decide::secret::Observed;
use packed::CachedCredential;

#[derive(Default)]
pub(super) struct Cache {
    credentials: credentials::Credentials,
    /// Managed Secrets as projections (never the whole object); our writes until the watch
    /// delivers them.
    managed: managed::ManagedSecrets,
    /// Who reads which Secret, and every unmanaged Secret's version (the source-version check).
    sources: readers::SourceIndex,
    memory: memory::Memory,
}

/// A credential as this process holds it beyond the watch.
pub(super) struct Held {
    /// The status as of our last write, even when the watch has not caught up.
    pub(super) persisted: TenantApiCredentialStatus,
    /// The status as last decided: `persisted`, with the per-probe fields of a decision that
    /// was not worth a write.
    pub(super) observed: TenantApiCredentialStatus,
}

/// What one credential event meant: whom to reconcile, and who is gone (forgotten already).
#[derive(Default)]
pub(super) struct Absorbed {
    pub(super) wake: Vec<CredentialRef>,
    pub(super) gone: Vec<CredentialRef>,
}

impl Cache {
    /// Applies one event of the credential watch.
    pub(super) fn credential_event(&self, event: &Event<CachedCredential>) -> Absorbed {
        let mut out = Absorbed {
            gone: self.credentials.absorb(event, &self.memory),
            wake: Vec::new(),
        };
        for gone in &out.gone {
            self.forget(gone.namespace.as_deref().unwrap_or_default(), &gone.name);
        }
        match event {
            Event::Delete(tac) => {
                let (ns, name) = (tac.namespace().unwrap_or_default(), tac.name_any());
                self.forget(&ns, &name);
                out.gone.push(credential_key(tac));
            }
            // Our own status writes must not wake us: only spec, annotations (probe-now),
            // deletion and the legacy finalizer (removed on upgrade) matter.
            Event::Apply(tac) | Event::InitApply(tac) => {
                // Who reads which Secret is known from the watch (leader and standby alike), so
                // a source edited before the backlog reached its reader still wakes it.
                if let (Some(ns), Ok(spec)) = (tac.metadata.namespace.as_deref(), tac.spec()) {
                    self.sources.set(ns, &tac.name_any(), crate::decide::plan::reads(&spec));
                }
                if self.credentials.wakes(tac) {
                    out.wake.push(credential_key(tac));
                }
            }
            Event::Init | Event::InitDone => {}
        }
        out
    }

    /// Applies one event of the managed-Secret watch; answers the owners to reconcile.
    pub(super) fn managed_event(&self, event: Event<Secret>) -> Vec<CredentialRef> {
        self.managed.absorb(event)
    }

    /// Applies one event of the Secret metadata watch; answers the readers to reconcile.
    pub(super) fn source_event(&self, event: Event<PartialObjectMeta<Secret>>) -> Vec<CredentialRef> {
        self.sources.absorb(event)
    }

    /// Drops everything held for the credential: what it reads, when it last woke, and its
    /// entry in memory.
    pub(super) fn forget(&self, ns: &str, name: &str) {
        let id = Id::of(ns, name);
        self.sources.set(ns, name, Vec::new());
        self.credentials.forget(id);
        self.memory.forget(id);
    }

    /// The store kube-runtime's controller reads.
    pub(super) fn store(&self) -> Store<CachedCredential> {
        self.credentials.store()
    }

    pub(super) fn credential(&self, key: &CredentialRef) -> Option<Arc<CachedCredential>> {
        self.credentials.get(key)
    }

    /// The credential's status as of our last write, even when the watch has not caught up.
    /// `cached` is the status of the version `meta` describes.
    pub(super) fn status_of(
        &self,
        meta: &ObjectMeta,
        cached: Option<&TenantApiCredentialStatus>,
    ) -> TenantApiCredentialStatus {
        let written = self
            .memory
            .written_over(Id::of_meta(meta), meta.resource_version.as_deref());
        written.unwrap_or_else(|| cached.cloned().unwrap_or_default())
    }

    /// What this process holds of a credential that the watch may not have delivered, as a
    /// reconcile reads it. `cached` is the status of the version `meta` describes.
    pub(super) fn held(&self, meta: &ObjectMeta, cached: Option<&TenantApiCredentialStatus>) -> Held {
        let id = Id::of_meta(meta);
        let persisted = self
            .memory
            .written_over(id, meta.resource_version.as_deref())
            .unwrap_or_else(|| cached.cloned().unwrap_or_default());
        let mut observed = persisted.clone();
        if let Some(v) = self.memory.live(id) {
            v.overlay(&mut observed);
        }
        Held { persisted, observed }
    }

    /// We wrote `status` over the version `over` describes.
    pub(super) fn wrote_status(&self, over: &ObjectMeta, status: &TenantApiCredentialStatus) {
        self.credentials.wrote(over, status, &self.memory);
        self.memory.keep_live(Id::of_meta(over), None);
    }

    /// A decision not worth a status write: its per-probe fields, for the next reconcile.
    pub(super) fn keep_live(&self, meta: &ObjectMeta, live: Option<Volatile>) {
        self.memory.keep_live(Id::of_meta(meta), live);
    }

    pub(super) fn managed_secret(&self, ns: &str, name: &str) -> Option<Arc<Observed>> {
        self.managed.get(ns, name)
    }

    /// We wrote a managed Secret over `before` (what [`Cache::managed_secret`] answered).
    pub(super) fn wrote_secret(&self, ns: &str, before: Option<&Observed>, secret: Secret) {
        self.managed.wrote(ns, before, secret);
    }

    /// A source Secret's resourceVersion as the watch last saw it (when it is a number).
    pub(super) fn source_version(&self, ns: &str, secret: &str) -> Option<String> {
        self.sources.version(ns, secret)
    }

    /// `<source>/<resourceVersion>` the token of the managed Secret `ns/secret` came from.
    pub(super) fn token_version(&self, ns: &str, secret: &str) -> Option<String> {
        self.managed.source_version(ns, secret)
    }

    /// A read found the token the managed Secret `ns/secret` holds in source version `version`.
    pub(super) fn token_found_in(&self, ns: &str, secret: &str, version: &str) {
        self.managed.found_in(ns, secret, version);
    }

    /// The credential reads nothing (its spec is unreadable).
    pub(super) fn reads_nothing(&self, ns: &str, name: &str) {
        self.sources.set(ns, name, Vec::new());
    }

    /// One more failed reconcile of the credential; answers how many in a row.
    pub(super) fn failed(&self, meta: &ObjectMeta) -> u32 {
        self.memory.failed(Id::of_meta(meta))
    }

    pub(super) fn succeeded(&self, meta: &ObjectMeta) {
        self.memory.succeeded(Id::of_meta(meta));
    }
}

#[cfg(test)]
pub(super) mod fixtures {
    use super::*;
    use crate::crd::{TenantApiCredential, TenantApiCredentialSpec};

    /// A credential `ns/name` at resourceVersion `rv` that reads Secret `src`.
    pub(in crate::controller) fn tac(name: &str, rv: &str, generation: i64) -> CachedCredential {
        CachedCredential::from_credential(&TenantApiCredential {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some(rv.into()),
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            spec: serde_json::from_value::<TenantApiCredentialSpec>(
                serde_json::json!({"tenant": "t", "provider": "raise", "credentialRef": {"name": "src", "key": "token"}}),
            )
            .expect("spec"),
            status: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tac(name: &str, rv: &str) -> CachedCredential {
        super::fixtures::tac(name, rv, 1)
    }

    fn source(rv: &str) -> PartialObjectMeta<Secret> {
        PartialObjectMeta::<Secret> {
            metadata: ObjectMeta {
                name: Some("src".into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                labels: Some(BTreeMap::new()),
                ..ObjectMeta::default()
            },
            ..PartialObjectMeta::default()
        }
    }

    fn names(refs: &[CredentialRef]) -> Vec<&str> {
        refs.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn a_deleted_credential_is_forgotten_everywhere() {
        let cache = Cache::default();
        let a = tac("a", "1");
        cache.credential_event(&Event::Init);
        assert_eq!(names(&cache.credential_event(&Event::InitApply(a.clone())).wake), ["a"]);
        cache.credential_event(&Event::InitDone);
        assert_eq!(
            names(&cache.source_event(Event::Apply(source("1")))),
            ["a"],
            "it reads src"
        );
        cache.keep_live(&a.metadata, Some(Volatile::default()));
        cache.failed(&a.metadata);
        cache.wrote_status(&a.metadata, &TenantApiCredentialStatus::default());

        let out = cache.credential_event(&Event::Delete(a.clone()));
        assert_eq!(names(&out.gone), ["a"]);
        assert_eq!(cache.memory.len(), 0, "nothing held in memory");
        assert!(
            cache.source_event(Event::Apply(source("2"))).is_empty(),
            "no longer a reader"
        );
        assert_eq!(cache.failed(&a.metadata), 1, "counted afresh");
        assert_eq!(
            names(&cache.credential_event(&Event::Apply(a)).wake),
            ["a"],
            "new again"
        );
    }

    #[test]
    fn a_credential_a_relist_no_longer_shows_is_forgotten() {
        let cache = Cache::default();
        cache.credential_event(&Event::Init);
        for n in ["a", "b"] {
            cache.credential_event(&Event::InitApply(tac(n, "1")));
        }
        cache.credential_event(&Event::InitDone);
        cache.keep_live(&tac("b", "1").metadata, Some(Volatile::default()));
        cache.credential_event(&Event::Init);
        cache.credential_event(&Event::InitApply(tac("a", "1")));
        let out = cache.credential_event(&Event::InitDone);
        assert_eq!(names(&out.gone), ["b"]);
        assert_eq!(cache.memory.len(), 0);
        assert!(cache.credential(&CredentialRef::new("b").within("ns")).is_none());
        assert_eq!(names(&cache.source_event(Event::Apply(source("1")))), ["a"]);
    }
}
