//! The backlog a cold start or a takeover reconciles from the caches: every cached credential,
//! fed to the controller through a bounded window (`decide::priority::backlog_window`), and held
//! back while a person's change waits to start (`Changes`). A change is queued at once and starts
//! after at most that window, instead of behind every credential of the cluster; the backlog
//! advances as reconciles finish.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures::{Stream, StreamExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::cache::{CredentialRef, Id};
use crate::decide::priority;

/// The changes the watches queued (ahead of the backlog) that have not started yet.
#[derive(Default)]
pub(super) struct Changes {
    waiting: Mutex<HashSet<Id>>,
    none_waiting: Notify,
}

impl Changes {
    pub(super) fn queued(&self, r: &CredentialRef) {
        self.lock().insert(Id::of_ref(r));
    }

    /// A reconcile of the credential started (or its work ended without one: it was gone).
    pub(super) fn started(&self, ns: Option<&str>, name: &str) {
        let mut waiting = self.lock();
        if waiting.remove(&Id::of(ns.unwrap_or_default(), name)) && waiting.is_empty() {
            self.none_waiting.notify_waiters();
        }
    }

    /// Leading begins again: nothing is queued.
    pub(super) fn forget(&self) {
        self.lock().clear();
        self.none_waiting.notify_waiters();
    }

    fn waiting(&self) -> usize {
        self.lock().len()
    }

    /// Until no change waits to start, or the backlog has been patient enough.
    async fn make_way(&self) {
        let began = Instant::now();
        loop {
            let cleared = self.none_waiting.notified();
            let mut cleared = std::pin::pin!(cleared);
            // Registered before the check, so a change starting in between is not missed.
            cleared.as_mut().enable();
            if priority::feed_backlog(self.waiting(), began.elapsed()) {
                return;
            }
            let _ = tokio::time::timeout(priority::PATIENCE.saturating_sub(began.elapsed()), cleared).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Id>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(super) struct Backlog {
    window: Arc<Semaphore>,
    /// A place in the window per credential fed and not yet reconciled.
    held: Mutex<HashMap<Id, OwnedSemaphorePermit>>,
}

impl Backlog {
    pub(super) fn new(window: usize) -> Arc<Self> {
        Arc::new(Self {
            window: Arc::new(Semaphore::new(window.max(1))),
            held: Mutex::default(),
        })
    }

    /// The credentials, each once a place in the window is free and no change waits to start.
    pub(super) fn feed(
        self: &Arc<Self>,
        refs: Vec<CredentialRef>,
        changes: Arc<Changes>,
    ) -> impl Stream<Item = CredentialRef> + Send + use<> {
        let me = self.clone();
        futures::stream::iter(refs).then(move |r| {
            let (me, changes) = (me.clone(), changes.clone());
            async move {
                changes.make_way().await;
                // The semaphore is never closed; without a permit the credential still goes.
                if let Ok(place) = me.window.clone().acquire_owned().await {
                    me.places().insert(Id::of_ref(&r), place);
                }
                r
            }
        })
    }

    /// A reconcile of the credential finished, or found it gone: its place is free.
    pub(super) fn finished(&self, ns: Option<&str>, name: &str) {
        self.places().remove(&Id::of(ns.unwrap_or_default(), name));
    }

    #[cfg(test)]
    fn in_window(&self) -> usize {
        self.places().len()
    }

    fn places(&self) -> std::sync::MutexGuard<'_, HashMap<Id, OwnedSemaphorePermit>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn cred(name: &str) -> CredentialRef {
        CredentialRef::new(name).within("ns")
    }

    #[tokio::test]
    async fn feeds_only_as_many_as_the_window_until_reconciles_finish() {
        let backlog = Backlog::new(2);
        let mut fed = Box::pin(backlog.feed(vec![cred("a"), cred("b"), cred("c")], Arc::default()));
        assert_eq!(fed.next().await.map(|r| r.name), Some("a".into()));
        assert_eq!(fed.next().await.map(|r| r.name), Some("b".into()));
        assert!(fed.next().now_or_never().is_none(), "the window is full");
        assert_eq!(backlog.in_window(), 2);
        backlog.finished(Some("ns"), "unrelated");
        assert!(
            fed.next().now_or_never().is_none(),
            "only the backlog's own free places"
        );
        backlog.finished(Some("ns"), "a");
        assert_eq!(fed.next().await.map(|r| r.name), Some("c".into()));
        assert_eq!(fed.next().await, None);
    }

    #[tokio::test]
    async fn holds_back_while_a_change_waits_to_start() {
        let backlog = Backlog::new(8);
        let changes = Arc::new(Changes::default());
        let mut fed = Box::pin(backlog.feed(vec![cred("a"), cred("b")], changes.clone()));
        assert_eq!(fed.next().await.map(|r| r.name), Some("a".into()));
        changes.queued(&cred("mine"));
        assert!(fed.next().now_or_never().is_none(), "a change is waiting");
        changes.started(Some("ns"), "mine");
        assert_eq!(fed.next().await.map(|r| r.name), Some("b".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_that_never_starts_holds_the_backlog_back_for_a_while_only() {
        let backlog = Backlog::new(8);
        let changes = Arc::new(Changes::default());
        changes.queued(&cred("stuck"));
        let mut fed = Box::pin(backlog.feed(vec![cred("a")], changes));
        // The paused clock jumps ahead while the feeder waits: it gives up after PATIENCE.
        assert_eq!(fed.next().await.map(|r| r.name), Some("a".into()));
    }
}
