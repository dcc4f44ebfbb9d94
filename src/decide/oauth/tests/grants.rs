//! Which grant is sent, and what it sends: the form, the client's authentication, assertions.

use jsonwebtoken::{DecodingKey, Validation};

use super::*;
use crate::decide::oauth::assertion::KeyProblem;
use crate::decide::oauth::request::{self, Unusable};

fn first(def: &Definition, l: &Login, s: &State) -> Result<TokenRequest, Unusable> {
    request::next(def, l, s, &[], URL, t(1_000))
}

#[test]
fn grants_are_tried_in_the_definitions_order_with_what_the_login_holds() {
    let def = definition(ProviderOAuth {
        grants: vec![GrantType::RefreshToken, GrantType::Password],
        ..spec()
    });
    let both = login(&[("username", "u"), ("password", "p"), ("refresh_token", "r0")]);
    let r = first(&def, &both, &State::default()).expect("a grant");
    assert_eq!(form_of(&r), [("grant_type", "refresh_token"), ("refresh_token", "r0")]);
    let r = request::next(&def, &both, &State::default(), &[GrantType::RefreshToken], URL, t(0)).expect("the next");
    assert_eq!(
        form_of(&r),
        [("grant_type", "password"), ("username", "u"), ("password", "p")]
    );
    let password_only = login(&[("username", "u"), ("password", "p")]);
    assert_eq!(
        first(&def, &password_only, &State::default()).expect("password").grant,
        GrantType::Password
    );
    assert_eq!(
        first(&def, &login(&[("username", "u")]), &State::default()),
        Err(Unusable::Missing {
            grant: GrantType::RefreshToken,
            key: "refresh_token".into()
        }),
        "the first grant's missing key is named"
    );
}

#[test]
fn the_refresh_token_sent_is_a_persons_new_one_else_the_states_and_never_a_retired_one() {
    let def = definition(spec());
    let l = login(&[("refresh_token", "r0")]);
    let after_rotation = State {
        refresh_token: Some(Token::new("r5")),
        seed: Some(Token::new("r0").fingerprint()),
        retired: vec![Token::new("r0").fingerprint()],
        ..State::default()
    };
    assert_eq!(
        form_of(&first(&def, &l, &after_rotation).expect("r5"))[1],
        ("refresh_token", "r5")
    );
    let new_in_login = login(&[("refresh_token", "r9")]);
    assert_eq!(
        form_of(&first(&def, &new_in_login, &after_rotation).expect("r9"))[1],
        ("refresh_token", "r9"),
        "a person's new refresh token wins over the state's"
    );
    let lost = State {
        refresh_token: None,
        ..after_rotation
    };
    assert_eq!(
        first(&def, &l, &lost),
        Err(Unusable::Reused),
        "a rotated-away token is never sent again"
    );
}

#[test]
fn client_authentication_as_the_definition_says() {
    let l = login(&[
        ("client_id", "id:1"),
        ("client_secret", "s&cret=/+"),
        ("refresh_token", "r"),
    ]);
    let post = definition(ProviderOAuth {
        client_authentication: ClientAuthentication::ClientSecretPost,
        ..spec()
    });
    let r = first(&post, &l, &State::default()).expect("post");
    assert_eq!(
        &form_of(&r)[2..],
        [("client_id", "id:1"), ("client_secret", "s&cret=/+")]
    );
    assert!(r.basic.is_none());

    let basic = definition(ProviderOAuth {
        client_authentication: ClientAuthentication::ClientSecretBasic,
        ..spec()
    });
    let r = first(&basic, &l, &State::default()).expect("basic");
    let (user, password) = r.basic.clone().expect("basic credentials");
    // RFC 6749 2.3.1: each part form-encoded before Basic's base64.
    assert_eq!((user.expose(), password.expose()), ("id%3A1", "s%26cret%3D%2F%2B"));
    assert!(
        form_of(&r).iter().all(|(k, _)| *k != "client_secret"),
        "the secret is not also in the form"
    );

    let none = definition(spec());
    let r = first(&none, &l, &State::default()).expect("none");
    assert_eq!(
        form_of(&r).last(),
        Some(&("client_id", "id:1")),
        "a public client still names itself"
    );

    assert_eq!(
        first(
            &basic,
            &login(&[("client_id", "id"), ("refresh_token", "r")]),
            &State::default()
        ),
        Err(Unusable::Missing {
            grant: GrantType::RefreshToken,
            key: "client_secret".into()
        })
    );
}

