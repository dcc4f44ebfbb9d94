//! The `TenantApiCredential` custom resource as Rust types. The CRD in `crds/` is generated from
//! them (`tenantcred crd`), and every field's doc comment becomes its `kubectl explain` text
//! (a test fails on a field without one), so write them for users: units, defaults, limits.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::crd::CustomResourceExt;
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

pub mod oauth;
pub mod provider;
pub mod text;

use text::OBJECT_NAME_PATTERN;
use text::no_controls;

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
    selectable = ".spec.tenant",
    selectable = ".spec.provider",
    doc = "A customer's API token for one product: synced into a managed Secret and probed against its provider.",
    printcolumn = r#"{"name":"Tenant","type":"string","jsonPath":".spec.tenant"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    // A string, not a date: kubectl renders a date column as time since, so a future expiry
    // would print as <invalid>.
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Last Probe","type":"date","jsonPath":".status.lastProbeTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("has(self.credentialRef) != has(self.oauth)").message("exactly one of credentialRef and oauth must be set"),
    validation = Rule::new("self.provider != 'generic' || (has(self.baseUrl) && has(self.probe) && has(self.probe.path))").message("provider generic requires baseUrl and probe.path"),
    // Whatever stands before an `@` in the authority is a user name or password, to RFC 3986
    // and to WHATWG parsers alike (the WHATWG authority also ends at a backslash).
    validation = Rule::new("!has(self.baseUrl) || !self.baseUrl.matches('^[^:/?#]*://[^/?#]*@')").message("baseUrl must not hold a user name or password (user:password@host): the token is the only credential tenantcred sends"),
    validation = no_controls("has(self.baseUrl)", "self.baseUrl", "baseUrl")
)]
#[serde(rename_all = "camelCase")]
pub struct TenantApiCredentialSpec {
    /// The customer organisation this token belongs to: a DNS label (lower-case letters, digits
    /// and '-', at most 63). Copied into the managed Secret and used as a metric label.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub tenant: String,
    /// The provider the token is for: a built-in one (raise, charitystack, virtuous, generic) or
    /// the name of an ApiProvider a platform admin defined (kubectl get apiproviders). Decides
    /// where the token may be sent, the probe request, the token format and the probe budget.
    pub provider: ProviderName,
    /// The provider's API base URL, e.g. https://api.example.com/v1. Default: the provider's
    /// documented URL; required for generic. The token is sent only to the provider's hosts
    /// or to a host the operator's owner allows (--allowed-host); anything else is refused
    /// with reason BaseUrlNotAllowed. Plain http is refused unless the operator allows it, and
    /// always to a documented host. A user name or password in the URL is refused. At most 2048
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"), length(max = 2048))]
    pub base_url: Option<String>,
    /// Where the token is: a key of a Secret in the same namespace, as pasted by the customer
    /// (one line, at most 8 KiB). Exactly one of credentialRef and oauth is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_ref: Option<SecretKeyRef>,
    /// The next token (a key of a Secret in the same namespace). It is probed first; only when
    /// the provider accepts it does it replace the current token in the managed Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_credential_ref: Option<SecretKeyRef>,
    /// Instead of credentialRef, for providers with a token endpoint (virtuous, or an
    /// ApiProvider with oauth): the operator signs in and keeps a fresh access token in the
    /// managed Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthSpec>,
    /// How and how often the token is probed against the provider.
    #[serde(default)]
    pub probe: ProbeSpec,
    /// When the token expires and how early to warn.
    #[serde(default)]
    pub expiry: ExpirySpec,
    /// The managed Secret the operator writes (what pods mount).
    #[serde(default)]
    pub target: TargetSpec,
    /// Workloads in the same namespace to restart (a rollout, like `kubectl rollout restart`)
    /// when the token in the managed Secret changes. Restarts are gathered per debounce window.
    /// At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rollout_restart_targets: Vec<WorkloadRef>,
    /// true: keep the managed Secret as it is and stop probing. Default false.
    #[serde(default)]
    pub suspend: bool,
}

/// The provider a credential talks to: a built-in one (raise, charitystack, virtuous, generic) or
/// the name of an `ApiProvider` object. Any text deserializes, so a resource that slipped past
/// schema validation gets a condition that names the provider it asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProviderName(pub String);

impl ProviderName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ProviderName {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
            "minLength": 1,
            "maxLength": 253,
            "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
            "description": "The provider the token is for: raise, charitystack, virtuous, generic, or the name of an ApiProvider (kubectl get apiproviders)."
        })
    }
}

/// A key of a Secret in the resource's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret (same namespace as the credential).
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,
    /// Key in the Secret's data that holds the token. Default: token.
    #[serde(default = "default_token_key")]
    pub key: String,
}

