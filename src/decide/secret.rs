//! The managed Secret: what it should hold, whether an observed Secret is ours, and whether
//! applying would change anything (so a reconcile with nothing new makes no API write).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::{DeletionPolicy, TenantApiCredential};
use crate::token::Token;

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
        type_: Some("Opaque".into()),
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

pub fn ownership(existing: Option<&Secret>, credential_name: &str) -> Ownership {
    let Some(s) = existing else {
        return Ownership::Absent;
    };
    let labels = s.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    if label(MANAGED_BY_LABEL) == Some(MANAGED_BY_VALUE) && label(CREDENTIAL_LABEL) == Some(credential_name) {
        Ownership::Ours
    } else {
        Ownership::Foreign
    }
}

/// The source version recorded on a managed Secret.
pub fn source_version(secret: &Secret) -> Option<&str> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(SOURCE_VERSION_ANNOTATION)
        .map(String::as_str)
}

/// Labels, annotations and the owner reference tenantcred set when it created the Secret (a plain
/// create records them under an `Update` entry, which later applies do not prune) and no longer
/// wants, as `(section, key)`; the owner reference as `("ownerReferences", "")`.
pub fn stale_keys(desired: &Secret, observed: &Secret) -> Vec<(&'static str, String)> {
    let Some(created) = entry_fields(observed, "Update") else {
        return Vec::new();
    };
    let wanted = desired_fields(desired);
    let present = |section: &str, key: &str| {
        let m = match section {
            "labels" => observed.metadata.labels.as_ref(),
            _ => observed.metadata.annotations.as_ref(),
        };
        m.is_some_and(|m| m.contains_key(key))
    };
    let mut stale = Vec::new();
    let applied = entry_fields(observed, "Apply");
    if created.contains("ownerReferences")
        && !wanted.contains("ownerReferences")
        && applied.as_ref().is_none_or(|a| !a.contains("ownerReferences"))
        && observed
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|r| !r.is_empty())
    {
        stale.push(("ownerReferences", String::new()));
    }
    for path in created.difference(&wanted) {
        for section in ["labels", "annotations"] {
            if let Some(key) = path.strip_prefix(section).and_then(|p| p.strip_prefix('/'))
                && present(section, key)
                && applied.as_ref().is_none_or(|a| !a.contains(path))
            {
                stale.push((section, key.to_owned()));
            }
        }
    }
    stale
}

/// A key of a Secret as UTF-8 text, if present and readable.
pub fn text(secret: &Secret, key: &str) -> Option<String> {
    let raw = secret.data.as_ref()?.get(key)?;
    String::from_utf8(raw.0.clone()).ok()
}

/// The token currently in a managed Secret, if readable.
pub fn token_in(secret: &Secret) -> Option<Token> {
    text(secret, KEY_TOKEN).map(Token::new)
}

/// True when applying `desired` would change `observed`: a value differs, or the set of labels,
/// annotations, data keys or owner references tenantcred owns (per `managedFields`) is not the set
/// it wants (so a label removed from the spec is removed from the Secret too).
pub fn needs_apply(desired: &Secret, observed: &Secret) -> bool {
    let d = &desired.metadata;
    let o = &observed.metadata;
    // The source version alone is never worth a write (it rides along with token changes).
    let mut wanted = d.annotations.clone();
    if let Some(a) = wanted.as_mut() {
        a.remove(SOURCE_VERSION_ANNOTATION);
    }
    let values_differ = !subset(d.labels.as_ref(), o.labels.as_ref())
        || !subset(wanted.as_ref(), o.annotations.as_ref())
        || !subset(desired.data.as_ref(), observed.data.as_ref())
        || desired.type_ != observed.type_
        || !same_owner_refs(d.owner_references.as_deref(), o.owner_references.as_deref());
    if values_differ {
        return true;
    }
    match owned_fields(observed) {
        Some(owned) => owned != desired_fields(desired),
        // No managedFields (a server that strips them): values alone decide.
        None => false,
    }
}

fn subset<V: PartialEq>(want: Option<&BTreeMap<String, V>>, have: Option<&BTreeMap<String, V>>) -> bool {
    want.is_none_or(|w| w.iter().all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v)))
}

fn same_owner_refs(want: Option<&[OwnerReference]>, have: Option<&[OwnerReference]>) -> bool {
    let uids = |refs: Option<&[OwnerReference]>| -> BTreeSet<String> {
        refs.unwrap_or_default().iter().map(|r| r.uid.clone()).collect()
    };
    match want {
        Some(w) => uids(Some(w)).is_subset(&uids(have)),
        None => true,
    }
}

