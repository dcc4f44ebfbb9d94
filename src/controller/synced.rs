//! What one reconcile learnt while it brought the managed Secret up to date (the source, a
//! rotation, an OAuth renewal): the token now in use, a problem, a probe already made, when to
//! look again, what to tell. Filled by `reconcile` and `grant`, read by the decision.

use jiff::Timestamp;

use crate::crd::RotationStatus;
use crate::decide::events::Notice;
use crate::decide::plan::{ProbeStep, Problem};
use crate::decide::token::{Lifetime, Token};

/// The token to use and what became of it during this reconcile.
#[derive(Default)]
pub(super) struct Synced {
    pub(super) problem: Option<Problem>,
    /// The token in the managed Secret after this reconcile.
    pub(super) token: Option<(Token, Lifetime)>,
    /// A probe of `token` already made (validating a rotation counts as its first probe).
    pub(super) probe: Option<ProbeStep>,
    pub(super) rotation: Option<RotationStatus>,
    pub(super) wake_at: Option<Timestamp>,
    pub(super) notices: Vec<Notice>,
    /// Whose hourly budget probes spend when it is not the token's own (an OAuth account, whose
    /// access token changes at every refresh).
    pub(super) budget_key: Option<crate::decide::token::Fingerprint>,
}

impl Synced {
    pub(super) fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}
