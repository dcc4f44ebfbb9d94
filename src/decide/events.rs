//! Which Kubernetes events a status change deserves: one per transition a person acts on (a
//! failure, a recovery from one, an expiry warning), never one per reconcile and never one for a
//! credential that simply became Ready for the first time: at scale, every event is a write the
//! shared API server pays for.

use crate::crd::{ProbeResult, TenantApiCredentialStatus};
use crate::decide::conditions::{self, Reason, Status, Type};
use crate::decide::rotation::Validation;
use crate::decide::token::Fingerprint;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// An event to record. Its message is built from status fields, which never hold a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub severity: Severity,
    pub reason: &'static str,
    pub message: String,
}

impl Notice {
    pub fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Normal,
            reason,
            message: message.into(),
        }
    }
    pub fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            reason,
            message: message.into(),
        }
    }
}

/// The events that are not a condition transition: something tenantcred did, or refused to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occurrence {
    /// A new token was validated and replaced the old one in the Secret.
    TokenRotated,
    /// The provider refused the new token; the Secret keeps the old one.
    RotationFailed,
    /// The Secret holds a different token that needed no validation.
    SecretUpdated,
    /// The pending Secret is missing or its token unusable.
    PendingTokenUnusable,
    /// A workload was restarted for the new token.
    RolloutRestarted,
    /// A workload to restart does not exist.
    RestartTargetNotFound,
}

impl Occurrence {
    pub const ALL: [Occurrence; 6] = [
        Self::TokenRotated,
        Self::RotationFailed,
        Self::SecretUpdated,
        Self::PendingTokenUnusable,
        Self::RolloutRestarted,
        Self::RestartTargetNotFound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenRotated => "TokenRotated",
            Self::RotationFailed => "RotationFailed",
            Self::SecretUpdated => "SecretUpdated",
            Self::PendingTokenUnusable => "PendingTokenUnusable",
            Self::RolloutRestarted => "RolloutRestarted",
            Self::RestartTargetNotFound => "RestartTargetNotFound",
        }
    }

    fn severity(self) -> Severity {
        match self {
            Self::TokenRotated | Self::SecretUpdated | Self::RolloutRestarted => Severity::Normal,
            Self::RotationFailed | Self::PendingTokenUnusable | Self::RestartTargetNotFound => Severity::Warning,
        }
    }

    pub fn notice(self, message: impl Into<String>) -> Notice {
        Notice {
            severity: self.severity(),
            reason: self.as_str(),
            message: message.into(),
        }
    }
}

/// The event for a validation that reached a verdict (an undecided one says nothing yet).
pub fn validated(
    verdict: Validation,
    result: Option<ProbeResult>,
    candidate: &Fingerprint,
    current: Option<&Fingerprint>,
    secret: &str,
) -> Option<Notice> {
    let was = current.map(Fingerprint::to_string).unwrap_or_default();
    match verdict {
        Validation::Accepted => Some(Occurrence::TokenRotated.notice(format!(
            "the provider accepted token {candidate}; it replaces {was} in Secret {secret}"
        ))),
        Validation::Refused => {
            let why = result.map_or("refused", |r| r.as_str());
            Some(Occurrence::RotationFailed.notice(format!(
                "new token {candidate} was not accepted ({why}); Secret {secret} keeps token {was}"
            )))
        }
        Validation::Undecided => None,
    }
}

/// The event for a Secret write: only a token change is news (a first Secret or a label change
/// is not), and a validated rotation already has its `TokenRotated`.
pub fn secret_written(old: Option<&Fingerprint>, new: &Fingerprint, rotated: bool, secret: &str) -> Option<Notice> {
    let old = old.filter(|old| *old != new && !rotated)?;
    Some(Occurrence::SecretUpdated.notice(format!("Secret {secret} now holds token {new} (was {old})")))
}

