//! The requests a reconcile sends to a provider's host (a probe, a token-endpoint call), each
//! within its key's budget and a request slot, and what a probe's answer tells beyond its
//! credential (the budget, the provider's spend, the metrics).

use std::time::Duration;

use jiff::Timestamp;
use tracing::debug;

use super::context::Context;
use crate::Result;
use crate::crd::RateLimitScope;

use crate::decide::oauth;
use crate::decide::plan::Settings;
use crate::decide::step::Attempt;
use crate::decide::step::probe::AfterProbe;
use crate::decide::token::{Fingerprint, Token};
use crate::decide::verdict::ProbeOutcome;

/// A request slot for a request to `host` within the key's budget: the permit, or what held
/// the request back (a token-endpoint call spends the same per-account budget as a probe).
async fn admit<T>(
    ctx: &Context,
    ns: &str,
    settings: &Settings,
    key: &Fingerprint,
    patience: Duration,
) -> std::result::Result<crate::budget::Permit, Attempt<T>> {
    let host = settings.host();
    if let Err(held) = ctx.budget.admit(&host, key, &settings.profile, Timestamp::now()) {
        debug!(%host, %key, until = %held.until, by = ?held.by, "request held back");
        return Err(Attempt::Held(held.until));
    }
    let Some(permit) = ctx.budget.acquire(ns, &host, patience).await else {
        ctx.budget.refund(key);
        debug!(%host, %key, "no request slot within its patience");
        return Err(Attempt::Busy);
    };
    Ok(permit)
}

/// POSTs a token request to the token endpoint within the account's budget and a request slot.
pub(super) async fn call_token_endpoint(
    ctx: &Context,
    ns: &str,
    settings: &Settings,
    url: &str,
    request: &oauth::TokenRequest,
    key: &Fingerprint,
    patience: Duration,
) -> Result<Attempt<oauth::Answer>> {
    let _permit = match admit(ctx, ns, settings, key, patience).await {
        Ok(permit) => permit,
        Err(attempt) => return Ok(attempt),
    };
    let answer = ctx
        .provider_client
        .post_form(url, request, settings.timeout, &settings.profile)
        .await
        .inspect_err(|_| ctx.budget.refund(key))?;
    debug!(transport = ?answer.transport, "token endpoint answered");
    Ok(Attempt::Sent(answer))
}

/// Sends one probe within the key's budget and a request slot.
pub(super) async fn probe(
    ctx: &Context,
    ns: &str,
    settings: &Settings,
    token: &Token,
    key: &Fingerprint,
    patience: Duration,
) -> Result<Attempt<Box<ProbeOutcome>>> {
    let _permit = match admit(ctx, ns, settings, key, patience).await {
        Ok(permit) => permit,
        Err(attempt) => return Ok(attempt),
    };
    let outcome = ctx
        .provider_client
        .probe(&settings.probe_url(), token, settings.timeout, &settings.profile)
        .await
        .inspect_err(|_| ctx.budget.refund(key))?;
    debug!(%key, transport = ?outcome.transport, elapsed = ?outcome.elapsed, "probed");
    Ok(Attempt::Sent(Box::new(outcome)))
}

/// Tells the budget, the provider's status and the metrics what a probe's answer means beyond
/// its credential; answers what the budget holds back for a back-off.
pub(super) fn tell(ctx: &Context, ns: &str, after: AfterProbe) -> Option<RateLimitScope> {
    let now = Timestamp::now();
    if let Some((key, heard)) = after.share {
        ctx.budget.hear(key, heard);
    }
    if let Some(count) = after.count {
        ctx.providers.probed(&count.provider, now);
        ctx.metrics.probed(&count.provider, count.result, count.elapsed);
    }
    after
        .back_off
        .map(|b| ctx.budget.back_off(ns, &b.host, &b.key, b.scope, b.until, now))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::controller::scripted::Script;
    use crate::decide::fair_share::PATIENCE;
    use crate::outbound::ProviderClient;
    use crate::testing::{credential, resolve_builtin};

    /// A slot came, then the fence closed (the lease was lost) before the request went: nothing
    /// was sent, so nothing of the key's hourly budget is spent.
    #[tokio::test]
    async fn a_request_the_fence_stopped_spends_nothing_of_the_budget() {
        let script = Script::new(Vec::new());
        let mut ctx = Context::test(&script);
        let closed = Arc::new(crate::fence::Fence::default());
        ctx.provider_client = ProviderClient::new(Arc::new(ctx.config.egress.clone()), closed).expect("a client");
        let tac = credential(
            "c",
            serde_json::json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "src"}}),
        );
        let settings = resolve_builtin(&tac, &ctx.config.egress).expect("resolves");
        let token = Token::new("tok");
        let key = token.fingerprint();
        let probed = probe(&ctx, "ns", &settings, &token, &key, PATIENCE).await;
        assert!(probed.is_err(), "not sent: this replica does not lead");
        let request = oauth::TokenRequest::of_form(
            crate::crd::oauth::GrantType::ClientCredentials,
            [("grant_type", "client_credentials")],
        );
        let called = call_token_endpoint(&ctx, "ns", &settings, &settings.probe_url(), &request, &key, PATIENCE).await;
        assert!(called.is_err(), "not sent either");
        assert_eq!(ctx.budget.spent(&key, Timestamp::now()), 0, "both spends given back");
        script.assert_sent(&[]);
    }
}
