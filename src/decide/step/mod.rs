//! One reconcile as a step machine, sans-IO (as quinn-proto and str0m are): the shell gathers a
//! read-only [`World`] (the credential, the status, the cached managed Secret, the source's
//! version, the clock), asks [`step`] what to do next, performs that one [`Action`] and hands its
//! result back through [`Done::record`], until the answer is [`Action::Finish`]. Every decision a
//! reconcile makes is taken here; the shell only reads, writes, sends and remembers.
//!
//! `step` works the whole reconcile out again from the start at every call, with what is done so
//! far: where it needs a result it does not have yet, that is the next action. It is cheap (no
//! I/O, a handful of calls per reconcile) and it keeps the flow readable top to bottom.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::{PROBE_REQUESTED_ANNOTATION, RotationStatus, TenantApiCredential, TenantApiCredentialStatus};
use crate::decide::events::{self, Notice};
use crate::decide::oauth::State;
use crate::decide::plan::{self, Input, ProbeStep, Problem, Settings, TokenFacts, TokenSource};
use crate::decide::provider::TokenFormat;
use crate::decide::publish::{self, Volatile};
use crate::decide::schedule::{self, Jitter};
use crate::decide::secret::{self, Observed, Ownership};
use crate::decide::token::{self, Fingerprint, Lifetime, Token};

mod cutover;
mod renewal;
pub mod source;
mod sync;

pub use renewal::Call;
pub use source::{Source, Which};

/// How often a Secret the API server refused is tried again while nothing changed.
pub const REJECTED_RETRY: Duration = Duration::from_secs(300);

/// When a create finds a Secret again after a read found none (someone creates and deletes it
/// as we go), how soon the reconcile tries again.
pub const RACE_RETRY: Duration = Duration::from_secs(10);

/// Everything a reconcile's decisions read, gathered once by the shell before the first step.
pub struct World<'a> {
    pub meta: &'a ObjectMeta,
    pub spec: Spec<'a>,
    /// The status as last decided: as persisted, with the per-probe fields kept in memory.
    pub observed: &'a TenantApiCredentialStatus,
    /// The status as the API server holds it: what a status patch is computed against.
    pub persisted: &'a TenantApiCredentialStatus,
    /// The Secret at the target name, as the managed-Secret cache holds it.
    pub target: Option<&'a Observed>,
    /// `<source>/<resourceVersion>` of the latest read that found the token the managed Secret
    /// already holds, remembered by this process.
    pub remembered_version: Option<&'a str>,
    /// The credentialRef Secret's resourceVersion, as the metadata watch last delivered it.
    pub source_resource_version: Option<&'a str>,
    /// When this replica could begin to act (it leads, its caches are listed).
    pub acting_since: Timestamp,
    /// Overdue probes started per second per host after `acting_since`.
    pub catch_up_per_second: f64,
    /// This credential's stable place in the hour (the heartbeat writes are spread by it).
    pub spread: u64,
    pub now: Timestamp,
    pub jitter: Jitter,
}

/// The credential's spec, as far as it could be read.
pub enum Spec<'a> {
    Readable {
        credential: &'a TenantApiCredential,
        /// The spec resolved against the provider and the egress rules, or why it cannot be.
        settings: &'a Result<Settings, Problem>,
    },
    /// It slipped past schema validation and the types cannot read it: the decoder's message.
    Unreadable(&'a str),
}

