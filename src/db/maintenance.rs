//! What the maintenance services ask of the database itself: who holds the
//! xmin horizon back, and vacuuming a queue table (its statistics are in
//! `db::stats`).

use tokio_postgres::GenericClient;

use crate::db::{self, Query};
use crate::error::{Error, Result};

/// What kind of thing holds the xmin horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HolderKind {
    /// A session's open transaction or snapshot.
    Session,
    /// A replication slot's `xmin` (a standby's `hot_standby_feedback`).
    ReplicationSlot,
    /// A transaction prepared for two-phase commit and not yet finished.
    PreparedTransaction,
}

impl HolderKind {
    /// The word used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            HolderKind::Session => "session",
            HolderKind::ReplicationSlot => "replication slot",
            HolderKind::PreparedTransaction => "prepared transaction",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "replication slot" => HolderKind::ReplicationSlot,
            "prepared transaction" => HolderKind::PreparedTransaction,
            _ => HolderKind::Session,
        }
    }
}

/// The oldest holder of this database's xmin horizon. Fields the server
/// hides from a role without `pg_read_all_stats` are `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonHolder {
    /// Session, replication slot or prepared transaction.
    pub kind: HolderKind,
    /// The backend's pid (a slot's: the walsender using it, if any).
    pub pid: Option<i32>,
    /// A session's `application_name`, a slot's name, or a prepared
    /// transaction's gid.
    pub name: Option<String>,
    /// The session's or prepared transaction's role.
    pub user: Option<String>,
    /// A session's state (`idle in transaction`, …); `active`/`inactive`
    /// for a slot, `prepared` for a prepared transaction.
    pub state: Option<String>,
    /// How many transaction ids ago the horizon it holds was current.
    pub age_transactions: i64,
    /// The transaction id it holds (identifies one holding across looks).
    pub xmin: i64,
    /// How long its transaction has been open, when the server says: not
    /// for a slot, nor for another role's session without the privilege.
    pub age_seconds: Option<f64>,
}

/// The oldest holder of this database's xmin horizon, apart from the
/// session asking; `None` when nothing holds it.
pub async fn xmin_horizon(client: &impl GenericClient) -> Result<Option<HorizonHolder>> {
    const XMIN_HORIZON: Query = db::named!("reading the xmin horizon", "xmin_horizon");
    let row = XMIN_HORIZON.opt(client, &[]).await?;
    Ok(row.map(|row| HorizonHolder {
        kind: HolderKind::parse(row.get("kind")),
        pid: row.get("pid"),
        name: row.get("name"),
        user: row.get("username"),
        state: row.get("state"),
        age_transactions: row.get("age_xids"),
        xmin: row.get("xmin"),
        age_seconds: row.get("age_seconds"),
    }))
}

/// `VACUUM (SKIP_LOCKED, ANALYZE)` of one queue table (outside any
/// transaction, as VACUUM requires).
pub async fn vacuum(client: &impl GenericClient, table: &str) -> Result<()> {
    // Only the queue's own tables, never a name from elsewhere.
    let table = match table {
        "deliveries" | "events" | "delivery_attempts" => table,
        other => return Err(Error::other(format!("refusing to vacuum {other}"))),
    };
    let sql = format!("VACUUM (SKIP_LOCKED, ANALYZE) outbox.{table}");
    db::batch(client, &format!("vacuuming outbox.{table}"), &sql).await
}
