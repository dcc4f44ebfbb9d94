//! The scheduler's specification. The property tests keep their own model of who holds what and
//! check every answer against rules written here, independently of the scheduler's code.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const TENANTS: [&str; 4] = ["hostile", "b", "c", "d"];
const HOSTS: [&str; 3] = ["x:443", "y:443", "z:443"];

fn limits() -> Limits {
    Limits::new(16, 8)
}

#[test]
fn defaults_keep_a_quarter_for_tenants_with_nothing_in_flight() {
    assert_eq!(
        Limits::new(16, 8),
        Limits {
            total: 16,
            per_host: 8,
            reserve: 4
        }
    );
    assert_eq!(Limits::new(0, 0).total, 1, "at least one slot");
    assert_eq!(Limits::new(2, 9).per_host, 2, "a host never holds more than all");
}

/// The case: one tenant's 24 requests hang on two hosts; two other tenants go at once.
#[test]
fn hung_hosts_cost_their_own_tenant_only() {
    let mut s = FairShare::new(limits());
    let mut hung = Vec::new();
    for i in 0..24 {
        hung.push(s.request("hostile", HOSTS[i % 2]));
    }
    let held = hung.iter().filter(|a| matches!(a, Admission::Granted(_))).count();
    assert_eq!(held, 12, "all but the reserve");
    assert_eq!(s.held_at_host("x:443"), 6);
    assert_eq!(
        hung.iter().filter(|a| matches!(a, Admission::Queued(_))).count(),
        8,
        "a tenant queues at most per_host"
    );
    assert!(hung.contains(&Admission::Refused));
    // The reserve goes to the tenants that hold fewer.
    for tenant in ["b", "c", "b", "c"] {
        assert!(
            matches!(s.request(tenant, "z:443"), Admission::Granted(_)),
            "{tenant} goes at once"
        );
    }
    let Admission::Queued(b_third) = s.request("b", "z:443") else {
        panic!("every slot is taken: b waits");
    };
    // The first slot the hostile tenant gives back goes to whoever holds fewer.
    let Admission::Granted(first) = hung[0] else {
        unreachable!()
    };
    assert_eq!(s.finish(first), vec![b_third], "b holds 2, the hostile tenant 11");
}

#[test]
fn a_host_never_holds_more_than_its_cap() {
    let mut s = FairShare::new(Limits::new(16, 2));
    assert!(matches!(s.request("a", "x:443"), Admission::Granted(_)));
    assert!(matches!(s.request("b", "x:443"), Admission::Granted(_)));
    assert!(
        matches!(s.request("c", "x:443"), Admission::Queued(_)),
        "even for a newcomer"
    );
    assert!(matches!(s.request("c", "y:443"), Admission::Granted(_)));
}

#[test]
fn a_wait_given_up_leaves_no_trace() {
    let mut s = FairShare::new(Limits::new(1, 1));
    let Admission::Granted(a) = s.request("a", "x:443") else {
        panic!()
    };
    let Admission::Queued(b) = s.request("b", "x:443") else {
        panic!()
    };
    assert_eq!(s.finish(b), vec![], "given up");
    assert_eq!(s.waiting(), 0);
    assert_eq!(s.finish(a), vec![]);
    assert_eq!(s.in_flight(), 0);
    assert!(
        s.tenants.is_empty() && s.hosts.is_empty(),
        "nothing kept for what is gone"
    );
    assert!(matches!(s.request("b", "x:443"), Admission::Granted(_)));
}

#[test]
fn a_slot_that_is_not_needed_is_not_kept() {
    // Two slots, no reserve: a lone tenant uses both.
    let mut s = FairShare::new(Limits::new(2, 2));
    assert!(matches!(s.request("a", "x:443"), Admission::Granted(_)));
    assert!(matches!(s.request("a", "y:443"), Admission::Granted(_)));
}

#[test]
fn retries_after_a_busy_wait_are_spread() {
    assert_eq!(retry_after_busy(Jitter::new(0.0)), Duration::from_millis(2500));
    assert_eq!(retry_after_busy(Jitter::new(1.0)), Duration::from_millis(7500));
}

/// What the model of a run holds: every ticket's tenant and host, held or waiting.
#[derive(Default)]
struct Model {
    held: BTreeMap<Ticket, (usize, usize)>,
    waiting: BTreeMap<Ticket, (usize, usize)>,
}

impl Model {
    fn tenant_held(&self, t: usize) -> usize {
        self.held.values().filter(|(tt, _)| *tt == t).count()
    }
    fn host_held(&self, h: usize) -> usize {
        self.held.values().filter(|(_, hh)| *hh == h).count()
    }
    fn tenant_waiting(&self, t: usize) -> usize {
        self.waiting.values().filter(|(tt, _)| *tt == t).count()
    }
    /// The rule, written again: a free slot, the host under its cap, and either the reserve left
    /// untouched or a tenant that holds nothing, or still fewer than another after taking it.
    fn may_take(&self, l: Limits, (t, h): (usize, usize)) -> bool {
        let free = l.total - self.held.len();
        let mine = self.tenant_held(t);
        let most_of_others = (0..TENANTS.len())
            .filter(|&o| o != t)
            .map(|o| self.tenant_held(o))
            .max()
            .unwrap_or(0);
        free > 0 && self.host_held(h) < l.per_host && (free > l.reserve || mine == 0 || mine + 1 < most_of_others)
    }
    fn key(&self, ticket: Ticket, (t, h): (usize, usize)) -> (usize, usize, Ticket) {
        (self.tenant_held(t), self.host_held(h), ticket)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Request {
        tenant: usize,
        host: usize,
    },
    /// Finish the n-th held ticket (modulo their number).
    Finish(usize),
    /// Give up the n-th waiting ticket.
    GiveUp(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..TENANTS.len(), 0..HOSTS.len()).prop_map(|(tenant, host)| Op::Request { tenant, host }),
        2 => any::<usize>().prop_map(Op::Finish),
        1 => any::<usize>().prop_map(Op::GiveUp),
    ]
}

