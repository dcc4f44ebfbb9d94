//! A credential as the cache holds it: its metadata, and its spec and status as the API server's
//! own JSON text, packed with a phrase book (`phrases`: a typical status of ~950 bytes is held in
//! ~250, a spec in ~35), decoded into a `TenantApiCredential` only when a reconcile needs it.
//!
//! The generated type is 1,136 bytes before any string, and its status alone is a dozen more
//! allocations; at 100,000 credentials that was the largest part of the operator's memory. A spec
//! that does not decode (one that slipped past schema validation) now reaches the reconcile,
//! which says so in a condition, instead of failing the whole watch's list.

mod phrases;

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer};

use crate::crd::{TenantApiCredential, TenantApiCredentialSpec, TenantApiCredentialStatus};

/// The cached form of a `TenantApiCredential` (same group, version and kind).
#[derive(Clone, Debug, Deserialize)]
pub struct CachedCredential {
    pub metadata: ObjectMeta,
    spec: JsonText,
    #[serde(default)]
    status: Option<JsonText>,
}

/// A JSON value kept as its compact text, packed with the phrase book (`phrases`). (Read through
/// `Value`, not `RawValue`: a watch event whose `object` comes before its `type` is buffered by
/// serde, and `RawValue` cannot be read from a buffer.)
#[derive(Clone)]
struct JsonText(Box<str>);

impl JsonText {
    fn text(&self) -> Cow<'_, str> {
        phrases::unpack(&self.0)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Ok(Self(phrases::pack(value.to_string())))
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// The spec did not decode into the types; the message says where (it names fields and
/// expected types; a spec holds no token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableSpec(pub String);

impl CachedCredential {
    /// The whole resource. A status that does not decode (hand-edited through the status
    /// subresource) counts as none: the reconcile writes a fresh one over it.
    pub fn expand(&self) -> Result<TenantApiCredential, UnreadableSpec> {
        Ok(TenantApiCredential {
            metadata: self.metadata.clone(),
            spec: self.spec()?,
            status: self.status().ok().flatten(),
        })
    }

    /// The provider the spec names, read without decoding the rest of it (`None`: the spec does
    /// not say, or does not decode).
    pub fn provider_name(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Named {
            provider: Option<String>,
        }
        serde_json::from_str::<Named>(&self.spec.text()).ok()?.provider
    }

    /// The spec alone.
    pub fn spec(&self) -> Result<TenantApiCredentialSpec, UnreadableSpec> {
        serde_json::from_str(&self.spec.text()).map_err(|e| UnreadableSpec(e.to_string()))
    }

    /// The status alone (a spec that does not decode still has one to compare against).
    pub fn status(&self) -> Result<Option<TenantApiCredentialStatus>, serde_json::Error> {
        self.status
            .as_ref()
            .map(|s| serde_json::from_str(&s.text()))
            .transpose()
    }

    #[cfg(test)]
    pub fn from_credential(tac: &TenantApiCredential) -> Self {
        let json = serde_json::to_string(tac).unwrap_or_default();
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("round trip of a credential: {e}"))
    }
}

impl Resource for CachedCredential {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        TenantApiCredential::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        TenantApiCredential::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        TenantApiCredential::version(dt)
    }
    fn api_version(dt: &()) -> Cow<'_, str> {
        TenantApiCredential::api_version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        TenantApiCredential::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ProbeResult;

    #[test]
    fn expands_to_what_the_api_server_sent() {
        let json = serde_json::json!({
            "apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
            "metadata": {"name": "a", "namespace": "ns", "resourceVersion": "7"},
            "spec": {"tenant": "acme", "provider": "raise", "credentialRef": {"name": "s", "key": "token"}},
            "status": {"lastProbeResult": "Valid", "consecutiveFailures": 2}
        });
        let typed: TenantApiCredential = serde_json::from_value(json.clone()).expect("typed");
        let cached: CachedCredential = serde_json::from_value(json).expect("cached");
        let expanded = cached.expand().expect("expands");
        assert_eq!(expanded.metadata, typed.metadata);
        assert_eq!(expanded.spec, typed.spec);
        assert_eq!(expanded.status, typed.status);
        let status = expanded.status.expect("status");
        assert_eq!(status.last_probe_result, Some(ProbeResult::Valid));
        assert_eq!(status.consecutive_failures, 2);
    }

    #[test]
    fn reads_a_watch_event_in_either_field_order() {
        let object = r#"{"metadata":{"name":"a"},"spec":{"tenant":"acme","provider":"raise"}}"#;
        for text in [
            format!(r#"{{"type":"ADDED","object":{object}}}"#),
            format!(r#"{{"object":{object},"type":"ADDED"}}"#),
        ] {
            let event: kube::core::WatchEvent<CachedCredential> = serde_json::from_str(&text).expect("event");
            let kube::core::WatchEvent::Added(c) = event else {
                panic!("an ADDED event")
            };
            assert_eq!(c.expand().expect("expands").spec.tenant, "acme");
        }
    }

    #[test]
    fn a_spec_that_does_not_decode_is_reported_not_fatal() {
        let json = serde_json::json!({
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"tenant": 5, "provider": "raise"},
            "status": {"consecutiveFailures": "many"}
        });
        let cached: CachedCredential = serde_json::from_value(json).expect("the watch still takes it");
        let err = cached.expand().expect_err("tenant is not a string");
        assert!(err.0.contains("invalid type"), "{}", err.0);
        assert!(cached.status().is_err());
    }
}
