//! The managed Secret: what it should hold, whether an observed Secret is ours, and whether
//! applying would change anything (so a reconcile with nothing new makes no API write).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::Resource;
use sha2::{Digest as _, Sha256};

use crate::crd::{DeletionPolicy, TenantApiCredential};
use crate::decide::token::{MAX_TOKEN_BYTES, Token};

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

/// What the decisions read of a managed Secret as observed, and nothing else: the operator keeps
/// one per managed Secret, so it is a projection, not the object. Values that are only ever
/// compared (the data, the set of fields tenantcred owns) are kept as digests; the token is kept
/// because the probes use it; labels and annotations are kept because others may add their own
/// and only ours are compared. Built by [`Observed::of`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    resource_version: Option<Box<str>>,
    labels: Pairs,
    annotations: Pairs,
    /// `Opaque` (what tenantcred writes) is the static string: no allocation per Secret.
    type_: Option<Cow<'static, str>>,
    /// The token key, when present, UTF-8 and within [`MAX_TOKEN_BYTES`].
    token: Option<Token>,
    /// Digest of the data keys tenantcred writes ([`DATA_KEYS`]), present or not.
    data: Digest,
    /// Digests of the owner references' uids: one allocation, however many.
    owner_uids: Box<[Digest]>,
    /// Digest of the paths tenantcred's `Apply` entry of `managedFields` owns; None without one.
    applied: Option<Digest>,
    /// Paths tenantcred's plain create recorded (its `Update` entry) that no apply owns and that
    /// are not written always ([`always_written`]): the candidates for [`stale_keys`].
    created_only: Paths,
}

type Digest = [u8; 16];

/// A small string map, in key order, as two allocations: every key and value back to back, and
/// where each ends. A managed Secret's handful of labels and annotations would otherwise cost two
/// allocations per pair, kept for every managed Secret.
#[derive(Clone, Default, PartialEq, Eq)]
struct Pairs {
    text: Box<str>,
    /// The end of each key and of each value in `text`, alternately.
    ends: Box<[u32]>,
}

