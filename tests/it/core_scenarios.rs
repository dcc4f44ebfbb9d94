//! Issue 2 through the real controller and the API server double: the managed Secret, the status,
//! and every kind of bad input.

use serde_json::json;
use tenantcred::decide::conditions::{Reason, Status, Type};

use tenantcred_testkit::{Answer, Backend, Harness, eventually, scenarios, settle};
use tenantcred_testkit::{DeletionPolicy, holds};

const TOKEN: &str = "tok-one";

async fn create_yields_the_managed_secret_and_status(h: Harness) {
    h.ready_credential(
        h.local("acme-raise").target("acme-raise-api").label("team", "sync"),
        TOKEN,
    )
    .await;
    let s = h.get("secrets", "acme-raise-api").await.expect("managed secret");
    let data = s["data"].as_object().expect("data");
    let mut keys: Vec<_> = data.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["authorization", "baseUrl", "provider", "tenant", "token"]);
    assert_eq!(h.managed_token("acme-raise-api").await.as_deref(), Some(TOKEN));
    let labels = &s["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "tenantcred");
    assert_eq!(labels["tenantcred.dev/tenant"], "acme");
    assert_eq!(labels["tenantcred.dev/provider"], "generic");
    assert_eq!(labels["team"], "sync");
    assert_eq!(s["type"], "Opaque");
    let tac = h.tac("acme-raise").await;
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
    assert!(
        tac["metadata"]["finalizers"].is_null(),
        "no finalizer: deletion needs nothing of the operator"
    );
    settle(300).await;
    assert_eq!(
        h.list("events").await,
        Vec::<serde_json::Value>::new(),
        "a healthy first sync is no news: no event"
    );
}

async fn a_new_token_in_the_source_updates_the_secret_and_fingerprint(h: Harness) {
    h.ready_credential(h.local("c"), TOKEN).await;
    let before = h.tac("c").await["status"]["tokenFingerprint"].clone();
    h.provider.answer("tok-two", Answer::Ok);
    h.source_secret("c-input", "tok-two").await;
    eventually(10, "secret updated", async || {
        h.managed_token("c").await.as_deref() == Some("tok-two")
    })
    .await;
    eventually(10, "fingerprint changes", async || {
        h.tac("c").await["status"]["tokenFingerprint"] != before
    })
    .await;
    eventually(10, "probed and ready", async || {
        h.provider.hits("tok-two") == 1 && h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    h.expect_events("TokenRotated", 1).await;
    h.expect_events("SecretUpdated", 0).await;
}

async fn a_deleted_source_is_reported_and_the_secret_kept(h: Harness) {
    h.ready_credential(h.local("c"), TOKEN).await;
    h.delete("secrets", "c-input").await;
    eventually(10, "SourceNotFound", async || {
        h.seen("c").await.is(Type::Ready, Status::False, Reason::SourceNotFound)
    })
    .await;
    assert_eq!(
        h.seen("c").await.condition(Type::Stalled),
        None,
        "recovers by itself: not Stalled"
    );
    assert_eq!(
        h.managed_token("c").await.as_deref(),
        Some(TOKEN),
        "the last good Secret is intact"
    );
    h.expect_events("SourceNotFound", 1).await;
    h.source_secret("c-input", TOKEN).await;
    eventually(
        10,
        "recovers when the source returns (probed again at once)",
        async || h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid),
    )
    .await;
}

async fn a_malformed_token_is_stalled_and_never_written(h: Harness) {
    h.source_secret("cs-input", "not-a-charitystack-key").await;
    h.create_credential(h.local("cs").provider("charitystack")).await;
    eventually(10, "InvalidToken", async || {
        h.seen("cs").await.is(Type::Ready, Status::False, Reason::InvalidToken)
    })
    .await;
    assert!(h.seen("cs").await.is(Type::Stalled, Status::True, Reason::InvalidToken));
    assert!(h.get("secrets", "cs").await.is_none());
    let msg = h.tac("cs").await["status"]["conditions"].to_string();
    assert!(
        msg.contains("cs_live_") && !msg.contains("not-a-charitystack-key"),
        "says what is wrong, never the token: {msg}"
    );
    assert_eq!(h.tac("cs").await["status"]["lastProbeResult"], "Invalid");
    assert!(h.provider.seen().is_empty(), "no request for a malformed token");
    // Whitespace too.
    h.source_secret("cs-input", "cs_live_abc\n").await;
    settle(300).await;
    assert_eq!(
        h.seen("cs").await.condition(Type::Ready),
        holds(Status::False, Reason::InvalidToken)
    );
}

async fn a_foreign_secret_is_a_conflict_and_left_untouched(h: Harness) {
    let foreign = h
        .create(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "taken", "labels": {"owner": "someone"}}, "data": {"x": "eQ=="}}))
        .await;
    h.source_secret("c-input", TOKEN).await;
    h.create_credential(h.local("c").target("taken")).await;
    eventually(10, "SecretConflict", async || {
        h.seen("c").await.is(Type::Ready, Status::False, Reason::SecretConflict)
    })
    .await;
    assert!(
        h.seen("c")
            .await
            .is(Type::Stalled, Status::True, Reason::SecretConflict)
    );
    assert_eq!(
        h.get("secrets", "taken").await,
        Some(foreign),
        "byte-for-byte untouched"
    );
    h.expect_events("SecretConflict", 1).await;
}

