//! Consumer restarts: asks the restart policy (`decide::rollouts`) about each workload of a
//! credential, patches the pod template of those it says to restart now, and hands the answers
//! back to it.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use std::sync::PoisonError;

use jiff::Timestamp;

use super::Context;
use crate::Result;
use crate::crd::{TenantApiCredential, WorkloadKind};
use crate::decide::rollouts::{self, AfterStamp, Gate, Round, Stamped, Workload};
use crate::decide::secret::FIELD_MANAGER;
use crate::decide::token::Fingerprint;

/// Restarts the workloads of `tac` as the restart policy allows: `changed` is the new fingerprint
/// when the token in the Secret changed in this reconcile; without it, restarts gathered earlier
/// are started when due.
pub(super) async fn rollout(
    ctx: &Context,
    tac: &TenantApiCredential,
    ns: &str,
    changed: Option<&Fingerprint>,
    now: Timestamp,
) -> Result<Round> {
    let mut round = Round::default();
    for w in rollouts::workloads(ns, &tac.spec.rollout_restart_targets) {
        let gate = {
            let mut gate = ctx.rollouts.lock().unwrap_or_else(PoisonError::into_inner);
            match changed {
                Some(fp) => gate.changed(&w, fp, now),
                None => gate.due(&w, now),
            }
        };
        let fingerprint = match gate {
            Gate::Idle => continue,
            Gate::At(at) => {
                tracing::debug!(workload = %w.2, %at, "restart gathered for the end of the debounce window");
                round.gathered(at);
                continue;
            }
            Gate::Now(fp) => fp,
        };
        let patched = match w.1 {
            WorkloadKind::Deployment => stamp::<Deployment>(ctx, &w, &fingerprint).await,
            WorkloadKind::StatefulSet => stamp::<StatefulSet>(ctx, &w, &fingerprint).await,
            WorkloadKind::DaemonSet => stamp::<DaemonSet>(ctx, &w, &fingerprint).await,
        };
        let stamped = match patched {
            Ok(()) => Stamped::Annotated,
            Err(kube::Error::Api(s)) if s.code == 404 => Stamped::NotFound,
            Err(e) => Stamped::Failed(e),
        };
        let after = ctx
            .rollouts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .answered(&w, &fingerprint, stamped);
        match after {
            AfterStamp::Tell(notice) => round.notices.push(notice),
            AfterStamp::Fail(e) => return Err(e.into()),
        }
    }
    Ok(round)
}

