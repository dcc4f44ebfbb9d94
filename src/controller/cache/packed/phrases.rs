//! The cached JSON text, packed with a fixed phrase book.
//!
//! Every cached credential repeats the same field names, default spec values and condition
//! messages: about three quarters of a status's 950 bytes of text, held 100,000 times. Each phrase of the
//! book is replaced by one byte that compact JSON never contains, a control character (serde_json
//! escapes them inside strings and writes no whitespace between tokens). Unpacking maps each such
//! byte back to its phrase.
//!
//! Correctness never depends on the book: a text the phrases do not match is kept as it is, and
//! a text that already holds a control character is kept verbatim behind a `\0` marker. The book
//! only decides how much is saved (a test checks it still matches what the planner writes).
//!
//! The text is packed where it was written, not copied out of a scratch buffer: at 10,000
//! credentials a packed copy made while the decoded JSON tree was still alive left the process
//! 8 MiB larger than no packing at all (fragmentation), where packing in place made it 6 MiB
//! smaller.

use std::borrow::Cow;

/// Phrase `i` is written as the byte `i + 1` (0x01 to 0x1f). Keys appear in the alphabetical
/// order `serde_json::Value` writes them in, so runs of keys and fixed values are phrases.
const PHRASES: [&str; 31] = [
    // The status: conditions and their fixed messages.
    r#"{"conditions":[{"lastTransitionTime":""#,
    r#"},{"lastTransitionTime":""#,
    r#"","message":""#,
    r#"","observedGeneration":"#,
    r#","reason":""#,
    r#"","status":"True","type":""#,
    r#"","status":"False","type":""#,
    r#"","status":"Unknown","type":""#,
    "the provider accepted token sha256:",
    " on the last decisive probe",
    "no credential-side failure",
    "the token declares no expiry",
    "the token expires at ",
    "AsExpected",
    "TokenValid",
    "ExpiringSoon",
    // The status: the fields after the conditions.
    r#""}],"consecutiveFailures":"#,
    r#","expiresAt":""#,
    r#","lastProbeHttpStatus":"#,
    r#","lastProbeResult":"Valid","lastProbeTime":""#,
    r#"","lastSuccessfulProbeTime":""#,
    r#"","nextProbeTime":""#,
    r#","rateLimit":{"limit":"#,
    r#","remaining":"#,
    r#","resetAt":""#,
    r#","secretName":""#,
    r#"","tokenFingerprint":"sha256:"#,
    // The spec, with the API server's defaults.
    r#"{"credentialRef":{"key":"token","name":""#,
    r#""},"expiry":{"warnBefore":"336h"},"probe":{"failureThreshold":3,"interval":""#,
    r#"","timeout":"10s"},"provider":""#,
    r#"","suspend":false,"target":{"deletionPolicy":"Delete"},"tenant":""#,
];

/// Marks a text kept verbatim because it holds a control character of its own.
const VERBATIM: char = '\0';

fn phrase(code: u8) -> Option<&'static str> {
    PHRASES.get(usize::from(code).checked_sub(1)?).copied()
}

/// For each byte, the phrases that start with it (bit `i` for phrase `i`): most positions of a
/// text start none, and are passed over with one lookup.
const STARTING_WITH: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < PHRASES.len() {
        table[PHRASES[i].as_bytes()[0] as usize] |= 1 << i;
        i += 1;
    }
    table
};

/// The longest phrase that `rest` starts with, and its code.
fn longest_at(rest: &[u8]) -> Option<(u8, usize)> {
    let mut candidates = STARTING_WITH[usize::from(*rest.first()?)];
    let mut best: Option<(u8, usize)> = None;
    while candidates != 0 {
        let i = candidates.trailing_zeros() as usize;
        candidates &= candidates - 1;
        let p = PHRASES[i].as_bytes();
        if rest.starts_with(p) && best.is_none_or(|(_, len)| p.len() > len) {
            // At most 31 phrases, so the code fits a byte.
            best = Some((i as u8 + 1, p.len()));
        }
    }
    best
}

/// Packs compact JSON text, in place: a phrase is never shorter than its code, so the packed
/// text is written over the text it is read from, and the allocation is kept (cut to size).
pub(super) fn pack(text: String) -> Box<str> {
    if text.bytes().any(|b| b < 0x20) {
        let mut verbatim = text;
        verbatim.insert(0, VERBATIM);
        return verbatim.into_boxed_str();
    }
    let mut bytes = text.into_bytes();
    let (mut read, mut write) = (0, 0);
    while read < bytes.len() {
        match longest_at(&bytes[read..]) {
            Some((code, len)) => {
                bytes[write] = code;
                read += len;
            }
            None => {
                bytes[write] = bytes[read];
                read += 1;
            }
        }
        write += 1;
    }
    bytes.truncate(write);
    // Phrases and codes are ASCII, so every other byte keeps its place in its character.
    String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        .into_boxed_str()
}

