//! Status and conditions: the kstatus conditions (Ready, Degraded, Stalled, ExpiringSoon) a
//! decided status carries, with their reasons and messages.

use std::time::Duration;

use jiff::Timestamp;

use super::{Failure, Health, Input};
use crate::crd::{ProbeResult, TenantApiCredentialStatus};
use crate::decide::conditions::{Desired, Reason, Status as S, Type};
use crate::decide::{duration, schedule};

pub(super) fn desired_conditions(
    input: &Input<'_>,
    s: &TenantApiCredentialStatus,
    health: Health,
    now: Timestamp,
) -> Vec<Desired> {
    let fp = s.token_fingerprint.as_deref().unwrap_or("(none)");
    let settings = input.settings;
    let threshold = settings.map_or(crate::crd::DEFAULT_FAILURE_THRESHOLD, |st| st.failure_threshold);
    let stretched = settings
        .and_then(|st| {
            st.interval.stretched_from.map(|from| {
                format!(
                    "; probe interval stretched from {} to {} to stay within 1% of {}'s hourly rate limit",
                    duration::format(from),
                    duration::format(st.interval.effective),
                    st.profile.name
                )
            })
        })
        .unwrap_or_default()
        + &settings
            .and_then(|st| {
                st.timeout_capped_from.map(|from| {
                    format!(
                        "; probe timeout {} capped at {}, the most a request may take",
                        duration::format(from),
                        duration::format(st.timeout)
                    )
                })
            })
            .unwrap_or_default();
    // What the latest non-decisive probe said, appended so Ready's message explains the wait.
    // Messages are functions of status fields a reader acts on only (never an instant that moves
    // at every probe), so a probe that changes nothing renders the same text and writes nothing.
    let pending = match s.last_probe_result {
        Some(ProbeResult::RateLimited) => {
            match s.rate_limit.as_ref().and_then(|r| r.held_back) {
                Some(crate::crd::RateLimitScope::Host) => "; the provider rate-limited the latest probe (HTTP 429), and other tokens of the same provider host too: every token of that host waits as the provider asked".to_string(),
                _ => "; the provider rate-limited the latest probe (HTTP 429) of this token: its probes wait as the provider asked; other tokens go on".to_string(),
            }
        }
        Some(ProbeResult::Unavailable) => format!(
            "; the provider was unavailable on the latest probe ({}); retrying with backoff",
            s.last_probe_http_status
                .map_or("timeout or connection failure".into(), |c| format!("HTTP {c}"))
        ),
        Some(r @ (ProbeResult::Unauthorized | ProbeResult::Forbidden)) if s.consecutive_failures < threshold => {
            format!(
                "; the latest probe got HTTP {} ({} of {threshold} before Degraded); confirming with backoff",
                if r == ProbeResult::Forbidden { 403 } else { 401 },
                s.consecutive_failures
            )
        }
        _ => String::new(),
    };
    let source = input.problem.is_none();
    let path = settings.map(|st| st.probe_path.as_str()).unwrap_or("the probe path");
    let failure_message = |f: Failure| match f {
        Failure::Unauthorized => format!(
            "the provider rejected token {fp} with HTTP 401 on {} consecutive probes: it is expired, revoked or for another organisation; put a new token in the source Secret",
            s.consecutive_failures.max(threshold)
        ),
        Failure::Forbidden => format!(
            "the provider answered HTTP 403 for token {fp} on {} consecutive probes: the token authenticates but lacks permission for GET {path}; ask the customer's administrator to grant it",
            s.consecutive_failures.max(threshold)
        ),
        Failure::Expired => format!(
            "token {fp} expired at {}; put a new token in the source Secret",
            s.expires_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
        ),
    };

    let mut out = Vec::with_capacity(5);
    let (ready, stalled) = match (input.problem, health) {
        (Some(p), _) => {
            let ready = Desired::new(Type::Ready, S::False, p.reason(), p.message());
            let stalled = if p.stalls() {
                Some(Desired::new(Type::Stalled, S::True, p.reason(), p.message()))
            } else if let Health::Failing(f) = health {
                Some(Desired::new(Type::Stalled, S::True, f.reason(), failure_message(f)))
            } else {
                None
            };
            (ready, stalled)
        }
        (None, Health::Failing(f)) => {
            let m = failure_message(f);
            (
                Desired::new(Type::Ready, S::False, f.reason(), m.clone()),
                Some(Desired::new(Type::Stalled, S::True, f.reason(), m)),
            )
        }
        (None, Health::Valid) => (
            Desired::new(
                Type::Ready,
                S::True,
                Reason::TokenValid,
                format!("the provider accepted token {fp} on the last decisive probe{pending}{stretched}"),
            ),
            None,
        ),
        (None, Health::Probing) => (
            Desired::new(
                Type::Ready,
                S::Unknown,
                Reason::Probing,
                format!("waiting for a decisive probe of token {fp}{pending}{stretched}"),
            ),
            None,
        ),
    };
    out.push(ready);
    out.push(match (input.problem.filter(|p| p.degrades()), health) {
        (Some(p), _) => Desired::new(Type::Degraded, S::True, p.reason(), p.message()),
        (None, Health::Failing(f)) => Desired::new(Type::Degraded, S::True, f.reason(), failure_message(f)),
        _ => Desired::new(
            Type::Degraded,
            S::False,
            Reason::AsExpected,
            "no credential-side failure",
        ),
    });
    out.extend(stalled);
    let rotating = s
        .rotation
        .as_ref()
        .filter(|r| r.phase == crate::crd::RotationPhase::Pending);
    if let (true, Some(r)) = (source, rotating) {
        let pending = r.pending_fingerprint.as_deref().unwrap_or("(unknown)");
        out.push(Desired::new(
            Type::Reconciling,
            S::True,
            Reason::Rotating,
            format!("validating token {pending} before it replaces {fp}"),
        ));
    } else if source && health == Health::Probing {
        out.push(Desired::new(
            Type::Reconciling,
            S::True,
            Reason::Probing,
            format!("probing token {fp}"),
        ));
    }
    out.push(if let Some(st) = settings.filter(|st| st.source.auto_renewed()) {
        let idle = st.profile.oauth.as_deref().and_then(|d| d.refresh_idle_lifetime);
        refresh_lapse(input.token.and_then(|t| t.refresh_lapses), st.warn_before, idle, now)
    } else {
        expiring_soon(
            s.expires_at.as_ref().map(|t| t.0),
            settings.map(|st| st.warn_before),
            now,
        )
    });
    out
}

