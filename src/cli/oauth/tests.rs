//! `check --oauth-login` against the test kit's OAuth simulator: the operator's reasons, one
//! call per grant, nothing secret printed.

use std::sync::Arc;

use tenantcred_testkit::oauth_server::{ErrorCode, GrantType as Wire};
use tenantcred_testkit::{Fault, Flavor, OAuthServer};

use super::*;
use crate::decide::egress::Egress;
use crate::decide::provider::Profile;

const SECRET: &str = "s3cr3t-client-Secret";

/// An ApiProvider for `server`'s flavor: hosts by name, the simulator at the credential's URL.
fn definition(server: &OAuthServer, oauth: serde_json::Value) -> Arc<Profile> {
    let mut o = oauth;
    o["tokenPath"] = server.flavor.token_path().into();
    let spec = serde_json::json!({"hosts": ["oauth.test"], "probe": {"path": "/api/me"}, "oauth": o});
    let spec = serde_json::from_value(spec).expect("a provider spec");
    Arc::new(provider::definition::read("sim", &spec).expect("an accepted definition"))
}

fn request(server: &OAuthServer, profile: Arc<Profile>) -> CheckRequest {
    let loopback = "127.0.0.1:*".parse().expect("a pattern");
    CheckRequest {
        provider: "sim".into(),
        defined: Some(Ok(profile)),
        base_url: Some(server.base_url.clone()),
        probe_path: None,
        timeout: None,
        egress: Egress::new(vec![loopback], true),
        show_body: false,
    }
}

fn login(text: &str) -> OAuthCheck {
    OAuthCheck {
        login: parse_login(text, "login.env").expect("a login"),
        send_refresh_token: false,
    }
}

async fn client_credentials() -> (OAuthServer, CheckRequest) {
    let server = OAuthServer::start(Flavor::ClientCredentials).await;
    server.register_client("cid", SECRET);
    let profile = definition(
        &server,
        serde_json::json!({"grants": ["client_credentials"], "clientAuthentication": "client_secret_basic",
                           "answer": {"lifetime": "2h"}}),
    );
    let req = request(&server, profile);
    (server, req)
}

/// What a report shows: none of these.
fn shows_no_secret(report: &CheckReport, server: &OAuthServer, also: &[&str]) {
    let text = &report.text;
    for t in server
        .current_access_tokens()
        .iter()
        .map(String::as_str)
        .chain(also.iter().copied())
    {
        assert!(!text.contains(t), "{text}");
    }
    assert!(!text.contains(SECRET) && !text.contains("PRIVATE KEY"), "{text}");
}

#[test]
fn a_login_file_is_an_env_file_or_a_secret_and_errors_quote_nothing() {
    let env = parse_login("# the login\nclient_id=cid\nexport client_secret=\"x y\"\n\n", "l.env").expect("env");
    assert_eq!(env.login.get("client_secret").map(|t| t.expose()), Some("x y"));
    assert_eq!((env.namespace.as_str(), env.name.as_str()), (".", "l.env"));
    let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: acme-login, namespace: partner}\n\
                data: {client_id: Y2lk}\nstringData: {client_secret: shh}\n";
    let secret = parse_login(yaml, "l.yaml").expect("a Secret");
    assert_eq!(secret.login.get("client_id").map(|t| t.expose()), Some("cid"));
    assert_eq!(secret.login.get("client_secret").map(|t| t.expose()), Some("shh"));
    assert_eq!(
        (secret.namespace.as_str(), secret.name.as_str()),
        ("partner", "acme-login")
    );
    let err = parse_login("data: [hunter2-value]\nnope", "l").err().expect("neither");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn sign_in_exit_codes_are_distinct_from_each_other_and_the_probes() {
    let probe = [
        ProbeResult::Valid,
        ProbeResult::Unauthorized,
        ProbeResult::Forbidden,
        ProbeResult::RateLimited,
        ProbeResult::Unavailable,
        ProbeResult::Expired,
    ]
    .map(exit_code);
    let codes: std::collections::BTreeSet<i32> = SIGN_IN_REASONS
        .iter()
        .filter(|r| **r != Reason::RefreshTokenReused)
        .map(|r| reason_exit_code(*r))
        .collect();
    assert_eq!(codes.len(), SIGN_IN_REASONS.len() - 1);
    assert!(codes.iter().all(|c| !probe.contains(c) && *c != EXIT_USAGE && *c != 0));
}

