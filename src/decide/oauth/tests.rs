use k8s_openapi::api::core::v1::Secret;

use super::*;

use crate::testing::t;

fn login(otp: Option<&str>) -> Login {
    Login {
        username: Some(Token::new("dev@example.org")),
        password: Some(Token::new("p&ss=word")),
        otp: otp.map(Token::new),
        refresh_token: None,
    }
}

fn answer(code: u16, body: &str) -> Answer {
    Answer {
        transport: Transport::Answered(code),
        body: body.as_bytes().to_vec(),
        media_type: Some(crate::decide::error_body::MediaType::Json),
        back_off_until: None,
    }
}

#[test]
fn grant_choice() {
    let none = State::default();
    assert_eq!(
        choose(&login(None), &none, false),
        Ok(Grant::Password { with_otp: false })
    );
    assert_eq!(
        choose(&login(Some("123456")), &none, false),
        Ok(Grant::Password { with_otp: true })
    );
    let with_refresh = State {
        refresh_token: Some(Token::new("r1")),
        ..State::default()
    };
    assert_eq!(choose(&login(None), &with_refresh, false), Ok(Grant::Refresh));
    assert_eq!(
        choose(&login(None), &with_refresh, true),
        Ok(Grant::Password { with_otp: false }),
        "falls back"
    );
    assert_eq!(
        choose(&Login::default(), &with_refresh, true),
        Err(Unusable::NoUsername)
    );
    let no_password = Login {
        password: None,
        ..login(None)
    };
    assert_eq!(choose(&no_password, &with_refresh, true), Err(Unusable::NoCredentials));
    let spent = State {
        otp_used: Some(Token::new("123456").fingerprint()),
        ..State::default()
    };
    assert_eq!(
        choose(&login(Some("123456")), &spent, false),
        Ok(Grant::Password { with_otp: false }),
        "a code is used once"
    );
}

#[test]
fn forms_follow_the_protocol() {
    let f = form(
        Grant::Password { with_otp: true },
        &login(Some("42")),
        &State::default(),
    );
    let keys: Vec<_> = f.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["grant_type", "username", "password", "otp"]);
    let r = form(
        Grant::Refresh,
        &login(None),
        &State {
            refresh_token: Some(Token::new("r1")),
            ..State::default()
        },
    );
    assert_eq!(
        r,
        vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", "r1".to_string())
        ]
    );
}

#[test]
fn answers_are_interpreted() {
    let ok = answer(
        200,
        r#"{"access_token":"a1","token_type":"bearer","expires_in":3599,"refresh_token":"r2"}"#,
    );
    assert_eq!(
        interpret(&ok),
        Outcome::Issued {
            access_token: Token::new("a1"),
            refresh_token: Some(Token::new("r2")),
            expires_in: Duration::from_secs(3599)
        }
    );
    assert_eq!(interpret(&answer(202, "")), Outcome::OtpRequired);
    let refused = r#"{"error":"invalid_grant","error_description":"The user name or password is incorrect."}"#;
    let Outcome::Rejected(summary) = interpret(&answer(400, refused)) else {
        panic!("a 400 is a refusal");
    };
    assert_eq!(
        summary.oauth_error,
        Some(crate::decide::error_body::OAuthError::InvalidGrant)
    );
    assert_eq!((summary.status, summary.len), (400, refused.len()));
    assert!(!summary.to_string().contains("incorrect"), "{summary}");
    assert!(matches!(interpret(&answer(429, "")), Outcome::RateLimited(_)));
    assert!(matches!(interpret(&answer(503, "")), Outcome::Unavailable(_)));
    assert!(matches!(interpret(&answer(200, "not json")), Outcome::Unavailable(_)));
}

