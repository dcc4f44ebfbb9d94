//! What a public address is, by the IANA IPv4 and IPv6 Special-Purpose Address Registries (and
//! the address-space registries for multicast and for IPv6 outside global unicast), and which
//! IPv4 address an IPv6 form carries. `docs/security.md` prints this table; a test holds it
//! against a transcript of the registries (`tests/data/iana-special-purpose.tsv`).
//!
//! Every special-purpose block counts as not public, the few the registry marks globally
//! reachable included: they are anycast infrastructure (PCP, TURN, AS112, AMT) or identifiers
//! (ORCHIDv2, DETs), never where an API lives. The IPv6 forms that carry an IPv4 address are
//! judged by that address instead (`destination`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// One registry row: a block the operator never sends a token to unless its owner names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Special {
    pub net: IpNet,
    /// The registry's name for the block.
    pub name: &'static str,
    /// The RFC that reserved it.
    pub rfc: &'static str,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, name: &'static str, rfc: &'static str) -> Special {
    Special {
        net: IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)),
        name,
        rfc,
    }
}

const fn v6(segments: [u16; 8], len: u8, name: &'static str, rfc: &'static str) -> Special {
    let [a, b, c, d, e, f, g, h] = segments;
    Special {
        net: IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)),
        name,
        rfc,
    }
}

/// The IPv4 Special-Purpose Address Registry, and multicast from the IPv4 address space.
pub const IPV4_SPECIAL: &[Special] = &[
    v4(0, 0, 0, 0, 8, "\"This network\"", "RFC 791"),
    v4(0, 0, 0, 0, 32, "\"This host on this network\"", "RFC 1122"),
    v4(10, 0, 0, 0, 8, "Private-Use", "RFC 1918"),
    v4(100, 64, 0, 0, 10, "Shared Address Space", "RFC 6598"),
    v4(127, 0, 0, 0, 8, "Loopback", "RFC 1122"),
    v4(169, 254, 0, 0, 16, "Link Local", "RFC 3927"),
    v4(172, 16, 0, 0, 12, "Private-Use", "RFC 1918"),
    v4(192, 0, 0, 0, 24, "IETF Protocol Assignments", "RFC 6890"),
    v4(192, 0, 0, 0, 29, "IPv4 Service Continuity Prefix", "RFC 7335"),
    v4(192, 0, 0, 8, 32, "IPv4 dummy address", "RFC 7600"),
    v4(192, 0, 0, 9, 32, "Port Control Protocol Anycast", "RFC 7723"),
    v4(
        192,
        0,
        0,
        10,
        32,
        "Traversal Using Relays around NAT Anycast",
        "RFC 8155",
    ),
    v4(192, 0, 0, 170, 32, "NAT64/DNS64 Discovery", "RFC 8880"),
    v4(192, 0, 0, 171, 32, "NAT64/DNS64 Discovery", "RFC 8880"),
    v4(192, 0, 2, 0, 24, "Documentation (TEST-NET-1)", "RFC 5737"),
    v4(192, 31, 196, 0, 24, "AS112-v4", "RFC 7535"),
    v4(192, 52, 193, 0, 24, "AMT", "RFC 7450"),
    v4(192, 88, 99, 0, 24, "Deprecated (6to4 Relay Anycast)", "RFC 7526"),
    v4(192, 88, 99, 2, 32, "6a44-relay anycast address", "RFC 6751"),
    v4(192, 168, 0, 0, 16, "Private-Use", "RFC 1918"),
    v4(192, 175, 48, 0, 24, "Direct Delegation AS112 Service", "RFC 7534"),
    v4(198, 18, 0, 0, 15, "Benchmarking", "RFC 2544"),
    v4(198, 51, 100, 0, 24, "Documentation (TEST-NET-2)", "RFC 5737"),
    v4(203, 0, 113, 0, 24, "Documentation (TEST-NET-3)", "RFC 5737"),
    v4(224, 0, 0, 0, 4, "Multicast (IPv4 address space)", "RFC 5771"),
    v4(240, 0, 0, 0, 4, "Reserved", "RFC 1112"),
    v4(255, 255, 255, 255, 32, "Limited Broadcast", "RFC 919"),
];

/// IPv6 global unicast (the IPv6 Address Space registry): nothing outside it is public
/// (multicast ff00::/8, the deprecated site-local fec0::/10, unassigned space).
pub const IPV6_GLOBAL_UNICAST: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);

/// The IPv6 Special-Purpose Address Registry.
pub const IPV6_SPECIAL: &[Special] = &[
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "Loopback Address", "RFC 4291"),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "Unspecified Address", "RFC 4291"),
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96, "IPv4-mapped Address", "RFC 4291"),
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "IPv4-IPv6 Translat.", "RFC 6052"),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "IPv4-IPv6 Translat. (local use)",
        "RFC 8215",
    ),
    v6(
        [0x100, 0, 0, 0, 0, 0, 0, 0],
        64,
        "Discard-Only Address Block",
        "RFC 6666",
    ),
    v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64, "Dummy IPv6 Prefix", "RFC 9780"),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF Protocol Assignments",
        "RFC 2928",
    ),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "TEREDO", "RFC 4380"),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 1],
        128,
        "Port Control Protocol Anycast",
        "RFC 7723",
    ),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 2],
        128,
        "Traversal Using Relays around NAT Anycast",
        "RFC 8155",
    ),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 3],
        128,
        "DNS-SD Service Registration Protocol Anycast",
        "RFC 9665",
    ),
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, "Benchmarking", "RFC 5180"),
    v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32, "AMT", "RFC 7450"),
    v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48, "AS112-v6", "RFC 7535"),
    v6(
        [0x2001, 0x10, 0, 0, 0, 0, 0, 0],
        28,
        "Deprecated (previously ORCHID)",
        "RFC 4843",
    ),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, "ORCHIDv2", "RFC 7343"),
    v6(
        [0x2001, 0x30, 0, 0, 0, 0, 0, 0],
        28,
        "Drone Remote ID Protocol Entity Tags (DETs) Prefix",
        "RFC 9374",
    ),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "Documentation", "RFC 3849"),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4", "RFC 3056"),
    v6(
        [0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0],
        48,
        "Direct Delegation AS112 Service",
        "RFC 7534",
    ),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "Documentation", "RFC 9637"),
    v6(
        [0x5f00, 0, 0, 0, 0, 0, 0, 0],
        16,
        "Segment Routing (SRv6) SIDs",
        "RFC 9602",
    ),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "Unique-Local", "RFC 4193"),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "Link-Local Unicast", "RFC 4291"),
];

