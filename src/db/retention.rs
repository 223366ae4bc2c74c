//! Retention: deleting finished events once they are old enough, one batch
//! per transaction, one replica at a time.

use std::time::Duration;

use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use crate::db::{self, Query};
use crate::error::Result;

/// The advisory lock that lets only one replica sweep at a time.
pub const RETENTION_LOCK: i64 = 0x7265_7465_6e74_696f; // "retentio"

/// Takes the transaction-level advisory lock `key` of a sweep that one
/// replica at a time runs; false when another holds it.
pub(crate) async fn try_sweep_lock(tx: &Transaction<'_>, key: i64) -> Result<bool> {
    const LOCK: Query = db::named!("taking a sweep's lock", "retention_lock");
    Ok(LOCK.one(tx, &[(&key, Type::INT8)]).await?.get(0))
}

/// Deletes one batch of expired, finished events (and, through the delete
/// triggers of migration 15, their deliveries and attempts). `None` when
/// another replica holds the sweep.
pub async fn delete_expired_events(
    client: &mut tokio_postgres::Client,
    keep: Duration,
    batch: i64,
) -> Result<Option<u64>> {
    const DELETE: Query = db::named!("deleting expired events", "retention_delete");
    let tx = db::begin(client, "starting retention").await?;
    if !try_sweep_lock(&tx, RETENTION_LOCK).await? {
        return Ok(None);
    }
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    let deleted = DELETE
        .execute(&tx, &[(&keep_ms, Type::INT8), (&batch, Type::INT8)])
        .await?;
    db::commit(tx, "committing retention").await?;
    Ok(Some(deleted))
}