/// The fields tenantcred's apply sets, as `section/key` paths.
fn desired_fields(s: &Secret) -> BTreeSet<String> {
    let mut f = BTreeSet::new();
    let keys = |section: &str, m: Option<&BTreeMap<String, String>>, f: &mut BTreeSet<String>| {
        for k in m.into_iter().flat_map(|m| m.keys()) {
            f.insert(format!("{section}/{k}"));
        }
    };
    keys("labels", s.metadata.labels.as_ref(), &mut f);
    keys("annotations", s.metadata.annotations.as_ref(), &mut f);
    for k in s.data.iter().flat_map(|m| m.keys()) {
        f.insert(format!("data/{k}"));
    }
    if s.metadata.owner_references.as_ref().is_some_and(|r| !r.is_empty()) {
        f.insert("ownerReferences".into());
    }
    f
}

/// The same paths read from the `managedFields` entry of tenantcred's applies.
fn owned_fields(s: &Secret) -> Option<BTreeSet<String>> {
    entry_fields(s, "Apply")
}

/// The paths of tenantcred's `managedFields` entry of this operation (`Apply` or `Update`).
fn entry_fields(s: &Secret, operation: &str) -> Option<BTreeSet<String>> {
    let entries = s.metadata.managed_fields.as_ref()?;
    let entry = entries
        .iter()
        .find(|e| e.manager.as_deref() == Some(FIELD_MANAGER) && e.operation.as_deref() == Some(operation))?;
    Some(match &entry.fields_v1.as_ref()?.0 {
        // Compacted by `compact_field_ownership`.
        serde_json::Value::String(lines) => lines.lines().map(str::to_owned).collect(),
        tree => owned_paths(tree),
    })
}