impl Pairs {
    fn of(map: Option<BTreeMap<String, String>>, skip: &[&str]) -> Self {
        let kept: Vec<_> = map
            .iter()
            .flatten()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .collect();
        let mut text = String::with_capacity(kept.iter().map(|(k, v)| k.len() + v.len()).sum());
        let mut ends = Vec::with_capacity(2 * kept.len());
        for (k, v) in kept {
            // Metadata is far below 4 GiB (the API server refuses objects over 1.5 MiB).
            let (Ok(k_end), Ok(v_end)) = (
                u32::try_from(text.len() + k.len()),
                u32::try_from(text.len() + k.len() + v.len()),
            ) else {
                break;
            };
            text.push_str(k);
            text.push_str(v);
            ends.extend([k_end, v_end]);
        }
        Self {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0;
        self.ends.chunks_exact(2).map(move |end| {
            let (k_end, v_end) = (end[0] as usize, end[1] as usize);
            let pair = (
                self.text.get(start..k_end).unwrap_or_default(),
                self.text.get(k_end..v_end).unwrap_or_default(),
            );
            start = v_end;
            pair
        })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Every pair of `want` is here with the same value.
    fn holds(&self, want: Option<&BTreeMap<String, String>>) -> bool {
        want.is_none_or(|w| w.iter().all(|(k, v)| self.get(k) == Some(v.as_str())))
    }
}

impl std::fmt::Debug for Pairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Field paths (`section/key`), one per line, in one allocation. (Label, annotation and data keys
/// cannot hold a line break: the API server validates them.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Paths(Box<str>);

impl Paths {
    fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split('\n').filter(|p| !p.is_empty())
    }
}

impl FromIterator<String> for Paths {
    fn from_iter<I: IntoIterator<Item = String>>(paths: I) -> Self {
        Self(paths.into_iter().collect::<Vec<_>>().join("\n").into_boxed_str())
    }
}

impl Observed {
    /// The projection of a Secret read from the API server (or the cache's watch).
    pub fn of(mut secret: Secret) -> Self {
        let data = data_digest(secret.data.as_ref());
        let token = secret
            .data
            .as_mut()
            .and_then(|d| d.remove(KEY_TOKEN))
            .filter(|raw| raw.0.len() <= MAX_TOKEN_BYTES)
            .and_then(|raw| String::from_utf8(raw.0).ok())
            .map(Token::new);
        let meta = secret.metadata;
        let entry = |operation: &str| entry_fields(meta.managed_fields.as_deref(), operation);
        let applied = entry("Apply");
        let created_only = entry("Update")
            .into_iter()
            .flatten()
            .filter(|p| applied.as_ref().is_none_or(|a| !a.contains(p)) && !always_written(p))
            .collect();
        Self {
            resource_version: meta.resource_version.map(String::into_boxed_str),
            // kubectl's copy of a whole applied object is never compared, and can be large.
            annotations: Pairs::of(meta.annotations, &[LAST_APPLIED]),
            labels: Pairs::of(meta.labels, &[]),
            type_: secret.type_.map(|t| match t.as_str() {
                OPAQUE => Cow::Borrowed(OPAQUE),
                _ => Cow::Owned(t),
            }),
            token,
            data,
            owner_uids: meta
                .owner_references
                .into_iter()
                .flatten()
                .map(|r| uid_digest(&r.uid))
                .collect(),
            applied: applied.as_ref().map(paths_digest),
            created_only,
        }
    }

    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// The value of one of the Secret's labels.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key)
    }
}

/// The type of every Secret tenantcred writes.
const OPAQUE: &str = "Opaque";

/// kubectl's client-side apply annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

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

/// Labels, annotations and the owner reference tenantcred set when it created the Secret (a plain
/// create records them under an `Update` entry, which later applies do not prune) and no longer
/// wants, as `(section, key)`; the owner reference as `("ownerReferences", "")`.
pub fn stale_keys(desired: &Secret, observed: &Observed) -> Vec<(&'static str, String)> {
    let wanted = desired_fields(desired);
    let mut stale = Vec::new();
    for path in observed.created_only.iter().filter(|p| !wanted.contains(*p)) {
        if path == "ownerReferences" {
            if !observed.owner_uids.is_empty() {
                stale.push(("ownerReferences", String::new()));
            }
            continue;
        }
        for (section, pairs) in [("labels", &observed.labels), ("annotations", &observed.annotations)] {
            if let Some(key) = path.strip_prefix(section).and_then(|p| p.strip_prefix('/'))
                && pairs.get(key).is_some()
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
pub fn token_in(secret: &Observed) -> Option<Token> {
    secret.token.clone()
}

/// True when applying `desired` would change `observed`: a value differs, or the set of labels,
/// annotations, data keys or owner references tenantcred owns (per `managedFields`) is not the set
/// it wants (so a label removed from the spec is removed from the Secret too).
pub fn needs_apply(desired: &Secret, observed: &Observed) -> bool {
    let d = &desired.metadata;
    // The source version alone is never worth a write (it rides along with token changes).
    let mut wanted = d.annotations.clone();
    if let Some(a) = wanted.as_mut() {
        a.remove(SOURCE_VERSION_ANNOTATION);
    }
    let owners_kept = d
        .owner_references
        .iter()
        .flatten()
        .all(|r| observed.owner_uids.contains(&uid_digest(&r.uid)));
    let values_differ = !observed.labels.holds(d.labels.as_ref())
        || !observed.annotations.holds(wanted.as_ref())
        || data_digest(desired.data.as_ref()) != observed.data
        || desired.type_.as_deref() != observed.type_.as_deref()
        || !owners_kept;
    if values_differ {
        return true;
    }
    match &observed.applied {
        Some(owned) => *owned != paths_digest(&desired_fields(desired)),
        // No managedFields (a server that strips them): values alone decide.
        None => false,
    }
}

/// The data keys tenantcred writes, in the order their digest takes them.
const DATA_KEYS: [&str; 5] = [KEY_TOKEN, KEY_AUTHORIZATION, KEY_BASE_URL, KEY_TENANT, KEY_PROVIDER];

/// A path every desired Secret has ([`desired`]), so never stale: not worth remembering for each
/// managed Secret (they are most of what a plain create records).
fn always_written(path: &str) -> bool {
    let labels = [MANAGED_BY_LABEL, TENANT_LABEL, PROVIDER_LABEL, CREDENTIAL_LABEL];
    path.strip_prefix("labels/").is_some_and(|k| labels.contains(&k))
        || path.strip_prefix("data/").is_some_and(|k| DATA_KEYS.contains(&k))
}

fn digest<'a>(parts: impl IntoIterator<Item = Option<&'a [u8]>>) -> Digest {
    let mut h = Sha256::new();
    for part in parts {
        match part {
            // Length-prefixed, and absence distinct from empty: no two inputs share a stream.
            Some(bytes) => {
                h.update([1]);
                h.update((bytes.len() as u64).to_be_bytes());
                h.update(bytes);
            }
            None => h.update([0]),
        }
    }
    let full = h.finalize();
    let mut out = [0; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// Digest of the values of [`DATA_KEYS`]: equal exactly when those keys hold the same values
/// (other keys are not ours).
fn data_digest(data: Option<&BTreeMap<String, ByteString>>) -> Digest {
    digest(DATA_KEYS.map(|k| data.and_then(|d| d.get(k)).map(|v| v.0.as_slice())))
}

fn uid_digest(uid: &str) -> Digest {
    digest([Some(uid.as_bytes())])
}

fn paths_digest(paths: &BTreeSet<String>) -> Digest {
    digest(paths.iter().map(|p| Some(p.as_bytes())))
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

/// The paths of tenantcred's `managedFields` entry of this operation (`Apply` or `Update`).
fn entry_fields(entries: Option<&[ManagedFieldsEntry]>, operation: &str) -> Option<BTreeSet<String>> {
    let entry = entries?
        .iter()
        .find(|e| e.manager.as_deref() == Some(FIELD_MANAGER) && e.operation.as_deref() == Some(operation))?;
    Some(owned_paths(&entry.fields_v1.as_ref()?.0))
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

#[cfg(test)]
mod tests;
