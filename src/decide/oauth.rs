//! OAuth 2 as data: an `ApiProvider`'s authorization server (`definition`), the login Secret a
//! person supplies (`login`), what tenantcred keeps between calls (`state`), the grant to send
//! (`request`, `assertion`) and what the answer means (`answer`). This module holds the
//! decisions around them: whether to call at all, what an answer comes to, the state after it,
//! and what a refusal is called. Pure; the HTTP request is `outbound`'s.
//!
//! Rotation is safe by order: a refresh token about to be sent is marked in the state Secret
//! first (`in_flight`), the answer's new refresh token is stored before its access token is used
//! anywhere, and a refusal is stored with the login it refused, so nothing is sent again until a
//! person changes the login.

use std::time::Duration;

use jiff::Timestamp;

use crate::crd::oauth::GrantType;
use crate::decide::conditions::Reason;
use crate::decide::error_body::{BodySummary, OAuthError};
use crate::decide::schedule::{self, Jitter};
use crate::decide::token::{Fingerprint, Token};

pub mod answer;
pub mod assertion;
pub mod definition;
pub mod login;
pub mod problems;
pub mod request;
pub mod state;

pub use answer::{Answer, Outcome};
pub use definition::Definition;
pub use login::Login;
pub use request::TokenRequest;
pub use state::{State, legacy_state_secret_name, state_secret, state_secret_name};

/// The most grants one renewal tries (each refused one lets the next be tried).
pub const MAX_GRANTS: usize = 4;

/// Whether to call the token endpoint in this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renew {
    /// The access token of the moment holds until it is due for refresh: use it, look again then.
    Use {
        access_token: Token,
        expires_at: Option<Timestamp>,
        refresh_at: Option<Timestamp>,
    },
    /// This login was refused (or its refresh token lost) and has not changed since: nothing is
    /// sent until a person changes the login Secret.
    Refused(Reason),
    /// The server asked for a code and the login Secret has none not yet sent.
    AwaitCode,
    /// Missing, due, or a fresh code answers the server's request for one.
    Now,
}

/// What a refusal is keyed by: the login's content and the definition, so a change to either
/// (a person's new login, an admin's fixed definition) lets a grant be tried again.
pub fn attempt_key(login: &Login, def: &Definition) -> Fingerprint {
    Fingerprint::of(format!("{}\0{def:?}", login.fingerprint()).as_bytes())
}

/// `current`: the access token the managed Secret holds (used when a state written before
/// shared logins has no access token of its own). `waiting_for_code`: the status says the
/// server asked for a code.
pub fn renew(
    def: &Definition,
    login: &Login,
    state: &State,
    current: Option<&Token>,
    waiting_for_code: bool,
    now: Timestamp,
) -> Renew {
    if let Some((key, reason)) = &state.refused
        && *key == attempt_key(login, def)
    {
        return Renew::Refused(*reason);
    }
    let fresh_code = fresh_code(def, login, state);
    let due = state.refresh_at.is_none_or(|r| r <= now) || state.expires_at.is_none_or(|e| e <= now);
    if let Some(access_token) = state.access_token.as_ref().or(current)
        && !due
        && !(waiting_for_code && fresh_code)
    {
        return Renew::Use {
            access_token: access_token.clone(),
            expires_at: state.expires_at,
            refresh_at: state.refresh_at,
        };
    }
    if waiting_for_code && !fresh_code {
        return Renew::AwaitCode;
    }
    Renew::Now
}

/// Whether `decided` uses the very access token whose last probe the provider refused
/// (`probed`: the status's token fingerprint): revoked before its time (a session ended, a
/// password changed), it is refreshed now rather than when due. A new token is probed before
/// this can be true again, so refreshes come no faster than probes (one budget for both).
pub fn rejected(decided: &Renew, probed: Option<&str>, result: Option<crate::crd::ProbeResult>) -> bool {
    use crate::crd::ProbeResult;
    let Renew::Use { access_token, .. } = decided else {
        return false;
    };
    result == Some(ProbeResult::Unauthorized) && probed == Some(access_token.fingerprint().to_string().as_str())
}

