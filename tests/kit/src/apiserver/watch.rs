//! List (paged) and watch from a resourceVersion, with bookmarks and metadata-only answers.

use super::*;

impl ApiServer {
    pub(super) fn list_coll(&self, route: &Route, q: &HashMap<String, String>) -> Result<Value, ApiError> {
        let st = self.lock();
        let labels = q.get("labelSelector").map(|s| parse_selector(s)).unwrap_or_default();
        let fields = q.get("fieldSelector").map(|s| parse_selector(s)).unwrap_or_default();
        let limit: usize = q
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let (list_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(c) => {
                let (rv, k) = c
                    .split_once(':')
                    .ok_or_else(|| err(400, "BadRequest", "bad continue"))?;
                (rv.parse::<u64>().unwrap_or(st.rv), Some(k.to_owned()))
            }
            None => (st.rv, None),
        };
        let mut items = Vec::new();
        let mut next = None;
        for ((c, ns, name), obj) in &st.objects {
            if *c != route.coll || route.ns.as_ref().is_some_and(|n| n != ns) {
                continue;
            }
            let id = format!("{ns}/{name}");
            if after.as_ref().is_some_and(|a| id.as_str() <= a.as_str()) {
                continue;
            }
            if !matches(&labels, obj["metadata"]["labels"].as_object()) || !field_matches(&fields, obj) {
                continue;
            }
            if items.len() == limit {
                next = Some(format!("{list_rv}:{}", items_last_id(&items)));
                break;
            }
            items.push(obj.clone());
        }
        let kind = format!("{}List", kind_of(&route.coll));
        let mut meta = json!({"resourceVersion": list_rv.to_string()});
        if let Some(n) = next {
            meta["continue"] = n.into();
        }
        Ok(json!({"apiVersion": api_version(&route.coll), "kind": kind, "metadata": meta, "items": items}))
    }

    pub(super) fn watch(&self, route: Route, q: &HashMap<String, String>, meta_only: bool) -> Response<Body> {
        let labels = q.get("labelSelector").map(|s| parse_selector(s)).unwrap_or_default();
        let fields = q.get("fieldSelector").map(|s| parse_selector(s)).unwrap_or_default();
        let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(290);
        let from: u64 = q.get("resourceVersion").and_then(|r| r.parse().ok()).unwrap_or(0);
        // A streaming list (`sendInitialEvents=true`): every object as ADDED, then a bookmark
        // that marks the end of the initial events, then the watch from there (as kube-apiserver
        // does with etcd 3.6).
        let initial_events = q.get("sendInitialEvents").is_some_and(|s| s == "true");
        let (backlog, mut rx, current_rv, expired, lag, initial) = {
            let st = self.lock();
            let lag = st.watch_lag.get(&route.coll.plural).copied();
            let rx = self.tx.subscribe();
            let oldest = st.history.first().map_or(st.rv + 1, |c| c.rv);
            let expired = !initial_events && from != 0 && from + 1 < oldest;
            let backlog: Vec<Change> = if initial_events {
                Vec::new()
            } else {
                st.history.iter().filter(|c| c.rv > from).cloned().collect()
            };
            let initial: Vec<Value> = if initial_events {
                st.objects
                    .iter()
                    .filter(|((c, ns, _), _)| *c == route.coll && route.ns.as_ref().is_none_or(|n| n == ns))
                    .map(|(_, obj)| obj.clone())
                    .collect()
            } else {
                Vec::new()
            };
            (backlog, rx, st.rv, expired, lag, initial)
        };
        let from = if initial_events { current_rv } else { from };
        let (tx, out) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(1024);
        let filter = WatchFilter {
            coll: route.coll.clone(),
            ns: route.ns.clone(),
            labels,
            fields,
            meta_only,
        };
        tokio::spawn(async move {
            let line = |v: Value| Ok(http_body::Frame::data(Bytes::from(format!("{v}\n"))));
            if expired {
                let e =
                    json!({"type": "ERROR", "object": status_json(&err(410, "Expired", "too old resource version"))});
                let _ = tx.send(line(e)).await;
                return;
            }
            let mut last = from.max(if from == 0 { current_rv } else { 0 });
            if initial_events {
                for obj in initial.into_iter().filter(|o| filter.selects(o)) {
                    // A busy server streams a long list slowly too.
                    if let Some(lag) = lag {
                        tokio::time::sleep(lag).await;
                    }
                    let obj = if filter.meta_only { to_meta(&obj) } else { obj };
                    if tx.send(line(json!({"type": "ADDED", "object": obj}))).await.is_err() {
                        return;
                    }
                }
                let end = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version(&filter.coll),
                    "kind": kind_of(&filter.coll), "metadata": {"resourceVersion": current_rv.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"}}}});
                if tx.send(line(end)).await.is_err() {
                    return;
                }
            }
            for c in backlog {
                last = c.rv;
                if let Some(ev) = filter.event(&c)
                    && tx.send(line(ev)).await.is_err()
                {
                    return;
                }
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                let tick = tokio::time::sleep(Duration::from_millis(500));
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = tick => {
                        if bookmarks {
                            let bm = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version(&filter.coll), "kind": kind_of(&filter.coll), "metadata": {"resourceVersion": last.to_string()}}});
                            if tx.send(line(bm)).await.is_err() { return; }
                        }
                    }
                    msg = rx.recv() => match msg {
                        Ok(c) if c.rv > last => {
                            last = c.rv;
                            if let Some(lag) = lag {
                                tokio::time::sleep(lag).await;
                            }
                            if let Some(ev) = filter.event(&c)
                                && tx.send(line(ev)).await.is_err()
                            {
                                return;
                            }
                        }
                        Ok(_) => {}
                        // Lagged or closed: end the watch; the client re-lists, as with a real server.
                        Err(_) => return,
                    }
                }
            }
        });
        let stream = tokio_stream_from(out);
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
            .unwrap_or_else(|_| Response::new(empty()))
    }
}

pub(super) fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

pub(super) struct WatchFilter {
    coll: Coll,
    ns: Option<String>,
    labels: Vec<Req>,
    fields: Vec<Req>,
    meta_only: bool,
}

impl WatchFilter {
    pub(super) fn selects(&self, obj: &Value) -> bool {
        matches(&self.labels, obj["metadata"]["labels"].as_object()) && field_matches(&self.fields, obj)
    }

    pub(super) fn event(&self, c: &Change) -> Option<Value> {
        if c.coll != self.coll || self.ns.as_ref().is_some_and(|n| *n != c.ns) {
            return None;
        }
        let now = self.selects(&c.new);
        let before = c.old.as_ref().is_some_and(|o| self.selects(o));
        let type_ = match (c.type_, before, now) {
            ("DELETED", true, _) => "DELETED",
            ("DELETED", false, _) => return None,
            ("ADDED", _, true) => "ADDED",
            ("MODIFIED", true, true) => "MODIFIED",
            ("MODIFIED", false, true) => "ADDED",
            ("MODIFIED", true, false) => "DELETED",
            _ => return None,
        };
        let obj = if self.meta_only { to_meta(&c.new) } else { c.new.clone() };
        Some(json!({"type": type_, "object": obj}))
    }
}

pub(super) fn items_last_id(items: &[Value]) -> String {
    items
        .last()
        .map(|o| {
            format!(
                "{}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .unwrap_or_default()
}

pub(super) fn to_meta(v: &Value) -> Value {
    if v["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
        let items: Vec<Value> = v["items"].as_array().into_iter().flatten().map(to_meta).collect();
        return json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": v["metadata"], "items": items});
    }
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": v["metadata"]})
}
