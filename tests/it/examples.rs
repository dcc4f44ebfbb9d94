//! Issue 13: every file in examples/ applies server-side (the real API server's schema and CEL
//! rules are the judge) and gets the answer the README promises. The example tokens are
//! placeholders and the providers are the real ones, so the verdict itself may be anything a
//! provider (or a machine without internet) gives; what must hold is that no example is an
//! input problem, except the generic one, whose host the operator's owner has not allowed.

use serde_json::Value;
use tenantcred_testkit::{Harness, Reason, Type, eventually, scenarios};

/// Reasons that mean the example itself is wrong.
const INPUT_PROBLEMS: [Reason; 8] = [
    Reason::InvalidSpec,
    Reason::InvalidToken,
    Reason::SourceNotFound,
    Reason::SourceNotAllowed,
    Reason::SecretConflict,
    Reason::SecretRejected,
    Reason::InsecureBaseUrl,
    Reason::BaseUrlNotAllowed,
];

fn examples() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read example");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("example is YAML");
            if !v.is_null() {
                docs.push((file.display().to_string(), v));
            }
        }
    }
    docs
}

async fn every_example_applies_and_gets_its_answer(h: Harness) {
    let mut credentials = Vec::new();
    for (file, doc) in examples() {
        if doc["kind"] == "Namespace" {
            continue; // each test has a namespace of its own
        }
        if doc["kind"] == "TenantApiCredential" {
            credentials.push(doc.clone());
        }
        h.apply(doc).await.unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    assert!(credentials.len() >= 5, "an example per provider");
    for c in &credentials {
        let name = c["metadata"]["name"].as_str().expect("name");
        let expected_generic = c["spec"]["provider"] == "generic";
        eventually(40, &format!("{name} gets a Ready condition"), async || {
            h.seen(name).await.condition(Type::Ready).is_some()
        })
        .await;
        let (_, reason) = h.seen(name).await.condition(Type::Ready).expect("Ready");
        let reason = reason.expect("Ready has a reason");
        if expected_generic {
            assert_eq!(
                reason,
                Reason::BaseUrlNotAllowed,
                "{name}: the README says the host must be allowed first"
            );
        } else {
            assert!(
                !INPUT_PROBLEMS.contains(&reason),
                "{name}: {reason:?}: {:#}",
                h.tac(name).await["status"]
            );
        }
        if c["spec"]["credentialRef"].is_object() && !expected_generic {
            let target = c["spec"]["target"]["name"].as_str().unwrap_or(name);
            assert!(
                h.get("secrets", target).await.is_some(),
                "{name}: managed Secret {target}"
            );
        }
    }
}

scenarios!(every_example_applies_and_gets_its_answer);
