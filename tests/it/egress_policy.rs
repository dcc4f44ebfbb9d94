//! Issue 25: the chart's egress NetworkPolicy is on by default, renders without cluster access,
//! and keeps providers to the addresses the operator itself calls public: its except lists are
//! the operator's special-purpose table (`egress::address`), not a second list kept by hand.

use ipnet::IpNet;
use serde_json::{Value, json};
use tenantcred::decide::egress::address::{IPV4_SPECIAL, IPV6_GLOBAL_UNICAST, IPV6_SPECIAL, Special};

fn policy(values: Value) -> Option<Value> {
    let docs = match tenantcred_testkit::chart::render(&values) {
        Ok(docs) => docs,
        Err(why) if std::env::var("CI").is_err() => {
            eprintln!("SKIPPED: {why}");
            return None;
        }
        Err(why) => panic!("{why}"),
    };
    let mut nps: Vec<Value> = docs.into_iter().filter(|d| d["kind"] == "NetworkPolicy").collect();
    assert!(nps.len() <= 1, "{nps:?}");
    Some(nps.pop().unwrap_or(Value::Null))
}

/// The blocks of `table` inside `within` that no other block of it holds.
fn outermost(table: &[Special], within: IpNet) -> Vec<String> {
    let mut out: Vec<String> = table
        .iter()
        .filter(|s| within.contains(&s.net) && within != s.net)
        .filter(|s| !table.iter().any(|o| o.net != s.net && o.net.contains(&s.net)))
        .map(|s| s.net.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn the_default_network_policy_sends_providers_only_public_addresses() {
    let Some(np) = policy(json!({})) else { return };
    assert!(np.is_object(), "on by default");
    let providers = &np["spec"]["egress"][2];
    assert_eq!(providers["ports"][0]["port"], 443);
    let to = &providers["to"];
    assert_eq!(to[0]["ipBlock"]["cidr"], "0.0.0.0/0");
    let all_v4: IpNet = "0.0.0.0/0".parse().expect("net");
    assert_eq!(strings(&to[0]["ipBlock"]["except"]), outermost(IPV4_SPECIAL, all_v4));
    assert_eq!(to[1]["ipBlock"]["cidr"], IPV6_GLOBAL_UNICAST.to_string());
    assert_eq!(
        strings(&to[1]["ipBlock"]["except"]),
        outermost(IPV6_SPECIAL, IpNet::V6(IPV6_GLOBAL_UNICAST))
    );
    assert_eq!(
        to[2]["ipBlock"]["cidr"], "64:ff9b::/96",
        "NAT64, judged by the operator"
    );
    // Without the API server's address, its ports are open to all but link-local.
    let api = &np["spec"]["egress"][1]["to"];
    assert_eq!(strings(&api[0]["ipBlock"]["except"]), ["169.254.0.0/16"]);
}

/// Each address pattern's port as the operator reads it: the one written, 443 when none is, every
/// port (no `ports`) for `:*`.
#[test]
fn address_patterns_become_ip_blocks_of_their_own() {
    let Some(np) = policy(json!({"operator": {"allowedHosts":
        ["10.20.0.0/16", "192.168.1.5:9000", "[fd00::1]:7443", "fd00::/8", "::1", "api.example.com:8443",
         "10.30.0.0/16:8443", "[fd01::]/16:*", "127.0.0.1:*", "[::1]", "api.example.com"]},
        "networkPolicy": {"apiServerCidrs": ["10.96.0.1/32"], "allowNat64": false}}))
    else {
        return;
    };
    let egress = np["spec"]["egress"].as_array().cloned().unwrap_or_default();
    let blocks: Vec<(String, Value)> = egress[3..]
        .iter()
        .map(|r| {
            (
                r["to"][0]["ipBlock"]["cidr"].as_str().unwrap_or_default().to_owned(),
                r["ports"][0]["port"].clone(),
            )
        })
        .collect();
    assert_eq!(
        blocks,
        [
            ("10.20.0.0/16".to_owned(), json!(443)),
            ("192.168.1.5/32".to_owned(), json!(9000)),
            ("fd00::1/128".to_owned(), json!(7443)),
            ("fd00::/8".to_owned(), json!(443)),
            ("::1/128".to_owned(), json!(443)),
            ("10.30.0.0/16".to_owned(), json!(8443)),
            ("fd01::/16".to_owned(), Value::Null),
            ("127.0.0.1/32".to_owned(), Value::Null),
            ("::1/128".to_owned(), json!(443)),
        ]
    );
    let ports: Vec<Value> = egress[2]["ports"].as_array().cloned().unwrap_or_default();
    let ports: Vec<&Value> = ports.iter().map(|p| &p["port"]).collect();
    assert_eq!(ports, [&json!(443), &json!(9000), &json!(7443), &json!(8443)]);
    assert_eq!(egress[1]["to"], json!([{"ipBlock": {"cidr": "10.96.0.1/32"}}]));
    assert_eq!(egress[2]["to"].as_array().map(Vec::len), Some(2), "no NAT64 block");
}

/// A name pattern with `:*` lets the operator send to that name on every port: the providers'
/// rule follows, still to public addresses only.
#[test]
fn a_name_on_every_port_opens_every_port_to_public_addresses() {
    let Some(np) = policy(json!({"operator": {"allowedHosts": ["api.example.com:*", "10.0.0.0/8:8443"]}})) else {
        return;
    };
    let providers = &np["spec"]["egress"][2];
    assert!(providers.get("ports").is_none(), "{providers}");
    assert_eq!(providers["to"][0]["ipBlock"]["cidr"], "0.0.0.0/0");
    assert_eq!(np["spec"]["egress"][3]["ports"][0]["port"], 8443);
    let Some(np) = policy(json!({"operator": {"allowedHosts": ["127.0.0.1:*"]}})) else {
        return;
    };
    let ports: Vec<Value> = np["spec"]["egress"][2]["ports"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        ports.len(),
        1,
        "an address on every port opens only its own block: {ports:?}"
    );
}

#[test]
fn docs_security_lists_every_block_of_the_table() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md")).expect("security.md");
    let missing: Vec<String> = IPV4_SPECIAL
        .iter()
        .chain(IPV6_SPECIAL)
        .map(|s| s.net)
        .chain([IpNet::V6(IPV6_GLOBAL_UNICAST)])
        .map(|net| match net {
            // The registries write the mapped block in hex groups.
            IpNet::V6(n) if n.to_string().starts_with("::ffff:0.0.0.0") => "::ffff:0:0/96".to_owned(),
            n => n.to_string(),
        })
        .filter(|block| !doc.contains(&format!("| `{block}` |")))
        .collect();
    assert!(missing.is_empty(), "docs/security.md lacks {missing:?}");
}
