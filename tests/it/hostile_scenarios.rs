//! Issue 12: input written by a tenant the operator does not fully trust gets a clear answer and
//! never a silent retry loop, and the last good Secret stays as it was.

use serde_json::json;

use tenantcred_testkit::{Answer, Harness, eventually, pair, scenarios};

/// A 700 KB "token" would make a Secret over the API server's 1 MiB (it is stored twice).
async fn an_oversized_token_is_refused_and_never_sent_or_written(h: Harness) {
    let huge = "x".repeat(700 * 1024);
    h.source_secret("big-input", &huge).await;
    h.credential("big", "generic", json!({})).await;
    eventually(10, "InvalidToken", async || {
        h.condition("big", "Ready").await == pair("False", "InvalidToken")
    })
    .await;
    let msg = h.tac("big").await["status"]["conditions"].to_string();
    assert!(msg.contains("716800 bytes") && msg.contains("8192"), "{msg}");
    assert_eq!(h.condition("big", "Stalled").await, pair("True", "InvalidToken"));
    assert!(h.get("secrets", "big").await.is_none(), "never written");
    assert!(h.provider.seen().is_empty(), "never sent");
}

async fn a_service_account_token_is_never_a_source(h: Harness) {
    h.provider.default_answer(Answer::Ok);
    h.create(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "sa-input", "annotations": {"kubernetes.io/service-account.name": "default"}},
        "data": {"token": tenantcred_testkit::apiserver::b64(b"a-kubernetes-credential")}}),
    )
    .await;
    h.credential("sa", "generic", json!({})).await;
    eventually(10, "SourceNotAllowed", async || {
        h.condition("sa", "Ready").await == pair("False", "SourceNotAllowed")
    })
    .await;
    assert_eq!(h.condition("sa", "Stalled").await, pair("True", "SourceNotAllowed"));
    assert!(h.provider.seen().is_empty(), "nothing sent anywhere");
    assert!(h.get("secrets", "sa").await.is_none());
}

/// A write the API server refuses (422) is a condition with the server's reason, and the Secret
/// keeps its last good content.
async fn a_secret_the_api_server_refuses_is_a_condition_not_a_loop(h: Harness) {
    h.ready_credential("c", "good", json!({})).await;
    h.edit_tac("c", |o| {
        o["spec"]["target"] = json!({"labels": {"team": "not a label value!"}})
    })
    .await;
    eventually(10, "SecretRejected", async || {
        h.condition("c", "Ready").await == pair("False", "SecretRejected")
    })
    .await;
    let msg = h.tac("c").await["status"]["conditions"].to_string();
    assert!(msg.contains("Invalid value"), "the server's reason: {msg}");
    assert_eq!(h.condition("c", "Stalled").await, pair("True", "SecretRejected"));
    assert_eq!(
        h.managed_token("c").await.as_deref(),
        Some("good"),
        "last good Secret intact"
    );
    // Not retried in a loop: a few seconds bring no further write attempts.
    h.tap.reset();
    tenantcred_testkit::settle(1500).await;
    assert_eq!(h.tap.writes(), 0, "{:?}", h.tap.requests());
    // Fixing the spec recovers.
    h.edit_tac("c", |o| o["spec"]["target"] = json!({"labels": {"team": "sync"}}))
        .await;
    eventually(10, "Ready again", async || {
        h.condition("c", "Ready").await == pair("True", "TokenValid")
    })
    .await;
}

scenarios!(
    an_oversized_token_is_refused_and_never_sent_or_written,
    a_service_account_token_is_never_a_source,
    a_secret_the_api_server_refuses_is_a_condition_not_a_loop,
);
