//! Where a token may be sent: the operator owner's rules, not the tenant's. A credential's
//! `baseUrl` is written by a tenant; without these rules the operator would carry a namespace's
//! token (and its own network position) to any host the tenant names.
//!
//! A host is allowed when it is the provider's documented host (port 443), or when it matches an
//! `--allowed-host` pattern. An address that is not public (loopback, private, link-local,
//! carrier-grade NAT, unique-local, unspecified, multicast) is allowed only when a pattern names
//! it as an address (`127.0.0.1`, `10.0.0.0/8`, `[::1]`): a name pattern allows the name, never
//! what it resolves to. The same rule is applied to IP literals here and to resolved addresses
//! at connect time (`probe`), so a public name that resolves to 169.254.169.254 is refused too.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use url::{Host, Url};

use crate::provider::Profile;

/// One `--allowed-host` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    /// `None`: any port.
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostMatch {
    /// `api.example.com` (lower case, no trailing dot).
    Name(String),
    /// `*.example.com`: any name below `example.com`, not `example.com` itself.
    Below(String),
    /// An address or a network: `10.1.2.3`, `10.0.0.0/8`, `[::1]`, `fd00::/8`.
    Net { addr: IpAddr, prefix: u8 },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "--allowed-host {value:?}: {why} (use host, *.example.com or an address or network such as 10.0.0.0/8, each with an optional :port)"
)]
pub struct PatternError {
    value: String,
    why: &'static str,
}

impl FromStr for HostPattern {
    type Err = PatternError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |why| PatternError {
            value: value.to_owned(),
            why,
        };
        let v = value.trim().to_ascii_lowercase();
        if v.is_empty() || v.len() > 253 + 7 {
            return Err(err("empty or too long"));
        }
        if v.contains("://") {
            return Err(err("a pattern is a host, not a URL"));
        }
        // A network: no port (a port after a prefix length reads ambiguously).
        if let Some((addr, prefix)) = v.split_once('/') {
            let addr: IpAddr = addr
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| err("not an address before the /"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix.parse().map_err(|_| err("not a prefix length after the /"))?;
            if prefix > max {
                return Err(err("prefix length too long"));
            }
            return Ok(Self {
                host: HostMatch::Net { addr, prefix },
                port: None,
            });
        }
        // `[v6]` or `[v6]:port`, or a bare v6 address (no port possible).
        if let Some(rest) = v.strip_prefix('[') {
            let (addr, tail) = rest.split_once(']').ok_or_else(|| err("unclosed ["))?;
            let addr: IpAddr = addr.parse().map_err(|_| err("not an IPv6 address in [ ]"))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => Some(p.parse().map_err(|_| err("not a port"))?),
                None if tail.is_empty() => None,
                None => return Err(err("unexpected text after ]")),
            };
            return Ok(Self::address(addr, port));
        }
        if let Ok(addr) = v.parse::<IpAddr>() {
            return Ok(Self::address(addr, None));
        }
        let (host, port) = match v.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| err("not a port"))?)),
            None => (v.as_str(), None),
        };
        if let Ok(addr) = host.parse::<IpAddr>() {
            return Ok(Self::address(addr, port));
        }
        let host = host.trim_end_matches('.');
        let (below, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        let label_ok = |l: &str| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || !name.split('.').all(label_ok) {
            return Err(err("not a host name"));
        }
        if below && !name.contains('.') {
            return Err(err("a wildcard needs at least two labels after *."));
        }
        let host = if below {
            HostMatch::Below(name.to_owned())
        } else {
            HostMatch::Name(name.to_owned())
        };
        Ok(Self { host, port })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostMatch::Name(n) => write!(f, "{n}")?,
            HostMatch::Below(n) => write!(f, "*.{n}")?,
            HostMatch::Net { addr, prefix } if *prefix == max_prefix(*addr) => match addr {
                IpAddr::V6(a) if self.port.is_some() => write!(f, "[{a}]")?,
                a => write!(f, "{a}")?,
            },
            HostMatch::Net { addr, prefix } => write!(f, "{addr}/{prefix}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

impl HostPattern {
    fn address(addr: IpAddr, port: Option<u16>) -> Self {
        Self {
            host: HostMatch::Net {
                addr,
                prefix: max_prefix(addr),
            },
            port,
        }
    }

    fn matches_port(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    fn matches_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        match &self.host {
            HostMatch::Name(n) => name.eq_ignore_ascii_case(n),
            HostMatch::Below(n) => name
                .len()
                .checked_sub(n.len() + 1)
                .is_some_and(|cut| name.is_char_boundary(cut) && name[cut..].eq_ignore_ascii_case(&format!(".{n}"))),
            HostMatch::Net { .. } => false,
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match self.host {
            HostMatch::Net { addr, prefix } => in_network(canonical(ip), canonical(addr), prefix),
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// `::ffff:10.0.0.1` is 10.0.0.1.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Whether an address is reachable on the public internet; everything else is the operator's
/// own neighbourhood (the node, the pod network, the cloud's metadata service).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let [b0, b1, ..] = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || b0 == 0
                || (b0 == 100 && (64..128).contains(&b1)) // carrier-grade NAT
                || (b0 == 192 && b1 == 0 && a.octets()[2] == 0) // IETF protocol assignments
                || b0 >= 240) // reserved
        }
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || first == 0x2001 && a.segments()[1] == 0x0db8 // documentation
                || first == 0x0064 && a.segments()[1] == 0xff9b) // NAT64 can reach v4 private space
        }
    }
}

