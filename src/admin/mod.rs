//! The admin listener on `--admin-addr`: `/healthz` (the process is alive),
//! `/readyz` (the database answers, LISTEN is active or known not to work,
//! and every active webhook's secret opens with a configured key) and `/metrics`
//! (Prometheus text format), and under `/v1/` the management API when it is
//! enabled ([`crate::admin::api`]), and under `/ui/` the operator page with
//! it ([`crate::admin::ui`]). Anything else is 404.
//!
//! The listener and its routes are in [`server`], `/readyz` in [`readiness`].

pub mod api;
pub mod metrics;
pub mod readiness;
pub mod server;
mod token;
pub mod ui;

pub use server::{AdminServer, AdminState};
