//! Shared builders for test data.

use serde_json::{Value, json};

/// base64url without padding, as JWTs use.
pub fn b64url(input: &[u8]) -> String {
    crate::apiserver::b64(input)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// An unsigned-looking JWT with these claims (tenantcred reads claims without verifying).
pub fn jwt(claims: Value) -> String {
    format!(
        "{}.{}.c2ln",
        b64url(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    )
}

/// A Deployment whose pod template tenantcred may annotate (no pod runs on either backend).
pub fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
}
