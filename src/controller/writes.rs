//! The writes: the managed Secret (create, apply, prune), the status, the legacy finalizer.

use super::cache::packed::CachedCredential;
use super::context::Context;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::Request;
use kube::{Client, Resource};
use tracing::info;

use crate::crd::{LEGACY_FINALIZER, TenantApiCredential};
use crate::decide::secret::FIELD_MANAGER;
use crate::decide::secret::apply::{self, Answer, Attempt, Next, Writers};
use crate::decide::step::StateWritten;
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
/// (409) on a Secret that exists after all (a watch lagging behind someone else's create) instead
/// of merging into it; the step machine reads that Secret and decides.
pub(super) async fn create_secret(secrets: &Api<Secret>, desired: &Secret) -> Result<Secret> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    Ok(secrets.create(&params, desired).await?)
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

/// Server-side apply of the managed Secret, forced only as `decide::secret::apply` says (after a
/// conflict on our own Secret).
pub(super) async fn apply_secret(secrets: &Api<Secret>, desired: &Secret) -> Result<Secret> {
    server_side_apply(secrets, desired, Writers::Shared).await
}

/// Writes the OAuth state Secret: a create when it carries no resourceVersion, else one apply as
/// `decide::secret::apply` says for a Secret tenantcred alone writes, its resourceVersion a
/// precondition. A 409 (created or changed since it was read) and a 422 are answers the machine
/// decides on.
pub(super) async fn write_state(secrets: &Api<Secret>, secret: &Secret) -> Result<StateWritten> {
    let written = match secret.metadata.resource_version {
        None => secrets.create(&PostParams::default(), secret).await,
        Some(_) => {
            let (name, body) = apply_body(secret)?;
            let params = apply_params(apply::first(Writers::Operator));
            secrets.patch(&name, &params, &Patch::Apply(&body)).await
        }
    };
    match written {
        Ok(s) => Ok(StateWritten::Stored(s.metadata.resource_version)),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(StateWritten::Conflict),
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(StateWritten::Refused(status.message)),
        Err(e) => Err(e.into()),
    }
}

async fn server_side_apply(secrets: &Api<Secret>, secret: &Secret, writers: Writers) -> Result<Secret> {
    let (name, body) = apply_body(secret)?;
    let mut attempt = apply::first(writers);
    loop {
        let params = apply_params(attempt);
        let answered = secrets.patch(&name, &params, &Patch::Apply(&body)).await;
        let answer = match &answered {
            Ok(_) => Answer::Applied,
            Err(kube::Error::Api(status)) if status.code == 409 => Answer::Conflict,
            Err(_) => Answer::Failed,
        };
        match apply::after(attempt, answer) {
            Next::Retry(next) => attempt = next,
            Next::Done | Next::Fail => return Ok(answered?),
        }
    }
}

/// A Secret's name and its server-side apply body (which names its kind).
fn apply_body(secret: &Secret) -> Result<(String, serde_json::Value)> {
    let name = secret.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let mut body = serde_json::to_value(secret)?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    Ok((name, body))
}

/// Sends a status merge patch (`decide::step` chose to write, and what).
pub(super) async fn write_status(
    client: &Client,
    meta: &ObjectMeta,
    ns: &str,
    status: serde_json::Value,
) -> Result<()> {
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
    let _: serde::de::IgnoredAny = client.request(request).await?;
    Ok(())
}

