//! Requests to providers, and nothing else: the probe (`probe`) and the OAuth token endpoint
//! (`token_endpoint`). What an answer means is `verdict`'s and `oauth`'s business; here every
//! answer is read within bounds and every failure becomes a value.
//!
//! The client never follows a redirect (it could carry the token to another host), never uses a
//! proxy (name resolution would happen out of our sight), and resolves names itself so that the
//! owner's egress rules (`egress`) apply to the addresses actually connected to. reqwest hands a
//! resolver the name alone, not the port, so there is one reqwest client per destination port,
//! its resolver holding that port: a request goes through the client of its URL's port, which
//! connects only there and judges each address by the rules for that port.

mod probe;
pub use probe::RawBody;
mod token_endpoint;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::HeaderMap;

use crate::decide::egress::Egress;
use crate::decide::provider::{ExpiryFrom, Profile};
use crate::decide::verdict::{self, ProbeOutcome, Transport, TransportFailure};
use crate::fence::{Fence, NotLeading};

pub const USER_AGENT_VALUE: &str = concat!("tenantcred/", env!("CARGO_PKG_VERSION"), " (+https://tenantcred.dev)");

/// The most of any response body that is read; the rest is never received into memory.
pub const BODY_LIMIT: usize = 64 * 1024;

/// kube uses rustls with ring; reqwest is built without a provider of its own. Installing ring as
/// the process default once keeps both on one provider (rustls panics when it has to choose).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The HTTP client for providers, shared by every reconcile.
#[derive(Clone)]
pub struct ProviderClient {
    egress: Arc<Egress>,
    /// One reqwest client per destination port, built when first needed (ports are few).
    clients: Arc<Mutex<HashMap<u16, reqwest::Client>>>,
    /// Nothing is sent while it is closed (a standby, or a leader that lost its lease).
    fence: Arc<Fence>,
}

/// Clients kept at once; past it one is dropped (its requests in flight keep their own handle),
/// so tenants naming many ports under a `:*` pattern cannot grow the map without bound.
const CLIENTS_KEPT: usize = 32;

impl ProviderClient {
    pub fn new(egress: Arc<Egress>, fence: Arc<Fence>) -> Result<Self, reqwest::Error> {
        install_crypto_provider();
        // The https port's client now, so a client that cannot be built fails at start.
        let https = client_for_port(&egress, 443)?;
        Ok(Self {
            egress,
            clients: Arc::new(Mutex::new(HashMap::from([(443, https)]))),
            fence,
        })
    }

    /// The client that may carry a request to `url`: the one of its port. `None`: the URL has no
    /// port (it could not be sent), or no client could be built.
    fn client(&self, url: &str) -> Option<reqwest::Client> {
        let port = url::Url::parse(url).ok()?.port_or_known_default()?;
        // A panic elsewhere while holding the lock leaves a map that is still whole.
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(&port) {
            return Some(client.clone());
        }
        if clients.len() >= CLIENTS_KEPT {
            let evicted = clients.keys().copied().find(|&p| p != 443);
            if let Some(p) = evicted {
                clients.remove(&p);
            }
        }
        let client = client_for_port(&self.egress, port).ok()?;
        clients.insert(port, client.clone());
        Some(client)
    }
}

/// The whole exchange's one deadline (connection, TLS, headers, body), from now: the timeout
/// asked for, never above what a request may hold a slot for (`fair_share::MAX_REQUEST_TIMEOUT`;
/// `tenantcred check` takes its timeout from a flag). reqwest's own request timeout is not set: two
/// timers at one instant made the same exchange end two ways.
fn deadline(timeout: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + timeout.min(crate::decide::fair_share::MAX_REQUEST_TIMEOUT)
}

/// A client whose connections go only to `port`, each resolved address judged for that port.
fn client_for_port(egress: &Arc<Egress>, port: u16) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver {
            egress: egress.clone(),
            port,
        }))
        .user_agent(USER_AGENT_VALUE)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
}

