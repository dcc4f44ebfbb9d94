//! Issue 38, items 5 and "done when": the five worked OAuth definitions of docs/providers.md, read
//! from the page, each driving a credential through its life against the kit's OAuth simulator
//! playing that server: a fresh access token, its expiry and refresh, the refresh token's
//! rotation where the server rotates it, the grant revoked, Degraded with the precise reason, a
//! person's fix to the login Secret, Ready again; with no secret in status or events.

use std::time::Duration;

use serde_json::{Value, json};

use tenantcred::crd::provider::ApiProvider;
use tenantcred_testkit::oauth_server::{GrantType, Outcome, keys};
use tenantcred_testkit::{Flavor, Harness, OAuthServer, eventually, scenarios, settle};
use tenantcred_testkit::{Reason, Status, Type, credential, holds};

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/providers.md");

/// The OAuth definitions on the page, in order.
fn documented() -> Vec<Value> {
    let page = std::fs::read_to_string(PAGE).expect("docs/providers.md");
    page.split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|y| y.contains("kind: ApiProvider") && y.contains("\n  oauth:"))
        .map(|y| {
            serde_yaml::from_str(y).unwrap_or_else(|e| panic!("a definition on the page does not parse: {e}\n{y}"))
        })
        .collect()
}

/// Which definition on the page each simulator flavor checks.
fn page_name(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Slack => "slack",
        Flavor::HubSpot => "hubspot",
        Flavor::Xero => "xero",
        Flavor::GoogleServiceAccount => "google-cloud",
        Flavor::ClientCredentials => "salesforce",
    }
}

#[test]
fn the_page_shows_five_oauth_definitions_the_operator_accepts() {
    let all = documented();
    let names: Vec<&str> = all
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["slack", "hubspot", "xero", "google-cloud", "salesforce"]);
    for d in all {
        let p: ApiProvider = serde_json::from_value(d).expect("an ApiProvider");
        let name = p.metadata.name.clone().unwrap_or_default();
        let profile = tenantcred::decide::provider::definition::read(&name, &p.spec)
            .unwrap_or_else(|r| panic!("{name} is not accepted: {r:?}"));
        assert!(profile.oauth.is_some(), "{name}: no token endpoint");
    }
}

/// The page's definition as the tests apply it: the simulator listens on plain http at
/// 127.0.0.1, so the definition gets a test host, its tokenUrl's path as tokenPath (the
/// credential's baseUrl is the simulator's, allowed by the kit's egress rules) and the
/// simulator's API as probe. Salesforce's session is cut to a minute (the least
/// `answer.lifetime` takes) so its renewals come within a test.
fn on_the_simulator(h: &Harness, flavor: Flavor) -> (String, Value) {
    let page = page_name(flavor);
    let mut def = documented()
        .into_iter()
        .find(|d| d["metadata"]["name"] == page)
        .unwrap_or_else(|| panic!("no definition {page} on the page"));
    let name = format!("{}-{page}", h.ns);
    let host = format!("{page}.test");
    def["metadata"]["name"] = json!(name);
    let spec = &mut def["spec"];
    spec["hosts"] = json!([host]);
    spec["baseUrl"] = json!(format!("https://{host}"));
    spec["probe"]["path"] = json!("/api/me");
    let url = spec["oauth"]["tokenUrl"].take();
    let url = url.as_str().expect("a worked definition names its tokenUrl");
    let path = url
        .strip_prefix("https://")
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .expect("an https URL with a path");
    assert_eq!(path, flavor.token_path(), "{page}: the documented token endpoint");
    let oauth = spec["oauth"].as_object_mut().expect("oauth");
    oauth.remove("tokenUrl");
    oauth.insert("tokenPath".into(), json!(path));
    if flavor == Flavor::ClientCredentials {
        assert!(
            spec["oauth"]["answer"]["lifetime"].is_string(),
            "no expires_in: a stated lifetime"
        );
        spec["oauth"]["answer"]["lifetime"] = json!("1m");
    }
    (name, def)
}

const CLIENT: &str = "client-1";
const SECRET: &str = "s3cret-of-client-1";
const ACCOUNT: &str = "reader@acme-prod.iam.gserviceaccount.test";