/// The server-side apply an attempt is.
fn apply_params(attempt: Attempt) -> PatchParams {
    match attempt {
        Attempt::Plain => PatchParams::apply(FIELD_MANAGER),
        Attempt::Forced => PatchParams::apply(FIELD_MANAGER).force(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::scripted::{Script, answer, failure};
    use crate::decide::token::Token;

    const SECRETS: &str = "/api/v1/namespaces/ns/secrets";

    fn desired() -> Secret {
        let tac = crate::testing::credential(
            "c",
            serde_json::json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "src"}}),
        );
        crate::decide::secret::desired(&tac, "c-token", "https://api.example", &Token::new("tok"), None)
    }

    fn as_json(s: &Secret) -> serde_json::Value {
        let mut v = serde_json::to_value(s).expect("json");
        v["apiVersion"] = "v1".into();
        v["kind"] = "Secret".into();
        v
    }

    fn api(script: &Script) -> Api<Secret> {
        Api::namespaced(script.client(), "ns")
    }

    #[tokio::test]
    async fn a_create_posts_the_secret_as_tenantcred() {
        let script = Script::new(vec![answer(201, as_json(&desired()))]);
        let written = create_secret(&api(&script), &desired()).await.expect("created");
        assert_eq!(written.metadata.name.as_deref(), Some("c-token"));
        script.assert_sent(&[&format!("POST {SECRETS}?&fieldManager=tenantcred")]);
        assert_eq!(script.sent()[0].body["data"]["token"], "dG9r");
    }

    #[tokio::test]
    async fn a_create_the_api_server_refuses_is_its_answer_unchanged_and_nothing_more() {
        // 409: a Secret of that name exists (the step machine reads it next); 422: invalid.
        for (code, reason, message) in [
            (409, "AlreadyExists", "secrets \"c-token\" already exists"),
            (422, "Invalid", "metadata.labels: Invalid value"),
        ] {
            let script = Script::new(vec![answer(code, failure(code, reason, message))]);
            let err = create_secret(&api(&script), &desired()).await.expect_err("refused");
            assert!(
                matches!(err, Error::Kube(kube::Error::Api(ref s)) if s.code == code),
                "{err}"
            );
            script.assert_sent(&[&format!("POST {SECRETS}?&fieldManager=tenantcred")]);
        }
    }

    #[tokio::test]
    async fn an_apply_is_not_forced_until_a_conflict_on_our_own_secret() {
        let script = Script::new(vec![
            answer(409, failure(409, "Conflict", "Apply failed with 1 conflict")),
            answer(200, as_json(&desired())),
        ]);
        apply_secret(&api(&script), &desired()).await.expect("applied");
        script.assert_sent(&[
            &format!("PATCH {SECRETS}/c-token?&fieldManager=tenantcred"),
            &format!("PATCH {SECRETS}/c-token?&force=true&fieldManager=tenantcred"),
        ]);
        assert_eq!(
            script.sent()[0].content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
    }

    #[tokio::test]
    async fn a_second_conflict_is_an_error_and_no_third_request() {
        let conflict = || answer(409, failure(409, "Conflict", "Apply failed with 1 conflict"));
        let script = Script::new(vec![conflict(), conflict()]);
        let err = apply_secret(&api(&script), &desired()).await.expect_err("refused");
        assert!(
            matches!(err, Error::Kube(kube::Error::Api(ref s)) if s.code == 409),
            "{err}"
        );
        assert_eq!(script.sent().len(), 2);
    }

    #[tokio::test]
    async fn the_oauth_state_is_created_then_replaced_guarded_by_its_version() {
        let mut stored = desired();
        stored.metadata.resource_version = Some("7".into());
        let script = Script::new(vec![answer(201, as_json(&stored))]);
        let written = write_state(&api(&script), &desired()).await.expect("created");
        assert_eq!(written, StateWritten::Stored(Some("7".into())));
        script.assert_sent(&[&format!("POST {SECRETS}?")]);

        let script = Script::new(vec![answer(
            409,
            failure(409, "Conflict", "the object has been modified"),
        )]);
        let written = write_state(&api(&script), &stored).await.expect("answered");
        assert_eq!(
            written,
            StateWritten::Conflict,
            "a write over a newer state is refused, not forced"
        );
        script.assert_sent(&[&format!("PATCH {SECRETS}/c-token?&force=true&fieldManager=tenantcred")]);
        assert_eq!(script.sent()[0].body["metadata"]["resourceVersion"], "7");
    }

    #[tokio::test]
    async fn pruning_nulls_our_stale_keys_and_guards_an_owner_list_by_its_version() {
        let script = Script::new(vec![answer(200, as_json(&desired()))]);
        prune(&api(&script), "c-token", Some("uid-1"), &[("labels", "team".into())])
            .await
            .expect("pruned");
        script.assert_sent(&[&format!("PATCH {SECRETS}/c-token?&fieldManager=tenantcred")]);
        assert_eq!(
            script.sent()[0].body,
            serde_json::json!({"metadata": {"labels": {"team": null}}})
        );

        let mut current = desired();
        current.metadata.resource_version = Some("9".into());
        let script = Script::new(vec![answer(200, as_json(&current)), answer(200, as_json(&current))]);
        prune(
            &api(&script),
            "c-token",
            Some("uid-1"),
            &[("ownerReferences", String::new())],
        )
        .await
        .expect("pruned");
        script.assert_sent(&[
            &format!("GET {SECRETS}/c-token"),
            &format!("PATCH {SECRETS}/c-token?&fieldManager=tenantcred"),
        ]);
        let body = &script.sent()[1].body["metadata"];
        assert_eq!(body["resourceVersion"], "9");
        assert_eq!(body["ownerReferences"], serde_json::json!([]), "ours dropped");
    }

    #[tokio::test]
    async fn a_status_write_is_one_merge_patch_of_the_status_subresource() {
        let script = Script::new(vec![answer(200, serde_json::json!({}))]);
        let meta = ObjectMeta {
            name: Some("c".into()),
            ..ObjectMeta::default()
        };
        let patch = serde_json::json!({"lastProbeResult": "Valid"});
        write_status(&script.client(), &meta, "ns", patch.clone())
            .await
            .expect("written");
        script.assert_sent(&[
            "PATCH /apis/tenantcred.dev/v1alpha1/namespaces/ns/tenantapicredentials/c/status?&fieldManager=tenantcred",
        ]);
        let sent = &script.sent()[0];
        assert_eq!(sent.content_type.as_deref(), Some("application/merge-patch+json"));
        assert_eq!(sent.body, serde_json::json!({ "status": patch }));

        // Refused (a 429 from the API server's priority and fairness, a conflict): an error
        // for the controller's backoff, never a silent success.
        for code in [409, 429] {
            let script = Script::new(vec![answer(code, failure(code, "Failure", "no"))]);
            assert!(
                write_status(&script.client(), &meta, "ns", serde_json::json!({}))
                    .await
                    .is_err()
            );
        }
    }
}
