//! Issue 4 through the controller: validate-before-cutover rotation, Virtuous OAuth, and consumer
//! restarts.

use serde_json::json;

use tenantcred_testkit::provider::Account;
use tenantcred_testkit::{Answer, Harness, eventually, fixtures, scenarios, settle};
use tenantcred_testkit::{Reason, Status, Type, WorkloadKind, credential, holds, secret_key};

async fn deployment(h: &Harness, name: &str) {
    h.create(fixtures::deployment(name)).await;
}

async fn restart_annotation(h: &Harness, name: &str) -> Option<String> {
    h.get("deployments", name).await?["spec"]["template"]["metadata"]["annotations"]["tenantcred.dev/token-fingerprint"]
        .as_str()
        .map(str::to_owned)
}

async fn generation(h: &Harness, kind: &str, name: &str) -> i64 {
    h.get(kind, name)
        .await
        .and_then(|d| d["metadata"]["generation"].as_i64())
        .unwrap_or_default()
}

async fn a_good_pending_token_replaces_the_old_in_one_step_and_restarts_once(h: Harness) {
    deployment(&h, "donor-sync").await;
    h.ready_credential(h.local("c").restart(WorkloadKind::Deployment, "donor-sync"), "old")
        .await;
    assert_eq!(
        restart_annotation(&h, "donor-sync").await,
        None,
        "no restart on first creation"
    );
    let gen0 = generation(&h, "deployments", "donor-sync").await;

    h.provider.answer("new", Answer::Ok);
    h.source_secret("c-next", "new").await;
    h.edit_spec("c", |s| s.pending_credential_ref = Some(secret_key("c-next")))
        .await;
    eventually(10, "cut over", async || {
        h.managed_token("c").await.as_deref() == Some("new")
    })
    .await;
    eventually(10, "rotation recorded", async || {
        h.tac("c").await["status"]["rotation"]["phase"] == "Validated"
    })
    .await;
    let st = h.tac("c").await["status"].clone();
    assert_eq!(st["rotation"]["pendingFingerprint"], st["tokenFingerprint"]);
    assert!(st["rotation"]["completedAt"].is_string());
    assert_eq!(
        h.seen("c").await.condition(Type::Ready),
        holds(Status::True, Reason::TokenValid)
    );
    assert_eq!(
        h.provider.hits("new"),
        1,
        "validated once, and that probe counts as its first"
    );
    h.expect_events("TokenRotated", 1).await;
    eventually(10, "deployment annotated", async || {
        restart_annotation(&h, "donor-sync").await.as_deref() == st["tokenFingerprint"].as_str()
    })
    .await;
    assert_eq!(
        generation(&h, "deployments", "donor-sync").await,
        gen0 + 1,
        "one rollout"
    );
    // Re-applying the credential (as GitOps does) changes nothing.
    h.edit_tac("c", |o| {
        o["metadata"]["labels"] = json!({"argocd.argoproj.io/instance": "x"})
    })
    .await;
    h.edit_tac("c", |o| o["metadata"]["annotations"] = json!({"reapplied": "yes"}))
        .await;
    settle(500).await;
    assert_eq!(
        generation(&h, "deployments", "donor-sync").await,
        gen0 + 1,
        "never a second rollout for the same token"
    );
    h.expect_events("RolloutRestarted", 1).await;
}

async fn a_bad_pending_token_never_reaches_the_secret(h: Harness) {
    deployment(&h, "donor-sync").await;
    h.ready_credential(h.local("c").restart(WorkloadKind::Deployment, "donor-sync"), "old")
        .await;
    h.provider.answer("bad", Answer::UnauthorizedJson);
    h.source_secret("c-next", "bad").await;
    h.edit_spec("c", |s| s.pending_credential_ref = Some(secret_key("c-next")))
        .await;
    eventually(10, "rotation failed", async || {
        h.tac("c").await["status"]["rotation"]["phase"] == "Failed"
    })
    .await;
    assert_eq!(
        h.managed_token("c").await.as_deref(),
        Some("old"),
        "pods keep the working token"
    );
    assert_eq!(
        h.seen("c").await.condition(Type::Ready),
        holds(Status::True, Reason::TokenValid),
        "Ready describes the token in use"
    );
    h.expect_events("RotationFailed", 1).await;
    assert_eq!(restart_annotation(&h, "donor-sync").await, None);
    // Not retried in a loop; only when asked or when the candidate changes.
    h.edit_tac("c", |o| o["metadata"]["labels"] = json!({"poke": "1"}))
        .await;
    settle(500).await;
    assert_eq!(h.provider.hits("bad"), 1);
    h.request_probe("c", "2026-11-22T10:00:00Z").await;
    eventually(10, "retried on request", async || h.provider.hits("bad") == 2).await;
    assert_eq!(h.managed_token("c").await.as_deref(), Some("old"));
}

