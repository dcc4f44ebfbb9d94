//! The credential cache: kube-runtime's reflector store of `CachedCredential`s as the credential
//! watch feeds it, and the statuses we wrote that the watch has not delivered yet.
//!
//! A re-list after the first one updates the cache in place instead of building a second full
//! copy beside it, as the reflector would, and reports the credentials that vanished while the
//! watch was down. (Putting our own writes into the store instead of holding their statuses
//! beside it was measured: the heap was smaller, the process larger; see BENCHMARKS.md.)

use std::collections::HashMap;

use super::relist::Relist;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::watcher::Event;

use super::cached::CachedCredential;
use super::keys::{CredentialRef, drop_entry, key_of, ref_of, tac_key};
use super::{Key, hash64};
use crate::crd::TenantApiCredentialStatus;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Field ownership and kubectl's copy of the last applied object are never read from the cache:
/// dropping them saves memory.
pub(super) fn slim(tac: &mut CachedCredential) {
    tac.managed_fields_mut().clear();
    tac.annotations_mut().remove(LAST_APPLIED);
}

pub(super) struct Credentials {
    store: Store<CachedCredential>,
    writer: Mutex<Feed>,
    /// Per credential (a hash of namespace, name and uid), a hash of what a reconcile acts on
    /// when it changes: 16 bytes each, where kube-runtime's predicate filter keeps three strings.
    wakes: Mutex<HashMap<u64, u64>>,
}

struct Feed {
    writer: Writer<CachedCredential>,
    /// The first list went through the reflector (which marks the store ready at its end).
    listed: bool,
    /// A later re-list, applied in place: what it does not deliver is gone.
    relisting: Relist<Key>,
    /// Statuses we wrote, until the watch delivers a version after the one written over: a
    /// reconcile from the cache's older status would probe and write again.
    written: HashMap<Key, Written>,
}

struct Written {
    over: Option<String>,
    /// Boxed: the map's slots stay small when it is empty again after a cold start.
    status: Box<TenantApiCredentialStatus>,
}

impl Credentials {
    pub(super) fn new() -> Self {
        let writer = Writer::default();
        Self {
            store: writer.as_reader(),
            writer: Mutex::new(Feed {
                writer,
                listed: false,
                relisting: Relist::default(),
                written: HashMap::new(),
            }),
            wakes: Mutex::default(),
        }
    }

    /// What kube-runtime's controller reads (and waits on until the first list is in).
    pub(super) fn store(&self) -> Store<CachedCredential> {
        self.store.clone()
    }

    pub(super) fn get(&self, key: &CredentialRef) -> Option<Arc<CachedCredential>> {
        self.store.get(key)
    }

    /// Applies one event of the credential watch; answers the credentials a re-list found gone.
    pub(super) fn absorb(&self, event: &Event<CachedCredential>) -> Vec<Arc<CachedCredential>> {
        let mut feed = self.feed();
        let feed = &mut *feed;
        // Once the cache holds a version after our write, it is current again.
        if let Event::Apply(tac) | Event::InitApply(tac) | Event::Delete(tac) = event {
            let key = tac_key(tac);
            if feed
                .written
                .get(&key)
                .is_some_and(|w| w.over != tac.metadata.resource_version || matches!(event, Event::Delete(_)))
            {
                drop_entry(&mut feed.written, &key);
            }
        }
        if !feed.listed {
            feed.listed = matches!(event, Event::InitDone);
            feed.writer.apply_watcher_event(event);
            return Vec::new();
        }
        match event {
            Event::Init => feed.relisting.begin(),
            Event::InitApply(tac) => {
                feed.relisting.saw(tac_key(tac));
                feed.writer.apply_watcher_event(&Event::Apply(tac.clone()));
            }
            Event::InitDone => {
                let gone = feed
                    .relisting
                    .end_by(self.store.state(), |tac| tac_key(&**tac))
                    .unwrap_or_default();
                let mut wakes = self.wake_table();
                for tac in &gone {
                    wakes.remove(&identity(tac));
                    drop_entry(&mut feed.written, &*tac_key(&**tac));
                    feed.writer.apply_watcher_event(&Event::Delete((**tac).clone()));
                }
                return gone;
            }
            Event::Apply(_) => feed.writer.apply_watcher_event(event),
            Event::Delete(tac) => {
                self.wake_table().remove(&identity(tac));
                feed.writer.apply_watcher_event(event);
            }
        }
        Vec::new()
    }

    /// The credential's status as of our last write, even when the cache has not caught up.
    /// `cached` is the status of the version `meta` describes.
    pub(super) fn status_of(
        &self,
        meta: &ObjectMeta,
        cached: Option<&TenantApiCredentialStatus>,
    ) -> TenantApiCredentialStatus {
        let feed = self.feed();
        match feed.written.get(&key_of(meta)) {
            Some(w) if w.over == meta.resource_version => (*w.status).clone(),
            _ => cached.cloned().unwrap_or_default(),
        }
    }

