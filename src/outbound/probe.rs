//! The one HTTP request that tells whether a token works.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use reqwest::header::{ACCEPT, HeaderName, HeaderValue};

use super::{
    BODY_LIMIT, NotLeading, ProviderClient, answered, deadline, failed, media_type, read_bounded, read_headers,
};
use crate::decide::error_body::BodySummary;
use crate::decide::provider::{ProbeMethod, Profile};
use crate::decide::token::Token;
use crate::decide::verdict::{ProbeOutcome, Transport, TransportFailure};

/// An error answer's body as read (bounded): provider text that may echo the token, handed only to
/// `tenantcred check --show-body`. Its `Debug` says only its length.
pub struct RawBody(pub Vec<u8>);

impl std::fmt::Debug for RawBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawBody(<{} bytes>)", self.0.len())
    }
}

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
        Ok(self.probe_keeping_body(url, token, timeout, profile).await?.0)
    }

    /// `probe`, with the error answer's body as read (for a person's own terminal only).
    pub async fn probe_keeping_body(
        &self,
        url: &str,
        token: &Token,
        timeout: Duration,
        profile: &Profile,
    ) -> Result<(ProbeOutcome, Option<RawBody>), NotLeading> {
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
            outcome.transport = Transport::Failed(TransportFailure::Unsendable);
            return Ok((outcome, None));
        };
        auth.set_sensitive(true);
        let Some(client) = self.client(url) else {
            return Ok((outcome, None));
        };
        let request = match profile.probe.method {
            ProbeMethod::Get => client.get(url),
            ProbeMethod::Head => client.head(url),
        };
        let request = request.header(name, auth).header(ACCEPT, "application/json");
        // Checked last, right before sending: a reconcile may have waited for a permit.
        self.fence.check()?;
        // One deadline for all of it (connection, TLS, headers, body): a host that accepts and
        // never answers, or never ends its body, holds the slot this long at most.
        let until = deadline(timeout);
        let mut raw = None;
        match tokio::time::timeout_at(until, request.send()).await {
            Err(_) => outcome.transport = Transport::Timeout,
            Ok(Err(e)) => outcome.transport = failed(&e),
            Ok(Ok(mut resp)) => {
                read_headers(resp.headers(), profile, Timestamp::now(), &mut outcome);
                outcome.transport = answered(&resp);
                // A success body is not needed; an error body is summarized, never quoted. The
                // status line is the answer: a body cut by the deadline is summarized as it came.
                if !resp.status().is_success() {
                    let media = media_type(resp.headers());
                    let status = resp.status().as_u16();
                    let body = read_bounded(&mut resp, BODY_LIMIT, until).await.bytes;
                    outcome.error_body = Some(BodySummary::of(status, media, &body));
                    raw = Some(RawBody(body));
                }
            }
        }
        outcome.elapsed = started.elapsed();
        Ok((outcome, raw))
    }
}
