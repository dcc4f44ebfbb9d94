//! The server's state and what a token call does to it: clients, refresh-token families, access
//! tokens, queued faults and the call log. No HTTP here (`wire` parses and renders).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use super::jwt::{self, Expect};
use super::{AssertionFault, ClientAuth, ErrorCode, Fault, Flavor, GrantType, Outcome, TokenCall, Why};

pub(super) const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

struct Client {
    secret: Option<String>,
    key_pem: Option<String>,
    revoked: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RefreshState {
    Live,
    /// Used once and replaced: presenting it again is reuse.
    Rotated,
    Revoked,
}

struct Refresh {
    client: String,
    family: u64,
    state: RefreshState,
    last_used: SystemTime,
}

struct Access {
    client: Option<String>,
    family: Option<u64>,
    expires_at: SystemTime,
    revoked: bool,
}

/// A token request as `wire` parsed it.
pub(super) struct TokenRequest {
    /// The form, or `None` when the body was not one (wrong type, a repeated parameter).
    pub form: Option<HashMap<String, String>>,
    /// HTTP Basic credentials: `Some(None)` when the header was there but unreadable.
    pub basic: Option<Option<(String, String)>>,
}

impl TokenRequest {
    fn param(&self, name: &str) -> Option<&str> {
        self.form.as_ref()?.get(name).map(String::as_str)
    }
}

/// A token that was issued, before the flavor renders it.
pub(super) struct Issued {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// `None`: the answer says nothing of the lifetime.
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
    /// `refresh_token_expires_in`, when the server is told to state it.
    pub refresh_expires_in: Option<u64>,
}

/// What to answer a token call.
pub(super) enum Reply {
    Issued(Issued),
    Refused(ErrorCode, Why),
    Html,
    Status(u16),
    RateLimited(u64),
}

type Refusal = (ErrorCode, Why);

pub(super) struct Inner {
    pub flavor: Flavor,
    pub audience: String,
    pub accepted: Vec<ClientAuth>,
    pub scopes: Option<Vec<String>>,
    pub lifetime: Duration,
    /// The refresh-token lifetime answers state (`refresh_token_expires_in`); not enforced.
    pub refresh_lifetime: Option<Duration>,
    pub revoke_family_on_reuse: bool,
    pub faults: VecDeque<Fault>,
    pub hanging: usize,
    pub calls: Vec<TokenCall>,
    pub api_calls: Vec<String>,
    clients: HashMap<String, Client>,
    refresh: HashMap<String, Refresh>,
    access: HashMap<String, Access>,
    families: u64,
    issued: u64,
}

impl Inner {
    pub fn new(flavor: Flavor, base_url: &str) -> Self {
        Self {
            flavor,
            audience: format!("{base_url}{}", flavor.token_path()),
            accepted: vec![flavor.default_client_auth()],
            scopes: None,
            lifetime: flavor.default_access_lifetime(),
            refresh_lifetime: None,
            revoke_family_on_reuse: false,
            faults: VecDeque::new(),
            hanging: 0,
            calls: Vec::new(),
            api_calls: Vec::new(),
            clients: HashMap::new(),
            refresh: HashMap::new(),
            access: HashMap::new(),
            families: 0,
            issued: 0,
        }
    }

    pub fn register(&mut self, id: &str, secret: Option<String>, key_pem: Option<String>) {
        let client = Client {
            secret,
            key_pem,
            revoked: false,
        };
        self.clients.insert(id.to_owned(), client);
    }

    pub fn revoke_client(&mut self, id: &str) {
        if let Some(c) = self.clients.get_mut(id) {
            c.revoked = true;
        }
        for a in self.access.values_mut() {
            if a.client.as_deref() == Some(id) {
                a.revoked = true;
            }
        }
    }

    pub fn seed_refresh_token(&mut self, client_id: &str) -> String {
        self.families += 1;
        self.mint_refresh(client_id, self.families)
    }

    fn mint_refresh(&mut self, client: &str, family: u64) -> String {
        let token = match self.flavor {
            Flavor::Slack => format!("xoxe-1-{}", rand_alnum(48)),
            Flavor::HubSpot => format!(
                "{}-{}-{}-{}-{}",
                rand_hex(8),
                rand_hex(4),
                rand_hex(4),
                rand_hex(4),
                rand_hex(12)
            ),
            _ => rand_alnum(43),
        };
        let refresh = Refresh {
            client: client.to_owned(),
            family,
            state: RefreshState::Live,
            last_used: SystemTime::now(),
        };
        self.refresh.insert(token.clone(), refresh);
        token
    }

