//! The login Secret a person supplies (`spec.oauth.secretRef`): what the grants need, by key.
//! Every value is a [`Token`], so it redacts itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use crate::decide::secret;
use crate::decide::token::{Fingerprint, MAX_TOKEN_BYTES, Token};

pub const KEY_USERNAME: &str = "username";
pub const KEY_PASSWORD: &str = "password";
pub const KEY_OTP: &str = "otp";
pub const KEY_REFRESH_TOKEN: &str = "refresh_token";
pub const KEY_CLIENT_ID: &str = "client_id";
pub const KEY_CLIENT_SECRET: &str = "client_secret";
pub const KEY_PRIVATE_KEY: &str = "private_key";
pub const KEY_PRIVATE_KEY_ID: &str = "private_key_id";

/// The most keys of a login Secret read; a login needs a handful.
pub const MAX_KEYS: usize = 32;

#[derive(Clone, Debug, Default)]
pub struct Login {
    values: BTreeMap<String, Token>,
    /// Keys present but not usable (not UTF-8, or over the bound): named in messages, never read.
    unreadable: Vec<String>,
    /// The Secret's uid: the state Secret is owned by it (deleted with the login).
    pub uid: Option<String>,
    /// How many keys the Secret has, when over [`MAX_KEYS`] (those past it by name are not read).
    too_many: Option<usize>,
}

impl Login {
    pub fn from_secret(s: &Secret) -> Self {
        let mut login = Self {
            uid: s.metadata.uid.clone(),
            ..Self::default()
        };
        let count = s.data.as_ref().map_or(0, BTreeMap::len);
        login.too_many = (count > MAX_KEYS).then_some(count);
        let keys = s.data.iter().flat_map(|d| d.keys()).take(MAX_KEYS);
        for key in keys {
            match secret::text(s, key) {
                Some(v) if v.len() <= MAX_TOKEN_BYTES => {
                    let v = v.trim();
                    if !v.is_empty() {
                        login.values.insert(key.clone(), Token::new(v));
                    }
                }
                _ => login.unreadable.push(key.clone()),
            }
        }
        login
    }

    /// A login from key-value pairs (the CLI's `check`, tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            values: pairs
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_owned(), Token::new(v)))
                .collect(),
            ..Self::default()
        }
    }

    pub fn get(&self, key: &str) -> Option<&Token> {
        self.values.get(key)
    }

    /// Whether `key` is present but could not be read (over the size bound, not text).
    pub fn unreadable(&self, key: &str) -> bool {
        self.unreadable.iter().any(|k| k == key)
    }

    /// How many keys the Secret has, when more than are read.
    pub fn too_many(&self) -> Option<usize> {
        self.too_many
    }

    pub fn refresh_token(&self) -> Option<&Token> {
        self.get(KEY_REFRESH_TOKEN)
    }

    /// Changes whenever a person changes any value: a login refused before is tried again only
    /// once this differs. Kept in the operator's own state Secret only.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut bytes = Vec::new();
        for (k, v) in &self.values {
            bytes.extend_from_slice(k.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(v.expose().as_bytes());
            bytes.push(0);
        }
        Fingerprint::of(&bytes)
    }
}
