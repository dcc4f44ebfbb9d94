//! Token values: a wrapper that never prints the secret, fingerprints, format checks and the
//! expiry a JWT carries.

use std::fmt;

use jiff::Timestamp;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::decide::provider::TokenFormat;

/// A token value. `Debug` and `Display` show only its fingerprint, so a token can be carried in
/// structs that get logged without leaking. Read the value with [`Token::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself: only for the HTTP header and the managed Secret.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.0.as_bytes())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.fingerprint())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {}>", self.fingerprint())
    }
}

/// `sha256:` + the first 12 hex digits of the token's SHA-256: enough to tell tokens apart in
/// status and logs, far too little to recover anything.
///
/// Those 48 bits are shown to whoever reads a status, and a token with the same 48 bits can be
/// searched for in hours: so tables that decide for a token (its hourly budget, its back-off, the
/// answers shared between its holders) key it by 64 other bits of the digest, which nothing shows
/// ([`Fingerprint::key`]). Equality and order are the shown form's.
#[derive(Clone, Debug)]
pub struct Fingerprint {
    shown: String,
    key: u64,
}

impl PartialEq for Fingerprint {
    fn eq(&self, other: &Self) -> bool {
        self.shown == other.shown
    }
}

impl Eq for Fingerprint {}

impl std::hash::Hash for Fingerprint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.shown.hash(state);
    }
}

impl PartialOrd for Fingerprint {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Fingerprint {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.shown.cmp(&other.shown)
    }
}

impl Fingerprint {
    pub fn of(bytes: &[u8]) -> Self {
        let digest = Sha256::digest(bytes);
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let mut hidden = [0u8; 8];
        hidden.copy_from_slice(&digest[24..32]);
        Self {
            shown: format!("sha256:{hex}"),
            key: u64::from_be_bytes(hidden),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.shown
    }

    /// The key of per-token tables: 64 bits of the digest that the fingerprint does not show, so
    /// a token found to share the shown 48 bits shares nothing else. (A fingerprint read back from
    /// its text has only the shown bits, and is never a table's key.)
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Reads a fingerprint back from its text form.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("sha256:")?;
        (hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self {
            shown: s.to_owned(),
            key: u64::from_str_radix(hex, 16).unwrap_or(0),
        })
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Validity window read from a token (JWT `exp`/`nbf`), when it carries one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lifetime {
    pub not_before: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
}

impl Lifetime {
    /// Whether the token has expired at `now`, by its own claim or a declared `not_after`.
    pub fn expired(&self, not_after: Option<Timestamp>, now: Timestamp) -> bool {
        self.expires_at.into_iter().chain(not_after).any(|e| e <= now)
    }
}

/// Why a token was refused before any request was sent. Messages never contain the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("the token is empty")]
    Empty,
    #[error(
        "the token is {bytes} bytes; tenantcred accepts at most {max} for this provider (provider tokens are far smaller): check that the Secret holds the token and nothing else"
    )]
    TooLarge { bytes: usize, max: usize },
    #[error("the token has leading or trailing whitespace (often a trailing newline from `echo` or a file); remove it")]
    SurroundingWhitespace,
    #[error("the token contains whitespace or control characters and cannot be sent in an HTTP header")]
    IllegalCharacters,
    #[error("a {provider} key starts with `{prefix}`; this value does not")]
    MissingPrefix { provider: String, prefix: String },
    #[error("a {provider} token is a JWT (three base64url parts separated by dots); this value does not parse as one")]
    NotAJwt { provider: String },
    #[error("a {provider} token matches the pattern its ApiProvider gives (token.pattern); this value does not")]
    NoMatch { provider: String },
}

