//! The credential table: kube-runtime's reflector store of `CachedCredential`s as the credential
//! watch feeds it (the controller reads the same store), and which versions ask for a reconcile.
//!
//! A re-list after the first one updates the store in place ([`Mirror`]) instead of building a
//! second full copy beside it, as the reflector would, and answers the credentials that vanished
//! while the watch was down. The statuses we wrote that the watch has not delivered are held in
//! [`Memory`]. (Putting our own writes into the store instead was measured: the heap was smaller,
//! the process larger; see BENCHMARKS.md.)

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::watcher::Event;

use super::keys::{CredentialRef, Id, credential_key, drop_entry, ref_of};
use super::memory::Memory;
use super::mirror::{Mirror, Table, by_ref};
use super::packed::CachedCredential;
use crate::crd::TenantApiCredentialStatus;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Field ownership and kubectl's copy of the last applied object are never read from the cache:
/// dropping them saves memory.
pub(in crate::controller) fn slim(tac: &mut CachedCredential) {
    tac.managed_fields_mut().clear();
    tac.annotations_mut().remove(LAST_APPLIED);
}

pub(super) struct Credentials {
    store: Store<CachedCredential>,
    feed: Mutex<Mirror<Feed>>,
    /// Per credential, a hash of what a reconcile acts on when it changes (its uid included: a
    /// re-created credential is another one): 16 bytes each, where kube-runtime's predicate
    /// filter keeps three strings.
    wakes: Mutex<HashMap<Id, u64>>,
}

struct Feed {
    writer: Writer<CachedCredential>,
    /// The first list went through the reflector (which marks the store ready at its end).
    listed: bool,
}

impl Table<&CachedCredential> for Feed {
    type Concern = CredentialRef;

    fn put(&mut self, tac: &CachedCredential, _: &mut Vec<CredentialRef>) -> Option<Id> {
        self.writer.apply_watcher_event(&Event::Apply(tac.clone()));
        Some(Id::of_meta(&tac.metadata))
    }

    fn delete(&mut self, tac: &CachedCredential, _: &mut Vec<CredentialRef>) {
        self.writer.apply_watcher_event(&Event::Delete(tac.clone()));
    }

    /// Answers the credentials it dropped: they are gone.
    fn sweep(&mut self, delivered: &HashSet<Id>, gone: &mut Vec<CredentialRef>) {
        for tac in self.writer.as_reader().state() {
            if !delivered.contains(&Id::of_meta(&tac.metadata)) {
                gone.push(credential_key(&*tac));
                self.writer.apply_watcher_event(&Event::Delete((*tac).clone()));
            }
        }
    }
}

impl Default for Credentials {
    fn default() -> Self {
        let writer = Writer::default();
        Self {
            store: writer.as_reader(),
            feed: Mutex::new(Mirror::new(Feed { writer, listed: false })),
            wakes: Mutex::default(),
        }
    }
}

impl Credentials {
    /// What kube-runtime's controller reads (and waits on until the first list is in).
    pub(super) fn store(&self) -> Store<CachedCredential> {
        self.store.clone()
    }

    pub(super) fn get(&self, key: &CredentialRef) -> Option<Arc<CachedCredential>> {
        self.store.get(key)
    }

    /// Applies one event of the credential watch; answers the credentials a re-list found gone.
    /// A status we wrote is dropped from `memory` once the watch delivers a version after it.
    pub(super) fn absorb(&self, event: &Event<CachedCredential>, memory: &Memory) -> Vec<CredentialRef> {
        let mut feed = self.feed();
        if let Event::Apply(tac) | Event::InitApply(tac) | Event::Delete(tac) = event {
            let rv = tac.metadata.resource_version.as_deref();
            memory.delivered(Id::of_meta(&tac.metadata), rv, matches!(event, Event::Delete(_)));
        }
        if !feed.table.listed {
            feed.table.listed = matches!(event, Event::InitDone);
            feed.table.writer.apply_watcher_event(event);
            return Vec::new();
        }
        feed.absorb(by_ref(event))
    }

