//! Integration tests: one binary, so kube is linked once. The scenario suites run on the API
//! server double and, when one can be started, on a real kube-apiserver (`tenantcred_testkit`).

mod apiserver_double;
mod core_scenarios;
mod crd_validation;
mod dashboard;
mod docs;
mod e2e;
mod echoes;
mod egress_policy;
mod examples;
mod hostile_scenarios;
mod isolation_scenarios;
mod layering;
mod lifecycle_scenarios;
mod no_panic;
mod oauth_bad_input;
mod oauth_hostile;
mod oauth_scenarios;
mod oauth_server;
mod operability;
mod port_scenarios;
mod priority_scenarios;
mod probe_http;
mod probing_scenarios;
mod provider_definitions;
mod provider_scenarios;
mod rotation_scenarios;
