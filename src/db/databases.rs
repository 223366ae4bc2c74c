//! Whole databases: the demo creates one of its own and drops it afterwards.
//! Names are made by the caller from a UUID, never taken from input.

use tokio_postgres::GenericClient;

use crate::db;
use crate::error::Result;

/// `CREATE DATABASE name` (it cannot take a parameter).
pub async fn create_database(client: &impl GenericClient, name: &str) -> Result<()> {
    db::batch(
        client,
        "creating the demo database",
        &format!("CREATE DATABASE {name}"),
    )
    .await
}

/// `DROP DATABASE IF EXISTS name WITH (FORCE)`: its sessions are ended first.
pub async fn drop_database(client: &impl GenericClient, name: &str) -> Result<()> {
    db::batch(
        client,
        "dropping the demo database",
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await
}
