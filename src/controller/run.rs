//! Running the controllers: one scope per watched namespace (or one for all), with leader
//! election. Every replica lists and watches into its caches from the start (a warm standby);
//! only the one whose fence is open (`fence`: it holds the lease, and the lease has not lapsed)
//! reconciles. Taking the lease starts the controllers from the caches at once, without listing
//! again; losing it closes the fence first (no write or probe passes it after that), then drops
//! the controllers and stands by again, caches still warm.

use futures::future::{BoxFuture, FutureExt, Shared as SharedFuture};
use kube::Client;
use tokio::sync::watch;
use tracing::{info, warn};

use super::leadership::{Leadership, Term};
use super::watches::{Scope, start};
use super::{Config, LeaseConfig, Shared, abort_on_drop, lists, providers};
use crate::fence;

type Stopped = SharedFuture<BoxFuture<'static, ()>>;

/// Runs until `stop` turns true (SIGTERM/SIGINT): with leader election, reconciling only while
/// holding the lease, and standing by (warm) otherwise.
pub async fn run(
    client: Client,
    config: Config,
    mut shared: Shared,
    lease: Option<LeaseConfig>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stopped: Stopped = {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
        .boxed()
        .shared()
    };
    shared.streaming_lists = lists::stream(&client, config.namespaces.first().map(String::as_str), config.lists).await;
    let _providers = abort_on_drop(providers::watch_providers(
        client.clone(),
        shared.providers.clone(),
        lists::watcher_config(shared.streaming_lists),
    ));
    let mut leadership = Leadership::start(&client, lease, shared.fence.clone()).await?;
    if leadership.elected() {
        shared.health.standby();
    }
    let scopes = start_scopes(&client, &config, &shared);
    // Ready to take over (a standby) or to act (a leader) once every scope's caches and the
    // ApiProviders are listed.
    let _synced = {
        let listed = futures::future::join_all(scopes.iter().map(|s| {
            let ctx = s.ctx.clone();
            async move { ctx.caches_listed().await }
        }));
        let health = shared.health.clone();
        abort_on_drop(async move {
            listed.await;
            health.caches_synced();
        })
    };
    while let Some(term) = leadership.next_term(stopped.clone()).await {
        shared.health.leader();
        match run_term(term, &client, &config, &shared, &scopes, stopped.clone()).await {
            TermEnd::Stopped => break,
            TermEnd::Lost => {
                for scope in &scopes {
                    scope.stand_by();
                }
                shared.health.standby();
                warn!("lost the leader lease; standing by");
            }
        }
    }
    leadership.release().await;
    Ok(())
}

/// How a term ended.
enum TermEnd {
    /// The operator is stopping (in-flight reconciles finished).
    Stopped,
    /// The lease was lost: the fence closed first, nothing in flight writes or probes any more.
    Lost,
}

/// Everything a term does, stopped together when it ends: every scope's controller from its
/// warm caches, and the ApiProviders' status reports.
async fn run_term(
    term: Term,
    client: &Client,
    config: &Config,
    shared: &Shared,
    scopes: &[Scope],
    stopped: Stopped,
) -> TermEnd {
    tokio::select! {
        _ = lead(client, config, shared, scopes, stopped) => TermEnd::Stopped,
        _ = term.lost => TermEnd::Lost,
    }
}

/// One scope per watched namespace, or one for all, each listing and watching into its caches
/// from now on (leader and standby alike).
fn start_scopes(client: &Client, config: &Config, shared: &Shared) -> Vec<Scope> {
    info!(namespaces = ?config.namespaces, "starting tenantcred's watches");
    let writes = fence::fenced(client.clone(), shared.fence.clone());
    let namespaces: Vec<Option<&str>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().map(|ns| Some(ns.as_str())).collect()
    };
    namespaces
        .into_iter()
        .map(|ns| start(writes.clone(), config.clone(), shared.clone(), ns))
        .collect()
}

/// Reconciles every scope until `stopped`, finishing what is in flight, and reports the
/// ApiProviders' statuses meanwhile. Overdue probes queue for catch-up slots counted from now.
async fn lead(client: &Client, config: &Config, shared: &Shared, scopes: &[Scope], stopped: Stopped) {
    if let Some(scope) = scopes.first() {
        scope.ctx.budget.begin_catch_up();
    }
    // Only an operator that sees every namespace can count a provider's credentials; namespaced
    // installations may share the cluster's providers, and would overwrite each other's counts.
    let report = if config.namespaces.is_empty() {
        let writes = fence::fenced(client.clone(), shared.fence.clone());
        let caches = scopes.iter().map(|s| s.ctx.cache.clone()).collect();
        providers::report(writes, shared.providers.clone(), caches).boxed()
    } else {
        futures::future::pending().boxed()
    };
    let runs = futures::future::join_all(scopes.iter().map(|scope| scope.lead(stopped.clone())));
    futures::future::select(runs.boxed(), report).await;
    info!("controllers stopped");
}
