//! A re-list, applied in place: the caches take every object a re-list delivers as an update
//! (never a second full copy beside the first), and at its end learn which of the objects they
//! hold it did not deliver: those went while the watch was down. One diff for every cache.

use std::collections::HashSet;
use std::hash::Hash;

/// Who the current re-list has delivered so far (`None`: no re-list under way).
pub(super) struct Relist<K> {
    seen: Option<HashSet<K>>,
}

impl<K> Default for Relist<K> {
    fn default() -> Self {
        Self { seen: None }
    }
}

impl<K: Hash + Eq> Relist<K> {
    /// A list begins (the watcher's `Init`).
    pub(super) fn begin(&mut self) {
        self.seen = Some(HashSet::new());
    }

    /// The list delivered `key` (outside a list: nothing to record).
    pub(super) fn saw(&mut self, key: K) {
        if let Some(seen) = self.seen.as_mut() {
            seen.insert(key);
        }
    }

    /// The list ended (`InitDone`): of the keys held, those it did not deliver (`None`: no list
    /// was under way).
    pub(super) fn end<'a>(&mut self, held: impl IntoIterator<Item = &'a K>) -> Option<Vec<K>>
    where
        K: Clone + 'a,
    {
        let seen = self.seen.take()?;
        Some(held.into_iter().filter(|k| !seen.contains(*k)).cloned().collect())
    }

    /// As [`Relist::end`], for a cache that holds objects: those whose key it did not deliver.
    pub(super) fn end_by<T>(&mut self, held: impl IntoIterator<Item = T>, key: impl Fn(&T) -> K) -> Option<Vec<T>> {
        let seen = self.seen.take()?;
        Some(held.into_iter().filter(|t| !seen.contains(&key(t))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_relist_did_not_deliver_is_gone() {
        let mut r = Relist::default();
        let held = [1, 2, 3];
        assert_eq!(r.end(&held), None, "no list under way");
        r.saw(1);
        r.begin();
        r.saw(1);
        r.saw(3);
        assert_eq!(r.end(&held), Some(vec![2]));
        assert_eq!(r.end(&held), None, "answered once");
    }
}
