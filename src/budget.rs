//! The probe budget shared by every reconcile: the fair share of request slots between tenants
//! and hosts (`decide::fair_share`), the provider's back-off (`decide::back_off`), the per-key
//! hourly ledger that keeps each key under 1% of its documented limit (`decide::ledger`), the
//! catch-up queues (`decide::schedule`) and the answers shared between holders of one token
//! (`decide::sharing`). The decisions are theirs; this holds them behind locks and wakes the
//! waiters the fair share grants.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use tokio::sync::oneshot;

use crate::crd::RateLimitScope;
use crate::decide::back_off::{BackOffs, HeldBack, Hold};
use crate::decide::fair_share::{self, Admission, FairShare, Ticket};
use crate::decide::ledger::Ledgers;
use crate::decide::provider::{LimitScope, Profile};
use crate::decide::schedule::CatchUpQueues;
use crate::decide::sharing::{Answers, Heard, ProbeKey};
use crate::decide::token::Fingerprint;

pub struct Budget {
    slots: Arc<Mutex<Slots>>,
    state: Mutex<State>,
}

/// The scheduler's decisions, and the waiters they wake.
struct Slots {
    fair: FairShare,
    waiters: HashMap<Ticket, oneshot::Sender<()>>,
}

impl Slots {
    /// Gives `ticket` back (held or waiting) and wakes whoever the scheduler grants instead. A
    /// waiter that is gone (its reconcile ended) gives its slot back at once.
    fn finish(&mut self, ticket: Ticket) {
        self.waiters.remove(&ticket);
        let mut granted = self.fair.finish(ticket);
        while let Some(t) = granted.pop() {
            let woken = self.waiters.remove(&t).is_some_and(|w| w.send(()).is_ok());
            if !woken {
                granted.extend(self.fair.finish(t));
            }
        }
    }
}

fn lock_slots(slots: &Mutex<Slots>) -> std::sync::MutexGuard<'_, Slots> {
    slots.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the budget's decisions remember: one lock for all, taken briefly per probe.
#[derive(Default)]
struct State {
    back_offs: BackOffs,
    ledgers: Ledgers,
    catch_up: CatchUpQueues,
    answers: Answers,
}

/// A request slot, held while a probe or token-endpoint call is in flight; given back on drop.
pub struct Permit {
    slots: Arc<Mutex<Slots>>,
    ticket: Ticket,
}

impl Drop for Permit {
    fn drop(&mut self) {
        lock_slots(&self.slots).finish(self.ticket);
    }
}

/// A place in the queue, given up on drop unless it became a permit (a reconcile that ends
/// while it waits leaves nothing behind).
struct Waiting {
    slots: Arc<Mutex<Slots>>,
    ticket: Option<Ticket>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            lock_slots(&self.slots).finish(ticket);
        }
    }
}

