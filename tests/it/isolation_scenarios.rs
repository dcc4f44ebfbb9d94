//! Issue 36, item 1: what one tenant writes cannot slow another. One namespace's credentials
//! hang on hosts that accept a request and never answer; other namespaces' credentials go on.

use std::time::Duration;

use tenantcred_testkit::{Answer, Harness, Provider, Reason, build, eventually, scenarios};

/// A host that takes the request and never answers (for a day: longer than any test).
async fn hung_host() -> Provider {
    let p = Provider::start().await;
    p.default_answer(Answer::Slow(Duration::from_secs(24 * 3600)));
    p
}

async fn hung_hosts_of_one_tenant_slow_no_other(mut h: Harness) {
    let tenants = h.add_tenants(&["hostile", "newcomer", "person"]).await;
    let [hostile, newcomer, person] = [&tenants[0], &tenants[1], &tenants[2]];
    // A person's credential, Ready before anything hangs.
    h.act_in(person);
    h.ready_credential(h.local("mine"), "person-tok").await;

    // The hostile tenant: 24 credentials on two hung hosts, each asking for the longest timeout.
    let hung = [hung_host().await, hung_host().await];
    h.act_in(hostile);
    for i in 0..24 {
        let name = format!("hang{i}");
        h.source_secret(&format!("{name}-input"), &format!("hostile-tok-{i}"))
            .await;
        let c = build::credential(&name)
            .base_url(&hung[i % 2].base_url)
            .probe_path("/probe")
            .timeout("60s");
        h.create_credential(c).await;
    }
    let in_flight = || hung.iter().map(|p| p.seen().len()).sum::<usize>();
    eventually(30, "the hostile tenant's probes hanging", async || in_flight() >= 12).await;

    // Another tenant's new credential on a healthy host.
    h.act_in(newcomer);
    h.provider.answer("fresh-tok", Answer::Ok);
    h.source_secret("fresh-input", "fresh-tok").await;
    h.create_credential(h.local("fresh")).await;
    eventually(
        15,
        "the newcomer Ready while another tenant's probes hang",
        async || h.seen("fresh").await.ready_because(Reason::TokenValid),
    )
    .await;

    // A person's change on a third tenant.
    h.act_in(person);
    h.edit_spec("mine", |s| {
        s.target.labels = [("team".to_owned(), "payments".to_owned())].into();
    })
    .await;
    eventually(5, "the person's change in the managed Secret", async || {
        h.get("secrets", "mine")
            .await
            .is_some_and(|s| s["metadata"]["labels"]["team"] == "payments")
    })
    .await;

    // The hostile tenant never held more than all slots but the reserve (16 - 4): its other
    // probes waited for its own, and no request reached a hung host beyond those.
    assert_eq!(in_flight(), 12, "requests that reached the hung hosts");

    // Its probes that found no slot come back later, quietly: once each has its first status
    // (the 12 in flight have none until their timeout), turned away again and again, they cost
    // the API server nothing.
    h.act_in(hostile);
    eventually(30, "a status on every hostile credential not in flight", async || {
        let listed = h.list("tenantapicredentials").await;
        listed.iter().filter(|t| !t["status"].is_null()).count() == 24 - 12
    })
    .await;
    h.tap.reset();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(in_flight(), 12);
    assert_eq!(h.tap.writes(), 0, "{:?}", h.tap.requests());
}

scenarios!(hung_hosts_of_one_tenant_slow_no_other);
