use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

use super::observed::{Pairs, Paths};
use super::*;
use crate::decide::token::MAX_TOKEN_BYTES;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;

fn tac(policy: DeletionPolicy) -> TenantApiCredential {
    let mut t = crate::testing::credential(
        "acme-cs",
        serde_json::json!({"tenant": "acme", "provider": "charitystack", "credentialRef": {"name": "in"}}),
    );
    t.spec.target.deletion_policy = policy;
    t
}

/// The Secret tenantcred wants for the test credential with this token.
fn ours(policy: DeletionPolicy, token: &str) -> Secret {
    desired(&tac(policy), "acme-cs", "u", &Token::new(token), None)
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
    let ours = ours(DeletionPolicy::Delete, "cs_live_a");
    let ours = Observed::of(ours);
    assert_eq!(ownership(Some(&ours), "acme-cs"), Ownership::Ours);
    assert_eq!(ownership(Some(&ours), "another-credential"), Ownership::Foreign);
    assert_eq!(ownership(Some(&Observed::default()), "acme-cs"), Ownership::Foreign);
    assert_eq!(ownership(None, "acme-cs"), Ownership::Absent);
}

#[test]
fn apply_needed_only_when_something_differs() {
    let d = ours(DeletionPolicy::Delete, "cs_live_a");
    let mut observed = d.clone();
    observed
        .metadata
        .labels
        .as_mut()
        .expect("labels")
        .insert("someone-else".into(), "x".into());
    assert!(
        !needs_apply(&d, &Observed::of(observed.clone())),
        "foreign extra labels are not ours to remove"
    );
    let changed = ours(DeletionPolicy::Delete, "cs_live_b");
    assert!(needs_apply(&changed, &Observed::of(observed.clone())));
    let retained = ours(DeletionPolicy::Retain, "cs_live_a");
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
    let observed = Observed::of(observed);
    assert!(!needs_apply(&d, &observed));
    assert!(needs_apply(&retained, &observed));
}

#[test]
fn data_compared_by_digest_of_our_keys_only() {
    let d = ours(DeletionPolicy::Delete, "cs_live_a");
    let keys: BTreeSet<&str> = d.data.as_ref().expect("data").keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(DATA_KEYS),
        "the digest covers exactly what desired writes"
    );
    let mut edited = d.clone();
    let data = edited.data.as_mut().expect("data");
    data.insert("someone-elses".into(), bytes("x"));
    assert!(
        !needs_apply(&d, &Observed::of(edited.clone())),
        "a foreign key is not ours"
    );
    edited
        .data
        .as_mut()
        .expect("data")
        .insert(KEY_BASE_URL.into(), bytes("https://evil"));
    assert!(
        needs_apply(&d, &Observed::of(edited.clone())),
        "an edited value of ours is restored"
    );
    edited.data.as_mut().expect("data").remove(KEY_BASE_URL);
    assert!(
        needs_apply(&d, &Observed::of(edited)),
        "a removed key of ours is restored"
    );
    let mut empty_value = d.clone();
    empty_value
        .data
        .as_mut()
        .expect("data")
        .insert(KEY_TENANT.into(), bytes(""));
    assert!(needs_apply(&d, &Observed::of(empty_value)));
}

#[test]
fn projection_keeps_a_bounded_token_and_drops_kubectls_copy() {
    let mut s = ours(DeletionPolicy::Delete, "cs_live_a");
    s.metadata
        .annotations
        .get_or_insert_default()
        .insert(LAST_APPLIED.into(), "x".repeat(100_000));
    let o = Observed::of(s.clone());
    assert_eq!(token_in(&o), Some(Token::new("cs_live_a")));
    assert_eq!(o.annotations.get(LAST_APPLIED), None);
    s.data
        .as_mut()
        .expect("data")
        .insert(KEY_TOKEN.into(), bytes(&"t".repeat(MAX_TOKEN_BYTES + 1)));
    assert_eq!(token_in(&Observed::of(s)), None, "an oversized token is not kept");
}

