//! The `ApiProvider` custom resource: what tenantcred needs to know about an API to probe its
//! tokens, as data a platform admin writes (docs/providers.md). The four built-in providers are
//! the same definitions compiled in (`decide::provider::builtin`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::oauth::ProviderOAuth;
use super::{DURATION_PATTERN, no_controls};

/// Headers `auth.header` may not name (lower-case; compared case-insensitively), because the
/// token sent in them would change how the request is framed, routed or understood, or would
/// duplicate a header tenantcred sets itself. This schema's rule refuses them, and the operator again (`decide::provider::definition`, reason
/// ForbiddenHeader) where no schema ran.
/// `Authorization` is allowed: it is where Bearer and Scheme send the token, the Header type
/// replaces that header rather than adding one, and it is the only way to send a bare token
/// (`Authorization: <token>`, with no prefix).
pub const FORBIDDEN_HEADERS: &[&str] = &[
    // Hop-by-hop (RFC 9110 §7.6.1): they steer the connection, not the request.
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    // Framing and message control: where the message ends, what it holds, what answer it asks for.
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "content-range",
    "expect",
    "max-forwards",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    // Set by tenantcred's client itself: a second one would be sent beside it.
    "accept",
    "accept-encoding",
    "user-agent",
    "date",
    // Credentials and routing that belong to a browser or to proxies on the way.
    "cookie",
    "proxy-authorization",
    "forwarded",
    "via",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// The rule refusing an `auth.header` of [`FORBIDDEN_HEADERS`], in any case; the operator refuses the
/// same list (reason ForbiddenHeader) where no schema ran.
fn forbidden_header() -> kube::core::Rule {
    let quoted: Vec<String> = FORBIDDEN_HEADERS.iter().map(|h| format!("'{h}'")).collect();
    kube::core::Rule::new(format!(
        "!has(self.auth.header) || !(self.auth.header.lowerAscii() in [{}])",
        quoted.join(", ")
    ))
    .message(kube::core::Message::Message(format!(
        "auth.header must not be a header that frames, routes or qualifies the request or that tenantcred sets itself (any case): {}",
        FORBIDDEN_HEADERS.join(", ")
    )))
}

/// An API whose tokens tenantcred probes: where tokens may be sent, how a token is probed and
/// judged, what a token looks like, how much of its rate limit probes may spend.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tenantcred.dev",
    version = "v1alpha1",
    kind = "ApiProvider",
    plural = "apiproviders",
    status = "ApiProviderStatus",
    shortname = "apiprov",
    category = "tenantcred",
    doc = "An API whose tokens tenantcred probes, defined by a platform admin: its hosts, probe request, token format, rate limit and expiry.",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Credentials","type":"integer","jsonPath":".status.credentials"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyCredentials"}"#,
    printcolumn = r#"{"name":"Probes/h","type":"integer","jsonPath":".status.probesLastHour"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("self.auth.type != 'Scheme' || has(self.auth.scheme)").message("auth.type Scheme needs auth.scheme"),
    validation = Rule::new("self.auth.type != 'Header' || has(self.auth.header)").message("auth.type Header needs auth.header"),
    validation = Rule::new("self.expiry.source != 'Header' || has(self.expiry.header)").message("expiry.source Header needs expiry.header"),
    validation = Rule::new("!has(self.baseUrl) || self.baseUrl.startsWith('https://')").message("baseUrl must be https"),
    validation = no_controls("has(self.baseUrl)", "self.baseUrl", "baseUrl"),
    validation = forbidden_header()
)]
#[serde(rename_all = "camelCase")]
pub struct ApiProviderSpec {
    /// The hosts tokens of this provider may be sent to: DNS names, each with an optional port
    /// (api.example.com, api.example.com:8443; port 443 when none is given), over https only.
    /// This is the allowlist of every credential naming the provider. A name allows the name,
    /// never a non-public address it resolves to; addresses are allowed only by the operator's
    /// owner (--allowed-host). 1 to 16 hosts.
    #[schemars(
        length(min = 1, max = 16),
        inner(
            length(min = 1, max = 259),
            regex(
                pattern = r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*(:[0-9]{1,5})?$"
            )
        )
    )]
    pub hosts: Vec<String>,
    /// The API base URL credentials use when they set no spec.baseUrl, e.g.
    /// https://api.example.com/v1. Its host must be one of hosts. Without it every credential
    /// must set spec.baseUrl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub base_url: Option<String>,
    /// The request that tells whether a token works.
    pub probe: ProviderProbe,
    /// How the token is sent. Default: Authorization: Bearer <token>.
    #[serde(default)]
    pub auth: ProviderAuth,
    /// What a token must look like; checked before anything is sent.
    #[serde(default)]
    pub token: ProviderToken,
    /// The provider's documented rate limit and the headers that report it.
    #[serde(default)]
    pub rate_limit: ProviderRateLimit,
    /// Where a token's expiry is known.
    #[serde(default)]
    pub expiry: ProviderExpiry,
    /// An OAuth 2 authorization server: its token endpoint, grants, client authentication and
    /// answer. Credentials of this provider may then use spec.oauth (a login Secret) instead of
    /// credentialRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<ProviderOAuth>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("!has(self.interval) || duration(self.interval) >= duration('1m')").message("probe.interval must be at least 1m"),
    validation = Rule::new("!has(self.timeout) || (duration(self.timeout) > duration('0s') && duration(self.timeout) <= duration('60s'))").message("probe.timeout must be more than 0s and at most 60s"),
    validation = no_controls("has(self.path)", "self.path", "probe.path")
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderProbe {
    /// GET (default) or HEAD. HEAD reads no body: use it where the API answers HEAD.
    #[serde(default)]
    pub method: ProbeMethod,
    /// The path appended to the base URL, e.g. /rate_limit; a credential's spec.probe.path
    /// replaces it. Pick an endpoint that costs no quota or the least, and reads nothing of value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"), length(max = 2048))]
    pub path: Option<String>,
    /// Statuses that mean the token works. Default: any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 100, max = 599)))]
    pub valid_statuses: Vec<u16>,
    /// Statuses that mean the token is refused (confirmed, then Degraded). Default: 401.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 100, max = 599)))]
    pub unauthorized_statuses: Vec<u16>,
    /// Statuses that mean the token lacks a permission (as unauthorized). Default: 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 100, max = 599)))]
    pub forbidden_statuses: Vec<u16>,
    /// Timeout of one probe for credentials that set none, from connecting to the last byte of
    /// the answer: a Go duration, at most 60s. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Probe interval for credentials that set none: a Go duration, at least 1m. Default 15m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,
}

