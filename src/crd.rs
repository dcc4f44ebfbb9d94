//! The `TenantApiCredential` custom resource: the public contract of `../shared/API.md` as Rust
//! types. The CRD in `crds/` is generated from these types (`tenantcred crd`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::crd::CustomResourceExt;
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "tenantcred.dev";
/// The finalizer of releases before 0.2. Deletion needs no action of the operator (owner references
/// and garbage collection delete the Secret; `Retain` has none), and a finalizer leaves namespaces
/// stuck in Terminating while the operator is down, so the operator now removes it where it finds it.
pub const LEGACY_FINALIZER: &str = "tenantcred.dev/cleanup";
/// Annotation set by `tenantcred probe-now` (or by hand) to ask for an immediate probe.
pub const PROBE_REQUESTED_ANNOTATION: &str = "tenantcred.dev/probe-requested-at";

/// A customer's API token for one product, kept valid, probed and mounted as a Secret.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tenantcred.dev",
    version = "v1alpha1",
    kind = "TenantApiCredential",
    plural = "tenantapicredentials",
    namespaced,
    status = "TenantApiCredentialStatus",
    shortname = "tac",
    shortname = "tenantcred",
    category = "tenantcred",
    doc = "A customer's API token for one product: synced into a managed Secret and probed against its provider.",
    printcolumn = r#"{"name":"Tenant","type":"string","jsonPath":".spec.tenant"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Expires","type":"date","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Last Probe","type":"date","jsonPath":".status.lastProbeTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("has(self.credentialRef) != has(self.oauth)").message("exactly one of credentialRef and oauth must be set"),
    validation = Rule::new("!has(self.oauth) || self.provider == 'virtuous'").message("oauth is only supported with provider virtuous"),
    validation = Rule::new("self.provider != 'generic' || (has(self.baseUrl) && has(self.probe) && has(self.probe.path))").message("provider generic requires baseUrl and probe.path")
)]
#[serde(rename_all = "camelCase")]
pub struct TenantApiCredentialSpec {
    /// The customer organisation this token belongs to (a DNS label).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub tenant: String,
    /// The product the token is for: raise, charitystack, virtuous or generic.
    pub provider: ProviderName,
    /// The provider's API base URL; the provider's default when omitted; required for generic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub base_url: Option<String>,
    /// The token, as pasted by the customer, in a Secret of the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_ref: Option<SecretKeyRef>,
    /// The next token; validated against the provider before cut-over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_credential_ref: Option<SecretKeyRef>,
    /// Virtuous only, instead of credentialRef: the operator mints access tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthSpec>,
    #[serde(default)]
    pub probe: ProbeSpec,
    #[serde(default)]
    pub expiry: ExpirySpec,
    #[serde(default)]
    pub target: TargetSpec,
    /// Workloads restarted when the token in the Secret changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollout_restart_targets: Vec<WorkloadRef>,
    /// true: keep the Secret, stop probing.
    #[serde(default)]
    pub suspend: bool,
}

/// The provider a credential talks to. Unknown names deserialize (so a resource that slipped past
/// schema validation still gets a condition instead of being dropped by the watcher).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProviderName {
    Raise,
    CharityStack,
    Virtuous,
    Generic,
    Unknown(String),
}

impl ProviderName {
    pub const KNOWN: [&'static str; 4] = ["raise", "charitystack", "virtuous", "generic"];

    pub fn as_str(&self) -> &str {
        match self {
            Self::Raise => "raise",
            Self::CharityStack => "charitystack",
            Self::Virtuous => "virtuous",
            Self::Generic => "generic",
            Self::Unknown(s) => s,
        }
    }
}

impl From<String> for ProviderName {
    fn from(s: String) -> Self {
        match s.as_str() {
            "raise" => Self::Raise,
            "charitystack" => Self::CharityStack,
            "virtuous" => Self::Virtuous,
            "generic" => Self::Generic,
            _ => Self::Unknown(s),
        }
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ProviderName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ProviderName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

impl JsonSchema for ProviderName {
    fn schema_name() -> Cow<'static, str> {
        "ProviderName".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "enum": Self::KNOWN,
            "description": "The product the token is for: raise, charitystack, virtuous or generic."
        })
    }
}

/// A key of a Secret in the resource's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default = "default_token_key")]
    pub key: String,
}

fn default_token_key() -> String {
    "token".into()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthSpec {
    /// Secret with keys username, password, optional otp, optional refresh_token.
    pub secret_ref: SecretNameRef,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretNameRef {
    #[schemars(length(min = 1))]
    pub name: String,
}

const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("duration(self.interval) >= duration('1m')").message("probe.interval must be at least 1m"))]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Request path of the authenticated probe; the provider's default when omitted; required for generic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub path: Option<String>,
    /// How often the token is probed (Go duration, at least 1m).
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: String,
    /// Timeout of one probe request (Go duration).
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: String,
    /// Consecutive credential-side failures (401/403) before Degraded.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        Self {
            path: None,
            interval: default_interval(),
            timeout: default_timeout(),
            failure_threshold: default_failure_threshold(),
        }
    }
}

