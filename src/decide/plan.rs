//! The functional core of a reconcile: from the spec, what was observed, the probe outcome and
//! the clock to the status to write and the instant to look again. No I/O here.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{ProbeResult, RateLimitStatus, TenantApiCredentialStatus};
use crate::decide::conditions::{self, Reason, Status as S, Type};
use crate::decide::schedule::{self, Finished, Jitter};
use crate::decide::token::{Fingerprint, Lifetime};
use crate::decide::verdict::{self, ProbeOutcome};

mod problem;
mod readiness;
mod spec;

pub use problem::Problem;
pub use spec::{Settings, TokenSource, reads, resolve};

/// The status of a credential whose spec the types cannot read at all (it slipped past schema
/// validation: a CRD installed without it, or an older schema): decided like any other invalid
/// spec, with nothing to probe. `why` is the decoder's message, bounded.
pub fn unreadable_spec(
    observed: &TenantApiCredentialStatus,
    why: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> TenantApiCredentialStatus {
    let mut why: String = why.chars().take(300).collect();
    why.insert_str(0, "the spec does not match the TenantApiCredential schema: ");
    decide(&Input {
        generation,
        observed,
        settings: None,
        token: None,
        problem: Some(&Problem::InvalidSpec(why)),
        probe: &ProbeStep::None,
        rotation: None,
        probe_request: None,
        now,
        // Nothing is scheduled without settings: the jitter is never drawn.
        jitter: Jitter::new(0.5),
    })
    .status
}

/// What the last decisive probe said about the token in the Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No decisive answer yet for this token.
    Probing,
    Valid,
    Failing(Failure),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Unauthorized,
    Forbidden,
    Expired,
}

impl Failure {
    fn reason(self) -> Reason {
        match self {
            Self::Unauthorized => Reason::Unauthorized,
            Self::Forbidden => Reason::Forbidden,
            Self::Expired => Reason::Expired,
        }
    }
}

/// The reason Ready shows once `result` is the decisive answer about a token (`tenantcred check`
/// names it for a single probe); `None` for answers that never decide (a 429, an outage).
pub fn decisive_reason(result: ProbeResult) -> Option<Reason> {
    match result {
        ProbeResult::Valid => Some(Reason::TokenValid),
        ProbeResult::Unauthorized => Some(Failure::Unauthorized.reason()),
        ProbeResult::Forbidden => Some(Failure::Forbidden.reason()),
        ProbeResult::Expired => Some(Failure::Expired.reason()),
        ProbeResult::Invalid => Some(Reason::InvalidToken),
        ProbeResult::RateLimited | ProbeResult::Unavailable => None,
    }
}

/// Reads the health the previous status recorded.
pub fn health_of(status: &TenantApiCredentialStatus) -> Health {
    let degraded = match conditions::state(&status.conditions, Type::Degraded) {
        Some((S::True, reason)) => reason,
        _ => None,
    };
    match degraded {
        Some(Reason::Unauthorized) => return Health::Failing(Failure::Unauthorized),
        Some(Reason::Forbidden) => return Health::Failing(Failure::Forbidden),
        Some(Reason::Expired) => return Health::Failing(Failure::Expired),
        _ => {}
    }
    if conditions::is_true(&status.conditions, Type::Ready) {
        Health::Valid
    } else {
        Health::Probing
    }
}

/// The token currently in the managed Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFacts {
    pub fingerprint: Fingerprint,
    pub lifetime: Lifetime,
    /// An OAuth access token's refresh token lapses then (unless a refresh renews it), when the
    /// server or the definition says.
    pub refresh_lapses: Option<Timestamp>,
}

/// What this reconcile did about probing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeStep {
    /// Not due (or blocked by a problem): nothing happened.
    None,
    /// Due, but held back by the key's budget or the host's back-off until this instant.
    Deferred(Timestamp),
    /// Past expiry: decided without sending a request.
    Expired,
    /// A request was sent (boxed: an outcome is far larger than the other steps).
    Sent(Box<ProbeOutcome>),
}

impl ProbeStep {
    /// The verdict it reached, if any.
    pub fn result(&self) -> Option<ProbeResult> {
        match self {
            Self::Sent(o) => Some(verdict::classify(o)),
            Self::Expired => Some(ProbeResult::Expired),
            Self::Deferred(_) | Self::None => None,
        }
    }
}

