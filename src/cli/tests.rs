//! `check`, `status` and the token on stdin.

use super::*;
use crate::crd::TenantApiCredentialStatus;
use crate::decide::conditions::{Desired, Reason, Status, merge};

#[test]
fn stdin_is_read_within_the_token_bound_and_must_be_text() {
    assert_eq!(read_token(&b"cs_live_abc\n"[..]), Ok("cs_live_abc\n".to_string()));
    let huge = vec![b'a'; 1024 * 1024];
    let err = read_token(&huge[..]).expect_err("too long");
    assert!(err.contains("8192") && !err.contains("aaaa"), "{err}");
    let err = read_token(&[0x63, 0x73, 0xff, 0xfe][..]).expect_err("binary");
    assert!(err.contains("not UTF-8") && err.contains("offset 2"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line");
}

fn tac(name: &str, conds: &[(Type, Status, Reason)]) -> TenantApiCredential {
    let mut t = crate::testing::credential(
        name,
        serde_json::json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "in"}}),
    );
    let now = crate::testing::t(0);
    let desired: Vec<_> = conds.iter().map(|(t, s, r)| Desired::new(*t, *s, *r, "m")).collect();
    t.status = Some(TenantApiCredentialStatus {
        conditions: merge(&[], &desired, Some(1), now),
        ..Default::default()
    });
    t
}

#[test]
fn status_lists_the_worst_first() {
    let now = crate::testing::t(0);
    let rows = vec![
        row(&tac("fine", &[(Type::Ready, Status::True, Reason::TokenValid)]), now),
        row(
            &tac(
                "revoked",
                &[
                    (Type::Ready, Status::False, Reason::Unauthorized),
                    (Type::Degraded, Status::True, Reason::Unauthorized),
                ],
            ),
            now,
        ),
        row(&tac("new", &[(Type::Ready, Status::Unknown, Reason::Probing)]), now),
        row(
            &tac(
                "soon",
                &[
                    (Type::Ready, Status::True, Reason::TokenValid),
                    (Type::ExpiringSoon, Status::True, Reason::ExpiringSoon),
                ],
            ),
            now,
        ),
        row(
            &tac("missing", &[(Type::Ready, Status::False, Reason::SourceNotFound)]),
            now,
        ),
    ];
    let table = render_table(rows, false);
    let names: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["revoked", "missing", "new", "soon", "fine"]);
    assert!(table.starts_with("NAME"));
    assert!(table.contains("Degraded") && table.contains("Unauthorized"));
}

#[test]
fn stdin_loses_only_the_shell_line_ending() {
    assert_eq!(token_from_stdin("abc\n"), "abc");
    assert_eq!(token_from_stdin("abc\r\n"), "abc");
    assert_eq!(token_from_stdin("abc"), "abc");
    assert_eq!(token_from_stdin(" abc\n"), " abc", "real whitespace is still reported");
}

#[test]
fn exit_codes_are_distinct_and_zero_only_for_valid() {
    let all = [
        ProbeResult::Valid,
        ProbeResult::Unauthorized,
        ProbeResult::Forbidden,
        ProbeResult::RateLimited,
        ProbeResult::Unavailable,
        ProbeResult::Expired,
        ProbeResult::Invalid,
    ];
    let codes: std::collections::BTreeSet<_> = all.iter().map(|r| exit_code(*r)).collect();
    assert_eq!(codes.len(), all.len());
    assert_eq!(exit_code(ProbeResult::Valid), 0);
}

/// Nothing but line endings: no control character or invisible formatting reaches the terminal.
fn printable(text: &str) -> bool {
    !crate::decide::text::has_control(&text.replace('\n', ""))
}

/// Issue 36: a status patched with control characters (a terminal escape, a line break, a
/// direction override) is shown escaped, in the table and in JSON.
#[test]
fn status_shows_what_the_cluster_holds_escaped() {
    let now = crate::testing::t(0);
    let mut t = tac("evil", &[(Type::Ready, Status::False, Reason::InvalidSpec)]);
    if let Some(c) = t.status.as_mut().and_then(|s| s.conditions.first_mut()) {
        c.reason = "Bad\u{1b}[2J".into();
        c.message = "line one\r\nfake row\u{202e}".into();
    }
    let r = row(&t, now);
    assert_eq!(r.reason, "Bad\\u{1b}[2J");
    assert_eq!(r.message, "line one\\r\\nfake row\\u{202e}");
    let table = render_table(vec![r.clone()], true);
    assert!(printable(&table) && table.lines().count() == 2, "{table:?}");
    let json = serde_json::to_string(&r).expect("serializes");
    assert!(printable(&json), "{json}");
}

/// Issue 36: `check` refuses a probe path with a line break and prints it escaped; a definition
/// file's name reaches the terminal escaped too. Neither needs the network.
#[tokio::test]
async fn check_never_prints_a_raw_control_character() {
    let req = |provider: &str, defined, path: Option<&str>| CheckRequest {
        provider: provider.into(),
        defined,
        base_url: Some("https://prod-api.raisedonors.com".into()),
        probe_path: path.map(str::to_owned),
        timeout: None,
        egress: Egress::default(),
        show_body: false,
    };
    let report = check(&req("raise", None, Some("/x\r\nHost: evil\u{1b}[2J")), "a.b.c").await;
    assert_eq!(report.code, EXIT_USAGE);
    assert!(report.text.contains("/x\\r\\nHost: evil\\u{1b}[2J"), "{}", report.text);
    assert!(
        printable(&report.text) && report.text.lines().count() == 1,
        "{:?}",
        report.text
    );

    let spec = serde_json::json!({"hosts": ["prod-api.raisedonors.com"], "probe": {"path": "/me"},
        "token": {"prefix": "tok_"}});
    let spec = serde_json::from_value(spec).expect("spec");
    let name = "evil\u{1b}]0;pwned\u{7}";
    let profile = provider::definition::read(name, &spec)
        .map(Arc::new)
        .map_err(|r| r.message(name));
    let report = check(&req(name, Some(profile), None), "not-a-tok").await;
    assert_eq!(report.code, exit_code(ProbeResult::Invalid), "{}", report.text);
    assert!(report.text.contains("evil\\u{1b}]0;pwned\\u{7}"), "{}", report.text);
    assert!(printable(&report.text), "{:?}", report.text);
}
