//! How every statement runs: named queries of `sql/queries/`, sent unnamed
//! with their parameter types in one round trip, and the one place a driver
//! error becomes a [`crate::Error`] naming what webhookd was doing.

use std::future::Future;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, Row, Transaction};

use crate::error::{Error, Result};

/// A statement parameter with its PostgreSQL type. Nothing outlives a
/// statement on the server connection, which is what a pooler in
/// transaction mode needs.
pub type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// A statement of `sql/queries/` and what it does (named in errors).
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// "listing webhooks": completes "error … while `<doing>`".
    pub doing: &'static str,
    /// The statement's text.
    pub sql: &'static str,
}

/// `named!("listing webhooks", "webhook_list")`: the [`Query`] of
/// `sql/queries/webhook_list.sql`.
macro_rules! named {
    ($doing:literal, $file:literal) => {
        $crate::db::Query {
            doing: $doing,
            sql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/sql/queries/",
                $file,
                ".sql"
            )),
        }
    };
}
pub(crate) use named;

/// How often a transaction that PostgreSQL aborted as a deadlock victim is
/// run again by [`again_on_deadlock!`].
pub(crate) const DEADLOCK_ATTEMPTS: usize = 3;

/// `again_on_deadlock!("revoke", revoke_once(client, id))`: awaits the
/// expression, and again (up to [`DEADLOCK_ATTEMPTS`] times in all) while it
/// fails as a deadlock victim. For transactions that lock a webhook and then
/// many of its deliveries, which can deadlock with a daemon's write-back of
/// the same rows; each must be safe to run again.
macro_rules! again_on_deadlock {
    ($what:literal, $call:expr) => {{
        let mut attempt = 1;
        loop {
            match $call.await {
                Err(err)
                    if attempt < $crate::db::statement::DEADLOCK_ATTEMPTS
                        && err.sql_state()
                            == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
                {
                    tracing::debug!(
                        attempt,
                        concat!($what, " deadlocked with a write-back; again")
                    );
                    attempt += 1;
                }
                outcome => break outcome,
            }
        }
    }};
}
pub(crate) use again_on_deadlock;

/// Awaits one driver call, naming what it was doing if it fails.
pub(crate) async fn run<T>(
    doing: &str,
    call: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    call.await.map_err(|err| Error::db(doing, err))
}

impl Query {
    /// Its rows.
    pub async fn all(&self, client: &impl GenericClient, params: &[Param<'_>]) -> Result<Vec<Row>> {
        run(self.doing, client.query_typed(self.sql, params)).await
    }

    /// Its rows, each made into a `T` by `from_row`.
    pub async fn map<T>(
        &self,
        client: &impl GenericClient,
        params: &[Param<'_>],
        from_row: impl Fn(&Row) -> T,
    ) -> Result<Vec<T>> {
        Ok(self
            .all(client, params)
            .await?
            .iter()
            .map(from_row)
            .collect())
    }

    /// Exactly one row.
    pub async fn one(&self, client: &impl GenericClient, params: &[Param<'_>]) -> Result<Row> {
        run(self.doing, client.query_typed_one(self.sql, params)).await
    }

    /// At most one row.
    pub async fn opt(
        &self,
        client: &impl GenericClient,
        params: &[Param<'_>],
    ) -> Result<Option<Row>> {
        run(self.doing, client.query_typed_opt(self.sql, params)).await
    }

    /// How many rows it changed.
    pub async fn execute(&self, client: &impl GenericClient, params: &[Param<'_>]) -> Result<u64> {
        run(self.doing, client.execute_typed(self.sql, params)).await
    }
}

/// Runs statements without parameters (DDL, VACUUM, LISTEN) in the simple
/// protocol, as those need.
pub async fn batch(client: &impl GenericClient, doing: &str, sql: &str) -> Result<()> {
    run(doing, client.batch_execute(sql)).await
}

/// Starts a transaction.
pub async fn begin<'a>(
    client: &'a mut tokio_postgres::Client,
    doing: &str,
) -> Result<Transaction<'a>> {
    run(doing, client.transaction()).await
}

/// Commits a transaction.
pub async fn commit(tx: Transaction<'_>, doing: &str) -> Result<()> {
    run(doing, tx.commit()).await
}