/// The one thing to do next.
pub enum Action {
    /// Read a source Secret (answer [`Outcome::SourceRead`]).
    ReadSource { which: Which, name: String },
    /// Read an OAuth credential's login Secret (answer [`Outcome::LoginRead`]).
    ReadLogin { name: String },
    /// Read the state Secret tenantcred keeps for an OAuth credential (answer
    /// [`Outcome::OAuthStateRead`]).
    ReadOAuthState { name: String },
    /// POST this form to the token endpoint within the account's budget (answer
    /// [`Outcome::TokenEndpoint`]). The form holds secrets: never logged.
    CallTokenEndpoint {
        url: String,
        form: Vec<(&'static str, String)>,
        budget_key: Fingerprint,
    },
    /// Apply the OAuth state Secret (answer [`Outcome::OAuthStateWritten`]).
    WriteOAuthState { name: String, state: Box<State> },
    /// The token endpoint said 429: hold the account back until then (answer
    /// [`Outcome::BackedOff`]).
    BackOff { budget_key: Fingerprint, until: Timestamp },
    /// Remember that the managed Secret's token is the one in this source version, so an
    /// unrelated edit of the source costs one read, once (answer [`Outcome::Remembered`]).
    RememberSourceVersion(String),
    /// Probe a token within its budget (answer [`Outcome::Probed`]). `share`: the credential's
    /// own latest probe time, when an answer another credential heard about the same token may
    /// answer instead (`decide::sharing`).
    Probe {
        probing: Probing,
        token: Token,
        budget_key: Fingerprint,
        share: Option<Option<Timestamp>>,
    },
    /// Remove labels or annotations tenantcred set at creation and no longer wants (answer
    /// [`Outcome::Pruned`]).
    PruneSecret {
        name: String,
        stale: Vec<(&'static str, String)>,
    },
    /// Create (where the cache saw none) or apply the managed Secret (answer
    /// [`Outcome::SecretWritten`]).
    WriteSecret { secret: Box<Secret>, create: bool },
    /// Read the managed Secret a create found although the cache had none (answer
    /// [`Outcome::ManagedSecretRead`]): whose it is, and what it holds, decide what comes next.
    ReadManagedSecret { name: String },
    /// Stamp the token's fingerprint on the workloads to restart, as the rollout gate allows:
    /// `changed` when the Secret's token changed now (answer [`Outcome::Restarted`]).
    RestartWorkloads { changed: Option<Fingerprint> },
    /// Take the provider host's next catch-up slot for an overdue probe (answer
    /// [`Outcome::CatchUpSlot`]).
    TakeCatchUpSlot { host: String },
    /// Patch the status (answer [`Outcome::StatusHandled`]).
    WriteStatus {
        status: Box<TenantApiCredentialStatus>,
        patch: serde_json::Value,
    },
    /// Not worth a write (`publish`): keep the per-probe fields in memory, or forget them when
    /// the persisted status already says the same (`live: None`) (answer
    /// [`Outcome::StatusHandled`]).
    KeepStatus {
        status: Box<TenantApiCredentialStatus>,
        live: Option<Volatile>,
    },
    /// Done: record the events, and look again after `requeue` (or when something changes).
    Finish {
        notices: Vec<Notice>,
        requeue: Option<Duration>,
    },
}

/// Which token a probe is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probing {
    /// A replacement, validated while the token in use keeps serving.
    Candidate,
    /// The token in the managed Secret, as scheduled.
    InUse,
}

/// What became of a managed-Secret write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    Stored,
    /// The create found a Secret of that name (409 AlreadyExists) that the cache had not seen.
    Exists,
    /// The API server refused it as invalid (422), with its message.
    Refused(String),
}

/// The result of an action, as the shell hands it back.
pub enum Outcome {
    /// The source Secret as read; `None`: not found.
    SourceRead {
        which: Which,
        secret: Option<Box<Secret>>,
    },
    /// The login Secret as read; `None`: not found.
    LoginRead(Option<Box<Secret>>),
    /// The OAuth state Secret as read; `None`: none yet.
    OAuthStateRead(Option<Box<Secret>>),
    TokenEndpoint(Call),
    OAuthStateWritten,
    BackedOff,
    Remembered,
    Probed {
        probing: Probing,
        step: ProbeStep,
    },
    Pruned,
    SecretWritten(Written),
    /// The managed Secret as read after a create found it; `None`: gone again.
    ManagedSecretRead(Option<Box<Secret>>),
    Restarted {
        notices: Vec<Notice>,
        wake: Option<Timestamp>,
    },
    CatchUpSlot(u64),
    StatusHandled,
}

