//! The imperative shell: gathers what a decision needs from the Kubernetes API, asks `plan` what
//! to do, and applies the answer (managed Secret, probe, status, events) — writing only what changed.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::budget::Budget;
use crate::crd::RotationStatus;
use crate::crd::{LEGACY_FINALIZER, PROBE_REQUESTED_ANNOTATION, TenantApiCredential, TenantApiCredentialStatus};
use crate::events::Notice;
use crate::metrics::Metrics;
use crate::plan::{self, Decision, Input, ProbeStep, Problem, Settings, TokenFacts};
use crate::probe::Prober;
use crate::provider::TokenFormat;
use crate::publish::{self, Volatile};
use crate::rollouts::Rollouts;
use crate::rotation::{self, Cutover, Validation};
use crate::schedule::{self, Jitter};
use crate::secret::{self, FIELD_MANAGER, Ownership};
use crate::server::Health;
use crate::token::{self, Lifetime, Token};
use crate::{Error, Result};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared as SharedFuture};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

pub const DEFAULT_RESTART_DEBOUNCE: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_ROLLOUTS_PER_MINUTE: u32 = 30;

/// How the operator runs; set from `tenantcred run` flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    pub allow_insecure_http: bool,
    pub max_concurrent_probes: usize,
    pub max_probes_per_host: usize,
    /// Reconciles in flight at once (each holds at most one probe).
    pub concurrency: u16,
    /// Name reported on events (`reportingController`).
    pub reporter: String,
    /// This replica, reported on events (`reportingInstance`).
    pub instance: String,
    /// A workload is restarted at most once per this window; changes within it are gathered.
    pub restart_debounce: Duration,
    /// Rollouts started per minute, across all workloads.
    pub max_rollouts_per_minute: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            allow_insecure_http: false,
            max_concurrent_probes: 16,
            max_probes_per_host: 8,
            concurrency: 64,
            reporter: "tenantcred".into(),
            instance: "tenantcred".into(),
            restart_debounce: DEFAULT_RESTART_DEBOUNCE,
            max_rollouts_per_minute: DEFAULT_MAX_ROLLOUTS_PER_MINUTE,
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    client: Client,
    notifier: notify::Notifier,
    prober: Prober,
    budget: Arc<Budget>,
    metrics: Arc<Metrics>,
    rollouts: Arc<Mutex<Rollouts>>,
    config: Config,
    started_at: Timestamp,
    /// Managed Secrets, cached by label selector (never every Secret of the cluster).
    managed: Store<Secret>,
    /// The credentials, as cached by the controller's watch.
    credentials: Store<TenantApiCredential>,
    sources: Arc<SourceIndex>,
    /// Metadata of every Secret in scope (names, labels, versions; no data, no annotations): the
    /// target-name check and the source-version check are answered from it.
    secret_meta: Store<PartialObjectMeta<Secret>>,
    /// Per credential, `<source>/<resourceVersion>` of the latest read that found the token the
    /// managed Secret already holds (so an unrelated edit of the source costs one read, once).
    source_versions: Arc<Mutex<HashMap<ObjectRef<TenantApiCredential>, String>>>,
    errors: Arc<Mutex<HashMap<ObjectRef<TenantApiCredential>, u32>>>,
    /// The status last written per credential, with the resourceVersion it was written over: until
    /// the watch delivers our write, the cache still holds that version, and reconciling from its
    /// stale status would probe and write again.
    written: Arc<WrittenStatuses>,
    /// Managed Secrets as we last wrote them, until the cache shows a version after that write
    /// (the same idea as `written` for statuses: a reconcile that outruns the watch must not
    /// create or write again).
    secrets_written: Mutex<HashMap<ObjectRef<Secret>, WrittenSecret>>,
    /// Per credential, the per-probe status fields of the newest decision that was not worth a
    /// write (`publish`): the schedule continues from them.
    live: Arc<Mutex<HashMap<ObjectRef<TenantApiCredential>, Volatile>>>,
}

struct WrittenSecret {
    /// The version the cache held when we wrote (None: there was none).
    over: Option<String>,
    secret: Arc<Secret>,
}

type WrittenStatuses = Mutex<HashMap<ObjectRef<TenantApiCredential>, Written>>;

struct Written {
    over: Option<String>,
    status: TenantApiCredentialStatus,
}

/// Which credentials read which source Secret, so a Secret event wakes exactly those.
#[derive(Default)]
struct SourceIndex {
    inner: Mutex<SourceMaps>,
}