#[test]
fn created_fields_that_no_apply_owns_are_pruned_when_unwanted() {
    let entry = |operation: &str, labels: serde_json::Value| ManagedFieldsEntry {
        manager: Some(FIELD_MANAGER.into()),
        operation: Some(operation.into()),
        api_version: Some("v1".into()),
        fields_type: Some("FieldsV1".into()),
        fields_v1: Some(FieldsV1(serde_json::json!({
            "f:metadata": {
                "f:labels": labels,
                "f:ownerReferences": {".": {}, "k:{\"uid\":\"u\"}": {"f:apiVersion": {}, "f:uid": {}}}
            },
            "f:data": {".": {}, "f:token": {}},
            "f:type": {}
        }))),
        ..ManagedFieldsEntry::default()
    };
    let retained = ours(DeletionPolicy::Retain, "cs_live_a");
    let mut observed = ours(DeletionPolicy::Delete, "cs_live_a");
    observed
        .metadata
        .labels
        .as_mut()
        .expect("labels")
        .insert("team".into(), "a".into());
    let created = serde_json::json!({".": {}, "f:team": {}, "f:tenantcred.dev/tenant": {}});
    observed.metadata.managed_fields = Some(vec![
        entry("Update", created.clone()),
        entry("Update", created.clone()).tap_manager("kubectl"),
    ]);
    let projected = Observed::of(observed.clone());
    let mut stale = stale_keys(&retained, &projected);
    stale.sort();
    assert_eq!(
        stale,
        [("labels", "team".to_owned()), ("ownerReferences", String::new())],
        "created by our plain create, wanted no more, owned by no apply of ours"
    );
    assert_eq!(
        projected.created_only.iter().collect::<Vec<_>>(),
        ["labels/team", "ownerReferences"],
        "what every desired Secret has (the tenant label, the token) is not remembered"
    );
    // Once our apply owns a path, the apply itself prunes it: nothing left for stale_keys.
    observed.metadata.managed_fields = Some(vec![entry("Update", created.clone()), entry("Apply", created)]);
    assert!(stale_keys(&retained, &Observed::of(observed)).is_empty());
}

#[test]
fn the_watch_selectors_name_the_managed_by_label() {
    assert_eq!(MANAGED_SELECTOR, format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    assert_eq!(UNMANAGED_SELECTOR, format!("{MANAGED_BY_LABEL}!={MANAGED_BY_VALUE}"));
}

#[test]
fn pairs_and_paths_answer_as_the_maps_they_were_built_from() {
    let map = BTreeMap::from([
        ("a/b".to_owned(), String::new()),
        ("k".to_owned(), "vé".to_owned()),
        (LAST_APPLIED.to_owned(), "{}".to_owned()),
        (CREDENTIAL_LABEL.to_owned(), "c".to_owned()),
        ("z".to_owned(), "last".to_owned()),
    ]);
    let pairs = Pairs::of(Some(map.clone()), &[LAST_APPLIED]);
    assert_eq!(pairs.get(CREDENTIAL_LABEL), Some("c"), "own keys read back");
    assert_eq!(pairs.get("k"), None, "other values are kept as digests only");
    assert!(pairs.contains("a/b") && pairs.contains("k") && pairs.contains("z"));
    assert!(!pairs.contains(LAST_APPLIED) && !pairs.contains("a"));
    let mut want = map;
    want.remove(LAST_APPLIED);
    assert!(pairs.holds(Some(&want)) && pairs.holds(None));
    want.insert("k".into(), "v".into());
    assert!(!pairs.holds(Some(&want)));
    assert_eq!(Pairs::of(None, &[]), Pairs::default());

    let paths: Paths = ["labels/x".to_owned(), "ownerReferences".to_owned()]
        .into_iter()
        .collect();
    assert_eq!(paths.iter().collect::<Vec<_>>(), ["labels/x", "ownerReferences"]);
    assert_eq!(Paths::default().iter().count(), 0);
}

trait TapManager {
    fn tap_manager(self, manager: &str) -> Self;
}

impl TapManager for ManagedFieldsEntry {
    fn tap_manager(mut self, manager: &str) -> Self {
        self.manager = Some(manager.into());
        self
    }
}
