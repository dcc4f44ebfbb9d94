//! `tenantcred check --oauth-login FILE`: sign in once as the operator would, with its own
//! decisions (`decide::oauth`), then probe the access token. Nothing secret is printed: not the
//! login's values, not the access or refresh token (only fingerprints), not the assertion; the
//! token endpoint's own text only with `--show-body`, and only for an answer that is not a token.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::{CheckReport, CheckRequest, EXIT_USAGE, ShownBody, exit_code, render};
use crate::crd::oauth::GrantType;
use crate::crd::{ProbeResult, TenantApiCredential, TenantApiCredentialSpec};
use crate::decide::conditions::Reason;
use crate::decide::oauth::{self, Login, Next, State, problems, request};
use crate::decide::plan::{self, Problem};
use crate::decide::provider;
use crate::decide::schedule::Jitter;
use crate::decide::text::escaped;
use crate::decide::verdict;
use crate::outbound::ProviderClient;

/// The largest login file read: a login is a handful of keys, a private key the largest.
pub const LOGIN_FILE_LIMIT: u64 = 64 * 1024;

/// A login Secret's keys as read from a file, and what messages call it: the manifest's
/// `namespace/name`, or `./FILE` for an env file.
pub struct LoginFile {
    pub namespace: String,
    pub name: String,
    pub login: Login,
}

/// What `check --oauth-login` was told besides the common flags.
pub struct OAuthCheck {
    pub login: LoginFile,
    /// `--send-refresh-token`: a provider that rotates refresh tokens replaces the one sent, and
    /// the new one is never printed; without the flag such a grant is not sent.
    pub send_refresh_token: bool,
}

/// Reads a login file: a Secret manifest (YAML or JSON, `data` and/or `stringData`) or an env
/// file of `key=value` lines (`#` comments; `\n` in a private key as the operator accepts it).
/// No error quotes the file's content.
pub fn read_login(path: &std::path::Path) -> Result<LoginFile, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(LOGIN_FILE_LIMIT + 1).read_to_string(&mut text))
        .map_err(|e| format!("{}: {}", path.display(), e.kind()))?;
    if text.len() as u64 > LOGIN_FILE_LIMIT {
        return Err(format!("{}: larger than {LOGIN_FILE_LIMIT} bytes", path.display()));
    }
    let file_name = path
        .file_name()
        .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    parse_login(&text, &file_name).map_err(|why| format!("{}: {why}", escaped(&path.display().to_string())))
}

