//! What the requests the operator sends cost this API server, without the operator.
//!
//! - `pattern`: the operator's whole cold-start pattern per new credential (read the source from
//!   the watch cache, create the managed Secret, merge-patch the status), `IN_FLIGHT` credentials
//!   at once, on a copy of the CRD the operator does not watch. The real-server run measures it
//!   beside the 2-write floor: it is the time no scheduling inside the operator can beat.
//! - `--real --costs`: each kind of request alone, then the pattern.
//! - `--real --costs --crd-variants`: the status patch against copies of the CRD that differ in
//!   one thing at a time (CEL rules, descriptions, schema), to tell what makes it cost what it does.
//! - `--real --costs --lists`: a first list of N Secrets' metadata, by page size and streamed.
//!
//! Each line also gives kube-apiserver's and etcd's CPU per request, read from `/proc`: steadier
//! than the clock on a shared machine.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GetParams, GroupVersionKind, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tenantcred::crd::TenantApiCredential;
use tenantcred_testkit::{chart, envtest};

use crate::{NAMESPACES, PROVIDERS, interval_for, token_for};

const IN_FLIGHT: usize = 64;

/// The label value the pattern's stand-in managed Secrets carry: not tenantcred's, so the
/// operator, when it runs beside a measurement, never takes them for its own.
const STAND_IN: &str = "tenantcred-costs";

/// CPU seconds used so far by the processes named `kube-apiserver` and `etcd*` on this machine
/// (the test kit's control plane).
pub(crate) fn server_cpu() -> (f64, f64) {
    let mut apiserver = 0.0;
    let mut etcd = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        match comm.trim() {
            "kube-apiserver" => apiserver += crate::proc_stats(pid).2,
            c if c.starts_with("etcd") => etcd += crate::proc_stats(pid).2,
            _ => {}
        }
    }
    (apiserver, etcd)
}

/// Runs `op(i)` for i in 0..n, `IN_FLIGHT` at once; prints a line and returns items per second.
async fn timed<F, Fut>(label: &str, n: usize, op: F) -> Result<f64, String>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), kube::Error>>,
{
    let (apiserver, etcd) = server_cpu();
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(op)
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| format!("{label}: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    let (apiserver_after, etcd_after) = server_cpu();
    let per = |cpu: f64| cpu * 1e6 / n as f64;
    println!(
        "  {label:52} {:>6.0}/s ({secs:>5.1}s); CPU each: kube-apiserver {:>5.0} µs, etcd {:>4.0} µs",
        n as f64 / secs,
        per(apiserver_after - apiserver),
        per(etcd_after - etcd)
    );
    Ok(n as f64 / secs)
}

/// One write of the floor: a plain Secret `unrelated-{i}`, server-side applied. The Secrets stay,
/// unrelated to tenantcred (the operator must not cache them).
pub(crate) async fn floor_write(secrets: Api<Secret>, i: usize) -> Result<(), kube::Error> {
    let name = format!("unrelated-{i}");
    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "type": "Opaque", "data": {"token": "dW5yZWxhdGVk"}});
    secrets
        .patch(&name, &PatchParams::apply("floor").force(), &Patch::Apply(&body))
        .await
        .map(drop)
}

/// A healthy credential's status as the operator writes it on a cold start (about 950 bytes).
fn status(i: usize) -> Value {
    let at = "2027-01-15T08:00:00Z";
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": at, "observedGeneration": 1})
    };
    let fp = format!("sha256:{i:012x}");
    json!({"status": {
        "conditions": [
            condition("Ready", "True", "TokenValid", format!("the provider accepted token {fp} on the last decisive probe")),
            condition("Degraded", "False", "AsExpected", "no credential-side failure".into()),
            condition("ExpiringSoon", "False", "AsExpected", "the token expires at 2027-04-15T08:00:00Z".into()),
        ],
        "consecutiveFailures": 0, "expiresAt": "2027-04-15T08:00:00Z", "lastProbeHttpStatus": 200,
        "lastProbeResult": "Valid", "lastProbeTime": at, "lastSuccessfulProbeTime": at,
        "nextProbeTime": "2027-01-15T08:08:15Z", "observedGeneration": 1,
        "rateLimit": {"limit": 1000, "remaining": 999, "resetAt": "2027-01-15T09:00:00Z"},
        "secretName": format!("c{i}"), "tokenFingerprint": fp,
    }})
}

