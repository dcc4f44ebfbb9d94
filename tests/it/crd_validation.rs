//! The CRD's CEL rules and schema, evaluated client-side with kube's CEL validator (the same rule
//! language the API server runs).

use kube::CustomResourceExt;
use serde_json::{Value, json};
use tenantcred::crd::TenantApiCredential;

fn check(spec: Value) -> Result<(), String> {
    let crd = TenantApiCredential::crd();
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema"),
    )
    .expect("json");
    let obj = json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
        "metadata": {"name": "x", "namespace": "y"}, "spec": spec});
    kube::core::cel::Validator::new()
        .validate(&schema, &obj, None)
        .map_err(|e| format!("{e:?}"))
}

#[test]
fn cel_rules_accept_good_specs_and_refuse_bad_ones() {
    let ok = json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "in", "key": "token"},
        "probe": {"interval": "15m", "timeout": "10s", "failureThreshold": 3}});
    assert_eq!(check(ok), Ok(()));
    let both = json!({"tenant": "acme", "provider": "virtuous", "credentialRef": {"name": "in"}, "oauth": {"secretRef": {"name": "l"}},
        "probe": {"interval": "15m", "timeout": "10s", "failureThreshold": 3}});
    assert!(check(both).is_err_and(|e| e.contains("exactly one")));
    // Whether a provider has a token endpoint is the provider's definition, checked by the
    // operator (a defined provider may have one): the schema lets it through.
    let oauth_defined = json!({"tenant": "acme", "provider": "crm", "oauth": {"secretRef": {"name": "l"}},
        "probe": {"failureThreshold": 3}});
    assert_eq!(check(oauth_defined), Ok(()));
    let generic = json!({"tenant": "acme", "provider": "generic", "credentialRef": {"name": "in"},
        "probe": {"interval": "15m", "timeout": "10s", "failureThreshold": 3}});
    assert!(check(generic).is_err_and(|e| e.contains("generic")));
    let fast = json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "in"},
        "probe": {"interval": "30s", "timeout": "10s", "failureThreshold": 3}});
    assert!(check(fast).is_err_and(|e| e.contains("1m")));
}

/// A request holds a probe slot until its timeout: the schema bounds it (issue 36).
#[test]
fn a_probe_timeout_is_bounded_by_the_schema() {
    let with_timeout = |t: &str| {
        check(
            json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "in"},
            "probe": {"timeout": t, "failureThreshold": 3}}),
        )
    };
    assert_eq!(with_timeout("60s"), Ok(()));
    assert_eq!(with_timeout("1m"), Ok(()));
    assert_eq!(with_timeout("500ms"), Ok(()));
    for refused in ["876000h", "61s", "1m0.5s", "0s"] {
        assert!(
            with_timeout(refused).is_err_and(|e| e.contains("at most 60s")),
            "{refused}"
        );
    }
    // The schema's figure is the operator's.
    assert_eq!(
        tenantcred::decide::duration::parse("60s"),
        Ok(tenantcred::decide::fair_share::MAX_REQUEST_TIMEOUT)
    );
}

#[test]
fn schema_constrains_tenant_provider_and_threshold() {
    let crd = serde_json::to_value(TenantApiCredential::crd()).expect("json");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        spec["properties"]["tenant"]["pattern"],
        "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    );
    assert_eq!(spec["properties"]["tenant"]["maxLength"], 63);
    // Any DNS name: a built-in provider or an ApiProvider's name.
    assert_eq!(spec["properties"]["provider"]["maxLength"], 253);
    assert!(spec["properties"]["provider"]["pattern"].is_string());
    assert_eq!(
        spec["properties"]["probe"]["properties"]["failureThreshold"]["minimum"],
        1.0
    );
    assert_eq!(spec["required"], json!(["provider", "tenant"]));
}
