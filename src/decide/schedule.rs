//! When to look at a credential next. Pure functions of the clock and a jitter draw, so the timing
//! policy is tested without sleeping.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::crd::ProbeResult;
use crate::decide::provider::Profile;

/// A uniform draw in [0, 1), injected so tests pin it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Jitter(f64);

impl Jitter {
    pub fn new(u: f64) -> Self {
        Self(if u.is_finite() { u.clamp(0.0, 1.0) } else { 0.5 })
    }
    pub fn random() -> Self {
        Self::new(rand::random::<f64>())
    }
    /// Scales `d` by a factor uniformly spread over [lo, hi].
    pub fn scale(self, d: Duration, lo: f64, hi: f64) -> Duration {
        d.mul_f64(lo + (hi - lo) * self.0)
    }
}

/// First confirmation of a 401/403 after this long, then 4x longer each time (30s, 2m, 8m...).
pub const CONFIRM_FIRST: Duration = Duration::from_secs(30);
/// First retry after a 429/5xx/timeout, doubling each time, capped at the interval.
pub const TRANSIENT_FIRST: Duration = Duration::from_secs(30);

/// The probe interval actually used: the spec's, stretched to what 1% of the provider's
/// documented hourly limit allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub effective: Duration,
    /// The spec's interval when the budget stretched it.
    pub stretched_from: Option<Duration>,
}

pub fn effective_interval(requested: Duration, profile: &Profile) -> Interval {
    let floor = profile.min_interval();
    if requested < floor {
        Interval {
            effective: floor,
            stretched_from: Some(requested),
        }
    } else {
        Interval {
            effective: requested,
            stretched_from: None,
        }
    }
}

pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

pub fn until(now: Timestamp, later: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// What the schedule needs to know about the probe that just finished.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    pub result: ProbeResult,
    /// Consecutive 401/403 including this one.
    pub consecutive_failures: u32,
    pub failure_threshold: u32,
    /// No probe of this token had completed before this one.
    pub first_for_token: bool,
    /// The previous probe's delay, when it was a transient failure too (for doubling).
    pub previous_transient_delay: Option<Duration>,
    /// Retry-After / rate-limit reset asked for by the provider.
    pub provider_back_off: Option<Timestamp>,
}

/// When to probe again after `f`, or `None` when probing stops (expired or unusable token: only a
/// new token brings it back).
pub fn next_probe(f: Finished, interval: Duration, now: Timestamp, jitter: Jitter) -> Option<Timestamp> {
    let delay = match f.result {
        ProbeResult::Valid if f.first_for_token => {
            // Spreads the first follow-ups of a mass creation over the whole interval, so thousands of
            // credentials created together do not probe together forever after.
            jitter.scale(interval, 0.1, 1.0)
        }
        ProbeResult::Valid => jitter.scale(interval, 0.9, 1.1),
        ProbeResult::Unauthorized | ProbeResult::Forbidden if f.consecutive_failures < f.failure_threshold => {
            let exp = f.consecutive_failures.saturating_sub(1).min(8);
            let confirm = CONFIRM_FIRST.saturating_mul(4u32.pow(exp)).min(interval);
            jitter.scale(confirm, 0.9, 1.1)
        }
        ProbeResult::Unauthorized | ProbeResult::Forbidden => jitter.scale(interval, 0.9, 1.1),
        ProbeResult::RateLimited | ProbeResult::Unavailable => {
            // The previous delay was drawn from (base/2, base]: recover that base (the smallest
            // 30s·2^k not below it) and double it, so growth does not depend on jitter luck.
            let base = f
                .previous_transient_delay
                .map_or(TRANSIENT_FIRST, |d| {
                    let mut b = TRANSIENT_FIRST;
                    while b < d && b < interval {
                        b = b.saturating_mul(2);
                    }
                    b.saturating_mul(2)
                })
                .clamp(TRANSIENT_FIRST, interval.max(TRANSIENT_FIRST));
            // "Equal jitter": never less than half the backoff, so a storm still spreads out.
            // At least a second more than half: the delay is read back in whole seconds (as the
            // status holds times), and exactly half would read as the base below (the backoff
            // then stopped growing at 60 s for one draw in thirty).
            let half = base / 2 + Duration::from_secs(1);
            let mut next = add(now, half + jitter.scale(base.saturating_sub(half), 0.0, 1.0));
            if let Some(back_off) = f.provider_back_off {
                // The provider's word wins, plus a little jitter so every key does not return at once.
                next = next.max(add(back_off, jitter.scale(Duration::from_secs(10), 0.0, 1.0)));
            }
            return Some(next);
        }
        ProbeResult::Expired | ProbeResult::Invalid => return None,
    };
    Some(add(now, delay))
}