#[tokio::test]
async fn a_good_login_signs_in_and_its_access_token_is_probed() {
    let (server, req) = client_credentials().await;
    let report = check_oauth(&req, &login(&format!("client_id=cid\nclient_secret={SECRET}\n"))).await;
    assert_eq!(report.code, 0, "{}", report.text);
    assert_eq!(report.reason, Some(Reason::TokenValid));
    assert_eq!(server.count(&Wire::ClientCredentials), 1, "one call");
    let token = server.current_access_tokens().pop().expect("issued");
    assert_eq!(server.api_hits(&token), 1, "probed once");
    assert!(report.text.contains("client_credentials") && report.text.contains("sha256:"));
    shows_no_secret(&report, &server, &[]);
}

#[tokio::test]
async fn a_refused_or_unusable_sign_in_names_the_operators_reason() {
    let (server, mut req) = client_credentials().await;
    let good = login(&format!("client_id=cid\nclient_secret={SECRET}\n"));
    let cases = [
        (Fault::Refuse(ErrorCode::InvalidClient), Reason::InvalidClient),
        (Fault::Refuse(ErrorCode::InvalidGrant), Reason::InvalidGrant),
        (Fault::Refuse(ErrorCode::InvalidScope), Reason::InvalidScope),
        (Fault::Html, Reason::TokenEndpointUnusable),
        (Fault::AccessToken("two words".into()), Reason::InvalidToken),
    ];
    for (fault, reason) in cases {
        server.fail_next(1, fault.clone());
        let report = check_oauth(&req, &good).await;
        assert_eq!(report.reason, Some(reason), "{fault:?}: {}", report.text);
        assert_eq!(report.code, reason_exit_code(reason));
        assert!(report.text.contains(reason.as_str()), "{}", report.text);
        shows_no_secret(&report, &server, &["two words"]);
    }
    // --show-body shows a refusal, never an answer that holds a token.
    req.show_body = true;
    server.fail_next(1, Fault::Refuse(ErrorCode::InvalidClient));
    assert!(check_oauth(&req, &good).await.body.is_some());
    server.fail_next(1, Fault::AccessToken("two words".into()));
    assert!(check_oauth(&req, &good).await.body.is_none());
}

#[tokio::test]
async fn an_answer_without_expiry_is_missing_expiry_when_the_definition_declares_none() {
    let server = OAuthServer::start(Flavor::ClientCredentials).await;
    server.register_client("cid", SECRET);
    let profile = definition(
        &server,
        serde_json::json!({"grants": ["client_credentials"], "clientAuthentication": "client_secret_basic"}),
    );
    let report = check_oauth(
        &request(&server, profile),
        &login(&format!("client_id=cid\nclient_secret={SECRET}")),
    )
    .await;
    assert_eq!(report.reason, Some(Reason::MissingExpiry), "{}", report.text);
    shows_no_secret(&report, &server, &[]);
}

#[tokio::test]
async fn nothing_is_sent_without_what_the_grant_needs_or_a_refresh_token_without_the_flag() {
    let (server, req) = client_credentials().await;
    let report = check_oauth(&req, &login("client_id=cid\n")).await;
    assert_eq!(report.reason, Some(Reason::LoginIncomplete), "{}", report.text);
    assert!(report.text.contains("client_secret"), "{}", report.text);

    let xero = OAuthServer::start(Flavor::Xero).await;
    xero.register_client("cid", SECRET);
    let refresh = xero.seed_refresh_token("cid");
    let profile = definition(
        &xero,
        serde_json::json!({"grants": ["refresh_token"], "clientAuthentication": "client_secret_basic"}),
    );
    let req = request(&xero, profile);
    let mut o = login(&format!(
        "client_id=cid\nclient_secret={SECRET}\nrefresh_token={refresh}\n"
    ));
    let report = check_oauth(&req, &o).await;
    assert_eq!(report.code, EXIT_USAGE, "{}", report.text);
    assert!(report.text.contains("--send-refresh-token"));
    assert!(server.calls().is_empty() && xero.calls().is_empty(), "nothing sent");

    o.send_refresh_token = true;
    let report = check_oauth(&req, &o).await;
    assert_eq!(report.reason, Some(Reason::TokenValid), "{}", report.text);
    assert!(report.text.contains("rotated"), "{}", report.text);
    let rotated = xero.live_refresh_tokens();
    shows_no_secret(&report, &xero, &[refresh.as_str()]);
    assert!(rotated.iter().all(|t| !report.text.contains(t.as_str())));
    // The spent refresh token again: refused as the operator would call it.
    let report = check_oauth(&req, &o).await;
    assert_eq!(report.reason, Some(Reason::RefreshTokenRevoked), "{}", report.text);
}