async fn deletion_follows_the_deletion_policy(h: Harness) {
    h.ready_credential(h.local("gone"), TOKEN).await;
    h.provider.answer(TOKEN, Answer::Ok);
    h.source_secret("kept-input", TOKEN).await;
    h.create_credential(h.local("kept").retain()).await;
    eventually(10, "kept ready", async || {
        h.seen("kept").await.ready_because(Reason::TokenValid)
    })
    .await;
    assert!(
        h.get("secrets", "kept")
            .await
            .is_some_and(|s| s["metadata"]["ownerReferences"].is_null())
    );
    h.delete_tac("gone").await;
    h.delete_tac("kept").await;
    eventually(10, "both resources gone", async || {
        h.tac("gone").await.is_null() && h.tac("kept").await.is_null()
    })
    .await;
    if h.garbage_collects() {
        // kube-controller-manager's garbage collector, not the operator, deletes it: on a busy
        // machine it may first have to discover the credential kind (its resync is 30 s).
        eventually(45, "Delete: the Secret goes with the resource", async || {
            h.get("secrets", "gone").await.is_none()
        })
        .await;
    } else {
        h.skip("no garbage collector (kube-controller-manager) to delete the owned Secret");
    }
    assert_eq!(
        h.managed_token("kept").await.as_deref(),
        Some(TOKEN),
        "Retain: the Secret stays"
    );
}

async fn retain_set_after_creation_drops_the_owner_reference_on_delete(h: Harness) {
    h.ready_credential(h.local("c"), TOKEN).await;
    assert!(!h.get("secrets", "c").await.expect("secret")["metadata"]["ownerReferences"].is_null());
    h.edit_spec("c", |s| s.target.deletion_policy = DeletionPolicy::Retain)
        .await;
    // Retain takes effect when reconciled, not at deletion: the owner reference goes at once.
    eventually(10, "owner reference dropped", async || {
        h.get("secrets", "c")
            .await
            .is_some_and(|s| s["metadata"]["ownerReferences"].as_array().is_none_or(|r| r.is_empty()))
    })
    .await;
    h.delete_tac("c").await;
    eventually(10, "resource gone", async || h.tac("c").await.is_null()).await;
    let s = h.get("secrets", "c").await.expect("retained");
    assert!(s["metadata"]["ownerReferences"].as_array().is_none_or(|r| r.is_empty()));
}

