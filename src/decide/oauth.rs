//! Virtuous OAuth (PROVIDERS.md): which grant to use, how to read the token endpoint's answer, when
//! to refresh, and the operator-owned state Secret that keeps the refresh token. Pure; the HTTP
//! request is `outbound::ProviderClient::post_form`.

use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;

use crate::decide::error_body::{BodySummary, MediaType};
use crate::decide::schedule::{self, Jitter};
use crate::decide::token::Token;
use crate::decide::verdict::{Transport, TransportFailure};

pub mod problems;
mod secrets;

pub use secrets::{
    KEY_OTP, KEY_PASSWORD, KEY_REFRESH_TOKEN, KEY_USERNAME, Login, State, state_secret, state_secret_name,
};

/// The grant to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    Refresh,
    Password { with_otp: bool },
}

/// Why no grant can be attempted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unusable {
    NoUsername,
    NoCredentials,
}

/// Refresh when there is a refresh token; else the password grant (with a code not yet spent).
pub fn choose(login: &Login, state: &State, refresh_rejected: bool) -> Result<Grant, Unusable> {
    let refresh = state.refresh_token.as_ref().or(login.refresh_token.as_ref());
    if refresh.is_some() && !refresh_rejected {
        return Ok(Grant::Refresh);
    }
    if login.username.is_none() {
        return Err(Unusable::NoUsername);
    }
    if login.password.is_none() {
        return Err(Unusable::NoCredentials);
    }
    Ok(Grant::Password {
        with_otp: fresh_otp(login, state).is_some(),
    })
}

fn fresh_otp<'a>(login: &'a Login, state: &State) -> Option<&'a Token> {
    login
        .otp
        .as_ref()
        .filter(|o| state.otp_used.as_ref() != Some(&o.fingerprint()))
}

/// The form fields of the grant. The values are secrets: they go into the request body only.
pub fn form(grant: Grant, login: &Login, state: &State) -> Vec<(&'static str, String)> {
    let val = |t: Option<&Token>| t.map(|t| t.expose().to_owned()).unwrap_or_default();
    match grant {
        Grant::Refresh => vec![
            ("grant_type", "refresh_token".into()),
            (
                "refresh_token",
                val(state.refresh_token.as_ref().or(login.refresh_token.as_ref())),
            ),
        ],
        Grant::Password { with_otp } => {
            let mut f = vec![
                ("grant_type", "password".into()),
                ("username", val(login.username.as_ref())),
                ("password", val(login.password.as_ref())),
            ];
            if with_otp {
                f.push(("otp", val(fresh_otp(login, state))));
            }
            f
        }
    }
}

/// The token endpoint's answer, as `outbound::ProviderClient::post_form` saw it.
#[derive(Clone)]
pub struct Answer {
    pub transport: Transport,
    /// Holds the access and refresh tokens when it succeeded, and may echo the form when it
    /// failed: never in `Debug`, never shown (only summarized, `error_body`).
    pub body: Vec<u8>,
    /// The answer's `Content-Type`, from the allow-list.
    pub media_type: Option<MediaType>,
    pub back_off_until: Option<Timestamp>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("transport", &self.transport)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .field("media_type", &self.media_type)
            .field("back_off_until", &self.back_off_until)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Issued {
        access_token: Token,
        refresh_token: Option<Token>,
        expires_in: Duration,
    },
    /// 202: two-factor authentication; a code was sent by SMS.
    OtpRequired,
    /// The grant was refused (wrong password, revoked or expired refresh token): what may be
    /// shown of the answer.
    Rejected(BodySummary),
    /// 429: come back later.
    RateLimited(Option<Timestamp>),
    /// 5xx, timeouts, an unreadable answer.
    Unavailable(String),
    /// The egress rules refused the endpoint's addresses; nothing was sent.
    NotAllowed(String),
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// What the token endpoint's answer means. A refusal keeps only a summary of the answer: the
/// endpoint may echo the form it was sent.
pub fn interpret(a: &Answer) -> Outcome {
    match a.transport {
        Transport::Answered(200) => match serde_json::from_slice::<TokenResponse>(&a.body) {
            // Bounded like every token: an oversized one is never stored or sent.
            Ok(r) if r.access_token.len() > crate::decide::token::MAX_TOKEN_BYTES => Outcome::Unavailable(format!(
                "the token endpoint answered an access_token of {} bytes, over the {} tenantcred accepts",
                r.access_token.len(),
                crate::decide::token::MAX_TOKEN_BYTES
            )),
            Ok(r) if !r.access_token.is_empty() => {
                let secs = r
                    .expires_in
                    .as_ref()
                    .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
                    .unwrap_or(3600);
                Outcome::Issued {
                    access_token: Token::new(r.access_token),
                    refresh_token: r.refresh_token.filter(|t| !t.is_empty()).map(Token::new),
                    // A silly value cannot make us hammer the endpoint: the budget caps grants per hour.
                    expires_in: Duration::from_secs(secs.clamp(1, 365 * 86_400)),
                }
            }
            _ => Outcome::Unavailable("the token endpoint answered 200 without a readable access_token".into()),
        },
        Transport::Answered(202) => Outcome::OtpRequired,
        Transport::Answered(code @ (400 | 401 | 403)) => {
            Outcome::Rejected(BodySummary::of(code, a.media_type, &a.body))
        }
        Transport::Answered(429) => Outcome::RateLimited(a.back_off_until),
        Transport::Answered(code) => Outcome::Unavailable(format!("the token endpoint answered HTTP {code}")),
        Transport::Timeout => Outcome::Unavailable("the token endpoint timed out".into()),
        Transport::Failed(TransportFailure::Redirect) => {
            Outcome::Unavailable("the token endpoint redirected; not followed".into())
        }
        Transport::Failed(_) => Outcome::Unavailable("could not connect to the token endpoint".into()),
        Transport::NotAllowed(ref why) => Outcome::NotAllowed(why.clone()),
    }
}

/// Refresh at about two thirds of the access token's lifetime, jittered (60–70%).
pub fn refresh_at(issued_at: Timestamp, lifetime: Duration, jitter: Jitter) -> Timestamp {
    schedule::add(issued_at, jitter.scale(lifetime, 0.6, 0.7))
}

/// The state after a successful grant: always the NEW refresh token when one came back.
pub fn after_issue(
    previous: &State,
    login: &Login,
    grant: Grant,
    refresh_token: Option<Token>,
    expires_in: Duration,
    now: Timestamp,
    jitter: Jitter,
) -> State {
    State {
        refresh_token: refresh_token
            .or_else(|| previous.refresh_token.clone())
            .or_else(|| login.refresh_token.clone()),
        expires_at: Some(schedule::add(now, expires_in)),
        refresh_at: Some(refresh_at(now, expires_in, jitter)),
        otp_used: match grant {
            Grant::Password { with_otp: true } => fresh_otp(login, previous).map(Token::fingerprint),
            _ => previous.otp_used.clone(),
        },
    }
}

/// The budget key of an account: probes and token-endpoint calls spend the same hourly budget,
/// whatever the access token of the moment. The namespace is part of it: another tenant writing
/// the same user name (with any password) spends its own budget, never this one's. NUL separates
/// the parts, and no token holds one, so no token's fingerprint is an account's.
pub fn account(namespace: &str, login: &Login) -> crate::decide::token::Fingerprint {
    let user = login.username.as_ref().map_or("", |u| u.expose());
    crate::decide::token::Fingerprint::of(format!("\0oauth\0{namespace}\0{user}").as_bytes())
}

/// Whether to call the token endpoint in this reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renew {
    /// The access token in use holds until it is due for refresh: keep it, look again then.
    Keep { refresh_at: Option<Timestamp> },
    /// The provider asked for an SMS code and the login Secret has none not yet spent.
    AwaitOtp,
    /// Missing, due, or a fresh code answers the provider's two-factor request.
    Now,
}