fn default_interval() -> String {
    "15m".into()
}
fn default_timeout() -> String {
    "10s".into()
}
fn default_failure_threshold() -> u32 {
    3
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpirySpec {
    /// ExpiringSoon window (Go duration).
    #[serde(default = "default_warn_before")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub warn_before: String,
    /// Declared expiry for opaque keys (JWTs carry their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
}

impl Default for ExpirySpec {
    fn default() -> Self {
        Self {
            warn_before: default_warn_before(),
            not_after: None,
        }
    }
}

fn default_warn_before() -> String {
    "336h".into()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// The managed Secret's name; default = metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Extra labels for the managed Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations for the managed Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// The Secret goes with the resource.
    #[default]
    Delete,
    /// The Secret is kept (without owner reference) when the resource is deleted.
    Retain,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    #[schemars(length(min = 1))]
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// What the operator last observed. Written only when it changes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantApiCredentialStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// `sha256:` + 12 hex of the token in the managed Secret; never the token itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_probe_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "probe_result_schema")]
    pub last_probe_result: Option<ProbeResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_http_status: Option<u16>,
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_probe_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_probe_request: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A plain string enum: an optional enum would otherwise list `null` among its values, which the
/// API server refuses.
fn probe_result_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "enum": ["Valid", "Unauthorized", "Forbidden", "RateLimited", "Unavailable", "Expired", "Invalid"]
    })
}

/// What the last probe said about the token.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ProbeResult {
    Valid,
    Unauthorized,
    Forbidden,
    RateLimited,
    Unavailable,
    Expired,
    Invalid,
}

impl ProbeResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "Valid",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::RateLimited => "RateLimited",
            Self::Unavailable => "Unavailable",
            Self::Expired => "Expired",
            Self::Invalid => "Invalid",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<Time>,
    /// What the provider's latest 429 for this token held back: `Key` (only this token's probes
    /// wait) or `Host` (several tokens of the same provider host were rate-limited at once, so
    /// every token of that host waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_back: Option<RateLimitScope>,
}

/// The reach of a provider's rate limiting, as tenantcred applies it.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RateLimitScope {
    Key,
    Host,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    pub phase: RotationPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RotationPhase {
    Pending,
    Validated,
    Failed,
}

impl TenantApiCredential {
    /// The managed Secret's name: `spec.target.name`, else the resource's own name.
    pub fn target_name(&self) -> Option<&str> {
        self.spec.target.name.as_deref().or(self.metadata.name.as_deref())
    }
}

/// The CRD as YAML, exactly what `crds/tenantapicredentials.tenantcred.dev.yaml` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let crd = TenantApiCredential::crd();
    Ok(format!(
        "# Generated by `tenantcred crd` from src/crd.rs. Do not edit.\n{}",
        serde_yaml::to_string(&crd)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_in_repo_matches_rust_types() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/crds/tenantapicredentials.tenantcred.dev.yaml"
        );
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        let generated = crd_yaml().expect("CRD serializes");
        assert!(
            on_disk == generated,
            "crds/ drifted from src/crd.rs: run `cargo run -- crd > crds/tenantapicredentials.tenantcred.dev.yaml`"
        );
    }

    #[test]
    fn unknown_provider_deserializes_instead_of_failing_the_watch() {
        let spec: TenantApiCredentialSpec = serde_json::from_value(serde_json::json!({
            "tenant": "acme", "provider": "salesforce", "credentialRef": {"name": "x"}
        }))
        .expect("parses");
        assert_eq!(spec.provider, ProviderName::Unknown("salesforce".into()));
        assert_eq!(spec.credential_ref.map(|r| r.key).as_deref(), Some("token"));
        assert_eq!(spec.probe.interval, "15m");
        assert_eq!(spec.probe.failure_threshold, 3);
        assert_eq!(spec.expiry.warn_before, "336h");
        assert_eq!(spec.target.deletion_policy, DeletionPolicy::Delete);
    }

    #[test]
    fn names_and_columns_follow_the_contract() {
        let crd = TenantApiCredential::crd();
        assert_eq!(crd.spec.group, "tenantcred.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.plural, "tenantapicredentials");
        assert_eq!(
            crd.spec.names.short_names,
            Some(vec!["tac".to_string(), "tenantcred".to_string()])
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        let cols: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            ["Tenant", "Provider", "Ready", "Reason", "Expires", "Last Probe", "Age"]
        );
    }
}
