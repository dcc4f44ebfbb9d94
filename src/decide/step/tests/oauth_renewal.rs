//! An OAuth credential's access token: signed in for, stored in the login's state Secret before
//! it is used, refreshed with a mark that survives a crash, shared between the credentials of
//! one login, and held back as the token endpoint and the budget ask.

use super::*;

fn stored(state: &oauth::State) -> Secret {
    let name = oauth::state_secret_name("virtuous", "login");
    let mut s = oauth::state_secret(&name, "login", Some("login-uid"), "virtuous", state).expect("owned by the login");
    s.metadata.resource_version = Some("1".into());
    s
}

fn data(s: &Secret) -> oauth::State {
    oauth::State::from_secret(s)
}

#[test]
fn an_oauth_credential_signs_in_stores_its_state_and_then_writes_the_secret() {
    let run = Case::oauth().run();
    assert_eq!(
        run.actions,
        [
            "read login",
            "read oauth state",
            "hold login",
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
    let fields: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(fields, ["grant_type", "username", "password"], "the password grant");
    let state = data(&run.state_writes[0]);
    assert!(state.access_token.is_some() && state.refresh_token.is_some());
    assert_eq!(run.state_writes[0].metadata.resource_version, None, "created");
    assert_eq!(run.ready(), Some(Reason::TokenValid));
}

#[test]
fn a_refresh_is_marked_in_flight_before_the_call_and_cleared_by_the_answers_write() {
    let case = refreshing();
    let run = case.run();
    assert_eq!(
        run.actions[..6],
        [
            "read login",
            "read oauth state",
            "hold login",
            "write oauth state",
            "token endpoint",
            "write oauth state"
        ]
    );
    let marked = data(&run.state_writes[0]);
    assert_eq!(marked.in_flight, Some(Token::new("old-refresh").fingerprint()));
    assert_eq!(
        run.state_writes[0].metadata.resource_version.as_deref(),
        Some("1"),
        "guarded by the version read"
    );
    let after = data(&run.state_writes[1]);
    assert_eq!(after.in_flight, None);
    assert_eq!(after.retired, [Token::new("old-refresh").fingerprint()], "rotated away");
    assert_eq!(
        run.state_writes[1].metadata.resource_version.as_deref(),
        Some("2"),
        "guarded by the mark's version"
    );
}

#[test]
fn a_refresh_held_back_before_it_was_sent_takes_its_mark_back() {
    let mut case = refreshing();
    case.endpoint = vec![Attempt::Busy];
    let run = case.run();
    assert_eq!(run.token_calls.len(), 1, "asked once, and the shell sent nothing");
    assert_eq!(run.state_writes.len(), 2, "{:?}", run.actions);
    let marked = data(&run.state_writes[0]);
    assert_eq!(marked.in_flight, Some(Token::new("old-refresh").fingerprint()));
    // A refusal of this refresh token later is then a revocation, not a lost answer.
    let unmarked = data(&run.state_writes[1]);
    assert_eq!(unmarked.in_flight, None);
    assert_eq!(unmarked.refresh_token, Some(Token::new("old-refresh")));
    assert_eq!(
        run.state_writes[1].metadata.resource_version.as_deref(),
        Some("2"),
        "guarded by the mark's version"
    );
}

#[test]
fn a_refused_refresh_token_signs_in_again_in_the_same_reconcile() {
    let mut case = refreshing();
    let signed_in = case.endpoint.clone();
    case.endpoint = [
        vec![Attempt::Sent(endpoint(400, r#"{"error":"invalid_grant"}"#))],
        signed_in,
    ]
    .concat();
    let run = case.run();
    let grants: Vec<&str> = run.token_calls.iter().map(|(_, form)| form[0].1.as_str()).collect();
    assert_eq!(grants, ["refresh_token", "password"]);
    assert_eq!(run.ready(), Some(Reason::TokenValid));
}

#[test]
fn a_refresh_token_refused_after_a_lost_answer_is_said_and_never_sent_again() {
    let mut case = Case::oauth();
    case.login = Some({
        let mut s = login_secret();
        s.data = Some(BTreeMap::from([(
            "refresh_token".to_owned(),
            ByteString(b"seed".to_vec()),
        )]));
        s
    });
    // A replica marked it, sent it, and died before storing the answer.
    case.oauth_state = Some(stored(&oauth::State {
        refresh_token: Some(Token::new("r1")),
        in_flight: Some(Token::new("r1").fingerprint()),
        seed: Some(Token::new("seed").fingerprint()),
        ..Default::default()
    }));
    case.endpoint = vec![Attempt::Sent(endpoint(400, r#"{"error":"invalid_grant"}"#))];
    let run = case.run();
    assert_eq!(run.ready(), Some(Reason::RefreshTokenLost));
    assert_eq!(reason(run.status(), Type::Degraded), Some(Reason::RefreshTokenLost));
    let mark = data(run.state_writes.last().expect("the refusal is stored"));
    assert!(mark.refused.is_some());
    assert!(run.written.is_empty(), "the managed Secret is not touched");

    // The next reconcile reads the mark and sends nothing.
    case.oauth_state = Some(stored(&mark));
    let again = case.run();
    assert!(again.token_calls.is_empty(), "{:?}", again.actions);
    assert_eq!(again.ready(), Some(Reason::RefreshTokenLost));
}

#[test]
fn a_second_credential_of_the_login_uses_the_state_anothers_refresh_stored() {
    let mut case = Case::oauth();
    case.oauth_state = Some(stored(&oauth::State {
        refresh_token: Some(Token::new("r1")),
        access_token: Some(Token::new("shared-access")),
        expires_at: Some(t(3_600)),
        refresh_at: Some(t(2_400)),
        ..Default::default()
    }));
    let run = case.run();
    assert!(run.token_calls.is_empty(), "no call: {:?}", run.actions);
    assert_eq!(run.actions[..3], ["read login", "read oauth state", "create secret"]);
    assert_eq!(
        crate::decide::secret::token_in(&Observed::of(run.written[0].clone())),
        Some(Token::new("shared-access"))
    );
}

#[test]
fn waiting_for_the_login_reads_the_state_again_before_calling() {
    let mut case = Case::oauth();
    case.held = Held::AfterWait;
    // Due when first read; the holder refreshed it meanwhile (the test double answers the
    // second read with the same Secret, so here: still due, and this reconcile calls).
    let run = case.run();
    assert_eq!(
        run.actions[..5],
        [
            "read login",
            "read oauth state",
            "hold login",
            "read oauth state",
            "token endpoint"
        ]
    );
    case.held = Held::Busy;
    let busy = case.run();
    assert!(busy.token_calls.is_empty());
    assert_eq!(
        busy.requeue,
        Some(Duration::from_secs(6)),
        "back when a slot may be free"
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
fn a_login_without_what_the_grant_needs_is_named() {
    let mut case = Case::oauth();
    case.login = Some({
        let mut s = login_secret();
        s.data = Some(BTreeMap::from([("username".to_owned(), ByteString(b"u".to_vec()))]));
        s
    });
    let run = case.run();
    assert!(run.token_calls.is_empty());
    assert_eq!(run.ready(), Some(Reason::LoginIncomplete));
}

#[test]
fn an_html_answer_is_named_and_nothing_is_written() {
    let mut case = Case::oauth();
    let mut html = endpoint(200, "<html>sign in</html>");
    html.media_type = Some(crate::decide::error_body::MediaType::Html);
    case.endpoint = vec![Attempt::Sent(html)];
    let run = case.run();
    assert_eq!(run.ready(), Some(Reason::TokenEndpointUnusable));
    assert!(run.written.is_empty() && run.state_writes.is_empty());
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
            "hold login",
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
            "hold login",
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

#[test]
fn a_refresh_token_rotated_in_an_answer_that_cannot_be_used_is_still_stored() {
    let mut case = refreshing();
    // The server rotated: "old-refresh" is dead from now on, whatever else the answer lacks.
    case.endpoint = vec![Attempt::Sent(endpoint(
        200,
        r#"{"access_token":"a2","refresh_token":"new-refresh"}"#,
    ))];
    let run = case.run();
    assert_eq!(run.ready(), Some(Reason::MissingExpiry));
    assert!(run.written.is_empty(), "the access token is not used");
    let after = data(run.state_writes.last().expect("the rotation is stored"));
    assert_eq!(after.refresh_token, Some(Token::new("new-refresh")));
    assert_eq!(after.retired, [Token::new("old-refresh").fingerprint()]);
    assert_eq!(after.in_flight, None, "the answer was stored, nothing is lost");
    assert_eq!(after.access_token, None);

    // Someone wrote the state meanwhile: it is read again and the new refresh token stored on it.
    case.state_writes = vec![StateWritten::Stored(Some("2".into())), StateWritten::Conflict];
    let raced = case.run();
    assert_eq!(
        run.state_writes.len() + 1,
        raced.state_writes.len(),
        "{:?}",
        raced.actions
    );
    let after = data(raced.state_writes.last().expect("stored on top"));
    assert_eq!(after.refresh_token, Some(Token::new("new-refresh")));
    assert_eq!(raced.ready(), Some(Reason::MissingExpiry));
}

#[test]
fn an_access_token_the_provider_refused_is_refreshed_before_it_is_due() {
    let mut case = Case::oauth();
    case.oauth_state = Some(stored(&oauth::State {
        refresh_token: Some(Token::new("r1")),
        access_token: Some(Token::new("revoked-access")),
        expires_at: Some(t(3_600)),
        refresh_at: Some(t(2_400)),
        ..Default::default()
    }));
    case.observed.last_probe_result = Some(crate::crd::ProbeResult::Unauthorized);
    case.observed.token_fingerprint = Some(Token::new("another-token").fingerprint().to_string());
    assert!(
        case.run().token_calls.is_empty(),
        "another token's 401 refreshes nothing"
    );
    case.observed.token_fingerprint = Some(Token::new("revoked-access").fingerprint().to_string());
    let run = case.run();
    assert_eq!(run.token_calls.len(), 1, "{:?}", run.actions);
    assert_eq!(run.token_calls[0].1[0].1, "refresh_token");
}

/// An OAuth credential whose login's state holds the refresh token `old-refresh`.
fn refreshing() -> Case {
    let mut case = Case::oauth();
    case.oauth_state = Some(stored(&oauth::State {
        refresh_token: Some(Token::new("old-refresh")),
        ..Default::default()
    }));
    case
}
