//! What an answer means, read with the definition's field names; nothing of it quoted.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::crd::oauth::{ErrorCode, SuccessRule};
use crate::decide::error_body::OAuthError;
use crate::decide::oauth::answer::{Unusable, interpret};
use crate::decide::provider::TokenFormat;

fn opaque() -> TokenFormat {
    TokenFormat::opaque("p")
}

fn slack() -> Definition {
    definition(ProviderOAuth {
        answer: AnswerSpec {
            success: Some(SuccessRule {
                field: "ok".into(),
                equals: "true".into(),
            }),
            error_codes: BTreeMap::from([
                ("invalid_refresh_token".to_string(), ErrorCode::InvalidGrant),
                ("bad_client_secret".to_string(), ErrorCode::InvalidClient),
            ]),
            ..AnswerSpec::default()
        },
        ..spec()
    })
}

#[test]
fn an_rfc_6749_answer_is_issued() {
    let ok = answer(
        200,
        r#"{"access_token":"a1","token_type":"bearer","expires_in":3599,"refresh_token":"r2","refresh_token_expires_in":"86400"}"#,
    );
    assert_eq!(
        interpret(&definition(spec()), &opaque(), &ok, t(0)),
        Outcome::Issued {
            access_token: Token::new("a1"),
            refresh_token: Some(Token::new("r2")),
            expires_in: Duration::from_secs(3599),
            refresh_expires_in: Some(Duration::from_secs(86_400)),
        }
    );
}

