//! The step machine driven as the shell drives it, with scripted results: each test asserts the
//! exact actions a reconcile asks for, in order, and what it finally decides.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::crd::{ProbeResult, RotationPhase};
use crate::decide::conditions::{self, Reason, Type};
use crate::decide::egress::Egress;
use crate::decide::verdict::ProbeOutcome;
use crate::testing::{credential, resolve_builtin, t};

/// Raise's tokens are JWTs: the one in use, and its replacement (both valid for 30 days).
fn jwt(sub: &str) -> String {
    crate::decide::token::tests::jwt(serde_json::json!({"sub": sub, "exp": crate::testing::EPOCH + 30 * 86_400}))
}

/// One credential's inputs, owned, from which a `World` is borrowed.
struct Case {
    tac: TenantApiCredential,
    settings: Result<Settings, Problem>,
    observed: TenantApiCredentialStatus,
    target: Option<Observed>,
    remembered: Option<String>,
    source_rv: Option<String>,
    acting_since: Timestamp,
    now: Timestamp,
}

impl Case {
    fn new(spec: serde_json::Value) -> Self {
        let mut tac = credential("c", spec);
        tac.metadata.generation = Some(1);
        let settings = resolve_builtin(&tac, &Egress::default());
        Self {
            tac,
            settings,
            observed: TenantApiCredentialStatus::default(),
            target: None,
            remembered: None,
            source_rv: None,
            acting_since: t(-3600),
            now: t(0),
        }
    }

    fn secret_sourced() -> Self {
        Self::new(serde_json::json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "src"}}))
    }

    /// The managed Secret holds `token`, read from `src` at resourceVersion `rv`.
    fn holding(mut self, token: &str, rv: &str) -> Self {
        let settings = self.settings.as_ref().expect("resolves");
        let mut s = secret::desired(
            &self.tac,
            &settings.secret_name,
            &settings.base_url,
            &Token::new(token),
            Some(&source::version("src", rv)),
        );
        s.metadata.resource_version = Some("100".into());
        self.target = Some(Observed::of(s));
        self.source_rv = Some(rv.into());
        self
    }

    /// The status says `token` was probed valid at t(-60), next at `next`.
    fn valid(mut self, token: &str, next: Timestamp) -> Self {
        let decision = plan::decide(&Input {
            generation: Some(1),
            observed: &TenantApiCredentialStatus::default(),
            settings: self.settings.as_ref().ok(),
            token: Some(&TokenFacts {
                fingerprint: Token::new(token).fingerprint(),
                lifetime: token::check(token, &TokenFormat::opaque("raise")).expect("a token").1,
            }),
            problem: None,
            probe: &ProbeStep::Sent(Box::new(answered(200))),
            rotation: None,
            probe_request: None,
            now: t(-60),
            jitter: Jitter::new(0.5),
        });
        self.observed = decision.status;
        self.observed.next_probe_time = Some(Time(next));
        self
    }

    fn world(&self) -> World<'_> {
        World {
            meta: &self.tac.metadata,
            spec: Spec::Readable {
                credential: &self.tac,
                settings: &self.settings,
            },
            observed: &self.observed,
            persisted: &self.observed,
            target: self.target.as_ref(),
            remembered_version: self.remembered.as_deref(),
            source_resource_version: self.source_rv.as_deref(),
            acting_since: self.acting_since,
            catch_up_per_second: 10.0,
            spread: 7,
            now: self.now,
            jitter: Jitter::new(0.5),
        }
    }
}

fn answered(status: u16) -> ProbeOutcome {
    ProbeOutcome {
        rules: crate::decide::provider::builtin::get("raise")
            .expect("built in")
            .probe
            .statuses
            .clone(),
        ..ProbeOutcome::answered(status)
    }
}

fn source_secret(token: &str, rv: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some("src".into());
    s.metadata.resource_version = Some(rv.into());
    s.data = Some(BTreeMap::from([(
        "token".to_owned(),
        ByteString(token.as_bytes().to_vec()),
    )]));
    s
}

/// What a run asked for, and where it ended.
struct Run {
    actions: Vec<String>,
    status: Option<TenantApiCredentialStatus>,
    written: Vec<Secret>,
    notices: Vec<Notice>,
    requeue: Option<Duration>,
}

