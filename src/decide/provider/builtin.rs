//! The built-in providers: compiled in, not shipped as objects, so that they behave the same with
//! or without the chart, nobody's edit can change what every tenant of a cluster relies on, and a
//! release carries their documented facts. Their names are reserved: an `ApiProvider` object
//! named like one is not accepted (`definition::Refusal::ReservedName`).

use std::sync::{Arc, LazyLock};

use super::{
    Auth, BUDGET_SHARE, ExpiryFrom, LimitHeaders, LimitScope, ProbeMethod, ProbeShape, Profile, ProviderHost,
    StatusRules, TokenFormat,
};

/// The names of the built-in providers, in the order the docs list them.
pub const NAMES: [&str; 4] = ["raise", "charitystack", "virtuous", "generic"];

/// The built-in provider of this name.
pub fn get(name: &str) -> Option<Arc<Profile>> {
    static ALL: LazyLock<Vec<Arc<Profile>>> = LazyLock::new(|| NAMES.iter().map(|n| Arc::new(build(n))).collect());
    ALL.iter().find(|p| p.name == name).cloned()
}

pub fn is_builtin(name: &str) -> bool {
    NAMES.contains(&name)
}

/// A built-in provider's name as a `'static` string (no allocation per credential where it is kept).
pub fn static_name(name: &str) -> Option<&'static str> {
    NAMES.iter().find(|n| **n == name).copied()
}

fn host(name: &str) -> Vec<ProviderHost> {
    vec![ProviderHost {
        name: name.to_owned(),
        port: 443,
    }]
}

fn build(name: &str) -> Profile {
    let base = |url: &str, probe: &str| (Some(url.to_owned()), Some(probe.to_owned()));
    let (default_base_url, path, hosts, token_format, hourly_limit, oauth) = match name {
        "raise" => {
            let (u, p) = base("https://prod-api.raisedonors.com", "/api/Donor/list?Skip=0&Take=1");
            let format = TokenFormat {
                jwt: true,
                ..TokenFormat::opaque(name)
            };
            (u, p, host("prod-api.raisedonors.com"), format, None, None)
        }
        "charitystack" => {
            let (u, p) = base("https://0k90mc4jjj.execute-api.us-east-2.amazonaws.com/v1", "/payments");
            let format = TokenFormat {
                prefix: Some("cs_live_".into()),
                ..TokenFormat::opaque(name)
            };
            let hosts = host("0k90mc4jjj.execute-api.us-east-2.amazonaws.com");
            (u, p, hosts, format, Some(1_000), None)
        }
        "virtuous" => {
            let (u, p) = base("https://api.virtuoussoftware.com", "/api/Organization/Current");
            let hosts = host("api.virtuoussoftware.com");
            (
                u,
                p,
                hosts,
                TokenFormat::opaque(name),
                Some(5_000),
                Some(Arc::new(super::oauth::virtuous())),
            )
        }
        // generic: any Bearer-token API at a host the operator's owner allows.
        _ => (None, None, Vec::new(), TokenFormat::opaque(name), None, None),
    };
    Profile {
        name: name.to_owned(),
        hosts,
        default_base_url,
        probe: ProbeShape {
            method: ProbeMethod::Get,
            path,
            statuses: StatusRules::default(),
            timeout: None,
            interval: None,
        },
        auth: Auth::Bearer,
        token_format,
        hourly_limit,
        limit_scope: LimitScope::Key,
        share: BUDGET_SHARE,
        headers: LimitHeaders::default(),
        expiry: ExpiryFrom::Declared,
        oauth,
    }
}