/// A managed Secret as the operator creates it (four labels, an annotation, an owner, five keys).
fn managed(i: usize, owner_api_version: &str, owner_uid: &str) -> Result<Secret, kube::Error> {
    let b64 = |s: &str| tenantcred_testkit::apiserver::b64(s.as_bytes());
    serde_json::from_value(json!({
        "metadata": {"name": format!("c{i}"),
            "labels": {"app.kubernetes.io/managed-by": STAND_IN, "tenantcred.dev/tenant": format!("org{i}"),
                       "tenantcred.dev/provider": PROVIDERS[i % 3], "tenantcred.dev/credential": format!("c{i}")},
            "annotations": {"tenantcred.dev/source-version": format!("c{i}-input/1")},
            "ownerReferences": [{"apiVersion": owner_api_version, "kind": "TenantApiCredential",
                "name": format!("c{i}"), "uid": owner_uid,
                "controller": true, "blockOwnerDeletion": true}]},
        "type": "Opaque",
        "data": {"token": b64(&token_for(i)), "tenant": b64(&format!("org{i}")), "provider": b64(PROVIDERS[i % 3]),
                 "base-url": b64("http://127.0.0.1:1"), "fingerprint": b64(&format!("sha256:{i:012x}"))},
    }))
    .map_err(kube::Error::SerdeError)
}

fn source(i: usize) -> Result<Secret, kube::Error> {
    serde_json::from_value(json!({"metadata": {"name": format!("c{i}-input")},
        "type": "Opaque", "stringData": {"token": token_for(i)}}))
    .map_err(kube::Error::SerdeError)
}

