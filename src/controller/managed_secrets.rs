//! The managed Secrets as the operator knows them: one [`Observed`] projection per Secret the
//! label-selected watch delivers (never the whole object), plus what this process wrote that the
//! watch has not delivered yet (a reconcile that outruns the watch must not create or write again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::context::drop_entry;
use super::{Key, key};
use crate::crd::TenantApiCredential;
use crate::secret::{self, Observed};

#[derive(Default)]
pub(super) struct ManagedSecrets {
    cache: RwLock<Cache>,
    /// What we wrote, with the version the cache held when we wrote (None: none).
    written: Mutex<HashMap<Key, Written>>,
}

#[derive(Default)]
struct Cache {
    live: HashMap<Key, Arc<Observed>>,
    /// A re-list in progress: it replaces `live` when complete.
    relist: Option<HashMap<Key, Arc<Observed>>>,
}

struct Written {
    over: Option<Box<str>>,
    secret: Arc<Observed>,
}

impl ManagedSecrets {
    /// The managed Secret at `ns/name` as the watch has it, or as we last wrote it when the watch
    /// has not caught up with that write yet.
    pub(super) fn get(&self, ns: &str, name: &str) -> Option<Arc<Observed>> {
        let key = key(ns, name);
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        let cached = self.cached(&key);
        let Some(w) = written.get(&key) else {
            return cached;
        };
        if cached.as_ref().and_then(|s| s.resource_version()) == w.over.as_deref() {
            return Some(w.secret.clone());
        }
        drop_entry(&mut written, &key);
        cached
    }

    /// Remembers a Secret we wrote over `before` (what `get` answered), until the watch delivers
    /// it or anything after it.
    pub(super) fn wrote(&self, ns: &str, before: Option<&Observed>, secret: Secret) {
        let Some(name) = secret.metadata.name.as_deref() else {
            return;
        };
        let key = key(ns, name);
        let over = before.and_then(Observed::resource_version);
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        // The watch may have delivered our write before the call returned: nothing to remember.
        // (Checked under the lock `absorb` takes after updating the cache.)
        if self.cached(&key).as_ref().and_then(|s| s.resource_version()) != over {
            drop_entry(&mut written, &key);
            return;
        }
        let w = Written {
            over: over.map(Box::from),
            secret: Arc::new(Observed::of(secret)),
        };
        written.insert(key, w);
    }

    /// Drops what we remember of our own write (the credential is gone).
    pub(super) fn forget(&self, ns: &str, name: &str) {
        drop_entry(
            &mut self.written.lock().unwrap_or_else(PoisonError::into_inner),
            &key(ns, name),
        );
    }

    fn cached(&self, key: &str) -> Option<Arc<Observed>> {
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .live
            .get(key)
            .cloned()
    }

    /// Applies one watch event; answers the credentials whose Secret it touched (including those
    /// whose Secret a re-list no longer shows: deleted while the watch was down).
    pub(super) fn absorb(&self, event: watcher::Event<Secret>) -> Vec<ObjectRef<TenantApiCredential>> {
        let mut woken = Vec::new();
        let mut touched = Vec::new();
        {
            let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
            match event {
                watcher::Event::Init => cache.relist = Some(HashMap::new()),
                watcher::Event::InitApply(s) => {
                    if let Some((key, owner, observed)) = project(s) {
                        woken.extend(owner);
                        touched.push((key.clone(), observed.resource_version().map(Box::from)));
                        cache.relist.get_or_insert_default().insert(key, observed);
                    }
                }
                watcher::Event::InitDone => {
                    let fresh = cache.relist.take().unwrap_or_default();
                    for (key, gone) in cache.live.iter().filter(|(k, _)| !fresh.contains_key(*k)) {
                        woken.extend(owner_of(key, gone));
                        touched.push((key.clone(), None));
                    }
                    cache.live = fresh;
                }
                watcher::Event::Apply(s) => {
                    if let Some((key, owner, observed)) = project(s) {
                        woken.extend(owner);
                        touched.push((key.clone(), observed.resource_version().map(Box::from)));
                        cache.live.insert(key, observed);
                    }
                }
                watcher::Event::Delete(s) => {
                    if let Some((key, owner, _)) = project(s) {
                        woken.extend(owner);
                        cache.live.remove(&key);
                        touched.push((key, None));
                    }
                }
            }
        }
        // What we wrote is dropped once the cache holds a version after it.
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, version) in touched {
            if written.get(&key).is_some_and(|w| w.over != version) {
                drop_entry(&mut written, &key);
            }
        }
        woken
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        let written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        (cache.live.len(), written.len())
    }
}

