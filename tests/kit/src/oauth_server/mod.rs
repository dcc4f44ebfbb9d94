//! An OAuth 2 authorization server, and the API behind it, on 127.0.0.1: the simulator the
//! operator's token renewal is checked against (issue 38). One server plays one [`Flavor`], each
//! following what its provider documents:
//!
//! - [`Flavor::Slack`] (token rotation): `POST /api/oauth.v2.access`, refresh_token grant,
//!   client_secret_post; `{"ok":true,"access_token":"xoxe.xoxb-…","refresh_token":"xoxe-1-…",
//!   "expires_in":43200,"token_type":"bot"}`; every error is HTTP 200 `{"ok":false,"error":…}`
//!   (`invalid_refresh_token`, `invalid_client_id`, `bad_client_secret`); refresh tokens rotate.
//! - [`Flavor::HubSpot`]: `POST /oauth/v1/token`, refresh_token grant, client_secret_post; access
//!   tokens live 1,800 s; the refresh token does not rotate (the answer repeats it); errors 400
//!   `{"status":"BAD_REFRESH_TOKEN","message":…,"error":"invalid_grant",…}`.
//! - [`Flavor::Xero`]: `POST /connect/token`, refresh_token grant, client_secret_basic (RFC 6749
//!   2.3.1: id and secret form-urlencoded before Base64); access tokens 1,800 s; refresh tokens
//!   rotate and lapse after 60 days unused ([`OAuthServer::age_refresh_tokens`]); errors 400
//!   `{"error":…}`.
//! - [`Flavor::GoogleServiceAccount`]: `POST /token`, RFC 7523 jwt-bearer grant: an RS256
//!   assertion with `iss` = the account's e-mail, `aud` = the token URL (exactly), `scope`, `iat`
//!   about now and `exp` at most 1 h after it; `{"access_token":"ya29.…","expires_in":3599,
//!   "token_type":"Bearer"}`, no refresh token; errors 400 `{"error":…,"error_description":…}`.
//! - [`Flavor::ClientCredentials`] (Salesforce-style): `POST /services/oauth2/token`,
//!   client_credentials grant, client_secret_basic; the answer has no `expires_in`
//!   (`{"access_token":"00D…","instance_url":…,"token_type":"Bearer","issued_at":"<ms>",…}`);
//!   errors 400 `{"error":…,"error_description":…}`.
//!
//! Every flavor also takes `private_key_jwt` or no client authentication when told to
//! ([`OAuthServer::accept_client_auth`]); any other method is refused with 401
//! `{"error":"invalid_client"}` (Slack: 200 `ok:false`).
//!
//! The API: `GET` any path under `/api/` other than the token path (the tests use `/api/me`)
//! answers 200 to a current Bearer access token and 401 to any other.

mod jwt;
pub mod keys;
mod state;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use state::Inner;

/// Which provider the server plays (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    Slack,
    HubSpot,
    Xero,
    GoogleServiceAccount,
    ClientCredentials,
}

