//! Who sends the next request to a provider: the fair-share scheduler of probe and
//! token-endpoint slots. Tenants (namespaces) and hosts share a fixed number of slots, and no
//! tenant and no host can take more than its share while another waits:
//!
//! - a request takes a free slot while `reserve` slots stay free afterwards;
//! - the last `reserve` slots go only to a tenant that holds fewer than another: one with nothing
//!   in flight, or one that still holds fewer than the largest holder after taking it. So
//!   whatever one tenant sends (to hung hosts, to many hosts) it never takes the reserve, and
//!   another tenant never waits for it;
//! - when a slot frees, the waiting request whose tenant holds the fewest slots goes first, then
//!   the one whose host holds the fewest, then the oldest (max-min fairness, no starvation);
//! - a host never holds more than `per_host`, and a tenant never queues more than `per_host`
//!   requests: beyond that it is told to come back later (`Admission::Refused`), so one tenant
//!   cannot fill the reconcile workers with waiting requests either.
//!
//! A slot is held for at most the request's deadline (`MAX_REQUEST_TIMEOUT`), and a wait for one
//! at most `PATIENCE`: a slow host costs its own tenant time, never another's.
//!
//! Pure: the shell keeps one `FairShare` behind a lock, and wakes the tickets each call grants.

use std::collections::HashMap;
use std::time::Duration;

use crate::decide::schedule::Jitter;

/// The longest a request may take, connection to last byte (the schema's maximum of every
/// timeout field, and what the operator enforces on objects written before that schema).
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest a reconcile waits for a slot before it gives up and comes back later.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Request slots in flight at once by default (`--max-concurrent-probes`).
pub const DEFAULT_TOTAL: usize = 16;

/// Request slots one host holds at most by default (`--max-probes-per-host`).
pub const DEFAULT_PER_HOST: usize = 8;

/// How the slots are sized (`--max-concurrent-probes`, `--max-probes-per-host`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_host: usize,
    /// Slots only a tenant holding fewer than another may take.
    pub reserve: usize,
}

impl Limits {
    /// A quarter of the slots (at least one when there are four or more) are the reserve.
    pub fn new(total: usize, per_host: usize) -> Self {
        let total = total.max(1);
        Self {
            total,
            per_host: per_host.clamp(1, total),
            reserve: total / 4,
        }
    }
}

/// One request's place: waiting, or holding a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A slot is held from now on; give it back with `finish`.
    Granted(Ticket),
    /// Waiting: a later `finish` names it when it is granted; `finish` it to give up.
    Queued(Ticket),
    /// The tenant already has as many requests waiting as it may: come back later.
    Refused,
}

#[derive(Clone, Debug)]
struct Request {
    ticket: Ticket,
    tenant: String,
    host: String,
}

/// Slots held and requests waiting, per tenant or per host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Load {
    held: usize,
    waiting: usize,
}

#[derive(Clone, Debug)]
pub struct FairShare {
    limits: Limits,
    held: HashMap<Ticket, Request>,
    /// In arrival order (tickets grow), so the oldest of equals goes first.
    waiting: Vec<Request>,
    tenants: HashMap<String, Load>,
    hosts: HashMap<String, Load>,
    next: u64,
}

impl FairShare {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            held: HashMap::new(),
            waiting: Vec::new(),
            tenants: HashMap::new(),
            hosts: HashMap::new(),
            next: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A request of `tenant` to `host`: granted now, queued, or refused.
    pub fn request(&mut self, tenant: &str, host: &str) -> Admission {
        let load = |m: &HashMap<String, Load>, k: &str| m.get(k).copied().unwrap_or_default();
        if load(&self.tenants, tenant).waiting >= self.limits.per_host {
            return Admission::Refused;
        }
        let ticket = Ticket(self.next);
        self.next += 1;
        let request = Request {
            ticket,
            tenant: tenant.to_owned(),
            host: host.to_owned(),
        };
        // No waiting request can take a slot (`settle` ran after every change), and a new one
        // changes no holder's count: only the newcomer itself may go now.
        if self.may_take(&request) {
            self.hold(request);
            Admission::Granted(ticket)
        } else {
            self.tenants.entry(request.tenant.clone()).or_default().waiting += 1;
            self.hosts.entry(request.host.clone()).or_default().waiting += 1;
            self.waiting.push(request);
            Admission::Queued(ticket)
        }
    }

    /// A held slot given back, or a wait given up: answers the waiting tickets granted now.
    pub fn finish(&mut self, ticket: Ticket) -> Vec<Ticket> {
        if let Some(r) = self.held.remove(&ticket) {
            self.change(&r, |l| l.held -= 1);
        } else if let Some(at) = self.waiting.iter().position(|r| r.ticket == ticket) {
            let r = self.waiting.remove(at);
            self.change(&r, |l| l.waiting -= 1);
        }
        self.settle()
    }

