//! An authorization server as the operator uses it: the types `ApiProvider.spec.oauth` is read
//! into (`decide::oauth::definition::read`), and Virtuous CRM+, the one built in. A leaf: the
//! provider's profile holds it, and nothing here looks back.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::crd::oauth::{AssertionAlgorithm, ClientAuthentication, ErrorCode, GrantType};

/// The longest assertion lifetime RFC 7523 servers accept (Google: 1 h), and the default.
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

/// An authorization server, as the operator uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    pub endpoint: Endpoint,
    /// Tried in this order.
    pub grants: Vec<GrantType>,
    pub client_auth: ClientAuthentication,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
    /// Static form fields, sorted by name.
    pub parameters: Vec<(String, String)>,
    pub password_fields: Vec<Field>,
    pub code_required_status: Option<u16>,
    pub assertion: Option<Assertion>,
    pub answer: AnswerRules,
    pub refresh_idle_lifetime: Option<Duration>,
}

impl Definition {
    /// The login Secret key a code the server asked for goes in: the first single-use password
    /// field's, else `otp`.
    pub fn code_key(&self) -> &str {
        self.password_fields
            .iter()
            .find(|f| f.single_use)
            .map_or("otp", |f| f.key.as_str())
    }
}

/// Where the token endpoint is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Appended to the credential's base URL.
    Path(String),
    /// An absolute https URL on one of the provider's hosts.
    Url(String),
}

/// A form field of the password grant, read from a login Secret key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub key: String,
    pub single_use: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assertion {
    pub algorithm: AssertionAlgorithm,
    pub issuer_key: String,
    pub subject_key: Option<String>,
    pub audience: Option<String>,
    pub lifetime: Duration,
    pub scope_in_claims: bool,
}

/// How the answer's JSON is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerRules {
    pub access_token: String,
    pub expiry: Expiry,
    /// Assumed when the answer states no expiry.
    pub lifetime: Option<Duration>,
    pub refresh_token: String,
    pub refresh_token_expires_in: String,
    /// `(field, value)`: the answer succeeded only when the field's text is the value.
    pub success: Option<(String, String)>,
    pub error: String,
    pub error_codes: BTreeMap<String, ErrorCode>,
}

/// Where the access token's expiry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Seconds from now, in this field.
    In(String),
    /// An instant (RFC 3339 or Unix seconds), in this field.
    At(String),
}

impl Definition {
    /// Whether a grant that needs a refresh token is among the grants.
    pub fn refreshes(&self) -> bool {
        self.grants.contains(&GrantType::RefreshToken)
    }
}

/// Virtuous CRM+ (PROVIDERS.md): `POST {baseUrl}/Token`, the refresh-token grant, then the
/// password grant with a one-time code when the server answers 202.
pub fn virtuous() -> Definition {
    Definition {
        endpoint: Endpoint::Path("/Token".into()),
        grants: vec![GrantType::RefreshToken, GrantType::Password],
        client_auth: ClientAuthentication::None,
        scopes: Vec::new(),
        audience: None,
        resource: None,
        parameters: Vec::new(),
        password_fields: vec![Field {
            name: "otp".into(),
            key: "otp".into(),
            single_use: true,
        }],
        code_required_status: Some(202),
        assertion: None,
        answer: default_answer(),
        refresh_idle_lifetime: None,
    }
}

/// RFC 6749 5.1's answer: what an `answer` left out reads as.
pub fn default_answer() -> AnswerRules {
    AnswerRules {
        access_token: "access_token".into(),
        expiry: Expiry::In("expires_in".into()),
        lifetime: None,
        refresh_token: "refresh_token".into(),
        refresh_token_expires_in: "refresh_token_expires_in".into(),
        success: None,
        error: "error".into(),
        error_codes: BTreeMap::new(),
    }
}