/// The HTTP method of a probe.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProbeMethod {
    #[default]
    Get,
    Head,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderAuth {
    /// Bearer (default: Authorization: Bearer <token>), Scheme (Authorization: <scheme> <token>)
    /// or Header (<header>: <prefix><token>).
    #[serde(default, rename = "type")]
    pub kind: AuthKind,
    /// For Scheme: the word before the token, e.g. token or Basic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"))]
    pub scheme: Option<String>,
    /// For Header: the header's name, e.g. PRIVATE-TOKEN or X-Api-Key. Not a header that frames,
    /// routes or qualifies the request or that tenantcred sets itself (Host, Content-Length,
    /// Transfer-Encoding, Connection, Accept, Cookie, Proxy-Authorization and others: the list
    /// is in docs/providers.md); Authorization is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"))]
    pub header: Option<String>,
    /// For Header: text sent before the token, e.g. "Token ". Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = r"^[ -~]*$"))]
    pub prefix: Option<String>,
}

/// How the token is sent.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AuthKind {
    #[default]
    Bearer,
    Scheme,
    Header,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderToken {
    /// Opaque (default: anything header-safe; a JWT's exp is read when present) or Jwt (the
    /// claims must parse; exp is the expiry).
    #[serde(default)]
    pub format: TokenKind,
    /// Text every token starts with, e.g. ghp_.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub prefix: Option<String>,
    /// A regular expression the whole token must match (RE2 syntax, no look-around or
    /// back-references; anchored for you). At most 256 characters; a pattern that compiles to
    /// more than 64 KiB is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub pattern: Option<String>,
    /// The largest token accepted, in bytes: 1 to 8192 (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8192))]
    pub max_length: Option<u32>,
}

