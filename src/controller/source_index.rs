//! Which credentials read which Secret, and the resourceVersion of every Secret in scope as the
//! metadata watch last saw it. This replaces a cache of Secret metadata: a name and a version per
//! Secret (about 150 bytes) instead of a whole `ObjectMeta`, and a Secret event wakes exactly the
//! credentials that read it, and only when its version moved.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::crd::TenantApiCredential;
use crate::secret;

type Key = (String, String);

#[derive(Default)]
pub(super) struct SourceIndex {
    inner: Mutex<Maps>,
}

#[derive(Default)]
struct Maps {
    by_secret: HashMap<Key, HashSet<String>>,
    by_credential: HashMap<Key, Vec<String>>,
    /// resourceVersion per Secret that is not a managed one.
    versions: HashMap<Key, String>,
    /// During a re-list: what it has delivered so far (what is missing at its end was deleted).
    relisting: Option<HashSet<Key>>,
}

impl SourceIndex {
    /// Records the Secrets a credential reads (empty: it reads none, or is gone).
    pub(super) fn set(&self, ns: &str, credential: &str, secrets: Vec<String>) {
        let mut m = self.lock();
        let key = (ns.to_owned(), credential.to_owned());
        if m.by_credential.get(&key) == Some(&secrets) {
            return;
        }
        for old in m.by_credential.remove(&key).unwrap_or_default() {
            let secret_key = (ns.to_owned(), old);
            if let Some(set) = m.by_secret.get_mut(&secret_key) {
                set.remove(credential);
                if set.is_empty() {
                    m.by_secret.remove(&secret_key);
                }
            }
        }
        for s in &secrets {
            m.by_secret
                .entry((ns.to_owned(), s.clone()))
                .or_default()
                .insert(credential.to_owned());
        }
        if !secrets.is_empty() {
            m.by_credential.insert(key, secrets);
        }
    }

    /// The Secret's resourceVersion as the watch last saw it.
    pub(super) fn version(&self, ns: &str, secret: &str) -> Option<String> {
        self.lock().versions.get(&(ns.to_owned(), secret.to_owned())).cloned()
    }

    /// Takes one event of the Secret metadata watch; answers the credentials to reconcile.
    pub(super) fn absorb(
        &self,
        event: watcher::Event<PartialObjectMeta<Secret>>,
    ) -> Vec<ObjectRef<TenantApiCredential>> {
        let mut m = self.lock();
        let mut woken = Vec::new();
        match event {
            watcher::Event::Init => m.relisting = Some(HashSet::new()),
            watcher::Event::InitApply(s) | watcher::Event::Apply(s) => {
                let Some((key, version)) = identity(&s) else {
                    return woken;
                };
                if let Some(seen) = m.relisting.as_mut() {
                    seen.insert(key.clone());
                }
                if m.versions.get(&key) != Some(&version) {
                    m.wake(&key, &mut woken);
                    m.versions.insert(key, version);
                }
            }
            watcher::Event::Delete(s) => {
                if let Some((key, _)) = identity(&s) {
                    m.versions.remove(&key);
                    m.wake(&key, &mut woken);
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = m.relisting.take() {
                    let gone: Vec<Key> = m.versions.keys().filter(|k| !seen.contains(*k)).cloned().collect();
                    for key in gone {
                        m.versions.remove(&key);
                        m.wake(&key, &mut woken);
                    }
                    m.versions.shrink_to_fit();
                }
            }
        }
        woken
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Maps {
    fn wake(&self, secret: &Key, into: &mut Vec<ObjectRef<TenantApiCredential>>) {
        let Some(readers) = self.by_secret.get(secret) else {
            return;
        };
        into.extend(readers.iter().map(|name| ObjectRef::new(name).within(&secret.0)));
    }
}

/// Namespace, name and version of a Secret that can be a source (managed Secrets are ours).
fn identity(s: &PartialObjectMeta<Secret>) -> Option<(Key, String)> {
    if s.labels().get(secret::MANAGED_BY_LABEL).map(String::as_str) == Some(secret::MANAGED_BY_VALUE) {
        return None;
    }
    let key = (s.namespace()?, s.metadata.name.clone()?);
    Some((key, s.metadata.resource_version.clone()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, rv: &str) -> PartialObjectMeta<Secret> {
        let mut m = PartialObjectMeta::<Secret>::default();
        m.metadata.name = Some(name.into());
        m.metadata.namespace = Some("ns".into());
        m.metadata.resource_version = Some(rv.into());
        m
    }

    fn names(refs: Vec<ObjectRef<TenantApiCredential>>) -> Vec<String> {
        let mut n: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        n.sort();
        n
    }

    #[test]
    fn wakes_readers_only_when_the_version_moves() {
        let index = SourceIndex::default();
        index.set("ns", "a", vec!["src".into()]);
        index.set("ns", "b", vec!["src".into(), "other".into()]);
        assert_eq!(names(index.absorb(watcher::Event::Apply(meta("src", "1")))), ["a", "b"]);
        assert_eq!(index.version("ns", "src").as_deref(), Some("1"));
        assert!(
            index.absorb(watcher::Event::Apply(meta("src", "1"))).is_empty(),
            "same version"
        );
        assert!(index.absorb(watcher::Event::Apply(meta("unrelated", "7"))).is_empty());
        assert_eq!(
            index.version("ns", "unrelated").as_deref(),
            Some("7"),
            "every Secret's version is known"
        );
        index.set("ns", "a", Vec::new());
        assert_eq!(names(index.absorb(watcher::Event::Apply(meta("src", "2")))), ["b"]);
        assert_eq!(names(index.absorb(watcher::Event::Delete(meta("src", "2")))), ["b"]);
        assert_eq!(index.version("ns", "src"), None);
    }

    #[test]
    fn a_relist_forgets_what_it_no_longer_lists_and_wakes_its_readers() {
        let index = SourceIndex::default();
        index.set("ns", "a", vec!["gone".into()]);
        index.absorb(watcher::Event::Apply(meta("gone", "1")));
        index.absorb(watcher::Event::Apply(meta("kept", "1")));
        index.absorb(watcher::Event::Init);
        assert!(index.absorb(watcher::Event::InitApply(meta("kept", "1"))).is_empty());
        assert_eq!(names(index.absorb(watcher::Event::InitDone)), ["a"]);
        assert_eq!(index.version("ns", "gone"), None);
        assert_eq!(index.version("ns", "kept").as_deref(), Some("1"));
    }

    #[test]
    fn managed_secrets_are_not_sources() {
        let index = SourceIndex::default();
        let mut m = meta("managed", "1");
        m.metadata.labels = Some([(secret::MANAGED_BY_LABEL.to_owned(), secret::MANAGED_BY_VALUE.to_owned())].into());
        index.set("ns", "a", vec!["managed".into()]);
        assert!(index.absorb(watcher::Event::Apply(m)).is_empty());
        assert_eq!(index.version("ns", "managed"), None);
    }
}
