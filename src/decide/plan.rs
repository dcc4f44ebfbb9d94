//! The functional core of a reconcile: from the spec, what was observed, the probe outcome and
//! the clock to the status to write and the instant to look again. No I/O here.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{ProbeResult, RateLimitStatus, SecretKeyRef, TenantApiCredential, TenantApiCredentialStatus};
use crate::decide::conditions::{self, Desired, Reason, Status as S, Type};
use crate::decide::duration;
use crate::decide::egress::{Egress, Refusal};
use crate::decide::provider::Profile;
use crate::decide::schedule::{self, Finished, Interval, Jitter};
use crate::decide::token::{Fingerprint, Lifetime};
use crate::decide::verdict::{self, ProbeOutcome};

/// The spec, resolved and checked once: every default applied, every duration parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub profile: Profile,
    pub base_url: String,
    pub probe_path: String,
    pub interval: Interval,
    pub timeout: Duration,
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
    /// The Virtuous token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/Token", self.base_url.trim_end_matches('/'))
    }

    pub fn probe_url(&self) -> String {
        format!("{}{}", self.base_url.trim_end_matches('/'), self.probe_path)
    }

    /// `host:port` of the provider, the unit of concurrency caps and of host-wide back-off.
    pub fn host(&self) -> String {
        url::Url::parse(&self.base_url)
            .ok()
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
            .unwrap_or_else(|| self.base_url.clone())
    }
}

/// Input that cannot be used as it is. Each maps to one condition reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    InvalidSpec(String),
    InsecureBaseUrl(String),
    /// The baseUrl is outside the operator's egress rules (`egress`); no request is sent.
    BaseUrlNotAllowed(String),
    SourceNotFound(String),
    InvalidToken(String),
    SecretConflict(String),
    /// Virtuous asked for a two-factor code (202); waits for an `otp` key in the login Secret.
    OtpRequired(String),
    /// The OAuth grant was refused and no other grant is possible.
    InvalidGrant(String),
    /// A ServiceAccount token (or another type that must stay in the cluster) as a source.
    SourceNotAllowed(String),
    /// The API server refused to store the managed Secret (422), with its message.
    SecretRejected(String),
}

impl Problem {
    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidSpec(_) => Reason::InvalidSpec,
            Self::InsecureBaseUrl(_) => Reason::InsecureBaseUrl,
            Self::BaseUrlNotAllowed(_) => Reason::BaseUrlNotAllowed,
            Self::SourceNotFound(_) => Reason::SourceNotFound,
            Self::InvalidToken(_) => Reason::InvalidToken,
            Self::SecretConflict(_) => Reason::SecretConflict,
            Self::OtpRequired(_) => Reason::OtpRequired,
            Self::InvalidGrant(_) => Reason::InvalidGrant,
            Self::SourceNotAllowed(_) => Reason::SourceNotAllowed,
            Self::SecretRejected(_) => Reason::SecretRejected,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::InvalidSpec(m)
            | Self::InsecureBaseUrl(m)
            | Self::BaseUrlNotAllowed(m)
            | Self::SourceNotFound(m)
            | Self::InvalidToken(m)
            | Self::SecretConflict(m)
            | Self::OtpRequired(m)
            | Self::InvalidGrant(m)
            | Self::SourceNotAllowed(m)
            | Self::SecretRejected(m) => m,
        }
    }

    /// A missing source recovers by itself when the Secret appears; the rest need a person.
    pub fn stalls(&self) -> bool {
        !matches!(self, Self::SourceNotFound(_))
    }

    /// Credential-side failures of the OAuth grant make the resource Degraded, like a revoked token.
    pub fn degrades(&self) -> bool {
        matches!(self, Self::OtpRequired(_) | Self::InvalidGrant(_))
    }
}

