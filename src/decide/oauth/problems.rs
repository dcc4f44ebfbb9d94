//! The input problems an OAuth sign-in can end in, with messages that tell a person what to fix.
//! `provider`: the name of the provider's definition (built in or an `ApiProvider`). No message
//! quotes the server: its answer is shown only as its summary (`error_body`).

use super::answer::Unusable as BadAnswer;
use super::assertion::KeyProblem;
use super::request::{TokenRequest, Unusable};
use crate::decide::conditions::Reason;
use crate::decide::error_body::BodySummary;
use crate::decide::plan::Problem;

/// The login Secret does not exist.
pub fn login_missing(ns: &str, login: &str) -> Problem {
    Problem::SourceNotFound(format!(
        "oauth.secretRef: Secret {ns}/{login} not found; create it with the keys the provider's grants need"
    ))
}

/// No grant can be made with what the login Secret holds.
pub fn unusable(why: &Unusable, provider: &str, ns: &str, login: &str) -> Problem {
    match why {
        Unusable::Missing { grant, key } => Problem::LoginIncomplete(format!(
            "Secret {ns}/{login} has no key \"{key}\", which the {} grant of {provider} needs",
            grant.as_str()
        )),
        Unusable::Unreadable { key } => Problem::LoginIncomplete(format!(
            "key \"{key}\" of Secret {ns}/{login} is not text or is over 8 KiB; it is not read"
        )),
        Unusable::TooManyKeys { key, keys } => Problem::LoginIncomplete(format!(
            "Secret {ns}/{login} has {keys} keys, and only the first {} by name are read: key \"{key}\", which {provider} needs, is not among them; keep only the login's keys in it",
            super::login::MAX_KEYS
        )),
        Unusable::Reused => Problem::RefreshTokenReused(format!(
            "the refresh token in Secret {ns}/{login} was already used and replaced by {provider}; sending it again could revoke the grant: put a new refresh token (or the password) in Secret {ns}/{login}"
        )),
        Unusable::Key(KeyProblem::NotAKey) => Problem::MalformedKey(format!(
            "key \"private_key\" of Secret {ns}/{login} is not a PEM private key of the algorithm {provider} uses (PKCS#8 PEM: RSA for RS256, P-256 for ES256)"
        )),
        Unusable::Key(KeyProblem::TooLarge) => Problem::MalformedKey(format!(
            "key \"private_key\" of Secret {ns}/{login} is over {} bytes of PEM: RSA keys over 4096 bits are not used (2048 is usual), and a PEM holds the key alone",
            super::assertion::MAX_KEY_PEM
        )),
        Unusable::Key(KeyProblem::CannotSign) => Problem::MalformedKey(format!(
            "key \"private_key\" of Secret {ns}/{login} cannot sign with the algorithm {provider} uses"
        )),
    }
}

/// The server asked for a code sent to the user.
pub fn otp_required(provider: &str, ns: &str, login: &str, key: &str) -> Problem {
    Problem::OtpRequired(format!(
        "the {provider} account asked for a one-time code sent to its user: add it as key \"{key}\" to Secret {ns}/{login}"
    ))
}

/// The server refused the last grant there was to try. The answer is shown only as its summary:
/// the endpoint may have echoed the form.
pub fn refused(
    reason: Reason,
    request: &TokenRequest,
    provider: &str,
    ns: &str,
    login: &str,
    answer: &BodySummary,
) -> Problem {
    let grant = request.grant.as_str();
    let fix = format!(
        "the answer's text is not shown, it may echo the login; fix Secret {ns}/{login} and the operator tries again"
    );
    match reason {
        Reason::InvalidClient => Problem::InvalidClient(format!(
            "{provider} refused the client's authentication ({answer}): check client_id and client_secret (or private_key); {fix}"
        )),
        Reason::InvalidScope => Problem::InvalidScope(format!(
            "{provider} refused the scopes asked for ({answer}): the ApiProvider's oauth.scopes or the client's grants must change; {fix}"
        )),
        Reason::RefreshTokenLost => Problem::RefreshTokenLost(format!(
            "{provider} refused the refresh token ({answer}) after an earlier call with it whose answer was never stored (the operator stopped mid-rotation): the new refresh token is lost; put a new one (or the password) in Secret {ns}/{login}"
        )),
        Reason::RefreshTokenRevoked => Problem::RefreshTokenRevoked(format!(
            "{provider} refused the refresh token ({answer}): it was revoked or has expired; {fix}"
        )),
        _ => Problem::InvalidGrant(format!("{provider} refused the {grant} grant ({answer}); {fix}")),
    }
}

/// A stored refusal stands: nothing was sent since. The message of the condition as it was
/// decided is kept by the status; this one says why no call is made.
pub fn still_refused(reason: Reason, provider: &str, ns: &str, login: &str) -> Problem {
    let m = format!(
        "{provider} refused this login earlier ({}); nothing is sent until Secret {ns}/{login} changes",
        reason.as_str()
    );
    match reason {
        Reason::InvalidClient => Problem::InvalidClient(m),
        Reason::InvalidScope => Problem::InvalidScope(m),
        Reason::RefreshTokenLost => Problem::RefreshTokenLost(m),
        Reason::RefreshTokenRevoked => Problem::RefreshTokenRevoked(m),
        Reason::RefreshTokenReused => Problem::RefreshTokenReused(m),
        _ => Problem::InvalidGrant(m),
    }
}

/// A success the operator cannot use. Nothing of the answer is quoted.
pub fn bad_answer(why: &BadAnswer, provider: &str) -> Problem {
    match why {
        BadAnswer::NotJson(summary) => Problem::TokenEndpointUnusable(format!(
            "{provider}'s token endpoint answered {summary}, not JSON: check the ApiProvider's oauth.tokenUrl (a login page or a proxy answers HTML)"
        )),
        BadAnswer::NoAccessToken { field } => Problem::TokenEndpointUnusable(format!(
            "{provider}'s token endpoint answered without the field {field:?} the ApiProvider's oauth.answer.accessToken names"
        )),
        BadAnswer::SuccessRuleUnmet { field } => Problem::TokenEndpointUnusable(format!(
            "{provider}'s token endpoint answered an access token, yet its field {field:?} does not say success as the ApiProvider's oauth.answer.success expects: the rule is to be fixed, the token was not used"
        )),
        BadAnswer::MissingExpiry { field } => Problem::MissingExpiry(format!(
            "{provider}'s token endpoint answered without the field {field:?}; set oauth.answer.lifetime in the ApiProvider when the server documents the lifetime instead"
        )),
        BadAnswer::BadAccessToken(e) => Problem::InvalidToken(format!(
            "{provider}'s token endpoint answered an access token that is not one ({e}); it was not used"
        )),
    }
}

/// The egress rules refused the token endpoint's address at connect time.
pub fn not_allowed(why: String) -> Problem {
    Problem::BaseUrlNotAllowed(why)
}
