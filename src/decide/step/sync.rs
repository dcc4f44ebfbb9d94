//! The managed Secret's part of a reconcile: which token belongs in it (the source's, its
//! announced replacement, an OAuth access token; a replacement validated first when the current
//! one works), and the write when the Secret differs.

use super::done::Done;
use super::{Action, Source, Synced, Target, Which, World, Written};
use crate::crd::{SecretKeyRef, TenantApiCredential};
use crate::decide::events::{self, Notice};
use crate::decide::plan::{Problem, Settings, TokenSource};
use crate::decide::schedule;
use crate::decide::secret;
use crate::decide::token::{self, Token};

pub(super) fn sync<'a>(
    w: &World<'a>,
    tac: &'a TenantApiCredential,
    settings: &'a Settings,
    d: &Done,
    new_request: bool,
) -> Result<Synced, Action<'a>> {
    let ns = super::namespace(w);
    let name = w.meta.name.as_deref().unwrap_or_default();
    let mut out = Synced::default();
    // After a create found a Secret the cache had not seen, decided from the Secret as read.
    let seen = match &d.reread {
        Some(read) => read.as_ref(),
        None => w.target,
    };
    let target = match super::target(seen, name) {
        Target::Foreign => {
            out.problem = Some(Problem::secret_conflict(ns, &settings.secret_name));
            return Ok(out);
        }
        Target::Ours(s) => Some(s),
        Target::Absent => None,
    };
    // The token in the Secret now: what pods use until something better is proven.
    let current = target.and_then(|t| super::token_in(t, &settings.profile.name));
    // Which version of the source the current token came from, as the cache knows it (or, for a
    // Secret a create found, as that Secret records it).
    let current_version = w.token_version.or_else(|| target.and_then(secret::source_version));

    let mut candidate_version = None;
    let candidate = match &settings.source {
        TokenSource::OAuth { login } => super::renewal::renew(w, settings, d, login, current.as_ref(), &mut out)?,
        TokenSource::Secret { current: from, pending } => {
            let known = current.as_ref().zip(current_version).map(|((t, _), v)| (t, v));
            match candidate(w, settings, from, pending.as_ref(), known, d, &mut out.notices)? {
                Source::Token(t, l, version) => {
                    candidate_version = version;
                    Some((t, l))
                }
                Source::Problem(p) => {
                    out.problem = Some(p);
                    None
                }
            }
        }
    };
    // The same token in a newer source version (an unrelated edit of the source): remembered, so
    // the edit costs one read, once. (Where the Secret's own record already says it, nothing.)
    if let (Some((cand, _)), Some((cur, _)), Some(v)) = (&candidate, &current, &candidate_version)
        && cand == cur
        && !d.remembered
        && current_version != Some(v.as_str())
    {
        return Err(Action::RememberSourceVersion {
            secret: settings.secret_name.clone(),
            version: v.clone(),
        });
    }

    let candidate_fp = candidate.as_ref().map(|(t, _)| t.fingerprint());
    let chosen = match candidate {
        None => current.clone(),
        Some(cand) => super::cutover::cut_over(w, settings, d, cand, current.clone(), new_request, &mut out)?,
    };

    if let Some((token, _)) = &chosen {
        let version = match (&candidate_fp, &candidate_version) {
            (Some(fp), Some(v)) if *fp == token.fingerprint() => Some(v.as_str()),
            _ => current_version,
        };
        let desired = secret::desired(tac, &settings.secret_name, &settings.base_url, token, version);
        let write = match target {
            Some(observed) => {
                let stale = secret::stale_keys(&desired, observed);
                if !stale.is_empty() && !d.pruned {
                    return Err(Action::PruneSecret {
                        name: settings.secret_name.clone(),
                        stale,
                    });
                }
                secret::needs_apply(&desired, observed)
            }
            None => true,
        };
        if write {
            match d.written.as_ref() {
                None => {
                    return Err(Action::WriteSecret {
                        secret: Box::new(desired),
                        create: target.is_none(),
                    });
                }
                // Invalid (422): a fact about the input, not a failed call. Said in the status;
                // the Secret keeps its last good content; tried again when the spec or token
                // changes, and every few minutes (nothing loops).
                Some(Written::Refused(message)) => {
                    out.problem = Some(Problem::secret_rejected(ns, &settings.secret_name, message));
                    out.wake(schedule::add(w.now, super::REJECTED_RETRY));
                    return Ok(out);
                }
                Some(Written::Exists) if d.reread.is_none() => {
                    return Err(Action::ReadManagedSecret {
                        name: settings.secret_name.clone(),
                    });
                }
                // Found again after a read found none: someone creates and deletes it as we go.
                // Not a problem of the credential; looked at again shortly.
                Some(Written::Exists) => {
                    out.wake(schedule::add(w.now, super::RACE_RETRY));
                    return Ok(out);
                }
                Some(Written::Stored) => {
                    let old = current.as_ref().map(|(t, _)| t.fingerprint());
                    out.notices.extend(events::secret_written(
                        old.as_ref(),
                        &token.fingerprint(),
                        super::cutover::rotated(out.rotation.as_ref()),
                        &settings.secret_name,
                    ));
                }
            }
        }
    }
    out.token = chosen;
    Ok(out)
}

/// The token that should be in use: the pending one when set and usable, else the source's.
/// `known` is the managed Secret's token with the source version it came from: while the
/// source's version (per the metadata watch) is the same, it is the answer without a read.
fn candidate<'a>(
    w: &World<'_>,
    settings: &Settings,
    current: &SecretKeyRef,
    pending: Option<&SecretKeyRef>,
    known: Option<(&Token, &str)>,
    d: &Done,
    notices: &mut Vec<Notice>,
) -> Result<Source, Action<'a>> {
    if let Some(pending) = pending {
        let read = d.pending.as_ref().ok_or_else(|| Action::ReadSource {
            which: Which::Pending,
            name: pending.name.clone(),
        })?;
        match read {
            token @ Source::Token(..) => return Ok(token.clone()),
            // An unusable pending token never touches the one in use; say so and carry on.
            Source::Problem(p) => {
                notices.push(events::Occurrence::PendingTokenUnusable.notice(p.message().to_owned()));
            }
        }
    }
    let version = w
        .source_resource_version
        .map(|rv| super::source::version(&current.name, rv));
    if let (Some((token, read_from)), Some(version)) = (known, version)
        && read_from == version
        && let Ok((token, lifetime)) = token::check(token.expose(), &settings.profile.token_format)
    {
        return Ok(Source::Token(token, lifetime, Some(version)));
    }
    d.current.clone().ok_or_else(|| Action::ReadSource {
        which: Which::Current,
        name: current.name.clone(),
    })
}
