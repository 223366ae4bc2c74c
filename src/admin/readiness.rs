//! `/readyz`: whether this replica can deliver. The database answers with a
//! schema this binary can use, LISTEN is active or known not to work (then
//! the replica polls), and every active webhook's secret opens with a
//! configured key. The JSON names what is wrong (docs/OPERATIONS.md).

use std::time::Duration;

use deadpool_postgres::Pool;
use hyper::StatusCode;

use crate::admin::server::AdminState;
use crate::db::SchemaState;
use crate::delivery::notifier::ListenState;
use crate::error::Error;

/// The status and JSON body of `/readyz`.
pub async fn readyz(state: &AdminState) -> (StatusCode, String) {
    let (database, schema) = database_state(&state.pool).await;
    let listen = state.listen.get();
    // Poll-only is a working mode (slower to react), not an outage.
    let listen_ok = matches!(listen, ListenState::Active | ListenState::PollOnly);
    let secrets = match database {
        DatabaseState::Ok => secrets_state(state).await,
        _ => None,
    };
    // A look that failed says nothing about the keys: the database
    // field reports what is wrong then.
    let secrets_ok = !matches!(secrets, Some(Some(_)));
    let status = if database == DatabaseState::Ok && listen_ok && secrets_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if status == StatusCode::OK { "ready" } else { "not ready" },
        "database": match database {
            DatabaseState::Ok => "ok",
            DatabaseState::Unreachable => "unreachable",
            DatabaseState::SchemaOutdated => "schema missing or outdated: run webhookd migrate",
        },
        "listen": match listen {
            ListenState::Active => "active",
            ListenState::Connecting => "reconnecting",
            ListenState::PollOnly => "unavailable: no notifications arrive on this connection \
                (a pooler in transaction mode?); polling every second instead",
        },
        "secrets": match secrets {
            Some(None) => "ok".to_string(),
            Some(Some(problem)) => problem,
            None => "unknown".to_string(),
        },
        "schema": schema.as_ref().map(schema_field),
    });
    (status, body.to_string())
}

/// What `/readyz` says of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DatabaseState {
    Ok,
    Unreachable,
    /// Reachable, but the schema is missing or older than this binary.
    SchemaOutdated,
}

/// The database's state, and its schema's when it answered. A newer schema
/// is `Ok`: migrations are expand-only, so this replica keeps delivering.
async fn database_state(pool: &Pool) -> (DatabaseState, Option<SchemaState>) {
    let check = async {
        let client = pool.get().await.map_err(Error::from)?;
        crate::db::schema_state(&**client).await
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(schema)) if schema.is_usable() => (DatabaseState::Ok, Some(schema)),
        Ok(Ok(schema)) => (DatabaseState::SchemaOutdated, Some(schema)),
        _ => (DatabaseState::Unreachable, None),
    }
}

/// `Some(None)` when every active webhook's secret is sealed with a configured
/// key, `Some(Some(why))` when some are not, `None` when the look failed.
async fn secrets_state(state: &AdminState) -> Option<Option<String>> {
    let look = async {
        let client = state.pool.get().await.map_err(Error::from)?;
        crate::keys::unconfigured_webhooks(&**client, &state.secret_key_ids).await
    };
    match tokio::time::timeout(Duration::from_secs(2), look).await {
        Ok(Ok(missing)) => Some(crate::keys::describe_unconfigured(&missing)),
        _ => None,
    }
}

/// `/readyz`'s `schema` field: both versions and what they mean for this
/// replica.
fn schema_field(schema: &SchemaState) -> serde_json::Value {
    let state = match schema {
        SchemaState::Current => "current".to_string(),
        SchemaState::Newer { .. } => {
            "newer: a newer release migrated this database; upgrade this replica".to_string()
        }
        SchemaState::Older { .. } => format!("older: {}", schema.describe()),
        SchemaState::Missing => format!("missing: {}", schema.describe()),
    };
    serde_json::json!({
        "database": schema.database_version(),
        "binary": crate::db::SCHEMA_VERSION,
        "state": state,
    })
}