fn default_token_key() -> String {
    "token".into()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthSpec {
    /// The login Secret (same namespace): what the provider's grants need, under these keys:
    /// refresh_token, client_id, client_secret, username, password, private_key (PKCS#8 PEM),
    /// private_key_id (sent as the JWT's kid), and the keys the provider's definition names
    /// (e.g. otp, client_email). Virtuous: username and password, otp when asked, or
    /// refresh_token. The operator keeps rotated refresh tokens in a Secret of its own
    /// (labelled tenantcred.dev/purpose=oauth-state), shared by every credential of this
    /// namespace naming this login and provider.
    pub secret_ref: SecretNameRef,
}

/// A Secret in the resource's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretNameRef {
    /// Name of the Secret (same namespace as the credential).
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,
}

pub(crate) const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("!has(self.interval) || duration(self.interval) >= duration('1m')").message("probe.interval must be at least 1m"),
    validation = Rule::new("!has(self.timeout) || (duration(self.timeout) > duration('0s') && duration(self.timeout) <= duration('60s'))").message("probe.timeout must be more than 0s and at most 60s"),
    validation = no_controls("has(self.path)", "self.path", "probe.path")
)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Path of the authenticated GET request that tells whether the token works, appended to
    /// baseUrl, e.g. /api/Organization/Current. Default: the provider's; required for generic.
    /// At most 2048 characters, none of them a control character (percent-encode those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"), length(max = 2048))]
    pub path: Option<String>,
    /// How often the token is probed: a Go duration (e.g. 15m, 1h30m), at least 1m. Default: the
    /// provider's, else 15m. Stretched when the provider's rate limit allows fewer probes (each
    /// key gets at most 1% of its documented hourly limit); the Ready message then says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Timeout of one probe request, from connecting to the last byte of the answer: a Go
    /// duration, at most 60s. Default: the provider's, else 10s. A timeout never counts against
    /// the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Consecutive credential-side failures (401/403) before the credential is Degraded:
    /// 1 to 100, default 3. Outages, timeouts and 429s never count.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        Self {
            path: None,
            interval: None,
            timeout: None,
            failure_threshold: default_failure_threshold(),
        }
    }
}

/// The spec's defaults, defined once: the CRD schema shows them and the planner falls back on them.
pub const DEFAULT_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15 * 60);
pub const DEFAULT_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
pub const DEFAULT_WARN_BEFORE: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);

fn default_failure_threshold() -> u32 {
    DEFAULT_FAILURE_THRESHOLD
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpirySpec {
    /// How long before expiry the ExpiringSoon condition turns True: a Go duration, default
    /// 336h (14 days).
    #[serde(default = "default_warn_before")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub warn_before: String,
    /// Expiry of an opaque key, as an RFC 3339 time (e.g. 2027-01-31T00:00:00Z). JWTs carry
    /// their own (exp); when both are known the earlier one counts.
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

/// [`DEFAULT_WARN_BEFORE`] as the spec writes durations (`decide::duration` checks they agree).
pub const DEFAULT_WARN_BEFORE_TEXT: &str = "336h";

fn default_warn_before() -> String {
    DEFAULT_WARN_BEFORE_TEXT.into()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// Name of the managed Secret. Default: the credential's own name. A Secret of that name
    /// that the operator does not manage is never overwritten (reason SecretConflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: Option<String>,
    /// What happens to the managed Secret when the credential is deleted: Delete (default; the
    /// Secret is owned by the credential and garbage-collected with it) or Retain (kept, with no
    /// owner).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Extra labels for the managed Secret (the operator's own labels win on a clash). At most 64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations for the managed Secret. At most 64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: BTreeMap<String, String>,
}

/// What happens to the managed Secret when its credential is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// The Secret goes with the resource.
    #[default]
    Delete,
    /// The Secret is kept (without owner reference) when the resource is deleted.
    Retain,
}

/// A workload in the credential's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct WorkloadRef {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: WorkloadKind,
    /// Name of the workload (same namespace as the credential).
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
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
    /// The metadata.generation this status describes; older than metadata.generation while
    /// a spec change is being worked on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the managed Secret (in the credential's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// `sha256:` + 12 hex of the token in the managed Secret; never the token itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_fingerprint: Option<String>,
    /// When the token stops working: the earliest of the JWT's exp, spec.expiry.notAfter and
    /// providerExpiresAt (RFC 3339). Absent when none is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// The token's expiry as the provider stated it in its answer to the latest probe (for
    /// ApiProviders with expiry.source Header). Cleared when the token changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_expires_at: Option<Time>,
    /// When the token was last probed, as last persisted. To spare the API server, a probe whose
    /// verdict changed nothing is recorded at most hourly; the metric
    /// tenantcred_last_probe_timestamp_seconds has every probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// When the provider last accepted the token (same hourly recording as lastProbeTime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_probe_time: Option<Time>,
    /// What the last probe said: Valid (2xx), Unauthorized (401), Forbidden (403), RateLimited
    /// (429), Unavailable (5xx, timeout, network, a redirect), Expired (past expiry, nothing
    /// sent) or Invalid (the token's format is wrong, nothing sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "probe_result_schema")]
    pub last_probe_result: Option<ProbeResult>,
    /// HTTP status of the last probe's answer, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_http_status: Option<u16>,
    /// 401/403 answers in a row for the current token; Degraded at spec.probe.failureThreshold.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// When the next probe is due (jittered). Absent while an input problem blocks probing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_probe_time: Option<Time>,
    /// The provider's rate-limit headers at the last probe, when it sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitStatus>,
    /// The latest rotation to spec.pendingCredentialRef (or a new token in the source Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
    /// The tenantcred.dev/probe-requested-at annotation value last acted on (tenantcred
    /// probe-now); a new value asks for one more probe, within the key's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_probe_request: Option<String>,
    /// Ready, Degraded, Stalled, Reconciling and ExpiringSoon (kstatus conventions, understood by
    /// kubectl wait, Argo CD and Flux). docs/conditions.md lists every reason and what to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A plain string enum: an optional enum would otherwise list `null` among its values, which the
/// API server refuses.
fn probe_result_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "description": "What the last probe said: Valid (2xx), Unauthorized (401), Forbidden (403), RateLimited (429), Unavailable (5xx, timeout, network, a redirect), Expired (past expiry, nothing sent) or Invalid (the token's format is wrong, nothing sent).",
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
    /// Requests per window (X-RateLimit-Limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Requests left in the window (X-RateLimit-Remaining). Persisted when it crosses a
    /// threshold, not at every probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// When the window resets (X-RateLimit-Reset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<Time>,
    /// What the provider's latest 429 for this token held back: `Key` (only this token's probes
    /// wait) or `Host` (several tokens of the same provider host were rate-limited at once, so
    /// every token of that host waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_back: Option<RateLimitScope>,
}

