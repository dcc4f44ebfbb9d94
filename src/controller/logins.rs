//! One token-endpoint call per OAuth login at a time in this replica: a reconcile holds its
//! login (`Action::HoldLogin`) from before the call until it ends, and another reconcile of the
//! same login waits a bounded while, then reads the state the first one stored. (Across
//! replicas only the fence holder calls at all.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use crate::decide::step::Held;

/// The logins held now, by `namespace/state Secret`. Entries of logins nobody holds are dropped
/// as others are taken, so the table holds about as many logins as are being renewed.
#[derive(Default)]
pub struct Logins {
    held: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// Held until dropped (the end of the reconcile).
pub type Guard = OwnedMutexGuard<()>;

impl Logins {
    /// Holds `key`, waiting at most `patience` for another holder to let it go.
    pub async fn hold(&self, key: &str, patience: Duration) -> (Held, Option<Guard>) {
        let lock = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            held.retain(|_, w| w.strong_count() > 0);
            match held.get(key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    held.insert(key.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        if let Ok(guard) = Arc::clone(&lock).try_lock_owned() {
            return (Held::AtOnce, Some(guard));
        }
        match tokio::time::timeout(patience, lock.lock_owned()).await {
            Ok(guard) => (Held::AfterWait, Some(guard)),
            Err(_) => (Held::Busy, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_holder_waits_and_is_told_it_waited() {
        let logins = Arc::new(Logins::default());
        let (first, guard) = logins.hold("ns/a", Duration::from_secs(1)).await;
        assert_eq!(first, Held::AtOnce);
        let other = Arc::clone(&logins);
        let waiter = tokio::spawn(async move { other.hold("ns/a", Duration::from_secs(5)).await.0 });
        tokio::task::yield_now().await;
        drop(guard);
        assert_eq!(waiter.await.expect("joined"), Held::AfterWait);
        assert_eq!(
            logins.hold("ns/b", Duration::from_secs(1)).await.0,
            Held::AtOnce,
            "another login is independent"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded() {
        let logins = Logins::default();
        let (_, _guard) = logins.hold("ns/a", Duration::from_secs(1)).await;
        assert_eq!(logins.hold("ns/a", Duration::from_secs(5)).await.0, Held::Busy);
    }

    #[tokio::test]
    async fn logins_nobody_holds_are_forgotten() {
        let logins = Logins::default();
        for i in 0..100 {
            let _ = logins.hold(&format!("ns/{i}"), Duration::from_secs(1)).await;
        }
        let _ = logins.hold("ns/last", Duration::from_secs(1)).await;
        assert!(logins.held.lock().expect("not poisoned").len() <= 1);
    }
}