#[test]
fn scopes_audience_resource_and_static_parameters_are_sent() {
    let def = definition(ProviderOAuth {
        grants: vec![GrantType::ClientCredentials],
        client_authentication: ClientAuthentication::ClientSecretBasic,
        scopes: vec!["api".into(), "refresh_token".into()],
        audience: Some("https://api.example.com".into()),
        resource: Some("urn:r".into()),
        parameters: [("tenant".to_string(), "t1".to_string())].into(),
        ..spec()
    });
    let r = first(
        &def,
        &login(&[("client_id", "c"), ("client_secret", "s")]),
        &State::default(),
    )
    .expect("cc");
    assert_eq!(
        form_of(&r),
        [
            ("grant_type", "client_credentials"),
            ("scope", "api refresh_token"),
            ("audience", "https://api.example.com"),
            ("resource", "urn:r"),
            ("tenant", "t1")
        ]
    );
}

#[test]
fn a_single_use_field_is_sent_once() {
    let def = definition::virtuous();
    let l = login(&[("username", "u"), ("password", "p"), ("otp", "123456")]);
    let r = first(&def, &l, &State::default()).expect("password");
    assert_eq!(form_of(&r).last(), Some(&("otp", "123456")));
    assert_eq!(r.single_use, [Token::new("123456").fingerprint()]);
    let spent = State {
        spent: r.single_use.clone(),
        ..State::default()
    };
    let again = first(&def, &l, &spent).expect("password");
    assert!(form_of(&again).iter().all(|(k, _)| *k != "otp"), "never twice");
}

fn claims(jwt: &str, public: &str, alg: jsonwebtoken::Algorithm, aud: &str) -> serde_json::Value {
    let key = match alg {
        jsonwebtoken::Algorithm::ES256 => DecodingKey::from_ec_pem(public.as_bytes()),
        _ => DecodingKey::from_rsa_pem(public.as_bytes()),
    }
    .expect("a public key");
    let mut v = Validation::new(alg);
    v.set_audience(&[aud]);
    v.validate_exp = false;
    jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &v)
        .expect("a valid signature")
        .claims
}

#[test]
fn the_jwt_bearer_grant_signs_an_assertion_the_public_key_verifies() {
    let def = definition(ProviderOAuth {
        grants: vec![GrantType::JwtBearer],
        scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
        assertion: Some(AssertionSpec {
            issuer_key: Some("client_email".into()),
            scope_in_claims: true,
            ..assertion(AssertionAlgorithm::RS256)
        }),
        ..spec()
    });
    // As pasted from a JSON key file: line breaks written as \n.
    let key = RSA_KEY.replace('\n', "\\n");
    let l = login(&[
        ("client_email", "sa@p.iam.example.com"),
        ("private_key", &key),
        ("private_key_id", "k1"),
    ]);
    let r = first(&def, &l, &State::default()).expect("jwt-bearer");
    let form = form_of(&r);
    assert_eq!(form[0], ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"));
    assert_eq!(form.len(), 2, "the scope is in the claims, not the form: {form:?}");
    let c = claims(form[1].1, RSA_PUB, jsonwebtoken::Algorithm::RS256, URL);
    assert_eq!(c["iss"], "sa@p.iam.example.com");
    assert_eq!(c["aud"], URL);
    assert_eq!(c["scope"], "https://www.googleapis.com/auth/cloud-platform");
    assert_eq!(c["iat"], t(1_000).as_second());
    assert_eq!(c["exp"], t(1_000).as_second() + 3_600, "at most an hour");
    let header = jsonwebtoken::decode_header(form[1].1).expect("a header");
    assert_eq!(header.kid.as_deref(), Some("k1"));
}

#[test]
fn private_key_jwt_authenticates_the_client_with_es256() {
    let def = definition(ProviderOAuth {
        grants: vec![GrantType::ClientCredentials],
        client_authentication: ClientAuthentication::PrivateKeyJwt,
        assertion: Some(assertion(AssertionAlgorithm::ES256)),
        ..spec()
    });
    let l = login(&[("client_id", "c-1"), ("private_key", EC_KEY)]);
    let r = first(&def, &l, &State::default()).expect("cc");
    let form = form_of(&r);
    assert_eq!(form[1], ("client_id", "c-1"));
    assert_eq!(
        form[2],
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        )
    );
    let c = claims(form[3].1, EC_PUB, jsonwebtoken::Algorithm::ES256, URL);
    assert_eq!((c["iss"].as_str(), c["sub"].as_str()), (Some("c-1"), Some("c-1")));
    assert!(c["exp"].as_i64().unwrap_or(0) - c["iat"].as_i64().unwrap_or(0) <= 300);
}