/// An auto-renewed access token lasts as long as the refresh token behind it: a person signs in
/// again before that lapses. Where each refresh renews it (the definition's idle lifetime), it
/// only nears its lapse when refreshes stop, so the window is at most half that lifetime.
fn refresh_lapse(lapses: Option<Timestamp>, warn: Duration, idle: Option<Duration>, now: Timestamp) -> Desired {
    let renewed = "the access token is renewed automatically before it expires";
    let Some(exp) = lapses else {
        return Desired::new(Type::ExpiringSoon, S::False, Reason::AsExpected, renewed);
    };
    let window = idle.map_or(warn, |idle| warn.min(idle / 2));
    if exp <= now {
        Desired::new(
            Type::ExpiringSoon,
            S::False,
            Reason::Expired,
            format!("the refresh token lapsed at {exp}; sign in again: put a new refresh token in the login Secret"),
        )
    } else if schedule::until(now, exp) <= window {
        Desired::new(
            Type::ExpiringSoon,
            S::True,
            Reason::ExpiringSoon,
            format!(
                "the refresh token lapses at {exp}, within the {} warning window; sign in again before then: put a new refresh token in the login Secret",
                duration::format(window)
            ),
        )
    } else {
        // No instant here: the lapse moves with every refresh, and the message would with it.
        Desired::new(
            Type::ExpiringSoon,
            S::False,
            Reason::AsExpected,
            format!("{renewed}, and the refresh token before it lapses"),
        )
    }
}

fn expiring_soon(expires_at: Option<Timestamp>, warn_before: Option<Duration>, now: Timestamp) -> Desired {
    let (Some(exp), Some(warn)) = (expires_at, warn_before) else {
        return Desired::new(
            Type::ExpiringSoon,
            S::False,
            Reason::AsExpected,
            "the token declares no expiry",
        );
    };
    let left = schedule::until(now, exp);
    if exp <= now {
        Desired::new(
            Type::ExpiringSoon,
            S::False,
            Reason::Expired,
            format!("the token expired at {exp}"),
        )
    } else if left <= warn {
        Desired::new(
            Type::ExpiringSoon,
            S::True,
            Reason::ExpiringSoon,
            format!(
                "the token expires at {exp}, within the {} warning window; ask the customer for a new one",
                duration::format(warn)
            ),
        )
    } else {
        Desired::new(
            Type::ExpiringSoon,
            S::False,
            Reason::AsExpected,
            format!("the token expires at {exp}"),
        )
    }
}
