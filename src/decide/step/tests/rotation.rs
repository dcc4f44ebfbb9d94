//! A replacement token: validated by a probe while the working one keeps serving, written only
//! once the provider accepted it; an unusable announced replacement never touches the one in use.

use super::*;

/// The Secret holds a working `jwt("a")`; the source now holds `jwt("b")`.
fn replaced() -> Case {
    Case::working(&jwt("a")).source_now(&jwt("b"), "6")
}

#[test]
fn a_new_token_the_provider_refuses_never_replaces_a_working_one() {
    let run = replaced().probe_answers(401).run();
    assert_eq!(
        run.actions,
        [
            "read source",
            "probe candidate",
            "after candidate probe",
            "write status",
            "finish"
        ]
    );
    assert!(run.written.is_empty(), "pods keep the working token");
    let rotation = run.status().rotation.as_ref().expect("recorded");
    assert_eq!(rotation.phase, RotationPhase::Failed);
    assert!(run.notices.iter().any(|n| n.reason == "RotationFailed"));
}

#[test]
fn a_new_token_the_provider_accepts_replaces_the_working_one() {
    let run = replaced().run();
    assert_eq!(
        run.actions,
        [
            "read source",
            "probe candidate",
            "after candidate probe",
            "apply secret",
            "write status",
            "finish"
        ]
    );
    let status = run.status();
    assert_eq!(
        status.rotation.as_ref().map(|r| r.phase),
        Some(RotationPhase::Validated)
    );
    assert_eq!(
        status.last_probe_result,
        Some(ProbeResult::Valid),
        "the validation is the new token's first probe"
    );
    assert!(run.notices.iter().any(|n| n.reason == "TokenRotated"));
}

#[test]
fn an_undecided_validation_keeps_the_token_and_tries_again() {
    let run = replaced().probe_attempt(Attempt::Held(t(120))).run();
    assert_eq!(
        run.actions,
        ["read source", "probe candidate", "write status", "finish"]
    );
    assert!(run.written.is_empty());
    assert_eq!(
        run.status().rotation.as_ref().map(|r| r.phase),
        Some(RotationPhase::Pending)
    );
    assert_eq!(run.requeue, Some(Duration::from_secs(121)), "when the budget allows");
}

#[test]
fn an_unusable_pending_token_is_told_and_never_touches_the_one_in_use() {
    let mut case = Case::new(serde_json::json!({
        "tenant": "acme", "provider": "raise",
        "credentialRef": {"name": "src"}, "pendingCredentialRef": {"name": "next"}
    }));
    case.pending = Some(None);
    let run = case.run();
    assert_eq!(
        run.actions,
        [
            "read pending",
            "read source",
            "create secret",
            "recall answer",
            "probe",
            "after probe",
            "write status",
            "finish"
        ]
    );
    assert!(run.notices.iter().any(|n| n.reason == "PendingTokenUnusable"));
    assert_eq!(run.ready(), Some(Reason::TokenValid));
}
