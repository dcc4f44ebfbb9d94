//! The fence: every write to the API server and every request to a provider passes it, and it is
//! open only while `decide::leadership::acting` says this replica leads. A standby keeps its
//! caches warm behind a closed fence; a leader whose lease the manager reports lost, or whose
//! lease has lapsed by the Lease object's own account (after a pause, or cut off from the API
//! server), is fenced before its next write, whatever its reconciles were doing.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use http::{Method, Request};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease as LeaseObject;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, client::Body};
use tokio::sync::Notify;

use crate::decide::leadership::{self, Lease};

pub struct Fence {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Clone, Copy)]
enum State {
    /// No leader election: one replica, always acting.
    Unfenced,
    Leased(Lease),
}

/// A write or request refused by the fence.
#[derive(Debug, thiserror::Error)]
#[error("this replica does not hold the leader lease; it sends and writes nothing")]
pub struct NotLeading;

impl Default for Fence {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::Leased(Lease::default())),
            changed: Notify::new(),
        }
    }
}

impl Fence {
    /// Whether this replica may write and probe now.
    pub fn open(&self) -> bool {
        match *self.state() {
            State::Unfenced => true,
            State::Leased(lease) => leadership::acting(lease, Timestamp::now()),
        }
    }

    /// `Err` when closed, for `?` at the edge of a write or a request.
    pub fn check(&self) -> Result<(), NotLeading> {
        if self.open() { Ok(()) } else { Err(NotLeading) }
    }

    /// A fence that is always open: one replica without leader election, or the CLI.
    pub fn unfenced() -> Self {
        Self {
            state: Mutex::new(State::Unfenced),
            changed: Notify::new(),
        }
    }

    /// Without leader election the fence stays open.
    pub fn unfence(&self) {
        *self.state() = State::Unfenced;
        self.changed.notify_waiters();
    }

    pub fn set_held(&self, held: bool) {
        self.update(|l| l.held = held);
    }

    pub fn set_act_until(&self, until: Option<Timestamp>) {
        self.update(|l| l.act_until = until);
    }

    fn update(&self, f: impl FnOnce(&mut Lease)) {
        if let State::Leased(lease) = &mut *self.state() {
            f(lease);
        }
        self.changed.notify_waiters();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the fence is open (`true`) or closed (`false`): on every change, and at the
    /// lapse (the clock closes it too).
    pub async fn until(&self, open: bool) {
        loop {
            let changed = self.changed.notified();
            if self.open() == open {
                return;
            }
            let lapse = match *self.state() {
                State::Leased(Lease {
                    act_until: Some(at), ..
                }) => crate::decide::schedule::until(Timestamp::now(), at),
                _ => Duration::from_secs(3600),
            };
            // Re-checked at least every second: the lapse moves with each renewal.
            let _ = tokio::time::timeout(lapse.min(Duration::from_secs(1)), changed).await;
        }
    }
}

/// `client`, with every request that is not a read refused while the fence is closed.
pub fn fenced(client: Client, fence: Arc<Fence>) -> Client {
    let default_ns = client.default_namespace().to_owned();
    let service = tower::service_fn(move |req: Request<Body>| {
        let (client, fence) = (client.clone(), fence.clone());
        async move {
            if !matches!(*req.method(), Method::GET | Method::HEAD) {
                fence.check()?;
            }
            client.send(req).await.map_err(tower::BoxError::from)
        }
    });
    Client::new(service, default_ns)
}

/// Follows the leader Lease: each renewal of ours moves the lapse, anything else clears it.
pub async fn follow_lease(client: Client, namespace: String, name: String, me: String, fence: Arc<Fence>) {
    let leases: Api<LeaseObject> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(leases, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) => {
                let spec = l.spec.unwrap_or_default();
                fence.set_act_until(leadership::act_until(
                    spec.holder_identity.as_deref(),
                    &me,
                    spec.renew_time.map(|t| t.0),
                    spec.lease_duration_seconds,
                ));
            }
            Ok(watcher::Event::Delete(_)) => fence.set_act_until(None),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "leader Lease watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose every request is counted and answered 200 `{}`.
    fn counting_client(sent: Arc<std::sync::atomic::AtomicUsize>) -> Client {
        let service = tower::service_fn(move |_req: Request<Body>| {
            sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, std::convert::Infallible>(http::Response::new(Body::from(b"{}".to_vec()))) }
        });
        Client::new(service, "default")
    }

    fn post() -> Request<Vec<u8>> {
        Request::post("/api/v1/namespaces/default/secrets")
            .body(b"{}".to_vec())
            .expect("request")
    }

    #[tokio::test]
    async fn writes_pass_only_until_the_lease_lapses_by_the_clock() {
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let fence = Arc::new(Fence::default());
        let client = fenced(counting_client(sent.clone()), fence.clone());
        let count = || sent.load(std::sync::atomic::Ordering::SeqCst);

        assert!(
            client.request_text(post()).await.is_err(),
            "closed before the lease is held"
        );
        assert_eq!(count(), 0);
        fence.set_held(true);
        fence.set_act_until(Some(crate::decide::schedule::add(
            Timestamp::now(),
            Duration::from_millis(300),
        )));
        assert!(client.request_text(post()).await.is_ok(), "open while held and fresh");
        assert_eq!(count(), 1);
        // Nobody says anything: the clock alone closes it (as after a pause past the lease).
        tokio::time::sleep(Duration::from_millis(400)).await;
        let refused = client.request_text(post()).await.expect_err("closed at the lapse");
        assert!(
            refused.to_string().contains("does not hold the leader lease"),
            "{refused}"
        );
        assert_eq!(count(), 1, "nothing reached the API server");
        // Reads pass whatever the fence says: a standby keeps its caches warm.
        let get = Request::get("/api/v1/namespaces/default/secrets")
            .body(Vec::new())
            .expect("request");
        assert!(client.request_text(get).await.is_ok());
        assert_eq!(count(), 2);
    }

    #[tokio::test]
    async fn a_write_the_fence_refused_is_its_own_error_not_an_api_failure() {
        use k8s_openapi::api::core::v1::Secret;
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let client = fenced(counting_client(sent.clone()), Arc::new(Fence::default()));
        let secrets: Api<Secret> = Api::namespaced(client, "ns");
        let refused = secrets
            .delete("s", &kube::api::DeleteParams::default())
            .await
            .expect_err("the fence is closed");
        let err = crate::Error::from(refused);
        assert!(matches!(err, crate::Error::NotLeading(_)), "{err:?}");
        assert_eq!(err.metric_label(), "not_leading");
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 0);
        // An answer of the API server stays an API error.
        let api_error = kube::Error::Api(kube::core::Status::failure("conflict", "Conflict").boxed());
        assert_eq!(crate::Error::from(api_error).metric_label(), "kube");
    }

    #[tokio::test]
    async fn waiting_for_the_fence_sees_the_clock_close_it() {
        let fence = Fence::default();
        fence.set_held(true);
        fence.set_act_until(Some(crate::decide::schedule::add(
            Timestamp::now(),
            Duration::from_millis(200),
        )));
        tokio::time::timeout(Duration::from_secs(1), fence.until(true))
            .await
            .expect("open");
        tokio::time::timeout(Duration::from_secs(2), fence.until(false))
            .await
            .expect("closed by the lapse");
        assert!(Fence::unfenced().open());
    }
}