impl Flavor {
    /// The token endpoint's path.
    pub fn token_path(self) -> &'static str {
        match self {
            Self::Slack => "/api/oauth.v2.access",
            Self::HubSpot => "/oauth/v1/token",
            Self::Xero => "/connect/token",
            Self::GoogleServiceAccount => "/token",
            Self::ClientCredentials => "/services/oauth2/token",
        }
    }

    /// The grant the flavor serves.
    pub fn grant(self) -> GrantType {
        match self {
            Self::Slack | Self::HubSpot | Self::Xero => GrantType::RefreshToken,
            Self::GoogleServiceAccount => GrantType::JwtBearer,
            Self::ClientCredentials => GrantType::ClientCredentials,
        }
    }

    /// Whether a refresh dies when used (the answer carries its successor).
    pub fn rotates(self) -> bool {
        matches!(self, Self::Slack | Self::Xero)
    }

    /// How clients authenticate unless a test says otherwise.
    pub fn default_client_auth(self) -> ClientAuth {
        match self {
            Self::Slack | Self::HubSpot => ClientAuth::SecretPost,
            Self::Xero | Self::ClientCredentials => ClientAuth::SecretBasic,
            // The assertion is the credential: no client is involved.
            Self::GoogleServiceAccount => ClientAuth::None,
        }
    }

    /// The access-token lifetime the provider documents (Salesforce's session lifetime, which
    /// its answer does not state).
    pub fn default_access_lifetime(self) -> Duration {
        Duration::from_secs(match self {
            Self::Slack => 43_200,
            Self::HubSpot | Self::Xero => 1_800,
            Self::GoogleServiceAccount => 3_599,
            Self::ClientCredentials => 7_200,
        })
    }

    /// How long a refresh token may go unused before it lapses.
    pub fn refresh_idle_limit(self) -> Option<Duration> {
        match self {
            Self::Xero => Some(Duration::from_secs(60 * 24 * 3600)),
            _ => None,
        }
    }
}

/// A client-authentication method (RFC 6749 2.3, OpenID Connect Core 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientAuth {
    /// HTTP Basic of the form-urlencoded id and secret.
    SecretBasic,
    /// `client_id` and `client_secret` in the form.
    SecretPost,
    /// `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and a
    /// `client_assertion` signed with the client's key.
    PrivateKeyJwt,
    /// At most a `client_id` in the form.
    None,
}

/// The `grant_type` of a token call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GrantType {
    RefreshToken,
    ClientCredentials,
    /// `urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523).
    JwtBearer,
    Password,
    AuthorizationCode,
    /// No `grant_type` at all.
    Missing,
    Other(String),
}

impl GrantType {
    pub const JWT_BEARER: &'static str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

    fn from_wire(v: Option<&str>) -> Self {
        match v {
            None => Self::Missing,
            Some("refresh_token") => Self::RefreshToken,
            Some("client_credentials") => Self::ClientCredentials,
            Some(Self::JWT_BEARER) => Self::JwtBearer,
            Some("password") => Self::Password,
            Some("authorization_code") => Self::AuthorizationCode,
            Some(other) => Self::Other(other.to_owned()),
        }
    }
}

/// An RFC 6749 5.2 error code (Slack's own names are derived from it and the [`Why`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    InvalidScope,
    UnsupportedGrantType,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::InvalidScope => "invalid_scope",
            Self::UnsupportedGrantType => "unsupported_grant_type",
        }
    }
}

/// Why the server refused a token call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Why {
    UnknownClient,
    BadSecret,
    ClientRevoked,
    /// A client-authentication method this server was not told to accept.
    MethodNotAccepted,
    /// More than one method in one request (RFC 6749 2.3).
    SeveralMethods,
    /// A client assertion or jwt-bearer grant assertion failed verification.
    BadAssertion(AssertionFault),
    UnknownRefreshToken,
    /// An already-rotated refresh token came back (reuse).
    ReusedRefreshToken,
    RevokedRefreshToken,
    /// Unused for longer than the flavor allows.
    ExpiredRefreshToken,
    /// The refresh token belongs to another client.
    OtherClientsRefreshToken,
    /// A parameter the grant needs is missing, or the body is not a form.
    Malformed,
    ScopeNotExpected,
    /// A grant type this flavor does not serve.
    GrantNotServed,
    /// A [`Fault::Refuse`] a test asked for.
    Injected,
}

/// What was wrong with an assertion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AssertionFault {
    /// Not a JWT, or claims that do not parse.
    Malformed,
    /// `iss` names no registered account or client.
    UnknownIssuer,
    Signature,
    Audience,
    /// `sub` is not the client (private_key_jwt).
    Subject,
    /// `iat` far from now, `exp` passed, or `exp - iat` over an hour.
    Lifetime,
    MissingScope,
}

