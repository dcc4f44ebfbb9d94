//! The test kit's OAuth simulator, proven with plain HTTP requests before the operator relies on
//! it: one test per flavor (grant, refresh, rotation, reuse, revocation, error shapes, the API's
//! answer by token state), then faults and the hanging rotation.

use std::time::Duration;

use serde_json::{Value, json};
use tenantcred_testkit::oauth_server::{AssertionFault, ErrorCode, GrantType, Outcome, Why, keys};
use tenantcred_testkit::{ClientAuth, Fault, Flavor, OAuthServer, eventually};

struct Answer {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Value,
}

fn http() -> reqwest::Client {
    tenantcred::outbound::install_crypto_provider();
    reqwest::Client::new()
}

/// RFC 6749 2.3.1: the id and secret form-urlencoded, then Base64.
fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        tenantcred_testkit::apiserver::b64(format!("{}:{}", enc(id), enc(secret)).as_bytes())
    )
}

async fn post(url: &str, form: &[(&str, &str)], authorization: Option<String>) -> Answer {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut req = http()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("the simulator answers");
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (status, content_type, retry_after) = (resp.status().as_u16(), header("content-type"), header("retry-after"));
    let text = resp.text().await.expect("a body");
    Answer {
        status,
        content_type: content_type.unwrap_or_default(),
        retry_after,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// The API's status for `token`.
async fn probe(s: &OAuthServer, token: &str) -> u16 {
    let resp = http()
        .get(s.api_url())
        .bearer_auth(token)
        .send()
        .await
        .expect("the API answers");
    resp.status().as_u16()
}

fn refresh_form<'a>(client: &'a str, secret: &'a str, refresh: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "refresh_token"),
        ("client_id", client),
        ("client_secret", secret),
        ("refresh_token", refresh),
    ]
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn last_why(s: &OAuthServer) -> Option<Why> {
    match s.calls().last().map(|c| c.outcome.clone()) {
        Some(Outcome::Refused { why, .. }) => Some(why),
        _ => None,
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[tokio::test]
async fn slack_rotates_and_answers_errors_with_200() {
    let s = OAuthServer::start(Flavor::Slack).await;
    s.register_client("123.456", "sekrit");
    let seed = s.seed_refresh_token("123.456");
    let url = s.token_url();

    let a = post(&url, &refresh_form("123.456", "sekrit", &seed), None).await;
    assert_eq!((a.status, &a.body["ok"]), (200, &json!(true)), "{}", a.body);
    let (access, next) = (str_of(&a.body, "access_token"), str_of(&a.body, "refresh_token"));
    assert!(access.starts_with("xoxe.xoxb-1-"), "{access}");
    assert!(next.starts_with("xoxe-1-") && next != seed, "{next}");
    assert_eq!(
        (&a.body["expires_in"], &a.body["token_type"]),
        (&json!(43_200), &json!("bot"))
    );
    assert_eq!(probe(&s, access).await, 200);
    assert!(s.is_current(access));

    // The presented token died: presenting it again is reuse, refused; its successor still works.
    let again = post(&url, &refresh_form("123.456", "sekrit", &seed), None).await;
    assert_eq!(
        (again.status, &again.body),
        (200, &json!({"ok": false, "error": "invalid_refresh_token"}))
    );
    assert_eq!(last_why(&s), Some(Why::ReusedRefreshToken));
    assert_eq!(s.live_refresh_tokens(), vec![next.to_owned()]);
    let b = post(&url, &refresh_form("123.456", "sekrit", next), None).await;
    assert_eq!(b.body["ok"], json!(true), "{}", b.body);
    let (access2, next2) = (str_of(&b.body, "access_token"), str_of(&b.body, "refresh_token"));

    let bad_secret = post(&url, &refresh_form("123.456", "wrong", next2), None).await;
    assert_eq!(bad_secret.body, json!({"ok": false, "error": "bad_client_secret"}));
    let unknown = post(&url, &refresh_form("999", "sekrit", next2), None).await;
    assert_eq!(unknown.body, json!({"ok": false, "error": "invalid_client_id"}));
    let form = [("grant_type", "refresh_token"), ("refresh_token", next2)];
    let basic_auth = post(&url, &form, Some(basic("123.456", "sekrit"))).await;
    assert_eq!((basic_auth.status, &basic_auth.body["ok"]), (200, &json!(false)));
    assert_eq!(last_why(&s), Some(Why::MethodNotAccepted));
    let calls = s.calls();
    let last = calls.last().expect("logged");
    assert_eq!(
        (last.auth, last.refresh_token.as_deref()),
        (ClientAuth::SecretBasic, Some(next2))
    );

    // Expired access tokens: the API says 401 (Slack's own says 200 ok:false).
    s.expire_access_tokens();
    assert_eq!(probe(&s, access2).await, 401);
    assert!(s.current_access_tokens().is_empty());

    // The user revoked the app: the live refresh token is refused.
    s.revoke_refresh_tokens();
    let revoked = post(&url, &refresh_form("123.456", "sekrit", next2), None).await;
    assert_eq!(revoked.body, json!({"ok": false, "error": "invalid_refresh_token"}));
    assert_eq!(last_why(&s), Some(Why::RevokedRefreshToken));
    assert_eq!(s.count(&GrantType::RefreshToken), 7);
    assert_eq!(s.counts_by_grant().get(&GrantType::RefreshToken), Some(&7));
}

#[tokio::test]
async fn reuse_can_revoke_the_whole_family() {
    let s = OAuthServer::start(Flavor::Slack).await;
    s.register_client("c", "s");
    s.revoke_family_on_reuse(true);
    let seed = s.seed_refresh_token("c");
    let other = s.seed_refresh_token("c");
    let a = post(&s.token_url(), &refresh_form("c", "s", &seed), None).await;
    let (access, next) = (str_of(&a.body, "access_token"), str_of(&a.body, "refresh_token"));
    assert_eq!(probe(&s, access).await, 200);

    let reuse = post(&s.token_url(), &refresh_form("c", "s", &seed), None).await;
    assert_eq!(reuse.body["error"], json!("invalid_refresh_token"));
    assert_eq!(last_why(&s), Some(Why::ReusedRefreshToken));
    // The successor and its access token died with the family; another family did not.
    let successor = post(&s.token_url(), &refresh_form("c", "s", next), None).await;
    assert_eq!(successor.body["error"], json!("invalid_refresh_token"));
    assert_eq!(last_why(&s), Some(Why::RevokedRefreshToken));
    assert_eq!(probe(&s, access).await, 401);
    assert_eq!(s.live_refresh_tokens(), vec![other]);
}

#[tokio::test]
async fn hubspot_keeps_its_refresh_token_and_answers_400() {
    let s = OAuthServer::start(Flavor::HubSpot).await;
    s.register_client("hs-client", "hs-secret");
    let seed = s.seed_refresh_token("hs-client");
    let url = s.token_url();

    let a = post(&url, &refresh_form("hs-client", "hs-secret", &seed), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        (str_of(&a.body, "refresh_token"), &a.body["expires_in"]),
        (seed.as_str(), &json!(1_800))
    );
    let access = str_of(&a.body, "access_token").to_owned();
    let b = post(&url, &refresh_form("hs-client", "hs-secret", &seed), None).await;
    assert_eq!((b.status, str_of(&b.body, "refresh_token")), (200, seed.as_str()));
    assert_ne!(str_of(&b.body, "access_token"), access);
    assert_eq!(probe(&s, &access).await, 200);

    let bad = post(&url, &refresh_form("hs-client", "hs-secret", "not-issued"), None).await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        (str_of(&bad.body, "status"), str_of(&bad.body, "error")),
        ("BAD_REFRESH_TOKEN", "invalid_grant")
    );
    assert_eq!(last_why(&s), Some(Why::UnknownRefreshToken));

    s.set_access_token_lifetime(Duration::from_secs(5));
    let short = post(&url, &refresh_form("hs-client", "hs-secret", &seed), None).await;
    assert_eq!(short.body["expires_in"], json!(5));

    s.revoke_client("hs-client");
    assert_eq!(probe(&s, &access).await, 401);
    let gone = post(&url, &refresh_form("hs-client", "hs-secret", &seed), None).await;
    assert_eq!((gone.status, str_of(&gone.body, "error")), (400, "invalid_client"));
    assert_eq!(last_why(&s), Some(Why::ClientRevoked));
    // A person fixes the login: the client registered again works with the same grant.
    s.register_client("hs-client", "hs-secret");
    let back = post(&url, &refresh_form("hs-client", "hs-secret", &seed), None).await;
    assert_eq!(back.status, 200, "{}", back.body);
}

#[tokio::test]
async fn xero_rotates_with_basic_auth_and_lapses_unused_tokens() {
    let s = OAuthServer::start(Flavor::Xero).await;
    // A secret that Basic needs form-urlencoded (RFC 6749 2.3.1).
    s.register_client("xero-app", "s:e+c/r%t");
    let seed = s.seed_refresh_token("xero-app");
    let url = s.token_url();
    let form = |rt: &str| {
        vec![
            ("grant_type".to_owned(), "refresh_token".to_owned()),
            ("refresh_token".to_owned(), rt.to_owned()),
        ]
    };
    let send = async |rt: &str, auth: Option<String>| {
        let f = form(rt);
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        post(&url, &pairs, auth).await
    };

    let a = send(&seed, Some(basic("xero-app", "s:e+c/r%t"))).await;
    assert_eq!((a.status, &a.body["expires_in"]), (200, &json!(1_800)), "{}", a.body);
    let next = str_of(&a.body, "refresh_token").to_owned();
    assert_ne!(next, seed);
    assert_eq!(probe(&s, str_of(&a.body, "access_token")).await, 200);
    assert_eq!(s.calls()[0].auth, ClientAuth::SecretBasic);

    let reused = send(&seed, Some(basic("xero-app", "s:e+c/r%t"))).await;
    assert_eq!((reused.status, &reused.body), (400, &json!({"error": "invalid_grant"})));
    // The secret sent without form-encoding is another secret.
    let raw = format!("Basic {}", tenantcred_testkit::apiserver::b64(b"xero-app:s:e+c/r%t"));
    let unencoded = send(&next, Some(raw)).await;
    assert_eq!(
        (unencoded.status, &unencoded.body),
        (400, &json!({"error": "invalid_client"}))
    );
    assert_eq!(last_why(&s), Some(Why::BadSecret));
    let as_post = post(&url, &refresh_form("xero-app", "s:e+c/r%t", &next), None).await;
    assert_eq!(
        (as_post.status, str_of(&as_post.body, "error")),
        (401, "invalid_client")
    );

    // 59 days unused: still good, and using it starts its 60 days again (it rotates anyway).
    s.age_refresh_tokens(Duration::from_secs(59 * 86_400));
    let b = send(&next, Some(basic("xero-app", "s:e+c/r%t"))).await;
    assert_eq!(b.status, 200, "{}", b.body);
    s.age_refresh_tokens(Duration::from_secs(61 * 86_400));
    let lapsed = send(str_of(&b.body, "refresh_token"), Some(basic("xero-app", "s:e+c/r%t"))).await;
    assert_eq!((lapsed.status, &lapsed.body), (400, &json!({"error": "invalid_grant"})));
    assert_eq!(last_why(&s), Some(Why::ExpiredRefreshToken));
    assert!(s.live_refresh_tokens().is_empty());
}

fn google_claims(s: &OAuthServer, iat: i64, exp: i64) -> Value {
    json!({"iss": "robot@sim-project.iam.gserviceaccount.com", "aud": s.token_url(),
        "scope": "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/drive",
        "iat": iat, "exp": exp})
}

async fn jwt_grant(s: &OAuthServer, assertion: &str) -> Answer {
    post(
        &s.token_url(),
        &[("grant_type", GrantType::JWT_BEARER), ("assertion", assertion)],
        None,
    )
    .await
}

#[tokio::test]
async fn google_service_account_verifies_the_assertion() {
    let s = OAuthServer::start(Flavor::GoogleServiceAccount).await;
    s.register_service_account("robot@sim-project.iam.gserviceaccount.com", keys::RSA_PUBLIC_PEM);
    s.expect_scopes(&[
        "https://www.googleapis.com/auth/drive",
        "https://www.googleapis.com/auth/cloud-platform",
    ]);
    let t = now();

    let good = keys::sign_rs256(&google_claims(&s, t, t + 3_600));
    let a = jwt_grant(&s, &good).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let access = str_of(&a.body, "access_token");
    assert!(access.starts_with("ya29."), "{access}");
    assert_eq!(
        (&a.body["expires_in"], &a.body["token_type"]),
        (&json!(3_599), &json!("Bearer"))
    );
    assert!(a.body.get("refresh_token").is_none());
    assert_eq!(probe(&s, access).await, 200);
    assert_eq!(s.count(&GrantType::JwtBearer), 1);

    let refused = async |assertion: &str, error: &str, fault: AssertionFault| {
        let r = jwt_grant(&s, assertion).await;
        assert_eq!(
            (r.status, str_of(&r.body, "error")),
            (400, error),
            "{fault:?}: {}",
            r.body
        );
        assert_eq!(last_why(&s), Some(Why::BadAssertion(fault)));
        r
    };
    let es = refused(
        &keys::sign_es256(&google_claims(&s, t, t + 3_600)),
        "invalid_grant",
        AssertionFault::Signature,
    )
    .await;
    assert_eq!(es.body["error_description"], json!("Invalid JWT Signature."));
    // Another payload under the good signature.
    let other = keys::sign_rs256(&google_claims(&s, t, t + 60));
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[1] = other.split('.').nth(1).expect("a payload");
    refused(&parts.join("."), "invalid_grant", AssertionFault::Signature).await;
    let mut wrong_aud = google_claims(&s, t, t + 3_600);
    wrong_aud["aud"] = json!(format!("{}/", s.token_url()));
    refused(&keys::sign_rs256(&wrong_aud), "invalid_grant", AssertionFault::Audience).await;
    refused(
        &keys::sign_rs256(&google_claims(&s, t, t + 7_200)),
        "invalid_grant",
        AssertionFault::Lifetime,
    )
    .await;
    refused(
        &keys::sign_rs256(&google_claims(&s, t - 3_000, t + 500)),
        "invalid_grant",
        AssertionFault::Lifetime,
    )
    .await;
    let mut no_scope = google_claims(&s, t, t + 3_600);
    no_scope.as_object_mut().expect("claims").remove("scope");
    refused(
        &keys::sign_rs256(&no_scope),
        "invalid_scope",
        AssertionFault::MissingScope,
    )
    .await;
    let mut stranger = google_claims(&s, t, t + 3_600);
    stranger["iss"] = json!("nobody@elsewhere.iam.gserviceaccount.com");
    let r = jwt_grant(&s, &keys::sign_rs256(&stranger)).await;
    assert_eq!((r.status, str_of(&r.body, "error")), (400, "invalid_grant"));
    let mut narrow = google_claims(&s, t, t + 3_600);
    narrow["scope"] = json!("https://www.googleapis.com/auth/drive");
    let r = jwt_grant(&s, &keys::sign_rs256(&narrow)).await;
    assert_eq!((r.status, str_of(&r.body, "error")), (400, "invalid_scope"));

    let wrong_grant = post(
        &s.token_url(),
        &[("grant_type", "refresh_token"), ("refresh_token", "x")],
        None,
    )
    .await;
    assert_eq!(str_of(&wrong_grant.body, "error"), "unsupported_grant_type");

    s.revoke_client("robot@sim-project.iam.gserviceaccount.com");
    assert_eq!(probe(&s, access).await, 401);
    let r = jwt_grant(&s, &good).await;
    assert_eq!((r.status, str_of(&r.body, "error")), (400, "invalid_grant"));
    assert_eq!(last_why(&s), Some(Why::ClientRevoked));
}

#[tokio::test]
async fn client_credentials_answers_without_expires_in() {
    let s = OAuthServer::start(Flavor::ClientCredentials).await;
    s.register_client("3MVG9sim", "cc-secret");
    let url = s.token_url();
    let grant = [("grant_type", "client_credentials")];

    let a = post(&url, &grant, Some(basic("3MVG9sim", "cc-secret"))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let access = str_of(&a.body, "access_token");
    assert!(access.starts_with("00D"), "{access}");
    assert!(a.body.get("expires_in").is_none(), "{}", a.body);
    assert_eq!(str_of(&a.body, "instance_url"), s.base_url);
    assert!(str_of(&a.body, "issued_at").parse::<i64>().is_ok(), "{}", a.body);
    assert_eq!(probe(&s, access).await, 200);

    let bad = post(&url, &grant, Some(basic("3MVG9sim", "nope"))).await;
    assert_eq!((bad.status, str_of(&bad.body, "error")), (400, "invalid_client"));
    assert!(bad.body["error_description"].is_string());
    let as_post = post(
        &url,
        &[grant[0], ("client_id", "3MVG9sim"), ("client_secret", "cc-secret")],
        None,
    )
    .await;
    assert_eq!(
        (as_post.status, str_of(&as_post.body, "error")),
        (401, "invalid_client")
    );
    assert_eq!(last_why(&s), Some(Why::MethodNotAccepted));
    let both = post(
        &url,
        &[grant[0], ("client_secret", "cc-secret")],
        Some(basic("3MVG9sim", "cc-secret")),
    )
    .await;
    assert_eq!(both.status, 401);
    assert_eq!(last_why(&s), Some(Why::SeveralMethods));

    s.expect_scopes(&["api"]);
    let scoped = post(
        &url,
        &[grant[0], ("scope", "api")],
        Some(basic("3MVG9sim", "cc-secret")),
    )
    .await;
    assert_eq!(scoped.status, 200, "{}", scoped.body);
    let unscoped = post(&url, &grant, Some(basic("3MVG9sim", "cc-secret"))).await;
    assert_eq!(
        (unscoped.status, str_of(&unscoped.body, "error")),
        (400, "invalid_scope")
    );

    s.expire_access_tokens();
    assert_eq!(probe(&s, access).await, 401);
    assert_eq!(probe(&s, "never-issued").await, 401);

    // A public client: `none`, by its id alone.
    s.accept_client_auth(&[ClientAuth::None]);
    let public = post(&url, &[grant[0], ("client_id", "3MVG9sim"), ("scope", "api")], None).await;
    assert_eq!(public.status, 200, "{}", public.body);
    assert_eq!(s.calls().last().map(|c| c.auth), Some(ClientAuth::None));
}

fn client_assertion(s: &OAuthServer, client: &str) -> Value {
    json!({"iss": client, "sub": client, "aud": s.token_url(), "iat": now(), "exp": now() + 300, "jti": "j1"})
}

#[tokio::test]
async fn private_key_jwt_client_authentication() {
    let s = OAuthServer::start(Flavor::Xero).await;
    s.accept_client_auth(&[ClientAuth::PrivateKeyJwt]);
    s.register_client_key("ec-client", keys::EC_PUBLIC_PEM);
    let seed = s.seed_refresh_token("ec-client");
    let with = async |assertion: &str, rt: &str| {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ];
        post(&s.token_url(), &form, None).await
    };
    let a = with(&keys::sign_es256(&client_assertion(&s, "ec-client")), &seed).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(s.calls()[0].auth, ClientAuth::PrivateKeyJwt);
    let next = str_of(&a.body, "refresh_token");

    let mut other_sub = client_assertion(&s, "ec-client");
    other_sub["sub"] = json!("someone-else");
    let r = with(&keys::sign_es256(&other_sub), next).await;
    assert_eq!((r.status, &r.body), (400, &json!({"error": "invalid_client"})));
    assert_eq!(last_why(&s), Some(Why::BadAssertion(AssertionFault::Subject)));
    // Signed with a key that is not the client's.
    let r = with(&keys::sign_rs256(&client_assertion(&s, "ec-client")), next).await;
    assert_eq!(
        last_why(&s),
        Some(Why::BadAssertion(AssertionFault::Signature)),
        "{}",
        r.body
    );
    let secret = post(
        &s.token_url(),
        &[("grant_type", "refresh_token"), ("refresh_token", next)],
        Some(basic("ec-client", "x")),
    )
    .await;
    assert_eq!(
        (secret.status, &secret.body),
        (401, &json!({"error": "invalid_client"}))
    );
    let b = with(&keys::sign_es256(&client_assertion(&s, "ec-client")), next).await;
    assert_eq!(b.status, 200, "{}", b.body);
}

#[tokio::test]
async fn injected_faults_answer_the_next_calls() {
    let s = OAuthServer::start(Flavor::HubSpot).await;
    s.register_client("c", "s");
    let seed = s.seed_refresh_token("c");
    let call = async || post(&s.token_url(), &refresh_form("c", "s", &seed), None).await;

    s.fail_next(1, Fault::Html);
    s.fail_next(1, Fault::Refuse(ErrorCode::InvalidScope));
    s.fail_next(1, Fault::NoExpiresIn);
    s.fail_next(1, Fault::AccessToken("has a space".into()));
    s.fail_next(1, Fault::AccessToken(String::new()));
    s.fail_next(2, Fault::Status(500));
    s.fail_next(1, Fault::RateLimited { retry_after: 30 });

    let html = call().await;
    assert_eq!(html.status, 200);
    assert!(html.content_type.starts_with("text/html"), "{}", html.content_type);
    let scope = call().await;
    assert_eq!((scope.status, str_of(&scope.body, "error")), (400, "invalid_scope"));
    let no_expiry = call().await;
    assert_eq!(no_expiry.status, 200);
    assert!(no_expiry.body.get("expires_in").is_none() && no_expiry.body["access_token"].is_string());
    assert_eq!(str_of(&call().await.body, "access_token"), "has a space");
    let empty = call().await;
    assert_eq!((empty.status, &empty.body["access_token"]), (200, &json!("")));
    assert_eq!(call().await.status, 500);
    assert_eq!(call().await.status, 500);
    let limited = call().await;
    assert_eq!((limited.status, limited.retry_after.as_deref()), (429, Some("30")));
    assert_eq!(call().await.status, 200, "the faults are used up");

    let outcomes: Vec<Outcome> = s.calls().into_iter().map(|c| c.outcome).collect();
    let injected = Outcome::Refused {
        code: ErrorCode::InvalidScope,
        why: Why::Injected,
    };
    assert_eq!(&outcomes[..3], &[Outcome::Failed, injected, Outcome::Issued]);
    assert_eq!(outcomes.len(), 9);
    assert!(!s.is_current("has a space"));
}

#[tokio::test]
async fn rotate_then_hang_rotates_and_answers_only_when_released() {
    let s = OAuthServer::start(Flavor::Slack).await;
    s.register_client("c", "s");
    let seed = s.seed_refresh_token("c");
    s.fail_next(2, Fault::RotateThenHang);

    let url = s.token_url();
    let form: Vec<(String, String)> = refresh_form("c", "s", &seed)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let call = tokio::spawn(async move {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        post(&url, &pairs, None).await
    });
    eventually(10, "the call hangs", async || s.hanging() == 1).await;
    // The server rotated: the presented token is dead, its successor alive, the caller has neither.
    let live = s.live_refresh_tokens();
    assert_eq!(live.len(), 1);
    assert_ne!(live[0], seed);
    assert!(!call.is_finished());
    s.release_hung();
    let answer = call.await.expect("the call ends");
    assert_eq!(str_of(&answer.body, "refresh_token"), live[0]);
    eventually(10, "nothing hangs", async || s.hanging() == 0).await;

    // A caller that hangs up: the server notices and stops counting it as hanging.
    let (url, next) = (s.token_url(), live[0].clone());
    let call = tokio::spawn(async move { post(&url, &refresh_form("c", "s", &next), None).await });
    eventually(10, "the second call hangs", async || s.hanging() == 1).await;
    call.abort();
    eventually(10, "the hung-up call is let go", async || s.hanging() == 0).await;
    assert_eq!(s.live_refresh_tokens().len(), 1);
    assert_ne!(s.live_refresh_tokens()[0], live[0]);
}
