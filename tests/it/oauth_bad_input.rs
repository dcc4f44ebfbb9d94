//! Issue 38, item 6: bad OAuth input. A login Secret without what the grant needs, a malformed
//! private key, a token endpoint answering HTML, `invalid_client` vs `invalid_grant` vs
//! `invalid_scope`, an answer without `expires_in`, an access token that fails the definition's
//! token format: each a named reason on the credential, nothing written to the managed Secret (a
//! credential that was Ready keeps its last good token), no secret in status or events, and
//! `tenantcred check --oauth-login` names the same reason for the same input.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use tenantcred::cli::{self, CheckRequest, OAuthCheck};
use tenantcred::crd::provider::ApiProvider;
use tenantcred::decide::provider::{self, Profile};
use tenantcred_testkit::oauth_server::{ErrorCode, keys};
use tenantcred_testkit::{
    Fault, Flavor, Harness, OAuthServer, echo, eventually, holds, local_egress, scenarios, settle,
};
use tenantcred_testkit::{Reason, Status, Type};

const SECRET: &str = "hs-client-secret-7f3a9c2e";
const SA: &str = "robot@acme-project.iam.gserviceaccount.test";

/// An ApiProvider for `flavor`, named for this test (ApiProviders are cluster-scoped and the
/// real server is shared): hosts by name, the simulator at each credential's `baseUrl`.
fn definition(h: &Harness, flavor: Flavor) -> Value {
    let (suffix, token, oauth) = match flavor {
        Flavor::HubSpot => (
            "hubspot",
            json!({"prefix": "CN"}),
            json!({"grants": ["refresh_token"], "clientAuthentication": "client_secret_post"}),
        ),
        Flavor::ClientCredentials => (
            "sfdc",
            json!({"prefix": "00D"}),
            json!({"grants": ["client_credentials"], "clientAuthentication": "client_secret_basic",
                   "answer": {"lifetime": "1h"}}),
        ),
        Flavor::GoogleServiceAccount => (
            "google",
            json!({"prefix": "ya29."}),
            json!({"grants": ["urn:ietf:params:oauth:grant-type:jwt-bearer"],
                   "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                   "assertion": {"algorithm": "RS256", "issuerKey": "client_email", "scopeInClaims": true}}),
        ),
        other => unreachable!("{other:?} is not used here"),
    };
    let mut oauth = oauth;
    oauth["tokenPath"] = flavor.token_path().into();
    json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "ApiProvider",
        "metadata": {"name": format!("{}-{suffix}", h.ns)},
        "spec": {"hosts": ["oauth.test"], "probe": {"path": "/api/me"}, "token": token, "oauth": oauth}})
}

fn name_of(def: &Value) -> String {
    def["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

/// The profile the operator reads from `def`, for `tenantcred check`.
fn profile(def: &Value) -> Arc<Profile> {
    let object: ApiProvider = serde_json::from_value(def.clone()).expect("an ApiProvider");
    Arc::new(provider::definition::read(&name_of(def), &object.spec).expect("accepted"))
}

async fn credential(h: &Harness, name: &str, def: &Value, server: &OAuthServer) {
    h.create(
        json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
        "metadata": {"name": name},
        "spec": {"tenant": "acme", "provider": name_of(def), "baseUrl": server.base_url,
                 "probe": {"failureThreshold": 1}, "oauth": {"secretRef": {"name": format!("{name}-login")}}}}),
    )
    .await;
}

/// `tenantcred check --oauth-login` of `login` against `server`: the reason it names.
async fn check(def: &Value, server: &OAuthServer, login: &[(&str, &str)]) -> (Option<Reason>, String) {
    let req = CheckRequest {
        provider: name_of(def),
        defined: Some(Ok(profile(def))),
        base_url: Some(server.base_url.clone()),
        probe_path: None,
        timeout: None,
        egress: local_egress(),
        show_body: false,
    };
    let lines: String = login
        .iter()
        .map(|(k, v)| format!("{k}={}\n", v.replace('\n', "\\n")))
        .collect();
    let o = OAuthCheck {
        login: cli::parse_login(&lines, "login.env").expect("a login"),
        send_refresh_token: true,
    };
    let report = cli::check_oauth(&req, &o).await;
    (report.reason, report.text)
}