    /// Remembers in `memory` the status we wrote over `over`, unless the watch has already moved
    /// the store past `over` (then it holds our write, or something newer, and nothing would
    /// ever drop the copy). Checked under the lock the watch takes to update the store.
    pub(super) fn wrote(&self, over: &ObjectMeta, status: &TenantApiCredentialStatus, memory: &Memory) {
        let _feed = self.feed();
        let id = Id::of_meta(over);
        let current = self.store.get(&ref_of(over));
        if current.as_ref().map(|c| &c.metadata.resource_version) != Some(&over.resource_version) {
            memory.drop_written(id);
            return;
        }
        memory.wrote(id, over.resource_version.as_deref(), status);
    }

    /// Whether this version of the credential asks for a reconcile: what
    /// `decide::priority::wake_digest` reads of it changed since the last, or it is new to us.
    pub(super) fn wakes(&self, tac: &CachedCredential) -> bool {
        let meta = &tac.metadata;
        let now = crate::decide::priority::wake_digest(meta);
        self.wake_table().insert(Id::of_meta(meta), now) != Some(now)
    }

    pub(super) fn forget(&self, id: Id) {
        drop_entry(&mut self.wake_table(), &id);
    }

    fn wake_table(&self) -> MutexGuard<'_, HashMap<Id, u64>> {
        self.wakes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn feed(&self) -> MutexGuard<'_, Mirror<Feed>> {
        self.feed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::tac;
    use super::*;

    fn rv(c: &Credentials, name: &str) -> Option<String> {
        c.get(&CredentialRef::new(name).within("ns"))
            .and_then(|t| t.metadata.resource_version.clone())
    }

    fn listed(names: &[&str], memory: &Memory) -> Credentials {
        let c = Credentials::default();
        c.absorb(&Event::Init, memory);
        for n in names {
            c.absorb(&Event::InitApply(tac(n, "1", 1)), memory);
        }
        c.absorb(&Event::InitDone, memory);
        c
    }

    #[test]
    fn a_relist_updates_in_place_and_answers_who_is_gone() {
        let memory = Memory::default();
        let c = listed(&["a", "b"], &memory);
        assert_eq!(rv(&c, "a").as_deref(), Some("1"));
        assert!(c.absorb(&Event::Init, &memory).is_empty());
        c.absorb(&Event::InitApply(tac("a", "2", 1)), &memory);
        assert_eq!(rv(&c, "a").as_deref(), Some("2"), "in place, at once");
        assert_eq!(rv(&c, "b").as_deref(), Some("1"), "served until the re-list ends");
        let gone = c.absorb(&Event::InitDone, &memory);
        assert_eq!(gone.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(rv(&c, "b"), None);
    }

    #[test]
    fn our_status_write_serves_until_the_watch_delivers_a_later_version() {
        let memory = Memory::default();
        let c = listed(&["a"], &memory);
        let status = TenantApiCredentialStatus {
            consecutive_failures: 3,
            ..TenantApiCredentialStatus::default()
        };
        let before = tac("a", "1", 1).metadata;
        let id = Id::of_meta(&before);
        c.wrote(&before, &status, &memory);
        assert_eq!(memory.written_over(id, Some("1")), Some(status.clone()));
        c.absorb(&Event::Apply(tac("a", "2", 1)), &memory);
        assert_eq!(memory.written_over(id, Some("1")), None, "dropped");
        assert_eq!(memory.len(), 0);
        // The watch delivered our write before the API call returned: nothing to remember.
        c.wrote(&before, &status, &memory);
        assert_eq!(memory.len(), 0);
    }

    #[test]
    fn only_changes_a_reconcile_acts_on_wake() {
        let memory = Memory::default();
        let c = listed(&[], &memory);
        let first = tac("a", "1", 1);
        assert!(c.wakes(&first), "new");
        assert!(!c.wakes(&tac("a", "2", 1)), "a status write");
        assert!(c.wakes(&tac("a", "3", 2)), "a spec change");
        let mut asked = tac("a", "4", 2);
        asked.annotations_mut().insert("x".into(), "y".into());
        assert!(c.wakes(&asked), "an annotation");
        let mut again = asked.clone();
        again.metadata.uid = Some("uid-other".into());
        assert!(c.wakes(&again), "re-created under the same name");
        c.forget(Id::of_meta(&asked.metadata));
        assert!(c.wakes(&again), "its entry went when it was forgotten");
    }
}
