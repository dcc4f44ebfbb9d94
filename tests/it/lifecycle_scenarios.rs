//! Issue 4 through the controller: validate-before-cutover rotation, Virtuous OAuth, and consumer
//! restarts.

use serde_json::json;

use crate::support::provider::Account;
use crate::support::{Answer, Harness, NS, eventually, pair, settle};

fn deployment(h: &Harness, name: &str) {
    h.api.create(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}));
}

fn restart_annotation(h: &Harness, name: &str) -> Option<String> {
    h.api.get("deployments", NS, name)?["spec"]["template"]["metadata"]["annotations"]["tenantcred.dev/token-fingerprint"]
        .as_str()
        .map(str::to_owned)
}

fn generation(h: &Harness, kind: &str, name: &str) -> i64 {
    h.api
        .get(kind, NS, name)
        .and_then(|d| d["metadata"]["generation"].as_i64())
        .unwrap_or_default()
}

async fn ready_with(h: &Harness, name: &str, token: &str, extra: serde_json::Value) {
    h.provider.answer(token, Answer::Ok);
    h.source_secret(&format!("{name}-input"), token);
    h.credential(name, "generic", extra);
    eventually(10, "Ready", || h.condition(name, "Ready") == pair("True", "TokenValid")).await;
}

#[tokio::test]
async fn a_good_pending_token_replaces_the_old_in_one_step_and_restarts_once() {
    let h = Harness::start().await;
    deployment(&h, "donor-sync");
    ready_with(
        &h,
        "c",
        "old",
        json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "donor-sync"}]}),
    )
    .await;
    assert_eq!(
        restart_annotation(&h, "donor-sync"),
        None,
        "no restart on first creation"
    );
    let gen0 = generation(&h, "deployments", "donor-sync");

    h.provider.answer("new", Answer::Ok);
    h.source_secret("c-next", "new");
    h.edit_tac("c", |o| o["spec"]["pendingCredentialRef"] = json!({"name": "c-next"}));
    eventually(10, "cut over", || h.managed_token("c").as_deref() == Some("new")).await;
    eventually(10, "rotation recorded", || {
        h.tac("c")["status"]["rotation"]["phase"] == "Validated"
    })
    .await;
    let st = h.tac("c")["status"].clone();
    assert_eq!(st["rotation"]["pendingFingerprint"], st["tokenFingerprint"]);
    assert!(st["rotation"]["completedAt"].is_string());
    assert_eq!(h.condition("c", "Ready"), pair("True", "TokenValid"));
    assert_eq!(
        h.provider.hits("new"),
        1,
        "validated once, and that probe counts as its first"
    );
    assert_eq!(h.events("TokenRotated"), 1);
    eventually(10, "deployment annotated", || {
        restart_annotation(&h, "donor-sync").as_deref() == st["tokenFingerprint"].as_str()
    })
    .await;
    assert_eq!(generation(&h, "deployments", "donor-sync"), gen0 + 1, "one rollout");
    // Re-applying the credential (as GitOps does) changes nothing.
    h.edit_tac("c", |o| {
        o["metadata"]["labels"] = json!({"argocd.argoproj.io/instance": "x"})
    });
    h.edit_tac("c", |o| o["metadata"]["annotations"] = json!({"reapplied": "yes"}));
    settle(500).await;
    assert_eq!(
        generation(&h, "deployments", "donor-sync"),
        gen0 + 1,
        "never a second rollout for the same token"
    );
    assert_eq!(h.events("RolloutRestarted"), 1);
}

#[tokio::test]
async fn a_bad_pending_token_never_reaches_the_secret() {
    let h = Harness::start().await;
    deployment(&h, "donor-sync");
    ready_with(
        &h,
        "c",
        "old",
        json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "donor-sync"}]}),
    )
    .await;
    h.provider.answer("bad", Answer::UnauthorizedJson);
    h.source_secret("c-next", "bad");
    h.edit_tac("c", |o| o["spec"]["pendingCredentialRef"] = json!({"name": "c-next"}));
    eventually(10, "rotation failed", || {
        h.tac("c")["status"]["rotation"]["phase"] == "Failed"
    })
    .await;
    assert_eq!(
        h.managed_token("c").as_deref(),
        Some("old"),
        "pods keep the working token"
    );
    assert_eq!(
        h.condition("c", "Ready"),
        pair("True", "TokenValid"),
        "Ready describes the token in use"
    );
    assert_eq!(h.events("RotationFailed"), 1);
    assert_eq!(restart_annotation(&h, "donor-sync"), None);
    // Not retried in a loop; only when asked or when the candidate changes.
    h.edit_tac("c", |o| o["metadata"]["labels"] = json!({"poke": "1"}));
    settle(500).await;
    assert_eq!(h.provider.hits("bad"), 1);
    h.edit_tac("c", |o| {
        o["metadata"]["annotations"] = json!({"tenantcred.dev/probe-requested-at": "2026-11-22T10:00:00Z"})
    });
    eventually(10, "retried on request", || h.provider.hits("bad") == 2).await;
    assert_eq!(h.managed_token("c").as_deref(), Some("old"));
}