async fn a_rate_limited_validation_waits_and_then_cuts_over(h: Harness) {
    h.ready_credential(h.local("c"), "old").await;
    h.provider.answer("new", Answer::RateLimited { retry_after: 1 });
    h.source_secret("c-input", "new").await;
    eventually(10, "pending", async || {
        h.tac("c").await["status"]["rotation"]["phase"] == "Pending"
    })
    .await;
    assert_eq!(
        h.seen("c").await.condition(Type::Reconciling),
        holds(Status::True, Reason::Rotating)
    );
    assert_eq!(
        h.managed_token("c").await.as_deref(),
        Some("old"),
        "no cut-over without a decisive answer"
    );
    h.provider.answer("new", Answer::Ok);
    eventually(15, "validated after Retry-After", async || {
        h.tac("c").await["status"]["rotation"]["phase"] == "Validated"
    })
    .await;
    assert_eq!(h.managed_token("c").await.as_deref(), Some("new"));
    assert_eq!(h.seen("c").await.condition(Type::Reconciling), None);
}

async fn charitystack_style_revocation_on_first_use_of_the_new_key(h: Harness) {
    h.provider.answer("cs_live_old", Answer::Ok);
    h.source_secret("cs-input", "cs_live_old").await;
    h.create_credential(h.local("cs").provider("charitystack")).await;
    eventually(10, "Ready", async || {
        h.seen("cs").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    h.provider.answer("cs_live_new", Answer::Ok);
    h.provider.revoke_on_use("cs_live_new", "cs_live_old");
    h.source_secret("cs-input", "cs_live_new").await;
    eventually(10, "cut over at once after validation", async || {
        h.managed_token("cs").await.as_deref() == Some("cs_live_new")
    })
    .await;
    h.request_probe("cs", "2026-11-22T10:00:00Z").await;
    eventually(10, "probed again", async || h.provider.hits("cs_live_new") == 2).await;
    assert_eq!(
        h.seen("cs").await.condition(Type::Ready),
        holds(Status::True, Reason::TokenValid)
    );
    assert_eq!(
        h.seen("cs").await.condition(Type::Degraded),
        holds(Status::False, Reason::AsExpected)
    );
}

async fn a_degraded_token_is_replaced_at_once(h: Harness) {
    h.provider.answer("revoked", Answer::UnauthorizedJson);
    h.source_secret("c-input", "revoked").await;
    h.create_credential(h.local("c").failure_threshold(1)).await;
    eventually(10, "Degraded", async || {
        h.seen("c").await.is(Type::Degraded, Status::True, Reason::Unauthorized)
    })
    .await;
    h.provider.answer("next", Answer::Status(503));
    h.source_secret("c-input", "next").await;
    eventually(10, "in at once", async || {
        h.managed_token("c").await.as_deref() == Some("next")
    })
    .await;
    // The Secret is written before the status that describes it.
    eventually(10, "the new token is judged on its own", async || {
        h.seen("c").await.is(Type::Degraded, Status::False, Reason::AsExpected)
    })
    .await;
}

/// A bulk rotation of tokens read by one workload restarts it once at once and once more at the
/// end of the debounce window, with the newest token: never once per token.
async fn a_bulk_rotation_restarts_a_shared_workload_at_most_twice(h: Harness) {
    deployment(&h, "donor-sync").await;
    let n = 8;
    for i in 0..n {
        let c = h
            .local(&format!("c{i}"))
            .restart(WorkloadKind::Deployment, "donor-sync");
        h.ready_credential(c, &format!("old-{i}")).await;
    }
    let gen0 = generation(&h, "deployments", "donor-sync").await;
    for i in 0..n {
        h.provider.answer(&format!("new-{i}"), Answer::Ok);
        h.source_secret(&format!("c{i}-input"), &format!("new-{i}")).await;
    }
    eventually(20, "every Secret rotated", async || {
        for i in 0..n {
            if h.managed_token(&format!("c{i}")).await != Some(format!("new-{i}")) {
                return false;
            }
        }
        true
    })
    .await;
    // The gathered restart comes at the end of the window.
    settle(tenantcred_testkit::RESTART_DEBOUNCE.as_millis() as u64 + 1500).await;
    let rollouts = generation(&h, "deployments", "donor-sync").await - gen0;
    assert!(
        (1..=2).contains(&rollouts),
        "{rollouts} rollouts for {n} rotated tokens"
    );
    let stamped = restart_annotation(&h, "donor-sync").await.expect("annotated");
    let mut newest = Vec::new();
    for i in 0..n {
        newest.push(h.tac(&format!("c{i}")).await["status"]["tokenFingerprint"].clone());
    }
    assert!(
        newest.iter().any(|f| f == stamped.as_str()),
        "stamped with a current token: {stamped}"
    );
}

async fn a_missing_restart_target_is_a_warning_not_a_failure(h: Harness) {
    h.ready_credential(h.local("c").restart(WorkloadKind::StatefulSet, "nowhere"), "old")
        .await;
    h.provider.answer("new", Answer::Ok);
    h.source_secret("c-input", "new").await;
    eventually(10, "rotated", async || {
        h.managed_token("c").await.as_deref() == Some("new")
    })
    .await;
    eventually(10, "warned", async || h.events("RestartTargetNotFound").await == 1).await;
    assert_eq!(
        h.seen("c").await.condition(Type::Ready),
        holds(Status::True, Reason::TokenValid)
    );
}

async fn login(h: &Harness, data: &[(&str, &str)]) {
    h.secret("login", data).await;
}

async fn oauth_credential(h: &Harness) {
    h.create_credential(
        credential("v")
            .provider("virtuous")
            .base_url(&h.provider.base_url)
            .oauth("login"),
    )
    .await;
}

/// A harness whose provider has this Virtuous account, and a credential signing in with `login`.
async fn virtuous(h: Harness, account: Account, login_data: &[(&str, &str)]) -> Harness {
    h.provider.set_account(account);
    login(&h, login_data).await;
    oauth_credential(&h).await;
    h
}

/// The refresh token in the login's state Secret (found by its label).
async fn state_refresh_token(h: &Harness) -> Option<String> {
    let s = h
        .list("secrets")
        .await
        .into_iter()
        .find(|s| s["metadata"]["labels"]["tenantcred.dev/purpose"] == "oauth-state")?;
    String::from_utf8(tenantcred_testkit::apiserver::unb64(
        s["data"]["refresh_token"].as_str()?,
    ))
    .ok()
}

async fn oauth_keeps_a_fresh_access_token_across_refreshes(h: Harness) {
    let h = virtuous(
        h,
        Account {
            username: "dev@example.org".into(),
            password: "p&ss=w0rd".into(),
            expires_in: 2,
            ..Account::default()
        },
        &[("username", "dev@example.org"), ("password", "p&ss=w0rd")],
    )
    .await;
    eventually(10, "Ready on the first access token", async || {
        h.seen("v").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    eventually(20, "three refreshes", async || {
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
    eventually(10, "Secret follows", async || {
        h.managed_token("v")
            .await
            .is_some_and(|t| t.starts_with("acc-") && t != "acc-1")
    })
    .await;
    eventually(10, "state keeps the newest refresh token", async || {
        state_refresh_token(&h).await == h.provider.account().and_then(|a| a.current_refresh)
    })
    .await;
    let tac = h.tac("v").await;
    assert!(tac["status"]["expiresAt"].is_string(), "{}", tac["status"]);
    assert_eq!(
        h.seen("v").await.condition(Type::ExpiringSoon),
        holds(Status::False, Reason::AsExpected)
    );
    // What a reader sees: the status and the events' texts (not their metadata, whose random
    // uids can hold "acc-" by chance).
    let texts: Vec<String> = h
        .list("events")
        .await
        .iter()
        .flat_map(|e| [e["note"].to_string(), e["message"].to_string(), e["reason"].to_string()])
        .collect();
    let visible = format!("{}{}", tac["status"], texts.join(" "));
    assert!(
        !visible.contains("ref-") && !visible.contains("acc-") && !visible.contains("p&ss"),
        "no secret in status or events: {visible}"
    );
}

async fn oauth_two_factor_waits_for_the_code(h: Harness) {
    let h = virtuous(
        h,
        Account {
            username: "dev@example.org".into(),
            password: "pw".into(),
            otp: Some("123456".into()),
            expires_in: 3600,
            ..Account::default()
        },
        &[("username", "dev@example.org"), ("password", "pw")],
    )
    .await;
    eventually(10, "OtpRequired", async || {
        h.seen("v").await.is(Type::Ready, Status::False, Reason::OtpRequired)
    })
    .await;
    assert_eq!(
        h.seen("v").await.condition(Type::Stalled),
        holds(Status::True, Reason::OtpRequired)
    );
    assert_eq!(
        h.seen("v").await.condition(Type::Degraded),
        holds(Status::True, Reason::OtpRequired)
    );
    settle(300).await;
    assert_eq!(
        h.provider.account().map(|a| a.grants.len()),
        Some(1),
        "waits for the code instead of retrying"
    );
    login(
        &h,
        &[("username", "dev@example.org"), ("password", "pw"), ("otp", "123456")],
    )
    .await;
    eventually(10, "Ready with the code", async || {
        h.seen("v").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    assert_eq!(
        h.provider.account().map(|a| a.grants),
        Some(vec!["password".to_string(), "password+otp".to_string()])
    );
}

async fn oauth_rejected_refresh_falls_back_to_the_password(h: Harness) {
    let h = virtuous(
        h,
        Account {
            username: "u".into(),
            password: "pw".into(),
            expires_in: 2,
            ..Account::default()
        },
        &[("username", "u"), ("password", "pw")],
    )
    .await;
    eventually(10, "Ready", async || {
        h.seen("v").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    h.provider.revoke_refresh_tokens();
    eventually(15, "signed in again", async || {
        h.provider.account().is_some_and(|a| {
            a.grants.iter().any(|g| g == "refresh_token(rejected)")
                && a.grants.last().map(String::as_str) == Some("password")
        })
    })
    .await;
    eventually(10, "still ready", async || {
        h.seen("v").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
}

async fn oauth_invalid_grant_without_password_degrades(h: Harness) {
    let h = virtuous(
        h,
        Account {
            username: "u".into(),
            password: "pw".into(),
            expires_in: 3600,
            ..Account::default()
        },
        &[("username", "u"), ("refresh_token", "stale")],
    )
    .await;
    eventually(10, "RefreshTokenRevoked", async || {
        h.seen("v")
            .await
            .is(Type::Degraded, Status::True, Reason::RefreshTokenRevoked)
    })
    .await;
    assert_eq!(
        h.seen("v").await.condition(Type::Ready),
        holds(Status::False, Reason::RefreshTokenRevoked)
    );
    assert_eq!(
        h.seen("v").await.condition(Type::Stalled),
        holds(Status::True, Reason::RefreshTokenRevoked)
    );
}

scenarios!(
    a_good_pending_token_replaces_the_old_in_one_step_and_restarts_once,
    a_bad_pending_token_never_reaches_the_secret,
    a_rate_limited_validation_waits_and_then_cuts_over,
    charitystack_style_revocation_on_first_use_of_the_new_key,
    a_degraded_token_is_replaced_at_once,
    a_missing_restart_target_is_a_warning_not_a_failure,
    a_bulk_rotation_restarts_a_shared_workload_at_most_twice,
    oauth_keeps_a_fresh_access_token_across_refreshes,
    oauth_two_factor_waits_for_the_code,
    oauth_rejected_refresh_falls_back_to_the_password,
    oauth_invalid_grant_without_password_degrades,
);
