//! The wake-up channel: NOTIFY through any connection, LISTEN and its
//! liveness ping on the notifier's dedicated one (docs/ARCHITECTURE.md, wake-ups).

use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use crate::db::{self, Query};
use crate::error::Result;

/// Wakes listening daemons (after a redeliver, say).
pub async fn notify_wakeup(client: &impl GenericClient) -> Result<()> {
    notify(client, "").await
}

/// Notifies the wake-up channel with `payload` (the LISTEN probe's own).
pub async fn notify(client: &impl GenericClient, payload: &str) -> Result<()> {
    const NOTIFY: Query = db::named!("notifying the daemons", "notify_wakeup");
    NOTIFY.all(client, &[(&payload, Type::TEXT)]).await?;
    Ok(())
}

/// Subscribes the session to the wake-up channel. Only on a connection of
/// its own: a pooled one can be recycled and its LISTEN lost.
pub async fn listen(client: &impl GenericClient) -> Result<()> {
    const LISTEN: Query = db::named!("LISTEN failed", "listen_wakeup");
    db::batch(client, LISTEN.doing, LISTEN.sql).await
}

/// One round trip, to find out whether the connection still works.
pub async fn ping(client: &impl GenericClient) -> Result<()> {
    db::batch(client, "ping", "SELECT 1").await
}
