//! What of a provider's error answer may be shown: in a condition (which every reader of the
//! credential sees), an event, a log line or `tenantcred check`. Nothing the provider wrote is
//! ever copied: an endpoint may echo what it was sent (the token, the password, the refresh
//! token, the code), percent-encoded, base64-encoded, cut short or upper-cased, and no filter
//! recognises every such form. So an answer is shown only as shapes the operator chooses from an
//! allow-list: the HTTP status, an RFC 6749/6750 error code, a known media type, a length, and a
//! fingerprint of the body a person can match against the provider's own logs.

use std::fmt;

use sha2::{Digest, Sha256};

/// The `error` codes of RFC 6749 §5.2 and RFC 6750 §3.1; any other value is `Other`, never quoted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OAuthError {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    InvalidToken,
    InsufficientScope,
    /// An `error` the RFCs do not define: provider text, so only its presence is shown.
    Other,
}

impl OAuthError {
    const KNOWN: [(&'static str, OAuthError); 8] = [
        ("invalid_request", Self::InvalidRequest),
        ("invalid_client", Self::InvalidClient),
        ("invalid_grant", Self::InvalidGrant),
        ("unauthorized_client", Self::UnauthorizedClient),
        ("unsupported_grant_type", Self::UnsupportedGrantType),
        ("invalid_scope", Self::InvalidScope),
        ("invalid_token", Self::InvalidToken),
        ("insufficient_scope", Self::InsufficientScope),
    ];

    /// The code an `error` value names: exactly as the RFCs spell it, else `Other`.
    pub fn parse(value: &str) -> Self {
        Self::KNOWN
            .iter()
            .find(|(code, _)| *code == value)
            .map_or(Self::Other, |(_, e)| *e)
    }

    pub fn as_str(self) -> &'static str {
        Self::KNOWN
            .iter()
            .find(|(_, e)| *e == self)
            .map_or("a non-standard error code", |(code, _)| code)
    }
}

/// The body's media type, from an allow-list; anything else (parameters included) is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    Json,
    ProblemJson,
    Text,
    Html,
    Xml,
    Form,
    Other,
}

impl MediaType {
    const KNOWN: [(&'static str, MediaType); 7] = [
        ("application/json", Self::Json),
        ("application/problem+json", Self::ProblemJson),
        ("text/plain", Self::Text),
        ("text/html", Self::Html),
        ("application/xml", Self::Xml),
        ("text/xml", Self::Xml),
        ("application/x-www-form-urlencoded", Self::Form),
    ];

    /// A `Content-Type` header value: its type and subtype (case-insensitive), parameters
    /// dropped unread.
    pub fn parse(header: &str) -> Self {
        let essence = header.split(';').next().unwrap_or_default().trim();
        Self::KNOWN
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(essence))
            .map_or(Self::Other, |(_, m)| *m)
    }

    pub fn as_str(self) -> &'static str {
        Self::KNOWN
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("another media type", |(name, _)| name)
    }
}

/// Everything shown of an error answer. Holds no byte the provider chose: its `Display` is safe
/// anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodySummary {
    pub status: u16,
    /// The JSON body's `error`, when it has one.
    pub oauth_error: Option<OAuthError>,
    pub media_type: Option<MediaType>,
    /// Bytes read (reads are bounded, see `outbound::BODY_LIMIT`).
    pub len: usize,
    /// The first 4 bytes of the body's SHA-256.
    pub fingerprint: [u8; 4],
}

impl BodySummary {
    /// `media_type`: the answer's `Content-Type` header, read with `MediaType::parse`.
    pub fn of(status: u16, media_type: Option<MediaType>, body: &[u8]) -> Self {
        let oauth_error = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(OAuthError::parse));
        let digest = Sha256::digest(body);
        Self {
            status,
            oauth_error,
            media_type,
            len: body.len(),
            fingerprint: [digest[0], digest[1], digest[2], digest[3]],
        }
    }
}

/// For example `HTTP 400, invalid_grant, application/json, 84 bytes sha256:1c0ffee2`.
impl fmt::Display for BodySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(e) = self.oauth_error {
            write!(f, ", {}", e.as_str())?;
        }
        if let Some(m) = self.media_type {
            write!(f, ", {}", m.as_str())?;
        }
        if self.len == 0 {
            return write!(f, ", empty body");
        }
        let [a, b, c, d] = self.fingerprint;
        write!(f, ", {} bytes sha256:{a:02x}{b:02x}{c:02x}{d:02x}", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allow_listed_shapes_are_shown() {
        let body = br#"{"error":"invalid_grant","error_description":"password hunter2 is wrong"}"#;
        let s = BodySummary::of(400, Some(MediaType::parse("Application/JSON; charset=hunter2")), body);
        assert_eq!(s.oauth_error, Some(OAuthError::InvalidGrant));
        assert_eq!(s.media_type, Some(MediaType::Json));
        let shown = s.to_string();
        let shapes = format!(
            "HTTP 400, invalid_grant, application/json, {} bytes sha256:",
            body.len()
        );
        assert!(shown.starts_with(&shapes), "{shown}");
        assert_eq!(shown.len(), shapes.len() + 8);
        assert!(!shown.contains("hunter2") && !shown.contains("wrong"), "{shown}");
    }

    #[test]
    fn provider_words_never_pass_as_codes_or_media_types() {
        let echoed = BodySummary::of(
            401,
            Some(MediaType::parse("x-secret/hunter2")),
            br#"{"error":"hunter2"}"#,
        );
        assert_eq!(echoed.oauth_error, Some(OAuthError::Other));
        assert_eq!(echoed.media_type, Some(MediaType::Other));
        assert_eq!(MediaType::parse("text/plain; hunter2"), MediaType::Text);
        assert!(!echoed.to_string().contains("hunter2"), "{echoed}");
        // Codes are matched as the RFCs spell them: a case-changed echo is not one.
        assert_eq!(OAuthError::parse("INVALID_GRANT"), OAuthError::Other);
        assert_eq!(OAuthError::parse("invalid_token"), OAuthError::InvalidToken);
        // A non-string `error`, plain text, HTML, bytes that are not UTF-8: no code.
        for body in [
            &br#"{"error":{"x":1}}"#[..],
            b"Authorization has been denied",
            b"<html/>",
            &[0xff, 0xfe],
        ] {
            assert_eq!(BodySummary::of(401, None, body).oauth_error, None);
        }
    }

    #[test]
    fn an_empty_body_says_so_and_different_bodies_fingerprint_apart() {
        assert_eq!(BodySummary::of(502, None, b"").to_string(), "HTTP 502, empty body");
        let a = BodySummary::of(401, Some(MediaType::Text), b"denied 1");
        let b = BodySummary::of(401, Some(MediaType::Text), b"denied 2");
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint, BodySummary::of(401, None, b"denied 1").fingerprint);
        assert!(
            a.to_string().starts_with("HTTP 401, text/plain, 8 bytes sha256:"),
            "{a}"
        );
    }
}
