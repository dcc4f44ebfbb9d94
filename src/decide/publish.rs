//! Whether a decided status is worth a write. The API server is shared and every write is paid
//! for, so the status is written when something a reader acts on changed — the verdict, a reason
//! or message, the token, its expiry, a rotation, a handled probe request, the generation, or
//! rate-limit headroom crossing a threshold — and otherwise at most once an hour as a heartbeat,
//! so `lastProbeTime` never lags the truth by more than that. Per-probe instants live in memory
//! (the schedule) and in metrics.

use std::time::Duration;

use jiff::Timestamp;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{RateLimitScope, RateLimitStatus, TenantApiCredentialStatus};
use crate::decide::schedule;

/// The heartbeat: the longest a status goes unwritten while probes keep confirming it. Spread
/// per credential over [`HEARTBEAT`, `HEARTBEAT` + [`HEARTBEAT_SPREAD`]) so they never bunch up.
pub const HEARTBEAT: Duration = Duration::from_secs(3600);
pub const HEARTBEAT_SPREAD: Duration = Duration::from_secs(600);

/// The fields that change at every probe without changing what a reader would do. The operator
/// keeps one per credential between writes, so instants are whole seconds (all a status holds):
/// 80 bytes, where the status's own types take 144.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Volatile {
    last_probe_time: Seconds,
    last_successful_probe_time: Seconds,
    next_probe_time: Seconds,
    last_probe_http_status: Option<u16>,
    rate_limit: Option<Limits>,
}

/// `RateLimitStatus`, with its instant in whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Limits {
    limit: Option<u64>,
    remaining: Option<u64>,
    reset_at: Seconds,
    held_back: Option<RateLimitScope>,
}

/// An optional instant as whole Unix seconds; none is `i64::MIN`, which no `Timestamp` has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seconds(i64);

impl Default for Seconds {
    fn default() -> Self {
        Self::NONE
    }
}

impl Seconds {
    const NONE: Self = Self(i64::MIN);

    fn of(t: Option<&Time>) -> Self {
        t.map_or(Self::NONE, |t| Self(t.0.as_second()))
    }

    fn time(self) -> Option<Time> {
        (self != Self::NONE)
            .then(|| Timestamp::from_second(self.0).ok())
            .flatten()
            .map(Time)
    }
}

impl Volatile {
    pub fn of(s: &TenantApiCredentialStatus) -> Self {
        Self {
            last_probe_time: Seconds::of(s.last_probe_time.as_ref()),
            last_successful_probe_time: Seconds::of(s.last_successful_probe_time.as_ref()),
            next_probe_time: Seconds::of(s.next_probe_time.as_ref()),
            last_probe_http_status: s.last_probe_http_status,
            rate_limit: s.rate_limit.as_ref().map(|r| Limits {
                limit: r.limit,
                remaining: r.remaining,
                reset_at: Seconds::of(r.reset_at.as_ref()),
                held_back: r.held_back,
            }),
        }
    }

    /// The status as last decided: what was written, with the newer per-probe fields on top.
    pub fn overlay(self, s: &mut TenantApiCredentialStatus) {
        s.last_probe_time = self.last_probe_time.time();
        s.last_successful_probe_time = self.last_successful_probe_time.time();
        s.next_probe_time = self.next_probe_time.time();
        s.last_probe_http_status = self.last_probe_http_status;
        s.rate_limit = self.rate_limit.map(|r| RateLimitStatus {
            limit: r.limit,
            remaining: r.remaining,
            reset_at: r.reset_at.time(),
            held_back: r.held_back,
        });
    }
}

/// How much of the provider's rate limit is left, in the steps a reader acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Headroom {
    Unknown,
    /// Less than 10% left.
    Low,
    /// 10% to 50% left.
    Half,
    Plenty,
}

