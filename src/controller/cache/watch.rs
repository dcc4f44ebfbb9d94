//! The caches as one component: [`Caches::start`] starts every watch (per scope: credentials,
//! managed Secrets by label, every other Secret as metadata only; once: the `ApiProvider`s), each
//! into its table through the same [`super::mirror::Mirror`], and answers the handles with a
//! future that ends once every watch has its first list in. Leader and standby alike watch from
//! the start (a standby is warm); what a watch wakes goes to a scope's [`Wake`], which forwards it
//! only while this replica leads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, watch};

use super::super::backlog::Changes;
use super::super::lists::{api_for, watcher_config};
use super::super::{AbortOnDrop, abort_on_drop};
use super::packed::CachedCredential;
use super::providers::Providers;
use super::{Cache, CredentialRef, credential_key, slim};
use crate::crd::provider::ApiProvider;
use crate::decide::priority::{self, Delivery};
use crate::decide::provider::report;
use crate::decide::secret;
use crate::metrics::Metrics;

/// Every cache of the process, and the watches that keep them current (dropped with it).
pub(in crate::controller) struct Caches {
    /// One per watched namespace, or one for all.
    pub(in crate::controller) scopes: Vec<ScopeCache>,
    /// The `ApiProvider` definitions, for every scope.
    pub(in crate::controller) providers: Arc<Providers>,
    /// When every watch had its first list in.
    pub(in crate::controller) listed: Listed,
    _watches: Vec<AbortOnDrop>,
}

/// The caches of one scope (a namespace, or all) and where its watches send what they wake.
pub(in crate::controller) struct ScopeCache {
    pub(in crate::controller) cache: Arc<Cache>,
    pub(in crate::controller) wake: Arc<Wake>,
}

/// When every watch of the process had its first list in (`None` before). Before that, a managed
/// Secret that exists would look missing, a source's version unknown and a defined provider
/// undefined: reconciles wait for it (a watch whose list keeps failing holds them, and /readyz
/// says so).
#[derive(Clone)]
pub(in crate::controller) struct Listed(watch::Receiver<Option<Timestamp>>);

impl Listed {
    pub(in crate::controller) async fn wait(&self) {
        let mut listed = self.0.clone();
        // An error means the watches were dropped: the operator is stopping.
        let _ = listed.wait_for(Option::is_some).await;
    }

    pub(in crate::controller) fn at(&self) -> Option<Timestamp> {
        *self.0.borrow()
    }

    /// Listed already (for the shell's unit tests).
    #[cfg(test)]
    pub(in crate::controller) fn done() -> Self {
        Self(watch::channel(Some(Timestamp::now())).1)
    }
}

/// Where the watches send the credentials they wake: to the running controller while this
/// replica leads, nowhere while it stands by (taking the lease reconciles everything anyway).
#[derive(Default)]
pub(in crate::controller) struct Wake {
    to: Mutex<Option<mpsc::UnboundedSender<CredentialRef>>>,
    /// What was sent and has not started (the backlog waits for it).
    pub(in crate::controller) changes: Arc<Changes>,
}

impl Wake {
    fn send(&self, r: CredentialRef) {
        if let Some(to) = &*self.to.lock().unwrap_or_else(PoisonError::into_inner) {
            self.changes.queued(&r);
            let _ = to.send(r);
        }
    }

    /// From now on, to `to` (this replica leads): what was queued before is forgotten.
    pub(in crate::controller) fn lead(&self, to: mpsc::UnboundedSender<CredentialRef>) {
        self.changes.forget();
        *self.to.lock().unwrap_or_else(PoisonError::into_inner) = Some(to);
    }

