//! Text a tenant, a platform admin or a provider supplied, on its way into a request line or onto
//! a terminal: which characters never belong there, and how they are shown when they turn up.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::crd::text::{CONTROLS, CONTROLS_IN_WORDS};

/// Whether `c` is one of the characters no request line or terminal gets raw.
pub fn is_control(c: char) -> bool {
    CONTROLS.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c))
}

/// Whether `s` holds any such character.
pub fn has_control(s: &str) -> bool {
    s.chars().any(is_control)
}

/// The refusal of `field` because it holds such characters, with `value` shown escaped.
pub fn holds_controls(field: &str, value: &str) -> String {
    format!(
        "{field} \"{}\" holds {CONTROLS_IN_WORDS}; a URL carries them percent-encoded, if at all",
        escaped(value)
    )
}

/// `s` with every such character written as an escape (`\r`, `\n`, `\t`, else `\u{…}`), so it
/// is shown and never acted on: one line, in the order written. Borrowed when nothing needs it.
pub fn escaped(s: &str) -> Cow<'_, str> {
    if !has_control(s) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if is_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_escapes_and_invisible_formatting_are_controls() {
        for c in [
            '\r', '\n', '\0', '\u{1b}', '\t', '\u{7f}', '\u{85}', '\u{9b}', '\u{2028}', '\u{2029}',
        ] {
            assert!(is_control(c), "{:x}", u32::from(c));
        }
        for c in ['\u{202e}', '\u{2066}', '\u{200b}', '\u{200e}', '\u{61c}', '\u{feff}'] {
            assert!(is_control(c), "{:x}", u32::from(c));
        }
        for c in [
            ' ',
            '~',
            '/',
            '%',
            'é',
            '\u{a0}',
            '日',
            '\u{1f600}',
            '\u{2030}',
            '\u{2070}',
        ] {
            assert!(!is_control(c), "{:x}", u32::from(c));
        }
    }

    #[test]
    fn escaping_keeps_text_on_one_line_and_leaves_clean_text_alone() {
        assert!(matches!(escaped("/v1/me?x=%0D"), Cow::Borrowed("/v1/me?x=%0D")));
        assert_eq!(
            escaped("/x\r\nHost: evil\u{1b}[2J\u{85}\u{2028}\u{202e}"),
            "/x\\r\\nHost: evil\\u{1b}[2J\\u{85}\\u{2028}\\u{202e}"
        );
        assert!(!has_control(&escaped("\u{0}\u{7f}\u{9f}\u{feff}\t")));
    }

    /// The class the CRDs' CEL rules use matches the same characters as the operator's check.
    #[test]
    fn the_schema_class_is_the_operators_set() {
        let class = regex::Regex::new(&crate::crd::text::control_class()).expect("compiles");
        // Every listed character is in the Basic Multilingual Plane; a few beyond it as well.
        let differ: Vec<u32> = (0..=0xffff_u32)
            .chain([0x1_f600, 0xe_0001, 0x10_ffff])
            .filter_map(char::from_u32)
            .filter(|c| class.is_match(c.encode_utf8(&mut [0; 4])) != is_control(*c))
            .map(u32::from)
            .collect();
        assert!(differ.is_empty(), "{differ:x?}");
    }
}