/// Whether a single-use field of the password grant holds a value not yet sent.
fn fresh_code(def: &Definition, login: &Login, state: &State) -> bool {
    def.password_fields
        .iter()
        .filter(|f| f.single_use)
        .filter_map(|f| login.get(&f.key))
        .any(|v| !state.spent.contains(&v.fingerprint()))
}

/// The state written before a refresh token is sent: the mark that says its answer may be lost.
pub fn before_call(state: &State, request: &TokenRequest) -> Option<State> {
    let sent = request.refresh_token.as_ref()?.fingerprint();
    (state.in_flight.as_ref() != Some(&sent)).then(|| State {
        in_flight: Some(sent),
        ..state.clone()
    })
}

/// Refresh at about two thirds of the access token's lifetime (60-70%, jittered), and before
/// the refresh token lapses when its lifetime is known.
pub fn refresh_at(
    issued_at: Timestamp,
    lifetime: Duration,
    refresh_lapses: Option<Timestamp>,
    jitter: Jitter,
) -> Timestamp {
    let by_access = schedule::add(issued_at, jitter.scale(lifetime, 0.6, 0.7));
    match refresh_lapses {
        Some(lapses) => {
            let left = schedule::until(issued_at, lapses);
            by_access.min(schedule::add(issued_at, jitter.scale(left, 0.6, 0.7)))
        }
        None => by_access,
    }
}

/// What a token-endpoint answer comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Store `state` (the new refresh token first), then use the access token.
    Issued { access_token: Token, state: Box<State> },
    /// The server asked for a code. `spent`: the codes sent did not do; store this state so
    /// they are never sent again.
    CodeRequired { spent: Option<Box<State>> },
    /// Refused: the next grant may be tried, else it is the end (`problems::refused`).
    Refused(BodySummary),
    /// The answer cannot be used; nothing is stored or written.
    Unusable(answer::Unusable),
    /// The egress rules refused the endpoint; nothing was sent.
    NotAllowed(String),
    /// 429: the account is held back until then; the token of the moment keeps serving.
    BackOff(Timestamp),
    /// An outage: the token of the moment keeps serving; try again then.
    Retry(Timestamp),
}

pub fn next(
    def: &Definition,
    request: &TokenRequest,
    outcome: Outcome,
    state: &State,
    login: &Login,
    now: Timestamp,
    jitter: Jitter,
) -> Next {
    match outcome {
        Outcome::Issued {
            access_token,
            refresh_token,
            expires_in,
            refresh_expires_in,
        } => {
            let state = after_issue(def, request, state, login, refresh_token, refresh_expires_in, now);
            let expires_at = schedule::add(now, expires_in);
            let state = State {
                access_token: Some(access_token.clone()),
                expires_at: Some(expires_at),
                refresh_at: Some(refresh_at(now, expires_in, state.refresh_expires_at, jitter)),
                ..state
            };
            Next::Issued {
                access_token,
                state: Box::new(state),
            }
        }
        Outcome::CodeRequired => Next::CodeRequired {
            spent: (!request.single_use.is_empty()).then(|| {
                let mut s = state.clone();
                for f in &request.single_use {
                    State::remember(&mut s.spent, f.clone());
                }
                Box::new(s)
            }),
        },
        Outcome::Refused(why) => Next::Refused(why),
        Outcome::Unusable(why) => Next::Unusable(why),
        Outcome::NotAllowed(why) => Next::NotAllowed(why),
        Outcome::RateLimited(until) => {
            Next::BackOff(until.unwrap_or_else(|| schedule::add(now, schedule::TRANSIENT_FIRST * 2)))
        }
        Outcome::Unavailable(_) => Next::Retry(retry_at(now, jitter)),
    }
}

/// The state after an answer that cannot be used but carries a new refresh token (`rotated`,
/// `answer::rotated_in`): the server replaced the one sent, so the new one is stored and the
/// old retired, or the next call would send a dead token. The access token of the moment stays.
pub fn after_unusable(
    def: &Definition,
    request: &TokenRequest,
    state: &State,
    login: &Login,
    rotated: Option<Token>,
    now: Timestamp,
) -> Option<State> {
    let rotated = rotated.filter(|t| request.refresh_token.as_ref() != Some(t))?;
    Some(State {
        access_token: state.access_token.clone(),
        expires_at: state.expires_at,
        refresh_at: state.refresh_at,
        ..after_issue(def, request, state, login, Some(rotated), None, now)
    })
}

