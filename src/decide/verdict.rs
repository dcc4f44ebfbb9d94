//! From what a probe saw to what it means for the token: one pure function, shared by the
//! controller and `tenantcred check`.

use std::time::Duration;

use jiff::Timestamp;

use crate::crd::ProbeResult;
use crate::decide::provider::{Meaning, ResetUnit, StatusRules};

/// What happened when a probe request was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The provider answered with this HTTP status.
    Answered(u16),
    /// No answer within `probe.timeout`.
    Timeout,
    /// DNS, TLS, connection refused or reset, a redirect we refused to follow...
    Failed(TransportFailure),
    /// The operator's egress rules refused every address the host resolved to; nothing was sent.
    /// The message names the host and the addresses.
    NotAllowed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportFailure {
    Connect,
    Redirect,
    /// The token cannot be an HTTP header value; nothing was sent.
    Unsendable,
    Other,
}

/// `X-RateLimit-*` headers as sent by the provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset_at: Option<Timestamp>,
}

impl RateLimit {
    pub fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset_at.is_none()
    }
}

/// Everything a probe observed that matters for the decision. Holds no token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub transport: Transport,
    /// `Retry-After`, already turned into an instant.
    pub retry_after: Option<Timestamp>,
    pub rate_limit: RateLimit,
    /// What is shown of an error answer (see `decide::error_body`): shapes, never its text.
    pub error_body: Option<crate::decide::error_body::BodySummary>,
    pub elapsed: Duration,
    /// For a 429: what the operator holds back because of it (set by the probe budget).
    pub held_back: Option<crate::crd::RateLimitScope>,
    /// Which statuses mean what, by the provider's definition.
    pub rules: StatusRules,
    /// The token's expiry as the provider's answer stated it (an ApiProvider's expiry header).
    pub stated_expiry: Option<Timestamp>,
}

