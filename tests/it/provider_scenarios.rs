//! Issue 28: providers as data. A provider defined only as an `ApiProvider` object drives a
//! credential like a built-in one; editing and deleting it act on live credentials; a tenant
//! cannot define one.

use serde_json::{Value, json};

use tenantcred_testkit::{Answer, Backend, Harness, Shape, eventually, scenarios};
use tenantcred_testkit::{Reason, Status, Type};

/// A provider name of this test's own: ApiProviders are cluster-scoped, and the real server is
/// shared by every test.
fn provider_name(h: &Harness) -> String {
    format!("{}-api", h.ns)
}

/// An API with its own ways: the token in `X-Api-Key` after `Key `, tokens `acme_` + 8 or more
/// lower-case letters or digits, `RateLimit-*` headers whose reset counts seconds, and the
/// expiry in a response header. 100 requests a minute, 5% of which probes may use: 300 probes
/// an hour.
fn definition(name: &str, probe_path: &str) -> Value {
    json!({
        "apiVersion": "tenantcred.dev/v1alpha1", "kind": "ApiProvider",
        "metadata": {"name": name},
        "spec": {
            "hosts": ["api.acme.test"],
            "probe": {"path": probe_path},
            "auth": {"type": "Header", "header": "X-Api-Key", "prefix": "Key "},
            "token": {"pattern": "acme_[a-z0-9]{8,}", "maxLength": 64},
            "rateLimit": {"requests": 100, "window": "1m", "probeSharePercent": 5,
                          "headers": {"limit": "RateLimit-Limit", "remaining": "RateLimit-Remaining",
                                      "reset": "RateLimit-Reset"},
                          "resetUnit": "Seconds"},
            "expiry": {"source": "Header", "header": "X-Key-Expires", "format": "HTTPDate"}
        }
    })
}

fn shape() -> Shape {
    Shape {
        auth_header: "x-api-key".into(),
        auth_prefix: "Key ".into(),
        rate_headers: [
            "RateLimit-Limit".into(),
            "RateLimit-Remaining".into(),
            "RateLimit-Reset".into(),
        ],
        reset_value: "30".into(),
        expiry_header: Some(("X-Key-Expires".into(), "Wed, 30 Jun 2027 12:00:00 GMT".into())),
        ..Shape::default()
    }
}

async fn apply_provider(h: &Harness, obj: &Value) {
    h.apply_cluster("apiproviders", obj).await;
}

async fn delete_provider(h: &Harness, name: &str) {
    h.delete_cluster("apiproviders", name).await;
}

/// The spec a credential of the defined provider gets: the local simulator's address (allowed
/// by the operator's owner, as an address must be), failureThreshold 1 for a quick verdict.
fn credential(h: &Harness, name: &str) -> Value {
    json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
        "metadata": {"name": name},
        "spec": {"tenant": "acme", "provider": provider_name(h), "baseUrl": h.provider.base_url,
                 "probe": {"failureThreshold": 1}, "credentialRef": {"name": format!("{name}-input")}}})
}

