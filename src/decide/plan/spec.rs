//! Spec resolution: the spec with every default applied, every duration parsed, and checked
//! against the owner's egress rules, once per reconcile; and the Secrets a spec names.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::Problem;
use crate::crd::{SecretKeyRef, TenantApiCredential};
use crate::decide::duration;
use crate::decide::egress::{Egress, Refusal};
use crate::decide::fair_share;
use crate::decide::provider::{Found, Profile, builtin};
use crate::decide::schedule::{self, Interval};

/// The spec, resolved and checked once: every default applied, every duration parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub profile: Arc<Profile>,
    pub base_url: String,
    pub probe_path: String,
    pub interval: Interval,
    /// At most `fair_share::MAX_REQUEST_TIMEOUT`: a request never holds a slot longer.
    pub timeout: Duration,
    /// The spec's (or the provider's) timeout when it was above that maximum (an object written
    /// before the schema said so).
    pub timeout_capped_from: Option<Duration>,
    pub failure_threshold: u32,
    pub warn_before: Duration,
    pub not_after: Option<Timestamp>,
    pub secret_name: String,
    pub source: TokenSource,
}

/// Where the token comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenSource {
    /// A token the user keeps in a Secret, and optionally its announced replacement.
    Secret {
        current: SecretKeyRef,
        pending: Option<SecretKeyRef>,
    },
    /// Virtuous OAuth: tenantcred signs in with the login in this Secret and mints access tokens.
    OAuth { login: String },
}

impl TokenSource {
    /// Minted by tenantcred: renewed before it expires (its short lifetime is no warning sign),
    /// and issued by the provider a moment ago (nothing to validate before use).
    pub fn auto_renewed(&self) -> bool {
        matches!(self, Self::OAuth { .. })
    }
}

impl Settings {
    /// The provider's OAuth token endpoint (Virtuous: `{baseUrl}/Token`), when it has one.
    pub fn token_url(&self) -> Option<String> {
        use crate::decide::oauth::definition::Endpoint;
        Some(match &self.profile.oauth.as_ref()?.endpoint {
            Endpoint::Path(path) => format!("{}{path}", self.base_url.trim_end_matches('/')),
            Endpoint::Url(url) => url.clone(),
        })
    }

    pub fn probe_url(&self) -> String {
        format!("{}{}", self.base_url.trim_end_matches('/'), self.probe_path)
    }

    /// `host:port` of the provider, the unit of concurrency caps and of host-wide back-off. A
    /// name with a trailing dot is the same host as without (DNS and the egress rules agree), so
    /// writing it both ways does not make two.
    pub fn host(&self) -> String {
        url::Url::parse(&self.base_url)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?;
                let host = host.strip_suffix('.').unwrap_or(host);
                Some(format!("{host}:{}", u.port_or_known_default()?))
            })
            .unwrap_or_else(|| self.base_url.clone())
    }
}

/// The most labels, and the most annotations, a credential asks for its managed Secret (the
/// schema's `maxProperties`).
pub const MAX_TARGET_PAIRS: usize = 64;

/// The most workloads a credential restarts (the schema's `maxItems`).
pub const MAX_RESTART_TARGETS: usize = 16;

