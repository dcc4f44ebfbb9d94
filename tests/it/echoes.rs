//! Issue 36: an endpoint that repeats what it was sent, in any encoding, never gets a secret
//! shown. Generated secrets (with `@`, space, `/`, `+`, non-ASCII) are echoed by the simulator in
//! every form of `echo::encodings`, through the operator's own code: the reconcile machine's status
//! and events for the token endpoint and for a probe (over real HTTP), and `tenantcred check`.
//! Issue 38: the same for what a defined OAuth provider sends (a client secret, a private key's
//! PEM, a signed assertion, HTTP Basic credentials) to an echoing token endpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use tenantcred::cli::{self, CheckRequest};
use tenantcred::crd::{TenantApiCredential, TenantApiCredentialStatus};
use tenantcred::decide::error_body::MediaType;
use tenantcred::decide::oauth::Answer as EndpointAnswer;
use tenantcred::decide::plan::{Settings, resolve};
use tenantcred::decide::provider::{self, Profile};
use tenantcred::decide::schedule::Jitter;
use tenantcred::decide::step::{Action, Attempt, Outcome, Reconcile, Spec, World, Written};
use tenantcred::decide::verdict::Transport;
use tenantcred::outbound::ProviderClient;
use tenantcred_testkit::{Answer, Provider, Reason, echo, local_egress};

/// Text that looks like a secret: 12 to 32 characters, some that every encoding changes.
fn secret(alphabet: &'static str) -> impl Strategy<Value = String> {
    proptest::string::string_regex(alphabet).expect("a valid pattern")
}

/// The login's user name, password, one-time code and refresh token, and a probed token (a
/// header value: visible ASCII).
fn secrets() -> impl Strategy<Value = [String; 5]> {
    (
        secret("[a-z0-9.]{6,20}@[a-z]{4,10}\\.example"),
        secret("[A-Za-z0-9@ /+=%&é€ß-]{12,32}"),
        secret("[0-9]{8,12}"),
        secret("[A-Za-z0-9@ /+=._~ü-]{12,32}"),
        secret("[A-Za-z0-9@/+=._~-]{12,32}"),
    )
        .prop_map(|(u, p, o, r, t)| [u, p, o, r, t])
}

fn credential(spec: serde_json::Value) -> TenantApiCredential {
    let mut tac = TenantApiCredential::new("c", serde_json::from_value(spec).expect("a valid spec"));
    tac.metadata.namespace = Some("ns".into());
    tac.metadata.uid = Some("uid-1".into());
    tac.metadata.generation = Some(1);
    tac
}

fn opaque(name: &str, values: &[(&str, &str)]) -> Box<Secret> {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.resource_version = Some("5".into());
    // A Secret read from the API server has a uid: a login's owns its state Secret.
    s.metadata.uid = Some(format!("uid-of-{name}"));
    s.data = Some(
        values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect::<BTreeMap<_, _>>(),
    );
    Box::new(s)
}

/// Drives one reconcile of `tac` to its end; answers what `answer` answers and the rest as a
/// shell that stores everything would. Returns every status written and every event's message.
fn reconcile(tac: &TenantApiCredential, answer: impl FnMut(&Action) -> Option<Outcome>) -> String {
    reconcile_with(tac, None, answer)
}

/// [`reconcile`], with `defined` as the ApiProvider of the credential's provider name.
fn reconcile_with(
    tac: &TenantApiCredential,
    defined: Option<Arc<Profile>>,
    mut answer: impl FnMut(&Action) -> Option<Outcome>,
) -> String {
    let settings: Result<Settings, _> = resolve(
        tac,
        &local_egress(),
        &provider::find(tac.spec.provider.as_str(), |_| defined.clone().map(Ok)),
    );
    assert!(settings.is_ok(), "the spec resolves");
    let status = TenantApiCredentialStatus::default();
    let now = jiff::Timestamp::from_second(1_800_000_000).expect("valid");
    let mut machine = Reconcile::new(World {
        meta: &tac.metadata,
        spec: Spec::Readable {
            credential: tac,
            settings: &settings,
        },
        observed: &status,
        persisted: &status,
        target: None,
        token_version: None,
        source_resource_version: None,
        acting_since: now,
        catch_up_per_second: 10.0,
        now,
        jitter: Jitter::new(0.5),
    });
    let mut shown = String::new();
    for _ in 0..32 {
        let action = machine.poll();
        let outcome = match &action {
            Action::Finish { notices, .. } => {
                notices.iter().for_each(|n| shown.push_str(&n.message));
                return shown;
            }
            Action::WriteStatus { status, .. } | Action::KeepStatus { status, .. } => {
                shown.push_str(&serde_json::to_string(status).expect("a status serializes"));
                Outcome::StatusHandled
            }
            Action::WriteSecret { .. } => Outcome::SecretWritten(Written::Stored),
            Action::RememberSourceVersion { .. } => Outcome::Remembered,
            Action::PruneSecret { .. } => Outcome::Pruned,
            Action::TakeCatchUpSlot { .. } => Outcome::CatchUpSlot(0),
            Action::ReadOAuthState { read, .. } => Outcome::OAuthStateRead {
                read: *read,
                secret: None,
            },
            Action::HoldLogin { .. } => Outcome::LoginHeld(tenantcred::decide::step::Held::AtOnce),
            Action::WriteOAuthState { .. } => {
                Outcome::OAuthStateWritten(tenantcred::decide::step::StateWritten::Stored(Some("1".into())))
            }
            Action::RecallAnswer { .. } => Outcome::Recalled(None),
            Action::AfterProbe { probing, .. } => Outcome::AfterProbe {
                probing: *probing,
                held_back: None,
            },
            Action::RestartWorkloads { .. } => Outcome::Restarted {
                notices: Vec::new(),
                wake: None,
            },
            other => answer(other).unwrap_or_else(|| panic!("unexpected {other:?}")),
        };
        machine.handle(outcome, now);
    }
    panic!("no end within 32 steps")
}