/// The shape of a token.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum TokenKind {
    #[default]
    Opaque,
    Jwt,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRateLimit {
    /// Documented requests per window. Without it a key gets at most 20 probes an hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub requests: Option<u32>,
    /// The window of requests: a Go duration, default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub window: Option<String>,
    /// Key (default: each token has its own limit) or Host (one limit for every token of the
    /// host: any 429 holds back every token of the host).
    #[serde(default)]
    pub per: LimitPer,
    /// The share of the limit probes may use, in percent: 0.01 to 10, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 10.0))]
    pub probe_share_percent: Option<f64>,
    /// The response headers that report the limit (case-insensitive names).
    #[serde(default)]
    pub headers: RateLimitHeaders,
    /// How the reset header counts: Auto (default: small numbers are seconds to wait, large ones
    /// a Unix time), EpochSeconds or Seconds.
    #[serde(default)]
    pub reset_unit: ResetUnit,
}

/// Whose budget the limit is.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum LimitPer {
    #[default]
    Key,
    Host,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitHeaders {
    /// Requests per window. Default X-RateLimit-Limit.
    #[serde(default = "limit_header")]
    #[schemars(length(min = 1, max = 64))]
    pub limit: String,
    /// Requests left. Default X-RateLimit-Remaining.
    #[serde(default = "remaining_header")]
    #[schemars(length(min = 1, max = 64))]
    pub remaining: String,
    /// When the window resets. Default X-RateLimit-Reset.
    #[serde(default = "reset_header")]
    #[schemars(length(min = 1, max = 64))]
    pub reset: String,
    /// How long to wait after a 429 (seconds or an HTTP date). Default Retry-After.
    #[serde(default = "retry_after_header")]
    #[schemars(length(min = 1, max = 64))]
    pub retry_after: String,
}

impl Default for RateLimitHeaders {
    fn default() -> Self {
        Self {
            limit: limit_header(),
            remaining: remaining_header(),
            reset: reset_header(),
            retry_after: retry_after_header(),
        }
    }
}

fn limit_header() -> String {
    "X-RateLimit-Limit".into()
}
fn remaining_header() -> String {
    "X-RateLimit-Remaining".into()
}
fn reset_header() -> String {
    "X-RateLimit-Reset".into()
}
fn retry_after_header() -> String {
    "Retry-After".into()
}

/// How a reset header counts.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ResetUnit {
    #[default]
    Auto,
    EpochSeconds,
    Seconds,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderExpiry {
    /// Declared (default: only the credential's spec.expiry.notAfter, or a JWT's exp), Jwt (the
    /// token's exp claim) or Header (a response header of the probe).
    #[serde(default)]
    pub source: ExpirySource,
    /// For Header: its name, e.g. GitHub-Authentication-Token-Expiration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub header: Option<String>,
    /// For Header: RFC3339 (default), HTTPDate, UnixSeconds or Layout.
    #[serde(default)]
    pub format: DateFormat,
    /// For format Layout: a strftime layout, e.g. "%Y-%m-%d %H:%M:%S UTC" (GitHub's); a time
    /// without an offset (%z) is read as UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub layout: Option<String>,
}

/// Where a token's expiry is known.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ExpirySource {
    #[default]
    Declared,
    Jwt,
    Header,
}

/// How an expiry header writes its time.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DateFormat {
    #[default]
    #[serde(rename = "RFC3339")]
    Rfc3339,
    #[serde(rename = "HTTPDate")]
    HttpDate,
    UnixSeconds,
    Layout,
}

/// What the operator last observed of the definition and its credentials.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiProviderStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Credentials naming this provider, in all namespaces.
    #[serde(default)]
    pub credentials: u32,
    /// Of those, how many are Ready.
    #[serde(default)]
    pub ready_credentials: u32,
    /// Probes sent to this provider in the last hour, by this operator replica (every key's
    /// budget counted together).
    #[serde(default)]
    pub probes_last_hour: u32,
    /// Accepted: the definition is usable (reasons Accepted, InvalidDefinition, ReservedName,
    /// ForbiddenHeader).
    /// Ready: credentials can be probed (reasons Ready, NotAccepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
