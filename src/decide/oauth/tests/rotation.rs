//! Rotation: when to call, what is stored after an answer, the marks that make a crash safe,
//! and what a refusal is called.

use std::time::Duration;

use super::*;
use crate::decide::error_body::BodySummary;

fn rotating() -> Definition {
    definition(ProviderOAuth {
        client_authentication: ClientAuthentication::ClientSecretBasic,
        refresh_token_idle_lifetime: Some("1440h".into()),
        ..spec()
    })
}

fn xero_login() -> Login {
    login(&[("client_id", "c"), ("client_secret", "s"), ("refresh_token", "r0")])
}

fn sent(def: &Definition, l: &Login, s: &State) -> TokenRequest {
    request::next(def, l, s, &[], URL, t(0)).expect("a grant")
}

fn issued(access: &str, refresh: Option<&str>, secs: u64) -> Outcome {
    Outcome::Issued {
        access_token: Token::new(access),
        refresh_token: refresh.map(Token::new),
        expires_in: Duration::from_secs(secs),
        refresh_expires_in: None,
    }
}

#[test]
fn the_access_token_of_the_moment_is_used_until_due() {
    let def = rotating();
    let l = xero_login();
    let s = State {
        access_token: Some(Token::new("a1")),
        expires_at: Some(t(1800)),
        refresh_at: Some(t(1200)),
        ..State::default()
    };
    assert_eq!(
        renew(&def, &l, &s, None, false, t(100)),
        Renew::Use {
            access_token: Token::new("a1"),
            expires_at: Some(t(1800)),
            refresh_at: Some(t(1200))
        },
        "another credential's refresh serves this one"
    );
    assert_eq!(renew(&def, &l, &s, None, false, t(1200)), Renew::Now, "due");
    assert_eq!(
        renew(&def, &l, &State::default(), None, false, t(0)),
        Renew::Now,
        "nothing yet"
    );
    let legacy = State {
        access_token: None,
        ..s
    };
    assert!(
        matches!(renew(&def, &l, &legacy, Some(&Token::new("a0")), false, t(100)), Renew::Use { access_token, .. } if access_token == Token::new("a0")),
        "a state from before shared logins uses the managed Secret's token"
    );
}

#[test]
fn a_rotation_stores_the_new_refresh_token_and_retires_the_old() {
    let def = rotating();
    let l = xero_login();
    let s = State::default();
    let req = sent(&def, &l, &s);
    let Next::Issued { access_token, state } = next(
        &def,
        &req,
        issued("a1", Some("r1"), 1800),
        &s,
        &l,
        t(0),
        Jitter::new(0.5),
    ) else {
        panic!("issued");
    };
    assert_eq!(access_token, Token::new("a1"));
    assert_eq!(state.refresh_token, Some(Token::new("r1")));
    assert_eq!(
        state.retired,
        [Token::new("r0").fingerprint()],
        "r0 is never sent again"
    );
    assert_eq!(
        state.seed,
        Some(Token::new("r0").fingerprint()),
        "the login's r0 is taken"
    );
    assert_eq!(state.access_token, Some(Token::new("a1")));
    assert_eq!(state.expires_at, Some(t(1800)));
    assert_eq!(state.refresh_at, Some(t(1170)), "65% of 1,800 s");
    assert_eq!(
        state.refresh_expires_at,
        Some(t(1440 * 3600)),
        "each use renews the idle lifetime"
    );
    assert_eq!(state.in_flight, None);

    // The next refresh sends r1, not the login's r0.
    let again = sent(&def, &l, &state);
    assert_eq!(again.refresh_token, Some(Token::new("r1")));
}

#[test]
fn a_refresh_token_that_does_not_rotate_is_kept_and_not_retired() {
    let def = definition(ProviderOAuth {
        client_authentication: ClientAuthentication::ClientSecretPost,
        ..spec()
    });
    let l = xero_login();
    let req = sent(&def, &l, &State::default());
    let Next::Issued { state, .. } = next(
        &def,
        &req,
        issued("a1", Some("r0"), 1800),
        &State::default(),
        &l,
        t(0),
        Jitter::new(0.5),
    ) else {
        panic!("issued");
    };
    assert_eq!(state.refresh_token, Some(Token::new("r0")));
    assert!(state.retired.is_empty());
    let Next::Issued { state, .. } = next(
        &def,
        &req,
        issued("a1", None, 1800),
        &State::default(),
        &l,
        t(0),
        Jitter::new(0.5),
    ) else {
        panic!("issued");
    };
    assert_eq!(
        state.refresh_token,
        Some(Token::new("r0")),
        "kept when the answer has none"
    );
}

