use std::time::Duration;

use super::*;
use crate::crd::TenantApiCredential;
use crate::decide::conditions::find;
use crate::decide::egress::Egress;
use crate::decide::token::{Fingerprint, Lifetime};

use crate::testing::t;

fn tac(spec: serde_json::Value) -> TenantApiCredential {
    crate::testing::credential("acme", spec)
}

fn settings() -> Settings {
    crate::testing::resolve_builtin(
        &tac(serde_json::json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "in"}})),
        &Egress::default(),
    )
    .expect("resolves")
}

fn facts(tok: &str, exp: Option<i64>) -> TokenFacts {
    TokenFacts {
        fingerprint: Fingerprint::of(tok.as_bytes()),
        lifetime: Lifetime {
            not_before: None,
            expires_at: exp.map(t),
        },
        refresh_lapses: None,
    }
}

struct Run {
    settings: Settings,
    status: TenantApiCredentialStatus,
    token: TokenFacts,
}

impl Run {
    fn new() -> Self {
        Self {
            settings: settings(),
            status: TenantApiCredentialStatus::default(),
            token: facts("a", None),
        }
    }

    fn step(&mut self, probe: ProbeStep, problem: Option<Problem>, now: Timestamp) -> Decision {
        let d = decide(&Input {
            generation: Some(1),
            observed: &self.status,
            settings: Some(&self.settings),
            token: Some(&self.token),
            problem: problem.as_ref(),
            probe: &probe,
            rotation: None,
            probe_request: None,
            now,
            jitter: Jitter::new(0.5),
        });
        self.status = d.status.clone();
        d
    }

    fn probe(&mut self, code: u16, now: Timestamp) -> Decision {
        self.step(ProbeStep::Sent(Box::new(ProbeOutcome::answered(code))), None, now)
    }

    fn cond(&self, ty: Type) -> Option<(String, String)> {
        find(&self.status.conditions, ty).map(|c| (c.status.clone(), c.reason.clone()))
    }
}

fn pair(s: &str, r: &str) -> Option<(String, String)> {
    Some((s.into(), r.into()))
}

#[test]
fn synced_but_unprobed_is_probing_and_reconciling() {
    let mut r = Run::new();
    r.step(ProbeStep::None, None, t(0));
    assert_eq!(r.cond(Type::Ready), pair("Unknown", "Probing"));
    assert_eq!(r.cond(Type::Reconciling), pair("True", "Probing"));
    assert_eq!(r.cond(Type::Stalled), None);
    assert_eq!(
        r.status.token_fingerprint.as_deref(),
        Some(Fingerprint::of(b"a").as_str())
    );
    assert_eq!(r.status.observed_generation, Some(1));
}

#[test]
fn valid_probe_makes_ready_and_schedules_within_the_interval() {
    let mut r = Run::new();
    let d = r.probe(200, t(0));
    assert_eq!(r.cond(Type::Ready), pair("True", "TokenValid"));
    assert_eq!(r.cond(Type::Degraded), pair("False", "AsExpected"));
    assert_eq!(r.cond(Type::Reconciling), None, "present only while True");
    assert_eq!(r.status.last_probe_result, Some(ProbeResult::Valid));
    assert_eq!(r.status.last_probe_http_status, Some(200));
    let next = d.requeue_at.expect("scheduled");
    assert!(next > t(0) && next <= t(900), "{next}");
}

#[test]
fn a_reconcile_without_news_renders_the_identical_status() {
    let mut r = Run::new();
    r.probe(200, t(0));
    let before = r.status.clone();
    r.step(ProbeStep::None, None, t(100));
    assert_eq!(r.status, before, "no probe, no change: no write");
    r.probe(503, t(500));
    let before = r.status.clone();
    r.step(ProbeStep::None, None, t(510));
    assert_eq!(r.status, before);
}

#[test]
fn persistent_401_degrades_only_at_the_threshold() {
    let mut r = Run::new();
    r.probe(200, t(0));
    let d1 = r.probe(401, t(900));
    assert_eq!(
        r.cond(Type::Ready),
        pair("True", "TokenValid"),
        "one 401 is not yet persistent"
    );
    assert_eq!(r.cond(Type::Degraded), pair("False", "AsExpected"));
    assert_eq!(d1.requeue_at, Some(t(930)), "confirmed after 30s");
    let d2 = r.probe(401, t(930));
    assert_eq!(d2.requeue_at, Some(t(1050)), "then after 2m");
    assert_eq!(r.status.consecutive_failures, 2);
    r.probe(401, t(1050));
    assert_eq!(r.cond(Type::Ready), pair("False", "Unauthorized"));
    assert_eq!(r.cond(Type::Degraded), pair("True", "Unauthorized"));
    assert_eq!(r.cond(Type::Stalled), pair("True", "Unauthorized"));
    // One valid probe clears it.
    r.probe(200, t(2000));
    assert_eq!(r.cond(Type::Ready), pair("True", "TokenValid"));
    assert_eq!(r.cond(Type::Stalled), None);
    assert_eq!(r.status.consecutive_failures, 0);
}

