//! A request to a provider (a probe, a token-endpoint call) as the shell attempted it, and what
//! the reconcile makes of one that found no request slot or was asked to stay away.

use jiff::Timestamp;

use crate::decide::fair_share;
use crate::decide::provider::LimitScope;
use crate::decide::schedule::{self, Jitter};
use crate::decide::token::Fingerprint;

/// What became of a request to a provider, as the shell saw it.
#[derive(Clone, Debug)]
pub enum Attempt<T> {
    /// The key's budget or the host's back-off held it back until then; nothing was sent.
    Held(Timestamp),
    /// No request slot came within its patience (`decide::fair_share`); nothing was sent.
    Busy,
    Sent(T),
}

/// The provider asked a key to stay away until `until`: the budget holds it (or its whole host)
/// back. `scope` is how the provider documents its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackOff {
    pub host: String,
    pub key: Fingerprint,
    pub scope: LimitScope,
    pub until: Timestamp,
}

/// When a request that found no slot within its patience comes back: soon, spread
/// (`fair_share::retry_after_busy`) so that the ones turned away together do not come back
/// together.
pub fn busy_until(at: Timestamp, jitter: Jitter) -> Timestamp {
    schedule::add(at, fair_share::retry_after_busy(jitter))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::t;

    #[test]
    fn a_request_without_a_slot_comes_back_within_half_to_one_and_a_half_patience() {
        assert_eq!(
            busy_until(t(0), Jitter::new(0.0)),
            schedule::add(t(0), Duration::from_millis(2500))
        );
        assert_eq!(busy_until(t(0), Jitter::new(0.5)), t(5));
        assert_eq!(
            busy_until(t(0), Jitter::new(1.0)),
            schedule::add(t(0), Duration::from_millis(7500))
        );
    }
}