/// An echoing token endpoint refuses both grants (refresh, then password with the code).
fn oauth_shown(secrets: &[String; 5]) -> String {
    let [user, password, otp, refresh, _] = secrets;
    let tac = credential(
        serde_json::json!({"tenant": "acme", "provider": "virtuous", "oauth": {"secretRef": {"name": "login"}}}),
    );
    let login = [
        ("username", user.as_str()),
        ("password", password),
        ("otp", otp),
        ("refresh_token", refresh),
    ];
    reconcile(&tac, |a| match a {
        Action::ReadLogin { name } => Some(Outcome::LoginRead(Some(opaque(name, &login)))),
        Action::CallTokenEndpoint { request, .. } => {
            let form = &request.form;
            let raw: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form.iter().map(|(k, v)| (k.as_str(), v.expose())))
                .finish();
            let mut sent: Vec<&str> = form.iter().skip(1).map(|(_, v)| v.expose()).collect();
            sent.push(&raw);
            Some(Outcome::TokenEndpoint(Attempt::Sent(EndpointAnswer {
                transport: Transport::Answered(400),
                body: echo::body(&sent).into_bytes(),
                media_type: Some(MediaType::parse(&echo::content_type(&sent))),
                back_off_until: None,
            })))
        }
        _ => None,
    })
}

/// A probe target that echoes the token, probed over HTTP by the operator's client.
fn probe_shown(rt: &tokio::runtime::Runtime, sim: &Provider, token: &str) -> String {
    let spec = serde_json::json!({"tenant": "acme", "provider": "generic", "baseUrl": sim.base_url,
        "probe": {"path": "/probe", "failureThreshold": 1}, "credentialRef": {"name": "src"}});
    let tac = credential(spec);
    let client = ProviderClient::new(Arc::new(local_egress()), Arc::new(tenantcred::fence::Fence::unfenced()))
        .expect("a client");
    reconcile(&tac, |a| match a {
        Action::ReadSource { which, name } => Some(Outcome::SourceRead {
            which: *which,
            secret: Some(opaque(name, &[("token", token)])),
        }),
        Action::Probe {
            probing,
            settings,
            token,
            ..
        } => {
            let url = settings.probe_url();
            let probed = rt.block_on(client.probe(&url, token, settings.timeout, &settings.profile));
            Some(Outcome::Probed {
                probing: *probing,
                attempt: Attempt::Sent(Box::new(probed.expect("an unfenced client sends"))),
            })
        }
        _ => None,
    })
}

/// `tenantcred check` of an echoed token: its report, and its `--show-body` body.
fn check_shown(rt: &tokio::runtime::Runtime, sim: &Provider, token: &str) -> (String, Option<String>) {
    let req = CheckRequest {
        provider: "generic".into(),
        defined: None,
        base_url: Some(sim.base_url.clone()),
        probe_path: Some("/probe".into()),
        timeout: None,
        egress: local_egress(),
        show_body: true,
    };
    let report = rt.block_on(cli::check(&req, token));
    (report.text, report.body.map(|b| b.as_str().to_owned()))
}

