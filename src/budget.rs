//! The probe budget shared by every reconcile: a global cap on probes in flight, a cap per
//! provider host, the provider's back-off (Retry-After / rate-limit reset) and the per-key hourly
//! ledger that keeps each key under 1% of its documented limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::provider::{LimitScope, Profile};
use crate::schedule::Ledger;
use crate::token::Fingerprint;

pub struct Budget {
    global: Arc<Semaphore>,
    per_host: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    hosts: HashMap<String, Arc<Semaphore>>,
    /// Until when the provider asked us to stay away: per host, or per key for per-key limits.
    back_off: HashMap<String, Timestamp>,
    ledgers: HashMap<Fingerprint, Ledger>,
    admitted: u64,
}

/// Held while a probe is in flight.
pub struct Permit {
    _global: OwnedSemaphorePermit,
    _host: OwnedSemaphorePermit,
}

fn back_off_key(host: &str, key: &Fingerprint, scope: LimitScope) -> String {
    match scope {
        LimitScope::Host => host.to_owned(),
        LimitScope::Key => format!("{host}/{key}"),
    }
}

impl Budget {
    pub fn new(max_concurrent: usize, max_per_host: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(max_concurrent.max(1))),
            per_host: max_per_host.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits one probe of `key` against `host` at `now`, or says from when it may go. An admitted
    /// probe is entered in the key's ledger at once, so concurrent reconciles cannot overspend.
    pub fn admit(&self, host: &str, key: &Fingerprint, profile: &Profile, now: Timestamp) -> Result<(), Timestamp> {
        let mut st = self.lock();
        let gate = back_off_key(host, key, profile.limit_scope);
        if let Some(until) = st.back_off.get(&gate).copied() {
            if until > now {
                return Err(until);
            }
            st.back_off.remove(&gate);
        }
        let ledger = st.ledgers.entry(key.clone()).or_default();
        ledger.check(profile.hourly_probe_budget(), now)?;
        ledger.record(now);
        st.admitted += 1;
        if st.admitted.is_multiple_of(4096) {
            // Forget keys not probed for an hour (rotated or deleted credentials).
            st.ledgers.retain(|_, l| {
                let _ = l.check(u32::MAX, now);
                !l.is_empty()
            });
        }
        Ok(())
    }

    /// Waits for a slot under the global and the per-host caps.
    pub async fn acquire(&self, host: &str) -> Permit {
        let host_sem = {
            let mut st = self.lock();
            let per_host = self.per_host;
            st.hosts
                .entry(host.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(per_host)))
                .clone()
        };
        // Acquiring fails only on a closed semaphore, and these are never closed.
        let host = host_sem
            .acquire_owned()
            .await
            .expect("probe semaphores are never closed");
        let global = self
            .global
            .clone()
            .acquire_owned()
            .await
            .expect("probe semaphores are never closed");
        Permit {
            _global: global,
            _host: host,
        }
    }

    /// Records the provider's request to stay away until `until`.
    pub fn back_off(&self, host: &str, key: &Fingerprint, scope: LimitScope, until: Timestamp) {
        let mut st = self.lock();
        let gate = back_off_key(host, key, scope);
        let entry = st.back_off.entry(gate).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Probes admitted for `key` in the last hour.
    pub fn spent(&self, key: &Fingerprint, now: Timestamp) -> usize {
        let mut st = self.lock();
        st.ledgers.get_mut(key).map_or(0, |l| {
            let _ = l.check(u32::MAX, now);
            l.len()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ProviderName;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("valid")
    }

    #[test]
    fn per_key_budget_and_back_off_scopes() {
        let b = Budget::new(4, 2);
        let cs = Profile::for_provider(&ProviderName::CharityStack).expect("known");
        let raise = Profile::for_provider(&ProviderName::Raise).expect("known");
        let k1 = Fingerprint::of(b"one");
        let k2 = Fingerprint::of(b"two");
        for i in 0..10 {
            assert_eq!(b.admit("cs:443", &k1, &cs, t(i)), Ok(()));
        }
        assert_eq!(
            b.admit("cs:443", &k1, &cs, t(20)),
            Err(t(3600)),
            "11th probe within the hour"
        );
        assert_eq!(
            b.admit("cs:443", &k2, &cs, t(20)),
            Ok(()),
            "another key has its own budget"
        );
        // A per-key limit holds back that key only; an undocumented one the whole host.
        b.back_off("cs:443", &k2, cs.limit_scope, t(500));
        assert_eq!(b.admit("cs:443", &k2, &cs, t(30)), Err(t(500)));
        b.back_off("raise:443", &k1, raise.limit_scope, t(400));
        assert_eq!(b.admit("raise:443", &k2, &raise, t(30)), Err(t(400)));
        assert_eq!(b.admit("raise:443", &k2, &raise, t(400)), Ok(()));
        assert_eq!(b.spent(&k1, t(60)), 10);
    }

    #[tokio::test]
    async fn host_cap_limits_probes_in_flight() {
        let b = Budget::new(10, 1);
        let first = b.acquire("h").await;
        let second = tokio::time::timeout(std::time::Duration::from_millis(50), b.acquire("h")).await;
        assert!(second.is_err(), "the host's only slot is taken");
        let other = tokio::time::timeout(std::time::Duration::from_millis(50), b.acquire("other")).await;
        assert!(other.is_ok(), "other hosts are not held up");
        drop(first);
    }
}
