//! One reconcile as an owning, sans-IO machine (in the shape of quinn-proto and str0m): the shell
//! gathers a read-only [`World`] (the credential, the status, the cached managed Secret, the
//! source's version, the clock), builds a [`Reconcile`] from it, and then asks
//! [`Reconcile::poll`] for one [`Action`] at a time, performs it and hands its [`Outcome`] back
//! through [`Reconcile::handle`] with the time it arrived, until the answer is
//! [`Action::Finish`]. Every decision a reconcile makes is taken here; the shell only reads,
//! writes, sends and remembers.
//!
//! The reconcile reads top to bottom (`reconcile`): where it needs a result it does not have
//! yet, that result's action is the next one. The results so far live in `done`, each judged
//! when it arrived; the [`Phase`] says where the reconcile stands.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::{
    PROBE_REQUESTED_ANNOTATION, ProbeResult, RotationStatus, TenantApiCredential, TenantApiCredentialStatus,
};
use crate::decide::events::{self, Notice};
use crate::decide::plan::{self, Input, ProbeStep, Problem, Settings, TokenFacts, TokenSource};
use crate::decide::provider::TokenFormat;
use crate::decide::publish::{self, Volatile};
use crate::decide::schedule::{self, Jitter};
use crate::decide::secret::{self, Observed, Ownership};
use crate::decide::token::{self, Fingerprint, Lifetime, Token};

mod action;
mod cutover;
mod done;
pub mod probe;
mod renewal;
pub mod request;
pub mod source;
mod sync;

pub use action::{Action, Held, Outcome, Probing, StateRead, StateWritten, Written};
pub use request::{Attempt, BackOff};
pub use source::{Source, Which};

use done::Done;

/// How often a Secret the API server refused is tried again while nothing changed.
pub const REJECTED_RETRY: Duration = Duration::from_secs(300);

/// When a create finds a Secret again after a read found none (someone creates and deletes it
/// as we go), how soon the reconcile tries again.
pub const RACE_RETRY: Duration = Duration::from_secs(10);

/// The most actions one reconcile asks for (each records a different result). Only a bug in
/// this module could take more: the machine then ends the reconcile and looks again shortly.
pub const MAX_STEPS: usize = 24;

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
    /// `<source>/<resourceVersion>` the managed Secret's token came from, as the managed-Secret
    /// cache knows it: recorded on the Secret when written, or found by a later read of the same
    /// token.
    pub token_version: Option<&'a str>,
    /// The credentialRef Secret's resourceVersion, as the metadata watch last delivered it.
    pub source_resource_version: Option<&'a str>,
    /// When this replica could begin to act (it leads, its caches are listed).
    pub acting_since: Timestamp,
    /// Overdue probes started per second per host after `acting_since`.
    pub catch_up_per_second: f64,
    /// When the reconcile began; the machine moves it to each outcome's arrival.
    pub now: Timestamp,
    pub jitter: Jitter,
}

/// The credential's spec, as far as it could be read.
#[derive(Clone, Copy)]
pub enum Spec<'a> {
    Readable {
        credential: &'a TenantApiCredential,
        /// The spec resolved against the provider and the egress rules, or why it cannot be.
        settings: &'a Result<Settings, Problem>,
    },
    /// It slipped past schema validation and the types cannot read it: the decoder's message.
    Unreadable(&'a str),
}

/// Where a reconcile stands: the phase of the action it asked for last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing asked yet.
    Starting,
    /// Reading the source Secrets (and remembering which version the token came from).
    ReadingSource,
    /// Signing in or refreshing an OAuth credential's access token.
    RenewingOAuth,
    /// Probing a token (a replacement's validation, or the scheduled probe).
    Probing,
    /// Bringing the managed Secret up to date.
    WritingSecret,
    /// Restarting the workloads that use the Secret.
    Restarting,
    /// Writing the status, or keeping it in memory.
    WritingStatus,
    /// Finished: the events are recorded, the next look is scheduled.
    Done,
}

