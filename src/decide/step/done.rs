//! What a reconcile has learnt so far: each result as it arrived, judged at the time it arrived.
//! The machine's decisions read it; only [`super::Reconcile::handle`] adds to it.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;

use super::action::{Action, Held, Outcome, Probing, StateRead, StateWritten, Written};
use super::probe;
use super::request::{Attempt, busy_until};
use super::source::{self, Source, Which};
use super::{World, namespace, settings_of, sources_of};
use crate::decide::events::Notice;
use crate::decide::plan::{ProbeStep, Settings};
use crate::decide::secret::Observed;
use crate::decide::token::{Fingerprint, Token};

/// What became of a token-endpoint call, as the renewal reads it.
#[derive(Clone, Debug)]
pub(super) enum Call {
    /// Held back (by the account's budget, the host's back-off, or no free request slot) until
    /// then; nothing was sent.
    Held(Timestamp),
    /// The answer, and when it arrived (what it means is judged at that instant).
    Answered(crate::decide::oauth::Answer, Timestamp),
}

/// A probe's result, with when it arrived and whether the rest of the operator was told.
struct Probed {
    step: ProbeStep,
    at: Timestamp,
    told: bool,
}

/// The results a reconcile has so far.
#[derive(Default)]
pub(super) struct Done {
    pub(super) pending: Option<Source>,
    pub(super) current: Option<Source>,
    pub(super) login: Option<Option<Box<Secret>>>,
    pub(super) oauth_state: Option<Option<Box<Secret>>>,
    pub(super) legacy_state: Option<Option<Box<Secret>>>,
    /// The state as read again, in order.
    pub(super) state_again: Vec<Option<Box<Secret>>>,
    pub(super) login_held: Option<Held>,
    pub(super) calls: Vec<Call>,
    /// The state writes, in order.
    pub(super) state_writes: Vec<StateWritten>,
    pub(super) backed_off: bool,
    pub(super) remembered: bool,
    /// Another credential's answer, judged when it was recalled: `Some(None)`, it answers nothing.
    pub(super) recalled: Option<Option<ProbeStep>>,
    validated: Option<Probed>,
    probed: Option<Probed>,
    pub(super) pruned: bool,
    pub(super) written: Option<Written>,
    /// The managed Secret as read after a create found it (outer `None`: not read).
    pub(super) reread: Option<Option<Observed>>,
    pub(super) restarted: Option<(Vec<Notice>, Option<Timestamp>)>,
    pub(super) slot: Option<u64>,
}

impl Done {
    /// Records an action's result, which arrived at `at` (`world.now` is `at` already).
    pub(super) fn record(&mut self, world: &World<'_>, outcome: Outcome, at: Timestamp) {
        match outcome {
            Outcome::SourceRead { which, secret } => {
                // Not asked for without a Secret source: then there is nothing to record.
                if let Some((current, pending, settings)) = sources_of(world) {
                    let r = match which {
                        Which::Current => current,
                        Which::Pending => pending.unwrap_or(current),
                    };
                    let format = &settings.profile.token_format;
                    let examined = source::examine(secret.as_deref(), r, which, format, namespace(world), at);
                    match which {
                        Which::Current => self.current = Some(examined),
                        Which::Pending => self.pending = Some(examined),
                    }
                }
            }
            Outcome::LoginRead(s) => self.login = Some(s),
            Outcome::OAuthStateRead { read, secret } => match read {
                StateRead::First => self.oauth_state = Some(secret),
                StateRead::Legacy => self.legacy_state = Some(secret),
                StateRead::Again => self.state_again.push(secret),
            },
            Outcome::LoginHeld(held) => self.login_held = Some(held),
            Outcome::TokenEndpoint(attempt) => self.calls.push(match attempt {
                Attempt::Held(until) => Call::Held(until),
                Attempt::Busy => Call::Held(busy_until(at, world.jitter)),
                Attempt::Sent(answer) => Call::Answered(answer, at),
            }),
            Outcome::OAuthStateWritten(w) => self.state_writes.push(w),
            Outcome::BackedOff => self.backed_off = true,
            Outcome::Remembered => self.remembered = true,
            Outcome::Recalled(heard) => {
                let last_probe = world.observed.last_probe_time.as_ref().map(|t| t.0);
                self.recalled = Some(settings_of(world).and_then(|s| probe::shared(heard, last_probe, s, at)));
            }
            Outcome::Probed { probing, attempt } => {
                let probed = Probed {
                    step: probe::step(attempt, at, world.jitter),
                    at,
                    told: false,
                };
                match probing {
                    Probing::Candidate => self.validated = Some(probed),
                    Probing::InUse => self.probed = Some(probed),
                }
            }
            Outcome::AfterProbe { probing, held_back } => {
                let probed = match probing {
                    Probing::Candidate => self.validated.as_mut(),
                    Probing::InUse => self.probed.as_mut(),
                };
                if let Some(probed) = probed {
                    probed.told = true;
                    if let ProbeStep::Sent(outcome) = &mut probed.step {
                        outcome.held_back = held_back;
                    }
                }
            }
            Outcome::Pruned => self.pruned = true,
            Outcome::SecretWritten(w) => self.written = Some(w),
            // Decided again from the Secret as read: a write may follow.
            Outcome::ManagedSecretRead(s) => {
                self.reread = Some(s.map(|s| Observed::of(*s)));
                self.written = None;
            }
            Outcome::Restarted { notices, wake } => self.restarted = Some((notices, wake)),
            Outcome::CatchUpSlot(slot) => self.slot = Some(slot),
            // The machine itself takes note (its end is due).
            Outcome::StatusHandled => {}
        }
    }

    /// The probe of `token`: the action that sends it, then the one that tells the rest of the
    /// operator what its answer means (`probe::after`), then its result.
    pub(super) fn probe<'a>(
        &self,
        probing: Probing,
        settings: &'a Settings,
        token: &Token,
        budget_key: &Fingerprint,
    ) -> Result<ProbeStep, Action<'a>> {
        let probed = match probing {
            Probing::Candidate => &self.validated,
            Probing::InUse => &self.probed,
        };
        let Some(probed) = probed else {
            return Err(Action::Probe {
                probing,
                settings,
                token: token.clone(),
                budget_key: budget_key.clone(),
                patience: crate::decide::fair_share::PATIENCE,
            });
        };
        if !probed.told
            && let Some(after) = probe::after(&probed.step, settings, token, budget_key, probed.at)
        {
            return Err(Action::AfterProbe {
                probing,
                after: Box::new(after),
            });
        }
        Ok(probed.step.clone())
    }
}