    /// Nowhere any more (the controller is being dropped).
    pub(in crate::controller) fn stand_by(&self) {
        *self.to.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl Caches {
    /// Starts every watch into its cache: one scope per namespace in `namespaces` (or one for
    /// all), and the `ApiProvider`s once. `client` is fenced: the watches read, the reconciles
    /// write only as leader. The future ends when every watch has its first list in.
    pub(in crate::controller) fn start(
        client: &Client,
        namespaces: &[String],
        streaming: bool,
        metrics: &Arc<Metrics>,
    ) -> (Self, BoxFuture<'static, ()>) {
        tracing::info!(?namespaces, "starting tenantcred's watches");
        let lists = watcher_config(streaming);
        let scoped: Vec<Option<&str>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().map(|ns| Some(ns.as_str())).collect()
        };
        let count = FirstLists::new(scoped.len() * 3 + 1);
        let mut watches = Vec::new();
        let scopes: Vec<ScopeCache> = scoped
            .into_iter()
            .map(|ns| watch_scope(client, ns, &lists, &count, metrics, &mut watches))
            .collect();
        let providers: Arc<Providers> = Arc::default();
        watches.push(watch_providers(client, &lists, &count, &providers, &scopes));
        let listed = Listed(count.listed.subscribe());
        let ready = {
            let listed = listed.clone();
            async move { listed.wait().await }.boxed()
        };
        let caches = Self {
            scopes,
            providers,
            listed,
            _watches: watches,
        };
        (caches, ready)
    }
}

/// The three watches of a scope (credentials, managed Secrets, source Secret metadata).
fn watch_scope(
    client: &Client,
    ns: Option<&str>,
    lists: &watcher::Config,
    count: &Arc<FirstLists>,
    metrics: &Arc<Metrics>,
    watches: &mut Vec<AbortOnDrop>,
) -> ScopeCache {
    let cache: Arc<Cache> = Arc::default();
    let wake: Arc<Wake> = Arc::default();
    let drive = |woken: futures::stream::BoxStream<'static, CredentialRef>| {
        let to = wake.clone();
        abort_on_drop(woken.for_each(move |r| {
            to.send(r);
            std::future::ready(())
        }))
    };

    // Credentials as the cache keeps them: spec and status stay JSON text until a reconcile.
    let tacs: Api<CachedCredential> = api_for(client, ns);
    let (credentials, metrics) = (cache.clone(), metrics.clone());
    let credential_triggers = triggers(
        watcher(tacs, lists.clone().any_semantic())
            .modify(slim)
            .default_backoff(),
        Kind::CREDENTIALS,
        count.clone(),
        move |event| {
            let absorbed = credentials.credential_event(&event);
            // In-memory state needs no finalizer: the cache forgot the credential already.
            for gone in &absorbed.gone {
                metrics.forget(gone.namespace.as_deref().unwrap_or_default(), &gone.name);
            }
            absorbed.wake
        },
    );
    watches.push(drive(credential_triggers.boxed()));

    // Managed Secrets by label, into projections: a change wakes the owner.
    let secrets: Api<Secret> = api_for(client, ns);
    let managed = cache.clone();
    let managed_triggers = triggers(
        watcher(secrets, lists.clone().labels(secret::MANAGED_SELECTOR)).default_backoff(),
        Kind::MANAGED,
        count.clone(),
        move |event| managed.managed_event(event),
    );
    watches.push(drive(managed_triggers.boxed()));

    // Every Secret but the managed ones as metadata only, into the source index (a version
    // each): a source change wakes the credentials that read it. Nothing else of these Secrets is
    // kept.
    let source_meta: Api<PartialObjectMeta<Secret>> = api_for(client, ns);
    let sources = cache.clone();
    let source_triggers = triggers(
        watcher(source_meta, lists.clone().labels(secret::UNMANAGED_SELECTOR)).default_backoff(),
        Kind::SOURCES,
        count.clone(),
        move |event| sources.source_event(event),
    );
    watches.push(drive(source_triggers.boxed()));
    ScopeCache { cache, wake }
}

