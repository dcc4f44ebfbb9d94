//! One reconcile, the shell of the step machine (`decide::step`): gather a read-only world, then
//! ask for one action at a time, perform it, hand back its result, until the machine finishes.
//! Nothing here decides; it reads, writes, sends and remembers.

use super::cache::credential_key;
use super::cached::CachedCredential;
use super::context::Context;
use super::writes::{apply_owned_state, apply_secret, create_secret, drop_legacy_finalizer, prune, write_status};
use super::{restart, sources};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use tracing::{debug, warn};

use crate::crd::LEGACY_FINALIZER;
use crate::decide::fair_share;
use crate::decide::oauth;
use crate::decide::plan::{self, ProbeStep, Settings, TokenSource};
use crate::decide::schedule::{self, Jitter};
use crate::decide::step::{self, Call, Done, Outcome, Spec, World, Written};
use crate::decide::token::Token;
use crate::{Error, Result};

/// One reconcile, in a span naming the credential (every log line inside carries it).
#[tracing::instrument(skip_all, fields(namespace = cached.metadata.namespace.as_deref().unwrap_or_default(), credential = cached.metadata.name.as_deref().unwrap_or_default()))]
pub async fn reconcile(cached: Arc<CachedCredential>, ctx: Arc<Context>) -> Result<Action> {
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
        return Ok(Action::await_change());
    };
    let ns = cached.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    if cached.finalizers().iter().any(|f| f == LEGACY_FINALIZER) {
        drop_legacy_finalizer(&ctx, &cached, &ns).await?;
    }
    if cached.metadata.deletion_timestamp.is_some() {
        // Owner references take the Secret with the resource; `Retain` has none to follow.
        return Ok(Action::await_change());
    }
    let action = run(&cached, &ctx, &ns).await?;
    ctx.metrics.reconciled();
    ctx.cache.succeeded(&cached.metadata);
    Ok(action)
}