#[test]
fn forbidden_degrades_with_its_own_reason() {
    let mut r = Run::new();
    for k in 0..3 {
        r.probe(403, t(k * 100));
    }
    assert_eq!(r.cond(Type::Degraded), pair("True", "Forbidden"));
}

#[test]
fn rate_limits_and_outages_never_degrade_nor_flip_ready() {
    let mut r = Run::new();
    r.probe(200, t(0));
    let mut now = 900;
    let mut last_delay = 0;
    for code in [429, 503, 500, 429, 503, 503, 503, 503, 503, 503] {
        let d = r.probe(code, t(now));
        assert_eq!(r.cond(Type::Ready), pair("True", "TokenValid"));
        assert_eq!(r.cond(Type::Degraded), pair("False", "AsExpected"));
        assert_eq!(r.status.consecutive_failures, 0);
        let next = d.requeue_at.expect("retry scheduled");
        let delay = next.as_second() - t(now).as_second();
        assert!(
            delay >= last_delay.min(900 / 2),
            "backoff grows: {delay} after {last_delay}"
        );
        assert!(delay <= 900, "capped at the interval: {delay}");
        last_delay = delay;
        now += delay;
    }
    assert!(find(&r.status.conditions, Type::Ready).is_some_and(|c| c.message.contains("unavailable")));
}

#[test]
fn retry_after_is_honoured() {
    let mut r = Run::new();
    let mut o = ProbeOutcome::answered(429);
    o.retry_after = Some(t(3000));
    let d = r.step(ProbeStep::Sent(Box::new(o)), None, t(0));
    let next = d.requeue_at.expect("scheduled");
    assert!(next >= t(3000) && next <= t(3010), "{next}");
    assert_eq!(
        r.cond(Type::Ready),
        pair("Unknown", "Probing"),
        "no decisive answer yet"
    );
}

#[test]
fn a_new_token_resets_the_verdict() {
    let mut r = Run::new();
    for k in 0..3 {
        r.probe(401, t(k * 100));
    }
    assert_eq!(r.cond(Type::Degraded), pair("True", "Unauthorized"));
    r.token = facts("b", None);
    r.step(ProbeStep::None, None, t(400));
    assert_eq!(r.cond(Type::Ready), pair("Unknown", "Probing"));
    assert_eq!(r.cond(Type::Degraded), pair("False", "AsExpected"));
    assert_eq!(r.status.consecutive_failures, 0);
    assert_eq!(r.status.last_probe_result, None);
}

#[test]
fn expired_tokens_fail_without_a_request_and_stop_probing() {
    let mut r = Run::new();
    r.token = facts("a", Some(-10));
    let d = r.step(ProbeStep::Expired, None, t(0));
    assert_eq!(r.status.last_probe_result, Some(ProbeResult::Expired));
    assert_eq!(r.cond(Type::Ready), pair("False", "Expired"));
    assert_eq!(r.cond(Type::Degraded), pair("True", "Expired"));
    assert_eq!(r.cond(Type::Stalled), pair("True", "Expired"));
    assert_eq!(r.status.last_probe_time, None, "no request was sent");
    assert_eq!(d.requeue_at, None);
    assert_eq!(r.status.expires_at, Some(Time(t(-10))));
}

#[test]
fn expiring_soon_inside_the_window_and_requeue_at_the_instants() {
    let mut r = Run::new();
    let day = 86_400;
    r.token = facts("a", Some(3 * day));
    let d = r.step(ProbeStep::None, None, t(0));
    assert_eq!(r.cond(Type::ExpiringSoon), pair("True", "ExpiringSoon"));
    assert_eq!(d.requeue_at, Some(t(3 * day)), "wake at expiry");
    r.token = facts("a", Some(365 * day));
    let d = r.step(ProbeStep::None, None, t(0));
    assert_eq!(r.cond(Type::ExpiringSoon), pair("False", "AsExpected"));
    assert_eq!(d.requeue_at, Some(t(351 * day)), "wake when the warning window opens");
}

