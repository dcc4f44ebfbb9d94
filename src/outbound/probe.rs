//! The one HTTP request that tells whether a token works.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use reqwest::header::{ACCEPT, HeaderName, HeaderValue};

use super::{BODY_LIMIT, NotLeading, ProviderClient, answered, deadline, failed, read_bounded, read_headers};
use crate::decide::error_body::{self, Quoting};
use crate::decide::provider::{ProbeMethod, Profile};
use crate::decide::token::Token;
use crate::decide::verdict::{ProbeOutcome, Transport, TransportFailure};

impl ProviderClient {
    /// The provider's probe request (`GET` or `HEAD url`, the token sent as its definition says);
    /// every failure of the request is an outcome. `Err`: nothing was sent, this replica does not
    /// lead.
    pub async fn probe(
        &self,
        url: &str,
        token: &Token,
        timeout: Duration,
        profile: &Profile,
    ) -> Result<ProbeOutcome, NotLeading> {
        let started = Instant::now();
        let mut outcome = ProbeOutcome {
            transport: Transport::Failed(TransportFailure::Other),
            rules: profile.probe.statuses.clone(),
            ..ProbeOutcome::answered(0)
        };
        let (name, prefix) = profile.auth.header();
        let (Ok(name), Ok(mut auth)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&format!("{prefix}{}", token.expose())),
        ) else {
            // Format checks reject such tokens (and definitions such names) before we get here;
            // stay safe regardless.
            outcome.detail = Some("the token cannot be sent as an HTTP header".into());
            return Ok(outcome);
        };
        auth.set_sensitive(true);
        let Some(client) = self.client(url) else {
            outcome.detail = Some("no HTTP client for the URL's port".into());
            return Ok(outcome);
        };
        let request = match profile.probe.method {
            ProbeMethod::Get => client.get(url),
            ProbeMethod::Head => client.head(url),
        };
        let request = request
            .header(name, auth)
            .header(ACCEPT, "application/json")
            .timeout(deadline(timeout));
        // Checked last, right before sending: a reconcile may have waited for a permit.
        self.fence.check()?;
        // One deadline for all of it (connection, TLS, headers, body), whatever the client does
        // with its own: a host that accepts and never answers holds the slot this long at most.
        let exchange = async {
            match request.send().await {
                Ok(mut resp) => {
                    read_headers(resp.headers(), profile, Timestamp::now(), &mut outcome);
                    outcome.transport = answered(&resp);
                    // A success body is not needed; an error body is summarized.
                    if !resp.status().is_success() {
                        let body = read_bounded(&mut resp, BODY_LIMIT).await;
                        outcome.detail = error_body::quote(&body, Quoting::Probe, &[token.expose()]);
                    }
                }
                Err(e) => outcome.transport = failed(&e),
            }
        };
        if tokio::time::timeout(deadline(timeout), exchange).await.is_err() {
            outcome.transport = Transport::Timeout;
            outcome.detail = None;
        }
        outcome.elapsed = started.elapsed();
        Ok(outcome)
    }
}
