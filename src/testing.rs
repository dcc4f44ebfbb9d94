//! What the unit tests share: a clock of their own and a credential builder.

use jiff::Timestamp;

use crate::crd::{TenantApiCredential, TenantApiCredentialSpec};

/// The moment every unit test starts from (2027-01-15).
pub const EPOCH: i64 = 1_800_000_000;

/// `s` seconds after `EPOCH` (negative: before), so a test reads "at t(30)" and never depends on
/// the machine's clock.
pub fn t(s: i64) -> Timestamp {
    Timestamp::from_second(EPOCH + s).expect("within jiff's range")
}

/// A credential `name` in namespace `ns` (uid `uid-1`) with this spec.
pub fn credential(name: &str, spec: serde_json::Value) -> TenantApiCredential {
    let spec: TenantApiCredentialSpec = serde_json::from_value(spec).expect("a valid spec");
    let mut c = TenantApiCredential::new(name, spec);
    c.metadata.namespace = Some("ns".into());
    c.metadata.uid = Some("uid-1".into());
    c
}

/// `plan::resolve` with the built-in providers only.
pub fn resolve_builtin(
    tac: &TenantApiCredential,
    egress: &crate::decide::egress::Egress,
) -> Result<crate::decide::plan::Settings, crate::decide::plan::Problem> {
    let found = crate::decide::provider::find(tac.spec.provider.as_str(), |_| None);
    crate::decide::plan::resolve(tac, egress, &found)
}
