//! Consumer restarts: when the token in the managed Secret changes, stamp the new fingerprint on
//! each target's pod template, as the rollout gate (`rollouts`) allows. A fingerprint, not a
//! timestamp: re-applying the same value changes nothing, so GitOps re-syncs cannot start a
//! restart loop, and changes gathered in one debounce window make one rollout.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use std::sync::PoisonError;

use jiff::Timestamp;

use super::Context;
use crate::Result;
use crate::crd::{TenantApiCredential, WorkloadKind, WorkloadRef};
use crate::decide::events::{Notice, Occurrence};
use crate::decide::rollouts::Gate;
use crate::decide::secret::FIELD_MANAGER;
use crate::decide::token::Fingerprint;

pub const FINGERPRINT_ANNOTATION: &str = "tenantcred.dev/token-fingerprint";

/// Restarts the workloads of `tac` as the rollout gate allows: `changed` is the new fingerprint
/// when the token in the Secret changed in this reconcile; without it, restarts gathered earlier
/// are started when due. Answers the events and when to look again for a gathered restart.
pub(super) async fn rollout(
    ctx: &Context,
    tac: &TenantApiCredential,
    ns: &str,
    changed: Option<&Fingerprint>,
    now: Timestamp,
) -> Result<(Vec<Notice>, Option<Timestamp>)> {
    let mut notices = Vec::new();
    let mut wake: Option<Timestamp> = None;
    for target in &tac.spec.rollout_restart_targets {
        let w = (ns.to_owned(), target.kind, target.name.clone());
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
                tracing::debug!(workload = %target.name, %at, "restart gathered for the end of the debounce window");
                wake = Some(wake.map_or(at, |w| w.min(at)));
                continue;
            }
            Gate::Now(fp) => fp,
        };
        let patched = match target.kind {
            WorkloadKind::Deployment => stamp::<Deployment>(ctx, ns, target, &fingerprint).await,
            WorkloadKind::StatefulSet => stamp::<StatefulSet>(ctx, ns, target, &fingerprint).await,
            WorkloadKind::DaemonSet => stamp::<DaemonSet>(ctx, ns, target, &fingerprint).await,
        };
        let what = format!("{:?} {}", target.kind, target.name);
        match patched {
            Ok(()) => notices.push(
                Occurrence::RolloutRestarted.notice(format!("{what}: pod template annotated with token {fingerprint}")),
            ),
            // A missing consumer is worth a warning, not a failed credential.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                notices.push(Occurrence::RestartTargetNotFound.notice(format!("{what} not found in {ns}")));
            }
            Err(e) => {
                ctx.rollouts.lock().unwrap_or_else(PoisonError::into_inner).failed(&w);
                return Err(e.into());
            }
        }
    }
    Ok((notices, wake))
}

async fn stamp<K>(ctx: &Context, ns: &str, target: &WorkloadRef, fingerprint: &Fingerprint) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({
        "spec": {"template": {"metadata": {"annotations": {FINGERPRINT_ANNOTATION: fingerprint.as_str()}}}}
    });
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let obj = api.patch(&target.name, &pp, &Patch::Merge(&patch)).await?;
    tracing::debug!(workload = %obj.name_any(), %fingerprint, "restart annotation set");
    Ok(())
}
