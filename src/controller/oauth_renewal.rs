//! Virtuous OAuth, the I/O side: read the login and state Secrets, call the token endpoint when
//! the access token is missing or due for refresh, and keep the state Secret current.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::context::Context;
use crate::crd::TenantApiCredential;
use crate::crd::TenantApiCredentialStatus;
use crate::decide::conditions::{self, Reason, Type};
use crate::decide::oauth::{self, Login, Next, Renew, State, problems};
use crate::decide::plan::Settings;
use crate::decide::schedule::Jitter;
use crate::decide::secret::{CREDENTIAL_LABEL, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::decide::step::Renewed;
use crate::decide::token::{Lifetime, Token};
use crate::{Error, Result};

/// The Secret where tenantcred keeps the refresh token: owned by the credential, never shown.
pub fn state_secret_name(credential: &str) -> String {
    format!("{credential}-tenantcred-oauth")
}

/// What a renewal needs from the reconcile.
pub(super) struct Renewal<'a> {
    pub(super) tac: &'a TenantApiCredential,
    pub(super) settings: &'a Settings,
    pub(super) ns: &'a str,
    /// The login Secret's name.
    pub(super) login: &'a str,
    /// The access token in the managed Secret.
    pub(super) current: Option<&'a (Token, Lifetime)>,
    pub(super) observed: &'a TenantApiCredentialStatus,
    pub(super) now: Timestamp,
}

/// The access token to use: the current one until it is due for refresh, else a new one from the
/// token endpoint (refresh grant, then the password grant, with a two-factor code when asked).
/// The decisions are `oauth::renew` and `oauth::next`; this reads, calls and stores.
pub(super) async fn renew(ctx: &Context, r: &Renewal<'_>) -> Result<Renewed> {
    let mut out = Renewed::default();
    let (ns, login_name, now) = (r.ns, r.login, r.now);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let Some(login_secret) = secrets.get_opt(login_name).await? else {
        out.problem = Some(problems::login_missing(ns, login_name));
        return Ok(out);
    };
    let login = Login::from_secret(&login_secret);
    let account = oauth::account(&login);
    out.budget_key = Some(account.clone());
    let state_name = state_secret_name(&r.tac.name_any());
    let state = secrets
        .get_opt(&state_name)
        .await?
        .map(|s| State::from_secret(&s))
        .unwrap_or_default();
    let keep = |state: &State| {
        r.current.map(|(t, _)| {
            let lifetime = Lifetime {
                not_before: None,
                expires_at: state.expires_at,
            };
            (t.clone(), lifetime)
        })
    };

    let waiting_for_otp = conditions::state(&r.observed.conditions, Type::Ready)
        .is_some_and(|(_, reason)| reason == Some(Reason::OtpRequired));
    match oauth::renew(&login, &state, waiting_for_otp, r.current.is_some(), now) {
        Renew::Keep { refresh_at } => {
            if let Some(at) = refresh_at {
                wake(&mut out, at);
            }
            out.token = keep(&state);
            return Ok(out);
        }
        Renew::AwaitOtp => {
            out.problem = Some(problems::otp_required(ns, login_name));
            return Ok(out);
        }
        Renew::Now => {}
    }

    let host = r.settings.host();
    let mut refresh_rejected = false;
    loop {
        let grant = match oauth::choose(&login, &state, refresh_rejected) {
            Ok(g) => g,
            Err(why) => {
                out.problem = Some(problems::unusable(why, ns, login_name));
                return Ok(out);
            }
        };
        // Token-endpoint calls spend the same per-account budget as probes.
        if let Err(held) = ctx.budget.admit(&host, &account, &r.settings.profile, now) {
            wake(&mut out, held.until);
            out.token = keep(&state);
            return Ok(out);
        }
        let form = oauth::form(grant, &login, &state);
        let answer = {
            let _permit = ctx.budget.acquire(&host).await;
            ctx.provider_client
                .post_form(&r.settings.token_url(), &form, r.settings.timeout, &r.settings.profile)
                .await?
        };
        let outcome = oauth::interpret(&answer, &oauth::submitted(&form));
        match oauth::next(grant, outcome, refresh_rejected, &login, &state, now, Jitter::random()) {
            Next::Issued { access_token, state } => {
                write_state(&secrets, r.tac, &state_name, &state).await?;
                if let Some(at) = state.refresh_at {
                    wake(&mut out, at);
                }
                let lifetime = Lifetime {
                    not_before: None,
                    expires_at: state.expires_at,
                };
                out.token = Some((access_token, lifetime));
                return Ok(out);
            }
            Next::OtpRequired { spent } => {
                if let Some(spent) = spent {
                    write_state(&secrets, r.tac, &state_name, &spent).await?;
                }
                out.problem = Some(problems::otp_required(ns, login_name));
                return Ok(out);
            }
            Next::SignInAgain => {
                tracing::info!("refresh token refused; signing in with the password grant");
                refresh_rejected = true;
            }
            Next::Refused(why) => {
                out.problem = Some(problems::refused(grant, &why));
                return Ok(out);
            }
            Next::NotAllowed(why) => {
                out.problem = Some(problems::not_allowed(why));
                return Ok(out);
            }
            Next::BackOff(until) => {
                ctx.budget
                    .back_off(&host, &account, r.settings.profile.limit_scope, until, now);
                wake(&mut out, until);
                out.token = keep(&state);
                return Ok(out);
            }
            Next::Retry(at) => {
                tracing::info!(retry_at = %at, "token endpoint unavailable; retrying");
                wake(&mut out, at);
                out.token = keep(&state);
                return Ok(out);
            }
        }
    }
}

async fn write_state(secrets: &Api<Secret>, tac: &TenantApiCredential, name: &str, state: &State) -> Result<()> {
    let owner = tac.controller_owner_ref(&()).ok_or(Error::MissingMetadata("uid"))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
                    (CREDENTIAL_LABEL.to_owned(), tac.name_any()),
                    ("tenantcred.dev/purpose".to_owned(), "oauth-state".to_owned()),
                ]
                .into(),
            ),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(state.to_data()),
        ..Secret::default()
    };
    let mut body = serde_json::to_value(&secret)?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    secrets
        .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await?;
    Ok(())
}

fn wake(out: &mut Renewed, at: Timestamp) {
    out.wake = Some(out.wake.map_or(at, |w| w.min(at)));
}