/// How each flavor's login looks, is revoked, and is fixed by a person.
struct Life {
    flavor: Flavor,
    /// The simulator's access-token lifetime (the server's session for Salesforce).
    lifetime: Duration,
    /// What `eventually` allows for one renewal to come.
    renewal: u64,
    /// The reason the credential ends in after `revoke`.
    reason: Reason,
}

impl Life {
    fn of(flavor: Flavor) -> Self {
        let (lifetime, renewal, reason) = match flavor {
            Flavor::Slack | Flavor::HubSpot | Flavor::Xero => (4, 20, Reason::RefreshTokenRevoked),
            Flavor::GoogleServiceAccount => (4, 20, Reason::InvalidGrant),
            Flavor::ClientCredentials => (60, 75, Reason::InvalidClient),
        };
        Self {
            flavor,
            lifetime: Duration::from_secs(lifetime),
            renewal,
            reason,
        }
    }

    fn refreshes(&self) -> bool {
        self.flavor.grant() == GrantType::RefreshToken
    }

    /// Registers the client (or account) at the simulator; the login Secret's first content.
    fn register(&self, sim: &OAuthServer) -> Vec<(&'static str, String)> {
        match self.flavor {
            Flavor::GoogleServiceAccount => {
                sim.register_service_account(ACCOUNT, keys::RSA_PUBLIC_PEM);
                google_login("key-1")
            }
            Flavor::ClientCredentials => {
                sim.register_client(CLIENT, SECRET);
                vec![("client_id", CLIENT.into()), ("client_secret", SECRET.into())]
            }
            _ => {
                sim.register_client(CLIENT, SECRET);
                let seed = sim.seed_refresh_token(CLIENT);
                vec![
                    ("client_id", CLIENT.into()),
                    ("client_secret", SECRET.into()),
                    ("refresh_token", seed),
                ]
            }
        }
    }

    /// The grant ends: the user revokes the app (Slack, HubSpot), the refresh token lapses after
    /// 60 days unused (Xero: the operator was off that long), the account's key is deleted
    /// (Google), the connected app's secret is revoked (Salesforce).
    fn revoke(&self, sim: &OAuthServer) {
        match self.flavor {
            Flavor::Slack | Flavor::HubSpot => sim.revoke_refresh_tokens(),
            Flavor::Xero => sim.age_refresh_tokens(Duration::from_secs(61 * 24 * 3600)),
            Flavor::GoogleServiceAccount => sim.revoke_client(ACCOUNT),
            Flavor::ClientCredentials => sim.revoke_client(CLIENT),
        }
    }

    /// What a person does: a new refresh token from a new consent, a new key (the kit has one
    /// RSA test key, so the new one differs by its id), a new client secret.
    fn fix(&self, sim: &OAuthServer) -> Vec<(&'static str, String)> {
        match self.flavor {
            Flavor::GoogleServiceAccount => {
                sim.register_service_account(ACCOUNT, keys::RSA_PUBLIC_PEM);
                google_login("key-2")
            }
            Flavor::ClientCredentials => {
                sim.register_client(CLIENT, "s3cret-2");
                vec![("client_id", CLIENT.into()), ("client_secret", "s3cret-2".into())]
            }
            _ => {
                let seed = sim.seed_refresh_token(CLIENT);
                vec![
                    ("client_id", CLIENT.into()),
                    ("client_secret", SECRET.into()),
                    ("refresh_token", seed),
                ]
            }
        }
    }
}

/// As copied from a Google JSON key file: the key's newlines as `\n` escapes.
fn google_login(key_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client_email", ACCOUNT.into()),
        ("private_key", keys::RSA_PRIVATE_PEM.replace('\n', "\\n")),
        ("private_key_id", key_id.into()),
    ]
}

