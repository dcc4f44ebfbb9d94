//! Input problems: what cannot be used as it is, each one condition reason and its message.

use crate::decide::conditions::Reason;

/// Input that cannot be used as it is. Each maps to one condition reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    InvalidSpec(String),
    InsecureBaseUrl(String),
    /// The baseUrl is outside the operator's egress rules (`egress`); no request is sent.
    BaseUrlNotAllowed(String),
    SourceNotFound(String),
    InvalidToken(String),
    SecretConflict(String),
    /// Virtuous asked for a two-factor code (202); waits for an `otp` key in the login Secret.
    OtpRequired(String),
    /// The OAuth grant was refused and no other grant is possible.
    InvalidGrant(String),
    /// A ServiceAccount token (or another type that must stay in the cluster) as a source.
    SourceNotAllowed(String),
    /// The API server refused to store the managed Secret (422), with its message.
    SecretRejected(String),
    /// No built-in provider and no `ApiProvider` object has the name `spec.provider` gives.
    ProviderNotFound(String),
    /// The named `ApiProvider` exists but its definition is not accepted.
    ProviderNotAccepted(String),
}

impl Problem {
    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidSpec(_) => Reason::InvalidSpec,
            Self::InsecureBaseUrl(_) => Reason::InsecureBaseUrl,
            Self::BaseUrlNotAllowed(_) => Reason::BaseUrlNotAllowed,
            Self::SourceNotFound(_) => Reason::SourceNotFound,
            Self::InvalidToken(_) => Reason::InvalidToken,
            Self::SecretConflict(_) => Reason::SecretConflict,
            Self::OtpRequired(_) => Reason::OtpRequired,
            Self::InvalidGrant(_) => Reason::InvalidGrant,
            Self::SourceNotAllowed(_) => Reason::SourceNotAllowed,
            Self::SecretRejected(_) => Reason::SecretRejected,
            Self::ProviderNotFound(_) => Reason::ProviderNotFound,
            Self::ProviderNotAccepted(_) => Reason::ProviderNotAccepted,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::InvalidSpec(m)
            | Self::InsecureBaseUrl(m)
            | Self::BaseUrlNotAllowed(m)
            | Self::SourceNotFound(m)
            | Self::InvalidToken(m)
            | Self::SecretConflict(m)
            | Self::OtpRequired(m)
            | Self::InvalidGrant(m)
            | Self::SourceNotAllowed(m)
            | Self::SecretRejected(m)
            | Self::ProviderNotFound(m)
            | Self::ProviderNotAccepted(m) => m,
        }
    }

    /// The Secret at the target name is someone else's.
    pub fn secret_conflict(ns: &str, name: &str) -> Self {
        Self::SecretConflict(format!(
            "Secret {ns}/{name} exists and is not managed by this TenantApiCredential; tenantcred never overwrites it: delete it or choose another spec.target.name"
        ))
    }

    /// The API server refused the managed Secret as invalid: its reason, bounded (it names
    /// fields, never values).
    pub fn secret_rejected(ns: &str, name: &str, message: &str) -> Self {
        let mut m: String = message.chars().take(512).collect();
        if m.len() < message.len() {
            m.push('…');
        }
        Self::SecretRejected(format!(
            "the API server refused Secret {ns}/{name} as invalid: {m}; the Secret keeps its last good content"
        ))
    }

    /// A missing source or provider recovers by itself when it appears; the rest need a person.
    pub fn stalls(&self) -> bool {
        !matches!(self, Self::SourceNotFound(_) | Self::ProviderNotFound(_))
    }

    /// Credential-side failures of the OAuth grant make the resource Degraded, like a revoked token.
    pub fn degrades(&self) -> bool {
        matches!(self, Self::OtpRequired(_) | Self::InvalidGrant(_))
    }
}
