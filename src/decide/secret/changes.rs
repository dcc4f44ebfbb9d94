//! Whether the managed Secret must change: applying the desired one would change a value or the
//! set of fields tenantcred owns; or a create recorded fields no apply will prune.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;

use super::SOURCE_VERSION_ANNOTATION;
use super::observed::{Observed, data_digest, paths_digest, uid_digest};

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
                && pairs.contains(key)
            {
                stale.push((section, key.to_owned()));
            }
        }
    }
    stale
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
