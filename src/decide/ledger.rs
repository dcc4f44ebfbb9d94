//! The hourly ledger: probes (and token-endpoint calls) sent with one key during the last hour,
//! the hard guarantee behind the 1% budget, whatever the spec, confirmations or probe-now
//! requests ask. A probe is entered when admitted, so concurrent reconciles cannot overspend, and
//! given back when it was admitted but never sent.

use std::collections::{HashMap, VecDeque};

use jiff::Timestamp;

use crate::decide::token::Fingerprint;

/// Admissions between two sweeps of the keys not probed for an hour (rotated or deleted
/// credentials): often enough to bound memory, rarely enough to cost nothing per probe.
const SWEEP_EVERY: u64 = 4096;

const HOUR: i64 = 3600;

/// Probes sent with one key during the last hour.
///
/// Instants are kept as whole Unix seconds, rounded up, so an entry never leaves the window
/// early: a long steady state holds one entry per probe of the last hour for every key, and four
/// bytes each instead of a 16-byte `Timestamp` is what lets 100,000 keys fit the memory goal.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    sent: VecDeque<u32>,
}

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

/// Every key's ledger, keyed by the fingerprint's 48 bits: one small entry per key, no string.
#[derive(Default)]
pub struct Ledgers {
    by_key: HashMap<u64, Ledger>,
    admitted: u64,
}

impl Ledgers {
    /// Admits one probe of `key` within `budget` probes an hour and enters it at once, or says
    /// from when it may go.
    pub fn admit(&mut self, key: &Fingerprint, budget: u32, now: Timestamp) -> Result<(), Timestamp> {
        let ledger = self.by_key.entry(key.key()).or_default();
        ledger.check(budget, now)?;
        ledger.record(now);
        self.admitted += 1;
        if self.admitted.is_multiple_of(SWEEP_EVERY) {
            self.by_key.retain(|_, l| {
                l.prune(now);
                !l.is_empty()
            });
        }
        Ok(())
    }

    /// Gives back the entry of a probe admitted but never sent.
    pub fn refund(&mut self, key: &Fingerprint) {
        if let Some(l) = self.by_key.get_mut(&key.key()) {
            l.sent.pop_back();
        }
    }

    /// Probes admitted for `key` in the last hour.
    pub fn spent(&mut self, key: &Fingerprint, now: Timestamp) -> usize {
        self.by_key.get_mut(&key.key()).map_or(0, |l| {
            l.prune(now);
            l.len()
        })
    }

    /// Keys with an entry in the last hour (as of their last use).
    pub fn keys(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::t;

    #[test]
    fn a_key_sends_at_most_its_budget_in_any_rolling_hour() {
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

    #[test]
    fn a_budget_of_zero_still_lets_one_probe_an_hour() {
        let mut l = Ledger::default();
        assert_eq!(l.check(0, t(0)), Ok(()));
        l.record(t(0));
        assert_eq!(l.check(0, t(1)), Err(t(3600)));
    }

    #[test]
    fn each_key_has_its_own_ledger_and_an_admission_is_entered_at_once() {
        let mut ledgers = Ledgers::default();
        let (one, two) = (Fingerprint::of(b"one"), Fingerprint::of(b"two"));
        assert_eq!(ledgers.admit(&one, 2, t(0)), Ok(()));
        assert_eq!(ledgers.admit(&one, 2, t(1)), Ok(()));
        assert_eq!(ledgers.admit(&one, 2, t(2)), Err(t(3600)), "the third within the hour");
        assert_eq!(ledgers.admit(&two, 2, t(2)), Ok(()), "another key's budget is its own");
        assert_eq!(ledgers.spent(&one, t(2)), 2);
        assert_eq!(ledgers.spent(&one, t(3600)), 1, "the first left the window");
    }

    #[test]
    fn a_probe_admitted_but_never_sent_is_given_back() {
        let mut ledgers = Ledgers::default();
        let key = Fingerprint::of(b"one");
        assert_eq!(ledgers.admit(&key, 1, t(0)), Ok(()));
        ledgers.refund(&key);
        assert_eq!(ledgers.spent(&key, t(0)), 0);
        assert_eq!(ledgers.admit(&key, 1, t(1)), Ok(()));
        ledgers.refund(&Fingerprint::of(b"never admitted"));
        assert_eq!(ledgers.spent(&key, t(1)), 1, "another key's refund takes nothing");
    }

    #[test]
    fn keys_not_probed_for_an_hour_are_forgotten() {
        let mut ledgers = Ledgers::default();
        let gone = Fingerprint::of(b"rotated away");
        assert_eq!(ledgers.admit(&gone, 10, t(0)), Ok(()));
        let busy = Fingerprint::of(b"busy");
        for i in 1..SWEEP_EVERY {
            assert_eq!(ledgers.admit(&busy, u32::MAX, t(3600 + i as i64 / 100)), Ok(()));
        }
        assert_eq!(ledgers.keys(), 1, "the key unused for an hour was swept");
    }
}