/// What this reconcile has done so far, as the step machine records it.
#[derive(Default)]
pub struct Done {
    pending: Option<Source>,
    current: Option<Source>,
    login: Option<Option<Box<Secret>>>,
    oauth_state: Option<Option<Box<Secret>>>,
    calls: Vec<Call>,
    oauth_state_written: bool,
    backed_off: bool,
    remembered: bool,
    validated: Option<ProbeStep>,
    probed: Option<ProbeStep>,
    pruned: bool,
    written: Option<Written>,
    /// The managed Secret as read after a create found it (outer `None`: not read).
    reread: Option<Option<Observed>>,
    restarted: Option<(Vec<Notice>, Option<Timestamp>)>,
    slot: Option<u64>,
    status: bool,
}

/// The most steps one reconcile takes (each records a different result): the shell stops a
/// reconcile that takes more, which only a bug in this module could cause.
pub const MAX_STEPS: usize = 16;

impl Done {
    /// Records an action's result.
    pub fn record(&mut self, world: &World<'_>, outcome: Outcome) {
        match outcome {
            Outcome::SourceRead { which, secret } => {
                let examined = match sources_of(world) {
                    Some((current, pending, settings)) => {
                        let r = match which {
                            Which::Current => current,
                            Which::Pending => pending.unwrap_or(current),
                        };
                        source::examine(
                            secret.as_deref(),
                            r,
                            which,
                            &settings.profile.token_format,
                            namespace(world),
                            world.now,
                        )
                    }
                    // Not asked for without a Secret source: nothing to record.
                    None => return,
                };
                match which {
                    Which::Current => self.current = Some(examined),
                    Which::Pending => self.pending = Some(examined),
                }
            }
            Outcome::LoginRead(s) => self.login = Some(s),
            Outcome::OAuthStateRead(s) => self.oauth_state = Some(s),
            Outcome::TokenEndpoint(call) => self.calls.push(call),
            Outcome::OAuthStateWritten => self.oauth_state_written = true,
            Outcome::BackedOff => self.backed_off = true,
            Outcome::Remembered => self.remembered = true,
            Outcome::Probed { probing, step } => match probing {
                Probing::Candidate => self.validated = Some(step),
                Probing::InUse => self.probed = Some(step),
            },
            Outcome::Pruned => self.pruned = true,
            Outcome::SecretWritten(w) => self.written = Some(w),
            // Decided again from the Secret as read: a write may follow.
            Outcome::ManagedSecretRead(s) => {
                self.reread = Some(s.map(|s| Observed::of(*s)));
                self.written = None;
            }
            Outcome::Restarted { notices, wake } => self.restarted = Some((notices, wake)),
            Outcome::CatchUpSlot(slot) => self.slot = Some(slot),
            Outcome::StatusHandled => self.status = true,
        }
    }
}

/// The next action: where the reconcile needs a result it has not got, that; else, finish.
pub fn step(world: &World<'_>, done: &Done) -> Action {
    match reconcile(world, done) {
        Ok(action) | Err(action) => action,
    }
}

