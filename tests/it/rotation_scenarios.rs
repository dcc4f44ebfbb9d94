//! Issue 38, items 3 and 4: rotation stays safe when the operator is killed at each step of a
//! refresh, and credentials that share a login share one refresh. Against the kit's OAuth
//! simulator playing Xero (client_secret_basic; every refresh token is used once and replaced),
//! with access tokens of a few seconds, and a server that revokes the whole grant when a
//! rotated refresh token comes back.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use tenantcred_testkit::oauth_server::{Outcome, Why};
use tenantcred_testkit::{Fault, Flavor, Harness, OAuthServer, credential, eventually, settle};
use tenantcred_testkit::{Reason, Status, Type};

const CLIENT: &str = "rotation-client";
const CLIENT_SECRET: &str = "rotation-secret";
/// The first access token's lifetime: the refresh under test comes at 60-70% of it, after the
/// test has armed its fault.
const FIRST: Duration = Duration::from_secs(5);
/// Access tokens that outlive a test: no refresh falls in a settle time.
const LONG: Duration = Duration::from_secs(3600);
/// How long the token endpoint is watched after a verdict, for calls that should not come.
const SETTLE_MS: u64 = 3000;

/// A provider name of this test's own (ApiProviders are cluster-scoped).
fn provider_name(h: &Harness) -> String {
    format!("{}-xero", h.ns)
}

/// Xero as data: its token path, client_secret_basic, the refresh_token grant only.
fn definition(name: &str) -> Value {
    json!({
        "apiVersion": "tenantcred.dev/v1alpha1", "kind": "ApiProvider",
        "metadata": {"name": name},
        "spec": {
            "hosts": ["oauth.test"],
            "probe": {"path": "/api/me"},
            "oauth": {"tokenPath": Flavor::Xero.token_path(), "grants": ["refresh_token"],
                      "clientAuthentication": "client_secret_basic"}
        }
    })
}

/// The simulator, its client registered, and the provider defined.
async fn xero(h: &Harness) -> OAuthServer {
    let server = OAuthServer::start(Flavor::Xero).await;
    server.register_client(CLIENT, CLIENT_SECRET);
    server.set_access_token_lifetime(FIRST);
    server.revoke_family_on_reuse(true);
    h.apply_cluster("apiproviders", &definition(&provider_name(h))).await;
    server
}

/// The login Secret a person writes, with this refresh token.
async fn login(h: &Harness, refresh_token: &str) {
    h.secret(
        "login",
        &[
            ("client_id", CLIENT),
            ("client_secret", CLIENT_SECRET),
            ("refresh_token", refresh_token),
        ],
    )
    .await;
}

async fn oauth_credential(h: &Harness, server: &OAuthServer, name: &str) {
    h.create_credential(
        credential(name)
            .provider(&provider_name(h))
            .base_url(&server.base_url)
            .oauth("login"),
    )
    .await;
}

/// A key of the login's state Secret (found by its label), decoded.
async fn state_value(h: &Harness, key: &str) -> Option<String> {
    let states: Vec<Value> = h
        .list("secrets")
        .await
        .into_iter()
        .filter(|s| s["metadata"]["labels"]["tenantcred.dev/purpose"] == "oauth-state")
        .collect();
    assert!(states.len() <= 1, "one state Secret per login: {}", states.len());
    let encoded = states.first()?["data"][key].as_str()?.to_owned();
    String::from_utf8(tenantcred_testkit::apiserver::unb64(&encoded)).ok()
}

/// Ready on a token the server says is current, and the state's refresh token the live one.
async fn continues(h: &Harness, server: &OAuthServer, names: &[&str]) -> bool {
    let Some(refresh) = state_value(h, "refresh_token").await else {
        return false;
    };
    if !server.live_refresh_tokens().contains(&refresh) {
        return false;
    }
    let stored = state_value(h, "access_token").await;
    for name in names {
        let token = h.managed_token(name).await;
        if token.is_none() || token != stored || !server.is_current(token.as_deref().unwrap_or_default()) {
            return false;
        }
        if !h.seen(name).await.is(Type::Ready, Status::True, Reason::TokenValid) {
            return false;
        }
    }
    true
}

/// No token call after `calls` for a while: the verdict is final, not a loop.
async fn no_more_calls(server: &OAuthServer, calls: usize) {
    settle(SETTLE_MS).await;
    assert_eq!(
        server.calls().len(),
        calls,
        "token calls after the verdict: {:?}",
        server.calls()
    );
}

/// How many times a rotated refresh token was sent (each would revoke the grant here).
fn reuses(server: &OAuthServer) -> usize {
    server
        .calls()
        .iter()
        .filter(|c| {
            matches!(
                c.outcome,
                Outcome::Refused {
                    why: Why::ReusedRefreshToken,
                    ..
                }
            )
        })
        .count()
}

