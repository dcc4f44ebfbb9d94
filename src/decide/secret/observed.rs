//! A managed Secret as the operator keeps it: a projection of what the decisions read, with
//! values that are only compared kept as digests (one per managed Secret, at 100,000 of them).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use sha2::{Digest as _, Sha256};

use super::{
    CREDENTIAL_LABEL, DATA_KEYS, FIELD_MANAGER, KEY_TOKEN, LAST_APPLIED, MANAGED_BY_LABEL, OPAQUE, PROVIDER_LABEL,
    SOURCE_VERSION_ANNOTATION, TENANT_LABEL,
};
use crate::decide::token::{MAX_TOKEN_BYTES, Token};

/// What the decisions read of a managed Secret as observed, and nothing else: the operator keeps
/// one per managed Secret, so it is a projection, not the object. Values that are only ever
/// compared (the data, the set of fields tenantcred owns) are kept as digests; the token is kept
/// because the probes use it; labels and annotations are kept because others may add their own
/// and only ours are compared. Built by [`Observed::of`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub(super) resource_version: Option<Box<str>>,
    pub(super) labels: Pairs,
    pub(super) annotations: Pairs,
    /// `Opaque` (what tenantcred writes) is the static string: no allocation per Secret.
    pub(super) type_: Option<Cow<'static, str>>,
    /// The token key, when present, UTF-8 and within [`MAX_TOKEN_BYTES`].
    pub(super) token: Option<Token>,
    /// Digest of the data keys tenantcred writes ([`DATA_KEYS`]), present or not.
    pub(super) data: Digest,
    /// Digests of the owner references' uids: one allocation, however many.
    pub(super) owner_uids: Box<[Digest]>,
    /// Digest of the paths tenantcred's `Apply` entry of `managedFields` owns; None without one.
    pub(super) applied: Option<Digest>,
    /// Paths tenantcred's plain create recorded (its `Update` entry) that no apply owns and that
    /// are not written always ([`always_written`]): the candidates for [`super::stale_keys`].
    pub(super) created_only: Paths,
}

pub(super) type Digest = [u8; 16];

/// A Secret's labels or annotations as the projection keeps them. Anyone may put tenantcred's
/// managed-by label on a Secret of their own (that is what the managed-Secret watch selects), so
/// what is kept is bounded whatever the Secret holds: the text of tenantcred's own keys (the
/// ones read back: [`OWN_KEYS`], values of at most [`MAX_OWN_VALUE`] bytes), and of every pair
/// only a 64-bit digest, for at most [`MAX_PAIRS`] pairs (beyond that, none: such a Secret never
/// holds what tenantcred wants, and is written again if it is ours).
#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct Pairs {
    /// tenantcred's own keys and values, back to back, in key order.
    text: Box<str>,
    /// The end of each key and of each value in `text`, alternately.
    ends: Box<[u32]>,
    /// Digests of every (key, value), sorted.
    pairs: Box<[u64]>,
    /// Digests of every key, sorted.
    keys: Box<[u64]>,
    /// More than [`MAX_PAIRS`]: nothing but `text` is kept.
    overflow: bool,
}

/// The keys whose values are read back (ownership, the source version).
pub(super) const OWN_KEYS: [&str; 5] = [
    MANAGED_BY_LABEL,
    TENANT_LABEL,
    PROVIDER_LABEL,
    CREDENTIAL_LABEL,
    SOURCE_VERSION_ANNOTATION,
];

/// The longest own value kept (labels are at most 63; a source version is a few dozen).
pub(super) const MAX_OWN_VALUE: usize = 256;

/// The most pairs of one section kept as digests (the CRD allows a credential 64 of each).
pub(super) const MAX_PAIRS: usize = 256;

