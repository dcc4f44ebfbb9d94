//! The API server double is only useful if it behaves like the real one; these pin that down.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use tenantcred::crd::TenantApiCredential;

use tenantcred_testkit::ApiServer;

const NS: &str = "partner-prod";

fn secret(name: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS, "labels": labels},
        "stringData": {"token": "t"}})
}

#[tokio::test]
async fn no_op_writes_do_not_bump_resource_version_nor_emit_events() {
    let api = ApiServer::new();
    let secrets: Api<Secret> = Api::namespaced(api.client(), NS);
    let body = secret("s", json!({"a": "1"}));
    let pp = PatchParams::apply("mgr");
    let first = secrets
        .patch("s", &pp, &Patch::Apply(&body))
        .await
        .expect("create by apply");
    let rv = first.metadata.resource_version.clone();
    let watch_from = api.resource_version();
    let again = secrets.patch("s", &pp, &Patch::Apply(&body)).await.expect("re-apply");
    assert_eq!(
        again.metadata.resource_version, rv,
        "identical apply must not bump resourceVersion"
    );
    let merged = secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "1"}}})),
        )
        .await
        .expect("merge");
    assert_eq!(merged.metadata.resource_version, rv);
    assert_eq!(api.resource_version(), watch_from, "no event was recorded");
    // stringData folded into data.
    assert_eq!(
        first.data.as_ref().and_then(|d| d.get("token")).map(|b| b.0.clone()),
        Some(b"t".to_vec())
    );
    assert!(
        api.get("secrets", NS, "s")
            .is_some_and(|s| s.get("stringData").is_none())
    );
}

#[tokio::test]
async fn server_side_apply_conflicts_with_other_managers_unless_forced() {
    let api = ApiServer::new();
    api.create(secret("s", json!({"owner": "kubectl"})));
    let secrets: Api<Secret> = Api::namespaced(api.client(), NS);
    let mine = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "labels": {"owner": "me"}}});
    let e = secrets
        .patch("s", &PatchParams::apply("me"), &Patch::Apply(&mine))
        .await
        .expect_err("conflict");
    assert!(matches!(e, kube::Error::Api(s) if s.code == 409));
    let forced = secrets
        .patch("s", &PatchParams::apply("me").force(), &Patch::Apply(&mine))
        .await
        .expect("forced");
    assert_eq!(
        forced
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("owner"))
            .map(String::as_str),
        Some("me")
    );
    // Fields the manager stops applying are removed; fields others own stay.
    let less = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "labels": {"other": "x"}}});
    let after = secrets
        .patch("s", &PatchParams::apply("me"), &Patch::Apply(&less))
        .await
        .expect("apply");
    let labels = after.metadata.labels.unwrap_or_default();
    assert!(!labels.contains_key("owner") && labels.contains_key("other"));
    assert!(
        after.data.is_some_and(|d| d.contains_key("token")),
        "the creator's data stays"
    );
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let api = ApiServer::new();
    api.create(
        json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
        "metadata": {"name": "c", "namespace": NS},
        "spec": {"tenant": "a", "provider": "raise", "credentialRef": {"name": "in"}}}),
    );
    let tacs: Api<TenantApiCredential> = Api::namespaced(api.client(), NS);
    let st =
        json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential", "status": {"secretName": "x"}});
    let after = tacs
        .patch_status("c", &PatchParams::apply("op").force(), &Patch::Apply(&st))
        .await
        .expect("status");
    assert_eq!(
        after.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );
    assert_eq!(after.status.as_ref().and_then(|s| s.secret_name.as_deref()), Some("x"));
    let spec_and_status = json!({"spec": {"tenant": "b"}, "status": {"secretName": "ignored"}});
    let after = tacs
        .patch("c", &PatchParams::default(), &Patch::Merge(&spec_and_status))
        .await
        .expect("spec");
    assert_eq!(after.metadata.generation, Some(2));
    assert_eq!(
        after.status.and_then(|s| s.secret_name).as_deref(),
        Some("x"),
        "the main resource cannot write status"
    );
    let sneaky = json!({"spec": {"tenant": "zzz"}, "status": {"secretName": "y"}});
    let after = tacs
        .patch_status("c", &PatchParams::default(), &Patch::Merge(&sneaky))
        .await
        .expect("status");
    assert_eq!(after.spec.tenant, "b", "the status subresource cannot write spec");
}

