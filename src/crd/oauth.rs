//! `ApiProvider.spec.oauth`: an OAuth 2 authorization server as data. Which grants to try and in
//! what order, how the client authenticates, what to ask for, and how to read the answer. The
//! operator reads it in `decide::oauth::definition`; Virtuous CRM+ is the same shape built in.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DURATION_PATTERN, no_controls};

/// An OAuth 2 token endpoint: credentials of this provider may then use spec.oauth (a login
/// Secret) instead of credentialRef, and the operator keeps a fresh access token in their
/// managed Secret. The refresh token stays in a Secret only the operator reads.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("has(self.tokenPath) != has(self.tokenUrl)").message("exactly one of oauth.tokenPath and oauth.tokenUrl must be set"),
    validation = Rule::new("!has(self.tokenUrl) || self.tokenUrl.startsWith('https://')").message("oauth.tokenUrl must be https"),
    validation = no_controls("has(self.tokenPath)", "self.tokenPath", "oauth.tokenPath"),
    validation = no_controls("has(self.tokenUrl)", "self.tokenUrl", "oauth.tokenUrl"),
    validation = Rule::new("self.clientAuthentication != 'private_key_jwt' || has(self.assertion)").message("clientAuthentication private_key_jwt needs oauth.assertion (the signing algorithm)"),
    validation = Rule::new("!('urn:ietf:params:oauth:grant-type:jwt-bearer' in self.grants) || has(self.assertion)").message("the jwt-bearer grant needs oauth.assertion"),
    validation = Rule::new("!has(self.parameters) || self.parameters.all(k, !(k in ['grant_type', 'client_id', 'client_secret', 'client_assertion', 'client_assertion_type', 'assertion', 'refresh_token', 'username', 'password', 'scope', 'audience', 'resource']))").message("oauth.parameters must not set a field the grant or the client authentication sets")
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderOAuth {
    /// The token endpoint as a path appended to the credential's base URL, e.g. /Token. Exactly
    /// one of tokenPath and tokenUrl is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"), length(max = 2048))]
    pub token_path: Option<String>,
    /// The token endpoint as an absolute https URL; its host must be one of the provider's hosts
    /// (the egress rules apply to it as to every request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub token_url: Option<String>,
    /// The grants to try, in order: the first one the login Secret and the operator's state can
    /// make is sent; when the server refuses a grant, the next usable one is tried in the same
    /// reconcile. refresh_token needs a refresh token (the operator's state, or key
    /// refresh_token of the login Secret); password needs keys username and password;
    /// client_credentials needs the client's authentication; the jwt-bearer grant (RFC 7523)
    /// needs key private_key and the assertion's issuer. Default: refresh_token, password.
    #[serde(default = "default_grants")]
    #[schemars(length(min = 1, max = 4))]
    pub grants: Vec<GrantType>,
    /// How the client authenticates to the token endpoint with keys client_id and client_secret
    /// (or private_key) of the login Secret. Default none (no client authentication; client_id
    /// is still sent when the login Secret has one).
    #[serde(default)]
    pub client_authentication: ClientAuthentication,
    /// Scopes asked for (sent space-separated as scope; in the assertion with
    /// assertion.scopeInClaims).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 256), regex(pattern = r"^[\x21\x23-\x5B\x5D-\x7E]+$"))
    )]
    pub scopes: Vec<String>,
    /// Sent as audience (e.g. an API identifier some servers ask for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[\x20-\x7E]+$"))]
    pub audience: Option<String>,
    /// Sent as resource (RFC 8707).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[\x20-\x7E]+$"))]
    pub resource: Option<String>,
    /// Static form fields sent with every grant (at most 16), e.g. a tenant id the server wants.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub parameters: BTreeMap<String, String>,
    /// Fields the password grant sends besides username and password, each read from a key of
    /// the login Secret (e.g. a two-factor code). Sent only when the key is present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub password_fields: Vec<LoginField>,
    /// The HTTP status with which the server asks for a code sent to the user (Virtuous: 202):
    /// the credential then waits, reason OtpRequired, until a single-use password field's key
    /// holds a code not yet sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 200, max = 299))]
    pub code_required_status: Option<u16>,
    /// How the JWT of the jwt-bearer grant and of private_key_jwt is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<AssertionSpec>,
    /// How to read the token endpoint's answer.
    #[serde(default)]
    pub answer: AnswerSpec,
    /// How long a refresh token lives when it is not used (e.g. 1440h for a server whose
    /// refresh tokens lapse after 60 days unused and are renewed by each use). The operator
    /// refreshes before then, and ExpiringSoon warns when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub refresh_token_idle_lifetime: Option<String>,
}

