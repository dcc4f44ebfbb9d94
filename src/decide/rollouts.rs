//! When to restart a consuming workload. A token change restarts its workloads at once, unless the
//! workload was restarted within the debounce window: then the changes are gathered into one
//! restart at the end of the window. Across all workloads, at most `per_minute` rollouts start in
//! any minute. A bulk rotation of 1,000 tokens read by one Deployment is one rollout, not 1,000.
//! No I/O: the shell asks, patches when told to, and wakes the credential when told to wait.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use jiff::Timestamp;

use crate::decide::schedule;
use crate::decide::token::Fingerprint;

/// A workload: namespace, kind and name.
pub type Workload = (String, crate::crd::WorkloadKind, String);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Restart now, stamping this fingerprint.
    Now(Fingerprint),
    /// A restart is gathered for this instant.
    At(Timestamp),
    /// Nothing to do.
    Idle,
}

pub struct Rollouts {
    window: Duration,
    per_minute: usize,
    last: HashMap<Workload, Timestamp>,
    /// The newest fingerprint waiting per workload, and when its restart may start.
    pending: HashMap<Workload, (Fingerprint, Timestamp)>,
    started: VecDeque<Timestamp>,
}

impl Rollouts {
    pub fn new(window: Duration, per_minute: u32) -> Self {
        Self {
            window,
            per_minute: per_minute.max(1) as usize,
            last: HashMap::new(),
            pending: HashMap::new(),
            started: VecDeque::new(),
        }
    }

    /// The earliest instant from which one more rollout fits the per-minute cap.
    fn cap_free_at(&mut self, now: Timestamp) -> Timestamp {
        let minute = Duration::from_secs(60);
        while self.started.front().is_some_and(|t| schedule::add(*t, minute) <= now) {
            self.started.pop_front();
        }
        if self.started.len() < self.per_minute {
            return now;
        }
        let oldest = self.started[self.started.len() - self.per_minute];
        schedule::add(oldest, minute)
    }

    /// A token read by `w` changed to `fingerprint`.
    pub fn changed(&mut self, w: &Workload, fingerprint: &Fingerprint, now: Timestamp) -> Gate {
        let after_window = self.last.get(w).map_or(now, |t| schedule::add(*t, self.window));
        let due = after_window.max(self.cap_free_at(now));
        self.pending.insert(w.clone(), (fingerprint.clone(), due));
        self.due(w, now)
    }

    /// Whether the gathered restart of `w` may start at `now`; `Now` records it as started.
    pub fn due(&mut self, w: &Workload, now: Timestamp) -> Gate {
        let Some((fingerprint, due)) = self.pending.get(w).cloned() else {
            return Gate::Idle;
        };
        let due = due.max(self.cap_free_at(now));
        if due > now {
            self.pending.insert(w.clone(), (fingerprint, due));
            return Gate::At(due);
        }
        self.pending.remove(w);
        self.last.insert(w.clone(), now);
        self.started.push_back(now);
        // Workloads not restarted for a window have nothing left to debounce.
        let window = self.window;
        self.last.retain(|_, t| schedule::add(*t, window) > now);
        Gate::Now(fingerprint)
    }

    /// A restart that was started but failed: let the next change try again at once.
    pub fn failed(&mut self, w: &Workload) {
        self.last.remove(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WorkloadKind;

    use crate::testing::t;

    fn w(name: &str) -> Workload {
        ("ns".into(), WorkloadKind::Deployment, name.into())
    }

    #[test]
    fn a_single_change_restarts_at_once() {
        let mut r = Rollouts::new(Duration::from_secs(30), 10);
        let fp = Fingerprint::of(b"a");
        assert_eq!(r.changed(&w("sync"), &fp, t(0)), Gate::Now(fp));
        assert_eq!(r.due(&w("sync"), t(1)), Gate::Idle);
    }

    #[test]
    fn a_burst_of_changes_is_one_more_restart_at_the_end_of_the_window() {
        let mut r = Rollouts::new(Duration::from_secs(30), 10);
        let fps: Vec<_> = (0..1000).map(|i: u32| Fingerprint::of(&i.to_be_bytes())).collect();
        assert_eq!(r.changed(&w("sync"), &fps[0], t(0)), Gate::Now(fps[0].clone()));
        for (i, fp) in fps.iter().enumerate().skip(1) {
            assert_eq!(r.changed(&w("sync"), fp, t(i as i64 / 100)), Gate::At(t(30)));
        }
        assert_eq!(r.due(&w("sync"), t(29)), Gate::At(t(30)));
        assert_eq!(
            r.due(&w("sync"), t(30)),
            Gate::Now(fps[999].clone()),
            "the newest token"
        );
        assert_eq!(r.due(&w("sync"), t(31)), Gate::Idle, "and only once");
    }

    #[test]
    fn rollouts_per_minute_are_capped_across_workloads() {
        let mut r = Rollouts::new(Duration::from_secs(30), 2);
        let fp = Fingerprint::of(b"a");
        assert_eq!(r.changed(&w("one"), &fp, t(0)), Gate::Now(fp.clone()));
        assert_eq!(r.changed(&w("two"), &fp, t(1)), Gate::Now(fp.clone()));
        assert_eq!(r.changed(&w("three"), &fp, t(2)), Gate::At(t(60)));
        assert_eq!(r.due(&w("three"), t(60)), Gate::Now(fp));
    }

    /// attack: the per-minute cap is one queue for the whole cluster, first come first served,
    /// and `rolloutRestartTargets` has no maxItems. One tenant lists 30 workloads (they need not
    /// exist: a restart counts as started before its PATCH, and a 404 is only a notice) and changes
    /// its own token every debounce window: every minute's 30 rollouts (the default cap) are its,
    /// and another tenant's Deployment keeps running on the token its rotation just retired.
    #[test]
    fn attack_one_tenant_takes_every_rollout_of_the_minute() {
        let mut r = Rollouts::new(Duration::from_secs(30), 30);
        let hostile = |i: usize| -> Workload { ("hostile".into(), WorkloadKind::Deployment, format!("w{i}")) };
        let victim: Workload = ("victim".into(), WorkloadKind::Deployment, "api".into());
        let mut victim_waits = None;
        for minute in 0..10_i64 {
            let fp = Fingerprint::of(&minute.to_be_bytes());
            let now = t(minute * 60);
            // The hostile tenant's reconciles are woken at the same instant and ask first.
            for i in 0..30 {
                let _ = r.changed(&hostile(i), &fp, now);
            }
            if minute == 0 {
                // The victim rotated its token a second later.
                match r.changed(&victim, &Fingerprint::of(b"victim new token"), t(1)) {
                    Gate::Now(_) => return,
                    Gate::At(at) => victim_waits = Some(at),
                    Gate::Idle => unreachable!(),
                }
            } else if let Gate::Now(_) = r.due(&victim, now) {
                return;
            }
            victim_waits = Some(now);
        }
        panic!("another tenant's restart is still waiting at {victim_waits:?}, ten minutes on");
    }
}
