//! What the reconcile machine asks of the shell ([`Action`]) and what the shell hands back
//! ([`Outcome`]). Every action carries all the shell needs to perform it; the shell decides
//! nothing about the credential.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;

use super::probe::AfterProbe;
use super::request::{Attempt, BackOff};
use super::source::Which;
use crate::crd::{RateLimitScope, TenantApiCredential, TenantApiCredentialStatus};
use crate::decide::events::Notice;
use crate::decide::oauth::{self, TokenRequest};
use crate::decide::plan::Settings;
use crate::decide::publish::Volatile;
use crate::decide::sharing::{Heard, ProbeKey};
use crate::decide::token::{Fingerprint, Token};
use crate::decide::verdict::ProbeOutcome;

/// The one thing to do next.
pub enum Action<'a> {
    /// Read a source Secret (answer [`Outcome::SourceRead`]).
    ReadSource { which: Which, name: String },
    /// Read an OAuth credential's login Secret (answer [`Outcome::LoginRead`]).
    ReadLogin { name: String },
    /// Read the state Secret tenantcred keeps for an OAuth login (answer
    /// [`Outcome::OAuthStateRead`]).
    ReadOAuthState { name: String, read: StateRead },
    /// Wait at most `patience` until no other reconcile of this replica holds the login `key`,
    /// and hold it until this reconcile ends (answer [`Outcome::LoginHeld`]): one token-endpoint
    /// call per login at a time.
    HoldLogin { key: String, patience: Duration },
    /// POST this request to the token endpoint within the account's budget (answer
    /// [`Outcome::TokenEndpoint`]). The request holds secrets: never logged.
    CallTokenEndpoint {
        settings: &'a Settings,
        url: String,
        request: Box<TokenRequest>,
        budget_key: Fingerprint,
        /// The longest the call waits for a request slot (`fair_share::PATIENCE`).
        patience: Duration,
    },
    /// Create the OAuth state Secret (no resourceVersion), or replace it guarded by its
    /// resourceVersion (answer [`Outcome::OAuthStateWritten`]).
    WriteOAuthState { secret: Box<Secret> },
    /// The token endpoint said 429: hold the account back until then (answer
    /// [`Outcome::BackedOff`]).
    BackOff(BackOff),
    /// Remember that the token of the managed Secret `secret` is the one in source version
    /// `version`, so an unrelated edit of the source costs one read, once (answer
    /// [`Outcome::Remembered`]).
    RememberSourceVersion { secret: String, version: String },
    /// Look up the latest answer another credential heard about the same token and request
    /// (answer [`Outcome::Recalled`]); `decide::sharing` judges whether it answers this probe.
    RecallAnswer { key: ProbeKey },
    /// Probe a token within its budget and a request slot (answer [`Outcome::Probed`]).
    Probe {
        probing: Probing,
        settings: &'a Settings,
        token: Token,
        budget_key: Fingerprint,
        /// The longest the probe waits for a request slot (`fair_share::PATIENCE`).
        patience: Duration,
    },
    /// Tell the rest of the operator what a probe's answer means beyond this credential (answer
    /// [`Outcome::AfterProbe`]).
    AfterProbe { probing: Probing, after: Box<AfterProbe> },
    /// Remove labels or annotations tenantcred set at creation and no longer wants (answer
    /// [`Outcome::Pruned`]).
    PruneSecret {
        name: String,
        stale: Vec<(&'static str, String)>,
    },
    /// Create (where the cache saw none) or apply the managed Secret (answer
    /// [`Outcome::SecretWritten`]).
    WriteSecret { secret: Box<Secret>, create: bool },
    /// Read the managed Secret a create found although the cache had none (answer
    /// [`Outcome::ManagedSecretRead`]): whose it is, and what it holds, decide what comes next.
    ReadManagedSecret { name: String },
    /// Stamp the token's fingerprint on the workloads of `credential` to restart, as the rollout
    /// gate allows: `changed` when the Secret's token changed now (answer [`Outcome::Restarted`]).
    RestartWorkloads {
        credential: &'a TenantApiCredential,
        changed: Option<Fingerprint>,
    },
    /// Take the provider host's next catch-up slot for an overdue probe (answer
    /// [`Outcome::CatchUpSlot`]).
    TakeCatchUpSlot { host: String },
    /// Patch the status (answer [`Outcome::StatusHandled`]).
    WriteStatus {
        status: Box<TenantApiCredentialStatus>,
        patch: serde_json::Value,
    },
    /// Not worth a write (`publish`): keep the per-probe fields in memory, or forget them when
    /// the persisted status already says the same (`live: None`) (answer
    /// [`Outcome::StatusHandled`]).
    KeepStatus {
        status: Box<TenantApiCredentialStatus>,
        live: Option<Volatile>,
    },
    /// Done: record the events, and look again after `requeue` (or when something changes).
    Finish {
        notices: Vec<Notice>,
        requeue: Option<Duration>,
    },
}

