//! Which grant to send and what goes in it: the definition's grants in order, the first the
//! login and the state can make; the form, the client's authentication, the assertions.

use jiff::Timestamp;

use super::assertion::{self, Claims, KeyProblem};
use super::definition::Definition;
use super::login::{
    KEY_CLIENT_ID, KEY_CLIENT_SECRET, KEY_PASSWORD, KEY_PRIVATE_KEY, KEY_PRIVATE_KEY_ID, KEY_USERNAME, Login,
};
use super::state::State;
use crate::crd::oauth::{ClientAuthentication, GrantType};
use crate::decide::token::{Fingerprint, Token};

/// One token-endpoint request: every value a [`Token`], so the request redacts itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub grant: GrantType,
    /// The form fields, in the order sent.
    pub form: Vec<(String, Token)>,
    /// HTTP Basic's user and password (client_secret_basic), each form-encoded already.
    pub basic: Option<(Token, Token)>,
    /// The refresh token sent, when the grant is refresh_token.
    pub refresh_token: Option<Token>,
    /// Single-use values sent (one-time codes): remembered so none is sent twice.
    pub single_use: Vec<Fingerprint>,
}

impl TokenRequest {
    /// A request of these form fields alone (no client authentication, nothing to remember).
    pub fn of_form<'a>(grant: GrantType, fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            grant,
            form: fields.into_iter().map(|(k, v)| (k.to_owned(), Token::new(v))).collect(),
            basic: None,
            refresh_token: None,
            single_use: Vec::new(),
        }
    }
}

/// Why a grant cannot be made from the login Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// The grant or the client authentication needs this key of the login Secret.
    Missing { grant: GrantType, key: String },
    /// The key is present but over the size bound or not text.
    Unreadable { key: String },
    /// The key is not among those read of a Secret with too many (`keys`) to read them all.
    TooManyKeys { key: String, keys: usize },
    /// The only refresh token there is was rotated away already: sending it again could make
    /// the server revoke the grant.
    Reused,
    /// The private key cannot sign.
    Key(KeyProblem),
}

/// The refresh token to send: a new one a person put in the login Secret, else the state's,
/// else the login's. `None`: none, or only one already rotated away (`reused`).
pub fn refresh_token<'a>(login: &'a Login, state: &'a State) -> (Option<&'a Token>, bool) {
    let from_login = login.refresh_token();
    let new_in_login = from_login.filter(|t| state.seed.as_ref() != Some(&t.fingerprint()));
    let pick = match new_in_login {
        Some(t) => Some(t),
        None => state.refresh_token.as_ref().or(from_login),
    };
    match pick {
        Some(t) if state.retired.contains(&t.fingerprint()) => (None, true),
        other => (other, false),
    }
}

/// The first grant of the definition's order not in `refused` that the login can make, built;
/// else why the first of them cannot be made.
pub fn next(
    def: &Definition,
    login: &Login,
    state: &State,
    refused: &[GrantType],
    token_url: &str,
    now: Timestamp,
) -> Result<TokenRequest, Unusable> {
    let mut first_problem = None;
    for grant in def.grants.iter().copied().filter(|g| !refused.contains(g)) {
        match build(def, grant, login, state, token_url, now) {
            Ok(r) => return Ok(r),
            Err(e) => {
                first_problem.get_or_insert(e);
            }
        }
    }
    Err(first_problem.unwrap_or(Unusable::Missing {
        grant: def.grants.first().copied().unwrap_or(GrantType::RefreshToken),
        key: "refresh_token".into(),
    }))
}

fn need<'a>(login: &'a Login, grant: GrantType, key: &str) -> Result<&'a Token, Unusable> {
    if login.unreadable(key) {
        return Err(Unusable::Unreadable { key: key.into() });
    }
    login.get(key).ok_or_else(|| absent(login, grant, key))
}

/// Why `key` is not in the login: missing, or past the keys read of too many.
fn absent(login: &Login, grant: GrantType, key: &str) -> Unusable {
    match login.too_many() {
        Some(keys) => Unusable::TooManyKeys { key: key.into(), keys },
        None => Unusable::Missing { grant, key: key.into() },
    }
}

