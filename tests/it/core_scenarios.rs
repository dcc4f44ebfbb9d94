//! Issue 2 through the real controller and the API server double: the managed Secret, the status,
//! and every kind of bad input.

use serde_json::json;

use crate::support::{Answer, Harness, NS, eventually, pair, settle};

const TOKEN: &str = "tok-one";

async fn ready_credential(h: &Harness, name: &str, extra: serde_json::Value) {
    h.provider.answer(TOKEN, Answer::Ok);
    h.source_secret(&format!("{name}-input"), TOKEN);
    h.credential(name, "generic", extra);
    eventually(10, "Ready=True", || {
        h.condition(name, "Ready") == pair("True", "TokenValid")
    })
    .await;
}

#[tokio::test]
async fn create_yields_the_managed_secret_and_status() {
    let h = Harness::start().await;
    ready_credential(
        &h,
        "acme-raise",
        json!({"target": {"name": "acme-raise-api", "labels": {"team": "sync"}}}),
    )
    .await;
    let s = h.api.get("secrets", NS, "acme-raise-api").expect("managed secret");
    let data = s["data"].as_object().expect("data");
    let mut keys: Vec<_> = data.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["authorization", "baseUrl", "provider", "tenant", "token"]);
    assert_eq!(h.managed_token("acme-raise-api").as_deref(), Some(TOKEN));
    let labels = &s["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "tenantcred");
    assert_eq!(labels["tenantcred.dev/tenant"], "acme");
    assert_eq!(labels["tenantcred.dev/provider"], "generic");
    assert_eq!(labels["team"], "sync");
    assert_eq!(s["type"], "Opaque");
    let tac = h.tac("acme-raise");
    assert_eq!(s["metadata"]["ownerReferences"][0]["uid"], tac["metadata"]["uid"]);
    let status = &tac["status"];
    assert_eq!(status["secretName"], "acme-raise-api");
    assert_eq!(status["observedGeneration"], 1);
    let fp = status["tokenFingerprint"].as_str().expect("fingerprint");
    assert!(fp.starts_with("sha256:") && fp.len() == 19, "{fp}");
    assert!(
        !tac.to_string().contains(TOKEN),
        "the token never appears in the resource"
    );
    assert_eq!(tac["metadata"]["finalizers"][0], "tenantcred.dev/cleanup");
    assert_eq!(h.events("SecretCreated"), 1);
    assert!(
        h.api.list("events").iter().all(|e| !e.to_string().contains(TOKEN)),
        "events never carry the token"
    );
}

#[tokio::test]
async fn a_new_token_in_the_source_updates_the_secret_and_fingerprint() {
    let h = Harness::start().await;
    ready_credential(&h, "c", json!({})).await;
    let before = h.tac("c")["status"]["tokenFingerprint"].clone();
    h.provider.answer("tok-two", Answer::Ok);
    h.source_secret("c-input", "tok-two");
    eventually(10, "secret updated", || {
        h.managed_token("c").as_deref() == Some("tok-two")
    })
    .await;
    eventually(10, "fingerprint changes", || {
        h.tac("c")["status"]["tokenFingerprint"] != before
    })
    .await;
    eventually(10, "probed and ready", || {
        h.provider.hits("tok-two") == 1 && h.condition("c", "Ready") == pair("True", "TokenValid")
    })
    .await;
    assert_eq!(h.events("SecretUpdated"), 1);
}

#[tokio::test]
async fn a_deleted_source_is_reported_and_the_secret_kept() {
    let h = Harness::start().await;
    ready_credential(&h, "c", json!({})).await;
    h.api.delete("secrets", NS, "c-input");
    eventually(10, "SourceNotFound", || {
        h.condition("c", "Ready") == pair("False", "SourceNotFound")
    })
    .await;
    assert_eq!(h.condition("c", "Stalled"), None, "recovers by itself: not Stalled");
    assert_eq!(
        h.managed_token("c").as_deref(),
        Some(TOKEN),
        "the last good Secret is intact"
    );
    assert_eq!(h.events("SourceNotFound"), 1);
    h.source_secret("c-input", TOKEN);
    eventually(10, "recovers when the source returns", || {
        h.condition("c", "Ready").is_some_and(|(s, _)| s != "False")
    })
    .await;
}

#[tokio::test]
async fn a_malformed_token_is_stalled_and_never_written() {
    let h = Harness::start().await;
    h.source_secret("cs-input", "not-a-charitystack-key");
    h.credential("cs", "charitystack", json!({}));
    eventually(10, "InvalidToken", || {
        h.condition("cs", "Ready") == pair("False", "InvalidToken")
    })
    .await;
    assert_eq!(h.condition("cs", "Stalled"), pair("True", "InvalidToken"));
    assert!(h.api.get("secrets", NS, "cs").is_none());
    let msg = h.tac("cs")["status"]["conditions"].to_string();
    assert!(
        msg.contains("cs_live_") && !msg.contains("not-a-charitystack-key"),
        "says what is wrong, never the token: {msg}"
    );
    assert_eq!(h.tac("cs")["status"]["lastProbeResult"], "Invalid");
    assert!(h.provider.seen().is_empty(), "no request for a malformed token");
    // Whitespace too.
    h.source_secret("cs-input", "cs_live_abc\n");
    settle(300).await;
    assert_eq!(h.condition("cs", "Ready"), pair("False", "InvalidToken"));
}

