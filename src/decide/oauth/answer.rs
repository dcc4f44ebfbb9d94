//! What a token endpoint's answer means, read with the definition's field names. A refusal keeps
//! only a summary of the answer (`error_body`): the endpoint may echo the form it was sent.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use super::definition::{AnswerRules, Definition, Expiry};
use crate::decide::error_body::{BodySummary, MediaType, OAuthError};
use crate::decide::provider::TokenFormat;
use crate::decide::token::{self, FormatError, Token};
use crate::decide::verdict::{Transport, TransportFailure};

/// The token endpoint's answer, as `outbound` saw it.
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

/// The longest lifetime believed of an access or refresh token (a silly value cannot make the
/// operator wait forever; the budget caps grants per hour the other way).
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Issued {
        access_token: Token,
        refresh_token: Option<Token>,
        expires_in: Duration,
        /// When the server states how long the refresh token lives.
        refresh_expires_in: Option<Duration>,
    },
    /// The server asked for a code it sent the user (the definition's codeRequiredStatus).
    CodeRequired,
    /// The grant was refused: what may be shown of the answer, with its RFC 6749 code (a
    /// server's own code mapped through the definition).
    Refused(BodySummary),
    /// A success that cannot be used: why (no secret in it).
    Unusable(Unusable),
    /// 429: come back later.
    RateLimited(Option<Timestamp>),
    /// 5xx, timeouts, connection failures.
    Unavailable(String),
    /// The egress rules refused the endpoint's addresses; nothing was sent.
    NotAllowed(String),
}

impl Outcome {
    /// Whether the answer's body holds no token, so a person may see it on their own terminal
    /// (`tenantcred check --show-body`): a refusal, a page that is not JSON, a request for a
    /// code, a rate limit, an outage. An issued or otherwise usable-looking answer may hold an
    /// access or refresh token and is never shown.
    pub fn holds_no_token(&self) -> bool {
        matches!(
            self,
            Self::Refused(_)
                | Self::Unusable(Unusable::NotJson(_))
                | Self::CodeRequired
                | Self::RateLimited(_)
                | Self::Unavailable(_)
        )
    }
}

/// Why a successful answer cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// Not JSON (an HTML login page, a proxy's error): its summary.
    NotJson(BodySummary),
    /// JSON without the access token's field.
    NoAccessToken { field: String },
    /// No expiry in the answer and none declared (answer.lifetime).
    MissingExpiry { field: String },
    /// The access token fails the provider's token format.
    BadAccessToken(FormatError),
    /// The success rule's field does not say success, yet the answer holds an access token: the
    /// rule is wrong (a refusal holds no token), and the login is not to blame.
    SuccessRuleUnmet { field: String },
}

/// Whether an answer with this status means anything without its body: a success's body is the
/// token, a refusal's names its error code; a 429's or an outage's body tells nothing. An answer
/// whose body the deadline cut is no answer when its body is needed (`outbound`).
pub fn body_needed(status: u16) -> bool {
    matches!(status, 200 | 400 | 401 | 403)
}

