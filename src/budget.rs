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

    /// The next catch-up slot of `tenant` at `host` (`schedule::catch_up`): overdue probes queue
    /// per host, in a lane per tenant (`schedule::CatchUpLanes`).
    pub fn catch_up_slot(&self, tenant: &str, host: &str) -> u64 {
        self.lock().catch_up.take(tenant, host)
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

    /// Gives back the ledger entry of a request admitted but never sent (no slot came for it, or
    /// the fence closed before it went).
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
        let login = |user: &str, pw: &str| Login::from_pairs([("username", user), ("password", pw)]);
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

    /// What `Fingerprint::of` returns for ANY token whose SHA-256 begins with the same 6 bytes as
    /// the one `shown` (`sha256:` + 12 hex, as status, events, logs and the workloads' pod-template
    /// annotation print it). Such a token is found by a 2^48 preimage search: about 2.8e14 SHA-256
    /// evaluations, hours on one consumer GPU. No knowledge of the victim's token is needed.
    fn colliding(shown: &Fingerprint) -> Fingerprint {
        Fingerprint::parse(shown.as_str()).expect("a shown fingerprint")
    }

    /// Found by the hostile-tenant review: a token's identity in the probe-sharing key, the hourly
    /// ledger and the key back-off was the 48-bit fingerprint printed everywhere. A token minted to
    /// share those 48 bits now shares nothing: the tables key tokens by bits nothing shows.
    #[test]
    fn a_token_sharing_the_shown_fingerprint_is_another_token() {
        use crate::decide::sharing::{Heard, ProbeKey};
        let b = Budget::new(16, 8);
        let raise = crate::decide::provider::builtin::get("raise").expect("known");
        let host = "prod-api.raisedonors.com:443";
        let url = "https://prod-api.raisedonors.com/api/v1/me";
        let victim = Fingerprint::of(b"the victim's real raise token");
        let forged = colliding(&victim);
        let mut broken = Vec::new();
        // (1) The hostile credential's probe of its forged token hears a 401 ...
        b.hear(
            ProbeKey::new("raise", url, &forged),
            Heard {
                at: t(100),
                status: 401,
            },
        );
        if b.heard(&ProbeKey::new("raise", url, &victim)).is_some() {
            broken.push("another token's 401 answers for the victim's token (probe sharing across tenants)");
        }
        // (2) ... its own probes (the same provider, any namespace) spend the victim's ledger ...
        for i in 0..100 {
            let _ = b.admit(host, &forged, &raise, t(i));
        }
        if b.admit(host, &victim, &raise, t(200)) != Ok(()) {
            broken.push("another tenant's token spent the victim's hourly budget");
        }
        // (3) ... and its 429 holds the victim's key back.
        let other = Budget::new(16, 8);
        other.back_off("hostile", host, &forged, raise.limit_scope, t(86_400), t(0));
        if other.admit(host, &victim, &raise, t(1)) != Ok(()) {
            broken.push("another tenant's 429 held back the victim's key");
        }
        assert!(broken.is_empty(), "{broken:#?}");
    }

    /// Found by the hostile-tenant review: an account key was 48 bits of a string anyone can
    /// compute; a token aimed at those bits shares nothing with the account's table key.
    #[test]
    fn a_token_aimed_at_an_oauth_accounts_shown_bits_spends_nothing_of_it() {
        use crate::decide::oauth::{self, Login};
        let b = Budget::new(16, 8);
        let virtuous = crate::decide::provider::builtin::get("virtuous").expect("known");
        let login = Login::from_pairs([("username", "finance@victim.example")]);
        let account = oauth::account("victim", &login);
        let forged = colliding(&account);
        // A plain-token virtuous credential (credentialRef) holding the forged token: its budget
        // key is the token's fingerprint, which is the account key.
        for i in 0..100 {
            let _ = b.admit("api.virtuoussoftware.com:443", &forged, &virtuous, t(i));
        }
        assert_eq!(
            b.admit("api.virtuoussoftware.com:443", &account, &virtuous, t(200)),
            Ok(()),
            "a token aimed at the account key's 48 bits spent the victim's login budget"
        );
    }

    /// Found by the hostile-tenant review: catch-up slots were one queue per host, so 3,000 of one
    /// tenant's overdue credentials put another tenant's one overdue probe five minutes behind.
    #[test]
    fn one_tenants_overdue_credentials_never_delay_another_tenants_catch_up() {
        use crate::decide::schedule::{self, DEFAULT_CATCH_UP_PER_SECOND, Jitter};
        let b = Budget::new(16, 8);
        let host = "prod-api.raisedonors.com:443";
        b.begin_catch_up();
        let leading = t(1_000);
        for _ in 0..3_000 {
            let _ = b.catch_up_slot("hostile", host); // the hostile tenant's overdue credentials
        }
        let victims = b.catch_up_slot("victim", host);
        let at = schedule::catch_up(leading, victims, DEFAULT_CATCH_UP_PER_SECOND, Jitter::new(0.0));
        assert!(
            at <= t(1_001),
            "another tenant's only overdue probe waits until {at} (leading began at {leading})"
        );
    }

    /// Found by the hostile-tenant review: the host was held for the latest answer's time, so a
    /// tenant keeping its own keys exhausted for a day turned another's one-minute 429 into a day
    /// for every tenant at the host.
    #[test]
    fn a_host_is_held_only_while_two_tenants_are() {
        let b = Budget::new(16, 8);
        let raise = crate::decide::provider::builtin::get("raise").expect("known");
        let host = "prod-api.raisedonors.com:443";
        let careless = Fingerprint::of(b"a tenant that spent its own quota");
        let hostile = Fingerprint::of(b"hostile key, exhausted on purpose");
        let bystander = Fingerprint::of(b"a third tenant's healthy key");
        b.back_off("careless", host, &careless, raise.limit_scope, t(60), t(0));
        b.back_off("hostile", host, &hostile, raise.limit_scope, t(86_400), t(10));
        assert_eq!(
            b.admit(host, &bystander, &raise, t(3_600)),
            Ok(()),
            "a third tenant's healthy key is held back for a day"
        );
    }
}
