//! Running the controllers: one per watched namespace (or one for all), with leader election.

use super::reconcile::{error_policy, reconcile};
use super::watches::build_context;
use super::{Config, LeaseConfig, Shared};

use futures::StreamExt;
use kube::Client;
use tracing::{debug, info};

use crate::secret::FIELD_MANAGER;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared as SharedFuture};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

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
