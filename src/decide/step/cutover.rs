//! A replacement token: written at once, after the provider accepted it, or not at all (the
//! decision is `rotation::cutover`); validating it is a probe while the current token serves.

use super::done::Done;
use super::{Action, Probing, Synced, World};
use crate::crd::{RotationPhase, RotationStatus};
use crate::decide::events;
use crate::decide::plan::{self, ProbeStep, Settings};
use crate::decide::rotation::{self, Cutover, Validation};
use crate::decide::token::{Lifetime, Token};

/// Probes a candidate while the current token keeps serving; answers the token for the Secret.
fn validate<'a>(
    w: &World<'_>,
    settings: &'a Settings,
    d: &Done,
    candidate: (Token, Lifetime),
    current: Option<(Token, Lifetime)>,
    out: &mut Synced,
) -> Result<Option<(Token, Lifetime)>, Action<'a>> {
    let fp = candidate.0.fingerprint();
    let step = if candidate.1.expired(None, w.now) {
        ProbeStep::Expired
    } else {
        d.probe(Probing::Candidate, settings, &candidate.0, &fp)?
    };
    let result = step.result();
    let verdict = rotation::validation(result);
    out.rotation = Some(rotation::record(verdict, &fp, w.now));
    let was = current.as_ref().map(|(t, _)| t.fingerprint());
    out.notices.extend(events::validated(
        verdict,
        result,
        &fp,
        was.as_ref(),
        &settings.secret_name,
    ));
    Ok(match verdict {
        Validation::Accepted => {
            out.probe = Some(step);
            Some(candidate)
        }
        Validation::Refused => current,
        Validation::Undecided => {
            out.wake(rotation::retry_at(&step, w.now, w.jitter));
            current
        }
    })
}

/// Whether a validated rotation put the token in the Secret (its event says so already).
pub(super) fn rotated(rotation: Option<&RotationStatus>) -> bool {
    rotation.is_some_and(|r| r.phase == RotationPhase::Validated)
}

/// The cut-over decision for a candidate, as `sync` applies it.
pub(super) fn cut_over<'a>(
    w: &World<'_>,
    settings: &'a Settings,
    d: &Done,
    candidate: (Token, Lifetime),
    current: Option<(Token, Lifetime)>,
    new_request: bool,
    out: &mut Synced,
) -> Result<Option<(Token, Lifetime)>, Action<'a>> {
    let current_fp = current.as_ref().map(|(t, _)| t.fingerprint());
    let cut = rotation::cutover(
        current_fp.as_ref(),
        plan::health_of(w.observed),
        &candidate.0.fingerprint(),
        w.observed.rotation.as_ref(),
        new_request,
        settings.source.auto_renewed(),
    );
    Ok(match cut {
        // Same token: the candidate's lifetime is the better informed (OAuth expiry).
        Cutover::Keep if current.as_ref().is_some_and(|c| c.0 == candidate.0) => Some(candidate),
        Cutover::Keep => current,
        Cutover::Now => Some(candidate),
        Cutover::Validate => validate(w, settings, d, candidate, current, out)?,
    })
}