/// The reach of a provider's rate limiting, as tenantcred applies it: Key or Host.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RateLimitScope {
    Key,
    Host,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// Pending (the new token is being probed; the old one keeps serving), Validated (the
    /// provider accepted it and it is in the Secret) or Failed (refused; the old token stays).
    pub phase: RotationPhase,
    /// Fingerprint (sha256: + 12 hex) of the token being rotated to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_fingerprint: Option<String>,
    /// When the rotation was decided (Validated or Failed).
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

/// Every CRD of tenantcred as it is applied: the file name under `crds/` and the definition,
/// cleaned for the API server and `kubectl explain` (`clean_schema`).
pub fn definitions() -> Vec<(String, CustomResourceDefinition)> {
    [TenantApiCredential::crd(), provider::ApiProvider::crd()]
        .into_iter()
        .map(|mut crd| {
            for version in &mut crd.spec.versions {
                if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
                    clean_schema(schema);
                }
            }
            (format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default()), crd)
        })
        .collect()
}

/// One CRD as the YAML `crds/` holds.
pub fn definition_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "# Generated by `tenantcred crd` from src/crd.rs and src/crd/provider.rs. Do not edit.\n{}",
        serde_yaml::to_string(crd)?
    ))
}

/// Every CRD, one YAML document each.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let docs = definitions()
        .iter()
        .map(|(_, crd)| definition_yaml(crd))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(docs.join("---\n"))
}

/// Two things the API server and `kubectl explain` need that the schema generator does not do:
/// unsigned integers carry formats (`uint64`) the API server does not know and warns about on
/// every apply, so they become `int32`/`int64` (their `minimum: 0` stays); and doc comments wrap
/// lines where the source does, which `kubectl explain` would print mid-sentence, so single line
/// breaks become spaces (paragraph breaks stay).
fn clean_schema(schema: &mut JSONSchemaProps) {
    if let Some(d) = schema.description.as_mut() {
        *d = unwrap_lines(d);
    }
    schema.format = match schema.format.take().as_deref() {
        Some("uint8" | "uint16") => Some("int32".into()),
        Some("uint32" | "uint64" | "uint") => Some("int64".into()),
        other => other.map(str::to_owned),
    };
    let children = [
        schema.properties.as_mut().map(|p| p.values_mut().collect::<Vec<_>>()),
        schema.items.as_mut().map(|i| match i {
            JSONSchemaPropsOrArray::Schema(s) => vec![&mut **s],
            JSONSchemaPropsOrArray::Schemas(v) => v.iter_mut().collect(),
        }),
        schema.additional_properties.as_mut().and_then(|a| match a {
            JSONSchemaPropsOrBool::Schema(s) => Some(vec![&mut **s]),
            JSONSchemaPropsOrBool::Bool(_) => None,
        }),
        schema.any_of.as_mut().map(|v| v.iter_mut().collect()),
        schema.one_of.as_mut().map(|v| v.iter_mut().collect()),
        schema.all_of.as_mut().map(|v| v.iter_mut().collect()),
    ];
    for child in children.into_iter().flatten().flatten() {
        clean_schema(child);
    }
}

fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests;
