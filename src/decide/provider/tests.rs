use super::definition::{Refusal, read};
use super::*;
use crate::crd::provider::ApiProviderSpec;
use crate::decide::egress::{Egress, Refusal as EgressRefusal};

fn spec(json: serde_json::Value) -> ApiProviderSpec {
    serde_json::from_value(json).expect("a spec the schema allows")
}

fn github() -> ApiProviderSpec {
    spec(serde_json::json!({
        "hosts": ["api.github.com"],
        "baseUrl": "https://api.github.com",
        "probe": {"path": "/rate_limit"},
        "token": {"pattern": "gh[pousr]_[A-Za-z0-9]{36,251}"},
        "rateLimit": {"requests": 5000, "window": "1h"},
        "expiry": {"source": "Header", "header": "GitHub-Authentication-Token-Expiration",
                   "format": "Layout", "layout": "%Y-%m-%d %H:%M:%S UTC"}
    }))
}

#[test]
fn budgets_are_one_percent_of_documented_limits() {
    let cs = builtin::get("charitystack").expect("built in");
    let vi = builtin::get("virtuous").expect("built in");
    assert_eq!(cs.hourly_probe_budget(), 10);
    assert_eq!(cs.min_interval(), Duration::from_secs(400));
    assert_eq!(vi.hourly_probe_budget(), 50);
    assert_eq!(vi.min_interval(), Duration::from_secs(80));
    assert_eq!(builtin::get("raise").expect("built in").hourly_probe_budget(), 20);
    assert!(builtin::get("salesforce").is_none());
}

#[test]
fn the_builtins_are_todays_providers() {
    let raise = builtin::get("raise").expect("built in");
    assert!(raise.token_format.jwt);
    assert!(raise.has_host("PROD-API.raisedonors.com.", 443));
    assert!(!raise.has_host("prod-api.raisedonors.com", 8443));
    let cs = builtin::get("charitystack").expect("built in");
    assert_eq!(cs.token_format.prefix.as_deref(), Some("cs_live_"));
    assert_eq!(
        builtin::get("virtuous").expect("built in").oauth.as_deref(),
        Some(&crate::decide::oauth::definition::virtuous())
    );
    let generic = builtin::get("generic").expect("built in");
    assert!(generic.hosts.is_empty() && generic.default_base_url.is_none());
    for name in builtin::NAMES {
        let p = builtin::get(name).expect("built in");
        assert_eq!(p.auth, Auth::Bearer);
        assert_eq!(p.headers, LimitHeaders::default());
        assert_eq!(p.probe.statuses, StatusRules::default());
    }
}

#[test]
fn a_definition_reads_into_a_profile() {
    let p = read("github", &github()).expect("accepted");
    assert_eq!(
        p.hosts,
        vec![ProviderHost {
            name: "api.github.com".into(),
            port: 443
        }]
    );
    assert_eq!(p.hourly_probe_budget(), 50);
    assert_eq!(
        p.expiry,
        ExpiryFrom::Header {
            name: "github-authentication-token-expiration".into(),
            format: HeaderDate::Layout("%Y-%m-%d %H:%M:%S UTC".into())
        }
    );
    // A per-minute limit becomes its hourly equivalent; the share is the definition's.
    let mut s = github();
    s.rate_limit.requests = Some(100);
    s.rate_limit.window = Some("1m".into());
    s.rate_limit.probe_share_percent = Some(0.5);
    assert_eq!(read("github", &s).expect("accepted").hourly_probe_budget(), 30);
}

#[test]
fn built_in_names_are_reserved() {
    assert_eq!(read("raise", &github()), Err(Refusal::ReservedName));
    assert!(Refusal::ReservedName.message("raise").contains("built-in"));
}

#[test]
fn a_host_is_a_name_never_an_address() {
    for bad in [
        "10.0.0.1",
        "127.1",
        "0x7f.1",
        "2130706433",
        "0x7f000001",
        "api.0x10",
        "api..example.com",
        "-api.example.com",
    ] {
        let mut s = github();
        s.hosts = vec![bad.into()];
        s.base_url = None;
        let r = read("x", &s);
        assert!(matches!(r, Err(Refusal::InvalidDefinition(_))), "{bad}: {r:?}");
    }
    let mut s = github();
    s.hosts = vec!["API.Example.com:8443".into()];
    s.base_url = Some("https://api.example.com:8443/v1".into());
    let p = read("x", &s).expect("accepted");
    assert_eq!(
        p.hosts[0],
        ProviderHost {
            name: "api.example.com".into(),
            port: 8443
        }
    );
}

