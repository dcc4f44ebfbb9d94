//! One probe per distinct token: credentials that hold the same token for the same provider
//! request (in any namespace) share what the latest probe of it heard, so a token copied into
//! fifty namespaces costs its customer one probe an interval, not fifty. Each credential still
//! decides its own status from the shared answer.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use jiff::Timestamp;

use crate::decide::schedule;
use crate::decide::token::Fingerprint;

/// What identifies a probe: the token, and the request it is sent in (the provider's way of
/// sending it, the URL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    token: u64,
    request: u64,
}

impl ProbeKey {
    pub fn new(provider: &str, url: &str, token: &Fingerprint) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (provider, url).hash(&mut h);
        Self {
            token: token.key(),
            request: h.finish(),
        }
    }
}

/// An answer a probe heard: when, and the HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    pub at: Timestamp,
    pub status: u16,
}

/// Only answers about the token are shared: a rate limit (429) is the key's budget's business,
/// and an outage is retried by each credential on its own schedule.
pub fn worth_sharing(status: u16) -> bool {
    status != 429 && ((200..300).contains(&status) || (400..500).contains(&status))
}

/// Whether `heard` answers for a credential whose probe is due at `now`: it came after the
/// credential's own latest probe (so a confirmation of a 401 is always another request, never
/// the same answer counted twice), and within half of the credential's interval.
pub fn answers_for(heard: Heard, last_probe: Option<Timestamp>, now: Timestamp, interval: Duration) -> bool {
    let newer = last_probe.is_none_or(|last| heard.at > last);
    let fresh = heard.at <= now && schedule::until(heard.at, now) <= interval / 2;
    newer && fresh
}

/// Answers between two sweeps of the ones too old to answer for anyone.
const SWEEP_EVERY: u64 = 4096;

/// The latest answer about each token, per request: what credentials holding the same token
/// share instead of probing again. An answer an hour old answers for no interval the schema
/// allows, so it is forgotten.
#[derive(Default)]
pub struct Answers {
    heard: HashMap<ProbeKey, Heard>,
    since_sweep: u64,
}

impl Answers {
    /// The latest answer a probe of this token, in this request, heard.
    pub fn get(&self, key: &ProbeKey) -> Option<Heard> {
        self.heard.get(key).copied()
    }

    /// Records what a probe heard.
    pub fn hear(&mut self, key: ProbeKey, heard: Heard) {
        self.heard.insert(key, heard);
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            let hour_ago = heard.at - jiff::SignedDuration::from_hours(1);
            self.heard.retain(|_, h| h.at > hour_ago);
        }
    }

    pub fn len(&self) -> usize {
        self.heard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heard.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::t;

    #[test]
    fn a_recent_answer_newer_than_the_credentials_own_is_shared() {
        let interval = Duration::from_secs(900);
        let heard = Heard {
            at: t(100),
            status: 200,
        };
        assert!(answers_for(heard, None, t(100), interval));
        assert!(answers_for(heard, Some(t(50)), t(550), interval));
        assert!(
            !answers_for(heard, Some(t(50)), t(551), interval),
            "older than half an interval"
        );
        assert!(!answers_for(heard, Some(t(100)), t(130), interval), "already counted");
        assert!(!answers_for(heard, None, t(99), interval), "not from the future");
    }

    #[test]
    fn only_answers_about_the_token_are_shared() {
        assert!(worth_sharing(200) && worth_sharing(401) && worth_sharing(403) && worth_sharing(404));
        assert!(!worth_sharing(429) && !worth_sharing(503) && !worth_sharing(302));
    }

    #[test]
    fn the_key_tells_requests_and_tokens_apart() {
        let a = Fingerprint::of(b"a");
        let b = Fingerprint::of(b"b");
        let k = ProbeKey::new("github", "https://api.github.com/rate_limit", &a);
        assert_eq!(k, ProbeKey::new("github", "https://api.github.com/rate_limit", &a));
        assert_ne!(k, ProbeKey::new("github", "https://api.github.com/rate_limit", &b));
        assert_ne!(k, ProbeKey::new("github", "https://api.github.com/user", &a));
        assert_ne!(k, ProbeKey::new("gitlab", "https://api.github.com/rate_limit", &a));
    }

    #[test]
    fn answers_an_hour_old_are_forgotten() {
        let mut answers = Answers::default();
        let old = ProbeKey::new("p", "u", &Fingerprint::of(b"old"));
        answers.hear(old, Heard { at: t(0), status: 200 });
        assert_eq!(answers.get(&old), Some(Heard { at: t(0), status: 200 }));
        for i in 1..SWEEP_EVERY {
            let key = ProbeKey::new("p", "u", &Fingerprint::of(&i.to_be_bytes()));
            answers.hear(
                key,
                Heard {
                    at: t(3600),
                    status: 200,
                },
            );
        }
        assert_eq!(answers.get(&old), None);
        assert_eq!(answers.len(), SWEEP_EVERY as usize - 1);
    }
}