/// Resolves names like the system does, then keeps only the addresses the egress rules allow on
/// the one port its client connects to.
struct GuardedResolver {
    egress: Arc<Egress>,
    port: u16,
}

/// Every address of a name was outside the egress rules for the port.
#[derive(Debug, thiserror::Error)]
#[error(
    "{name}:{port} resolves only to addresses that are not public and not allowed on port {port} ({addresses}); the operator connects to those only when its owner allows them by address and port with --allowed-host (Helm value allowedHosts; a pattern without a port allows 443 only); nothing was sent"
)]
struct AddressNotAllowed {
    name: String,
    port: u16,
    addresses: String,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.egress.clone();
        let port = self.port;
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port)).await?.collect();
            let (allowed, refused): (Vec<_>, Vec<_>) =
                found.into_iter().partition(|a| egress.allows_socket(a.ip(), port));
            if allowed.is_empty() && !refused.is_empty() {
                let mut addresses: Vec<String> = refused.iter().map(|a| a.ip().to_string()).collect();
                addresses.dedup();
                addresses.truncate(4);
                return Err(Box::new(AddressNotAllowed {
                    name,
                    port,
                    addresses: addresses.join(", "),
                }) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What became of a request that got no HTTP answer. Error texts are not kept (they could grow
/// to include request parts), except our own refusal, which names only the host and addresses.
fn failed(e: &reqwest::Error) -> Transport {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<AddressNotAllowed>() {
            return Transport::NotAllowed(refused.to_string());
        }
        source = s.source();
    }
    if e.is_timeout() {
        Transport::Timeout
    } else if e.is_connect() {
        Transport::Failed(TransportFailure::Connect)
    } else {
        Transport::Failed(TransportFailure::Other)
    }
}

/// The status as a transport: a redirect is refused, never followed.
fn answered(resp: &reqwest::Response) -> Transport {
    if resp.status().is_redirection() {
        Transport::Failed(TransportFailure::Redirect)
    } else {
        Transport::Answered(resp.status().as_u16())
    }
}

/// The answer's media type, from the allow-list only: the header's text is the provider's.
fn media_type(headers: &reqwest::header::HeaderMap) -> Option<crate::decide::error_body::MediaType> {
    let value = headers.get(reqwest::header::CONTENT_TYPE)?;
    Some(crate::decide::error_body::MediaType::parse(
        value.to_str().unwrap_or_default(),
    ))
}

/// A body as read: at most the limit, and whether it ended before the deadline did.
struct Body {
    bytes: Vec<u8>,
    /// The deadline came first: `bytes` is what arrived until then.
    cut: bool,
}

/// Reads at most `limit` bytes of the body and stops (the rest is never received into memory),
/// or stops at `until`, the exchange's one deadline, keeping what came.
async fn read_bounded(resp: &mut reqwest::Response, limit: usize, until: tokio::time::Instant) -> Body {
    let mut bytes = Vec::new();
    while bytes.len() < limit {
        match tokio::time::timeout_at(until, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let room = limit - bytes.len();
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(_) => break,
            Err(_) => return Body { bytes, cut: true },
        }
    }
    Body { bytes, cut: false }
}

/// The provider's rate-limit, Retry-After and expiry headers, by the names its definition gives
/// (the header block itself is bounded by the HTTP client; a value over 256 bytes is ignored).
fn read_headers(h: &HeaderMap, profile: &Profile, now: Timestamp, outcome: &mut ProbeOutcome) {
    let get = |name: &str| h.get(name).filter(|v| v.len() <= 256).and_then(|v| v.to_str().ok());
    let names = &profile.headers;
    outcome.rate_limit = verdict::parse_rate_limit(
        get(&names.limit),
        get(&names.remaining),
        get(&names.reset),
        names.reset_unit,
        now,
    );
    outcome.retry_after = get(&names.retry_after).and_then(|v| verdict::parse_retry_after(v, now));
    if let ExpiryFrom::Header { name, format } = &profile.expiry {
        outcome.stated_expiry = get(name).and_then(|v| format.parse(v));
    }
}