/// Resolves the spec, with the provider found under its name, against the operator owner's
/// egress rules.
pub fn resolve(tac: &TenantApiCredential, egress: &Egress, provider: &Found) -> Result<Settings, Problem> {
    let spec = &tac.spec;
    let invalid = |m: String| Err(Problem::InvalidSpec(m));
    let name = spec.provider.as_str();
    let profile = match provider {
        Found::Profile(p) => p.clone(),
        Found::Missing => {
            return Err(Problem::ProviderNotFound(format!(
                "provider {name:?} is neither built in ({}) nor an ApiProvider (kubectl get apiproviders); nothing is probed until it exists, and the managed Secret keeps its last good content",
                builtin::NAMES.join(", ")
            )));
        }
        Found::Refused(why) => {
            return Err(Problem::ProviderNotAccepted(format!(
                "ApiProvider {name} is not accepted: {why}; nothing is probed until a platform admin fixes it, and the managed Secret keeps its last good content"
            )));
        }
    };
    let source = match (&spec.credential_ref, &spec.oauth) {
        (Some(current), None) => TokenSource::Secret {
            current: current.clone(),
            pending: spec.pending_credential_ref.clone(),
        },
        (None, Some(oauth)) if profile.oauth.is_some() => TokenSource::OAuth {
            login: oauth.secret_ref.name.clone(),
        },
        (None, Some(_)) => {
            return invalid(format!(
                "spec.oauth needs a provider with a token endpoint (virtuous, or an ApiProvider with oauth); provider {name} has none"
            ));
        }
        _ => return invalid("exactly one of credentialRef and oauth must be set".into()),
    };
    // Names reach the API server's request path as written: one that no object can have would
    // rewrite the request (`decide::names`).
    let names = [
        (
            "spec.credentialRef.name",
            spec.credential_ref.as_ref().map(|r| r.name.as_str()),
        ),
        (
            "spec.pendingCredentialRef.name",
            spec.pending_credential_ref.as_ref().map(|r| r.name.as_str()),
        ),
        (
            "spec.oauth.secretRef.name",
            spec.oauth.as_ref().map(|o| o.secret_ref.name.as_str()),
        ),
        ("spec.target.name", spec.target.name.as_deref()),
    ]
    .into_iter()
    .chain(
        spec.rollout_restart_targets
            .iter()
            .map(|w| ("spec.rolloutRestartTargets[].name", Some(w.name.as_str()))),
    );
    // What the schema bounds, for objects written before it did (each is kept per credential).
    let counts = [
        ("spec.target.labels", spec.target.labels.len(), MAX_TARGET_PAIRS),
        (
            "spec.target.annotations",
            spec.target.annotations.len(),
            MAX_TARGET_PAIRS,
        ),
        (
            "spec.rolloutRestartTargets",
            spec.rollout_restart_targets.len(),
            MAX_RESTART_TARGETS,
        ),
    ];
    if let Some((field, n, max)) = counts.into_iter().find(|(_, n, max)| n > max) {
        return invalid(format!("{field} has {n} entries; at most {max} are allowed"));
    }
    for (field, name) in names {
        if let Some(name) = name.filter(|n| !crate::decide::names::is_object_name(n)) {
            return invalid(crate::decide::names::not_an_object_name(field, name));
        }
    }
    let Some(base_url) = spec.base_url.clone().or(profile.default_base_url.clone()) else {
        return invalid(format!("provider {} requires spec.baseUrl", profile.name));
    };
    let Some(probe_path) = spec.probe.path.clone().or(profile.probe.path.clone()) else {
        return invalid(format!("provider {} requires spec.probe.path", profile.name));
    };
    // Refused before anything else reads them, and shown escaped: they reach the request line
    // and whoever reads the status on a terminal.
    if crate::decide::text::has_control(&probe_path) {
        return invalid(crate::decide::text::holds_controls("spec.probe.path", &probe_path));
    }
    if crate::decide::text::has_control(&base_url) {
        let shown = crate::decide::egress::redacted(&base_url);
        return invalid(crate::decide::text::holds_controls("spec.baseUrl", &shown));
    }
    if !probe_path.starts_with('/') {
        return invalid(format!("spec.probe.path {probe_path:?} must start with /"));
    }
    match url::Url::parse(&base_url) {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.host_str().is_some() => {
            egress.check(&u, &profile).map_err(|r| match r {
                Refusal::Insecure(m) => Problem::InsecureBaseUrl(m),
                Refusal::HostNotAllowed(m) => Problem::BaseUrlNotAllowed(m),
                Refusal::UserInfo(m) => Problem::InvalidSpec(m),
            })?;
        }
        _ => {
            let shown = crate::decide::egress::redacted(&base_url);
            return invalid(format!("spec.baseUrl {shown:?} is not an http(s) URL"));
        }
    }
    let dur = |field: &str, v: &str| duration::parse(v).map_err(|e| Problem::InvalidSpec(format!("{field}: {e}")));
    // The credential's own, else the provider's, else the defaults.
    let requested = match &spec.probe.interval {
        Some(v) => dur("spec.probe.interval", v)?,
        None => profile.probe.interval.unwrap_or(crate::crd::DEFAULT_PROBE_INTERVAL),
    };
    if requested < Duration::from_secs(60) {
        return invalid(format!(
            "spec.probe.interval {} is below the minimum of 1m",
            duration::format(requested)
        ));
    }
    let timeout = match &spec.probe.timeout {
        Some(v) => dur("spec.probe.timeout", v)?,
        None => profile.probe.timeout.unwrap_or(crate::crd::DEFAULT_PROBE_TIMEOUT),
    };
    if timeout.is_zero() {
        return invalid("spec.probe.timeout must be positive".into());
    }
    let timeout_capped_from = (timeout > fair_share::MAX_REQUEST_TIMEOUT).then_some(timeout);
    let timeout = timeout.min(fair_share::MAX_REQUEST_TIMEOUT);
    let warn_before = dur("spec.expiry.warnBefore", &spec.expiry.warn_before)?;
    if spec.probe.failure_threshold == 0 {
        return invalid("spec.probe.failureThreshold must be at least 1".into());
    }
    let Some(secret_name) = tac.target_name().map(str::to_owned) else {
        return invalid("the resource has no name".into());
    };
    Ok(Settings {
        interval: schedule::effective_interval(requested, &profile),
        profile,
        base_url,
        probe_path,
        timeout,
        timeout_capped_from,
        failure_threshold: spec.probe.failure_threshold,
        warn_before,
        not_after: spec.expiry.not_after.as_ref().map(|t| t.0),
        secret_name,
        source,
    })
}

/// The Secrets a spec names (its token, a pending replacement, an OAuth login), sorted, once
/// each: whose changes wake the credential, whether or not the rest of the spec is usable (a
/// Secret fixed by hand may be what makes it usable).
pub fn reads(spec: &crate::crd::TenantApiCredentialSpec) -> Vec<String> {
    let mut names: Vec<String> = [spec.credential_ref.as_ref(), spec.pending_credential_ref.as_ref()]
        .into_iter()
        .flatten()
        .map(|r| r.name.clone())
        .chain(spec.oauth.as_ref().map(|o| o.secret_ref.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}