/// The status of a credential whose spec the types cannot read at all (it slipped past schema
/// validation: a CRD installed without it, or an older schema): decided like any other invalid
/// spec, with nothing to probe. `why` is the decoder's message, bounded.
pub fn unreadable_spec(
    observed: &TenantApiCredentialStatus,
    why: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> TenantApiCredentialStatus {
    let mut why: String = why.chars().take(300).collect();
    why.insert_str(0, "the spec does not match the TenantApiCredential schema: ");
    decide(&Input {
        generation,
        observed,
        settings: None,
        token: None,
        problem: Some(&Problem::InvalidSpec(why)),
        probe: &ProbeStep::None,
        rotation: None,
        probe_request: None,
        now,
        // Nothing is scheduled without settings: the jitter is never drawn.
        jitter: Jitter::new(0.5),
    })
    .status
}

/// Resolves the spec against the operator owner's egress rules.
pub fn resolve(tac: &TenantApiCredential, egress: &Egress) -> Result<Settings, Problem> {
    let spec = &tac.spec;
    let invalid = |m: String| Err(Problem::InvalidSpec(m));
    let Some(profile) = Profile::for_provider(&spec.provider) else {
        return invalid(format!(
            "unknown provider {:?}; use one of {}",
            spec.provider.as_str(),
            crate::crd::ProviderName::KNOWN.join(", ")
        ));
    };
    let source = match (&spec.credential_ref, &spec.oauth) {
        (Some(current), None) => TokenSource::Secret {
            current: current.clone(),
            pending: spec.pending_credential_ref.clone(),
        },
        (None, Some(oauth)) if spec.provider == crate::crd::ProviderName::Virtuous => TokenSource::OAuth {
            login: oauth.secret_ref.name.clone(),
        },
        (None, Some(_)) => return invalid("spec.oauth is only supported with provider virtuous".into()),
        _ => return invalid("exactly one of credentialRef and oauth must be set".into()),
    };
    let Some(base_url) = spec.base_url.clone().or(profile.default_base_url.map(str::to_owned)) else {
        return invalid(format!("provider {} requires spec.baseUrl", profile.name));
    };
    let Some(probe_path) = spec
        .probe
        .path
        .clone()
        .or(profile.default_probe_path.map(str::to_owned))
    else {
        return invalid(format!("provider {} requires spec.probe.path", profile.name));
    };
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
    let requested = dur("spec.probe.interval", &spec.probe.interval)?;
    if requested < Duration::from_secs(60) {
        return invalid(format!(
            "spec.probe.interval {} is below the minimum of 1m",
            spec.probe.interval
        ));
    }
    let timeout = dur("spec.probe.timeout", &spec.probe.timeout)?;
    if timeout.is_zero() {
        return invalid("spec.probe.timeout must be positive".into());
    }
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
        failure_threshold: spec.probe.failure_threshold,
        warn_before,
        not_after: spec.expiry.not_after.as_ref().map(|t| t.0),
        secret_name,
        source,
    })
}

/// What the last decisive probe said about the token in the Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No decisive answer yet for this token.
    Probing,
    Valid,
    Failing(Failure),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Unauthorized,
    Forbidden,
    Expired,
}

impl Failure {
    fn reason(self) -> Reason {
        match self {
            Self::Unauthorized => Reason::Unauthorized,
            Self::Forbidden => Reason::Forbidden,
            Self::Expired => Reason::Expired,
        }
    }
}

/// Reads the health the previous status recorded.
pub fn health_of(status: &TenantApiCredentialStatus) -> Health {
    let degraded = match conditions::state(&status.conditions, Type::Degraded) {
        Some((S::True, reason)) => reason,
        _ => None,
    };
    match degraded {
        Some(Reason::Unauthorized) => return Health::Failing(Failure::Unauthorized),
        Some(Reason::Forbidden) => return Health::Failing(Failure::Forbidden),
        Some(Reason::Expired) => return Health::Failing(Failure::Expired),
        _ => {}
    }
    if conditions::is_true(&status.conditions, Type::Ready) {
        Health::Valid
    } else {
        Health::Probing
    }
}

