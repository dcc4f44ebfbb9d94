//! A scripted API server for the shell's unit tests (as controller-rs's `ApiServerVerifier`):
//! every request gets the next scripted answer and is recorded, so a test asserts the exact
//! requests an action sends, failures included.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;

/// One request as it was sent.
#[derive(Clone, Debug)]
pub struct Sent {
    /// `METHOD path?query`.
    pub line: String,
    pub content_type: Option<String>,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: serde_json::Value,
}

/// The answers to give, in order, and the requests received.
#[derive(Clone, Default)]
pub struct Script {
    answers: Arc<Mutex<VecDeque<(u16, serde_json::Value)>>>,
    sent: Arc<Mutex<Vec<Sent>>>,
}

/// A scripted answer: the status code and the JSON body.
pub fn answer(code: u16, body: serde_json::Value) -> (u16, serde_json::Value) {
    (code, body)
}

/// The API server's `Status` body for a failure.
pub fn failure(code: u16, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "message": message, "code": code})
}

impl Script {
    pub fn new(answers: Vec<(u16, serde_json::Value)>) -> Self {
        Self {
            answers: Arc::new(Mutex::new(answers.into())),
            sent: Arc::default(),
        }
    }

    /// A client whose requests this script answers. A request beyond the script is answered
    /// 500 and recorded, so the assertion names it.
    pub fn client(&self) -> Client {
        let script = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let script = script.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let line = format!(
                    "{} {}",
                    parts.method,
                    parts.uri.path_and_query().map_or("", |p| p.as_str())
                );
                let content_type = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                script.lock_sent().push(Sent {
                    line,
                    content_type,
                    body,
                });
                let (code, body) = script
                    .answers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front()
                    .unwrap_or_else(|| (500, failure(500, "InternalError", "not in the script")));
                let mut response = Response::new(Body::from(body.to_string().into_bytes()));
                *response.status_mut() =
                    http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        Client::new(service, "default")
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.lock_sent().clone()
    }

    /// Exactly these requests were sent, in this order, and every scripted answer was used.
    pub fn assert_sent(&self, lines: &[&str]) {
        let sent: Vec<String> = self.sent().into_iter().map(|s| s.line).collect();
        assert_eq!(sent, lines);
        let left = self.answers.lock().unwrap_or_else(PoisonError::into_inner).len();
        assert_eq!(left, 0, "{left} scripted answers were never asked for");
    }

    fn lock_sent(&self) -> std::sync::MutexGuard<'_, Vec<Sent>> {
        self.sent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
