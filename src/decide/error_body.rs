//! What of a provider's error body may be shown: in a condition (which every reader of the
//! credential sees), an event, or `tenantcred check`. One line, at most `MAX_CHARS`, only fields
//! known to carry an error text, and every value the operator submitted masked: an endpoint that
//! echoes the password, refresh token, code or token it was sent must not publish it.

/// The most of an error text that is quoted.
pub const MAX_CHARS: usize = 160;

/// What stands in for a submitted value.
pub const MASK: &str = "[redacted]";

/// Which parts of a body may be quoted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quoting {
    /// An OAuth token endpoint (RFC 6749 §5.2): only `error_description`, else `error`.
    OAuth,
    /// A probe's answer: the usual JSON error fields, or a plain-text first line (Virtuous
    /// answers 401 in plain text); never HTML.
    Probe,
}

impl Quoting {
    fn fields(self) -> &'static [&'static str] {
        match self {
            Self::OAuth => &["error_description", "error"],
            Self::Probe => &["error_description", "message", "Message", "error", "title", "detail"],
        }
    }
}

/// A short, safe quote of an error body, or `None` when nothing in it may be shown. `submitted`:
/// every secret value sent with the request; each is masked wherever it appears, as sent or
/// form-encoded.
pub fn quote(body: &[u8], quoting: Quoting, submitted: &[&str]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    let found = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => quoting
            .fields()
            .iter()
            .find_map(|k| v.get(k).and_then(|m| m.as_str()).map(str::to_owned))?,
        Err(_) if quoting == Quoting::OAuth || text.starts_with('<') => return None,
        Err(_) => text.to_owned(),
    };
    // One line: a quote never carries a second line, a control character or a terminal escape.
    let line: String = found
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // Masked before it is cut, so a value cut in half at the end cannot slip past.
    let masked = mask(line.trim(), submitted);
    let lowered = masked.to_ascii_lowercase();
    // Token shapes the operator did not send but a provider might echo (another key, a JWT).
    if lowered.contains("bearer ") || lowered.contains("eyj") || lowered.contains("cs_live_") {
        return None;
    }
    (!masked.is_empty()).then(|| masked.chars().take(MAX_CHARS).collect())
}

/// `text` with every submitted value, as sent and form-encoded, replaced by `MASK`.
pub fn mask(text: &str, submitted: &[&str]) -> String {
    let mut out = text.to_owned();
    // Longest first, so a value that holds another is masked whole.
    let mut values: Vec<String> = submitted
        .iter()
        .filter(|s| !s.is_empty())
        .flat_map(|s| {
            let encoded: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            [s.to_string(), encoded]
        })
        .collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for v in values {
        if out.contains(&v) {
            out = out.replace(&v, MASK);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_read_defensively() {
        let probe = |b: &[u8]| quote(b, Quoting::Probe, &[]);
        assert_eq!(probe(br#"{"error": "Unauthorized"}"#).as_deref(), Some("Unauthorized"));
        assert_eq!(
            probe(b"Authorization has been denied for this request.").as_deref(),
            Some("Authorization has been denied for this request.")
        );
        assert_eq!(probe(b"<html><body>502</body></html>"), None);
        assert_eq!(probe(b""), None);
        assert_eq!(probe(&[0xff, 0xfe]), None);
        assert_eq!(probe(br#"{"message":"bad token cs_live_abc"}"#), None);
        assert_eq!(probe(br#"[1,2]"#), None);
        assert_eq!(probe(b"first\nsecond\x1b[31m").as_deref(), Some("first"));
        assert_eq!(probe(&[b'x'; 1000]).map(|s| s.len()), Some(MAX_CHARS));
    }

    #[test]
    fn the_token_endpoint_is_quoted_only_by_its_oauth_error_fields() {
        let oauth = |b: &[u8]| quote(b, Quoting::OAuth, &[]);
        assert_eq!(
            oauth(br#"{"error":"invalid_grant","error_description":"The user name or password is incorrect."}"#)
                .as_deref(),
            Some("The user name or password is incorrect.")
        );
        assert_eq!(oauth(br#"{"error":"invalid_grant"}"#).as_deref(), Some("invalid_grant"));
        assert_eq!(oauth(br#"{"message":"anything else"}"#), None);
        assert_eq!(oauth(b"plain text is not quoted"), None);
    }

    #[test]
    fn every_submitted_value_is_masked_as_sent_or_encoded() {
        let secrets = ["hunter2 pass&word", "rt-0123456789", "424242"];
        for body in [
            r#"{"error_description":"password hunter2 pass&word is wrong for code 424242"}"#.to_string(),
            r#"{"error_description":"got password=hunter2+pass%26word&refresh_token=rt-0123456789"}"#.to_string(),
            format!(r#"{{"error_description":"{}"}}"#, "rt-0123456789".repeat(40)),
        ] {
            let q = quote(body.as_bytes(), Quoting::OAuth, &secrets).expect("quoted");
            for s in secrets {
                let encoded: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
                assert!(!q.contains(s) && !q.contains(&encoded), "{q}");
            }
            assert!(q.contains(MASK), "{q}");
        }
        // A value that holds another is masked whole.
        assert_eq!(mask("abc-abcdef", &["abc", "abcdef"]), "[redacted]-[redacted]");
    }

    #[test]
    fn a_value_cut_at_the_bound_is_masked_before_the_cut() {
        let secret = "s3cr3t-value-that-is-long";
        let body = format!(r#"{{"error":"{}{secret}"}}"#, "x".repeat(MAX_CHARS - 5));
        let q = quote(body.as_bytes(), Quoting::OAuth, &[secret]).expect("quoted");
        assert!(!q.contains("s3cr3"), "{q}");
    }
}
