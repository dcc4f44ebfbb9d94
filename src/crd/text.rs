//! Text the schema refuses where it would reach a request: object names that are not names, and
//! control characters. The lists are the schema's; the operator refuses the same where no schema
//! ran (`decide::names`, `decide::text`).

/// An RFC 1123 subdomain: what a Secret or a workload is named (`decide::names` refuses the same
/// where no schema ran). Anything else would reach the request's path as written.
pub const OBJECT_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Characters refused in anything that becomes part of a request (a base URL, a path) and
/// escaped in anything printed: C0 controls (CR, LF, NUL, ESC…), DEL, C1 controls (NEL…), and
/// the invisible Unicode format characters that reorder or hide text on a terminal or in a
/// review: the Arabic letter mark, zero-width characters and directional marks, the line and
/// paragraph separators, the bidirectional embeddings, overrides and isolates, the invisible
/// operators, the byte order mark and the interlinear annotation characters. A URL that needs
/// any of them has them percent-encoded.
pub const CONTROLS: &[(char, char)] = &[
    ('\u{0}', '\u{1f}'),
    ('\u{7f}', '\u{9f}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{2028}', '\u{202e}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{fff9}', '\u{fffb}'),
];

/// What [`CONTROLS`] holds, in words, for messages.
pub const CONTROLS_IN_WORDS: &str = "control characters (C0 such as CR, LF, NUL and ESC; DEL; C1 such as NEL) or invisible Unicode formatting (directional marks, embeddings, overrides and isolates; zero-width characters; line and paragraph separators; byte order mark)";

/// A regular expression class matching exactly [`CONTROLS`], in the syntax RE2
/// (the API server's CEL) and Rust's `regex` share: the CRDs' rules refuse what the operator
/// refuses.
pub fn control_class() -> String {
    let mut class = String::from("[");
    for (lo, hi) in CONTROLS {
        class.push_str(&format!("\\x{{{:04X}}}", u32::from(*lo)));
        if lo != hi {
            class.push_str(&format!("-\\x{{{:04X}}}", u32::from(*hi)));
        }
    }
    class.push(']');
    class
}

/// A CEL rule refusing, in the string `value` (when `present`), the characters
/// [`CONTROLS`] holds (the operator refuses them again in `decide::text`): line breaks and other controls would reach the request line, and
/// invisible formatting would reach a terminal.
pub(crate) fn no_controls(present: &str, value: &str, field: &str) -> kube::core::Rule {
    // The class goes into a single-quoted CEL string, which reads each `\\` as one `\`.
    let class = control_class().replace('\\', "\\\\");
    kube::core::Rule::new(format!("!{present} || !{value}.matches('{class}')")).message(kube::core::Message::Message(
        format!("{field} must not hold {}; percent-encode them", CONTROLS_IN_WORDS),
    ))
}
