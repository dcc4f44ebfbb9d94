//! How the shell's tables are keyed (a credential by namespace and name: as kube-runtime's
//! reference, as `<namespace>/<name>`, as a stable hash) and how they give memory back.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::reflector::ObjectRef;

use super::cached::CachedCredential;
use super::{Key, hash64, key};

/// What wakes a reconcile and keys the cache: a credential by namespace and name.
pub(super) type CredentialRef = ObjectRef<CachedCredential>;

/// The key of the operator's per-credential lookups: namespace and name only. (`ObjectRef::from_obj`
/// also carries the uid and resourceVersion, which lookups never compare.)
pub(super) fn credential_key(tac: &impl Resource) -> CredentialRef {
    ref_of(tac.meta())
}

pub(super) fn ref_of(meta: &ObjectMeta) -> CredentialRef {
    let r = ObjectRef::new(meta.name.as_deref().unwrap_or_default());
    match meta.namespace.as_deref() {
        Some(ns) => r.within(ns),
        None => r,
    }
}

/// The key of the operator's own per-credential maps (`<namespace>/<name>`).
pub(super) fn tac_key(tac: &impl Resource) -> Key {
    key_of(tac.meta())
}

pub(super) fn key_of(meta: &ObjectMeta) -> Key {
    key(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// Removes a per-credential entry, and gives back the map's table once it is mostly empty: the
/// maps that hold entries only until the watch catches up (every credential during a cold start,
/// a handful after) would otherwise keep their largest size for good.
pub(super) fn drop_entry<K, V, Q>(map: &mut HashMap<K, V>, key: &Q)
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
{
    if map.remove(key).is_some() && map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// A per-credential offset that stays the same across restarts (the heartbeat's spread).
pub(super) fn stable_offset(meta: &ObjectMeta) -> u64 {
    // A tuple hashes its fields in order: the same offsets as before this helper existed.
    hash64((&meta.uid, &meta.name))
}
