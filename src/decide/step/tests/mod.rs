//! The reconcile machine driven as the shell drives it, by a scripted shell: a test builds a
//! [`Case`] (the credential, what the cluster and the provider answer, how long each answer
//! takes), runs it, and asserts the exact actions asked for, in order, and what was decided.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::probe::AfterProbe;
use super::*;
use crate::crd::{ProbeResult, RotationPhase};
use crate::decide::conditions::{self, Reason, Type};
use crate::decide::egress::Egress;
use crate::decide::oauth;
use crate::decide::sharing::Heard;
use crate::decide::verdict::ProbeOutcome;
use crate::testing::{credential, resolve_builtin, t};

mod managed;
mod oauth_renewal;
mod probing;
mod rotation;
mod source_secret;

/// A JWT valid for 30 days (Raise's tokens are JWTs).
fn jwt(sub: &str) -> String {
    crate::decide::token::tests::jwt(serde_json::json!({"sub": sub, "exp": crate::testing::EPOCH + 30 * 86_400}))
}

/// One credential's reconcile: its inputs (owned, a `World` is borrowed from them) and the
/// scripted shell's answers. Everything answers as a healthy cluster and provider would unless
/// a builder method says otherwise.
struct Case {
    tac: TenantApiCredential,
    settings: Result<Settings, Problem>,
    observed: TenantApiCredentialStatus,
    target: Option<Observed>,
    remembered: Option<String>,
    source_rv: Option<String>,
    acting_since: Timestamp,
    now: Timestamp,
    // The scripted shell.
    /// What the source Secrets hold: `(token, resourceVersion)`, or a Secret as given; `None`: not found.
    source: Option<Secret>,
    pending: Option<Option<Secret>>,
    probe: Attempt<ProbeOutcome>,
    /// How long a probe takes, in seconds: every later outcome arrives that much later too.
    probe_takes: i64,
    heard: Option<Heard>,
    written: Written,
    /// What a read after a create's 409 finds.
    found: Option<Secret>,
    login: Option<Secret>,
    oauth_state: Option<Secret>,
    /// What holding the login comes to.
    held: Held,
    /// The answers to the state writes, in order (then: stored).
    state_writes: Vec<StateWritten>,
    /// The token endpoint's answers, in order (the last repeats).
    endpoint: Vec<Attempt<oauth::Answer>>,
    catch_up_slot: u64,
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
            source: Some(source_secret(&jwt("a"), "5")),
            pending: None,
            probe: Attempt::Sent(ProbeOutcome::answered(200)),
            probe_takes: 0,
            heard: None,
            written: Written::Stored,
            found: None,
            login: Some(login_secret()),
            oauth_state: None,
            held: Held::AtOnce,
            state_writes: Vec::new(),
            endpoint: vec![Attempt::Sent(endpoint(
                200,
                r#"{"access_token":"access-1","refresh_token":"refresh-1","expires_in":3600}"#,
            ))],
            catch_up_slot: 0,
        }
    }

    /// A Raise credential whose token is in Secret `src` (holding `jwt("a")` at version 5).
    fn secret_sourced() -> Self {
        Self::new(serde_json::json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "src"}}))
    }

    /// A Virtuous credential that signs in with the login in Secret `login`.
    fn oauth() -> Self {
        Self::new(
            serde_json::json!({"tenant": "acme", "provider": "virtuous", "oauth": {"secretRef": {"name": "login"}}}),
        )
    }

    /// The managed Secret holds `token`, read from `src` at resourceVersion `rv`, which the
    /// metadata watch still reports.
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
                refresh_lapses: None,
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

    /// In use and working: the Secret holds `token` from `src` at 5, probed valid, next at t(600).
    fn working(token: &str) -> Self {
        Self::secret_sourced().holding(token, "5").valid(token, t(600))
    }

    /// The source Secret now holds `token` at resourceVersion `rv`, and the watch says so.
    fn source_now(mut self, token: &str, rv: &str) -> Self {
        self.source = Some(source_secret(token, rv));
        self.source_rv = Some(rv.into());
        self
    }

    fn source(mut self, secret: Option<Secret>) -> Self {
        self.source = secret;
        self
    }

    fn probe_answers(mut self, status: u16) -> Self {
        self.probe = Attempt::Sent(ProbeOutcome::answered(status));
        self
    }

    /// The probe as the shell attempted it (the provider's status rules are filled in).
    fn probe_attempt(mut self, attempt: Attempt<ProbeOutcome>) -> Self {
        self.probe = attempt;
        self
    }

    fn annotated(mut self, key: &str, value: &str) -> Self {
        self.tac.metadata.annotations = Some(BTreeMap::from([(key.to_owned(), value.to_owned())]));
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
            token_version: self.remembered.as_deref(),
            source_resource_version: self.source_rv.as_deref(),
            acting_since: self.acting_since,
            catch_up_per_second: 10.0,
            now: self.now,
            jitter: Jitter::new(0.5),
        }
    }

    /// Drives the machine to its end as the shell would, answering from the script.
    fn run(&self) -> Run {
        let mut machine = Reconcile::new(self.world());
        let mut run = Run::default();
        let mut clock = self.now;
        let mut endpoint = self.endpoint.iter();
        let mut last_answer = None;
        for _ in 0..MAX_STEPS {
            let action = machine.poll();
            run.actions.push(kind(&action));
            run.phases.push(machine.phase());
            let outcome = match action {
                Action::Finish { notices, requeue } => {
                    run.notices = notices;
                    run.requeue = requeue;
                    return run;
                }
                Action::ReadSource { which, .. } => Outcome::SourceRead {
                    which,
                    secret: match which {
                        Which::Current => self.source.clone(),
                        Which::Pending => self.pending.clone().flatten(),
                    }
                    .map(Box::new),
                },
                Action::ReadLogin { .. } => Outcome::LoginRead(self.login.clone().map(Box::new)),
                Action::ReadOAuthState { read, .. } => Outcome::OAuthStateRead {
                    read,
                    secret: match read {
                        StateRead::Legacy => None,
                        _ => self.oauth_state.clone().map(Box::new),
                    },
                },
                Action::HoldLogin { .. } => Outcome::LoginHeld(self.held),
                Action::CallTokenEndpoint { url, request, .. } => {
                    let form = request
                        .form
                        .iter()
                        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                        .collect();
                    run.token_calls.push((url, form));
                    let answer = endpoint.next().or(last_answer).expect("an answer scripted");
                    last_answer = Some(answer);
                    Outcome::TokenEndpoint(answer.clone())
                }
                Action::WriteOAuthState { secret } => {
                    let written = self.state_writes.get(run.state_writes.len()).cloned();
                    run.state_writes.push(*secret);
                    Outcome::OAuthStateWritten(written.unwrap_or(StateWritten::Stored(Some("2".into()))))
                }
                Action::BackOff(b) => {
                    run.back_offs.push(b);
                    Outcome::BackedOff
                }
                Action::RememberSourceVersion { .. } => Outcome::Remembered,
                Action::RecallAnswer { .. } => Outcome::Recalled(self.heard),
                Action::Probe { probing, settings, .. } => {
                    clock = schedule::add(clock, std::time::Duration::from_secs(self.probe_takes.unsigned_abs()));
                    let attempt = match &self.probe {
                        Attempt::Held(until) => Attempt::Held(*until),
                        Attempt::Busy => Attempt::Busy,
                        Attempt::Sent(outcome) => Attempt::Sent(Box::new(ProbeOutcome {
                            rules: settings.profile.probe.statuses.clone(),
                            ..outcome.clone()
                        })),
                    };
                    Outcome::Probed { probing, attempt }
                }
                Action::AfterProbe { probing, after } => {
                    let held_back = after.back_off.as_ref().map(|_| crate::crd::RateLimitScope::Key);
                    run.after.push(*after);
                    Outcome::AfterProbe { probing, held_back }
                }
                Action::PruneSecret { .. } => Outcome::Pruned,
                Action::WriteSecret { secret, create } => {
                    run.written.push(*secret);
                    match (&self.written, create) {
                        // Every create finds a Secret; an apply stores.
                        (Written::Exists, false) => Outcome::SecretWritten(Written::Stored),
                        (other, _) => Outcome::SecretWritten(other.clone()),
                    }
                }
                Action::ReadManagedSecret { .. } => Outcome::ManagedSecretRead(self.found.clone().map(Box::new)),
                Action::RestartWorkloads { .. } => Outcome::Restarted {
                    notices: Vec::new(),
                    wake: None,
                },
                Action::TakeCatchUpSlot { host } => {
                    run.catch_up_hosts.push(host);
                    Outcome::CatchUpSlot(self.catch_up_slot)
                }
                Action::WriteStatus { status, .. } | Action::KeepStatus { status, .. } => {
                    run.status = Some(*status);
                    Outcome::StatusHandled
                }
            };
            machine.handle(outcome, clock);
        }
        panic!("no Finish within {MAX_STEPS} steps: {:?}", run.actions);
    }
}

