//! One reconcile: gather what the decision needs, ask `plan`, apply the answer.

use super::cached::{CachedCredential, UnreadableSpec};
use super::context::Context;
use super::keys::{credential_key, drop_entry, tac_key};
use super::sources::{self, Source, Target};
use super::synced::Synced;
use super::writes::{apply_secret, create_secret, drop_legacy_finalizer, prune, write_status};
use super::{grant, restart};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use tracing::{debug, warn};

use crate::crd::RotationPhase;
use crate::crd::{LEGACY_FINALIZER, PROBE_REQUESTED_ANNOTATION, TenantApiCredential, TenantApiCredentialStatus};
use crate::decide::events::{self};
use crate::decide::plan::{self, Decision, Input, ProbeStep, Problem, Settings, TokenFacts, TokenSource};
use crate::decide::provider::TokenFormat;
use crate::decide::rotation::{self, Cutover, Validation};
use crate::decide::schedule::{self, Jitter};
use crate::decide::secret::{self};
use crate::decide::token::{self, Lifetime, Token};
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
    let Some(cached) = ctx.credentials.get(&key) else {
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
    let action = match cached.expand() {
        Ok(tac) => apply(&tac, &ctx, &ns).await?,
        Err(unreadable) => report_unreadable(&cached, &ctx, &ns, &unreadable).await?,
    };
    ctx.metrics.reconciled();
    drop_entry(
        &mut ctx.errors.lock().unwrap_or_else(PoisonError::into_inner),
        &*tac_key(&*cached),
    );
    Ok(action)
}

/// A spec the types cannot read: said in the conditions; nothing is read, written or probed,
/// and the managed Secret keeps its last good content.
async fn report_unreadable(cached: &CachedCredential, ctx: &Context, ns: &str, why: &UnreadableSpec) -> Result<Action> {
    let name = cached.name_any();
    warn!(error = %why.0, "the spec does not match the schema");
    ctx.sources.set(ns, &name, Vec::new());
    ctx.metrics.forget(ns, &name);
    let now = Timestamp::now();
    let persisted = ctx
        .credentials
        .status_of(&cached.metadata, cached.status().ok().flatten().as_ref());
    let observed = ctx.current_status(cached, &persisted);
    let desired = plan::unreadable_spec(&observed, &why.0, cached.metadata.generation, now);
    write_status(ctx, &cached.metadata, ns, &persisted, &desired, now).await?;
    let notices = crate::decide::events::transitions(&observed, &desired);
    ctx.notifier.publish(cached, notices).await;
    Ok(Action::await_change())
}

