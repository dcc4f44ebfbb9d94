//! The `ApiProvider` status reports, while leading: when to report, what is counted and
//! whether it is worth a write are `decide::provider::report`'s; this sends them. The
//! definitions are one of the caches (`cache::providers`).

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

use super::cache::providers::Providers;
use super::cache::{Cache, Caches, Listed};
use crate::crd::provider::{ApiProvider, ApiProviderStatus};
use crate::decide::provider::report;
use crate::decide::provider::status::Counts;
use crate::decide::schedule::Jitter;
use crate::decide::secret::FIELD_MANAGER;

/// The reports, made once and run during every term.
pub(super) struct ProviderReports {
    client: Client,
    providers: Arc<Providers>,
    /// Every scope's credentials, counted per provider.
    scopes: Vec<Arc<Cache>>,
    listed: Listed,
}

impl ProviderReports {
    /// `None` where `decide::provider::report::reports` says this operator does not report.
    pub(super) fn of(client: Client, caches: &Caches, namespaces: &[String]) -> Option<Self> {
        crate::decide::provider::report::reports(namespaces).then(|| Self {
            client,
            providers: caches.providers.clone(),
            scopes: caches.scopes.iter().map(|s| s.cache.clone()).collect(),
            listed: caches.listed.clone(),
        })
    }

    /// Each provider's status, as `decide::provider::report` says when and whether; never ends.
    pub(super) async fn run(&self) {
        self.listed.wait().await;
        let mut changed = self.providers.subscribe();
        loop {
            if self.providers.with_defined(|d| !d.is_empty()) {
                let counts = count(&self.providers, &self.scopes);
                write_statuses(&self.client, &self.providers, counts, Timestamp::now()).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(report::next(Jitter::random())) => {}
                _ = changed.recv() => tokio::time::sleep(report::SETTLE).await,
            }
        }
    }
}

/// Credentials and Ready credentials per defined provider, over every scope's cache.
fn count(providers: &Providers, scopes: &[Arc<Cache>]) -> HashMap<String, Counts> {
    let mut counts: HashMap<String, Counts> =
        providers.with_defined(|d| d.iter().map(|(k, _)| (k.clone(), Counts::default())).collect());
    let now = Timestamp::now();
    for cache in scopes {
        for tac in cache.store().state() {
            report::count(&mut counts, tac.provider_name().as_deref(), || {
                let cached = tac.status().ok().flatten();
                cache.status_of(&tac.metadata, cached.as_ref())
            });
        }
    }
    for (name, c) in counts.iter_mut() {
        c.probes_last_hour = providers.probes_last_hour(name, now);
    }
    counts
}