/// One credential on a fresh login, its first token issued; `fault` armed for the refresh.
async fn first_token_then(h: &Harness, server: &OAuthServer, fault: Fault) {
    let seed = server.seed_refresh_token(CLIENT);
    login(h, &seed).await;
    oauth_credential(h, server, "c").await;
    eventually(15, "the first token call", async || server.calls().len() == 1).await;
    server.set_access_token_lifetime(LONG);
    server.fail_next(1, fault);
    eventually(15, "Ready on the first token", async || {
        continues(h, server, &["c"]).await
    })
    .await;
}

/// Killed before its request did anything (the server hangs without rotating): the next
/// operator sends the marked refresh token again, and it works.
async fn killed_before_the_call_continues(mut h: Harness) {
    let server = xero(&h).await;
    first_token_then(&h, &server, Fault::Hang).await;
    eventually(15, "the refresh hangs", async || server.hanging() == 1).await;
    assert!(
        state_value(&h, "in_flight").await.is_some(),
        "marked in flight before the call"
    );
    h.restart_controller();
    eventually(10, "the killed call hung up", async || server.hanging() == 0).await;
    // The first access token still serves meanwhile: continuing is the marked token sent again.
    eventually(20, "continues on a new token", async || {
        server.calls().len() >= 3
            && state_value(&h, "in_flight").await.is_some_and(|v| v.is_empty())
            && continues(&h, &server, &["c"]).await
    })
    .await;
    let calls = server.calls().len();
    assert_eq!(
        calls,
        3,
        "first, the hung one, the one that continued: {:?}",
        server.calls()
    );
    no_more_calls(&server, calls).await;
    assert_eq!(reuses(&server), 0);
    h.delete_cluster("apiproviders", &provider_name(&h)).await;
}

/// Killed after the server rotated and before the answer was stored: the refresh token is
/// lost, said once, and nothing more is sent until a person signs in again.
async fn killed_after_the_server_rotated_reports_the_refresh_token_lost(mut h: Harness) {
    let server = xero(&h).await;
    first_token_then(&h, &server, Fault::RotateThenHang).await;
    eventually(15, "the refresh rotated and hangs", async || server.hanging() == 1).await;
    h.restart_controller();
    eventually(20, "RefreshTokenLost", async || {
        h.seen("c")
            .await
            .is(Type::Degraded, Status::True, Reason::RefreshTokenLost)
    })
    .await;
    assert!(!h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid));
    let calls = server.calls().len();
    // The one call that found out: the server alone knew whether the marked token was used.
    assert_eq!(calls, 3, "{:?}", server.calls());
    assert_eq!(
        reuses(&server),
        1,
        "the marked token is sent once to find out, never again"
    );
    no_more_calls(&server, calls).await;
    assert!(h.managed_token("c").await.is_some(), "the managed Secret stays");

    // A person signs in again: Ready, on one call.
    let fresh = server.seed_refresh_token(CLIENT);
    login(&h, &fresh).await;
    eventually(20, "Ready again", async || {
        continues(&h, &server, &["c"]).await && h.seen("c").await.is(Type::Degraded, Status::False, Reason::AsExpected)
    })
    .await;
    assert_eq!(server.calls().len(), calls + 1, "{:?}", server.calls());
    no_more_calls(&server, calls + 1).await;
    assert_eq!(reuses(&server), 1);
    h.delete_cluster("apiproviders", &provider_name(&h)).await;
}

/// Killed right after the answer was stored: the next operator uses the stored token and calls
/// nobody. Then a rotated-away refresh token put back into the login Secret is never sent.
async fn killed_after_the_state_write_uses_the_stored_token(mut h: Harness) {
    let server = xero(&h).await;
    let seed = server.seed_refresh_token(CLIENT);
    login(&h, &seed).await;
    oauth_credential(&h, &server, "c").await;
    eventually(15, "Ready on the first token", async || {
        continues(&h, &server, &["c"]).await
    })
    .await;
    server.set_access_token_lifetime(LONG);
    let first = state_value(&h, "refresh_token").await.expect("stored");
    eventually(15, "the refresh stored", async || {
        state_value(&h, "refresh_token").await.is_some_and(|r| r != first)
    })
    .await;
    h.restart_controller();
    eventually(20, "continues", async || continues(&h, &server, &["c"]).await).await;
    assert_eq!(server.calls().len(), 2, "no call after the kill: {:?}", server.calls());
    no_more_calls(&server, 2).await;

    assert_eq!(reuses(&server), 0, "{:?}", server.calls());
    h.delete_cluster("apiproviders", &provider_name(&h)).await;
}

