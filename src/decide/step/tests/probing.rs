//! The scheduled probe: when it is due, what the budget and the request slots make of it, when
//! another credential's answer stands in for it, what its answer asks of the rest of the
//! operator, and the time it is judged at.

use crate::crd::RateLimitScope;
use crate::decide::verdict::Transport;

use super::*;

/// A working token whose probe fell due a second ago.
fn due() -> Case {
    Case::secret_sourced().holding(&jwt("a"), "5").valid(&jwt("a"), t(-1))
}

#[test]
fn an_overdue_probe_waits_for_its_catch_up_slot() {
    let mut case = Case::secret_sourced().holding(&jwt("a"), "5").valid(&jwt("a"), t(-30));
    // Began to act after the probe fell due: the probe takes the host's next slot.
    case.acting_since = t(-10);
    case.catch_up_slot = 1000;
    let late = case.run();
    assert_eq!(late.actions, ["catch-up slot", "keep status", "finish"]);
    assert_eq!(late.catch_up_hosts, ["prod-api.raisedonors.com:443"]);
    let next = late.status().next_probe_time.as_ref().map(|t| t.0).expect("scheduled");
    assert!(next > case.now, "slot 1000 at 10 a second is later");

    case.catch_up_slot = 0;
    assert_eq!(
        case.run().actions,
        [
            "catch-up slot",
            "recall answer",
            "probe",
            "after probe",
            "keep status",
            "finish"
        ],
        "slot 0 is now"
    );
}

#[test]
fn a_probe_held_back_by_the_budget_is_rescheduled_not_failed() {
    let run = due().probe_attempt(Attempt::Held(t(90))).run();
    assert_eq!(run.actions, ["recall answer", "probe", "keep status", "finish"]);
    assert_eq!(run.ready(), Some(Reason::TokenValid));
    assert_eq!(run.status().next_probe_time.as_ref().map(|t| t.0), Some(t(90)));
    assert_eq!(run.requeue, Some(Duration::from_secs(91)));
}

#[test]
fn a_probe_without_a_request_slot_comes_back_after_about_its_patience() {
    let mut case = due().probe_attempt(Attempt::Busy);
    // Turned away after waiting its patience (5 s): it comes back 5 s (with this jitter) later.
    case.probe_takes = 5;
    let run = case.run();
    assert_eq!(run.actions, ["recall answer", "probe", "keep status", "finish"]);
    assert_eq!(run.ready(), Some(Reason::TokenValid), "nothing was sent: no verdict");
    assert_eq!(run.status().next_probe_time.as_ref().map(|t| t.0), Some(t(10)));
    assert_eq!(run.requeue, Some(Duration::from_secs(6)));
}

#[test]
fn a_probe_answer_is_judged_when_it_arrives_not_when_the_reconcile_began() {
    let mut case = due();
    case.probe_takes = 30;
    let run = case.run();
    assert_eq!(run.status().last_probe_time.as_ref().map(|t| t.0), Some(t(30)));
    let next = run.status().next_probe_time.as_ref().map(|t| t.0).expect("scheduled");
    assert_eq!(
        run.requeue,
        Some(schedule::until(t(30), next) + Duration::from_secs(1)),
        "counted from the answer"
    );
}

#[test]
fn a_probe_request_is_answered_by_a_probe_of_its_own() {
    let run = Case::working(&jwt("a"))
        .annotated(crate::crd::PROBE_REQUESTED_ANNOTATION, "2027-01-15T08:00:00Z")
        .run();
    assert_eq!(
        run.actions,
        ["probe", "after probe", "write status", "finish"],
        "never answered by another credential's probe"
    );
    assert_eq!(
        run.status().last_handled_probe_request.as_deref(),
        Some("2027-01-15T08:00:00Z")
    );
}

#[test]
fn another_credentials_recent_answer_about_the_same_token_stands_in_for_the_probe() {
    let mut case = due();
    case.heard = Some(Heard { at: t(-5), status: 200 });
    let run = case.run();
    assert_eq!(run.actions, ["recall answer", "keep status", "finish"], "nothing sent");
    assert_eq!(run.status().last_probe_result, Some(ProbeResult::Valid));

    // Heard before this credential's own latest probe: not news, so it probes.
    case.heard = Some(Heard {
        at: t(-70),
        status: 200,
    });
    assert_eq!(
        case.run().actions,
        ["recall answer", "probe", "after probe", "keep status", "finish"]
    );
}

#[test]
fn a_rate_limited_probe_holds_its_key_back_as_long_as_the_provider_asked() {
    let limited = ProbeOutcome {
        retry_after: Some(t(120)),
        ..ProbeOutcome::answered(429)
    };
    let run = due().probe_attempt(Attempt::Sent(limited)).run();
    assert_eq!(run.actions[..3], ["recall answer", "probe", "after probe"]);
    let after = &run.after[0];
    assert_eq!(after.share, None, "a rate limit is the key's budget's business");
    let back_off = after.back_off.as_ref().expect("held back");
    assert_eq!(back_off.until, t(120));
    assert_eq!(back_off.key, Token::new(jwt("a")).fingerprint());
    assert_eq!(
        run.status().rate_limit.as_ref().and_then(|r| r.held_back),
        Some(RateLimitScope::Key),
        "what the budget held back is said in the status"
    );
}

#[test]
fn a_connection_the_egress_rules_refused_is_told_to_no_one() {
    let refused = ProbeOutcome {
        transport: Transport::NotAllowed("prod-api.raisedonors.com resolves to 10.0.0.1".into()),
        ..ProbeOutcome::answered(0)
    };
    let run = due().probe_attempt(Attempt::Sent(refused)).run();
    assert_eq!(run.actions[..2], ["recall answer", "probe"]);
    assert!(!run.actions.contains(&"after probe"), "{:?}", run.actions);
}

#[test]
fn an_expired_token_fails_without_a_request() {
    let expired = crate::decide::token::tests::jwt(serde_json::json!({"exp": crate::testing::EPOCH - 10}));
    let run = Case::secret_sourced().source(Some(source_secret(&expired, "5"))).run();
    assert_eq!(run.actions, ["read source", "create secret", "write status", "finish"]);
    assert_eq!(run.status().last_probe_result, Some(ProbeResult::Expired));
    assert_eq!(reason(run.status(), Type::Degraded), Some(Reason::Expired));
}
