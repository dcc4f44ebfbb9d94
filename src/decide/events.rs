//! Which Kubernetes events a status change deserves: one per transition a person acts on (a
//! failure, a recovery from one, an expiry warning), never one per reconcile and never one for a
//! credential that simply became Ready for the first time: at scale, every event is a write the
//! shared API server pays for.

use crate::conditions::{self, Reason, Type};
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
    let key = |s: &TenantApiCredentialStatus, t: Type| {
        conditions::find(&s.conditions, t).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let mut out = Vec::new();
    if let Some((status, reason, message)) = key(new, Type::Ready) {
        let before = key(old, Type::Ready);
        let changed = before.as_ref().is_none_or(|(s, r, _)| *s != status || *r != reason);
        let was_failing = before.is_some_and(|(s, _, _)| s == "False");
        if changed {
            match (status.as_str(), Reason::parse(&reason)) {
                // A recovery is news; a first success is what everyone expected.
                ("True", _) if was_failing => out.push(Notice::normal(Reason::TokenValid.as_str(), message)),
                ("False", Some(r)) => out.push(Notice::warning(r.as_str(), message)),
                _ => {}
            }
        }
    }
    if let Some((status, reason, message)) = key(new, Type::ExpiringSoon) {
        let was_true = key(old, Type::ExpiringSoon).is_some_and(|(s, _, _)| s == "True");
        if status == "True" && !was_true && reason == Reason::ExpiringSoon.as_str() {
            out.push(Notice::warning(Reason::ExpiringSoon.as_str(), message));
        }
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