#[test]
fn the_base_url_must_be_one_of_the_hosts_over_https() {
    for (url, why) in [
        ("https://api.github.com.evil.io", "not one of hosts"),
        ("https://api.github.com:8443", "not one of hosts"),
        ("http://api.github.com", "must be https"),
        ("https://user:pw@api.github.com", "user name or password"),
    ] {
        let mut s = github();
        s.base_url = Some(url.into());
        match read("x", &s) {
            Err(Refusal::InvalidDefinition(m)) => assert!(m.contains(why), "{url}: {m}"),
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[test]
fn statuses_cannot_contradict_each_other() {
    let cases = [
        (serde_json::json!({"validStatuses": [200, 429]}), "429 always"),
        (serde_json::json!({"validStatuses": [302]}), "redirect"),
        (
            serde_json::json!({"validStatuses": [200], "unauthorizedStatuses": [200]}),
            "in both",
        ),
        (serde_json::json!({"forbiddenStatuses": [700]}), "not an HTTP status"),
    ];
    for (probe, why) in cases {
        let mut s = github();
        let mut p = serde_json::to_value(&s.probe).expect("serializes");
        for (k, v) in probe.as_object().expect("object") {
            p[k] = v.clone();
        }
        s.probe = serde_json::from_value(p).expect("parses");
        match read("x", &s) {
            Err(Refusal::InvalidDefinition(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_pattern_is_bounded() {
    let mut s = github();
    s.token.pattern = Some("(a".into());
    assert!(matches!(read("x", &s), Err(Refusal::InvalidDefinition(m)) if m.contains("does not compile")));
    // Small to write, huge to compile: refused instead of making every check expensive.
    s.token.pattern = Some("[a-z]{1000}[0-9]{1000}\\w{1000}".into());
    assert!(matches!(read("x", &s), Err(Refusal::InvalidDefinition(m)) if m.contains("more than")));
}

#[test]
fn auth_headers_are_tokens_and_not_ours() {
    let mut s = github();
    s.auth = serde_json::from_value(serde_json::json!({"type": "Header", "header": "PRIVATE-TOKEN"})).expect("auth");
    let p = read("x", &s).expect("accepted");
    assert_eq!(p.auth.header(), ("private-token", String::new()));
    s.auth = serde_json::from_value(serde_json::json!({"type": "Header", "header": "Host"})).expect("auth");
    assert!(read("x", &s).is_err());
    s.auth = serde_json::from_value(serde_json::json!({"type": "Scheme", "scheme": "token"})).expect("auth");
    assert_eq!(
        read("x", &s).expect("accepted").auth.header(),
        ("authorization", "token ".into())
    );
    s.auth = serde_json::from_value(serde_json::json!({"type": "Scheme", "scheme": "a b"})).expect("auth");
    assert!(read("x", &s).is_err());
}

/// Issue 36: every name the issue lists, in any case, and every name of the list is refused with
/// its own reason; `Authorization` (where Bearer and Scheme send the token) is not.
#[test]
fn auth_headers_that_frame_route_or_duplicate_the_request_are_refused() {
    let issue = [
        "Accept",
        "TE",
        "Upgrade",
        "Expect",
        "Keep-Alive",
        "Proxy-Connection",
        "Trailer",
        "Proxy-Authorization",
        "Cookie",
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
    ];
    let listed = crate::crd::provider::FORBIDDEN_HEADERS.iter().map(|h| h.to_string());
    let spelled = issue
        .iter()
        .flat_map(|h| [h.to_string(), h.to_lowercase(), h.to_uppercase()]);
    for header in spelled.chain(listed) {
        let mut s = github();
        s.auth = serde_json::from_value(serde_json::json!({"type": "Header", "header": header})).expect("auth");
        let refused = read("x", &s).expect_err(&header);
        assert_eq!(refused, Refusal::ForbiddenHeader(header.to_ascii_lowercase()));
        assert_eq!(refused.reason(), "ForbiddenHeader");
        let msg = refused.message("x");
        assert!(
            msg.starts_with(&format!("auth.header {}", header.to_ascii_lowercase())),
            "{msg}"
        );
        assert!(msg.contains("proxy-authorization, forwarded"), "the list: {msg}");
    }
    let mut s = github();
    s.auth = serde_json::from_value(serde_json::json!({"type": "Header", "header": "Authorization"})).expect("auth");
    assert_eq!(
        read("x", &s).expect("accepted").auth.header(),
        ("authorization", String::new())
    );
}

/// Rate-limit and expiry headers are read from the answer, never sent: any token name will do.
#[test]
fn response_headers_may_be_any_name() {
    let mut s = github();
    s.rate_limit.headers.reset = "Date".into();
    s.expiry.header = Some("Content-Type".into());
    let p = read("x", &s).expect("accepted");
    assert_eq!(p.headers.reset, "date");
    assert!(matches!(p.expiry, ExpiryFrom::Header { name, .. } if name == "content-type"));
}

/// Paths and the base URL reach the request line: control characters are refused, and the
/// message shows them escaped.
#[test]
fn control_characters_in_paths_and_the_base_url_are_refused_and_shown_escaped() {
    let hostile = [
        ("\r\n", "\\r\\n"),
        ("\0", "\\u{0}"),
        ("\u{1b}", "\\u{1b}"),
        ("\u{7f}", "\\u{7f}"),
        ("\u{85}", "\\u{85}"),
        ("\u{2028}", "\\u{2028}"),
        ("\u{202e}", "\\u{202e}"),
    ];
    type Set = fn(&mut ApiProviderSpec, &str);
    let fields: [(&str, Set); 3] = [
        ("probe.path", |s, v| s.probe.path = Some(format!("/rate_limit{v}"))),
        ("oauth.tokenPath", |s, v| {
            s.oauth = Some(
                serde_json::from_value(serde_json::json!({"tokenPath": format!("/Token{v}")})).expect("an oauth spec"),
            )
        }),
        ("baseUrl", |s, v| {
            s.base_url = Some(format!("https://api.github.com/v3{v}"))
        }),
    ];
    for (raw, shown) in hostile {
        for (field, set) in fields {
            let mut s = github();
            set(&mut s, raw);
            match read("x", &s) {
                Err(Refusal::InvalidDefinition(m)) => assert!(
                    m.starts_with(field) && m.contains(shown) && !m.contains(raw),
                    "{field} {shown}: {m:?}"
                ),
                other => panic!("{field} {shown}: {other:?}"),
            }
        }
    }
    // Percent-encoded, they are ordinary text.
    let mut s = github();
    s.probe.path = Some("/rate_limit?x=%0D%0A".into());
    assert!(read("x", &s).is_ok());
}

#[test]
fn expiry_headers_parse_in_each_format() {
    let at = jiff::Timestamp::from_second(1_800_000_000).expect("valid");
    assert_eq!(
        HeaderDate::Rfc3339.parse("2027-01-15T08:00:00Z"),
        "2027-01-15T08:00:00Z".parse().ok()
    );
    assert_eq!(HeaderDate::UnixSeconds.parse("1800000000"), Some(at));
    assert_eq!(
        HeaderDate::HttpDate.parse("Fri, 15 Jan 2027 08:00:00 GMT"),
        "2027-01-15T08:00:00Z".parse().ok()
    );
    let github = HeaderDate::Layout("%Y-%m-%d %H:%M:%S UTC".into());
    assert_eq!(
        github.parse("2027-01-15 08:00:00 UTC"),
        "2027-01-15T08:00:00Z".parse().ok()
    );
    let offset = HeaderDate::Layout("%Y-%m-%d %H:%M:%S %z".into());
    assert_eq!(
        offset.parse("2027-01-15 01:00:00 -0700"),
        "2027-01-15T08:00:00Z".parse().ok()
    );
    assert_eq!(HeaderDate::Rfc3339.parse("soon"), None);
}

/// The provider's hosts are the allowlist: https to them, nothing else without the owner.
#[test]
fn egress_follows_the_definition() {
    let mut s = github();
    s.hosts = vec!["api.github.com".into(), "uploads.example.com:8443".into()];
    let p = read("github", &s).expect("accepted");
    let none = Egress::new(Vec::new(), false);
    let check = |e: &Egress, u: &str| e.check(&url::Url::parse(u).expect("url"), &p);
    assert_eq!(check(&none, "https://API.github.com./v3"), Ok(()));
    assert_eq!(check(&none, "https://uploads.example.com:8443"), Ok(()));
    assert!(matches!(
        check(&none, "https://uploads.example.com"),
        Err(EgressRefusal::HostNotAllowed(_))
    ));
    assert!(matches!(
        check(&none, "https://api.github.com.evil.io"),
        Err(EgressRefusal::HostNotAllowed(_))
    ));
    assert!(matches!(
        check(&none, "https://140.82.112.6"),
        Err(EgressRefusal::HostNotAllowed(_))
    ));
    let insecure = Egress::new(Vec::new(), true);
    assert!(matches!(
        check(&insecure, "http://api.github.com:443"),
        Err(EgressRefusal::Insecure(_))
    ));
    let Err(EgressRefusal::HostNotAllowed(m)) = check(&none, "https://example.org") else {
        panic!("refused");
    };
    assert!(
        m.contains("documented at api.github.com, uploads.example.com:8443"),
        "{m}"
    );
}

#[test]
fn lookups_prefer_the_builtins() {
    let defined = Arc::new(read("github", &github()).expect("accepted"));
    let table = |n: &str| (n == "github" || n == "raise").then(|| Ok(defined.clone()));
    assert!(matches!(find("raise", table), Found::Profile(p) if p.name == "raise"));
    assert!(matches!(find("github", table), Found::Profile(p) if p.name == "github"));
    assert_eq!(find("slack", table), Found::Missing);
    assert_eq!(find("bad", |_| Some(Err("why".into()))), Found::Refused("why".into()));
}