#[tokio::test]
async fn a_rate_limited_validation_waits_and_then_cuts_over() {
    let h = Harness::start().await;
    ready_with(&h, "c", "old", json!({})).await;
    h.provider.answer("new", Answer::RateLimited { retry_after: 1 });
    h.source_secret("c-input", "new");
    eventually(10, "pending", || h.tac("c")["status"]["rotation"]["phase"] == "Pending").await;
    assert_eq!(h.condition("c", "Reconciling"), pair("True", "Rotating"));
    assert_eq!(
        h.managed_token("c").as_deref(),
        Some("old"),
        "no cut-over without a decisive answer"
    );
    h.provider.answer("new", Answer::Ok);
    eventually(15, "validated after Retry-After", || {
        h.tac("c")["status"]["rotation"]["phase"] == "Validated"
    })
    .await;
    assert_eq!(h.managed_token("c").as_deref(), Some("new"));
    assert_eq!(h.condition("c", "Reconciling"), None);
}

#[tokio::test]
async fn charitystack_style_revocation_on_first_use_of_the_new_key() {
    let h = Harness::start().await;
    h.provider.answer("cs_live_old", Answer::Ok);
    h.source_secret("cs-input", "cs_live_old");
    h.credential("cs", "charitystack", json!({}));
    eventually(10, "Ready", || h.condition("cs", "Ready") == pair("True", "TokenValid")).await;
    h.provider.answer("cs_live_new", Answer::Ok);
    h.provider.revoke_on_use("cs_live_new", "cs_live_old");
    h.source_secret("cs-input", "cs_live_new");
    eventually(10, "cut over at once after validation", || {
        h.managed_token("cs").as_deref() == Some("cs_live_new")
    })
    .await;
    h.edit_tac("cs", |o| {
        o["metadata"]["annotations"] = json!({"tenantcred.dev/probe-requested-at": "2026-11-22T10:00:00Z"})
    });
    eventually(10, "probed again", || h.provider.hits("cs_live_new") == 2).await;
    assert_eq!(h.condition("cs", "Ready"), pair("True", "TokenValid"));
    assert_eq!(h.condition("cs", "Degraded"), pair("False", "AsExpected"));
}

#[tokio::test]
async fn a_degraded_token_is_replaced_at_once() {
    let h = Harness::start().await;
    h.provider.answer("revoked", Answer::UnauthorizedJson);
    h.source_secret("c-input", "revoked");
    h.credential(
        "c",
        "generic",
        json!({"probe": {"path": "/probe", "failureThreshold": 1}}),
    );
    eventually(10, "Degraded", || {
        h.condition("c", "Degraded") == pair("True", "Unauthorized")
    })
    .await;
    h.provider.answer("next", Answer::Status(503));
    h.source_secret("c-input", "next");
    eventually(10, "in at once", || h.managed_token("c").as_deref() == Some("next")).await;
    assert_eq!(
        h.condition("c", "Degraded"),
        pair("False", "AsExpected"),
        "the new token is judged on its own"
    );
}

#[tokio::test]
async fn a_missing_restart_target_is_a_warning_not_a_failure() {
    let h = Harness::start().await;
    ready_with(
        &h,
        "c",
        "old",
        json!({"rolloutRestartTargets": [{"kind": "StatefulSet", "name": "nowhere"}]}),
    )
    .await;
    h.provider.answer("new", Answer::Ok);
    h.source_secret("c-input", "new");
    eventually(10, "rotated", || h.managed_token("c").as_deref() == Some("new")).await;
    eventually(10, "warned", || h.events("RestartTargetNotFound") == 1).await;
    assert_eq!(h.condition("c", "Ready"), pair("True", "TokenValid"));
}

fn login(h: &Harness, data: serde_json::Value) {
    let obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "login", "namespace": NS}, "stringData": data});
    if h.api.get("secrets", NS, "login").is_some() {
        h.api.replace(obj);
    } else {
        h.api.create(obj);
    }
}

fn oauth_credential(h: &Harness) {
    h.api.create(
        json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
        "metadata": {"name": "v", "namespace": NS},
        "spec": {"tenant": "acme", "provider": "virtuous", "baseUrl": h.provider.base_url,
                 "oauth": {"secretRef": {"name": "login"}}}}),
    );
}

/// A harness whose provider has this Virtuous account, and a credential signing in with `login`.
async fn virtuous(account: Account, login_data: serde_json::Value) -> Harness {
    let h = Harness::start().await;
    h.provider.set_account(account);
    login(&h, login_data);
    oauth_credential(&h);
    h
}

