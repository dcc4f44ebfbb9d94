//! The worked `ApiProvider` definitions of docs/providers.md without OAuth, read from the page: each
//! is accepted, and `tenantcred check` (the controller's resolve, token check, probe and verdict)
//! judges a token through it against the provider simulator playing that API.

use std::sync::Arc;

use tenantcred::cli::{CheckRequest, check, exit_code};
use tenantcred::crd::ProbeResult;
use tenantcred::crd::provider::ApiProvider;
use tenantcred::decide::provider::{ExpiryFrom, HeaderDate, Profile, definition};
use tenantcred_testkit::{Answer, Provider, Shape, local_egress};

fn documented() -> Vec<ApiProvider> {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/providers.md")).expect("page");
    page.split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|y| y.contains("kind: ApiProvider") && !y.contains("name: example"))
        // The OAuth definitions are checked by tests/it/oauth_scenarios.rs.
        .filter(|y| !y.contains("\n  oauth:"))
        .map(|y| {
            serde_yaml::from_str(y).unwrap_or_else(|e| panic!("a definition on the page does not parse: {e}\n{y}"))
        })
        .collect()
}

/// A token each documented API would issue, and one it has revoked.
fn tokens(name: &str) -> (String, String) {
    match name {
        "github" => (format!("ghp_{}", "a".repeat(36)), format!("ghp_{}", "r".repeat(36))),
        "gitlab" => ("glpat-valid1234567890".into(), "glpat-revoked12345678".into()),
        "stripe" => ("sk_live_valid1234567890".into(), "rk_test_revoked123456".into()),
        other => panic!("a worked definition without test tokens: {other}"),
    }
}

/// The simulator speaking as the definition says the API does.
fn shape_of(p: &Profile) -> Shape {
    let (header, prefix) = p.auth.header();
    let expiry_header = match &p.expiry {
        ExpiryFrom::Header { name, format } => {
            let value = match format {
                HeaderDate::Layout(_) => "2027-03-01 12:00:00 UTC",
                HeaderDate::Rfc3339 => "2027-03-01T12:00:00Z",
                HeaderDate::HttpDate => "Mon, 01 Mar 2027 12:00:00 GMT",
                HeaderDate::UnixSeconds => "1803988800",
            };
            Some((name.clone(), value.to_owned()))
        }
        ExpiryFrom::Declared => None,
    };
    Shape {
        auth_header: header.to_owned(),
        auth_prefix: prefix,
        rate_headers: [
            p.headers.limit.clone(),
            p.headers.remaining.clone(),
            p.headers.reset.clone(),
        ],
        reset_value: "4102444800".into(),
        retry_after_header: p.headers.retry_after.clone(),
        expiry_header,
    }
}

#[tokio::test]
async fn the_worked_definitions_are_accepted_and_probe_as_documented() {
    let all = documented();
    let names: Vec<String> = all
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["github", "gitlab", "stripe"]);
    for object in all {
        let name = object.metadata.name.clone().unwrap_or_default();
        let profile = Arc::new(definition::read(&name, &object.spec).unwrap_or_else(|r| panic!("{name}: {r:?}")));
        let sim = Provider::start().await;
        sim.set_shape(shape_of(&profile));
        sim.send_rate_headers(true);
        let (good, revoked) = tokens(&name);
        sim.answer(&good, Answer::Ok);
        sim.answer(&revoked, Answer::UnauthorizedJson);
        let request = CheckRequest {
            provider: name.clone(),
            defined: Some(Ok(profile.clone())),
            // The simulator stands in for the API's host: allowed by whoever runs the check.
            base_url: Some(sim.base_url.clone()),
            probe_path: None,
            timeout: None,
            egress: local_egress(),
            show_body: false,
        };
        let report = check(&request, &good).await;
        assert_eq!(report.code, exit_code(ProbeResult::Valid), "{name}: {}", report.text);
        if matches!(profile.expiry, ExpiryFrom::Header { .. }) {
            assert!(
                report
                    .text
                    .contains("expires:      2027-03-01T12:00:00Z (stated by the provider"),
                "{name}: {}",
                report.text
            );
        }
        let report = check(&request, &revoked).await;
        assert_eq!(
            report.code,
            exit_code(ProbeResult::Unauthorized),
            "{name}: {}",
            report.text
        );
        let report = check(&request, "not-a-token-of-this-api").await;
        assert_eq!(report.code, exit_code(ProbeResult::Invalid), "{name}: {}", report.text);
        let seen = sim.seen();
        assert_eq!(seen.len(), 2, "{name}: nothing is sent for a malformed token");
        let path = profile.probe.path.clone().unwrap_or_default();
        assert!(seen.iter().all(|s| s.path == path), "{name}: {seen:?}");
        assert_eq!(
            sim.hits(&good),
            1,
            "{name}: the token went where the definition sends it"
        );
    }
}
