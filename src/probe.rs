//! The one HTTP request that tells whether a token works. I/O only: what the answer means is
//! `verdict`'s business.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, USER_AGENT};

use crate::oauth;
use crate::provider::summarize_error_body;
use crate::token::Token;
use crate::verdict::{self, ProbeOutcome, RateLimit, Transport, TransportFailure};

pub const USER_AGENT_VALUE: &str = concat!("tenantcred/", env!("CARGO_PKG_VERSION"), " (+https://tenantcred.dev)");
/// Enough of an error body for a summary; the rest is never read.
const BODY_LIMIT: usize = 4096;

/// kube uses rustls with ring; reqwest is built without a provider of its own. Installing ring as
/// the process default once keeps both on one provider (rustls panics when it has to choose).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Clone)]
pub struct Prober {
    client: reqwest::Client,
}

impl Prober {
    pub fn new() -> Result<Self, reqwest::Error> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            // A redirect could carry the token to another host; a probe never follows one.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT_VALUE)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(Self { client })
    }

    /// `GET url` with the token as Bearer; never fails, every failure is an outcome.
    pub async fn probe(&self, url: &str, token: &Token, timeout: Duration) -> ProbeOutcome {
        let started = Instant::now();
        let mut outcome = ProbeOutcome {
            transport: Transport::Failed(TransportFailure::Other),
            retry_after: None,
            rate_limit: RateLimit::default(),
            detail: None,
            elapsed: Duration::ZERO,
            held_back: None,
        };
        let Ok(mut auth) = HeaderValue::from_str(&format!("Bearer {}", token.expose())) else {
            // Format checks reject such tokens before we get here; stay safe regardless.
            outcome.detail = Some("the token cannot be sent as an HTTP header".into());
            return outcome;
        };
        auth.set_sensitive(true);
        let request = self
            .client
            .get(url)
            .header(AUTHORIZATION, auth)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(timeout);
        match request.send().await {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let now = Timestamp::now();
                read_headers(resp.headers(), now, &mut outcome);
                outcome.transport = if resp.status().is_redirection() {
                    Transport::Failed(TransportFailure::Redirect)
                } else {
                    Transport::Answered(status)
                };
                if !resp.status().is_success() {
                    let mut body = Vec::new();
                    while body.len() < BODY_LIMIT {
                        match resp.chunk().await {
                            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                            _ => break,
                        }
                    }
                    body.truncate(BODY_LIMIT);
                    outcome.detail = summarize_error_body(&body);
                }
            }
            // Error texts are not kept: they are not needed and could grow to include request parts.
            Err(e) if e.is_timeout() => outcome.transport = Transport::Timeout,
            Err(e) if e.is_connect() => outcome.transport = Transport::Failed(TransportFailure::Connect),
            Err(_) => outcome.transport = Transport::Failed(TransportFailure::Other),
        }
        outcome.elapsed = started.elapsed();
        outcome
    }
}

impl Prober {
    /// `POST url` with a form body (the OAuth token endpoint). The body holds secrets: it is never
    /// logged, and the answer's body is returned for parsing (bounded).
    pub async fn post_form(&self, url: &str, fields: &[(&str, String)], timeout: Duration) -> oauth::Answer {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .timeout(timeout);
        let mut answer = oauth::Answer {
            transport: Transport::Failed(TransportFailure::Other),
            body: Vec::new(),
            back_off_until: None,
        };
        match request.send().await {
            Ok(mut resp) => {
                let mut scratch = ProbeOutcome::answered(resp.status().as_u16());
                read_headers(resp.headers(), Timestamp::now(), &mut scratch);
                answer.back_off_until = scratch.back_off_until();
                answer.transport = if resp.status().is_redirection() {
                    Transport::Failed(TransportFailure::Redirect)
                } else {
                    Transport::Answered(resp.status().as_u16())
                };
                while answer.body.len() < TOKEN_BODY_LIMIT {
                    match resp.chunk().await {
                        Ok(Some(chunk)) => answer.body.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
            }
            Err(e) if e.is_timeout() => answer.transport = Transport::Timeout,
            Err(e) if e.is_connect() => answer.transport = Transport::Failed(TransportFailure::Connect),
            Err(_) => {}
        }
        answer
    }
}

/// A token response is small; anything beyond this is not a token response.
const TOKEN_BODY_LIMIT: usize = 64 * 1024;

fn read_headers(h: &HeaderMap, now: Timestamp, outcome: &mut ProbeOutcome) {
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    outcome.rate_limit = verdict::parse_rate_limit(
        get("x-ratelimit-limit"),
        get("x-ratelimit-remaining"),
        get("x-ratelimit-reset"),
        now,
    );
    outcome.retry_after = get("retry-after").and_then(|v| verdict::parse_retry_after(v, now));
}
