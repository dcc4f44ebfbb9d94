//! What this process holds per credential beyond what the watches deliver, in one entry: the
//! status it wrote until the watch delivers a later version, the per-probe fields of a decision
//! not worth a write, and how many reconciles in a row failed. Forgotten in one call.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::keys::{Id, drop_entry};
use super::own_writes::OwnWrite;
use crate::crd::TenantApiCredentialStatus;
use crate::decide::publish::Volatile;

#[derive(Default)]
pub(super) struct Memory {
    held: Mutex<HashMap<Id, Held>>,
}

/// Every credential has one once it has been probed twice (`live`), so the rest, held by few
/// and briefly, is boxed: the table's slots stay the size of `live`.
#[derive(Default)]
struct Held {
    /// The per-probe status fields of the newest decision that was not worth a write: the
    /// schedule continues from them.
    live: Option<Volatile>,
    rare: Option<Box<Rare>>,
}

#[derive(Default)]
struct Rare {
    /// The status we wrote, until the watch delivers a version after the one written over.
    written: Option<OwnWrite<TenantApiCredentialStatus>>,
    /// Reconciles that failed in a row (the error backoff).
    failures: u32,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.live.is_none() && self.rare.is_none()
    }
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.written.is_none() && self.failures == 0
    }
}

impl Memory {
    /// The status we wrote over version `rv` of the credential, if that is the version cached.
    pub(super) fn written_over(&self, id: Id, rv: Option<&str>) -> Option<TenantApiCredentialStatus> {
        let held = self.lock();
        held.get(&id)?.rare.as_ref()?.written.as_ref()?.serves(rv).cloned()
    }

    pub(super) fn wrote(&self, id: Id, over: Option<&str>, status: &TenantApiCredentialStatus) {
        let written = OwnWrite::new(over, status.clone());
        self.rare(id, |r| r.written = Some(written));
    }

    /// The watch delivered version `rv` (or the deletion): a status written over another version
    /// is in the cache now, or superseded.
    pub(super) fn delivered(&self, id: Id, rv: Option<&str>, deleted: bool) {
        let mut held = self.lock();
        let stale = held
            .get(&id)
            .and_then(|h| h.rare.as_ref()?.written.as_ref())
            .is_some_and(|w| w.superseded_by(rv, deleted));
        if stale {
            update(&mut held, id, |h| rare(h, |r| r.written = None));
        }
    }

    pub(super) fn drop_written(&self, id: Id) {
        self.rare(id, |r| r.written = None);
    }

    pub(super) fn live(&self, id: Id) -> Option<Volatile> {
        self.lock().get(&id)?.live
    }

    /// Keeps the per-probe fields of a decision not worth a write (`None`: the persisted status
    /// says the same, or was just written).
    pub(super) fn keep_live(&self, id: Id, live: Option<Volatile>) {
        update(&mut self.lock(), id, |h| h.live = live);
    }

    /// One more failed reconcile; answers how many in a row.
    pub(super) fn failed(&self, id: Id) -> u32 {
        let mut n = 0;
        self.rare(id, |r| {
            r.failures = r.failures.saturating_add(1);
            n = r.failures;
        });
        n
    }

    pub(super) fn succeeded(&self, id: Id) {
        self.rare(id, |r| r.failures = 0);
    }

    /// Everything held for the credential.
    pub(super) fn forget(&self, id: Id) {
        drop_entry(&mut self.lock(), &id);
    }

    fn rare(&self, id: Id, f: impl FnOnce(&mut Rare)) {
        update(&mut self.lock(), id, |h| rare(h, f));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Id, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Changes a credential's entry; one that holds nothing any more is removed, and none is made
/// for a change that leaves nothing to hold (a successful reconcile, a status written: the
/// common case, which must not insert and remove an entry each time).
fn update(held: &mut HashMap<Id, Held>, id: Id, f: impl FnOnce(&mut Held)) {
    match held.get_mut(&id) {
        Some(h) => {
            f(h);
            if h.is_empty() {
                drop_entry(held, &id);
            }
        }
        None => {
            let mut h = Held::default();
            f(&mut h);
            if !h.is_empty() {
                held.insert(id, h);
            }
        }
    }
}

/// As [`update`], for the boxed part of an entry: boxed only while it holds something.
fn rare(h: &mut Held, f: impl FnOnce(&mut Rare)) {
    match h.rare.as_deref_mut() {
        Some(r) => {
            f(r);
            if r.is_empty() {
                h.rare = None;
            }
        }
        None => {
            let mut r = Rare::default();
            f(&mut r);
            if !r.is_empty() {
                h.rare = Some(Box::new(r));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_credential_and_one_forget() {
        let m = Memory::default();
        let (a, b) = (Id::of("ns", "a"), Id::of("ns", "b"));
        m.keep_live(a, Some(Volatile::default()));
        assert_eq!(m.failed(a), 1);
        assert_eq!(m.failed(a), 2);
        m.wrote(a, Some("3"), &TenantApiCredentialStatus::default());
        m.failed(b);
        assert_eq!(m.len(), 2);
        m.forget(a);
        assert_eq!((m.live(a), m.written_over(a, Some("3"))), (None, None));
        assert_eq!(m.failed(a), 1, "counted afresh");
        assert_eq!(m.failed(b), 2, "another credential's is kept");
    }

    #[test]
    fn an_entry_that_holds_nothing_is_removed() {
        let m = Memory::default();
        let a = Id::of("ns", "a");
        m.failed(a);
        m.succeeded(a);
        m.keep_live(a, None);
        assert_eq!(m.len(), 0);
        m.keep_live(a, Some(Volatile::default()));
        m.wrote(a, None, &TenantApiCredentialStatus::default());
        m.drop_written(a);
        assert_eq!(m.len(), 1, "live is still held");
        m.keep_live(a, None);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn our_status_serves_until_the_watch_delivers_a_later_version() {
        let m = Memory::default();
        let a = Id::of("ns", "a");
        let status = TenantApiCredentialStatus {
            consecutive_failures: 3,
            ..TenantApiCredentialStatus::default()
        };
        m.wrote(a, Some("1"), &status);
        m.delivered(a, Some("1"), false);
        assert_eq!(
            m.written_over(a, Some("1")),
            Some(status),
            "the version written over again"
        );
        assert_eq!(m.written_over(a, Some("2")), None, "another version is not ours");
        m.delivered(a, Some("2"), false);
        assert_eq!(m.written_over(a, Some("1")), None);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn an_entry_is_no_larger_than_the_live_fields_and_a_pointer() {
        assert!(
            std::mem::size_of::<Held>() <= std::mem::size_of::<Volatile>() + 8,
            "{} bytes",
            std::mem::size_of::<Held>()
        );
    }
}
