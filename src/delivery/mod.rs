//! The delivery pipeline, one module per stage, in the order a delivery
//! passes through them (docs/ARCHITECTURE.md walks one delivery through these
//! files):
//!
//! [`notifier`] (LISTEN wake-ups) → [`fanout`] (one delivery row per active
//! webhook) → [`claimer`] (leases, fair across webhooks, in-flight caps) →
//! [`dispatcher`] (sign, send on its own task) with [`sender`] (the HTTP POST
//! and its outcome) → [`completer`] (the fenced write-back). [`retry`] (the
//! schedule) and [`pacing`] (per-webhook concurrency) are pure policy the
//! stages consult. The main loop that drives them is in [`crate::daemon`].

pub mod claimer;
pub mod completer;
pub mod dispatcher;
pub mod fanout;
pub mod notifier;
pub mod pacing;
pub mod retry;
pub mod sender;