/// An IPv6 form that carries an IPv4 address a fixed number of bits in, and reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Embedding {
    pub name: &'static str,
    pub net: Ipv6Net,
    /// Where the 32 IPv4 bits start.
    pub offset: u8,
}

const fn embedding(name: &'static str, segments: [u16; 8], len: u8, offset: u8) -> Embedding {
    let [a, b, c, d, e, f, g, h] = segments;
    Embedding {
        name,
        net: Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len),
        offset,
    }
}

/// The forms judged as the IPv4 address they carry. `::` and `::1` are inside the compatible
/// form but are the IPv6 unspecified and loopback addresses (`compatible_exception`).
pub const EMBEDDINGS: &[Embedding] = &[
    embedding("IPv4-mapped", [0, 0, 0, 0, 0, 0xffff, 0, 0], 96, 96),
    embedding("IPv4-compatible", [0, 0, 0, 0, 0, 0, 0, 0], 96, 96),
    embedding("IPv4-translated", [0, 0, 0, 0, 0xffff, 0, 0, 0], 96, 96),
    embedding("NAT64 (64:ff9b::/96)", [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, 96),
    embedding("6to4", [0x2002, 0, 0, 0, 0, 0, 0, 0], 16, 16),
];

/// `::/127`: the unspecified and loopback addresses, which the compatible form does not claim.
pub const COMPATIBLE_EXCEPTION: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 127);

/// Teredo: a server and a client IPv4 address (the client's bits inverted) in a prefix that also
/// carries flags and a port, so it is judged by both addresses and never reduced to one.
pub const TEREDO: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32);

/// Local-use NAT64: the IPv4 address sits where the network's own prefix length puts it, which
/// the operator cannot know, so such an address is never public and no pattern can name it.
pub const NAT64_LOCAL: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48);

/// The 32 bits at `offset` of `a`. `offset` is at most 96 (checked by the table's test).
pub fn bits_at(a: Ipv6Addr, offset: u8) -> Ipv4Addr {
    let shift = 96_u32.saturating_sub(u32::from(offset));
    Ipv4Addr::from((u128::from(a) >> shift) as u32)
}

/// The form `a` is in, if it is judged as an IPv4 address.
pub fn embedding_of(a: Ipv6Addr) -> Option<&'static Embedding> {
    if COMPATIBLE_EXCEPTION.contains(&a) {
        return None;
    }
    EMBEDDINGS.iter().find(|e| e.net.contains(&a))
}

/// What a connection to `ip` reaches: an IPv6 form that carries an IPv4 address is that address
/// (`::ffff:10.0.0.1` is 10.0.0.1, so is `64:ff9b::a00:1` through a NAT64 gateway, and
/// `2002:a00:1::` through a 6to4 relay).
pub fn destination(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => embedding_of(a).map_or(ip, |e| IpAddr::V4(bits_at(a, e.offset))),
        v4 => v4,
    }
}

/// The special-purpose block `ip` (or the IPv4 address it carries) falls in, most specific
/// first; `None` for a public address. IPv6 outside global unicast answers the address space.
pub fn special(ip: IpAddr) -> Option<Special> {
    const OUTSIDE_GLOBAL_UNICAST: Special = v6([0, 0, 0, 0, 0, 0, 0, 0], 0, "not IPv6 global unicast", "RFC 4291");
    let most_specific = |table: &[Special], ip: IpAddr| {
        table
            .iter()
            .filter(|s| s.net.contains(&ip))
            .max_by_key(|s| s.net.prefix_len())
            .copied()
    };
    match destination(ip) {
        IpAddr::V4(a) => most_specific(IPV4_SPECIAL, IpAddr::V4(a)),
        IpAddr::V6(a) if TEREDO.contains(&a) => {
            let server = bits_at(a, 32);
            let client = Ipv4Addr::from(!u32::from(bits_at(a, 96)));
            let teredo = most_specific(IPV6_SPECIAL, IpAddr::V6(a));
            special(IpAddr::V4(server)).or(special(IpAddr::V4(client))).and(teredo)
        }
        IpAddr::V6(a) if !IPV6_GLOBAL_UNICAST.contains(&a) => {
            most_specific(IPV6_SPECIAL, IpAddr::V6(a)).or(Some(OUTSIDE_GLOBAL_UNICAST))
        }
        IpAddr::V6(a) => most_specific(IPV6_SPECIAL, IpAddr::V6(a)),
    }
}

/// Whether an address is reachable on the public internet; everything else is the operator's
/// own neighbourhood (the node, the pod network, the cloud's metadata service).
pub fn is_public(ip: IpAddr) -> bool {
    special(ip).is_none()
}
