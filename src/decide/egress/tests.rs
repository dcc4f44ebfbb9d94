use super::*;

fn egress(patterns: &[&str]) -> Egress {
    Egress::new(
        patterns.iter().map(|p| p.parse().expect("valid pattern")).collect(),
        true,
    )
}

fn check(e: &Egress, provider: &str, url: &str) -> Result<(), Refusal> {
    let profile = crate::decide::provider::builtin::get(provider).expect("built-in provider");
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
        "api.example.com:*",
        "127.0.0.1:*",
        "[::1]:*",
        "10.0.0.0/8:8443",
        "fd00::/8:*",
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
        "x.com:",
        "x.com:**",
        "10.0.0.0/8:",
        "10.0.0.0/8:x",
        "[::1]:-1",
    ] {
        assert!(bad.parse::<HostPattern>().is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn documented_hosts_need_no_pattern_but_only_on_443() {
    let none = egress(&[]);
    assert_eq!(check(&none, "raise", "https://prod-api.raisedonors.com"), Ok(()));
    assert_eq!(check(&none, "virtuous", "https://API.virtuoussoftware.com/"), Ok(()));
    assert!(check(&none, "raise", "https://prod-api.raisedonors.com:8443").is_err());
    // Documented for Virtuous is not documented for Raise.
    assert!(check(&none, "raise", "https://api.virtuoussoftware.com").is_err());
    // generic has no documented host at all.
    let Err(Refusal::HostNotAllowed(m)) = check(&none, "generic", "https://api.example.com") else {
        panic!("generic without a pattern must be refused");
    };
    assert!(
        m.contains("--allowed-host") && m.contains("api.example.com:443") && m.contains("no documented host"),
        "{m}"
    );
}

#[test]
fn names_match_exactly_or_below_a_wildcard_with_the_port() {
    let e = egress(&["api.example.com", "*.corp.example:8443", "any.example.com:*"]);
    assert_eq!(check(&e, "generic", "https://api.example.com/v1"), Ok(()));
    assert_eq!(check(&e, "generic", "https://api.example.com:443/v1"), Ok(()));
    // No port written: 443 only, for plain http too.
    for url in ["https://api.example.com:9000/v1", "http://api.example.com/v1"] {
        let Err(Refusal::HostNotAllowed(m)) = check(&e, "generic", url) else {
            panic!("{url} must be refused");
        };
        assert!(m.contains("is not an allowed host and port"), "{m}");
    }
    assert_eq!(check(&e, "generic", "https://any.example.com:9000"), Ok(()));
    assert_eq!(check(&e, "generic", "http://any.example.com"), Ok(()));
    assert!(check(&e, "generic", "https://api.example.com.evil.io").is_err());
    assert!(check(&e, "generic", "https://evilapi.example.com").is_err());
    assert_eq!(check(&e, "generic", "https://a.b.corp.example:8443"), Ok(()));
    assert!(check(&e, "generic", "https://corp.example:8443").is_err());
    assert!(check(&e, "generic", "https://a.corp.example").is_err());
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
        let Err(Refusal::HostNotAllowed(m)) = check(&names_only, "generic", url) else {
            panic!("{url} must be refused");
        };
        assert!(m.contains("not a public address"), "{m}");
    }
    let e = egress(&["127.0.0.1:8080", "10.0.0.0/8"]);
    assert_eq!(check(&e, "generic", "http://127.0.0.1:8080"), Ok(()));
    assert!(check(&e, "generic", "http://127.0.0.1:8081").is_err());
    assert_eq!(check(&e, "raise", "https://10.200.0.9"), Ok(()));
    assert!(check(&e, "raise", "https://10.200.0.9:8443").is_err());
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    assert!(e.allows_socket(ip("10.9.9.9"), 443));
    assert!(!e.allows_socket(ip("10.9.9.9"), 8443));
    assert!(!e.allows_socket(ip("169.254.169.254"), 443));
    assert!(e.allows_socket(ip("93.184.216.34"), 443));
    assert!(
        e.allows_socket(ip("93.184.216.34"), 8443),
        "public: the name was checked with its port"
    );
}

/// Issue 36: `127.0.0.1:18443` allowed 127.0.0.1 on every port once a name resolved to it.
#[test]
fn an_address_pattern_with_a_port_allows_that_port_only_in_every_form() {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    for pattern in ["127.0.0.1:18443", "[::ffff:127.0.0.1]:18443"] {
        let e = egress(&[pattern]);
        for addr in ["127.0.0.1", "::ffff:127.0.0.1", "::ffff:0:127.0.0.1", "64:ff9b::7f00:1"] {
            assert!(e.allows_socket(ip(addr), 18443), "{pattern} {addr}");
            assert!(!e.allows_socket(ip(addr), 18444), "{pattern} {addr}");
            assert!(!e.allows_socket(ip(addr), 443), "{pattern} {addr}");
        }
        assert!(!e.allows_socket(ip("::1"), 18443), "{pattern}: ::1 is not 127.0.0.1");
        assert_eq!(check(&e, "generic", "https://127.0.0.1:18443"), Ok(()));
        assert_eq!(check(&e, "generic", "https://[::ffff:127.0.0.1]:18443"), Ok(()));
        let Err(Refusal::HostNotAllowed(m)) = check(&e, "generic", "https://[::ffff:127.0.0.1]:18444") else {
            panic!("{pattern}: another port must be refused");
        };
        assert!(
            m.contains("[::ffff:127.0.0.1]:18444 is not allowed") && m.contains("with port 18444"),
            "{m}"
        );
    }
    let e = egress(&["[::1]:18443"]);
    assert!(e.allows_socket(ip("::1"), 18443));
    assert!(!e.allows_socket(ip("::1"), 18444));
    assert!(!e.allows_socket(ip("127.0.0.1"), 18443));
    let any = egress(&["127.0.0.1:*"]);
    assert!(any.allows_socket(ip("127.0.0.1"), 18444) && any.allows_socket(ip("::ffff:127.0.0.1"), 1));
    let https = egress(&["127.0.0.1"]);
    assert!(https.allows_socket(ip("127.0.0.1"), 443) && !https.allows_socket(ip("127.0.0.1"), 80));
}

#[test]
fn check_trusts_the_url_typed_at_the_keyboard() {
    for url in [
        "https://api.example.com/v1",
        "http://127.0.0.1:9000",
        "http://[::1]:9000",
    ] {
        let e = Egress::new(vec![], true).trusting(url);
        assert_eq!(check(&e, "generic", url), Ok(()), "{url}");
    }
    // Its host on its port, not on another.
    let e = Egress::new(vec![], true).trusting("http://127.0.0.1:9000");
    assert!(check(&e, "generic", "http://127.0.0.1:9001").is_err());
    assert!(!e.allows_socket("127.0.0.1".parse().expect("ip"), 9001));
    let e = Egress::new(vec![], true).trusting("https://api.example.com/v1");
    assert!(check(&e, "generic", "https://api.example.com:8443/v1").is_err());
}

#[test]
fn plain_http_is_its_own_refusal() {
    let e = Egress::new(vec!["api.example.com".parse().expect("pattern")], false);
    assert!(matches!(
        check(&e, "generic", "http://api.example.com"),
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