    pub fn expire_access_tokens(&mut self) {
        let past = SystemTime::now() - Duration::from_secs(1);
        for a in self.access.values_mut() {
            a.expires_at = a.expires_at.min(past);
        }
    }

    pub fn revoke_access_tokens(&mut self) {
        self.access.values_mut().for_each(|a| a.revoked = true);
    }

    pub fn revoke_refresh_tokens(&mut self) {
        for r in self.refresh.values_mut() {
            r.state = RefreshState::Revoked;
        }
    }

    pub fn age_refresh_tokens(&mut self, by: Duration) {
        for r in self.refresh.values_mut() {
            r.last_used -= by;
        }
    }

    pub fn live_refresh_tokens(&self) -> Vec<String> {
        let now = SystemTime::now();
        let mut live: Vec<String> = self
            .refresh
            .iter()
            .filter(|(_, r)| r.state == RefreshState::Live && !self.lapsed(r, now))
            .map(|(t, _)| t.clone())
            .collect();
        live.sort();
        live
    }

    pub fn current_access_tokens(&self) -> Vec<String> {
        let mut current: Vec<String> = self.access.keys().filter(|t| self.is_current(t)).cloned().collect();
        current.sort();
        current
    }

    pub fn is_current(&self, token: &str) -> bool {
        self.access
            .get(token)
            .is_some_and(|a| !a.revoked && a.expires_at > SystemTime::now())
    }

    fn lapsed(&self, r: &Refresh, now: SystemTime) -> bool {
        let idle = now.duration_since(r.last_used).unwrap_or_default();
        self.flavor.refresh_idle_limit().is_some_and(|limit| idle > limit)
    }

    /// Serves one token call; the second value says the answer must hang.
    pub fn token(&mut self, req: &TokenRequest) -> (Reply, bool) {
        let fault = self.faults.pop_front();
        let (auth, _) = methods_seen(req);
        let mut call = TokenCall {
            grant: GrantType::from_wire(req.param("grant_type")),
            auth,
            client_id: client_id_sent(req),
            refresh_token: req.param("refresh_token").map(str::to_owned),
            outcome: Outcome::Failed,
            fault: fault.clone(),
            at: SystemTime::now(),
        };
        let short = match &fault {
            Some(Fault::Html) => Some(Reply::Html),
            Some(Fault::Status(s)) => Some(Reply::Status(*s)),
            Some(Fault::Hang) => Some(Reply::Status(503)),
            Some(Fault::RateLimited { retry_after }) => Some(Reply::RateLimited(*retry_after)),
            Some(Fault::Refuse(code)) => Some(Reply::Refused(*code, Why::Injected)),
            _ => None,
        };
        let reply = match short {
            Some(reply) => reply,
            None => match self.grant(req) {
                Ok(mut issued) => {
                    match &fault {
                        Some(Fault::NoExpiresIn) => issued.expires_in = None,
                        Some(Fault::AccessToken(t)) => issued.access_token = t.clone(),
                        _ => {}
                    }
                    Reply::Issued(issued)
                }
                Err((code, why)) => Reply::Refused(code, why),
            },
        };
        call.outcome = match &reply {
            Reply::Issued(_) => Outcome::Issued,
            Reply::Refused(code, why) => Outcome::Refused { code: *code, why: *why },
            _ => Outcome::Failed,
        };
        self.calls.push(call);
        let hang = matches!(fault, Some(Fault::RotateThenHang | Fault::Hang));
        if hang {
            self.hanging += 1;
        }
        (reply, hang)
    }

    fn grant(&mut self, req: &TokenRequest) -> Result<Issued, Refusal> {
        if req.form.is_none() {
            return Err((ErrorCode::InvalidRequest, Why::Malformed));
        }
        let grant = GrantType::from_wire(req.param("grant_type"));
        if grant != self.flavor.grant() {
            return Err((ErrorCode::UnsupportedGrantType, Why::GrantNotServed));
        }
        let client = self.authenticate(req)?;
        match grant {
            GrantType::RefreshToken => self.refresh_grant(req, client),
            GrantType::ClientCredentials => {
                let client = client.ok_or((ErrorCode::InvalidClient, Why::UnknownClient))?;
                self.check_scope(req.param("scope"), true)?;
                Ok(self.issue(Some(client), None, None))
            }
            _ => self.jwt_bearer_grant(req),
        }
    }