/// An OAuth access token is renewed: its own short life is no warning, the refresh token's
/// lapse is, inside the warn window (14 days), with what a person does about it.
#[test]
fn an_auto_renewed_token_warns_when_its_refresh_token_nears_its_lapse() {
    let day = 86_400;
    let oauth = tac(serde_json::json!({"tenant": "acme", "provider": "virtuous",
                                       "oauth": {"secretRef": {"name": "login"}}}));
    let mut r = Run::new();
    r.settings = crate::testing::resolve_builtin(&oauth, &Egress::default()).expect("resolves");
    let renewed = |r: &mut Run, lapses: Option<i64>| {
        r.token = TokenFacts {
            refresh_lapses: lapses.map(t),
            ..facts("a", Some(1800))
        };
        r.step(ProbeStep::None, None, t(0));
        let c = find(&r.status.conditions, Type::ExpiringSoon)
            .expect("ExpiringSoon")
            .clone();
        ((c.status, c.reason), c.message)
    };
    let (cond, _) = renewed(&mut r, None);
    assert_eq!(
        Some(cond),
        pair("False", "AsExpected"),
        "the access token's 30 minutes are no warning"
    );
    let (cond, message) = renewed(&mut r, Some(60 * day));
    assert_eq!(Some(cond), pair("False", "AsExpected"));
    assert!(
        !message.contains("1970"),
        "no instant that moves with every refresh: {message}"
    );
    let (cond, message) = renewed(&mut r, Some(3 * day));
    assert_eq!(Some(cond), pair("True", "ExpiringSoon"));
    assert!(
        message.contains("sign in again") && message.contains("login Secret"),
        "{message}"
    );
    let (cond, message) = renewed(&mut r, Some(-1));
    assert_eq!(Some(cond), pair("False", "Expired"));
    assert!(message.contains("sign in again"), "{message}");

    // Renewed by each use (an idle lifetime of 7 days): only refreshes stopped for half of it
    // are a warning sign, not a lapse always inside the 14-day window.
    let mut def = r.settings.profile.oauth.as_deref().expect("virtuous has oauth").clone();
    def.refresh_idle_lifetime = Some(Duration::from_secs(7 * day as u64));
    let mut profile = (*r.settings.profile).clone();
    profile.oauth = Some(std::sync::Arc::new(def));
    r.settings.profile = std::sync::Arc::new(profile);
    let (cond, _) = renewed(&mut r, Some(7 * day));
    assert_eq!(Some(cond), pair("False", "AsExpected"));
    let (cond, _) = renewed(&mut r, Some(3 * day));
    assert_eq!(Some(cond), pair("True", "ExpiringSoon"));
}

#[test]
fn declared_not_after_counts_when_the_token_carries_no_expiry() {
    let mut r = Run::new();
    r.settings.not_after = Some(t(1000));
    r.step(ProbeStep::None, None, t(0));
    assert_eq!(r.status.expires_at, Some(Time(t(1000))));
}

#[test]
fn problems_map_to_reasons_and_stalled_only_when_a_person_is_needed() {
    let mut r = Run::new();
    r.step(ProbeStep::None, Some(Problem::SourceNotFound("gone".into())), t(0));
    assert_eq!(r.cond(Type::Ready), pair("False", "SourceNotFound"));
    assert_eq!(r.cond(Type::Stalled), None);
    assert_eq!(r.cond(Type::Reconciling), None);
    r.step(ProbeStep::None, Some(Problem::InvalidToken("bad".into())), t(0));
    assert_eq!(r.cond(Type::Ready), pair("False", "InvalidToken"));
    assert_eq!(r.cond(Type::Stalled), pair("True", "InvalidToken"));
    assert_eq!(r.status.last_probe_result, Some(ProbeResult::Invalid));
    r.step(ProbeStep::None, Some(Problem::SecretConflict("foreign".into())), t(0));
    assert_eq!(r.cond(Type::Stalled), pair("True", "SecretConflict"));
    assert_eq!(r.status.next_probe_time, None);
}

#[test]
fn transition_times_survive_repeated_probes() {
    let mut r = Run::new();
    r.probe(200, t(0));
    let first = find(&r.status.conditions, Type::Ready).map(|c| c.last_transition_time.clone());
    r.probe(200, t(900));
    let second = find(&r.status.conditions, Type::Ready).map(|c| c.last_transition_time.clone());
    assert_eq!(first, second);
}

