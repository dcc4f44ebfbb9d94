//! An independent reference for the egress rules, held against the implementation on arbitrary
//! patterns and addresses. It shares nothing with `address` or `pattern`: the registry rows come
//! from the transcript in `tests/data/iana-special-purpose.tsv`, an address is a string of bits,
//! membership is comparing a prefix of them, and a pattern is judged by the network as written:
//! it allows an address when some address of that network reaches the same destination. Ports
//! are held apart from the text: the generator says which port rule it wrote after the network
//! (`Written port`), and the reference reads the rule from that, not from the text.

use std::net::IpAddr;

use proptest::prelude::*;

use super::address::{self, IPV4_SPECIAL, IPV6_GLOBAL_UNICAST, IPV6_SPECIAL};
use super::pattern::HostPattern;

const REGISTRY: &str = include_str!("../../../tests/data/iana-special-purpose.tsv");

/// `"4:"` or `"6:"` and the address's bits, most significant first.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bits(String);

fn bits_of(ip: IpAddr) -> Bits {
    match ip {
        IpAddr::V4(a) => Bits(format!("4:{}", bytes_as_bits(&a.octets()))),
        IpAddr::V6(a) => Bits(format!("6:{}", bytes_as_bits(&a.octets()))),
    }
}

fn bytes_as_bits(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:08b}")).collect()
}

/// A network as written: its address's bits and a prefix length.
#[derive(Clone, Debug)]
struct Written {
    bits: Bits,
    len: usize,
}

impl Written {
    fn parse(block: &str) -> Option<Self> {
        let (addr, len) = block.split_once('/').unwrap_or((block, ""));
        let addr = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(addr);
        let ip: IpAddr = addr.parse().ok()?;
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let len = if len.is_empty() { width } else { len.parse().ok()? };
        (len <= width).then(|| Self { bits: bits_of(ip), len })
    }

    fn family(&self) -> &str {
        &self.bits.0[..2]
    }

    fn holds(&self, addr: &Bits) -> bool {
        addr.0[..2] == *self.family() && addr.0[2..2 + self.len] == self.bits.0[2..2 + self.len]
    }

    /// Some address is in both (same family, and the shorter prefix agrees).
    fn meets(&self, other: &Written) -> bool {
        let n = self.len.min(other.len);
        self.family() == other.family() && self.bits.0[2..2 + n] == other.bits.0[2..2 + n]
    }

    /// Every address of `self` is in `other`.
    fn within(&self, other: &Written) -> bool {
        self.len >= other.len && self.meets(other)
    }
}

fn net(block: &str) -> Written {
    Written::parse(block).expect("a reference block")
}

/// The registry rows: (registry, block, name, RFC).
fn rows() -> Vec<(String, String, String, String)> {
    REGISTRY
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("registry\t") && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 5, "{l}");
            (cols[0].into(), cols[1].into(), cols[2].into(), cols[3].into())
        })
        .collect()
}

/// The IPv4 address an IPv6 address carries, read off its bytes, when it reaches that address.
fn carried(ip: IpAddr) -> Option<[u8; 4]> {
    let IpAddr::V6(a) = ip else { return None };
    let b = a.octets();
    let tail = [b[12], b[13], b[14], b[15]];
    let zeros = |r: std::ops::Range<usize>| b[r].iter().all(|&x| x == 0);
    if zeros(0..10) && b[10] == 0xff && b[11] == 0xff {
        return Some(tail); // mapped ::ffff:a.b.c.d
    }
    if zeros(0..8) && b[8] == 0xff && b[9] == 0xff && zeros(10..12) {
        return Some(tail); // translated ::ffff:0:a.b.c.d
    }
    if b[..12] == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] {
        return Some(tail); // NAT64 64:ff9b::a.b.c.d
    }
    if b[0] == 0x20 && b[1] == 0x02 {
        return Some([b[2], b[3], b[4], b[5]]); // 6to4 2002:aabb:ccdd::
    }
    if zeros(0..12) && tail != [0, 0, 0, 0] && tail != [0, 0, 0, 1] {
        return Some(tail); // compatible ::a.b.c.d, but not :: or ::1
    }
    None
}

fn reference_destination(ip: IpAddr) -> IpAddr {
    carried(ip).map_or(ip, IpAddr::from)
}