impl Headroom {
    pub fn of(r: Option<&RateLimitStatus>) -> Self {
        match r.and_then(|r| Some((r.remaining?, r.limit?))) {
            Some((_, 0)) | None => Self::Unknown,
            Some((left, limit)) if left * 10 < limit => Self::Low,
            Some((left, limit)) if left * 2 < limit => Self::Half,
            Some(_) => Self::Plenty,
        }
    }
}

/// What a reader acts on: the status without the per-probe fields, with the rate limit reduced
/// to its limit and headroom step.
fn significant(s: &TenantApiCredentialStatus) -> (TenantApiCredentialStatus, Option<u64>, Headroom) {
    let mut rest = s.clone();
    Volatile::default().overlay(&mut rest);
    (
        rest,
        s.rate_limit.as_ref().and_then(|r| r.limit),
        Headroom::of(s.rate_limit.as_ref()),
    )
}

/// A credential's place in the heartbeat window, from its uid and name: the same in every process
/// and every build (FNV-1a: std's hasher may change between Rust releases, which would move every
/// credential's heartbeat at an upgrade).
pub fn spread(uid: Option<&str>, name: Option<&str>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let uid = uid.unwrap_or_default().bytes();
    // 0xff never occurs in UTF-8: "ab" + "c" and "a" + "bc" differ.
    let bytes = uid.chain([0xff]).chain(name.unwrap_or_default().bytes());
    bytes.fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// Whether `desired` must be written over `persisted` at `now`. `spread` (a per-credential
/// [`spread`]) places the heartbeat within its window.
pub fn needs_write(
    persisted: &TenantApiCredentialStatus,
    desired: &TenantApiCredentialStatus,
    now: Timestamp,
    spread: u64,
) -> bool {
    if significant(persisted) != significant(desired) {
        return true;
    }
    if Volatile::of(persisted) == Volatile::of(desired) {
        return false;
    }
    // Nothing a reader acts on changed: only the heartbeat says "still confirmed".
    let window = HEARTBEAT + Duration::from_secs(spread % HEARTBEAT_SPREAD.as_secs().max(1));
    match (&persisted.last_probe_time, &desired.last_probe_time) {
        (Some(written), Some(latest)) => latest.0 > written.0 && schedule::until(written.0, now) >= window,
        (None, Some(_)) => true,
        _ => false,
    }
}

/// The body of a JSON merge patch (RFC 7386) that turns `old` into `new`: every field of `new`,
/// and a null for each field `old` has that `new` lacks, in nested objects too (lists are
/// replaced whole). The status is written this way, not by server-side apply: a merge patch
/// spares the API server the structured merge against the schema and the field-ownership
/// bookkeeping of an apply, which made a cold start of 10,000 credentials take a third longer.
pub fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in new {
                let patched = match old.get(k) {
                    Some(was) => merge_patch(was, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), patched);
            }
            for k in old.keys().filter(|k| !new.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ProbeResult;

    #[test]
    fn a_credentials_heartbeat_place_is_the_same_in_every_build_and_its_own() {
        // FNV-1a of "uid-1", 0xff, "c": fixed, whatever the Rust release.
        assert_eq!(spread(Some("uid-1"), Some("c")), 11_631_478_725_697_705_493);
        assert_ne!(spread(Some("uid-1"), Some("c")), spread(Some("uid-2"), Some("c")));
        assert_ne!(spread(Some("ab"), Some("c")), spread(Some("a"), Some("bc")));
    }
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use crate::testing::t as at;

    fn probed(secs: i64, remaining: u64) -> TenantApiCredentialStatus {
        TenantApiCredentialStatus {
            last_probe_result: Some(ProbeResult::Valid),
            last_probe_time: Some(Time(at(secs))),
            last_successful_probe_time: Some(Time(at(secs))),
            next_probe_time: Some(Time(at(secs + 900))),
            last_probe_http_status: Some(200),
            rate_limit: Some(RateLimitStatus {
                limit: Some(1000),
                remaining: Some(remaining),
                reset_at: None,
                held_back: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn merge_patch_sets_every_field_and_nulls_what_went() {
        let old = serde_json::json!({"a": 1, "gone": "x", "nested": {"keep": 1, "drop": 2}, "list": [1, 2]});
        let new = serde_json::json!({"a": 2, "nested": {"keep": 1}, "list": [3], "added": true});
        assert_eq!(
            merge_patch(&old, &new),
            serde_json::json!({"a": 2, "gone": null, "nested": {"keep": 1, "drop": null}, "list": [3], "added": true})
        );
        // Applying the patch to `old` (RFC 7386) gives `new`.
        let mut applied = old.clone();
        json_patch::merge(&mut applied, &merge_patch(&old, &new));
        assert_eq!(applied, new);
    }

    #[test]
    fn a_probe_that_confirms_the_verdict_writes_nothing_until_the_heartbeat() {
        let written = probed(0, 990);
        let confirmed = probed(900, 980);
        assert!(!needs_write(&written, &confirmed, at(900), 0));
        assert!(!needs_write(&written, &confirmed, at(3599), 0));
        let later = probed(3600, 975);
        assert!(needs_write(&written, &later, at(3600), 0), "the hourly heartbeat");
        assert!(!needs_write(&written, &later, at(3600), 599), "spread over ten minutes");
        assert!(needs_write(&written, &probed(4199, 975), at(4199), 599));
    }

    #[test]
    fn what_a_reader_acts_on_is_written_at_once() {
        let written = probed(0, 990);
        let mut failing = probed(60, 990);
        failing.last_probe_result = Some(ProbeResult::Unauthorized);
        failing.consecutive_failures = 1;
        assert!(needs_write(&written, &failing, at(60), 0));
        assert!(
            needs_write(&written, &probed(60, 400), at(60), 0),
            "headroom fell below half"
        );
        assert!(needs_write(&written, &probed(60, 50), at(60), 0), "and below 10%");
        let mut asked = probed(60, 990);
        asked.last_handled_probe_request = Some("2026-11-22T10:00:00Z".into());
        assert!(needs_write(&written, &asked, at(60), 0), "a probe-now is answered");
    }

    #[test]
    fn the_same_status_is_never_written_again() {
        let written = probed(0, 990);
        assert!(!needs_write(&written, &written.clone(), at(100_000), 0));
    }

    #[test]
    fn overlay_restores_the_decided_status() {
        let written = probed(0, 990);
        let decided = probed(900, 980);
        let mut current = written.clone();
        Volatile::of(&decided).overlay(&mut current);
        assert_eq!(current, decided);
    }

    #[test]
    fn what_is_kept_between_writes_is_what_a_status_holds() {
        let mut decided = probed(900, 980);
        // The instants of a decision carry nanoseconds; a status (and what is kept) whole seconds.
        let precise = at(900)
            .checked_add(jiff::SignedDuration::from_millis(750))
            .expect("in range");
        decided.last_probe_time = Some(Time(precise));
        if let Some(r) = decided.rate_limit.as_mut() {
            r.reset_at = Some(Time(at(3600)));
            r.held_back = Some(RateLimitScope::Key);
        }
        let mut current = probed(0, 990);
        Volatile::of(&decided).overlay(&mut current);
        let written: TenantApiCredentialStatus =
            serde_json::from_value(serde_json::to_value(&decided).expect("serializes")).expect("reads back");
        assert_eq!(current, written, "the same as the decision written and read back");
        assert_eq!(Volatile::of(&current), Volatile::of(&decided));
        let mut none = probed(0, 990);
        none.rate_limit = None;
        none.next_probe_time = None;
        Volatile::of(&TenantApiCredentialStatus::default()).overlay(&mut none);
        assert_eq!(none.last_probe_time, None);
        assert_eq!(none.rate_limit, None);
        assert!(std::mem::size_of::<Volatile>() <= 80);
    }
}
