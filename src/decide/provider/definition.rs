//! An `ApiProvider` object read into a `Profile`, or refused with a reason: each check a named
//! function, run in order, the first refusal wins (cert-manager's policy chain).

use crate::crd::provider::FORBIDDEN_HEADERS;
use std::time::Duration;

use super::{
    Auth, BUDGET_SHARE, ExpiryFrom, HeaderDate, LimitHeaders, LimitScope, ProbeShape, Profile, ProviderHost,
    StatusRules, TokenFormat, TokenPattern, builtin,
};
use crate::crd::provider::{
    ApiProviderSpec, AuthKind, DateFormat, ExpirySource, LimitPer, ProviderAuth, ProviderExpiry, TokenKind,
};
use crate::decide::duration;
use crate::decide::provider::location::{path, url_on_hosts};
use crate::decide::token::MAX_TOKEN_BYTES;

/// Why a definition is not used. Credentials naming it say so (reason ProviderNotAccepted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The name of a built-in provider: built-ins cannot be redefined.
    ReservedName,
    /// `auth.header` names one of [`FORBIDDEN_HEADERS`] (held lower-case).
    ForbiddenHeader(String),
    /// A field the schema could not rule out is unusable; the message names it.
    InvalidDefinition(String),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ReservedName => "ReservedName",
            Self::ForbiddenHeader(_) => "ForbiddenHeader",
            Self::InvalidDefinition(_) => "InvalidDefinition",
        }
    }

    pub fn message(&self, name: &str) -> String {
        match self {
            Self::ReservedName => format!(
                "{name} is a built-in provider ({}); built-ins cannot be redefined: give this definition another name",
                builtin::NAMES.join(", ")
            ),
            Self::ForbiddenHeader(header) => format!(
                "auth.header {header} frames, routes or qualifies the request, or is a header tenantcred sets itself; the token is never sent in one of: {}; use the header the API documents for its token",
                FORBIDDEN_HEADERS.join(", ")
            ),
            Self::InvalidDefinition(m) => m.clone(),
        }
    }
}

