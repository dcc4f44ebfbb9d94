//! The input problems an OAuth sign-in can end in, with the messages that tell a person what to
//! fix in the login Secret. `provider`: the name of the provider's definition (built in or an
//! `ApiProvider`), never a brand the definition may not be.

use super::{Grant, Unusable};
use crate::decide::error_body::BodySummary;
use crate::decide::plan::Problem;

/// The login Secret does not exist.
pub fn login_missing(ns: &str, login: &str) -> Problem {
    Problem::SourceNotFound(format!(
        "oauth.secretRef: Secret {ns}/{login} not found; create it with keys username and password"
    ))
}

/// No grant can be tried with what the login Secret holds.
pub fn unusable(why: Unusable, provider: &str, ns: &str, login: &str) -> Problem {
    match why {
        Unusable::NoUsername => {
            Problem::SourceNotFound(format!("oauth.secretRef: Secret {ns}/{login} has no key \"username\""))
        }
        Unusable::NoCredentials => Problem::InvalidGrant(format!(
            "{provider} refused the refresh token and Secret {ns}/{login} has no password to sign in again"
        )),
    }
}

/// The token endpoint asked for a two-factor code.
pub fn otp_required(provider: &str, ns: &str, login: &str) -> Problem {
    Problem::OtpRequired(format!(
        "the {provider} account uses two-factor authentication and a code was sent by SMS: add it as key \"otp\" to Secret {ns}/{login}"
    ))
}

/// The token endpoint refused the grant, and no other grant is possible. The answer is shown
/// only as its summary: the endpoint may have echoed the form.
pub fn refused(grant: Grant, provider: &str, answer: &BodySummary) -> Problem {
    let name = match grant {
        Grant::Refresh => "refresh_token",
        Grant::Password { .. } => "password",
    };
    Problem::InvalidGrant(format!(
        "{provider} refused the {name} grant ({answer}); the answer's text is not shown, it may echo the login"
    ))
}

/// The egress rules refused the token endpoint's address at connect time.
pub fn not_allowed(why: String) -> Problem {
    Problem::BaseUrlNotAllowed(why)
}
