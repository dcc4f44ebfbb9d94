//! Routing: a request path to its collection, namespace, name and subresource, and the dispatch
//! of each verb.

use super::*;

impl ApiServer {
    pub(super) async fn handle_parts(&self, parts: http::request::Parts, bytes: Bytes) -> Response<Body> {
        let path = parts.uri.path().to_owned();
        let query: HashMap<String, String> = parts
            .uri
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let meta_only = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let Some(route) = parse_path(&path) else {
            return respond(404, &status_json(&err(404, "NotFound", format!("no route for {path}"))));
        };
        let (verb, resource) = request_key(&parts.method, &parts.uri, &content_type);
        if let Some(code) = self.lock().requests.record(verb, &resource) {
            return respond(code, &status_json(&err(code, "InternalError", "injected fault")));
        }
        if verb == "watch" {
            return self.watch(route, &query, meta_only);
        }
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes).or_else(|_| serde_yaml::from_slice(&bytes)) {
                Ok(v) => v,
                Err(e) => {
                    return respond(400, &status_json(&err(400, "BadRequest", format!("body: {e}"))));
                }
            }
        };
        let manager = query.get("fieldManager").cloned().unwrap_or_else(|| "unknown".into());
        let force = query.get("force").is_some_and(|f| f == "true");
        let result = match verb {
            "get" => self.get_one(&route),
            "list" => self.list_coll(&route, &query),
            "create" => {
                let mut st = self.lock();
                let ns = route.ns.clone().unwrap_or_default();
                self.create_locked(&mut st, &route.coll, &ns, body, &manager)
            }
            "update" => self.put(&route, body, &manager),
            "apply" => self.apply(&route, body, &manager, force),
            "patch" => self.patch(&route, body, &content_type, &manager),
            "delete" => self.delete_one(&route),
            _ => Err(err(405, "MethodNotAllowed", "unsupported")),
        };
        match result {
            Ok(v) if meta_only => respond(200, &to_meta(&v)),
            Ok(v) => respond(200, &v),
            Err(e) => respond(e.code, &status_json(&e)),
        }
    }

    pub(super) fn key(route: &Route) -> Result<Key, ApiError> {
        let name = route
            .name
            .clone()
            .ok_or_else(|| err(405, "MethodNotAllowed", "needs a name"))?;
        Ok((route.coll.clone(), route.ns.clone().unwrap_or_default(), name))
    }

    pub(super) fn get_one(&self, route: &Route) -> Result<Value, ApiError> {
        let key = Self::key(route)?;
        self.lock().objects.get(&key).cloned().ok_or_else(|| not_found(&key))
    }
}

pub(crate) struct Route {
    pub(crate) coll: Coll,
    pub(crate) ns: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) sub: Option<String>,
}

/// A request as the API server counts it in `apiserver_request_total`: the operator's own
/// naming (`tenantcred::client::verb_and_resource`, RBAC's verbs), with server-side apply
/// patches told apart as `apply`.
pub(crate) fn request_key(method: &http::Method, uri: &http::Uri, content_type: &str) -> (&'static str, String) {
    match tenantcred::client::verb_and_resource(method, uri) {
        ("patch", resource) if content_type.contains("apply-patch") => ("apply", resource),
        key => key,
    }
}

pub(crate) fn parse_path(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let coll = Coll {
        group: group.into(),
        version: version.into(),
        plural: (*rest.first()?).into(),
    };
    Some(Route {
        coll,
        ns,
        name: rest.get(1).map(|s| (*s).to_owned()),
        sub: rest.get(2).map(|s| (*s).to_owned()),
    })
}