fn reference_public(ip: IpAddr) -> bool {
    let rows = rows();
    let in_rows = |ip: IpAddr, registries: &[&str]| {
        let b = bits_of(ip);
        rows.iter()
            .any(|(r, block, ..)| registries.contains(&r.as_str()) && net(block).holds(&b))
    };
    let d = reference_destination(ip);
    if d.is_ipv4() {
        return !in_rows(d, &["ipv4-special", "ipv4-space"]);
    }
    let IpAddr::V6(a) = d else { return false };
    let b = a.octets();
    if b[..4] == [0x20, 0x01, 0, 0] {
        // Teredo: the server, and the client with its bits inverted.
        let server = IpAddr::from([b[4], b[5], b[6], b[7]]);
        let client = IpAddr::from([!b[12], !b[13], !b[14], !b[15]]);
        return reference_public(server) && reference_public(client);
    }
    in_rows(d, &["ipv6-space"]) && !in_rows(d, &["ipv6-special"])
}

/// The forms whose addresses reach the IPv4 address they carry (compatible: less `::/127`).
fn forms() -> Vec<Written> {
    ["::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "2002::/16", "::/96"]
        .into_iter()
        .map(net)
        .collect()
}

/// Whether the written pattern must be refused: it is no network, or it names IPv4 destinations
/// and IPv6 ones at once, or it touches a form whose IPv4 address cannot be read back (Teredo,
/// local-use NAT64), or it is a 6to4 network narrower than the /48 of one IPv4 address.
fn reference_refuses(text: &str) -> bool {
    let Some(w) = Written::parse(text) else { return true };
    if w.family() == "4:" {
        return false;
    }
    let exception = net("::/127");
    let compatible = net("::/96");
    let names_v4 = forms().iter().any(|f| {
        if f.bits == compatible.bits && f.len == compatible.len {
            w.meets(f) && !w.within(&exception)
        } else {
            w.meets(f)
        }
    });
    let only_v4 = forms()
        .iter()
        .any(|f| w.within(f) && !(f.bits == compatible.bits && f.len == compatible.len && w.meets(&exception)));
    let names_v6 = !only_v4;
    (names_v4 && names_v6)
        || w.meets(&net("2001::/32"))
        || w.meets(&net("64:ff9b:1::/48"))
        || (w.within(&net("2002::/16")) && w.len > 48)
}

/// Whether some address of the written network reaches `ip`'s destination.
fn reference_allows(text: &str, ip: IpAddr) -> bool {
    let Some(w) = Written::parse(text) else { return false };
    match reference_destination(ip) {
        IpAddr::V4(x) => {
            if w.family() == "4:" {
                return w.holds(&bits_of(IpAddr::V4(x)));
            }
            let o = x.octets();
            let single = |s: String| w.holds(&bits_of(s.parse().expect("an address")));
            let x4 = format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3]);
            single(format!("::ffff:{x4}"))
                || single(format!("::ffff:0:{x4}"))
                || single(format!("64:ff9b::{x4}"))
                || (o != [0, 0, 0, 0] && o != [0, 0, 0, 1] && single(format!("::{x4}")))
                || w.meets(&net(&format!(
                    "2002:{:02x}{:02x}:{:02x}{:02x}::/48",
                    o[0], o[1], o[2], o[3]
                )))
        }
        y => w.holds(&bits_of(y)),
    }
}