pub struct Input<'a> {
    pub generation: Option<i64>,
    pub observed: &'a TenantApiCredentialStatus,
    pub settings: Option<&'a Settings>,
    pub token: Option<&'a TokenFacts>,
    pub problem: Option<&'a Problem>,
    pub probe: &'a ProbeStep,
    /// A rotation this reconcile validated (or tried to); `None` leaves `status.rotation` as it was.
    pub rotation: Option<&'a crate::crd::RotationStatus>,
    /// The `probe-requested-at` annotation value this reconcile honoured.
    pub probe_request: Option<&'a str>,
    pub now: Timestamp,
    pub jitter: Jitter,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: TenantApiCredentialStatus,
    /// When something is next due (a probe, entering the warning window, expiry).
    pub requeue_at: Option<Timestamp>,
}

/// Whether the `probe-requested-at` annotation asks for a probe not yet made.
pub fn new_probe_request(observed: &TenantApiCredentialStatus, requested: Option<&str>) -> bool {
    requested.is_some() && requested != observed.last_handled_probe_request.as_deref()
}

/// When a credential's probe is due, per the previous status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// A new token, a probe-now request, or no schedule: probe now.
    Now,
    /// As scheduled.
    At(Timestamp),
    /// It fell due before this replica began to lead (a restart, a failover, an outage): it
    /// takes its host's next catch-up slot (`schedule::catch_up`) instead of firing with every
    /// other overdue probe at once.
    Overdue,
}

/// When the next probe is due. `started_at` is when this replica began to lead.
pub fn probe_due(
    observed: &TenantApiCredentialStatus,
    token: &TokenFacts,
    requested: Option<&str>,
    started_at: Timestamp,
) -> Due {
    let same_token = observed.token_fingerprint.as_deref() == Some(token.fingerprint.as_str());
    if !same_token || observed.last_probe_result.is_none() || new_probe_request(observed, requested) {
        return Due::Now;
    }
    // No schedule: an input problem cleared it (and has just gone away): probe now.
    match observed.next_probe_time.as_ref().map(|t| t.0) {
        None => Due::Now,
        Some(next) if next < started_at => Due::Overdue,
        Some(next) => Due::At(next),
    }
}