/// Drives the machine to its end, answering each action with `answer` (the scripted shell).
fn drive(world: &World<'_>, mut answer: impl FnMut(&Action) -> Outcome) -> Run {
    let mut done = Done::default();
    let mut run = Run {
        actions: Vec::new(),
        status: None,
        written: Vec::new(),
        notices: Vec::new(),
        requeue: None,
    };
    for _ in 0..MAX_STEPS {
        let action = step(world, &done);
        run.actions.push(kind(&action).to_owned());
        match &action {
            Action::Finish { notices, requeue } => {
                run.notices = notices.clone();
                run.requeue = *requeue;
                return run;
            }
            Action::WriteStatus { status, .. } | Action::KeepStatus { status, .. } => {
                run.status = Some((**status).clone());
            }
            Action::WriteSecret { secret, .. } => run.written.push((**secret).clone()),
            _ => {}
        }
        let outcome = answer(&action);
        done.record(world, outcome);
    }
    panic!("no Finish within {MAX_STEPS} steps: {:?}", run.actions);
}

fn kind(a: &Action) -> &'static str {
    match a {
        Action::ReadSource {
            which: Which::Current, ..
        } => "read source",
        Action::ReadSource {
            which: Which::Pending, ..
        } => "read pending",
        Action::ReadLogin { .. } => "read login",
        Action::ReadOAuthState { .. } => "read oauth state",
        Action::CallTokenEndpoint { .. } => "token endpoint",
        Action::WriteOAuthState { .. } => "write oauth state",
        Action::BackOff { .. } => "back off",
        Action::RememberSourceVersion(_) => "remember version",
        Action::Probe {
            probing: Probing::Candidate,
            ..
        } => "probe candidate",
        Action::Probe {
            probing: Probing::InUse,
            ..
        } => "probe",
        Action::PruneSecret { .. } => "prune",
        Action::WriteSecret { create: true, .. } => "create secret",
        Action::WriteSecret { create: false, .. } => "apply secret",
        Action::ReadManagedSecret { .. } => "read managed secret",
        Action::RestartWorkloads { .. } => "restart",
        Action::TakeCatchUpSlot { .. } => "catch-up slot",
        Action::WriteStatus { .. } => "write status",
        Action::KeepStatus { .. } => "keep status",
        Action::Finish { .. } => "finish",
    }
}

/// A shell where everything works: sources hold `source`, probes answer `probe_status`.
fn shell(source: String, probe_status: u16) -> impl FnMut(&Action) -> Outcome {
    move |a| match a {
        Action::ReadSource { which, .. } => Outcome::SourceRead {
            which: *which,
            secret: Some(Box::new(source_secret(&source, "5"))),
        },
        Action::Probe { probing, .. } => Outcome::Probed {
            probing: *probing,
            step: ProbeStep::Sent(Box::new(answered(probe_status))),
        },
        Action::WriteSecret { .. } => Outcome::SecretWritten(Written::Stored),
        Action::RememberSourceVersion(_) => Outcome::Remembered,
        Action::PruneSecret { .. } => Outcome::Pruned,
        Action::RestartWorkloads { .. } => Outcome::Restarted {
            notices: Vec::new(),
            wake: None,
        },
        Action::TakeCatchUpSlot { .. } => Outcome::CatchUpSlot(0),
        Action::ReadLogin { .. } => Outcome::LoginRead(Some(Box::new(login_secret()))),
        Action::ReadOAuthState { .. } => Outcome::OAuthStateRead(None),
        Action::CallTokenEndpoint { .. } => Outcome::TokenEndpoint(Call::Answered(endpoint(
            200,
            r#"{"access_token":"access-1","refresh_token":"refresh-1","expires_in":3600}"#,
        ))),
        Action::WriteOAuthState { .. } => Outcome::OAuthStateWritten,
        Action::BackOff { .. } => Outcome::BackedOff,
        Action::WriteStatus { .. } | Action::KeepStatus { .. } => Outcome::StatusHandled,
        Action::ReadManagedSecret { .. } => unreachable!("asked only after a create found a Secret"),
        Action::Finish { .. } => unreachable!("never answered"),
    }
}

