//! kstatus-compatible conditions: the vocabulary (types and reasons) and how a desired set is merged
//! with the observed one so `lastTransitionTime` moves only when a status flips.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    Ready,
    Degraded,
    Stalled,
    Reconciling,
    ExpiringSoon,
}

impl Type {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Degraded => "Degraded",
            Self::Stalled => "Stalled",
            Self::Reconciling => "Reconciling",
            Self::ExpiringSoon => "ExpiringSoon",
        }
    }
}

/// Every reason tenantcred writes, in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    TokenValid,
    Probing,
    Rotating,
    SourceNotFound,
    InvalidToken,
    InsecureBaseUrl,
    /// The baseUrl's host (or an address it resolves to) is outside the operator's egress rules.
    BaseUrlNotAllowed,
    SecretConflict,
    /// The spec slipped past schema validation (unknown provider, unparsable duration, ...).
    InvalidSpec,
    /// The source Secret is of a type that must never leave the cluster (a ServiceAccount token).
    SourceNotAllowed,
    /// The API server refused the managed Secret as invalid (HTTP 422); its message says why.
    SecretRejected,
    /// `spec.provider` names no built-in provider and no `ApiProvider` object.
    ProviderNotFound,
    /// The named `ApiProvider`'s definition is not accepted; its status says why.
    ProviderNotAccepted,
    Unauthorized,
    Forbidden,
    Expired,
    OtpRequired,
    InvalidGrant,
    /// The OAuth login Secret lacks a key the provider's grants need (or holds it unreadable).
    LoginIncomplete,
    /// The login Secret's private_key cannot sign the provider's assertions.
    MalformedKey,
    /// The token endpoint refused the client's authentication (invalid_client).
    InvalidClient,
    /// The token endpoint refused the scopes asked for (invalid_scope).
    InvalidScope,
    /// A refresh token was refused after a call with it whose answer was never stored.
    RefreshTokenLost,
    /// The token endpoint refused the refresh token: revoked or expired.
    RefreshTokenRevoked,
    /// The only refresh token there is was already used and replaced; it is not sent again.
    RefreshTokenReused,
    /// The token endpoint answered success in a shape the definition cannot read (HTML, no access token).
    TokenEndpointUnusable,
    /// The token endpoint's answer states no expiry and the definition declares none.
    MissingExpiry,
    ExpiringSoon,
    /// The False side of Degraded and ExpiringSoon.
    AsExpected,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenValid => "TokenValid",
            Self::Probing => "Probing",
            Self::Rotating => "Rotating",
            Self::SourceNotFound => "SourceNotFound",
            Self::InvalidToken => "InvalidToken",
            Self::InsecureBaseUrl => "InsecureBaseUrl",
            Self::BaseUrlNotAllowed => "BaseUrlNotAllowed",
            Self::SecretConflict => "SecretConflict",
            Self::InvalidSpec => "InvalidSpec",
            Self::SourceNotAllowed => "SourceNotAllowed",
            Self::SecretRejected => "SecretRejected",
            Self::ProviderNotFound => "ProviderNotFound",
            Self::ProviderNotAccepted => "ProviderNotAccepted",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::Expired => "Expired",
            Self::OtpRequired => "OtpRequired",
            Self::InvalidGrant => "InvalidGrant",
            Self::LoginIncomplete => "LoginIncomplete",
            Self::MalformedKey => "MalformedKey",
            Self::InvalidClient => "InvalidClient",
            Self::InvalidScope => "InvalidScope",
            Self::RefreshTokenLost => "RefreshTokenLost",
            Self::RefreshTokenRevoked => "RefreshTokenRevoked",
            Self::RefreshTokenReused => "RefreshTokenReused",
            Self::TokenEndpointUnusable => "TokenEndpointUnusable",
            Self::MissingExpiry => "MissingExpiry",
            Self::ExpiringSoon => "ExpiringSoon",
            Self::AsExpected => "AsExpected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub const ALL: [Self; 29] = [
        Self::TokenValid,
        Self::Probing,
        Self::Rotating,
        Self::SourceNotFound,
        Self::InvalidToken,
        Self::InsecureBaseUrl,
        Self::BaseUrlNotAllowed,
        Self::SecretConflict,
        Self::InvalidSpec,
        Self::SourceNotAllowed,
        Self::SecretRejected,
        Self::ProviderNotFound,
        Self::ProviderNotAccepted,
        Self::Unauthorized,
        Self::Forbidden,
        Self::Expired,
        Self::OtpRequired,
        Self::InvalidGrant,
        Self::LoginIncomplete,
        Self::MalformedKey,
        Self::InvalidClient,
        Self::InvalidScope,
        Self::RefreshTokenLost,
        Self::RefreshTokenRevoked,
        Self::RefreshTokenReused,
        Self::TokenEndpointUnusable,
        Self::MissingExpiry,
        Self::ExpiringSoon,
        Self::AsExpected,
    ];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn parse(s: &str) -> Option<Self> {
        [Self::True, Self::False, Self::Unknown]
            .into_iter()
            .find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// One condition as the planner wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: Type,
    pub status: Status,
    pub reason: Reason,
    pub message: String,
}

