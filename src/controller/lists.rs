//! How the watches take their first list: streamed (`sendInitialEvents`, one watch that sends
//! every object and then a bookmark) where the API server offers it, which spares it building
//! pages from etcd; paged lists elsewhere (etcd before 3.6 lacks what streaming needs).

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, WatchEvent, WatchParams};

use super::cache::packed::CachedCredential;

/// `--lists`: how to list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ListMode {
    /// Stream where the API server offers it, else page (asked once at start-up).
    #[default]
    Auto,
    /// Always stream (fails to list where the API server cannot).
    Stream,
    /// Always page.
    Page,
}

/// Whether to stream, by `mode` and, for `Auto`, by asking the API server once: a streamed list
/// of credentials by a name no credential has, which costs it nothing to answer.
pub async fn stream(client: &Client, ns: Option<&str>, mode: ListMode) -> bool {
    let chosen = match mode {
        ListMode::Stream => true,
        ListMode::Page => false,
        ListMode::Auto => offered(client, ns).await,
    };
    tracing::info!(
        ?mode,
        lists = if chosen { "streamed" } else { "paged" },
        "the watches' first lists"
    );
    chosen
}

const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

async fn offered(client: &Client, ns: Option<&str>) -> bool {
    let api: Api<CachedCredential> = api_for(client, ns);
    let params = WatchParams::streaming_lists()
        .fields("metadata.name=tenantcred-streaming-list-check")
        .timeout(5);
    let first = async {
        match api.watch(&params, "0").await {
            Ok(events) => Ok(events.boxed().next().await),
            Err(e) => Err(e),
        }
    };
    // Bounded, whatever the server does with the timeout it was given.
    let answer = match tokio::time::timeout(std::time::Duration::from_secs(10), first).await {
        Err(_) => {
            tracing::info!("streaming lists are not offered (no answer within 10 s)");
            return false;
        }
        Ok(Ok(first)) => first,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "streaming lists are not offered");
            return false;
        }
    };
    match answer {
        // The end of the (empty) initial events: a server that streams lists. A plain bookmark
        // is only a watch that ignored `sendInitialEvents`.
        Some(Ok(WatchEvent::Bookmark(b)))
            if b.metadata
                .annotations
                .get(INITIAL_EVENTS_END)
                .is_some_and(|v| v == "true") =>
        {
            true
        }
        Some(Ok(WatchEvent::Error(e))) => {
            tracing::info!(error = %e.message, "streaming lists are not offered");
            false
        }
        other => {
            tracing::info!(answer = ?other.map(|a| a.is_ok()), "streaming lists are not offered");
            false
        }
    }
}

/// How the watches list: streamed (`sendInitialEvents`) where the API server offers it, pages
/// otherwise.
pub(super) fn watcher_config(streaming: bool) -> kube::runtime::watcher::Config {
    if streaming {
        kube::runtime::watcher::Config::default().streaming_lists()
    } else {
        kube::runtime::watcher::Config::default()
    }
}

/// A namespace's collection, or the whole cluster's.
pub(super) fn api_for<K>(client: &Client, ns: Option<&str>) -> kube::api::Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => kube::api::Api::namespaced(client.clone(), ns),
        None => kube::api::Api::all(client.clone()),
    }
}
