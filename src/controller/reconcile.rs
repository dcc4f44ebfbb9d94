//! One reconcile, the shell of the reconcile machine (`decide::step::Reconcile`): gather a
//! read-only world, then ask for one action at a time, perform it, hand back its result with the
//! time it arrived, until the machine finishes. Nothing here decides; it reads, writes, sends
//! and remembers.

use super::cache::credential_key;
use super::cache::packed::CachedCredential;
use super::context::Context;
use super::writes::{apply_secret, create_secret, drop_legacy_finalizer, prune, write_state, write_status};
use super::{requests, restart, secret_read};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use tracing::{debug, warn};

use crate::crd::LEGACY_FINALIZER;
use crate::decide::plan::{self, TokenSource};
use crate::decide::schedule::{self, Jitter};
use crate::decide::step::{Action, Outcome, Reconcile, Spec, World, Written};
use crate::{Error, Result};

/// One reconcile, in a span naming the credential (every log line inside carries it).
#[tracing::instrument(skip_all, fields(namespace = cached.metadata.namespace.as_deref().unwrap_or_default(), credential = cached.metadata.name.as_deref().unwrap_or_default()))]
pub async fn reconcile(cached: Arc<CachedCredential>, ctx: Arc<Context>) -> Result<Requeue> {
    // Started: the backlog need not make way for this credential any longer.
    ctx.changes.started(
        cached.metadata.namespace.as_deref(),
        cached.metadata.name.as_deref().unwrap_or_default(),
    );
    ctx.caches_listed().await;
    let _timer = ctx.metrics.time_reconcile();
    // The object was taken from the cache when this reconcile was queued; the cache may have moved
    // on while it waited behind the previous one. Work from the newest version, and from none at
    // all when it is gone (a deleted credential's Secret is garbage collection's business).
    let key = credential_key(&*cached);
    let Some(cached) = ctx.cache.credential(&key) else {
        return Ok(Requeue::await_change());
    };
    let ns = cached.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    if cached.finalizers().iter().any(|f| f == LEGACY_FINALIZER) {
        drop_legacy_finalizer(&ctx, &cached, &ns).await?;
    }
    if cached.metadata.deletion_timestamp.is_some() {
        // Owner references take the Secret with the resource; `Retain` has none to follow.
        return Ok(Requeue::await_change());
    }
    let action = run(&cached, &ctx, &ns).await?;
    ctx.metrics.reconciled();
    ctx.cache.succeeded(&cached.metadata);
    Ok(action)
}

/// API errors: capped exponential backoff with jitter, per resource.
pub fn error_policy(tac: Arc<CachedCredential>, err: &Error, ctx: Arc<Context>) -> Requeue {
    let attempts = ctx.cache.failed(&tac.metadata);
    let delay = schedule::error_backoff(attempts, Jitter::random());
    ctx.metrics.reconciled();
    ctx.metrics.reconcile_failed(err.metric_label());
    warn!(credential = %credential_key(&*tac), error = %err, attempts, retry_in = ?delay, "reconcile failed");
    Requeue::requeue(delay)
}

