//! Issue 27, items 3 and 4: a person's change goes ahead of the backlog a (re)start reconciles
//! from the caches, and probes that fell due during a gap queue per host at the catch-up rate.
//!
//! Neither asserts a duration: the first compares the order in which work finished (the backlog
//! is made slow by a provider that answers its tokens after 400 ms, with two workers), the second
//! asserts the operator waited at least as long as the catch-up slots say (a busy machine only
//! makes it later).

use serde_json::json;
use std::time::Duration;

use tenantcred_testkit::{Answer, Harness, Status, Type, eventually, scenarios};

/// How many of `names` are Ready (one list).
async fn ready_among(h: &Harness, names: &[String]) -> usize {
    h.list("tenantapicredentials")
        .await
        .iter()
        .filter(|t| names.iter().any(|n| t["metadata"]["name"] == n.as_str()))
        .filter(|t| {
            tenantcred_testkit::Seen::of(t)
                .condition(Type::Ready)
                .is_some_and(|(s, _)| s == Status::True)
        })
        .count()
}

async fn a_persons_changes_go_ahead_of_the_backlog(mut h: Harness) {
    // One credential Ready before the restart, to be changed by hand during the backlog.
    h.ready_credential(h.local("early"), "early-tok").await;
    h.stop_controller();
    // The backlog: credentials created while no operator runs, each a slow probe.
    let n = 60;
    let backlog: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
    for name in &backlog {
        let tok = format!("{name}-tok");
        h.provider.answer(&tok, Answer::Slow(Duration::from_millis(400)));
        h.source_secret(&format!("{name}-input"), &tok).await;
        h.create_credential(h.local(name)).await;
    }
    h.restart_controller_tuned(|c| c.concurrency = 2);
    eventually(60, "the backlog under way", async || {
        ready_among(&h, &backlog).await >= 2
    })
    .await;

    // A new credential.
    h.provider.answer("mine-tok", Answer::Ok);
    h.source_secret("mine-input", "mine-tok").await;
    h.create_credential(h.local("mine")).await;
    eventually(60, "the new credential Ready", async || h.all_ready(["mine"]).await).await;
    let after_new = ready_among(&h, &backlog).await;

    // A source Secret edited: the managed Secret follows.
    h.provider.answer("early-tok-2", Answer::Ok);
    h.source_secret("early-input", "early-tok-2").await;
    eventually(60, "the edited source mounted", async || {
        h.managed_token("early").await.as_deref() == Some("early-tok-2")
    })
    .await;
    let after_source = ready_among(&h, &backlog).await;

    // A probe-now request.
    let stamp = "2026-12-03T12:00:00Z";
    h.request_probe("early", stamp).await;
    eventually(60, "the probe request honoured", async || {
        h.tac("early").await["status"]["lastHandledProbeRequest"] == stamp
    })
    .await;
    let after_request = ready_among(&h, &backlog).await;

    // Each change waited for at most the backlog's window (4 reconciles with two workers), not
    // for the 60: most of the backlog was still to do when the last was done.
    assert!(
        after_request <= n - 20,
        "a change waited behind the backlog: {after_new}, {after_source}, {after_request} of {n} done after each change"
    );
    // And the backlog was not starved.
    eventually(120, "the whole backlog Ready", async || h.all_ready(&backlog).await).await;
}

async fn overdue_probes_queue_at_the_catch_up_rate(mut h: Harness) {
    let n = 6;
    let names: Vec<String> = (0..n).map(|i| format!("o{i}")).collect();
    for name in &names {
        h.ready_credential(h.local(name), &format!("{name}-tok")).await;
    }
    h.stop_controller();
    // The probes fell due while no operator ran.
    for name in &names {
        h.patch_status(name, json!({"nextProbeTime": "2026-01-01T00:00:00Z"}))
            .await;
    }
    h.provider.clear_seen();
    h.provider.record_times(true);
    h.restart_controller_tuned(|c| c.catch_up_per_second = 1.0);
    eventually(60, "every overdue probe sent", async || h.provider.seen().len() >= n).await;
    let times: Vec<std::time::Instant> = h.provider.take_times().into_iter().map(|(t, _)| t).collect();
    assert_eq!(times.len(), n, "one probe each: {:?}", h.provider.seen());
    let (first, last) = (times.iter().min(), times.iter().max());
    let spread = last.zip(first).map(|(l, f)| l.duration_since(*f)).unwrap_or_default();
    // Slots 0..5 at one a second (a status keeps whole seconds, so each goes at the start of a
    // second after its slot): the last about 5 s after the first; 3 s leaves room for a slow
    // first reconcile. Without the slots all six go at once.
    assert!(
        spread >= Duration::from_secs(3),
        "overdue probes went out together: {spread:?} between the first and the last"
    );
    // Each goes on from its probe as usual (in memory: a probe that changes nothing writes
    // nothing): no second probe follows.
    tenantcred_testkit::settle(2000).await;
    assert_eq!(h.provider.seen().len(), n, "probed again: {:?}", h.provider.seen());
    assert!(h.all_ready(&names).await);
}

scenarios!(
    a_persons_changes_go_ahead_of_the_backlog,
    overdue_probes_queue_at_the_catch_up_rate,
);
