//! One watched scope's controller (a namespace, or all): while this replica leads, it
//! reconciles every cached credential through the backlog's window, and what the scope's watches
//! wake (`cache::Caches`) at once.

use super::backlog::Backlog;
use super::cache::packed::CachedCredential;
use super::cache::{CredentialRef, ScopeCache, Wake, credential_key};
use super::context::Context;
use super::reconcile::{error_policy, reconcile};
use std::sync::{Arc, PoisonError};

use futures::StreamExt;
use jiff::Timestamp;
use kube::runtime::controller::{Config as ControllerConfig, Controller, Error as ControllerError};
use kube::runtime::watcher;

/// One watched scope: what its reconciles read, and where its watches send what they wake.
pub(super) struct Scope {
    pub(super) ctx: Arc<Context>,
    wake: Arc<Wake>,
}

impl Scope {
    pub(super) fn new(ctx: Context, caches: &ScopeCache) -> Self {
        Self {
            ctx: Arc::new(ctx),
            wake: caches.wake.clone(),
        }
    }

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
        self.wake.lead(tx);
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
    pub(super) async fn lead(&self, stopped: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
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
    pub(super) fn stand_by(&self) {
        self.wake.stand_by();
    }
}