#[tokio::test]
async fn finalizers_hold_deletion_and_owner_references_cascade() {
    let api = ApiServer::new();
    let owner = api.create(
        json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
        "metadata": {"name": "c", "namespace": NS, "finalizers": ["x/y"]},
        "spec": {"tenant": "a", "provider": "raise", "credentialRef": {"name": "in"}}}),
    );
    let mut child = secret("child", json!({}));
    child["metadata"]["ownerReferences"] = json!([{"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
        "name": "c", "uid": owner["metadata"]["uid"]}]);
    api.create(child);
    let tacs: Api<TenantApiCredential> = Api::namespaced(api.client(), NS);
    tacs.delete("c", &DeleteParams::default()).await.expect("delete");
    let held = tacs.get("c").await.expect("still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(api.get("secrets", NS, "child").is_some());
    let p = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "x/y"}, {"op": "remove", "path": "/metadata/finalizers/0"}]);
    tacs.patch(
        "c",
        &PatchParams::default(),
        &Patch::Json::<()>(serde_json::from_value(p).expect("patch")),
    )
    .await
    .expect("unfinalize");
    assert!(
        tacs.get_opt("c").await.expect("get").is_none(),
        "gone once the last finalizer is removed"
    );
    assert!(
        api.get("secrets", NS, "child").is_none(),
        "dependents are garbage-collected"
    );
}

#[tokio::test]
async fn list_pages_label_selectors_and_watch_from_resource_version() {
    let api = ApiServer::new();
    for i in 0..5 {
        api.create(secret(
            &format!("s{i}"),
            json!({"app.kubernetes.io/managed-by": if i % 2 == 0 { "tenantcred" } else { "other" }}),
        ));
    }
    let secrets: Api<Secret> = Api::namespaced(api.client(), NS);
    let page = secrets.list(&ListParams::default().limit(2)).await.expect("list");
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("continue token");
    let rest = secrets
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(rest.items.len(), 3);
    let selected = secrets
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=tenantcred"))
        .await
        .expect("list");
    assert_eq!(selected.items.len(), 3);
    let rv = selected.metadata.resource_version.clone().expect("rv");
    api.create(secret("late", json!({"app.kubernetes.io/managed-by": "tenantcred"})));
    api.create(secret("ignored", json!({})));
    let wp = WatchParams::default()
        .labels("app.kubernetes.io/managed-by=tenantcred")
        .timeout(2);
    let events: Vec<_> = secrets
        .watch(&wp, &rv)
        .await
        .expect("watch")
        .take(1)
        .try_collect()
        .await
        .expect("events");
    assert!(matches!(&events[0], WatchEvent::Added(s) if s.metadata.name.as_deref() == Some("late")));
    // Relabelled out of the selector: the watcher sees it go.
    let from = api.resource_version().to_string();
    let mut w = secrets.watch(&wp, &from).await.expect("watch").boxed();
    api.replace(secret("late", json!({})));
    let ev = w.next().await.expect("event");
    let ev = ev.unwrap_or_else(|e| panic!("watch event: {e}"));
    assert!(matches!(ev, WatchEvent::Deleted(_)));
    // A stale resourceVersion on replace is refused.
    let stale: Secret = secrets.get("s0").await.expect("get");
    api.replace(secret("s0", json!({"changed": "yes"})));
    let e = secrets
        .replace("s0", &PostParams::default(), &stale)
        .await
        .expect_err("stale");
    assert!(matches!(e, kube::Error::Api(s) if s.code == 409));
}