/// The token currently in the managed Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFacts {
    pub fingerprint: Fingerprint,
    pub lifetime: Lifetime,
}

/// What this reconcile did about probing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeStep {
    /// Not due (or blocked by a problem): nothing happened.
    None,
    /// Due, but held back by the key's budget or the host's back-off until this instant.
    Deferred(Timestamp),
    /// Past expiry: decided without sending a request.
    Expired,
    /// A request was sent.
    Sent(ProbeOutcome),
}

impl ProbeStep {
    /// The verdict it reached, if any.
    pub fn result(&self) -> Option<ProbeResult> {
        match self {
            Self::Sent(o) => Some(verdict::classify(o)),
            Self::Expired => Some(ProbeResult::Expired),
            Self::Deferred(_) | Self::None => None,
        }
    }
}

pub struct Input<'a> {
    pub generation: Option<i64>,
    pub observed: &'a TenantApiCredentialStatus,
    pub settings: Option<&'a Settings>,
    pub token: Option<&'a TokenFacts>,
    pub problem: Option<&'a Problem>,
    pub probe: &'a ProbeStep,
    /// A rotation this reconcile validated (or tried to); `None` leaves `status.rotation` as it was.
    pub rotation: Option<&'a crate::crd::RotationStatus>,
    /// The `probe-requested-at` annotation value this reconcile honoured.
    pub probe_request: Option<&'a str>,
    pub now: Timestamp,
    pub jitter: Jitter,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: TenantApiCredentialStatus,
    /// When something is next due (a probe, entering the warning window, expiry).
    pub requeue_at: Option<Timestamp>,
}

/// Whether the `probe-requested-at` annotation asks for a probe not yet made.
pub fn new_probe_request(observed: &TenantApiCredentialStatus, requested: Option<&str>) -> bool {
    requested.is_some() && requested != observed.last_handled_probe_request.as_deref()
}

/// When a credential's probe is due, per the previous status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// A new token, a probe-now request, or no schedule: probe now.
    Now,
    /// As scheduled.
    At(Timestamp),
    /// It fell due before this replica began to lead (a restart, a failover, an outage): it
    /// takes its host's next catch-up slot (`schedule::catch_up`) instead of firing with every
    /// other overdue probe at once.
    Overdue,
}

