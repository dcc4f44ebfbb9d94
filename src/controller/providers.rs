//! The `ApiProvider` objects: watched cluster-wide (leader and standby alike), each read into a
//! profile once per generation (`decide::provider::definition`), looked up by every reconcile;
//! a change wakes the credentials that name the provider. The leader reports each provider's
//! status (`decide::provider::status`), written only when it changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{broadcast, watch};

use super::cache::{Cache, CredentialRef, credential_key};
use crate::crd::provider::{ApiProvider, ApiProviderStatus};
use crate::decide::conditions::{self, Type};
use crate::decide::provider::definition::{self, Refusal};
use crate::decide::provider::status::{self, Counts};
use crate::decide::provider::{self as provider_core, Found, Profile};
use crate::decide::schedule::Jitter;
use crate::decide::secret::FIELD_MANAGER;

/// One definition as read.
struct Defined {
    generation: Option<i64>,
    profile: Result<Arc<Profile>, Refusal>,
    status: Option<ApiProviderStatus>,
}

/// Probes per minute of the last hour, per provider: what `probesLastHour` reports.
#[derive(Default)]
struct Spend {
    /// (minute since the epoch, probes in it), oldest first, at most 60.
    minutes: std::collections::VecDeque<(i64, u32)>,
}

impl Spend {
    fn add(&mut self, now: Timestamp) {
        let minute = now.as_second().div_euclid(60);
        match self.minutes.back_mut() {
            Some((m, n)) if *m == minute => *n = n.saturating_add(1),
            _ => self.minutes.push_back((minute, 1)),
        }
        self.trim(minute);
    }

    fn trim(&mut self, minute: i64) {
        while self.minutes.front().is_some_and(|(m, _)| *m <= minute - 60) {
            self.minutes.pop_front();
        }
    }

    fn last_hour(&mut self, now: Timestamp) -> u32 {
        self.trim(now.as_second().div_euclid(60));
        self.minutes.iter().map(|(_, n)| *n).sum()
    }
}

pub struct Providers {
    defined: RwLock<HashMap<String, Defined>>,
    /// Names seen during a re-list (a definition missing at its end was deleted).
    relisting: Mutex<Option<Vec<String>>>,
    listed: watch::Sender<bool>,
    changed: broadcast::Sender<String>,
    spend: Mutex<HashMap<String, Spend>>,
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
        spend.get_mut(name).map_or(0, |s| s.last_hour(now))
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
            let names = tac.provider_name();
            let hit = match (&name, names.as_deref()) {
                (Some(n), Some(p)) => n == p,
                (None, Some(p)) => !crate::decide::provider::builtin::is_builtin(p),
                _ => false,
            };
            if hit {
                wake(credential_key(&*tac));
            }
        }
    }
}

/// How often the leader recounts each provider's credentials and probes.
const REPORT_EVERY: Duration = Duration::from_secs(300);

/// While leading: each provider's status, at once after a definition changes and every
/// `REPORT_EVERY` (jittered), written only when it differs from what the object holds.
pub(super) async fn report(client: Client, providers: Arc<Providers>, scopes: Vec<Arc<Cache>>) {
    providers.listed().await;
    let mut changed = providers.subscribe();
    loop {
        if providers.is_defined() {
            let counts = count(&providers, &scopes);
            write_statuses(&client, &providers, counts).await;
        }
        let period = Jitter::random().scale(REPORT_EVERY, 0.9, 1.1);
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = changed.recv() => {
                // Let a burst of edits settle into one write.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
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
            let Some(name) = tac.provider_name() else { continue };
            let Some(c) = counts.get_mut(&name) else { continue };
            c.credentials = c.credentials.saturating_add(1);
            let cached = tac.status().ok().flatten();
            let current = cache.status_of(&tac.metadata, cached.as_ref());
            if conditions::is_true(&current.conditions, Type::Ready) {
                c.ready = c.ready.saturating_add(1);
            }
        }
    }
    for (name, c) in counts.iter_mut() {
        c.probes_last_hour = providers.probes_last_hour(name, now);
    }
    counts
}

async fn write_statuses(client: &Client, providers: &Providers, counts: HashMap<String, Counts>) {
    let api: Api<ApiProvider> = Api::all(client.clone());
    let now = Timestamp::now();
    let writes: Vec<(String, ApiProviderStatus)> = {
        let defined = providers.defined.read().unwrap_or_else(PoisonError::into_inner);
        defined
            .iter()
            .filter_map(|(name, d)| {
                let c = counts.get(name).copied().unwrap_or_default();
                let verdict = d.profile.as_ref().map(|_| ());
                let want = status::desired(d.status.as_ref(), d.generation, verdict, name, c, now);
                (d.status.as_ref() != Some(&want)).then(|| (name.clone(), want))
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