#[derive(Default)]
struct SourceMaps {
    by_secret: HashMap<(String, String), HashSet<String>>,
    by_credential: HashMap<(String, String), Vec<String>>,
}

impl SourceIndex {
    fn set(&self, ns: &str, credential: &str, secrets: Vec<String>) {
        let mut m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (ns.to_owned(), credential.to_owned());
        if m.by_credential.get(&key) == Some(&secrets) {
            return;
        }
        for old in m.by_credential.remove(&key).unwrap_or_default() {
            if let Some(set) = m.by_secret.get_mut(&(ns.to_owned(), old.clone())) {
                set.remove(credential);
                if set.is_empty() {
                    m.by_secret.remove(&(ns.to_owned(), old));
                }
            }
        }
        for s in &secrets {
            m.by_secret
                .entry((ns.to_owned(), s.clone()))
                .or_default()
                .insert(credential.to_owned());
        }
        if !secrets.is_empty() {
            m.by_credential.insert(key, secrets);
        }
    }

    fn readers(&self, ns: &str, secret: &str) -> Vec<String> {
        let m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        m.by_secret
            .get(&(ns.to_owned(), secret.to_owned()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn source_names(tac: &TenantApiCredential) -> Vec<String> {
    let spec = &tac.spec;
    let mut names: Vec<String> = [spec.credential_ref.as_ref(), spec.pending_credential_ref.as_ref()]
        .into_iter()
        .flatten()
        .map(|r| r.name.clone())
        .chain(spec.oauth.as_ref().map(|o| o.secret_ref.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Where the lease of leader election lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a lease holds without renewal: the longest a dead leader blocks the standby.
    pub duration_seconds: u64,
    /// Renewal happens this long before expiry.
    pub grace_seconds: u64,
}

/// What every namespace's controller shares: one probe budget, one HTTP client, one set of
/// metrics, one rollout gate.
#[derive(Clone)]
pub struct Shared {
    pub prober: Prober,
    pub budget: Arc<Budget>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub rollouts: Arc<Mutex<Rollouts>>,
}

impl Shared {
    pub fn new(config: &Config, metrics: Arc<Metrics>, health: Arc<Health>) -> anyhow::Result<Self> {
        Ok(Self {
            prober: Prober::new()?,
            budget: Arc::new(Budget::new(config.max_concurrent_probes, config.max_probes_per_host)),
            metrics,
            health,
            rollouts: Arc::new(Mutex::new(Rollouts::new(
                config.restart_debounce,
                config.max_rollouts_per_minute,
            ))),
        })
    }
}

/// Runs until `stop` turns true (SIGTERM/SIGINT): with leader election, only while holding the
/// lease; losing it ends the run with an error so the process restarts and competes again.
pub async fn run(
    client: Client,
    config: Config,
    shared: Shared,
    lease: Option<LeaseConfig>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stopped = {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let Some(lease) = lease else {
        shared.health.leader();
        run_controllers(client, config, shared, stopped.boxed().shared()).await;
        return Ok(());
    };
    let manager = LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_seconds)
        .with_grace(lease.grace_seconds)
        .with_field_manager(FIELD_MANAGER)
        .build()
        .await?;
    let (mut leader, handle) = manager.watch().await;
    shared.health.standby();
    info!(lease = %lease.name, identity = %lease.identity, "waiting for the leader lease");
    let mut stop_wait = stop.clone();
    let acquired = tokio::select! {
        _ = stop_wait.wait_for(|s| *s) => None,
        acquired = leader.wait_for(|l| *l) => Some(acquired.is_ok()),
    };
    match acquired {
        None => {
            drop(leader);
            let _ = handle.await;
            return Ok(());
        }
        Some(false) => anyhow::bail!("the lease manager stopped before we became leader"),
        Some(true) => {}
    }
    info!(identity = %lease.identity, "acquired the leader lease");
    shared.health.leader();
    let lost = {
        let mut leader = leader.clone();
        async move {
            let _ = leader.wait_for(|l| !*l).await;
        }
    };
    let shutdown = futures::future::select(stopped.boxed(), lost.boxed())
        .map(|_| ())
        .boxed()
        .shared();
    run_controllers(client, config, shared, shutdown).await;
    let lost = !*leader.borrow();
    // Dropping the last receiver makes the lease manager release the lease for the standby.
    drop(leader);
    let _ = handle.await;
    if lost && !*stop.borrow() {
        anyhow::bail!("lost the leader lease; exiting so a fresh start competes for it");
    }
    Ok(())
}

async fn run_controllers(
    client: Client,
    config: Config,
    shared: Shared,
    shutdown: SharedFuture<BoxFuture<'static, ()>>,
) {
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    info!(namespaces = ?config.namespaces, "starting tenantcred controller");
    shared.health.expect_scopes(scopes.len());
    let runs = scopes.into_iter().map(|ns| {
        let (ctx, controller) = build_context(client.clone(), config.clone(), shared.clone(), ns.as_deref());
        controller
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx)
            .for_each(|res| async move {
                match res {
                    Ok((obj, _)) => debug!(credential = %obj, "reconciled"),
                    Err(e) => debug!(error = %e, "reconcile failed"),
                }
            })
    });
    futures::future::join_all(runs).await;
    info!("controllers stopped");
}

fn api_for<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Builds the context and the controller with its three watches (credentials, managed Secrets,
/// source Secret metadata). Exposed for tests, which drive it against the API server double.
pub fn controller(
    client: Client,
    config: Config,
    shared: Shared,
    ns: Option<&str>,
) -> (Arc<Context>, Controller<TenantApiCredential>) {
    build_context(client, config, shared, ns)
}

fn build_context(
    client: Client,
    config: Config,
    shared: Shared,
    ns: Option<&str>,
) -> (Arc<Context>, Controller<TenantApiCredential>) {
    let tacs: Api<TenantApiCredential> = api_for(&client, ns);
    let secrets: Api<Secret> = api_for(&client, ns);

    // Ready once both caches hold a full list. (Counted from the streams: a store's
    // `wait_until_ready` wakes only one waiter, and the controller is already one.)
    let sync = Arc::new(ScopeSync {
        pending: AtomicUsize::new(2),
        health: shared.health.clone(),
    });
    let written: Arc<WrittenStatuses> = Arc::default();
    let sources: Arc<SourceIndex> = Arc::default();
    let source_versions: Arc<Mutex<HashMap<ObjectRef<TenantApiCredential>, String>>> = Arc::default();
    let live: Arc<Mutex<HashMap<ObjectRef<TenantApiCredential>, Volatile>>> = Arc::default();
    let errors: Arc<Mutex<HashMap<ObjectRef<TenantApiCredential>, u32>>> = Arc::default();
    let caught_up = written.clone();
    let forget = Forget {
        written: written.clone(),
        live: live.clone(),
        source_versions: source_versions.clone(),
        sources: sources.clone(),
        errors: errors.clone(),
        metrics: shared.metrics.clone(),
    };
    let (tac_reader, tac_writer) = reflector::store();
    let tac_stream = watcher(tacs, watcher::Config::default().any_semantic())
        .inspect_ok(sync.clone().on_first_list())
        // Field ownership is never read from the cache: dropping it saves memory.
        .modify(|tac| tac.managed_fields_mut().clear())
        .default_backoff()
        .reflect(tac_writer)
        .inspect_ok(move |event| {
            // Once the cache holds a version after our write (reflected above), it is current again.
            if let watcher::Event::Delete(tac) = event {
                forget.credential(tac);
            }
            if let watcher::Event::Apply(tac) | watcher::Event::InitApply(tac) = event {
                let mut written = caught_up.lock().unwrap_or_else(PoisonError::into_inner);
                let key = ObjectRef::from_obj(tac);
                if written
                    .get(&key)
                    .is_some_and(|w| w.over != tac.metadata.resource_version)
                {
                    written.remove(&key);
                }
            }
        })
        .applied_objects()
        // Our own status writes must not wake us: only spec, annotations (probe-now), deletion
        // and the legacy finalizer (removed on upgrade) matter.
        .predicate_filter(
            predicates::generation
                .combine(predicates::annotations)
                .combine(predicates::finalizers),
            Default::default(),
        );

    let (managed_reader, managed_writer) = reflector::store();
    let managed_stream = watcher(secrets, watcher::Config::default().labels(secret::MANAGED_SELECTOR))
        .inspect_ok(sync.on_first_list())
        // Only our own field ownership matters (`secret::needs_apply`, `secret::stale_keys`).
        .modify(|s| {
            s.managed_fields_mut()
                .retain(|e| e.manager.as_deref() == Some(FIELD_MANAGER))
        })
        .default_backoff()
        .reflect(managed_writer)
        .touched_objects();

    let source_meta: Api<PartialObjectMeta<Secret>> = api_for(&client, ns);
    let (meta_reader, meta_writer) = reflector::store();
    let source_stream = watcher(source_meta, watcher::Config::default())
        // Names, labels and versions are all that is read: annotations (kubectl's
        // last-applied copy can be large) and field ownership are dropped.
        .modify(|s| {
            s.managed_fields_mut().clear();
            s.annotations_mut().clear();
        })
        .default_backoff()
        .reflect(meta_writer)
        .touched_objects()
        .predicate_filter(predicates::resource_version, Default::default());

    let notifier = notify::Notifier::new(client.clone(), config.reporter.clone(), config.instance.clone());
    let ctx = Arc::new(Context {
        client,
        notifier,
        prober: shared.prober,
        budget: shared.budget,
        metrics: shared.metrics,
        rollouts: shared.rollouts,
        config: config.clone(),
        started_at: Timestamp::now(),
        managed: managed_reader,
        credentials: tac_reader.clone(),
        sources,
        secret_meta: meta_reader,
        source_versions: source_versions.clone(),
        errors,
        secrets_written: Mutex::default(),
        live: live.clone(),
        written,
    });

    let for_sources = ctx.clone();
    let controller = Controller::for_stream(tac_stream, tac_reader)
        .with_config(ControllerConfig::default().concurrency(config.concurrency))
        .watches_stream(managed_stream, |s: Secret| {
            let ns = s.namespace()?;
            let name = s.labels().get(secret::CREDENTIAL_LABEL)?.clone();
            Some(ObjectRef::new(&name).within(&ns))
        })
        .watches_stream(source_stream, move |s: PartialObjectMeta<Secret>| {
            let ns = s.namespace().unwrap_or_default();
            if s.labels().get(secret::MANAGED_BY_LABEL).map(String::as_str) == Some(secret::MANAGED_BY_VALUE) {
                return Vec::new();
            }
            for_sources
                .sources
                .readers(&ns, &s.name_any())
                .into_iter()
                .map(|name| ObjectRef::new(&name).within(&ns))
                .collect()
        });
    (ctx, controller)
}

/// What the operator remembers per credential, dropped when the watch reports it deleted: no
/// finalizer is needed for in-memory state.
struct Forget {
    written: Arc<WrittenStatuses>,
    live: Arc<Mutex<HashMap<ObjectRef<TenantApiCredential>, Volatile>>>,
    source_versions: Arc<Mutex<HashMap<ObjectRef<TenantApiCredential>, String>>>,
    sources: Arc<SourceIndex>,
    errors: Arc<Mutex<HashMap<ObjectRef<TenantApiCredential>, u32>>>,
    metrics: Arc<Metrics>,
}

impl Forget {
    fn credential(&self, tac: &TenantApiCredential) {
        let key = ObjectRef::from_obj(tac);
        let (ns, name) = (tac.namespace().unwrap_or_default(), tac.name_any());
        self.written.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
        self.live.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
        self.source_versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        self.errors.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
        self.sources.set(&ns, &name, Vec::new());
        self.metrics.forget(&ns, &name);
    }
}

/// Counts the caches of one scope that have completed their first list.
struct ScopeSync {
    pending: AtomicUsize,
    health: Arc<Health>,
}

impl ScopeSync {
    fn on_first_list<K>(self: Arc<Self>) -> impl FnMut(&watcher::Event<K>) {
        let mut seen = false;
        move |event| {
            if matches!(event, watcher::Event::InitDone) && !seen {
                seen = true;
                if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.health.scope_synced();
                }
            }
        }
    }
}

impl Context {
    /// The credential's status as of our last write, even when the cache has not caught up.
    fn observed_status(&self, tac: &TenantApiCredential) -> TenantApiCredentialStatus {
        let key = ObjectRef::from_obj(tac);
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        match written.get(&key) {
            Some(w) if w.over == tac.metadata.resource_version => w.status.clone(),
            _ => {
                written.remove(&key);
                tac.status.clone().unwrap_or_default()
            }
        }
    }

    /// The managed Secret at `ns/name` as the cache has it, or as we last wrote it when the
    /// cache has not caught up with that write yet.
    fn managed_secret(&self, ns: &str, name: &str) -> Option<Arc<Secret>> {
        let key = ObjectRef::new(name).within(ns);
        let cached = self.managed.get(&key);
        let mut written = self.secrets_written.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(w) = written.get(&key) else {
            return cached;
        };
        let cached_version = cached.as_ref().and_then(|s| s.metadata.resource_version.clone());
        if cached_version == w.over {
            return Some(w.secret.clone());
        }
        written.remove(&key);
        cached
    }

    fn remember_secret(&self, ns: &str, before: Option<&Secret>, secret: Secret) {
        let Some(name) = secret.metadata.name.clone() else {
            return;
        };
        let w = WrittenSecret {
            over: before.and_then(|s| s.metadata.resource_version.clone()),
            secret: Arc::new(secret),
        };
        self.secrets_written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ObjectRef::new(&name).within(ns), w);
    }

    /// The status as last decided: as persisted, with the per-probe fields of decisions that
    /// were not worth a write.
    fn current_status(
        &self,
        tac: &TenantApiCredential,
        persisted: &TenantApiCredentialStatus,
    ) -> TenantApiCredentialStatus {
        let mut current = persisted.clone();
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = live.get(&ObjectRef::from_obj(tac)) {
            v.clone().overlay(&mut current);
        }
        current
    }

    fn remember_status(&self, tac: &TenantApiCredential, status: &TenantApiCredentialStatus) {
        let w = Written {
            over: tac.metadata.resource_version.clone(),
            status: status.clone(),
        };
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ObjectRef::from_obj(tac), w);
    }
}

pub async fn reconcile(tac: Arc<TenantApiCredential>, ctx: Arc<Context>) -> Result<Action> {
    // The object was taken from the cache when this reconcile was queued; the cache may have moved
    // on while it waited behind the previous one. Work from the newest version, and from none at
    // all when it is gone (a deleted credential's Secret is garbage collection's business).
    let key = ObjectRef::from_obj(&*tac);
    let Some(tac) = ctx.credentials.get(&key) else {
        return Ok(Action::await_change());
    };
    let ns = tac.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    if tac.finalizers().iter().any(|f| f == LEGACY_FINALIZER) {
        drop_legacy_finalizer(&ctx, &tac, &ns).await?;
    }
    if tac.metadata.deletion_timestamp.is_some() {
        // Owner references take the Secret with the resource; `Retain` has none to follow.
        return Ok(Action::await_change());
    }
    let action = apply(&tac, &ctx, &ns).await?;
    ctx.metrics.reconciled();
    ctx.errors.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
    Ok(action)
}

/// Removes the finalizer earlier releases added (once per object, on upgrade), guarded by a JSON
/// patch test so a concurrent change of the list is never overwritten.
async fn drop_legacy_finalizer(ctx: &Context, tac: &TenantApiCredential, ns: &str) -> Result<()> {
    let current = tac.finalizers().to_vec();
    let kept: Vec<&String> = current.iter().filter(|f| *f != LEGACY_FINALIZER).collect();
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/metadata/finalizers", "value": current},
        {"op": "replace", "path": "/metadata/finalizers", "value": kept},
    ]))?;
    let api: Api<TenantApiCredential> = Api::namespaced(ctx.client.clone(), ns);
    api.patch(&tac.name_any(), &PatchParams::default(), &Patch::Json::<()>(patch))
        .await?;
    info!(credential = %tac.name_any(), namespace = ns, "removed the finalizer of an earlier release");
    Ok(())
}