#[test]
fn a_malformed_or_mismatched_key_is_named_and_nothing_is_built() {
    let def = definition(ProviderOAuth {
        grants: vec![GrantType::JwtBearer],
        assertion: Some(assertion(AssertionAlgorithm::RS256)),
        ..spec()
    });
    for bad in [
        "not a key",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        EC_KEY,
    ] {
        let l = login(&[("client_id", "c"), ("private_key", bad)]);
        assert!(
            matches!(first(&def, &l, &State::default()), Err(Unusable::Key(_))),
            "{}",
            bad.len()
        );
    }
}

#[test]
fn an_rsa_key_too_large_to_sign_cheaply_is_named_and_not_parsed() {
    // Signing runs in the reconcile, several times per pass: an 8192-bit key costs a worker
    // about 30 times a 2048-bit one, each time.
    const RSA_8192: &str = include_str!("../../../../tests/kit/fixtures/oauth/test-only-rsa8192.key.pem");
    let def = definition(ProviderOAuth {
        grants: vec![GrantType::JwtBearer],
        assertion: Some(assertion(AssertionAlgorithm::RS256)),
        ..spec()
    });
    let l = login(&[("client_id", "c"), ("private_key", RSA_8192)]);
    assert_eq!(
        first(&def, &l, &State::default()).map(|r| r.grant),
        Err(Unusable::Key(KeyProblem::TooLarge))
    );
    let fits = login(&[("client_id", "c"), ("private_key", &RSA_KEY.replace('\n', "\\n"))]);
    assert!(first(&def, &fits, &State::default()).is_ok(), "a 2048-bit key, escaped");
}

#[test]
fn a_login_with_too_many_keys_names_that_rather_than_a_missing_key() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let def = definition(ProviderOAuth {
        grants: vec![GrantType::Password],
        ..spec()
    });
    let mut data: std::collections::BTreeMap<String, ByteString> = (0..40)
        .map(|i| (format!("a{i:02}"), ByteString(b"x".to_vec())))
        .collect();
    data.insert("username".into(), ByteString(b"u".to_vec()));
    data.insert("password".into(), ByteString(b"p".to_vec()));
    let secret = Secret {
        data: Some(data),
        ..Secret::default()
    };
    let l = Login::from_secret(&secret);
    assert_eq!(
        first(&def, &l, &State::default()),
        Err(Unusable::TooManyKeys {
            key: "username".into(),
            keys: 42
        }),
        "the key is there, past the bound"
    );
}

#[test]
fn a_password_field_cannot_send_a_field_the_grant_or_the_client_authentication_sets() {
    for name in ["client_secret", "refresh_token", "client_assertion", "scope"] {
        let spec = ProviderOAuth {
            grants: vec![GrantType::Password],
            password_fields: vec![crate::crd::oauth::LoginField {
                name: name.into(),
                key: Some("otp".into()),
                single_use: true,
            }],
            ..spec()
        };
        // Sent twice otherwise (a second client_secret, a refresh_token in a password grant).
        assert!(
            crate::decide::oauth::definition::read(&spec, &hosts()).is_err(),
            "{name}"
        );
    }
}