#[test]
fn the_table_is_the_registries() {
    let ours: Vec<(String, String, String)> = IPV4_SPECIAL
        .iter()
        .chain(IPV6_SPECIAL)
        .map(|s| (s.net.to_string(), s.name.to_owned(), s.rfc.to_owned()))
        .chain([(IPV6_GLOBAL_UNICAST.to_string(), String::new(), String::new())])
        .collect();
    let theirs: Vec<(String, String, String)> = rows()
        .into_iter()
        .map(|(r, block, name, rfc)| match r.as_str() {
            "ipv6-space" => (block, String::new(), String::new()),
            _ => (block, name, rfc),
        })
        .collect();
    // Compared as sets of (address, length, name, RFC): the written forms and orders differ.
    let normal = |rows: Vec<(String, String, String)>| {
        let mut rows: Vec<_> = rows
            .into_iter()
            .map(|(block, name, rfc)| {
                let (addr, len) = block.split_once('/').expect("a block");
                (addr.parse::<IpAddr>().expect("an address"), len.to_owned(), name, rfc)
            })
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(normal(ours), normal(theirs));
    for e in address::EMBEDDINGS {
        assert!(e.offset <= 96 && u32::from(e.offset) + 32 <= 128, "{e:?}");
    }
}

fn v4_near_rows() -> impl Strategy<Value = [u8; 4]> {
    let starts: Vec<(u32, u32)> = rows()
        .into_iter()
        .filter_map(|(_, block, ..)| {
            let w = Written::parse(&block)?;
            let IpAddr::V4(a) = block.split('/').next()?.parse().ok()? else {
                return None;
            };
            Some((u32::from(a), u32::try_from(w.len).ok()?))
        })
        .collect();
    prop_oneof![
        any::<[u8; 4]>(),
        (proptest::sample::select(starts), any::<u32>(), -1i64..=1).prop_map(|((start, len), host, edge)| {
            let size = 1u64 << (32 - len);
            let inside = u64::from(start) + u64::from(host) % size;
            let a = match edge {
                -1 => u64::from(start).wrapping_sub(1),
                1 => u64::from(start) + size,
                _ => inside,
            };
            ((a & 0xffff_ffff) as u32).to_be_bytes()
        }),
    ]
}

fn v6_near_rows() -> impl Strategy<Value = [u8; 16]> {
    let blocks: Vec<(u128, u32)> = rows()
        .into_iter()
        .filter_map(|(_, block, ..)| {
            let (a, len) = block.split_once('/')?;
            let IpAddr::V6(a) = a.parse().ok()? else { return None };
            Some((u128::from(a), len.parse().ok()?))
        })
        .collect();
    prop_oneof![
        any::<[u8; 16]>(),
        (proptest::sample::select(blocks), any::<u128>()).prop_map(|((start, len), host)| {
            let host_bits = 128 - len;
            let mask = if host_bits == 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            (start | (host & mask)).to_be_bytes()
        }),
    ]
}

/// Addresses of every kind: IPv4, IPv6, and IPv6 forms carrying IPv4 addresses near the rows.
fn any_address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        v4_near_rows().prop_map(IpAddr::from),
        v6_near_rows().prop_map(IpAddr::from),
        (v4_near_rows(), 0usize..5, any::<u128>()).prop_map(|(v4, form, rest)| {
            let x = u128::from(u32::from_be_bytes(v4));
            let a = match form {
                0 => 0xffff_0000_0000 | x,
                1 => 0xffff_0000_0000_0000 | x,
                2 => (0x64_ff9b_u128 << 96) | x,
                3 => (0x2002_u128 << 112) | (x << 80) | (rest & ((1u128 << 80) - 1)),
                _ => x,
            };
            IpAddr::from(a.to_be_bytes())
        }),
        (v4_near_rows(), v4_near_rows(), any::<u32>()).prop_map(|(server, client, mid)| {
            let (s, c) = (u32::from_be_bytes(server), !u32::from_be_bytes(client));
            let a = (0x2001_0000_u128 << 96) | (u128::from(s) << 64) | (u128::from(mid) << 32) | u128::from(c);
            IpAddr::from(a.to_be_bytes())
        }),
    ]
}

/// An IPv6 address as a person might write it: compressed, every group, or with a dotted tail.
fn written_v6(a: std::net::Ipv6Addr, style: u8) -> String {
    let s = a.segments();
    match style % 3 {
        0 => a.to_string(),
        1 => s.iter().map(|g| format!("{g:x}")).collect::<Vec<_>>().join(":"),
        _ => {
            let head: Vec<String> = s[..6].iter().map(|g| format!("{g:x}")).collect();
            let o = a.octets();
            format!("{}:{}.{}.{}.{}", head.join(":"), o[12], o[13], o[14], o[15])
        }
    }
}

/// The port part of a pattern, as the generator wrote it.
#[derive(Clone, Copy, Debug)]
enum WrittenPort {
    /// Nothing after the network: the https port.
    None,
    Number(u16),
    /// `:*`.
    Every,
}

impl WrittenPort {
    fn suffix(self) -> String {
        match self {
            Self::None => String::new(),
            Self::Number(p) => format!(":{p}"),
            Self::Every => ":*".into(),
        }
    }

    fn allows(self, port: u16) -> bool {
        match self {
            Self::None => port == 443,
            Self::Number(p) => p == port,
            Self::Every => true,
        }
    }
}

/// Ports that collide with each other and with the https and http defaults as often as not.
fn any_port() -> impl Strategy<Value = u16> {
    prop_oneof![Just(443u16), Just(80), Just(18443), Just(18444), any::<u16>()]
}

fn any_written_port() -> impl Strategy<Value = WrittenPort> {
    prop_oneof![
        Just(WrittenPort::None),
        any_port().prop_map(WrittenPort::Number),
        Just(WrittenPort::Every),
    ]
}

/// A pattern: its network as written, the port rule written after it, and the whole text.
#[derive(Clone, Debug)]
struct PatternText {
    network: String,
    port: WrittenPort,
    text: String,
}