async fn write_statuses(client: &Client, providers: &Providers, counts: HashMap<String, Counts>, now: Timestamp) {
    let api: Api<ApiProvider> = Api::all(client.clone());
    let writes: Vec<(String, ApiProviderStatus)> = providers.with_defined(|defined| {
        defined
            .iter()
            .filter_map(|(name, d)| {
                let c = counts.get(name).copied().unwrap_or_default();
                let verdict = d.profile.as_ref().map(|_| ());
                report::to_write(d.status.as_ref(), d.generation, verdict, name, c, now)
                    .map(|want| (name.clone(), want))
            })
            .collect()
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    for (name, status) in writes {
        let patch = serde_json::json!({ "status": status });
        match api.patch_status(&name, &params, &Patch::Merge(&patch)).await {
            Ok(written) => providers.wrote_status(&name, written.status),
            Err(e) => tracing::warn!(provider = %name, error = %e, "could not write the ApiProvider's status"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::scripted::{Script, answer, failure};
    use crate::crd::provider::ApiProviderSpec;
    use crate::testing::t;
    use kube::runtime::watcher;

    const STATUS: &str = "PATCH /apis/tenantcred.dev/v1alpha1/apiproviders/github/status?&fieldManager=tenantcred";

    fn github() -> ApiProvider {
        let spec: ApiProviderSpec = serde_json::from_value(serde_json::json!({
            "hosts": ["api.github.com"],
            "baseUrl": "https://api.github.com",
            "probe": {"path": "/rate_limit"},
            "token": {"pattern": "gh[pousr]_[A-Za-z0-9]{36,251}"},
            "rateLimit": {"requests": 5000, "window": "1h"},
            "expiry": {"source": "Header", "header": "GitHub-Authentication-Token-Expiration",
                       "format": "Layout", "layout": "%Y-%m-%d %H:%M:%S UTC"}
        }))
        .expect("a spec the schema allows");
        let mut p = ApiProvider::new("github", spec);
        p.metadata.generation = Some(1);
        p
    }

    fn counts(credentials: u32, ready: u32) -> HashMap<String, Counts> {
        HashMap::from([(
            "github".to_owned(),
            Counts {
                credentials,
                ready,
                probes_last_hour: 0,
            },
        )])
    }

    /// The API server's answer to a status write: the object with the status written.
    fn written(status: &serde_json::Value) -> (u16, serde_json::Value) {
        let mut object = serde_json::to_value(github()).expect("json");
        object["status"] = status.clone();
        answer(200, object)
    }

    #[tokio::test]
    async fn a_report_is_one_status_patch_and_none_while_nothing_moved() {
        let want = report::to_write(None, Some(1), Ok(()), "github", counts(2, 1)["github"], t(0)).expect("a status");
        let want = serde_json::to_value(want).expect("json");
        let script = Script::new(vec![written(&want)]);
        let ctx = crate::controller::Context::test(&script);
        let providers = Providers::listed_as(vec![github()]);
        write_statuses(&ctx.client, &providers, counts(2, 1), t(0)).await;
        script.assert_sent(&[STATUS]);
        let sent = &script.sent()[0];
        assert_eq!(sent.content_type.as_deref(), Some("application/merge-patch+json"));
        assert_eq!(sent.body, serde_json::json!({ "status": want }));
        assert_eq!(sent.body["status"]["credentials"], 2);
        assert_eq!(sent.body["status"]["readyCredentials"], 1);
        // Five minutes on, the same counts: the object already says so.
        write_statuses(&ctx.client, &providers, counts(2, 1), t(300)).await;
        script.assert_sent(&[STATUS]);
    }

    #[tokio::test]
    async fn a_count_that_moved_is_written_and_a_refused_write_is_tried_at_the_next_report() {
        let script = Script::new(vec![
            answer(500, failure(500, "InternalError", "etcd timeout")),
            answer(200, serde_json::to_value(github()).expect("json")),
        ]);
        let ctx = crate::controller::Context::test(&script);
        let providers = Providers::listed_as(vec![github()]);
        write_statuses(&ctx.client, &providers, counts(1, 0), t(0)).await;
        write_statuses(&ctx.client, &providers, counts(1, 0), t(300)).await;
        script.assert_sent(&[STATUS, STATUS]);
        assert_eq!(script.sent()[1].body["status"]["credentials"], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_leader_reports_at_once_then_every_five_minutes_and_a_second_after_a_change() {
        // Answered without a status, so every report finds something to write.
        let bare = || answer(200, serde_json::to_value(github()).expect("json"));
        let script = Script::new(vec![bare(), bare(), bare()]);
        let ctx = crate::controller::Context::test(&script);
        let providers = Arc::new(Providers::listed_as(vec![github()]));
        let reports = ProviderReports {
            client: ctx.client.clone(),
            providers: providers.clone(),
            scopes: Vec::new(),
            listed: Listed::done(),
        };
        let reporting = tokio::spawn(async move { reports.run().await });
        let sent_after = |secs| {
            let script = script.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
                script.sent().len()
            }
        };
        assert_eq!(sent_after(1).await, 1, "at once");
        assert_eq!(sent_after(268).await, 1, "not before 270 s (300 s less 10%)");
        assert_eq!(sent_after(62).await, 2, "by 330 s (300 s and 10%)");
        let mut edited = github();
        edited.metadata.generation = Some(2);
        providers.absorb(watcher::Event::Apply(edited));
        assert_eq!(sent_after(2).await, 3, "a second after the edit");
        reporting.abort();
        script.assert_sent(&[STATUS, STATUS, STATUS]);
    }

    #[tokio::test]
    async fn no_provider_defined_no_request() {
        let script = Script::new(Vec::new());
        let ctx = crate::controller::Context::test(&script);
        write_statuses(&ctx.client, &ctx.providers, HashMap::new(), t(0)).await;
        script.assert_sent(&[]);
        assert!(ctx.providers.with_defined(|d| d.is_empty()));
    }
}
