//! The probe budget shared by every reconcile: the fair share of request slots between tenants
//! and hosts (`decide::fair_share`), the provider's back-off (Retry-After / rate-limit reset) and
//! the per-key hourly ledger that keeps each key under 1% of its documented limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use std::collections::VecDeque;

use jiff::Timestamp;
use tokio::sync::oneshot;

use crate::crd::RateLimitScope;
use crate::decide::fair_share::{self, Admission, FairShare, Ticket};
use crate::decide::provider::{LimitScope, Profile};
use crate::decide::sharing::{Heard, ProbeKey};
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

/// A key the provider asked to stay away, and the tenant (namespace) that holds it.
struct KeyHeld {
    until: Timestamp,
    tenant: String,
}

#[derive(Default)]
struct State {
    /// Until when the provider asked a key to stay away (its 429's Retry-After or reset), and
    /// whose key it is.
    key_back_off: HashMap<(String, u64), KeyHeld>,
    /// Until when every key of a host is held back.
    host_back_off: HashMap<String, Timestamp>,
    /// Keyed by the fingerprint's table key (`Fingerprint::key`): one small entry per key, no string.
    ledgers: HashMap<u64, Ledger>,
    admitted: u64,
    /// Per host, the catch-up slots handed out since this replica began to lead.
    catch_up: HashMap<String, crate::decide::schedule::CatchUpLanes>,
    /// The latest answer about each token, per request (`sharing`): what credentials holding the
    /// same token share instead of probing again.
    heard: HashMap<ProbeKey, Heard>,
}

/// Why a probe may not go yet, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldBack {
    pub until: Timestamp,
    pub by: Hold,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The key's own hourly probe budget is spent.
    Budget,
    /// The provider rate-limited this key.
    Key,
    /// The provider rate-limited several keys of the host (or documents a host-wide limit).
    Host,
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

    /// Admits one probe of `key` against `host` at `now`, or says from when it may go. An admitted
    /// probe is entered in the key's ledger at once, so concurrent reconciles cannot overspend.
    pub fn admit(&self, host: &str, key: &Fingerprint, profile: &Profile, now: Timestamp) -> Result<(), HeldBack> {
        let mut st = self.lock();
        if let Some(until) = st.host_back_off.get(host).copied() {
            if until > now {
                return Err(HeldBack { until, by: Hold::Host });
            }
            st.host_back_off.remove(host);
        }
        let gate = (host.to_owned(), key.key());
        if let Some(until) = st.key_back_off.get(&gate).map(|k| k.until) {
            if until > now {
                return Err(HeldBack { until, by: Hold::Key });
            }
            st.key_back_off.remove(&gate);
        }
        let ledger = st.ledgers.entry(key.key()).or_default();
        ledger
            .check(profile.hourly_probe_budget(), now)
            .map_err(|until| HeldBack {
                until,
                by: Hold::Budget,
            })?;
        ledger.record(now);
        st.admitted += 1;
        if st.admitted.is_multiple_of(4096) {
            // Forget keys not probed for an hour (rotated or deleted credentials).
            st.ledgers.retain(|_, l| {
                let _ = l.check(u32::MAX, now);
                !l.is_empty()
            });
            let hour_ago = now - jiff::SignedDuration::from_hours(1);
            st.heard.retain(|_, h| h.at > hour_ago);
        }
        Ok(())
    }

    /// The latest answer a probe of this token, in this request, heard.
    pub fn heard(&self, key: &ProbeKey) -> Option<Heard> {
        self.lock().heard.get(key).copied()
    }

    /// Records what a probe heard, for the other holders of the same token.
    pub fn hear(&self, key: ProbeKey, heard: Heard) {
        self.lock().heard.insert(key, heard);
    }

    /// The next catch-up slot of `tenant` at `host` (`schedule::catch_up`): overdue probes queue
    /// per host, in a lane per tenant (`schedule::CatchUpLanes`).
    pub fn catch_up_slot(&self, tenant: &str, host: &str) -> u64 {
        self.lock().catch_up.entry(host.to_owned()).or_default().slot(tenant)
    }

    /// Leading begins: overdue probes queue from the first slot again.
    pub fn begin_catch_up(&self) {
        self.lock().catch_up = HashMap::new();
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
        if let Some(l) = self.lock().ledgers.get_mut(&key.key()) {
            l.sent.pop_back();
        }
    }

    /// Records the provider's request (a 429) that `key`, held by `tenant`, stay away until
    /// `until`, and answers what it holds back: the key, or the whole host when another tenant's
    /// key of the host is still held back too (or the provider documents a host-wide limit).
    /// One tenant's keys alone never hold back another tenant's.
    pub fn back_off(
        &self,
        tenant: &str,
        host: &str,
        key: &Fingerprint,
        scope: LimitScope,
        until: Timestamp,
        now: Timestamp,
    ) -> RateLimitScope {
        let mut st = self.lock();
        st.key_back_off.retain(|_, k| k.until > now);
        let entry = st
            .key_back_off
            .entry((host.to_owned(), key.key()))
            .or_insert_with(|| KeyHeld {
                until,
                tenant: tenant.to_owned(),
            });
        entry.until = entry.until.max(until);
        // Held as long as keys of two tenants are: until the earlier of this key's end and the
        // latest end among the other tenants' keys (a tenant that keeps its own keys exhausted
        // for a day cannot turn another's one-minute 429 into a day for everyone).
        let others_until = st
            .key_back_off
            .iter()
            .filter(|((h, k), held)| h == host && *k != key.key() && held.tenant != tenant)
            .map(|(_, held)| held.until)
            .max();
        let host_until = match (scope, others_until) {
            (LimitScope::Host, _) => Some(until),
            (_, Some(theirs)) => Some(until.min(theirs)),
            (_, None) => None,
        };
        if let Some(host_until) = host_until {
            let entry = st.host_back_off.entry(host.to_owned()).or_insert(host_until);
            *entry = (*entry).max(host_until);
            RateLimitScope::Host
        } else {
            RateLimitScope::Key
        }
    }

    /// Probes admitted for `key` in the last hour.
    pub fn spent(&self, key: &Fingerprint, now: Timestamp) -> usize {
        let mut st = self.lock();
        st.ledgers.get_mut(&key.key()).map_or(0, |l| {
            let _ = l.check(u32::MAX, now);
            l.len()
        })
    }
}

