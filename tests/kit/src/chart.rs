//! The operator's identity on the real server is the Helm chart's own: the chart is rendered with
//! the real Helm engine, applied server-side (with the CRD from `crds/`), and a token for its
//! ServiceAccount is requested (TokenRequest). Every real-server scenario runs the operator with
//! that token, so RBAC is proven by every scenario, not assumed.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::Value;

use crate::envtest::ControlPlane;

pub const RELEASE: &str = "tenantcred";
pub const RELEASE_NAMESPACE: &str = "tenantcred-system";
const FIELD_MANAGER: &str = "tenantcred-tests";

/// What the chart installed: the ServiceAccount token the operator runs with.
pub struct Installed {
    pub token: String,
    /// The kinds the chart rendered, for the record.
    pub kinds: Vec<String>,
}

static INSTALLED: OnceLock<Result<Installed, String>> = OnceLock::new();

/// Installs the chart once per test binary (on a thread of its own: callers are async tests).
pub fn installed(plane: &'static ControlPlane) -> Result<&'static Installed, String> {
    INSTALLED
        .get_or_init(|| {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(install(plane))
            })
            .join()
            .unwrap_or_else(|_| Err("installing the chart panicked".into()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The chart's manifests with the given values, from the real Helm engine.
pub fn render(values: &Value) -> Result<Vec<Value>, String> {
    let out = Command::new("python3")
        .arg(repo().join("tests/kit/scripts/render_chart.py"))
        .arg(repo().join("charts/tenantcred"))
        .args([RELEASE, RELEASE_NAMESPACE, &values.to_string()])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default().to_owned();
        return Err(format!(
            "the chart could not be rendered (pip install helm-python-sdk): {last}"
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| format!("rendered YAML: {e}"))?;
        if v.is_object() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Server-side applies any object, finding its resource by discovery.
pub async fn apply(client: &kube::Client, obj: &Value) -> Result<(), String> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("discovery of {api_version} {kind}: {e}"))?;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<DynamicObject> = match caps.scope {
        kube::discovery::Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            obj["metadata"]["namespace"].as_str().unwrap_or(RELEASE_NAMESPACE),
            &ar,
        ),
        kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj))
        .await
        .map(|_| ())
        .map_err(|e| format!("apply {kind} {name}: {e}"))
}

/// Applies every CRD in `crds/` and waits until the API server serves each kind.
pub async fn install_crd(client: &kube::Client) -> Result<(), String> {
    let mut names = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo().join("crds"))
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        let crd: Value = serde_yaml::from_str(&text).map_err(|e| e.to_string())?;
        apply(client, &crd).await?;
        names.push(crd["metadata"]["name"].as_str().unwrap_or_default().to_owned());
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in names {
        let mut established = false;
        for _ in 0..100 {
            established = crds
                .get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
            if established {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !established {
            return Err(format!("the CRD {name} was not Established within 10 s"));
        }
    }
    Ok(())
}

pub async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<(), String> {
    apply(
        client,
        &serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await
}

/// An admin client of the control plane.
pub async fn admin(plane: &ControlPlane) -> Result<kube::Client, String> {
    kube::Client::try_from(admin_config(plane).await?).map_err(|e| e.to_string())
}

pub async fn admin_config(plane: &ControlPlane) -> Result<kube::Config, String> {
    tenantcred::outbound::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(&plane.kubeconfig).map_err(|e| e.to_string())?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| e.to_string())
}

/// A client as a tenant holds one: a ServiceAccount of `ns` bound to the cluster's `edit` role in
/// that namespace only (what namespace owners get), with a requested token.
pub async fn tenant_client(admin_client: &kube::Client, ns: &str) -> Result<kube::Client, String> {
    let plane = crate::envtest::control_plane()?;
    apply(
        admin_client,
        &serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "tenant", "namespace": ns}}),
    )
    .await?;
    apply(
        admin_client,
        &serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "tenant-edit", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": ns}]}),
    )
    .await?;
    let sas: Api<ServiceAccount> = Api::namespaced(admin_client.clone(), ns);
    let answer = sas
        .create_token_request(
            "tenant",
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("TokenRequest for the tenant: {e}"))?;
    let token = answer
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or("TokenRequest answered without a token")?;
    let mut config = admin_config(plane).await?;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// The admin config with the chart ServiceAccount's token instead of the admin's.
pub async fn operator_config(plane: &'static ControlPlane) -> Result<kube::Config, String> {
    let installed = installed(plane)?;
    let mut config = admin_config(plane).await?;
    config.auth_info = kube::config::AuthInfo {
        token: Some(installed.token.clone().into()),
        ..Default::default()
    };
    Ok(config)
}

async fn install(plane: &ControlPlane) -> Result<Installed, String> {
    let client = admin(plane).await?;
    install_crd(&client).await?;
    ensure_namespace(&client, RELEASE_NAMESPACE).await?;
    let docs = render(&serde_json::json!({}))?;
    let mut kinds = Vec::new();
    for doc in &docs {
        apply(&client, doc).await?;
        kinds.push(doc["kind"].as_str().unwrap_or_default().to_owned());
    }
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(24 * 3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let answer = sas
        .create_token_request(RELEASE, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("TokenRequest for the chart's ServiceAccount: {e}"))?;
    let token = answer
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or("TokenRequest answered without a token")?;
    Ok(Installed { token, kinds })
}
