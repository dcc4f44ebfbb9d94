//! One `--allowed-host` value, parsed once into one canonical form: a name, the names below one,
//! or a network, and the ports it allows: the one it names (`:8443`), every port (`:*`, written
//! on purpose), or the https port 443 when it names none. An address or network written in an IPv6 form that carries an IPv4 address
//! (`[::ffff:10.9.9.9]`, `64:ff9b::a09:900/120`, `2002:a09:900::/40`) is that IPv4 network, its
//! prefix converted; one that spans such a form and other addresses is refused, so containment
//! is always IPv4 in IPv4 or IPv6 in IPv6 (`ipnet`), never a mix of widths.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::address::{self, COMPATIBLE_EXCEPTION, EMBEDDINGS, NAT64_LOCAL, TEREDO};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    port: PortMatch,
}

/// The ports a pattern allows, as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortMatch {
    /// No port written: the https port, 443, only.
    Https,
    /// `:8443`: that port only.
    Only(u16),
    /// `:*`: every port.
    Any,
}

impl PortMatch {
    /// The text after the host's `:`.
    fn parse(text: &str) -> Result<Self, &'static str> {
        match text {
            "*" => Ok(Self::Any),
            p => p
                .parse()
                .map(Self::Only)
                .map_err(|_| "not a port (a number, or * for every port)"),
        }
    }

    fn after(tail: Option<&str>) -> Result<Self, &'static str> {
        tail.map_or(Ok(Self::Https), Self::parse)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostMatch {
    /// `api.example.com` (lower case, no trailing dot).
    Name(String),
    /// `*.example.com`: any name below `example.com`, not `example.com` itself.
    Below(String),
    /// An address or a network, canonical: truncated to its prefix, IPv4 when it names IPv4.
    Net(IpNet),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "--allowed-host {value:?}: {why} (use host, *.example.com or an address or network such as 10.0.0.0/8, each with an optional :port or :* for every port; without one, only 443)"
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
        // A network, its port after the prefix length (which holds no `:`): `10.0.0.0/8:8443`.
        if let Some((addr, rest)) = v.split_once('/') {
            let addr = match addr.strip_prefix('[') {
                Some(inner) => inner.strip_suffix(']').ok_or_else(|| err("unclosed ["))?,
                None => addr,
            };
            let addr: IpAddr = addr.parse().map_err(|_| err("not an address before the /"))?;
            let (prefix, tail) = match rest.split_once(':') {
                Some((prefix, port)) => (prefix, Some(port)),
                None => (rest, None),
            };
            let prefix: u8 = prefix.parse().map_err(|_| err("not a prefix length after the /"))?;
            return Ok(Self {
                host: HostMatch::Net(network(addr, prefix).map_err(err)?),
                port: PortMatch::after(tail).map_err(err)?,
            });
        }
        // `[v6]` or `[v6]:port`, or a bare v6 address (no port possible).
        if let Some(rest) = v.strip_prefix('[') {
            let (addr, tail) = rest.split_once(']').ok_or_else(|| err("unclosed ["))?;
            let addr: Ipv6Addr = addr.parse().map_err(|_| err("not an IPv6 address in [ ]"))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => PortMatch::parse(p).map_err(err)?,
                None if tail.is_empty() => PortMatch::Https,
                None => return Err(err("unexpected text after ]")),
            };
            return Self::address(IpAddr::V6(addr), port).map_err(err);
        }
        if let Ok(addr) = v.parse::<IpAddr>() {
            return Self::address(addr, PortMatch::Https).map_err(err);
        }
        let (host, port) = match v.rsplit_once(':') {
            Some((h, p)) => (h, PortMatch::parse(p).map_err(err)?),
            None => (v.as_str(), PortMatch::Https),
        };
        if let Ok(addr) = host.parse::<std::net::Ipv4Addr>() {
            return Self::address(IpAddr::V4(addr), port).map_err(err);
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
        // `10.1` or `0x7f.1` would be read as an address by a URL parser: no name ends in a number.
        if name
            .rsplit('.')
            .next()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()) || l.starts_with("0x"))
        {
            return Err(err("an address must be written as four decimal numbers (a.b.c.d)"));
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

/// The canonical network of `addr/prefix`: checked prefix lengths, IPv4-carrying forms reduced to
/// their IPv4 network, and no network that mixes them with other IPv6 addresses.
fn network(addr: IpAddr, prefix: u8) -> Result<IpNet, &'static str> {
    const TOO_LONG: &str = "prefix length too long";
    let net = match addr {
        IpAddr::V4(a) => return Ok(IpNet::V4(Ipv4Net::new(a, prefix).map_err(|_| TOO_LONG)?.trunc())),
        IpAddr::V6(a) => Ipv6Net::new(a, prefix).map_err(|_| TOO_LONG)?.trunc(),
    };
    let overlaps = |form: &Ipv6Net| form.contains(&net) || net.contains(form);
    if overlaps(&TEREDO) {
        return Err(
            "Teredo addresses (2001::/32) carry IPv4 addresses that cannot be named this way; allow the IPv4 address instead",
        );
    }
    if overlaps(&NAT64_LOCAL) {
        return Err(
            "local-use NAT64 addresses (64:ff9b:1::/48) carry IPv4 addresses at a position only the network knows; allow the IPv4 address instead",
        );
    }
    // `::` and `::1` are IPv6 addresses, not IPv4-compatible ones.
    if COMPATIBLE_EXCEPTION.contains(&net) {
        return Ok(IpNet::V6(net));
    }
    for form in EMBEDDINGS {
        if form.net.contains(&net) {
            if net.contains(&COMPATIBLE_EXCEPTION) {
                return Err("the network holds :: or ::1 and IPv4-compatible addresses; write each on its own");
            }
            // Inside the form, so never negative.
            let v4_bits = net.prefix_len().checked_sub(form.net.prefix_len()).ok_or(TOO_LONG)?;
            if v4_bits > 32 {
                return Err(
                    "a 6to4 network longer than /48 names part of one IPv4 address's network; allow the IPv4 address instead",
                );
            }
            let v4 = address::bits_at(net.network(), form.offset);
            return Ipv4Net::new(v4, v4_bits)
                .map(|n| IpNet::V4(n.trunc()))
                .map_err(|_| TOO_LONG);
        }
        if net.contains(&form.net) {
            return Err(
                "the network spans IPv6 forms that carry IPv4 addresses (::ffff:0:0/96, ::/96, ::ffff:0:0:0/96, 64:ff9b::/96 or 2002::/16) and other addresses; write IPv4 networks for IPv4 addresses and narrower IPv6 networks",
            );
        }
    }
    Ok(IpNet::V6(net))
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostMatch::Name(n) => write!(f, "{n}")?,
            HostMatch::Below(n) => write!(f, "*.{n}")?,
            HostMatch::Net(net) if net.prefix_len() == net.max_prefix_len() => match net.addr() {
                IpAddr::V6(a) if self.port != PortMatch::Https => write!(f, "[{a}]")?,
                a => write!(f, "{a}")?,
            },
            HostMatch::Net(net) => write!(f, "{net}")?,
        }
        match self.port {
            PortMatch::Https => Ok(()),
            PortMatch::Only(p) => write!(f, ":{p}"),
            PortMatch::Any => write!(f, ":*"),
        }
    }
}

impl HostPattern {
    fn address(addr: IpAddr, port: PortMatch) -> Result<Self, &'static str> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        Ok(Self {
            host: HostMatch::Net(network(addr, max)?),
            port,
        })
    }

    pub(super) fn matches_port(&self, port: u16) -> bool {
        match self.port {
            PortMatch::Https => port == 443,
            PortMatch::Only(p) => p == port,
            PortMatch::Any => true,
        }
    }

    pub(super) fn matches_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        match &self.host {
            HostMatch::Name(n) => name.eq_ignore_ascii_case(n),
            HostMatch::Below(n) => name
                .len()
                .checked_sub(n.len() + 1)
                .is_some_and(|cut| name.is_char_boundary(cut) && name[cut..].eq_ignore_ascii_case(&format!(".{n}"))),
            HostMatch::Net(_) => false,
        }
    }

    /// Whether `ip` is in this network: compared as what it reaches (`address::destination`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (&self.host, address::destination(ip)) {
            (HostMatch::Net(IpNet::V4(net)), IpAddr::V4(a)) => net.contains(&a),
            (HostMatch::Net(IpNet::V6(net)), IpAddr::V6(a)) => net.contains(&a),
            _ => false,
        }
    }
}