impl Budget {
    pub fn new(max_concurrent: usize, max_per_host: usize) -> Self {
        let limits = fair_share::Limits::new(max_concurrent, max_per_host);
        Self {
            slots: Arc::new(Mutex::new(Slots {
                fair: FairShare::new(limits),
                waiters: HashMap::new(),
            })),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits one probe of `key` against `host` at `now`, or says from when it may go: the
    /// provider's back-off first (`decide::back_off`), then the key's hourly ledger
    /// (`decide::ledger`), which enters an admitted probe at once.
    pub fn admit(&self, host: &str, key: &Fingerprint, profile: &Profile, now: Timestamp) -> Result<(), HeldBack> {
        let mut st = self.lock();
        st.back_offs.check(host, key, now)?;
        st.ledgers
            .admit(key, profile.hourly_probe_budget(), now)
            .map_err(|until| HeldBack {
                until,
                by: Hold::Budget,
            })
    }

    /// The latest answer a probe of this token, in this request, heard.
    pub fn heard(&self, key: &ProbeKey) -> Option<Heard> {
        self.lock().answers.get(key)
    }

    /// Records what a probe heard, for the other holders of the same token.
    pub fn hear(&self, key: ProbeKey, heard: Heard) {
        self.lock().answers.hear(key, heard);
    }

    /// The next catch-up slot of `host` (`schedule::catch_up`): overdue probes queue per host.
    pub fn catch_up_slot(&self, host: &str) -> u64 {
        self.lock().catch_up.take(host)
    }

    /// Leading begins: overdue probes queue from the first slot again.
    pub fn begin_catch_up(&self) {
        self.lock().catch_up.restart();
    }

    /// A request slot for `tenant` at `host`, as the fair share grants it, waiting at most
    /// `patience`; `None` when none came (the caller comes back later, `fair_share::retry_after_busy`).
    pub async fn acquire(&self, tenant: &str, host: &str, patience: std::time::Duration) -> Option<Permit> {
        let (ticket, granted) = {
            let mut slots = lock_slots(&self.slots);
            match slots.fair.request(tenant, host) {
                Admission::Granted(ticket) => return Some(self.permit(ticket)),
                Admission::Refused => return None,
                Admission::Queued(ticket) => {
                    let (tx, rx) = oneshot::channel();
                    slots.waiters.insert(ticket, tx);
                    (ticket, rx)
                }
            }
        };
        let mut waiting = Waiting {
            slots: self.slots.clone(),
            ticket: Some(ticket),
        };
        match tokio::time::timeout(patience, granted).await {
            Ok(Ok(())) => {
                waiting.ticket = None;
                Some(self.permit(ticket))
            }
            // Out of patience: `waiting` gives the place (or a slot granted just now) back.
            _ => None,
        }
    }

    fn permit(&self, ticket: Ticket) -> Permit {
        Permit {
            slots: self.slots.clone(),
            ticket,
        }
    }

    /// Gives back the ledger entry of a probe admitted but never sent (no slot came for it).
    pub fn refund(&self, key: &Fingerprint) {
        self.lock().ledgers.refund(key);
    }

    /// Records the provider's request (a 429) that `key`, held by `tenant`, stay away until
    /// `until`, and answers what it holds back (`decide::back_off`).
    pub fn back_off(
        &self,
        tenant: &str,
        host: &str,
        key: &Fingerprint,
        scope: LimitScope,
        until: Timestamp,
        now: Timestamp,
    ) -> RateLimitScope {
        self.lock().back_offs.record(tenant, host, key, scope, until, now)
    }

    /// Probes admitted for `key` in the last hour.
    pub fn spent(&self, key: &Fingerprint, now: Timestamp) -> usize {
        self.lock().ledgers.spent(key, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::t;

    #[test]
    fn per_key_budget_and_back_off_scopes() {
        let b = Budget::new(4, 2);
        let cs = crate::decide::provider::builtin::get("charitystack").expect("known");
        let raise = crate::decide::provider::builtin::get("raise").expect("known");
        let k1 = Fingerprint::of(b"one");
        let k2 = Fingerprint::of(b"two");
        for i in 0..10 {
            assert_eq!(b.admit("cs:443", &k1, &cs, t(i)), Ok(()));
        }
        assert_eq!(
            b.admit("cs:443", &k1, &cs, t(20)),
            Err(HeldBack {
                until: t(3600),
                by: Hold::Budget
            }),
            "11th probe within the hour"
        );
        assert_eq!(
            b.admit("cs:443", &k2, &cs, t(20)),
            Ok(()),
            "another key has its own budget"
        );
        let held = |until, by| Err(HeldBack { until: t(until), by });
        // A 429 holds back that key only ...
        assert_eq!(
            b.back_off("a", "cs:443", &k2, cs.limit_scope, t(500), t(30)),
            RateLimitScope::Key
        );
        assert_eq!(b.admit("cs:443", &k2, &cs, t(30)), held(500, Hold::Key));
        assert_eq!(b.admit("raise:443", &k2, &raise, t(30)), Ok(()), "other hosts go on");
        let k3 = Fingerprint::of(b"three");
        assert_eq!(b.admit("cs:443", &k3, &cs, t(30)), Ok(()), "other keys go on");
        // ... until another tenant's key of the same host is rate-limited while the first still is.
        assert_eq!(
            b.back_off("b", "cs:443", &k3, cs.limit_scope, t(400), t(40)),
            RateLimitScope::Host
        );
        let k4 = Fingerprint::of(b"four");
        assert_eq!(b.admit("cs:443", &k4, &cs, t(40)), held(400, Hold::Host));
        assert_eq!(b.admit("cs:443", &k4, &cs, t(400)), Ok(()));
        assert_eq!(b.admit("cs:443", &k2, &cs, t(400)), held(500, Hold::Key));
        // Two 429s far apart are two keys' own business.
        assert_eq!(
            b.back_off("a", "raise:443", &k1, raise.limit_scope, t(600), t(550)),
            RateLimitScope::Key
        );
        assert_eq!(
            b.back_off("b", "raise:443", &k2, raise.limit_scope, t(800), t(700)),
            RateLimitScope::Key
        );
        assert_eq!(b.admit("raise:443", &k3, &raise, t(700)), Ok(()));
        assert_eq!(b.spent(&k1, t(60)), 10);
    }

    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn host_cap_limits_probes_in_flight() {
        let b = Budget::new(10, 1);
        let first = b.acquire("t", "h", PATIENCE).await;
        assert!(first.is_some());
        assert!(
            b.acquire("u", "h", PATIENCE).await.is_none(),
            "the host's only slot is taken"
        );
        assert!(
            b.acquire("u", "other", PATIENCE).await.is_some(),
            "other hosts are not held up"
        );
        drop(first);
        assert!(b.acquire("u", "h", PATIENCE).await.is_some(), "given back on drop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_given_back_wakes_the_waiter_the_fair_share_chose() {
        let b = Arc::new(Budget::new(1, 1));
        let held = b.acquire("a", "h", PATIENCE).await.expect("free");
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.acquire("b", "h", PATIENCE).await.is_some() })
        };
        tokio::task::yield_now().await;
        drop(held);
        assert!(waiter.await.expect("joined"), "woken with the slot");
        assert_eq!(lock_slots(&b.slots).fair.in_flight(), 0, "and gave it back on drop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ended_early_leaves_no_place_or_slot_behind() {
        let b = Arc::new(Budget::new(1, 1));
        let held = b.acquire("a", "h", PATIENCE).await.expect("free");
        // A waiter whose reconcile is dropped mid-wait.
        let dropped = {
            let b = b.clone();
            tokio::spawn(async move { b.acquire("b", "h", PATIENCE).await.is_some() })
        };
        tokio::task::yield_now().await;
        dropped.abort();
        let _ = dropped.await;
        assert_eq!(lock_slots(&b.slots).fair.waiting(), 0);
        drop(held);
        assert_eq!(
            lock_slots(&b.slots).fair.in_flight(),
            0,
            "no slot granted to the gone waiter"
        );
        // A waiter out of patience leaves nothing either.
        let held = b.acquire("a", "h", PATIENCE).await.expect("free");
        assert!(b.acquire("b", "h", PATIENCE).await.is_none());
        assert_eq!(lock_slots(&b.slots).fair.waiting(), 0);
        drop(held);
    }

    /// Found by the hostile-tenant review: an OAuth account's budget key was `oauth:{username}`
    /// alone, so another tenant writing the same user name (any password) spent the victim's
    /// hourly budget, and a token whose text was `oauth:{username}` did too.
    #[test]
    fn a_login_with_another_tenants_user_name_spends_only_its_own_budget() {
        use crate::decide::oauth::{self, Login};
        use crate::decide::token::Token;
        let b = Budget::new(16, 8);
        let virtuous = crate::decide::provider::builtin::get("virtuous").expect("known");
        let host = "api.virtuoussoftware.com:443";
        let login = |user: &str, pw: &str| Login {
            username: Some(Token::new(user)),
            password: Some(Token::new(pw)),
            ..Login::default()
        };
        let victim = login("finance@victim.example", "the-victims-password");
        let hostile = login("finance@victim.example", "a-wrong-guess");
        // The hostile tenant's password grants (all refused) ...
        for i in 0..virtuous.hourly_probe_budget() {
            let _ = b.admit(host, &oauth::account("hostile", &hostile), &virtuous, t(i64::from(i)));
        }
        // ... leave the victim's own account with nothing for the hour.
        assert_eq!(
            b.admit(host, &oauth::account("victim", &victim), &virtuous, t(100)),
            Ok(()),
            "another tenant's login with a different password spent the victim's budget"
        );
        // A generic credential whose token is the text `oauth:{user}` shares the ledger as well.
        let b = Budget::new(16, 8);
        let generic = crate::decide::provider::builtin::get("generic").expect("known");
        let spoof = Token::new("oauth:finance@victim.example").fingerprint();
        for i in 0..generic.hourly_probe_budget() {
            let _ = b.admit("attacker.example:443", &spoof, &generic, t(i64::from(i)));
        }
        assert_eq!(
            b.admit(host, &oauth::account("victim", &victim), &virtuous, t(100)),
            Ok(()),
            "a token chosen to fingerprint like an OAuth account key spent the victim's budget"
        );
    }
}
