//! The OAuth token endpoint: one form POST, with HTTP Basic client authentication when the
//! request carries it. The request holds secrets; it is never logged.

use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use super::{
    BODY_LIMIT, NotLeading, ProviderClient, answered, deadline, failed, media_type, read_bounded, read_headers,
};
use crate::decide::oauth;
use crate::decide::provider::Profile;
use crate::decide::verdict::{ProbeOutcome, Transport, TransportFailure};

impl ProviderClient {
    /// `POST url` with the request's form; the answer's body is returned for
    /// `oauth::answer::interpret` (bounded). `Err`: nothing was sent, this replica does not lead.
    pub async fn post_form(
        &self,
        url: &str,
        request: &oauth::TokenRequest,
        timeout: Duration,
        profile: &Profile,
    ) -> Result<oauth::Answer, NotLeading> {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(request.form.iter().map(|(k, v)| (k.as_str(), v.expose())))
            .finish();
        let mut answer = oauth::Answer {
            transport: Transport::Failed(TransportFailure::Other),
            body: Vec::new(),
            media_type: None,
            back_off_until: None,
        };
        let Some(client) = self.client(url) else {
            return Ok(answer);
        };
        let mut builder = client
            .post(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(body);
        if let Some((user, password)) = &request.basic {
            // reqwest marks the header sensitive.
            builder = builder.basic_auth(user.expose(), Some(password.expose()));
        }
        self.fence.check()?;
        // One deadline for the whole exchange, body included (as for probes). Where the body is
        // the answer (`oauth::answer::body_needed`), one the deadline cut is no answer; a 429 or
        // an outage keeps its status and headers.
        let until = deadline(timeout);
        match tokio::time::timeout_at(until, builder.send()).await {
            Err(_) => answer.transport = Transport::Timeout,
            Ok(Err(e)) => answer.transport = failed(&e),
            Ok(Ok(mut resp)) => {
                let body = read_bounded(&mut resp, BODY_LIMIT, until).await;
                if body.cut && oauth::answer::body_needed(resp.status().as_u16()) {
                    answer.transport = Transport::Timeout;
                } else {
                    let mut headers = ProbeOutcome::answered(resp.status().as_u16());
                    read_headers(resp.headers(), profile, Timestamp::now(), &mut headers);
                    answer.back_off_until = headers.back_off_until();
                    answer.transport = answered(&resp);
                    answer.media_type = media_type(resp.headers());
                    answer.body = body.bytes;
                }
            }
        }
        Ok(answer)
    }
}
