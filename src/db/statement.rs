//! How every statement runs: named queries of `sql/queries/`, sent unnamed
//! with their parameter types in one round trip, and the one place a driver
//! error becomes a [`crate::Error`] naming what webhookd was doing.
//!
//! The daemon's hot statements may instead be kept prepared on the pool's
//! connections ([`Preparing`], [`Session`]): that spares the server parsing
//! and planning the statement on every call, about a seventh of the fan-out's
//! cost (docs/ARCHITECTURE.md, statements).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, Row, Transaction};
use tracing::warn;

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

/// Whether the daemon's pooled connections may keep its hot statements
/// prepared. Named prepared statements live on a server connection, so a
/// pooler in transaction mode may run one client's statement name on another
/// client's connection. They are allowed only once LISTEN on the pool's own
/// URL has heard a probe sent through the pool, which a transaction-mode
/// pooler cannot pass; with `--listen-database-url` set, never. Shared by the
/// notifier, which sets it, and the statements' callers.
#[derive(Debug, Clone, Default)]
pub struct Preparing(Arc<AtomicBool>);

impl Preparing {
    /// Allows or forbids prepared statements from now on.
    pub fn set(&self, allowed: bool) {
        self.0.store(allowed, Ordering::Relaxed);
    }

    /// Whether they are allowed now.
    pub fn allowed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// How a hot statement goes to this pooled connection.
    pub fn session<'a>(&'a self, client: &'a deadpool_postgres::ClientWrapper) -> Session<'a> {
        if self.allowed() {
            Session::Prepared(client, self)
        } else {
            Session::Unnamed(client)
        }
    }
}

/// How a hot statement reaches the server.
#[derive(Clone, Copy)]
pub enum Session<'a> {
    /// Unnamed with its parameter types: parsed and planned on every call,
    /// safe through any pooler.
    Unnamed(&'a tokio_postgres::Client),
    /// Prepared once per pooled connection (its statement cache), then bound
    /// and executed by name; the flag that allowed it, to withdraw.
    Prepared(&'a deadpool_postgres::ClientWrapper, &'a Preparing),
}

impl<'a> From<&'a tokio_postgres::Client> for Session<'a> {
    fn from(client: &'a tokio_postgres::Client) -> Session<'a> {
        Session::Unnamed(client)
    }
}

impl Query {
    /// Its rows, sent as `session` says.
    pub async fn all_in(&self, session: Session<'_>, params: &[Param<'_>]) -> Result<Vec<Row>> {
        match session {
            Session::Unnamed(client) => self.all(client, params).await,
            Session::Prepared(client, preparing) => {
                let rows = async {
                    let (statement, values) = prepared(client, self.sql, params).await?;
                    client.query(&statement, &values).await
                };
                self.settle(client, preparing, params, rows.await)
            }
        }
    }

    /// Exactly one row, sent as `session` says.
    pub async fn one_in(&self, session: Session<'_>, params: &[Param<'_>]) -> Result<Row> {
        match session {
            Session::Unnamed(client) => self.one(client, params).await,
            Session::Prepared(client, preparing) => {
                let row = async {
                    let (statement, values) = prepared(client, self.sql, params).await?;
                    client.query_one(&statement, &values).await
                };
                self.settle(client, preparing, params, row.await)
            }
        }
    }

    /// On an error, drops the statement from the connection's cache, so the
    /// next call prepares it again: a schema change can leave a prepared
    /// statement unusable ("cached plan must not change result type"). A
    /// statement name the server does not know, or knows already, means a
    /// pooler shares server connections after all: prepared statements are
    /// withdrawn for the whole pool until LISTEN proves it direct again.
    fn settle<T>(
        &self,
        client: &deadpool_postgres::ClientWrapper,
        preparing: &Preparing,
        params: &[Param<'_>],
        outcome: std::result::Result<T, tokio_postgres::Error>,
    ) -> Result<T> {
        outcome.map_err(|err| {
            let types: Vec<Type> = params.iter().map(|(_, ty)| ty.clone()).collect();
            client.statement_cache.remove(self.sql, &types);
            let shared = [
                SqlState::INVALID_SQL_STATEMENT_NAME,
                SqlState::DUPLICATE_PSTATEMENT,
            ];
            if err.code().is_some_and(|code| shared.contains(code)) && preparing.allowed() {
                preparing.set(false);
                warn!(
                    "a prepared statement was missing or taken on its server connection (a \
                     connection pooler in transaction mode?): statements go unnamed from now on"
                );
            }
            Error::db(self.doing, err)
        })
    }
}

/// The connection's prepared statement for `sql` (prepared now on first use)
/// and the parameter values to bind to it.
async fn prepared<'p>(
    client: &deadpool_postgres::ClientWrapper,
    sql: &str,
    params: &'p [Param<'_>],
) -> std::result::Result<
    (tokio_postgres::Statement, Vec<&'p (dyn ToSql + Sync)>),
    tokio_postgres::Error,
> {
    let types: Vec<Type> = params.iter().map(|(_, ty)| ty.clone()).collect();
    let statement = client.prepare_typed_cached(sql, &types).await?;
    Ok((statement, params.iter().map(|(value, _)| *value).collect()))
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
