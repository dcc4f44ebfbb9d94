//! The probe's policies, as the reconcile applies them: whether another credential's answer
//! answers this probe, what a request that found no slot or no budget becomes, and what a
//! probe's answer asks of the rest of the operator (an answer to share, a probe to count, a
//! back-off to keep). The shell asks the budget and the provider and reports what it got.

use std::time::Duration;

use jiff::Timestamp;

use super::request::{Attempt, BackOff, busy_until};
use crate::crd::ProbeResult;
use crate::decide::conditions;
use crate::decide::plan::{ProbeStep, Settings};
use crate::decide::schedule::Jitter;
use crate::decide::sharing::{self, Heard, ProbeKey};
use crate::decide::token::{Fingerprint, Token};
use crate::decide::verdict::{self, ProbeOutcome, Transport};

/// A probe counted as the provider's: its result and how long it took (metrics, provider status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Count {
    pub provider: String,
    pub result: ProbeResult,
    pub elapsed: Duration,
}

/// What a probe's answer asks of the rest of the operator, besides this credential's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfterProbe {
    /// Heard by every credential that holds the same token for the same request.
    pub share: Option<(ProbeKey, Heard)>,
    /// Counted as a probe of the provider; `None` when nothing was sent.
    pub count: Option<Count>,
    pub back_off: Option<BackOff>,
}

impl AfterProbe {
    fn is_empty(&self) -> bool {
        self.share.is_none() && self.count.is_none() && self.back_off.is_none()
    }
}

/// What identifies a probe of `token` with these settings, for sharing its answer.
pub fn key(settings: &Settings, token: &Token) -> ProbeKey {
    ProbeKey::new(&settings.profile.name, &settings.probe_url(), &token.fingerprint())
}

/// Another credential's answer about the same token, taken as this credential's probe when it
/// answers for it (`sharing::answers_for`): heard after this credential's own latest probe, and
/// recently enough.
pub fn shared(
    heard: Option<Heard>,
    last_probe: Option<Timestamp>,
    settings: &Settings,
    now: Timestamp,
) -> Option<ProbeStep> {
    let heard = heard.filter(|h| sharing::answers_for(*h, last_probe, now, settings.interval.effective))?;
    Some(ProbeStep::Sent(Box::new(ProbeOutcome {
        rules: settings.profile.probe.statuses.clone(),
        ..ProbeOutcome::answered(heard.status)
    })))
}

/// A probe as the shell attempted it, for the credential's status: held back by the budget, it
/// waits until then; without a slot, it comes back soon (`request::busy_until`).
pub fn step(attempt: Attempt<Box<ProbeOutcome>>, at: Timestamp, jitter: Jitter) -> ProbeStep {
    match attempt {
        Attempt::Held(until) => ProbeStep::Deferred(until),
        Attempt::Busy => ProbeStep::Deferred(busy_until(at, jitter)),
        Attempt::Sent(outcome) => ProbeStep::Sent(outcome),
    }
}

/// What a sent probe's answer asks beyond this credential (`None`: nothing):
/// - an answer about the token (`sharing::worth_sharing`) is shared, stamped in whole seconds as
///   status times are, so the credential's own next probe never takes its own answer for another's;
/// - a connection the egress rules refused sent nothing: it is not a probe, and not a provider
///   outage, so it is not counted;
/// - a provider that asked us to come back later (`Retry-After`, a spent rate-limit window)
///   holds the key back until then.
pub fn after(
    step: &ProbeStep,
    settings: &Settings,
    token: &Token,
    key: &Fingerprint,
    at: Timestamp,
) -> Option<AfterProbe> {
    let ProbeStep::Sent(outcome) = step else {
        return None;
    };
    let share = outcome
        .http_status()
        .filter(|s| sharing::worth_sharing(*s))
        .map(|status| {
            let heard = Heard {
                at: conditions::truncate(at),
                status,
            };
            (self::key(settings, token), heard)
        });
    let count = (!matches!(outcome.transport, Transport::NotAllowed(_))).then(|| Count {
        provider: settings.profile.name.clone(),
        result: verdict::classify(outcome),
        elapsed: outcome.elapsed,
    });
    let back_off = outcome.back_off_until().map(|until| BackOff {
        host: settings.host(),
        key: key.clone(),
        scope: settings.profile.limit_scope,
        until,
    });
    let after = AfterProbe { share, count, back_off };
    (!after.is_empty()).then_some(after)
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
