//! Patches: merge, JSON and server-side apply with field ownership (managedFields) and conflicts.

use super::*;

impl ApiServer {
    pub(super) fn patch(
        &self,
        route: &Route,
        patch: Value,
        content_type: &str,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let key = Self::key(route)?;
        let mut st = self.lock();
        let old = st.objects.get(&key).cloned().ok_or_else(|| not_found(&key))?;
        let mut new = old.clone();
        if content_type.contains("json-patch") {
            let ops: Vec<Value> =
                serde_json::from_value(patch.clone()).map_err(|e| err(400, "BadRequest", e.to_string()))?;
            // Like the real server, `test` of a missing path against null succeeds.
            let ops: Vec<Value> = ops
                .into_iter()
                .filter(|op| {
                    !(op["op"] == "test"
                        && op["value"].is_null()
                        && new.pointer(op["path"].as_str().unwrap_or("")).is_none())
                })
                .collect();
            let p: json_patch::Patch =
                serde_json::from_value(Value::Array(ops)).map_err(|e| err(400, "BadRequest", e.to_string()))?;
            json_patch::patch(&mut new, &p).map_err(|e| err(422, "Invalid", format!("json patch: {e}")))?;
        } else {
            json_patch::merge(&mut new, &patch);
        }
        // A resourceVersion in a patch is a precondition.
        if patch["metadata"]["resourceVersion"].is_null() {
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        }
        self.update_locked(&mut st, &key, old, new, route.sub.as_deref(), manager)
    }

