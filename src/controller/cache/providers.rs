//! The `ApiProvider` definitions: one more kind the caches watch (cluster-wide, leader and
//! standby alike) through the same [`Mirror`] as the others, each read into a profile once per
//! generation (`decide::provider::definition`) and looked up by every reconcile. The table
//! answers which definitions an event changed; the watch wakes the credentials naming them, and
//! the status reports (`controller::provider_reports`) hear of it through [`Providers::subscribe`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::watcher;
use tokio::sync::broadcast;

use super::keys::Id;
use super::mirror::{Mirror, Table};
use crate::crd::provider::{ApiProvider, ApiProviderStatus};
use crate::decide::provider::definition::{self, Refusal};
use crate::decide::provider::report::ProbesLastHour;
use crate::decide::provider::{self as provider_core, Found, Profile};

/// One definition as read.
pub(in crate::controller) struct Defined {
    pub(in crate::controller) generation: Option<i64>,
    pub(in crate::controller) profile: Result<Arc<Profile>, Refusal>,
    pub(in crate::controller) status: Option<ApiProviderStatus>,
}

/// The definitions by name.
#[derive(Default)]
pub(in crate::controller) struct Definitions(HashMap<String, Defined>);

pub(in crate::controller) struct Providers {
    defined: RwLock<Mirror<Definitions>>,
    changed: broadcast::Sender<String>,
    spend: Mutex<HashMap<String, ProbesLastHour>>,
}

impl Default for Providers {
    fn default() -> Self {
        Self {
            defined: RwLock::default(),
            changed: broadcast::channel(1024).0,
            spend: Mutex::default(),
        }
    }
}

/// A provider's id in the mirror's re-list (an `ApiProvider` has no namespace).
fn id(name: &str) -> Id {
    Id::of("", name)
}

impl Providers {
    /// The provider a credential names.
    pub(in crate::controller) fn find(&self, name: &str) -> Found {
        let defined = self.read();
        provider_core::find(name, |n| {
            defined
                .table
                .0
                .get(n)
                .map(|d| d.profile.clone().map_err(|r| r.message(n)))
        })
    }

    /// Counts a probe sent to `name`.
    pub(in crate::controller) fn probed(&self, name: &str, now: Timestamp) {
        let mut spend = self.spend.lock().unwrap_or_else(PoisonError::into_inner);
        match spend.get_mut(name) {
            Some(s) => s.add(now),
            None => spend.entry(name.to_owned()).or_default().add(now),
        }
    }

    pub(in crate::controller) fn probes_last_hour(&self, name: &str, now: Timestamp) -> u32 {
        let mut spend = self.spend.lock().unwrap_or_else(PoisonError::into_inner);
        spend.get_mut(name).map_or(0, |s| s.at(now))
    }

    /// Names of providers whose definition changed (or went away).
    pub(in crate::controller) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changed.subscribe()
    }

    /// Reads the definitions as they stand.
    pub(in crate::controller) fn with_defined<R>(&self, f: impl FnOnce(&Definitions) -> R) -> R {
        f(&self.read().table)
    }

    fn read(&self) -> RwLockReadGuard<'_, Mirror<Definitions>> {
        self.defined.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The status the API server answered to our write.
    pub(in crate::controller) fn wrote_status(&self, name: &str, status: Option<ApiProviderStatus>) {
        let mut defined = self.defined.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = defined.table.0.get_mut(name) {
            d.status = status;
        }
    }

    /// One event of the watch; answers the names of the definitions it changed (told to every
    /// subscriber too).
    pub(in crate::controller) fn absorb(&self, event: watcher::Event<ApiProvider>) -> Vec<String> {
        let changed = self
            .defined
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .absorb(event);
        for name in &changed {
            let _ = self.changed.send(name.clone());
        }
        changed
    }

    /// Definitions as a first list delivered them (for the shell's unit tests).
    #[cfg(test)]
    pub(in crate::controller) fn listed_as(definitions: Vec<ApiProvider>) -> Self {
        let providers = Self::default();
        providers.absorb(watcher::Event::Init);
        for p in definitions {
            providers.absorb(watcher::Event::InitApply(p));
        }
        providers.absorb(watcher::Event::InitDone);
        providers
    }
}

impl Definitions {
    pub(in crate::controller) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(in crate::controller) fn iter(&self) -> impl Iterator<Item = (&String, &Defined)> {
        self.0.iter()
    }
}

impl Table<ApiProvider> for Definitions {
    type Concern = String;

    fn put(&mut self, p: ApiProvider, changed: &mut Vec<String>) -> Option<Id> {
        let name = p.name_any();
        let generation = p.metadata.generation;
        if let Some(d) = self.0.get_mut(&name)
            && d.generation == generation
        {
            // A status write of ours, or a label: the definition is as read.
            d.status = p.status;
            return Some(id(&name));
        }
        let profile = definition::read(&name, &p.spec).map(Arc::new);
        if let Err(r) = &profile {
            tracing::warn!(provider = %name, reason = r.reason(), message = %r.message(&name), "ApiProvider not accepted");
        }
        let defined = Defined {
            generation,
            profile,
            status: p.status,
        };
        self.0.insert(name.clone(), defined);
        let id = id(&name);
        changed.push(name);
        Some(id)
    }

    fn delete(&mut self, p: ApiProvider, changed: &mut Vec<String>) {
        let name = p.name_any();
        if self.0.remove(&name).is_some() {
            changed.push(name);
        }
    }

    fn sweep(&mut self, delivered: &HashSet<Id>, changed: &mut Vec<String>) {
        self.0.retain(|name, _| {
            let keep = delivered.contains(&id(name));
            if !keep {
                changed.push(name.clone());
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::provider::ApiProviderSpec;

    fn provider(name: &str, generation: i64) -> ApiProvider {
        let spec: ApiProviderSpec = serde_json::from_value(serde_json::json!({
            "hosts": ["api.example.com"],
            "baseUrl": "https://api.example.com",
            "probe": {"path": "/me"}
        }))
        .expect("a spec the schema allows");
        let mut p = ApiProvider::new(name, spec);
        p.metadata.generation = Some(generation);
        p
    }

    fn defined(p: &Providers) -> Vec<String> {
        let mut names: Vec<String> = p.with_defined(|d| d.iter().map(|(n, _)| n.clone()).collect());
        names.sort();
        names
    }

    #[test]
    fn a_relist_drops_what_it_no_longer_shows_and_answers_what_changed() {
        let p = Providers::listed_as(vec![provider("a", 1), provider("b", 1)]);
        let mut told = p.subscribe();
        assert_eq!(defined(&p), ["a", "b"]);
        assert!(p.absorb(watcher::Event::Init).is_empty());
        assert!(
            p.absorb(watcher::Event::InitApply(provider("a", 1))).is_empty(),
            "the same generation: as read"
        );
        assert_eq!(defined(&p), ["a", "b"], "served until the re-list ends");
        assert_eq!(p.absorb(watcher::Event::InitDone), ["b"]);
        assert_eq!(defined(&p), ["a"]);
        assert_eq!(told.try_recv().ok().as_deref(), Some("b"), "subscribers hear of it");
        assert_eq!(
            p.absorb(watcher::Event::Apply(provider("a", 2))),
            ["a"],
            "a new generation"
        );
        assert_eq!(p.absorb(watcher::Event::Delete(provider("a", 2))), ["a"]);
        assert!(
            p.absorb(watcher::Event::Delete(provider("a", 2))).is_empty(),
            "gone already"
        );
        assert!(matches!(p.find("a"), Found::Missing));
    }
}