/// When the next probe is due. `started_at` is when this replica began to lead.
pub fn probe_due(
    observed: &TenantApiCredentialStatus,
    token: &TokenFacts,
    requested: Option<&str>,
    started_at: Timestamp,
) -> Due {
    let same_token = observed.token_fingerprint.as_deref() == Some(token.fingerprint.as_str());
    if !same_token || observed.last_probe_result.is_none() || new_probe_request(observed, requested) {
        return Due::Now;
    }
    // No schedule: an input problem cleared it (and has just gone away): probe now.
    match observed.next_probe_time.as_ref().map(|t| t.0) {
        None => Due::Now,
        Some(next) if next < started_at => Due::Overdue,
        Some(next) => Due::At(next),
    }
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

pub fn decide(input: &Input<'_>) -> Decision {
    // Refused at connect time (the name resolved to addresses the owner has not allowed): not a
    // probe at all, but the same input problem as a baseUrl refused up front.
    if let ProbeStep::Sent(ProbeOutcome {
        transport: verdict::Transport::NotAllowed(why),
        ..
    }) = input.probe
    {
        let refused = Problem::BaseUrlNotAllowed(why.clone());
        return decide(&Input {
            problem: Some(input.problem.unwrap_or(&refused)),
            probe: &ProbeStep::None,
            ..*input
        });
    }
    let now = conditions::truncate(input.now);
    let mut s = input.observed.clone();
    s.observed_generation = input.generation;
    let mut health = health_of(input.observed);
    let mut previous_transient_delay = None;
    if let Some(settings) = input.settings {
        s.secret_name = Some(settings.secret_name.clone());
    }
    if let Some(token) = input.token {
        if s.token_fingerprint.as_deref() != Some(token.fingerprint.as_str()) {
            // A different token is in the Secret: what was learnt about the old one no longer holds.
            s.token_fingerprint = Some(token.fingerprint.to_string());
            s.consecutive_failures = 0;
            s.last_probe_result = None;
            s.last_probe_http_status = None;
            s.rate_limit = None;
            s.next_probe_time = None;
            health = Health::Probing;
        } else if matches!(
            s.last_probe_result,
            Some(ProbeResult::RateLimited | ProbeResult::Unavailable)
        ) {
            previous_transient_delay = match (&s.last_probe_time, &s.next_probe_time) {
                (Some(last), Some(next)) => Some(schedule::until(last.0, next.0)),
                _ => None,
            };
        }
        let not_after = input.settings.and_then(|st| st.not_after);
        s.expires_at = [token.lifetime.expires_at, not_after]
            .into_iter()
            .flatten()
            .min()
            .map(time);
    }

    match input.probe {
        ProbeStep::None => {}
        ProbeStep::Deferred(until) => s.next_probe_time = Some(time(*until)),
        ProbeStep::Expired => {
            s.last_probe_result = Some(ProbeResult::Expired);
            s.last_probe_http_status = None;
            s.next_probe_time = None;
            health = Health::Failing(Failure::Expired);
        }
        ProbeStep::Sent(outcome) => {
            let result = verdict::classify(outcome);
            let first_for_token = s.last_probe_result.is_none();
            s.last_probe_time = Some(time(now));
            s.last_probe_result = Some(result);
            s.last_probe_http_status = outcome.http_status();
            if !outcome.rate_limit.is_empty() {
                s.rate_limit = Some(RateLimitStatus {
                    limit: outcome.rate_limit.limit,
                    remaining: outcome.rate_limit.remaining,
                    reset_at: outcome.rate_limit.reset_at.map(time),
                    held_back: None,
                });
            }
            // What a 429 held back, for the Ready message; any other answer clears it.
            let held_back = outcome.held_back.filter(|_| result == ProbeResult::RateLimited);
            if let Some(r) = s.rate_limit.as_mut() {
                r.held_back = held_back;
            } else if held_back.is_some() {
                s.rate_limit = Some(RateLimitStatus {
                    limit: None,
                    remaining: None,
                    reset_at: None,
                    held_back,
                });
            }
            let threshold = input
                .settings
                .map_or(crate::crd::DEFAULT_FAILURE_THRESHOLD, |st| st.failure_threshold);
            match result {
                ProbeResult::Valid => {
                    s.consecutive_failures = 0;
                    s.last_successful_probe_time = Some(time(now));
                    health = Health::Valid;
                }
                ProbeResult::Unauthorized | ProbeResult::Forbidden => {
                    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                    if s.consecutive_failures >= threshold {
                        health = Health::Failing(if result == ProbeResult::Forbidden {
                            Failure::Forbidden
                        } else {
                            Failure::Unauthorized
                        });
                    }
                }
                // Never the token's fault: the count and the health stay as they were.
                _ => {}
            }
            let interval = input
                .settings
                .map_or(crate::crd::DEFAULT_PROBE_INTERVAL, |st| st.interval.effective);
            let finished = Finished {
                result,
                consecutive_failures: s.consecutive_failures,
                failure_threshold: threshold,
                first_for_token,
                previous_transient_delay,
                provider_back_off: outcome.back_off_until(),
            };
            s.next_probe_time =
                schedule::next_probe(finished, interval, now, input.jitter).map(|t| time(conditions::truncate(t)));
        }
    }
    if let Some(Problem::InvalidToken(_)) = input.problem {
        s.last_probe_result = Some(ProbeResult::Invalid);
    }
    if input.problem.is_some() {
        // Nothing is probed until the input is usable again; a change to it triggers a reconcile.
        s.next_probe_time = None;
    }
    if let Some(r) = input.probe_request {
        s.last_handled_probe_request = Some(r.to_owned());
    }
    if let Some(r) = input.rotation {
        s.rotation = Some(r.clone());
    }

    let desired = desired_conditions(input, &s, health, now);
    s.conditions = conditions::merge(&input.observed.conditions, &desired, input.generation, now);

    let expiry_at = input
        .settings
        .and_then(|st| schedule::expiry_instants(s.expires_at.as_ref().map(|t| t.0), st.warn_before, now));
    let requeue_at = [s.next_probe_time.as_ref().map(|t| t.0), expiry_at]
        .into_iter()
        .flatten()
        .min();
    Decision { status: s, requeue_at }
}

fn time(t: Timestamp) -> Time {
    Time(conditions::truncate(t))
}

fn desired_conditions(
    input: &Input<'_>,
    s: &TenantApiCredentialStatus,
    health: Health,
    now: Timestamp,
) -> Vec<Desired> {
    let fp = s.token_fingerprint.as_deref().unwrap_or("(none)");
    let settings = input.settings;
    let threshold = settings.map_or(crate::crd::DEFAULT_FAILURE_THRESHOLD, |st| st.failure_threshold);
    let stretched = settings
        .and_then(|st| {
            st.interval.stretched_from.map(|from| {
                format!(
                    "; probe interval stretched from {} to {} to stay within 1% of {}'s hourly rate limit",
                    duration::format(from),
                    duration::format(st.interval.effective),
                    st.profile.name
                )
            })
        })
        .unwrap_or_default();
    // What the latest non-decisive probe said, appended so Ready's message explains the wait.
    // Messages are functions of status fields a reader acts on only (never an instant that moves
    // at every probe), so a probe that changes nothing renders the same text and writes nothing.
    let pending = match s.last_probe_result {
        Some(ProbeResult::RateLimited) => {
            match s.rate_limit.as_ref().and_then(|r| r.held_back) {
                Some(crate::crd::RateLimitScope::Host) => "; the provider rate-limited the latest probe (HTTP 429), and other tokens of the same provider host too: every token of that host waits as the provider asked".to_string(),
                _ => "; the provider rate-limited the latest probe (HTTP 429) of this token: its probes wait as the provider asked; other tokens go on".to_string(),
            }
        }
        Some(ProbeResult::Unavailable) => format!(
            "; the provider was unavailable on the latest probe ({}); retrying with backoff",
            s.last_probe_http_status
                .map_or("timeout or connection failure".into(), |c| format!("HTTP {c}"))
        ),
        Some(r @ (ProbeResult::Unauthorized | ProbeResult::Forbidden)) if s.consecutive_failures < threshold => {
            format!(
                "; the latest probe got HTTP {} ({} of {threshold} before Degraded); confirming with backoff",
                if r == ProbeResult::Forbidden { 403 } else { 401 },
                s.consecutive_failures
            )
        }
        _ => String::new(),
    };
    let source = input.problem.is_none();
    let path = settings.map(|st| st.probe_path.as_str()).unwrap_or("the probe path");
    let failure_message = |f: Failure| match f {
        Failure::Unauthorized => format!(
            "the provider rejected token {fp} with HTTP 401 on {} consecutive probes: it is expired, revoked or for another organisation; put a new token in the source Secret",
            s.consecutive_failures.max(threshold)
        ),
        Failure::Forbidden => format!(
            "the provider answered HTTP 403 for token {fp} on {} consecutive probes: the token authenticates but lacks permission for GET {path}; ask the customer's administrator to grant it",
            s.consecutive_failures.max(threshold)
        ),
        Failure::Expired => format!(
            "token {fp} expired at {}; put a new token in the source Secret",
            s.expires_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
        ),
    };

    let mut out = Vec::with_capacity(5);
    let (ready, stalled) = match (input.problem, health) {
        (Some(p), _) => {
            let ready = Desired::new(Type::Ready, S::False, p.reason(), p.message());
            let stalled = if p.stalls() {
                Some(Desired::new(Type::Stalled, S::True, p.reason(), p.message()))
            } else if let Health::Failing(f) = health {
                Some(Desired::new(Type::Stalled, S::True, f.reason(), failure_message(f)))
            } else {
                None
            };
            (ready, stalled)
        }
        (None, Health::Failing(f)) => {
            let m = failure_message(f);
            (
                Desired::new(Type::Ready, S::False, f.reason(), m.clone()),
                Some(Desired::new(Type::Stalled, S::True, f.reason(), m)),
            )
        }
        (None, Health::Valid) => (
            Desired::new(
                Type::Ready,
                S::True,
                Reason::TokenValid,
                format!("the provider accepted token {fp} on the last decisive probe{pending}{stretched}"),
            ),
            None,
        ),
        (None, Health::Probing) => (
            Desired::new(
                Type::Ready,
                S::Unknown,
                Reason::Probing,
                format!("waiting for a decisive probe of token {fp}{pending}{stretched}"),
            ),
            None,
        ),
    };
    out.push(ready);
    out.push(match (input.problem.filter(|p| p.degrades()), health) {
        (Some(p), _) => Desired::new(Type::Degraded, S::True, p.reason(), p.message()),
        (None, Health::Failing(f)) => Desired::new(Type::Degraded, S::True, f.reason(), failure_message(f)),
        _ => Desired::new(
            Type::Degraded,
            S::False,
            Reason::AsExpected,
            "no credential-side failure",
        ),
    });
    out.extend(stalled);
    let rotating = s
        .rotation
        .as_ref()
        .filter(|r| r.phase == crate::crd::RotationPhase::Pending);
    if let (true, Some(r)) = (source, rotating) {
        let pending = r.pending_fingerprint.as_deref().unwrap_or("(unknown)");
        out.push(Desired::new(
            Type::Reconciling,
            S::True,
            Reason::Rotating,
            format!("validating token {pending} before it replaces {fp}"),
        ));
    } else if source && health == Health::Probing {
        out.push(Desired::new(
            Type::Reconciling,
            S::True,
            Reason::Probing,
            format!("probing token {fp}"),
        ));
    }
    out.push(if settings.is_some_and(|st| st.source.auto_renewed()) {
        Desired::new(
            Type::ExpiringSoon,
            S::False,
            Reason::AsExpected,
            "the access token is renewed automatically before it expires",
        )
    } else {
        expiring_soon(
            s.expires_at.as_ref().map(|t| t.0),
            settings.map(|st| st.warn_before),
            now,
        )
    });
    out
}

fn expiring_soon(expires_at: Option<Timestamp>, warn_before: Option<Duration>, now: Timestamp) -> Desired {
    let (Some(exp), Some(warn)) = (expires_at, warn_before) else {
        return Desired::new(
            Type::ExpiringSoon,
            S::False,
            Reason::AsExpected,
            "the token declares no expiry",
        );
    };
    let left = schedule::until(now, exp);
    if exp <= now {
        Desired::new(
            Type::ExpiringSoon,
            S::False,
            Reason::Expired,
            format!("the token expired at {exp}"),
        )
    } else if left <= warn {
        Desired::new(
            Type::ExpiringSoon,
            S::True,
            Reason::ExpiringSoon,
            format!(
                "the token expires at {exp}, within the {} warning window; ask the customer for a new one",
                duration::format(warn)
            ),
        )
    } else {
        Desired::new(
            Type::ExpiringSoon,
            S::False,
            Reason::AsExpected,
            format!("the token expires at {exp}"),
        )
    }
}

#[cfg(test)]
mod tests;
