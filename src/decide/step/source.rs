//! What a source Secret the user supplied yields: its token, or the input problem that says why
//! not. The shell reads the Secret; this looks at it.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;

use crate::crd::SecretKeyRef;
use crate::decide::plan::Problem;
use crate::decide::provider::TokenFormat;
use crate::decide::schedule;
use crate::decide::token::{self, Lifetime, Token};

/// Secret types whose contents are Kubernetes' own credentials: never a token source, or anyone
/// allowed to create a credential could ship a ServiceAccount token off-cluster.
pub const FORBIDDEN_SOURCE_TYPES: [&str; 2] = ["kubernetes.io/service-account-token", "bootstrap.kubernetes.io/token"];

/// Grace for clock skew between a token's issuer and us, on its `nbf`.
const NOT_BEFORE_GRACE: Duration = Duration::from_secs(60);

/// What a source Secret yielded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The token, and `<secret>/<resourceVersion>` it was read from.
    Token(Token, Lifetime, Option<String>),
    Problem(Problem),
}

/// Which of a credential's source Secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// `spec.credentialRef`: the token in use.
    Current,
    /// `spec.pendingCredentialRef`: its announced replacement.
    Pending,
}

impl Which {
    /// The spec field that names it, for messages.
    pub fn field(self) -> &'static str {
        match self {
            Self::Current => "credentialRef",
            Self::Pending => "pendingCredentialRef",
        }
    }
}

/// Looks at a source Secret as read (`None`: not found) for the token under `r.key`.
pub fn examine(
    secret: Option<&Secret>,
    r: &SecretKeyRef,
    which: Which,
    format: &TokenFormat,
    ns: &str,
    now: Timestamp,
) -> Source {
    let field = which.field();
    let problem = |p| Source::Problem(p);
    let Some(secret) = secret else {
        return problem(Problem::SourceNotFound(format!(
            "{field}: Secret {ns}/{} not found; create it with the token under key {:?}",
            r.name, r.key
        )));
    };
    if let Some(kind) = secret.type_.as_deref().filter(|t| FORBIDDEN_SOURCE_TYPES.contains(t)) {
        return problem(Problem::SourceNotAllowed(format!(
            "{field}: Secret {ns}/{} is of type {kind}: tenantcred never sends a Kubernetes credential to a provider; put the provider's token in an Opaque Secret",
            r.name
        )));
    }
    let Some(raw) = secret.data.as_ref().and_then(|d| d.get(&r.key)) else {
        return problem(Problem::SourceNotFound(format!(
            "{field}: Secret {ns}/{} has no key {:?}",
            r.name, r.key
        )));
    };
    if raw.0.len() > token::MAX_TOKEN_BYTES {
        return problem(Problem::InvalidToken(format!(
            "{field}: key {:?} of Secret {ns}/{} holds {} bytes; tenantcred accepts tokens of at most {} bytes",
            r.key,
            r.name,
            raw.0.len(),
            token::MAX_TOKEN_BYTES
        )));
    }
    let Ok(raw) = std::str::from_utf8(&raw.0) else {
        return problem(Problem::InvalidToken(format!(
            "{field}: key {:?} of Secret {ns}/{} is not UTF-8 text",
            r.key, r.name
        )));
    };
    let version = secret
        .metadata
        .resource_version
        .as_deref()
        .map(|rv| format!("{}/{rv}", r.name));
    match token::check(raw, format) {
        Ok((token, lifetime)) => match lifetime.not_before {
            Some(nbf) if nbf > schedule::add(now, NOT_BEFORE_GRACE) => problem(Problem::InvalidToken(format!(
                "{field}: the token in Secret {ns}/{} is not valid before {nbf}",
                r.name
            ))),
            _ => Source::Token(token, lifetime, version),
        },
        Err(e) => problem(Problem::InvalidToken(format!(
            "{field}: Secret {ns}/{} key {:?}: {e}",
            r.name, r.key
        ))),
    }
}

/// `<name>/<resourceVersion>`: how a source version is written down (on the managed Secret, in
/// memory), so one string compares a read with the metadata watch's latest.
pub fn version(name: &str, resource_version: &str) -> String {
    format!("{name}/{resource_version}")
}
