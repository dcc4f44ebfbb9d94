//! The OAuth decisions as their specification: which grant, what it sends, what an answer
//! means, what is stored, and what a refusal is called.

use k8s_openapi::api::core::v1::Secret;

use super::*;
use crate::crd::oauth::{AnswerSpec, AssertionAlgorithm, AssertionSpec, ClientAuthentication, ProviderOAuth};
use crate::decide::error_body::MediaType;
use crate::decide::provider::ProviderHost;
use crate::decide::verdict::Transport;
use crate::testing::t;

mod answers;
mod grants;
mod rotation;

pub(super) const RSA_KEY: &str = include_str!("../../../../tests/kit/fixtures/oauth/test-only-rsa2048.key.pem");
pub(super) const RSA_PUB: &str = include_str!("../../../../tests/kit/fixtures/oauth/test-only-rsa2048.pub.pem");
pub(super) const EC_KEY: &str = include_str!("../../../../tests/kit/fixtures/oauth/test-only-ec-p256.key.pem");
pub(super) const EC_PUB: &str = include_str!("../../../../tests/kit/fixtures/oauth/test-only-ec-p256.pub.pem");

pub(super) const URL: &str = "https://auth.example.com/oauth/token";

fn hosts() -> Vec<ProviderHost> {
    vec![ProviderHost {
        name: "auth.example.com".into(),
        port: 443,
    }]
}

/// A definition from its YAML-like spec (as an admin writes it), read as the operator reads it.
pub(super) fn definition(spec: ProviderOAuth) -> Definition {
    definition::read(&spec, &hosts()).expect("the definition reads")
}

pub(super) fn spec() -> ProviderOAuth {
    ProviderOAuth {
        token_path: None,
        token_url: Some(URL.into()),
        grants: vec![GrantType::RefreshToken],
        client_authentication: ClientAuthentication::None,
        scopes: Vec::new(),
        audience: None,
        resource: None,
        parameters: Default::default(),
        password_fields: Vec::new(),
        code_required_status: None,
        assertion: None,
        answer: AnswerSpec::default(),
        refresh_token_idle_lifetime: None,
    }
}

pub(super) fn assertion(algorithm: AssertionAlgorithm) -> AssertionSpec {
    AssertionSpec {
        algorithm,
        issuer_key: None,
        subject_key: None,
        audience: None,
        lifetime: None,
        scope_in_claims: false,
    }
}

pub(super) fn login(pairs: &[(&str, &str)]) -> Login {
    Login::from_pairs(pairs.iter().copied())
}

pub(super) fn answer(code: u16, body: &str) -> Answer {
    Answer {
        transport: Transport::Answered(code),
        body: body.as_bytes().to_vec(),
        media_type: Some(MediaType::Json),
        back_off_until: None,
    }
}

pub(super) fn form_of(r: &TokenRequest) -> Vec<(&str, &str)> {
    r.form.iter().map(|(k, v)| (k.as_str(), v.expose())).collect()
}

#[test]
fn virtuous_is_a_definition_of_the_same_shape() {
    let v = definition::virtuous();
    assert_eq!(v.endpoint, definition::Endpoint::Path("/Token".into()));
    assert_eq!(v.grants, [GrantType::RefreshToken, GrantType::Password]);
    assert_eq!(v.code_required_status, Some(202));
    assert_eq!(v.answer, definition::default_answer());
    assert_eq!(
        definition::read(
            &ProviderOAuth {
                token_path: Some("/Token".into()),
                token_url: None,
                grants: vec![GrantType::RefreshToken, GrantType::Password],
                password_fields: vec![crate::crd::oauth::LoginField {
                    name: "otp".into(),
                    key: None,
                    single_use: true
                }],
                code_required_status: Some(202),
                ..spec()
            },
            &hosts()
        ),
        Ok(v),
        "the built-in is what an ApiProvider would say"
    );
}

