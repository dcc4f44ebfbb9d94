//! Issue 13: the Grafana dashboard and the chart's alerts query only metrics the operator
//! exports. The names are read from a real `/metrics` exposition with every family populated,
//! so a renamed or removed metric fails here, not on someone's empty panel.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tenantcred::crd::{ProbeResult, TenantApiCredential, TenantApiCredentialStatus};
use tenantcred::metrics::Metrics;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The operator's metrics with every family observed at least once.
pub fn populated() -> Metrics {
    let m = Metrics::new();
    let spec = serde_json::from_value(serde_json::json!({
        "tenant": "acme", "provider": "raise", "credentialRef": {"name": "in"}
    }))
    .expect("spec");
    let mut tac = TenantApiCredential::new("a", spec);
    tac.metadata.namespace = Some("ns".into());
    let status: TenantApiCredentialStatus = serde_json::from_value(serde_json::json!({
        "expiresAt": "2030-01-01T00:00:00Z", "lastProbeTime": "2026-01-01T00:00:00Z",
        "lastSuccessfulProbeTime": "2026-01-01T00:00:00Z", "rateLimit": {"remaining": 5},
        "conditions": []
    }))
    .expect("status");
    m.observe(&tac, &status);
    m.probed("raise", ProbeResult::Valid, Duration::from_millis(20));
    m.reconciled();
    m.reconcile_failed("kube");
    drop(m.time_reconcile());
    m.api_request("patch", "secrets".into());
    m
}

/// Every sample name the operator's `/metrics` can show.
fn exported() -> BTreeSet<String> {
    populated()
        .render()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("tenantcred_") {
        let start = i + at;
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(text.len() - start);
        let preceded_by_word = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !preceded_by_word {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains('(') => out.push(s.clone()),
                    _ => queries(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| queries(x, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_is_valid_and_queries_only_exported_metrics() {
    let text = std::fs::read_to_string(root().join("charts/tenantcred/dashboards/tenantcred.json")).expect("dashboard");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    for key in ["uid", "title", "panels", "schemaVersion", "templating"] {
        assert!(!dash[key].is_null(), "dashboard without {key}");
    }
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate panel id {}",
            p["id"]
        );
        assert!(
            p["title"].as_str().is_some_and(|t| !t.is_empty()),
            "panel without a title: {p}"
        );
        if p["type"] != "row" {
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "panel {} queries nothing", p["title"]);
            assert!(
                p["description"].as_str().is_some_and(|d| !d.is_empty()),
                "panel {} undescribed",
                p["title"]
            );
        }
    }
    let mut exprs = Vec::new();
    queries(&dash, &mut exprs);
    let exported = exported();
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(used.len() >= 8, "the dashboard queries most metrics: {used:?}");
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "queried but not exported: {unknown:?}; exported: {exported:?}"
    );
}

#[test]
fn the_alerts_query_only_exported_metrics() {
    let rules = std::fs::read_to_string(root().join("charts/tenantcred/templates/prometheusrule.yaml")).expect("rules");
    let used = metric_names(&rules);
    assert!(!used.is_empty());
    let exported = exported();
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(unknown.is_empty(), "alerts query metrics not exported: {unknown:?}");
}