fn reason(status: &TenantApiCredentialStatus, ty: Type) -> Option<Reason> {
    conditions::state(&status.conditions, ty).and_then(|(_, r)| r)
}

#[test]
fn a_first_sync_reads_creates_probes_and_writes_the_status_once() {
    let case = Case::secret_sourced();
    let run = drive(&case.world(), shell(jwt("a"), 200));
    assert_eq!(
        run.actions,
        ["read source", "create secret", "probe", "write status", "finish"]
    );
    let status = run.status.expect("a status");
    assert_eq!(reason(&status, Type::Ready), Some(Reason::TokenValid));
    assert_eq!(
        status.token_fingerprint.as_deref(),
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
    let case = Case::secret_sourced().holding(&jwt("a"), "5").valid(&jwt("a"), t(600));
    let run = drive(&case.world(), shell(jwt("a"), 200));
    assert_eq!(run.actions, ["keep status", "finish"]);
    // A second late, so the instant has surely passed.
    assert_eq!(run.requeue, Some(Duration::from_secs(601)));
}

#[test]
fn a_moved_source_version_with_the_same_token_is_read_once_and_remembered() {
    let mut case = Case::secret_sourced().holding(&jwt("a"), "5").valid(&jwt("a"), t(600));
    case.source_rv = Some("6".into());
    let run = drive(&case.world(), |a| match a {
        Action::ReadSource { which, .. } => Outcome::SourceRead {
            which: *which,
            secret: Some(Box::new(source_secret(&jwt("a"), "6"))),
        },
        other => shell(jwt("a"), 200)(other),
    });
    assert_eq!(
        run.actions,
        ["read source", "remember version", "keep status", "finish"]
    );
    assert!(run.written.is_empty(), "the same token is never written again");

    case.remembered = Some("src/6".into());
    let run = drive(&case.world(), shell(jwt("a"), 200));
    assert_eq!(run.actions, ["keep status", "finish"], "remembered: no read");
}

#[test]
fn a_missing_source_is_said_and_nothing_is_written_or_probed() {
    let case = Case::secret_sourced();
    let run = drive(&case.world(), |a| match a {
        Action::ReadSource { which, .. } => Outcome::SourceRead {
            which: *which,
            secret: None,
        },
        other => shell(jwt("a"), 200)(other),
    });
    assert_eq!(run.actions, ["read source", "write status", "finish"]);
    let status = run.status.expect("a status");
    assert_eq!(reason(&status, Type::Ready), Some(Reason::SourceNotFound));
    let ready = conditions::find(&status.conditions, Type::Ready).expect("Ready");
    assert!(ready.message.contains("Secret ns/src not found"), "{}", ready.message);
}

#[test]
fn a_service_account_token_is_never_a_source() {
    let case = Case::secret_sourced();
    let run = drive(&case.world(), |a| match a {
        Action::ReadSource { which, .. } => {
            let mut s = source_secret(&jwt("a"), "5");
            s.type_ = Some("kubernetes.io/service-account-token".into());
            Outcome::SourceRead {
                which: *which,
                secret: Some(Box::new(s)),
            }
        }
        other => shell(jwt("a"), 200)(other),
    });
    assert_eq!(run.actions, ["read source", "write status", "finish"]);
    assert_eq!(
        reason(&run.status.expect("status"), Type::Ready),
        Some(Reason::SourceNotAllowed)
    );
}

#[test]
fn someone_elses_secret_at_the_target_name_is_never_read_around_or_written() {
    let mut case = Case::secret_sourced().holding(&jwt("a"), "5");
    if let Some(target) = case.target.take() {
        let mut s = Secret::default();
        s.metadata.name = Some("x".into());
        s.metadata.labels = Some(BTreeMap::from([(
            secret::CREDENTIAL_LABEL.to_owned(),
            "other".to_owned(),
        )]));
        drop(target);
        case.target = Some(Observed::of(s));
    }
    let run = drive(&case.world(), shell(jwt("a"), 200));
    assert_eq!(run.actions, ["write status", "finish"]);
    assert_eq!(
        reason(&run.status.expect("status"), Type::Ready),
        Some(Reason::SecretConflict)
    );
}

#[test]
fn a_secret_the_api_server_refuses_is_said_and_tried_again_in_minutes() {
    let case = Case::secret_sourced();
    let run = drive(&case.world(), |a| match a {
        Action::WriteSecret { .. } => Outcome::SecretWritten(Written::Refused("metadata.labels: Invalid value".into())),
        other => shell(jwt("a"), 200)(other),
    });
    assert_eq!(run.actions, ["read source", "create secret", "write status", "finish"]);
    let status = run.status.expect("status");
    assert_eq!(reason(&status, Type::Ready), Some(Reason::SecretRejected));
    assert_eq!(run.requeue, Some(REJECTED_RETRY + Duration::from_secs(1)));
}

/// The managed Secret as credential `owner` would write it, holding `token` read from `src` at 5.
fn managed_secret_of(owner: &str, token: &str) -> Secret {
    let case = Case::secret_sourced();
    let settings = case.settings.as_ref().expect("resolves");
    let version = source::version("src", "5");
    let mut s = secret::desired(
        &case.tac,
        &settings.secret_name,
        &settings.base_url,
        &Token::new(token),
        Some(&version),
    );
    if let Some(labels) = s.metadata.labels.as_mut() {
        labels.insert(secret::CREDENTIAL_LABEL.to_owned(), owner.to_owned());
    }
    s.metadata.resource_version = Some("100".into());
    s
}

/// The create finds a Secret the cache had not seen (409), and the read answers `found`.
fn create_finds(found: Option<Secret>) -> impl FnMut(&Action) -> Outcome {
    move |a| match a {
        Action::WriteSecret { create: true, .. } => Outcome::SecretWritten(Written::Exists),
        Action::ReadManagedSecret { .. } => Outcome::ManagedSecretRead(found.clone().map(Box::new)),
        other => shell(jwt("a"), 200)(other),
    }
}

#[test]
fn a_create_that_finds_someone_elses_secret_is_a_conflict() {
    let case = Case::secret_sourced();
    let run = drive(&case.world(), create_finds(Some(managed_secret_of("other", &jwt("x")))));
    assert_eq!(
        run.actions,
        [
            "read source",
            "create secret",
            "read managed secret",
            "write status",
            "finish"
        ]
    );
    assert_eq!(
        reason(&run.status.expect("status"), Type::Ready),
        Some(Reason::SecretConflict)
    );
}

#[test]
fn a_create_that_finds_our_own_secret_writes_only_what_differs() {
    let case = Case::secret_sourced();
    // What we would have created (a watch that lagged behind our own create): nothing to write.
    let same = managed_secret_of("c", &jwt("a"));
    let run = drive(&case.world(), create_finds(Some(same)));
    assert_eq!(
        &run.actions[..4],
        ["read source", "create secret", "read managed secret", "probe"]
    );
    assert_eq!(run.written.len(), 1, "the create only");
    // Ours with another token: applied.
    let run = drive(&case.world(), create_finds(Some(managed_secret_of("c", &jwt("old")))));
    assert_eq!(
        &run.actions[..4],
        ["read source", "create secret", "read managed secret", "apply secret"]
    );
}

#[test]
fn a_create_that_finds_a_secret_gone_again_creates_once_more_then_waits() {
    let case = Case::secret_sourced();
    let run = drive(&case.world(), create_finds(None));
    assert_eq!(
        run.actions,
        [
            "read source",
            "create secret",
            "read managed secret",
            "create secret",
            "write status",
            "finish"
        ]
    );
    assert_eq!(run.requeue, Some(RACE_RETRY + Duration::from_secs(1)));
    let status = run.status.expect("status");
    assert_ne!(
        reason(&status, Type::Ready),
        Some(Reason::SecretConflict),
        "not a conflict"
    );
}

#[test]
fn a_new_token_is_validated_before_it_replaces_a_working_one() {
    let mut case = Case::secret_sourced().holding(&jwt("a"), "5").valid(&jwt("a"), t(600));
    case.source_rv = Some("6".into());
    let new_source = |a: &Action| match a {
        Action::ReadSource { which, .. } => Some(Outcome::SourceRead {
            which: *which,
            secret: Some(Box::new(source_secret(&jwt("b"), "6"))),
        }),
        _ => None,
    };

    let refused = drive(&case.world(), |a| {
        new_source(a).unwrap_or_else(|| shell(jwt("a"), 401)(a))
    });
    assert_eq!(
        refused.actions,
        ["read source", "probe candidate", "write status", "finish"]
    );
    assert!(refused.written.is_empty(), "pods keep the working token");
    let status = refused.status.expect("status");
    let rotation = status.rotation.expect("recorded");
    assert_eq!(rotation.phase, RotationPhase::Failed);
    assert!(refused.notices.iter().any(|n| n.reason == "RotationFailed"));

    let accepted = drive(&case.world(), |a| {
        new_source(a).unwrap_or_else(|| shell(jwt("a"), 200)(a))
    });
    assert_eq!(
        accepted.actions,
        [
            "read source",
            "probe candidate",
            "apply secret",
            "write status",
            "finish"
        ]
    );
    let status = accepted.status.expect("status");
    assert_eq!(status.rotation.map(|r| r.phase), Some(RotationPhase::Validated));
    assert_eq!(
        status.last_probe_result,
        Some(ProbeResult::Valid),
        "the validation is the new token's first probe"
    );
    assert!(accepted.notices.iter().any(|n| n.reason == "TokenRotated"));
}

#[test]
fn an_undecided_validation_keeps_the_token_and_tries_again() {
    let mut case = Case::secret_sourced().holding(&jwt("a"), "5").valid(&jwt("a"), t(600));
    case.source_rv = Some("6".into());
    let run = drive(&case.world(), |a| match a {
        Action::ReadSource { which, .. } => Outcome::SourceRead {
            which: *which,
            secret: Some(Box::new(source_secret(&jwt("b"), "6"))),
        },
        Action::Probe { probing, .. } => Outcome::Probed {
            probing: *probing,
            step: ProbeStep::Deferred(t(120)),
        },
        other => shell(jwt("a"), 200)(other),
    });
    assert_eq!(
        run.actions,
        ["read source", "probe candidate", "write status", "finish"]
    );
    assert!(run.written.is_empty());
    assert_eq!(
        run.status.and_then(|s| s.rotation).map(|r| r.phase),
        Some(RotationPhase::Pending)
    );
    assert_eq!(run.requeue, Some(Duration::from_secs(121)), "when the budget allows");
}

#[test]
fn an_unusable_pending_token_is_told_and_never_touches_the_one_in_use() {
    let case = Case::new(serde_json::json!({
        "tenant": "acme", "provider": "raise",
        "credentialRef": {"name": "src"}, "pendingCredentialRef": {"name": "next"}
    }));
    let run = drive(&case.world(), |a| match a {
        Action::ReadSource {
            which: Which::Pending, ..
        } => Outcome::SourceRead {
            which: Which::Pending,
            secret: None,
        },
        other => shell(jwt("a"), 200)(other),
    });
    assert_eq!(
        run.actions,
        [
            "read pending",
            "read source",
            "create secret",
            "probe",
            "write status",
            "finish"
        ]
    );
    assert!(run.notices.iter().any(|n| n.reason == "PendingTokenUnusable"));
    assert_eq!(
        reason(&run.status.expect("status"), Type::Ready),
        Some(Reason::TokenValid)
    );
}

#[test]
fn a_suspended_credential_reads_writes_and_probes_nothing() {
    let mut case = Case::new(serde_json::json!({
        "tenant": "acme", "provider": "raise", "credentialRef": {"name": "src"}, "suspend": true
    }));
    case.observed.next_probe_time = Some(Time(t(60)));
    let run = drive(&case.world(), shell(jwt("a"), 200));
    assert_eq!(run.actions, ["write status", "finish"]);
    let status = run.status.expect("status");
    assert_eq!(status.next_probe_time, None);
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(run.requeue, None, "woken only by a change");
}

#[test]
fn an_overdue_probe_waits_for_its_catch_up_slot() {
    let mut case = Case::secret_sourced().holding(&jwt("a"), "5").valid(&jwt("a"), t(-30));
    // Began to act after the probe fell due: the probe takes the host's next slot.
    case.acting_since = t(-10);
    let late = drive(&case.world(), |a| match a {
        Action::TakeCatchUpSlot { host } => {
            assert_eq!(host, "prod-api.raisedonors.com:443");
            Outcome::CatchUpSlot(1000)
        }
        other => shell(jwt("a"), 200)(other),
    });
    assert_eq!(late.actions, ["catch-up slot", "keep status", "finish"]);
    let next = late
        .status
        .and_then(|s| s.next_probe_time)
        .map(|t| t.0)
        .expect("scheduled");
    assert!(next > case.now, "slot 1000 at 10 a second is later");

    let now = drive(&case.world(), shell(jwt("a"), 200));
    assert_eq!(
        now.actions,
        ["catch-up slot", "probe", "keep status", "finish"],
        "slot 0 is now"
    );
}

#[test]
fn a_probe_held_back_by_the_budget_is_rescheduled_not_failed() {
    let case = Case::secret_sourced().holding(&jwt("a"), "5").valid(&jwt("a"), t(-1));
    let run = drive(&case.world(), |a| match a {
        Action::Probe { probing, .. } => Outcome::Probed {
            probing: *probing,
            step: ProbeStep::Deferred(t(90)),
        },
        other => shell(jwt("a"), 200)(other),
    });
    assert_eq!(run.actions, ["probe", "keep status", "finish"]);
    let status = run.status.expect("status");
    assert_eq!(reason(&status, Type::Ready), Some(Reason::TokenValid));
    assert_eq!(status.next_probe_time.map(|t| t.0), Some(t(90)));
    assert_eq!(run.requeue, Some(Duration::from_secs(91)));
}

#[test]
fn a_probe_request_is_answered_by_a_probe_of_its_own() {
    let mut case = Case::secret_sourced().holding(&jwt("a"), "5").valid(&jwt("a"), t(600));
    case.tac.metadata.annotations = Some(BTreeMap::from([(
        crate::crd::PROBE_REQUESTED_ANNOTATION.to_owned(),
        "2027-01-15T08:00:00Z".to_owned(),
    )]));
    let mut share = None;
    let run = drive(&case.world(), |a| {
        if let Action::Probe { share: s, .. } = a {
            share = Some(s.is_some());
        }
        shell(jwt("a"), 200)(a)
    });
    assert_eq!(run.actions, ["probe", "write status", "finish"]);
    assert_eq!(share, Some(false), "not answered by another credential's probe");
    assert_eq!(
        run.status.and_then(|s| s.last_handled_probe_request).as_deref(),
        Some("2027-01-15T08:00:00Z")
    );
}

#[test]
fn an_expired_token_fails_without_a_request() {
    let case = Case::secret_sourced();
    let expired = crate::decide::token::tests::jwt(serde_json::json!({"exp": crate::testing::EPOCH - 10}));
    let run = drive(&case.world(), |a| match a {
        Action::ReadSource { which, .. } => Outcome::SourceRead {
            which: *which,
            secret: Some(Box::new(source_secret(&expired, "5"))),
        },
        other => shell(jwt("a"), 200)(other),
    });
    assert_eq!(run.actions, ["read source", "create secret", "write status", "finish"]);
    let status = run.status.expect("status");
    assert_eq!(status.last_probe_result, Some(ProbeResult::Expired));
    assert_eq!(reason(&status, Type::Degraded), Some(Reason::Expired));
}

fn login_secret() -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some("login".into());
    s.data = Some(BTreeMap::from([
        ("username".to_owned(), ByteString(b"ops@acme.example".to_vec())),
        ("password".to_owned(), ByteString(b"hunter2".to_vec())),
    ]));
    s
}