#[test]
fn definitions_the_schema_may_miss_are_refused_with_the_field() {
    let refused = |s: ProviderOAuth| definition::read(&s, &hosts()).expect_err("refused");
    assert!(
        refused(ProviderOAuth {
            token_url: Some("https://elsewhere.example.org/token".into()),
            ..spec()
        })
        .contains("not one of hosts")
    );
    assert!(
        refused(ProviderOAuth {
            token_url: Some("http://auth.example.com/token".into()),
            ..spec()
        })
        .contains("https")
    );
    assert!(
        refused(ProviderOAuth {
            token_url: Some("https://user:pw@auth.example.com/token".into()),
            ..spec()
        })
        .contains("user name")
    );
    assert!(
        refused(ProviderOAuth {
            token_path: Some("/t".into()),
            ..spec()
        })
        .contains("exactly one")
    );
    assert!(
        refused(ProviderOAuth {
            grants: vec![GrantType::JwtBearer],
            ..spec()
        })
        .contains("assertion")
    );
    assert!(
        refused(ProviderOAuth {
            parameters: [("client_secret".to_string(), "x".to_string())].into(),
            ..spec()
        })
        .contains("client_secret")
    );
    assert!(
        refused(ProviderOAuth {
            grants: vec![GrantType::Password, GrantType::Password],
            ..spec()
        })
        .contains("twice")
    );
    assert!(
        refused(ProviderOAuth {
            token_url: Some("https://auth.example.com/t\r\nX: y".into()),
            ..spec()
        })
        .contains("control")
    );
}

#[test]
fn the_state_round_trips_through_its_secret() {
    let s = State {
        refresh_token: Some(Token::new("r2")),
        refresh_expires_at: Some(t(900)),
        access_token: Some(Token::new("a2")),
        expires_at: Some(t(600)),
        refresh_at: Some(t(400)),
        spent: vec![Token::new("123456").fingerprint()],
        seed: Some(Token::new("r0").fingerprint()),
        in_flight: Some(Token::new("r1").fingerprint()),
        retired: vec![Token::new("r0").fingerprint(), Token::new("r1").fingerprint()],
        refused: Some((Token::new("l").fingerprint(), Reason::RefreshTokenRevoked)),
        resource_version: None,
    };
    let secret = Secret {
        data: Some(s.to_data()),
        ..Secret::default()
    };
    assert_eq!(State::from_secret(&secret), s);
    let name = state_secret_name("xero", "login");
    assert!(name.starts_with("tenantcred-oauth-") && name.len() == "tenantcred-oauth-".len() + 12);
    assert_ne!(
        name,
        state_secret_name("hubspot", "login"),
        "one state per provider and login"
    );
    let written = state_secret(&name, "login", Some("uid-1"), "xero", &s).expect("a login with a uid");
    let owner = &written.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Secret", "login"),
        "deleted with the login"
    );
    assert!(state_secret(&name, "login", None, "xero", &s).is_none());
}

/// An apply removes only the keys an earlier apply set: a mark the create wrote is cleared by
/// writing its key empty, so every key is always written, and an empty one reads as unset.
#[test]
fn every_state_key_is_written_so_an_apply_clears_what_the_create_set() {
    let marked = State {
        refresh_token: Some(Token::new("r1")),
        in_flight: Some(Token::new("r1").fingerprint()),
        refused: Some((Token::new("l").fingerprint(), Reason::RefreshTokenLost)),
        ..State::default()
    };
    let cleared = State {
        refresh_token: Some(Token::new("r2")),
        ..State::default()
    };
    let (before, after) = (marked.to_data(), cleared.to_data());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the same keys, set or not"
    );
    assert_eq!(after["in_flight"].0, b"");
    assert_eq!(after["refused"].0, b"");
    let read = State::from_secret(&Secret {
        data: Some(after),
        ..Secret::default()
    });
    assert_eq!(read, cleared);
}

#[test]
fn a_state_written_before_logins_were_shared_still_reads() {
    let secret = Secret {
        data: Some(
            [
                ("refresh_token".to_string(), k8s_openapi::ByteString(b"r1".to_vec())),
                (
                    "otp_used".to_string(),
                    k8s_openapi::ByteString(Token::new("9").fingerprint().to_string().into_bytes()),
                ),
            ]
            .into(),
        ),
        ..Secret::default()
    };
    let s = State::from_secret(&secret);
    assert_eq!(s.refresh_token, Some(Token::new("r1")));
    assert_eq!(s.spent, [Token::new("9").fingerprint()]);
}

#[test]
fn the_budget_account_is_the_namespace_and_who_signs_in() {
    let a = |ns: &str, pairs: &[(&str, &str)]| account(ns, &login(pairs));
    assert_eq!(
        a("ns", &[("username", "u"), ("password", "1")]),
        a("ns", &[("username", "u"), ("password", "2")])
    );
    assert_ne!(a("ns", &[("username", "u")]), a("other", &[("username", "u")]));
    assert_ne!(a("ns", &[("client_id", "c1")]), a("ns", &[("client_id", "c2")]));
}
