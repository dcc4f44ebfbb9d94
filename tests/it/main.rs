//! Integration tests: one binary, so kube is linked once.
#[path = "../support/mod.rs"]
mod support;

mod apiserver_double;
mod core_scenarios;
mod crd_validation;
mod e2e;
mod lifecycle_scenarios;
mod operability;
mod probe_http;
mod probing_scenarios;
