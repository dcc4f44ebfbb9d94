//! Reading what the user supplied: the source Secret, the pending one, and the Secret at the
//! target name.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, GetParams};

use super::Context;
use crate::Result;
use crate::crd::SecretKeyRef;
use crate::decide::events::{Action, Notice};
use crate::decide::plan::{Problem, Settings};
use crate::decide::schedule;
use crate::decide::secret::{self, Observed, Ownership};
use crate::decide::token::{self, Lifetime, Token};

/// Secret types whose contents are Kubernetes' own credentials: never a token source, or anyone
/// allowed to create a credential could ship a ServiceAccount token off-cluster.
const FORBIDDEN_SOURCE_TYPES: [&str; 2] = ["kubernetes.io/service-account-token", "bootstrap.kubernetes.io/token"];

/// Grace for clock skew between a token's issuer and us, on its `nbf`.
const NOT_BEFORE_GRACE: Duration = Duration::from_secs(60);

/// What a source Secret yielded.
pub(super) enum Source {
    /// The token, and `<secret>/<resourceVersion>` it was read from.
    Token(Token, Lifetime, Option<String>),
    Problem(Problem),
}

/// The Secrets a token source names: the one in use and its announced replacement.
#[derive(Clone, Copy)]
pub(super) struct Refs<'a> {
    pub(super) current: &'a SecretKeyRef,
    pub(super) pending: Option<&'a SecretKeyRef>,
}

/// The token that should be in use: the pending one when set and usable, else the source's.
/// `known` is the managed Secret's token with the source version it came from: while the
/// source's version (per the metadata watch) is the same, it is the answer without a read.
pub(super) async fn candidate(
    ctx: &Context,
    refs: Refs<'_>,
    settings: &Settings,
    ns: &str,
    known: Option<(&Token, &str)>,
    now: Timestamp,
    notices: &mut Vec<Notice>,
) -> Result<Source> {
    let read = |r, field| read(ctx, r, field, settings, ns, now);
    if let Some(pending) = refs.pending {
        match read(pending, "pendingCredentialRef").await? {
            token @ Source::Token(..) => return Ok(token),
            // An unusable pending token never touches the one in use; say so and carry on.
            Source::Problem(p) => notices.push(Action::PendingTokenUnusable.notice(p.message().to_owned())),
        }
    }
    let r = refs.current;
    if let (Some((token, read_from)), Some(version)) = (known, version_of(ctx, ns, &r.name))
        && read_from == version
        && let Ok((token, lifetime)) = token::check(token.expose(), &settings.profile.token_format)
    {
        return Ok(Source::Token(token, lifetime, Some(version)));
    }
    read(r, "credentialRef").await
}

/// `<name>/<resourceVersion>` of a Secret as the metadata watch last saw it.
fn version_of(ctx: &Context, ns: &str, name: &str) -> Option<String> {
    Some(format!("{name}/{}", ctx.sources.version(ns, name)?))
}

/// Reads a source Secret at no older than the resourceVersion the metadata watch last delivered
/// for it: the API server answers that from its watch cache instead of a quorum read of etcd, and
/// the answer is never older than the version that woke us. (Unknown to the index: a plain read.)
async fn read(
    ctx: &Context,
    r: &SecretKeyRef,
    field: &str,
    settings: &Settings,
    ns: &str,
    now: Timestamp,
) -> Result<Source> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let seen = GetParams {
        resource_version: ctx.sources.version(ns, &r.name),
    };
    let mut got = secrets.get_with(&r.name, &seen).await;
    // A server whose cache has not reached that version yet ("Too large resource version", 504
    // after its wait) still answers a plain read.
    if seen.resource_version.is_some() && matches!(&got, Err(kube::Error::Api(s)) if s.code == 504) {
        got = secrets.get_with(&r.name, &GetParams::default()).await;
    }
    let secret = match got {
        Ok(s) => s,
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            return Ok(Source::Problem(Problem::SourceNotFound(format!(
                "{field}: Secret {ns}/{} not found; create it with the token under key {:?}",
                r.name, r.key
            ))));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(kind) = secret.type_.as_deref().filter(|t| FORBIDDEN_SOURCE_TYPES.contains(t)) {
        return Ok(Source::Problem(Problem::SourceNotAllowed(format!(
            "{field}: Secret {ns}/{} is of type {kind}: tenantcred never sends a Kubernetes credential to a provider; put the provider's token in an Opaque Secret",
            r.name
        ))));
    }
    let Some(raw) = secret.data.as_ref().and_then(|d| d.get(&r.key)) else {
        return Ok(Source::Problem(Problem::SourceNotFound(format!(
            "{field}: Secret {ns}/{} has no key {:?}",
            r.name, r.key
        ))));
    };
    if raw.0.len() > token::MAX_TOKEN_BYTES {
        return Ok(Source::Problem(Problem::InvalidToken(format!(
            "{field}: key {:?} of Secret {ns}/{} holds {} bytes; tenantcred accepts tokens of at most {} bytes",
            r.key,
            r.name,
            raw.0.len(),
            token::MAX_TOKEN_BYTES
        ))));
    }
    let Ok(raw) = std::str::from_utf8(&raw.0) else {
        return Ok(Source::Problem(Problem::InvalidToken(format!(
            "{field}: key {:?} of Secret {ns}/{} is not UTF-8 text",
            r.key, r.name
        ))));
    };
    let version = secret
        .metadata
        .resource_version
        .as_deref()
        .map(|rv| format!("{}/{rv}", r.name));
    Ok(match token::check(raw, &settings.profile.token_format) {
        Ok((token, lifetime)) => match lifetime.not_before {
            Some(nbf) if nbf > schedule::add(now, NOT_BEFORE_GRACE) => Source::Problem(Problem::InvalidToken(format!(
                "{field}: the token in Secret {ns}/{} is not valid before {nbf}",
                r.name
            ))),
            _ => Source::Token(token, lifetime, version),
        },
        Err(e) => Source::Problem(Problem::InvalidToken(format!(
            "{field}: Secret {ns}/{} key {:?}: {e}",
            r.name, r.key
        ))),
    })
}

/// The Secret at the target name, as far as the managed cache knows.
pub(super) enum Target {
    Absent,
    Ours(Arc<Observed>),
    Foreign,
}

/// Reads the target name from the managed-Secret cache (by label). A Secret there that is not in
/// that cache (someone else's, or ours before the watch delivered it) is found by the create,
/// which the API server refuses with 409 (`writes::create_secret`).
pub(super) fn read_target(ctx: &Context, ns: &str, name: &str, credential: &str) -> Target {
    match ctx.managed.get(ns, name) {
        None => Target::Absent,
        Some(s) => match secret::ownership(Some(&s), credential) {
            Ownership::Ours => Target::Ours(s),
            _ => Target::Foreign,
        },
    }
}