    /// The client the request authenticates as (`None`: no client named, with `none` accepted).
    fn authenticate(&self, req: &TokenRequest) -> Result<Option<String>, Refusal> {
        let (seen, several) = methods_seen(req);
        if several {
            return Err((ErrorCode::InvalidClient, Why::SeveralMethods));
        }
        if !self.accepted.contains(&seen) {
            return Err((ErrorCode::InvalidClient, Why::MethodNotAccepted));
        }
        let (id, secret) = match seen {
            ClientAuth::SecretBasic => match &req.basic {
                Some(Some((id, secret))) => (id.clone(), Some(secret.as_str())),
                _ => return Err((ErrorCode::InvalidClient, Why::Malformed)),
            },
            ClientAuth::SecretPost => match req.param("client_id") {
                Some(id) => (id.to_owned(), req.param("client_secret")),
                None => return Err((ErrorCode::InvalidClient, Why::Malformed)),
            },
            ClientAuth::PrivateKeyJwt => return self.client_assertion(req).map(Some),
            ClientAuth::None => match req.param("client_id") {
                Some(id) => (id.to_owned(), None),
                None => return Ok(None),
            },
        };
        let client = self.client(&id).map_err(|why| (ErrorCode::InvalidClient, why))?;
        if let Some(secret) = secret
            && client.secret.as_deref() != Some(secret)
        {
            return Err((ErrorCode::InvalidClient, Why::BadSecret));
        }
        Ok(Some(id))
    }

    fn client(&self, id: &str) -> Result<&Client, Why> {
        match self.clients.get(id) {
            None => Err(Why::UnknownClient),
            Some(c) if c.revoked => Err(Why::ClientRevoked),
            Some(c) => Ok(c),
        }
    }

    fn client_assertion(&self, req: &TokenRequest) -> Result<String, Refusal> {
        let bad = |f| (ErrorCode::InvalidClient, Why::BadAssertion(f));
        if req.param("client_assertion_type") != Some(CLIENT_ASSERTION_TYPE) {
            return Err((ErrorCode::InvalidClient, Why::Malformed));
        }
        let assertion = req.param("client_assertion").unwrap_or_default();
        let id = jwt::issuer(assertion).map_err(bad)?;
        let client = self.client(&id).map_err(|why| (ErrorCode::InvalidClient, why))?;
        let pem = client.key_pem.as_deref().ok_or(bad(AssertionFault::UnknownIssuer))?;
        let expect = Expect {
            iss: &id,
            sub: Some(&id),
            aud: &self.audience,
            rs256_only: false,
        };
        jwt::verify(assertion, pem, &expect).map_err(bad)?;
        if req.param("client_id").is_some_and(|sent| sent != id) {
            return Err(bad(AssertionFault::Subject));
        }
        Ok(id)
    }

    fn refresh_grant(&mut self, req: &TokenRequest, client: Option<String>) -> Result<Issued, Refusal> {
        let invalid = |why| (ErrorCode::InvalidGrant, why);
        let presented = req
            .param("refresh_token")
            .ok_or((ErrorCode::InvalidRequest, Why::Malformed))?;
        let now = SystemTime::now();
        let r = self.refresh.get(presented).ok_or(invalid(Why::UnknownRefreshToken))?;
        let (owner, family, state) = (r.client.clone(), r.family, r.state);
        if client.as_ref().is_some_and(|c| *c != owner) {
            return Err(invalid(Why::OtherClientsRefreshToken));
        }
        self.client(&owner).map_err(|why| (ErrorCode::InvalidClient, why))?;
        match state {
            RefreshState::Rotated => {
                if self.revoke_family_on_reuse {
                    self.revoke_family(family);
                }
                return Err(invalid(Why::ReusedRefreshToken));
            }
            RefreshState::Revoked => return Err(invalid(Why::RevokedRefreshToken)),
            RefreshState::Live if self.lapsed(r, now) => return Err(invalid(Why::ExpiredRefreshToken)),
            RefreshState::Live => {}
        }
        self.check_scope(req.param("scope"), false)?;
        let next = if self.flavor.rotates() {
            if let Some(r) = self.refresh.get_mut(presented) {
                r.state = RefreshState::Rotated;
            }
            self.mint_refresh(&owner, family)
        } else {
            if let Some(r) = self.refresh.get_mut(presented) {
                r.last_used = now;
            }
            presented.to_owned()
        };
        Ok(self.issue(Some(owner), Some(family), Some(next)))
    }