/// Patterns in every written form (IPv4, IPv6, brackets, with and without a prefix length,
/// lengths past the family's width) and every port form where one can be written (a bare IPv6
/// address takes none: a `:` after it would be more address).
fn any_pattern_with_port() -> impl Strategy<Value = PatternText> {
    (any_pattern(), any_written_port()).prop_map(|(network, port)| {
        let bare_v6 = !network.starts_with('[') && !network.contains('/') && network.contains(':');
        let port = if bare_v6 { WrittenPort::None } else { port };
        let text = format!("{network}{}", port.suffix());
        PatternText { network, port, text }
    })
}

/// Patterns in every written form: IPv4, IPv6, brackets, with and without a prefix length,
/// including lengths past the family's width.
fn any_pattern() -> impl Strategy<Value = String> {
    (any_address(), 0u8..=130, any::<u8>(), 0u8..4).prop_map(|(ip, len, style, shape)| {
        let addr = match ip {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => written_v6(a, style),
        };
        // Lengths near the interesting edges of each family as often as uniform ones.
        let len = match (ip, style % 4) {
            (IpAddr::V4(_), 0) => len % 34,
            (IpAddr::V6(_), 0) => 96 + len % 34,
            (IpAddr::V6(_), 1) => 16 + len % 34,
            _ => len,
        };
        match (shape, ip.is_ipv6()) {
            (0, _) => addr,
            (1, true) => format!("[{addr}]"),
            (2, true) => format!("[{addr}]/{len}"),
            _ => format!("{addr}/{len}"),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_classifier_agrees_with_the_registries(ip in any_address()) {
        prop_assert_eq!(address::is_public(ip), reference_public(ip), "{}", ip);
    }

    #[test]
    fn a_pattern_allows_exactly_what_its_network_reaches(p in any_pattern_with_port(), ips in prop::collection::vec(any_address(), 8)) {
        let parsed = p.text.parse::<HostPattern>();
        prop_assert_eq!(parsed.is_err(), reference_refuses(&p.network), "{}: {:?}", p.text, parsed);
        if let Ok(parsed) = parsed {
            for ip in ips {
                prop_assert_eq!(parsed.contains(ip), reference_allows(&p.network, ip), "{} ~ {}", p.text, ip);
            }
        }
    }

    /// Pattern × URL × resolved address × port: whether a token reaches `ip:port`. The URL names
    /// the address itself (checked as a literal) or a name the owner allows on some ports, which
    /// resolves to `ip` at connect time (`allows_socket`).
    #[test]
    fn a_token_reaches_an_address_only_on_a_port_its_pattern_names(
        p in any_pattern_with_port(),
        name_port in any_written_port(),
        ip in any_address(),
        port in any_port(),
        by_name in any::<bool>(),
        https in any::<bool>(),
        style in any::<u8>(),
    ) {
        // A refused pattern (a third of them) leaves the owner's name pattern alone.
        let refused = reference_refuses(&p.network);
        let name = format!("svc.example{}", name_port.suffix());
        let patterns = [name.as_str(), p.text.as_str()];
        let patterns = if refused { &patterns[..1] } else { &patterns[..] };
        let egress = super::Egress::new(
            patterns.iter().map(|t| t.parse().expect("accepted")).collect(),
            true,
        );
        let host = match (by_name, ip) {
            (true, _) => "svc.example".to_owned(),
            (false, IpAddr::V4(a)) => a.to_string(),
            (false, IpAddr::V6(a)) => format!("[{}]", written_v6(a, style)),
        };
        let scheme = if https { "https" } else { "http" };
        let url = url::Url::parse(&format!("{scheme}://{host}:{port}/v1")).expect("a URL");
        let generic = crate::decide::provider::builtin::get("generic").expect("generic");
        let address_allowed = !refused && reference_allows(&p.network, ip) && p.port.allows(port);
        let reaches = egress.check(&url, &generic).is_ok() && (!by_name || egress.allows_socket(ip, port));
        let expected = if by_name {
            name_port.allows(port) && (reference_public(ip) || address_allowed)
        } else {
            address_allowed
        };
        prop_assert_eq!(reaches, expected, "{} and {} ~ {} ({}:{})", p.text, name, url, ip, port);
    }

    #[test]
    fn a_pattern_allows_the_addresses_it_was_written_from(ip in any_address(), style in any::<u8>()) {
        let text = match ip {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{}]", written_v6(a, style)),
        };
        if let Ok(p) = text.parse::<HostPattern>() {
            prop_assert!(p.contains(ip), "{}", text);
            prop_assert!(reference_allows(&text, ip), "{}", text);
        }
    }
}
