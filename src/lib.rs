//! # webhookd
//!
//! Delivers ProductBridge webhooks out of PostgreSQL. Application code writes
//! an event into `outbox.events` inside its own transaction (through
//! `outbox.emit` or [`emit`] here); `webhookd run`, on one or many replicas,
//! fans each committed event out to every active webhook of the organization,
//! sends signed POSTs, retries failures on a fixed schedule and writes every
//! outcome back where the dashboard reads it.
//!
//! ## What to use
//!
//! The crate root is the surface meant for other programs: [`emit`],
//! [`emit_many`] and [`EventType`] for producers written in Rust, [`Daemon`] / [`DaemonConfig`]
//! / [`Running`] to run the delivery daemon inside another process, and
//! [`Error`] with [`ErrorKind`]. The modules below are public because the
//! `webhookd` binary, the benchmark (`crates/bench`) and the integration tests
//! are built on them; they change with the code.
//!
//! ## Where things are
//!
//! The stages, one module each under [`delivery`]: notifier (LISTEN) → fanout →
//! claimer (leases) → dispatcher + sender (sign and POST) →
//! completer (fenced write-back), driven by the main loop in [`daemon`], which
//! starts and stops every background [`service`] as one group. Webhook
//! management (CLI and API alike) goes through [`manage`]; the admin listener
//! (health, readiness, metrics, the API) is [`admin`]. Pure logic lives in
//! [`event`], [`signing`], `delivery::retry` and [`guard`]; SQL only in [`db`].
//! `docs/ARCHITECTURE.md` walks one delivery through these files.
//!
//! ## Emitting from Rust, in the caller's transaction
//!
//! ```no_run
//! # async fn example(client: &mut tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
//! let tx = client.transaction().await?;
//! // … the business change …
//! let org = uuid::Uuid::new_v4();
//! let data = serde_json::json!({"id": "p1", "title": "Add dark mode"});
//! webhookd::emit(&tx, org, webhookd::EventType::PostCreated, &data).await?;
//! // Several events in one statement, all or nothing; ids in this order.
//! let vote = serde_json::json!({"id": "v1", "post_id": "p1"});
//! let ids = webhookd::emit_many(&tx, org, &[(webhookd::EventType::VoteCreated, vote)]).await?;
//! tx.commit().await?; // rolled back: never delivered
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod db;
pub mod delivery;
pub mod demo;
pub mod error;
pub mod event;
pub mod guard;
pub mod keys;
pub mod maintenance;
pub mod manage;
pub mod service;
pub mod shutdown;
pub mod signing;
pub mod telemetry;

pub use daemon::{Daemon, DaemonConfig, Running};
pub use error::{Error, ErrorKind, Result};
pub use event::EventType;

/// Emits one event in the caller's transaction (or on its own): one insert
/// into `outbox.events`, validated by the database. An invalid event is
/// an [`Error`] of kind [`ErrorKind::Input`] with a message naming the event type and field.
pub async fn emit(
    client: &impl tokio_postgres::GenericClient,
    organization_id: uuid::Uuid,
    event: EventType,
    data: &serde_json::Value,
) -> Result<uuid::Uuid> {
    db::webhooks::emit(client, organization_id, event.as_str(), data).await
}

/// Emits several events in one statement (`outbox.emit_many`, one multi-row
/// insert), all or nothing; returns their ids in the order given. An invalid
/// event is an [`Error`] of kind [`ErrorKind::Input`] with emit's message
/// prefixed by its index (`events[3]: …`); an empty slice emits nothing.
pub async fn emit_many(
    client: &impl tokio_postgres::GenericClient,
    organization_id: uuid::Uuid,
    events: &[(EventType, serde_json::Value)],
) -> Result<Vec<uuid::Uuid>> {
    let batch: Vec<db::emit_many::BatchEvent> = events
        .iter()
        .map(|(event, data)| db::emit_many::BatchEvent {
            event: event.as_str(),
            data,
        })
        .collect();
    db::emit_many::emit_many(client, organization_id, &batch).await
}
