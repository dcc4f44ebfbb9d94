//! The leader's report of each provider (`status`): when it is made, what it counts, and
//! whether it is worth a write. It is made at once after a definition changes (once a burst of
//! edits settles) and every five minutes (jittered, so replicas and restarts do not align), and
//! written only when it differs from what the object holds: counts that did not move cost the
//! API server nothing.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use jiff::Timestamp;

use super::definition::Refusal;
use super::status::{self, Counts};
use crate::crd::TenantApiCredentialStatus;
use crate::crd::provider::ApiProviderStatus;
use crate::decide::conditions::{self, Type};
use crate::decide::schedule::Jitter;

/// How often the counts are made again without a change.
pub const EVERY: Duration = Duration::from_secs(300);

/// How long a changed definition waits for more edits before the report.
pub const SETTLE: Duration = Duration::from_secs(1);

/// When the next report is due without a change: `EVERY`, spread ±10%.
/// Whether this operator writes providers' status: only one that watches every namespace can
/// count a provider's credentials; installations watching some namespaces may share the
/// cluster's providers, and would overwrite each other's counts.
pub fn reports(watched_namespaces: &[String]) -> bool {
    watched_namespaces.is_empty()
}

pub fn next(jitter: Jitter) -> Duration {
    jitter.scale(EVERY, 0.9, 1.1)
}

/// Counts one credential naming `provider` for the providers counted (a credential naming a
/// provider that is not defined counts for none, and its status is not read). A credential is
/// Ready for its provider when its own Ready condition is true.
pub fn count(
    counts: &mut HashMap<String, Counts>,
    provider: Option<&str>,
    status: impl FnOnce() -> TenantApiCredentialStatus,
) {
    let Some(c) = provider.and_then(|p| counts.get_mut(p)) else {
        return;
    };
    c.credentials = c.credentials.saturating_add(1);
    if conditions::is_true(&status().conditions, Type::Ready) {
        c.ready = c.ready.saturating_add(1);
    }
}

/// The status to write for a provider, or `None` when the object already holds it.
pub fn to_write(
    held: Option<&ApiProviderStatus>,
    generation: Option<i64>,
    verdict: Result<(), &Refusal>,
    name: &str,
    counts: Counts,
    now: Timestamp,
) -> Option<ApiProviderStatus> {
    let want = status::desired(held, generation, verdict, name, counts, now);
    (held != Some(&want)).then_some(want)
}

/// Whether a provider's definition changing wakes a credential naming `names`: `changed` is the
/// provider's name, or `None` when changes were missed (then every credential naming a provider
/// that is not built in is woken).
pub fn wakes(changed: Option<&str>, names: Option<&str>) -> bool {
    match (changed, names) {
        (Some(changed), Some(names)) => changed == names,
        (None, Some(names)) => !crate::decide::provider::builtin::is_builtin(names),
        (_, None) => false,
    }
}

/// Probes per minute of the last hour for one provider: what `probesLastHour` reports.
#[derive(Default)]
pub struct ProbesLastHour {
    /// (minute since the epoch, probes in it), oldest first, at most 60.
    minutes: VecDeque<(i64, u32)>,
}

impl ProbesLastHour {
    /// Counts a probe sent at `now`.
    pub fn add(&mut self, now: Timestamp) {
        let minute = now.as_second().div_euclid(60);
        match self.minutes.back_mut() {
            Some((m, n)) if *m == minute => *n = n.saturating_add(1),
            _ => self.minutes.push_back((minute, 1)),
        }
        self.trim(minute);
    }

    fn trim(&mut self, minute: i64) {
        while self.minutes.front().is_some_and(|(m, _)| *m <= minute - 60) {
            self.minutes.pop_front();
        }
    }

    /// Probes counted in the 60 minutes up to and including the one of `now`.
    pub fn at(&mut self, now: Timestamp) -> u32 {
        self.trim(now.as_second().div_euclid(60));
        self.minutes.iter().map(|(_, n)| *n).sum()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_an_operator_watching_every_namespace_reports() {
        assert!(reports(&[]));
        assert!(
            !reports(&["team-a".to_owned()]),
            "a namespaced one would overwrite another's counts"
        );
    }

    use super::*;
    use crate::testing::t;

    fn ready(is: bool) -> TenantApiCredentialStatus {
        let status = if is { "True" } else { "False" };
        serde_json::from_value(serde_json::json!({"conditions": [{
            "type": "Ready", "status": status, "reason": "Valid", "message": "",
            "lastTransitionTime": "2027-01-15T00:00:00Z"
        }]}))
        .expect("a status")
    }

    #[test]
    fn the_report_comes_every_five_minutes_give_or_take_ten_percent() {
        assert_eq!(next(Jitter::new(0.0)), Duration::from_secs(270));
        assert_eq!(next(Jitter::new(0.5)), Duration::from_secs(300));
        assert_eq!(next(Jitter::new(1.0)), Duration::from_secs(330));
    }

    #[test]
    fn credentials_count_for_the_defined_provider_they_name_and_ready_ones_twice() {
        let mut counts = HashMap::from([("github".to_owned(), Counts::default())]);
        count(&mut counts, Some("github"), || ready(true));
        count(&mut counts, Some("github"), || ready(false));
        count(&mut counts, Some("github"), TenantApiCredentialStatus::default);
        count(&mut counts, Some("gitlab"), || {
            unreachable!("not read for an undefined provider")
        });
        count(&mut counts, None, || {
            unreachable!("not read for a credential naming none")
        });
        assert_eq!(counts.len(), 1, "an undefined provider is not counted");
        assert_eq!(
            counts["github"],
            Counts {
                credentials: 3,
                ready: 1,
                probes_last_hour: 0
            }
        );
    }

    #[test]
    fn a_report_that_changes_nothing_is_not_written() {
        let counts = Counts {
            credentials: 2,
            ready: 1,
            probes_last_hour: 5,
        };
        let first = to_write(None, Some(1), Ok(()), "github", counts, t(0)).expect("nothing held yet");
        assert_eq!(to_write(Some(&first), Some(1), Ok(()), "github", counts, t(300)), None);
        let moved = Counts { ready: 2, ..counts };
        let second = to_write(Some(&first), Some(1), Ok(()), "github", moved, t(300)).expect("a count moved");
        assert_eq!(second.ready_credentials, 2);
        assert!(
            to_write(Some(&second), Some(2), Ok(()), "github", moved, t(600)).is_some(),
            "a new generation"
        );
    }

    #[test]
    fn a_changed_definition_wakes_the_credentials_naming_it() {
        assert!(wakes(Some("github"), Some("github")));
        assert!(!wakes(Some("github"), Some("gitlab")));
        assert!(!wakes(Some("github"), None), "a credential naming none");
        assert!(wakes(None, Some("github")), "changes missed: every defined provider's");
        assert!(!wakes(None, Some("raise")), "but no built-in provider's");
    }

    #[test]
    fn probes_are_counted_over_the_last_sixty_minutes() {
        let mut p = ProbesLastHour::default();
        p.add(t(0));
        p.add(t(30));
        p.add(t(600));
        assert_eq!(p.at(t(600)), 3);
        assert_eq!(p.at(t(3600)), 1, "the minutes of the first two left the hour");
        assert_eq!(p.at(t(4260)), 0);
    }
}
