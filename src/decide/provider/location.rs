//! Where a provider's requests may go, as its definition writes them: an absolute URL on one of
//! its hosts, a path on the base URL. Read by the provider's definition and by its OAuth part.

use super::ProviderHost;
use crate::decide::text;

/// An absolute https URL on one of `hosts`, without a user name or password (a provider's
/// `baseUrl`, an OAuth `tokenUrl`); `field` names it in messages.
pub(crate) fn url_on_hosts(field: &str, written: &str, hosts: &[ProviderHost]) -> Result<String, String> {
    // The URL parser would drop tabs and line breaks and encode the rest: refused, not repaired.
    if text::has_control(written) {
        return Err(text::holds_controls(field, &crate::decide::egress::redacted(written)));
    }
    let url = url::Url::parse(written).map_err(|_| format!("{field} {written:?} is not a URL"))?;
    if url.scheme() != "https" {
        return Err(format!("{field} {written:?} must be https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{field} must not hold a user name or password"));
    }
    let (Some(url::Host::Domain(name)), Some(port)) = (url.host(), url.port_or_known_default()) else {
        return Err(format!("{field} {written:?} must name one of hosts"));
    };
    let name = name.trim_end_matches('.');
    if !hosts
        .iter()
        .any(|h| h.port == port && h.name.eq_ignore_ascii_case(name))
    {
        return Err(format!("{field}'s host {name}:{port} is not one of hosts"));
    }
    Ok(written.to_owned())
}

/// A path appended to the base URL: it starts with `/` and holds nothing that could end up raw
/// in the request line or on a terminal.
pub(crate) fn path(field: &str, p: &str) -> Result<String, String> {
    if text::has_control(p) {
        return Err(text::holds_controls(field, p));
    }
    if !p.starts_with('/') {
        return Err(format!("{field} {p:?} must start with /"));
    }
    Ok(p.to_owned())
}
