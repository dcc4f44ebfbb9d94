//! An OAuth credential's access token: read the login and its state, use the access token of
//! the moment until it is due, else hold the login (one call per login at a time), mark a
//! refresh token in flight, call the token endpoint with the definition's grants in order, and
//! store what came back before its access token is used. The decisions are `decide::oauth`'s;
//! this is their order.

use k8s_openapi::api::core::v1::Secret;

use super::action::{Held, StateRead, StateWritten};
use super::done::{Call, Done};
use super::request::{BackOff, busy_until};
use super::{Action, RACE_RETRY, Synced, World};
use crate::decide::conditions::{self, Reason, Type};
use crate::decide::oauth::{self, Definition, Login, Next, Renew, State, TokenRequest, problems, request};
use crate::decide::plan::{Problem, Settings};
use crate::decide::schedule;
use crate::decide::token::{Lifetime, Token};

/// Where the renewal reads and writes: the login, its state Secret, the provider.
struct Names<'a> {
    ns: &'a str,
    login: &'a str,
    state: String,
    provider: &'a str,
}

/// The access token to use, into `out` (with the problem, the wake-up and the budget's key).
pub(super) fn renew<'a>(
    w: &World<'_>,
    settings: &'a Settings,
    d: &Done,
    login_name: &str,
    current: Option<&(Token, Lifetime)>,
    out: &mut Synced,
) -> Result<Option<(Token, Lifetime)>, Action<'a>> {
    let provider = settings.profile.name.as_str();
    let names = Names {
        ns: super::namespace(w),
        login: login_name,
        state: oauth::state_secret_name(provider, login_name),
        provider,
    };
    let (Some(def), Some(url)) = (settings.profile.oauth.as_deref(), settings.token_url()) else {
        out.problem = Some(Problem::InvalidSpec(format!(
            "spec.oauth needs a provider with a token endpoint; provider {provider} has none"
        )));
        return Ok(None);
    };
    let login_secret = d.login.as_ref().ok_or_else(|| Action::ReadLogin {
        name: login_name.to_owned(),
    })?;
    let Some(login_secret) = login_secret else {
        out.problem = Some(problems::login_missing(names.ns, login_name));
        return Ok(None);
    };
    let login = Login::from_secret(login_secret);
    let account = oauth::account(names.ns, &login);
    out.budget_key = Some(account.clone());
    let mut state = first_state(w, d, &names)?;
    out.refresh_lapses = state.refresh_expires_at;
    let current_token = current.map(|(t, _)| t);
    let waiting_for_code = conditions::state(&w.observed.conditions, Type::Ready)
        .is_some_and(|(_, reason)| reason == Some(Reason::OtpRequired));
    let mut again = d.state_again.iter();

    let renew = |state: &State| {
        let decided = oauth::renew(def, &login, state, current_token, waiting_for_code, w.now);
        let probed = w.observed.token_fingerprint.as_deref();
        if oauth::rejected(&decided, probed, w.observed.last_probe_result) {
            return Renew::Now;
        }
        decided
    };
    let mut decided = renew(&state);
    if matches!(decided, Renew::Now) {
        match d.login_held.ok_or_else(|| Action::HoldLogin {
            key: format!("{}/{}", names.ns, names.state),
            patience: crate::decide::fair_share::PATIENCE,
        })? {
            Held::Busy => {
                out.wake(busy_until(w.now, w.jitter));
                return Ok(keep(&state, current_token));
            }
            // Another reconcile held the login: it may have refreshed, so look again first.
            Held::AfterWait => {
                state = read_again(&mut again, &names, &state)?;
                out.refresh_lapses = state.refresh_expires_at;
                decided = renew(&state);
            }
            Held::AtOnce => {}
        }
    }
    match decided {
        Renew::Use {
            access_token,
            expires_at,
            refresh_at,
        } => {
            if let Some(at) = refresh_at {
                out.wake(at);
            }
            return Ok(Some((
                access_token,
                Lifetime {
                    not_before: None,
                    expires_at,
                },
            )));
        }
        Renew::Refused(reason) => {
            out.problem = Some(problems::still_refused(reason, provider, names.ns, login_name));
            return Ok(None);
        }
        Renew::AwaitCode => {
            out.problem = Some(problems::otp_required(provider, names.ns, login_name, def.code_key()));
            return Ok(None);
        }
        Renew::Now => {}
    }

    let grants = Grants {
        w,
        d,
        def,
        settings,
        login: &login,
        names: &names,
        url: &url,
        account,
    };
    grants.run(state, current_token, &mut again, out)
}

/// The grants, in the definition's order, with the writes around each call.
struct Grants<'a, 'w> {
    w: &'w World<'w>,
    d: &'w Done,
    def: &'w Definition,
    settings: &'a Settings,
    login: &'w Login,
    names: &'w Names<'w>,
    url: &'w str,
    account: crate::decide::token::Fingerprint,
}

