//! One way a watch feeds a table, for every table of the cache. A re-list is applied in place:
//! each object it delivers is taken as an update (never a second full copy beside the first), and
//! at its end the table drops what it holds that the re-list did not deliver (gone while the
//! watch was down).

use std::collections::HashSet;

use kube::runtime::watcher::Event;

use super::keys::Id;

/// A table a watch feeds. Each answers, per event, what it concerns (for the managed Secrets and
/// the source index: whom to wake; for the credentials: who is gone; for the ApiProviders: which
/// definitions changed).
pub(super) trait Table<O> {
    type Concern;
    /// Takes in a delivered object; answers its id (`None`: not one this table holds).
    fn put(&mut self, object: O, concerns: &mut Vec<Self::Concern>) -> Option<Id>;
    /// The watch reports the object deleted.
    fn delete(&mut self, object: O, concerns: &mut Vec<Self::Concern>);
    /// A re-list ended: drops every object whose id it did not deliver.
    fn sweep(&mut self, delivered: &HashSet<Id>, concerns: &mut Vec<Self::Concern>);
}

/// A table, and who the re-list under way has delivered so far (`None`: none under way).
#[derive(Default)]
pub(super) struct Mirror<T> {
    pub(super) table: T,
    relisting: Option<HashSet<Id>>,
}

impl<T> Mirror<T> {
    pub(super) fn new(table: T) -> Self {
        Self { table, relisting: None }
    }

    /// Applies one watch event; answers the credentials it concerns.
    pub(super) fn absorb<O>(&mut self, event: Event<O>) -> Vec<T::Concern>
    where
        T: Table<O>,
    {
        let mut concerns = Vec::new();
        match event {
            Event::Init => self.relisting = Some(HashSet::new()),
            Event::InitApply(o) | Event::Apply(o) => {
                if let Some(id) = self.table.put(o, &mut concerns)
                    && let Some(seen) = self.relisting.as_mut()
                {
                    seen.insert(id);
                }
            }
            Event::Delete(o) => self.table.delete(o, &mut concerns),
            Event::InitDone => {
                if let Some(delivered) = self.relisting.take() {
                    self.table.sweep(&delivered, &mut concerns);
                }
            }
        }
        concerns
    }
}

/// An event of borrowed objects (a table that copies what it keeps needs no owned event).
pub(super) fn by_ref<K>(event: &Event<K>) -> Event<&K> {
    match event {
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(o),
        Event::Apply(o) => Event::Apply(o),
        Event::Delete(o) => Event::Delete(o),
        Event::InitDone => Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::CredentialRef;
    use super::*;
    use std::collections::BTreeSet;

    /// Numbers by id; what a sweep drops is reported as a credential named after it.
    #[derive(Default)]
    struct Numbers(BTreeSet<u32>);

    fn id(n: u32) -> Id {
        Id::of("ns", &n.to_string())
    }

    impl Table<u32> for Numbers {
        type Concern = CredentialRef;
        fn put(&mut self, n: u32, _: &mut Vec<CredentialRef>) -> Option<Id> {
            self.0.insert(n);
            Some(id(n))
        }
        fn delete(&mut self, n: u32, _: &mut Vec<CredentialRef>) {
            self.0.remove(&n);
        }
        fn sweep(&mut self, delivered: &HashSet<Id>, concerns: &mut Vec<CredentialRef>) {
            let gone: Vec<u32> = self
                .0
                .iter()
                .copied()
                .filter(|n| !delivered.contains(&id(*n)))
                .collect();
            for n in gone {
                self.0.remove(&n);
                concerns.push(CredentialRef::new(&n.to_string()).within("ns"));
            }
        }
    }

    #[test]
    fn what_a_relist_did_not_deliver_is_swept_once() {
        let mut m = Mirror::new(Numbers::default());
        for n in [1, 2, 3] {
            m.absorb(Event::Apply(n));
        }
        assert!(m.absorb(Event::InitDone).is_empty(), "no re-list under way");
        m.absorb(Event::Init);
        m.absorb(Event::InitApply(1));
        m.absorb(Event::InitApply(4));
        assert_eq!(m.table.0, BTreeSet::from([1, 2, 3, 4]), "served until the re-list ends");
        let gone: Vec<String> = m.absorb(Event::InitDone).into_iter().map(|r| r.name).collect();
        assert_eq!(gone, ["2", "3"]);
        assert_eq!(m.table.0, BTreeSet::from([1, 4]));
        m.absorb(Event::Delete(4));
        assert!(m.absorb(Event::InitDone).is_empty(), "answered once");
        assert_eq!(m.table.0, BTreeSet::from([1]));
    }
}
