//! Issue 12: no bytes a tenant or a provider can send make the operator panic. Every parser of
//! outside input is fed arbitrary and near-valid input; the case count (not a clock) bounds the
//! run, so it costs the same on every machine (`PROPTEST_CASES` raises it for a longer hunt).

use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;

use tenantcred::decide::error_body::{BodySummary, MediaType};
use tenantcred::decide::oauth::{self, Answer};
use tenantcred::decide::provider::TokenFormat;
use tenantcred::decide::token::{self, MAX_TOKEN_BYTES};
use tenantcred::decide::verdict::{self, Transport};
use tenantcred_testkit::fixtures::b64url;

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("valid")
}

/// The built-in formats, and a defined one with a pattern and a smaller bound.
fn formats() -> Vec<TokenFormat> {
    let mut all: Vec<TokenFormat> = ["raise", "charitystack", "virtuous"]
        .iter()
        .filter_map(|n| tenantcred::decide::provider::builtin::get(n))
        .map(|p| p.token_format.clone())
        .collect();
    all.push(TokenFormat {
        pattern: tenantcred::decide::provider::TokenPattern::compile("(ghp|gho)_[A-Za-z0-9]{4,40}").ok(),
        max_bytes: 64,
        ..TokenFormat::opaque("github")
    });
    all
}

/// Text that looks like a JWT: three dot-separated parts of base64url-ish bytes.
fn jwt_like() -> impl Strategy<Value = String> {
    (
        "[A-Za-z0-9_=-]{0,40}",
        prop::collection::vec(any::<u8>(), 0..200),
        "[A-Za-z0-9_-]{0,20}",
    )
        .prop_map(|(h, claims, sig)| format!("eyJ{h}.{}.{sig}", b64url(&claims)))
}

/// Claims JSON with hostile values where `exp`/`nbf` belong.
fn jwt_with_claims() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "\"[^\"\\\\]{0,20}\"",
        Just("null".to_owned()),
        Just("1e400".to_owned()),
        Just("[1,2]".to_owned()),
    ];
    (value.clone(), value).prop_map(|(exp, nbf)| {
        let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = b64url(format!(r#"{{"exp":{exp},"nbf":{nbf}}}"#).as_bytes());
        format!("{header}.{claims}.c2ln")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn token_checks_never_panic(raw in prop_oneof![any::<String>(), jwt_like(), jwt_with_claims()]) {
        for format in formats() {
            if let Ok((t, lifetime)) = token::check(&raw, &format) {
                prop_assert!(t.expose().len() <= MAX_TOKEN_BYTES.min(format.max_bytes));
                let _ = lifetime.expired(None, now());
            }
        }
    }

    #[test]
    fn rate_limit_and_retry_after_headers_never_panic(
        limit in any::<String>(), remaining in "[0-9 ]{0,25}", reset in prop_oneof![any::<String>(), "[0-9]{1,25}"],
        retry in prop_oneof![any::<String>(), "[0-9]{1,25}", Just("Wed, 21 Oct 2015 07:28:00 GMT".to_owned())],
    ) {
        use tenantcred::decide::provider::ResetUnit;
        for unit in [ResetUnit::Auto, ResetUnit::Seconds, ResetUnit::EpochSeconds] {
            let r = verdict::parse_rate_limit(Some(&limit), Some(&remaining), Some(&reset), unit, now());
            let _ = r.is_empty();
        }
        let _ = verdict::parse_retry_after(&retry, now());
    }

    #[test]
    fn error_bodies_never_panic_and_stay_short(status in 100u16..600, content_type in any::<String>(), body in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        "\\{\"(error|message|title)\":\"[^\"]{0,400}\"\\}".prop_map(String::into_bytes),
    ]) {
        let shown = BodySummary::of(status, Some(MediaType::parse(&content_type)), &body).to_string();
        prop_assert!(shown.len() <= 120 && shown.is_ascii(), "{}", shown);
    }

    #[test]
    fn token_endpoint_answers_never_panic(status in 100u16..600, body in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..1024),
        (prop_oneof![any::<String>(), "[a-z]{8000,9000}"], prop_oneof![any::<i64>().prop_map(|n| n.to_string()), any::<String>().prop_map(|s| format!("{s:?}")), Just("1e308".to_owned())])
            .prop_map(|(t, e)| format!(r#"{{"access_token":{t:?},"refresh_token":"r","expires_in":{e}}}"#).into_bytes()),
    ]) {
        let answer = Answer { transport: Transport::Answered(status), body, media_type: None, back_off_until: None };
        let def = oauth::definition::virtuous();
        let format = tenantcred::decide::provider::TokenFormat::opaque("virtuous");
        if let oauth::Outcome::Issued { expires_in, access_token, refresh_token, .. } = oauth::answer::interpret(&def, &format, &answer, jiff::Timestamp::UNIX_EPOCH) {
            prop_assert!(expires_in >= Duration::from_secs(1));
            prop_assert!(access_token.expose().len() <= MAX_TOKEN_BYTES);
            let _ = refresh_token;
        }
    }

    #[test]
    fn durations_and_host_patterns_never_panic(s in prop_oneof![any::<String>(), "[0-9.]{1,30}(ns|us|ms|s|m|h)", "[a-z0-9*.:/\\[\\]-]{0,40}"]) {
        let _ = tenantcred::decide::duration::parse(&s);
        let _ = s.parse::<tenantcred::decide::egress::HostPattern>();
    }

    #[test]
    fn check_reads_stdin_within_bounds(input in prop::collection::vec(any::<u8>(), 0..(MAX_TOKEN_BYTES + 64))) {
        match tenantcred::cli::read_token(input.as_slice()) {
            Ok(text) => prop_assert!(text.len() <= MAX_TOKEN_BYTES + 2),
            Err(why) => prop_assert!(!why.contains('\n')),
        }
    }
}
