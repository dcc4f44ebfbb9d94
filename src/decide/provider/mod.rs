//! What tenantcred knows about a provider (docs/providers.md): where its tokens may go, how a
//! token is probed and judged, what a token looks like, how much of a key's rate limit a probe
//! may spend, where a token's expiry is stated. One `Profile` shape for every provider: the four
//! built-in ones are compiled in (`builtin`), any other is an `ApiProvider` object read by
//! `definition`. Nothing else in the operator matches on a provider's name.

pub mod builtin;
pub mod definition;
mod format;
pub mod location;
pub mod oauth;
pub mod report;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

pub use format::{TokenFormat, TokenPattern};

pub use crate::crd::provider::{AuthKind, DateFormat, ExpirySource, ProbeMethod, ResetUnit};

/// Whose budget a provider's rate limit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitScope {
    /// Per key, documented or presumed: a 429 holds back that key; the whole host only when
    /// two or more distinct keys of it are rate-limited at once (one noisy customer must not
    /// blind the probing of every other).
    Key,
    /// Documented as host-wide: any 429 holds back every key of the host.
    Host,
}

/// A host tokens may be sent to over https: a lower-case DNS name and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderHost {
    pub name: String,
    pub port: u16,
}

/// The request that tells whether a token works, and how its answer is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeShape {
    pub method: ProbeMethod,
    pub path: Option<String>,
    pub statuses: StatusRules,
    pub timeout: Option<Duration>,
    pub interval: Option<Duration>,
}

/// Which HTTP statuses mean what. 429 is always a rate limit, and anything not listed is the
/// provider's or the network's problem (Unavailable), never the token's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusRules {
    /// Empty: any 2xx.
    pub valid: Vec<u16>,
    /// Empty: 401.
    pub unauthorized: Vec<u16>,
    /// Empty: 403.
    pub forbidden: Vec<u16>,
}

/// What a status means for a token, by a provider's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meaning {
    Valid,
    Unauthorized,
    Forbidden,
    RateLimited,
    Unavailable,
}

impl StatusRules {
    pub fn meaning(&self, status: u16) -> Meaning {
        let listed = |list: &[u16], default: &dyn Fn(u16) -> bool| {
            if list.is_empty() {
                default(status)
            } else {
                list.contains(&status)
            }
        };
        if status == 429 {
            Meaning::RateLimited
        } else if listed(&self.valid, &|s| (200..300).contains(&s)) {
            Meaning::Valid
        } else if listed(&self.unauthorized, &|s| s == 401) {
            Meaning::Unauthorized
        } else if listed(&self.forbidden, &|s| s == 403) {
            Meaning::Forbidden
        } else {
            Meaning::Unavailable
        }
    }
}

/// How the token is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: <scheme> <token>`.
    Scheme(String),
    /// `<header>: <prefix><token>`.
    Header { name: String, prefix: String },
}

impl Auth {
    /// The header's name and its value around the token (`prefix`, token).
    pub fn header(&self) -> (&str, String) {
        match self {
            Self::Bearer => ("authorization", "Bearer ".into()),
            Self::Scheme(s) => ("authorization", format!("{s} ")),
            Self::Header { name, prefix } => (name, prefix.clone()),
        }
    }
}

/// The response headers that report the rate limit, lower-case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitHeaders {
    pub limit: String,
    pub remaining: String,
    pub reset: String,
    pub retry_after: String,
    pub reset_unit: ResetUnit,
}

impl Default for LimitHeaders {
    fn default() -> Self {
        Self {
            limit: "x-ratelimit-limit".into(),
            remaining: "x-ratelimit-remaining".into(),
            reset: "x-ratelimit-reset".into(),
            retry_after: "retry-after".into(),
            reset_unit: ResetUnit::Auto,
        }
    }
}

/// Where a token's expiry is stated, besides what the credential declares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ExpiryFrom {
    /// The credential's `spec.expiry.notAfter` (and a JWT's `exp`, when the token is one).
    #[default]
    Declared,
    /// A response header of the probe, lower-case, in this format.
    Header { name: String, format: HeaderDate },
}

