//! The CRD's CEL rules and schema, evaluated client-side with kube's CEL validator (the same rule
//! language the API server runs).

use kube::CustomResourceExt;
use serde_json::{Value, json};
use tenantcred::crd::TenantApiCredential;
use tenantcred::crd::provider::ApiProvider;
use tenantcred::crd::provider::FORBIDDEN_HEADERS;

fn check(spec: Value) -> Result<(), String> {
    check_against(TenantApiCredential::crd(), "TenantApiCredential", spec)
}

fn check_against(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    kind: &str,
    spec: Value,
) -> Result<(), String> {
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema"),
    )
    .expect("json");
    let obj = json!({"apiVersion": "tenantcred.dev/v1alpha1", "kind": kind,
        "metadata": {"name": "x", "namespace": "y"}, "spec": spec});
    kube::core::cel::Validator::new()
        .validate(&schema, &obj, None)
        .map_err(|e| format!("{e:?}"))
}

#[test]
fn cel_rules_accept_good_specs_and_refuse_bad_ones() {
    let ok = json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "in", "key": "token"},
        "probe": {"interval": "15m", "timeout": "10s", "failureThreshold": 3}});
    assert_eq!(check(ok), Ok(()));
    let both = json!({"tenant": "acme", "provider": "virtuous", "credentialRef": {"name": "in"}, "oauth": {"secretRef": {"name": "l"}},
        "probe": {"interval": "15m", "timeout": "10s", "failureThreshold": 3}});
    assert!(check(both).is_err_and(|e| e.contains("exactly one")));
    // Whether a provider has a token endpoint is the provider's definition, checked by the
    // operator (a defined provider may have one): the schema lets it through.
    let oauth_defined = json!({"tenant": "acme", "provider": "crm", "oauth": {"secretRef": {"name": "l"}},
        "probe": {"failureThreshold": 3}});
    assert_eq!(check(oauth_defined), Ok(()));
    let generic = json!({"tenant": "acme", "provider": "generic", "credentialRef": {"name": "in"},
        "probe": {"interval": "15m", "timeout": "10s", "failureThreshold": 3}});
    assert!(check(generic).is_err_and(|e| e.contains("generic")));
    let fast = json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "in"},
        "probe": {"interval": "30s", "timeout": "10s", "failureThreshold": 3}});
    assert!(check(fast).is_err_and(|e| e.contains("1m")));
}

/// A request holds a probe slot until its timeout: the schema bounds it (issue 36).
#[test]
fn a_probe_timeout_is_bounded_by_the_schema() {
    let with_timeout = |t: &str| {
        check(
            json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "in"},
            "probe": {"timeout": t, "failureThreshold": 3}}),
        )
    };
    assert_eq!(with_timeout("60s"), Ok(()));
    assert_eq!(with_timeout("1m"), Ok(()));
    assert_eq!(with_timeout("500ms"), Ok(()));
    for refused in ["876000h", "61s", "1m0.5s", "0s"] {
        assert!(
            with_timeout(refused).is_err_and(|e| e.contains("at most 60s")),
            "{refused}"
        );
    }
    // The schema's figure is the operator's.
    assert_eq!(
        tenantcred::decide::duration::parse("60s"),
        Ok(tenantcred::decide::fair_share::MAX_REQUEST_TIMEOUT)
    );
}

#[test]
fn schema_constrains_tenant_provider_and_threshold() {
    let crd = serde_json::to_value(TenantApiCredential::crd()).expect("json");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        spec["properties"]["tenant"]["pattern"],
        "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    );
    assert_eq!(spec["properties"]["tenant"]["maxLength"], 63);
    // Any DNS name: a built-in provider or an ApiProvider's name.
    assert_eq!(spec["properties"]["provider"]["maxLength"], 253);
    assert!(spec["properties"]["provider"]["pattern"].is_string());
    assert_eq!(
        spec["properties"]["probe"]["properties"]["failureThreshold"]["minimum"],
        1.0
    );
    assert_eq!(spec["required"], json!(["provider", "tenant"]));
}

/// Issue 36: the schema refuses every header of the operator's list as `auth.header`, in any case,
/// with a message listing them; `Authorization` and ordinary names pass.
#[test]
fn the_provider_schema_refuses_headers_that_frame_or_route_the_request() {
    let provider = |header: &str| {
        let spec = json!({"hosts": ["api.example.com"], "probe": {"path": "/me"},
            "auth": {"type": "Header", "header": header}});
        check_against(ApiProvider::crd(), "ApiProvider", spec)
    };
    let issue = [
        "Accept",
        "TE",
        "Upgrade",
        "Expect",
        "Keep-Alive",
        "Proxy-Connection",
        "Trailer",
        "Proxy-Authorization",
        "Cookie",
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
    ];
    let names = issue
        .iter()
        .flat_map(|h| [h.to_string(), h.to_lowercase(), h.to_uppercase()])
        .chain(FORBIDDEN_HEADERS.iter().map(|h| h.to_string()));
    for header in names {
        let err = provider(&header).expect_err(&header);
        assert!(
            err.contains("auth.header must not be") && err.contains("proxy-authorization"),
            "{header}: {err}"
        );
    }
    for fine in ["X-Api-Key", "PRIVATE-TOKEN", "Authorization", "X-Accept-Token"] {
        assert_eq!(provider(fine), Ok(()), "{fine}");
    }
}

/// Issue 36: paths and base URLs reach the request line: the schemas refuse control characters
/// and invisible formatting in them, and accept them percent-encoded.
#[test]
fn the_schemas_refuse_control_characters_in_the_request_line() {
    let credential = |base_url: &str, path: &str| {
        check(
            json!({"tenant": "acme", "provider": "generic", "credentialRef": {"name": "in"},
            "baseUrl": base_url, "probe": {"path": path, "failureThreshold": 3}}),
        )
    };
    let provider = |base_url: &str, path: &str, token_path: &str| {
        let spec = json!({"hosts": ["api.example.com"], "baseUrl": base_url, "probe": {"path": path},
            "oauth": {"tokenPath": token_path}});
        check_against(ApiProvider::crd(), "ApiProvider", spec)
    };
    let url = "https://api.example.com/v1";
    assert_eq!(credential(url, "/me?q=%0D%0A"), Ok(()));
    assert_eq!(provider(url, "/me?q=%E2%80%AE", "/Token"), Ok(()));
    for c in [
        "\r\n", "\0", "\u{1b}", "\t", "\u{7f}", "\u{85}", "\u{2028}", "\u{202e}", "\u{200b}",
    ] {
        let bad = |s: &str| format!("{s}{c}x");
        let refused = |r: Result<(), String>, field: &str| {
            let err = r.expect_err(field);
            assert!(
                err.contains(&format!("{field} must not hold control characters")),
                "{field}: {err}"
            );
        };
        refused(credential(url, &bad("/me")), "probe.path");
        refused(credential(&bad(url), "/me"), "baseUrl");
        refused(provider(url, &bad("/me"), "/Token"), "probe.path");
        refused(provider(&bad(url), "/me", "/Token"), "baseUrl");
        refused(provider(url, "/me", &bad("/Token")), "oauth.tokenPath");
    }
}
