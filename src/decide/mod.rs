//! The functional core: every decision, as pure functions of their inputs (the clock and the
//! jitter included). The shell gathers the inputs and applies the answers.

pub mod back_off;
pub mod conditions;
pub mod duration;
pub mod egress;
pub mod error_body;
pub mod events;
pub mod fair_share;
pub mod leadership;
pub mod ledger;
pub mod names;
pub mod oauth;
pub mod plan;
pub mod priority;
pub mod provider;
pub mod publish;
pub mod rollouts;
pub mod rotation;
pub mod schedule;
pub mod secret;
pub mod sharing;
pub mod step;
pub mod text;
pub mod token;
pub mod verdict;