async fn a_defined_provider_drives_a_credential_like_a_built_in_one(h: Harness) {
    let name = provider_name(&h);
    h.provider.set_shape(shape());
    h.provider.send_rate_headers(true);
    h.provider.answer("acme_good0001", Answer::Ok);
    h.provider.answer("acme_revoked01", Answer::UnauthorizedJson);
    apply_provider(&h, &definition(&name, "/v2/me")).await;
    h.source_secret("c-input", "acme_good0001").await;
    h.create(credential(&h, "c")).await;
    eventually(15, "Ready through the defined provider", async || {
        h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    let seen = h.provider.seen();
    let first = seen.iter().find(|s| s.token.is_some()).expect("a probe");
    assert_eq!(first.path, "/v2/me");
    assert_eq!(
        first.authorization, None,
        "the token goes only where the definition says"
    );
    let st = &h.tac("c").await["status"];
    assert_eq!(st["rateLimit"]["limit"], 1000, "its own rate-limit headers: {st}");
    assert_eq!(st["rateLimit"]["remaining"], 987);
    assert_eq!(st["providerExpiresAt"], "2027-06-30T12:00:00Z", "{st}");
    assert_eq!(st["expiresAt"], "2027-06-30T12:00:00Z");

    // A token that does not match the pattern is Invalid before anything is sent.
    let before = h.provider.seen().len();
    h.source_secret("c-input", "not-an-acme-key").await;
    eventually(10, "InvalidToken", async || {
        h.seen("c").await.is(Type::Ready, Status::False, Reason::InvalidToken)
    })
    .await;
    assert_eq!(h.provider.seen().len(), before, "nothing sent for a malformed token");
    assert_eq!(
        h.managed_token("c").await.as_deref(),
        Some("acme_good0001"),
        "the last good token stays"
    );

    // Revoked: 401 by the definition's rules, Degraded at the threshold.
    h.source_secret("c-input", "acme_revoked01").await;
    eventually(15, "Degraded", async || {
        h.seen("c").await.is(Type::Degraded, Status::True, Reason::Unauthorized)
    })
    .await;
    // A new good token recovers it.
    h.provider.answer("acme_good0002", Answer::Ok);
    h.source_secret("c-input", "acme_good0002").await;
    eventually(15, "recovered", async || {
        h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid)
            && h.seen("c").await.is(Type::Degraded, Status::False, Reason::AsExpected)
    })
    .await;
    // Within its budget: 300 probes an hour per key; each token here was probed once or twice.
    for token in ["acme_good0001", "acme_revoked01", "acme_good0002"] {
        assert!(h.provider.hits(token) <= 2, "{token}: {}", h.provider.hits(token));
    }
    delete_provider(&h, &name).await;
}

async fn editing_and_deleting_a_provider_act_on_live_credentials(h: Harness) {
    let name = provider_name(&h);
    h.provider.set_shape(shape());
    h.provider.answer("acme_good0001", Answer::Ok);
    apply_provider(&h, &definition(&name, "/v2/me")).await;
    h.source_secret("c-input", "acme_good0001").await;
    h.create(credential(&h, "c")).await;
    eventually(15, "Ready", async || {
        h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;

    // A new probe path, and a probe-now request: the next probe uses it, without a restart.
    apply_provider(&h, &definition(&name, "/v3/whoami")).await;
    h.request_probe("c", "2026-12-03T00:00:00Z").await;
    eventually(15, "probed at the new path", async || {
        h.provider.seen().iter().any(|s| s.path == "/v3/whoami")
    })
    .await;

    // A definition the operator cannot use: its credentials say so; the Secret stays.
    let mut broken = definition(&name, "/v3/whoami");
    broken["spec"]["token"]["pattern"] = json!("(unclosed");
    apply_provider(&h, &broken).await;
    eventually(15, "ProviderNotAccepted", async || {
        h.seen("c")
            .await
            .is(Type::Ready, Status::False, Reason::ProviderNotAccepted)
    })
    .await;
    let msg = h.tac("c").await["status"]["conditions"].to_string();
    assert!(msg.contains("token.pattern does not compile"), "{msg}");

    // Deleted: a named reason, the managed Secret intact, nothing probed.
    delete_provider(&h, &name).await;
    eventually(15, "ProviderNotFound", async || {
        h.seen("c")
            .await
            .is(Type::Ready, Status::False, Reason::ProviderNotFound)
    })
    .await;
    assert_eq!(
        h.seen("c").await.condition(Type::Stalled),
        None,
        "it recovers by itself"
    );
    assert_eq!(h.managed_token("c").await.as_deref(), Some("acme_good0001"));

    // Defined again: the credential recovers by itself.
    apply_provider(&h, &definition(&name, "/v2/me")).await;
    eventually(15, "Ready again", async || {
        h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    delete_provider(&h, &name).await;
}

/// The provider's status: accepted or why not, and its credentials at a glance. Written only by
/// an operator that sees every namespace, which a test can run only on its own API server.
async fn a_provider_reports_its_credentials(mut h: Harness) {
    if h.backend == Backend::Real {
        h.skip("the real server is shared by every test: only the double can run a cluster-wide operator");
        return;
    }
    h.restart_controller_tuned(|c| c.namespaces.clear());
    let name = provider_name(&h);
    h.provider.set_shape(shape());
    h.provider.answer("acme_good0001", Answer::Ok);
    apply_provider(&h, &definition(&name, "/v2/me")).await;
    h.source_secret("c-input", "acme_good0001").await;
    h.create(credential(&h, "c")).await;
    let status = async || h.get_cluster("apiproviders", &name).await["status"].clone();
    eventually(20, "status counts the Ready credential", async || {
        let s = status().await;
        s["credentials"] == 1 && s["readyCredentials"] == 1 && s["probesLastHour"] == 1
    })
    .await;
    let s = status().await;
    assert_eq!(
        tenantcred_testkit::provider_condition(&json!({"status": s}), "Accepted"),
        Some(("True".to_owned(), "Accepted".to_owned()))
    );
    let mut reserved = definition("raise", "/x");
    reserved["metadata"]["name"] = json!("raise");
    apply_provider(&h, &reserved).await;
    eventually(20, "a built-in name is refused", async || {
        let s = h.get_cluster("apiproviders", "raise").await;
        tenantcred_testkit::provider_condition(&s, "Accepted") == Some(("False".to_owned(), "ReservedName".to_owned()))
    })
    .await;
}

/// Defining a provider decides where tokens go: a tenant's ServiceAccount, with `edit` in its
/// namespace as tenants get, is refused (real server: the double has no authorization).
async fn a_tenant_cannot_define_a_provider(h: Harness) {
    if h.backend == Backend::Double {
        h.skip("the double does not authorize");
        return;
    }
    let tenant = tenantcred_testkit::chart::tenant_client(&h.client, &h.ns)
        .await
        .expect("a tenant's client");
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::all_with(tenant, &tenantcred_testkit::resource("apiproviders"));
    let obj: kube::api::DynamicObject =
        serde_json::from_value(definition(&provider_name(&h), "/v2/me")).expect("object");
    match api.create(&Default::default(), &obj).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("a tenant defined a provider: {other:?}"),
    }
}

/// One probe per distinct token: a second credential holding the same token for the same
/// request takes the first one's recent answer; each keeps its own status. A person's probe-now
/// request is still a probe of its own.
async fn credentials_holding_the_same_token_share_one_probe(h: Harness) {
    h.provider.answer("shared-token", Answer::Ok);
    h.source_secret("a-input", "shared-token").await;
    h.source_secret("b-input", "shared-token").await;
    h.create_credential(h.local("a")).await;
    eventually(10, "a Ready", async || {
        h.seen("a").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    h.create_credential(h.local("b").tenant("globex")).await;
    eventually(10, "b Ready", async || {
        h.seen("b").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    assert_eq!(h.provider.hits("shared-token"), 1, "one probe for two holders");
    assert_eq!(h.tac("b").await["status"]["lastProbeResult"], "Valid");
    h.request_probe("b", "2026-12-03T00:00:00Z").await;
    eventually(10, "probe-now sends", async || h.provider.hits("shared-token") == 2).await;
}

/// Issue 36: a definition sending the token in a header that frames or routes the request is
/// refused by the real server's schema; where no schema ran (the double), by the operator with
/// reason ForbiddenHeader, and its credentials send nothing.
async fn a_provider_cannot_send_the_token_in_a_framing_header(mut h: Harness) {
    let name = provider_name(&h);
    let mut accept = definition(&name, "/v2/me");
    accept["spec"]["auth"]["header"] = json!("ACCEPT");
    if h.backend == Backend::Real {
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::all_with(h.client.clone(), &tenantcred_testkit::resource("apiproviders"));
        let obj: kube::api::DynamicObject = serde_json::from_value(accept).expect("object");
        match api.create(&Default::default(), &obj).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 422, "{e:?}");
                assert!(
                    e.message.contains("auth.header must not be") && e.message.contains("accept"),
                    "{e:?}"
                );
            }
            other => panic!("the schema let auth.header ACCEPT through: {other:?}"),
        }
        h.skip("a forbidden header cannot slip past the real server's schema: the operator's refusal is the double's");
        return;
    }
    h.restart_controller_tuned(|c| c.namespaces.clear());
    h.provider.set_shape(shape());
    h.provider.answer("acme_good0001", Answer::Ok);
    apply_provider(&h, &accept).await;
    h.source_secret("c-input", "acme_good0001").await;
    h.create(credential(&h, "c")).await;
    eventually(20, "ForbiddenHeader", async || {
        let s = h.get_cluster("apiproviders", &name).await;
        tenantcred_testkit::provider_condition(&s, "Accepted")
            == Some(("False".to_owned(), "ForbiddenHeader".to_owned()))
    })
    .await;
    eventually(15, "ProviderNotAccepted", async || {
        h.seen("c")
            .await
            .is(Type::Ready, Status::False, Reason::ProviderNotAccepted)
    })
    .await;
    let msg = h.tac("c").await["status"]["conditions"].to_string();
    assert!(
        msg.contains("auth.header accept") && msg.contains("proxy-authorization"),
        "{msg}"
    );
    assert!(h.provider.seen().is_empty(), "nothing sent");
    delete_provider(&h, &name).await;
}

scenarios!(
    a_provider_cannot_send_the_token_in_a_framing_header,
    credentials_holding_the_same_token_share_one_probe,
    a_defined_provider_drives_a_credential_like_a_built_in_one,
    editing_and_deleting_a_provider_act_on_live_credentials,
    a_provider_reports_its_credentials,
    a_tenant_cannot_define_a_provider,
);
