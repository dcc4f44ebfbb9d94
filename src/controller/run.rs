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

use super::cache::watch::Caches;
use super::context::Context;
use super::leadership::{Leadership, Term};
use super::provider_reports::ProviderReports;
use super::scope::Scope;
use super::{Config, LeaseConfig, Shared, abort_on_drop, lists};
use crate::fence;

type Stopped = SharedFuture<BoxFuture<'static, ()>>;

/// Runs until `stop` turns true (SIGTERM/SIGINT): with leader election, reconciling only while
/// holding the lease, and standing by (warm) otherwise.
pub async fn run(
    client: Client,
    config: Config,
    shared: Shared,
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
    let streaming = lists::stream(&client, config.namespaces.first().map(String::as_str), config.lists).await;
    // The lease, then the watches (the order before caches became one component).
    let mut leadership = Leadership::start(&client, lease, shared.fence.clone()).await?;
    if leadership.elected() {
        shared.health.standby();
    }
    // Everything but the lease goes through the fence: the watches read, the rest writes only
    // while this replica leads.
    let writes = fence::fenced(client.clone(), shared.fence.clone());
    let (caches, listed) = Caches::start(&writes, &config.namespaces, streaming, &shared.metrics);
    let scopes: Vec<Scope> = caches
        .scopes
        .iter()
        .map(|scope| {
            Scope::new(
                Context::new(writes.clone(), config.clone(), &shared, &caches, scope),
                scope,
            )
        })
        .collect();
    let reports = ProviderReports::of(writes, &caches, &config.namespaces);
    // Ready to take over (a standby) or to act (a leader) once every cache is listed.
    let health = shared.health.clone();
    let _synced = abort_on_drop(async move {
        listed.await;
        health.caches_synced();
    });
    while let Some(term) = leadership.next_term(stopped.clone()).await {
        shared.health.leader();
        match run_term(term, &scopes, reports.as_ref(), stopped.clone()).await {
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
async fn run_term(term: Term, scopes: &[Scope], reports: Option<&ProviderReports>, stopped: Stopped) -> TermEnd {
    tokio::select! {
        _ = lead(scopes, reports, stopped) => TermEnd::Stopped,
        _ = term.lost => TermEnd::Lost,
    }
}

/// Reconciles every scope until `stopped`, finishing what is in flight, and reports the
/// ApiProviders' statuses meanwhile. Overdue probes queue for catch-up slots counted from now.
async fn lead(scopes: &[Scope], reports: Option<&ProviderReports>, stopped: Stopped) {
    if let Some(scope) = scopes.first() {
        scope.ctx.budget.begin_catch_up();
    }
    let report = match reports {
        Some(reports) => reports.run().boxed(),
        None => futures::future::pending().boxed(),
    };
    let runs = futures::future::join_all(scopes.iter().map(|scope| scope.lead(stopped.clone())));
    futures::future::select(runs.boxed(), report).await;
    info!("controllers stopped");
}
