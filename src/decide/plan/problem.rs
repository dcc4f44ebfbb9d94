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
    /// The OAuth login Secret lacks a key the provider's grants need (or holds it unreadable).
    LoginIncomplete(String),
    /// The login Secret's private_key cannot sign the provider's assertions.
    MalformedKey(String),
    /// The token endpoint refused the client's authentication (invalid_client).
    InvalidClient(String),
    /// The token endpoint refused the scopes asked for (invalid_scope).
    InvalidScope(String),
    /// A refresh token was refused after a call with it whose answer was never stored.
    RefreshTokenLost(String),
    /// The token endpoint refused the refresh token: revoked or expired.
    RefreshTokenRevoked(String),
    /// The only refresh token there is was already used and replaced; it is not sent again.
    RefreshTokenReused(String),
    /// The token endpoint answered success in a shape the definition cannot read (HTML, no access token).
    TokenEndpointUnusable(String),
    /// The token endpoint's answer states no expiry and the definition declares none.
    MissingExpiry(String),
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
            Self::LoginIncomplete(_) => Reason::LoginIncomplete,
            Self::MalformedKey(_) => Reason::MalformedKey,
            Self::InvalidClient(_) => Reason::InvalidClient,
            Self::InvalidScope(_) => Reason::InvalidScope,
            Self::RefreshTokenLost(_) => Reason::RefreshTokenLost,
            Self::RefreshTokenRevoked(_) => Reason::RefreshTokenRevoked,
            Self::RefreshTokenReused(_) => Reason::RefreshTokenReused,
            Self::TokenEndpointUnusable(_) => Reason::TokenEndpointUnusable,
            Self::MissingExpiry(_) => Reason::MissingExpiry,
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
            | Self::ProviderNotAccepted(m)
            | Self::LoginIncomplete(m)
            | Self::MalformedKey(m)
            | Self::InvalidClient(m)
            | Self::InvalidScope(m)
            | Self::RefreshTokenLost(m)
            | Self::RefreshTokenRevoked(m)
            | Self::RefreshTokenReused(m)
            | Self::TokenEndpointUnusable(m)
            | Self::MissingExpiry(m) => m,
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

    /// Credential-side failures of the OAuth grant (a refused login, a lost or revoked refresh
    /// token) make the resource Degraded, like a revoked token.
    pub fn degrades(&self) -> bool {
        matches!(
            self,
            Self::OtpRequired(_)
                | Self::InvalidGrant(_)
                | Self::InvalidClient(_)
                | Self::InvalidScope(_)
                | Self::RefreshTokenLost(_)
                | Self::RefreshTokenRevoked(_)
                | Self::RefreshTokenReused(_)
        )
    }
}