#[test]
fn a_refresh_token_lapsing_before_the_access_token_is_refreshed_before_it_lapses() {
    let at = refresh_at(t(0), Duration::from_secs(86_400), Some(t(3_600)), Jitter::new(0.5));
    assert_eq!(at, t(2_340), "65% of the hour the refresh token has left");
}

#[test]
fn a_refresh_token_is_marked_in_flight_before_it_is_sent() {
    let def = rotating();
    let l = xero_login();
    let req = sent(&def, &l, &State::default());
    let marked = before_call(&State::default(), &req).expect("a mark");
    assert_eq!(marked.in_flight, Some(Token::new("r0").fingerprint()));
    assert_eq!(before_call(&marked, &req), None, "marked once");
    let password = sent(
        &definition::virtuous(),
        &login(&[("username", "u"), ("password", "p")]),
        &State::default(),
    );
    assert_eq!(
        before_call(&State::default(), &password),
        None,
        "only a refresh token can be lost"
    );
}

#[test]
fn a_refusal_is_called_by_what_was_sent_and_what_came_before() {
    let def = rotating();
    let l = xero_login();
    let req = sent(&def, &l, &State::default());
    let summary = |body: &str| BodySummary::of(400, None, body.as_bytes());
    let grant = summary(r#"{"error":"invalid_grant"}"#);
    assert_eq!(refusal_reason(&req, &grant, false), Reason::RefreshTokenRevoked);
    assert_eq!(
        refusal_reason(&req, &grant, true),
        Reason::RefreshTokenLost,
        "its answer was never stored"
    );
    assert_eq!(
        refusal_reason(&req, &summary(r#"{"error":"invalid_client"}"#), true),
        Reason::InvalidClient
    );
    assert_eq!(
        refusal_reason(&req, &summary(r#"{"error":"invalid_scope"}"#), false),
        Reason::InvalidScope
    );
    let password = sent(
        &definition::virtuous(),
        &login(&[("username", "u"), ("password", "p")]),
        &State::default(),
    );
    assert_eq!(refusal_reason(&password, &grant, false), Reason::InvalidGrant);
}

#[test]
fn a_refused_login_is_not_tried_again_until_a_person_changes_it() {
    let def = rotating();
    let l = xero_login();
    let refused = after_refusal(&def, &l, &State::default(), Reason::RefreshTokenRevoked);
    assert_eq!(
        renew(&def, &l, &refused, None, false, t(0)),
        Renew::Refused(Reason::RefreshTokenRevoked)
    );
    assert_eq!(
        renew(&def, &l, &refused, None, false, t(1_000_000)),
        Renew::Refused(Reason::RefreshTokenRevoked),
        "not with time"
    );
    let fixed = login(&[("client_id", "c"), ("client_secret", "s"), ("refresh_token", "r-new")]);
    assert_eq!(
        renew(&def, &fixed, &refused, None, false, t(0)),
        Renew::Now,
        "a new login is tried"
    );
    let admin_fixed = definition(ProviderOAuth {
        client_authentication: ClientAuthentication::ClientSecretPost,
        ..spec()
    });
    assert_eq!(
        renew(&admin_fixed, &l, &refused, None, false, t(0)),
        Renew::Now,
        "so is a changed definition"
    );
}

#[test]
fn a_code_is_awaited_and_one_that_did_not_do_is_spent() {
    let def = definition::virtuous();
    let l = login(&[("username", "u"), ("password", "p")]);
    assert_eq!(renew(&def, &l, &State::default(), None, true, t(0)), Renew::AwaitCode);
    let with_code = login(&[("username", "u"), ("password", "p"), ("otp", "111111")]);
    assert_eq!(renew(&def, &with_code, &State::default(), None, true, t(0)), Renew::Now);
    let req = sent(&def, &with_code, &State::default());
    let Next::CodeRequired { spent: Some(spent) } = next(
        &def,
        &req,
        Outcome::CodeRequired,
        &State::default(),
        &with_code,
        t(0),
        Jitter::new(0.0),
    ) else {
        panic!("the code sent is spent");
    };
    assert_eq!(spent.spent, [Token::new("111111").fingerprint()]);
    assert_eq!(
        renew(&def, &with_code, &spent, None, true, t(0)),
        Renew::AwaitCode,
        "never sent twice"
    );
}

#[test]
fn outages_and_429_keep_the_token_of_the_moment() {
    let def = rotating();
    let l = xero_login();
    let req = sent(&def, &l, &State::default());
    let j = Jitter::new(0.0);
    assert_eq!(
        next(
            &def,
            &req,
            Outcome::RateLimited(Some(t(30))),
            &State::default(),
            &l,
            t(0),
            j
        ),
        Next::BackOff(t(30))
    );
    assert!(matches!(
        next(&def, &req, Outcome::Unavailable("x".into()), &State::default(), &l, t(0), j),
        Next::Retry(at) if at > t(0)
    ));
}
