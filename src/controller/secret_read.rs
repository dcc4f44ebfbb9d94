//! Reading a Secret: a source the user supplied, the OAuth login and state, a managed Secret a
//! create found. What each yields is the reconcile machine's call (`decide::step`).

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, GetParams};

use crate::Result;

/// Reads a source Secret at no older than `seen`, the resourceVersion the metadata watch last
/// delivered for it: the API server answers that from its watch cache instead of a quorum read of
/// etcd, and the answer is never older than the version that woke us. (Unknown to the index: a
/// plain read, as every read of a Secret that is not a source.) `None`: not found.
pub(super) async fn read(client: &Client, seen: Option<String>, ns: &str, name: &str) -> Result<Option<Box<Secret>>> {
    // No Secret has such a name, and the client would put it into the path as written (the
    // spec's resolution refuses it first; this read never trusts that it did).
    if !crate::decide::names::is_object_name(name) {
        return Ok(None);
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let seen = GetParams { resource_version: seen };
    let mut got = secrets.get_with(name, &seen).await;
    // A server whose cache has not reached that version yet ("Too large resource version", 504
    // after its wait) still answers a plain read.
    if seen.resource_version.is_some() && matches!(&got, Err(kube::Error::Api(s)) if s.code == 504) {
        got = secrets.get_with(name, &GetParams::default()).await;
    }
    match got {
        Ok(s) => Ok(Some(Box::new(s))),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::scripted::{Script, answer, failure};

    #[tokio::test]
    async fn reads_at_the_version_the_watch_saw() {
        let script = Script::new(vec![answer(200, secret_json("7"))]);
        let got = read(&script.client(), Some("7".into()), "ns", "src")
            .await
            .expect("read");
        assert_eq!(got.and_then(|s| s.metadata.resource_version).as_deref(), Some("7"));
        script.assert_sent(&["GET /api/v1/namespaces/ns/secrets/src?&resourceVersion=7"]);
    }

    #[tokio::test]
    async fn a_cache_behind_that_version_gets_a_plain_read() {
        let script = Script::new(vec![
            answer(504, failure(504, "Timeout", "Timeout")),
            answer(200, secret_json("8")),
        ]);
        let got = read(&script.client(), Some("8".into()), "ns", "src")
            .await
            .expect("read");
        assert!(got.is_some());
        script.assert_sent(&[
            "GET /api/v1/namespaces/ns/secrets/src?&resourceVersion=8",
            "GET /api/v1/namespaces/ns/secrets/src",
        ]);
    }

    #[tokio::test]
    async fn not_found_is_an_answer_and_other_failures_are_errors() {
        let script = Script::new(vec![answer(404, failure(404, "NotFound", "NotFound"))]);
        assert!(
            read(&script.client(), None, "ns", "src")
                .await
                .expect("an answer")
                .is_none()
        );
        script.assert_sent(&["GET /api/v1/namespaces/ns/secrets/src"]);

        for code in [429, 500] {
            let script = Script::new(vec![answer(code, failure(code, "Failure", "Failure"))]);
            assert!(read(&script.client(), None, "ns", "src").await.is_err(), "{code}");
        }
    }

    /// kube puts a name into the path as written: `?watch=true` would turn the read of one Secret
    /// into a watch of every Secret in the namespace (held open for 30 to 60 minutes), and `../`
    /// or `#` would read something else. Such a name is never sent.
    #[tokio::test]
    async fn a_source_name_cannot_rewrite_the_request() {
        for name in ["?watch=true", "../configmaps/x", "x#y"] {
            let script = Script::new(vec![answer(404, failure(404, "NotFound", "NotFound"))]);
            let _ = read(&script.client(), None, "ns", name).await;
            let sent: Vec<String> = script.sent().into_iter().map(|s| s.line).collect();
            assert!(
                sent.iter().all(|line| line
                    .strip_prefix("GET /api/v1/namespaces/ns/secrets/")
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '/', '#']))),
                "name {name:?} sent {sent:?}"
            );
        }
    }

    fn secret_json(rv: &str) -> serde_json::Value {
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "src", "namespace": "ns", "resourceVersion": rv}, "data": {"token": "dG9rZW4="}})
    }
}
