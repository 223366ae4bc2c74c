//! What the server's statistics say about the queue: its depth (for
//! metrics), and each queue table's dead tuples and vacuum state (for the
//! maintenance services).

use tokio_postgres::GenericClient;

use crate::db::{self, Query};
use crate::error::Result;

/// The queue's depth, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueDepths {
    /// Pending deliveries, in flight included.
    pub pending: i64,
    /// Pending and due now.
    pub due: i64,
    /// Failed for good.
    pub failed: i64,
    /// How long the oldest due delivery has been due.
    pub oldest_due_age_seconds: f64,
    /// Age of the oldest event not yet fanned out.
    pub fanout_lag_seconds: f64,
}

/// Reads the queue's depth.
pub async fn queue_depths(client: &impl GenericClient) -> Result<QueueDepths> {
    const DEPTHS: Query = db::named!("reading the queue depth", "queue_depths");
    let row = DEPTHS.one(client, &[]).await?;
    Ok(QueueDepths {
        pending: row.get("pending"),
        due: row.get("due"),
        failed: row.get("failed"),
        oldest_due_age_seconds: row.get("oldest_due_age_seconds"),
        fanout_lag_seconds: row.get("fanout_lag_seconds"),
    })
}

/// Dead tuples of each queue table (`webhooks`, `events`, `deliveries`,
/// `delivery_attempts`), from the statistics.
pub async fn queue_dead_tuples(client: &impl GenericClient) -> Result<Vec<(String, i64)>> {
    const DEAD_TUPLES: Query = db::named!("reading dead tuples", "queue_dead_tuples");
    DEAD_TUPLES
        .map(client, &[], |row| {
            (row.get("relname"), row.get("n_dead_tup"))
        })
        .await
}

/// A queue table's vacuum state.
#[derive(Debug, Clone, PartialEq)]
pub struct VacuumCandidate {
    /// `deliveries`, `events` or `delivery_attempts`.
    pub name: String,
    /// Live tuples (estimate).
    pub live: i64,
    /// Dead tuples (estimate).
    pub dead: i64,
    /// Whether autovacuum is on for the server.
    pub autovacuum_on: bool,
    /// Since the last vacuum of any kind.
    pub seconds_since_vacuum: f64,
}

/// The queue tables' vacuum state.
pub async fn vacuum_candidates(client: &impl GenericClient) -> Result<Vec<VacuumCandidate>> {
    const VACUUM_CANDIDATES: Query = db::named!("reading vacuum statistics", "vacuum_candidates");
    VACUUM_CANDIDATES
        .map(client, &[], |row| VacuumCandidate {
            name: row.get("relname"),
            live: row.get("n_live_tup"),
            dead: row.get("n_dead_tup"),
            autovacuum_on: row.get("autovacuum_on"),
            seconds_since_vacuum: row.get("seconds_since_vacuum"),
        })
        .await
}
