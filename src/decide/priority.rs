//! Which work goes first. A person's change (a new credential, a spec edit, a probe-now request,
//! an edited source Secret) is queued at once; the machine's own work (every cached credential a
//! cold start or a takeover reconciles) is fed in a bounded window behind it, and no more of it
//! while a change waits to start. (kube-runtime's queue hands out ready work in no fixed order,
//! so a change behind a stream of backlog work could otherwise wait for all of it.) A change
//! therefore waits for at most the window; the backlog waits for changes at most `PATIENCE` per
//! item, so a flood of changes slows it but never stops it.

/// Where a watch event comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Part of a watch's first list: the caches are still filling. Everything listed is
    /// reconciled from the caches once all of them are full (the backlog), so it wakes nothing.
    FirstList,
    /// A change the watch delivered after its first list, or one a re-list found.
    Change,
}

/// Whether an event wakes the credentials it concerns, ahead of the backlog.
pub fn wakes(delivery: Delivery) -> bool {
    delivery == Delivery::Change
}

/// How many backlog reconciles may be queued or running at once: twice the workers, so none
/// idles while the next is fetched, and a change queued now starts after at most this many.
pub fn backlog_window(concurrency: u16) -> usize {
    usize::from(concurrency.max(1)) * 2
}

/// How long the backlog holds its next credential back for changes still waiting to start.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether the backlog may feed its next credential: no change is waiting to start, or it has
/// held back for `PATIENCE` already.
pub fn feed_backlog(changes_waiting: usize, held_back: std::time::Duration) -> bool {
    changes_waiting == 0 || held_back >= PATIENCE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_wake_and_the_window_follows_the_workers() {
        assert!(wakes(Delivery::Change));
        assert!(!wakes(Delivery::FirstList));
        assert_eq!(backlog_window(64), 128);
        assert_eq!(backlog_window(0), 2, "a window is never empty");
    }

    #[test]
    fn the_backlog_yields_to_waiting_changes_for_a_while() {
        use std::time::Duration;
        assert!(feed_backlog(0, Duration::ZERO));
        assert!(!feed_backlog(3, Duration::from_millis(999)));
        assert!(feed_backlog(3, PATIENCE), "never stopped for good");
    }
}
