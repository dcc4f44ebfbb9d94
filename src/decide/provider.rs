//! What tenantcred knows about each provider (docs/providers.md): where to probe, what a token
//! looks like, how much of a key's rate limit a probe may spend.

use std::time::Duration;

use crate::crd::ProviderName;

/// The shape of token a provider issues, checked before any request is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFormat {
    /// A JWT whose claims must parse (Raise).
    Jwt { provider: &'static str },
    /// An opaque key with a fixed prefix (CharityStack `cs_live_`).
    Prefixed {
        provider: &'static str,
        prefix: &'static str,
    },
    /// Anything header-safe; read `exp` if it happens to be a JWT.
    Opaque,
}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: &'static str,
    pub default_base_url: Option<&'static str>,
    pub default_probe_path: Option<&'static str>,
    pub token_format: TokenFormat,
    /// Documented requests per hour per key, when documented.
    pub hourly_limit: Option<u32>,
    pub limit_scope: LimitScope,
}

/// Probes may use at most this share of a key's documented hourly limit.
pub const BUDGET_SHARE: f64 = 0.01;

/// Without a documented limit a key still gets at most this many probes an hour (confirmations of
/// a 401 included), so a mis-set spec or a probe-now loop cannot hammer an undocumented API.
pub const UNDOCUMENTED_HOURLY_PROBES: u32 = 20;

impl Profile {
    pub fn for_provider(name: &ProviderName) -> Option<Self> {
        Some(match name {
            ProviderName::Raise => Self {
                name: "raise",
                default_base_url: Some("https://prod-api.raisedonors.com"),
                default_probe_path: Some("/api/Donor/list?Skip=0&Take=1"),
                token_format: TokenFormat::Jwt { provider: "raise" },
                hourly_limit: None,
                limit_scope: LimitScope::Key,
            },
            ProviderName::CharityStack => Self {
                name: "charitystack",
                default_base_url: Some("https://0k90mc4jjj.execute-api.us-east-2.amazonaws.com/v1"),
                default_probe_path: Some("/payments"),
                token_format: TokenFormat::Prefixed {
                    provider: "charitystack",
                    prefix: "cs_live_",
                },
                hourly_limit: Some(1_000),
                limit_scope: LimitScope::Key,
            },
            ProviderName::Virtuous => Self {
                name: "virtuous",
                default_base_url: Some("https://api.virtuoussoftware.com"),
                default_probe_path: Some("/api/Organization/Current"),
                token_format: TokenFormat::Opaque,
                hourly_limit: Some(5_000),
                limit_scope: LimitScope::Key,
            },
            ProviderName::Generic => Self {
                name: "generic",
                default_base_url: None,
                default_probe_path: None,
                token_format: TokenFormat::Opaque,
                hourly_limit: None,
                limit_scope: LimitScope::Key,
            },
            ProviderName::Unknown(_) => return None,
        })
    }

    /// Probes a key may receive per hour: 1% of the documented limit (CharityStack 10, Virtuous 50).
    pub fn hourly_probe_budget(&self) -> u32 {
        match self.hourly_limit {
            Some(limit) => ((f64::from(limit) * BUDGET_SHARE).floor() as u32).max(1),
            None => UNDOCUMENTED_HOURLY_PROBES,
        }
    }

    /// The shortest probe interval the budget allows in steady state, with room for the ±10%
    /// jitter: a key probed at this interval never meets the hourly ledger's hard cap.
    pub fn min_interval(&self) -> Duration {
        let budget = u64::from(self.hourly_probe_budget().max(1));
        Duration::from_secs(36_000_u64.div_ceil(9 * budget))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_one_percent_of_documented_limits() {
        let cs = Profile::for_provider(&ProviderName::CharityStack).expect("known");
        let vi = Profile::for_provider(&ProviderName::Virtuous).expect("known");
        assert_eq!(cs.hourly_probe_budget(), 10);
        assert_eq!(cs.min_interval(), Duration::from_secs(400));
        assert_eq!(vi.hourly_probe_budget(), 50);
        assert_eq!(vi.min_interval(), Duration::from_secs(80));
        assert!(Profile::for_provider(&ProviderName::Unknown("x".into())).is_none());
    }
}