#[test]
fn errors_as_http_200_follow_the_success_rule_and_map_the_servers_codes() {
    let def = slack();
    let ok = answer(
        200,
        r#"{"ok":true,"access_token":"xoxe.xoxb-1","refresh_token":"xoxe-1-b","expires_in":43200}"#,
    );
    assert!(matches!(interpret(&def, &opaque(), &ok, t(0)), Outcome::Issued { .. }));
    let refused = answer(200, r#"{"ok":false,"error":"invalid_refresh_token"}"#);
    let Outcome::Refused(summary) = interpret(&def, &opaque(), &refused, t(0)) else {
        panic!("ok:false is a refusal");
    };
    assert_eq!(
        summary.oauth_error,
        Some(OAuthError::InvalidGrant),
        "mapped through errorCodes"
    );
    assert!(
        !summary.to_string().contains("invalid_refresh_token"),
        "the server's own code is not quoted"
    );
    let client = answer(200, r#"{"ok":false,"error":"bad_client_secret"}"#);
    let Outcome::Refused(summary) = interpret(&def, &opaque(), &client, t(0)) else {
        panic!("refused");
    };
    assert_eq!(summary.oauth_error, Some(OAuthError::InvalidClient));
    let unknown = answer(200, r#"{"ok":false,"error":"p@ssw0rd-echo"}"#);
    let Outcome::Refused(summary) = interpret(&def, &opaque(), &unknown, t(0)) else {
        panic!("refused");
    };
    assert_eq!(summary.oauth_error, Some(OAuthError::Other));
    assert!(!summary.to_string().contains("p@ss"));
}

#[test]
fn four_hundreds_are_refusals_with_their_code() {
    for (code, want) in [
        ("invalid_client", OAuthError::InvalidClient),
        ("invalid_grant", OAuthError::InvalidGrant),
        ("invalid_scope", OAuthError::InvalidScope),
    ] {
        let a = answer(
            400,
            &format!(r#"{{"error":"{code}","error_description":"echo of p&ss"}}"#),
        );
        let Outcome::Refused(s) = interpret(&definition(spec()), &opaque(), &a, t(0)) else {
            panic!("400 is a refusal");
        };
        assert_eq!(s.oauth_error, Some(want));
        assert!(!s.to_string().contains("p&ss"), "{s}");
    }
}

#[test]
fn unusable_successes_are_named() {
    let def = definition(spec());
    let mut html = answer(200, "<html><body>Sign in</body></html>");
    html.media_type = Some(MediaType::Html);
    assert!(matches!(
        interpret(&def, &opaque(), &html, t(0)),
        Outcome::Unusable(Unusable::NotJson(s)) if s.media_type == Some(MediaType::Html)
    ));
    assert_eq!(
        interpret(&def, &opaque(), &answer(200, r#"{"token":"a"}"#), t(0)),
        Outcome::Unusable(Unusable::NoAccessToken {
            field: "access_token".into()
        })
    );
    assert_eq!(
        interpret(&def, &opaque(), &answer(200, r#"{"access_token":"a"}"#), t(0)),
        Outcome::Unusable(Unusable::MissingExpiry {
            field: "expires_in".into()
        })
    );
    let spaced = answer(200, r#"{"access_token":"a b","expires_in":60}"#);
    assert!(matches!(
        interpret(&def, &opaque(), &spaced, t(0)),
        Outcome::Unusable(Unusable::BadAccessToken(_))
    ));
    let prefixed = TokenFormat {
        prefix: Some("xoxe.".into()),
        ..opaque()
    };
    assert!(matches!(
        interpret(
            &def,
            &prefixed,
            &answer(200, r#"{"access_token":"a","expires_in":60}"#),
            t(0)
        ),
        Outcome::Unusable(Unusable::BadAccessToken(_))
    ));
}

#[test]
fn a_declared_lifetime_or_an_absolute_expiry_stands_in_for_expires_in() {
    let declared = definition(ProviderOAuth {
        answer: AnswerSpec {
            lifetime: Some("2h".into()),
            ..AnswerSpec::default()
        },
        ..spec()
    });
    assert!(matches!(
        interpret(&declared, &opaque(), &answer(200, r#"{"access_token":"00Dx","instance_url":"u"}"#), t(0)),
        Outcome::Issued { expires_in, .. } if expires_in == Duration::from_secs(7200)
    ));
    let absolute = definition(ProviderOAuth {
        answer: AnswerSpec {
            expires_at: Some("expires_at".into()),
            ..AnswerSpec::default()
        },
        ..spec()
    });
    let a = answer(200, &format!(r#"{{"access_token":"a","expires_at":"{}"}}"#, t(600)));
    assert!(matches!(
        interpret(&absolute, &opaque(), &a, t(0)),
        Outcome::Issued { expires_in, .. } if expires_in == Duration::from_secs(600)
    ));
    let unix = answer(
        200,
        &format!(r#"{{"access_token":"a","expires_at":{}}}"#, t(1200).as_second()),
    );
    assert!(matches!(
        interpret(&absolute, &opaque(), &unix, t(600)),
        Outcome::Issued { expires_in, .. } if expires_in == Duration::from_secs(600)
    ));
}

#[test]
fn the_code_required_status_transport_failures_and_429() {
    let v = definition::virtuous();
    assert_eq!(interpret(&v, &opaque(), &answer(202, ""), t(0)), Outcome::CodeRequired);
    assert!(matches!(
        interpret(&v, &opaque(), &answer(429, ""), t(0)),
        Outcome::RateLimited(_)
    ));
    assert!(matches!(
        interpret(&v, &opaque(), &answer(503, ""), t(0)),
        Outcome::Unavailable(_)
    ));
    assert!(
        matches!(
            interpret(&definition(spec()), &opaque(), &answer(202, "{}"), t(0)),
            Outcome::Unavailable(_)
        ),
        "202 means a code only where the definition says so"
    );
}

#[test]
fn only_a_success_hands_over_a_rotated_refresh_token() {
    use crate::decide::oauth::answer::rotated_in;
    let def = slack();
    let no_expiry = answer(200, r#"{"ok":true,"access_token":"a b","refresh_token":"r2"}"#);
    assert_eq!(rotated_in(&def, &no_expiry), Some(Token::new("r2")));
    let refused = answer(200, r#"{"ok":false,"refresh_token":"r2"}"#);
    assert_eq!(rotated_in(&def, &refused), None, "the success rule says it failed");
    let error = answer(400, r#"{"ok":true,"refresh_token":"r2"}"#);
    assert_eq!(rotated_in(&def, &error), None, "not HTTP 200");
    let huge = answer(200, &format!(r#"{{"ok":true,"refresh_token":"{}"}}"#, "r".repeat(9000)));
    assert_eq!(rotated_in(&def, &huge), None, "over the size bound");
}

#[test]
fn a_success_rule_that_misses_a_token_is_the_definitions_fault_not_a_refusal() {
    use crate::decide::oauth::answer::rotated_in;
    let def = slack();
    // The admin wrote equals "true"; this server says "yes". It issued (and rotated) anyway.
    let issued = answer(
        200,
        r#"{"ok":"yes","access_token":"xoxe.xoxb-1","refresh_token":"xoxe-1-b","expires_in":43200}"#,
    );
    assert_eq!(
        interpret(&def, &opaque(), &issued, t(0)),
        Outcome::Unusable(Unusable::SuccessRuleUnmet { field: "ok".into() }),
        "not stored as a refusal of the login, which a person would then replace in vain"
    );
    assert_eq!(rotated_in(&def, &issued), Some(Token::new("xoxe-1-b")));
}

/// What `tenantcred check --show-body` may print: only a body that holds no token. Every answer
/// that reads as holding one (issued, or a success that could not be used) is never shown.
#[test]
fn only_an_answer_that_holds_no_token_may_be_shown() {
    let def = definition(spec());
    let read = |status: u16, body: &str| interpret(&def, &opaque(), &answer(status, body), t(0));
    let issued = read(200, r#"{"access_token":"a1","expires_in":60}"#);
    let no_expiry = read(200, r#"{"access_token":"a1"}"#);
    let bad_token = read(200, r#"{"access_token":"a b","expires_in":60}"#);
    let no_token = read(200, r#"{"token":"a1"}"#);
    for held in [&issued, &no_expiry, &bad_token, &no_token] {
        assert!(!held.holds_no_token(), "{held:?}");
    }
    let mut html = answer(200, "<html>Sign in</html>");
    html.media_type = Some(MediaType::Html);
    let page = interpret(&def, &opaque(), &html, t(0));
    let refused = read(400, r#"{"error":"invalid_grant"}"#);
    for free in [&page, &refused] {
        assert!(free.holds_no_token(), "{free:?}");
    }
}

/// A cut body is no answer only where the body is the answer.
#[test]
fn only_a_success_or_a_refusal_needs_its_body() {
    use crate::decide::oauth::answer::body_needed;
    for status in [200, 400, 401, 403] {
        assert!(body_needed(status), "{status}");
    }
    for status in [202, 429, 500, 502, 503] {
        assert!(!body_needed(status), "{status}");
    }
}