fn endpoint(code: u16, body: &str) -> crate::decide::oauth::Answer {
    crate::decide::oauth::Answer {
        transport: crate::decide::verdict::Transport::Answered(code),
        body: body.as_bytes().to_vec(),
        media_type: Some(crate::decide::error_body::MediaType::Json),
        back_off_until: None,
    }
}

fn oauth_case() -> Case {
    Case::new(serde_json::json!({"tenant": "acme", "provider": "virtuous", "oauth": {"secretRef": {"name": "login"}}}))
}

#[test]
fn an_oauth_credential_signs_in_stores_its_state_and_then_writes_the_secret() {
    let case = oauth_case();
    let mut forms = Vec::new();
    let run = drive(&case.world(), |a| {
        if let Action::CallTokenEndpoint { form, url, .. } = a {
            assert!(url.ends_with("/Token"), "{url}");
            forms.push(form.iter().map(|(k, _)| *k).collect::<Vec<_>>());
        }
        shell(jwt("a"), 200)(a)
    });
    assert_eq!(
        run.actions,
        [
            "read login",
            "read oauth state",
            "token endpoint",
            "write oauth state",
            "create secret",
            "probe",
            "write status",
            "finish"
        ]
    );
    assert_eq!(
        forms,
        [vec!["grant_type", "username", "password"]],
        "the password grant"
    );
    assert_eq!(
        reason(&run.status.expect("status"), Type::Ready),
        Some(Reason::TokenValid)
    );
}

