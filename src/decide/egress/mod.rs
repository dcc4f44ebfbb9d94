//! Where a token may be sent: the operator owner's rules, not the tenant's. A credential's
//! `baseUrl` is written by a tenant; without these rules the operator would carry a namespace's
//! token (and its own network position) to any host the tenant names.
//!
//! A host and port are allowed when they are one of the provider's hosts (https; port 443 unless
//! the definition names another), or when they match an `--allowed-host` pattern (`pattern`: the
//! port it names, `:*` for every port, 443 when it names none). An address that is not public
//! (`address`: the IANA special-purpose registries, IPv6 forms judged by the IPv4 address they
//! carry) is allowed only when a pattern names it as an address (`127.0.0.1:8443`, `10.0.0.0/8`,
//! `[::1]:*`), with the port: a name pattern allows the name, never what it resolves to. The same
//! rule is applied to IP literals here and to resolved addresses at connect time (`outbound`,
//! `allows_socket`), so a public name that resolves to 169.254.169.254 is refused too, and so is
//! a name resolving to an allowed address on a port its pattern does not name.

pub mod address;
mod pattern;

use std::net::IpAddr;

use url::{Host, Url};

pub use address::is_public;
pub use pattern::{HostPattern, PatternError};

use crate::decide::provider::Profile;

/// Why a URL may not receive a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Plain http without `--allow-insecure-http`, or to a host trusted only over https.
    Insecure(String),
    /// The host is neither documented for the provider nor allowed by the owner.
    HostNotAllowed(String),
    /// The URL carries a user name or password: the HTTP client would send them as a second
    /// `Authorization`, and they would be shown wherever the URL is.
    UserInfo(String),
}

/// The operator owner's egress rules (`--allowed-host`, `--allow-insecure-http`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Egress {
    allowed: Vec<HostPattern>,
    insecure_http: bool,
}

impl Egress {
    pub fn new(allowed: Vec<HostPattern>, insecure_http: bool) -> Self {
        Self { allowed, insecure_http }
    }

    /// These rules plus the host and port of `base_url` (name or address): for `tenantcred
    /// check`, where the person who typed the URL is the owner.
    pub fn trusting(mut self, base_url: &str) -> Self {
        // `host_str` brackets IPv6 literals, which the pattern syntax reads as addresses.
        let exactly = Url::parse(base_url).ok().and_then(|u| {
            let port = u.port_or_known_default()?;
            format!("{}:{port}", u.host_str()?).parse().ok()
        });
        self.allowed.extend(exactly);
        self
    }

    /// Whether a token for `profile` may be sent to `url`. Checked before any request; the
    /// addresses a name resolves to are checked again at connect time (`allows_socket`).
    pub fn check(&self, url: &Url, profile: &Profile) -> Result<(), Refusal> {
        let shown = redacted(url.as_str());
        let shown = shown.trim_end_matches('/');
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::UserInfo(format!(
                "baseUrl {shown} holds a user name or password before the host; tenantcred sends only the credential's token, so remove them (nothing was sent)"
            )));
        }
        let Some(host) = url.host() else {
            return Err(Refusal::HostNotAllowed(format!("baseUrl {shown} has no host")));
        };
        let port = url.port_or_known_default().unwrap_or(0);
        let https = url.scheme() == "https";
        if !https && !self.insecure_http {
            return Err(Refusal::Insecure(format!(
                "baseUrl {shown} is plain http: the token would cross the network unencrypted; use https (the operator's --allow-insecure-http is for local development only)"
            )));
        }
        let (name_ok, address) = match &host {
            Host::Domain(d) => {
                let is_documented = profile.has_host(d, port);
                let owner_allowed = self.allowed.iter().any(|p| p.matches_port(port) && p.matches_name(d));
                if is_documented && !https && !owner_allowed {
                    return Err(Refusal::Insecure(format!(
                        "baseUrl {shown} is plain http to a host of provider {}, which is trusted only over https (--allow-insecure-http applies only to hosts allowed with --allowed-host); nothing was sent",
                        profile.name
                    )));
                }
                (is_documented || owner_allowed, None)
            }
            Host::Ipv4(a) => (self.allows_literal(IpAddr::V4(*a), port), Some(IpAddr::V4(*a))),
            Host::Ipv6(a) => (self.allows_literal(IpAddr::V6(*a), port), Some(IpAddr::V6(*a))),
        };
        if name_ok && address.is_none_or(|a| self.allows_socket(a, port)) {
            return Ok(());
        }
        let documented = match profile.hosts.as_slice() {
            [] => format!("provider {} has no documented host", profile.name),
            hosts => {
                let shown: Vec<String> = hosts
                    .iter()
                    .take(4)
                    .map(|h| match h.port {
                        443 => h.name.clone(),
                        p => format!("{}:{p}", h.name),
                    })
                    .collect();
                format!("provider {} is documented at {}", profile.name, shown.join(", "))
            }
        };
        let why = match address.map(|a| (a, address::special(a), address::destination(a))) {
            Some((a, Some(block), reached)) => {
                let via = if reached == a {
                    String::new()
                } else {
                    format!(", which reaches {reached}")
                };
                format!(
                    "{} is not allowed: {a} is not a public address{via} ({}: {}, {}) and no --allowed-host address pattern names it with port {port}",
                    host_port(&host, port),
                    block.name,
                    block.net,
                    block.rfc
                )
            }
            _ => format!("{} is not an allowed host and port", host_port(&host, port)),
        };
        Err(Refusal::HostNotAllowed(format!(
            "baseUrl {shown}: {why}; {documented}, and the operator sends tokens only there and to hosts and ports its owner allows with --allowed-host (Helm value allowedHosts; a pattern without a port allows 443 only); nothing was sent"
        )))
    }

    fn allows_literal(&self, ip: IpAddr, port: u16) -> bool {
        self.allowed.iter().any(|p| p.matches_port(port) && p.contains(ip))
    }

    /// Whether a connection may be made to `ip` on `port`: any public address (`check` allowed
    /// the name on this port), a non-public one only when a pattern names it with this port.
    pub fn allows_socket(&self, ip: IpAddr, port: u16) -> bool {
        is_public(ip) || self.allows_literal(ip, port)
    }
}

/// A URL as it may be shown: without what stands before an `@` in its authority (a user name or
/// password), whether or not the URL parses.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The authority as RFC 3986 reads it, which holds the WHATWG one (that also ends at `\`).
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://…@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

fn host_port(host: &Host<&str>, port: u16) -> String {
    match host {
        Host::Ipv6(a) => format!("[{a}]:{port}"),
        h => format!("{h}:{port}"),
    }
}

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
