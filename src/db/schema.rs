//! Creating, upgrading and checking the schema against the migrations this
//! binary knows ([`super::MIGRATIONS`]).
//!
//! Migrations are expand-only (docs/UPGRADING.md): a release's daemons keep
//! working on the schema of the next release. So a database may be *newer*
//! than a binary: it then has migration versions the binary does not know.
//! A running daemon keeps delivering on it, but a daemon does not start on
//! it, so that a replica left on an old release is noticed.

use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use super::{MIGRATIONS, SCHEMA_VERSION};
use crate::db::{self, Query};
use crate::error::{Error, Result};

/// Any number will do as long as it is webhookd's alone: it serialises
/// concurrent `migrate` runs of several replicas.
const MIGRATION_LOCK: i64 = 0x7765_6268_6f6f_6b64; // "webhookd"

/// The migrations this binary knows, in order: version and name.
pub fn migrations() -> impl Iterator<Item = (i32, &'static str)> {
    MIGRATIONS
        .iter()
        .map(|(version, name, _)| (*version, *name))
}

/// The database's schema compared with the migrations this binary knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    /// No webhookd schema at all.
    Missing,
    /// Some migrations this binary needs are not applied.
    Older {
        /// The highest version applied (0 when none).
        database: i32,
        /// The migrations still to apply: version and name.
        pending: Vec<(i32, &'static str)>,
    },
    /// Exactly the migrations this binary knows.
    Current,
    /// Every migration this binary knows, plus some it does not: a newer
    /// release migrated the database.
    Newer {
        /// The highest version applied.
        database: i32,
        /// The applied versions this binary does not know.
        unknown: Vec<i32>,
    },
}

impl SchemaState {
    /// The highest version applied; `None` without a schema.
    pub fn database_version(&self) -> Option<i32> {
        match self {
            SchemaState::Missing => None,
            SchemaState::Current => Some(SCHEMA_VERSION),
            SchemaState::Older { database, .. } | SchemaState::Newer { database, .. } => {
                Some(*database)
            }
        }
    }

    /// This binary's statements work on it: current, or newer (migrations
    /// are expand-only).
    pub fn is_usable(&self) -> bool {
        matches!(self, SchemaState::Current | SchemaState::Newer { .. })
    }

    /// `Ok` only when current; otherwise an error of kind [`crate::ErrorKind::Schema`] with
    /// [`SchemaState::describe`]. What a starting daemon and
    /// `migrate --check` need.
    pub fn require_current(&self) -> Result<()> {
        match self {
            SchemaState::Current => Ok(()),
            other => Err(Error::schema(other.describe())),
        }
    }

    /// One line saying how the schema differs from what this binary needs,
    /// naming both versions.
    pub fn describe(&self) -> String {
        match self {
            SchemaState::Missing => {
                "the database has no webhookd schema: run `webhookd migrate` first".to_string()
            }
            SchemaState::Older { database, pending } => format!(
                "the webhookd schema is at version {database}, this binary needs \
                 {SCHEMA_VERSION}: {}; run `webhookd migrate`",
                pending_text(pending)
            ),
            SchemaState::Current => {
                format!("the webhookd schema is current (version {SCHEMA_VERSION})")
            }
            SchemaState::Newer { database, unknown } => format!(
                "the webhookd schema is at version {database}, newer than this binary knows \
                 ({SCHEMA_VERSION}; it does not know {}): upgrade webhookd, or run the newer \
                 release",
                versions_text(unknown)
            ),
        }
    }
}

/// "migration 5 (name) is pending" / "migrations 5 (a), 6 (b) are pending".
fn pending_text(pending: &[(i32, &str)]) -> String {
    let list: Vec<String> = pending
        .iter()
        .map(|(version, name)| format!("{version} ({name})"))
        .collect();
    match list.len() {
        1 => format!("migration {} is pending", list[0]),
        _ => format!("migrations {} are pending", list.join(", ")),
    }
}

/// "version 6" / "versions 6, 7".
fn versions_text(versions: &[i32]) -> String {
    let list: Vec<String> = versions.iter().map(i32::to_string).collect();
    match list.len() {
        1 => format!("version {}", list[0]),
        _ => format!("versions {}", list.join(", ")),
    }
}