async fn stamp<K>(ctx: &Context, w: &Workload, fingerprint: &Fingerprint) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let (ns, _, name) = w;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let obj = api
        .patch(name, &pp, &Patch::Merge(&rollouts::stamp(fingerprint)))
        .await?;
    tracing::debug!(workload = %obj.name_any(), %fingerprint, "restart annotation set");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::controller::scripted::{Script, answer, failure};
    use crate::testing::t;

    const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/ns/deployments";
    const STATEFULSETS: &str = "/apis/apps/v1/namespaces/ns/statefulsets";

    fn credential() -> TenantApiCredential {
        crate::testing::credential(
            "c",
            serde_json::json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "src"},
                "rolloutRestartTargets": [{"kind": "Deployment", "name": "api"}, {"kind": "StatefulSet", "name": "db"}]}),
        )
    }

    fn workload(kind: &str, name: &str) -> (u16, serde_json::Value) {
        answer(
            200,
            serde_json::json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": "ns"}}),
        )
    }

    fn not_found() -> (u16, serde_json::Value) {
        answer(404, failure(404, "NotFound", "deployments.apps \"api\" not found"))
    }

    fn reasons(round: &Round) -> Vec<&str> {
        round.notices.iter().map(|n| n.reason).collect()
    }

    #[tokio::test]
    async fn a_token_change_stamps_each_targets_pod_template_in_turn() {
        let script = Script::new(vec![workload("Deployment", "api"), workload("StatefulSet", "db")]);
        let ctx = Context::test(&script);
        let fp = Fingerprint::of(b"new token");
        let round = rollout(&ctx, &credential(), "ns", Some(&fp), t(0))
            .await
            .expect("restarted");
        script.assert_sent(&[
            &format!("PATCH {DEPLOYMENTS}/api?&fieldManager=tenantcred"),
            &format!("PATCH {STATEFULSETS}/db?&fieldManager=tenantcred"),
        ]);
        for sent in script.sent() {
            assert_eq!(sent.content_type.as_deref(), Some("application/merge-patch+json"));
            assert_eq!(sent.body, rollouts::stamp(&fp));
        }
        assert_eq!(reasons(&round), ["RolloutRestarted", "RolloutRestarted"]);
        assert_eq!(round.wake, None);
    }

    #[tokio::test]
    async fn a_missing_workload_is_a_warning_and_the_next_is_still_restarted() {
        let script = Script::new(vec![not_found(), workload("StatefulSet", "db")]);
        let ctx = Context::test(&script);
        let round = rollout(&ctx, &credential(), "ns", Some(&Fingerprint::of(b"a")), t(0))
            .await
            .expect("not a failed reconcile");
        assert_eq!(script.sent().len(), 2);
        assert_eq!(reasons(&round), ["RestartTargetNotFound", "RolloutRestarted"]);
    }

    #[tokio::test]
    async fn a_failed_restart_fails_the_reconcile_and_the_next_change_tries_again_at_once() {
        let script = Script::new(vec![
            answer(500, failure(500, "InternalError", "etcd timeout")),
            workload("Deployment", "api"),
            workload("StatefulSet", "db"),
        ]);
        let ctx = Context::test(&script);
        let err = rollout(&ctx, &credential(), "ns", Some(&Fingerprint::of(b"a")), t(0))
            .await
            .expect_err("failed");
        assert!(matches!(err, crate::Error::Kube(_)), "{err}");
        assert_eq!(script.sent().len(), 1, "the first failure ends the round");
        let round = rollout(&ctx, &credential(), "ns", Some(&Fingerprint::of(b"b")), t(1))
            .await
            .expect("restarted");
        assert_eq!(
            reasons(&round),
            ["RolloutRestarted", "RolloutRestarted"],
            "not debounced"
        );
        script.assert_sent(&[
            &format!("PATCH {DEPLOYMENTS}/api?&fieldManager=tenantcred"),
            &format!("PATCH {DEPLOYMENTS}/api?&fieldManager=tenantcred"),
            &format!("PATCH {STATEFULSETS}/db?&fieldManager=tenantcred"),
        ]);
    }

    #[tokio::test]
    async fn a_change_within_the_window_sends_nothing_until_its_restart_is_due() {
        let script = Script::new(vec![
            workload("Deployment", "api"),
            workload("StatefulSet", "db"),
            workload("Deployment", "api"),
            workload("StatefulSet", "db"),
        ]);
        let ctx = Context::test(&script);
        let (first, newest) = (Fingerprint::of(b"a"), Fingerprint::of(b"b"));
        rollout(&ctx, &credential(), "ns", Some(&first), t(0))
            .await
            .expect("restarted");
        let round = rollout(&ctx, &credential(), "ns", Some(&newest), t(5))
            .await
            .expect("gathered");
        assert_eq!(script.sent().len(), 2, "nothing sent within the window");
        assert_eq!(
            round,
            Round {
                notices: Vec::new(),
                wake: Some(t(30))
            }
        );
        assert_eq!(
            rollout(&ctx, &credential(), "ns", None, t(29))
                .await
                .expect("waiting")
                .wake,
            Some(t(30))
        );
        let round = rollout(&ctx, &credential(), "ns", None, t(30))
            .await
            .expect("restarted");
        assert_eq!(reasons(&round), ["RolloutRestarted", "RolloutRestarted"]);
        assert_eq!(script.sent().len(), 4);
        assert_eq!(script.sent()[3].body, rollouts::stamp(&newest), "the newest token");
    }

    #[tokio::test]
    async fn a_restart_the_fence_refused_is_not_leading_and_reaches_nobody() {
        let script = Script::new(Vec::new());
        let mut ctx = Context::test(&script);
        ctx.client = crate::fence::fenced(ctx.client.clone(), Arc::new(crate::fence::Fence::default()));
        let err = rollout(&ctx, &credential(), "ns", Some(&Fingerprint::of(b"a")), t(0))
            .await
            .expect_err("refused");
        assert!(matches!(err, crate::Error::NotLeading(_)), "{err:?}");
        script.assert_sent(&[]);
    }
}