/// The reconcile top to bottom. `Err` carries the action whose result is needed to go on.
fn reconcile(w: &World<'_>, d: &Done) -> Result<Action, Action> {
    let (tac, settings) = match w.spec {
        Spec::Unreadable(why) => {
            let status = plan::unreadable_spec(w.observed, why, w.meta.generation, w.now);
            let notices = events::transitions(w.observed, &status);
            return settle(w, d, status, notices, None);
        }
        Spec::Readable { credential, settings } => (credential, settings),
    };
    if tac.spec.suspend {
        // Suspended: nothing is read, written or probed; the status says it is seen.
        let mut status = w.observed.clone();
        status.observed_generation = w.meta.generation;
        status.next_probe_time = None;
        return settle(w, d, status, Vec::new(), None);
    }

    let requested = tac
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROBE_REQUESTED_ANNOTATION))
        .map(String::as_str);
    let new_request = plan::new_probe_request(w.observed, requested);
    let mut synced = match settings {
        Err(p) => Synced {
            problem: Some(p.clone()),
            ..Synced::default()
        },
        Ok(settings) => sync::sync(w, tac, settings, d, new_request)?,
    };

    let facts = synced.token.as_ref().map(|(t, l)| TokenFacts {
        fingerprint: t.fingerprint(),
        lifetime: *l,
    });
    // The token pods see changed (level-triggered: the status still names the old one until the
    // end of this reconcile, so a crash in between repeats the restart, which is idempotent); or
    // a restart gathered in a debounce window is due.
    if !tac.spec.rollout_restart_targets.is_empty() {
        let changed = match (w.observed.token_fingerprint.as_deref(), &facts) {
            (Some(old), Some(new)) if old != new.fingerprint.as_str() => Some(new.fingerprint.clone()),
            _ => None,
        };
        let (notices, wake) = d.restarted.as_ref().ok_or(Action::RestartWorkloads { changed })?;
        synced.notices.extend(notices.iter().cloned());
        if let Some(at) = wake {
            synced.wake(*at);
        }
    }

    let mut probe = synced.probe.take().unwrap_or(ProbeStep::None);
    let mut honoured = None;
    if let (Ok(settings), None, Some(facts), Some((token, _)), ProbeStep::None) =
        (settings, &synced.problem, &facts, &synced.token, &probe)
    {
        if facts.lifetime.expired(settings.not_after, w.now) {
            probe = ProbeStep::Expired;
        } else {
            let due = match plan::probe_due(w.observed, facts, requested, w.acting_since) {
                plan::Due::Now => w.now,
                plan::Due::At(at) => at,
                plan::Due::Overdue => {
                    let slot = d
                        .slot
                        .ok_or_else(|| Action::TakeCatchUpSlot { host: settings.host() })?;
                    let at = schedule::catch_up(w.acting_since, slot, w.catch_up_per_second, w.jitter);
                    // Recorded as the next probe time (in memory, not written): a reconcile
                    // before then finds it scheduled and keeps its slot.
                    if at > w.now {
                        probe = ProbeStep::Deferred(at);
                    }
                    at
                }
            };
            if due <= w.now {
                honoured = requested;
                // A person's probe-now request is answered by a probe of its own.
                let share = (!new_request).then(|| w.observed.last_probe_time.as_ref().map(|t| t.0));
                probe = d.probed.clone().ok_or_else(|| Action::Probe {
                    probing: Probing::InUse,
                    token: token.clone(),
                    budget_key: synced.budget_key.clone().unwrap_or_else(|| facts.fingerprint.clone()),
                    share,
                })?;
            } else {
                synced.wake(due);
            }
        }
    } else if new_request && synced.rotation.is_some() {
        // A probe-now request retried the rotation: that is the probe it asked for.
        honoured = requested;
    }

    let decision = plan::decide(&Input {
        generation: w.meta.generation,
        observed: w.observed,
        settings: settings.as_ref().ok(),
        token: facts.as_ref(),
        problem: synced.problem.as_ref(),
        probe: &probe,
        rotation: synced.rotation.as_ref(),
        probe_request: honoured,
        now: w.now,
        jitter: w.jitter,
    });
    let mut notices = synced.notices;
    notices.extend(events::transitions(w.observed, &decision.status));
    let wake = [decision.requeue_at, synced.wake_at].into_iter().flatten().min();
    settle(w, d, decision.status, notices, wake)
}

/// The status step, then the end: write the status when a reader would act on the difference
/// (or for the heartbeat), else keep what changed in memory; then record the events and requeue.
fn settle(
    w: &World<'_>,
    d: &Done,
    status: TenantApiCredentialStatus,
    notices: Vec<Notice>,
    wake: Option<Timestamp>,
) -> Result<Action, Action> {
    if !d.status {
        if publish::needs_write(w.persisted, &status, w.now, w.spread) {
            let patch = publish::merge_patch(
                &serde_json::to_value(w.persisted).unwrap_or_default(),
                &serde_json::to_value(&status).unwrap_or_default(),
            );
            return Err(Action::WriteStatus {
                status: Box::new(status),
                patch,
            });
        }
        let volatile = Volatile::of(&status);
        let live = (volatile != Volatile::of(w.persisted)).then_some(volatile);
        return Err(Action::KeepStatus {
            status: Box::new(status),
            live,
        });
    }
    // A second late, so the instant has surely passed when we look.
    let requeue = wake.map(|at| schedule::until(w.now, at) + Duration::from_secs(1));
    Ok(Action::Finish { notices, requeue })
}