/// Events for the condition transitions from `old` to `new`.
pub fn transitions(old: &TenantApiCredentialStatus, new: &TenantApiCredentialStatus) -> Vec<Notice> {
    let state = |s: &TenantApiCredentialStatus, t: Type| conditions::state(&s.conditions, t);
    let message = |t: Type| conditions::find(&new.conditions, t).map_or_else(String::new, |c| c.message.clone());
    let mut out = Vec::new();
    if let Some(now) = state(new, Type::Ready) {
        let before = state(old, Type::Ready);
        let was_failing = before.is_some_and(|(s, _)| s == Status::False);
        if before != Some(now) {
            match now {
                // A recovery is news; a first success is what everyone expected.
                (Status::True, _) if was_failing => {
                    out.push(Notice::normal(Reason::TokenValid.as_str(), message(Type::Ready)));
                }
                (Status::False, Some(r)) => out.push(Notice::warning(r.as_str(), message(Type::Ready))),
                _ => {}
            }
        }
    }
    let was_expiring = state(old, Type::ExpiringSoon).is_some_and(|(s, _)| s == Status::True);
    if state(new, Type::ExpiringSoon) == Some((Status::True, Some(Reason::ExpiringSoon))) && !was_expiring {
        out.push(Notice::warning(
            Reason::ExpiringSoon.as_str(),
            message(Type::ExpiringSoon),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::conditions::{Desired, Status, merge};

    fn status(ready: (Status, Reason), expiring: bool) -> TenantApiCredentialStatus {
        let now = crate::testing::t(0);
        let desired = [
            Desired::new(Type::Ready, ready.0, ready.1, "m"),
            if expiring {
                Desired::new(Type::ExpiringSoon, Status::True, Reason::ExpiringSoon, "soon")
            } else {
                Desired::new(Type::ExpiringSoon, Status::False, Reason::AsExpected, "no")
            },
        ];
        TenantApiCredentialStatus {
            conditions: merge(&[], &desired, Some(1), now),
            ..Default::default()
        }
    }

    #[test]
    fn one_event_per_transition() {
        let probing = status((Status::Unknown, Reason::Probing), false);
        let valid = status((Status::True, Reason::TokenValid), false);
        let revoked = status((Status::False, Reason::Unauthorized), false);
        assert_eq!(transitions(&probing, &valid), vec![], "a first success is no news");
        assert_eq!(transitions(&TenantApiCredentialStatus::default(), &valid), vec![]);
        assert_eq!(transitions(&valid, &valid), vec![]);
        assert_eq!(
            transitions(&valid, &revoked),
            vec![Notice::warning("Unauthorized", "m")]
        );
        assert_eq!(transitions(&revoked, &revoked), vec![]);
        assert_eq!(
            transitions(&revoked, &valid),
            vec![Notice::normal("TokenValid", "m")],
            "a recovery is"
        );
        assert_eq!(transitions(&valid, &probing), vec![]);
        let soon = status((Status::True, Reason::TokenValid), true);
        assert_eq!(
            transitions(&valid, &soon),
            vec![Notice::warning("ExpiringSoon", "soon")]
        );
        assert_eq!(transitions(&soon, &soon), vec![]);
    }

    #[test]
    fn a_token_change_is_news_once() {
        let (a, b) = (Fingerprint::of(b"a"), Fingerprint::of(b"b"));
        assert_eq!(secret_written(None, &a, false, "s"), None, "a first Secret is not news");
        assert_eq!(secret_written(Some(&a), &a, false, "s"), None);
        assert_eq!(secret_written(Some(&a), &b, true, "s"), None, "TokenRotated said it");
        let n = secret_written(Some(&a), &b, false, "s").expect("news");
        assert_eq!((n.reason, n.severity), ("SecretUpdated", Severity::Normal));
        assert!(n.message.contains(&b.to_string()) && n.message.contains(&a.to_string()));
        let refused =
            validated(Validation::Refused, Some(ProbeResult::Unauthorized), &b, Some(&a), "s").expect("a verdict");
        assert_eq!(
            (refused.reason, refused.severity),
            ("RotationFailed", Severity::Warning)
        );
        assert!(refused.message.contains("Unauthorized"));
        assert_eq!(validated(Validation::Undecided, None, &b, Some(&a), "s"), None);
    }
}