type Projected = (Key, Option<ObjectRef<TenantApiCredential>>, Arc<Observed>);

fn project(s: Secret) -> Option<Projected> {
    let ns = s.metadata.namespace.clone()?;
    let key = key(&ns, s.metadata.name.as_deref()?);
    let observed = Arc::new(Observed::of(s));
    let owner = owner_of(&key, &observed);
    Some((key, owner, observed))
}

/// The credential a managed Secret belongs to, per its label.
fn owner_of(key: &str, s: &Observed) -> Option<ObjectRef<TenantApiCredential>> {
    let (ns, _) = key.split_once('/')?;
    Some(ObjectRef::new(s.label(secret::CREDENTIAL_LABEL)?).within(ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn managed(name: &str, credential: &str, rv: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                labels: Some(BTreeMap::from([
                    (secret::MANAGED_BY_LABEL.into(), secret::MANAGED_BY_VALUE.into()),
                    (secret::CREDENTIAL_LABEL.into(), credential.into()),
                ])),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    fn names(refs: Vec<ObjectRef<TenantApiCredential>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn events_wake_the_owning_credential() {
        let m = ManagedSecrets::default();
        assert_eq!(names(m.absorb(watcher::Event::Apply(managed("s", "c", "1")))), ["c"]);
        assert_eq!(
            m.get("ns", "s").and_then(|s| s.resource_version().map(str::to_owned)),
            Some("1".into())
        );
        assert_eq!(names(m.absorb(watcher::Event::Delete(managed("s", "c", "2")))), ["c"]);
        assert!(m.get("ns", "s").is_none());
    }

    #[test]
    fn a_relist_replaces_the_cache_and_wakes_owners_of_vanished_secrets() {
        let m = ManagedSecrets::default();
        m.absorb(watcher::Event::Apply(managed("a", "ca", "1")));
        m.absorb(watcher::Event::Apply(managed("b", "cb", "1")));
        m.absorb(watcher::Event::Init);
        assert_eq!(
            names(m.absorb(watcher::Event::InitApply(managed("a", "ca", "1")))),
            ["ca"]
        );
        assert!(
            m.get("ns", "b").is_some(),
            "the old view serves until the re-list completes"
        );
        assert_eq!(names(m.absorb(watcher::Event::InitDone)), ["cb"]);
        assert!(m.get("ns", "b").is_none());
        assert_eq!(m.len().0, 1);
    }

    #[test]
    fn our_write_serves_until_the_watch_delivers_a_later_version() {
        let m = ManagedSecrets::default();
        m.absorb(watcher::Event::Apply(managed("s", "c", "1")));
        let before = m.get("ns", "s");
        m.wrote("ns", before.as_deref(), managed("s", "c", "2"));
        assert_eq!(
            m.get("ns", "s").and_then(|s| s.resource_version().map(str::to_owned)),
            Some("2".into())
        );
        m.absorb(watcher::Event::Apply(managed("s", "c", "2")));
        assert_eq!(m.len(), (1, 0), "dropped once the watch has it");
    }

    #[test]
    fn a_write_the_watch_already_delivered_is_not_remembered() {
        let m = ManagedSecrets::default();
        m.absorb(watcher::Event::Apply(managed("s", "c", "1")));
        let before = m.get("ns", "s");
        // The watch outran the API call's answer.
        m.absorb(watcher::Event::Apply(managed("s", "c", "2")));
        m.wrote("ns", before.as_deref(), managed("s", "c", "2"));
        assert_eq!(m.len(), (1, 0));
        // Created where the cache had nothing, and the watch not there yet: remembered.
        m.wrote("ns", None, managed("t", "d", "5"));
        assert_eq!(m.len(), (1, 1));
        m.forget("ns", "t");
        assert_eq!(m.len(), (1, 0));
    }
}