#[test]
fn no_echoed_secret_reaches_a_status_an_event_or_check() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let sim = rt.block_on(Provider::start());
    sim.default_answer(Answer::Echo);
    // Each case sends real requests: a few dozen by default, `PROPTEST_CASES` for a longer hunt.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new(Config::with_cases(cases));
    let outcome = runner.run(&secrets(), |secrets| {
        let all: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let token = secrets[4].as_str();
        let oauth = oauth_shown(&secrets);
        prop_assert!(oauth.contains("refused the password grant (HTTP 400"), "{}", oauth);
        let probed = probe_shown(&rt, &sim, token);
        prop_assert!(probed.contains("HTTP 401"), "{}", probed);
        let (report, body) = check_shown(&rt, &sim, token);
        prop_assert!(report.contains("answer:       HTTP 401, "), "{}", report);
        // The body is the provider's own, shown only on request: it did echo the token.
        prop_assert!(body.is_some_and(|b| b.contains(token)));
        for shown in [oauth, probed, report] {
            let leaks = echo::leaks(&shown, &all);
            prop_assert!(leaks.is_empty(), "{:?} in {}", leaks, shown);
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// The binary: `--show-body` prints the body after a warning on stderr; without it, the output
/// holds no form of the token.
#[tokio::test]
async fn show_body_prints_the_body_only_when_asked_after_a_warning() {
    let sim = Provider::start().await;
    sim.default_answer(Answer::Echo);
    let token = "echo-token/ABC+def=0123456789";
    let run = |show: bool| {
        let url = sim.base_url.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tenantcred"));
            cmd.args([
                "check",
                "--provider",
                "generic",
                "--probe-path",
                "/probe",
                "--allow-insecure-http",
            ])
            .args(["--base-url", &url])
            .args(show.then_some("--show-body"))
            .env("TENANTCRED_TOKEN", token)
            .stdin(std::process::Stdio::null());
            let out = cmd.output().expect("run tenantcred check");
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (out.status.code(), text(&out.stdout), text(&out.stderr))
        })
    };
    let (code, out, err) = run(false).await.expect("join");
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        out.contains("--show-body prints its text") && !out.contains("body:"),
        "{out}"
    );
    assert!(echo::leaks(&format!("{out}{err}"), &[token]).is_empty(), "{out}{err}");
    let (code, out, err) = run(true).await.expect("join");
    assert_eq!(code, Some(2), "{out}{err}");
    assert_eq!(err.trim(), cli::BODY_WARNING);
    let (report, body) = out.split_once("body:\n").expect("a body follows the report");
    assert!(echo::leaks(report, &[token]).is_empty(), "{report}");
    assert!(body.contains(token), "{body}");
}

/// A token endpoint that repeats what it was sent: every form value, the raw form, and the
/// `Authorization` header (whole, its Base64, and decoded), in every form of `echo::encodings`.
/// Under `/html/` it answers 200 `text/html`, elsewhere 400 JSON. It keeps what it was sent, for
/// the test to look for.
async fn echoing_token_endpoint() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::http::{HeaderMap, Uri};
    let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = kept.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: String| {
        let keep = keep.clone();
        async move {
            let public = ["grant_type", "client_id", "client_assertion_type", "scope"];
            let mut sent: Vec<String> = url::form_urlencoded::parse(body.as_bytes())
                .filter(|(k, _)| !public.contains(&k.as_ref()))
                .map(|(_, v)| v.into_owned())
                .collect();
            // The raw form is a secret when it holds one (not `grant_type=...` alone).
            if !sent.is_empty() {
                sent.push(body);
            }
            if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
                let b64 = auth.trim_start_matches("Basic ").to_owned();
                sent.push(String::from_utf8_lossy(&tenantcred_testkit::apiserver::unb64(&b64)).into_owned());
                sent.extend([auth.to_owned(), b64]);
            }
            keep.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(sent.iter().cloned());
            let sent: Vec<&str> = sent.iter().map(String::as_str).collect();
            let (status, content_type, body) = match uri.path().starts_with("/html/") {
                true => (
                    200,
                    "text/html".to_owned(),
                    format!("<html><body><pre>{}</pre></body></html>", echo::body(&sent)),
                ),
                false => (400, echo::content_type(&sent), echo::body(&sent)),
            };
            axum::http::Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(axum::body::Body::from(body))
                .unwrap_or_default()
        }
    });
    let addr = tenantcred_testkit::serve(app).await;
    (format!("http://{addr}"), kept)
}

