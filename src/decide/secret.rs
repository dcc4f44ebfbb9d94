//! The managed Secret: what it should hold, whether an observed Secret is ours, and whether
//! applying would change anything (so a reconcile with nothing new makes no API write).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::crd::{DeletionPolicy, TenantApiCredential};
use crate::decide::token::Token;

pub const FIELD_MANAGER: &str = "tenantcred";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "tenantcred";
pub const TENANT_LABEL: &str = "tenantcred.dev/tenant";
pub const PROVIDER_LABEL: &str = "tenantcred.dev/provider";
/// Names the owning TenantApiCredential; survives `deletionPolicy: Retain`, where there is no
/// owner reference, so a re-created resource adopts its Secret and nobody else's.
pub const CREDENTIAL_LABEL: &str = "tenantcred.dev/credential";
/// `<source Secret>/<resourceVersion>` the token in the managed Secret was read from: while the
/// source's version (seen by the metadata watch) is unchanged, the token need not be read again.
/// Written only with a token change; its value never causes a write of its own.
pub const SOURCE_VERSION_ANNOTATION: &str = "tenantcred.dev/source-version";
/// The label selector of the managed-Secret watch.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=tenantcred";
/// The label selector of the Secret-metadata watch: every Secret but the managed ones (which are
/// never sources), so the API server does not send each of our own writes a second time.
pub const UNMANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by!=tenantcred";

pub const KEY_TOKEN: &str = "token";
pub const KEY_AUTHORIZATION: &str = "authorization";
pub const KEY_BASE_URL: &str = "baseUrl";
pub const KEY_TENANT: &str = "tenant";
pub const KEY_PROVIDER: &str = "provider";

/// The Secret as tenantcred applies it (server-side apply, field manager `tenantcred`).
/// `source_version` is the [`SOURCE_VERSION_ANNOTATION`] value.
pub fn desired(
    owner: &TenantApiCredential,
    name: &str,
    base_url: &str,
    token: &Token,
    source_version: Option<&str>,
) -> Secret {
    let spec = &owner.spec;
    let mut labels = spec.target.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    labels.insert(TENANT_LABEL.into(), spec.tenant.clone());
    labels.insert(PROVIDER_LABEL.into(), spec.provider.as_str().into());
    labels.insert(CREDENTIAL_LABEL.into(), owner.metadata.name.clone().unwrap_or_default());
    let mut annotations = spec.target.annotations.clone();
    if let Some(v) = source_version {
        annotations.insert(SOURCE_VERSION_ANNOTATION.into(), v.into());
    }
    let annotations = (!annotations.is_empty()).then_some(annotations);
    let owner_references = match spec.target.deletion_policy {
        DeletionPolicy::Delete => owner.controller_owner_ref(&()).map(|r| vec![r]),
        DeletionPolicy::Retain => None,
    };
    let data = BTreeMap::from([
        (KEY_TOKEN.to_string(), bytes(token.expose())),
        (
            KEY_AUTHORIZATION.to_string(),
            bytes(&format!("Bearer {}", token.expose())),
        ),
        (KEY_BASE_URL.to_string(), bytes(base_url)),
        (KEY_TENANT.to_string(), bytes(&spec.tenant)),
        (KEY_PROVIDER.to_string(), bytes(spec.provider.as_str())),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: owner.metadata.namespace.clone(),
            labels: Some(labels),
            annotations,
            owner_references,
            ..ObjectMeta::default()
        },
        type_: Some(OPAQUE.into()),
        data: Some(data),
        ..Secret::default()
    }
}

fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

/// Who a Secret with the target name belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    Absent,
    Ours,
    /// Someone else's Secret (or another credential's): never overwritten.
    Foreign,
}

pub fn ownership(existing: Option<&Observed>, credential_name: &str) -> Ownership {
    let Some(s) = existing else {
        return Ownership::Absent;
    };
    if s.labels.get(MANAGED_BY_LABEL) == Some(MANAGED_BY_VALUE)
        && s.labels.get(CREDENTIAL_LABEL) == Some(credential_name)
    {
        Ownership::Ours
    } else {
        Ownership::Foreign
    }
}

/// The source version recorded on a managed Secret.
pub fn source_version(secret: &Observed) -> Option<&str> {
    secret.annotations.get(SOURCE_VERSION_ANNOTATION)
}

/// A key of a Secret as UTF-8 text, if present and readable.
pub fn text(secret: &Secret, key: &str) -> Option<String> {
    let raw = secret.data.as_ref()?.get(key)?;
    String::from_utf8(raw.0.clone()).ok()
}

/// The token currently in a managed Secret, if readable.
pub fn token_in(secret: &Observed) -> Option<Token> {
    secret.token.clone()
}

/// The type of every Secret tenantcred writes.
pub(super) const OPAQUE: &str = "Opaque";

/// kubectl's client-side apply annotation.
pub(super) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The data keys tenantcred writes, in the order their digest takes them.
pub(super) const DATA_KEYS: [&str; 5] = [KEY_TOKEN, KEY_AUTHORIZATION, KEY_BASE_URL, KEY_TENANT, KEY_PROVIDER];

pub mod apply;
mod changes;
mod observed;

pub use changes::{needs_apply, stale_keys};
pub use observed::Observed;

#[cfg(test)]
mod tests;
