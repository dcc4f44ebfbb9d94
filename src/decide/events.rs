//! Which Kubernetes events a status change deserves: one per transition a person acts on (a
//! failure, a recovery from one, an expiry warning), never one per reconcile and never one for a
//! credential that simply became Ready for the first time: at scale, every event is a write the
//! shared API server pays for.

use crate::conditions::{self, Reason, Status, Type};
use crate::crd::TenantApiCredentialStatus;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// An event to publish. Its message is built from status fields, which never hold a token.
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
    use crate::conditions::{Desired, Status, merge};
    use jiff::Timestamp;

    fn status(ready: (Status, Reason), expiring: bool) -> TenantApiCredentialStatus {
        let now = Timestamp::from_second(1_800_000_000).expect("valid");
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
}
