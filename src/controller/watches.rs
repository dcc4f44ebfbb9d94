//! The watches: credentials, managed Secrets by label, and every other Secret as metadata only
//! (into the source index, not a cache), each into the scope's cache component (`cache`).

use super::backlog::{Backlog, Changes};
use super::cache::packed::CachedCredential;
use super::cache::{self, Cache, CredentialRef, credential_key};
use super::context::Context;
use super::lists::api_for;
use super::reconcile::{error_policy, reconcile};
use super::{AbortOnDrop, Config, Shared, abort_on_drop, notify};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller, Error as ControllerError};
use kube::runtime::{WatchStreamExt, watcher};

use crate::decide::priority::{self, Delivery};
use crate::decide::secret;

/// One watched scope (a namespace, or all): its context and caches, the tasks that keep the
/// caches current (leader and standby alike: a standby is warm), and what wakes its reconciles
/// while this replica leads.
pub struct Scope {
    pub ctx: Arc<Context>,
    wake: Arc<Wake>,
    _watches: Vec<AbortOnDrop>,
}

/// Where the watches send the credentials they wake: to the running controller while this
/// replica leads, nowhere while it stands by (taking the lease reconciles everything anyway).
#[derive(Default)]
struct Wake {
    to: Mutex<Option<tokio::sync::mpsc::UnboundedSender<CredentialRef>>>,
    /// What was sent and has not started (the backlog waits for it).
    changes: Arc<Changes>,
}

impl Wake {
    fn send(&self, r: CredentialRef) {
        if let Some(to) = &*self.to.lock().unwrap_or_else(PoisonError::into_inner) {
            self.changes.queued(&r);
            let _ = to.send(r);
        }
    }
}

