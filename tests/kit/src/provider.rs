//! An HTTP server on 127.0.0.1 that behaves like the providers of PROVIDERS.md: per-token answers
//! (200, JSON or plain-text 401, 403, 429 with Retry-After or X-RateLimit-*, 5xx, slow answers),
//! and a log of every request it received.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response, Uri};

/// How the provider answers a token.
#[derive(Clone, Debug)]
pub enum Answer {
    Ok,
    /// CharityStack-style JSON 401.
    UnauthorizedJson,
    /// Virtuous-style plain text 401.
    UnauthorizedText,
    Forbidden,
    /// 429 with `Retry-After` seconds.
    RateLimited {
        retry_after: u64,
    },
    /// 429 with X-RateLimit-* (window used up, resets at the unix second given).
    RateLimitedHeaders {
        reset_at: i64,
    },
    Status(u16),
    /// Answers 200 after this long.
    Slow(Duration),
    /// A careless API: a 401 whose body, `Content-Type` and `WWW-Authenticate` repeat the token
    /// in every form of `echo::encodings`.
    Echo,
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub method: String,
    pub authorization: Option<String>,
    /// The token, read where the provider's shape says it is.
    pub token: Option<String>,
    pub user_agent: Option<String>,
}

/// How the provider reads tokens and names its headers: Bearer and `X-RateLimit-*` by default;
/// another shape plays an API defined only as an `ApiProvider`.
#[derive(Clone, Debug)]
pub struct Shape {
    /// The header the token arrives in (lower-case), and what precedes it there.
    pub auth_header: String,
    pub auth_prefix: String,
    /// Names of the limit, remaining and reset headers.
    pub rate_headers: [String; 3],
    /// The reset header's value with `send_rate_headers` (a Unix time by default).
    pub reset_value: String,
    pub retry_after_header: String,
    /// Sent with every 200: a header stating the token's expiry.
    pub expiry_header: Option<(String, String)>,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            auth_header: "authorization".into(),
            auth_prefix: "Bearer ".into(),
            rate_headers: [
                "X-RateLimit-Limit".into(),
                "X-RateLimit-Remaining".into(),
                "X-RateLimit-Reset".into(),
            ],
            reset_value: "4102444800".into(),
            retry_after_header: "Retry-After".into(),
            expiry_header: None,
        }
    }
}

/// A Virtuous-like account behind `POST /Token`.
#[derive(Clone, Debug, Default)]
pub struct Account {
    pub username: String,
    pub password: String,
    /// Two-factor authentication: the password grant answers 202 until this code comes along.
    pub otp: Option<String>,
    pub expires_in: u64,
    /// How many token pairs were issued.
    pub issued: u32,
    /// The only refresh token that works (each refresh rotates it).
    pub current_refresh: Option<String>,
    /// Grant types received, in order ("password", "password+otp", "refresh_token", "refresh_token(rejected)").
    pub grants: Vec<String>,
    /// A careless endpoint: every refusal repeats every value of the form it was sent (and the
    /// raw form) in every form of `echo::encodings`, in its body and its `Content-Type`.
    pub echo_form: bool,
}

#[derive(Default)]
struct Inner {
    answers: HashMap<String, Answer>,
    seen: Vec<Seen>,
    /// CharityStack-like: answer with X-RateLimit headers on every response.
    rate_headers: bool,
    /// CharityStack-like: the first request with the key revokes the other at once.
    revokes: HashMap<String, String>,
    account: Option<Account>,
    /// The answer for tokens without one of their own (401 when unset).
    default_answer: Option<Answer>,
    /// When each request arrived, with its token (for rate and spread measurements).
    log_times: bool,
    times: Vec<(std::time::Instant, String)>,
    shape: Shape,
}

#[derive(Clone)]
pub struct Provider {
    inner: Arc<Mutex<Inner>>,
    pub base_url: String,
}

