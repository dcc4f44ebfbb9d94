//! Issue 13: what a user reads in docs/ is what the code does. The field reference is generated
//! from the CRD (and fails when it drifts; `TENANTCRED_BLESS=1` rewrites it); every reason,
//! event, metric, alert, CLI verb, operator flag and Helm value that exists in code is in the
//! docs; and no document links outside the repository.

use std::collections::BTreeSet;

use serde_json::Value;
use tenantcred::decide::conditions::Reason;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn missing_from(doc: &str, names: impl IntoIterator<Item = String>) -> Vec<String> {
    let text = read(doc);
    names
        .into_iter()
        .filter(|n| !text.contains(&format!("`{n}`")))
        .collect()
}

const BEGIN: &str = "<!-- BEGIN GENERATED FIELDS: cargo test --test it docs (TENANTCRED_BLESS=1 rewrites) -->\n";
const END: &str = "<!-- END GENERATED FIELDS -->";

fn type_of(v: &Value) -> String {
    let mut t = match v["type"].as_str() {
        Some("array") => format!("[]{}", v["items"]["type"].as_str().unwrap_or("object")),
        Some(t) => t.to_owned(),
        None => "object".to_owned(),
    };
    if let Some(f) = v["format"].as_str() {
        t = format!("{t} ({f})");
    }
    t
}

fn rows(prefix: &str, schema: &Value, out: &mut String) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    for (name, v) in props {
        let path = format!("{prefix}.{name}");
        let mut notes = Vec::new();
        if let Some(values) = v["enum"].as_array() {
            let values: Vec<String> = values
                .iter()
                .map(|x| format!("`{}`", x.as_str().unwrap_or_default()))
                .collect();
            notes.push(format!("one of {}", values.join(", ")));
        }
        if !v["default"].is_null() {
            notes.push(format!("default `{}`", v["default"].to_string().trim_matches('"')));
        }
        let description = v["description"]
            .as_str()
            .unwrap_or_default()
            .replace('\n', " ")
            .replace('|', "\\|");
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        };
        out.push_str(&format!("| `{path}` | {} | {description}{notes} |\n", type_of(v)));
        rows(&path, v, out);
        if v["type"] == "array" {
            rows(&format!("{path}[]"), &v["items"], out);
        }
    }
}

fn generated_reference() -> String {
    let mut out = String::from(BEGIN);
    for (_, crd) in tenantcred::crd::definitions() {
        let kind = crd.spec.names.kind.clone();
        let crd = serde_json::to_value(crd).expect("CRD");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        for part in ["spec", "status"] {
            out.push_str(&format!(
                "\n### {kind} {part}\n\n| Field | Type | Meaning |\n|---|---|---|\n"
            ));
            rows(part, &schema[part], &mut out);
        }
    }
    out.push('\n');
    out.push_str(END);
    out
}

#[test]
fn the_field_reference_is_the_crd() {
    let path = root().join("docs/reference.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = generated_reference();
    let (Some(start), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        panic!("docs/reference.md needs the generated-fields markers");
    };
    let current = &text[start..end + END.len()];
    if current != generated {
        if std::env::var_os("TENANTCRED_BLESS").is_some() {
            let updated = format!("{}{generated}{}", &text[..start], &text[end + END.len()..]);
            std::fs::write(&path, updated).expect("write docs/reference.md");
        } else {
            panic!("docs/reference.md drifted from src/crd.rs: run TENANTCRED_BLESS=1 cargo test --test it docs");
        }
    }
}

#[test]
fn every_reason_has_an_entry_with_an_action() {
    let text = read("docs/conditions.md");
    for r in Reason::ALL {
        let heading = format!("### `{}`", r.as_str());
        let Some(at) = text.find(&heading) else {
            panic!("docs/conditions.md has no entry {heading}");
        };
        let entry = &text[at..];
        let entry = &entry[..entry[3..].find("\n### ").map_or(entry.len(), |e| e + 3)];
        assert!(entry.contains("**What to do:**"), "{heading} says what to do");
    }
}

#[test]
fn every_event_reason_is_documented() {
    // Condition reasons are events too (a failure, a recovery, ExpiringSoon): checked above.
    let reasons: BTreeSet<String> = tenantcred::decide::events::Occurrence::ALL
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect();
    let missing = missing_from("docs/conditions.md", reasons);
    assert!(missing.is_empty(), "events not in docs/conditions.md: {missing:?}");
}

/// Issue 36: every header an ApiProvider may not send its token in is listed where admins read.
#[test]
fn every_forbidden_auth_header_is_documented() {
    let names = tenantcred::crd::provider::FORBIDDEN_HEADERS
        .iter()
        .map(|h| h.to_string());
    let missing = missing_from("docs/providers.md", names);
    assert!(
        missing.is_empty(),
        "refused auth.header names not in docs/providers.md: {missing:?}"
    );
}

#[test]
fn every_metric_and_alert_is_documented() {
    let m = crate::dashboard::populated();
    let names: BTreeSet<String> = m
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split(' ');
            let name = parts.next()?;
            Some(match parts.next()? {
                "counter" => format!("{name}_total"),
                _ => name.to_owned(),
            })
        })
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    let missing = missing_from("docs/metrics.md", names);
    assert!(missing.is_empty(), "metrics not in docs/metrics.md: {missing:?}");
    let rules = read("charts/tenantcred/templates/prometheusrule.yaml");
    let alerts: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect();
    assert!(alerts.len() >= 4);
    let text = read("docs/metrics.md");
    for a in alerts {
        assert!(
            text.contains(&format!("### `{a}`")),
            "alert {a} has no runbook in docs/metrics.md"
        );
    }
}