    /// Whether `ticket` holds a slot.
    pub fn holds(&self, ticket: Ticket) -> bool {
        self.held.contains_key(&ticket)
    }

    /// Slots held in all.
    pub fn in_flight(&self) -> usize {
        self.held.len()
    }

    /// Slots held by `tenant`.
    pub fn held_by_tenant(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, |l| l.held)
    }

    /// Slots held at `host`.
    pub fn held_at_host(&self, host: &str) -> usize {
        self.hosts.get(host).map_or(0, |l| l.held)
    }

    /// Requests waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether `request` may take a slot now, by the rules above.
    fn may_take(&self, r: &Request) -> bool {
        self.may_take_given(r, &self.largest_holders())
    }

    fn may_take_given(&self, r: &Request, largest: &Largest<'_>) -> bool {
        let tenant = self.tenants.get(&r.tenant).map_or(0, |l| l.held);
        let host = self.hosts.get(&r.host).map_or(0, |l| l.held);
        let free = self.limits.total - self.held.len();
        let fewer_than_another = largest.besides(&r.tenant) > tenant + 1;
        free > 0 && host < self.limits.per_host && (free > self.limits.reserve || tenant == 0 || fewer_than_another)
    }

    /// The two tenants holding the most (only holders count, so at most `total` are looked at,
    /// however many tenants wait).
    fn largest_holders(&self) -> Largest<'_> {
        let mut largest = Largest::default();
        for r in self.held.values() {
            let held = self.tenants.get(&r.tenant).map_or(0, |l| l.held);
            largest.offer(&r.tenant, held);
        }
        largest
    }

    /// Grants waiting requests, best first, while one may take a slot.
    fn settle(&mut self) -> Vec<Ticket> {
        let mut granted = Vec::new();
        loop {
            let largest = self.largest_holders();
            let best = self
                .waiting
                .iter()
                .enumerate()
                .filter(|(_, r)| self.may_take_given(r, &largest))
                .min_by_key(|(_, r)| {
                    let tenant = self.tenants.get(&r.tenant).map_or(0, |l| l.held);
                    let host = self.hosts.get(&r.host).map_or(0, |l| l.held);
                    (tenant, host, r.ticket)
                })
                .map(|(at, _)| at);
            let Some(at) = best else { break };
            let r = self.waiting.remove(at);
            self.change(&r, |l| l.waiting -= 1);
            granted.push(r.ticket);
            self.hold(r);
        }
        granted
    }

    fn hold(&mut self, r: Request) {
        self.tenants.entry(r.tenant.clone()).or_default().held += 1;
        self.hosts.entry(r.host.clone()).or_default().held += 1;
        self.held.insert(r.ticket, r);
    }

    /// Applies `f` to the request's tenant and host, forgetting either once it holds and waits
    /// for nothing (the maps stay as small as what is in flight).
    fn change(&mut self, r: &Request, f: impl Fn(&mut Load)) {
        for (map, key) in [(&mut self.tenants, &r.tenant), (&mut self.hosts, &r.host)] {
            if let Some(l) = map.get_mut(key) {
                f(l);
                if *l == Load::default() {
                    map.remove(key);
                }
            }
        }
    }
}

/// The two largest holders, by tenant: enough to answer "the most any other tenant holds".
#[derive(Default)]
struct Largest<'a> {
    first: Option<(&'a str, usize)>,
    second: usize,
}

impl<'a> Largest<'a> {
    fn offer(&mut self, tenant: &'a str, held: usize) {
        match self.first {
            Some((t, _)) if t == tenant => {}
            Some((_, most)) if held <= most => self.second = self.second.max(held),
            Some((_, most)) => {
                self.second = most;
                self.first = Some((tenant, held));
            }
            None => self.first = Some((tenant, held)),
        }
    }

    /// The most a tenant other than `tenant` holds.
    fn besides(&self, tenant: &str) -> usize {
        match self.first {
            Some((t, _)) if t == tenant => self.second,
            Some((_, most)) => most,
            None => 0,
        }
    }
}

/// When a probe that found no slot within `PATIENCE` (or was refused a place in the queue) is
/// tried again: soon, spread so that the ones turned away together do not come back together.
pub fn retry_after_busy(jitter: Jitter) -> Duration {
    jitter.scale(PATIENCE, 0.5, 1.5)
}

#[cfg(test)]
#[path = "fair_share/tests.rs"]
mod tests;
