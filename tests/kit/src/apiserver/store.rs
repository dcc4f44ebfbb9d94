//! The object store: create, update, delete with finalizers and owner-reference garbage
//! collection, resourceVersions and generation, what the real server validates.

use super::*;

impl ApiServer {
    pub(super) fn create_locked(
        &self,
        st: &mut State,
        coll: &Coll,
        ns: &str,
        obj: Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        self.create_owned(st, coll, ns, obj, manager, None)
    }

    /// Creates; `applied` is the field set of a server-side apply (else the creator owns every field).
    pub(super) fn create_owned(
        &self,
        st: &mut State,
        coll: &Coll,
        ns: &str,
        mut obj: Value,
        manager: &str,
        applied: Option<BTreeSet<Vec<String>>>,
    ) -> Result<Value, ApiError> {
        if !obj["metadata"]["name"].is_string() {
            let prefix = obj["metadata"]["generateName"]
                .as_str()
                .ok_or_else(|| err(422, "Invalid", "name or generateName required"))?;
            obj["metadata"]["name"] = format!("{prefix}{:05x}", st.uid + 1).into();
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let key = (coll.clone(), ns.to_owned(), name);
        if st.objects.contains_key(&key) {
            return Err(err(
                409,
                "AlreadyExists",
                format!("{} {:?} already exists", coll.plural, key.2),
            ));
        }
        st.uid += 1;
        let meta = obj["metadata"]
            .as_object_mut()
            .ok_or_else(|| err(422, "Invalid", "metadata"))?;
        meta.insert("uid".into(), format!("uid-{:06}", st.uid).into());
        if !ns.is_empty() {
            meta.insert("namespace".into(), ns.into());
        }
        meta.insert("creationTimestamp".into(), now_rfc3339().into());
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        if coll.has_generation() {
            meta.insert("generation".into(), 1.into());
        }
        obj["apiVersion"] = api_version(coll).into();
        obj["kind"] = kind_of(coll).into();
        normalize(coll, &mut obj);
        validate(coll, &obj)?;
        let mut owners = Owners::new();
        let entry = match applied {
            Some(paths) => ("Apply".to_owned(), paths),
            None => (
                "Update".to_owned(),
                leaf_paths(&obj, &[]).into_iter().filter(|p| user_path(p)).collect(),
            ),
        };
        owners.insert(manager.into(), entry);
        st.owners.insert(key.clone(), owners);
        Ok(self.store(st, key, None, obj))
    }

    /// Writes `new` as the next version of `key` (after the checks), or keeps `old` when nothing
    /// changed: no resourceVersion bump, no event.
    pub(super) fn update_locked(
        &self,
        st: &mut State,
        key: &Key,
        old: Value,
        mut new: Value,
        sub: Option<&str>,
        manager: &str,
    ) -> Result<Value, ApiError> {
        if let Some(rv) = new["metadata"]["resourceVersion"].as_str()
            && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or_default()
        {
            return Err(err(
                409,
                "Conflict",
                format!(
                    "the object has been modified; please apply your changes to the latest version ({rv} is stale)"
                ),
            ));
        }
        let coll = &key.0;
        if sub == Some("status") {
            let status = new.get("status").cloned();
            new = old.clone();
            match status {
                Some(s) if !s.is_null() => new["status"] = s,
                _ => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        } else if coll.has_status_subresource() {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        // The server owns these metadata fields.
        for f in [
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "deletionTimestamp",
            "generation",
        ] {
            match old["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        new["apiVersion"] = api_version(coll).into();
        new["kind"] = kind_of(coll).into();
        normalize(coll, &mut new);
        validate(coll, &new)?;
        if coll.has_generation() && spec_of(&old) != spec_of(&new) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = (g + 1).into();
        }
        // Non-apply writers take ownership of what they changed.
        let changed: BTreeSet<Vec<String>> = {
            let before: BTreeMap<_, _> = leaf_values(&old);
            leaf_values(&new)
                .into_iter()
                .filter(|(p, v)| before.get(p) != Some(v) && user_path(p))
                .map(|(p, _)| p)
                .collect()
        };
        if !changed.is_empty() && manager != "-" {
            let owners = st.owners.entry(key.clone()).or_default();
            for (_, (_, set)) in owners.iter_mut() {
                set.retain(|p| !changed.contains(p));
            }
            owners
                .entry(manager.into())
                .or_insert_with(|| ("Update".into(), BTreeSet::new()))
                .1
                .extend(changed);
        }
        Ok(self.commit(st, key, old, new))
    }

    pub(super) fn commit(&self, st: &mut State, key: &Key, old: Value, mut new: Value) -> Value {
        render_managed_fields(st.owners.get(key), &mut new, &key.0);
        if comparable(&old) == comparable(&new) {
            return old;
        }
        let finalizing = new["metadata"]["deletionTimestamp"].is_string()
            && new["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty());
        let stored = self.store(st, key.clone(), Some(old), new);
        if finalizing {
            let _ = self.delete_locked(st, key);
        }
        stored
    }

    pub(super) fn store(&self, st: &mut State, key: Key, old: Option<Value>, mut new: Value) -> Value {
        st.rv += 1;
        new["metadata"]["resourceVersion"] = st.rv.to_string().into();
        if old.is_none() {
            render_managed_fields(st.owners.get(&key), &mut new, &key.0);
        }
        let change = Change {
            rv: st.rv,
            coll: key.0.clone(),
            ns: key.1.clone(),
            type_: if old.is_some() { "MODIFIED" } else { "ADDED" },
            old,
            new: new.clone(),
        };
        st.objects.insert(key, new.clone());
        self.record(st, change);
        new
    }

    pub(super) fn record(&self, st: &mut State, change: Change) {
        st.history.push(change.clone());
        if st.history.len() > 400_000 {
            st.history.drain(..100_000);
        }
        let _ = self.tx.send(change);
    }

    pub(super) fn put(&self, route: &Route, body: Value, manager: &str) -> Result<Value, ApiError> {
        let key = Self::key(route)?;
        let mut st = self.lock();
        let old = st.objects.get(&key).cloned().ok_or_else(|| not_found(&key))?;
        self.update_locked(&mut st, &key, old, body, route.sub.as_deref(), manager)
    }

    pub(super) fn delete_one(&self, route: &Route) -> Result<Value, ApiError> {
        let key = Self::key(route)?;
        let mut st = self.lock();
        let old = st.objects.get(&key).cloned().ok_or_else(|| not_found(&key))?;
        let has_finalizers = old["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old["metadata"]["deletionTimestamp"].is_string() {
                return Ok(old);
            }
            let mut new = old.clone();
            new["metadata"]["deletionTimestamp"] = now_rfc3339().into();
            if key.0.has_generation() {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                new["metadata"]["generation"] = (g + 1).into();
            }
            return Ok(self.commit(&mut st, &key, old, new));
        }
        self.delete_locked(&mut st, &key).ok_or_else(|| not_found(&key))
    }

    /// Removes the object and, as the garbage collector would, everything it owns.
    pub(super) fn delete_locked(&self, st: &mut State, key: &Key) -> Option<Value> {
        let obj = st.objects.remove(key)?;
        st.owners.remove(key);
        st.rv += 1;
        let mut gone = obj.clone();
        gone["metadata"]["resourceVersion"] = st.rv.to_string().into();
        let change = Change {
            rv: st.rv,
            coll: key.0.clone(),
            ns: key.1.clone(),
            type_: "DELETED",
            old: Some(obj.clone()),
            new: gone.clone(),
        };
        self.record(st, change);
        let uid = obj["metadata"]["uid"].clone();
        let dependents: Vec<Key> = st
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for d in dependents {
            let _ = self.delete_locked(st, &d);
        }
        Some(gone)
    }
}

/// Secrets: `stringData` is folded into `data` (base64), as the real server does.
pub(super) fn normalize(coll: &Coll, obj: &mut Value) {
    if coll.plural == "secrets"
        && let Some(sd) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
        && let Some(sd) = sd.as_object()
    {
        for (k, v) in sd {
            obj["data"][k] = b64(v.as_str().unwrap_or_default().as_bytes()).into();
        }
    }
}

/// What the real API server refuses as invalid (422) for the kinds the operator writes: label
/// values that are not label values, and Secrets over 1 MiB of data.
pub(super) fn validate(coll: &Coll, obj: &Value) -> Result<(), ApiError> {
    let label_ok = |v: &str| {
        v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
            && v.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
    };
    for (key, value) in obj["metadata"]["labels"].as_object().into_iter().flatten() {
        let v = value.as_str().unwrap_or_default();
        if !label_ok(v) {
            return Err(err(
                422,
                "Invalid",
                format!(
                    "{} {:?} is invalid: metadata.labels: Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (label {key})",
                    kind_of(coll),
                    obj["metadata"]["name"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
    if coll.plural == "secrets" {
        let size: usize = obj["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| k.len() + unb64(v.as_str().unwrap_or_default()).len())
            .sum();
        if size > 1024 * 1024 {
            return Err(err(
                422,
                "Invalid",
                format!(
                    "Secret {:?} is invalid: data: Too long: must have at most 1048576 bytes",
                    obj["metadata"]["name"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
    Ok(())
}