/// Reads a definition. Pure: the regular expression is compiled here, once per generation.
pub fn read(name: &str, spec: &ApiProviderSpec) -> Result<Profile, Refusal> {
    if builtin::is_builtin(name) {
        return Err(Refusal::ReservedName);
    }
    let invalid = Refusal::InvalidDefinition;
    let hosts = spec
        .hosts
        .iter()
        .map(|h| host(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let default_base_url = match &spec.base_url {
        Some(u) => Some(base_url(u, &hosts).map_err(invalid)?),
        None => None,
    };
    let probe = ProbeShape {
        method: spec.probe.method,
        path: spec
            .probe
            .path
            .as_deref()
            .map(|p| path("probe.path", p))
            .transpose()
            .map_err(invalid)?,
        statuses: statuses(&spec.probe).map_err(invalid)?,
        timeout: optional_duration("probe.timeout", spec.probe.timeout.as_deref(), Duration::from_millis(1))
            .map_err(invalid)?,
        interval: optional_duration(
            "probe.interval",
            spec.probe.interval.as_deref(),
            Duration::from_secs(60),
        )
        .map_err(invalid)?,
    };
    let (hourly_limit, share) = rate_limit(spec).map_err(invalid)?;
    let oauth = spec
        .oauth
        .as_ref()
        .map(|o| crate::decide::oauth::definition::read(o, &hosts).map(std::sync::Arc::new))
        .transpose()
        .map_err(invalid)?;
    Ok(Profile {
        name: name.to_owned(),
        hosts,
        default_base_url,
        probe,
        auth: auth(&spec.auth)?,
        token_format: token_format(name, spec).map_err(invalid)?,
        hourly_limit,
        limit_scope: match spec.rate_limit.per {
            LimitPer::Key => LimitScope::Key,
            LimitPer::Host => LimitScope::Host,
        },
        share,
        headers: LimitHeaders {
            limit: header_name("rateLimit.headers.limit", &spec.rate_limit.headers.limit).map_err(invalid)?,
            remaining: header_name("rateLimit.headers.remaining", &spec.rate_limit.headers.remaining)
                .map_err(invalid)?,
            reset: header_name("rateLimit.headers.reset", &spec.rate_limit.headers.reset).map_err(invalid)?,
            retry_after: header_name("rateLimit.headers.retryAfter", &spec.rate_limit.headers.retry_after)
                .map_err(invalid)?,
            reset_unit: spec.rate_limit.reset_unit,
        },
        expiry: expiry(&spec.expiry).map_err(invalid)?,
        oauth,
    })
}

/// `name` or `name:port`, a DNS name: an address is never a provider's host (only the
/// operator's owner allows addresses).
fn host(text: &str) -> Result<ProviderHost, String> {
    let (name, port) = match text.rsplit_once(':') {
        Some((n, p)) => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("hosts: {text:?} has an invalid port"))?;
            (n, port)
        }
        None => (text, 443),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !labels_ok {
        return Err(format!("hosts: {text:?} is not a DNS name"));
    }
    // A numeric last label (decimal, or hex after 0x) makes the whole host an IPv4 address to URL
    // parsers, in any written form: 10.1, 0x7f.1, 2130706433, 0x7f000001.
    let last = name.rsplit('.').next().unwrap_or_default();
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if last.bytes().all(|b| b.is_ascii_digit()) || hex {
        return Err(format!(
            "hosts: {text:?} is an address, not a name; addresses are allowed only by the operator's owner (--allowed-host)"
        ));
    }
    Ok(ProviderHost { name, port })
}

fn base_url(written: &str, hosts: &[ProviderHost]) -> Result<String, String> {
    url_on_hosts("baseUrl", written, hosts)
}

fn statuses(probe: &crate::crd::provider::ProviderProbe) -> Result<StatusRules, String> {
    let rules = StatusRules {
        valid: probe.valid_statuses.clone(),
        unauthorized: probe.unauthorized_statuses.clone(),
        forbidden: probe.forbidden_statuses.clone(),
    };
    let lists = [
        ("validStatuses", &rules.valid),
        ("unauthorizedStatuses", &rules.unauthorized),
        ("forbiddenStatuses", &rules.forbidden),
    ];
    for (field, list) in lists {
        if let Some(s) = list.iter().find(|s| !(100..600).contains(*s)) {
            return Err(format!("probe.{field}: {s} is not an HTTP status"));
        }
        if list.contains(&429) {
            return Err(format!(
                "probe.{field}: 429 always means rate-limited and never counts for or against a token"
            ));
        }
        // A redirect is never followed (it could carry the token elsewhere), so it proves nothing.
        if field == "validStatuses"
            && let Some(s) = list.iter().find(|s| (300..400).contains(*s))
        {
            return Err(format!(
                "probe.validStatuses: {s} is a redirect, which tenantcred never follows"
            ));
        }
    }
    for (i, (a, la)) in lists.iter().enumerate() {
        for (b, lb) in lists.iter().skip(i + 1) {
            if let Some(s) = la.iter().find(|s| lb.contains(s)) {
                return Err(format!("probe: status {s} is in both {a} and {b}"));
            }
        }
    }
    Ok(rules)
}

fn optional_duration(field: &str, value: Option<&str>, at_least: Duration) -> Result<Option<Duration>, String> {
    let Some(v) = value else { return Ok(None) };
    let d = duration::parse(v).map_err(|e| format!("{field}: {e}"))?;
    if d < at_least {
        return Err(format!(
            "{field} {v} is below the minimum of {}",
            duration::format(at_least)
        ));
    }
    Ok(Some(d))
}

/// Requests per hour (from requests per window) and the probes' share.
fn rate_limit(spec: &ApiProviderSpec) -> Result<(Option<u32>, f64), String> {
    let rl = &spec.rate_limit;
    let share = match rl.probe_share_percent {
        None => BUDGET_SHARE,
        Some(p) if p.is_finite() && (0.01..=10.0).contains(&p) => p / 100.0,
        Some(p) => return Err(format!("rateLimit.probeSharePercent {p} is outside 0.01 to 10")),
    };
    let window = optional_duration("rateLimit.window", rl.window.as_deref(), Duration::from_secs(1))?
        .unwrap_or(Duration::from_secs(3600));
    let hourly = rl.requests.map(|r| {
        let per_hour = f64::from(r) * 3600.0 / window.as_secs_f64();
        per_hour.clamp(1.0, f64::from(u32::MAX)) as u32
    });
    Ok((hourly, share))
}

fn auth(a: &ProviderAuth) -> Result<Auth, Refusal> {
    let invalid = |m: &str| Refusal::InvalidDefinition(m.into());
    Ok(match a.kind {
        AuthKind::Bearer => Auth::Bearer,
        AuthKind::Scheme => {
            let scheme = a
                .scheme
                .as_deref()
                .ok_or_else(|| invalid("auth.type Scheme needs auth.scheme"))?;
            let scheme = token_chars("auth.scheme", scheme).map_err(Refusal::InvalidDefinition)?;
            Auth::Scheme(scheme.to_owned())
        }
        AuthKind::Header => {
            let name = a
                .header
                .as_deref()
                .ok_or_else(|| invalid("auth.type Header needs auth.header"))?;
            let prefix = a.prefix.clone().unwrap_or_default();
            if !prefix.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                return Err(invalid("auth.prefix must be printable ASCII"));
            }
            let name = header_name("auth.header", name).map_err(Refusal::InvalidDefinition)?;
            if FORBIDDEN_HEADERS.contains(&name.as_str()) {
                return Err(Refusal::ForbiddenHeader(name));
            }
            Auth::Header { name, prefix }
        }
    })
}