    fn revoke_family(&mut self, family: u64) {
        for r in self.refresh.values_mut().filter(|r| r.family == family) {
            r.state = RefreshState::Revoked;
        }
        for a in self.access.values_mut().filter(|a| a.family == Some(family)) {
            a.revoked = true;
        }
    }

    fn jwt_bearer_grant(&mut self, req: &TokenRequest) -> Result<Issued, Refusal> {
        let bad = |f| (ErrorCode::InvalidGrant, Why::BadAssertion(f));
        let assertion = req
            .param("assertion")
            .ok_or((ErrorCode::InvalidRequest, Why::Malformed))?;
        let account = jwt::issuer(assertion).map_err(bad)?;
        let client = self.client(&account).map_err(|why| (ErrorCode::InvalidGrant, why))?;
        let pem = client.key_pem.as_deref().ok_or(bad(AssertionFault::UnknownIssuer))?;
        let expect = Expect {
            iss: &account,
            sub: None,
            aud: &self.audience,
            rs256_only: true,
        };
        let claims = jwt::verify(assertion, pem, &expect).map_err(bad)?;
        let scope = claims["scope"].as_str().filter(|s| !s.trim().is_empty());
        let scope = scope.ok_or((ErrorCode::InvalidScope, Why::BadAssertion(AssertionFault::MissingScope)))?;
        self.check_scope(Some(scope), true)?;
        Ok(self.issue(Some(account), None, None))
    }

    /// With expected scopes: `exact` calls must name exactly them, others a subset or none.
    fn check_scope(&self, sent: Option<&str>, exact: bool) -> Result<(), Refusal> {
        let Some(expected) = &self.scopes else {
            return Ok(());
        };
        let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
        let sent: BTreeSet<&str> = sent.unwrap_or_default().split_whitespace().collect();
        let fits = if exact {
            sent == expected
        } else {
            sent.is_subset(&expected)
        };
        if fits {
            Ok(())
        } else {
            Err((ErrorCode::InvalidScope, Why::ScopeNotExpected))
        }
    }

    fn issue(&mut self, client: Option<String>, family: Option<u64>, refresh: Option<String>) -> Issued {
        self.issued += 1;
        let token = match self.flavor {
            Flavor::Slack => format!("xoxe.xoxb-{}-{}", self.issued, rand_alnum(24)),
            Flavor::HubSpot => format!("CN{}", rand_alnum(40)),
            Flavor::Xero => format!("xero.{}", rand_alnum(48)),
            Flavor::GoogleServiceAccount => format!("ya29.{}", rand_alnum(64)),
            Flavor::ClientCredentials => format!("00D{}!{}", rand_alnum(12), rand_alnum(40)),
        };
        let access = Access {
            client,
            family,
            expires_at: SystemTime::now() + self.lifetime,
            revoked: false,
        };
        self.access.insert(token.clone(), access);
        let expires_in = (self.flavor != Flavor::ClientCredentials).then(|| self.lifetime.as_secs().max(1));
        Issued {
            access_token: token,
            expires_in,
            scope: self.scopes.as_ref().map(|s| s.join(" ")),
            refresh_expires_in: self
                .refresh_lifetime
                .filter(|_| refresh.is_some())
                .map(|d| d.as_secs().max(1)),
            refresh_token: refresh,
        }
    }
}

/// The client-authentication method a request used (the first of Basic, assertion, post), and
/// whether it used more than one.
fn methods_seen(req: &TokenRequest) -> (ClientAuth, bool) {
    let used = [
        (req.basic.is_some(), ClientAuth::SecretBasic),
        (req.param("client_assertion").is_some(), ClientAuth::PrivateKeyJwt),
        (req.param("client_secret").is_some(), ClientAuth::SecretPost),
    ];
    let mut seen = used.iter().filter(|(on, _)| *on).map(|(_, m)| *m);
    let first = seen.next().unwrap_or(ClientAuth::None);
    (first, seen.next().is_some())
}

fn client_id_sent(req: &TokenRequest) -> Option<String> {
    match &req.basic {
        Some(Some((id, _))) => Some(id.clone()),
        _ => req.param("client_id").map(str::to_owned),
    }
}

pub(super) fn rand_alnum(n: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(n).collect()
}

fn rand_hex(n: usize) -> String {
    std::iter::repeat_with(|| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
        .take(n)
        .collect()
}