/// The login in `text` (see [`read_login`]); `file_name` names an env file's login.
pub fn parse_login(text: &str, file_name: &str) -> Result<LoginFile, String> {
    if let Some(pairs) = env_pairs(text) {
        let secret = Secret {
            data: Some(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        };
        return Ok(LoginFile {
            namespace: ".".into(),
            name: escaped(file_name).into_owned(),
            login: Login::from_secret(&secret),
        });
    }
    // serde_yaml's messages can quote a value: only the place is said.
    let mut secret: Secret = serde_yaml::from_str(text).map_err(|e| match e.location() {
        Some(at) => format!(
            "neither key=value lines nor a Secret manifest (line {}, column {})",
            at.line(),
            at.column()
        ),
        None => "neither key=value lines nor a Secret manifest".into(),
    })?;
    // As the API server does: stringData over data.
    if let Some(strings) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in strings {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    let shown = |s: Option<&String>, default: &str| escaped(s.map_or(default, String::as_str)).into_owned();
    Ok(LoginFile {
        namespace: shown(secret.metadata.namespace.as_ref(), "default"),
        name: shown(secret.metadata.name.as_ref(), file_name),
        login: Login::from_secret(&secret),
    })
}

/// `key=value` lines, when every line that is not blank or a comment is one; quotes around a
/// value are dropped.
fn env_pairs(text: &str) -> Option<Vec<(String, String)>> {
    let is_key = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    let mut pairs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line.split_once('=')?;
        if !is_key(k) {
            return None;
        }
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(v);
        pairs.push((k.to_owned(), unquoted.to_owned()));
    }
    (!pairs.is_empty()).then_some(pairs)
}

/// Exit codes of the sign-in's verdicts, after the probe's (`exit_code`): one per reason.
pub fn reason_exit_code(reason: Reason) -> i32 {
    match reason {
        Reason::InvalidToken => exit_code(ProbeResult::Invalid),
        Reason::LoginIncomplete => 8,
        Reason::MalformedKey => 9,
        Reason::InvalidClient => 10,
        Reason::InvalidGrant => 11,
        Reason::InvalidScope => 12,
        Reason::RefreshTokenRevoked => 13,
        Reason::RefreshTokenLost | Reason::RefreshTokenReused => 14,
        Reason::TokenEndpointUnusable => 15,
        Reason::MissingExpiry => 16,
        Reason::OtpRequired => 17,
        _ => EXIT_USAGE,
    }
}

/// The reasons [`reason_exit_code`] gives a code of their own.
pub const SIGN_IN_REASONS: [Reason; 11] = [
    Reason::InvalidToken,
    Reason::LoginIncomplete,
    Reason::MalformedKey,
    Reason::InvalidClient,
    Reason::InvalidGrant,
    Reason::InvalidScope,
    Reason::RefreshTokenRevoked,
    Reason::RefreshTokenReused,
    Reason::TokenEndpointUnusable,
    Reason::MissingExpiry,
    Reason::OtpRequired,
];

fn usage(text: String) -> CheckReport {
    CheckReport {
        text,
        code: EXIT_USAGE,
        body: None,
        reason: None,
    }
}

/// The report of a sign-in that ended in `problem`, as the credential would show it.
fn ended(mut out: String, problem: &Problem, body: Option<ShownBody>) -> CheckReport {
    let reason = problem.reason();
    let _ = writeln!(
        out,
        "verdict:      {}\ndetail:       {}",
        reason.as_str(),
        escaped(problem.message())
    );
    CheckReport {
        text: out,
        code: reason_exit_code(reason),
        body,
        reason: Some(reason),
    }
}

/// Signs in with `o.login` as the operator would (the definition's grants in order, each refusal
/// letting the next be tried), then probes the access token it got.
pub async fn check_oauth(req: &CheckRequest, o: &OAuthCheck) -> CheckReport {
    let spec = serde_json::json!({
        "tenant": "check", "provider": req.provider, "baseUrl": req.base_url,
        "probe": {"path": req.probe_path, "timeout": req.timeout},
        "oauth": {"secretRef": {"name": o.login.name}}
    });
    let spec: TenantApiCredentialSpec = match serde_json::from_value(spec) {
        Ok(s) => s,
        Err(e) => return usage(format!("error: {}\n", escaped(&e.to_string()))),
    };
    let tac = TenantApiCredential::new("check", spec);
    let found = provider::find(&req.provider, |_| req.defined.clone());
    let settings = match plan::resolve(&tac, &req.egress, &found) {
        Ok(s) => s,
        Err(p) => return usage(format!("error: {}\n", escaped(p.message()))),
    };
    let (Some(def), Some(url)) = (settings.profile.oauth.as_deref(), settings.token_url()) else {
        return usage(format!(
            "error: provider {} has no token endpoint (oauth)\n",
            escaped(&settings.profile.name)
        ));
    };
    let name = settings.profile.name.as_str();
    let (ns, login_name, login) = (&o.login.namespace, &o.login.name, &o.login.login);
    let mut out = String::new();
    let _ = writeln!(out, "provider:     {} ({})", escaped(name), escaped(&url));
    let Ok(client) = ProviderClient::new(
        std::sync::Arc::new(req.egress.clone()),
        std::sync::Arc::new(crate::fence::Fence::unfenced()),
    ) else {
        return usage("error: could not build an HTTP client\n".into());
    };
    let state = State::default();
    let mut refused = Vec::new();
    for _ in 0..oauth::MAX_GRANTS {
        let now = Timestamp::now();
        let request = match request::next(def, login, &state, &refused, &url, now) {
            Ok(r) => r,
            Err(why) => return ended(out, &problems::unusable(&why, name, ns, login_name), None),
        };
        if request.grant == GrantType::RefreshToken && !o.send_refresh_token {
            return usage(format!(
                "{out}error: this would send the login's refresh token: a provider that rotates refresh tokens replaces it, the new one is not shown, and a copy the operator uses is then spent; pass --send-refresh-token to check it anyway\n"
            ));
        }
        let _ = writeln!(out, "grant:        {}", request.grant.as_str());
        let Ok(answer) = client
            .post_form(&url, &request, settings.timeout, &settings.profile)
            .await
        else {
            return usage(format!("{out}error: the request was not sent\n"));
        };
        let at = Timestamp::now();
        let outcome = oauth::answer::interpret(def, &settings.profile.token_format, &answer, at);
        let shown = outcome.holds_no_token();
        let body = (req.show_body && shown && !answer.body.is_empty()).then(|| ShownBody::of(&answer.body));
        match oauth::next(def, &request, outcome, &state, login, at, Jitter::new(0.5)) {
            Next::Issued { access_token, state } => {
                let rotated = request.refresh_token.as_ref().zip(state.refresh_token.as_ref());
                if rotated.is_some_and(|(sent, kept)| sent != kept) {
                    let _ = writeln!(
                        out,
                        "refresh token: rotated by the provider: the one sent is spent; the new one is not shown"
                    );
                }
                let _ = writeln!(out, "token:        {}", access_token.fingerprint());
                if let Some(e) = state.expires_at {
                    let _ = writeln!(out, "expires:      {e} (stated by the token endpoint)");
                }
                let _ = writeln!(out, "probe:        {}", escaped(&settings.probe_url()));
                let Ok((probed, raw)) = client
                    .probe_keeping_body(
                        &settings.probe_url(),
                        &access_token,
                        settings.timeout,
                        &settings.profile,
                    )
                    .await
                else {
                    return usage(format!("{out}error: the probe was not sent\n"));
                };
                let result = verdict::classify(&probed);
                render::outcome(&mut out, result, &probed);
                return CheckReport {
                    text: out,
                    code: exit_code(result),
                    body: raw.filter(|_| req.show_body).map(|b| ShownBody::of(&b.0)),
                    reason: crate::decide::plan::decisive_reason(result),
                };
            }
            Next::CodeRequired { .. } => {
                return ended(out, &problems::otp_required(name, ns, login_name, def.code_key()), body);
            }
            Next::Refused(summary) => {
                let _ = writeln!(out, "answer:       {summary} (refused)");
                refused.push(request.grant);
                if request::next(def, login, &state, &refused, &url, now).is_ok() {
                    continue;
                }
                let reason = oauth::refusal_reason(&request, &summary, false);
                let problem = problems::refused(reason, &request, name, ns, login_name, &summary);
                return ended(out, &problem, body);
            }
            Next::Unusable(why) => {
                let rotated = oauth::answer::rotated_in(def, &answer);
                if rotated.is_some_and(|new| request.refresh_token.as_ref().is_some_and(|sent| *sent != new)) {
                    let _ = writeln!(
                        out,
                        "refresh token: rotated by the provider: the one sent is spent; the new one is not shown"
                    );
                }
                return ended(out, &problems::bad_answer(&why, name), body);
            }
            Next::NotAllowed(why) => return usage(format!("{out}error: {}\n", escaped(&why))),
            Next::BackOff(until) => {
                let _ = writeln!(out, "verdict:      RateLimited (retry after {until})");
                return CheckReport {
                    text: out,
                    code: exit_code(ProbeResult::RateLimited),
                    body,
                    reason: None,
                };
            }
            Next::Retry(_) => {
                let _ = writeln!(
                    out,
                    "verdict:      Unavailable (the token endpoint did not answer a token)"
                );
                return CheckReport {
                    text: out,
                    code: exit_code(ProbeResult::Unavailable),
                    body,
                    reason: None,
                };
            }
        }
    }
    usage(format!("{out}error: every grant was tried\n"))
}

#[cfg(test)]
mod tests;