impl Scope {
    /// A controller that reconciles every cached credential (once the caches hold a full list),
    /// fed through the backlog's window, and what the watches wake, at once. Built each time this
    /// replica starts leading; the caches are not listed again. The backlog is told of every
    /// reconcile that finishes (`Backlog::finished`).
    fn controller(&self) -> (Controller<CachedCredential>, Arc<Backlog>) {
        *self.ctx.leading_since.lock().unwrap_or_else(PoisonError::into_inner) = Timestamp::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // The sender first, then everything held: a credential woken in between comes twice, and
        // the controller's queue keeps one. Everything held is read once the first lists are in:
        // the store takes a first list whole at its end, and what the watch delivered before we
        // led woke nobody.
        self.wake.changes.forget();
        *self.wake.to.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        let ctx = self.ctx.clone();
        let backlog = Backlog::new(crate::decide::priority::backlog_window(ctx.config.concurrency));
        let feeder = backlog.clone();
        let everything = futures::stream::once(async move {
            ctx.caches_listed().await;
            let held: Vec<CredentialRef> = ctx
                .cache
                .store()
                .state()
                .iter()
                .map(|tac| credential_key(&**tac))
                .collect();
            feeder.feed(held, ctx.changes.clone())
        })
        .flatten();
        let woken = futures::stream::select(everything, futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let nothing = futures::stream::pending::<Result<CachedCredential, watcher::Error>>();
        let controller = Controller::for_stream(nothing, self.ctx.cache.store())
            .with_config(ControllerConfig::default().concurrency(self.ctx.config.concurrency))
            .reconcile_on(woken);
        (controller, backlog)
    }

    /// Reconciles until `stopped` (then finishes what is in flight): the backlog, the changes
    /// the watches wake, and what the reconciles requeue.
    pub async fn lead(&self, stopped: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
        let (controller, backlog) = self.controller();
        let changes = self.wake.changes.clone();
        controller
            .graceful_shutdown_on(stopped)
            .run(reconcile, error_policy, self.ctx.clone())
            .for_each(move |res| {
                // Whatever became of it, its work is done: its place in the backlog is free, and
                // a change that never reached a reconcile (the credential was gone) waits no more.
                let (ns, name) = match &res {
                    Ok((obj, _)) => (obj.namespace.as_deref(), obj.name.as_str()),
                    Err(ControllerError::ReconcilerFailed(_, obj) | ControllerError::ObjectNotFound(obj)) => {
                        (obj.namespace.as_deref(), obj.name.as_str())
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the controller's queue failed");
                        return std::future::ready(());
                    }
                };
                changes.started(ns, name);
                backlog.finished(ns, name);
                tracing::debug!(
                    namespace = ns.unwrap_or_default(),
                    credential = name,
                    ok = res.is_ok(),
                    "reconciled"
                );
                std::future::ready(())
            })
            .await;
    }

    /// Stops waking the controller (it is being dropped).
    pub fn stand_by(&self) {
        *self.wake.to.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Starts the three watches of a scope (credentials, managed Secrets, source Secret metadata)
/// into its caches. `client` is fenced: the watches read, the reconciles write only as leader.
pub fn start(client: Client, config: Config, shared: Shared, ns: Option<&str>) -> Scope {
    // Credentials as the cache keeps them: spec and status stay JSON text until a reconcile.
    let tacs: Api<CachedCredential> = api_for(&client, ns);
    let secrets: Api<Secret> = api_for(&client, ns);
    let lists = super::lists::watcher_config(shared.streaming_lists);

    // Ready once the three caches (credentials, managed Secrets, Secret metadata) hold a full
    // list; reconciles wait for that too. (Counted from the streams: a store's
    // `wait_until_ready` wakes only one waiter, and the controller is already one.)
    let (listed_tx, listed) = tokio::sync::watch::channel(None);
    let sync = Arc::new(ScopeSync {
        pending: AtomicUsize::new(3),
        listed: listed_tx,
        started: std::time::Instant::now(),
    });
    let cache: Arc<Cache> = Arc::default();
    let wake: Arc<Wake> = Arc::default();
    let changes = wake.changes.clone();
    let (credential_cache, metrics) = (cache.clone(), shared.metrics.clone());
    let mut listed_credentials = sync.clone().on_first_list("credentials");
    let credential_triggers = triggers(
        watcher(tacs, lists.clone().any_semantic())
            .modify(cache::slim)
            .default_backoff(),
        "credential",
        move |event| {
            let absorbed = credential_cache.credential_event(&event);
            // In-memory state needs no finalizer: the cache forgot the credential already.
            for gone in &absorbed.gone {
                metrics.forget(gone.namespace.as_deref().unwrap_or_default(), &gone.name);
            }
            // Counted once the store holds it: the store takes a first list whole at its end, and
            // a backlog read before would find it empty (seen at 100,000).
            listed_credentials(&event);
            absorbed.wake
        },
    );

    // Managed Secrets by label, into projections: a change wakes the owner.
    let managed_cache = cache.clone();
    let managed_triggers = triggers(
        watcher(secrets, lists.clone().labels(secret::MANAGED_SELECTOR))
            .inspect_ok(sync.clone().on_first_list("managed Secrets"))
            .default_backoff(),
        "managed Secret",
        move |event| managed_cache.managed_event(event),
    );

    // Every Secret but the managed ones as metadata only, into the source index (a version
    // each): a source change wakes the credentials that read it. Nothing else of these Secrets is
    // kept.
    let source_meta: Api<PartialObjectMeta<Secret>> = api_for(&client, ns);
    let source_cache = cache.clone();
    let source_triggers = triggers(
        watcher(source_meta, lists.labels(secret::UNMANAGED_SELECTOR))
            .inspect_ok(sync.on_first_list("Secret metadata"))
            .default_backoff(),
        "Secret metadata",
        move |event| source_cache.source_event(event),
    );
    let drive = |woken: futures::stream::BoxStream<'static, CredentialRef>| {
        let to = wake.clone();
        abort_on_drop(woken.for_each(move |r| {
            to.send(r);
            std::future::ready(())
        }))
    };
    let mut watches = vec![
        drive(credential_triggers.boxed()),
        drive(managed_triggers.boxed()),
        drive(source_triggers.boxed()),
    ];

    let notifier = notify::Notifier::new(client.clone(), config.reporter.clone(), config.instance.clone());
    let ctx = Arc::new(Context {
        client,
        notifier,
        provider_client: shared.provider_client,
        budget: shared.budget,
        metrics: shared.metrics,
        rollouts: shared.rollouts,
        config,
        leading_since: Mutex::new(Timestamp::now()),
        changes,
        cache,
        logins: super::logins::Logins::default(),
        providers: shared.providers.clone(),
        listed,
    });
    // An edited, created or deleted ApiProvider wakes the credentials that name it.
    let to = wake.clone();
    watches.push(abort_on_drop(super::providers::wake_on_change(
        ctx.cache.clone(),
        shared.providers.subscribe(),
        move |r| to.send(r),
    )));
    Scope {
        ctx,
        wake,
        _watches: watches,
    }
}

/// The credentials to reconcile, from a watch whose events an index absorbs (the index answers
/// whom each event concerns). Its first list wakes nobody: leading reconciles everything cached
/// once every first list is in (`Scope::controller`). A failed watch is retried by its backoff.
fn triggers<K>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    what: &'static str,
    mut absorb: impl FnMut(watcher::Event<K>) -> Vec<CredentialRef> + Send + 'static,
) -> impl futures::Stream<Item = CredentialRef> + Send + 'static {
    let mut delivery = Delivery::FirstList;
    events
        .filter_map(move |event| {
            let woken = match event {
                Ok(event) => {
                    let this = delivery;
                    if matches!(event, watcher::Event::InitDone) {
                        delivery = Delivery::Change;
                    }
                    let woken = absorb(event);
                    if priority::wakes(this) { woken } else { Vec::new() }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "{what} watch failed; retrying");
                    Vec::new()
                }
            };
            std::future::ready((!woken.is_empty()).then(|| futures::stream::iter(woken)))
        })
        .flatten()
}

/// Counts the caches of one scope that have completed their first list: then the scope is ready
/// and its reconciles may decide.
struct ScopeSync {
    pending: AtomicUsize,
    /// When every cache of the scope held a full list.
    listed: tokio::sync::watch::Sender<Option<Timestamp>>,
    started: std::time::Instant,
}

impl ScopeSync {
    fn on_first_list<K>(self: Arc<Self>, what: &'static str) -> impl FnMut(&watcher::Event<K>) {
        let mut seen = 0usize;
        let mut done = false;
        move |event| match event {
            watcher::Event::InitApply(_) if !done => seen += 1,
            watcher::Event::InitDone if !done => {
                done = true;
                let secs = self.started.elapsed().as_secs_f64();
                tracing::info!(count = seen, seconds = format!("{secs:.1}"), "listed {what}");
                if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.listed.send_replace(Some(Timestamp::now()));
                }
            }
            _ => {}
        }
    }
}