/// Classifies the applied versions. Pending migrations win over unknown
/// ones: whatever else is there, `webhookd migrate` is what to run.
fn classify(applied: &[i32]) -> SchemaState {
    let database = applied.iter().copied().max().unwrap_or(0);
    let pending: Vec<(i32, &'static str)> = migrations()
        .filter(|(version, _)| !applied.contains(version))
        .collect();
    if !pending.is_empty() {
        return SchemaState::Older { database, pending };
    }
    let mut unknown: Vec<i32> = applied
        .iter()
        .copied()
        .filter(|version| !MIGRATIONS.iter().any(|(known, _, _)| known == version))
        .collect();
    unknown.sort_unstable();
    if unknown.is_empty() {
        SchemaState::Current
    } else {
        SchemaState::Newer { database, unknown }
    }
}

/// Reads the schema's state; changes nothing. `Err` only when the database
/// cannot be read.
pub async fn schema_state(client: &impl GenericClient) -> Result<SchemaState> {
    const EXISTS: Query = db::named!("checking the schema", "schema_exists");
    let exists: bool = EXISTS.one(client, &[]).await?.get(0);
    if !exists {
        return Ok(SchemaState::Missing);
    }
    let applied = applied_versions(client).await?;
    Ok(classify(&applied))
}

/// Checks that this binary's statements work on the schema: `Ok` with the
/// state when it is current or newer, an error of kind [`crate::ErrorKind::Schema`] telling the user to
/// run `webhookd migrate` when it is missing or older. One-shot commands use
/// this; a starting daemon also refuses a newer schema
/// ([`SchemaState::require_current`]).
pub async fn check_schema(client: &impl GenericClient) -> Result<SchemaState> {
    let state = schema_state(client).await?;
    if state.is_usable() {
        Ok(state)
    } else {
        Err(Error::schema(state.describe()))
    }
}

async fn applied_versions(client: &impl GenericClient) -> Result<Vec<i32>> {
    const VERSIONS: Query = db::named!("reading applied migrations", "schema_versions");
    Ok(VERSIONS
        .all(client, &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// Creates or upgrades the schema to everything this binary knows.
/// Idempotent; safe when several replicas run it at once (they queue on a
/// transaction-level advisory lock). Returns the versions it applied. On a
/// newer schema it applies nothing and succeeds: see [`schema_state`].
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<i32>> {
    migrate_to(client, SCHEMA_VERSION).await
}

/// Like [`migrate`], but applies only the migrations up to and including
/// `target`: the schema an older release of webhookd had. For tests of
/// upgrades (a database left behind by the previous release) and for
/// reproducing an older release's schema by hand.
pub async fn migrate_to(client: &mut tokio_postgres::Client, target: i32) -> Result<Vec<i32>> {
    const RECORD: Query = db::named!("recording the migration", "migration_record");
    const TABLE: Query = db::named!("creating the migrations table", "migrations_table");
    const LOCK: Query = db::named!("taking the migration lock", "migration_lock");
    let tx = db::begin(client, "starting the migration").await?;
    LOCK.all(&tx, &[(&MIGRATION_LOCK, Type::INT8)]).await?;
    db::batch(&tx, TABLE.doing, TABLE.sql).await?;
    let applied = applied_versions(&tx).await?;
    let mut newly_applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if *version > target || applied.contains(version) {
            continue;
        }
        db::batch(&tx, &format!("applying migration {version} ({name})"), sql).await?;
        RECORD
            .execute(&tx, &[(version, Type::INT4), (name, Type::TEXT)])
            .await?;
        newly_applied.push(*version);
    }
    db::commit(tx, "committing the migration").await?;
    Ok(newly_applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<i32> {
        migrations().map(|(version, _)| version).collect()
    }

    #[test]
    fn exactly_the_known_migrations_are_current() {
        assert_eq!(classify(&all()), SchemaState::Current);
        assert!(SchemaState::Current.require_current().is_ok());
    }

    #[test]
    fn a_missing_migration_is_older_and_named() {
        let mut applied = all();
        let (last, name) = migrations().last().unwrap();
        applied.retain(|version| *version != last);
        let state = classify(&applied);
        assert_eq!(
            state,
            SchemaState::Older {
                database: applied.iter().copied().max().unwrap_or(0),
                pending: vec![(last, name)],
            }
        );
        assert!(!state.is_usable());
        let line = state.describe();
        assert!(
            line.contains(&format!("migration {last} ({name}) is pending")),
            "{line}"
        );
        assert!(line.contains(&format!("needs {SCHEMA_VERSION}")), "{line}");
    }

    #[test]
    fn an_unknown_version_is_newer_and_names_both_versions() {
        let mut applied = all();
        applied.extend([1000, 999]);
        let state = classify(&applied);
        assert_eq!(
            state,
            SchemaState::Newer {
                database: 1000,
                unknown: vec![999, 1000],
            }
        );
        assert!(state.is_usable());
        let line = state.require_current().unwrap_err().one_line();
        assert!(line.contains("at version 1000"), "{line}");
        assert!(
            line.contains(&format!("knows ({SCHEMA_VERSION};")),
            "{line}"
        );
        assert!(line.contains("versions 999, 1000"), "{line}");
    }

    #[test]
    fn pending_migrations_win_over_unknown_ones() {
        let state = classify(&[999]);
        assert!(matches!(state, SchemaState::Older { database: 999, .. }));
    }
}