impl Phase {
    fn of(action: &Action<'_>) -> Self {
        match action {
            Action::ReadSource { .. } | Action::RememberSourceVersion { .. } => Self::ReadingSource,
            Action::ReadLogin { .. }
            | Action::ReadOAuthState { .. }
            | Action::HoldLogin { .. }
            | Action::CallTokenEndpoint { .. }
            | Action::WriteOAuthState { .. }
            | Action::BackOff(_) => Self::RenewingOAuth,
            Action::TakeCatchUpSlot { .. }
            | Action::RecallAnswer { .. }
            | Action::Probe { .. }
            | Action::AfterProbe { .. } => Self::Probing,
            Action::PruneSecret { .. } | Action::WriteSecret { .. } | Action::ReadManagedSecret { .. } => {
                Self::WritingSecret
            }
            Action::RestartWorkloads { .. } => Self::Restarting,
            Action::WriteStatus { .. } | Action::KeepStatus { .. } => Self::WritingStatus,
            Action::Finish { .. } => Self::Done,
        }
    }
}

/// One credential's reconcile: the world it was gathered from, and what it learnt since.
pub struct Reconcile<'a> {
    world: World<'a>,
    done: Done,
    phase: Phase,
    /// The end, decided with the status: due once the status is handled.
    end: Option<Action<'a>>,
    status_handled: bool,
    /// When to look again, once finished.
    requeue: Option<Duration>,
    /// This credential's place in the heartbeat window (`publish::spread`).
    spread: u64,
    steps: usize,
}

impl<'a> Reconcile<'a> {
    pub fn new(world: World<'a>) -> Self {
        let spread = publish::spread(world.meta.uid.as_deref(), world.meta.name.as_deref());
        Self {
            spread,
            world,
            done: Done::default(),
            phase: Phase::Starting,
            end: None,
            status_handled: false,
            requeue: None,
            steps: 0,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The next action. After [`Action::Finish`] it answers `Finish` again, with no events.
    pub fn poll(&mut self) -> Action<'a> {
        self.steps += 1;
        debug_assert!(
            self.steps <= MAX_STEPS,
            "a reconcile asked for more than {MAX_STEPS} actions"
        );
        let action = if self.phase == Phase::Done {
            Action::Finish {
                notices: Vec::new(),
                requeue: self.requeue,
            }
        } else if self.steps > MAX_STEPS {
            Action::Finish {
                notices: Vec::new(),
                requeue: Some(RACE_RETRY),
            }
        } else if self.status_handled
            && let Some(end) = self.end.take()
        {
            end
        } else {
            match reconcile(&self.world, &self.done) {
                Err(needed) => needed,
                Ok(settled) => {
                    let (status, end) = settle(&self.world, self.spread, settled);
                    self.end = Some(end);
                    status
                }
            }
        };
        if let Action::Finish { requeue, .. } = &action {
            self.requeue = *requeue;
        }
        self.phase = Phase::of(&action);
        action
    }

    /// Hands back the outcome of the action asked for last, as it was at `at`.
    pub fn handle(&mut self, outcome: Outcome, at: Timestamp) {
        // Judged when it arrived; a clock that steps back never moves the reconcile back.
        self.world.now = self.world.now.max(at);
        if matches!(outcome, Outcome::StatusHandled) {
            self.status_handled = true;
        }
        self.done.record(&self.world, outcome, self.world.now);
    }
}

/// Where the reconcile came to: the status to hold, the events, the next instant to look again.
struct Settled {
    status: TenantApiCredentialStatus,
    notices: Vec<Notice>,
    wake: Option<Timestamp>,
}

/// The reconcile top to bottom: where it came to, or (`Err`) the action whose result it needs
/// to go on.
fn reconcile<'a>(w: &World<'a>, d: &Done) -> Result<Settled, Action<'a>> {
    let (tac, settings) = match w.spec {
        Spec::Unreadable(why) => {
            let status = plan::unreadable_spec(w.observed, why, w.meta.generation, w.now);
            let notices = events::transitions(w.observed, &status);
            return Ok(Settled {
                status,
                notices,
                wake: None,
            });
        }
        Spec::Readable { credential, settings } => (credential, settings),
    };
    if tac.spec.suspend {
        // Suspended: nothing is read, written or probed; the status says it is seen.
        let mut status = w.observed.clone();
        status.observed_generation = w.meta.generation;
        status.next_probe_time = None;
        return Ok(Settled {
            status,
            notices: Vec::new(),
            wake: None,
        });
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
        refresh_lapses: synced.refresh_lapses,
    });
    // The token pods see changed (level-triggered: the status still names the old one until the
    // end of this reconcile, so a crash in between repeats the restart, which is idempotent); or
    // a restart gathered in a debounce window is due.
    if !tac.spec.rollout_restart_targets.is_empty() {
        let changed = match (w.observed.token_fingerprint.as_deref(), &facts) {
            (Some(old), Some(new)) if old != new.fingerprint.as_str() => Some(new.fingerprint.clone()),
            _ => None,
        };
        let (notices, wake) = d.restarted.as_ref().ok_or(Action::RestartWorkloads {
            credential: tac,
            changed,
        })?;
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
                // A person's probe-now request is answered by a probe of its own; else another
                // credential's recent answer about the same token may answer (`probe::shared`).
                let shared = if new_request {
                    None
                } else {
                    d.recalled.clone().ok_or_else(|| Action::RecallAnswer {
                        key: probe::key(settings, token),
                    })?
                };
                probe = match shared {
                    Some(step) => step,
                    None => {
                        let budget_key = synced.budget_key.clone().unwrap_or_else(|| facts.fingerprint.clone());
                        d.probe(Probing::InUse, settings, token, &budget_key)?
                    }
                };
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
    // An OAuth access token the provider refused just now is refreshed in the next reconcile
    // (`oauth::rejected`); only after a probe sent, so never faster than probes are.
    let oauth = settings
        .as_ref()
        .is_ok_and(|s| matches!(s.source, TokenSource::OAuth { .. }));
    let refresh_now = (oauth && probe.result() == Some(ProbeResult::Unauthorized)).then_some(w.now);
    let wake = [decision.requeue_at, synced.wake_at, refresh_now]
        .into_iter()
        .flatten()
        .min();
    Ok(Settled {
        status: decision.status,
        notices,
        wake,
    })
}

