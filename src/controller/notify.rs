//! Publishes `events.k8s.io/v1` Events for the notices a reconcile produced. Written directly
//! rather than through kube-runtime's `Recorder`: its six-minute aggregation cache is a hash map of
//! large entries that never shrinks, measured at ~35% of the operator's heap after a mass creation
//! (BENCHMARKS.md), and tenantcred's events are one per transition, so there is nothing to
//! aggregate.

use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

use crate::decide::events::{Notice, Severity};

/// Events' `note` is limited to 1 kB by the API server.
const NOTE_LIMIT: usize = 1024;

pub struct Notifier {
    client: Client,
    controller: String,
    instance: String,
    sequence: AtomicU64,
}

impl Notifier {
    pub fn new(client: Client, controller: String, instance: String) -> Self {
        Self {
            client,
            controller,
            instance,
            sequence: AtomicU64::new(0),
        }
    }

    /// Best effort: a failed event is logged, never a failed reconcile (status has the facts).
    pub async fn record<K: Resource<DynamicType = ()>>(&self, tac: &K, notices: Vec<Notice>) {
        if notices.is_empty() {
            return;
        }
        let ns = tac.namespace().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let regarding = tac.object_ref(&());
        for n in notices {
            let now = Timestamp::now();
            let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
            let mut note = n.message;
            if note.len() > NOTE_LIMIT {
                let mut cut = NOTE_LIMIT;
                while !note.is_char_boundary(cut) {
                    cut -= 1;
                }
                note.truncate(cut);
            }
            let event = Event {
                metadata: ObjectMeta {
                    name: Some(format!(
                        "{}.{:x}{:04x}",
                        tac.name_any(),
                        now.as_nanosecond(),
                        seq & 0xffff
                    )),
                    namespace: Some(ns.clone()),
                    ..ObjectMeta::default()
                },
                action: Some("Reconcile".into()),
                event_time: Some(MicroTime(now)),
                note: Some(note),
                reason: Some(n.reason.into()),
                regarding: Some(regarding.clone()),
                reporting_controller: Some(self.controller.clone()),
                reporting_instance: Some(self.instance.clone()),
                type_: Some(match n.severity {
                    Severity::Normal => "Normal".into(),
                    Severity::Warning => "Warning".into(),
                }),
                ..Event::default()
            };
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::warn!(error = %e, reason = n.reason, "could not record event");
            }
        }
    }
}
