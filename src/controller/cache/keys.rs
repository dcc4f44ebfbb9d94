//! How the cache is keyed: every table by one [`Id`]; kube-runtime's [`CredentialRef`] only where
//! a credential is woken (the controller's queue takes nothing else).

use std::collections::HashMap;
use std::hash::Hash;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::reflector::ObjectRef;

use super::super::hash64;
use super::packed::CachedCredential;

/// A namespace and name as one 64-bit number: the key of every table of the cache (credentials,
/// managed Secrets, Secrets read as sources) and of the backlog, without a string per entry.
///
/// Two objects' ids collide with a chance of about one in 4·10^7 at a million objects. For
/// Secrets read as sources that costs needless wakes and a read at the other's version (answered
/// with the current object, or a 504 retried as a plain read); for managed Secrets, a write the
/// API server then answers with the real object, which the cache takes. Nothing incorrect stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(in crate::controller) struct Id(u64);

impl Id {
    pub(in crate::controller) fn of(ns: &str, name: &str) -> Self {
        Self(hash64((ns, name)))
    }

    pub(in crate::controller) fn of_meta(meta: &ObjectMeta) -> Self {
        Self::of(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    pub(in crate::controller) fn of_ref(r: &CredentialRef) -> Self {
        Self::of(r.namespace.as_deref().unwrap_or_default(), &r.name)
    }
}

/// What wakes a reconcile (the controller's queue entry): a credential by namespace and name.
pub(in crate::controller) type CredentialRef = ObjectRef<CachedCredential>;

/// The credential's reference: namespace and name only. (`ObjectRef::from_obj` also carries the
/// uid and resourceVersion, which lookups never compare.)
pub(in crate::controller) fn credential_key(tac: &impl Resource) -> CredentialRef {
    ref_of(tac.meta())
}

pub(in crate::controller) fn ref_of(meta: &ObjectMeta) -> CredentialRef {
    let r = ObjectRef::new(meta.name.as_deref().unwrap_or_default());
    match meta.namespace.as_deref() {
        Some(ns) => r.within(ns),
        None => r,
    }
}

/// Removes an entry, and gives back the map's table once it is mostly empty: a table that holds
/// entries only until the watch catches up (every credential during a cold start, a handful
/// after) would otherwise keep its largest size for good.
pub(super) fn drop_entry<K: Hash + Eq, V>(map: &mut HashMap<K, V>, key: &K) {
    if map.remove(key).is_some() && map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}
