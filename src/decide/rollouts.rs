//! When to restart a consuming workload. A token change restarts its workloads at once, unless the
//! workload was restarted within the debounce window: then the changes are gathered into one
//! restart at the end of the window. Across all workloads, at most `per_minute` rollouts start in
//! any minute. A bulk rotation of 1,000 tokens read by one Deployment is one rollout, not 1,000.
//! A restart stamps the new token's fingerprint on the workload's pod template: a fingerprint,
//! not a timestamp, so re-applying the same value changes nothing and GitOps re-syncs cannot
//! start a restart loop. A workload that does not exist is a warning, not a failed credential.
//! No I/O: the shell asks, patches when told to, and wakes the credential when told to wait.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use jiff::Timestamp;

use crate::crd::WorkloadRef;
use crate::decide::events::{Notice, Occurrence};
use crate::decide::schedule;
use crate::decide::token::Fingerprint;

/// The pod-template annotation a restart sets to the token's fingerprint.
pub const FINGERPRINT_ANNOTATION: &str = "tenantcred.dev/token-fingerprint";

/// A workload is restarted at most once per this window by default (`--restart-debounce`).
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(30);

/// Rollouts started per minute across all workloads by default (`--max-rollouts-per-minute`).
pub const DEFAULT_PER_MINUTE: u32 = 30;

/// A workload: namespace, kind and name.
pub type Workload = (String, crate::crd::WorkloadKind, String);

/// The workloads a token change of a credential in `ns` restarts: its `rolloutRestartTargets`,
/// each in the credential's own namespace.
pub fn workloads(ns: &str, targets: &[WorkloadRef]) -> Vec<Workload> {
    targets
        .iter()
        .map(|t| (ns.to_owned(), t.kind, t.name.clone()))
        .collect()
}

/// The merge patch that restarts a workload: the fingerprint on its pod template.
pub fn stamp(fingerprint: &Fingerprint) -> serde_json::Value {
    serde_json::json!({
        "spec": {"template": {"metadata": {"annotations": {FINGERPRINT_ANNOTATION: fingerprint.as_str()}}}}
    })
}

/// What the API server answered a restart's patch (`E`: the shell's error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamped<E> {
    Annotated,
    /// The workload does not exist (404).
    NotFound,
    /// Any other failure.
    Failed(E),
}

/// What an answer to a restart's patch leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterStamp<E> {
    /// Tell the credential's readers, and go on with the next workload.
    Tell(Notice),
    /// Fail the reconcile with this error (its error backoff retries it).
    Fail(E),
}

/// What the restarts of one reconcile tell it: the events, and when to look again for a
/// restart gathered for the end of a window (the earliest of them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub notices: Vec<Notice>,
    pub wake: Option<Timestamp>,
}

impl Round {
    /// A restart gathered for `at`.
    pub fn gathered(&mut self, at: Timestamp) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }
}

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
    /// Rollouts started in the last minute, and whose namespace each was.
    started: VecDeque<(Timestamp, String)>,
}

