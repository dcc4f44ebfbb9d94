//! What tenantcred keeps between token-endpoint calls, in a Secret it owns: the refresh token
//! (never in status or events), the access token of the moment (so every credential naming the
//! login uses the one refresh), and the marks that make rotation safe across a crash.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::decide::conditions::Reason;
use crate::decide::secret::{self, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::decide::token::{Fingerprint, Token};

const REFRESH_TOKEN: &str = "refresh_token";
const REFRESH_EXPIRES_AT: &str = "refresh_token_expires_at";
const ACCESS_TOKEN: &str = "access_token";
const EXPIRES_AT: &str = "access_token_expires_at";
const REFRESH_AT: &str = "refresh_at";
const SPENT: &str = "spent";
/// What tenantcred 0.x called the one spent code.
const LEGACY_OTP_USED: &str = "otp_used";
const SEED: &str = "login_refresh_token";
const IN_FLIGHT: &str = "in_flight";
const RETIRED: &str = "retired";
const REFUSED: &str = "refused";

/// The label value marking a state Secret.
pub const PURPOSE: &str = "oauth-state";
pub const PURPOSE_LABEL: &str = "tenantcred.dev/purpose";
pub const LOGIN_ANNOTATION: &str = "tenantcred.dev/login";
pub const PROVIDER_ANNOTATION: &str = "tenantcred.dev/provider";

/// How many spent codes and retired refresh tokens are remembered (the newest).
pub const REMEMBERED: usize = 8;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub refresh_token: Option<Token>,
    /// When the refresh token lapses, when the server said so or the definition's idle lifetime.
    pub refresh_expires_at: Option<Timestamp>,
    pub access_token: Option<Token>,
    pub expires_at: Option<Timestamp>,
    pub refresh_at: Option<Timestamp>,
    /// Single-use values already sent (one-time codes), so none is sent twice.
    pub spent: Vec<Fingerprint>,
    /// The login Secret's refresh token this state started from: a different one there is a
    /// person's new grant, and replaces the state's.
    pub seed: Option<Fingerprint>,
    /// A refresh token sent whose answer was not stored yet: set before the call, cleared by the
    /// write of its answer. Found set, the answer may be lost with the replica that asked.
    pub in_flight: Option<Fingerprint>,
    /// Refresh tokens rotated away: never sent again (a reused refresh token can make a server
    /// revoke the whole grant).
    pub retired: Vec<Fingerprint>,
    /// The login (its fingerprint) a grant was refused with, and the reason: no grant is tried
    /// again until a person changes the login Secret.
    pub refused: Option<(Fingerprint, Reason)>,
    /// The Secret's resourceVersion as read: a write is a replace guarded by it.
    pub resource_version: Option<String>,
}

impl State {
    pub fn from_secret(s: &Secret) -> Self {
        let get = |k: &str| secret::text(s, k).filter(|v| !v.is_empty());
        let time = |k: &str| get(k).and_then(|v| v.parse::<Timestamp>().ok());
        let fps = |k: &str| {
            get(k)
                .map(|v| v.split(' ').filter_map(Fingerprint::parse).take(REMEMBERED).collect())
                .unwrap_or_default()
        };
        let mut spent: Vec<Fingerprint> = fps(SPENT);
        spent.extend(get(LEGACY_OTP_USED).and_then(|v| Fingerprint::parse(&v)));
        Self {
            refresh_token: get(REFRESH_TOKEN).map(Token::new),
            refresh_expires_at: time(REFRESH_EXPIRES_AT),
            access_token: get(ACCESS_TOKEN).map(Token::new),
            expires_at: time(EXPIRES_AT),
            refresh_at: time(REFRESH_AT),
            spent,
            seed: get(SEED).and_then(|v| Fingerprint::parse(&v)),
            in_flight: get(IN_FLIGHT).and_then(|v| Fingerprint::parse(&v)),
            retired: fps(RETIRED),
            refused: get(REFUSED).and_then(|v| {
                let (fp, reason) = v.split_once(' ')?;
                Some((Fingerprint::parse(fp)?, Reason::parse(reason)?))
            }),
            resource_version: s.metadata.resource_version.clone(),
        }
    }

