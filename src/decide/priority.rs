//! Which work goes first. A person's change (a new credential, a spec edit, a probe-now request,
//! an edited source Secret) is queued at once; the machine's own work (every cached credential a
//! cold start or a takeover reconciles) is fed in a bounded window behind it, and no more of it
//! while a change waits to start. (kube-runtime's queue hands out ready work in no fixed order,
//! so a change behind a stream of backlog work could otherwise wait for all of it.) A change
//! therefore waits for at most the window; the backlog waits for changes at most `PATIENCE` per
//! item, so a flood of changes slows it but never stops it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

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

/// What of a credential's version asks for a reconcile, as one digest to compare with the last:
/// the uid (a new object), the generation (the spec), the annotations (a probe-now request), the
/// finalizers and the deletion. Labels, the status and managed fields do not: our own status
/// writes never wake it.
pub fn wake_digest(meta: &ObjectMeta) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (
        &meta.uid,
        meta.generation,
        &meta.annotations,
        &meta.finalizers,
        meta.deletion_timestamp.is_some(),
    )
        .hash(&mut h);
    h.finish()
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

    #[test]
    fn a_spec_edit_an_annotation_or_a_deletion_wakes_a_credential_and_our_status_writes_do_not() {
        let meta = ObjectMeta {
            uid: Some("u".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        };
        let before = wake_digest(&meta);
        let mut relabelled = meta.clone();
        relabelled.labels = Some([("team".to_string(), "a".to_string())].into());
        relabelled.resource_version = Some("2".into());
        assert_eq!(wake_digest(&relabelled), before, "a label or a status write: no wake");
        let edits: [fn(&mut ObjectMeta); 4] = [
            |m| m.generation = Some(2),
            |m| m.annotations = Some([("tenantcred.dev/probe-requested-at".to_string(), "now".to_string())].into()),
            |m| m.finalizers = Some(vec!["x".into()]),
            |m| {
                m.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(crate::testing::t(
                    0,
                )))
            },
        ];
        for edit in edits {
            let mut edited = meta.clone();
            edit(&mut edited);
            assert_ne!(wake_digest(&edited), before, "{edited:?}");
        }
    }
}