/// API errors: capped exponential backoff with jitter, per resource.
pub fn error_policy(tac: Arc<CachedCredential>, err: &Error, ctx: Arc<Context>) -> Action {
    let attempts = ctx.cache.failed(&tac.metadata);
    let delay = schedule::error_backoff(attempts, Jitter::random());
    ctx.metrics.reconciled();
    ctx.metrics.reconcile_failed(err.metric_label());
    warn!(credential = %credential_key(&*tac), error = %err, attempts, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Gathers the world, then performs the step machine's actions until it finishes.
async fn run(cached: &CachedCredential, ctx: &Context, ns: &str) -> Result<Action> {
    let now = Timestamp::now();
    let name = cached.name_any();
    let expanded = cached.expand();
    let persisted = match &expanded {
        Ok(tac) => ctx.cache.status_of(&tac.metadata, tac.status.as_ref()),
        Err(_) => ctx
            .cache
            .status_of(&cached.metadata, cached.status().ok().flatten().as_ref()),
    };
    let observed = ctx.cache.current_status(&cached.metadata, &persisted);
    let settings = expanded.as_ref().ok().map(|tac| {
        let provider = ctx.providers.find(tac.spec.provider.as_str());
        plan::resolve(tac, &ctx.config.egress, &provider)
    });
    let spec = match (&expanded, &settings) {
        (Ok(credential), Some(settings)) => Spec::Readable { credential, settings },
        (Err(why), _) => {
            warn!(error = %why.0, "the spec does not match the schema");
            // It reads nothing and is no longer counted as any provider's.
            ctx.cache.reads_nothing(ns, &name);
            ctx.metrics.forget(ns, &name);
            Spec::Unreadable(&why.0)
        }
        (Ok(_), None) => return Err(Error::Step("a readable spec without settings")),
    };
    let resolved = settings.as_ref().and_then(|s| s.as_ref().ok());
    let target = resolved.and_then(|s| ctx.cache.managed_secret(ns, &s.secret_name));
    let remembered = ctx.cache.remembered_source_version(&cached.metadata);
    let source_rv = resolved.and_then(|s| match &s.source {
        TokenSource::Secret { current, .. } => ctx.cache.source_version(ns, &current.name),
        TokenSource::OAuth { .. } => None,
    });
    let world = World {
        meta: &cached.metadata,
        spec,
        observed: &observed,
        persisted: &persisted,
        target: target.as_deref(),
        remembered_version: remembered.as_deref(),
        source_resource_version: source_rv.as_deref(),
        acting_since: ctx.leading_since(),
        catch_up_per_second: ctx.config.catch_up_per_second,
        spread: stable_offset(&cached.metadata),
        now,
        jitter: Jitter::random(),
    };
    let tac = expanded.as_ref().ok();
    let mut done = Done::default();
    for _ in 0..step::MAX_STEPS {
        let next = step::step(&world, &done);
        debug!(action = ?next, "step");
        let outcome = match next {
            step::Action::ReadSource { which, name } => Outcome::SourceRead {
                which,
                secret: sources::read(&ctx.client, ctx.cache.source_version(ns, &name), ns, &name)
                    .await?
                    .map(Box::new),
            },
            step::Action::ReadLogin { name } => {
                Outcome::LoginRead(sources::read(&ctx.client, None, ns, &name).await?.map(Box::new))
            }
            step::Action::ReadOAuthState { name } => {
                Outcome::OAuthStateRead(sources::read(&ctx.client, None, ns, &name).await?.map(Box::new))
            }
            step::Action::CallTokenEndpoint { url, form, budget_key } => {
                let settings = resolved.ok_or(Error::Step("a token-endpoint call without settings"))?;
                Outcome::TokenEndpoint(call_token_endpoint(ctx, ns, settings, &url, &form, &budget_key, now).await?)
            }
            step::Action::WriteOAuthState { name, state } => {
                let tac = tac.ok_or(Error::Step("an OAuth state without a spec"))?;
                let secret = oauth::state_secret(tac, &name, &state).ok_or(Error::MissingMetadata("uid"))?;
                let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
                apply_owned_state(&secrets, &secret).await?;
                Outcome::OAuthStateWritten
            }
            step::Action::BackOff { budget_key, until } => {
                let settings = resolved.ok_or(Error::Step("a back-off without settings"))?;
                ctx.budget.back_off(
                    ns,
                    &settings.host(),
                    &budget_key,
                    settings.profile.limit_scope,
                    until,
                    now,
                );
                Outcome::BackedOff
            }
            step::Action::RememberSourceVersion(version) => {
                ctx.cache.remember_source_version(&cached.metadata, &version);
                Outcome::Remembered
            }
            step::Action::Probe {
                probing,
                token,
                budget_key,
                share,
            } => {
                let settings = resolved.ok_or(Error::Step("a probe without settings"))?;
                let step = probe_once(ctx, ns, settings, &token, &budget_key, share, now).await?;
                Outcome::Probed { probing, step }
            }
            step::Action::PruneSecret { name, stale } => {
                let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
                prune(&secrets, &name, cached.metadata.uid.as_deref(), &stale).await?;
                Outcome::Pruned
            }
            step::Action::WriteSecret { secret, create } => {
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
            step::Action::ReadManagedSecret { name } => {
                Outcome::ManagedSecretRead(sources::read(&ctx.client, None, ns, &name).await?.map(Box::new))
            }
            step::Action::RestartWorkloads { changed } => {
                let tac = tac.ok_or(Error::Step("a restart without a spec"))?;
                let round = restart::rollout(ctx, tac, ns, changed.as_ref(), now).await?;
                Outcome::Restarted {
                    notices: round.notices,
                    wake: round.wake,
                }
            }
            step::Action::TakeCatchUpSlot { host } => Outcome::CatchUpSlot(ctx.budget.catch_up_slot(ns, &host)),
            step::Action::WriteStatus { status, patch } => {
                write_status(&ctx.client, &cached.metadata, ns, patch).await?;
                ctx.cache.wrote_status(&cached.metadata, &status);
                if let Some(tac) = tac {
                    ctx.metrics.observe(tac, &status);
                }
                Outcome::StatusHandled
            }
            step::Action::KeepStatus { status, live } => {
                ctx.cache.keep_live(&cached.metadata, live);
                if let Some(tac) = tac {
                    ctx.metrics.observe(tac, &status);
                }
                Outcome::StatusHandled
            }
            step::Action::Finish { notices, requeue } => {
                ctx.notifier.record(cached, notices).await;
                return Ok(requeue.map_or_else(Action::await_change, Action::requeue));
            }
        };
        done.record(&world, outcome);
    }
    Err(Error::Step("more steps than a reconcile takes"))
}

/// When a request that found no slot (`decide::fair_share`) comes back.
fn busy_until(now: Timestamp) -> Timestamp {
    let wait = fair_share::retry_after_busy(Jitter::random());
    now.checked_add(jiff::SignedDuration::try_from(wait).unwrap_or_default())
        .unwrap_or(now)
}

/// A per-credential offset that stays the same across restarts (the catch-up spread).
fn stable_offset(meta: &ObjectMeta) -> u64 {
    // A tuple hashes its fields in order: the same offsets as before this helper moved.
    super::hash64((&meta.uid, &meta.name))
}

/// POSTs a form to the token endpoint within the account's budget (token-endpoint calls spend
/// the same per-account budget as probes), or says until when it must wait.
async fn call_token_endpoint(
    ctx: &Context,
    ns: &str,
    settings: &Settings,
    url: &str,
    form: &[(&'static str, String)],
    key: &crate::decide::token::Fingerprint,
    now: Timestamp,
) -> Result<Call> {
    let host = settings.host();
    if let Err(held) = ctx.budget.admit(&host, key, &settings.profile, now) {
        debug!(%host, until = %held.until, "token-endpoint call held back");
        return Ok(Call::Held(held.until));
    }
    let Some(_permit) = ctx.budget.acquire(ns, &host, fair_share::PATIENCE).await else {
        ctx.budget.refund(key);
        debug!(%host, "no request slot within its patience: the token-endpoint call comes back later");
        return Ok(Call::Held(busy_until(now)));
    };
    let answer = ctx
        .provider_client
        .post_form(url, form, settings.timeout, &settings.profile)
        .await?;
    debug!(%host, transport = ?answer.transport, "token endpoint answered");
    Ok(Call::Answered(answer))
}

/// Sends one probe within the budget, or says until when it must wait. With `share` (the
/// credential's own latest probe time), a recent answer about the same token, heard by another
/// credential's probe of the same request, answers instead (`decide::sharing`).
async fn probe_once(
    ctx: &Context,
    ns: &str,
    settings: &Settings,
    token: &Token,
    key: &crate::decide::token::Fingerprint,
    share: Option<Option<Timestamp>>,
    now: Timestamp,
) -> Result<ProbeStep> {
    use crate::decide::sharing::{self, Heard, ProbeKey};
    let url = settings.probe_url();
    let probe_key = ProbeKey::new(&settings.profile.name, &url, &token.fingerprint());
    if let Some(last_probe) = share
        && let Some(heard) = ctx.budget.heard(&probe_key)
        && sharing::answers_for(heard, last_probe, now, settings.interval.effective)
    {
        debug!(%key, status = heard.status, "answered by another credential's probe of the same token");
        return Ok(ProbeStep::Sent(Box::new(crate::decide::verdict::ProbeOutcome {
            rules: settings.profile.probe.statuses.clone(),
            ..crate::decide::verdict::ProbeOutcome::answered(heard.status)
        })));
    }
    let host = settings.host();
    if let Err(held) = ctx.budget.admit(&host, key, &settings.profile, now) {
        debug!(%host, %key, until = %held.until, by = ?held.by, "probe held back");
        return Ok(ProbeStep::Deferred(held.until));
    }
    let Some(_permit) = ctx.budget.acquire(ns, &host, fair_share::PATIENCE).await else {
        ctx.budget.refund(key);
        debug!(%host, %key, "no request slot within its patience: the probe comes back later");
        return Ok(ProbeStep::Deferred(busy_until(now)));
    };
    let mut outcome = ctx
        .provider_client
        .probe(&url, token, settings.timeout, &settings.profile)
        .await?;
    if let Some(status) = outcome.http_status().filter(|s| sharing::worth_sharing(*s)) {
        // Whole seconds, as status times are: the credential's own next probe never takes its own
        // answer for another's.
        let at = crate::decide::conditions::truncate(now);
        ctx.budget.hear(probe_key, Heard { at, status });
    }
    // A connection the egress rules refused sent nothing: not a probe, and not a provider outage.
    if !matches!(outcome.transport, crate::decide::verdict::Transport::NotAllowed(_)) {
        ctx.providers.probed(&settings.profile.name, now);
        ctx.metrics.probed(
            &settings.profile.name,
            crate::decide::verdict::classify(&outcome),
            outcome.elapsed,
        );
    }
    if let Some(until) = outcome.back_off_until() {
        outcome.held_back =
            Some(
                ctx.budget
                    .back_off(ns, &host, key, settings.profile.limit_scope, until, Timestamp::now()),
            );
    }
    debug!(%host, %key, transport = ?outcome.transport, elapsed = ?outcome.elapsed, "probed");
    Ok(ProbeStep::Sent(Box::new(outcome)))
}