/// Why a URL may not receive a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Plain http without `--allow-insecure-http`.
    Insecure(String),
    /// The host is neither documented for the provider nor allowed by the owner.
    HostNotAllowed(String),
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

    /// These rules plus the host of `base_url` (name or address): for `tenantcred check`, where
    /// the person who typed the URL is the owner.
    pub fn trusting(mut self, base_url: &str) -> Self {
        // `host_str` brackets IPv6 literals, which the pattern syntax reads as addresses.
        let host = Url::parse(base_url).ok().and_then(|u| u.host_str()?.parse().ok());
        self.allowed.extend(host);
        self
    }

    /// Whether a token for `profile` may be sent to `url`. Checked before any request; the
    /// addresses a name resolves to are checked again at connect time (`allows_address`).
    pub fn check(&self, url: &Url, profile: &Profile) -> Result<(), Refusal> {
        let shown = url.as_str().trim_end_matches('/');
        let Some(host) = url.host() else {
            return Err(Refusal::HostNotAllowed(format!("baseUrl {shown} has no host")));
        };
        let port = url.port_or_known_default().unwrap_or(0);
        if url.scheme() == "http" && !self.insecure_http {
            return Err(Refusal::Insecure(format!(
                "baseUrl {shown} is plain http: the token would cross the network unencrypted; use https (the operator's --allow-insecure-http is for local development only)"
            )));
        }
        let documented = documented_host(profile);
        let (name_ok, address) = match &host {
            Host::Domain(d) => (
                documented
                    .as_deref()
                    .is_some_and(|h| h.eq_ignore_ascii_case(d.trim_end_matches('.')) && port == 443)
                    || self.allowed.iter().any(|p| p.matches_port(port) && p.matches_name(d)),
                None,
            ),
            Host::Ipv4(a) => (self.allows_literal(IpAddr::V4(*a), port), Some(IpAddr::V4(*a))),
            Host::Ipv6(a) => (self.allows_literal(IpAddr::V6(*a), port), Some(IpAddr::V6(*a))),
        };
        if name_ok && address.is_none_or(|a| self.allows_address(a)) {
            return Ok(());
        }
        let documented = documented.map_or_else(
            || format!("provider {} has no documented host", profile.name),
            |h| format!("provider {} is documented at {h}", profile.name),
        );
        let why = match address {
            Some(a) if !is_public(a) => format!("{a} is not a public address"),
            _ => format!("{} is not an allowed host", host_port(&host, port)),
        };
        Err(Refusal::HostNotAllowed(format!(
            "baseUrl {shown}: {why}; {documented}, and the operator sends tokens only there and to hosts its owner allows with --allowed-host (Helm value allowedHosts); nothing was sent"
        )))
    }

    fn allows_literal(&self, ip: IpAddr, port: u16) -> bool {
        self.allowed.iter().any(|p| p.matches_port(port) && p.contains(ip))
    }

    /// Whether a connection may be made to `ip`: any public address (the name was allowed), a
    /// non-public one only when a pattern names it.
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allowed.iter().any(|p| p.contains(ip))
    }
}

fn documented_host(profile: &Profile) -> Option<String> {
    let url = Url::parse(profile.default_base_url?).ok()?;
    url.host_str().map(str::to_owned)
}

