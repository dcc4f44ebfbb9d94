//! The signed JWTs of RFC 7523: the jwt-bearer grant's assertion and private_key_jwt's client
//! assertion, made from the login Secret's private key. Signing is computation (RS256 and ES256
//! signatures are deterministic), so it is decided here; the key never leaves this module's
//! callers except inside the signature.

use std::time::Duration;

use jiff::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::crd::oauth::AssertionAlgorithm;
use crate::decide::token::Token;

/// What an assertion says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Claims {
    pub iss: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub aud: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub iat: i64,
    pub exp: i64,
    /// A unique id, so a server that remembers ids does not refuse a second assertion made in the
    /// same second.
    pub jti: String,
}

impl Claims {
    pub fn new(iss: String, aud: String, now: Timestamp, lifetime: Duration) -> Self {
        let iat = now.as_second();
        let exp = iat.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(3600));
        // Unique per instant and issuer; not a secret.
        let jti = crate::decide::token::Fingerprint::of(format!("{iss}\0{}", now.as_nanosecond()).as_bytes())
            .as_str()
            .trim_start_matches("sha256:")
            .to_owned();
        Self {
            iss,
            sub: None,
            aud,
            scope: None,
            iat,
            exp,
            jti,
        }
    }
}

/// The longest private key PEM signed with: an RSA key of 4096 bits is about 3.3 KB of PEM.
/// Signing runs in the reconcile, on every pass that builds the grant, and its cost grows with
/// the cube of the key's size: a larger key is refused before it is parsed.
pub const MAX_KEY_PEM: usize = 4096;

/// Why the private key cannot sign. Messages name the key, never its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyProblem {
    /// Over [`MAX_KEY_PEM`]: an RSA key over about 4096 bits.
    TooLarge,
    /// Not a PEM private key of the algorithm's kind (RSA for RS256, P-256 PKCS#8 for ES256).
    NotAKey,
    /// It parsed, and signing failed (a key of another curve or size).
    CannotSign,
}

/// Signs `claims` with the PEM `key`. Keys pasted from a JSON file often hold `\n` as two
/// characters: those are read as line breaks.
pub fn sign(
    algorithm: AssertionAlgorithm,
    key: &Token,
    key_id: Option<&Token>,
    claims: &Claims,
) -> Result<Token, KeyProblem> {
    let pem = key.expose().replace("\\n", "\n");
    if pem.len() > MAX_KEY_PEM {
        return Err(KeyProblem::TooLarge);
    }
    let (alg, key) = match algorithm {
        AssertionAlgorithm::RS256 => (Algorithm::RS256, EncodingKey::from_rsa_pem(pem.as_bytes())),
        AssertionAlgorithm::ES256 => (Algorithm::ES256, EncodingKey::from_ec_pem(pem.as_bytes())),
    };
    let key = key.map_err(|_| KeyProblem::NotAKey)?;
    let mut header = Header::new(alg);
    header.kid = key_id.map(|k| k.expose().to_owned());
    jsonwebtoken::encode(&header, claims, &key)
        .map(Token::new)
        .map_err(|_| KeyProblem::CannotSign)
}
