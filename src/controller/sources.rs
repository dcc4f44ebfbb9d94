//! Reading what the user supplied: the source Secret, the pending one, and the Secret at the
//! target name.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;

use super::Context;
use crate::Result;
use crate::crd::{SecretKeyRef, TenantApiCredential};
use crate::events::Notice;
use crate::plan::{Problem, Settings};
use crate::schedule;
use crate::token::{self, Lifetime, Token};

/// What a source Secret yielded.
pub(super) enum Source {
    Token(Token, Lifetime),
    Problem(Problem),
}

/// The token that should be in use: the pending one when set and usable, else the source's.
pub(super) async fn candidate(
    tac: &TenantApiCredential,
    settings: &Settings,
    ns: &str,
    secrets: &Api<Secret>,
    notices: &mut Vec<Notice>,
) -> Result<Source> {
    if let Some(pending) = &tac.spec.pending_credential_ref {
        match read(pending, "pendingCredentialRef", settings, ns, secrets).await? {
            token @ Source::Token(..) => return Ok(token),
            // An unusable pending token never touches the one in use; say so and carry on.
            Source::Problem(p) => notices.push(Notice::warning("PendingTokenUnusable", p.message().to_owned())),
        }
    }
    match &tac.spec.credential_ref {
        Some(r) => read(r, "credentialRef", settings, ns, secrets).await,
        None => Ok(Source::Problem(Problem::InvalidSpec(
            "spec.credentialRef is not set".into(),
        ))),
    }
}

async fn read(r: &SecretKeyRef, field: &str, settings: &Settings, ns: &str, secrets: &Api<Secret>) -> Result<Source> {
    let Some(secret) = secrets.get_opt(&r.name).await? else {
        return Ok(Source::Problem(Problem::SourceNotFound(format!(
            "{field}: Secret {ns}/{} not found; create it with the token under key {:?}",
            r.name, r.key
        ))));
    };
    let Some(raw) = secret.data.as_ref().and_then(|d| d.get(&r.key)) else {
        return Ok(Source::Problem(Problem::SourceNotFound(format!(
            "{field}: Secret {ns}/{} has no key {:?}",
            r.name, r.key
        ))));
    };
    let Ok(raw) = std::str::from_utf8(&raw.0) else {
        return Ok(Source::Problem(Problem::InvalidToken(format!(
            "{field}: key {:?} of Secret {ns}/{} is not UTF-8 text",
            r.key, r.name
        ))));
    };
    Ok(match token::check(raw, settings.profile.token_format) {
        Ok((token, lifetime)) => match lifetime.not_before {
            // A minute of grace for clock skew between the issuer and us.
            Some(nbf) if nbf > schedule::add(Timestamp::now(), Duration::from_secs(60)) => {
                Source::Problem(Problem::InvalidToken(format!(
                    "{field}: the token in Secret {ns}/{} is not valid before {nbf}",
                    r.name
                )))
            }
            _ => Source::Token(token, lifetime),
        },
        Err(e) => Source::Problem(Problem::InvalidToken(format!(
            "{field}: Secret {ns}/{} key {:?}: {e}",
            r.name, r.key
        ))),
    })
}

/// The Secret with the target name, from the cache, or from the API when the cache has none
/// (a foreign Secret is not in the managed-label cache).
pub(super) async fn read_target(
    ctx: &Context,
    secrets: &Api<Secret>,
    ns: &str,
    name: &str,
) -> Result<Option<Arc<Secret>>> {
    if let Some(s) = ctx.managed.get(&ObjectRef::new(name).within(ns)) {
        return Ok(Some(s));
    }
    Ok(secrets.get_opt(name).await?.map(Arc::new))
}