/// What a run asked for, and where it ended.
#[derive(Default)]
struct Run {
    actions: Vec<&'static str>,
    phases: Vec<Phase>,
    status: Option<TenantApiCredentialStatus>,
    written: Vec<Secret>,
    token_calls: Vec<(String, Vec<(String, String)>)>,
    /// The OAuth state Secrets written, in order.
    state_writes: Vec<Secret>,
    back_offs: Vec<BackOff>,
    after: Vec<AfterProbe>,
    catch_up_hosts: Vec<String>,
    notices: Vec<Notice>,
    requeue: Option<Duration>,
}

impl Run {
    fn status(&self) -> &TenantApiCredentialStatus {
        self.status.as_ref().expect("a status was decided")
    }

    fn ready(&self) -> Option<Reason> {
        reason(self.status(), Type::Ready)
    }
}

fn kind(a: &Action<'_>) -> &'static str {
    match a {
        Action::ReadSource {
            which: Which::Current, ..
        } => "read source",
        Action::ReadSource {
            which: Which::Pending, ..
        } => "read pending",
        Action::ReadLogin { .. } => "read login",
        Action::ReadOAuthState { .. } => "read oauth state",
        Action::HoldLogin { .. } => "hold login",
        Action::CallTokenEndpoint { .. } => "token endpoint",
        Action::WriteOAuthState { .. } => "write oauth state",
        Action::BackOff(_) => "back off",
        Action::RememberSourceVersion { .. } => "remember version",
        Action::RecallAnswer { .. } => "recall answer",
        Action::Probe {
            probing: Probing::Candidate,
            ..
        } => "probe candidate",
        Action::Probe {
            probing: Probing::InUse,
            ..
        } => "probe",
        Action::AfterProbe {
            probing: Probing::Candidate,
            ..
        } => "after candidate probe",
        Action::AfterProbe {
            probing: Probing::InUse,
            ..
        } => "after probe",
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

fn login_secret() -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some("login".into());
    s.metadata.uid = Some("login-uid".into());
    s.data = Some(BTreeMap::from([
        ("username".to_owned(), ByteString(b"ops@acme.example".to_vec())),
        ("password".to_owned(), ByteString(b"hunter2".to_vec())),
    ]));
    s
}

fn endpoint(code: u16, body: &str) -> oauth::Answer {
    oauth::Answer {
        transport: crate::decide::verdict::Transport::Answered(code),
        body: body.as_bytes().to_vec(),
        media_type: Some(crate::decide::error_body::MediaType::Json),
        back_off_until: None,
    }
}

fn reason(status: &TenantApiCredentialStatus, ty: Type) -> Option<Reason> {
    conditions::state(&status.conditions, ty).and_then(|(_, r)| r)
}