#[test]
fn probe_is_due_for_new_tokens_requests_and_schedule() {
    let tok = facts("a", None);
    let mut st = TenantApiCredentialStatus::default();
    assert_eq!(probe_due(&st, &tok, None, t(0)), Due::Now, "never probed");
    st.token_fingerprint = Some(tok.fingerprint.to_string());
    st.last_probe_result = Some(ProbeResult::Valid);
    assert_eq!(probe_due(&st, &tok, None, t(0)), Due::Now, "no schedule");
    st.next_probe_time = Some(Time(t(500)));
    assert_eq!(probe_due(&st, &tok, None, t(-100)), Due::At(t(500)));
    let asked = Some("2026-01-01T00:00:00Z");
    assert_eq!(probe_due(&st, &tok, asked, t(-100)), Due::Now);
    st.last_handled_probe_request = asked.map(str::to_owned);
    assert_eq!(probe_due(&st, &tok, asked, t(-100)), Due::At(t(500)), "already handled");
    // Fell due before this replica led: a catch-up slot, not now.
    assert_eq!(probe_due(&st, &tok, None, t(800)), Due::Overdue);
    assert_eq!(
        probe_due(&st, &tok, None, t(500)),
        Due::At(t(500)),
        "due as leading began"
    );
    // Another token in the Secret: probe now, whatever the old one's schedule.
    let other = facts("b", None);
    assert_eq!(probe_due(&st, &other, None, t(800)), Due::Now);
}

#[test]
fn resolve_reports_unusable_specs() {
    let base = serde_json::json!({"tenant": "acme", "credentialRef": {"name": "in"}});
    let with = |extra: serde_json::Value| {
        let mut v = base.clone();
        for (k, x) in extra.as_object().expect("object") {
            v[k] = x.clone();
        }
        crate::testing::resolve_builtin(&tac(v), &Egress::default())
    };
    assert!(
        matches!(with(serde_json::json!({"provider": "salesforce"})), Err(Problem::ProviderNotFound(m)) if m.contains("salesforce"))
    );
    assert!(
        matches!(with(serde_json::json!({"provider": "generic"})), Err(Problem::InvalidSpec(m)) if m.contains("baseUrl"))
    );
    assert!(matches!(
        with(serde_json::json!({"provider": "generic", "baseUrl": "http://127.0.0.1:1", "probe": {"path": "/me"}})),
        Err(Problem::InsecureBaseUrl(_))
    ));
    assert!(matches!(
        with(serde_json::json!({"provider": "raise", "probe": {"interval": "30s"}})),
        Err(Problem::InvalidSpec(_))
    ));
    assert!(matches!(
        with(serde_json::json!({"provider": "raise", "probe": {"interval": "soon"}})),
        Err(Problem::InvalidSpec(_))
    ));
    let cs = with(serde_json::json!({"provider": "charitystack", "probe": {"interval": "1m"}})).expect("ok");
    assert_eq!(cs.interval.effective, Duration::from_secs(400));
    assert_eq!(
        cs.probe_url(),
        "https://0k90mc4jjj.execute-api.us-east-2.amazonaws.com/v1/payments"
    );
    assert_eq!(cs.host(), "0k90mc4jjj.execute-api.us-east-2.amazonaws.com:443");
    let local = Egress::new(vec!["127.0.0.1:8080".parse().expect("pattern")], true);
    let insecure_ok = crate::testing::resolve_builtin(
        &tac(serde_json::json!({"tenant": "a", "provider": "generic", "baseUrl": "http://127.0.0.1:8080/", "probe": {"path": "/me"}, "credentialRef": {"name": "in"}})),
        &local,
    )
    .expect("allowed with the flag");
    assert_eq!(insecure_ok.probe_url(), "http://127.0.0.1:8080/me");
}

/// Issue 36: a path or base URL with control characters that slipped past the schema is an
/// InvalidSpec whose message shows them escaped, never raw (nor a password in the URL).
#[test]
fn control_characters_in_the_request_line_are_invalid_and_shown_escaped() {
    let hostile = [
        ("\r\n", "\\r\\n"),
        ("\0", "\\u{0}"),
        ("\u{1b}", "\\u{1b}"),
        ("\u{7f}", "\\u{7f}"),
        ("\u{85}", "\\u{85}"),
        ("\u{2028}", "\\u{2028}"),
    ];
    for (raw, shown) in hostile {
        for (field, spec) in [
            (
                "spec.probe.path",
                serde_json::json!({"probe": {"path": format!("/api/Donor{raw}Host: evil")}}),
            ),
            (
                "spec.baseUrl",
                serde_json::json!({"baseUrl": format!("https://u:hunter2@prod-api.raisedonors.com/{raw}")}),
            ),
        ] {
            let mut v = serde_json::json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "in"}});
            v.as_object_mut()
                .expect("object")
                .extend(spec.as_object().cloned().unwrap_or_default());
            match crate::testing::resolve_builtin(&tac(v), &Egress::default()) {
                Err(Problem::InvalidSpec(m)) => assert!(
                    m.starts_with(field) && m.contains(shown) && !m.contains(raw) && !m.contains("hunter2"),
                    "{field} {shown}: {m:?}"
                ),
                other => panic!("{field} {shown}: {other:?}"),
            }
        }
    }
}

