//! What `tenantcred check` prints of a probe: the verdict and the shapes of the answer (see
//! `decide::error_body`). The provider's own text only with `--show-body`, to the terminal of the
//! person who asked, after a warning: it may echo the token they sent.

use std::fmt::Write as _;

use crate::crd::ProbeResult;
use crate::decide::verdict::{ProbeOutcome, Transport, TransportFailure};

pub(super) fn outcome(out: &mut String, result: ProbeResult, o: &ProbeOutcome) {
    let _ = writeln!(out, "verdict:      {}", result.as_str());
    let http = match &o.transport {
        Transport::Answered(s) => s.to_string(),
        Transport::Timeout => "none (timed out)".into(),
        Transport::Failed(TransportFailure::Connect) => "none (could not connect)".into(),
        Transport::Failed(TransportFailure::Redirect) => "none (a redirect, not followed)".into(),
        Transport::Failed(TransportFailure::Unsendable) => "none (the token cannot be sent as an HTTP header)".into(),
        Transport::Failed(TransportFailure::Other) => "none (the request failed)".into(),
        Transport::NotAllowed(why) => format!("none ({why})"),
    };
    let _ = writeln!(out, "http status:  {http}");
    let _ = writeln!(out, "took:         {} ms", o.elapsed.as_millis());
    let rl = &o.rate_limit;
    if !rl.is_empty() {
        let _ = writeln!(
            out,
            "rate limit:   {} of {} left{}",
            rl.remaining.map_or("?".into(), |r| r.to_string()),
            rl.limit.map_or("?".into(), |l| l.to_string()),
            rl.reset_at.map(|r| format!(", window resets {r}")).unwrap_or_default()
        );
    }
    if let Some(until) = o.back_off_until() {
        let _ = writeln!(out, "retry after:  {until}");
    }
    if let Some(at) = o.stated_expiry {
        let _ = writeln!(out, "expires:      {at} (stated by the provider's answer)");
    }
    if let Some(body) = &o.error_body {
        let _ = writeln!(out, "answer:       {body} (--show-body prints its text)");
    }
}

/// Said on stderr before `--show-body` prints a body.
pub const BODY_WARNING: &str = "tenantcred check: the provider's answer follows as it was read; it may repeat the token you sent: keep it out of tickets, chats and logs";

/// The most of a body `--show-body` prints, in characters.
pub const SHOWN_BODY_CHARS: usize = 8 * 1024;

/// An error body as `--show-body` prints it: bounded, with every character `decide::text` keeps
/// off terminals (controls, direction-changing and invisible formatting) but the line feed
/// escaped, so the provider's bytes cannot drive the terminal. Its `Debug` says only its length.
pub struct ShownBody(String);

impl ShownBody {
    pub fn of(raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let mut shown = String::with_capacity(text.len().min(SHOWN_BODY_CHARS));
        let mut chars = text.chars();
        for c in chars.by_ref().take(SHOWN_BODY_CHARS) {
            // The one list of what never reaches a terminal raw (`decide::text`), but the line feed.
            if crate::decide::text::is_control(c) && c != '\n' {
                shown.extend(c.escape_unicode());
            } else {
                shown.push(c);
            }
        }
        let rest = chars.count();
        if rest > 0 {
            let _ = write!(shown, "\n… {rest} more characters not shown");
        }
        Self(shown)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ShownBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShownBody(<{} chars>)", self.0.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_body_cannot_drive_the_terminal_and_is_bounded() {
        let shown = ShownBody::of(b"line 1\r\nline 2\x1b[2J\x07\xe2\x80\xae\xff");
        assert_eq!(shown.as_str(), "line 1\\u{d}\nline 2\\u{1b}[2J\\u{7}\\u{202e}\u{fffd}");
        let long = ShownBody::of(&[b'x'; SHOWN_BODY_CHARS + 10]);
        assert!(long.as_str().ends_with("\n… 10 more characters not shown"), "{long:?}");
        assert!(!format!("{long:?}").contains('x'));
    }

    /// Every character the operator keeps off terminals is escaped here too, whatever list a
    /// shown body once had of its own.
    #[test]
    fn a_shown_body_escapes_every_character_decide_text_keeps_off_terminals() {
        for (lo, hi) in crate::crd::text::CONTROLS {
            for c in (u32::from(*lo)..=u32::from(*hi)).filter_map(char::from_u32) {
                let shown = ShownBody::of(c.to_string().as_bytes());
                let raw = shown.as_str().contains(c);
                assert_eq!(raw, c == '\n', "U+{:04X} shown as {:?}", u32::from(c), shown.as_str());
            }
        }
    }
}