impl<'a> Grants<'a, '_> {
    fn run<'s>(
        &self,
        mut state: State,
        current: Option<&Token>,
        again: &mut std::slice::Iter<'s, Option<Box<Secret>>>,
        out: &mut Synced,
    ) -> Result<Option<(Token, Lifetime)>, Action<'a>> {
        let (w, d, def, names) = (self.w, self.d, self.def, self.names);
        // A mark found already set: an earlier call's answer was never stored.
        let marked_before = state.in_flight.clone();
        let mut writes = d.state_writes.iter();
        let mut refused = Vec::new();
        for attempt in 0..oauth::MAX_GRANTS {
            let req = match request::next(def, self.login, &state, &refused, self.url, w.now) {
                Ok(r) => r,
                Err(why) => {
                    out.problem = Some(problems::unusable(&why, names.provider, names.ns, names.login));
                    return Ok(None);
                }
            };
            if let Some(marked) = oauth::before_call(&state, &req) {
                match self.write(&mut writes, &marked)? {
                    StateWritten::Stored(rv) => {
                        state = State {
                            resource_version: rv,
                            ..marked
                        }
                    }
                    StateWritten::Conflict => {
                        out.wake(schedule::add(w.now, RACE_RETRY));
                        return Ok(keep(&state, current));
                    }
                    StateWritten::Refused(m) => return Ok(self.refused_write(out, &m)),
                }
            }
            let (answer, at) = match d.calls.get(attempt).ok_or_else(|| self.call(&req))? {
                Call::Held(until) => {
                    out.wake(*until);
                    // Nothing was sent: take back the mark this reconcile made, or a later
                    // refusal of this refresh token would read as a lost answer.
                    if state.in_flight != marked_before {
                        let unmarked = State {
                            in_flight: marked_before.clone(),
                            ..state.clone()
                        };
                        if let StateWritten::Refused(m) = self.write(&mut writes, &unmarked)? {
                            return Ok(self.refused_write(out, &m));
                        }
                    }
                    return Ok(keep(&state, current));
                }
                Call::Answered(answer, at) => (answer, *at),
            };
            let format = &self.settings.profile.token_format;
            let outcome = oauth::answer::interpret(def, format, answer, at);
            match oauth::next(def, &req, outcome, &state, self.login, at, w.jitter) {
                Next::Issued {
                    access_token,
                    state: issued,
                } => {
                    // Stored first: a crash after this write loses nothing.
                    match self.store(&mut writes, again, &state, &issued)? {
                        Ok(true) => {}
                        Ok(false) => {
                            out.wake(schedule::add(w.now, RACE_RETRY));
                            return Ok(keep(&state, current));
                        }
                        Err(m) => return Ok(self.refused_write(out, &m)),
                    }
                    if let Some(at) = issued.refresh_at {
                        out.wake(at);
                    }
                    out.refresh_lapses = issued.refresh_expires_at;
                    let lifetime = Lifetime {
                        not_before: None,
                        expires_at: issued.expires_at,
                    };
                    return Ok(Some((access_token, lifetime)));
                }
                Next::CodeRequired { spent } => {
                    // The codes sent did not do: recorded, so none is sent again.
                    if let Some(spent) = spent
                        && let StateWritten::Refused(m) = self.write(&mut writes, &spent)?
                    {
                        return Ok(self.refused_write(out, &m));
                    }
                    out.problem = Some(problems::otp_required(
                        names.provider,
                        names.ns,
                        names.login,
                        def.code_key(),
                    ));
                    return Ok(None);
                }
                Next::Refused(answer) => {
                    refused.push(req.grant);
                    if request::next(def, self.login, &state, &refused, self.url, w.now).is_ok() {
                        continue;
                    }
                    let marked =
                        marked_before.is_some() && marked_before == req.refresh_token.as_ref().map(Token::fingerprint);
                    let reason = oauth::refusal_reason(&req, &answer, marked);
                    // Stored with the login it refused: nothing is sent until the login changes.
                    let mark = oauth::after_refusal(def, self.login, &state, reason);
                    if let StateWritten::Refused(m) = self.write(&mut writes, &mark)? {
                        return Ok(self.refused_write(out, &m));
                    }
                    out.problem = Some(problems::refused(
                        reason,
                        &req,
                        names.provider,
                        names.ns,
                        names.login,
                        &answer,
                    ));
                    return Ok(None);
                }
                Next::Unusable(why) => {
                    let rotated = oauth::answer::rotated_in(def, answer);
                    if let Some(kept) = oauth::after_unusable(def, &req, &state, self.login, rotated, at)
                        && let Err(m) = self.store(&mut writes, again, &state, &kept)?
                    {
                        return Ok(self.refused_write(out, &m));
                    }
                    out.problem = Some(problems::bad_answer(&why, names.provider));
                    out.wake(oauth::retry_at(at, w.jitter));
                    return Ok(None);
                }
                Next::NotAllowed(why) => {
                    out.problem = Some(problems::not_allowed(why));
                    return Ok(None);
                }
                Next::BackOff(until) => {
                    if !d.backed_off {
                        return Err(Action::BackOff(BackOff {
                            host: self.settings.host(),
                            key: self.account.clone(),
                            scope: self.settings.profile.limit_scope,
                            until,
                        }));
                    }
                    out.wake(until);
                    return Ok(keep(&state, current));
                }
                Next::Retry(at) => {
                    out.wake(at);
                    return Ok(keep(&state, current));
                }
            }
        }
        // Every grant was tried and none ended it (not an answer `oauth::next` gives).
        Ok(keep(&state, current))
    }

    /// Stores an answer's state (its refresh token may be the only one alive): on a conflict,
    /// once more on top of the state read again. `Ok(false)`: changed under us twice;
    /// `Err`: the API server refused the write, with its message.
    fn store(
        &self,
        writes: &mut std::slice::Iter<'_, StateWritten>,
        again: &mut std::slice::Iter<'_, Option<Box<Secret>>>,
        previous: &State,
        answer: &State,
    ) -> Result<Result<bool, String>, Action<'a>> {
        let retry = match self.write(writes, answer)? {
            StateWritten::Stored(_) => return Ok(Ok(true)),
            StateWritten::Refused(m) => return Ok(Err(m)),
            StateWritten::Conflict => State {
                resource_version: read_again(again, self.names, previous)?.resource_version,
                ..answer.clone()
            },
        };
        Ok(match self.write(writes, &retry)? {
            StateWritten::Stored(_) => Ok(true),
            StateWritten::Conflict => Ok(false),
            StateWritten::Refused(m) => Err(m),
        })
    }

    fn call(&self, req: &TokenRequest) -> Action<'a> {
        Action::CallTokenEndpoint {
            settings: self.settings,
            url: self.url.to_owned(),
            request: Box::new(req.clone()),
            budget_key: self.account.clone(),
            patience: crate::decide::fair_share::PATIENCE,
        }
    }

    /// The next state write's result, or the action that makes it.
    fn write(
        &self,
        writes: &mut std::slice::Iter<'_, StateWritten>,
        state: &State,
    ) -> Result<StateWritten, Action<'a>> {
        if let Some(w) = writes.next() {
            return Ok(w.clone());
        }
        let names = self.names;
        match oauth::state_secret(
            &names.state,
            names.login,
            self.login.uid.as_deref(),
            names.provider,
            state,
        ) {
            Some(secret) => Err(Action::WriteOAuthState {
                secret: Box::new(secret),
            }),
            // A login Secret read from the API server always has a uid.
            None => Ok(StateWritten::Refused(
                "the login Secret has no uid to own the state by".into(),
            )),
        }
    }

    fn refused_write(&self, out: &mut Synced, message: &str) -> Option<(Token, Lifetime)> {
        out.problem = Some(Problem::secret_rejected(self.names.ns, &self.names.state, message));
        None
    }
}