/// API errors: capped exponential backoff with jitter, per resource.
pub fn error_policy(tac: Arc<CachedCredential>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = tac_key(&*tac);
    let attempts = {
        let mut errors = ctx.errors.lock().unwrap_or_else(PoisonError::into_inner);
        let n = errors.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = schedule::error_backoff(attempts, Jitter::random());
    ctx.metrics.reconciled();
    ctx.metrics.reconcile_failed(err.metric_label());
    warn!(credential = %key, error = %err, attempts, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply(tac: &TenantApiCredential, ctx: &Context, ns: &str) -> Result<Action> {
    let now = Timestamp::now();
    let persisted = ctx.credentials.status_of(&tac.metadata, tac.status.as_ref());
    let observed = ctx.current_status(tac, &persisted);
    let provider = ctx.providers.find(tac.spec.provider.as_str());
    let settings = plan::resolve(tac, &ctx.config.egress, &provider);

    if tac.spec.suspend {
        let mut status = observed.clone();
        status.observed_generation = tac.metadata.generation;
        status.next_probe_time = None;
        write_status(ctx, &tac.metadata, ns, &persisted, &status, now).await?;
        ctx.metrics.observe(tac, &status);
        return Ok(Action::await_change());
    }

    let requested = tac.annotations().get(PROBE_REQUESTED_ANNOTATION).map(String::as_str);
    let new_request = plan::new_probe_request(&observed, requested);
    let mut synced = match &settings {
        Err(p) => Synced {
            problem: Some(p.clone()),
            ..Synced::default()
        },
        Ok(settings) => sync(tac, settings, ctx, ns, &observed, new_request, now).await?,
    };

    let facts = synced.token.as_ref().map(|(t, l)| TokenFacts {
        fingerprint: t.fingerprint(),
        lifetime: *l,
    });
    // The token pods see changed (level-triggered: the status still names the old one until the
    // end of this reconcile, so a crash in between repeats the restart, which is idempotent); or
    // a restart gathered in a debounce window is due.
    let changed = match (observed.token_fingerprint.as_deref(), &facts) {
        (Some(old), Some(new)) if old != new.fingerprint.as_str() => Some(&new.fingerprint),
        _ => None,
    };
    if !tac.spec.rollout_restart_targets.is_empty() {
        let (notices, wake) = restart::rollout(ctx, tac, ns, changed, now).await?;
        synced.notices.extend(notices);
        if let Some(at) = wake {
            synced.wake(at);
        }
    }

    let mut probe = synced.probe.take().unwrap_or(ProbeStep::None);
    let mut honoured = None;
    if let (Ok(settings), None, Some(facts), Some((token, _)), ProbeStep::None) =
        (&settings, &synced.problem, &facts, &synced.token, &probe)
    {
        if facts.lifetime.expired(settings.not_after, now) {
            probe = ProbeStep::Expired;
        } else {
            let due = match plan::probe_due(&observed, facts, requested, ctx.leading_since()) {
                plan::Due::Now => now,
                plan::Due::At(at) => at,
                plan::Due::Overdue => {
                    let slot = ctx.budget.catch_up_slot(&settings.host());
                    let at = schedule::catch_up(
                        ctx.leading_since(),
                        slot,
                        ctx.config.catch_up_per_second,
                        Jitter::random(),
                    );
                    // Recorded as the next probe time (in memory, not written): a reconcile
                    // before then finds it scheduled and keeps its slot.
                    if at > now {
                        probe = ProbeStep::Deferred(at);
                    }
                    at
                }
            };
            if due <= now {
                honoured = requested;
                let key = synced.budget_key.as_ref().unwrap_or(&facts.fingerprint);
                // A person's probe-now request is answered by a probe of its own.
                let share = (!new_request).then(|| observed.last_probe_time.as_ref().map(|t| t.0));
                probe = probe_once(ctx, settings, token, key, share, now).await?;
            } else {
                synced.wake(due);
            }
        }
    } else if new_request && synced.rotation.is_some() {
        // A probe-now request retried the rotation: that is the probe it asked for.
        honoured = requested;
    }

    let decision = plan::decide(&Input {
        generation: tac.metadata.generation,
        observed: &observed,
        settings: settings.as_ref().ok(),
        token: facts.as_ref(),
        problem: synced.problem.as_ref(),
        probe: &probe,
        rotation: synced.rotation.as_ref(),
        probe_request: honoured,
        now,
        jitter: Jitter::random(),
    });
    synced
        .notices
        .extend(crate::decide::events::transitions(&observed, &decision.status));
    write_status(ctx, &tac.metadata, ns, &persisted, &decision.status, now).await?;
    ctx.metrics.observe(tac, &decision.status);
    ctx.notifier.publish(tac, std::mem::take(&mut synced.notices)).await;
    Ok(requeue(&decision, synced.wake_at, now))
}

/// Works out which token belongs in the managed Secret (validating a replacement first when the
/// current one works) and writes the Secret when it differs.
async fn sync(
    tac: &TenantApiCredential,
    settings: &Settings,
    ctx: &Context,
    ns: &str,
    observed: &TenantApiCredentialStatus,
    new_request: bool,
    now: Timestamp,
) -> Result<Synced> {
    let name = tac.name_any();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut out = Synced::default();
    let target = match sources::read_target(ctx, ns, &settings.secret_name, &name) {
        Target::Foreign => {
            out.problem = Some(conflict(ns, &settings.secret_name));
            return Ok(out);
        }
        Target::Ours(s) => Some(s),
        Target::Absent => None,
    };
    // The token in the Secret now: what pods use until something better is proven.
    let current = target.as_deref().and_then(secret::token_in).map(|t| {
        let lifetime = token::check(t.expose(), &TokenFormat::opaque(&settings.profile.name))
            .map(|(_, l)| l)
            .unwrap_or_default();
        (t, lifetime)
    });
    // Which version of the source the current token came from: recorded on the Secret when it
    // was written, or remembered from a later read that found the same token.
    let key = tac_key(tac);
    let current_version = ctx
        .source_versions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .map(|v| v.to_string())
        .or_else(|| target.as_deref().and_then(secret::source_version).map(str::to_owned));

    let mut candidate_version = None;
    let candidate = match &settings.source {
        TokenSource::OAuth { login } => {
            let oauth = grant::Renewal {
                tac,
                settings,
                ns,
                login,
                current: current.as_ref(),
                observed,
                now,
            };
            grant::access_token(ctx, &oauth, &mut out).await?
        }
        TokenSource::Secret { current: from, pending } => {
            let known = current
                .as_ref()
                .zip(current_version.as_deref())
                .map(|((t, _), v)| (t, v));
            let refs = sources::Refs {
                current: from,
                pending: pending.as_ref(),
            };
            match sources::candidate(ctx, refs, settings, ns, known, now, &mut out.notices).await? {
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
    if let (Some((cand, _)), Some((cur, _)), Some(v)) = (&candidate, &current, &candidate_version)
        && cand == cur
    {
        ctx.source_versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, v.as_str().into());
    }

    let candidate_fp = candidate.as_ref().map(|(t, _)| t.fingerprint());
    let chosen = match candidate {
        None => current.clone(),
        Some(cand) => {
            let current_fp = current.as_ref().map(|(t, _)| t.fingerprint());
            let cut = rotation::cutover(
                current_fp.as_ref(),
                plan::health_of(observed),
                &cand.0.fingerprint(),
                observed.rotation.as_ref(),
                new_request,
                settings.source.auto_renewed(),
            );
            match cut {
                // Same token: the candidate's lifetime is the better informed (OAuth expiry).
                Cutover::Keep if current.as_ref().is_some_and(|c| c.0 == cand.0) => Some(cand),
                Cutover::Keep => current.clone(),
                Cutover::Now => Some(cand),
                Cutover::Validate => validate(ctx, settings, cand, current.clone(), now, &mut out).await?,
            }
        }
    };

    if let Some((token, _)) = &chosen {
        let version = match (&candidate_fp, &candidate_version) {
            (Some(fp), Some(v)) if *fp == token.fingerprint() => Some(v.as_str()),
            _ => current_version.as_deref(),
        };
        let desired = secret::desired(tac, &settings.secret_name, &settings.base_url, token, version);
        let write = match &target {
            Some(observed) => {
                let stale = secret::stale_keys(&desired, observed);
                if !stale.is_empty() {
                    prune(&secrets, &settings.secret_name, tac.metadata.uid.as_deref(), &stale).await?;
                }
                secret::needs_apply(&desired, observed)
            }
            None => true,
        };
        if write {
            let attempt = match &target {
                Some(_) => apply_secret(&secrets, &desired).await.map(Some),
                None => create_secret(&secrets, &desired, &name).await,
            };
            let written = match attempt {
                Ok(w) => w,
                // Invalid (422): a fact about the input, not a failed call. Said in the status;
                // the Secret keeps its last good content; tried again when the spec or token
                // changes, and every few minutes (nothing loops).
                Err(Error::Kube(kube::Error::Api(status))) if status.code == 422 => {
                    out.problem = Some(Problem::SecretRejected(rejected(
                        ns,
                        &settings.secret_name,
                        &status.message,
                    )));
                    out.wake(schedule::add(now, REJECTED_RETRY));
                    return Ok(out);
                }
                Err(e) => return Err(e),
            };
            let Some(written) = written else {
                out.problem = Some(conflict(ns, &settings.secret_name));
                return Ok(out);
            };
            ctx.managed.wrote(ns, target.as_deref(), written);
            let old = current.as_ref().map(|(t, _)| t.fingerprint());
            let rotated = out
                .rotation
                .as_ref()
                .is_some_and(|r| r.phase == RotationPhase::Validated);
            out.notices.extend(events::secret_written(
                old.as_ref(),
                &token.fingerprint(),
                rotated,
                &settings.secret_name,
            ));
        }
    }
    out.token = chosen;
    Ok(out)
}

/// Probes a candidate while the current token keeps serving; returns the token for the Secret.
async fn validate(
    ctx: &Context,
    settings: &Settings,
    candidate: (Token, Lifetime),
    current: Option<(Token, Lifetime)>,
    now: Timestamp,
    out: &mut Synced,
) -> Result<Option<(Token, Lifetime)>> {
    let fp = candidate.0.fingerprint();
    let step = if candidate.1.expired(None, now) {
        ProbeStep::Expired
    } else {
        probe_once(ctx, settings, &candidate.0, &fp, None, now).await?
    };
    let result = step.result();
    let verdict = rotation::validation(result);
    out.rotation = Some(rotation::record(verdict, &fp, now));
    let was = current.as_ref().map(|(t, _)| t.fingerprint());
    out.notices.extend(events::validated(
        verdict,
        result,
        &fp,
        was.as_ref(),
        &settings.secret_name,
    ));
    Ok(match verdict {
        Validation::Accepted => {
            out.probe = Some(step);
            Some(candidate)
        }
        Validation::Refused => current,
        Validation::Undecided => {
            out.wake(rotation::retry_at(&step, now, Jitter::random()));
            current
        }
    })
}

fn requeue(decision: &Decision, wake_at: Option<Timestamp>, now: Timestamp) -> Action {
    match [decision.requeue_at, wake_at].into_iter().flatten().min() {
        // A second late, so the instant has surely passed when we look.
        Some(at) => Action::requeue(schedule::until(now, at) + Duration::from_secs(1)),
        None => Action::await_change(),
    }
}

/// Sends one probe within the budget, or says until when it must wait. With `share` (the
/// credential's own latest probe time), a recent answer about the same token, heard by another
/// credential's probe of the same request, answers instead (`decide::sharing`).
async fn probe_once(
    ctx: &Context,
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
    let _permit = ctx.budget.acquire(&host).await;
    let mut outcome = ctx
        .prober
        .probe(&url, token, settings.timeout, &settings.profile)
        .await?;
    if let Some(status) = outcome.http_status().filter(|s| sharing::worth_sharing(*s)) {
        // Whole seconds, as status times are: the prober's own next probe never takes its own
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
                    .back_off(&host, key, settings.profile.limit_scope, until, Timestamp::now()),
            );
    }
    debug!(%host, %key, transport = ?outcome.transport, elapsed = ?outcome.elapsed, "probed");
    Ok(ProbeStep::Sent(Box::new(outcome)))
}

/// How often a Secret the API server refused is tried again while nothing changed.
const REJECTED_RETRY: Duration = Duration::from_secs(300);

/// The API server's reason for refusing the Secret, bounded (it names fields, never values).
fn rejected(ns: &str, name: &str, message: &str) -> String {
    let mut m: String = message.chars().take(512).collect();
    if m.len() < message.len() {
        m.push('…');
    }
    format!("the API server refused Secret {ns}/{name} as invalid: {m}; the Secret keeps its last good content")
}

fn conflict(ns: &str, name: &str) -> Problem {
    Problem::SecretConflict(format!(
        "Secret {ns}/{name} exists and is not managed by this TenantApiCredential; tenantcred never overwrites it: delete it or choose another spec.target.name"
    ))
}
