//! The two Secrets of an OAuth credential: the login a person supplies (`spec.oauth.secretRef`),
//! and the state tenantcred keeps between refreshes (the refresh token, never in status or events).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::crd::TenantApiCredential;
use crate::decide::secret::{self, CREDENTIAL_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::decide::token::{Fingerprint, Token};

pub const KEY_USERNAME: &str = "username";
pub const KEY_PASSWORD: &str = "password";
pub const KEY_OTP: &str = "otp";
pub const KEY_REFRESH_TOKEN: &str = "refresh_token";

const STATE_REFRESH_TOKEN: &str = "refresh_token";
const STATE_EXPIRES_AT: &str = "access_token_expires_at";
const STATE_REFRESH_AT: &str = "refresh_at";
const STATE_OTP_USED: &str = "otp_used";

/// The login Secret named by `spec.oauth.secretRef`. Every secret value is a `Token`, so it
/// redacts itself.
#[derive(Clone, Debug, Default)]
pub struct Login {
    pub username: Option<Token>,
    pub password: Option<Token>,
    pub otp: Option<Token>,
    pub refresh_token: Option<Token>,
}

impl Login {
    pub fn from_secret(s: &Secret) -> Self {
        let get = |k: &str| {
            secret::text(s, k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(Token::new)
        };
        Self {
            username: get(KEY_USERNAME),
            password: get(KEY_PASSWORD),
            otp: get(KEY_OTP),
            refresh_token: get(KEY_REFRESH_TOKEN),
        }
    }
}

/// What tenantcred remembers between refreshes, in a Secret it owns (never in status or events).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub refresh_token: Option<Token>,
    pub expires_at: Option<Timestamp>,
    pub refresh_at: Option<Timestamp>,
    /// The one-time code already spent, so it is never sent twice.
    pub otp_used: Option<Fingerprint>,
}

impl State {
    pub fn from_secret(s: &Secret) -> Self {
        let get = |k: &str| secret::text(s, k);
        let time = |k: &str| get(k).and_then(|v| v.parse::<Timestamp>().ok());
        Self {
            refresh_token: get(STATE_REFRESH_TOKEN).filter(|v| !v.is_empty()).map(Token::new),
            expires_at: time(STATE_EXPIRES_AT),
            refresh_at: time(STATE_REFRESH_AT),
            otp_used: get(STATE_OTP_USED).and_then(|v| Fingerprint::parse(&v)),
        }
    }

    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        let mut d = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            d.insert(k.to_owned(), ByteString(v.into_bytes()));
        };
        if let Some(t) = &self.refresh_token {
            put(STATE_REFRESH_TOKEN, t.expose().to_owned());
        }
        if let Some(t) = self.expires_at {
            put(STATE_EXPIRES_AT, t.to_string());
        }
        if let Some(t) = self.refresh_at {
            put(STATE_REFRESH_AT, t.to_string());
        }
        if let Some(f) = &self.otp_used {
            put(STATE_OTP_USED, f.to_string());
        }
        d
    }
}

/// The Secret where tenantcred keeps the refresh token: owned by the credential, never shown.
pub fn state_secret_name(credential: &str) -> String {
    format!("{credential}-tenantcred-oauth")
}

/// The state Secret as tenantcred applies it, owned by the credential (`None`: the credential
/// has no uid yet to own it by).
pub fn state_secret(owner: &TenantApiCredential, name: &str, state: &State) -> Option<Secret> {
    let owner_ref = owner.controller_owner_ref(&())?;
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
                    (
                        CREDENTIAL_LABEL.to_owned(),
                        owner.metadata.name.clone().unwrap_or_default(),
                    ),
                    ("tenantcred.dev/purpose".to_owned(), "oauth-state".to_owned()),
                ]
                .into(),
            ),
            owner_references: Some(vec![owner_ref]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(state.to_data()),
        ..Secret::default()
    })
}