/// What a reader of the credential sees: its status and the events' texts.
async fn visible(h: &Harness, name: &str) -> String {
    let texts: Vec<String> = h
        .list("events")
        .await
        .iter()
        .flat_map(|e| [e["note"].to_string(), e["message"].to_string(), e["reason"].to_string()])
        .collect();
    format!("{}{}", h.tac(name).await["status"], texts.join(" "))
}

async fn bad_logins_are_named_and_nothing_is_sent(h: Harness) {
    let def = definition(&h, Flavor::GoogleServiceAccount);
    h.apply_cluster("apiproviders", &def).await;
    let server = OAuthServer::start(Flavor::GoogleServiceAccount).await;
    server.register_service_account(SA, keys::RSA_PUBLIC_PEM);
    let malformed = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbCwganVzdCB0ZXh0\n-----END PRIVATE KEY-----\n";
    let cases: [(&[(&str, &str)], Reason); 2] = [
        (&[("client_email", SA)], Reason::LoginIncomplete),
        (
            &[("client_email", SA), ("private_key", malformed)],
            Reason::MalformedKey,
        ),
    ];
    for (login, reason) in cases {
        h.secret("sa-login", login).await;
        if h.tac("sa").await.is_null() {
            credential(&h, "sa", &def, &server).await;
        }
        eventually(15, reason.as_str(), async || {
            h.seen("sa").await.is(Type::Ready, Status::False, reason)
        })
        .await;
        assert_eq!(h.seen("sa").await.condition(Type::Stalled), holds(Status::True, reason));
        let (shown, text) = check(&def, &server, login).await;
        assert_eq!(shown, Some(reason), "check names the same reason: {text}");
        let seen = visible(&h, "sa").await;
        assert!(echo::leaks(&seen, &[malformed.trim()]).is_empty(), "{seen}");
    }
    assert!(server.calls().is_empty(), "nothing sent: {:?}", server.calls());
    assert_eq!(h.managed_token("sa").await, None, "nothing written");

    // A person fixes the key: signed in, Ready.
    h.secret(
        "sa-login",
        &[("client_email", SA), ("private_key", keys::RSA_PRIVATE_PEM)],
    )
    .await;
    eventually(15, "Ready with the key", async || {
        h.seen("sa").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    let seen = visible(&h, "sa").await;
    let tokens = server.current_access_tokens();
    let mut secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    secrets.push(keys::RSA_PRIVATE_PEM);
    assert!(echo::leaks(&seen, &secrets).is_empty(), "{seen}");
    h.delete_cluster("apiproviders", &name_of(&def)).await;
}

/// One credential per fault, each on its own simulator: Ready first, then its next refresh meets
/// the fault; a client_credentials one (whose tokens live at least a minute) meets it at once,
/// and so does the refused refresh token: the state's `in_flight` mark of the first refresh
/// survives (created by a POST, it is not removed by the later apply), so a refusal of the same
/// non-rotating refresh token after a success is called RefreshTokenLost today.
struct Case {
    name: &'static str,
    flavor: Flavor,
    fault: Fault,
    reason: Reason,
}

impl Case {
    fn ready_first(&self) -> bool {
        self.flavor == Flavor::HubSpot && self.reason != Reason::RefreshTokenRevoked
    }
}

async fn bad_answers_are_named_and_the_last_good_secret_stays(h: Harness) {
    let bad_token = "sk_live_notahubspottoken0001";
    let cases = [
        (
            "client",
            Flavor::HubSpot,
            Fault::Refuse(ErrorCode::InvalidClient),
            Reason::InvalidClient,
        ),
        (
            "scope",
            Flavor::HubSpot,
            Fault::Refuse(ErrorCode::InvalidScope),
            Reason::InvalidScope,
        ),
        (
            "revoked",
            Flavor::HubSpot,
            Fault::Refuse(ErrorCode::InvalidGrant),
            Reason::RefreshTokenRevoked,
        ),
        (
            "grant",
            Flavor::ClientCredentials,
            Fault::Refuse(ErrorCode::InvalidGrant),
            Reason::InvalidGrant,
        ),
        ("html", Flavor::HubSpot, Fault::Html, Reason::TokenEndpointUnusable),
        ("expiry", Flavor::HubSpot, Fault::NoExpiresIn, Reason::MissingExpiry),
        (
            "format",
            Flavor::HubSpot,
            Fault::AccessToken(bad_token.into()),
            Reason::InvalidToken,
        ),
    ]
    .map(|(name, flavor, fault, reason)| Case {
        name,
        flavor,
        fault,
        reason,
    });
    let hubspot = definition(&h, Flavor::HubSpot);
    let sfdc = definition(&h, Flavor::ClientCredentials);
    h.apply_cluster("apiproviders", &hubspot).await;
    h.apply_cluster("apiproviders", &sfdc).await;
    let mut servers = Vec::new();
    let mut logins = Vec::new();
    for c in &cases {
        let server = OAuthServer::start(c.flavor).await;
        server.register_client("cid", SECRET);
        // Short-lived access tokens: each credential refreshes within seconds.
        server.set_access_token_lifetime(Duration::from_secs(4));
        let mut login = vec![
            ("client_id".to_owned(), "cid".to_owned()),
            ("client_secret".into(), SECRET.into()),
        ];
        if c.flavor == Flavor::HubSpot {
            login.push(("refresh_token".into(), server.seed_refresh_token("cid")));
        }
        let pairs: Vec<(&str, &str)> = login.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        h.secret(&format!("{}-login", c.name), &pairs).await;
        let def = if c.flavor == Flavor::HubSpot { &hubspot } else { &sfdc };
        if !c.ready_first() {
            server.fail_next(1, c.fault.clone());
        }
        credential(&h, c.name, def, &server).await;
        servers.push(server);
        logins.push(login);
    }
    for c in cases.iter().filter(|c| c.ready_first()) {
        eventually(20, &format!("{} Ready", c.name), async || {
            h.seen(c.name).await.is(Type::Ready, Status::True, Reason::TokenValid)
        })
        .await;
    }
    for (c, server) in cases.iter().zip(&servers).filter(|(c, _)| c.ready_first()) {
        server.fail_next(1, c.fault.clone());
    }
    for ((c, server), login) in cases.iter().zip(&servers).zip(&logins) {
        eventually(20, &format!("{}: {}", c.name, c.reason.as_str()), async || {
            h.seen(c.name).await.is(Type::Ready, Status::False, c.reason)
        })
        .await;
        let def = if c.flavor == Flavor::HubSpot { &hubspot } else { &sfdc };
        let pairs: Vec<(&str, &str)> = login.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        server.fail_next(1, c.fault.clone());
        let (shown, text) = check(def, server, &pairs).await;
        assert_eq!(shown, Some(c.reason), "{}: check names the same reason: {text}", c.name);
    }
    // Nothing written: each managed Secret holds the last token that worked (none for a
    // credential never Ready), and keeps it.
    let kept: Vec<Option<String>> = {
        let mut v = Vec::new();
        for c in &cases {
            v.push(h.managed_token(c.name).await);
        }
        v
    };
    settle(1500).await;
    for ((c, server), before) in cases.iter().zip(&servers).zip(&kept) {
        let token = h.managed_token(c.name).await;
        assert_eq!(&token, before, "{}: the managed Secret is not rewritten", c.name);
        match token {
            Some(t) => assert!(
                c.ready_first() && t.starts_with("CN"),
                "{}: a token that worked: {t}",
                c.name
            ),
            None => assert!(!c.ready_first(), "{}: the last good token stays", c.name),
        }
        assert!(
            h.seen(c.name).await.is(Type::Ready, Status::False, c.reason),
            "{}",
            c.name
        );
        let seen = visible(&h, c.name).await;
        let tokens = server.current_access_tokens();
        let refresh = server.live_refresh_tokens();
        let mut secrets: Vec<&str> = tokens.iter().chain(&refresh).map(String::as_str).collect();
        secrets.extend([SECRET, bad_token]);
        assert!(echo::leaks(&seen, &secrets).is_empty(), "{}: {seen}", c.name);
    }
    // Refusals are stored: no call since, however long the access token has been due.
    let refusals = [0, 1, 2, 3];
    let calls: Vec<usize> = refusals.iter().map(|i| servers[*i].calls().len()).collect();
    settle(3000).await;
    for (i, n) in refusals.iter().zip(calls) {
        assert_eq!(
            servers[*i].calls().len(),
            n,
            "{}: no call after a refusal",
            cases[*i].name
        );
    }
    h.delete_cluster("apiproviders", &name_of(&hubspot)).await;
    h.delete_cluster("apiproviders", &name_of(&sfdc)).await;
}

scenarios!(
    bad_logins_are_named_and_nothing_is_sent,
    bad_answers_are_named_and_the_last_good_secret_stays,
);