impl Desired {
    pub fn new(type_: Type, status: Status, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Renders the desired conditions in a stable order, keeping `lastTransitionTime` of every
/// condition whose status did not flip. Conditions not desired (Stalled, Reconciling while False)
/// are dropped.
pub fn merge(observed: &[Condition], desired: &[Desired], generation: Option<i64>, now: Timestamp) -> Vec<Condition> {
    let now = Time(truncate(now));
    desired
        .iter()
        .map(|d| {
            let previous = observed.iter().find(|c| c.type_ == d.type_.as_str());
            let last_transition_time = match previous {
                Some(p) if p.status == d.status.as_str() => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: d.type_.as_str().into(),
                status: d.status.as_str().into(),
                reason: d.reason.as_str().into(),
                message: d.message.clone(),
                last_transition_time,
                observed_generation: generation,
            }
        })
        .collect()
}

/// Status times are stored with whole seconds; truncating first keeps "desired == observed" exact.
pub fn truncate(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

pub fn find(conditions: &[Condition], type_: Type) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

pub fn is_true(conditions: &[Condition], type_: Type) -> bool {
    state(conditions, type_).is_some_and(|(s, _)| s == Status::True)
}

/// The status and reason of one condition, read back into the enums (a reason this version
/// does not know reads as `None`).
pub fn state(conditions: &[Condition], type_: Type) -> Option<(Status, Option<Reason>)> {
    let c = find(conditions, type_)?;
    Some((Status::parse(&c.status)?, Reason::parse(&c.reason)))
}

/// How a credential stands, as `tenantcred status` shows and sorts it: worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Standing {
    Degraded,
    Stalled,
    NotReady,
    Progressing,
    Expiring,
    Healthy,
    Suspended,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Degraded => "Degraded",
            Self::Stalled => "Stalled",
            Self::NotReady => "NotReady",
            Self::Progressing => "Progressing",
            Self::Expiring => "Expiring",
            Self::Healthy => "Healthy",
            Self::Suspended => "Suspended",
        }
    }
}

/// How a credential stands: suspended by its owner; else the worst its conditions say (Degraded,
/// Stalled, then Ready's own status), a token about to expire short of healthy.
pub fn standing(suspended: bool, conditions: &[Condition]) -> Standing {
    if suspended {
        return Standing::Suspended;
    }
    if is_true(conditions, Type::Degraded) {
        return Standing::Degraded;
    }
    if is_true(conditions, Type::Stalled) {
        return Standing::Stalled;
    }
    match find(conditions, Type::Ready).map(|r| r.status.as_str()) {
        Some("True") if is_true(conditions, Type::ExpiringSoon) => Standing::Expiring,
        Some("True") => Standing::Healthy,
        Some("False") => Standing::NotReady,
        _ => Standing::Progressing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::t;

    #[test]
    fn transition_time_moves_only_on_flip() {
        let first = merge(
            &[],
            &[Desired::new(Type::Ready, Status::Unknown, Reason::Probing, "probing")],
            Some(1),
            t(0),
        );
        let same = merge(
            &first,
            &[Desired::new(Type::Ready, Status::Unknown, Reason::Probing, "other msg")],
            Some(2),
            t(10),
        );
        assert_eq!(same[0].last_transition_time, Time(t(0)));
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(
            &same,
            &[Desired::new(Type::Ready, Status::True, Reason::TokenValid, "ok")],
            Some(2),
            t(20),
        );
        assert_eq!(flipped[0].last_transition_time, Time(t(20)));
    }

    #[test]
    fn reasons_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        assert_eq!(Reason::parse("Nope"), None);
    }

    #[test]
    fn a_credential_stands_at_the_worst_its_conditions_say() {
        let with = |set: &[(Type, &str)]| -> Vec<Condition> {
            set.iter()
                .map(|(ty, status)| Condition {
                    type_: ty.as_str().into(),
                    status: (*status).into(),
                    last_transition_time: Time(t(0)),
                    message: String::new(),
                    observed_generation: None,
                    reason: "R".into(),
                })
                .collect()
        };
        let degraded = with(&[
            (Type::Ready, "False"),
            (Type::Degraded, "True"),
            (Type::Stalled, "True"),
        ]);
        assert_eq!(standing(false, &degraded), Standing::Degraded);
        assert_eq!(standing(true, &degraded), Standing::Suspended, "its owner suspended it");
        let stalled = with(&[(Type::Ready, "False"), (Type::Stalled, "True")]);
        assert_eq!(standing(false, &stalled), Standing::Stalled);
        assert_eq!(standing(false, &with(&[(Type::Ready, "False")])), Standing::NotReady);
        let expiring = with(&[(Type::Ready, "True"), (Type::ExpiringSoon, "True")]);
        assert_eq!(standing(false, &expiring), Standing::Expiring);
        assert_eq!(standing(false, &with(&[(Type::Ready, "True")])), Standing::Healthy);
        assert_eq!(standing(false, &[]), Standing::Progressing, "not judged yet");
        assert!(Standing::Degraded < Standing::Healthy, "worst first");
    }
}
