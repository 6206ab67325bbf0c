//! Read-only commands for operators.

pub mod metrics;
pub mod show;