fn state_refresh_token(h: &Harness) -> Option<String> {
    let s = h.api.get("secrets", NS, "v-tenantcred-oauth")?;
    String::from_utf8(crate::support::apiserver::unb64(s["data"]["refresh_token"].as_str()?)).ok()
}

#[tokio::test]
async fn oauth_keeps_a_fresh_access_token_across_refreshes() {
    let h = virtuous(
        Account {
            username: "dev@example.org".into(),
            password: "p&ss=w0rd".into(),
            expires_in: 2,
            ..Account::default()
        },
        json!({"username": "dev@example.org", "password": "p&ss=w0rd"}),
    )
    .await;
    eventually(10, "Ready on the first access token", || {
        h.condition("v", "Ready") == pair("True", "TokenValid")
    })
    .await;
    eventually(20, "three refreshes", || {
        h.provider.account().is_some_and(|a| a.issued >= 4)
    })
    .await;
    let acct = h.provider.account().expect("account");
    assert_eq!(acct.grants[0], "password");
    assert!(
        acct.grants[1..].iter().all(|g| g == "refresh_token"),
        "each refresh used the newest refresh token: {:?}",
        acct.grants
    );
    eventually(10, "Secret follows", || {
        h.managed_token("v")
            .is_some_and(|t| t.starts_with("acc-") && t != "acc-1")
    })
    .await;
    eventually(10, "state keeps the newest refresh token", || {
        state_refresh_token(&h) == h.provider.account().and_then(|a| a.current_refresh)
    })
    .await;
    let tac = h.tac("v");
    assert!(tac["status"]["expiresAt"].is_string(), "{}", tac["status"]);
    assert_eq!(h.condition("v", "ExpiringSoon"), pair("False", "AsExpected"));
    let visible = format!("{tac}{}", serde_json::Value::Array(h.api.list("events")));
    assert!(
        !visible.contains("ref-") && !visible.contains("acc-") && !visible.contains("p&ss"),
        "no secret in status or events"
    );
}

#[tokio::test]
async fn oauth_two_factor_waits_for_the_code() {
    let h = virtuous(
        Account {
            username: "dev@example.org".into(),
            password: "pw".into(),
            otp: Some("123456".into()),
            expires_in: 3600,
            ..Account::default()
        },
        json!({"username": "dev@example.org", "password": "pw"}),
    )
    .await;
    eventually(10, "OtpRequired", || {
        h.condition("v", "Ready") == pair("False", "OtpRequired")
    })
    .await;
    assert_eq!(h.condition("v", "Stalled"), pair("True", "OtpRequired"));
    assert_eq!(h.condition("v", "Degraded"), pair("True", "OtpRequired"));
    settle(300).await;
    assert_eq!(
        h.provider.account().map(|a| a.grants.len()),
        Some(1),
        "waits for the code instead of retrying"
    );
    login(
        &h,
        json!({"username": "dev@example.org", "password": "pw", "otp": "123456"}),
    );
    eventually(10, "Ready with the code", || {
        h.condition("v", "Ready") == pair("True", "TokenValid")
    })
    .await;
    assert_eq!(
        h.provider.account().map(|a| a.grants),
        Some(vec!["password".to_string(), "password+otp".to_string()])
    );
}

#[tokio::test]
async fn oauth_rejected_refresh_falls_back_to_the_password() {
    let h = virtuous(
        Account {
            username: "u".into(),
            password: "pw".into(),
            expires_in: 2,
            ..Account::default()
        },
        json!({"username": "u", "password": "pw"}),
    )
    .await;
    eventually(10, "Ready", || h.condition("v", "Ready") == pair("True", "TokenValid")).await;
    h.provider.revoke_refresh_tokens();
    eventually(15, "signed in again", || {
        h.provider.account().is_some_and(|a| {
            a.grants.iter().any(|g| g == "refresh_token(rejected)")
                && a.grants.last().map(String::as_str) == Some("password")
        })
    })
    .await;
    eventually(10, "still ready", || {
        h.condition("v", "Ready") == pair("True", "TokenValid")
    })
    .await;
}

#[tokio::test]
async fn oauth_invalid_grant_without_password_degrades() {
    let h = virtuous(
        Account {
            username: "u".into(),
            password: "pw".into(),
            expires_in: 3600,
            ..Account::default()
        },
        json!({"username": "u", "refresh_token": "stale"}),
    )
    .await;
    eventually(10, "InvalidGrant", || {
        h.condition("v", "Degraded") == pair("True", "InvalidGrant")
    })
    .await;
    assert_eq!(h.condition("v", "Ready"), pair("False", "InvalidGrant"));
    assert_eq!(h.condition("v", "Stalled"), pair("True", "InvalidGrant"));
}
