//! Verifying assertions (RFC 7523): a jwt-bearer grant's and a `private_key_jwt` client's.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::AssertionFault;

/// How far `iat` may stray from now (clock skew between operator and server).
const IAT_SKEW_SECS: i64 = 300;
/// Google's rule: an assertion lives at most an hour.
const MAX_LIFETIME_SECS: i64 = 3_600;

pub(super) struct Expect<'a> {
    pub iss: &'a str,
    pub sub: Option<&'a str>,
    pub aud: &'a str,
    /// Google's grant takes RS256 only; a client's key may also be P-256 (ES256).
    pub rs256_only: bool,
}

/// The `iss` an assertion claims, unverified: which key to verify it with.
pub(super) fn issuer(assertion: &str) -> Result<String, AssertionFault> {
    let claims: Value =
        jsonwebtoken::dangerous::insecure_decode_claims(assertion).map_err(|_| AssertionFault::Malformed)?;
    claims["iss"]
        .as_str()
        .map(str::to_owned)
        .ok_or(AssertionFault::Malformed)
}

/// Verifies `assertion` with the public key `pem` and returns its claims.
pub(super) fn verify(assertion: &str, pem: &str, expect: &Expect<'_>) -> Result<Value, AssertionFault> {
    let (key, alg) = match DecodingKey::from_rsa_pem(pem.as_bytes()) {
        Ok(key) => (key, Algorithm::RS256),
        Err(_) if !expect.rs256_only => DecodingKey::from_ec_pem(pem.as_bytes())
            .map(|key| (key, Algorithm::ES256))
            .map_err(|_| AssertionFault::Signature)?,
        Err(_) => return Err(AssertionFault::Signature),
    };
    let mut v = Validation::new(alg);
    v.set_audience(&[expect.aud]);
    v.set_issuer(&[expect.iss]);
    let mut required = vec!["exp", "iss", "aud"];
    if let Some(sub) = expect.sub {
        v.sub = Some(sub.to_owned());
        required.push("sub");
    }
    v.set_required_spec_claims(&required);
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &v)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => AssertionFault::Signature,
            ErrorKind::InvalidAudience => AssertionFault::Audience,
            ErrorKind::InvalidIssuer => AssertionFault::UnknownIssuer,
            ErrorKind::InvalidSubject => AssertionFault::Subject,
            ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => AssertionFault::Lifetime,
            _ => AssertionFault::Malformed,
        })?
        .claims;
    // "Exactly": one string, not a list that happens to contain it.
    if claims["aud"].as_str() != Some(expect.aud) {
        return Err(AssertionFault::Audience);
    }
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Err(AssertionFault::Malformed);
    };
    let now = jiff::Timestamp::now().as_second();
    if (iat - now).abs() > IAT_SKEW_SECS || exp - iat > MAX_LIFETIME_SECS || exp <= iat {
        return Err(AssertionFault::Lifetime);
    }
    Ok(claims)
}