/// The largest token accepted anywhere (Secrets, `tenantcred check`). Provider tokens are well
/// under 2 KiB; the bound keeps a hostile value out of JWT parsing, HTTP headers and the managed
/// Secret (which holds the token twice, and which the API server refuses over 1 MiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Checks a raw token against what the provider issues and reads its lifetime.
pub fn check(raw: &str, format: &TokenFormat) -> Result<(Token, Lifetime), FormatError> {
    if raw.is_empty() {
        return Err(FormatError::Empty);
    }
    let max = format.max_bytes.min(MAX_TOKEN_BYTES);
    if raw.len() > max {
        return Err(FormatError::TooLarge { bytes: raw.len(), max });
    }
    if raw.trim() != raw {
        return Err(FormatError::SurroundingWhitespace);
    }
    if raw
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(FormatError::IllegalCharacters);
    }
    let provider = || format.provider.clone();
    if let Some(prefix) = &format.prefix
        && (!raw.starts_with(prefix.as_str()) || raw.len() == prefix.len())
    {
        return Err(FormatError::MissingPrefix {
            provider: provider(),
            prefix: prefix.clone(),
        });
    }
    if let Some(pattern) = &format.pattern
        && !pattern.is_match(raw)
    {
        return Err(FormatError::NoMatch { provider: provider() });
    }
    let lifetime = if format.jwt {
        jwt_lifetime(raw).ok_or_else(|| FormatError::NotAJwt { provider: provider() })?
    } else if format.prefix.is_some() {
        Lifetime::default()
    } else {
        // Opaque keys may still be JWTs (Virtuous OAuth access tokens are): read exp when present.
        jwt_lifetime(raw).unwrap_or_default()
    };
    Ok((Token::new(raw), lifetime))
}

#[derive(Deserialize)]
struct TimeClaims {
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
}

/// Reads `exp`/`nbf` without verifying the signature: tenantcred is not the token's audience and
/// holds no key; the provider's answer to the probe is what proves validity.
fn jwt_lifetime(raw: &str) -> Option<Lifetime> {
    if raw.split('.').count() != 3 {
        return None;
    }
    // The library's errors are dropped unread: they could quote parts of the token.
    let header = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(raw).ok()?;
    let claims: TimeClaims = serde_json::from_value(header.claims).ok()?;
    Some(Lifetime {
        expires_at: claims.exp.as_ref().and_then(numeric_date),
        not_before: claims.nbf.as_ref().and_then(numeric_date),
    })
}