/// The status step, then the end: write the status when a reader would act on the difference
/// (or for the heartbeat), else keep what changed in memory; then record the events and requeue.
fn settle<'a>(w: &World<'_>, spread: u64, settled: Settled) -> (Action<'a>, Action<'a>) {
    let Settled { status, notices, wake } = settled;
    // A second late, so the instant has surely passed when we look.
    let requeue = wake.map(|at| schedule::until(w.now, at) + Duration::from_secs(1));
    let end = Action::Finish { notices, requeue };
    if publish::needs_write(w.persisted, &status, w.now, spread) {
        let patch = publish::merge_patch(
            &serde_json::to_value(w.persisted).unwrap_or_default(),
            &serde_json::to_value(&status).unwrap_or_default(),
        );
        let write = Action::WriteStatus {
            status: Box::new(status),
            patch,
        };
        return (write, end);
    }
    let volatile = Volatile::of(&status);
    let live = (volatile != Volatile::of(w.persisted)).then_some(volatile);
    let keep = Action::KeepStatus {
        status: Box::new(status),
        live,
    };
    (keep, end)
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
    /// When an OAuth login's refresh token lapses, as its state says.
    refresh_lapses: Option<Timestamp>,
}

impl Synced {
    fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

fn namespace<'a>(w: &World<'a>) -> &'a str {
    w.meta.namespace.as_deref().unwrap_or_default()
}

/// The resolved settings, when the spec is readable and resolves.
fn settings_of<'a>(w: &World<'a>) -> Option<&'a Settings> {
    match w.spec {
        Spec::Readable {
            settings: Ok(settings), ..
        } => Some(settings),
        _ => None,
    }
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

#[cfg(test)]
mod tests;
