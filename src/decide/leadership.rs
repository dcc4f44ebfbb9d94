//! Whether this replica may act (write to the API server, send a probe or a token request): only
//! while it holds the leader lease, and only until that lease lapses by the Lease object's own
//! account. The second half is the fence: a leader that was paused (SIGSTOP, a frozen VM) or cut
//! off from the API server may still believe it leads; the lease it last renewed says otherwise
//! the moment it runs again, before its first write.

use std::time::Duration;

use jiff::Timestamp;

/// How long a leader's lease lasts unrenewed: a standby takes over at most this long after the
/// leader stops renewing (dies, freezes, loses the API server), plus its watch's notice.
pub const LEASE_SECONDS: u64 = 15;

/// How long before the lease lapses the leader renews it: room for one slow renewal.
pub const LEASE_GRACE_SECONDS: u64 = 5;

/// What the replica knows of its lease.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// The lease manager says we hold it.
    pub held: bool,
    /// Until when we may act on the lease we hold (`act_until`), as the Lease object last showed
    /// it with us as holder. `None`: not seen yet.
    pub act_until: Option<Timestamp>,
}

/// Whether to act now.
pub fn acting(lease: Lease, now: Timestamp) -> bool {
    lease.held && lease.act_until.is_some_and(|until| now < until)
}

/// Until when the holder of a lease may act: its `renewTime` plus its duration, less a margin
/// (a tenth of the duration, at most a second), because the standby takes over at the lapse by
/// its own clock, and clocks differ a little. The holder renews well before that (at the
/// duration less the grace), so a live leader never reaches it. `None` unless `me` holds it.
pub fn act_until(
    holder: Option<&str>,
    me: &str,
    renewed: Option<Timestamp>,
    duration_seconds: Option<i32>,
) -> Option<Timestamp> {
    let duration = Duration::from_secs(u64::try_from(duration_seconds?).ok()?);
    (holder? == me).then_some(())?;
    let margin = (duration / 10).min(Duration::from_secs(1));
    Some(crate::decide::schedule::add(renewed?, duration.saturating_sub(margin)))
}

/// When this replica could begin to act: it leads and its caches hold a full list (on a cold
/// start the lease comes first and reconciles wait for the lists; a warm standby listed long
/// before it led). Probes due before then are overdue (`schedule::catch_up`).
pub fn acting_since(leading_since: Timestamp, listed_at: Option<Timestamp>) -> Timestamp {
    listed_at.map_or(leading_since, |listed| listed.max(leading_since))
}

/// This replica's part, as `/readyz` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not known yet (the election has not answered).
    Unknown,
    Leader,
    Standby,
}

/// Whether `/readyz` says ready, and what it says. A standby is ready either way (it takes
/// nothing from the Service); what it says tells whether a takeover would start from full
/// caches. A leader is ready once every cache holds a full list.
pub fn readiness(role: Role, caches_listed: bool) -> Result<&'static str, &'static str> {
    match (role, caches_listed) {
        (Role::Standby, true) => Ok("standby: caches synced; another replica holds the lease"),
        (Role::Standby, false) => Ok("standby: listing; another replica holds the lease"),
        (Role::Leader, true) => Ok("leader: caches synced"),
        (Role::Leader, false) => Err("leader: caches not synced yet"),
        (Role::Unknown, _) => Err("leadership not known yet"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).expect("time")
    }

    #[test]
    fn acting_begins_with_the_later_of_the_lease_and_the_lists() {
        assert_eq!(
            acting_since(at(10), Some(at(40))),
            at(40),
            "a cold start: the lists came last"
        );
        assert_eq!(
            acting_since(at(40), Some(at(10))),
            at(40),
            "a warm standby: the lease came last"
        );
        assert_eq!(acting_since(at(10), None), at(10));
    }

    #[test]
    fn a_leader_acts_until_its_lease_lapses_less_the_margin() {
        let lease = Lease {
            held: true,
            act_until: act_until(Some("me"), "me", Some(at(0)), Some(15)),
        };
        assert_eq!(lease.act_until, Some(at(14)), "15 s less one");
        assert!(acting(lease, at(0)));
        assert!(acting(lease, at(13)));
        assert!(!acting(lease, at(14)), "within the margin");
        assert!(!acting(lease, at(60)), "after a pause longer than the lease");
        assert!(!acting(Lease { held: false, ..lease }, at(0)), "the manager says lost");
        assert!(
            !acting(
                Lease {
                    act_until: None,
                    ..lease
                },
                at(0)
            ),
            "not seen renewed yet"
        );
        // A short lease keeps a tenth as its margin, so renewals (at the grace) come first.
        let short = act_until(Some("me"), "me", Some(at(0)), Some(2)).expect("held");
        assert_eq!(short.duration_since(at(0)).as_millis(), 1800);
    }

    #[test]
    fn only_the_lease_we_hold_lets_us_act() {
        assert!(act_until(Some("other"), "me", Some(at(0)), Some(15)).is_none());
        assert!(act_until(None, "me", Some(at(0)), Some(15)).is_none());
        assert!(act_until(Some("me"), "me", None, Some(15)).is_none());
        assert!(act_until(Some("me"), "me", Some(at(0)), Some(-1)).is_none());
    }

    #[test]
    fn a_standby_is_ready_and_a_leader_once_its_caches_are_listed() {
        assert!(
            readiness(Role::Standby, false).is_ok(),
            "takes nothing from the Service"
        );
        assert!(readiness(Role::Standby, true).is_ok_and(|m| m.contains("caches synced")));
        assert!(readiness(Role::Leader, false).is_err());
        assert_eq!(readiness(Role::Leader, true), Ok("leader: caches synced"));
        assert!(readiness(Role::Unknown, true).is_err());
    }
}