fn pair_digest(key: &str, value: Option<&str>) -> u64 {
    let d = digest([Some(key.as_bytes()), value.map(str::as_bytes)]);
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

impl Pairs {
    pub(super) fn of(map: Option<BTreeMap<String, String>>, skip: &[&str]) -> Self {
        let kept: Vec<_> = map
            .iter()
            .flatten()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .collect();
        let overflow = kept.len() > MAX_PAIRS;
        let (mut pairs, mut keys): (Vec<u64>, Vec<u64>) = if overflow {
            (Vec::new(), Vec::new())
        } else {
            kept.iter()
                .map(|(k, v)| (pair_digest(k, Some(v)), pair_digest(k, None)))
                .unzip()
        };
        pairs.sort_unstable();
        keys.sort_unstable();
        let own: Vec<_> = kept
            .iter()
            .filter(|(k, v)| OWN_KEYS.contains(&k.as_str()) && v.len() <= MAX_OWN_VALUE)
            .collect();
        let mut text = String::with_capacity(own.iter().map(|(k, v)| k.len() + v.len()).sum());
        let mut ends = Vec::with_capacity(2 * own.len());
        for (k, v) in own {
            // Bounded above: far below 4 GiB.
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
            pairs: pairs.into_boxed_slice(),
            keys: keys.into_boxed_slice(),
            overflow,
        }
    }

    fn own(&self) -> impl Iterator<Item = (&str, &str)> {
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

    /// The value of one of tenantcred's own keys ([`OWN_KEYS`]).
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.own().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Whether `key` is there (with any value).
    pub(super) fn contains(&self, key: &str) -> bool {
        self.keys.binary_search(&pair_digest(key, None)).is_ok()
    }

    /// Every pair of `want` is here with the same value.
    pub(super) fn holds(&self, want: Option<&BTreeMap<String, String>>) -> bool {
        want.is_none_or(|w| {
            w.iter()
                .all(|(k, v)| self.pairs.binary_search(&pair_digest(k, Some(v))).is_ok())
        })
    }
}

impl std::fmt::Debug for Pairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pairs")
            .field("own", &self.own().collect::<BTreeMap<_, _>>())
            .field("pairs", &self.pairs.len())
            .field("overflow", &self.overflow)
            .finish()
    }
}

/// Field paths (`section/key`), one per line, in one allocation. (Label, annotation and data keys
/// cannot hold a line break: the API server validates them.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Paths(Box<str>);

impl Paths {
    pub(super) fn iter(&self) -> impl Iterator<Item = &str> {
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
        // Bounded as the pairs are: a manager's entry is anyone's to write under our name.
        let created_only = entry("Update")
            .into_iter()
            .flatten()
            .filter(|p| applied.as_ref().is_none_or(|a| !a.contains(p)) && !always_written(p))
            .take(2 * MAX_PAIRS)
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

/// A path every desired Secret has ([`super::desired`]), so never stale: not worth remembering for each
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
pub(super) fn data_digest(data: Option<&BTreeMap<String, ByteString>>) -> Digest {
    digest(DATA_KEYS.map(|k| data.and_then(|d| d.get(k)).map(|v| v.0.as_slice())))
}

pub(super) fn uid_digest(uid: &str) -> Digest {
    digest([Some(uid.as_bytes())])
}

pub(super) fn paths_digest(paths: &BTreeSet<String>) -> Digest {
    digest(paths.iter().map(|p| Some(p.as_bytes())))
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
mod bound_tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// Found by the hostile-tenant review: the managed-Secret watch selects a label any tenant may
    /// put on a Secret of its own, and the projection kept every such Secret's labels and
    /// annotations whole: about two hundred large ones held the chart's 256 MiB memory limit.
    #[test]
    fn a_tenants_labelled_secret_costs_the_operator_a_bounded_projection() {
        let labels: BTreeMap<String, String> =
            std::iter::once(("app.kubernetes.io/managed-by".to_owned(), "tenantcred".to_owned()))
                .chain((0..12_000).map(|i| (format!("l{i:05}.example.com/k"), "v".repeat(63))))
                .collect();
        let annotations: BTreeMap<String, String> = (0..250).map(|i| (format!("a{i}"), "x".repeat(1_000))).collect();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("not-any-credentials".into()),
                namespace: Some("hostile".into()),
                labels: Some(labels),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        let kept = Observed::of(secret);
        let bytes = kept.labels.text.len()
            + kept.annotations.text.len()
            + 8 * (kept.labels.pairs.len() + kept.labels.keys.len())
            + 8 * (kept.annotations.pairs.len() + kept.annotations.keys.len());
        assert!(
            bytes <= 16 * 1024,
            "one Secret a tenant labelled costs the operator {bytes} bytes; {} of them fill 256 MiB",
            (256 << 20) / bytes
        );
    }
}