/// API errors: capped exponential backoff with jitter, per resource.
pub fn error_policy(tac: Arc<TenantApiCredential>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(&*tac);
    let attempts = {
        let mut errors = ctx.errors.lock().unwrap_or_else(PoisonError::into_inner);
        let n = errors.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let base = Duration::from_secs(5).saturating_mul(2u32.saturating_pow(attempts.min(6) - 1));
    let delay = Jitter::random().scale(base.min(Duration::from_secs(300)), 0.5, 1.0);
    ctx.metrics.reconciled();
    ctx.metrics.reconcile_failed(err.metric_label());
    warn!(credential = %key, error = %err, attempts, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

mod grant;
mod notify;
mod restart;
mod sources;

use sources::{Source, Target};

/// The token to use and what became of it during this reconcile.
#[derive(Default)]
struct Synced {
    problem: Option<Problem>,
    /// The token in the managed Secret after this reconcile.
    token: Option<(Token, Lifetime)>,
    /// A probe of `token` already made (validating a rotation counts as its first probe).
    probe: Option<ProbeStep>,
    rotation: Option<RotationStatus>,
    wake_at: Option<Timestamp>,
    notices: Vec<Notice>,
    /// Whose hourly budget probes spend when it is not the token's own (an OAuth account, whose
    /// access token changes at every refresh).
    budget_key: Option<crate::token::Fingerprint>,
}

impl Synced {
    fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

async fn apply(tac: &TenantApiCredential, ctx: &Context, ns: &str) -> Result<Action> {
    let name = tac.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let now = Timestamp::now();
    let persisted = ctx.observed_status(tac);
    let observed = ctx.current_status(tac, &persisted);
    ctx.sources.set(ns, &name, source_names(tac));

    if tac.spec.suspend {
        let mut status = observed.clone();
        status.observed_generation = tac.metadata.generation;
        status.next_probe_time = None;
        write_status(ctx, tac, ns, &persisted, &status).await?;
        ctx.metrics.observe(tac, &status);
        return Ok(Action::await_change());
    }

    let requested = tac.annotations().get(PROBE_REQUESTED_ANNOTATION).map(String::as_str);
    let new_request = requested.is_some() && requested != observed.last_handled_probe_request.as_deref();
    let settings = plan::resolve(tac, ctx.config.allow_insecure_http);
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
        let expired = facts
            .lifetime
            .expires_at
            .into_iter()
            .chain(settings.not_after)
            .any(|e| e <= now);
        if expired {
            probe = ProbeStep::Expired;
        } else if let Some(due) = plan::probe_due(
            &observed,
            facts,
            settings,
            requested,
            now,
            ctx.started_at,
            stable_offset(tac),
        ) {
            if due <= now {
                honoured = requested;
                let key = synced.budget_key.as_ref().unwrap_or(&facts.fingerprint);
                probe = probe_once(ctx, settings, token, key, now).await;
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
        .extend(crate::events::transitions(&observed, &decision.status));
    write_status(ctx, tac, ns, &persisted, &decision.status).await?;
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
    let target = match sources::read_target(ctx, &secrets, ns, &settings.secret_name, &name).await? {
        Target::Foreign => {
            out.problem = Some(conflict(ns, &settings.secret_name));
            return Ok(out);
        }
        Target::Ours(s) => Some(s),
        Target::Absent => None,
    };
    // The token in the Secret now: what pods use until something better is proven.
    let current = target.as_deref().and_then(secret::token_in).map(|t| {
        let lifetime = token::check(t.expose(), TokenFormat::Opaque)
            .map(|(_, l)| l)
            .unwrap_or_default();
        (t, lifetime)
    });
    // Which version of the source the current token came from: recorded on the Secret when it
    // was written, or remembered from a later read that found the same token.
    let key = ObjectRef::from_obj(tac);
    let current_version = ctx
        .source_versions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .cloned()
        .or_else(|| target.as_deref().and_then(secret::source_version).map(str::to_owned));

    let mut candidate_version = None;
    let candidate = if tac.spec.oauth.is_some() {
        grant::access_token(ctx, tac, settings, ns, current.as_ref(), observed, now, &mut out).await?
    } else {
        let known = current
            .as_ref()
            .zip(current_version.as_deref())
            .map(|((t, _), v)| (t, v));
        match sources::candidate(ctx, tac, settings, ns, &secrets, known, &mut out.notices).await? {
            Source::Token(t, l, version) => {
                candidate_version = version;
                Some((t, l))
            }
            Source::Problem(p) => {
                out.problem = Some(p);
                None
            }
        }
    };
    if let (Some((cand, _)), Some((cur, _)), Some(v)) = (&candidate, &current, &candidate_version)
        && cand == cur
    {
        ctx.source_versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, v.clone());
    }

    let candidate_fp = candidate.as_ref().map(|(t, _)| t.fingerprint());
    let chosen = match candidate {
        None => current.clone(),
        Some(cand) => {
            let health = plan::health_of(observed);
            let cut = if tac.spec.oauth.is_some() {
                // Minted by the provider a moment ago: nothing to validate.
                if current.as_ref().map(|c| &c.0) == Some(&cand.0) {
                    Cutover::Keep
                } else {
                    Cutover::Now
                }
            } else {
                let current_fp = current.as_ref().map(|(t, _)| t.fingerprint());
                rotation::cutover(
                    current_fp.as_ref(),
                    health,
                    &cand.0.fingerprint(),
                    observed.rotation.as_ref(),
                    new_request,
                )
            };
            match cut {
                // Same token: the candidate's lifetime is the better informed (OAuth expiry).
                Cutover::Keep if current.as_ref().is_some_and(|c| c.0 == cand.0) => Some(cand),
                Cutover::Keep => current.clone(),
                Cutover::Now => Some(cand),
                Cutover::Validate => validate(ctx, settings, cand, current.clone(), now, &mut out).await,
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
                    prune(&secrets, observed, tac.metadata.uid.as_deref(), &stale).await?;
                }
                secret::needs_apply(&desired, observed)
            }
            None => true,
        };
        if write {
            let written = match &target {
                Some(_) => Some(apply_secret(&secrets, &desired).await?),
                None => create_secret(&secrets, &desired, &name).await?,
            };
            let Some(written) = written else {
                out.problem = Some(conflict(ns, &settings.secret_name));
                return Ok(out);
            };
            ctx.remember_secret(ns, target.as_deref(), written);
            let old = current.as_ref().map(|(t, _)| t.fingerprint());
            let new = token.fingerprint();
            // Only a token change is news (a first Secret or a label change is not); a validated
            // rotation already has its TokenRotated event.
            let validated = out.notices.iter().any(|n| n.reason == "TokenRotated");
            if let Some(old) = old.filter(|old| *old != new && !validated) {
                out.notices.push(Notice::normal(
                    "SecretUpdated",
                    format!("Secret {} now holds token {new} (was {old})", settings.secret_name),
                ));
            }
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
) -> Option<(Token, Lifetime)> {
    let fp = candidate.0.fingerprint();
    let expired = candidate.1.expires_at.is_some_and(|e| e <= now);
    let step = if expired {
        ProbeStep::Expired
    } else {
        probe_once(ctx, settings, &candidate.0, &fp, now).await
    };
    let result = match &step {
        ProbeStep::Sent(o) => Some(crate::verdict::classify(o)),
        ProbeStep::Expired => Some(crate::crd::ProbeResult::Expired),
        ProbeStep::Deferred(_) | ProbeStep::None => None,
    };
    let verdict = rotation::validation(result);
    out.rotation = Some(rotation::record(verdict, &fp, now));
    let was = current
        .as_ref()
        .map(|(t, _)| t.fingerprint().to_string())
        .unwrap_or_default();
    match verdict {
        Validation::Accepted => {
            out.notices.push(Notice::normal(
                "TokenRotated",
                format!(
                    "the provider accepted token {fp}; it replaces {was} in Secret {}",
                    settings.secret_name
                ),
            ));
            out.probe = Some(step);
            Some(candidate)
        }
        Validation::Refused => {
            let why = result.map_or("refused", |r| r.as_str());
            out.notices.push(Notice::warning(
                "RotationFailed",
                format!(
                    "new token {fp} was not accepted ({why}); Secret {} keeps token {was}",
                    settings.secret_name
                ),
            ));
            current
        }
        Validation::Undecided => {
            let retry = match &step {
                ProbeStep::Deferred(until) => *until,
                ProbeStep::Sent(o) => o
                    .back_off_until()
                    .unwrap_or_else(|| schedule::add(now, Jitter::random().scale(schedule::TRANSIENT_FIRST, 0.5, 1.0))),
                _ => schedule::add(now, schedule::TRANSIENT_FIRST),
            };
            out.wake(retry);
            current
        }
    }
}

fn requeue(decision: &Decision, wake_at: Option<Timestamp>, now: Timestamp) -> Action {
    match [decision.requeue_at, wake_at].into_iter().flatten().min() {
        // A second late, so the instant has surely passed when we look.
        Some(at) => Action::requeue(schedule::until(now, at) + Duration::from_secs(1)),
        None => Action::await_change(),
    }
}

/// Sends one probe within the budget, or says until when it must wait.
async fn probe_once(
    ctx: &Context,
    settings: &Settings,
    token: &Token,
    key: &crate::token::Fingerprint,
    now: Timestamp,
) -> ProbeStep {
    let host = settings.host();
    if let Err(held) = ctx.budget.admit(&host, key, &settings.profile, now) {
        debug!(%host, %key, until = %held.until, by = ?held.by, "probe held back");
        return ProbeStep::Deferred(held.until);
    }
    let _permit = ctx.budget.acquire(&host).await;
    let mut outcome = ctx.prober.probe(&settings.probe_url(), token, settings.timeout).await;
    ctx.metrics.probed(
        settings.profile.name,
        crate::verdict::classify(&outcome),
        outcome.elapsed,
    );
    if let Some(until) = outcome.back_off_until() {
        outcome.held_back =
            Some(
                ctx.budget
                    .back_off(&host, key, settings.profile.limit_scope, until, Timestamp::now()),
            );
    }
    debug!(%host, %key, transport = ?outcome.transport, elapsed = ?outcome.elapsed, "probed");
    ProbeStep::Sent(outcome)
}

fn stable_offset(tac: &TenantApiCredential) -> u64 {
    let mut h = DefaultHasher::new();
    tac.metadata.uid.hash(&mut h);
    tac.metadata.name.hash(&mut h);
    h.finish()
}

fn conflict(ns: &str, name: &str) -> Problem {
    Problem::SecretConflict(format!(
        "Secret {ns}/{name} exists and is not managed by this TenantApiCredential; tenantcred never overwrites it: delete it or choose another spec.target.name"
    ))
}

/// Creates the managed Secret where the caches saw none. A plain create, not an apply: it fails
/// on a Secret that exists after all (a watch lagging behind someone else's create) instead of
/// merging into it. Answers false when the Secret there is someone else's.
async fn create_secret(secrets: &Api<Secret>, desired: &Secret, credential: &str) -> Result<Option<Secret>> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match secrets.create(&params, desired).await {
        Ok(s) => Ok(Some(s)),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let name = desired.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
            let Some(existing) = secrets.get_opt(&name).await? else {
                return Ok(None);
            };
            if secret::ownership(Some(&existing), credential) != Ownership::Ours {
                return Ok(None);
            }
            if !secret::needs_apply(desired, &existing) {
                return Ok(Some(existing));
            }
            Ok(Some(apply_secret(secrets, desired).await?))
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes labels or annotations tenantcred set at creation and no longer wants (a later apply
/// does not prune what a create recorded).
async fn prune(
    secrets: &Api<Secret>,
    observed: &Secret,
    owner_uid: Option<&str>,
    stale: &[(&'static str, String)],
) -> Result<()> {
    let name = observed.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let mut meta = serde_json::Map::new();
    for (section, key) in stale {
        if *section == "ownerReferences" {
            // A list is replaced whole: keep everyone else's, guarded by the version read.
            let remaining: Vec<_> = observed
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|r| Some(r.uid.as_str()) != owner_uid)
                .collect();
            meta.insert("ownerReferences".into(), serde_json::json!(remaining));
            meta.insert(
                "resourceVersion".into(),
                serde_json::json!(observed.metadata.resource_version),
            );
            continue;
        }
        let entry = meta.entry(section.to_string()).or_insert_with(|| serde_json::json!({}));
        entry[key.as_str()] = serde_json::Value::Null;
    }
    let patch = serde_json::json!({ "metadata": meta });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    secrets.patch(&name, &params, &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Server-side apply of the managed Secret. Not forced, so a field someone else owns answers 409
/// instead of being overwritten; our own Secret edited by hand is reclaimed with force.
async fn apply_secret(secrets: &Api<Secret>, desired: &Secret) -> Result<Secret> {
    let name = desired.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let mut body = serde_json::to_value(desired)?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    let params = PatchParams::apply(FIELD_MANAGER);
    match secrets.patch(&name, &params, &Patch::Apply(&body)).await {
        Ok(s) => Ok(s),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Only reached for a Secret that carries our labels (ownership was checked first).
            Ok(secrets.patch(&name, &params.force(), &Patch::Apply(&body)).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes the status by server-side apply when a reader would act on the difference, or for the
/// hourly heartbeat (`publish`); otherwise keeps the per-probe fields in memory.
async fn write_status(
    ctx: &Context,
    tac: &TenantApiCredential,
    ns: &str,
    observed: &TenantApiCredentialStatus,
    desired: &TenantApiCredentialStatus,
) -> Result<()> {
    let key = ObjectRef::from_obj(tac);
    if !publish::needs_write(observed, desired, Timestamp::now(), stable_offset(tac)) {
        // Kept in memory: the schedule goes on from the newest probe, not the last write.
        let volatile = Volatile::of(desired);
        let mut live = ctx.live.lock().unwrap_or_else(PoisonError::into_inner);
        if volatile == Volatile::of(observed) {
            live.remove(&key);
        } else {
            live.insert(key, volatile);
        }
        return Ok(());
    }
    let name = tac.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let api: Api<TenantApiCredential> = Api::namespaced(ctx.client.clone(), ns);
    let body = serde_json::json!({
        "apiVersion": "tenantcred.dev/v1alpha1",
        "kind": "TenantApiCredential",
        "status": desired,
    });
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await?;
    ctx.remember_status(tac, desired);
    ctx.live.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
    Ok(())
}