/// The text [`pack`] was given.
pub(super) fn unpack(packed: &str) -> Cow<'_, str> {
    if let Some(verbatim) = packed.strip_prefix(VERBATIM) {
        return Cow::Borrowed(verbatim);
    }
    if !packed.bytes().any(|b| b < 0x20) {
        return Cow::Borrowed(packed);
    }
    let mut out = String::with_capacity(packed.len() * 2);
    for c in packed.chars() {
        match u8::try_from(c).ok().and_then(phrase) {
            Some(p) => out.push_str(p),
            None => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TenantApiCredential;
    use crate::testing::credential;

    fn round_trip(text: &str) -> usize {
        let packed = pack(text.to_owned());
        assert_eq!(unpack(&packed), text, "packed as {packed:?}");
        packed.len()
    }

    /// The statuses the planner decides for a healthy credential (a token with an expiry and a
    /// rate-limit window, and one with neither), and a spec with the API server's defaults.
    fn typical() -> (Vec<String>, String) {
        use crate::decide::egress::Egress;
        use crate::decide::plan::{Input, ProbeStep, TokenFacts, decide};
        use crate::decide::schedule::Jitter;
        use crate::decide::token::{Fingerprint, Lifetime};
        use crate::decide::verdict::ProbeOutcome;
        use crate::testing::t;

        let tac: TenantApiCredential = credential(
            "acme-raise",
            serde_json::json!({"tenant": "acme", "provider": "raise",
                               "credentialRef": {"name": "acme-raise-input", "key": "token"}}),
        );
        let settings = crate::testing::resolve_builtin(&tac, &Egress::default()).expect("resolves");
        let statuses = [Some(t(90 * 86_400)), None].map(|expires_at| {
            let token = TokenFacts {
                fingerprint: Fingerprint::of(b"token"),
                lifetime: Lifetime {
                    not_before: None,
                    expires_at,
                },
                refresh_lapses: None,
            };
            let mut answer = ProbeOutcome::answered(200);
            if expires_at.is_some() {
                answer.rate_limit.limit = Some(1000);
                answer.rate_limit.remaining = Some(999);
                answer.rate_limit.reset_at = Some(t(3600));
            }
            let decided = decide(&Input {
                generation: Some(1),
                observed: &Default::default(),
                settings: Some(&settings),
                token: Some(&token),
                problem: None,
                probe: &ProbeStep::Sent(Box::new(answer)),
                rotation: None,
                probe_request: None,
                now: t(0),
                jitter: Jitter::new(0.5),
            });
            let mut written = tac.clone();
            written.status = Some(decided.status);
            let value = serde_json::to_value(&written).expect("serializes");
            value["status"].to_string()
        });
        // The spec as the API server holds it: what was applied, with the schema's defaults.
        let spec = serde_json::json!({
            "tenant": "acme", "provider": "raise", "credentialRef": {"name": "acme-raise-input", "key": "token"},
            "expiry": {"warnBefore": "336h"}, "probe": {"failureThreshold": 3, "interval": "15m", "timeout": "10s"},
            "suspend": false, "target": {"deletionPolicy": "Delete"},
        });
        let typed: crate::crd::TenantApiCredentialSpec = serde_json::from_value(spec.clone()).expect("a spec");
        assert_eq!(
            serde_json::to_value(typed).expect("serializes"),
            spec,
            "the defaults are the types' own"
        );
        (statuses.to_vec(), spec.to_string())
    }

    #[test]
    fn what_the_planner_writes_packs_to_less_than_half() {
        let (statuses, spec) = typical();
        for text in statuses.iter().chain([&spec]) {
            let packed = round_trip(text);
            assert!(packed * 2 < text.len(), "{} -> {packed}: {text}", text.len());
        }
    }

    #[test]
    fn every_phrase_is_something_the_planner_or_the_schema_writes() {
        let (statuses, spec) = typical();
        let all = format!("{} {spec}", statuses.join(" "));
        for p in PHRASES {
            // A Ready of Unknown (probing, or an outage) is written like one of True.
            let p = p.replace("Unknown", "True");
            assert!(all.contains(&p), "{p:?} appears in none of {all}");
        }
    }

    #[test]
    fn any_text_comes_back_as_it_was() {
        for text in [
            "",
            "{}",
            r#"{"a":"ünïcode ✓","b":[1,2]}"#,
            "a text with a raw \u{1} control character and \0 a nul",
            "\0starts with the marker",
            r#""},{"lastTransitionTime":"#,
            r#"{"message":"TokenValidTokenValid AsExpected"}"#,
        ] {
            round_trip(text);
        }
    }

    #[test]
    fn every_code_is_a_control_character_compact_json_never_holds() {
        assert!(PHRASES.len() < 0x20);
        for p in PHRASES {
            assert!(!p.is_empty() && p.bytes().all(|b| b >= 0x20), "{p:?}");
        }
    }
}