/// How a header writes a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderDate {
    Rfc3339,
    HttpDate,
    UnixSeconds,
    /// A strftime layout; a time without a zone is UTC.
    Layout(String),
}

impl HeaderDate {
    /// The instant a header value names; `None` when it does not parse (never trusted).
    pub fn parse(&self, value: &str) -> Option<jiff::Timestamp> {
        let v = value.trim();
        match self {
            Self::Rfc3339 => v.parse().ok(),
            Self::HttpDate => jiff::fmt::rfc2822::parse(v).ok().map(|z| z.timestamp()),
            Self::UnixSeconds => v.parse::<i64>().ok().and_then(|s| jiff::Timestamp::from_second(s).ok()),
            Self::Layout(layout) => {
                let parsed = jiff::fmt::strtime::parse(layout, v).ok()?;
                parsed.to_timestamp().ok().or_else(|| {
                    parsed
                        .to_datetime()
                        .ok()?
                        .to_zoned(jiff::tz::TimeZone::UTC)
                        .ok()
                        .map(|z| z.timestamp())
                })
            }
        }
    }
}

/// Everything the operator knows about one provider.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub name: String,
    /// Where tokens may go (besides hosts the operator's owner allows).
    pub hosts: Vec<ProviderHost>,
    pub default_base_url: Option<String>,
    pub probe: ProbeShape,
    pub auth: Auth,
    pub token_format: TokenFormat,
    /// Documented requests per hour per key (or per host), when documented.
    pub hourly_limit: Option<u32>,
    pub limit_scope: LimitScope,
    /// The share of the limit probes may spend (0.01 = 1%).
    pub share: f64,
    pub headers: LimitHeaders,
    pub expiry: ExpiryFrom,
    /// The authorization server, when credentials may use OAuth.
    pub oauth: Option<Arc<oauth::Definition>>,
}

/// Probes may use at most this share of a key's documented hourly limit, unless a definition
/// says otherwise.
pub const BUDGET_SHARE: f64 = 0.01;

/// Without a documented limit a key still gets at most this many probes an hour (confirmations of
/// a 401 included), so a mis-set spec or a probe-now loop cannot hammer an undocumented API.
pub const UNDOCUMENTED_HOURLY_PROBES: u32 = 20;

impl Profile {
    /// Probes a key may receive per hour: the share of the documented limit (1%: CharityStack
    /// 10, Virtuous 50), at least one.
    pub fn hourly_probe_budget(&self) -> u32 {
        match self.hourly_limit {
            Some(limit) => ((f64::from(limit) * self.share).floor() as u32).max(1),
            None => UNDOCUMENTED_HOURLY_PROBES,
        }
    }

    /// The shortest probe interval the budget allows in steady state, with room for the ±10%
    /// jitter: a key probed at this interval never meets the hourly ledger's hard cap.
    pub fn min_interval(&self) -> Duration {
        let budget = u64::from(self.hourly_probe_budget().max(1));
        Duration::from_secs(36_000_u64.div_ceil(9 * budget))
    }

    /// Whether `name:port` is one of the provider's hosts (names compare case-insensitively,
    /// without a trailing dot).
    pub fn has_host(&self, name: &str, port: u16) -> bool {
        let name = name.trim_end_matches('.');
        self.hosts
            .iter()
            .any(|h| h.port == port && h.name.eq_ignore_ascii_case(name))
    }
}

/// What is known under a credential's provider name.
#[derive(Clone, Debug, PartialEq)]
pub enum Found {
    Profile(Arc<Profile>),
    /// Neither built in nor defined.
    Missing,
    /// Defined, but the definition is refused; why.
    Refused(String),
}

/// Looks a provider up: the built-ins first (their names are reserved), then the definitions the
/// operator has read (`defined` answers for a name: the profile, or why it was refused).
pub fn find(name: &str, defined: impl FnOnce(&str) -> Option<Result<Arc<Profile>, String>>) -> Found {
    if let Some(p) = builtin::get(name) {
        return Found::Profile(p);
    }
    match defined(name) {
        Some(Ok(p)) => Found::Profile(p),
        Some(Err(why)) => Found::Refused(why),
        None => Found::Missing,
    }
}

#[cfg(test)]
mod tests;