/// When an outage or an unusable answer is tried again.
pub fn retry_at(now: Timestamp, jitter: Jitter) -> Timestamp {
    schedule::add(now, jitter.scale(schedule::TRANSIENT_FIRST * 2, 0.5, 1.0))
}

/// The state after a grant succeeded: the NEW refresh token when one came back, the one sent
/// retired when it was replaced, the codes sent spent, the marks cleared.
fn after_issue(
    def: &Definition,
    request: &TokenRequest,
    previous: &State,
    login: &Login,
    refresh_token: Option<Token>,
    refresh_expires_in: Option<Duration>,
    now: Timestamp,
) -> State {
    let sent = request.refresh_token.clone();
    let kept = refresh_token
        .clone()
        .or_else(|| sent.clone())
        .or_else(|| previous.refresh_token.clone());
    let mut retired = previous.retired.clone();
    if let (Some(old), Some(new)) = (&sent, &refresh_token)
        && old != new
    {
        State::remember(&mut retired, old.fingerprint());
    }
    let mut spent = previous.spent.clone();
    for f in &request.single_use {
        State::remember(&mut spent, f.clone());
    }
    let used = request.grant == GrantType::RefreshToken || refresh_token.is_some();
    let refresh_expires_at = match (refresh_expires_in, def.refresh_idle_lifetime, &kept) {
        (Some(d), _, Some(_)) => Some(schedule::add(now, d)),
        // Each use renews an idle lifetime.
        (None, Some(idle), Some(_)) if used => Some(schedule::add(now, idle)),
        (None, _, Some(_)) => previous.refresh_expires_at,
        (_, _, None) => None,
    };
    State {
        refresh_token: kept,
        refresh_expires_at,
        access_token: None,
        expires_at: None,
        refresh_at: None,
        spent,
        seed: login
            .refresh_token()
            .map(Token::fingerprint)
            .or_else(|| previous.seed.clone()),
        in_flight: None,
        retired,
        refused: None,
        resource_version: previous.resource_version.clone(),
    }
}

/// The state recording that `login` was refused for `reason`: nothing is sent again until it
/// changes.
pub fn after_refusal(def: &Definition, login: &Login, state: &State, reason: Reason) -> State {
    State {
        refused: Some((attempt_key(login, def), reason)),
        in_flight: None,
        access_token: None,
        ..state.clone()
    }
}

/// What a final refusal of `request` is called. `marked`: the refresh token sent was marked in
/// flight before this call by an earlier one (whose answer was never stored).
pub fn refusal_reason(request: &TokenRequest, answer: &BodySummary, marked_before: bool) -> Reason {
    match answer.oauth_error {
        Some(OAuthError::InvalidClient | OAuthError::UnauthorizedClient) => Reason::InvalidClient,
        Some(OAuthError::InvalidScope) => Reason::InvalidScope,
        _ if request.grant == GrantType::RefreshToken && marked_before => Reason::RefreshTokenLost,
        _ if request.grant == GrantType::RefreshToken => Reason::RefreshTokenRevoked,
        _ => Reason::InvalidGrant,
    }
}

/// The budget key of an account: probes and token-endpoint calls spend the same hourly budget,
/// whatever the access token of the moment. The namespace is part of it: another tenant writing
/// the same login (with any secret) spends its own budget, never this one's. NUL separates the
/// parts, and no token holds one, so no token's fingerprint is an account's.
pub fn account(namespace: &str, login: &Login) -> Fingerprint {
    let who = [login::KEY_USERNAME, login::KEY_CLIENT_ID, "client_email"]
        .iter()
        .find_map(|k| login.get(k))
        .map_or("", |u| u.expose());
    Fingerprint::of(format!("\0oauth\0{namespace}\0{who}").as_bytes())
}

#[cfg(test)]
mod tests;