    /// Every key, empty when unset: the state is written by a server-side apply after a create,
    /// and a key an apply leaves out is removed only when an earlier apply set it, so a mark
    /// the create wrote (`in_flight`, `refused`) would outlive the answer that clears it.
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        let list = |l: &[Fingerprint]| l.iter().map(Fingerprint::to_string).collect::<Vec<_>>().join(" ");
        let text = |t: &Option<Token>| t.as_ref().map(|t| t.expose().to_owned());
        let time = |t: Option<Timestamp>| t.map(|t| t.to_string());
        let fp = |f: &Option<Fingerprint>| f.as_ref().map(Fingerprint::to_string);
        [
            (REFRESH_TOKEN, text(&self.refresh_token)),
            (REFRESH_EXPIRES_AT, time(self.refresh_expires_at)),
            (ACCESS_TOKEN, text(&self.access_token)),
            (EXPIRES_AT, time(self.expires_at)),
            (REFRESH_AT, time(self.refresh_at)),
            (SPENT, Some(list(&self.spent))),
            (SEED, fp(&self.seed)),
            (IN_FLIGHT, fp(&self.in_flight)),
            (RETIRED, Some(list(&self.retired))),
            (
                REFUSED,
                self.refused
                    .as_ref()
                    .map(|(f, reason)| format!("{f} {}", reason.as_str())),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.unwrap_or_default().into_bytes())))
        .collect()
    }

    /// Remembers `f` in `list`, the newest last, at most [`REMEMBERED`].
    pub fn remember(list: &mut Vec<Fingerprint>, f: Fingerprint) {
        if !list.contains(&f) {
            list.push(f);
        }
        let over = list.len().saturating_sub(REMEMBERED);
        list.drain(..over);
    }
}

/// The state Secret of a login: one per login Secret and provider in a namespace, so every
/// credential naming them shares one refresh token and one refresh.
pub fn state_secret_name(provider: &str, login: &str) -> String {
    let digest = Fingerprint::of(format!("\0oauth-state\0{provider}\0{login}").as_bytes());
    let hex = digest.as_str().trim_start_matches("sha256:");
    format!("tenantcred-oauth-{hex}")
}

/// Where tenantcred before shared logins kept a credential's state (read once, to carry a
/// rotated refresh token over).
pub fn legacy_state_secret_name(credential: &str) -> String {
    format!("{credential}-tenantcred-oauth")
}

/// The state Secret as tenantcred writes it, owned by the login Secret (deleted with it); `None`
/// when the login has no uid to be owned by.
pub fn state_secret(
    name: &str,
    login_name: &str,
    login_uid: Option<&str>,
    provider: &str,
    state: &State,
) -> Option<Secret> {
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Secret".into(),
        name: login_name.into(),
        uid: login_uid?.into(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    };
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            resource_version: state.resource_version.clone(),
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
                    (PURPOSE_LABEL.to_owned(), PURPOSE.to_owned()),
                ]
                .into(),
            ),
            annotations: Some(
                [
                    (LOGIN_ANNOTATION.to_owned(), login_name.to_owned()),
                    (PROVIDER_ANNOTATION.to_owned(), provider.to_owned()),
                ]
                .into(),
            ),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(state.to_data()),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_written_so_an_apply_replaces_what_a_create_wrote() {
        let marked = State {
            refresh_token: Some(Token::new("r")),
            in_flight: Some(Token::new("r").fingerprint()),
            ..State::default()
        };
        let cleared = State {
            in_flight: None,
            ..marked.clone()
        };
        let keys = |s: &State| s.to_data().into_keys().collect::<Vec<_>>();
        assert_eq!(keys(&cleared), keys(&marked), "the cleared mark is written, empty");
        let read = |s: &State| {
            State::from_secret(&Secret {
                data: Some(s.to_data()),
                ..Secret::default()
            })
        };
        assert_eq!(read(&cleared), cleared, "an empty key reads as unset");
        assert_eq!(read(&marked), marked);
    }
}