/// Probes sent with one key during the last hour: the hard guarantee behind the 1% budget,
/// whatever the spec, confirmations or probe-now requests ask.
///
/// Instants are kept as whole Unix seconds, rounded up, so an entry never leaves the window
/// early: a long steady state holds one entry per probe of the last hour for every key, and four
/// bytes each instead of a 16-byte `Timestamp` is what lets 100,000 keys fit the memory goal.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    sent: VecDeque<u32>,
}

const HOUR: i64 = 3600;

/// `now` in whole seconds, rounded up and clamped to what a `u32` holds (until 2106).
fn ceil_seconds(now: Timestamp) -> u32 {
    let secs = now.as_second() + i64::from(now.subsec_nanosecond() > 0);
    u32::try_from(secs.max(0)).unwrap_or(u32::MAX)
}

impl Ledger {
    fn prune(&mut self, now: Timestamp) {
        let now = now.as_second();
        while self.sent.front().is_some_and(|&t| i64::from(t) + HOUR <= now) {
            self.sent.pop_front();
        }
        if self.sent.capacity() > 8 && self.sent.len() * 4 < self.sent.capacity() {
            self.sent.shrink_to(self.sent.len() * 2);
        }
    }

    /// `Ok` when a probe may go now, else the earliest instant it may.
    pub fn check(&mut self, budget: u32, now: Timestamp) -> Result<(), Timestamp> {
        self.prune(now);
        if (self.sent.len() as u32) < budget.max(1) {
            return Ok(());
        }
        let oldest = self.sent.front().map_or(now.as_second(), |&t| i64::from(t));
        Err(Timestamp::from_second(oldest + HOUR).unwrap_or(Timestamp::MAX))
    }

    pub fn record(&mut self, now: Timestamp) {
        self.sent.push_back(ceil_seconds(now));
    }

    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::t;

    #[test]
    fn catch_up_slots_count_per_host_from_when_leading_began() {
        let b = Budget::new(4, 2);
        assert_eq!(b.catch_up_slot("t", "a:443"), 0);
        assert_eq!(b.catch_up_slot("t", "a:443"), 1);
        assert_eq!(b.catch_up_slot("t", "b:443"), 0, "each host has its own queue");
        b.begin_catch_up();
        assert_eq!(b.catch_up_slot("t", "a:443"), 0);
    }

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

    /// Found by the hostile-tenant review: the host-wide back-off needed only two keys held back
    /// at once, whoever held them, so one tenant's two exhausted keys held back every tenant at
    /// a shared provider's host.
    #[test]
    fn one_tenants_rate_limited_keys_never_hold_back_another_tenant() {
        let b = Budget::new(16, 8);
        let raise = crate::decide::provider::builtin::get("raise").expect("known");
        let host = "prod-api.raisedonors.com:443";
        let hostile_1 = Fingerprint::of(b"hostile key 1");
        let hostile_2 = Fingerprint::of(b"hostile key 2");
        let victim = Fingerprint::of(b"another tenant's key");
        b.back_off("hostile", host, &hostile_1, raise.limit_scope, t(86_400), t(0));
        b.back_off("hostile", host, &hostile_2, raise.limit_scope, t(86_400), t(1));
        assert_eq!(
            b.admit(host, &victim, &raise, t(2)),
            Ok(()),
            "another tenant's key is held back for a day by one tenant's two keys"
        );
    }

    #[test]
    fn ledger_caps_probes_per_rolling_hour() {
        let mut l = Ledger::default();
        for k in 0..10 {
            assert_eq!(l.check(10, t(k * 60)), Ok(()));
            l.record(t(k * 60));
        }
        assert_eq!(l.check(10, t(700)), Err(t(3600)));
        assert_eq!(l.check(10, t(3600)), Ok(()), "the oldest left the window");
    }

    #[test]
    fn a_fraction_of_a_second_never_lets_an_entry_leave_early() {
        let mut l = Ledger::default();
        let sent = t(10)
            .checked_add(jiff::SignedDuration::from_millis(300))
            .expect("in range");
        l.record(sent);
        assert_eq!(
            l.check(1, t(3610)),
            Err(t(3611)),
            "a full hour after 10.3 s is 3610.3 s"
        );
        assert_eq!(l.check(1, t(3611)), Ok(()));
    }

    #[test]
    fn a_ledger_gives_back_what_an_hour_no_longer_needs() {
        let mut l = Ledger::default();
        for k in 0..64 {
            l.record(t(k));
        }
        assert_eq!(l.check(100, t(3661)), Ok(()));
        assert_eq!(l.len(), 2);
        assert!(l.sent.capacity() <= 8, "capacity {}", l.sent.capacity());
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
        use crate::decide::token::Token;
        let b = Budget::new(16, 8);
        let virtuous = crate::decide::provider::builtin::get("virtuous").expect("known");
        let login = Login {
            username: Some(Token::new("finance@victim.example")),
            ..Login::default()
        };
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
