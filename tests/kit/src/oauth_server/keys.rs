//! TEST-ONLY key pairs (`tests/kit/fixtures/oauth/`): published in this repository, they protect
//! nothing. Private keys are PKCS#8 PEM, public keys SPKI PEM.

/// TEST-ONLY RSA-2048 private key (RS256).
pub const RSA_PRIVATE_PEM: &str = include_str!("../../fixtures/oauth/test-only-rsa2048.key.pem");
/// Its public key.
pub const RSA_PUBLIC_PEM: &str = include_str!("../../fixtures/oauth/test-only-rsa2048.pub.pem");
/// TEST-ONLY EC P-256 private key (ES256).
pub const EC_PRIVATE_PEM: &str = include_str!("../../fixtures/oauth/test-only-ec-p256.key.pem");
/// Its public key.
pub const EC_PUBLIC_PEM: &str = include_str!("../../fixtures/oauth/test-only-ec-p256.pub.pem");

/// `claims` signed with the test RSA key (RS256), as an operator signs an assertion.
pub fn sign_rs256(claims: &serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("the test RSA key");
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), claims, &key).expect("signed")
}

/// `claims` signed with the test P-256 key (ES256).
pub fn sign_es256(claims: &serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).expect("the test EC key");
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), claims, &key).expect("signed")
}
