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

#[cfg(test)]
mod tests {
    use crate::controller::Context;
    use crate::controller::scripted::{Script, answer, failure};
    use crate::decide::events::{Notice, Occurrence};

    const EVENTS: &str = "POST /apis/events.k8s.io/v1/namespaces/ns/events?";

    fn credential() -> crate::crd::TenantApiCredential {
        crate::testing::credential(
            "c",
            serde_json::json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "src"}}),
        )
    }

    fn created() -> (u16, serde_json::Value) {
        answer(
            201,
            serde_json::json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "ns"}}),
        )
    }

    fn notice(action: Occurrence, message: &str) -> Notice {
        action.notice(message.to_owned())
    }

    #[tokio::test]
    async fn each_notice_is_one_event_about_the_credential_in_its_namespace() {
        let script = Script::new(vec![created(), created()]);
        let ctx = Context::test(&script);
        let notices = vec![
            notice(Occurrence::SecretUpdated, "the managed Secret holds the new token"),
            notice(Occurrence::RestartTargetNotFound, "Deployment api not found in ns"),
        ];
        ctx.notifier.record(&credential(), notices).await;
        script.assert_sent(&[EVENTS, EVENTS]);
        let sent = script.sent();
        let first = &sent[0].body;
        assert_eq!(first["reason"], "SecretUpdated");
        assert_eq!(first["type"], "Normal");
        assert_eq!(first["note"], "the managed Secret holds the new token");
        assert_eq!(first["action"], "Reconcile");
        assert_eq!(first["reportingController"], "tenantcred");
        assert_eq!(first["regarding"]["kind"], "TenantApiCredential");
        assert_eq!(first["regarding"]["name"], "c");
        assert_eq!(first["regarding"]["uid"], "uid-1");
        assert!(first["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("c.")));
        assert_eq!(sent[1].body["type"], "Warning");
        assert_ne!(
            first["metadata"]["name"], sent[1].body["metadata"]["name"],
            "one name per event"
        );
    }

    #[tokio::test]
    async fn nothing_to_tell_sends_nothing() {
        let script = Script::new(Vec::new());
        Context::test(&script).notifier.record(&credential(), Vec::new()).await;
        script.assert_sent(&[]);
    }

    #[tokio::test]
    async fn a_long_note_is_cut_to_the_api_servers_limit_between_characters() {
        let script = Script::new(vec![created()]);
        let long = format!("a{}", "é".repeat(600));
        Context::test(&script)
            .notifier
            .record(&credential(), vec![notice(Occurrence::SecretUpdated, &long)])
            .await;
        let note = script.sent()[0].body["note"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default();
        assert_eq!(note.len(), 1023, "1024 would split an é");
        assert!(long.starts_with(&note));
    }

    #[tokio::test]
    async fn a_refused_event_costs_the_reconcile_nothing_and_the_next_is_still_sent() {
        let script = Script::new(vec![
            answer(403, failure(403, "Forbidden", "events is forbidden")),
            created(),
        ]);
        let notices = vec![
            notice(Occurrence::SecretUpdated, "one"),
            notice(Occurrence::TokenRotated, "two"),
        ];
        Context::test(&script).notifier.record(&credential(), notices).await;
        script.assert_sent(&[EVENTS, EVENTS]);
    }
}