#[test]
fn stretched_interval_is_explained() {
    let mut r = Run::new();
    r.settings = crate::testing::resolve_builtin(
        &tac(serde_json::json!({"tenant": "acme", "provider": "charitystack", "probe": {"interval": "1m"}, "credentialRef": {"name": "in"}})),
        &Egress::default(),
    )
    .expect("ok");
    r.probe(200, t(0));
    let msg = find(&r.status.conditions, Type::Ready)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("stretched from 1m to 6m40s"), "{msg}");
}

#[test]
fn an_unreadable_spec_stalls_without_a_schedule_and_keeps_what_was_learnt() {
    let mut r = Run::new();
    r.probe(200, t(0));
    let before = r.status.clone();
    let long = "x".repeat(5_000);
    let s = unreadable_spec(&before, &long, Some(2), t(100));
    let ready = find(&s.conditions, Type::Ready).expect("Ready");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
    assert!(
        ready
            .message
            .starts_with("the spec does not match the TenantApiCredential schema: ")
    );
    assert!(ready.message.len() < 400, "bounded");
    let stalled = find(&s.conditions, Type::Stalled).expect("Stalled");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert_eq!(s.next_probe_time, None, "nothing is scheduled");
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!(s.token_fingerprint, before.token_fingerprint);
    // Decided again: the same status, so no second write.
    assert_eq!(unreadable_spec(&s, &long, Some(2), t(200)), s);
}

/// Objects written before the schema bounded the timeout: the operator caps it and says so.
#[test]
fn a_timeout_above_the_maximum_is_capped_and_said() {
    let long = crate::testing::resolve_builtin(
        &tac(
            serde_json::json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "in"},
            "probe": {"timeout": "876000h", "failureThreshold": 3}}),
        ),
        &Egress::default(),
    )
    .expect("resolves");
    assert_eq!(long.timeout, crate::decide::fair_share::MAX_REQUEST_TIMEOUT);
    assert_eq!(long.timeout_capped_from, Some(Duration::from_secs(876_000 * 3600)));
    assert_eq!(settings().timeout_capped_from, None, "the default is within");
}

/// Found by the hostile-tenant review: `api.example.com.` and `api.example.com` are one host to
/// DNS and the egress rules, so they are one host for the per-host cap and host-wide back-off.
#[test]
fn one_host_written_two_ways_is_one_host_for_the_per_host_cap() {
    let egress = Egress::new(vec!["api.example.com".parse().expect("a pattern")], false);
    let host_of = |base_url: &str| {
        let c = tac(serde_json::json!({
            "tenant": "acme", "provider": "generic", "baseUrl": base_url,
            "probe": {"path": "/me"}, "credentialRef": {"name": "src"}
        }));
        crate::testing::resolve_builtin(&c, &egress)
            .expect("allowed by the owner")
            .host()
    };
    assert_eq!(
        host_of("https://api.example.com./v1"),
        host_of("https://api.example.com/v1")
    );
}

/// A name the client would put into the request's path as written is refused before anything
/// is read or written with it (found by the hostile-tenant review: `?watch=true`).
#[test]
fn every_name_a_spec_gives_is_an_object_name() {
    for (spec, field) in [
        (
            serde_json::json!({"credentialRef": {"name": "?watch=true"}}),
            "spec.credentialRef.name",
        ),
        (
            serde_json::json!({"pendingCredentialRef": {"name": "../x"}}),
            "spec.pendingCredentialRef.name",
        ),
        (serde_json::json!({"target": {"name": "x#y"}}), "spec.target.name"),
        (
            serde_json::json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "a/b"}]}),
            "spec.rolloutRestartTargets[].name",
        ),
    ] {
        let mut full = serde_json::json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "in"}});
        json_patch::merge(&mut full, &spec);
        let got = crate::testing::resolve_builtin(&tac(full), &Egress::default());
        assert!(
            matches!(&got, Err(Problem::InvalidSpec(m)) if m.starts_with(field) && m.contains("not an object name")),
            "{field}: {got:?}"
        );
    }
}