/// Which token a probe is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probing {
    /// A replacement, validated while the token in use keeps serving.
    Candidate,
    /// The token in the managed Secret, as scheduled.
    InUse,
}

/// What became of a managed-Secret write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    Stored,
    /// The create found a Secret of that name (409 AlreadyExists) that the cache had not seen.
    Exists,
    /// The API server refused it as invalid (422), with its message.
    Refused(String),
}

/// Which read of the OAuth state Secret this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateRead {
    /// The login's state, first.
    First,
    /// The state a credential kept before logins were shared, when the login's is missing.
    Legacy,
    /// Again: another reconcile held the login meanwhile, or a write found it changed.
    Again,
}

/// What holding a login came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Held, nobody else did.
    AtOnce,
    /// Held after another reconcile let it go: it may have refreshed meanwhile.
    AfterWait,
    /// Not within the wait's bound: nothing was sent.
    Busy,
}

/// What became of an OAuth state write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateWritten {
    /// Stored; its new resourceVersion.
    Stored(Option<String>),
    /// Someone wrote it since it was read (409): nothing was stored.
    Conflict,
    /// The API server refused it as invalid (422), with its message.
    Refused(String),
}

/// The result of an action, as the shell hands it back.
pub enum Outcome {
    /// The source Secret as read; `None`: not found.
    SourceRead {
        which: Which,
        secret: Option<Box<Secret>>,
    },
    /// The login Secret as read; `None`: not found.
    LoginRead(Option<Box<Secret>>),
    /// The OAuth state Secret as read; `None`: none yet.
    OAuthStateRead {
        read: StateRead,
        secret: Option<Box<Secret>>,
    },
    LoginHeld(Held),
    TokenEndpoint(Attempt<oauth::Answer>),
    OAuthStateWritten(StateWritten),
    BackedOff,
    Remembered,
    /// The latest answer heard about the token; `None`: none.
    Recalled(Option<Heard>),
    Probed {
        probing: Probing,
        attempt: Attempt<Box<ProbeOutcome>>,
    },
    /// What the budget holds back because of a 429 (when the probe asked for a back-off).
    AfterProbe {
        probing: Probing,
        held_back: Option<RateLimitScope>,
    },
    Pruned,
    SecretWritten(Written),
    /// The managed Secret as read after a create found it; `None`: gone again.
    ManagedSecretRead(Option<Box<Secret>>),
    Restarted {
        notices: Vec<Notice>,
        wake: Option<Timestamp>,
    },
    CatchUpSlot(u64),
    StatusHandled,
}

impl std::fmt::Debug for Action<'_> {
    /// Names the action and what is safe to log: never a token or a Secret's data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ReadSource { which, name } => write!(f, "ReadSource({which:?}, {name})"),
            Self::ReadLogin { name } => write!(f, "ReadLogin({name})"),
            Self::ReadOAuthState { name, read } => write!(f, "ReadOAuthState({name}, {read:?})"),
            Self::HoldLogin { key, .. } => write!(f, "HoldLogin({key})"),
            Self::CallTokenEndpoint { url, request, .. } => {
                write!(f, "CallTokenEndpoint({url}, {})", request.grant.as_str())
            }
            Self::WriteOAuthState { secret } => write!(
                f,
                "WriteOAuthState({}, {})",
                secret.metadata.name.as_deref().unwrap_or_default(),
                if secret.metadata.resource_version.is_some() {
                    "replace"
                } else {
                    "create"
                }
            ),
            Self::BackOff(b) => write!(f, "BackOff({}, until {})", b.host, b.until),
            Self::RememberSourceVersion { secret, version } => {
                write!(f, "RememberSourceVersion({secret}: {version})")
            }
            Self::RecallAnswer { .. } => write!(f, "RecallAnswer"),
            Self::Probe { probing, token, .. } => write!(f, "Probe({probing:?}, {})", token.fingerprint()),
            Self::AfterProbe { probing, after } => write!(
                f,
                "AfterProbe({probing:?}, share: {}, counted: {}, back off: {})",
                after.share.is_some(),
                after.count.is_some(),
                after.back_off.is_some()
            ),
            Self::PruneSecret { name, stale } => write!(f, "PruneSecret({name}, {stale:?})"),
            Self::WriteSecret { secret, create } => write!(
                f,
                "WriteSecret({}, {})",
                secret.metadata.name.as_deref().unwrap_or_default(),
                if *create { "create" } else { "apply" }
            ),
            Self::ReadManagedSecret { name } => write!(f, "ReadManagedSecret({name})"),
            Self::RestartWorkloads { changed, .. } => write!(f, "RestartWorkloads({changed:?})"),
            Self::TakeCatchUpSlot { host } => write!(f, "TakeCatchUpSlot({host})"),
            Self::WriteStatus { .. } => write!(f, "WriteStatus"),
            Self::KeepStatus { live, .. } => write!(f, "KeepStatus(live: {})", live.is_some()),
            Self::Finish { notices, requeue } => write!(f, "Finish({} events, requeue: {requeue:?})", notices.len()),
        }
    }
}
