//! Which credentials read which Secret, and the resourceVersion of every Secret in scope as the
//! metadata watch last saw it. This replaces a cache of Secret metadata: two numbers per Secret
//! (a hash of its namespace and name, and its version: about 20 bytes in the table) instead of a
//! whole `ObjectMeta`, and a Secret event wakes exactly the credentials that read it, and only when
//! its version moved. Who reads what is two allocations per credential: its name under each
//! Secret it reads, and the hashes of those Secrets under its own.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::super::hash64;
use super::keys::{CredentialRef, Id};
use super::mirror::{Mirror, Table};
use crate::decide::secret;

#[derive(Default)]
pub(super) struct SourceIndex {
    inner: Mutex<Mirror<Maps>>,
}

/// Secrets and credentials are keyed by [`Id`] (on collisions, see there).
#[derive(Default)]
struct Maps {
    /// Secret → the credentials that read it.
    by_secret: HashMap<Id, Readers>,
    /// Credential → the Secrets it reads.
    by_credential: HashMap<Id, Box<[Id]>>,
    /// Per Secret that is not a managed one, its resourceVersion ([`Version`]). Every Secret in
    /// scope is here, most of them read by nobody, so neither is a string.
    versions: HashMap<Id, Version>,
}

/// A resourceVersion as the index keeps it. The API server's are decimal numbers (etcd
/// revisions), kept as such and given back for reads. Anything else is opaque to clients, so only
/// its hash is kept, to tell that it moved, and reads of that Secret are plain reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    Number(u64),
    Opaque(u64),
}

impl Version {
    fn of(rv: &str) -> Self {
        match rv.parse() {
            Ok(n) if !rv.starts_with(['0', '+']) || rv == "0" => Self::Number(n),
            _ => Self::Opaque(hash64(rv)),
        }
    }
}

/// The credentials that read one Secret, as `namespace/name` lines in one text (names hold no
/// line break): most Secrets have one reader, and a list of strings would be three allocations.
#[derive(Default)]
struct Readers(Box<str>);

