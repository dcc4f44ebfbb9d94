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

/// A tenant's baseUrl outside the owner's rules gets a condition naming the flag, and no request:
/// not for probes, not for the OAuth token endpoint, not to the cloud's metadata address.
async fn a_base_url_outside_the_allowlist_gets_no_request(h: Harness) {
    h.provider.default_answer(Answer::Ok);
    h.source_secret("elsewhere-input", "good").await;
    h.credential(
        "elsewhere",
        "generic",
        json!({"baseUrl": "https://api.tenant-chosen.example"}),
    )
    .await;
    h.source_secret("metadata-input", "good").await;
    h.credential("metadata", "virtuous", json!({"baseUrl": "https://169.254.169.254"}))
        .await;
    h.credential(
        "login",
        "virtuous",
        json!({"baseUrl": "https://10.0.0.1", "credentialRef": null, "oauth": {"secretRef": {"name": "login-secret"}}}),
    )
    .await;
    for name in ["elsewhere", "metadata", "login"] {
        eventually(10, &format!("{name} BaseUrlNotAllowed"), async || {
            h.condition(name, "Ready").await == pair("False", "BaseUrlNotAllowed")
        })
        .await;
        assert_eq!(h.condition(name, "Stalled").await, pair("True", "BaseUrlNotAllowed"));
        let msg = h.tac(name).await["status"]["conditions"].to_string();
        assert!(
            msg.contains("--allowed-host") && msg.contains("nothing was sent"),
            "{msg}"
        );
        assert!(h.get("secrets", name).await.is_none(), "{name}: no Secret");
    }
    let msg = h.tac("metadata").await["status"]["conditions"].to_string();
    assert!(msg.contains("169.254.169.254 is not a public address"), "{msg}");
    let msg = h.tac("elsewhere").await["status"]["conditions"].to_string();
    assert!(msg.contains("provider generic has no documented host"), "{msg}");
    assert!(h.provider.seen().is_empty(), "nothing sent anywhere");
    // Pointing it where the owner allows recovers.
    let allowed = h.provider.base_url.clone();
    h.edit_tac("elsewhere", |o| o["spec"]["baseUrl"] = json!(allowed)).await;
    eventually(10, "Ready once allowed", async || {
        h.condition("elsewhere", "Ready").await == pair("True", "TokenValid")
    })
    .await;
}

/// An allowed name is not an allowed address: a name that resolves to loopback is refused when
/// the connection is made, until the owner allows the address itself.
async fn a_name_that_resolves_to_a_private_address_is_refused_at_connect_time(mut h: Harness) {
    use tenantcred::egress::Egress;
    let pattern = |p: &str| p.parse().expect("pattern");
    h.restart_controller_with(Egress::new(vec![pattern("localhost")], true));
    h.provider.default_answer(Answer::Ok);
    let by_name = h.provider.base_url.replace("127.0.0.1", "localhost");
    h.source_secret("local-input", "good").await;
    h.credential("local", "generic", json!({"baseUrl": by_name})).await;
    eventually(15, "refused at connect time", async || {
        h.condition("local", "Ready").await == pair("False", "BaseUrlNotAllowed")
    })
    .await;
    let msg = h.tac("local").await["status"]["conditions"].to_string();
    assert!(
        msg.contains("localhost resolves only to addresses that are not public") && msg.contains("127.0.0.1"),
        "{msg}"
    );
    assert!(h.provider.seen().is_empty(), "nothing sent");
    h.restart_controller_with(Egress::new(vec![pattern("localhost"), pattern("127.0.0.1")], true));
    eventually(20, "Ready once the address is allowed", async || {
        h.condition("local", "Ready").await == pair("True", "TokenValid")
    })
    .await;
}

scenarios!(
    a_base_url_outside_the_allowlist_gets_no_request,
    a_name_that_resolves_to_a_private_address_is_refused_at_connect_time,
    an_oversized_token_is_refused_and_never_sent_or_written,
    a_service_account_token_is_never_a_source,
    a_secret_the_api_server_refuses_is_a_condition_not_a_loop,
);
