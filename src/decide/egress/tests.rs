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
    let e = egress(&["api.example.com", "*.corp.example:8443"]);
    assert_eq!(check(&e, "generic", "https://api.example.com:9000/v1"), Ok(()));
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
        assert_eq!(check(&e, "generic", url), Ok(()), "{url}");
    }
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
