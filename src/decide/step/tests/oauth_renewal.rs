//! An OAuth credential's access token: signed in for, kept in the state Secret, refreshed, and
//! held back as the token endpoint and the budget ask.

use super::*;

#[test]
fn an_oauth_credential_signs_in_stores_its_state_and_then_writes_the_secret() {
    let run = Case::oauth().run();
    assert_eq!(
        run.actions,
        [
            "read login",
            "read oauth state",
            "token endpoint",
            "write oauth state",
            "create secret",
            "recall answer",
            "probe",
            "after probe",
            "write status",
            "finish"
        ]
    );
    let (url, form) = &run.token_calls[0];
    assert!(url.ends_with("/Token"), "{url}");
    let fields: Vec<&str> = form.iter().map(|(k, _)| *k).collect();
    assert_eq!(fields, ["grant_type", "username", "password"], "the password grant");
    assert_eq!(run.ready(), Some(Reason::TokenValid));
}

#[test]
fn a_refused_refresh_token_signs_in_again_in_the_same_reconcile() {
    let mut case = Case::oauth();
    let state = oauth::State {
        refresh_token: Some(Token::new("old-refresh")),
        ..Default::default()
    };
    case.oauth_state =
        Some(oauth::state_secret(&case.tac, "c-tenantcred-oauth", &state).expect("the credential has a uid"));
    let signed_in = case.endpoint.clone();
    case.endpoint = [
        vec![Attempt::Sent(endpoint(400, r#"{"error":"invalid_grant"}"#))],
        signed_in,
    ]
    .concat();
    let run = case.run();
    let grants: Vec<&str> = run.token_calls.iter().map(|(_, form)| form[0].1.as_str()).collect();
    assert_eq!(grants, ["refresh_token", "password"]);
    assert_eq!(
        run.actions[..5],
        [
            "read login",
            "read oauth state",
            "token endpoint",
            "token endpoint",
            "write oauth state"
        ]
    );
}

#[test]
fn a_missing_login_is_said_and_nothing_is_sent() {
    let mut case = Case::oauth();
    case.login = None;
    let run = case.run();
    assert_eq!(run.actions, ["read login", "write status", "finish"]);
    assert_eq!(run.ready(), Some(Reason::SourceNotFound));
}

#[test]
fn a_token_endpoint_429_holds_the_account_back() {
    let mut case = Case::oauth();
    let mut limited = endpoint(429, "{}");
    limited.back_off_until = Some(t(120));
    case.endpoint = vec![Attempt::Sent(limited)];
    let run = case.run();
    assert_eq!(
        run.actions,
        [
            "read login",
            "read oauth state",
            "token endpoint",
            "back off",
            "write status",
            "finish"
        ]
    );
    assert_eq!(run.back_offs.len(), 1);
    assert_eq!(run.back_offs[0].until, t(120));
    assert_eq!(run.back_offs[0].host, case.settings.as_ref().expect("resolves").host());
    assert_eq!(run.requeue, Some(Duration::from_secs(121)));
}

#[test]
fn a_held_token_endpoint_call_sends_nothing_and_comes_back_when_allowed() {
    let mut case = Case::oauth();
    case.endpoint = vec![Attempt::Held(t(30))];
    let run = case.run();
    assert_eq!(
        run.actions,
        [
            "read login",
            "read oauth state",
            "token endpoint",
            "write status",
            "finish"
        ]
    );
    assert_eq!(run.requeue, Some(Duration::from_secs(31)));

    // No request slot within its patience: back in about that long.
    case.endpoint = vec![Attempt::Busy];
    assert_eq!(case.run().requeue, Some(Duration::from_secs(6)));
}