fn build(
    def: &Definition,
    grant: GrantType,
    login: &Login,
    state: &State,
    token_url: &str,
    now: Timestamp,
) -> Result<TokenRequest, Unusable> {
    let text = |v: &str| Token::new(v);
    let mut form = vec![("grant_type".to_owned(), text(grant.as_str()))];
    let mut request = TokenRequest {
        grant,
        form: Vec::new(),
        basic: None,
        refresh_token: None,
        single_use: Vec::new(),
    };
    let scope = (!def.scopes.is_empty()).then(|| def.scopes.join(" "));
    let mut scope_in_form = scope.is_some();
    match grant {
        GrantType::RefreshToken => {
            let (token, reused) = refresh_token(login, state);
            let token = match token {
                Some(t) => t,
                None if reused => return Err(Unusable::Reused),
                None => return Err(absent(login, grant, super::login::KEY_REFRESH_TOKEN)),
            };
            form.push(("refresh_token".into(), token.clone()));
            request.refresh_token = Some(token.clone());
        }
        GrantType::Password => {
            form.push(("username".into(), need(login, grant, KEY_USERNAME)?.clone()));
            form.push(("password".into(), need(login, grant, KEY_PASSWORD)?.clone()));
            for f in &def.password_fields {
                let Some(v) = login.get(&f.key) else { continue };
                if f.single_use {
                    if state.spent.contains(&v.fingerprint()) {
                        continue;
                    }
                    request.single_use.push(v.fingerprint());
                }
                form.push((f.name.clone(), v.clone()));
            }
        }
        GrantType::ClientCredentials => {
            if def.client_auth == ClientAuthentication::None {
                need(login, grant, KEY_CLIENT_ID)?;
            }
        }
        GrantType::JwtBearer => {
            let a = def.assertion.as_ref().ok_or(Unusable::Missing {
                grant,
                key: KEY_PRIVATE_KEY.into(),
            })?;
            let key = need(login, grant, KEY_PRIVATE_KEY)?;
            let iss = need(login, grant, &a.issuer_key)?;
            let aud = a.audience.clone().unwrap_or_else(|| token_url.to_owned());
            let mut claims = Claims::new(iss.expose().to_owned(), aud, now, a.lifetime);
            if let Some(k) = &a.subject_key {
                claims.sub = Some(need(login, grant, k)?.expose().to_owned());
            }
            if a.scope_in_claims {
                claims.scope = scope.clone();
                scope_in_form = false;
            }
            let signed =
                assertion::sign(a.algorithm, key, login.get(KEY_PRIVATE_KEY_ID), &claims).map_err(Unusable::Key)?;
            form.push(("assertion".into(), signed));
        }
    }
    if let Some(s) = scope.filter(|_| scope_in_form) {
        form.push(("scope".into(), text(&s)));
    }
    for (k, v) in [("audience", &def.audience), ("resource", &def.resource)] {
        if let Some(v) = v {
            form.push((k.into(), text(v)));
        }
    }
    for (k, v) in &def.parameters {
        form.push((k.clone(), text(v)));
    }
    client_auth(def, grant, login, token_url, now, &mut form, &mut request)?;
    request.form = form;
    Ok(request)
}

/// The client's authentication (RFC 6749 2.3.1; OpenID Connect Core 9 for private_key_jwt).
fn client_auth(
    def: &Definition,
    grant: GrantType,
    login: &Login,
    token_url: &str,
    now: Timestamp,
    form: &mut Vec<(String, Token)>,
    request: &mut TokenRequest,
) -> Result<(), Unusable> {
    match def.client_auth {
        ClientAuthentication::None => {
            if let Some(id) = login.get(KEY_CLIENT_ID) {
                form.push(("client_id".into(), id.clone()));
            }
        }
        ClientAuthentication::ClientSecretPost => {
            form.push(("client_id".into(), need(login, grant, KEY_CLIENT_ID)?.clone()));
            form.push(("client_secret".into(), need(login, grant, KEY_CLIENT_SECRET)?.clone()));
        }
        ClientAuthentication::ClientSecretBasic => {
            let id = need(login, grant, KEY_CLIENT_ID)?;
            let secret = need(login, grant, KEY_CLIENT_SECRET)?;
            // Each part form-encoded first, as RFC 6749 2.3.1 says.
            let enc = |t: &Token| url::form_urlencoded::byte_serialize(t.expose().as_bytes()).collect::<String>();
            request.basic = Some((Token::new(enc(id)), Token::new(enc(secret))));
        }
        ClientAuthentication::PrivateKeyJwt => {
            let id = need(login, grant, KEY_CLIENT_ID)?;
            let key = need(login, grant, KEY_PRIVATE_KEY)?;
            let lifetime = def.assertion.as_ref().map_or(std::time::Duration::from_secs(300), |a| {
                a.lifetime.min(std::time::Duration::from_secs(300))
            });
            let mut claims = Claims::new(id.expose().to_owned(), token_url.to_owned(), now, lifetime);
            claims.sub = Some(id.expose().to_owned());
            let algorithm = def
                .assertion
                .as_ref()
                .map_or(crate::crd::oauth::AssertionAlgorithm::RS256, |a| a.algorithm);
            let signed =
                assertion::sign(algorithm, key, login.get(KEY_PRIVATE_KEY_ID), &claims).map_err(Unusable::Key)?;
            form.push(("client_id".into(), id.clone()));
            form.push((
                "client_assertion_type".into(),
                Token::new("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ));
            form.push(("client_assertion".into(), signed));
        }
    }
    Ok(())
}
