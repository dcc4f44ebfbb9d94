//! HTTP: the token endpoint's requests parsed, its answers in each flavor's shape, and the API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, Uri, header};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::state::{Inner, Issued, Reply, TokenRequest, rand_alnum};
use super::{AssertionFault, ErrorCode, Flavor, Why};

#[derive(Clone)]
struct Server {
    inner: Arc<Mutex<Inner>>,
    release: Arc<watch::Sender<u64>>,
    base_url: String,
}

impl Server {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) fn router(inner: Arc<Mutex<Inner>>, release: Arc<watch::Sender<u64>>, base_url: String) -> Router {
    let server = Server {
        inner,
        release,
        base_url,
    };
    Router::new().fallback(handler).with_state(server)
}

/// Counts a call as hanging while its handler is alive: a client that hangs up drops it.
struct Hanging(Arc<Mutex<Inner>>);

impl Drop for Hanging {
    fn drop(&mut self) {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        st.hanging = st.hanging.saturating_sub(1);
    }
}

async fn handler(
    State(server): State<Server>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let flavor = server.lock().flavor;
    if uri.path() == flavor.token_path() {
        if method != Method::POST {
            return respond(405, "application/json", json!({"error": "invalid_request"}).to_string());
        }
        let req = parse(&headers, &body);
        let (reply, wait) = {
            let mut st = server.lock();
            let (reply, hang) = st.token(&req);
            // Subscribed before the lock is let go: a release that follows is seen.
            let wait = hang.then(|| (server.release.subscribe(), Hanging(server.inner.clone())));
            (reply, wait)
        };
        if let Some((mut released, _hanging)) = wait {
            let _ = released.changed().await;
        }
        return render(flavor, &server.base_url, reply);
    }
    if uri.path().starts_with("/api/") {
        return api(&server, flavor, &headers);
    }
    respond(404, "text/plain", "not found".into())
}

fn respond(status: u16, content_type: &str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn parse(headers: &HeaderMap, body: &[u8]) -> TokenRequest {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    // RFC 6749 3.2: a parameter sent twice makes the request invalid.
    let form = is_form
        .then(|| {
            let mut form = HashMap::new();
            for (k, v) in url::form_urlencoded::parse(body).into_owned() {
                if form.insert(k, v).is_some() {
                    return None;
                }
            }
            Some(form)
        })
        .flatten();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| decode_basic(credentials));
    TokenRequest { form, basic }
}

