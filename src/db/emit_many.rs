//! Emitting several events in one statement through `outbox.emit_many`
//! (migration 0006; docs/CONTRACT.md §5).

use serde::Serialize;
use tokio_postgres::types::{Json, Type};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::{self, Query};
use crate::error::Result;

/// One element of the `events` array `outbox.emit_many` takes.
#[derive(Debug, Serialize)]
pub struct BatchEvent<'a> {
    /// The event type.
    pub event: &'a str,
    /// Its data.
    pub data: &'a serde_json::Value,
}

/// Emits `events` in the caller's transaction (or on its own), all or
/// nothing; returns their ids in the same order. Validation errors come back
/// with kind [`crate::error::ErrorKind::Input`], naming the element
/// (`events[3]: …`).
pub async fn emit_many(
    client: &impl GenericClient,
    organization_id: Uuid,
    events: &[BatchEvent<'_>],
) -> Result<Vec<Uuid>> {
    const EMIT_MANY: Query = db::named!("emitting the events", "emit_many");
    let events = Json(events);
    let params: [db::Param; 2] = [(&organization_id, Type::UUID), (&events, Type::JSONB)];
    EMIT_MANY.map(client, &params, |row| row.get(0)).await
}
