//! Virtuous OAuth, the I/O side: read the login and state Secrets, call the token endpoint when
//! the access token is missing or due for refresh, and keep the state Secret current.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::reconcile::Synced;
use crate::conditions::{self, Reason, Type};
use crate::crd::TenantApiCredential;
use crate::crd::TenantApiCredentialStatus;
use crate::oauth::{self, Grant, Login, Outcome, State, Unusable};
use crate::plan::{Problem, Settings};
use crate::schedule::{self, Jitter};
use crate::secret::{CREDENTIAL_LABEL, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::token::{Fingerprint, Lifetime, Token};
use crate::{Error, Result};

/// The Secret where tenantcred keeps the refresh token: owned by the credential, never shown.
pub fn state_secret_name(credential: &str) -> String {
    format!("{credential}-tenantcred-oauth")
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn access_token(
    ctx: &Context,
    tac: &TenantApiCredential,
    settings: &Settings,
    ns: &str,
    current: Option<&(Token, Lifetime)>,
    observed: &TenantApiCredentialStatus,
    now: Timestamp,
    out: &mut Synced,
) -> Result<Option<(Token, Lifetime)>> {
    let Some(oauth_spec) = &tac.spec.oauth else {
        return Ok(None);
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let login_name = &oauth_spec.secret_ref.name;
    let Some(login_secret) = secrets.get_opt(login_name).await? else {
        out.problem = Some(Problem::SourceNotFound(format!(
            "oauth.secretRef: Secret {ns}/{login_name} not found; create it with keys username and password"
        )));
        return Ok(None);
    };
    let login = Login::from_secret(&login_secret);
    // Probes and token-endpoint calls share the account's budget (the access token changes).
    let account = Fingerprint::of(format!("oauth:{}", login.username.as_ref().map_or("", |u| u.expose())).as_bytes());
    out.budget_key = Some(account.clone());
    let state_name = state_secret_name(&tac.name_any());
    let state = secrets
        .get_opt(&state_name)
        .await?
        .map(|s| State::from_secret(&s))
        .unwrap_or_default();
    let with_expiry = |t: &Token| {
        (
            t.clone(),
            Lifetime {
                not_before: None,
                expires_at: state.expires_at,
            },
        )
    };

    // An unspent code after a 202 means the user answered the SMS: use it now.
    let waiting_for_otp = conditions::state(&observed.conditions, Type::Ready)
        .is_some_and(|(_, reason)| reason == Some(Reason::OtpRequired));
    let fresh_code = login
        .otp
        .as_ref()
        .is_some_and(|o| state.otp_used.as_ref() != Some(&o.fingerprint()));
    let due = state.refresh_at.is_none_or(|r| r <= now) || state.expires_at.is_none_or(|e| e <= now);
    let renew = due || (waiting_for_otp && fresh_code);
    if let Some(cur) = current.filter(|_| !renew) {
        if let Some(r) = state.refresh_at {
            out.wake(r);
        }
        return Ok(Some(with_expiry(&cur.0)));
    }
    if waiting_for_otp && !fresh_code {
        out.problem = Some(otp_problem(ns, login_name));
        return Ok(None);
    }

    let mut refresh_rejected = false;
    loop {
        let grant = match oauth::choose(&login, &state, refresh_rejected) {
            Ok(g) => g,
            Err(Unusable::NoUsername) => {
                out.problem = Some(Problem::SourceNotFound(format!(
                    "oauth.secretRef: Secret {ns}/{login_name} has no key \"username\""
                )));
                return Ok(None);
            }
            Err(Unusable::NoCredentials) => {
                out.problem = Some(Problem::InvalidGrant(format!(
                    "Virtuous refused the refresh token and Secret {ns}/{login_name} has no password to sign in again"
                )));
                return Ok(None);
            }
        };
        // Token-endpoint calls spend the same per-account budget as probes.
        if let Err(held) = ctx.budget.admit(&settings.host(), &account, &settings.profile, now) {
            let until = held.until;
            out.wake(until);
            return Ok(current.map(|c| with_expiry(&c.0)));
        }
        let answer = {
            let _permit = ctx.budget.acquire(&settings.host()).await;
            let form = oauth::form(grant, &login, &state);
            ctx.prober
                .post_form(&settings.token_url(), &form, settings.timeout)
                .await
        };
        match oauth::interpret(&answer) {
            Outcome::Issued {
                access_token,
                refresh_token,
                expires_in,
            } => {
                let next = oauth::after_issue(&state, &login, grant, refresh_token, expires_in, now, Jitter::random());
                write_state(&secrets, tac, &state_name, &next).await?;
                if let Some(r) = next.refresh_at {
                    out.wake(r);
                }
                return Ok(Some((
                    access_token,
                    Lifetime {
                        not_before: None,
                        expires_at: next.expires_at,
                    },
                )));
            }
            Outcome::OtpRequired => {
                if let Grant::Password { with_otp: true } = grant {
                    // The code did not work (wrong or stale): never send it again.
                    let spent = State {
                        otp_used: login.otp.as_ref().map(Token::fingerprint),
                        ..state.clone()
                    };
                    write_state(&secrets, tac, &state_name, &spent).await?;
                }
                out.problem = Some(otp_problem(ns, login_name));
                return Ok(None);
            }
            Outcome::Rejected(_) if grant == Grant::Refresh && !refresh_rejected => {
                tracing::info!(credential = %tac.name_any(), "refresh token refused; signing in with the password grant");
                refresh_rejected = true;
            }
            Outcome::Rejected(why) => {
                out.problem = Some(Problem::InvalidGrant(format!(
                    "Virtuous refused the {} grant: {why}",
                    name(grant)
                )));
                return Ok(None);
            }
            Outcome::RateLimited(until) => {
                let until = until.unwrap_or_else(|| schedule::add(now, schedule::TRANSIENT_FIRST * 2));
                ctx.budget
                    .back_off(&settings.host(), &account, settings.profile.limit_scope, until, now);
                out.wake(until);
                return Ok(current.map(|c| with_expiry(&c.0)));
            }
            Outcome::NotAllowed(why) => {
                out.problem = Some(Problem::BaseUrlNotAllowed(why));
                return Ok(None);
            }
            Outcome::Unavailable(why) => {
                tracing::info!(credential = %tac.name_any(), reason = %why, "token endpoint unavailable; retrying");
                out.wake(schedule::add(
                    now,
                    Jitter::random().scale(schedule::TRANSIENT_FIRST * 2, 0.5, 1.0),
                ));
                return Ok(current.map(|c| with_expiry(&c.0)));
            }
        }
    }
}

fn name(g: Grant) -> &'static str {
    match g {
        Grant::Refresh => "refresh_token",
        Grant::Password { .. } => "password",
    }
}

fn otp_problem(ns: &str, login: &str) -> Problem {
    Problem::OtpRequired(format!(
        "the Virtuous account uses two-factor authentication and a code was sent by SMS: add it as key \"otp\" to Secret {ns}/{login}"
    ))
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