/// Gathers the world, then performs the reconcile machine's actions until it finishes.
async fn run(cached: &CachedCredential, ctx: &Context, ns: &str) -> Result<Requeue> {
    let name = cached.name_any();
    let expanded = cached.expand();
    let parsed;
    let status = match &expanded {
        Ok(tac) => tac.status.as_ref(),
        Err(_) => {
            parsed = cached.status().ok().flatten();
            parsed.as_ref()
        }
    };
    let held = ctx.cache.held(&cached.metadata, status);
    // The spec with its settings, or the decoder's message.
    let readable = expanded.as_ref().map(|tac| {
        let provider = ctx.providers.find(tac.spec.provider.as_str());
        (tac, plan::resolve(tac, &ctx.config.egress, &provider))
    });
    let spec = match &readable {
        Ok((credential, settings)) => Spec::Readable { credential, settings },
        Err(why) => {
            warn!(error = %why.0, "the spec does not match the schema");
            // It reads nothing; its series stay, not Ready, so an alert on readiness sees it.
            ctx.cache.reads_nothing(ns, &name);
            ctx.metrics.unreadable(ns, &name);
            Spec::Unreadable(&why.0)
        }
    };
    let resolved = readable.as_ref().ok().and_then(|(_, s)| s.as_ref().ok());
    let target = resolved.and_then(|s| ctx.cache.managed_secret(ns, &s.secret_name));
    let token_version = resolved.and_then(|s| ctx.cache.token_version(ns, &s.secret_name));
    let source_rv = resolved.and_then(|s| match &s.source {
        TokenSource::Secret { current, .. } => ctx.cache.source_version(ns, &current.name),
        TokenSource::OAuth { .. } => None,
    });
    let mut machine = Reconcile::new(World {
        meta: &cached.metadata,
        spec,
        observed: &held.observed,
        persisted: &held.persisted,
        target: target.as_deref(),
        token_version: token_version.as_deref(),
        source_resource_version: source_rv.as_deref(),
        acting_since: ctx.leading_since(),
        catch_up_per_second: ctx.config.catch_up_per_second,
        now: Timestamp::now(),
        jitter: Jitter::random(),
    });
    let tac = expanded.as_ref().ok();
    let mut logins = Vec::new();
    loop {
        let action = machine.poll();
        debug!(?action, phase = ?machine.phase(), "step");
        let outcome = match action {
            Action::ReadSource { which, name } => Outcome::SourceRead {
                which,
                secret: secret_read::read(&ctx.client, ctx.cache.source_version(ns, &name), ns, &name).await?,
            },
            Action::ReadLogin { name } => Outcome::LoginRead(secret_read::read(&ctx.client, None, ns, &name).await?),
            Action::ReadOAuthState { name, read } => Outcome::OAuthStateRead {
                read,
                secret: secret_read::read(&ctx.client, None, ns, &name).await?,
            },
            Action::HoldLogin { key, patience } => {
                let (held, guard) = ctx.logins.hold(&key, patience).await;
                // Held until this reconcile ends.
                logins.extend(guard);
                Outcome::LoginHeld(held)
            }
            Action::CallTokenEndpoint {
                settings,
                url,
                request,
                budget_key,
                patience,
            } => Outcome::TokenEndpoint(
                requests::call_token_endpoint(ctx, ns, settings, &url, &request, &budget_key, patience).await?,
            ),
            Action::WriteOAuthState { secret } => {
                let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
                Outcome::OAuthStateWritten(write_state(&secrets, &secret).await?)
            }
            Action::BackOff(b) => {
                ctx.budget
                    .back_off(ns, &b.host, &b.key, b.scope, b.until, Timestamp::now());
                Outcome::BackedOff
            }
            Action::RememberSourceVersion { secret, version } => {
                ctx.cache.token_found_in(ns, &secret, &version);
                Outcome::Remembered
            }
            Action::RecallAnswer { key } => Outcome::Recalled(ctx.budget.heard(&key)),
            Action::Probe {
                probing,
                settings,
                token,
                budget_key,
                patience,
            } => Outcome::Probed {
                probing,
                attempt: requests::probe(ctx, ns, settings, &token, &budget_key, patience).await?,
            },
            Action::AfterProbe { probing, after } => Outcome::AfterProbe {
                probing,
                held_back: requests::tell(ctx, ns, *after),
            },
            Action::PruneSecret { name, stale } => {
                let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
                prune(&secrets, &name, cached.metadata.uid.as_deref(), &stale).await?;
                Outcome::Pruned
            }
            Action::WriteSecret { secret, create } => {
                let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
                let attempt = if create {
                    create_secret(&secrets, &secret).await
                } else {
                    apply_secret(&secrets, &secret).await
                };
                let written = match attempt {
                    Ok(written) => {
                        ctx.cache.wrote_secret(ns, target.as_deref(), written);
                        Written::Stored
                    }
                    // The API server's answers the machine decides on, as facts.
                    Err(Error::Kube(kube::Error::Api(status))) if create && status.code == 409 => Written::Exists,
                    Err(Error::Kube(kube::Error::Api(status))) if status.code == 422 => {
                        Written::Refused(status.message)
                    }
                    Err(e) => return Err(e),
                };
                Outcome::SecretWritten(written)
            }
            Action::ReadManagedSecret { name } => {
                Outcome::ManagedSecretRead(secret_read::read(&ctx.client, None, ns, &name).await?)
            }
            Action::RestartWorkloads { credential, changed } => {
                let round = restart::rollout(ctx, credential, ns, changed.as_ref(), Timestamp::now()).await?;
                Outcome::Restarted {
                    notices: round.notices,
                    wake: round.wake,
                }
            }
            Action::TakeCatchUpSlot { host } => Outcome::CatchUpSlot(ctx.budget.catch_up_slot(ns, &host)),
            Action::WriteStatus { status, patch } => {
                write_status(&ctx.client, &cached.metadata, ns, patch).await?;
                ctx.cache.wrote_status(&cached.metadata, &status);
                if let Some(tac) = tac {
                    ctx.metrics.observe(tac, &status);
                }
                Outcome::StatusHandled
            }
            Action::KeepStatus { status, live } => {
                ctx.cache.keep_live(&cached.metadata, live);
                if let Some(tac) = tac {
                    ctx.metrics.observe(tac, &status);
                }
                Outcome::StatusHandled
            }
            Action::Finish { notices, requeue } => {
                ctx.notifier.record(cached, notices).await;
                return Ok(requeue.map_or_else(Requeue::await_change, Requeue::requeue));
            }
        };
        machine.handle(outcome, Timestamp::now());
    }
}