fn help(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantcred"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run tenantcred --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_cli_verb_and_flag_is_documented() {
    let top = help(&[]);
    let verbs: Vec<String> = top
        .split("Commands:")
        .nth(1)
        .unwrap_or_default()
        .split("Options:")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| *v != "help")
        .map(str::to_owned)
        .collect();
    assert!(verbs.len() >= 6, "{verbs:?}");
    let missing = missing_from("docs/cli.md", verbs.iter().map(|v| format!("tenantcred {v}")));
    assert!(missing.is_empty(), "CLI verbs not in docs/cli.md: {missing:?}");
    let flags = |verb: &str| -> Vec<String> {
        help(&[verb])
            .lines()
            .filter_map(|l| l.split("--").nth(1))
            .filter_map(|f| f.split([' ', ',', '=']).next())
            .filter(|f| *f != "help" && !f.is_empty())
            .map(|f| format!("--{f}"))
            .collect()
    };
    let missing = missing_from("docs/operations.md", flags("run"));
    assert!(
        missing.is_empty(),
        "`tenantcred run` flags not in docs/operations.md: {missing:?}"
    );
    for verb in ["check", "status", "probe-now"] {
        let missing = missing_from("docs/cli.md", flags(verb));
        assert!(
            missing.is_empty(),
            "`tenantcred {verb}` flags not in docs/cli.md: {missing:?}"
        );
    }
}

#[test]
fn every_helm_value_is_documented() {
    let values: serde_yaml::Value = serde_yaml::from_str(&read("charts/tenantcred/values.yaml")).expect("values");
    fn leaves(prefix: &str, v: &serde_yaml::Value, out: &mut Vec<String>) {
        match v {
            serde_yaml::Value::Mapping(m) if !m.is_empty() => {
                for (k, x) in m {
                    let k = k.as_str().unwrap_or_default();
                    let p = if prefix.is_empty() {
                        k.to_owned()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&p, x, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut all = Vec::new();
    leaves("", &values, &mut all);
    let missing = missing_from("docs/operations.md", all);
    assert!(missing.is_empty(), "Helm values not in docs/operations.md: {missing:?}");
}

#[test]
fn docs_stay_inside_the_repository() {
    let mut files = vec![root().join("README.md")];
    for dir in ["docs", "src", "charts/tenantcred", "examples"] {
        let mut stack = vec![root().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(
            !text.contains("../shared"),
            "{} points outside the repository (../shared)",
            f.display()
        );
        if f.extension().is_some_and(|e| e == "md") {
            // Relative links must resolve inside the repository.
            for (i, _) in text.match_indices("](") {
                let target: String = text[i + 2..].chars().take_while(|c| *c != ')').collect();
                if target.starts_with("http") || target.starts_with('#') || target.starts_with("mailto:") {
                    continue;
                }
                let path = target.split('#').next().unwrap_or_default();
                let resolved = f.parent().expect("parent").join(path);
                assert!(resolved.exists(), "{}: broken link {target}", f.display());
            }
        }
    }
}