/// An HTTP header name (RFC 9110 token characters), lower-cased. The rate-limit and expiry
/// headers are response headers, read and never sent: only `auth.header` is held to
/// [`FORBIDDEN_HEADERS`].
fn header_name(field: &str, name: &str) -> Result<String, String> {
    Ok(token_chars(field, name)?.to_ascii_lowercase())
}

fn token_chars<'a>(field: &str, s: &'a str) -> Result<&'a str, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b));
    if ok {
        Ok(s)
    } else {
        Err(format!(
            "{field} {s:?} is not an HTTP token (letters, digits and !#$%&'*+.^_`|~-)"
        ))
    }
}

fn token_format(name: &str, spec: &ApiProviderSpec) -> Result<TokenFormat, String> {
    let t = &spec.token;
    let max_bytes = match t.max_length {
        None => MAX_TOKEN_BYTES,
        Some(n) if (1..=MAX_TOKEN_BYTES as u32).contains(&n) => n as usize,
        Some(n) => return Err(format!("token.maxLength {n} is outside 1 to {MAX_TOKEN_BYTES}")),
    };
    Ok(TokenFormat {
        provider: name.to_owned(),
        jwt: t.format == TokenKind::Jwt || spec.expiry.source == ExpirySource::Jwt,
        prefix: t.prefix.clone().filter(|p| !p.is_empty()),
        pattern: t.pattern.as_deref().map(TokenPattern::compile).transpose()?,
        max_bytes,
    })
}

fn expiry(e: &ProviderExpiry) -> Result<ExpiryFrom, String> {
    Ok(match e.source {
        ExpirySource::Declared | ExpirySource::Jwt => ExpiryFrom::Declared,
        ExpirySource::Header => {
            let name = e.header.as_deref().ok_or("expiry.source Header needs expiry.header")?;
            let format = match e.format {
                DateFormat::Rfc3339 => HeaderDate::Rfc3339,
                DateFormat::HttpDate => HeaderDate::HttpDate,
                DateFormat::UnixSeconds => HeaderDate::UnixSeconds,
                DateFormat::Layout => {
                    let layout = e.layout.clone().ok_or("expiry.format Layout needs expiry.layout")?;
                    HeaderDate::Layout(layout)
                }
            };
            ExpiryFrom::Header {
                name: header_name("expiry.header", name)?,
                format,
            }
        }
    })
}