#[test]
fn state_keeps_the_newest_refresh_token_and_round_trips() {
    let prev = State {
        refresh_token: Some(Token::new("r1")),
        ..State::default()
    };
    let s = after_issue(
        &prev,
        &login(None),
        Grant::Refresh,
        Some(Token::new("r2")),
        Duration::from_secs(3600),
        t(0),
        Jitter::new(0.5),
    );
    assert_eq!(s.refresh_token, Some(Token::new("r2")));
    assert_eq!(s.expires_at, Some(t(3600)));
    assert_eq!(s.refresh_at, Some(t(2340)), "65% of the lifetime");
    let kept = after_issue(
        &prev,
        &login(None),
        Grant::Refresh,
        None,
        Duration::from_secs(3600),
        t(0),
        Jitter::new(0.5),
    );
    assert_eq!(kept.refresh_token, Some(Token::new("r1")), "kept when none came back");
    let with_otp = after_issue(
        &State::default(),
        &login(Some("99")),
        Grant::Password { with_otp: true },
        None,
        Duration::from_secs(60),
        t(0),
        Jitter::new(0.0),
    );
    assert_eq!(with_otp.otp_used, Some(Token::new("99").fingerprint()));
    let secret = Secret {
        data: Some(s.to_data()),
        ..Secret::default()
    };
    assert_eq!(State::from_secret(&secret), s);
}

#[test]
fn renews_when_due_or_when_a_fresh_code_answers_a_two_factor_request() {
    let state = State {
        refresh_at: Some(t(100)),
        expires_at: Some(t(200)),
        ..State::default()
    };
    assert_eq!(
        renew(&login(None), &state, false, true, t(50)),
        Renew::Keep {
            refresh_at: Some(t(100))
        }
    );
    assert_eq!(renew(&login(None), &state, false, true, t(100)), Renew::Now, "due");
    assert_eq!(
        renew(&login(None), &state, false, false, t(50)),
        Renew::Now,
        "nothing in use"
    );
    assert_eq!(
        renew(&login(None), &state, true, true, t(50)),
        Renew::Keep {
            refresh_at: Some(t(100))
        }
    );
    assert_eq!(renew(&login(None), &state, true, false, t(50)), Renew::AwaitOtp);
    assert_eq!(
        renew(&login(Some("123456")), &state, true, true, t(50)),
        Renew::Now,
        "a fresh code"
    );
    let spent = State {
        otp_used: Some(Token::new("123456").fingerprint()),
        ..state
    };
    assert_eq!(
        renew(&login(Some("123456")), &spent, true, false, t(50)),
        Renew::AwaitOtp
    );
}

#[test]
fn answers_become_next_steps() {
    let (l, s) = (login(Some("123456")), State::default());
    let summary = crate::decide::error_body::BodySummary::of(400, None, br#"{"error":"invalid_grant"}"#);
    let refused = || Outcome::Rejected(summary);
    let j = Jitter::new(0.0);
    assert_eq!(
        next(Grant::Refresh, refused(), false, &l, &s, t(0), j),
        Next::SignInAgain
    );
    assert_eq!(
        next(Grant::Refresh, refused(), true, &l, &s, t(0), j),
        Next::Refused(summary)
    );
    let Next::OtpRequired { spent: Some(spent) } = next(
        Grant::Password { with_otp: true },
        Outcome::OtpRequired,
        false,
        &l,
        &s,
        t(0),
        j,
    ) else {
        panic!("a code that did not work is spent");
    };
    assert_eq!(spent.otp_used, Some(Token::new("123456").fingerprint()));
    assert_eq!(
        next(
            Grant::Password { with_otp: false },
            Outcome::OtpRequired,
            false,
            &l,
            &s,
            t(0),
            j
        ),
        Next::OtpRequired { spent: None }
    );
    assert_eq!(
        next(
            Grant::Refresh,
            Outcome::RateLimited(Some(t(30))),
            false,
            &l,
            &s,
            t(0),
            j
        ),
        Next::BackOff(t(30))
    );
    assert!(matches!(
        next(Grant::Refresh, Outcome::Unavailable("x".into()), false, &l, &s, t(0), j),
        Next::Retry(at) if at > t(0)
    ));
}