/// Faults a test injects into the next token calls ([`OAuthServer::fail_next`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 200 with `text/html`: a login page, a captive portal.
    Html,
    /// Refuses with this code in the flavor's error shape, whatever was sent.
    Refuse(ErrorCode),
    /// Performs the grant and answers without `expires_in`.
    NoExpiresIn,
    /// Performs the grant and answers with this access token (e.g. empty, or with a space).
    AccessToken(String),
    /// Answers this status with an HTML body (500, 503).
    Status(u16),
    /// 429 with `Retry-After` seconds.
    RateLimited { retry_after: u64 },
    /// Performs the grant (a rotated refresh token dies) and then never answers until
    /// [`OAuthServer::release_hung`] or the client hangs up: an operator killed after the server
    /// answered and before it stored the answer.
    RotateThenHang,
    /// Performs nothing and never answers until [`OAuthServer::release_hung`] (then 503) or the
    /// client hangs up: an operator killed before its request did anything.
    Hang,
}

/// What became of a token call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A token was issued (whatever a fault then did to the answer).
    Issued,
    Refused {
        code: ErrorCode,
        why: Why,
    },
    /// An injected fault answered instead of the server ([`Fault::Html`], `Status`,
    /// `RateLimited`).
    Failed,
}

/// One call of the token endpoint, as the server saw it.
#[derive(Clone, Debug)]
pub struct TokenCall {
    pub grant: GrantType,
    /// The client-authentication method seen (the first, when several were sent).
    pub auth: ClientAuth,
    pub client_id: Option<String>,
    /// The refresh token presented, as sent (these are test tokens).
    pub refresh_token: Option<String>,
    pub outcome: Outcome,
    /// The fault injected into this call, if any.
    pub fault: Option<Fault>,
    pub at: SystemTime,
}

/// An authorization server of one [`Flavor`] on 127.0.0.1, with the controls tests need.
#[derive(Clone)]
pub struct OAuthServer {
    inner: Arc<Mutex<Inner>>,
    release: Arc<tokio::sync::watch::Sender<u64>>,
    pub flavor: Flavor,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
}

impl OAuthServer {
    pub async fn start(flavor: Flavor) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("addr");
        let base_url = format!("http://{addr}");
        let inner = Arc::new(Mutex::new(Inner::new(flavor, &base_url)));
        let release = Arc::new(tokio::sync::watch::channel(0u64).0);
        let app = wire::router(inner.clone(), release.clone(), base_url.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            inner,
            release,
            flavor,
            base_url,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token endpoint's URL: what an operator is configured with, and the audience the
    /// assertions must name unless [`OAuthServer::set_audience`] says otherwise.
    pub fn token_url(&self) -> String {
        format!("{}{}", self.base_url, self.flavor.token_path())
    }

    /// The probe endpoint: 200 to a current access token, 401 otherwise.
    pub fn api_url(&self) -> String {
        format!("{}/api/me", self.base_url)
    }

    /// Registers (or replaces, restoring a revoked one) a client with a secret.
    pub fn register_client(&self, id: &str, secret: &str) {
        self.lock().register(id, Some(secret.to_owned()), None);
    }

    /// Registers a client that authenticates with `private_key_jwt`, by its public key (SPKI
    /// PEM, RSA for RS256 or P-256 for ES256).
    pub fn register_client_key(&self, id: &str, public_key_pem: &str) {
        self.lock().register(id, None, Some(public_key_pem.to_owned()));
    }

    /// Registers a Google service account: its e-mail (the assertion's `iss`) and public key.
    pub fn register_service_account(&self, email: &str, public_key_pem: &str) {
        self.lock().register(email, None, Some(public_key_pem.to_owned()));
    }

    /// Refuses the client from now on (`invalid_client`); its access tokens stop working.
    pub fn revoke_client(&self, id: &str) {
        self.lock().revoke_client(id);
    }

    /// Mints a refresh token for `client_id`, as a person would paste it into a login Secret
    /// (the first of a new family).
    pub fn seed_refresh_token(&self, client_id: &str) -> String {
        self.lock().seed_refresh_token(client_id)
    }

    /// Accepts these client-authentication methods (only) from now on.
    pub fn accept_client_auth(&self, methods: &[ClientAuth]) {
        self.lock().accepted = methods.to_vec();
    }

    /// Expects exactly these scopes: a client_credentials or jwt-bearer call must name this set,
    /// a refresh may name a subset or none (RFC 6749 6). Unset, any scope goes.
    pub fn expect_scopes(&self, scopes: &[&str]) {
        self.lock().scopes = Some(scopes.iter().map(|s| (*s).to_owned()).collect());
    }

    /// The audience assertions must name (the token URL by default).
    pub fn set_audience(&self, audience: &str) {
        self.lock().audience = audience.to_owned();
    }

    /// Access tokens issued from now on live this long (and say so where the flavor does).
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        self.lock().lifetime = lifetime;
    }

