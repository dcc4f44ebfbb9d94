//! The probe's policies, one rule a test.

use super::*;
use crate::decide::egress::Egress;
use crate::decide::verdict::RateLimit;
use crate::testing::{credential, resolve_builtin, t};

fn settings() -> Settings {
    let tac = credential(
        "c",
        serde_json::json!({"tenant": "acme", "provider": "raise", "credentialRef": {"name": "src"}}),
    );
    resolve_builtin(&tac, &Egress::default()).expect("resolves")
}

fn sent(outcome: ProbeOutcome) -> ProbeStep {
    ProbeStep::Sent(Box::new(ProbeOutcome {
        rules: settings().profile.probe.statuses.clone(),
        ..outcome
    }))
}

fn token() -> Token {
    Token::new("tok")
}

#[test]
fn an_answer_about_the_token_is_shared_counted_and_stamped_in_whole_seconds() {
    let at = t(10)
        .checked_add(jiff::SignedDuration::from_millis(700))
        .expect("in range");
    let after = after(
        &sent(ProbeOutcome::answered(401)),
        &settings(),
        &token(),
        &token().fingerprint(),
        at,
    )
    .expect("something to tell");
    assert_eq!(
        after.share,
        Some((key(&settings(), &token()), Heard { at: t(10), status: 401 }))
    );
    assert_eq!(after.count.map(|c| c.result), Some(ProbeResult::Unauthorized));
    assert_eq!(after.back_off, None);
}

#[test]
fn a_refused_egress_connection_is_neither_a_probe_nor_an_outage() {
    let refused = ProbeOutcome {
        transport: Transport::NotAllowed("api.raise.example resolves to 10.0.0.1".into()),
        ..ProbeOutcome::answered(0)
    };
    assert_eq!(
        after(&sent(refused), &settings(), &token(), &token().fingerprint(), t(0)),
        None
    );
}

#[test]
fn a_timeout_is_counted_as_an_outage_and_never_shared() {
    let timeout = ProbeOutcome {
        transport: Transport::Timeout,
        ..ProbeOutcome::answered(0)
    };
    let after = after(&sent(timeout), &settings(), &token(), &token().fingerprint(), t(0)).expect("counted");
    assert_eq!(after.share, None);
    assert_eq!(after.count.map(|c| c.result), Some(ProbeResult::Unavailable));
}

#[test]
fn a_429_is_not_shared_and_holds_the_key_back_as_long_as_the_provider_asked() {
    let limited = ProbeOutcome {
        retry_after: Some(t(120)),
        rate_limit: RateLimit {
            reset_at: Some(t(300)),
            ..RateLimit::default()
        },
        ..ProbeOutcome::answered(429)
    };
    let key = Fingerprint::of(b"account");
    let after = after(&sent(limited), &settings(), &token(), &key, t(0)).expect("a back-off");
    assert_eq!(after.share, None, "a rate limit is the key's budget's business");
    assert_eq!(after.count.map(|c| c.result), Some(ProbeResult::RateLimited));
    let back_off = after.back_off.expect("held back");
    assert_eq!(
        (back_off.key, back_off.until),
        (key, t(300)),
        "the later of Retry-After and the reset"
    );
    assert_eq!(back_off.host, settings().host());
}

#[test]
fn nothing_sent_asks_nothing_of_anyone() {
    for step in [ProbeStep::None, ProbeStep::Expired, ProbeStep::Deferred(t(60))] {
        assert_eq!(after(&step, &settings(), &token(), &token().fingerprint(), t(0)), None);
    }
}

#[test]
fn a_held_probe_waits_until_the_budget_allows_and_a_busy_one_comes_back_within_patience() {
    let jitter = Jitter::new(0.5);
    assert_eq!(step(Attempt::Held(t(90)), t(0), jitter), ProbeStep::Deferred(t(90)));
    assert_eq!(
        step(Attempt::Busy, t(0), jitter),
        ProbeStep::Deferred(busy_until(t(0), jitter))
    );
}

#[test]
fn another_credentials_recent_answer_about_the_same_token_answers_instead() {
    let s = settings();
    let heard = Heard {
        at: t(100),
        status: 200,
    };
    let half = i64::try_from(s.interval.effective.as_secs() / 2).expect("small");
    let step = shared(Some(heard), Some(t(50)), &s, t(100 + half)).expect("answered");
    assert_eq!(step.result(), Some(ProbeResult::Valid));
    assert_eq!(shared(Some(heard), Some(t(50)), &s, t(101 + half)), None, "too old");
    assert_eq!(shared(Some(heard), Some(t(100)), &s, t(130)), None, "its own answer");
    assert_eq!(shared(None, None, &s, t(130)), None, "nothing heard");
}
