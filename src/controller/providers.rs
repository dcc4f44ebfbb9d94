//! The `ApiProvider` objects: watched cluster-wide (leader and standby alike), each read into a
//! profile once per generation (`decide::provider::definition`), looked up by every reconcile;
//! a change wakes the credentials that name the provider. The leader reports each provider's
//! status (`decide::provider::report`: when, what is counted, whether it is worth a write).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{broadcast, watch};

use super::cache::{Cache, CredentialRef, credential_key};
use crate::crd::provider::{ApiProvider, ApiProviderStatus};
use crate::decide::provider::definition::{self, Refusal};
use crate::decide::provider::report::{self, ProbesLastHour};
use crate::decide::provider::status::Counts;
use crate::decide::provider::{self as provider_core, Found, Profile};
use crate::decide::schedule::Jitter;
use crate::decide::secret::FIELD_MANAGER;

/// One definition as read.
struct Defined {
    generation: Option<i64>,
    profile: Result<Arc<Profile>, Refusal>,
    status: Option<ApiProviderStatus>,
}

pub struct Providers {
    defined: RwLock<HashMap<String, Defined>>,
    /// Names seen during a re-list (a definition missing at its end was deleted).
    relisting: Mutex<Option<Vec<String>>>,
    listed: watch::Sender<bool>,
    changed: broadcast::Sender<String>,
    spend: Mutex<HashMap<String, ProbesLastHour>>,
}

impl Default for Providers {
    fn default() -> Self {
        Self {
            defined: RwLock::default(),
            relisting: Mutex::default(),
            listed: watch::channel(false).0,
            changed: broadcast::channel(1024).0,
            spend: Mutex::default(),
        }
    }
}

impl Providers {
    /// The provider a credential names.
    pub fn find(&self, name: &str) -> Found {
        let defined = self.defined.read().unwrap_or_else(PoisonError::into_inner);
        provider_core::find(name, |n| {
            defined.get(n).map(|d| d.profile.clone().map_err(|r| r.message(n)))
        })
    }

    /// Counts a probe sent to `name`.
    pub fn probed(&self, name: &str, now: Timestamp) {
        let mut spend = self.spend.lock().unwrap_or_else(PoisonError::into_inner);
        match spend.get_mut(name) {
            Some(s) => s.add(now),
            None => spend.entry(name.to_owned()).or_default().add(now),
        }
    }

    fn probes_last_hour(&self, name: &str, now: Timestamp) -> u32 {
        let mut spend = self.spend.lock().unwrap_or_else(PoisonError::into_inner);
        spend.get_mut(name).map_or(0, |s| s.at(now))
    }

    /// Names of providers whose definition changed (or went away).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changed.subscribe()
    }

    /// Waits until the first list is in: before that, a credential naming a defined provider
    /// would look like one naming none.
    pub async fn listed(&self) {
        let mut listed = self.listed.subscribe();
        let _ = listed.wait_for(|l| *l).await;
    }

    /// Definitions as a first list delivered them (for the shell's unit tests).
    #[cfg(test)]
    pub(super) fn listed_as(definitions: Vec<ApiProvider>) -> Self {
        let providers = Self::default();
        providers.absorb(watcher::Event::Init);
        for p in definitions {
            providers.absorb(watcher::Event::InitApply(p));
        }
        providers.absorb(watcher::Event::InitDone);
        providers
    }

    fn is_defined(&self) -> bool {
        !self.defined.read().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    /// One event of the watch.
    fn absorb(&self, event: watcher::Event<ApiProvider>) {
        match event {
            watcher::Event::Init => {
                *self.relisting.lock().unwrap_or_else(PoisonError::into_inner) = Some(Vec::new());
            }
            watcher::Event::InitApply(p) => {
                if let Some(seen) = self.relisting.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
                    seen.push(p.name_any());
                }
                self.apply(&p);
            }
            watcher::Event::Apply(p) => self.apply(&p),
            watcher::Event::Delete(p) => self.remove(&p.name_any()),
            watcher::Event::InitDone => {
                let seen = self
                    .relisting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                    .unwrap_or_default();
                let gone: Vec<String> = {
                    let defined = self.defined.read().unwrap_or_else(PoisonError::into_inner);
                    defined.keys().filter(|k| !seen.contains(k)).cloned().collect()
                };
                for name in gone {
                    self.remove(&name);
                }
                self.listed.send_replace(true);
            }
        }
    }

    fn apply(&self, p: &ApiProvider) {
        let name = p.name_any();
        let mut defined = self.defined.write().unwrap_or_else(PoisonError::into_inner);
        let generation = p.metadata.generation;
        let same = defined.get(&name).is_some_and(|d| d.generation == generation);
        if same {
            // A status write of ours, or a label: the definition is as read.
            if let Some(d) = defined.get_mut(&name) {
                d.status = p.status.clone();
            }
            return;
        }
        let profile = definition::read(&name, &p.spec).map(Arc::new);
        if let Err(r) = &profile {
            tracing::warn!(provider = %name, reason = r.reason(), message = %r.message(&name), "ApiProvider not accepted");
        }
        defined.insert(
            name.clone(),
            Defined {
                generation,
                profile,
                status: p.status.clone(),
            },
        );
        drop(defined);
        let _ = self.changed.send(name);
    }

    fn remove(&self, name: &str) {
        let removed = self
            .defined
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .is_some();
        if removed {
            let _ = self.changed.send(name.to_owned());
        }
    }
}