fn default_grants() -> Vec<GrantType> {
    vec![GrantType::RefreshToken, GrantType::Password]
}

/// An OAuth 2 grant type.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum GrantType {
    #[serde(rename = "refresh_token")]
    RefreshToken,
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    #[serde(rename = "password")]
    Password,
    /// RFC 7523: a JWT signed with the login Secret's private_key is the grant.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:jwt-bearer")]
    JwtBearer,
}

impl GrantType {
    /// The grant_type form value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
            Self::Password => "password",
            Self::JwtBearer => "urn:ietf:params:oauth:grant-type:jwt-bearer",
        }
    }
}

/// How the client authenticates to the token endpoint (RFC 6749 2.3, OpenID Connect 9).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClientAuthentication {
    /// No client authentication (a public client, or a server that wants none).
    #[default]
    #[serde(rename = "none")]
    None,
    /// HTTP Basic with client_id and client_secret, each form-encoded first.
    #[serde(rename = "client_secret_basic")]
    ClientSecretBasic,
    /// client_id and client_secret as form fields.
    #[serde(rename = "client_secret_post")]
    ClientSecretPost,
    /// A JWT signed with the login Secret's private_key (iss and sub the client_id, aud the
    /// token URL) as client_assertion.
    #[serde(rename = "private_key_jwt")]
    PrivateKeyJwt,
}

/// A form field of the password grant read from the login Secret.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LoginField {
    /// The form field's name, e.g. otp.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub name: String,
    /// The login Secret's key holding its value. Default: the field's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
    /// A value is sent once only (a one-time code): the operator remembers it was sent.
    #[serde(default)]
    pub single_use: bool,
}

/// How the operator makes a signed JWT (RFC 7523) from the login Secret's private_key.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("!has(self.lifetime) || (duration(self.lifetime) >= duration('1m') && duration(self.lifetime) <= duration('1h'))").message("assertion.lifetime must be from 1m to 1h")
)]
#[serde(rename_all = "camelCase")]
pub struct AssertionSpec {
    /// The signing algorithm: RS256 (an RSA key) or ES256 (a P-256 key), PKCS#8 PEM.
    pub algorithm: AssertionAlgorithm,
    /// The login Secret's key holding the grant assertion's issuer (iss), e.g. client_email for
    /// a Google service account. Default client_id. (private_key_jwt's iss is always client_id.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub issuer_key: Option<String>,
    /// The login Secret's key holding the grant assertion's subject (sub), when the server wants
    /// one (a user the account acts for). Default: no sub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub subject_key: Option<String>,
    /// The assertion's audience (aud). Default: the token URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^[\x20-\x7E]+$"))]
    pub audience: Option<String>,
    /// How long an assertion is valid (exp - iat), 1m to 1h. Default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub lifetime: Option<String>,
    /// Put the scopes in the grant assertion's scope claim (as Google does) instead of the form.
    #[serde(default)]
    pub scope_in_claims: bool,
}

/// A JWT signing algorithm.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AssertionAlgorithm {
    RS256,
    ES256,
}

