//! Names of Kubernetes objects a tenant writes into a spec (a source Secret, a login, a target, a
//! workload). The client puts a name into the request's path as written, so a name that is not
//! a valid object name (`?watch=true`, `../configmaps/x`, `x#y`) would rewrite the request: such
//! a name is refused before anything is read or written with it.

/// The longest object name (RFC 1123 subdomain).
pub const MAX_OBJECT_NAME: usize = 253;

/// Whether `name` is an RFC 1123 subdomain, what Secrets and workloads are named: lower-case
/// letters, digits, `-` and `.`, alphanumeric at each end of every dot-separated label, at most
/// 253 characters. Nothing else can name such an object, so nothing else is ever sent.
pub fn is_object_name(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !name.is_empty()
        && name.len() <= MAX_OBJECT_NAME
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            match (bytes.first(), bytes.last()) {
                (Some(&first), Some(&last)) => {
                    alnum(first) && alnum(last) && bytes.iter().all(|&b| alnum(b) || b == b'-')
                }
                _ => false,
            }
        })
}

/// The refusal of `field` holding `name`, shown escaped.
pub fn not_an_object_name(field: &str, name: &str) -> String {
    format!(
        "{field} \"{}\" is not an object name (lower-case letters, digits, '-' and '.', alphanumeric at both ends of each part, at most {MAX_OBJECT_NAME} characters); nothing was read or written with it",
        crate::decide::text::escaped(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_rfc_1123_subdomains_and_nothing_else() {
        for ok in ["a", "src", "acme-raise", "a.b-c.d9", "0", &"a".repeat(253)] {
            assert!(is_object_name(ok), "{ok}");
        }
        for bad in [
            "",
            "?watch=true",
            "../configmaps/x",
            "x#y",
            "a/b",
            "A",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a b",
            "a%2f",
            "a\r\nb",
            "ä",
            &"a".repeat(254),
        ] {
            assert!(!is_object_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_schemas_pattern_says_the_same() {
        let pattern = regex::Regex::new(crate::crd::text::OBJECT_NAME_PATTERN).expect("compiles");
        for s in [
            "a",
            "a.b",
            "a-b",
            "A",
            "-a",
            "a.",
            "a..b",
            "?watch=true",
            "a/b",
            "x#y",
            "",
        ] {
            assert_eq!(pattern.is_match(s), is_object_name(s), "{s:?}");
        }
    }
}
