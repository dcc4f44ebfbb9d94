//! Issue 3 through the controller: verdicts, persistence, storms, expiry and the budget.

use serde_json::json;

use tenantcred_testkit::fixtures::jwt;
use tenantcred_testkit::{Answer, Harness, eventually, scenarios, settle};
use tenantcred_testkit::{Reason, Status, Type, holds};

fn ts(v: &serde_json::Value) -> Option<jiff::Timestamp> {
    v.as_str()?.parse().ok()
}

async fn handled(h: &Harness, name: &str, stamp: &str) {
    eventually(10, "probe request honoured", async || {
        h.tac(name).await["status"]["lastHandledProbeRequest"] == stamp
    })
    .await;
}

async fn a_valid_token_is_ready_with_probe_fields(h: Harness) {
    h.provider.answer("good", Answer::Ok);
    h.provider.send_rate_headers(true);
    h.source_secret("c-input", "good").await;
    h.create_credential(h.local("c")).await;
    eventually(10, "Ready", async || {
        h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    let st = &h.tac("c").await["status"];
    assert_eq!(st["lastProbeResult"], "Valid");
    assert_eq!(st["lastProbeHttpStatus"], 200);
    assert_eq!(st["consecutiveFailures"], 0);
    assert!(
        st["lastProbeTime"].is_string() && st["lastSuccessfulProbeTime"].is_string() && st["nextProbeTime"].is_string()
    );
    assert_eq!(st["rateLimit"]["limit"], 1000);
    assert_eq!(st["rateLimit"]["remaining"], 987);
    assert_eq!(h.seen("c").await.condition(Type::Reconciling), None);
    h.expect_events("TokenValid", 0).await;
}

async fn persistent_401_degrades_and_a_new_token_recovers(h: Harness) {
    h.provider.answer("revoked", Answer::UnauthorizedText);
    h.source_secret("c-input", "revoked").await;
    h.create_credential(h.local("c")).await;
    eventually(10, "first 401", async || {
        h.tac("c").await["status"]["consecutiveFailures"] == 1
    })
    .await;
    assert_eq!(
        h.seen("c").await.condition(Type::Degraded),
        holds(Status::False, Reason::AsExpected),
        "one 401 is not persistent"
    );
    assert!(
        h.tac("c").await["status"]["nextProbeTime"].is_string(),
        "a confirmation is scheduled"
    );
    h.request_probe("c", "2026-11-22T10:00:00Z").await;
    handled(&h, "c", "2026-11-22T10:00:00Z").await;
    h.request_probe("c", "2026-11-22T10:01:00Z").await;
    handled(&h, "c", "2026-11-22T10:01:00Z").await;
    eventually(10, "Degraded", async || {
        h.seen("c").await.is(Type::Degraded, Status::True, Reason::Unauthorized)
    })
    .await;
    assert_eq!(
        h.seen("c").await.condition(Type::Stalled),
        holds(Status::True, Reason::Unauthorized)
    );
    assert_eq!(
        h.seen("c").await.condition(Type::Ready),
        holds(Status::False, Reason::Unauthorized)
    );
    h.expect_events("Unauthorized", 1).await;
    assert_eq!(h.provider.hits("revoked"), 3);
    h.provider.answer("fresh", Answer::Ok);
    h.source_secret("c-input", "fresh").await;
    eventually(10, "Ready again", async || {
        h.seen("c").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    assert_eq!(h.seen("c").await.condition(Type::Stalled), None);
    assert_eq!(
        h.seen("c").await.condition(Type::Degraded),
        holds(Status::False, Reason::AsExpected)
    );
}

async fn storms_of_503_and_429_never_degrade(h: Harness) {
    h.ready_credential(h.local("c"), "t").await;
    h.provider.answer("t", Answer::Status(503));
    for i in 0..4 {
        let stamp = format!("2026-11-22T10:0{i}:00Z");
        h.request_probe("c", &stamp).await;
        handled(&h, "c", &stamp).await;
        assert_eq!(
            h.seen("c").await.condition(Type::Ready),
            holds(Status::True, Reason::TokenValid),
            "never flips Ready"
        );
        assert_eq!(
            h.seen("c").await.condition(Type::Degraded),
            holds(Status::False, Reason::AsExpected)
        );
    }
    let st = &h.tac("c").await["status"];
    assert_eq!(st["lastProbeResult"], "Unavailable");
    assert_eq!(st["consecutiveFailures"], 0);
    let next = ts(&st["nextProbeTime"]);
    let last = ts(&st["lastProbeTime"]);
    let backoff = next
        .zip(last)
        .map(|(n, l)| n.as_second() - l.as_second())
        .unwrap_or_default();
    assert!(backoff >= 60, "backoff grew past the first 30s step: {backoff}s");

    // A 429 with Retry-After holds back every later probe of that host until then.
    h.provider.answer("t", Answer::RateLimited { retry_after: 3600 });
    h.request_probe("c", "2026-11-22T11:00:00Z").await;
    handled(&h, "c", "2026-11-22T11:00:00Z").await;
    assert_eq!(h.tac("c").await["status"]["lastProbeResult"], "RateLimited");
    let hits = h.provider.hits("t");
    h.request_probe("c", "2026-11-22T11:01:00Z").await;
    handled(&h, "c", "2026-11-22T11:01:00Z").await;
    settle(200).await;
    assert_eq!(h.provider.hits("t"), hits, "Retry-After honoured: no request before it");
    let next = ts(&h.tac("c").await["status"]["nextProbeTime"])
        .map(|t| t.as_second())
        .unwrap_or_default();
    assert!(
        next >= jiff::Timestamp::now().as_second() + 3500,
        "next probe after Retry-After"
    );
    assert_eq!(
        h.seen("c").await.condition(Type::Degraded),
        holds(Status::False, Reason::AsExpected)
    );
    assert_eq!(
        h.seen("c").await.condition(Type::Ready),
        holds(Status::True, Reason::TokenValid)
    );
}

/// Probes that change nothing a reader acts on write nothing: the schedule goes on in memory.
async fn probes_that_change_nothing_write_nothing(h: Harness) {
    h.ready_credential(h.local("c"), "t").await;
    // Rate limited again and again: each retry (after 15-30 s of backoff) is a probe whose
    // verdict, RateLimited, is the one already written.
    h.provider.answer("t", Answer::RateLimited { retry_after: 1 });
    h.request_probe("c", "2026-11-22T10:00:00Z").await;
    handled(&h, "c", "2026-11-22T10:00:00Z").await;
    assert_eq!(h.tac("c").await["status"]["lastProbeResult"], "RateLimited");
    settle(300).await;
    h.tap.reset();
    let before = h.provider.hits("t");
    eventually(45, "a retry", async || h.provider.hits("t") > before).await;
    settle(300).await;
    assert_eq!(
        status_writes(&h),
        0,
        "nothing new, nothing written: {:?}",
        h.tap.requests()
    );
}

/// A 429 holds back the key that got it; the whole host only when keys of several tenants are
/// rate-limited at once. One noisy customer must not blind the probing of every other, and one
/// tenant's keys alone never hold back another tenant's.
async fn a_429_holds_back_its_key_and_several_hold_back_the_host(mut h: Harness) {
    let home = h.ns.clone();
    let other = h.add_tenants(&["other"]).await.remove(0);
    for (ns, name) in [(&home, "a"), (&home, "b"), (&other, "c")] {
        h.act_in(ns);
        h.provider.answer(name, Answer::Ok);
        h.source_secret(&format!("{name}-input"), name).await;
        h.create_credential(h.local(name)).await;
    }
    h.act_in(&other);
    eventually(10, "c ready", async || h.all_ready(["c"]).await).await;
    h.act_in(&home);
    eventually(10, "a and b ready", async || h.all_ready(["a", "b"]).await).await;
    h.provider.answer("a", Answer::RateLimited { retry_after: 3600 });
    h.request_probe("a", "2026-11-22T10:00:00Z").await;
    handled(&h, "a", "2026-11-22T10:00:00Z").await;
    let msg = h.tac("a").await["status"]["conditions"].to_string();
    assert!(msg.contains("of this token"), "{msg}");
    assert_eq!(h.tac("a").await["status"]["rateLimit"]["heldBack"], "Key");
    // The other keys of the same host go on.
    h.request_probe("b", "2026-11-22T10:01:00Z").await;
    handled(&h, "b", "2026-11-22T10:01:00Z").await;
    assert_eq!(h.provider.hits("b"), 2, "b probed despite a's 429");
    // Another tenant's key rate-limited while the first still is: the host is held back.
    h.act_in(&other);
    h.provider.answer("c", Answer::RateLimited { retry_after: 3600 });
    h.request_probe("c", "2026-11-22T10:02:00Z").await;
    handled(&h, "c", "2026-11-22T10:02:00Z").await;
    assert_eq!(h.tac("c").await["status"]["rateLimit"]["heldBack"], "Host");
    let msg = h.tac("c").await["status"]["conditions"].to_string();
    assert!(msg.contains("other tokens of the same provider host"), "{msg}");
    h.act_in(&home);
    h.request_probe("b", "2026-11-22T10:03:00Z").await;
    handled(&h, "b", "2026-11-22T10:03:00Z").await;
    assert_eq!(h.provider.hits("b"), 2, "now b waits too");
    assert_eq!(
        h.seen("b").await.condition(Type::Ready),
        holds(Status::True, Reason::TokenValid)
    );
}

async fn an_expired_jwt_is_expired_without_a_request(h: Harness) {
    let token = jwt(json!({"sub": "acme", "exp": jiff::Timestamp::now().as_second() - 3600}));
    h.source_secret("r-input", &token).await;
    h.create_credential(h.local("r").provider("raise")).await;
    eventually(10, "Expired", async || {
        h.seen("r").await.is(Type::Ready, Status::False, Reason::Expired)
    })
    .await;
    assert_eq!(
        h.seen("r").await.condition(Type::Degraded),
        holds(Status::True, Reason::Expired)
    );
    assert_eq!(
        h.seen("r").await.condition(Type::Stalled),
        holds(Status::True, Reason::Expired)
    );
    assert_eq!(h.tac("r").await["status"]["lastProbeResult"], "Expired");
    assert!(h.tac("r").await["status"]["expiresAt"].is_string());
    assert!(h.provider.seen().is_empty(), "not a single request");
}

async fn a_jwt_expiring_in_three_days_warns(h: Harness) {
    let soon = jwt(json!({"sub": "acme", "exp": jiff::Timestamp::now().as_second() + 3 * 86_400}));
    let later = jwt(json!({"sub": "acme", "exp": jiff::Timestamp::now().as_second() + 365 * 86_400}));
    let never = jwt(json!({"sub": "acme"}));
    for (name, tok) in [("soon", &soon), ("later", &later), ("never", &never)] {
        h.provider.answer(tok, Answer::Ok);
        h.source_secret(&format!("{name}-input"), tok).await;
        h.create_credential(h.local(name).provider("raise")).await;
    }
    eventually(10, "all ready", async || h.all_ready(["soon", "later", "never"]).await).await;
    assert_eq!(
        h.seen("soon").await.condition(Type::ExpiringSoon),
        holds(Status::True, Reason::ExpiringSoon)
    );
    assert_eq!(
        h.seen("later").await.condition(Type::ExpiringSoon),
        holds(Status::False, Reason::AsExpected)
    );
    assert_eq!(
        h.seen("never").await.condition(Type::ExpiringSoon),
        holds(Status::False, Reason::AsExpected)
    );
    assert!(h.tac("never").await["status"]["expiresAt"].is_null());
    assert!(h.tac("later").await["status"]["expiresAt"].is_string());
    h.expect_events("ExpiringSoon", 1).await;
    // A replacement without an expiry: the status loses the field (the status write has to say
    // so, not merely leave the old instant in place).
    let renewed = jwt(json!({"sub": "acme-renewed"}));
    h.provider.answer(&renewed, Answer::Ok);
    h.source_secret("soon-input", &renewed).await;
    eventually(20, "expiresAt gone with the old token", async || {
        h.tac("soon").await["status"]["expiresAt"].is_null()
    })
    .await;
    assert_eq!(
        h.seen("soon").await.condition(Type::ExpiringSoon),
        holds(Status::False, Reason::AsExpected)
    );
}

async fn the_budget_caps_probes_per_key_whatever_is_asked(h: Harness) {
    let key = "cs_live_budgetcheck";
    h.provider.answer(key, Answer::Ok);
    h.source_secret("cs-input", key).await;
    h.create_credential(h.local("cs").provider("charitystack").interval("1m"))
        .await;
    eventually(10, "Ready", async || {
        h.seen("cs").await.is(Type::Ready, Status::True, Reason::TokenValid)
    })
    .await;
    let msg = h.tac("cs").await["status"]["conditions"].to_string();
    assert!(msg.contains("stretched from 1m to 6m40s"), "{msg}");
    for i in 0..14 {
        let stamp = format!("2026-11-22T12:{i:02}:00Z");
        h.request_probe("cs", &stamp).await;
        handled(&h, "cs", &stamp).await;
    }
    assert_eq!(
        h.provider.hits(key),
        10,
        "1% of 1,000/hour, however often probe-now is asked"
    );
}

async fn probing_resumes_after_a_restart_without_a_storm(mut h: Harness) {
    for i in 0..5 {
        let tok = format!("tok-{i}");
        h.provider.answer(&tok, Answer::Ok);
        h.source_secret(&format!("c{i}-input"), &tok).await;
        h.create_credential(h.local(&format!("c{i}"))).await;
    }
    eventually(10, "all ready", async || {
        h.all_ready((0..5).map(|i| format!("c{i}"))).await
    })
    .await;
    settle(300).await;
    let (before, writes, gets) = (h.provider.seen().len(), h.tap.writes(), h.tap.count("get", "secrets"));
    // Secrets listed late, as at scale: no credential is decided before its Secret is known.
    // (A streamed list is a watch.)
    h.tap.slow("list", "secrets", std::time::Duration::from_millis(700));
    h.tap.slow("watch", "secrets", std::time::Duration::from_millis(700));
    h.restart_controller();
    settle(1500).await;
    assert_eq!(
        h.provider.seen().len(),
        before,
        "a restart re-reads status: no probe before nextProbeTime"
    );
    assert_eq!(
        h.tap.writes(),
        writes,
        "a restart finds every Secret and status current: no write ({:?} in all)",
        h.tap.requests()
    );
    assert_eq!(
        h.tap.count("get", "secrets"),
        gets,
        "nor a read: the sources are where they were"
    );
    assert!(h.all_ready((0..5).map(|i| format!("c{i}"))).await);
}

async fn a_mass_creation_probes_each_token_exactly_once(h: Harness) {
    // The real server's watch lags by itself; the double is told to lag as a busy one does.
    if let Some(api) = &h.double {
        api.lag_watch("tenantapicredentials", std::time::Duration::from_millis(150));
    }
    let n = 20;
    for i in 0..n {
        let tok = format!("mass-{i}");
        h.provider.answer(&tok, Answer::Ok);
        h.source_secret(&format!("m{i}-input"), &tok).await;
    }
    for i in 0..n {
        h.create_credential(h.local(&format!("m{i}"))).await;
    }
    eventually(20, "all ready", async || {
        h.all_ready((0..n).map(|i| format!("m{i}"))).await
    })
    .await;
    settle(500).await;
    // Reconciles that outrun the watch must not re-probe from a stale status.
    assert_eq!(h.provider.seen().len(), n, "one probe per token");
    assert_eq!(status_writes(&h), n as u64, "one status write per probe");
}

scenarios!(
    a_valid_token_is_ready_with_probe_fields,
    probes_that_change_nothing_write_nothing,
    a_429_holds_back_its_key_and_several_hold_back_the_host,
    persistent_401_degrades_and_a_new_token_recovers,
    storms_of_503_and_429_never_degrade,
    an_expired_jwt_is_expired_without_a_request,
    a_jwt_expiring_in_three_days_warns,
    the_budget_caps_probes_per_key_whatever_is_asked,
    probing_resumes_after_a_restart_without_a_storm,
    a_mass_creation_probes_each_token_exactly_once,
);

/// Writes of a credential's status, whatever the verb (a merge patch today).
fn status_writes(h: &Harness) -> u64 {
    ["patch", "apply", "update"]
        .iter()
        .map(|verb| h.tap.count(verb, "tenantapicredentials/status"))
        .sum()
}