/// After a failed reconcile (the API refused or failed a call): 5 s doubling per consecutive
/// failure up to 5 min, with equal jitter, so nothing retries in a tight loop.
pub fn error_backoff(attempts: u32, jitter: Jitter) -> Duration {
    let base = Duration::from_secs(5).saturating_mul(2u32.saturating_pow(attempts.clamp(1, 7) - 1));
    jitter.scale(base.min(Duration::from_secs(300)), 0.5, 1.0)
}

/// Catch-up probes a provider host receives per second by default after a gap (`--catch-up-rate`).
pub const DEFAULT_CATCH_UP_PER_SECOND: f64 = 10.0;

/// When the `slot`-th overdue probe of a host goes after a gap (a restart, a failover, an outage):
/// probes that fell due while no replica acted are queued per host, `1 / per_second` apart from
/// when this replica began to lead (jittered within the slot). The window grows with their number
/// (n ÷ rate) instead of the rate growing with it: a host never sees more than `per_second`
/// catch-up probes a second, whatever was missed. Each key's own budget is untouched: a key is
/// overdue only once its interval has passed. (A status keeps whole seconds, so a slot is kept
/// to the second: at most `per_second` catch-up probes start in any one second.)
pub fn catch_up(started_at: Timestamp, slot: u64, per_second: f64, jitter: Jitter) -> Timestamp {
    let per_second = if per_second.is_finite() && per_second > 0.0 {
        per_second
    } else {
        DEFAULT_CATCH_UP_PER_SECOND
    };
    // Capped at a year: an absurd slot count must not overflow the clock.
    let secs = ((slot as f64 + jitter.0) / per_second).min(365.0 * 86_400.0);
    add(started_at, Duration::from_secs_f64(secs))
}

/// The catch-up slots of one host, shared between tenants (namespaces) in lanes: the k-th
/// overdue probe of the r-th tenant seen takes slot `k × n + r`, n the tenants seen so far. A
/// tenant with thousands of overdue credentials spreads them over every n-th slot instead of
/// queueing ahead of another tenant's one probe, which takes the next free lane at once. (Slots
/// handed out before a tenant arrived may share an instant with its first ones: a tenant at most
/// once per slot, and the host's rate stays within a small multiple for that moment.)
#[derive(Clone, Debug, Default)]
pub struct CatchUpLanes {
    /// Per tenant, its rank (the order it first asked in) and the slots it took: a takeover asks
    /// once per overdue credential, so this is a map, not a scan of every tenant.
    tenants: std::collections::HashMap<String, (u64, u64)>,
}

impl CatchUpLanes {
    /// The next catch-up slot of `tenant` at this host.
    pub fn slot(&mut self, tenant: &str) -> u64 {
        let rank = self.tenants.len() as u64;
        if !self.tenants.contains_key(tenant) {
            self.tenants.insert(tenant.to_owned(), (rank, 0));
        }
        let n = self.tenants.len() as u64;
        let Some((rank, taken)) = self.tenants.get_mut(tenant) else {
            return 0;
        };
        let slot = *taken * n + *rank;
        *taken += 1;
        slot
    }
}

/// The catch-up queues (`catch_up`): per host, the slots handed out since this replica began to
/// lead, in a lane per tenant ([`CatchUpLanes`]). Leading again starts every queue from its
/// first slot.
#[derive(Default)]
pub struct CatchUpQueues {
    hosts: std::collections::HashMap<String, CatchUpLanes>,
}

impl CatchUpQueues {
    /// The next slot of `tenant` at `host`.
    pub fn take(&mut self, tenant: &str, host: &str) -> u64 {
        self.hosts.entry(host.to_owned()).or_default().slot(tenant)
    }

    /// Leading begins: overdue probes queue from the first slot again.
    pub fn restart(&mut self) {
        self.hosts = std::collections::HashMap::new();
    }
}