async fn the_finalizer_of_earlier_releases_is_removed(h: Harness) {
    h.provider.answer(TOKEN, Answer::Ok);
    h.source_secret("c-input", TOKEN).await;
    let tac = h
        .create(
            json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
            "metadata": {"name": "c", "finalizers": ["tenantcred.dev/cleanup", "example.com/keep"]},
            "spec": {"tenant": "acme", "provider": "generic", "baseUrl": h.provider.base_url,
                     "probe": {"path": "/probe"}, "credentialRef": {"name": "c-input"}}}),
        )
        .await;
    assert_eq!(tac["metadata"]["finalizers"][0], "tenantcred.dev/cleanup");
    eventually(10, "our finalizer removed, the other kept", async || {
        h.tac("c").await["metadata"]["finalizers"] == json!(["example.com/keep"])
    })
    .await;
    eventually(10, "Ready", async || {
        h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
}

/// What a new credential costs the API server: the source read, the Secret create and one status
/// write carrying the first verdict. No event, no finalizer, no other read.
async fn a_new_credential_costs_two_writes_and_one_read(h: Harness) {
    h.ready_credential(h.local("c"), TOKEN).await;
    settle(500).await;
    let requests = h.tap.requests();
    let non_watch: std::collections::BTreeMap<_, _> = requests
        .iter()
        // Caches and leader election are not per credential.
        .filter(|((verb, resource), _)| !matches!(verb.as_str(), "list" | "watch") && resource != "leases")
        .collect();
    let expected: std::collections::BTreeMap<(String, String), u64> = [
        (("create".to_string(), "secrets".to_string()), 1),
        (("get".to_string(), "secrets".to_string()), 1),
        (("patch".to_string(), "tenantapicredentials/status".to_string()), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        non_watch,
        expected.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "{requests:?}"
    );
    // And a probe asked for later costs the status write only: the token comes from the caches.
    h.tap.reset();
    h.request_probe("c", "2026-11-22T10:00:00Z").await;
    eventually(10, "probed again", async || h.provider.hits(TOKEN) == 2).await;
    settle(300).await;
    assert_eq!(h.tap.count("get", "secrets"), 0, "{:?}", h.tap.requests());
}

async fn steady_state_makes_no_writes(h: Harness) {
    h.ready_credential(h.local("c"), TOKEN).await;
    settle(500).await;
    h.tap.reset();
    // Poke it: unrelated changes to the source Secret and the credential's labels wake the controller.
    for i in 0..5 {
        let mut src = h.get("secrets", "c-input").await.expect("source");
        src["metadata"]["labels"] = json!({"touch": i.to_string()});
        h.edit("secrets", "c-input", |s| {
            s["metadata"]["labels"] = src["metadata"]["labels"].clone()
        })
        .await;
        h.edit_tac("c", |o| o["metadata"]["annotations"] = json!({"poke": i.to_string()}))
            .await;
        settle(100).await;
    }
    settle(500).await;
    assert_eq!(h.tap.writes(), 0, "requests: {:?}", h.tap.requests());
    assert!(
        h.tap.count("get", "secrets") >= 5,
        "it did reconcile: {:?}",
        h.tap.requests()
    );
    assert_eq!(h.provider.hits(TOKEN), 1, "and did not probe again before the interval");
}

async fn suspend_keeps_the_secret_and_stops_work(h: Harness) {
    h.ready_credential(h.local("c"), TOKEN).await;
    h.edit_spec("c", |s| s.suspend = true).await;
    eventually(10, "observedGeneration follows", async || {
        h.tac("c").await["status"]["observedGeneration"] == 2
    })
    .await;
    h.provider.answer("tok-new", Answer::Ok);
    h.source_secret("c-input", "tok-new").await;
    settle(500).await;
    assert_eq!(
        h.managed_token("c").await.as_deref(),
        Some(TOKEN),
        "suspended: the Secret is not touched"
    );
    assert_eq!(h.provider.hits("tok-new"), 0);
}

async fn unknown_provider_and_insecure_urls_get_precise_reasons(h: Harness) {
    if h.backend == Backend::Real {
        // The real server's schema refuses a provider name that could name no ApiProvider.
        let err = h
            .client
            .request::<serde_json::Value>(
                http::Request::post(format!(
                    "/apis/tenantcred.dev/v1alpha1/namespaces/{}/tenantapicredentials",
                    h.ns
                ))
                .header("content-type", "application/json")
                .body(
                    json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
                        "metadata": {"name": "n"}, "spec": {"tenant": "acme", "provider": "Sales Force",
                        "credentialRef": {"name": "n-input"}}})
                    .to_string()
                    .into_bytes(),
                )
                .expect("request"),
            )
            .await
            .expect_err("the schema refuses a provider name that is not a DNS name");
        assert!(err.to_string().contains("spec.provider"), "{err}");
    }
    // A name no built-in or defined provider has: the operator says so, and recovers by itself
    // when a platform admin defines it (provider_scenarios), so it does not stall.
    h.source_secret("u-input", TOKEN).await;
    h.create_credential(h.local("u").provider("salesforce")).await;
    eventually(10, "ProviderNotFound", async || {
        h.seen("u")
            .await
            .is(Type::Ready, Status::False, Reason::ProviderNotFound)
    })
    .await;
    assert!(
        h.tac("u").await["status"]["conditions"]
            .to_string()
            .contains("salesforce")
    );
    assert_eq!(h.seen("u").await.condition(Type::Stalled), None);
}

async fn a_spec_the_types_cannot_read_is_reported_and_others_go_on(h: Harness) {
    if h.backend == Backend::Real {
        h.skip("the real server's schema refuses such a spec before the operator sees it");
        return;
    }
    // A credential that slipped past schema validation (the double has none): the tenant is a
    // number. Before, one such object failed the whole credential watch's list.
    h.source_secret("w-input", TOKEN).await;
    h.credential("w", "generic", json!({"tenant": 5})).await;
    h.ready_credential(h.local("c"), TOKEN).await;
    eventually(10, "InvalidSpec", async || {
        h.seen("w").await.is(Type::Ready, Status::False, Reason::InvalidSpec)
    })
    .await;
    assert_eq!(
        h.seen("w").await.condition(Type::Stalled),
        holds(Status::True, Reason::InvalidSpec)
    );
    let conditions = h.tac("w").await["status"]["conditions"].to_string();
    assert!(
        conditions.contains("does not match the TenantApiCredential schema"),
        "{conditions}"
    );
    assert!(h.managed_token("w").await.is_none(), "nothing is written for it");
}

async fn api_errors_are_retried(h: Harness) {
    h.tap.fail_next("create", "secrets", 500);
    h.ready_credential(h.local("c"), TOKEN).await;
    assert!(h.tap.count("create", "secrets") >= 2, "{:?}", h.tap.requests());
}

scenarios!(
    create_yields_the_managed_secret_and_status,
    a_new_token_in_the_source_updates_the_secret_and_fingerprint,
    a_deleted_source_is_reported_and_the_secret_kept,
    a_malformed_token_is_stalled_and_never_written,
    a_foreign_secret_is_a_conflict_and_left_untouched,
    deletion_follows_the_deletion_policy,
    retain_set_after_creation_drops_the_owner_reference_on_delete,
    steady_state_makes_no_writes,
    a_new_credential_costs_two_writes_and_one_read,
    the_finalizer_of_earlier_releases_is_removed,
    suspend_keeps_the_secret_and_stops_work,
    unknown_provider_and_insecure_urls_get_precise_reasons,
    a_spec_the_types_cannot_read_is_reported_and_others_go_on,
    api_errors_are_retried,
);