    /// Answers state this refresh-token lifetime from now on (`refresh_token_expires_in`, as
    /// some servers do); the server does not enforce it.
    pub fn state_refresh_token_lifetime(&self, lifetime: Duration) {
        self.lock().refresh_lifetime = Some(lifetime);
    }

    /// Whether presenting a rotated refresh token also revokes its whole family (the refresh
    /// tokens and access tokens issued from the same seed), as the OAuth security BCP allows.
    /// Off by default.
    pub fn revoke_family_on_reuse(&self, on: bool) {
        self.lock().revoke_family_on_reuse = on;
    }

    /// Every access token issued so far is expired now.
    pub fn expire_access_tokens(&self) {
        self.lock().expire_access_tokens();
    }

    /// Every access token issued so far is revoked.
    pub fn revoke_access_tokens(&self) {
        self.lock().revoke_access_tokens();
    }

    /// The user revoked the grant: every refresh token dies (access tokens live out their time).
    pub fn revoke_refresh_tokens(&self) {
        self.lock().revoke_refresh_tokens();
    }

    /// Moves the simulated clock of refresh tokens: each was last used `by` earlier.
    pub fn age_refresh_tokens(&self, by: Duration) {
        self.lock().age_refresh_tokens(by);
    }

    /// The next `n` token calls meet `fault` (after any faults already queued).
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.lock().faults.extend(std::iter::repeat_n(fault, n));
    }

    /// How many token calls are hanging after [`Fault::RotateThenHang`] or [`Fault::Hang`].
    pub fn hanging(&self) -> usize {
        self.lock().hanging
    }

    /// Lets every hanging call answer what it prepared.
    pub fn release_hung(&self) {
        self.release.send_modify(|g| *g += 1);
    }

    /// Every token call so far, in order.
    pub fn calls(&self) -> Vec<TokenCall> {
        self.lock().calls.clone()
    }

    /// Token calls per grant type.
    pub fn counts_by_grant(&self) -> HashMap<GrantType, usize> {
        let mut counts = HashMap::new();
        for c in &self.lock().calls {
            *counts.entry(c.grant.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Token calls of `grant`.
    pub fn count(&self, grant: &GrantType) -> usize {
        self.lock().calls.iter().filter(|c| &c.grant == grant).count()
    }

    /// The refresh tokens that work now.
    pub fn live_refresh_tokens(&self) -> Vec<String> {
        self.lock().live_refresh_tokens()
    }

    pub fn current_access_tokens(&self) -> Vec<String> {
        self.lock().current_access_tokens()
    }

    /// Issued, not expired, not revoked.
    pub fn is_current(&self, access_token: &str) -> bool {
        self.lock().is_current(access_token)
    }

    /// Requests to the API, with the access token each carried.
    pub fn api_hits(&self, access_token: &str) -> usize {
        self.lock()
            .api_calls
            .iter()
            .filter(|t| t.as_str() == access_token)
            .count()
    }
}
