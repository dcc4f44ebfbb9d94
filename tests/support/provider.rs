//! An HTTP server on 127.0.0.1 that behaves like the providers of PROVIDERS.md: per-token answers
//! (200, JSON or plain-text 401, 403, 429 with Retry-After or X-RateLimit-*, 5xx, slow answers),
//! and a log of every request it received.
#![allow(dead_code)]

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
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Default)]
struct Inner {
    answers: HashMap<String, Answer>,
    seen: Vec<Seen>,
    /// CharityStack-like: answer with X-RateLimit headers on every response.
    rate_headers: bool,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
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

    pub fn send_rate_headers(&self, on: bool) {
        self.lock().rate_headers = on;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Requests that carried `token`.
    pub fn hits(&self, token: &str) -> usize {
        let want = format!("Bearer {token}");
        self.lock()
            .seen
            .iter()
            .filter(|s| s.authorization.as_deref() == Some(want.as_str()))
            .count()
    }
}

async fn handler(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let auth = header("authorization");
    let (answer, rate_headers) = {
        let mut st = inner.lock().unwrap_or_else(|e| e.into_inner());
        st.seen.push(Seen {
            path: uri.to_string(),
            authorization: auth.clone(),
            user_agent: header("user-agent"),
        });
        let token = auth
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or_default();
        (st.answers.get(token).cloned(), st.rate_headers)
    };
    let mut b = Response::builder();
    if rate_headers {
        b = b
            .header("X-RateLimit-Limit", "1000")
            .header("X-RateLimit-Remaining", "987")
            .header("X-RateLimit-Reset", "4102444800");
    }
    let (status, body) = match answer {
        Some(Answer::Ok) => (200, r#"{"items":[]}"#.to_owned()),
        Some(Answer::Slow(d)) => {
            tokio::time::sleep(d).await;
            (200, "{}".to_owned())
        }
        None | Some(Answer::UnauthorizedJson) => (401, r#"{"error": "Unauthorized"}"#.to_owned()),
        Some(Answer::UnauthorizedText) => (
            401,
            "Authorization has been denied for this request.".to_owned(),
        ),
        Some(Answer::Forbidden) => (403, r#"{"message":"Forbidden"}"#.to_owned()),
        Some(Answer::RateLimited { retry_after }) => {
            b = b.header("Retry-After", retry_after.to_string());
            (429, "Too Many Requests".to_owned())
        }
        Some(Answer::RateLimitedHeaders { reset_at }) => {
            b = b
                .header("X-RateLimit-Limit", "1000")
                .header("X-RateLimit-Remaining", "0")
                .header("X-RateLimit-Reset", reset_at.to_string());
            (429, r#"{"error":"Too Many Requests"}"#.to_owned())
        }
        Some(Answer::Status(s)) => (s, "<html>upstream error</html>".to_owned()),
    };
    b.status(status)
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
