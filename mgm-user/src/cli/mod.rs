//! Read-only commands for operators.

pub mod show;
