//! Core tests: one module per spec section, given/when/then over the callbacks and map ops the
//! core emits, plus a property test against an independent reference model.

mod harness;
mod sec02_registration;
mod sec03_ownership;
mod sec04_alerts;
mod sec04_exclude;
mod sec04_membership;
mod sec05_mfe;
mod sec05_refresh;
mod sec06_enumeration;
mod sec07_callbacks;
mod sec07_later;
mod sec08_errors;
mod sec10_reconcile;

mod model;
mod prop;
