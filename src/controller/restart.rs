//! Consumer restarts: when the token in the managed Secret changes, stamp the new fingerprint on
//! each target's pod template. A fingerprint, not a timestamp: re-applying the same value changes
//! nothing, so GitOps re-syncs cannot start a restart loop and close changes make one rollout.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::Context;
use crate::Result;
use crate::crd::{TenantApiCredential, WorkloadKind, WorkloadRef};
use crate::events::Notice;
use crate::secret::FIELD_MANAGER;
use crate::token::Fingerprint;

pub const FINGERPRINT_ANNOTATION: &str = "tenantcred.dev/token-fingerprint";

pub(super) async fn rollout(
    ctx: &Context,
    tac: &TenantApiCredential,
    ns: &str,
    fingerprint: &Fingerprint,
) -> Result<Vec<Notice>> {
    let mut notices = Vec::new();
    for target in &tac.spec.rollout_restart_targets {
        let patched = match target.kind {
            WorkloadKind::Deployment => stamp::<Deployment>(ctx, ns, target, fingerprint).await,
            WorkloadKind::StatefulSet => stamp::<StatefulSet>(ctx, ns, target, fingerprint).await,
            WorkloadKind::DaemonSet => stamp::<DaemonSet>(ctx, ns, target, fingerprint).await,
        };
        let what = format!("{:?} {}", target.kind, target.name);
        match patched {
            Ok(()) => notices.push(Notice::normal(
                "RolloutRestarted",
                format!("{what}: pod template annotated with token {fingerprint}"),
            )),
            // A missing consumer is worth a warning, not a failed credential.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                notices.push(Notice::warning(
                    "RestartTargetNotFound",
                    format!("{what} not found in {ns}"),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(notices)
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