/// Instants at which a credential's state changes without any event: entering the ExpiringSoon
/// window and expiry itself.
pub fn expiry_instants(expires_at: Option<Timestamp>, warn_before: Duration, now: Timestamp) -> Option<Timestamp> {
    let exp = expires_at?;
    let warn = exp
        .checked_sub(SignedDuration::try_from(warn_before).ok()?)
        .unwrap_or(Timestamp::MIN);
    [warn, exp].into_iter().filter(|t| *t > now).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_reconciles_back_off_to_five_minutes() {
        let top = Jitter::new(1.0);
        let secs = |n| error_backoff(n, top).as_secs();
        assert_eq!(
            (1..=8).map(secs).collect::<Vec<_>>(),
            [5, 10, 20, 40, 80, 160, 300, 300]
        );
        assert_eq!(
            error_backoff(1, Jitter::new(0.0)),
            Duration::from_millis(2500),
            "equal jitter"
        );
    }

    use crate::testing::t;
    const MIN: Duration = Duration::from_secs(60);

    fn finished(result: ProbeResult) -> Finished {
        Finished {
            result,
            consecutive_failures: 0,
            failure_threshold: 3,
            first_for_token: false,
            previous_transient_delay: None,
            provider_back_off: None,
        }
    }

    #[test]
    fn budget_stretches_short_intervals() {
        let cs = crate::decide::provider::builtin::get("charitystack").expect("known");
        assert_eq!(
            effective_interval(MIN, &cs),
            Interval {
                effective: Duration::from_secs(400),
                stretched_from: Some(MIN)
            }
        );
        assert_eq!(effective_interval(15 * MIN, &cs).stretched_from, None);
    }

    #[test]
    fn valid_probes_repeat_within_ten_percent() {
        let i = 15 * MIN;
        assert_eq!(
            next_probe(finished(ProbeResult::Valid), i, t(0), Jitter::new(0.0)),
            Some(t(810))
        );
        assert_eq!(
            next_probe(finished(ProbeResult::Valid), i, t(0), Jitter::new(1.0)),
            Some(t(990))
        );
        let first = Finished {
            first_for_token: true,
            ..finished(ProbeResult::Valid)
        };
        assert_eq!(next_probe(first, i, t(0), Jitter::new(0.0)), Some(t(90)));
        assert_eq!(next_probe(first, i, t(0), Jitter::new(1.0)), Some(t(900)));
    }

    #[test]
    fn unauthorized_is_confirmed_at_30s_then_2m_then_interval() {
        let i = 15 * MIN;
        let mid = Jitter::new(0.5);
        let f = |n| Finished {
            consecutive_failures: n,
            ..finished(ProbeResult::Unauthorized)
        };
        assert_eq!(next_probe(f(1), i, t(0), mid), Some(t(30)));
        assert_eq!(next_probe(f(2), i, t(0), mid), Some(t(120)));
        assert_eq!(
            next_probe(f(3), i, t(0), mid),
            Some(t(900)),
            "degraded: back to the interval"
        );
        let short = next_probe(f(2), MIN, t(0), mid);
        assert_eq!(short, Some(t(60)), "never beyond the interval");
    }

    #[test]
    fn transient_failures_double_and_honour_the_provider() {
        let i = 15 * MIN;
        let hi = Jitter::new(1.0);
        let first = finished(ProbeResult::Unavailable);
        assert_eq!(next_probe(first, i, t(0), hi), Some(t(30)));
        let second = Finished {
            previous_transient_delay: Some(Duration::from_secs(30)),
            ..first
        };
        assert_eq!(next_probe(second, i, t(0), hi), Some(t(60)));
        let capped = Finished {
            previous_transient_delay: Some(Duration::from_secs(800)),
            ..first
        };
        assert_eq!(next_probe(capped, i, t(0), hi), Some(t(900)));
        let limited = Finished {
            provider_back_off: Some(t(3000)),
            ..finished(ProbeResult::RateLimited)
        };
        let next = next_probe(limited, i, t(0), Jitter::new(0.0)).expect("scheduled");
        assert_eq!(next, t(3000));
    }

    /// As the plan reads it back: both instants in whole seconds.
    fn delay_read_back(now: Timestamp, next: Timestamp) -> Duration {
        let whole = |t: Timestamp| crate::decide::conditions::truncate(t);
        until(whole(now), whole(next))
    }

    #[test]
    fn transient_backoff_doubles_whatever_the_jitter_and_whole_seconds() {
        let interval = 15 * MIN;
        for j in 0..=200 {
            let jitter = Jitter::new(f64::from(j) / 200.0);
            let mut previous = None;
            let mut base = TRANSIENT_FIRST;
            for n in 0..8 {
                let f = Finished {
                    previous_transient_delay: previous,
                    ..finished(ProbeResult::Unavailable)
                };
                let next = next_probe(f, interval, t(0), jitter).expect("scheduled");
                let delay = delay_read_back(t(0), next);
                assert!(
                    delay > base / 2 && delay <= base,
                    "jitter {j}/200, failure {n}: {delay:?} outside (base/2, base] of {base:?}"
                );
                previous = Some(delay);
                base = base.saturating_mul(2).min(interval);
            }
        }
    }

    #[test]
    fn expired_and_invalid_stop_probing() {
        assert_eq!(
            next_probe(finished(ProbeResult::Expired), MIN, t(0), Jitter::new(0.5)),
            None
        );
        assert_eq!(
            next_probe(finished(ProbeResult::Invalid), MIN, t(0), Jitter::new(0.5)),
            None
        );
    }

    #[test]
    fn one_tenants_overdue_probes_never_queue_ahead_of_anothers() {
        let mut lanes = CatchUpLanes::default();
        let hostile: Vec<u64> = (0..3_000).map(|_| lanes.slot("hostile")).collect();
        assert_eq!(hostile[..3], [0, 1, 2], "alone, a tenant takes every slot");
        assert_eq!(
            lanes.slot("victim"),
            1,
            "another tenant's first probe goes in the next lane"
        );
        assert_eq!(
            lanes.slot("hostile"),
            6_000,
            "then the first tenant takes every other slot"
        );
        assert_eq!(lanes.slot("victim"), 3);
        assert_eq!(lanes.slot("third"), 2);
    }

    #[test]
    fn catch_up_slots_count_per_host_from_when_leading_began() {
        let mut q = CatchUpQueues::default();
        assert_eq!(q.take("t", "a:443"), 0);
        assert_eq!(q.take("t", "a:443"), 1);
        assert_eq!(q.take("t", "b:443"), 0, "each host has its own queue");
        q.restart();
        assert_eq!(q.take("t", "a:443"), 0);
    }

    #[test]
    fn overdue_probes_queue_per_host_at_the_catch_up_rate() {
        let at = |slot, j| catch_up(t(100), slot, 10.0, Jitter::new(j));
        assert_eq!(at(0, 0.0), t(100), "the first goes when leading begins");
        assert_eq!(at(10, 0.0), t(101), "ten a second");
        assert_eq!(at(600, 0.0), t(160), "600 overdue take a minute");
        assert!(at(5, 0.99) < at(6, 0.0), "jitter stays inside the slot");
        // Whatever the number, no second holds more than the rate.
        let slots: Vec<Timestamp> = (0..5_000u64).map(|k| at(k, 0.5)).collect();
        let mut per_second = std::collections::BTreeMap::<i64, u32>::new();
        for s in &slots {
            *per_second.entry(s.as_second()).or_default() += 1;
        }
        assert_eq!(per_second.values().max(), Some(&10));
        assert_eq!(
            slots.last(),
            Some(&add(t(100), Duration::from_millis(499_950))),
            "5,000 take 500 s"
        );
        // A nonsense rate falls back to the default; a huge slot does not overflow.
        assert_eq!(catch_up(t(0), 10, 0.0, Jitter::new(0.0)), t(1));
        assert!(catch_up(t(0), u64::MAX, 1e-300, Jitter::new(0.0)) > t(0));
    }

    #[test]
    fn expiry_instants_are_the_warning_and_the_expiry() {
        let warn = Duration::from_secs(100);
        assert_eq!(expiry_instants(Some(t(1000)), warn, t(0)), Some(t(900)));
        assert_eq!(expiry_instants(Some(t(1000)), warn, t(950)), Some(t(1000)));
        assert_eq!(expiry_instants(Some(t(1000)), warn, t(1000)), None);
        assert_eq!(expiry_instants(None, warn, t(0)), None);
    }
}