/// The paths a `FieldsV1` tree owns, as `section/key` (and `ownerReferences`).
fn owned_paths(fields: &serde_json::Value) -> BTreeSet<String> {
    let mut f = BTreeSet::new();
    let keys_of = |v: Option<&serde_json::Value>| -> Vec<String> {
        v.and_then(|v| v.as_object())
            .map(|m| {
                m.keys()
                    .filter_map(|k| k.strip_prefix("f:").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let meta = fields.get("f:metadata");
    for k in keys_of(meta.and_then(|m| m.get("f:labels"))) {
        f.insert(format!("labels/{k}"));
    }
    for k in keys_of(meta.and_then(|m| m.get("f:annotations"))) {
        f.insert(format!("annotations/{k}"));
    }
    for k in keys_of(fields.get("f:data")) {
        f.insert(format!("data/{k}"));
    }
    if meta.and_then(|m| m.get("f:ownerReferences")).is_some() {
        f.insert("ownerReferences".into());
    }
    f
}

/// Keeps of `managedFields` only what `needs_apply` and `stale_keys` read: tenantcred's own
/// entries, their manager and operation, and the paths they own (`labels/<key>`, `data/<key>`,
/// `ownerReferences`, …) as one line each in a single string instead of the field tree. A cache
/// of many Secrets holds this instead of every manager's tree of maps, the largest part of a
/// small Secret in memory (about 4 KB each).
pub fn compact_field_ownership(s: &mut Secret) {
    let Some(entries) = s.metadata.managed_fields.as_mut() else {
        return;
    };
    entries.retain(|e| e.manager.as_deref() == Some(FIELD_MANAGER));
    for e in entries.iter_mut() {
        e.api_version = None;
        e.fields_type = None;
        e.time = None;
        e.subresource = None;
        if let Some(fields) = e.fields_v1.as_mut() {
            let paths: Vec<String> = owned_paths(&fields.0).into_iter().collect();
            fields.0 = serde_json::Value::String(paths.join("\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    fn tac(policy: DeletionPolicy) -> TenantApiCredential {
        let mut t = crate::testing::credential(
            "acme-cs",
            serde_json::json!({"tenant": "acme", "provider": "charitystack", "credentialRef": {"name": "in"}}),
        );
        t.spec.target.deletion_policy = policy;
        t
    }

    #[test]
    fn desired_secret_has_the_five_keys_labels_and_owner() {
        let s = desired(
            &tac(DeletionPolicy::Delete),
            "acme-cs",
            "https://x",
            &Token::new("cs_live_abc"),
            None,
        );
        let data = s.data.as_ref().expect("data");
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["authorization", "baseUrl", "provider", "tenant", "token"]
        );
        assert_eq!(data["authorization"].0, b"Bearer cs_live_abc");
        let labels = s.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels[MANAGED_BY_LABEL], "tenantcred");
        assert_eq!(labels[TENANT_LABEL], "acme");
        assert_eq!(labels[PROVIDER_LABEL], "charitystack");
        let owners = s.metadata.owner_references.as_ref().expect("owner");
        assert_eq!(owners[0].uid, "uid-1");
        assert_eq!(owners[0].controller, Some(true));
        let retained = desired(
            &tac(DeletionPolicy::Retain),
            "acme-cs",
            "https://x",
            &Token::new("cs_live_abc"),
            None,
        );
        assert!(retained.metadata.owner_references.is_none());
    }

    #[test]
    fn ownership_is_decided_by_labels() {
        let ours = desired(
            &tac(DeletionPolicy::Delete),
            "acme-cs",
            "u",
            &Token::new("cs_live_a"),
            None,
        );
        assert_eq!(ownership(Some(&ours), "acme-cs"), Ownership::Ours);
        assert_eq!(ownership(Some(&ours), "another-credential"), Ownership::Foreign);
        assert_eq!(ownership(Some(&Secret::default()), "acme-cs"), Ownership::Foreign);
        assert_eq!(ownership(None, "acme-cs"), Ownership::Absent);
    }

    #[test]
    fn apply_needed_only_when_something_differs() {
        let d = desired(
            &tac(DeletionPolicy::Delete),
            "acme-cs",
            "u",
            &Token::new("cs_live_a"),
            None,
        );
        let mut observed = d.clone();
        observed
            .metadata
            .labels
            .as_mut()
            .expect("labels")
            .insert("someone-else".into(), "x".into());
        assert!(
            !needs_apply(&d, &observed),
            "foreign extra labels are not ours to remove"
        );
        let changed = desired(
            &tac(DeletionPolicy::Delete),
            "acme-cs",
            "u",
            &Token::new("cs_live_b"),
            None,
        );
        assert!(needs_apply(&changed, &observed));
        let retained = desired(
            &tac(DeletionPolicy::Retain),
            "acme-cs",
            "u",
            &Token::new("cs_live_a"),
            None,
        );
        // We own the owner reference per managedFields but no longer want it: apply to drop it.
        observed.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({
                "f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}, "f:tenantcred.dev/tenant": {},
                  "f:tenantcred.dev/provider": {}, "f:tenantcred.dev/credential": {}}, "f:ownerReferences": {}},
                "f:data": {"f:token": {}, "f:authorization": {}, "f:baseUrl": {}, "f:tenant": {}, "f:provider": {}},
                "f:type": {}
            }))),
            ..ManagedFieldsEntry::default()
        }]);
        assert!(!needs_apply(&d, &observed));
        assert!(needs_apply(&retained, &observed));
    }

    #[test]
    fn compacted_field_ownership_answers_the_same() {
        let entry = |manager: &str, operation: &str| ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            api_version: Some("v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({
                "f:metadata": {
                    "f:labels": {".": {}, "f:tenantcred.dev/tenant": {}},
                    "f:annotations": {"f:tenantcred.dev/source-version": {}},
                    "f:ownerReferences": {".": {}, "k:{\"uid\":\"u\"}": {"f:apiVersion": {}, "f:uid": {}}}
                },
                "f:data": {".": {}, "f:token": {}},
                "f:type": {}
            }))),
            ..ManagedFieldsEntry::default()
        };
        let mut s = Secret::default();
        s.metadata.managed_fields = Some(vec![
            entry(FIELD_MANAGER, "Update"),
            entry("kubectl", "Update"),
            entry(FIELD_MANAGER, "Apply"),
        ]);
        let before = (entry_fields(&s, "Update"), entry_fields(&s, "Apply"));
        compact_field_ownership(&mut s);
        assert_eq!((entry_fields(&s, "Update"), entry_fields(&s, "Apply")), before);
        let kept = s.metadata.managed_fields.as_ref().expect("entries");
        assert_eq!(kept.len(), 2, "only tenantcred's entries");
        assert!(kept.iter().all(|e| e.api_version.is_none() && e.time.is_none()));
    }
}
