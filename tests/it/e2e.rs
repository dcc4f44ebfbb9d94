//! End-to-end against a real Kubernetes API server: runs when KUBECONFIG points at a reachable
//! cluster, and says so plainly on stderr when it is skipped. The controller runs in this process
//! (so it reaches the provider server on 127.0.0.1), scoped to a throw-away namespace.

use std::io::Write;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::json;
use tenantcred::controller::{self, Config};
use tenantcred::crd::TenantApiCredential;
use tenantcred::crd::provider::ApiProvider;

use tenantcred_testkit::{Answer, Provider};

fn say(msg: &str) {
    // Straight to stderr: libtest captures print!/eprint!, and a skip must be visible.
    let _ = writeln!(std::io::stderr(), "{msg}");
}

async fn cluster() -> Option<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        say("e2e SKIPPED: KUBECONFIG is not set (point it at a test cluster to run the end-to-end test)");
        return None;
    }
    tenantcred::outbound::install_crypto_provider();
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            say(&format!("e2e SKIPPED: KUBECONFIG is set but unusable: {e}"));
            return None;
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(v)) => {
            say(&format!("e2e RUNNING against Kubernetes {}.{}", v.major, v.minor));
            Some(client)
        }
        _ => {
            say("e2e SKIPPED: the cluster in KUBECONFIG does not answer");
            None
        }
    }
}

async fn wait_for<F: Fn(&TenantApiCredential) -> bool>(api: &Api<TenantApiCredential>, name: &str, what: &str, f: F) {
    for _ in 0..300 {
        if let Ok(Some(t)) = api.get_opt(name).await
            && f(&t)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("e2e: timed out waiting for {name}: {what}");
}

fn ready(t: &TenantApiCredential, status: &str, reason: &str) -> bool {
    t.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == status && c.reason == reason)
    })
}

#[tokio::test]
async fn e2e_against_a_real_cluster() {
    let Some(client) = cluster().await else {
        return;
    };
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // Both kinds: the operator's reconciles wait for every watch's first list, ApiProviders too.
    for (name, crd) in [
        ("tenantapicredentials.tenantcred.dev", TenantApiCredential::crd()),
        ("apiproviders.tenantcred.dev", ApiProvider::crd()),
    ] {
        crds.patch(name, &PatchParams::apply("tenantcred-e2e").force(), &Patch::Apply(crd))
            .await
            .expect("apply CRD");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ns = format!("tenantcred-e2e-{}", jiff::Timestamp::now().as_second());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns"),
        )
        .await
        .expect("create namespace");

    let provider = Provider::start().await;
    provider.answer("e2e-good", Answer::Ok);
    provider.answer("e2e-revoked", Answer::UnauthorizedJson);
    let config = Config {
        namespaces: vec![ns.clone()],
        egress: tenantcred_testkit::local_egress(),
        ..Config::default()
    };
    let ctl_client = client.clone();
    let task = tokio::spawn(async move {
        let shared = controller::Shared::new(&config, Default::default(), Default::default()).expect("shared");
        // One replica, no lease: always acting. Never stopped: the task is dropped at the end.
        let (_stop, stop) = tokio::sync::watch::channel(false);
        controller::run(ctl_client, config, shared, None, stop)
            .await
            .expect("run");
    });

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let tacs: Api<TenantApiCredential> = Api::namespaced(client.clone(), &ns);
    for (name, token) in [("good", "e2e-good"), ("revoked", "e2e-revoked")] {
        let s = json!({"metadata": {"name": format!("{name}-input")}, "stringData": {"token": token}});
        secrets
            .create(&PostParams::default(), &serde_json::from_value(s).expect("secret"))
            .await
            .expect("source");
        let t = json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential", "metadata": {"name": name},
            "spec": {"tenant": "acme", "provider": "generic", "baseUrl": provider.base_url, "probe": {"path": "/probe", "failureThreshold": 1},
                     "credentialRef": {"name": format!("{name}-input")}}});
        tacs.create(&PostParams::default(), &serde_json::from_value(t).expect("tac"))
            .await
            .expect("credential");
    }
    let foreign = json!({"metadata": {"name": "taken"}, "stringData": {"x": "y"}});
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(foreign).expect("secret"),
        )
        .await
        .expect("foreign");
    let t = json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential", "metadata": {"name": "conflict"},
        "spec": {"tenant": "acme", "provider": "generic", "baseUrl": provider.base_url, "probe": {"path": "/probe"},
                 "credentialRef": {"name": "good-input"}, "target": {"name": "taken"}}});
    tacs.create(&PostParams::default(), &serde_json::from_value(t).expect("tac"))
        .await
        .expect("credential");

    wait_for(&tacs, "good", "Ready=True", |t| ready(t, "True", "TokenValid")).await;
    wait_for(&tacs, "revoked", "Degraded", |t| ready(t, "False", "Unauthorized")).await;
    wait_for(&tacs, "conflict", "SecretConflict", |t| {
        ready(t, "False", "SecretConflict")
    })
    .await;
    let managed = secrets.get("good").await.expect("managed secret");
    let data = managed.data.unwrap_or_default();
    assert_eq!(data.get("token").map(|b| b.0.clone()), Some(b"e2e-good".to_vec()));
    assert!(data.contains_key("authorization") && data.contains_key("baseUrl"));
    assert!(
        managed
            .metadata
            .owner_references
            .is_some_and(|r| r.iter().any(|o| o.kind == "TenantApiCredential"))
    );
    let taken = secrets.get("taken").await.expect("foreign secret");
    assert!(
        taken.data.unwrap_or_default().contains_key("x") && taken.metadata.labels.is_none(),
        "untouched"
    );

    tacs.delete("good", &DeleteParams::default()).await.expect("delete");
    for _ in 0..100 {
        if secrets.get_opt("good").await.ok().flatten().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    task.abort();
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    say("e2e PASSED");
}