impl Readers {
    fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split('\n').filter(|r| !r.is_empty())
    }

    fn add(&mut self, reader: &str) {
        if self.iter().any(|r| r == reader) {
            return;
        }
        let mut text = String::with_capacity(self.0.len() + 1 + reader.len());
        text.push_str(&self.0);
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(reader);
        self.0 = text.into_boxed_str();
    }

    fn remove(&mut self, reader: &str) {
        self.0 = self
            .iter()
            .filter(|r| *r != reader)
            .collect::<Vec<_>>()
            .join("\n")
            .into_boxed_str();
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl SourceIndex {
    /// Records the Secrets a credential reads (empty: it reads none, or is gone).
    pub(super) fn set(&self, ns: &str, credential: &str, secrets: Vec<String>) {
        let mut m = self.lock();
        let m = &mut m.table;
        let cred = Id::of(ns, credential);
        let ids: Box<[Id]> = secrets.iter().map(|s| Id::of(ns, s)).collect();
        let same = m.by_credential.get(&cred).is_some_and(|old| *old == ids);
        if same || (ids.is_empty() && !m.by_credential.contains_key(&cred)) {
            return;
        }
        let reader = format!("{ns}/{credential}");
        for old in m.by_credential.remove(&cred).unwrap_or_default() {
            if let Some(readers) = m.by_secret.get_mut(&old) {
                readers.remove(&reader);
                if readers.is_empty() {
                    m.by_secret.remove(&old);
                }
            }
        }
        for id in &ids {
            m.by_secret.entry(*id).or_default().add(&reader);
        }
        if !ids.is_empty() {
            m.by_credential.insert(cred, ids);
        }
    }

    /// The Secret's resourceVersion as the watch last saw it (when it is a number).
    pub(super) fn version(&self, ns: &str, secret: &str) -> Option<String> {
        match self.lock().table.versions.get(&Id::of(ns, secret))? {
            Version::Number(n) => Some(n.to_string()),
            Version::Opaque(_) => None,
        }
    }

    /// Takes one event of the Secret metadata watch; answers the credentials to reconcile.
    pub(super) fn absorb(&self, event: watcher::Event<PartialObjectMeta<Secret>>) -> Vec<CredentialRef> {
        self.lock().absorb(event)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mirror<Maps>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Table<PartialObjectMeta<Secret>> for Maps {
    type Concern = CredentialRef;

    fn put(&mut self, s: PartialObjectMeta<Secret>, woken: &mut Vec<CredentialRef>) -> Option<Id> {
        let (id, version) = identity(&s)?;
        if self.versions.insert(id, version) != Some(version) {
            self.wake(id, woken);
        }
        Some(id)
    }

    fn delete(&mut self, s: PartialObjectMeta<Secret>, woken: &mut Vec<CredentialRef>) {
        if let Some((id, _)) = identity(&s) {
            self.versions.remove(&id);
            self.wake(id, woken);
        }
    }

    /// A read Secret that went while the watch was down wakes its readers.
    fn sweep(&mut self, delivered: &HashSet<Id>, woken: &mut Vec<CredentialRef>) {
        let gone: Vec<Id> = self
            .versions
            .keys()
            .filter(|id| !delivered.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.versions.remove(&id);
            self.wake(id, woken);
        }
        self.versions.shrink_to_fit();
    }
}

impl Maps {
    fn wake(&self, secret: Id, into: &mut Vec<CredentialRef>) {
        let Some(readers) = self.by_secret.get(&secret) else {
            return;
        };
        into.extend(
            readers
                .iter()
                .filter_map(|r| r.split_once('/'))
                .map(|(ns, name)| ObjectRef::new(name).within(ns)),
        );
    }
}

/// The id and version of a Secret that can be a source (managed Secrets are ours).
fn identity(s: &PartialObjectMeta<Secret>) -> Option<(Id, Version)> {
    if s.labels().get(secret::MANAGED_BY_LABEL).map(String::as_str) == Some(secret::MANAGED_BY_VALUE) {
        return None;
    }
    let meta = &s.metadata;
    Some((
        Id::of(meta.namespace.as_deref()?, meta.name.as_deref()?),
        Version::of(meta.resource_version.as_deref()?),
    ))
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

    fn names(refs: Vec<CredentialRef>) -> Vec<String> {
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
        index.set("ns", "b", vec!["never-existed".into()]);
        index.absorb(watcher::Event::Apply(meta("gone", "1")));
        index.absorb(watcher::Event::Apply(meta("kept", "1")));
        index.absorb(watcher::Event::Init);
        assert!(index.absorb(watcher::Event::InitApply(meta("kept", "1"))).is_empty());
        assert_eq!(names(index.absorb(watcher::Event::InitDone)), ["a"]);
        assert_eq!(index.version("ns", "gone"), None);
        assert_eq!(index.version("ns", "kept").as_deref(), Some("1"));
    }

    #[test]
    fn a_version_that_is_not_a_plain_number_is_only_compared() {
        let index = SourceIndex::default();
        index.set("ns", "a", vec!["src".into()]);
        for rv in ["abc", "007", "+7"] {
            assert_eq!(
                names(index.absorb(watcher::Event::Apply(meta("src", rv)))),
                ["a"],
                "{rv}"
            );
            assert_eq!(index.version("ns", "src"), None, "{rv} is not given back for a read");
            assert!(
                index.absorb(watcher::Event::Apply(meta("src", rv))).is_empty(),
                "{rv} again"
            );
        }
        index.absorb(watcher::Event::Apply(meta("src", "0")));
        assert_eq!(index.version("ns", "src").as_deref(), Some("0"));
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

    #[test]
    fn readers_of_one_secret_come_and_go_one_by_one() {
        let index = SourceIndex::default();
        index.set("ns", "a", vec!["shared".into()]);
        index.set("ns", "b", vec!["shared".into()]);
        index.set("ns", "b", vec!["shared".into()]);
        index.set("other", "a", vec!["shared".into()]);
        assert_eq!(
            names(index.absorb(watcher::Event::Apply(meta("shared", "1")))),
            ["a", "b"]
        );
        index.set("ns", "a", vec!["own".into()]);
        assert_eq!(names(index.absorb(watcher::Event::Apply(meta("shared", "2")))), ["b"]);
        assert_eq!(names(index.absorb(watcher::Event::Apply(meta("own", "1")))), ["a"]);
        index.set("ns", "b", Vec::new());
        assert!(index.absorb(watcher::Event::Apply(meta("shared", "3"))).is_empty());
        assert!(
            index.lock().table.by_secret.values().all(|r| !r.is_empty()),
            "no empty entry is kept"
        );
    }
}
