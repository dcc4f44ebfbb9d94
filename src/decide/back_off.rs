//! The provider's back-off: a 429's Retry-After (or rate-limit reset) holds back the key it
//! answered, and escalates to every key of the host when the provider documents a host-wide
//! limit, or when a key of another tenant (namespace) of the same host is still held back too.
//! One tenant's keys alone never hold back another tenant's: two exhausted keys of one customer
//! say nothing about the host.

use std::collections::HashMap;

use jiff::Timestamp;

use crate::crd::RateLimitScope;
use crate::decide::provider::LimitScope;
use crate::decide::token::Fingerprint;

/// Why a probe may not go yet, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldBack {
    pub until: Timestamp,
    pub by: Hold,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The key's own hourly probe budget is spent (`decide::ledger`).
    Budget,
    /// The provider rate-limited this key.
    Key,
    /// The provider rate-limited keys of several tenants at the host (or documents a host-wide
    /// limit).
    Host,
}

/// A key the provider asked to stay away, and the tenant that holds it.
struct KeyHeld {
    until: Timestamp,
    tenant: String,
}

/// The keys and hosts held back, and until when.
#[derive(Default)]
pub struct BackOffs {
    /// Keyed by the fingerprint's table key (`Fingerprint::key`), never by its shown bits.
    keys: HashMap<(String, u64), KeyHeld>,
    hosts: HashMap<String, Timestamp>,
}

impl BackOffs {
    /// Whether a probe of `key` at `host` may go at `now` as far as the provider's back-off goes;
    /// a hold that has ended is forgotten.
    pub fn check(&mut self, host: &str, key: &Fingerprint, now: Timestamp) -> Result<(), HeldBack> {
        if let Some(until) = self.hosts.get(host).copied() {
            if until > now {
                return Err(HeldBack { until, by: Hold::Host });
            }
            self.hosts.remove(host);
        }
        let gate = (host.to_owned(), key.key());
        if let Some(until) = self.keys.get(&gate).map(|k| k.until) {
            if until > now {
                return Err(HeldBack { until, by: Hold::Key });
            }
            self.keys.remove(&gate);
        }
        Ok(())
    }

    /// Records the provider's request that `key`, held by `tenant`, stay away from `host` until
    /// `until`, and answers what it holds back: the key, or the whole host.
    pub fn record(
        &mut self,
        tenant: &str,
        host: &str,
        key: &Fingerprint,
        scope: LimitScope,
        until: Timestamp,
        now: Timestamp,
    ) -> RateLimitScope {
        self.keys.retain(|_, k| k.until > now);
        let entry = self
            .keys
            .entry((host.to_owned(), key.key()))
            .or_insert_with(|| KeyHeld {
                until,
                tenant: tenant.to_owned(),
            });
        entry.until = entry.until.max(until);
        // Held as long as keys of two tenants are: until the earlier of this key's end and the
        // latest end among the other tenants' keys (a tenant that keeps its own keys exhausted
        // for a day cannot turn another's one-minute 429 into a day for everyone).
        let others_until = self
            .keys
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
            let entry = self.hosts.entry(host.to_owned()).or_insert(host_until);
            *entry = (*entry).max(host_until);
            RateLimitScope::Host
        } else {
            RateLimitScope::Key
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::t;

    const HOST: &str = "api.example:443";

    fn key(name: &str) -> Fingerprint {
        Fingerprint::of(name.as_bytes())
    }

    fn held(until: i64, by: Hold) -> Result<(), HeldBack> {
        Err(HeldBack { until: t(until), by })
    }

    #[test]
    fn a_429_holds_back_that_key_until_the_time_it_gave() {
        let mut b = BackOffs::default();
        let scope = b.record("a", HOST, &key("one"), LimitScope::Key, t(500), t(30));
        assert_eq!(scope, RateLimitScope::Key);
        assert_eq!(b.check(HOST, &key("one"), t(30)), held(500, Hold::Key));
        assert_eq!(b.check(HOST, &key("two"), t(30)), Ok(()), "other keys go on");
        assert_eq!(b.check("other:443", &key("one"), t(30)), Ok(()), "other hosts go on");
        assert_eq!(
            b.check(HOST, &key("one"), t(500)),
            Ok(()),
            "and the key itself at the end"
        );
    }

    #[test]
    fn a_later_429_never_shortens_a_hold() {
        let mut b = BackOffs::default();
        b.record("a", HOST, &key("one"), LimitScope::Key, t(500), t(0));
        b.record("a", HOST, &key("one"), LimitScope::Key, t(100), t(10));
        assert_eq!(b.check(HOST, &key("one"), t(200)), held(500, Hold::Key));
    }

    #[test]
    fn keys_of_two_tenants_held_back_at_once_hold_back_the_host() {
        let mut b = BackOffs::default();
        b.record("a", HOST, &key("one"), LimitScope::Key, t(500), t(30));
        let scope = b.record("b", HOST, &key("two"), LimitScope::Key, t(400), t(40));
        assert_eq!(scope, RateLimitScope::Host);
        assert_eq!(b.check(HOST, &key("three"), t(40)), held(400, Hold::Host));
        assert_eq!(b.check(HOST, &key("three"), t(400)), Ok(()));
        assert_eq!(
            b.check(HOST, &key("one"), t(400)),
            held(500, Hold::Key),
            "its own hold stays"
        );
    }

    #[test]
    fn one_tenants_rate_limited_keys_never_hold_back_another_tenant() {
        let mut b = BackOffs::default();
        b.record("hostile", HOST, &key("h1"), LimitScope::Key, t(86_400), t(0));
        let scope = b.record("hostile", HOST, &key("h2"), LimitScope::Key, t(86_400), t(1));
        assert_eq!(scope, RateLimitScope::Key);
        assert_eq!(b.check(HOST, &key("victim"), t(2)), Ok(()));
    }

    #[test]
    fn two_429s_far_apart_are_two_keys_own_business() {
        let mut b = BackOffs::default();
        b.record("a", HOST, &key("one"), LimitScope::Key, t(600), t(550));
        let scope = b.record("b", HOST, &key("two"), LimitScope::Key, t(800), t(700));
        assert_eq!(scope, RateLimitScope::Key, "the first hold had ended");
        assert_eq!(b.check(HOST, &key("three"), t(700)), Ok(()));
    }

    #[test]
    fn a_provider_documenting_a_host_wide_limit_holds_back_the_host_at_the_first_429() {
        let mut b = BackOffs::default();
        let scope = b.record("a", HOST, &key("one"), LimitScope::Host, t(300), t(0));
        assert_eq!(scope, RateLimitScope::Host);
        assert_eq!(b.check(HOST, &key("another tenant's"), t(10)), held(300, Hold::Host));
    }
}