#[tokio::test]
async fn a_foreign_secret_is_a_conflict_and_left_untouched() {
    let h = Harness::start().await;
    let foreign = h.api.create(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "taken", "namespace": NS, "labels": {"owner": "someone"}}, "data": {"x": "eQ=="}}));
    h.source_secret("c-input", TOKEN);
    h.credential("c", "generic", json!({"target": {"name": "taken"}}));
    eventually(10, "SecretConflict", || {
        h.condition("c", "Ready") == pair("False", "SecretConflict")
    })
    .await;
    assert_eq!(h.condition("c", "Stalled"), pair("True", "SecretConflict"));
    assert_eq!(
        h.api.get("secrets", NS, "taken"),
        Some(foreign),
        "byte-for-byte untouched"
    );
    assert_eq!(h.events("SecretConflict"), 1);
}

#[tokio::test]
async fn deletion_follows_the_deletion_policy() {
    let h = Harness::start().await;
    ready_credential(&h, "gone", json!({})).await;
    h.provider.answer(TOKEN, Answer::Ok);
    h.source_secret("kept-input", TOKEN);
    h.credential("kept", "generic", json!({"target": {"deletionPolicy": "Retain"}}));
    eventually(10, "kept ready", || {
        h.condition("kept", "Ready") == pair("True", "TokenValid")
    })
    .await;
    assert!(
        h.api
            .get("secrets", NS, "kept")
            .is_some_and(|s| s["metadata"]["ownerReferences"].is_null())
    );
    let tacs: kube::Api<tenantcred::crd::TenantApiCredential> = kube::Api::namespaced(h.api.client(), NS);
    tacs.delete("gone", &Default::default()).await.expect("delete");
    tacs.delete("kept", &Default::default()).await.expect("delete");
    eventually(10, "both resources gone", || {
        h.tac("gone").is_null() && h.tac("kept").is_null()
    })
    .await;
    assert!(
        h.api.get("secrets", NS, "gone").is_none(),
        "Delete: the Secret goes with the resource"
    );
    assert_eq!(
        h.managed_token("kept").as_deref(),
        Some(TOKEN),
        "Retain: the Secret stays"
    );
}

#[tokio::test]
async fn retain_set_after_creation_drops_the_owner_reference_on_delete() {
    let h = Harness::start().await;
    ready_credential(&h, "c", json!({})).await;
    assert!(!h.api.get("secrets", NS, "c").expect("secret")["metadata"]["ownerReferences"].is_null());
    h.edit_tac("c", |o| o["spec"]["target"] = json!({"deletionPolicy": "Retain"}));
    let tacs: kube::Api<tenantcred::crd::TenantApiCredential> = kube::Api::namespaced(h.api.client(), NS);
    tacs.delete("c", &Default::default()).await.expect("delete");
    eventually(10, "resource gone", || h.tac("c").is_null()).await;
    let s = h.api.get("secrets", NS, "c").expect("retained");
    assert!(s["metadata"]["ownerReferences"].as_array().is_none_or(|r| r.is_empty()));
}

#[tokio::test]
async fn steady_state_makes_no_writes() {
    let h = Harness::start().await;
    ready_credential(&h, "c", json!({})).await;
    settle(500).await;
    h.api.reset_counts();
    // Poke it: unrelated changes to the source Secret and the credential's labels wake the controller.
    for i in 0..5 {
        let mut src = h.api.get("secrets", NS, "c-input").expect("source");
        src["metadata"]["labels"] = json!({"touch": i.to_string()});
        h.api.replace(src);
        h.edit_tac("c", |o| o["metadata"]["annotations"] = json!({"poke": i.to_string()}));
        settle(100).await;
    }
    settle(500).await;
    let writes: u64 = h
        .api
        .requests()
        .iter()
        .filter(|((verb, res), _)| matches!(verb.as_str(), "apply" | "patch" | "update" | "create") && res != "events")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(writes, 0, "requests: {:?}", h.api.requests());
    assert!(
        h.api.count("get", "secrets") >= 5,
        "it did reconcile: {:?}",
        h.api.requests()
    );
    assert_eq!(h.provider.hits(TOKEN), 1, "and did not probe again before the interval");
}

#[tokio::test]
async fn suspend_keeps_the_secret_and_stops_work() {
    let h = Harness::start().await;
    ready_credential(&h, "c", json!({})).await;
    h.edit_tac("c", |o| o["spec"]["suspend"] = json!(true));
    eventually(10, "observedGeneration follows", || {
        h.tac("c")["status"]["observedGeneration"] == 2
    })
    .await;
    h.provider.answer("tok-new", Answer::Ok);
    h.source_secret("c-input", "tok-new");
    settle(500).await;
    assert_eq!(
        h.managed_token("c").as_deref(),
        Some(TOKEN),
        "suspended: the Secret is not touched"
    );
    assert_eq!(h.provider.hits("tok-new"), 0);
}

#[tokio::test]
async fn unknown_provider_and_insecure_urls_get_precise_reasons() {
    let h = Harness::start().await;
    h.source_secret("u-input", TOKEN);
    h.credential("u", "salesforce", json!({}));
    eventually(10, "InvalidSpec", || {
        h.condition("u", "Ready") == pair("False", "InvalidSpec")
    })
    .await;
    assert!(h.tac("u")["status"]["conditions"].to_string().contains("salesforce"));
    assert_eq!(h.condition("u", "Stalled"), pair("True", "InvalidSpec"));
}

#[tokio::test]
async fn api_errors_are_retried() {
    let api = crate::support::ApiServer::new();
    api.fail_next("apply", "secrets", 500);
    let h = Harness::start_with(api).await;
    ready_credential(&h, "c", json!({})).await;
    assert!(h.api.count("apply", "secrets") >= 2, "{:?}", h.api.requests());
}
