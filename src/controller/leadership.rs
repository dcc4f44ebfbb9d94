//! Leadership as one component: the terms this replica leads. With a lease, a term begins when
//! the fence opens (the lease is held and has not lapsed) and ends when it closes; without one
//! (a single replica), there is one term, from the start until the operator stops. Whoever runs a
//! term (`run::run_term`) needs to know nothing of leases.

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::info;

use super::{AbortOnDrop, LeaseConfig, abort_on_drop};
use crate::decide::secret::FIELD_MANAGER;
use crate::fence::{self, Fence};

/// Where leading comes from.
pub struct Leadership {
    fence: Arc<Fence>,
    lease: Option<Leased>,
    /// Without a lease: whether the one term has been handed out.
    began: bool,
}

/// The lease, kept with the plain client (everything else goes through the fence).
struct Leased {
    identity: String,
    held: watch::Receiver<bool>,
    manager: tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>,
    /// The lease object's watch and the manager's word, both into the fence.
    _following: [AbortOnDrop; 2],
}

/// One term of leading: `lost` resolves when it ends (never, without a lease).
pub struct Term {
    pub lost: BoxFuture<'static, ()>,
}

impl Leadership {
    /// Starts taking part in the election (with `lease`), or leads at once (without).
    pub async fn start(client: &Client, lease: Option<LeaseConfig>, fence: Arc<Fence>) -> anyhow::Result<Self> {
        let Some(lease) = lease else {
            fence.unfence();
            return Ok(Self {
                fence,
                lease: None,
                began: false,
            });
        };
        let manager = LeaseManagerBuilder::new(client.clone(), &lease.name)
            .with_namespace(&lease.namespace)
            .with_identity(&lease.identity)
            .with_duration(lease.duration_seconds)
            .with_grace(lease.grace_seconds)
            .with_field_manager(FIELD_MANAGER)
            .build()
            .await?;
        let (held, manager) = manager.watch().await;
        let following = [
            abort_on_drop(fence::follow_lease(
                client.clone(),
                lease.namespace.clone(),
                lease.name.clone(),
                lease.identity.clone(),
                fence.clone(),
            )),
            abort_on_drop(forward_held(held.clone(), fence.clone())),
        ];
        info!(lease = %lease.name, identity = %lease.identity, "standing by, caches warm, for the leader lease");
        Ok(Self {
            fence,
            lease: Some(Leased {
                identity: lease.identity,
                held,
                manager,
                _following: following,
            }),
            began: false,
        })
    }

    /// Whether terms come from a lease (a standby is possible).
    pub fn elected(&self) -> bool {
        self.lease.is_some()
    }

    /// Waits for the next term this replica leads; `None` once `stopped` resolves first, or,
    /// without a lease, after the one term.
    pub async fn next_term(&mut self, stopped: impl std::future::Future<Output = ()>) -> Option<Term> {
        let Some(lease) = &self.lease else {
            if std::mem::replace(&mut self.began, true) {
                return None;
            }
            return Some(Term {
                lost: futures::future::pending().boxed(),
            });
        };
        tokio::select! {
            _ = stopped => return None,
            _ = self.fence.until(true) => {}
        }
        info!(identity = %lease.identity, "acquired the leader lease; reconciling from the caches");
        let fence = self.fence.clone();
        Some(Term {
            // The fence is already closed when this resolves: nothing in flight writes or probes
            // any more.
            lost: async move { fence.until(false).await }.boxed(),
        })
    }

    /// Leaves the election: dropping the last receiver (the forwarder holds one too) makes the
    /// lease manager release the lease for the standby.
    pub async fn release(self) {
        if let Some(Leased {
            held,
            manager,
            _following,
            ..
        }) = self.lease
        {
            drop(_following);
            drop(held);
            let _ = manager.await;
        }
    }
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
