//! Validate-before-cutover: when a new token shows up, decide whether it replaces the one pods
//! use at once, only after the provider accepted it, or not at all. Pure.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{ProbeResult, RotationPhase, RotationStatus};
use crate::decide::conditions::truncate;
use crate::decide::plan::{Health, ProbeStep};
use crate::decide::schedule::{self, Jitter};
use crate::decide::token::Fingerprint;

/// What to do with a candidate token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cutover {
    /// It is already the token in use, or it failed validation and nothing changed since.
    Keep,
    /// Nothing to protect (first sync, or the token in use is not known good): write it now.
    Now,
    /// The token in use works: probe the candidate first.
    Validate,
}

/// `minted`: the candidate is an access token the provider issued a moment ago (OAuth), which
/// needs no validation.
pub fn cutover(
    current: Option<&Fingerprint>,
    current_health: Health,
    candidate: &Fingerprint,
    rotation: Option<&RotationStatus>,
    retry_requested: bool,
    minted: bool,
) -> Cutover {
    let Some(current) = current else { return Cutover::Now };
    if current == candidate {
        return Cutover::Keep;
    }
    if minted || current_health != Health::Valid {
        return Cutover::Now;
    }
    let already_failed = rotation.is_some_and(|r| {
        r.phase == RotationPhase::Failed && r.pending_fingerprint.as_deref() == Some(candidate.as_str())
    });
    if already_failed && !retry_requested {
        Cutover::Keep
    } else {
        Cutover::Validate
    }
}

/// What validating the candidate came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// The provider accepted it: cut over.
    Accepted,
    /// Refused (401/403), malformed or expired: keep the current token.
    Refused,
    /// No decisive answer (429, outage, budget): try again later.
    Undecided,
}

pub fn validation(result: Option<ProbeResult>) -> Validation {
    match result {
        Some(ProbeResult::Valid) => Validation::Accepted,
        Some(ProbeResult::Unauthorized | ProbeResult::Forbidden | ProbeResult::Invalid | ProbeResult::Expired) => {
            Validation::Refused
        }
        Some(ProbeResult::RateLimited | ProbeResult::Unavailable) | None => Validation::Undecided,
    }
}

/// When an undecided validation is tried again: when the budget or the provider's back-off
/// allows, else after the first transient delay (jittered down, so many do not retry at once).
pub fn retry_at(step: &ProbeStep, now: Timestamp, jitter: Jitter) -> Timestamp {
    match step {
        ProbeStep::Deferred(until) => *until,
        ProbeStep::Sent(o) => o
            .back_off_until()
            .unwrap_or_else(|| schedule::add(now, jitter.scale(schedule::TRANSIENT_FIRST, 0.5, 1.0))),
        ProbeStep::Expired | ProbeStep::None => schedule::add(now, schedule::TRANSIENT_FIRST),
    }
}

/// The `status.rotation` that records a validation.
pub fn record(v: Validation, candidate: &Fingerprint, now: Timestamp) -> RotationStatus {
    let (phase, completed_at) = match v {
        Validation::Accepted => (RotationPhase::Validated, Some(Time(truncate(now)))),
        Validation::Refused => (RotationPhase::Failed, Some(Time(truncate(now)))),
        Validation::Undecided => (RotationPhase::Pending, None),
    };
    RotationStatus {
        phase,
        pending_fingerprint: Some(candidate.to_string()),
        completed_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(s: &str) -> Fingerprint {
        Fingerprint::of(s.as_bytes())
    }

    #[test]
    fn first_sync_and_broken_current_tokens_cut_over_at_once() {
        assert_eq!(
            cutover(None, Health::Probing, &fp("new"), None, false, false),
            Cutover::Now
        );
        for h in [
            Health::Probing,
            Health::Failing(crate::decide::plan::Failure::Unauthorized),
            Health::Failing(crate::decide::plan::Failure::Expired),
        ] {
            assert_eq!(
                cutover(Some(&fp("old")), h, &fp("new"), None, false, false),
                Cutover::Now,
                "{h:?}"
            );
        }
    }

    #[test]
    fn a_working_token_is_only_replaced_after_validation() {
        assert_eq!(
            cutover(Some(&fp("old")), Health::Valid, &fp("new"), None, false, false),
            Cutover::Validate
        );
        assert_eq!(
            cutover(Some(&fp("same")), Health::Valid, &fp("same"), None, false, false),
            Cutover::Keep
        );
    }

    #[test]
    fn a_refused_candidate_is_not_retried_until_asked_or_changed() {
        let failed = record(Validation::Refused, &fp("new"), Timestamp::UNIX_EPOCH);
        assert_eq!(failed.phase, RotationPhase::Failed);
        assert_eq!(
            cutover(Some(&fp("old")), Health::Valid, &fp("new"), Some(&failed), false, false),
            Cutover::Keep
        );
        assert_eq!(
            cutover(Some(&fp("old")), Health::Valid, &fp("new"), Some(&failed), true, false),
            Cutover::Validate
        );
        assert_eq!(
            cutover(
                Some(&fp("old")),
                Health::Valid,
                &fp("newer"),
                Some(&failed),
                false,
                false
            ),
            Cutover::Validate
        );
    }

    #[test]
    fn a_minted_access_token_replaces_a_working_one_without_validation() {
        assert_eq!(
            cutover(Some(&fp("old")), Health::Valid, &fp("new"), None, false, true),
            Cutover::Now
        );
        assert_eq!(
            cutover(Some(&fp("same")), Health::Valid, &fp("same"), None, false, true),
            Cutover::Keep
        );
    }

    #[test]
    fn validation_outcomes() {
        assert_eq!(validation(Some(ProbeResult::Valid)), Validation::Accepted);
        assert_eq!(validation(Some(ProbeResult::Unauthorized)), Validation::Refused);
        assert_eq!(validation(Some(ProbeResult::Forbidden)), Validation::Refused);
        assert_eq!(validation(Some(ProbeResult::RateLimited)), Validation::Undecided);
        assert_eq!(validation(Some(ProbeResult::Unavailable)), Validation::Undecided);
        assert_eq!(validation(None), Validation::Undecided);
        let pending = record(Validation::Undecided, &fp("n"), Timestamp::UNIX_EPOCH);
        assert_eq!((pending.phase, pending.completed_at), (RotationPhase::Pending, None));
    }
}