/// Reads `a` as `def` says, checking the access token against `format`.
pub fn interpret(def: &Definition, format: &TokenFormat, a: &Answer, now: Timestamp) -> Outcome {
    let rules = &def.answer;
    match a.transport {
        Transport::Answered(code) if def.code_required_status == Some(code) => Outcome::CodeRequired,
        Transport::Answered(200) => success(rules, format, a, now),
        Transport::Answered(code @ (400 | 401 | 403)) => Outcome::Refused(summary(rules, code, a)),
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

/// The error code of a refusal: the definition's error field, a server's own code mapped to
/// RFC 6749's, never the server's text.
fn summary(rules: &AnswerRules, status: u16, a: &Answer) -> BodySummary {
    let mut s = BodySummary::of(status, a.media_type, &a.body);
    let code = serde_json::from_slice::<Value>(&a.body)
        .ok()
        .and_then(|v| field_text(&v, &rules.error));
    s.oauth_error = code.map(|c| match rules.error_codes.get(&c) {
        Some(mapped) => OAuthError::parse(mapped.as_str()),
        None => OAuthError::parse(&c),
    });
    s
}

/// A field's value as text: a string as is, a number or boolean as JSON writes it.
fn field_text(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn success(rules: &AnswerRules, format: &TokenFormat, a: &Answer, now: Timestamp) -> Outcome {
    let Ok(v) = serde_json::from_slice::<Value>(&a.body) else {
        return Outcome::Unusable(Unusable::NotJson(BodySummary::of(200, a.media_type, &a.body)));
    };
    if !v.is_object() {
        return Outcome::Unusable(Unusable::NotJson(BodySummary::of(200, a.media_type, &a.body)));
    }
    // A server that answers errors with 200 (`{"ok": false, ...}`).
    if !succeeded(rules, &v) {
        if v.get(&rules.access_token).and_then(Value::as_str).is_some()
            && let Some((field, _)) = &rules.success
        {
            return Outcome::Unusable(Unusable::SuccessRuleUnmet { field: field.clone() });
        }
        return Outcome::Refused(summary(rules, 200, a));
    }
    let Some(raw) = v.get(&rules.access_token).and_then(Value::as_str) else {
        return Outcome::Unusable(Unusable::NoAccessToken {
            field: rules.access_token.clone(),
        });
    };
    let access_token = match token::check(raw, format) {
        Ok((t, _)) => t,
        Err(e) => return Outcome::Unusable(Unusable::BadAccessToken(e)),
    };
    let Some(expires_in) = expiry(&v, &rules.expiry, now).or(rules.lifetime) else {
        let field = match &rules.expiry {
            Expiry::In(f) | Expiry::At(f) => f.clone(),
        };
        return Outcome::Unusable(Unusable::MissingExpiry { field });
    };
    let refresh_token = refresh_token(rules, &v);
    let refresh_expires_in = seconds(v.get(&rules.refresh_token_expires_in)).filter(|d| !d.is_zero());
    Outcome::Issued {
        access_token,
        refresh_token,
        expires_in: expires_in.clamp(Duration::from_secs(1), MAX_LIFETIME),
        refresh_expires_in: refresh_expires_in.map(|d| d.min(MAX_LIFETIME)),
    }
}

fn refresh_token(rules: &AnswerRules, v: &Value) -> Option<Token> {
    v.get(&rules.refresh_token)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= token::MAX_TOKEN_BYTES)
        .map(Token::new)
}

/// The refresh token of a successful answer (HTTP 200, the success rule met or an access token
/// in it) that cannot otherwise be used: a server that rotates has replaced the one sent already, so it must be kept.
pub fn rotated_in(def: &Definition, a: &Answer) -> Option<Token> {
    if a.transport != Transport::Answered(200) || def.code_required_status == Some(200) {
        return None;
    }
    let v = serde_json::from_slice::<Value>(&a.body).ok()?;
    let issued = succeeded(&def.answer, &v) || v.get(&def.answer.access_token).and_then(Value::as_str).is_some();
    issued.then(|| refresh_token(&def.answer, &v)).flatten()
}

/// Whether the success rule, when there is one, says the answer succeeded.
fn succeeded(rules: &AnswerRules, v: &Value) -> bool {
    rules
        .success
        .as_ref()
        .is_none_or(|(field, equals)| field_text(v, field).as_deref() == Some(equals.as_str()))
}

/// Seconds as a JSON number or numeric string.
fn seconds(v: Option<&Value>) -> Option<Duration> {
    let v = v?;
    let secs = v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))?;
    Some(Duration::from_secs(secs.min(MAX_LIFETIME.as_secs())))
}

fn expiry(v: &Value, rule: &Expiry, now: Timestamp) -> Option<Duration> {
    match rule {
        Expiry::In(field) => seconds(v.get(field)),
        Expiry::At(field) => {
            let at = match v.get(field)? {
                Value::String(s) => s.parse::<Timestamp>().ok().or_else(|| {
                    s.trim()
                        .parse::<i64>()
                        .ok()
                        .and_then(|n| Timestamp::from_second(n).ok())
                }),
                Value::Number(n) => n.as_i64().and_then(|n| Timestamp::from_second(n).ok()),
                _ => None,
            }?;
            Some(crate::decide::schedule::until(now, at))
        }
    }
}