fn host_port(host: &Host<&str>, port: u16) -> String {
    match host {
        Host::Ipv6(a) => format!("[{a}]:{port}"),
        h => format!("{h}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ProviderName;

    fn egress(patterns: &[&str]) -> Egress {
        Egress::new(
            patterns.iter().map(|p| p.parse().expect("valid pattern")).collect(),
            true,
        )
    }

    fn check(e: &Egress, provider: ProviderName, url: &str) -> Result<(), Refusal> {
        let profile = Profile::for_provider(&provider).expect("known provider");
        e.check(&Url::parse(url).expect("url"), &profile)
    }

    #[test]
    fn patterns_parse_and_print_back() {
        for p in [
            "api.example.com",
            "*.example.com",
            "api.example.com:8443",
            "10.0.0.0/8",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]:8080",
            "::1",
            "fd00::/8",
        ] {
            let parsed: HostPattern = p.parse().expect(p);
            assert_eq!(parsed.to_string(), p);
        }
        assert_eq!(
            "API.Example.COM.".parse::<HostPattern>().map(|p| p.to_string()),
            Ok("api.example.com".into())
        );
        for bad in [
            "",
            "https://x.com",
            "*.com",
            "a..b",
            "x.com:99999",
            "10.0.0.0/33",
            "[::1",
            "a b.com",
            "*",
        ] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn documented_hosts_need_no_pattern_but_only_on_443() {
        let none = egress(&[]);
        assert_eq!(
            check(&none, ProviderName::Raise, "https://prod-api.raisedonors.com"),
            Ok(())
        );
        assert_eq!(
            check(&none, ProviderName::Virtuous, "https://API.virtuoussoftware.com/"),
            Ok(())
        );
        assert!(check(&none, ProviderName::Raise, "https://prod-api.raisedonors.com:8443").is_err());
        // Documented for Virtuous is not documented for Raise.
        assert!(check(&none, ProviderName::Raise, "https://api.virtuoussoftware.com").is_err());
        // generic has no documented host at all.
        let Err(Refusal::HostNotAllowed(m)) = check(&none, ProviderName::Generic, "https://api.example.com") else {
            panic!("generic without a pattern must be refused");
        };
        assert!(
            m.contains("--allowed-host") && m.contains("api.example.com:443") && m.contains("no documented host"),
            "{m}"
        );
    }

    #[test]
    fn names_match_exactly_or_below_a_wildcard_with_the_port() {
        let e = egress(&["api.example.com", "*.corp.example:8443"]);
        assert_eq!(
            check(&e, ProviderName::Generic, "https://api.example.com:9000/v1"),
            Ok(())
        );
        assert!(check(&e, ProviderName::Generic, "https://api.example.com.evil.io").is_err());
        assert!(check(&e, ProviderName::Generic, "https://evilapi.example.com").is_err());
        assert_eq!(
            check(&e, ProviderName::Generic, "https://a.b.corp.example:8443"),
            Ok(())
        );
        assert!(check(&e, ProviderName::Generic, "https://corp.example:8443").is_err());
        assert!(check(&e, ProviderName::Generic, "https://a.corp.example").is_err());
    }

    #[test]
    fn non_public_literals_need_an_address_pattern() {
        let names_only = egress(&["*.example.com"]);
        for url in [
            "https://127.0.0.1",
            "https://169.254.169.254",
            "https://10.1.2.3",
            "https://[::1]",
            "https://[::ffff:127.0.0.1]",
            "https://0.0.0.0",
            "https://100.64.0.1",
            "https://[fe80::1]",
            "https://[fd12::1]",
        ] {
            let Err(Refusal::HostNotAllowed(m)) = check(&names_only, ProviderName::Generic, url) else {
                panic!("{url} must be refused");
            };
            assert!(m.contains("not a public address"), "{m}");
        }
        let e = egress(&["127.0.0.1:8080", "10.0.0.0/8"]);
        assert_eq!(check(&e, ProviderName::Generic, "http://127.0.0.1:8080"), Ok(()));
        assert!(check(&e, ProviderName::Generic, "http://127.0.0.1:8081").is_err());
        assert_eq!(check(&e, ProviderName::Raise, "https://10.200.0.9"), Ok(()));
        assert!(e.allows_address("10.9.9.9".parse().expect("ip")));
        assert!(!e.allows_address("169.254.169.254".parse().expect("ip")));
        assert!(e.allows_address("93.184.216.34".parse().expect("ip")));
    }

    #[test]
    fn check_trusts_the_url_typed_at_the_keyboard() {
        for url in [
            "https://api.example.com/v1",
            "http://127.0.0.1:9000",
            "http://[::1]:9000",
        ] {
            let e = Egress::new(vec![], true).trusting(url);
            assert_eq!(check(&e, ProviderName::Generic, url), Ok(()), "{url}");
        }
    }

    #[test]
    fn plain_http_is_its_own_refusal() {
        let e = Egress::new(vec!["api.example.com".parse().expect("pattern")], false);
        assert!(matches!(
            check(&e, ProviderName::Generic, "http://api.example.com"),
            Err(Refusal::Insecure(_))
        ));
    }

    #[test]
    fn public_and_private_addresses() {
        for ip in ["8.8.8.8", "2606:4700::1111", "93.184.216.34"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.100.100.200",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
    }
}