/// A refresh token already rotated away, put back into the login Secret by a person: refused
/// before anything is sent (the server would revoke the grant), until a new one comes.
async fn a_rotated_away_refresh_token_is_never_sent_again(h: Harness) {
    let server = xero(&h).await;
    server.set_access_token_lifetime(Duration::from_secs(3));
    let seed = server.seed_refresh_token(CLIENT);
    login(&h, &seed).await;
    oauth_credential(&h, &server, "c").await;
    eventually(15, "Ready", async || continues(&h, &server, &["c"]).await).await;
    let rotated = state_value(&h, "refresh_token").await.expect("stored");
    eventually(15, "rotated once more", async || {
        state_value(&h, "refresh_token").await.is_some_and(|r| r != rotated)
    })
    .await;
    login(&h, &rotated).await;
    eventually(15, "RefreshTokenReused", async || {
        h.seen("c")
            .await
            .is(Type::Degraded, Status::True, Reason::RefreshTokenReused)
    })
    .await;
    let calls = server.calls().len();
    no_more_calls(&server, calls).await;
    assert_eq!(reuses(&server), 0, "{:?}", server.calls());
    assert!(
        server
            .calls()
            .iter()
            .all(|c| c.refresh_token.as_deref() != Some(rotated.as_str()) || c.outcome == Outcome::Issued),
        "sent once, when it was current"
    );

    let fresh = server.seed_refresh_token(CLIENT);
    login(&h, &fresh).await;
    eventually(15, "Ready again", async || {
        continues(&h, &server, &["c"]).await && h.seen("c").await.is(Type::Degraded, Status::False, Reason::AsExpected)
    })
    .await;
    assert_eq!(reuses(&server), 0);
    h.delete_cluster("apiproviders", &provider_name(&h)).await;
}

/// Three credentials on one login: one state Secret, one call per refresh, the same current
/// token in every managed Secret, and no refresh token ever rotated out from under one of them.
async fn credentials_on_one_login_share_one_refresh(h: Harness) {
    let server = xero(&h).await;
    server.set_access_token_lifetime(Duration::from_secs(3));
    let seed = server.seed_refresh_token(CLIENT);
    login(&h, &seed).await;
    let names = ["a", "b", "c"];
    for name in names {
        oauth_credential(&h, &server, name).await;
    }
    eventually(20, "all Ready on the first token", async || {
        continues(&h, &server, &names).await
    })
    .await;
    eventually(30, "four refreshes", async || server.calls().len() >= 5).await;
    server.set_access_token_lifetime(LONG);
    let since = SystemTime::now();
    eventually(20, "every managed Secret on a token issued since", async || {
        server.calls().last().is_some_and(|c| c.at > since) && continues(&h, &server, &names).await
    })
    .await;
    let calls = server.calls();
    assert!(
        calls.iter().all(|c| c.outcome == Outcome::Issued),
        "every call issued (no invalid_grant): {calls:?}"
    );
    // Each refresh token was sent once: one call per refresh, not one per credential.
    let mut sent: Vec<_> = calls.iter().filter_map(|c| c.refresh_token.clone()).collect();
    assert_eq!(sent.len(), calls.len());
    sent.sort();
    sent.dedup();
    assert_eq!(sent.len(), calls.len(), "a refresh token sent twice");
    let settled = server.calls().len();
    no_more_calls(&server, settled).await;
    assert_eq!(reuses(&server), 0);
    h.delete_cluster("apiproviders", &provider_name(&h)).await;
}

/// A server that states its refresh tokens' lifetime (10 s here, inside any warn window): the
/// credential warns a person to sign in again, and refreshes before the lapse even though the
/// access token lives an hour.
async fn a_stated_refresh_token_lapse_warns_and_is_refreshed_before_it(h: Harness) {
    let server = xero(&h).await;
    server.set_access_token_lifetime(LONG);
    let lapse = Duration::from_secs(10);
    server.state_refresh_token_lifetime(lapse);
    let seed = server.seed_refresh_token(CLIENT);
    login(&h, &seed).await;
    oauth_credential(&h, &server, "c").await;
    eventually(15, "Ready, warning of the lapse", async || {
        continues(&h, &server, &["c"]).await
            && h.seen("c")
                .await
                .is(Type::ExpiringSoon, Status::True, Reason::ExpiringSoon)
    })
    .await;
    let status = h.tac("c").await["status"].to_string();
    assert!(status.contains("sign in again"), "{status}");
    assert!(
        state_value(&h, "refresh_token_expires_at")
            .await
            .is_some_and(|v| !v.is_empty())
    );
    eventually(15, "refreshed again", async || server.calls().len() >= 2).await;
    let calls = server.calls();
    assert!(calls.iter().all(|c| c.outcome == Outcome::Issued), "{calls:?}");
    assert!(
        calls[1].at < calls[0].at + lapse,
        "the refresh token was used before it lapsed: {calls:?}"
    );
    assert_eq!(reuses(&server), 0);
    h.delete_cluster("apiproviders", &provider_name(&h)).await;
}

tenantcred_testkit::scenarios!(
    killed_before_the_call_continues,
    killed_after_the_server_rotated_reports_the_refresh_token_lost,
    killed_after_the_state_write_uses_the_stored_token,
    a_rotated_away_refresh_token_is_never_sent_again,
    credentials_on_one_login_share_one_refresh,
    a_stated_refresh_token_lapse_warns_and_is_refreshed_before_it,
);
