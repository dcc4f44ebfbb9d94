//! Running the controllers: one scope per watched namespace (or one for all), with leader
//! election. Every replica lists and watches into its caches from the start (a warm standby);
//! only the one whose fence is open (`fence`: it holds the lease, and the lease has not lapsed)
//! reconciles. Taking the lease starts the controllers from the caches at once, without listing
//! again; losing it closes the fence first (no write or probe passes it after that), then drops
//! the controllers and stands by again, caches still warm.

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt, Shared as SharedFuture};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{info, warn};

use super::watches::{Scope, start};
use super::{Config, LeaseConfig, Shared, abort_on_drop, lists, providers};
use crate::decide::secret::FIELD_MANAGER;
use crate::fence::{self, Fence};

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
    let namespaces: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    // Before anything says ready: a standby is "caches synced" only once its lists are in (each
    // scope's, and the ApiProviders').
    shared.health.expect_scopes(namespaces.len() + 1);
    shared.streaming_lists = lists::stream(&client, namespaces[0].as_deref(), config.lists).await;
    let _providers = abort_on_drop(providers::watch_providers(
        client.clone(),
        shared.providers.clone(),
        lists::watcher_config(shared.streaming_lists),
        shared.health.clone(),
    ));
    let Some(lease) = lease else {
        shared.fence.unfence();
        let scopes = start_scopes(&client, &config, &shared, &namespaces);
        shared.health.leader();
        lead(&client, &config, &shared, &scopes, stopped).await;
        return Ok(());
    };
    // The lease is kept with the plain client; everything else goes through the fence.
    let manager = LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_seconds)
        .with_grace(lease.grace_seconds)
        .with_field_manager(FIELD_MANAGER)
        .build()
        .await?;
    let (held, handle) = manager.watch().await;
    let following = [
        abort_on_drop(fence::follow_lease(
            client.clone(),
            lease.namespace.clone(),
            lease.name.clone(),
            lease.identity.clone(),
            shared.fence.clone(),
        )),
        abort_on_drop(forward_held(held.clone(), shared.fence.clone())),
    ];
    shared.health.standby();
    let scopes = start_scopes(&client, &config, &shared, &namespaces);
    info!(lease = %lease.name, identity = %lease.identity, "standing by, caches warm, for the leader lease");
    loop {
        tokio::select! {
            _ = stopped.clone() => break,
            _ = shared.fence.until(true) => {}
        }
        info!(identity = %lease.identity, "acquired the leader lease; reconciling from the caches");
        shared.health.leader();
        let leading = lead(&client, &config, &shared, &scopes, stopped.clone()).boxed();
        tokio::select! {
            _ = leading => break,
            _ = shared.fence.until(false) => {
                // The fence is already closed: nothing in flight writes or probes any more.
                for scope in &scopes {
                    scope.stand_by();
                }
                shared.health.standby();
                warn!(identity = %lease.identity, "lost the leader lease; standing by");
            }
        }
    }
    // Dropping the last receiver (the forwarder holds one too) makes the lease manager release
    // the lease for the standby.
    drop(following);
    drop(held);
    let _ = handle.await;
    Ok(())
}

fn start_scopes(client: &Client, config: &Config, shared: &Shared, namespaces: &[Option<String>]) -> Vec<Scope> {
    info!(namespaces = ?config.namespaces, "starting tenantcred's watches");
    let writes = fence::fenced(client.clone(), shared.fence.clone());
    namespaces
        .iter()
        .map(|ns| start(writes.clone(), config.clone(), shared.clone(), ns.as_deref()))
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

/// The lease manager's word, into the fence.
async fn forward_held(mut held: watch::Receiver<bool>, fence: Arc<Fence>) {
    loop {
        fence.set_held(*held.borrow_and_update());
        if held.changed().await.is_err() {
            fence.set_held(false);
            return;
        }
    }
}