impl ProbeOutcome {
    pub fn answered(status: u16) -> Self {
        Self {
            transport: Transport::Answered(status),
            retry_after: None,
            rate_limit: RateLimit::default(),
            error_body: None,
            elapsed: Duration::ZERO,
            held_back: None,
            rules: StatusRules::default(),
            stated_expiry: None,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self.transport {
            Transport::Answered(s) => Some(s),
            _ => None,
        }
    }

    /// When the provider asked us to come back: `Retry-After`, else the rate-limit reset when the
    /// window is used up (or the answer was a 429).
    pub fn back_off_until(&self) -> Option<Timestamp> {
        let exhausted = self.rate_limit.remaining == Some(0) || self.http_status() == Some(429);
        match (self.retry_after, self.rate_limit.reset_at) {
            (Some(a), Some(r)) if exhausted => Some(a.max(r)),
            (Some(a), _) => Some(a),
            (None, Some(r)) if exhausted => Some(r),
            _ => None,
        }
    }
}

/// By default 2xx Valid, 401 Unauthorized, 403 Forbidden (a provider's definition may list other
/// statuses); 429 always RateLimited; everything the provider or the network is to blame for is
/// Unavailable and never counts against the token.
pub fn classify(outcome: &ProbeOutcome) -> ProbeResult {
    match outcome.transport {
        // A redirect is refused before it gets here, so no listed 3xx can count as valid.
        Transport::Answered(s) => match outcome.rules.meaning(s) {
            Meaning::Valid => ProbeResult::Valid,
            Meaning::Unauthorized => ProbeResult::Unauthorized,
            Meaning::Forbidden => ProbeResult::Forbidden,
            Meaning::RateLimited => ProbeResult::RateLimited,
            // 404 from a gateway, 5xx: the provider or the path, not the token.
            Meaning::Unavailable => ProbeResult::Unavailable,
        },
        Transport::Timeout | Transport::Failed(_) | Transport::NotAllowed(_) => ProbeResult::Unavailable,
    }
}

/// Parses the rate-limit headers; unreadable values are ignored, never trusted.
pub fn parse_rate_limit(
    limit: Option<&str>,
    remaining: Option<&str>,
    reset: Option<&str>,
    unit: ResetUnit,
    now: Timestamp,
) -> RateLimit {
    let num = |v: Option<&str>| v.and_then(|s| s.trim().parse::<u64>().ok());
    // Unix seconds per CharityStack; some APIs send seconds-until-reset instead: unless the
    // definition says which, a small number cannot be a plausible epoch, so read it as a delay.
    let reset_at = num(reset).and_then(|n| {
        let delay = match unit {
            ResetUnit::Auto => n < 1_000_000_000,
            ResetUnit::Seconds => true,
            ResetUnit::EpochSeconds => false,
        };
        if delay {
            now.checked_add(jiff::SignedDuration::from_secs(n.min(MAX_WAIT_SECS) as i64))
                .ok()
        } else {
            let at = i64::try_from(n)
                .ok()
                .and_then(|n| Timestamp::from_second(n).ok())
                .unwrap_or(Timestamp::MAX);
            Some(at.min(within_a_day(now)))
        }
    });
    RateLimit {
        limit: num(limit),
        remaining: num(remaining),
        reset_at,
    }
}

/// The longest a provider's answer holds a key (or a host) back, in any of its forms: a day, then
/// one probe asks again. A provider cannot park a key (or, with a second one, a host) for years.
pub const MAX_WAIT_SECS: u64 = 86_400;

fn within_a_day(now: Timestamp) -> Timestamp {
    now.checked_add(jiff::SignedDuration::from_secs(MAX_WAIT_SECS as i64))
        .unwrap_or(now)
}

/// `Retry-After` as seconds or an HTTP date, at most a day ahead.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Timestamp> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return now
            .checked_add(jiff::SignedDuration::from_secs(secs.min(MAX_WAIT_SECS) as i64))
            .ok();
    }
    jiff::fmt::rfc2822::parse(v)
        .ok()
        .map(|z| z.timestamp().min(within_a_day(now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("valid")
    }

    /// Found by the hostile-tenant review: only the seconds form was capped; an HTTP date (and an
    /// epoch `reset`) held a key, or with a second key the whole host, for decades.
    #[test]
    fn a_retry_after_date_or_epoch_reset_is_capped_at_a_day() {
        let now = ts(1_800_000_000);
        let day = ts(1_800_000_000 + 86_400);
        let far = parse_retry_after("Sat, 01 Jan 2050 00:00:00 GMT", now).expect("a date");
        assert!(far <= day, "Retry-After date held back until {far}");
        let reset = parse_rate_limit(None, Some("0"), Some("253402300799"), ResetUnit::Auto, now);
        let until = reset.reset_at.expect("an epoch");
        assert!(until <= day, "reset held back until {until}");
    }

    #[test]
    fn classification_matches_providers_md() {
        let cases = [
            (Transport::Answered(200), ProbeResult::Valid),
            (Transport::Answered(204), ProbeResult::Valid),
            (Transport::Answered(401), ProbeResult::Unauthorized),
            (Transport::Answered(403), ProbeResult::Forbidden),
            (Transport::Answered(429), ProbeResult::RateLimited),
            (Transport::Answered(500), ProbeResult::Unavailable),
            (Transport::Answered(503), ProbeResult::Unavailable),
            (Transport::Answered(302), ProbeResult::Unavailable),
            (Transport::Timeout, ProbeResult::Unavailable),
            (Transport::Failed(TransportFailure::Connect), ProbeResult::Unavailable),
            (Transport::Failed(TransportFailure::Redirect), ProbeResult::Unavailable),
        ];
        for (transport, want) in cases {
            let o = ProbeOutcome {
                transport: transport.clone(),
                ..ProbeOutcome::answered(0)
            };
            assert_eq!(classify(&o), want, "{transport:?}");
        }
    }

    #[test]
    fn rate_limit_headers() {
        let now = ts(1_800_000_000);
        let rl = parse_rate_limit(Some("1000"), Some("987"), Some("1800000600"), ResetUnit::Auto, now);
        assert_eq!(
            rl,
            RateLimit {
                limit: Some(1000),
                remaining: Some(987),
                reset_at: Some(ts(1_800_000_600))
            }
        );
        let rl = parse_rate_limit(Some("x"), None, Some("60"), ResetUnit::Auto, now);
        assert_eq!(
            rl,
            RateLimit {
                limit: None,
                remaining: None,
                reset_at: Some(ts(1_800_000_060))
            }
        );
    }

    #[test]
    fn a_definition_says_how_the_reset_counts() {
        let now = ts(1_800_000_000);
        let secs = parse_rate_limit(None, None, Some("1800000600"), ResetUnit::Seconds, now);
        assert_eq!(secs.reset_at, Some(ts(1_800_000_000 + 86_400)), "capped delay");
        let epoch = parse_rate_limit(None, None, Some("60"), ResetUnit::EpochSeconds, now);
        assert_eq!(epoch.reset_at, Some(ts(60)));
    }

    #[test]
    fn a_definition_lists_its_own_statuses() {
        let rules = StatusRules {
            valid: vec![200],
            unauthorized: vec![401, 404],
            forbidden: vec![],
        };
        let judge = |s| {
            classify(&ProbeOutcome {
                rules: rules.clone(),
                ..ProbeOutcome::answered(s)
            })
        };
        assert_eq!(judge(200), ProbeResult::Valid);
        assert_eq!(judge(204), ProbeResult::Unavailable, "only the listed valid statuses");
        assert_eq!(judge(404), ProbeResult::Unauthorized);
        assert_eq!(
            judge(403),
            ProbeResult::Forbidden,
            "the default stays for an empty list"
        );
        assert_eq!(judge(429), ProbeResult::RateLimited);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = ts(1_800_000_000);
        assert_eq!(parse_retry_after("120", now), Some(ts(1_800_000_120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(ts(1_445_412_480))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn back_off_prefers_the_later_instant_when_exhausted() {
        let mut o = ProbeOutcome::answered(429);
        o.retry_after = Some(ts(100));
        o.rate_limit.reset_at = Some(ts(200));
        assert_eq!(o.back_off_until(), Some(ts(200)));
        let mut ok = ProbeOutcome::answered(200);
        ok.rate_limit = RateLimit {
            limit: Some(1000),
            remaining: Some(900),
            reset_at: Some(ts(200)),
        };
        assert_eq!(ok.back_off_until(), None, "a healthy window is no reason to wait");
        ok.rate_limit.remaining = Some(0);
        assert_eq!(ok.back_off_until(), Some(ts(200)));
    }
}
