//! A careless endpoint repeats what it was sent, in whatever form its framework prints it. The
//! forms of a secret such an endpoint may show (used by the provider simulator to echo, and by the
//! tests to look for any of them in what the operator shows), and the echoing answer itself.

/// Every form of `secret` the simulator echoes: as sent, percent-encoded (form style and strict),
/// base64 and base64url, hex, upper and lower case, cut short by 1 to 4 characters, split in
/// halves, and JSON-escaped (as serde writes it, and every character as `\uXXXX`).
pub fn encodings(secret: &str) -> Vec<String> {
    let chars: Vec<char> = secret.chars().collect();
    let mut out = vec![
        secret.to_owned(),
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        percent(secret),
        base64(secret.as_bytes(), STANDARD, true),
        base64(secret.as_bytes(), URL_SAFE, false),
        secret.bytes().map(|b| format!("{b:02x}")).collect(),
        secret.to_uppercase(),
        secret.to_lowercase(),
        serde_json::to_string(secret)
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned(),
        secret.encode_utf16().map(|u| format!("\\u{u:04x}")).collect(),
    ];
    for cut in 1..=4.min(chars.len().saturating_sub(1)) {
        out.push(chars[..chars.len() - cut].iter().collect());
    }
    let (a, b) = chars.split_at(chars.len() / 2);
    out.extend([a.iter().collect(), b.iter().collect()]);
    out
}

/// The forms of `secret` that must never be shown, compared case-insensitively: all of
/// `encodings`, but cut and split forms only of a secret of 12 characters or more (shorter pieces
/// turn up by chance in any text).
pub fn forbidden(secret: &str) -> Vec<String> {
    let n = secret.chars().count();
    let mut all = encodings(secret);
    if n < 12 {
        all.truncate(all.len() - 2 - 4.min(n.saturating_sub(1)));
    }
    all.retain(|e| !e.is_empty());
    all
}

/// The forbidden forms of any of `secrets` found in `text` (case-insensitive): `(secret, form)`.
pub fn leaks(text: &str, secrets: &[&str]) -> Vec<(String, String)> {
    let lowered = text.to_lowercase();
    secrets
        .iter()
        .flat_map(|s| forbidden(s).into_iter().map(move |f| (s.to_string(), f)))
        .filter(|(_, f)| lowered.contains(&f.to_lowercase()))
        .collect()
}

/// A JSON error body that repeats every secret in every form, in the fields error parsers read.
pub fn body(secrets: &[&str]) -> String {
    let forms: Vec<String> = secrets.iter().flat_map(|s| encodings(s)).collect();
    serde_json::json!({
        "error": secrets.first().copied().unwrap_or_default(),
        "error_description": format!("rejected: {}", forms.join(" ")),
        "message": forms,
        "detail": secrets.iter().map(|s| s.to_uppercase()).collect::<Vec<_>>(),
    })
    .to_string()
}

/// A `Content-Type` that repeats the secrets in the forms a header value can carry.
pub fn content_type(secrets: &[&str]) -> String {
    let forms: Vec<String> = secrets
        .iter()
        .flat_map(|s| encodings(s))
        .filter(|f| f.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .collect();
    format!("application/json; echo=\"{}\"", forms.join(" ").replace('"', ""))
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
        }
        if pad {
            out.extend(std::iter::repeat_n('=', 3 - chunk.len()));
        }
    }
    out
}

/// Every byte but the RFC 3986 unreserved ones as `%XX`.
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encodings_are_the_usual_ones() {
        let e = encodings("p@ss word/+é");
        for want in [
            "p%40ss+word%2F%2B%C3%A9",
            "p%40ss%20word%2F%2B%C3%A9",
            "cEBzcyB3b3JkLyvDqQ==",
            "cEBzcyB3b3JkLyvDqQ",
            "7040737320776f72642f2bc3a9",
            "P@SS WORD/+É",
            "p@ss word/",
            "\\u0070\\u0040\\u0073\\u0073\\u0020\\u0077\\u006f\\u0072\\u0064\\u002f\\u002b\\u00e9",
        ] {
            assert!(e.iter().any(|x| x == want), "{want} not in {e:?}");
        }
        assert_eq!(base64(b"any carnal pleas", URL_SAFE, false), "YW55IGNhcm5hbCBwbGVhcw");
        assert_eq!(leaks("x P%40SS%20WORD%2F%2B%C3%A9 y", &["p@ss word/+é"]).len(), 1);
        assert!(
            forbidden("424242").iter().all(|f| f.len() >= 6),
            "no pieces of a short secret"
        );
    }
}
