//! The only module that runs SQL. Queries live in `sql/queries/*.sql` and
//! migrations in `sql/migrations/`; functions here take `&impl GenericClient`
//! so they run inside a caller's transaction or on their own.

pub mod connect;
pub mod emit_many;
pub mod keys;
pub mod maintenance;
pub mod outage;
pub mod overview;
pub mod queue;
pub mod retention;
mod schema;
pub(crate) mod statement;
pub mod stats;
mod wakeup;
pub mod webhooks;

pub use connect::DatabaseTarget;
pub use schema::{check_schema, migrate, migrate_to, migrations, schema_state, SchemaState};
pub(crate) use statement::{again_on_deadlock, batch, begin, commit, named};
pub use statement::{Param, Preparing, Query, Session};
pub use wakeup::{listen, notify, notify_wakeup, ping};

use crate::error::{Error, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

/// The default of `DATABASE_URL` (docs/CONTRACT.md §6).
pub const DATABASE_URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Migrations in order; the number is the version recorded. Expand-only
/// (docs/UPGRADING.md): the previous release's daemons run on the result.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "outbox schema",
        include_str!("../../sql/migrations/0001_outbox.sql"),
    ),
    (
        2,
        "dashboard views and role",
        include_str!("../../sql/migrations/0002_dashboard.sql"),
    ),
    (
        3,
        "cheaper emit",
        include_str!("../../sql/migrations/0003_cheaper_emit.sql"),
    ),
    (
        4,
        "time-ordered ids",
        include_str!("../../sql/migrations/0004_time_ordered_ids.sql"),
    ),
    (
        5,
        "pooler-safe statements",
        include_str!("../../sql/migrations/0005_pooler_safe_statements.sql"),
    ),
    (
        6,
        "batch emit",
        include_str!("../../sql/migrations/0006_emit_many.sql"),
    ),
    (
        7,
        "disabled webhooks",
        include_str!("../../sql/migrations/0007_disabled_webhooks.sql"),
    ),
    (
        8,
        "signature scheme per webhook",
        include_str!("../../sql/migrations/0008_signature_scheme.sql"),
    ),
    (
        9,
        "fan-out that leases",
        include_str!("../../sql/migrations/0009_leased_fan_out.sql"),
    ),
    (
        10,
        "cheaper emit: one index fewer, one fast path",
        include_str!("../../sql/migrations/0010_cheaper_emit_one_fast_path.sql"),
    ),
    (
        11,
        "leaner fan-out",
        include_str!("../../sql/migrations/0011_leaner_fan_out.sql"),
    ),
    (
        12,
        "write-back by primary key",
        include_str!("../../sql/migrations/0012_write_back_by_key.sql"),
    ),
    (
        13,
        "fewer plan nodes per event",
        include_str!("../../sql/migrations/0013_fewer_plan_nodes.sql"),
    ),
    (
        14,
        "cheaper validity check",
        include_str!("../../sql/migrations/0014_cheaper_validity_check.sql"),
    ),
    (
        15,
        "references kept by construction",
        include_str!("../../sql/migrations/0015_references_by_construction.sql"),
    ),
];

/// The schema version this binary needs.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Parses `DATABASE_URL`: sslmode, CA file, hosts (see [`connect::DatabaseTarget`]).
pub fn parse_url(url: &str) -> Result<DatabaseTarget> {
    DatabaseTarget::parse(url, "DATABASE_URL")
}

/// Longest wait for a free connection from the pool.
const POOL_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A connection pool. Connects once up front so that an unreachable database
/// is a clear start-up error rather than the first query's.
///
/// Connections carry no session state (no startup options, no `SET`, no
/// named prepared statements unless [`Preparing`] has shown the pool is
/// direct), so the pool works through a connection pooler
/// in transaction mode: a pooled server connection may serve another client
/// between two of our statements. What the daemon's statements need from the
/// planner and the commit is set inside the functions they call (migration
/// 0005).
pub async fn connect_pool(target: &DatabaseTarget, max_size: usize) -> Result<Pool> {
    let manager = Manager::from_config(
        target.config().clone(),
        target.tls(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        // A server that accepts and then stalls must not hang a caller.
        .create_timeout(Some(target.start_up_limit()))
        // Every statement is short: waiting this long for a free
        // connection means something is stuck, and the caller says so.
        .wait_timeout(Some(POOL_WAIT_LIMIT))
        .build()
        .map_err(|err| Error::config(format!("cannot build the database pool: {err}")))?;
    match pool.get().await {
        Ok(client) => drop(client),
        Err(deadpool_postgres::PoolError::Backend(err)) => return Err(target.connect_error(&err)),
        Err(other) => {
            let detail = format!("{} ({other})", target.redacted());
            return Err(connect::cannot_connect(detail));
        }
    }
    Ok(pool)
}

/// One connection outside any pool (one-shot commands, tests), to the
/// database at `url` (`DATABASE_URL` syntax).
pub async fn connect_single(url: &str) -> Result<tokio_postgres::Client> {
    parse_url(url)?.connect().await
}

/// The same server URL pointing at another database (the demo and the tests
/// work in databases of their own).
pub fn url_with_database(url: &str, name: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // key=value form
        return format!("{url} dbname={name}");
    };
    let after = scheme_end + 3;
    let query = url[after..]
        .find('?')
        .map(|i| after + i)
        .unwrap_or(url.len());
    let path = url[after..query]
        .find('/')
        .map(|i| after + i)
        .unwrap_or(query);
    format!("{}/{name}{}", &url[..path], &url[query..])
}

/// Where a URL points, for messages: user, hosts, ports and database, never
/// the password (whether given as `user:password@`, `?password=` or
/// `password=` in key=value form).
pub fn redact_url(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "the configured DATABASE_URL".to_string();
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let host = match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(index).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_replaces_the_path_and_keeps_the_query() {
        assert_eq!(
            url_with_database("postgres://u@h:5432/postgres?sslmode=disable", "demo"),
            "postgres://u@h:5432/demo?sslmode=disable"
        );
        assert_eq!(
            url_with_database("postgres://u@h", "demo"),
            "postgres://u@h/demo"
        );
        assert_eq!(
            url_with_database("host=h user=u", "demo"),
            "host=h user=u dbname=demo"
        );
    }

    #[test]
    fn redacted_urls_never_show_the_password() {
        for url in [
            "postgres://app:s3cret@db:5432/app",
            "postgres://app@db:5432/app?password=s3cret",
            "host=db port=5432 user=app password=s3cret dbname=app",
        ] {
            assert_eq!(redact_url(url), "postgres://app@db:5432/app");
        }
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/app?x"),
            "the configured DATABASE_URL"
        );
    }
}
