//! An OAuth credential's access token (Virtuous): read the login and state Secrets, keep the
//! current token until it is due for refresh, else call the token endpoint (the refresh grant,
//! then the password grant, with a two-factor code when asked) and keep the state Secret current.
//! The grant decisions are `decide::oauth`'s; this is their order.

use super::done::{Call, Done};
use super::request::BackOff;
use super::{Action, Synced, World};
use crate::crd::TenantApiCredential;
use crate::decide::conditions::{self, Reason, Type};
use crate::decide::oauth::{self, Login, Next, Renew, State, problems};
use crate::decide::plan::Settings;
use crate::decide::token::{Lifetime, Token};

/// The grants one renewal may try: the refresh token, then the password.
const MAX_GRANTS: usize = 2;

/// The access token to use, into `out` (with the problem, the wake-up and the budget's key).
pub(super) fn renew<'a>(
    w: &World<'_>,
    tac: &'a TenantApiCredential,
    settings: &'a Settings,
    d: &Done,
    login_name: &str,
    current: Option<&(Token, Lifetime)>,
    out: &mut Synced,
) -> Result<Option<(Token, Lifetime)>, Action<'a>> {
    let ns = super::namespace(w);
    let provider = settings.profile.name.as_str();
    let login_secret = d.login.as_ref().ok_or_else(|| Action::ReadLogin {
        name: login_name.to_owned(),
    })?;
    let Some(login_secret) = login_secret else {
        out.problem = Some(problems::login_missing(ns, login_name));
        return Ok(None);
    };
    let login = Login::from_secret(login_secret);
    let account = oauth::account(ns, &login);
    out.budget_key = Some(account.clone());
    let state_name = oauth::state_secret_name(w.meta.name.as_deref().unwrap_or_default());
    let state = d
        .oauth_state
        .as_ref()
        .ok_or_else(|| Action::ReadOAuthState {
            name: state_name.clone(),
        })?
        .as_deref()
        .map(State::from_secret)
        .unwrap_or_default();
    // The token in use, with the expiry the state Secret records for it.
    let keep = |state: &State| {
        current.map(|(t, _)| {
            let lifetime = Lifetime {
                not_before: None,
                expires_at: state.expires_at,
            };
            (t.clone(), lifetime)
        })
    };

    let waiting_for_otp = conditions::state(&w.observed.conditions, Type::Ready)
        .is_some_and(|(_, reason)| reason == Some(Reason::OtpRequired));
    match oauth::renew(&login, &state, waiting_for_otp, current.is_some(), w.now) {
        Renew::Keep { refresh_at } => {
            if let Some(at) = refresh_at {
                out.wake(at);
            }
            return Ok(keep(&state));
        }
        Renew::AwaitOtp => {
            out.problem = Some(problems::otp_required(provider, ns, login_name));
            return Ok(None);
        }
        Renew::Now => {}
    }

    let mut refresh_rejected = false;
    for attempt in 0..MAX_GRANTS {
        let grant = match oauth::choose(&login, &state, refresh_rejected) {
            Ok(g) => g,
            Err(why) => {
                out.problem = Some(problems::unusable(why, provider, ns, login_name));
                return Ok(None);
            }
        };
        let form = oauth::form(grant, &login, &state);
        let call = d.calls.get(attempt).ok_or_else(|| Action::CallTokenEndpoint {
            settings,
            url: settings.token_url(),
            form: form.clone(),
            budget_key: account.clone(),
        })?;
        let answer = match call {
            Call::Held(until) => {
                out.wake(*until);
                return Ok(keep(&state));
            }
            Call::Answered(answer) => answer,
        };
        let outcome = oauth::interpret(answer);
        match oauth::next(grant, outcome, refresh_rejected, &login, &state, w.now, w.jitter) {
            Next::Issued {
                access_token,
                state: issued,
            } => {
                if !d.oauth_state_written {
                    return Err(Action::WriteOAuthState {
                        credential: tac,
                        name: state_name,
                        state: Box::new(issued),
                    });
                }
                if let Some(at) = issued.refresh_at {
                    out.wake(at);
                }
                let lifetime = Lifetime {
                    not_before: None,
                    expires_at: issued.expires_at,
                };
                return Ok(Some((access_token, lifetime)));
            }
            Next::OtpRequired { spent } => {
                // The code sent did not work: recorded, so it is never sent again.
                if let Some(spent) = spent
                    && !d.oauth_state_written
                {
                    return Err(Action::WriteOAuthState {
                        credential: tac,
                        name: state_name,
                        state: Box::new(spent),
                    });
                }
                out.problem = Some(problems::otp_required(provider, ns, login_name));
                return Ok(None);
            }
            // The refresh token was refused: sign in with the password in the same reconcile.
            Next::SignInAgain => refresh_rejected = true,
            Next::Refused(answer) => {
                out.problem = Some(problems::refused(grant, provider, &answer));
                return Ok(None);
            }
            Next::NotAllowed(why) => {
                out.problem = Some(problems::not_allowed(why));
                return Ok(None);
            }
            Next::BackOff(until) => {
                if !d.backed_off {
                    return Err(Action::BackOff(BackOff {
                        host: settings.host(),
                        key: account,
                        scope: settings.profile.limit_scope,
                        until,
                    }));
                }
                out.wake(until);
                return Ok(keep(&state));
            }
            Next::Retry(at) => {
                out.wake(at);
                return Ok(keep(&state));
            }
        }
    }
    // Both grants were tried and neither ended it (not an answer `oauth::next` gives).
    Ok(keep(&state))
}
