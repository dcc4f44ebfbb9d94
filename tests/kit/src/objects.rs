//! What a scenario does with the API server, as a tenant's or a person's client would: objects
//! in the harness's namespace (get, list, create, apply, edit, delete), cluster-scoped
//! definitions, Secrets, credentials and what their status and events say.

use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};

use crate::build::{self, Credential, Seen};
use crate::provider::Answer;
use crate::{Harness, Reason, apiserver, eventually, plural_of, resource};

impl Harness {
    fn api(&self, plural: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &resource(plural))
    }

    pub async fn get(&self, plural: &str, name: &str) -> Option<Value> {
        self.get_in(plural, &self.ns, name).await
    }

    pub async fn get_in(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &resource(plural));
        match api.get_opt(name).await {
            Ok(o) => o.map(|o| serde_json::to_value(o).expect("json")),
            Err(e) => panic!("get {plural} {ns}/{name}: {e}"),
        }
    }

    pub async fn list(&self, plural: &str) -> Vec<Value> {
        self.api(plural)
            .list(&Default::default())
            .await
            .unwrap_or_else(|e| panic!("list {plural}: {e}"))
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).expect("json"))
            .collect()
    }

    /// Creates an object in this test's namespace, as another client would.
    pub async fn create(&self, mut obj: Value) -> Value {
        obj["metadata"]["namespace"] = json!(self.ns);
        let plural = plural_of(obj["kind"].as_str().unwrap_or_default());
        let dynamic: DynamicObject = serde_json::from_value(obj).expect("object");
        let created = self
            .api(plural)
            .create(&PostParams::default(), &dynamic)
            .await
            .unwrap_or_else(|e| panic!("create {plural}: {e}"));
        serde_json::to_value(created).expect("json")
    }

    /// Applies an object server-side in this test's namespace, as `kubectl apply --server-side`.
    pub async fn apply(&self, mut obj: Value) -> Result<Value, String> {
        obj["metadata"]["namespace"] = json!(self.ns);
        let plural = plural_of(obj["kind"].as_str().unwrap_or_default());
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        self.api(plural)
            .patch(
                &name,
                &kube::api::PatchParams::apply("kubectl").force(),
                &kube::api::Patch::Apply(&obj),
            )
            .await
            .map(|o| serde_json::to_value(o).expect("json"))
            .map_err(|e| format!("apply {plural} {name}: {e}"))
    }

    /// Reads, edits and replaces an object (again on a conflict with a concurrent writer).
    pub async fn edit(&self, plural: &str, name: &str, f: impl Fn(&mut Value)) -> Value {
        for _ in 0..20 {
            let mut obj = self
                .get(plural, name)
                .await
                .unwrap_or_else(|| panic!("edit of a missing {plural} {name}"));
            f(&mut obj);
            let dynamic: DynamicObject = serde_json::from_value(obj).expect("object");
            match self.api(plural).replace(name, &PostParams::default(), &dynamic).await {
                Ok(o) => return serde_json::to_value(o).expect("json"),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => panic!("replace {plural} {name}: {e}"),
            }
        }
        panic!("replace {plural} {name}: conflicts kept coming");
    }

    /// Merge-patches a credential's status, as another writer of the status subresource would.
    pub async fn patch_status(&self, name: &str, status: Value) {
        self.api("tenantapicredentials")
            .patch_status(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap_or_else(|e| panic!("patch the status of {name}: {e}"));
    }

    /// A cluster-scoped collection (`apiproviders`).
    fn cluster_api(&self, plural: &str) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &resource(plural))
    }

    /// Applies a cluster-scoped object server-side, as `kubectl apply --server-side` would.
    pub async fn apply_cluster(&self, plural: &str, obj: &Value) {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        self.cluster_api(plural)
            .patch(
                &name,
                &kube::api::PatchParams::apply("kubectl").force(),
                &kube::api::Patch::Apply(obj),
            )
            .await
            .unwrap_or_else(|e| panic!("apply {plural} {name}: {e}"));
    }

    pub async fn get_cluster(&self, plural: &str, name: &str) -> Value {
        match self.cluster_api(plural).get_opt(name).await {
            Ok(o) => o.map_or(Value::Null, |o| serde_json::to_value(o).expect("json")),
            Err(e) => panic!("get {plural} {name}: {e}"),
        }
    }

    pub async fn delete_cluster(&self, plural: &str, name: &str) {
        match self.cluster_api(plural).delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => panic!("delete {plural} {name}: {e}"),
        }
    }

    pub async fn delete(&self, plural: &str, name: &str) {
        match self.api(plural).delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => panic!("delete {plural} {name}: {e}"),
        }
    }

    /// Creates or updates a source Secret holding `token` under the key `token`.
    pub async fn source_secret(&self, name: &str, token: &str) {
        self.secret(name, &[("token", token)]).await;
    }

    /// Creates or updates an Opaque Secret with these string values.
    pub async fn secret(&self, name: &str, values: &[(&str, &str)]) {
        let data: serde_json::Map<String, Value> = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(apiserver::b64(v.as_bytes()))))
            .collect();
        if self.get("secrets", name).await.is_some() {
            self.edit("secrets", name, |s| s["data"] = Value::Object(data.clone()))
                .await;
        } else {
            self.create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "type": "Opaque", "data": data}))
                .await;
        }
    }

    /// A credential of the local provider server (its base URL and probe path), to describe
    /// further with the builder's methods.
    pub fn local(&self, name: &str) -> Credential {
        build::credential(name)
            .base_url(&self.provider.base_url)
            .probe_path("/probe")
    }

    /// Creates a credential described by a builder; answers it as stored.
    pub async fn create_credential(&self, c: Credential) -> tenantcred::crd::TenantApiCredential {
        let stored = self.create(c.to_json()).await;
        serde_json::from_value(stored).expect("a stored credential reads as the type")
    }

    /// What the credential's status says, typed (empty while it has none).
    pub async fn seen(&self, name: &str) -> Seen {
        Seen::of(&self.tac(name).await)
    }

    /// A credential of a generic-style provider served by the local provider server.
    pub async fn credential(&self, name: &str, provider: &str, extra: Value) -> Value {
        let mut spec = json!({
            "tenant": "acme",
            "provider": provider,
            "baseUrl": self.provider.base_url,
            "probe": {"path": "/probe"},
            "credentialRef": {"name": format!("{name}-input")},
        });
        json_patch::merge(&mut spec, &extra);
        self.create(
            json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": "TenantApiCredential",
            "metadata": {"name": name}, "spec": spec}),
        )
        .await
    }

    /// Creates the credential `c` with its source holding `token`, which the provider accepts;
    /// waits until it is Ready.
    pub async fn ready_credential(&self, c: Credential, token: &str) {
        let name = c.name().to_owned();
        self.provider.answer(token, Answer::Ok);
        self.source_secret(&format!("{name}-input"), token).await;
        self.create_credential(c).await;
        eventually(10, &format!("{name} Ready"), async || {
            self.seen(&name).await.ready_because(Reason::TokenValid)
        })
        .await;
    }

    /// The credential as stored, or `Null` when it does not exist.
    pub async fn tac(&self, name: &str) -> Value {
        self.get("tenantapicredentials", name).await.unwrap_or(Value::Null)
    }

    /// Edits a credential's spec through its type (what a person's `kubectl edit` changes).
    pub async fn edit_spec(&self, name: &str, f: impl Fn(&mut tenantcred::crd::TenantApiCredentialSpec)) {
        self.edit("tenantapicredentials", name, |o| {
            let mut spec = serde_json::from_value(o["spec"].clone()).expect("a stored spec reads as the type");
            f(&mut spec);
            o["spec"] = serde_json::to_value(spec).expect("a spec serializes");
        })
        .await;
    }

    /// Asks for a probe now, as `tenantcred probe-now` does: the request annotation, stamped `at`.
    pub async fn request_probe(&self, name: &str, at: &str) {
        self.edit("tenantapicredentials", name, |o| {
            o["metadata"]["annotations"][tenantcred::crd::PROBE_REQUESTED_ANNOTATION] = json!(at);
        })
        .await;
    }

    pub async fn edit_tac(&self, name: &str, f: impl Fn(&mut Value)) {
        self.edit("tenantapicredentials", name, f).await;
    }

    pub async fn delete_tac(&self, name: &str) {
        self.delete("tenantapicredentials", name).await;
    }

    /// Whether every one of these credentials is `Ready=True TokenValid`.
    pub async fn all_ready<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) -> bool {
        for name in names {
            if !self.seen(name.as_ref()).await.ready_because(Reason::TokenValid) {
                return false;
            }
        }
        true
    }

    pub async fn managed_token(&self, secret: &str) -> Option<String> {
        let s = self.get("secrets", secret).await?;
        String::from_utf8(apiserver::unb64(s["data"]["token"].as_str()?)).ok()
    }

    /// Waits until `n` events with this reason exist (the operator writes events after the
    /// status they explain), then checks there are no more than `n`.
    pub async fn expect_events(&self, reason: &str, n: usize) {
        eventually(10, &format!("{n} {reason} event(s)"), async || {
            self.events(reason).await >= n
        })
        .await;
        assert_eq!(self.events(reason).await, n, "{reason} events");
    }

    /// Events with this reason in the test's namespace.
    pub async fn events(&self, reason: &str) -> usize {
        self.list("events")
            .await
            .iter()
            .filter(|e| e["reason"] == reason)
            .count()
    }
}