fn any_limits() -> impl Strategy<Value = Limits> {
    (1usize..20, 1usize..10).prop_map(|(total, per_host)| Limits::new(total, per_host))
}

/// Checks the grants a `finish` answered, one at a time, against the model; then applies them.
fn check_grants(m: &mut Model, l: Limits, granted: &[Ticket]) -> Result<(), TestCaseError> {
    for g in granted {
        let Some(&who) = m.waiting.get(g) else {
            return Err(TestCaseError::fail(format!("{g:?} granted but not waiting")));
        };
        prop_assert!(m.may_take(l, who), "{:?} granted against the rule", g);
        // Nobody who could have gone instead holds fewer (tenant first, then host; then older).
        for (w, &other) in &m.waiting {
            if w != g && m.may_take(l, other) {
                prop_assert!(
                    m.key(*g, who) <= m.key(*w, other),
                    "{:?} {:?} went before {:?} {:?}",
                    g,
                    who,
                    w,
                    other
                );
            }
        }
        m.waiting.remove(g);
        m.held.insert(*g, who);
    }
    Ok(())
}

fn invariants(m: &Model, s: &FairShare, l: Limits) -> Result<(), TestCaseError> {
    prop_assert_eq!(s.in_flight(), m.held.len());
    prop_assert_eq!(s.waiting(), m.waiting.len());
    prop_assert!(m.held.len() <= l.total);
    for (h, host) in HOSTS.iter().enumerate() {
        prop_assert!(m.host_held(h) <= l.per_host);
        prop_assert_eq!(s.held_at_host(host), m.host_held(h));
    }
    for (t, tenant) in TENANTS.iter().enumerate() {
        prop_assert!(m.tenant_waiting(t) <= l.per_host);
        prop_assert_eq!(s.held_by_tenant(tenant), m.tenant_held(t));
    }
    // Work-conserving: no request waits that the rule lets go.
    for (w, &who) in &m.waiting {
        prop_assert!(!m.may_take(l, who), "{:?} {:?} waits with a slot it may take", w, who);
    }
    for t in m.held.keys() {
        prop_assert!(s.holds(*t));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Every answer, over any interleaving of requests, finishes and waits given up: the caps
    /// hold, no slot idles while a request may take it, and a freed slot goes to the request
    /// whose tenant holds the fewest (then whose host does, then the oldest).
    #[test]
    fn no_interleaving_lets_a_tenant_go_before_one_holding_fewer(l in any_limits(), ops in prop::collection::vec(op(), 1..120)) {
        let mut s = FairShare::new(l);
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Request { tenant, host } => {
                    let waiting_before = m.tenant_waiting(tenant);
                    let could = m.may_take(l, (tenant, host));
                    match s.request(TENANTS[tenant], HOSTS[host]) {
                        Admission::Granted(t) => {
                            prop_assert!(could, "granted against the rule");
                            m.held.insert(t, (tenant, host));
                        }
                        Admission::Queued(t) => {
                            prop_assert!(!could, "queued though it may go");
                            m.waiting.insert(t, (tenant, host));
                        }
                        Admission::Refused => prop_assert_eq!(waiting_before, l.per_host),
                    }
                }
                Op::Finish(n) => {
                    if m.held.is_empty() { continue; }
                    let t = *m.held.keys().nth(n % m.held.len()).expect("in range");
                    m.held.remove(&t);
                    let granted = s.finish(t);
                    check_grants(&mut m, l, &granted)?;
                }
                Op::GiveUp(n) => {
                    if m.waiting.is_empty() { continue; }
                    let t = *m.waiting.keys().nth(n % m.waiting.len()).expect("in range");
                    m.waiting.remove(&t);
                    let granted = s.finish(t);
                    check_grants(&mut m, l, &granted)?;
                }
            }
            invariants(&m, &s, l)?;
        }
        // Nothing waits for ever: as holders finish, every waiting request is granted.
        while let Some(&t) = m.held.keys().next() {
            m.held.remove(&t);
            let granted = s.finish(t);
            check_grants(&mut m, l, &granted)?;
        }
        prop_assert!(m.waiting.is_empty(), "left waiting: {:?}", m.waiting);
    }

    /// Whatever one tenant holds (hung, never finishing, on any hosts), another tenant with
    /// nothing in flight gets a slot at once on any host that tenant has not filled.
    #[test]
    fn one_tenant_never_makes_another_wait(l in any_limits(), hostile in prop::collection::vec(0..HOSTS.len(), 0..40), host in 0..HOSTS.len()) {
        prop_assume!(l.reserve >= 1);
        let mut s = FairShare::new(l);
        for h in hostile {
            let _ = s.request("hostile", HOSTS[h]);
        }
        prop_assert!(s.held_by_tenant("hostile") <= l.total - l.reserve);
        if s.held_at_host(HOSTS[host]) < l.per_host {
            prop_assert!(matches!(s.request("b", HOSTS[host]), Admission::Granted(_)));
        }
    }
}
