//! A token kept in a source Secret: read when its version moved, written into the managed
//! Secret, probed, and the status written once; nothing at all when nothing is new.

use super::*;

#[test]
fn a_first_sync_reads_creates_probes_and_writes_the_status_once() {
    let run = Case::secret_sourced().run();
    assert_eq!(
        run.actions,
        [
            "read source",
            "create secret",
            "recall answer",
            "probe",
            "after probe",
            "write status",
            "finish"
        ]
    );
    assert_eq!(
        run.phases,
        [
            Phase::ReadingSource,
            Phase::WritingSecret,
            Phase::Probing,
            Phase::Probing,
            Phase::Probing,
            Phase::WritingStatus,
            Phase::Done
        ]
    );
    assert_eq!(run.ready(), Some(Reason::TokenValid));
    assert_eq!(
        run.status().token_fingerprint.as_deref(),
        Some(Token::new(jwt("a")).fingerprint().as_str())
    );
    let secret = &run.written[0];
    assert_eq!(
        secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(secret::SOURCE_VERSION_ANNOTATION)),
        Some(&"src/5".to_owned()),
        "the Secret records which source version its token came from"
    );
    assert!(run.requeue.is_some(), "the next probe is scheduled");
}

#[test]
fn nothing_new_costs_no_request_at_all() {
    let run = Case::working(&jwt("a")).run();
    assert_eq!(run.actions, ["keep status", "finish"]);
    // A second late, so the instant has surely passed.
    assert_eq!(run.requeue, Some(Duration::from_secs(601)));
}

#[test]
fn a_moved_source_version_with_the_same_token_is_read_once_and_remembered() {
    let mut case = Case::working(&jwt("a")).source_now(&jwt("a"), "6");
    let run = case.run();
    assert_eq!(
        run.actions,
        ["read source", "remember version", "keep status", "finish"]
    );
    assert!(run.written.is_empty(), "the same token is never written again");

    case.remembered = Some("src/6".into());
    assert_eq!(case.run().actions, ["keep status", "finish"], "remembered: no read");
}

#[test]
fn a_missing_source_is_said_and_nothing_is_written_or_probed() {
    let run = Case::secret_sourced().source(None).run();
    assert_eq!(run.actions, ["read source", "write status", "finish"]);
    assert_eq!(run.ready(), Some(Reason::SourceNotFound));
    let ready = conditions::find(&run.status().conditions, Type::Ready).expect("Ready");
    assert!(ready.message.contains("Secret ns/src not found"), "{}", ready.message);
}

#[test]
fn a_service_account_token_is_never_a_source() {
    let mut s = source_secret(&jwt("a"), "5");
    s.type_ = Some("kubernetes.io/service-account-token".into());
    let run = Case::secret_sourced().source(Some(s)).run();
    assert_eq!(run.actions, ["read source", "write status", "finish"]);
    assert_eq!(run.ready(), Some(Reason::SourceNotAllowed));
}

#[test]
fn a_source_read_is_judged_when_it_arrives() {
    // Valid from t(90): too early at the start (t(0)) by more than the grace for clock skew,
    // not when the read's answer is judged.
    let early = crate::decide::token::tests::jwt(
        serde_json::json!({"nbf": crate::testing::EPOCH + 90, "exp": crate::testing::EPOCH + 86_400}),
    );
    let case = Case::secret_sourced().source(Some(source_secret(&early, "5")));
    let read_at = |at| {
        let mut machine = Reconcile::new(case.world());
        assert_eq!(kind(&machine.poll()), "read source");
        let secret = case.source.clone().map(Box::new);
        machine.handle(
            Outcome::SourceRead {
                which: Which::Current,
                secret,
            },
            at,
        );
        kind(&machine.poll())
    };
    assert_eq!(read_at(t(0)), "write status", "not valid yet at t(0)");
    assert_eq!(read_at(t(40)), "create secret", "read at t(40): within the grace");
}

#[test]
fn a_suspended_credential_reads_writes_and_probes_nothing() {
    let mut case = Case::new(serde_json::json!({
        "tenant": "acme", "provider": "raise", "credentialRef": {"name": "src"}, "suspend": true
    }));
    case.observed.next_probe_time = Some(Time(t(60)));
    let run = case.run();
    assert_eq!(run.actions, ["write status", "finish"]);
    assert_eq!(run.status().next_probe_time, None);
    assert_eq!(run.status().observed_generation, Some(1));
    assert_eq!(run.requeue, None, "woken only by a change");
}

#[test]
fn an_unreadable_spec_is_said_in_the_status_and_nothing_else_happens() {
    let case = Case::secret_sourced();
    let mut world = case.world();
    world.spec = Spec::Unreadable("spec.probe.interval: invalid type");
    let mut machine = Reconcile::new(world);
    assert_eq!(kind(&machine.poll()), "write status");
    machine.handle(Outcome::StatusHandled, t(0));
    assert_eq!(kind(&machine.poll()), "finish");
    assert_eq!(machine.phase(), Phase::Done);
    assert!(
        matches!(machine.poll(), Action::Finish { notices, .. } if notices.is_empty()),
        "asked again, it is still finished, and says nothing twice"
    );
}