#[test]
fn a_refused_refresh_token_signs_in_again_in_the_same_reconcile() {
    let case = oauth_case();
    let state = crate::decide::oauth::State {
        refresh_token: Some(Token::new("old-refresh")),
        ..Default::default()
    };
    let state_secret =
        crate::decide::oauth::state_secret(&case.tac, "c-tenantcred-oauth", &state).expect("the credential has a uid");
    let mut grants = Vec::new();
    let run = drive(&case.world(), |a| match a {
        Action::ReadOAuthState { .. } => Outcome::OAuthStateRead(Some(Box::new(state_secret.clone()))),
        Action::CallTokenEndpoint { form, .. } => {
            grants.push(form[0].1.clone());
            if grants.len() == 1 {
                Outcome::TokenEndpoint(Call::Answered(endpoint(400, r#"{"error":"invalid_grant"}"#)))
            } else {
                shell(jwt("a"), 200)(a)
            }
        }
        other => shell(jwt("a"), 200)(other),
    });
    assert_eq!(grants, ["refresh_token", "password"]);
    assert_eq!(
        &run.actions[..5],
        [
            "read login",
            "read oauth state",
            "token endpoint",
            "token endpoint",
            "write oauth state"
        ]
    );
}

#[test]
fn a_missing_login_is_said_and_nothing_is_sent() {
    let case = oauth_case();
    let run = drive(&case.world(), |a| match a {
        Action::ReadLogin { .. } => Outcome::LoginRead(None),
        other => shell(jwt("a"), 200)(other),
    });
    assert_eq!(run.actions, ["read login", "write status", "finish"]);
    assert_eq!(
        reason(&run.status.expect("status"), Type::Ready),
        Some(Reason::SourceNotFound)
    );
}

#[test]
fn a_token_endpoint_429_holds_the_account_back_and_a_held_call_sends_nothing() {
    let case = oauth_case();
    let mut limited = endpoint(429, "{}");
    limited.back_off_until = Some(t(120));
    let run = drive(&case.world(), |a| match a {
        Action::CallTokenEndpoint { .. } => Outcome::TokenEndpoint(Call::Answered(limited.clone())),
        Action::BackOff { until, .. } => {
            assert_eq!(*until, t(120));
            Outcome::BackedOff
        }
        other => shell(jwt("a"), 200)(other),
    });
    assert_eq!(
        run.actions,
        [
            "read login",
            "read oauth state",
            "token endpoint",
            "back off",
            "write status",
            "finish"
        ]
    );
    assert_eq!(run.requeue, Some(Duration::from_secs(121)));

    let held = drive(&case.world(), |a| match a {
        Action::CallTokenEndpoint { .. } => Outcome::TokenEndpoint(Call::Held(t(30))),
        other => shell(jwt("a"), 200)(other),
    });
    assert_eq!(
        held.actions,
        [
            "read login",
            "read oauth state",
            "token endpoint",
            "write status",
            "finish"
        ]
    );
    assert_eq!(held.requeue, Some(Duration::from_secs(31)));
}