/// Keeps `providers` current from the API server, cluster-wide (an `ApiProvider` is
/// cluster-scoped). `Providers::listed` answers once the first list is in.
pub(super) async fn watch_providers(client: Client, providers: Arc<Providers>, lists: watcher::Config) {
    let api: Api<ApiProvider> = Api::all(client);
    let mut synced = false;
    watcher(api, lists.any_semantic())
        .default_backoff()
        .for_each(|event| {
            match event {
                Ok(event) => {
                    let done = matches!(event, watcher::Event::InitDone);
                    providers.absorb(event);
                    if done && !synced {
                        synced = true;
                        tracing::info!("listed ApiProviders");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ApiProvider watch failed (is crds/apiproviders.tenantcred.dev.yaml applied?); retrying");
                }
            }
            std::future::ready(())
        })
        .await;
}

/// Wakes the credentials of a scope that name a provider whose definition changed.
pub(super) async fn wake_on_change(
    cache: Arc<Cache>,
    mut changed: broadcast::Receiver<String>,
    wake: impl Fn(CredentialRef),
) {
    loop {
        let name = match changed.recv().await {
            Ok(name) => Some(name),
            // Missed some: wake every credential naming any defined provider.
            Err(broadcast::error::RecvError::Lagged(_)) => None,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for tac in cache.store().state() {
            if report::wakes(name.as_deref(), tac.provider_name().as_deref()) {
                wake(credential_key(&*tac));
            }
        }
    }
}

/// While leading: each provider's status, as `decide::provider::report` says when and whether.
pub(super) async fn report(client: Client, providers: Arc<Providers>, scopes: Vec<Arc<Cache>>) {
    providers.listed().await;
    let mut changed = providers.subscribe();
    loop {
        if providers.is_defined() {
            let counts = count(&providers, &scopes);
            write_statuses(&client, &providers, counts, Timestamp::now()).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(report::next(Jitter::random())) => {}
            _ = changed.recv() => tokio::time::sleep(report::SETTLE).await,
        }
    }
}

/// Credentials and Ready credentials per defined provider, over every scope's cache.
fn count(providers: &Providers, scopes: &[Arc<Cache>]) -> HashMap<String, Counts> {
    let mut counts: HashMap<String, Counts> = providers
        .defined
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .keys()
        .map(|k| (k.clone(), Counts::default()))
        .collect();
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
    let writes: Vec<(String, ApiProviderStatus)> = {
        let defined = providers.defined.read().unwrap_or_else(PoisonError::into_inner);
        defined
            .iter()
            .filter_map(|(name, d)| {
                let c = counts.get(name).copied().unwrap_or_default();
                let verdict = d.profile.as_ref().map(|_| ());
                report::to_write(d.status.as_ref(), d.generation, verdict, name, c, now)
                    .map(|want| (name.clone(), want))
            })
            .collect()
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    for (name, status) in writes {
        let patch = serde_json::json!({ "status": status });
        match api.patch_status(&name, &params, &Patch::Merge(&patch)).await {
            Ok(written) => {
                if let Some(d) = providers
                    .defined
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_mut(&name)
                {
                    d.status = written.status;
                }
            }
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
        let reporting = tokio::spawn(report(ctx.client.clone(), providers.clone(), Vec::new()));
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
        assert!(!ctx.providers.is_defined());
    }
}
