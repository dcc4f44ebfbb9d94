//! The CRDs against the files in `crds/` and the contract.

use super::*;

#[test]
fn crds_in_repo_match_rust_types() {
    for (file, crd) in definitions() {
        let path = format!("{}/crds/{file}", env!("CARGO_MANIFEST_DIR"));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = definition_yaml(&crd).expect("CRD serializes");
        assert!(
            on_disk == generated,
            "crds/{file} drifted from the Rust types: run `cargo run -- crd --out crds`"
        );
    }
}

/// Formats the API server knows, so `kubectl apply -f crds/` prints no warning; and no
/// description broken mid-sentence.
#[test]
fn schemas_use_known_formats_and_whole_sentences() {
    fn walk(path: &str, v: &serde_json::Value, bad: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    // A default is a value, not a schema: its `format` is a field's value.
                    if k == "default" {
                        continue;
                    }
                    let p = format!("{path}.{k}");
                    if k == "format"
                        && let Some(f) = child.as_str()
                        && !["int32", "int64", "float", "double", "date-time", "byte"].contains(&f)
                    {
                        bad.push(format!("{p}: format {f}"));
                    }
                    if k == "description"
                        && let Some(d) = child.as_str()
                        && d.replace("\n\n", "").contains('\n')
                    {
                        bad.push(format!("{p}: a line break inside a paragraph"));
                    }
                    walk(&p, child, bad);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(path, i, bad)),
            _ => {}
        }
    }
    for (file, crd) in definitions() {
        let mut bad = Vec::new();
        walk(&file, &serde_json::to_value(&crd).expect("serializes"), &mut bad);
        assert!(bad.is_empty(), "{bad:#?}");
    }
}

/// `kubectl explain` has something to say about every field, nested ones included.
#[test]
fn every_field_describes_itself() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, prop) in props {
                let p = format!("{path}.{name}");
                let described = prop
                    .get("description")
                    .and_then(|d| d.as_str())
                    .is_some_and(|d| !d.trim().is_empty());
                if !described {
                    missing.push(p.clone());
                }
                walk(&p, prop, missing);
            }
        }
        for nested in ["items", "additionalProperties"] {
            if let Some(inner) = schema.get(nested).filter(|v| v.is_object()) {
                walk(&format!("{path}[]"), inner, missing);
            }
        }
    }
    for (file, crd) in definitions() {
        let crd = serde_json::to_value(crd).expect("CRD serializes");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        walk(&file, schema, &mut missing);
        assert!(missing.is_empty(), "fields without a description: {missing:#?}");
    }
}

#[test]
fn unknown_provider_deserializes_instead_of_failing_the_watch() {
    let spec: TenantApiCredentialSpec = serde_json::from_value(serde_json::json!({
        "tenant": "acme", "provider": "salesforce", "credentialRef": {"name": "x"}
    }))
    .expect("parses");
    assert_eq!(spec.provider, ProviderName::from("salesforce"));
    assert_eq!(spec.credential_ref.map(|r| r.key).as_deref(), Some("token"));
    assert_eq!(spec.probe.interval, None);
    assert_eq!(spec.probe.failure_threshold, 3);
    assert_eq!(spec.expiry.warn_before, "336h");
    assert_eq!(spec.target.deletion_policy, DeletionPolicy::Delete);
}

#[test]
fn names_and_columns_follow_the_contract() {
    let crd = TenantApiCredential::crd();
    assert_eq!(crd.spec.group, "tenantcred.dev");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.plural, "tenantapicredentials");
    assert_eq!(
        crd.spec.names.short_names,
        Some(vec!["tac".to_string(), "tenantcred".to_string()])
    );
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
    let cols: Vec<_> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        cols,
        ["Tenant", "Provider", "Ready", "Reason", "Expires", "Last Probe", "Age"]
    );
    let selectable: Vec<_> = v
        .selectable_fields
        .iter()
        .flatten()
        .map(|f| f.json_path.as_str())
        .collect();
    assert_eq!(selectable, [".spec.tenant", ".spec.provider"]);
}

#[test]
fn providers_are_cluster_scoped_with_a_short_name() {
    let crd = provider::ApiProvider::crd();
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.plural, "apiproviders");
    assert_eq!(crd.spec.names.short_names, Some(vec!["apiprov".to_string()]));
}