async fn login(h: &Harness, data: &[(&'static str, String)]) {
    let pairs: Vec<(&str, &str)> = data.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.secret("login", &pairs).await;
}

/// The login's state Secret (found by its label), decoded.
async fn state(h: &Harness) -> Option<serde_json::Map<String, Value>> {
    let s = h
        .list("secrets")
        .await
        .into_iter()
        .find(|s| s["metadata"]["labels"]["tenantcred.dev/purpose"] == "oauth-state")?;
    let data = s["data"].as_object()?.iter().map(|(k, v)| {
        let text = String::from_utf8(tenantcred_testkit::apiserver::unb64(v.as_str().unwrap_or_default()));
        (k.clone(), json!(text.unwrap_or_default()))
    });
    Some(data.collect())
}

async fn state_refresh_token(h: &Harness) -> Option<String> {
    let kept = state(h).await?.get("refresh_token")?.as_str()?.to_owned();
    // An unset key may be written empty.
    (!kept.is_empty()).then_some(kept)
}

/// The managed Secret's token, when the simulator takes it now.
async fn current_token(h: &Harness, sim: &OAuthServer) -> Option<String> {
    h.managed_token("c").await.filter(|t| sim.is_current(t))
}

async fn life(h: Harness, flavor: Flavor) {
    let life = Life::of(flavor);
    let sim = OAuthServer::start(flavor).await;
    sim.set_access_token_lifetime(life.lifetime);
    let (provider, def) = on_the_simulator(&h, flavor);
    h.apply_cluster("apiproviders", &def).await;
    let first_login = life.register(&sim);
    login(&h, &first_login).await;
    h.create_credential(
        credential("c")
            .provider(&provider)
            .base_url(&sim.base_url)
            .oauth("login"),
    )
    .await;

    // A fresh access token: Ready, in the managed Secret, current at the server, probed there.
    eventually(20, "Ready on a current access token", async || {
        h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid)
            && current_token(&h, &sim).await.is_some_and(|t| sim.api_hits(&t) > 0)
    })
    .await;
    let first = h.managed_token("c").await.expect("a token");

    // Renewed before it expires (at 60-70% of its lifetime), and then it expires.
    eventually(life.renewal, "refreshed", async || {
        current_token(&h, &sim).await.is_some_and(|t| t != first)
    })
    .await;
    if life.lifetime < Duration::from_secs(10) {
        eventually(10, "the first access token expired", async || !sim.is_current(&first)).await;
        assert!(
            current_token(&h, &sim).await.is_some(),
            "the Secret holds a current one"
        );
    }
    assert!(
        sim.calls()
            .iter()
            .all(|c| c.grant == flavor.grant() && c.outcome == Outcome::Issued),
        "only the definition's grant, never refused: {:?}",
        sim.calls()
    );
    let seed = first_login
        .iter()
        .find(|(k, _)| *k == "refresh_token")
        .map(|(_, v)| v.clone());
    if flavor.rotates() {
        // The state holds the newest refresh token, the only one alive; the pasted one is dead.
        eventually(10, "the state keeps the newest refresh token", async || {
            let kept = state_refresh_token(&h).await;
            kept.is_some() && kept != seed && sim.live_refresh_tokens() == kept.into_iter().collect::<Vec<_>>()
        })
        .await;
    } else if life.refreshes() {
        assert_eq!(
            state_refresh_token(&h).await,
            seed,
            "a refresh token that does not rotate is kept"
        );
        assert_eq!(sim.live_refresh_tokens(), seed.clone().into_iter().collect::<Vec<_>>());
    } else {
        assert_eq!(state_refresh_token(&h).await, None, "no refresh token in this grant");
    }
    assert_eq!(
        h.seen("c").await.condition(Type::Degraded),
        holds(Status::False, Reason::AsExpected)
    );

    // The grant ends: the next renewal is refused, with the precise reason, and nothing more is
    // sent until a person changes the login.
    life.revoke(&sim);
    for _ in 0..life.renewal * 10 {
        if h.seen("c").await.is(Type::Degraded, Status::True, life.reason) {
            break;
        }
        settle(100).await;
    }
    assert!(
        h.seen("c").await.is(Type::Degraded, Status::True, life.reason),
        "not Degraded {:?}: {}\ncalls: {:#?}",
        life.reason,
        h.tac("c").await["status"],
        sim.calls()
    );
    assert_eq!(
        h.seen("c").await.condition(Type::Ready),
        holds(Status::False, life.reason)
    );
    let refused = sim.calls().len();
    assert!(
        matches!(sim.calls().last().map(|c| &c.outcome), Some(Outcome::Refused { .. })),
        "{:?}",
        sim.calls().last()
    );
    settle(1500).await;
    assert_eq!(sim.calls().len(), refused, "a refused login is not tried again");
    assert!(
        h.managed_token("c").await.is_some(),
        "the managed Secret keeps its last content"
    );

    // A person fixes the login Secret: Ready again on a current access token.
    let fixed_login = life.fix(&sim);
    login(&h, &fixed_login).await;
    eventually(life.renewal, "Ready again after the fix", async || {
        let seen = h.seen("c").await;
        seen.is(Type::Ready, Status::True, Reason::TokenValid)
            && seen.is(Type::Degraded, Status::False, Reason::AsExpected)
            && current_token(&h, &sim).await.is_some()
    })
    .await;

    no_secret_is_visible(&h, &sim, [first_login, fixed_login].concat()).await;
    h.delete_cluster("apiproviders", &provider).await;
}

/// Neither the status nor the events' texts hold a login value, a refresh token or an access
/// token; the managed Secret holds no login value and no refresh token.
async fn no_secret_is_visible(h: &Harness, sim: &OAuthServer, logins: Vec<(&'static str, String)>) {
    let mut login_secrets: Vec<String> = logins
        .into_iter()
        .filter(|(k, _)| !matches!(*k, "client_id" | "client_email" | "private_key_id"))
        .map(|(_, v)| v)
        .collect();
    login_secrets.extend(sim.calls().into_iter().filter_map(|c| c.refresh_token));
    let kept = state(h).await.unwrap_or_default();
    login_secrets.extend(kept.get("refresh_token").and_then(Value::as_str).map(str::to_owned));
    // A line of the private key, however it is encoded around it.
    login_secrets.extend(keys::RSA_PRIVATE_PEM.lines().nth(1).map(str::to_owned));
    let mut access_tokens = sim.current_access_tokens();
    access_tokens.extend(kept.get("access_token").and_then(Value::as_str).map(str::to_owned));
    access_tokens.extend(h.managed_token("c").await);

    let texts: Vec<String> = h
        .list("events")
        .await
        .iter()
        .flat_map(|e| [e["note"].to_string(), e["message"].to_string(), e["reason"].to_string()])
        .collect();
    let visible = format!("{}{}", h.tac("c").await["status"], texts.join(" "));
    for s in login_secrets.iter().chain(&access_tokens).filter(|s| !s.is_empty()) {
        assert!(
            !visible.contains(s.as_str()),
            "a secret is visible in status or events: {visible}"
        );
    }
    let managed = h.get("secrets", "c").await.expect("the managed Secret");
    let values: Vec<String> = managed["data"]
        .as_object()
        .expect("data")
        .values()
        .map(|v| {
            String::from_utf8_lossy(&tenantcred_testkit::apiserver::unb64(v.as_str().unwrap_or_default())).into_owned()
        })
        .collect();
    for s in login_secrets.iter().filter(|s| !s.is_empty()) {
        assert!(
            values.iter().all(|v| !v.contains(s.as_str())),
            "the managed Secret holds a login value or a refresh token"
        );
    }
}

async fn slack_rotates_its_refresh_token_and_reports_a_revoked_app(h: Harness) {
    life(h, Flavor::Slack).await;
}

async fn hubspot_keeps_its_refresh_token_and_reports_a_revoked_one(h: Harness) {
    life(h, Flavor::HubSpot).await;
}

async fn xero_rotates_and_reports_a_refresh_token_lapsed_after_60_days(h: Harness) {
    life(h, Flavor::Xero).await;
}

async fn a_google_service_account_signs_assertions_and_reports_a_deleted_key(h: Harness) {
    life(h, Flavor::GoogleServiceAccount).await;
}

async fn salesforce_client_credentials_without_expires_in_and_a_revoked_secret(h: Harness) {
    life(h, Flavor::ClientCredentials).await;
}

scenarios!(
    slack_rotates_its_refresh_token_and_reports_a_revoked_app,
    hubspot_keeps_its_refresh_token_and_reports_a_revoked_one,
    xero_rotates_and_reports_a_refresh_token_lapsed_after_60_days,
    a_google_service_account_signs_assertions_and_reports_a_deleted_key,
    salesforce_client_credentials_without_expires_in_and_a_revoked_secret,
);