/// A namespace's share of the per-minute cap: a quarter (at least one), so one tenant's restarts
/// never take every rollout of a minute from the others.
fn per_namespace(per_minute: usize) -> usize {
    (per_minute / 4).max(1)
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

    /// The earliest instant from which one more rollout of namespace `ns` fits the per-minute
    /// cap and the namespace's share of it.
    fn cap_free_at(&mut self, ns: &str, now: Timestamp) -> Timestamp {
        let minute = Duration::from_secs(60);
        while self
            .started
            .front()
            .is_some_and(|(t, _)| schedule::add(*t, minute) <= now)
        {
            self.started.pop_front();
        }
        let mut free = now;
        if self.started.len() >= self.per_minute {
            let (oldest, _) = &self.started[self.started.len() - self.per_minute];
            free = free.max(schedule::add(*oldest, minute));
        }
        let share = per_namespace(self.per_minute);
        let mine: Vec<Timestamp> = self.started.iter().filter(|(_, n)| n == ns).map(|(t, _)| *t).collect();
        if mine.len() >= share {
            free = free.max(schedule::add(mine[mine.len() - share], minute));
        }
        free
    }

    /// A token read by `w` changed to `fingerprint`.
    pub fn changed(&mut self, w: &Workload, fingerprint: &Fingerprint, now: Timestamp) -> Gate {
        let after_window = self.last.get(w).map_or(now, |t| schedule::add(*t, self.window));
        let due = after_window.max(self.cap_free_at(&w.0, now));
        self.pending.insert(w.clone(), (fingerprint.clone(), due));
        self.due(w, now)
    }

    /// Whether the gathered restart of `w` may start at `now`; `Now` records it as started.
    pub fn due(&mut self, w: &Workload, now: Timestamp) -> Gate {
        let Some((fingerprint, due)) = self.pending.get(w).cloned() else {
            return Gate::Idle;
        };
        let due = due.max(self.cap_free_at(&w.0, now));
        if due > now {
            self.pending.insert(w.clone(), (fingerprint, due));
            return Gate::At(due);
        }
        self.pending.remove(w);
        self.last.insert(w.clone(), now);
        self.started.push_back((now, w.0.clone()));
        // Workloads not restarted for a window have nothing left to debounce.
        let window = self.window;
        self.last.retain(|_, t| schedule::add(*t, window) > now);
        Gate::Now(fingerprint)
    }

    /// What the answer to the restart of `w` with `fingerprint` means. A failure other than a
    /// missing workload lets the next change try again at once (the failed restart does not
    /// count for the debounce window).
    pub fn answered<E>(&mut self, w: &Workload, fingerprint: &Fingerprint, stamped: Stamped<E>) -> AfterStamp<E> {
        let (ns, kind, name) = w;
        match stamped {
            Stamped::Annotated => AfterStamp::Tell(Occurrence::RolloutRestarted.notice(format!(
                "{kind:?} {name}: pod template annotated with token {fingerprint}"
            ))),
            Stamped::NotFound => {
                AfterStamp::Tell(Occurrence::RestartTargetNotFound.notice(format!("{kind:?} {name} not found in {ns}")))
            }
            Stamped::Failed(e) => {
                self.last.remove(w);
                AfterStamp::Fail(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WorkloadKind;
    use crate::decide::events::Severity;

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
        let in_ns = |ns: &str| -> Workload { (ns.into(), WorkloadKind::Deployment, "w".into()) };
        assert_eq!(r.changed(&in_ns("a"), &fp, t(0)), Gate::Now(fp.clone()));
        assert_eq!(r.changed(&in_ns("b"), &fp, t(1)), Gate::Now(fp.clone()));
        assert_eq!(r.changed(&in_ns("c"), &fp, t(2)), Gate::At(t(60)));
        assert_eq!(r.due(&in_ns("c"), t(60)), Gate::Now(fp));
    }

    /// Found by the hostile-tenant review: the per-minute cap was one first-come queue for the
    /// cluster, so one tenant restarting 30 workloads every minute took every rollout, and another
    /// tenant's Deployment kept running on the token its rotation had just retired.
    #[test]
    fn one_tenant_never_takes_every_rollout_of_the_minute() {
        let mut r = Rollouts::new(Duration::from_secs(30), 30);
        let hostile = |i: usize| -> Workload { ("hostile".into(), WorkloadKind::Deployment, format!("w{i}")) };
        let victim: Workload = ("victim".into(), WorkloadKind::Deployment, "api".into());
        // The hostile tenant's reconciles are woken at the same instant and ask first: a quarter
        // of the cap is its.
        let fp = Fingerprint::of(b"hostile token");
        let started = (0..30)
            .filter(|i| matches!(r.changed(&hostile(*i), &fp, t(0)), Gate::Now(_)))
            .count();
        assert_eq!(started, 7, "a namespace's share of 30 a minute");
        // The victim rotated its token a second later: its restart goes at once.
        let new = Fingerprint::of(b"victim new token");
        assert_eq!(r.changed(&victim, &new, t(1)), Gate::Now(new));
        // The hostile tenant's others wait for its own share to free up, a minute on.
        assert_eq!(r.due(&hostile(29), t(2)), Gate::At(t(60)));
    }

    #[test]
    fn each_target_is_a_workload_of_the_credentials_namespace() {
        let targets: Vec<WorkloadRef> = serde_json::from_value(serde_json::json!([
            {"kind": "Deployment", "name": "api"},
            {"kind": "StatefulSet", "name": "db"},
        ]))
        .expect("targets");
        assert_eq!(
            workloads("ns", &targets),
            vec![w("api"), ("ns".into(), WorkloadKind::StatefulSet, "db".into())]
        );
    }

    #[test]
    fn a_restart_stamps_the_fingerprint_on_the_pod_template_only() {
        let fp = Fingerprint::of(b"a");
        assert_eq!(
            stamp(&fp),
            serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
                "tenantcred.dev/token-fingerprint": fp.as_str()
            }}}}})
        );
    }

    #[test]
    fn a_restarted_and_a_missing_workload_are_told_and_the_next_goes_on() {
        let mut r = Rollouts::new(Duration::from_secs(30), 10);
        let fp = Fingerprint::of(b"a");
        let AfterStamp::Tell(done) = r.answered(&w("api"), &fp, Stamped::<()>::Annotated) else {
            panic!("a restart is told");
        };
        assert_eq!((done.reason, done.severity), ("RolloutRestarted", Severity::Normal));
        assert_eq!(
            done.message,
            format!("Deployment api: pod template annotated with token {fp}")
        );
        let AfterStamp::Tell(missing) = r.answered(&w("gone"), &fp, Stamped::<()>::NotFound) else {
            panic!("a missing consumer is a warning, not a failed credential");
        };
        assert_eq!(
            (missing.reason, missing.severity),
            ("RestartTargetNotFound", Severity::Warning)
        );
        assert_eq!(missing.message, "Deployment gone not found in ns");
    }

    #[test]
    fn a_failed_restart_fails_the_reconcile_and_the_next_change_tries_again_at_once() {
        let mut r = Rollouts::new(Duration::from_secs(30), 10);
        let (a, b) = (Fingerprint::of(b"a"), Fingerprint::of(b"b"));
        assert_eq!(r.changed(&w("api"), &a, t(0)), Gate::Now(a.clone()));
        assert_eq!(
            r.answered(&w("api"), &a, Stamped::Failed("refused")),
            AfterStamp::Fail("refused")
        );
        assert_eq!(r.changed(&w("api"), &b, t(1)), Gate::Now(b), "not debounced");
    }

    #[test]
    fn a_round_wakes_at_the_earliest_gathered_restart() {
        let mut round = Round::default();
        round.gathered(t(60));
        round.gathered(t(30));
        round.gathered(t(45));
        assert_eq!(round.wake, Some(t(30)));
    }
}
