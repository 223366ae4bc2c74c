//! The only module that runs SQL. Queries live in `sql/queries/*.sql` and
//! migrations in `sql/migrations/`; functions here take `&impl GenericClient`
//! so they run inside a caller's transaction or on their own.

pub mod queue;
mod schema;
pub mod webhooks;

pub use schema::{check_schema, migrate, migrate_to, migrations, schema_state, SchemaState};

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{GenericClient, NoTls};

use crate::error::{Error, Result};

/// The default of `DATABASE_URL` (SPEC §6).
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
];

/// The schema version this binary needs.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Parses a connection string into the driver's config, with a connect timeout
/// so an unreachable server is reported instead of waited on.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|err| {
        Error::Config(format!("DATABASE_URL is not a valid PostgreSQL URL: {err}"))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("webhookd");
    }
    Ok(config)
}

/// A connection pool. Connects once up front so that an unreachable database
/// is a clear start-up error rather than the first query's.
pub async fn connect_pool(url: &str, max_size: usize) -> Result<Pool> {
    let mut config = parse_url(url)?;
    // The daemon's statements are index lookups with small LIMITs. On a
    // queue table that filled faster than autovacuum analyses it, the planner
    // works from statistics of a much smaller table: it prefers a bitmap scan
    // of every due row plus a sort, which makes each claim cost O(backlog)
    // (30 ms instead of 4 ms at 50k due rows), or a sequential scan to find
    // a few hundred rows by primary key (11 ms instead of 2 ms at 50k rows).
    // Without those two the planner has only the indexes, which is what
    // every statement here was written for. A plan that still has to scan a
    // table sequentially (the one-row wake-up switch) then carries a cost
    // penalty large enough to make PostgreSQL compile it to machine code on
    // every run (40 ms each), and JIT never pays off for statements this
    // short anyway: jit=off.
    //
    // synchronous_commit=off: the daemon's own writes (claims, results,
    // fan-out) need not wait for the WAL flush. A database crash can lose the
    // last few milliseconds of them, and the only effect is that those
    // deliveries are sent again when their leases expire: at least once
    // either way. Events themselves are committed by the producers, with
    // their own settings.
    let ours =
        "-c enable_bitmapscan=off -c enable_seqscan=off -c jit=off -c synchronous_commit=off";
    let options = match config.get_options() {
        Some(existing) => format!("{existing} {ours}"),
        None => ours.to_string(),
    };
    config.options(&options);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(max_size)
        .build()
        .map_err(|err| Error::Config(format!("cannot build the database pool: {err}")))?;
    drop(
        pool.get()
            .await
            .map_err(|err| unreachable_database(url, err))?,
    );
    Ok(pool)
}

/// One connection outside any pool (LISTEN, one-shot commands).
pub async fn connect_single(url: &str) -> Result<tokio_postgres::Client> {
    let config = parse_url(url)?;
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|err| unreachable_database(url, deadpool_postgres::PoolError::Backend(err)))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "database connection closed");
        }
    });
    Ok(client)
}

fn unreachable_database(url: &str, err: deadpool_postgres::PoolError) -> Error {
    let detail = match &err {
        deadpool_postgres::PoolError::Backend(source) => crate::error::driver_detail(source),
        other => other.to_string(),
    };
    Error::Pool(format!("{} ({detail})", redact_url(url)))
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

/// Wakes listening daemons (after a redeliver, say).
pub async fn notify_wakeup(client: &impl GenericClient) -> Result<()> {
    client
        .execute(include_str!("../../sql/queries/notify_wakeup.sql"), &[])
        .await
        .map_err(|err| Error::db("notifying the daemons", err))?;
    Ok(())
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