/// A copy of the credential CRD under `group`, with `change` made to it; served once this returns.
async fn install_copy(client: &kube::Client, group: &str, change: impl Fn(&mut Value)) -> Result<CopiedCrd, String> {
    let mut crd = serde_json::to_value(TenantApiCredential::crd()).map_err(|e| e.to_string())?;
    change(&mut crd);
    crd["metadata"] = json!({"name": format!("tenantapicredentials.{group}")});
    crd["spec"]["group"] = group.into();
    let crd: CustomResourceDefinition = serde_json::from_value(crd).map_err(|e| e.to_string())?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd)
        .await
        .map_err(|e| format!("install {group}: {e}"))?;
    let gvk = GroupVersionKind::gvk(group, "v1alpha1", "TenantApiCredential");
    let copy = CopiedCrd {
        client: client.clone(),
        resource: ApiResource::from_gvk_with_plural(&gvk, "tenantapicredentials"),
    };
    // Served once a list answers (the CRD is established a moment after it is created).
    let asked = Instant::now();
    while copy.api("default").list(&Default::default()).await.is_err() {
        if asked.elapsed() > Duration::from_secs(60) {
            return Err(format!("{group} was not served within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(copy)
}

struct CopiedCrd {
    client: kube::Client,
    resource: ApiResource,
}

impl CopiedCrd {
    fn api(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &self.resource)
    }

    /// Credential `c{i}` as the benchmark creates it, of this copy's group.
    fn credential(&self, i: usize) -> Result<DynamicObject, kube::Error> {
        let p = PROVIDERS[i % 3];
        serde_json::from_value(
            json!({"apiVersion": self.resource.api_version, "kind": "TenantApiCredential",
            "metadata": {"name": format!("c{i}")},
            "spec": {"tenant": format!("org{i}"), "provider": p, "baseUrl": "http://127.0.0.1:1",
                     "probe": {"path": "/probe", "interval": interval_for(p)},
                     "credentialRef": {"name": format!("c{i}-input")}}}),
        )
        .map_err(kube::Error::SerdeError)
    }
}

/// Namespaces `{prefix}-0` .. `{prefix}-99`, credential `i` in `{prefix}-{i % 100}`, as the
/// operator's benchmark spreads them.
pub(crate) async fn namespaces(client: &kube::Client, prefix: &str, n: usize) -> Result<(), String> {
    for i in 0..NAMESPACES.min(n) {
        chart::ensure_namespace(client, &format!("{prefix}-{}", i % NAMESPACES)).await?;
    }
    Ok(())
}

/// The operator's cold-start pattern for `n` new credentials, without the operator: per
/// credential the source read from the watch cache, the managed Secret's create and the status
/// merge patch, `IN_FLIGHT` credentials at once. Returns credentials per second. Its sources and
/// credentials (of a CRD copy in group `costs.tenantcred.dev`, which the operator does not
/// watch) are created first, untimed.
pub async fn pattern(client: &kube::Client, n: usize) -> Result<f64, String> {
    let copy = install_copy(client, "costs.tenantcred.dev", |_| {}).await?;
    namespaces(client, "costs-pattern", n).await?;
    let ns = |i: usize| format!("costs-pattern-{}", i % NAMESPACES);
    let secrets = |i: usize| Api::<Secret>::namespaced(client.clone(), &ns(i));
    let (copy, post) = (&copy, &PostParams::default());
    let created: Vec<(usize, DynamicObject)> = futures::stream::iter(0..n)
        .map(|i| async move {
            secrets(i).create(post, &source(i)?).await?;
            Ok::<_, kube::Error>((i, copy.api(&ns(i)).create(post, &copy.credential(i)?).await?))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await
        .map_err(|e| format!("creating the pattern's credentials: {e}"))?;
    let mut uids = vec![String::new(); n];
    for (i, credential) in created {
        uids[i] = credential.metadata.uid.unwrap_or_default();
    }
    let uids = &uids;
    timed("get source (cache) + create Secret + patch status", n, |i| async move {
        let from_cache = GetParams {
            resource_version: Some("0".into()),
        };
        secrets(i).get_with(&format!("c{i}-input"), &from_cache).await?;
        let stand_in = managed(i, &copy.resource.api_version, &uids[i])?;
        secrets(i).create(post, &stand_in).await?;
        copy.api(&ns(i))
            .patch_status(&format!("c{i}"), &PatchParams::default(), &Patch::Merge(status(i)))
            .await
            .map(drop)
    })
    .await
}

/// `--real --costs`: each kind of request alone, then the pattern.
pub async fn run(n: usize) -> Result<(), String> {
    println!("\n=== request costs on the real API server: N = {n} of each, {IN_FLIGHT} in flight ===");
    let plane = envtest::control_plane()?;
    let client = chart::admin(plane).await?;
    let copy = install_copy(&client, "kinds.costs.tenantcred.dev", |_| {}).await?;
    namespaces(&client, "costs-kinds", n).await?;
    let ns = |i: usize| format!("costs-kinds-{}", i % NAMESPACES);
    let secrets = |i: usize| Api::<Secret>::namespaced(client.clone(), &ns(i));
    let (copy, post) = (&copy, &PostParams::default());

    println!("one kind at a time:");
    let floor = timed("server-side apply, Secret (the floor)", n, |i| {
        floor_write(secrets(i), i)
    })
    .await?;
    timed("create, Secret (a source)", n, |i| async move {
        secrets(i).create(post, &source(i)?).await.map(drop)
    })
    .await?;
    timed("create, TenantApiCredential", n, |i| async move {
        copy.api(&ns(i)).create(post, &copy.credential(i)?).await.map(drop)
    })
    .await?;
    let uids: Vec<String> = futures::stream::iter(0..n)
        .map(|i| async move { copy.api(&ns(i)).get(&format!("c{i}")).await })
        .buffered(IN_FLIGHT)
        .map_ok(|c| c.metadata.uid.unwrap_or_default())
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let uids = &uids;
    timed("create, managed Secret (labels, owner, five keys)", n, |i| async move {
        let stand_in = managed(i, &copy.resource.api_version, &uids[i])?;
        secrets(i).create(post, &stand_in).await.map(drop)
    })
    .await?;
    timed(
        "merge patch, credential status (as on a cold start)",
        n,
        |i| async move {
            copy.api(&ns(i))
                .patch_status(&format!("c{i}"), &PatchParams::default(), &Patch::Merge(status(i)))
                .await
                .map(drop)
        },
    )
    .await?;
    timed("merge patch, credential status, one field changed", n, |i| async move {
        let one = json!({"status": {"observedGeneration": 2}});
        copy.api(&ns(i))
            .patch_status(&format!("c{i}"), &PatchParams::default(), &Patch::Merge(one))
            .await
            .map(drop)
    })
    .await?;
    timed("server-side apply, credential status", n, |i| async move {
        let mut body = status(i);
        body["apiVersion"] = copy.resource.api_version.clone().into();
        body["kind"] = "TenantApiCredential".into();
        body["status"]["observedGeneration"] = 3.into();
        copy.api(&ns(i))
            .patch_status(
                &format!("c{i}"),
                &PatchParams::apply("costs").force(),
                &Patch::Apply(body),
            )
            .await
            .map(drop)
    })
    .await?;
    timed("get, Secret at resourceVersion=0 (watch cache)", n, |i| async move {
        let from_cache = GetParams {
            resource_version: Some("0".into()),
        };
        secrets(i).get_with(&format!("c{i}-input"), &from_cache).await.map(drop)
    })
    .await?;
    timed("get, Secret (quorum read from etcd)", n, |i| async move {
        secrets(i).get(&format!("c{i}-input")).await.map(drop)
    })
    .await?;
    println!("the operator's pattern per new credential, without the operator:");
    let pattern = pattern(&client, n).await?;
    println!(
        "the pattern takes {:.2}x the 2-write floor ({:.1}s against {:.1}s for {n} credentials)",
        floor / (2.0 * pattern),
        n as f64 / pattern,
        2.0 * n as f64 / floor
    );
    Ok(())
}

/// `--real --costs --crd-variants`: the credential create and status patch against copies of the
/// CRD that differ from the shipped one in one thing at a time.
pub async fn crd_variants(n: usize) -> Result<(), String> {
    println!("\n=== a credential's writes by CRD variant: N = {n} each, {IN_FLIGHT} in flight ===");
    let plane = envtest::control_plane()?;
    let client = chart::admin(plane).await?;
    fn strip(v: &mut Value, key: &str) {
        match v {
            Value::Object(m) => {
                m.remove(key);
                m.values_mut().for_each(|c| strip(c, key));
            }
            Value::Array(a) => a.iter_mut().for_each(|c| strip(c, key)),
            _ => {}
        }
    }
    fn open(v: &mut Value, part: &str) {
        let at = format!("/spec/versions/0/schema/openAPIV3Schema/properties/{part}");
        if let Some(s) = v.pointer_mut(&at) {
            *s = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        }
    }
    type Change = fn(&mut Value);
    let variants: [(&str, Change); 5] = [
        ("as shipped", |_| {}),
        ("no CEL rules", |v| strip(v, "x-kubernetes-validations")),
        ("no descriptions", |v| strip(v, "description")),
        ("status schema open (x-kubernetes-preserve-unknown-fields)", |v| {
            open(v, "status")
        }),
        ("spec and status open, no CEL rules", |v| {
            strip(v, "x-kubernetes-validations");
            open(v, "spec");
            open(v, "status");
        }),
    ];
    namespaces(&client, "costs-variants", 1).await?;
    for (k, (label, change)) in variants.into_iter().enumerate() {
        let copy = install_copy(&client, &format!("v{k}.costs.tenantcred.dev"), change).await?;
        let (api, post, copy) = (&copy.api("costs-variants-0"), &PostParams::default(), &copy);
        println!("{label}:");
        timed("  create", n, |i| async move {
            api.create(post, &copy.credential(i)?).await.map(drop)
        })
        .await?;
        timed("  merge patch, status (as on a cold start)", n, |i| async move {
            api.patch_status(&format!("c{i}"), &PatchParams::default(), &Patch::Merge(status(i)))
                .await
                .map(drop)
        })
        .await?;
        timed("  merge patch, status, one field changed", n, |i| async move {
            let one = json!({"status": {"observedGeneration": 2}});
            api.patch_status(&format!("c{i}"), &PatchParams::default(), &Patch::Merge(one))
                .await
                .map(drop)
        })
        .await?;
    }
    Ok(())
}

/// `--real --costs --lists`: how long a first list of N Secrets' metadata takes, by page size and
/// as a streaming list (`sendInitialEvents`), as the operator's Secret-metadata watch makes it.
pub async fn lists(n: usize) -> Result<(), String> {
    use kube::core::PartialObjectMeta;
    use kube::runtime::watcher;

    println!("\n=== first list of {n} Secrets' metadata ===");
    let plane = envtest::control_plane()?;
    let client = chart::admin(plane).await?;
    namespaces(&client, "costs-lists", n).await?;
    let secrets = |i: usize| Api::<Secret>::namespaced(client.clone(), &format!("costs-lists-{}", i % NAMESPACES));
    timed("server-side apply, Secret", n, |i| floor_write(secrets(i), i)).await?;
    let api: Api<PartialObjectMeta<Secret>> = Api::all(client.clone());
    let configs = [
        ("pages of 500 (the default)", watcher::Config::default().page_size(500)),
        ("pages of 2,000", watcher::Config::default().page_size(2000)),
        ("pages of 10,000", watcher::Config::default().page_size(10_000)),
        ("streaming list", watcher::Config::default().streaming_lists()),
    ];
    for (label, config) in configs {
        let (apiserver, etcd) = server_cpu();
        let started = Instant::now();
        let mut seen = 0usize;
        let mut stream = watcher::watcher(api.clone(), config).boxed();
        let outcome = loop {
            match stream.next().await {
                Some(Ok(watcher::Event::InitApply(_))) => seen += 1,
                Some(Ok(watcher::Event::InitDone)) => break Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(e.to_string()),
                None => break Err("the stream ended".into()),
            }
        };
        let secs = started.elapsed().as_secs_f64();
        let (apiserver_after, etcd_after) = server_cpu();
        match outcome {
            Ok(()) => println!(
                "  {label:30} {seen} objects in {secs:.1}s; CPU: kube-apiserver {:.1}s, etcd {:.1}s",
                apiserver_after - apiserver,
                etcd_after - etcd
            ),
            Err(e) => println!("  {label:30} failed after {secs:.1}s: {e}"),
        }
    }
    Ok(())
}