    /// Remembers the status we wrote over `over`, unless the watch has already moved the cache
    /// past `over` (then it holds our write, or something newer, and nothing would ever drop the
    /// copy). Checked under the lock the watch takes to update the cache.
    pub(super) fn wrote(&self, over: &ObjectMeta, status: &TenantApiCredentialStatus) {
        let mut feed = self.feed();
        let key = key_of(over);
        let current = self.store.get(&ref_of(over));
        if current.as_ref().map(|c| &c.metadata.resource_version) != Some(&over.resource_version) {
            drop_entry(&mut feed.written, &key);
            return;
        }
        let w = Written {
            over: over.resource_version.clone(),
            status: Box::new(status.clone()),
        };
        feed.written.insert(key, w);
    }

    /// Whether this version of the credential asks for a reconcile: its spec (generation),
    /// annotations (a probe-now request), finalizers or deletion changed, or it is new to us. Our
    /// own status writes do not.
    pub(super) fn wakes(&self, tac: &CachedCredential) -> bool {
        let meta = &tac.metadata;
        let now = hash64((
            meta.generation,
            &meta.annotations,
            &meta.finalizers,
            meta.deletion_timestamp.is_some(),
        ));
        self.wake_table().insert(identity(tac), now) != Some(now)
    }

    fn wake_table(&self) -> MutexGuard<'_, HashMap<u64, u64>> {
        self.wakes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn feed(&self) -> MutexGuard<'_, Feed> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One credential object (a re-created credential is another one).
fn identity(tac: &CachedCredential) -> u64 {
    let meta = &tac.metadata;
    hash64((&meta.namespace, &meta.name, &meta.uid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{TenantApiCredential, TenantApiCredentialSpec, TenantApiCredentialStatus};

    fn tac(name: &str, rv: &str, generation: i64) -> CachedCredential {
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
                serde_json::json!({"tenant": "t", "provider": "raise", "credentialRef": {"name": "s", "key": "token"}}),
            )
            .expect("spec"),
            status: None,
        })
    }

    fn rv(c: &Credentials, name: &str) -> Option<String> {
        c.get(&CredentialRef::new(name).within("ns"))
            .and_then(|t| t.metadata.resource_version.clone())
    }

    fn listed(names: &[&str]) -> Credentials {
        let c = Credentials::new();
        c.absorb(&Event::Init);
        for n in names {
            c.absorb(&Event::InitApply(tac(n, "1", 1)));
        }
        c.absorb(&Event::InitDone);
        c
    }

    #[test]
    fn a_relist_updates_in_place_and_answers_who_is_gone() {
        let c = listed(&["a", "b"]);
        assert_eq!(rv(&c, "a").as_deref(), Some("1"));
        c.wrote(&tac("b", "1", 1).metadata, &TenantApiCredentialStatus::default());
        assert!(c.absorb(&Event::Init).is_empty());
        c.absorb(&Event::InitApply(tac("a", "2", 1)));
        assert_eq!(rv(&c, "a").as_deref(), Some("2"), "in place, at once");
        assert_eq!(rv(&c, "b").as_deref(), Some("1"), "served until the re-list ends");
        let gone = c.absorb(&Event::InitDone);
        assert_eq!(gone.iter().map(|t| t.name_any()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(rv(&c, "b"), None);
        assert!(c.feed().written.is_empty(), "nothing kept of a credential that is gone");
    }

    #[test]
    fn our_status_write_serves_until_the_watch_delivers_a_later_version() {
        let c = listed(&["a"]);
        let status = TenantApiCredentialStatus {
            consecutive_failures: 3,
            ..TenantApiCredentialStatus::default()
        };
        let before = tac("a", "1", 1).metadata;
        c.wrote(&before, &status);
        assert_eq!(c.status_of(&before, None), status);
        c.absorb(&Event::Apply(tac("a", "2", 1)));
        assert_eq!(
            c.status_of(&before, None),
            TenantApiCredentialStatus::default(),
            "dropped"
        );
        assert!(c.feed().written.is_empty());
        // The watch delivered our write before the API call returned: nothing to remember.
        c.wrote(&before, &status);
        assert!(c.feed().written.is_empty());
    }

    #[test]
    fn only_changes_a_reconcile_acts_on_wake() {
        let c = listed(&[]);
        let first = tac("a", "1", 1);
        assert!(c.wakes(&first), "new");
        assert!(!c.wakes(&tac("a", "2", 1)), "a status write");
        assert!(c.wakes(&tac("a", "3", 2)), "a spec change");
        let mut asked = tac("a", "4", 2);
        asked.annotations_mut().insert("x".into(), "y".into());
        assert!(c.wakes(&asked), "an annotation");
        c.absorb(&Event::Delete(asked.clone()));
        assert!(c.wakes(&asked), "its entry went with the deletion");
    }
}
