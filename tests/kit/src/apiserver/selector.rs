//! Label and field selectors.

use super::*;

#[derive(Clone, Debug, Default)]
pub(super) struct Req {
    key: String,
    op: &'static str,
    values: Vec<String>,
}

pub(super) fn parse_selector(s: &str) -> Vec<Req> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    let mut parts = Vec::new();
    for ch in s.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    parts.push(cur);
    for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let req = if let Some((k, v)) = p.split_once("!=") {
            Req {
                key: k.trim().into(),
                op: "!=",
                values: vec![v.trim().into()],
            }
        } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
            Req {
                key: k.trim().into(),
                op: "=",
                values: vec![v.trim().into()],
            }
        } else if let Some((k, v)) = p.split_once(" notin ") {
            Req {
                key: k.trim().into(),
                op: "notin",
                values: set_values(v),
            }
        } else if let Some((k, v)) = p.split_once(" in ") {
            Req {
                key: k.trim().into(),
                op: "in",
                values: set_values(v),
            }
        } else if let Some(k) = p.strip_prefix('!') {
            Req {
                key: k.trim().into(),
                op: "!exists",
                values: vec![],
            }
        } else {
            Req {
                key: p.into(),
                op: "exists",
                values: vec![],
            }
        };
        out.push(req);
    }
    out
}

pub(super) fn set_values(v: &str) -> Vec<String> {
    v.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect()
}

pub(super) fn matches(reqs: &[Req], labels: Option<&serde_json::Map<String, Value>>) -> bool {
    reqs.iter().all(|r| {
        let v = labels.and_then(|l| l.get(&r.key)).and_then(|v| v.as_str());
        match r.op {
            "=" => v == Some(r.values[0].as_str()),
            "!=" => v != Some(r.values[0].as_str()),
            "in" => v.is_some_and(|v| r.values.iter().any(|x| x == v)),
            "notin" => v.is_none_or(|v| !r.values.iter().any(|x| x == v)),
            "exists" => v.is_some(),
            "!exists" => v.is_none(),
            _ => false,
        }
    })
}

pub(super) fn field_matches(reqs: &[Req], obj: &Value) -> bool {
    reqs.iter().all(|r| {
        let path = format!("/{}", r.key.replace('.', "/"));
        let v = obj.pointer(&path).and_then(|v| v.as_str());
        match r.op {
            "=" => v == Some(r.values[0].as_str()),
            "!=" => v != Some(r.values[0].as_str()),
            _ => true,
        }
    })
}