/// The `ApiProvider`s, cluster-wide (they are cluster-scoped): an edited, created or deleted
/// definition wakes the credentials of every scope that name it.
fn watch_providers(
    client: &Client,
    lists: &watcher::Config,
    count: &Arc<FirstLists>,
    providers: &Arc<Providers>,
    scopes: &[ScopeCache],
) -> AbortOnDrop {
    let api: Api<ApiProvider> = Api::all(client.clone());
    let (providers, caches) = (
        providers.clone(),
        scopes.iter().map(|s| s.cache.clone()).collect::<Vec<_>>(),
    );
    let woken = triggers(
        watcher(api, lists.clone().any_semantic()).default_backoff(),
        Kind::PROVIDERS,
        count.clone(),
        move |event| {
            let changed = providers.absorb(event);
            let mut woken = Vec::new();
            for name in &changed {
                for (scope, cache) in caches.iter().enumerate() {
                    for tac in cache.store().state() {
                        if report::wakes(Some(name), tac.provider_name().as_deref()) {
                            woken.push((scope, credential_key(&*tac)));
                        }
                    }
                }
            }
            woken
        },
    );
    let wakes: Vec<Arc<Wake>> = scopes.iter().map(|s| s.wake.clone()).collect();
    abort_on_drop(woken.for_each(move |(scope, r)| {
        if let Some(wake) = wakes.get(scope) {
            wake.send(r);
        }
        std::future::ready(())
    }))
}

/// One watched kind, as the logs name it.
struct Kind {
    /// In "listed …".
    listed: &'static str,
    /// Logged when its watch fails (it is retried by its backoff).
    failed: &'static str,
}

impl Kind {
    const CREDENTIALS: Self = Self {
        listed: "listed credentials",
        failed: "credential watch failed; retrying",
    };
    const MANAGED: Self = Self {
        listed: "listed managed Secrets",
        failed: "managed Secret watch failed; retrying",
    };
    const SOURCES: Self = Self {
        listed: "listed Secret metadata",
        failed: "Secret metadata watch failed; retrying",
    };
    const PROVIDERS: Self = Self {
        listed: "listed ApiProviders",
        failed: "ApiProvider watch failed (is crds/apiproviders.tenantcred.dev.yaml applied?); retrying",
    };
}

/// What a watch wakes, from its events as a table absorbs them (the table answers whom each
/// event concerns). Its first list wakes nobody: leading reconciles everything cached once every
/// first list is in (`Scope::controller`), and is counted once the table holds it (a table read
/// before would be found empty: seen at 100,000). A failed watch is retried by its backoff.
fn triggers<K, T: Send + 'static>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    kind: Kind,
    count: Arc<FirstLists>,
    mut absorb: impl FnMut(watcher::Event<K>) -> Vec<T> + Send + 'static,
) -> impl futures::Stream<Item = T> + Send + 'static {
    let mut delivery = Delivery::FirstList;
    let mut seen = 0usize;
    events
        .filter_map(move |event| {
            let woken = match event {
                Ok(event) => {
                    let this = delivery;
                    let done = matches!(event, watcher::Event::InitDone);
                    if matches!(event, watcher::Event::InitApply(_)) && this == Delivery::FirstList {
                        seen += 1;
                    }
                    let woken = absorb(event);
                    if done && this == Delivery::FirstList {
                        delivery = Delivery::Change;
                        count.first_list_in(kind.listed, seen);
                    }
                    if priority::wakes(this) { woken } else { Vec::new() }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "{}", kind.failed);
                    Vec::new()
                }
            };
            std::future::ready((!woken.is_empty()).then(|| futures::stream::iter(woken)))
        })
        .flatten()
}

/// Counts the watches whose first list is still to come: at none, every cache is listed.
struct FirstLists {
    pending: AtomicUsize,
    listed: watch::Sender<Option<Timestamp>>,
    started: std::time::Instant,
}

impl FirstLists {
    fn new(watches: usize) -> Arc<Self> {
        Arc::new(Self {
            pending: AtomicUsize::new(watches),
            listed: watch::channel(None).0,
            started: std::time::Instant::now(),
        })
    }

    fn first_list_in(&self, what: &'static str, count: usize) {
        let secs = self.started.elapsed().as_secs_f64();
        tracing::info!(count, seconds = format!("{secs:.1}"), "{what}");
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.listed.send_replace(Some(Timestamp::now()));
        }
    }
}