/// The definitions whose requests carry each kind of secret, and the private key each login holds.
fn echoed_definitions() -> Vec<(serde_json::Value, Option<&'static str>)> {
    use tenantcred_testkit::oauth_server::keys;
    let cc = "client_credentials";
    vec![
        (
            serde_json::json!({"grants": [cc], "clientAuthentication": "client_secret_basic", "answer": {"lifetime": "1h"}}),
            None,
        ),
        (
            serde_json::json!({"grants": [cc], "clientAuthentication": "client_secret_post", "answer": {"lifetime": "1h"}}),
            None,
        ),
        (
            serde_json::json!({"grants": ["urn:ietf:params:oauth:grant-type:jwt-bearer"], "scopes": ["read"],
                "assertion": {"algorithm": "ES256", "issuerKey": "client_email"}}),
            Some(keys::EC_PRIVATE_PEM),
        ),
        (
            serde_json::json!({"grants": [cc], "clientAuthentication": "private_key_jwt", "answer": {"lifetime": "1h"},
                "assertion": {"algorithm": "RS256"}}),
            Some(keys::RSA_PRIVATE_PEM),
        ),
    ]
}

#[test]
fn no_echoed_oauth_secret_reaches_a_status_an_event_or_check() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let (base_url, kept) = rt.block_on(echoing_token_endpoint());
    let client = ProviderClient::new(Arc::new(local_egress()), Arc::new(tenantcred::fence::Fence::unfenced()))
        .expect("a client");
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12);
    let mut runner = TestRunner::new(Config::with_cases(cases));
    let outcome = runner.run(&secret("[A-Za-z0-9@ /+=%&:é€ß-]{12,32}"), |client_secret| {
        for (oauth, key) in echoed_definitions() {
            for path in ["/token", "/html/token"] {
                let mut oauth = oauth.clone();
                oauth["tokenPath"] = path.into();
                let spec = serde_json::json!({"hosts": ["oauth.test"], "probe": {"path": "/api/me"}, "oauth": oauth});
                let spec = serde_json::from_value(spec).expect("a provider spec");
                let profile = Arc::new(provider::definition::read("echo", &spec).expect("accepted"));
                let mut login = vec![
                    ("client_id", "client-1"),
                    ("client_secret", client_secret.as_str()),
                    ("client_email", "robot@echo.test"),
                ];
                login.extend(key.map(|k| ("private_key", k)));
                let tac = credential(
                    serde_json::json!({"tenant": "acme", "provider": "echo", "baseUrl": base_url,
                    "oauth": {"secretRef": {"name": "login"}}}),
                );
                let operator = reconcile_with(&tac, Some(profile.clone()), |a| match a {
                    Action::ReadLogin { name } => Some(Outcome::LoginRead(Some(opaque(name, &login)))),
                    Action::CallTokenEndpoint {
                        settings, url, request, ..
                    } => {
                        let answer = rt.block_on(client.post_form(url, request, settings.timeout, &settings.profile));
                        Some(Outcome::TokenEndpoint(Attempt::Sent(
                            answer.expect("an unfenced client sends"),
                        )))
                    }
                    _ => None,
                });
                let req = CheckRequest {
                    provider: "echo".into(),
                    defined: Some(Ok(profile)),
                    base_url: Some(base_url.clone()),
                    probe_path: None,
                    timeout: None,
                    egress: local_egress(),
                    show_body: false,
                };
                let lines: String = login
                    .iter()
                    .map(|(k, v)| format!("{k}={}\n", v.replace('\n', "\\n")))
                    .collect();
                let o = cli::OAuthCheck {
                    login: cli::parse_login(&lines, "login.env").expect("a login"),
                    send_refresh_token: false,
                };
                let report = rt.block_on(cli::check_oauth(&req, &o));
                prop_assert!(report.body.is_none(), "a body only with --show-body");
                // The echoed `error` is no RFC 6749 code: a refused grant other than a refresh.
                let (reason, shown) = match path {
                    "/token" => (Reason::InvalidGrant, "(HTTP 400"),
                    _ => (Reason::TokenEndpointUnusable, "HTTP 200, text/html"),
                };
                prop_assert_eq!(report.reason, Some(reason), "{}", report.text);
                prop_assert!(operator.contains(shown), "{}", operator);
                let sent: Vec<String> = std::mem::take(&mut *kept.lock().unwrap_or_else(|e| e.into_inner()));
                prop_assert!(sent.len() >= 4, "both sent something: {:?}", sent.len());
                let mut secrets: Vec<&str> = sent.iter().map(String::as_str).collect();
                secrets.push(&client_secret);
                let pem_body: String = key
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect();
                secrets.extend(key);
                secrets.extend((!pem_body.is_empty()).then_some(pem_body.as_str()));
                for shown in [&operator, &report.text] {
                    let leaks = echo::leaks(shown, &secrets);
                    prop_assert!(leaks.is_empty(), "{:?} in {}", leaks, shown);
                }
            }
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