    pub(super) fn apply(&self, route: &Route, applied: Value, manager: &str, force: bool) -> Result<Value, ApiError> {
        let key = Self::key(route)?;
        let sub = route.sub.as_deref();
        let mut st = self.lock();
        let in_scope = |p: &Vec<String>| match sub {
            Some("status") => p.first().is_some_and(|f| f == "status"),
            _ => user_path(p) && (!key.0.has_status_subresource() || p.first().is_none_or(|f| f != "status")),
        };
        let mut applied = applied;
        normalize(&key.0, &mut applied);
        let applied_leaves: BTreeMap<Vec<String>, Value> =
            leaf_values(&applied).into_iter().filter(|(p, _)| in_scope(p)).collect();
        let Some(old) = st.objects.get(&key).cloned() else {
            if sub.is_some() {
                return Err(not_found(&key));
            }
            let mut obj = applied.clone();
            obj["metadata"]["name"] = key.2.clone().into();
            let paths = applied_leaves.keys().cloned().collect();
            return self.create_owned(&mut st, &key.0, &key.1, obj, manager, Some(paths));
        };
        // As the real server: a resourceVersion in the applied object is a precondition.
        if let Some(rv) = applied["metadata"]["resourceVersion"].as_str()
            && Some(rv) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(err(
                409,
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let current = leaf_values(&old);
        let owners = st.owners.get(&key).cloned().unwrap_or_default();
        let mut conflicts = Vec::new();
        for (m, (_, set)) in &owners {
            if m == manager {
                continue;
            }
            for p in set.iter().filter(|p| applied_leaves.contains_key(*p)) {
                if current.get(p) != applied_leaves.get(p) {
                    conflicts.push(format!("{} (owned by {m})", p.join(".")));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(err(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflicts: {}",
                    conflicts.len(),
                    conflicts.join(", ")
                ),
            ));
        }
        let mine: BTreeSet<Vec<String>> = owners.get(manager).map(|(_, s)| s.clone()).unwrap_or_default();
        let others: BTreeSet<Vec<String>> = owners
            .iter()
            .filter(|(m, _)| *m != manager)
            .flat_map(|(_, (_, s))| s.clone())
            .collect();
        let mut new = old.clone();
        for p in mine
            .iter()
            .filter(|p| in_scope(p) && !applied_leaves.contains_key(*p) && !others.contains(*p))
        {
            remove_path(&mut new, p);
        }
        for (p, v) in &applied_leaves {
            set_path(&mut new, p, v.clone());
        }
        let mut owners = owners;
        for (m, (_, set)) in owners.iter_mut() {
            if m != manager && force {
                set.retain(|p| !applied_leaves.contains_key(p));
            }
        }
        let keep: BTreeSet<Vec<String>> = mine.into_iter().filter(|p| !in_scope(p)).collect();
        owners.insert(
            manager.into(),
            (
                "Apply".into(),
                keep.into_iter().chain(applied_leaves.keys().cloned()).collect(),
            ),
        );
        owners.retain(|_, (_, s)| !s.is_empty());
        st.owners.insert(key.clone(), owners);
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        // Ownership was settled above; update_locked must not re-assign it.
        self.update_locked(&mut st, &key, old, new, sub, "-")
    }
}

pub(super) fn spec_of(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

pub(super) fn comparable(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    o
}

/// Paths a client may own (server-set metadata excluded).
pub(super) fn user_path(p: &[String]) -> bool {
    match p {
        [first, ..] if first == "apiVersion" || first == "kind" => false,
        [m, f, ..] if m == "metadata" => {
            matches!(f.as_str(), "labels" | "annotations" | "ownerReferences" | "finalizers")
        }
        [m] if m == "metadata" => false,
        _ => true,
    }
}

pub(super) fn leaf_paths(v: &Value, prefix: &[String]) -> Vec<Vec<String>> {
    leaf_values_at(v, prefix).into_iter().map(|(p, _)| p).collect()
}

pub(super) fn leaf_values(v: &Value) -> BTreeMap<Vec<String>, Value> {
    leaf_values_at(v, &[]).into_iter().collect()
}

pub(super) fn leaf_values_at(v: &Value, prefix: &[String]) -> Vec<(Vec<String>, Value)> {
    match v {
        Value::Object(m) if !m.is_empty() => m
            .iter()
            .filter(|(_, v)| !v.is_null())
            .flat_map(|(k, v)| {
                let mut p = prefix.to_vec();
                p.push(k.clone());
                leaf_values_at(v, &p)
            })
            .collect(),
        _ if prefix.is_empty() => Vec::new(),
        other => vec![(prefix.to_vec(), other.clone())],
    }
}

pub(super) fn set_path(obj: &mut Value, p: &[String], v: Value) {
    let mut cur = obj;
    for k in &p[..p.len() - 1] {
        if !cur[k.as_str()].is_object() {
            cur[k.as_str()] = json!({});
        }
        cur = &mut cur[k.as_str()];
    }
    cur[p[p.len() - 1].as_str()] = v;
}

pub(super) fn remove_path(obj: &mut Value, p: &[String]) {
    pub(super) fn go(cur: &mut Value, p: &[String]) {
        let Some(m) = cur.as_object_mut() else { return };
        if p.len() == 1 {
            m.remove(&p[0]);
            return;
        }
        if let Some(child) = m.get_mut(&p[0]) {
            go(child, &p[1..]);
            if child.as_object().is_some_and(|c| c.is_empty()) {
                m.remove(&p[0]);
            }
        }
    }
    go(obj, p);
}

pub(super) fn render_managed_fields(owners: Option<&Owners>, obj: &mut Value, coll: &Coll) {
    let entries: Vec<Value> = owners
        .into_iter()
        .flatten()
        .filter(|(_, (_, s))| !s.is_empty())
        .map(|(m, (op, set))| {
            let mut tree = json!({});
            for p in set {
                let fp: Vec<String> = p.iter().map(|k| format!("f:{k}")).collect();
                set_path(&mut tree, &fp, json!({}));
            }
            let status_only = set.iter().all(|p| p.first().is_some_and(|f| f == "status"));
            let mut e = json!({"manager": m, "operation": op, "apiVersion": api_version(coll), "fieldsType": "FieldsV1", "fieldsV1": tree});
            if status_only && coll.has_status_subresource() {
                e["subresource"] = "status".into();
            }
            e
        })
        .collect();
    if entries.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = Value::Array(entries);
    }
}