/// What bringing the managed Secret up to date came to.
#[derive(Default)]
struct Synced {
    problem: Option<Problem>,
    /// The token in the managed Secret after this reconcile.
    token: Option<(Token, Lifetime)>,
    /// A probe of `token` already made (validating a rotation counts as its first probe).
    probe: Option<ProbeStep>,
    rotation: Option<RotationStatus>,
    wake_at: Option<Timestamp>,
    notices: Vec<Notice>,
    /// Whose hourly budget probes spend when it is not the token's own (an OAuth account).
    budget_key: Option<Fingerprint>,
}

impl Synced {
    fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

fn namespace<'a>(w: &World<'a>) -> &'a str {
    w.meta.namespace.as_deref().unwrap_or_default()
}

/// The Secret source's references and the settings, when the token comes from Secrets.
fn sources_of<'a>(
    w: &World<'a>,
) -> Option<(
    &'a crate::crd::SecretKeyRef,
    Option<&'a crate::crd::SecretKeyRef>,
    &'a Settings,
)> {
    match w.spec {
        Spec::Readable {
            settings: Ok(settings), ..
        } => match &settings.source {
            TokenSource::Secret { current, pending } => Some((current, pending.as_ref(), settings)),
            TokenSource::OAuth { .. } => None,
        },
        _ => None,
    }
}

/// The Secret at the target name: ours (by its credential label), someone else's, or none.
enum Target<'a> {
    Absent,
    Ours(&'a Observed),
    Foreign,
}

fn target<'a>(seen: Option<&'a Observed>, credential: &str) -> Target<'a> {
    match seen {
        None => Target::Absent,
        Some(s) => match secret::ownership(Some(s), credential) {
            Ownership::Ours => Target::Ours(s),
            _ => Target::Foreign,
        },
    }
}

/// The token in the managed Secret now, with what it carries about its lifetime.
fn token_in(observed: &Observed, provider: &str) -> Option<(Token, Lifetime)> {
    let t = secret::token_in(observed)?;
    let lifetime = token::check(t.expose(), &TokenFormat::opaque(provider))
        .map(|(_, l)| l)
        .unwrap_or_default();
    Some((t, lifetime))
}

impl std::fmt::Debug for Action {
    /// Names the action and what is safe to log: never a token or a Secret's data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ReadSource { which, name } => write!(f, "ReadSource({which:?}, {name})"),
            Self::ReadLogin { name } => write!(f, "ReadLogin({name})"),
            Self::ReadOAuthState { name } => write!(f, "ReadOAuthState({name})"),
            Self::CallTokenEndpoint { url, .. } => write!(f, "CallTokenEndpoint({url})"),
            Self::WriteOAuthState { name, .. } => write!(f, "WriteOAuthState({name})"),
            Self::BackOff { until, .. } => write!(f, "BackOff(until {until})"),
            Self::RememberSourceVersion(v) => write!(f, "RememberSourceVersion({v})"),
            Self::Probe {
                probing, token, share, ..
            } => write!(
                f,
                "Probe({probing:?}, {}, share: {})",
                token.fingerprint(),
                share.is_some()
            ),
            Self::PruneSecret { name, stale } => write!(f, "PruneSecret({name}, {stale:?})"),
            Self::WriteSecret { secret, create } => write!(
                f,
                "WriteSecret({}, {})",
                secret.metadata.name.as_deref().unwrap_or_default(),
                if *create { "create" } else { "apply" }
            ),
            Self::ReadManagedSecret { name } => write!(f, "ReadManagedSecret({name})"),
            Self::RestartWorkloads { changed } => write!(f, "RestartWorkloads({changed:?})"),
            Self::TakeCatchUpSlot { host } => write!(f, "TakeCatchUpSlot({host})"),
            Self::WriteStatus { .. } => write!(f, "WriteStatus"),
            Self::KeepStatus { live, .. } => write!(f, "KeepStatus(live: {})", live.is_some()),
            Self::Finish { notices, requeue } => write!(f, "Finish({} events, requeue: {requeue:?})", notices.len()),
        }
    }
}

#[cfg(test)]
mod tests;