/// RFC 6749 2.3.1: Base64 of the form-urlencoded id, a colon, and the form-urlencoded secret.
fn decode_basic(credentials: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()?;
    let (id, secret) = std::str::from_utf8(&raw).ok()?.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

fn form_decode(s: &str) -> String {
    let pair = format!("v={}", s.replace('&', "%26"));
    url::form_urlencoded::parse(pair.as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn render(flavor: Flavor, base_url: &str, reply: Reply) -> Response<Body> {
    match reply {
        Reply::Issued(issued) => respond(
            200,
            "application/json",
            issued_body(flavor, base_url, issued).to_string(),
        ),
        Reply::Refused(code, why) => refused(flavor, code, why),
        Reply::Html => respond(
            200,
            "text/html; charset=utf-8",
            "<!DOCTYPE html><html><body><form>Sign in</form></body></html>".into(),
        ),
        Reply::Status(status) => respond(status, "text/html", "<html>upstream error</html>".into()),
        Reply::RateLimited(secs) => {
            let mut r = respond(429, "application/json", json!({"error": "rate_limited"}).to_string());
            if let Ok(v) = secs.to_string().parse() {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    }
}

fn issued_body(flavor: Flavor, base_url: &str, t: Issued) -> Value {
    let mut body = match flavor {
        Flavor::Slack => json!({"ok": true, "app_id": "A0SIMULATED", "token_type": "bot",
            "access_token": t.access_token, "refresh_token": t.refresh_token}),
        Flavor::HubSpot => json!({"token_type": "bearer", "access_token": t.access_token,
            "refresh_token": t.refresh_token}),
        Flavor::Xero => json!({"token_type": "Bearer", "access_token": t.access_token,
            "refresh_token": t.refresh_token}),
        Flavor::GoogleServiceAccount => json!({"token_type": "Bearer", "access_token": t.access_token}),
        Flavor::ClientCredentials => {
            let ms = jiff::Timestamp::now().as_millisecond();
            json!({"access_token": t.access_token, "instance_url": base_url,
                "id": format!("{base_url}/id/00D000000000001/005000000000001"),
                "token_type": "Bearer", "issued_at": ms.to_string(), "signature": rand_alnum(44)})
        }
    };
    if let Some(secs) = t.expires_in {
        body["expires_in"] = json!(secs);
    }
    if let Some(secs) = t.refresh_expires_in {
        body["refresh_token_expires_in"] = json!(secs);
    }
    if let Some(scope) = t.scope
        && flavor != Flavor::GoogleServiceAccount
    {
        body["scope"] = json!(scope);
    }
    body
}

fn refused(flavor: Flavor, code: ErrorCode, why: Why) -> Response<Body> {
    let description = describe(code, why);
    let (status, body) = match flavor {
        // Slack answers every error with 200 and `ok: false`.
        Flavor::Slack => (200, json!({"ok": false, "error": slack_error(code, why)})),
        Flavor::HubSpot => (
            400,
            json!({"status": hubspot_status(code), "message": description,
                "correlationId": rand_alnum(32), "error": code.as_str(), "error_description": description}),
        ),
        Flavor::Xero => (400, json!({"error": code.as_str()})),
        Flavor::GoogleServiceAccount | Flavor::ClientCredentials => {
            (400, json!({"error": code.as_str(), "error_description": description}))
        }
    };
    let status = match why {
        Why::MethodNotAccepted | Why::SeveralMethods if flavor != Flavor::Slack => 401,
        _ => status,
    };
    respond(status, "application/json", body.to_string())
}

/// Slack's own error names (its documentation's, for oauth.v2.access).
fn slack_error(code: ErrorCode, why: Why) -> &'static str {
    match (code, why) {
        (_, Why::BadSecret) => "bad_client_secret",
        (ErrorCode::InvalidClient, _) => "invalid_client_id",
        (ErrorCode::InvalidGrant, _) => "invalid_refresh_token",
        (ErrorCode::InvalidScope, _) => "invalid_scope",
        (ErrorCode::InvalidRequest, _) => "invalid_arguments",
        (ErrorCode::UnsupportedGrantType, _) => "invalid_grant_type",
    }
}

fn hubspot_status(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidGrant => "BAD_REFRESH_TOKEN",
        ErrorCode::InvalidClient => "BAD_CLIENT_ID",
        ErrorCode::InvalidScope => "BAD_SCOPES",
        ErrorCode::InvalidRequest => "BAD_REQUEST",
        ErrorCode::UnsupportedGrantType => "BAD_GRANT_TYPE",
    }
}

/// An `error_description`: never quotes what was sent.
fn describe(code: ErrorCode, why: Why) -> &'static str {
    match why {
        Why::UnknownClient | Why::BadSecret => "Client authentication failed.",
        Why::ClientRevoked => "The client or account is disabled.",
        Why::MethodNotAccepted => "This client authentication method is not accepted.",
        Why::SeveralMethods => "More than one client authentication method was used.",
        Why::BadAssertion(AssertionFault::Signature) => "Invalid JWT Signature.",
        Why::BadAssertion(AssertionFault::Audience) => "Invalid JWT: Failed audience check.",
        Why::BadAssertion(AssertionFault::Lifetime) => {
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim."
        }
        Why::BadAssertion(AssertionFault::UnknownIssuer) => "Invalid grant: account not found",
        Why::BadAssertion(AssertionFault::Subject) => "Invalid JWT: the subject is not the client.",
        Why::BadAssertion(AssertionFault::Malformed) => "Invalid JWT.",
        Why::BadAssertion(AssertionFault::MissingScope) | Why::ScopeNotExpected => {
            "Invalid OAuth scope or ID token audience provided."
        }
        Why::UnknownRefreshToken
        | Why::ReusedRefreshToken
        | Why::RevokedRefreshToken
        | Why::ExpiredRefreshToken
        | Why::OtherClientsRefreshToken => "missing or invalid refresh token",
        Why::Malformed => "A required parameter is missing or malformed.",
        Why::GrantNotServed => "Unsupported grant type.",
        Why::Injected => match code {
            ErrorCode::InvalidClient => "Client authentication failed.",
            ErrorCode::InvalidGrant => "missing or invalid refresh token",
            ErrorCode::InvalidScope => "Invalid OAuth scope or ID token audience provided.",
            ErrorCode::InvalidRequest => "A required parameter is missing or malformed.",
            ErrorCode::UnsupportedGrantType => "Unsupported grant type.",
        },
    }
}

/// The API behind the server: 200 to a current Bearer access token, 401 to any other. Slack's
/// own API answers an expired token with 200 `{"ok":false,"error":"token_expired"}`; this one
/// answers 401 (with that body), because a probe definition reads status codes.
fn api(server: &Server, flavor: Flavor, headers: &HeaderMap) -> Response<Body> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let current = {
        let mut st = server.lock();
        st.api_calls.push(token.clone());
        st.is_current(&token)
    };
    match (current, flavor) {
        (true, Flavor::Slack) => respond(
            200,
            "application/json",
            json!({"ok": true, "user_id": "U0SIMULATED"}).to_string(),
        ),
        (true, _) => respond(200, "application/json", json!({"id": "simulated-user"}).to_string()),
        (false, Flavor::Slack) => respond(
            401,
            "application/json",
            json!({"ok": false, "error": "token_expired"}).to_string(),
        ),
        (false, _) => {
            let mut r = respond(401, "application/json", json!({"error": "invalid_token"}).to_string());
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            r
        }
    }
}
