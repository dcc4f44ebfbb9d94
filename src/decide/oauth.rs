//! Virtuous OAuth (PROVIDERS.md): which grant to use, how to read the token endpoint's answer, when
//! to refresh, and the operator-owned state Secret that keeps the refresh token. Pure; the HTTP
//! request is `outbound::Prober::post_form`.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

use crate::decide::error_body::{self, Quoting};
use crate::decide::schedule::{self, Jitter};
use crate::decide::secret;
use crate::decide::token::{Fingerprint, Token};
use crate::decide::verdict::{Transport, TransportFailure};

pub const KEY_USERNAME: &str = "username";
pub const KEY_PASSWORD: &str = "password";
pub const KEY_OTP: &str = "otp";
pub const KEY_REFRESH_TOKEN: &str = "refresh_token";

const STATE_REFRESH_TOKEN: &str = "refresh_token";
const STATE_EXPIRES_AT: &str = "access_token_expires_at";
const STATE_REFRESH_AT: &str = "refresh_at";
const STATE_OTP_USED: &str = "otp_used";

/// The login Secret named by `spec.oauth.secretRef`. Every secret value is a `Token`, so it
/// redacts itself.
#[derive(Clone, Debug, Default)]
pub struct Login {
    pub username: Option<Token>,
    pub password: Option<Token>,
    pub otp: Option<Token>,
    pub refresh_token: Option<Token>,
}

impl Login {
    pub fn from_secret(s: &Secret) -> Self {
        let get = |k: &str| {
            secret::text(s, k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(Token::new)
        };
        Self {
            username: get(KEY_USERNAME),
            password: get(KEY_PASSWORD),
            otp: get(KEY_OTP),
            refresh_token: get(KEY_REFRESH_TOKEN),
        }
    }
}

/// What tenantcred remembers between refreshes, in a Secret it owns (never in status or events).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub refresh_token: Option<Token>,
    pub expires_at: Option<Timestamp>,
    pub refresh_at: Option<Timestamp>,
    /// The one-time code already spent, so it is never sent twice.
    pub otp_used: Option<Fingerprint>,
}

impl State {
    pub fn from_secret(s: &Secret) -> Self {
        let get = |k: &str| secret::text(s, k);
        let time = |k: &str| get(k).and_then(|v| v.parse::<Timestamp>().ok());
        Self {
            refresh_token: get(STATE_REFRESH_TOKEN).filter(|v| !v.is_empty()).map(Token::new),
            expires_at: time(STATE_EXPIRES_AT),
            refresh_at: time(STATE_REFRESH_AT),
            otp_used: get(STATE_OTP_USED).and_then(|v| Fingerprint::parse(&v)),
        }
    }

    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        let mut d = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            d.insert(k.to_owned(), ByteString(v.into_bytes()));
        };
        if let Some(t) = &self.refresh_token {
            put(STATE_REFRESH_TOKEN, t.expose().to_owned());
        }
        if let Some(t) = self.expires_at {
            put(STATE_EXPIRES_AT, t.to_string());
        }
        if let Some(t) = self.refresh_at {
            put(STATE_REFRESH_AT, t.to_string());
        }
        if let Some(f) = &self.otp_used {
            put(STATE_OTP_USED, f.to_string());
        }
        d
    }
}

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

/// The token endpoint's answer, as `outbound::Prober::post_form` saw it.
#[derive(Clone, Debug)]
pub struct Answer {
    pub transport: Transport,
    pub body: Vec<u8>,
    pub back_off_until: Option<Timestamp>,
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
    /// The grant was refused (wrong password, revoked or expired refresh token).
    Rejected(String),
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

/// The values of a grant's form that are never shown: all but the grant type. A quote of the
/// endpoint's answer masks each of them.
pub fn submitted<'a>(form: &'a [(&'static str, String)]) -> Vec<&'a str> {
    form.iter()
        .filter(|(k, _)| *k != "grant_type")
        .map(|(_, v)| v.as_str())
        .collect()
}

/// What the token endpoint's answer means. `submitted`: the secret values of the request
/// (`submitted`), masked wherever the answer is quoted.
pub fn interpret(a: &Answer, submitted: &[&str]) -> Outcome {
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
        Transport::Answered(400 | 401 | 403) => Outcome::Rejected(
            error_body::quote(&a.body, Quoting::OAuth, submitted)
                .unwrap_or_else(|| "the token endpoint refused the grant".into()),
        ),
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
/// whatever the access token of the moment.
pub fn account(login: &Login) -> crate::decide::token::Fingerprint {
    let user = login.username.as_ref().map_or("", |u| u.expose());
    crate::decide::token::Fingerprint::of(format!("oauth:{user}").as_bytes())
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
    /// Refused, and no other grant is left.
    Refused(String),
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
mod tests {
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
            interpret(&ok, &[]),
            Outcome::Issued {
                access_token: Token::new("a1"),
                refresh_token: Some(Token::new("r2")),
                expires_in: Duration::from_secs(3599)
            }
        );
        assert_eq!(interpret(&answer(202, ""), &[]), Outcome::OtpRequired);
        assert_eq!(
            interpret(
                &answer(
                    400,
                    r#"{"error":"invalid_grant","error_description":"The user name or password is incorrect."}"#
                ),
                &[]
            ),
            Outcome::Rejected("The user name or password is incorrect.".into())
        );
        assert!(matches!(interpret(&answer(429, ""), &[]), Outcome::RateLimited(_)));
        assert!(matches!(interpret(&answer(503, ""), &[]), Outcome::Unavailable(_)));
        assert!(matches!(
            interpret(&answer(200, "not json"), &[]),
            Outcome::Unavailable(_)
        ));
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
        let refused = || Outcome::Rejected("invalid_grant".into());
        let j = Jitter::new(0.0);
        assert_eq!(
            next(Grant::Refresh, refused(), false, &l, &s, t(0), j),
            Next::SignInAgain
        );
        assert_eq!(
            next(Grant::Refresh, refused(), true, &l, &s, t(0), j),
            Next::Refused("invalid_grant".into())
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
}
