//! An `ApiProvider`'s `oauth` read into a [`Definition`] (the types are the provider profile's,
//! `decide::provider::oauth`), or refused with the field at fault.

use std::time::Duration;

pub use crate::decide::provider::oauth::{
    AnswerRules, Assertion, Definition, Endpoint, Expiry, Field, MAX_ASSERTION_LIFETIME, default_answer, virtuous,
};

use crate::crd::oauth::{ClientAuthentication, GrantType, LoginField, ProviderOAuth};
use crate::decide::provider::ProviderHost;
use crate::decide::provider::location::{path, url_on_hosts};
use crate::decide::{duration, text};

/// Form fields the grants and the client authentication set: no static parameter or password
/// field may send one a second time.
const RESERVED: [&str; 12] = [
    "grant_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "assertion",
    "refresh_token",
    "username",
    "password",
    "scope",
    "audience",
    "resource",
];

/// Reads `oauth` of a definition whose hosts are `hosts`.
pub fn read(spec: &ProviderOAuth, hosts: &[ProviderHost]) -> Result<Definition, String> {
    let endpoint = match (&spec.token_path, &spec.token_url) {
        (Some(p), None) => Endpoint::Path(path("oauth.tokenPath", p)?),
        (None, Some(u)) => Endpoint::Url(token_url(u, hosts)?),
        _ => return Err("exactly one of oauth.tokenPath and oauth.tokenUrl must be set".into()),
    };
    if spec.grants.is_empty() {
        return Err("oauth.grants must name at least one grant".into());
    }
    let mut seen = Vec::new();
    for g in &spec.grants {
        if seen.contains(g) {
            return Err(format!("oauth.grants names {} twice", g.as_str()));
        }
        seen.push(*g);
    }
    let needs_assertion = spec.grants.contains(&GrantType::JwtBearer)
        || spec.client_authentication == ClientAuthentication::PrivateKeyJwt;
    if needs_assertion && spec.assertion.is_none() {
        return Err("oauth.assertion is needed by the jwt-bearer grant and by private_key_jwt".into());
    }
    for (k, v) in &spec.parameters {
        if RESERVED.contains(&k.as_str()) {
            return Err(format!(
                "oauth.parameters.{k} is set by the grant or the client authentication"
            ));
        }
        if text::has_control(k) || text::has_control(v) {
            return Err(text::holds_controls("oauth.parameters", k));
        }
    }
    let password_fields = spec.password_fields.iter().map(field).collect::<Result<Vec<_>, _>>()?;
    let assertion = spec.assertion.as_ref().map(assertion).transpose()?;
    let refresh_idle_lifetime = spec
        .refresh_token_idle_lifetime
        .as_deref()
        .map(|v| duration::parse(v).map_err(|e| format!("oauth.refreshTokenIdleLifetime: {e}")))
        .transpose()?;
    if refresh_idle_lifetime.is_some_and(|d| d < Duration::from_secs(3600)) {
        return Err("oauth.refreshTokenIdleLifetime must be at least 1h".into());
    }
    Ok(Definition {
        endpoint,
        grants: spec.grants.clone(),
        client_auth: spec.client_authentication,
        scopes: spec.scopes.clone(),
        audience: spec.audience.clone(),
        resource: spec.resource.clone(),
        parameters: spec.parameters.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        password_fields,
        code_required_status: spec.code_required_status,
        assertion,
        answer: read_answer(&spec.answer)?,
        refresh_idle_lifetime,
    })
}

/// An absolute token URL: a provider's URL (https, on one of its hosts, no user info) without a
/// fragment.
fn token_url(written: &str, hosts: &[ProviderHost]) -> Result<String, String> {
    let url = url_on_hosts("oauth.tokenUrl", written, hosts)?;
    if url::Url::parse(&url).is_ok_and(|u| u.fragment().is_some()) {
        return Err("oauth.tokenUrl must not hold a fragment".into());
    }
    Ok(url)
}

fn field(f: &LoginField) -> Result<Field, String> {
    if RESERVED.contains(&f.name.as_str()) {
        return Err(format!(
            "oauth.passwordFields: {} is sent by the grant or the client authentication itself",
            f.name
        ));
    }
    Ok(Field {
        name: f.name.clone(),
        key: f.key.clone().unwrap_or_else(|| f.name.clone()),
        single_use: f.single_use,
    })
}

fn assertion(a: &crate::crd::oauth::AssertionSpec) -> Result<Assertion, String> {
    let lifetime = match a.lifetime.as_deref() {
        None => MAX_ASSERTION_LIFETIME,
        Some(v) => duration::parse(v).map_err(|e| format!("oauth.assertion.lifetime: {e}"))?,
    };
    if !(Duration::from_secs(60)..=MAX_ASSERTION_LIFETIME).contains(&lifetime) {
        return Err("oauth.assertion.lifetime must be from 1m to 1h".into());
    }
    Ok(Assertion {
        algorithm: a.algorithm,
        issuer_key: a.issuer_key.clone().unwrap_or_else(|| "client_id".into()),
        subject_key: a.subject_key.clone(),
        audience: a.audience.clone(),
        lifetime,
        scope_in_claims: a.scope_in_claims,
    })
}

fn read_answer(a: &crate::crd::oauth::AnswerSpec) -> Result<AnswerRules, String> {
    let expiry = match (&a.expires_in, &a.expires_at) {
        (Some(_), Some(_)) => return Err("oauth.answer.expiresIn and expiresAt are exclusive".into()),
        (_, Some(at)) => Expiry::At(at.clone()),
        (Some(i), None) => Expiry::In(i.clone()),
        (None, None) => Expiry::In("expires_in".into()),
    };
    let lifetime = a
        .lifetime
        .as_deref()
        .map(|v| duration::parse(v).map_err(|e| format!("oauth.answer.lifetime: {e}")))
        .transpose()?;
    if lifetime.is_some_and(|d| d < Duration::from_secs(60)) {
        return Err("oauth.answer.lifetime must be at least 1m".into());
    }
    Ok(AnswerRules {
        access_token: a.access_token.clone(),
        expiry,
        lifetime,
        refresh_token: a.refresh_token.clone(),
        refresh_token_expires_in: a.refresh_token_expires_in.clone(),
        success: a.success.as_ref().map(|s| (s.field.clone(), s.equals.clone())),
        error: a.error.clone(),
        error_codes: a.error_codes.clone(),
    })
}