/// The login's state: its own Secret; else, for a credential that had a token before logins
/// were shared, the Secret it kept then (written to the login's name at the next write).
fn first_state<'a>(w: &World<'_>, d: &Done, names: &Names<'_>) -> Result<State, Action<'a>> {
    let read = d.oauth_state.as_ref().ok_or_else(|| Action::ReadOAuthState {
        name: names.state.clone(),
        read: StateRead::First,
    })?;
    if let Some(s) = read {
        return Ok(State::from_secret(s));
    }
    if w.observed.token_fingerprint.is_none() {
        return Ok(State::default());
    }
    let credential = w.meta.name.as_deref().unwrap_or_default();
    let legacy = d.legacy_state.as_ref().ok_or_else(|| Action::ReadOAuthState {
        name: oauth::legacy_state_secret_name(credential),
        read: StateRead::Legacy,
    })?;
    Ok(legacy
        .as_deref()
        .map(|s| State {
            // Another object: the login's state is created, not replaced.
            resource_version: None,
            ..State::from_secret(s)
        })
        .unwrap_or_default())
}

/// The state as read again; `previous` when it is gone (its resourceVersion then none).
fn read_again<'a>(
    again: &mut std::slice::Iter<'_, Option<Box<Secret>>>,
    names: &Names<'_>,
    previous: &State,
) -> Result<State, Action<'a>> {
    match again.next() {
        Some(Some(s)) => Ok(State::from_secret(s)),
        Some(None) => Ok(State {
            resource_version: None,
            ..previous.clone()
        }),
        None => Err(Action::ReadOAuthState {
            name: names.state.clone(),
            read: StateRead::Again,
        }),
    }
}

/// The access token of the moment, while the state says nothing newer can be had now.
fn keep(state: &State, current: Option<&Token>) -> Option<(Token, Lifetime)> {
    let token = state.access_token.as_ref().or(current)?;
    Some((
        token.clone(),
        Lifetime {
            not_before: None,
            expires_at: state.expires_at,
        },
    ))
}