/// Where the token endpoint's JSON answer holds what the operator needs (top-level field names).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("!(has(self.expiresIn) && has(self.expiresAt))").message("answer.expiresIn and answer.expiresAt are exclusive"),
    validation = Rule::new("!has(self.lifetime) || duration(self.lifetime) >= duration('1m')").message("answer.lifetime must be at least 1m")
)]
#[serde(rename_all = "camelCase")]
pub struct AnswerSpec {
    /// The access token's field. Default access_token.
    #[serde(default = "default_access_token")]
    #[schemars(length(min = 1, max = 64), regex(pattern = FIELD_PATTERN))]
    pub access_token: String,
    /// The field holding the access token's lifetime in seconds. Default expires_in (when
    /// expiresAt is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = FIELD_PATTERN))]
    pub expires_in: Option<String>,
    /// The field holding the access token's expiry as an instant (RFC 3339, or Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = FIELD_PATTERN))]
    pub expires_at: Option<String>,
    /// The lifetime to assume when the answer states none (a server that documents it instead).
    /// Without it, an answer without the expiry field is refused (reason MissingExpiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub lifetime: Option<String>,
    /// The refresh token's field. Default refresh_token. A new one replaces the old at once.
    #[serde(default = "default_refresh_token")]
    #[schemars(length(min = 1, max = 64), regex(pattern = FIELD_PATTERN))]
    pub refresh_token: String,
    /// The field holding the refresh token's lifetime in seconds, when the server states it.
    /// Default refresh_token_expires_in.
    #[serde(default = "default_refresh_expires_in")]
    #[schemars(length(min = 1, max = 64), regex(pattern = FIELD_PATTERN))]
    pub refresh_token_expires_in: String,
    /// For servers that answer errors with HTTP 200: the answer succeeded only when this field
    /// holds this value (e.g. field ok, equals "true").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<SuccessRule>,
    /// The field holding the error code (RFC 6749 5.2: error).
    #[serde(default = "default_error")]
    #[schemars(length(min = 1, max = 64), regex(pattern = FIELD_PATTERN))]
    pub error: String,
    /// The server's own error codes and the RFC 6749 code each means, e.g.
    /// invalid_refresh_token: invalid_grant (at most 32).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub error_codes: BTreeMap<String, ErrorCode>,
}

impl Default for AnswerSpec {
    fn default() -> Self {
        Self {
            access_token: default_access_token(),
            expires_in: None,
            expires_at: None,
            lifetime: None,
            refresh_token: default_refresh_token(),
            refresh_token_expires_in: default_refresh_expires_in(),
            success: None,
            error: default_error(),
            error_codes: BTreeMap::new(),
        }
    }
}

const FIELD_PATTERN: &str = r"^[A-Za-z0-9_.-]+$";

fn default_access_token() -> String {
    "access_token".into()
}
fn default_refresh_token() -> String {
    "refresh_token".into()
}
fn default_refresh_expires_in() -> String {
    "refresh_token_expires_in".into()
}
fn default_error() -> String {
    "error".into()
}

/// The answer succeeded only when `field` holds `equals` (a JSON true/false/number is compared
/// by its text).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SuccessRule {
    /// The top-level field to look at, e.g. ok.
    #[schemars(length(min = 1, max = 64), regex(pattern = FIELD_PATTERN))]
    pub field: String,
    /// The text the field must hold (a JSON true is "true").
    #[schemars(length(min = 1, max = 64))]
    pub equals: String,
}

/// RFC 6749 5.2 error codes (and RFC 6750's invalid_token), what a server's own code maps to.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ErrorCode {
    #[serde(rename = "invalid_request")]
    InvalidRequest,
    #[serde(rename = "invalid_client")]
    InvalidClient,
    #[serde(rename = "invalid_grant")]
    InvalidGrant,
    #[serde(rename = "unauthorized_client")]
    UnauthorizedClient,
    #[serde(rename = "unsupported_grant_type")]
    UnsupportedGrantType,
    #[serde(rename = "invalid_scope")]
    InvalidScope,
}

impl ErrorCode {
    pub const ALL: [Self; 6] = [
        Self::InvalidRequest,
        Self::InvalidClient,
        Self::InvalidGrant,
        Self::UnauthorizedClient,
        Self::UnsupportedGrantType,
        Self::InvalidScope,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }
}