impl Provider {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(handler).with_state(inner.clone());
        let addr = crate::serve(app).await;
        Self {
            inner,
            base_url: format!("http://{addr}"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn answer(&self, token: &str, answer: Answer) {
        self.lock().answers.insert(token.to_owned(), answer);
    }

    /// Reads tokens and names headers this way from now on.
    pub fn set_shape(&self, shape: Shape) {
        self.lock().shape = shape;
    }

    pub fn send_rate_headers(&self, on: bool) {
        self.lock().rate_headers = on;
    }

    /// The first use of `new` revokes `old` (CharityStack: one active key per account).
    pub fn revoke_on_use(&self, new: &str, old: &str) {
        self.lock().revokes.insert(new.to_owned(), old.to_owned());
    }

    /// Answers every token without an answer of its own this way.
    pub fn default_answer(&self, answer: Answer) {
        self.lock().default_answer = Some(answer);
    }

    /// Starts recording (arrival time, token) of every probe; `take_times` drains them.
    pub fn record_times(&self, on: bool) {
        self.lock().log_times = on;
    }

    pub fn take_times(&self) -> Vec<(std::time::Instant, String)> {
        std::mem::take(&mut self.lock().times)
    }

    /// Forgets the request log (it grows with every probe).
    pub fn clear_seen(&self) {
        self.lock().seen.clear();
    }

    pub fn set_account(&self, account: Account) {
        self.lock().account = Some(account);
    }

    pub fn account(&self) -> Option<Account> {
        self.lock().account.clone()
    }

    /// Forgets every refresh token (as when the user's grant is revoked).
    pub fn revoke_refresh_tokens(&self) {
        if let Some(a) = self.lock().account.as_mut() {
            a.current_refresh = None;
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Requests that carried `token` where the shape says tokens go.
    pub fn hits(&self, token: &str) -> usize {
        self.lock()
            .seen
            .iter()
            .filter(|s| s.token.as_deref() == Some(token))
            .count()
    }
}

/// The token endpoint's answer: status, body, and `Content-Type` when not JSON's.
type Answered = (u16, String, Option<String>);

fn token_endpoint(st: &mut Inner, body: &[u8]) -> Answered {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let Some(acct) = st.account.as_mut() else {
        return (404, String::new(), None);
    };
    let f = |k: &str| form.get(k).cloned().unwrap_or_default();
    let echo = acct.echo_form.then(|| {
        let mut sent: Vec<String> = form
            .iter()
            .filter(|(k, _)| *k != "grant_type")
            .map(|(_, v)| v.clone())
            .collect();
        sent.push(String::from_utf8_lossy(body).into_owned());
        sent
    });
    let invalid = |d: &str| match &echo {
        Some(sent) => {
            let sent: Vec<&str> = sent.iter().map(String::as_str).collect();
            (400, crate::echo::body(&sent), Some(crate::echo::content_type(&sent)))
        }
        None => (
            400,
            serde_json::json!({"error": "invalid_grant", "error_description": d}).to_string(),
            None,
        ),
    };
    match f("grant_type").as_str() {
        "password" => {
            acct.grants.push(if form.contains_key("otp") {
                "password+otp".into()
            } else {
                "password".into()
            });
            if f("username") != acct.username || f("password") != acct.password {
                return invalid("The user name or password is incorrect.");
            }
            if acct.otp.as_ref().is_some_and(|code| form.get("otp") != Some(code)) {
                return (202, String::new(), None);
            }
        }
        "refresh_token" => {
            if acct.current_refresh.as_deref() != Some(f("refresh_token").as_str()) || f("refresh_token").is_empty() {
                acct.grants.push("refresh_token(rejected)".into());
                return invalid("The refresh token is invalid or expired.");
            }
            acct.grants.push("refresh_token".into());
        }
        _ => return (400, r#"{"error":"unsupported_grant_type"}"#.into(), None),
    }
    acct.issued += 1;
    let (access, refresh) = (format!("acc-{}", acct.issued), format!("ref-{}", acct.issued));
    acct.current_refresh = Some(refresh.clone());
    let body = format!(
        r#"{{"access_token":"{access}","token_type":"bearer","expires_in":{},"refresh_token":"{refresh}","userName":"{}"}}"#,
        acct.expires_in, acct.username
    );
    st.answers.insert(access, Answer::Ok);
    (200, body, None)
}

async fn handler(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response<Body> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let auth = header("authorization");
    let (answer, rate_headers, shape, token) = {
        let mut st = inner.lock().unwrap_or_else(|e| e.into_inner());
        let token = header(&st.shape.auth_header)
            .and_then(|v| v.strip_prefix(st.shape.auth_prefix.as_str()).map(str::to_owned));
        st.seen.push(Seen {
            path: uri.to_string(),
            method: method.to_string(),
            authorization: auth.clone(),
            token: token.clone(),
            user_agent: header("user-agent"),
        });
        if method == axum::http::Method::POST && uri.path() == "/Token" {
            let (status, body, content_type) = token_endpoint(&mut st, &body);
            let content_type = content_type.unwrap_or_else(|| "application/json".into());
            return Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(Body::from(body))
                .unwrap_or_else(|_| Response::new(Body::empty()));
        }
        let token = token.unwrap_or_default();
        if let Some(old) = st.revokes.remove(&token) {
            st.answers.insert(old, Answer::UnauthorizedJson);
        }
        if st.log_times {
            st.times.push((std::time::Instant::now(), token.clone()));
        }
        (
            st.answers.get(&token).cloned().or_else(|| st.default_answer.clone()),
            st.rate_headers,
            st.shape.clone(),
            token,
        )
    };
    let [limit, remaining, reset] = &shape.rate_headers;
    let mut b = Response::builder();
    if rate_headers {
        b = b
            .header(limit, "1000")
            .header(remaining, "987")
            .header(reset, shape.reset_value.as_str());
    }
    let (status, body) = match answer {
        Some(Answer::Ok) => {
            if let Some((name, value)) = &shape.expiry_header {
                b = b.header(name, value);
            }
            (200, r#"{"items":[]}"#.to_owned())
        }
        Some(Answer::Slow(d)) => {
            tokio::time::sleep(d).await;
            (200, "{}".to_owned())
        }
        None | Some(Answer::UnauthorizedJson) => (401, r#"{"error": "Unauthorized"}"#.to_owned()),
        Some(Answer::UnauthorizedText) => {
            b = b.header("content-type", "text/plain; charset=utf-8");
            (401, "Authorization has been denied for this request.".to_owned())
        }
        Some(Answer::Forbidden) => (403, r#"{"message":"Forbidden"}"#.to_owned()),
        Some(Answer::Echo) => {
            let sent = [token.as_str(), auth.as_deref().unwrap_or_default()];
            let forms = crate::echo::content_type(&sent);
            b = b
                .header("content-type", forms.as_str())
                .header("www-authenticate", format!("Bearer error=\"invalid_token\", {forms}"));
            (401, crate::echo::body(&sent))
        }
        Some(Answer::RateLimited { retry_after }) => {
            b = b.header(&shape.retry_after_header, retry_after.to_string());
            (429, "Too Many Requests".to_owned())
        }
        Some(Answer::RateLimitedHeaders { reset_at }) => {
            b = b
                .header(limit, "1000")
                .header(remaining, "0")
                .header(reset, reset_at.to_string());
            (429, r#"{"error":"Too Many Requests"}"#.to_owned())
        }
        Some(Answer::Status(s)) => (s, "<html>upstream error</html>".to_owned()),
    };
    b.status(status)
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
