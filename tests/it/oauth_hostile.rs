//! OAuth as data against a server that misbehaves: an answer the operator cannot use may still
//! have rotated the refresh token, and the new one must survive it (else the next call sends a
//! dead token and a person has to consent again).

use std::time::Duration;

use serde_json::{Value, json};

use tenantcred_testkit::oauth_server::Outcome;
use tenantcred_testkit::{Fault, Flavor, Harness, OAuthServer, eventually, scenarios};
use tenantcred_testkit::{Reason, Status, Type};

const CLIENT: &str = "xero-client";
const SECRET: &str = "xero-client-secret-5d1e";

/// Xero's shape (client_secret_basic, rotating refresh tokens), named for this test.
fn xero(h: &Harness) -> Value {
    json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "ApiProvider",
        "metadata": {"name": format!("{}-xero", h.ns)},
        "spec": {"hosts": ["oauth.test"], "probe": {"path": "/api/me"},
                 "oauth": {"tokenPath": Flavor::Xero.token_path(), "grants": ["refresh_token"],
                           "clientAuthentication": "client_secret_basic"}}})
}

/// Credential `c` signed in through Xero's shape against a fresh simulator whose access tokens
/// live `lifetime`, and Ready.
async fn signed_in(h: &Harness, lifetime: Duration) -> OAuthServer {
    let sim = OAuthServer::start(Flavor::Xero).await;
    sim.register_client(CLIENT, SECRET);
    sim.set_access_token_lifetime(lifetime);
    let seed = sim.seed_refresh_token(CLIENT);
    let def = xero(h);
    h.apply_cluster("apiproviders", &def).await;
    h.secret(
        "login",
        &[
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("refresh_token", &seed),
        ],
    )
    .await;
    h.create(
        json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
        "metadata": {"name": "c"},
        "spec": {"tenant": "acme", "provider": def["metadata"]["name"], "baseUrl": sim.base_url,
                 "oauth": {"secretRef": {"name": "login"}}}}),
    )
    .await;
    eventually(20, "Ready", async || {
        h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    sim
}

async fn the_refresh_token_rotated_in_an_answer_without_expiry_is_kept(mut h: Harness) {
    let sim = signed_in(&h, Duration::from_secs(4)).await;

    // The next refresh rotates the refresh token at the server, whose answer then lacks
    // expires_in: the access token is not used, and the credential says why.
    sim.fail_next(1, Fault::NoExpiresIn);
    eventually(20, "MissingExpiry", async || {
        h.seen("c").await.is(Type::Ready, Status::False, Reason::MissingExpiry)
    })
    .await;
    let live = sim.live_refresh_tokens();
    assert_eq!(live.len(), 1, "one refresh token alive: {live:?}");

    // The server is fine again; a fresh operator renews with the refresh token still alive.
    h.restart_controller();
    eventually(20, "Ready again", async || {
        h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    let refused: Vec<_> = sim
        .calls()
        .into_iter()
        .filter(|c| matches!(c.outcome, Outcome::Refused { .. }))
        .collect();
    assert!(refused.is_empty(), "a dead refresh token was sent: {refused:?}");
}

async fn an_access_token_the_server_revoked_early_is_refreshed(h: Harness) {
    let sim = signed_in(&h, Duration::from_secs(3600)).await;
    sim.revoke_access_tokens();
    h.request_probe("c", "2026-01-01T00:00:00Z").await;
    eventually(30, "a current access token again", async || {
        h.managed_token("c").await.is_some_and(|t| sim.is_current(&t))
            && h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
}

scenarios!(
    the_refresh_token_rotated_in_an_answer_without_expiry_is_kept,
    an_access_token_the_server_revoked_early_is_refreshed,
);