/// `waiting_for_otp`: the status says the provider asked for a code (a 202).
pub fn renew(login: &Login, state: &State, waiting_for_otp: bool, has_current: bool, now: Timestamp) -> Renew {
    let fresh_code = fresh_otp(login, state).is_some();
    let due = state.refresh_at.is_none_or(|r| r <= now) || state.expires_at.is_none_or(|e| e <= now);
    if has_current && !due && !(waiting_for_otp && fresh_code) {
        return Renew::Keep {
            refresh_at: state.refresh_at,
        };
    }
    if waiting_for_otp && !fresh_code {
        return Renew::AwaitOtp;
    }
    Renew::Now
}

/// What a token-endpoint answer comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Use the access token; store `state` (the new refresh token, when to refresh).
    Issued { access_token: Token, state: State },
    /// Two-factor authentication: wait for a code. `spent`: the code sent did not work; store
    /// this state so it is never sent again.
    OtpRequired { spent: Option<State> },
    /// The refresh token was refused: sign in with the password grant in the same reconcile.
    SignInAgain,
    /// Refused, and no other grant is left: what may be shown of the answer.
    Refused(BodySummary),
    /// The egress rules refused the endpoint; nothing was sent.
    NotAllowed(String),
    /// 429: the account is held back until then; the current token keeps serving.
    BackOff(Timestamp),
    /// An outage: the current token keeps serving; try again then.
    Retry(Timestamp),
}

pub fn next(
    grant: Grant,
    outcome: Outcome,
    refresh_rejected: bool,
    login: &Login,
    state: &State,
    now: Timestamp,
    jitter: Jitter,
) -> Next {
    match outcome {
        Outcome::Issued {
            access_token,
            refresh_token,
            expires_in,
        } => Next::Issued {
            access_token,
            state: after_issue(state, login, grant, refresh_token, expires_in, now, jitter),
        },
        Outcome::OtpRequired => Next::OtpRequired {
            spent: matches!(grant, Grant::Password { with_otp: true }).then(|| State {
                otp_used: login.otp.as_ref().map(Token::fingerprint),
                ..state.clone()
            }),
        },
        Outcome::Rejected(_) if grant == Grant::Refresh && !refresh_rejected => Next::SignInAgain,
        Outcome::Rejected(why) => Next::Refused(why),
        Outcome::NotAllowed(why) => Next::NotAllowed(why),
        Outcome::RateLimited(until) => {
            Next::BackOff(until.unwrap_or_else(|| schedule::add(now, schedule::TRANSIENT_FIRST * 2)))
        }
        Outcome::Unavailable(_) => Next::Retry(schedule::add(
            now,
            jitter.scale(schedule::TRANSIENT_FIRST * 2, 0.5, 1.0),
        )),
    }
}

#[cfg(test)]
mod tests;