pub fn decide(input: &Input<'_>) -> Decision {
    // Refused at connect time (the name resolved to addresses the owner has not allowed): not a
    // probe at all, but the same input problem as a baseUrl refused up front.
    if let ProbeStep::Sent(outcome) = input.probe
        && let verdict::Transport::NotAllowed(why) = &outcome.transport
    {
        let refused = Problem::BaseUrlNotAllowed(why.clone());
        return decide(&Input {
            problem: Some(input.problem.unwrap_or(&refused)),
            probe: &ProbeStep::None,
            ..*input
        });
    }
    let now = conditions::truncate(input.now);
    let mut s = input.observed.clone();
    s.observed_generation = input.generation;
    let mut health = health_of(input.observed);
    let mut previous_transient_delay = None;
    if let Some(settings) = input.settings {
        s.secret_name = Some(settings.secret_name.clone());
    }
    if let Some(token) = input.token {
        if s.token_fingerprint.as_deref() != Some(token.fingerprint.as_str()) {
            // A different token is in the Secret: what was learnt about the old one no longer holds.
            s.token_fingerprint = Some(token.fingerprint.to_string());
            s.consecutive_failures = 0;
            s.last_probe_result = None;
            s.last_probe_http_status = None;
            s.rate_limit = None;
            s.next_probe_time = None;
            s.provider_expires_at = None;
            health = Health::Probing;
        } else if matches!(
            s.last_probe_result,
            Some(ProbeResult::RateLimited | ProbeResult::Unavailable)
        ) {
            previous_transient_delay = match (&s.last_probe_time, &s.next_probe_time) {
                (Some(last), Some(next)) => Some(schedule::until(last.0, next.0)),
                _ => None,
            };
        }
    }

    match input.probe {
        ProbeStep::None => {}
        ProbeStep::Deferred(until) => s.next_probe_time = Some(time(*until)),
        ProbeStep::Expired => {
            s.last_probe_result = Some(ProbeResult::Expired);
            s.last_probe_http_status = None;
            s.next_probe_time = None;
            health = Health::Failing(Failure::Expired);
        }
        ProbeStep::Sent(outcome) => {
            let result = verdict::classify(outcome);
            let first_for_token = s.last_probe_result.is_none();
            s.last_probe_time = Some(time(now));
            s.last_probe_result = Some(result);
            s.last_probe_http_status = outcome.http_status();
            if let Some(stated) = outcome.stated_expiry {
                s.provider_expires_at = Some(time(stated));
            }
            if !outcome.rate_limit.is_empty() {
                s.rate_limit = Some(RateLimitStatus {
                    limit: outcome.rate_limit.limit,
                    remaining: outcome.rate_limit.remaining,
                    reset_at: outcome.rate_limit.reset_at.map(time),
                    held_back: None,
                });
            }
            // What a 429 held back, for the Ready message; any other answer clears it.
            let held_back = outcome.held_back.filter(|_| result == ProbeResult::RateLimited);
            if let Some(r) = s.rate_limit.as_mut() {
                r.held_back = held_back;
            } else if held_back.is_some() {
                s.rate_limit = Some(RateLimitStatus {
                    limit: None,
                    remaining: None,
                    reset_at: None,
                    held_back,
                });
            }
            let threshold = input
                .settings
                .map_or(crate::crd::DEFAULT_FAILURE_THRESHOLD, |st| st.failure_threshold);
            match result {
                ProbeResult::Valid => {
                    s.consecutive_failures = 0;
                    s.last_successful_probe_time = Some(time(now));
                    health = Health::Valid;
                }
                ProbeResult::Unauthorized | ProbeResult::Forbidden => {
                    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                    if s.consecutive_failures >= threshold {
                        health = Health::Failing(if result == ProbeResult::Forbidden {
                            Failure::Forbidden
                        } else {
                            Failure::Unauthorized
                        });
                    }
                }
                // Never the token's fault: the count and the health stay as they were.
                _ => {}
            }
            let interval = input
                .settings
                .map_or(crate::crd::DEFAULT_PROBE_INTERVAL, |st| st.interval.effective);
            let finished = Finished {
                result,
                consecutive_failures: s.consecutive_failures,
                failure_threshold: threshold,
                first_for_token,
                previous_transient_delay,
                provider_back_off: outcome.back_off_until(),
            };
            s.next_probe_time =
                schedule::next_probe(finished, interval, now, input.jitter).map(|t| time(conditions::truncate(t)));
        }
    }
    if let Some(token) = input.token {
        // The earliest of what the token carries, what the spec declares and what the provider
        // stated (re-read at every probe).
        let not_after = input.settings.and_then(|st| st.not_after);
        let stated = s.provider_expires_at.as_ref().map(|t| t.0);
        s.expires_at = [token.lifetime.expires_at, not_after, stated]
            .into_iter()
            .flatten()
            .min()
            .map(time);
    }
    if let Some(Problem::InvalidToken(_)) = input.problem {
        s.last_probe_result = Some(ProbeResult::Invalid);
    }
    if input.problem.is_some() {
        // Nothing is probed until the input is usable again; a change to it triggers a reconcile.
        s.next_probe_time = None;
    }
    if let Some(r) = input.probe_request {
        s.last_handled_probe_request = Some(r.to_owned());
    }
    if let Some(r) = input.rotation {
        s.rotation = Some(r.clone());
    }

    let desired = readiness::desired_conditions(input, &s, health, now);
    s.conditions = conditions::merge(&input.observed.conditions, &desired, input.generation, now);

    let expiry_at = input
        .settings
        .and_then(|st| schedule::expiry_instants(s.expires_at.as_ref().map(|t| t.0), st.warn_before, now));
    let requeue_at = [s.next_probe_time.as_ref().map(|t| t.0), expiry_at]
        .into_iter()
        .flatten()
        .min();
    Decision { status: s, requeue_at }
}

fn time(t: Timestamp) -> Time {
    Time(conditions::truncate(t))
}

#[cfg(test)]
mod tests;
