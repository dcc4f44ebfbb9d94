//! The writes: the managed Secret (create, apply, prune), the status, the legacy finalizer.

use super::cached::CachedCredential;
use super::context::Context;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::Request;
use tracing::info;

use crate::crd::{LEGACY_FINALIZER, TenantApiCredential};
use crate::decide::secret::{self, FIELD_MANAGER, Observed, Ownership};
use crate::{Error, Result};

/// Removes the finalizer earlier releases added (once per object, on upgrade), guarded by a JSON
/// patch test so a concurrent change of the list is never overwritten.
pub(super) async fn drop_legacy_finalizer(ctx: &Context, tac: &CachedCredential, ns: &str) -> Result<()> {
    let current = tac.finalizers().to_vec();
    let kept: Vec<&String> = current.iter().filter(|f| *f != LEGACY_FINALIZER).collect();
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/metadata/finalizers", "value": current},
        {"op": "replace", "path": "/metadata/finalizers", "value": kept},
    ]))?;
    let api: Api<CachedCredential> = Api::namespaced(ctx.client.clone(), ns);
    api.patch(&tac.name_any(), &PatchParams::default(), &Patch::Json::<()>(patch))
        .await?;
    info!(credential = %tac.name_any(), namespace = ns, "removed the finalizer of an earlier release");
    Ok(())
}

/// Creates the managed Secret where the caches saw none. A plain create, not an apply: it fails
/// on a Secret that exists after all (a watch lagging behind someone else's create) instead of
/// merging into it. Answers false when the Secret there is someone else's.
pub(super) async fn create_secret(secrets: &Api<Secret>, desired: &Secret, credential: &str) -> Result<Option<Secret>> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match secrets.create(&params, desired).await {
        Ok(s) => Ok(Some(s)),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let name = desired.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
            let Some(existing) = secrets.get_opt(&name).await? else {
                // Gone again in between: create it after all.
                return Ok(Some(secrets.create(&params, desired).await?));
            };
            let observed = Observed::of(existing.clone());
            if secret::ownership(Some(&observed), credential) != Ownership::Ours {
                return Ok(None);
            }
            if !secret::needs_apply(desired, &observed) {
                return Ok(Some(existing));
            }
            Ok(Some(apply_secret(secrets, desired).await?))
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes labels or annotations tenantcred set at creation and no longer wants (a later apply
/// does not prune what a create recorded). The cache keeps only owner uids, so dropping our owner
/// reference reads the Secret first (rare: a `deletionPolicy` changed to `Retain`).
pub(super) async fn prune(
    secrets: &Api<Secret>,
    name: &str,
    owner_uid: Option<&str>,
    stale: &[(&'static str, String)],
) -> Result<()> {
    let mut meta = serde_json::Map::new();
    for (section, key) in stale {
        if *section == "ownerReferences" {
            let Some(current) = secrets.get_opt(name).await? else {
                return Ok(());
            };
            // A list is replaced whole: keep everyone else's, guarded by the version read.
            let remaining: Vec<_> = current
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|r| Some(r.uid.as_str()) != owner_uid)
                .collect();
            meta.insert("ownerReferences".into(), serde_json::json!(remaining));
            meta.insert(
                "resourceVersion".into(),
                serde_json::json!(current.metadata.resource_version),
            );
            continue;
        }
        let entry = meta.entry(section.to_string()).or_insert_with(|| serde_json::json!({}));
        entry[key.as_str()] = serde_json::Value::Null;
    }
    let patch = serde_json::json!({ "metadata": meta });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    secrets.patch(name, &params, &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Server-side apply of the managed Secret. Not forced, so a field someone else owns answers 409
/// instead of being overwritten; our own Secret edited by hand is reclaimed with force.
pub(super) async fn apply_secret(secrets: &Api<Secret>, desired: &Secret) -> Result<Secret> {
    let name = desired.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let mut body = serde_json::to_value(desired)?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    let params = PatchParams::apply(FIELD_MANAGER);
    match secrets.patch(&name, &params, &Patch::Apply(&body)).await {
        Ok(s) => Ok(s),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Only reached for a Secret that carries our labels (ownership was checked first).
            Ok(secrets.patch(&name, &params.force(), &Patch::Apply(&body)).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Sends a status merge patch (`decide::step` chose to write, and what).
pub(super) async fn write_status(ctx: &Context, meta: &ObjectMeta, ns: &str, status: serde_json::Value) -> Result<()> {
    let name = meta.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let request = Request::new(TenantApiCredential::url_path(&(), Some(ns)))
        .patch_subresource(
            "status",
            &name,
            &params,
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .map_err(kube::Error::BuildRequest)?;
    // The answer is the whole object; nothing of it is needed, so nothing of it is kept.
    let _: serde::de::IgnoredAny = ctx.client.request(request).await?;
    Ok(())
}
