//! The one HTTP request that tells whether a token works.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};

use super::{BODY_LIMIT, NotLeading, Prober, answered, failed, read_bounded, read_headers};
use crate::decide::error_body::{self, Quoting};
use crate::decide::token::Token;
use crate::decide::verdict::{ProbeOutcome, Transport, TransportFailure};

impl Prober {
    /// `GET url` with the token as Bearer; every failure of the request is an outcome. `Err`:
    /// nothing was sent, this replica does not lead.
    pub async fn probe(&self, url: &str, token: &Token, timeout: Duration) -> Result<ProbeOutcome, NotLeading> {
        let started = Instant::now();
        let mut outcome = ProbeOutcome {
            transport: Transport::Failed(TransportFailure::Other),
            retry_after: None,
            rate_limit: Default::default(),
            detail: None,
            elapsed: Duration::ZERO,
            held_back: None,
        };
        let Ok(mut auth) = HeaderValue::from_str(&format!("Bearer {}", token.expose())) else {
            // Format checks reject such tokens before we get here; stay safe regardless.
            outcome.detail = Some("the token cannot be sent as an HTTP header".into());
            return Ok(outcome);
        };
        auth.set_sensitive(true);
        let request = self
            .client
            .get(url)
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json")
            .timeout(timeout);
        // Checked last, right before sending: a reconcile may have waited for a permit.
        self.fence.check()?;
        match request.send().await {
            Ok(mut resp) => {
                read_headers(resp.headers(), Timestamp::now(), &mut outcome);
                outcome.transport = answered(&resp);
                // A success body is not needed; an error body is summarized.
                if !resp.status().is_success() {
                    let body = read_bounded(&mut resp, BODY_LIMIT).await;
                    outcome.detail = error_body::quote(&body, Quoting::Probe, &[token.expose()]);
                }
            }
            Err(e) => outcome.transport = failed(&e),
        }
        outcome.elapsed = started.elapsed();
        Ok(outcome)
    }
}