fn numeric_date(v: &serde_json::Value) -> Option<Timestamp> {
    let secs = v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))?;
    Timestamp::from_second(secs).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn tokens_over_8_kib_are_refused_before_any_parsing() {
        let huge = format!("cs_live_{}", "a".repeat(MAX_TOKEN_BYTES));
        let fmt = charitystack();
        let err = check(&huge, &fmt).expect_err("too large");
        assert_eq!(
            err,
            FormatError::TooLarge {
                bytes: huge.len(),
                max: MAX_TOKEN_BYTES
            }
        );
        assert!(!err.to_string().contains("aaaa"), "never quotes the token");
        let at_limit = "a".repeat(MAX_TOKEN_BYTES);
        assert!(check(&at_limit, &TokenFormat::opaque("generic")).is_ok());
    }

    fn charitystack() -> TokenFormat {
        TokenFormat {
            prefix: Some("cs_live_".into()),
            ..TokenFormat::opaque("charitystack")
        }
    }

    fn raise() -> TokenFormat {
        TokenFormat {
            jwt: true,
            ..TokenFormat::opaque("raise")
        }
    }

    #[test]
    fn a_defined_pattern_and_size_are_checked_without_quoting_the_token() {
        let fmt = TokenFormat {
            pattern: Some(crate::decide::provider::TokenPattern::compile("ghp_[A-Za-z0-9]{36}").expect("compiles")),
            max_bytes: 48,
            ..TokenFormat::opaque("github")
        };
        let good = format!("ghp_{}", "a".repeat(36));
        assert!(check(&good, &fmt).is_ok());
        // Anchored: a match inside a longer value is no match.
        let err = check(&format!("x{good}"), &fmt).expect_err("anchored");
        assert_eq!(
            err,
            FormatError::NoMatch {
                provider: "github".into()
            }
        );
        let err = check(&"a".repeat(49), &fmt).expect_err("too large");
        assert_eq!(err, FormatError::TooLarge { bytes: 49, max: 48 });
        let err = check("ghp_SECRETSHORT", &fmt).expect_err("no match");
        assert_eq!(
            err,
            FormatError::NoMatch {
                provider: "github".into()
            }
        );
        assert!(!err.to_string().contains("SECRET"));
    }

    /// An unsigned-looking JWT with the given claims (the signature part is junk; nobody checks it).
    pub fn jwt(claims: serde_json::Value) -> String {
        use base64_url as b;
        format!(
            "{}.{}.c2lnbmF0dXJl",
            b::encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            b::encode(claims.to_string().as_bytes())
        )
    }

    /// Minimal base64url (no padding) for test fixtures.
    mod base64_url {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        pub fn encode(input: &[u8]) -> String {
            let mut out = String::new();
            for chunk in input.chunks(3) {
                let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
                for i in 0..=chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let t = Token::new("cs_live_supersecretvalue");
        for shown in [format!("{t:?}"), format!("{t}"), format!("{:?}", Some(&t))] {
            assert!(!shown.contains("supersecret"), "{shown}");
            assert!(shown.contains("sha256:"), "{shown}");
        }
    }

    #[test]
    fn fingerprint_is_sha256_prefix_with_12_hex() {
        let fp = Fingerprint::of(b"abc");
        // sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(fp.as_str(), "sha256:ba7816bf8f01");
        // Tables key it by bits nothing shows: the digest's last 8 bytes.
        assert_eq!(fp.key(), 0xb410_ff61_f200_15ad);
        assert_eq!(Fingerprint::parse("sha256:ba7816bf8f01"), Some(fp), "equal as shown");
    }

    #[test]
    fn whitespace_and_prefix_and_jwt_checks() {
        let cs = &charitystack();
        let raise = &raise();
        assert_eq!(check("", cs), Err(FormatError::Empty));
        assert_eq!(check("cs_live_abc\n", cs), Err(FormatError::SurroundingWhitespace));
        assert_eq!(check(" cs_live_abc", cs), Err(FormatError::SurroundingWhitespace));
        assert_eq!(check("cs_live_a bc", cs), Err(FormatError::IllegalCharacters));
        assert!(matches!(
            check("sk_live_abc", cs),
            Err(FormatError::MissingPrefix { .. })
        ));
        assert!(matches!(check("cs_live_", cs), Err(FormatError::MissingPrefix { .. })));
        assert!(check("cs_live_abc", cs).is_ok());
        assert!(matches!(check("not.a.jwt", raise), Err(FormatError::NotAJwt { .. })));
        assert!(matches!(check("opaque", raise), Err(FormatError::NotAJwt { .. })));
        let (_, life) = check(
            &jwt(serde_json::json!({"exp": 1_900_000_000, "nbf": 1_700_000_000})),
            raise,
        )
        .expect("valid jwt");
        assert_eq!(life.expires_at, Timestamp::from_second(1_900_000_000).ok());
        assert_eq!(life.not_before, Timestamp::from_second(1_700_000_000).ok());
        let (_, life) = check(&jwt(serde_json::json!({"sub": "x"})), raise).expect("jwt without exp");
        assert_eq!(life, Lifetime::default());
    }

    #[test]
    fn errors_never_echo_the_token() {
        let secret = "eyJhbGciOi.SECRETPAYLOAD";
        let err = check(secret, &raise()).expect_err("not a jwt");
        assert!(!err.to_string().contains("SECRET"));
    }

    #[test]
    fn opaque_tokens_that_are_jwts_still_yield_exp() {
        let opaque = &TokenFormat::opaque("virtuous");
        let (_, life) = check(&jwt(serde_json::json!({"exp": 1_900_000_000})), opaque).expect("ok");
        assert!(life.expires_at.is_some());
        let (_, life) = check("plainapikey", opaque).expect("ok");
        assert_eq!(life, Lifetime::default());
    }
}
