//! An `ApiProvider`'s status: whether its definition is accepted, and its credentials at a glance.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::definition::Refusal;
use crate::crd::provider::ApiProviderStatus;
use crate::decide::conditions;

/// What the operator counted for one provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub credentials: u32,
    pub ready: u32,
    pub probes_last_hour: u32,
}

/// The status a provider should have. `lastTransitionTime` moves only when a condition flips.
pub fn desired(
    observed: Option<&ApiProviderStatus>,
    generation: Option<i64>,
    verdict: Result<(), &Refusal>,
    name: &str,
    counts: Counts,
    now: Timestamp,
) -> ApiProviderStatus {
    let now = conditions::truncate(now);
    let (accepted, ready) = match verdict {
        Ok(()) => (
            condition("Accepted", true, "Accepted", "the definition is in use".into()),
            condition(
                "Ready",
                true,
                "Ready",
                format!(
                    "{} credentials name this provider, {} of them Ready",
                    counts.credentials, counts.ready
                ),
            ),
        ),
        Err(refusal) => (
            condition("Accepted", false, refusal.reason(), refusal.message(name)),
            condition(
                "Ready",
                false,
                "NotAccepted",
                format!(
                    "the definition is not accepted; its {} credentials report ProviderNotAccepted and keep their managed Secrets",
                    counts.credentials
                ),
            ),
        ),
    };
    let previous = observed.map(|o| o.conditions.as_slice()).unwrap_or_default();
    let conditions = [accepted, ready]
        .into_iter()
        .map(|mut c| {
            c.observed_generation = generation;
            let kept = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
                .map(|p| p.last_transition_time.clone());
            c.last_transition_time = kept.unwrap_or(Time(now));
            c
        })
        .collect();
    ApiProviderStatus {
        observed_generation: generation,
        credentials: counts.credentials,
        ready_credentials: counts.ready,
        probes_last_hour: counts.probes_last_hour,
        conditions,
    }
}

fn condition(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: None,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_move_only_when_a_condition_flips() {
        let t0 = Timestamp::from_second(1_800_000_000).expect("valid");
        let t1 = Timestamp::from_second(1_800_000_600).expect("valid");
        let counts = Counts {
            credentials: 3,
            ready: 2,
            probes_last_hour: 7,
        };
        let first = desired(None, Some(1), Ok(()), "github", counts, t0);
        assert_eq!(first.conditions[0].type_, "Accepted");
        assert_eq!(
            first.conditions[1].message,
            "3 credentials name this provider, 2 of them Ready"
        );
        let again = desired(
            Some(&first),
            Some(1),
            Ok(()),
            "github",
            Counts { ready: 3, ..counts },
            t1,
        );
        assert_eq!(again.conditions[0].last_transition_time, Time(t0));
        let refused = Refusal::InvalidDefinition("hosts: \"10.0.0.1\" is an address".into());
        let bad = desired(Some(&again), Some(2), Err(&refused), "github", counts, t1);
        assert_eq!(bad.conditions[0].status, "False");
        assert_eq!(bad.conditions[0].reason, "InvalidDefinition");
        assert_eq!(bad.conditions[0].last_transition_time, Time(t1));
        assert_eq!(bad.conditions[1].reason, "NotAccepted");
        assert_eq!(bad.observed_generation, Some(2));
    }
}
