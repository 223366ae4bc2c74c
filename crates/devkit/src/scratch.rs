//! Scratch databases: a fresh, uniquely named database on a server, for one
//! test, benchmark scenario or demo run, dropped when asked or at the latest
//! when the value is dropped. The one implementation everything uses.

use uuid::Uuid;

use crate::pg;

/// A database created for the caller; dropped (`WITH (FORCE)`) by
/// [`ScratchDb::drop_now`] or on drop.
#[derive(Debug)]
pub struct ScratchDb {
    server_url: String,
    name: String,
    url: String,
    dropped: bool,
}

impl ScratchDb {
    /// Creates `{prefix}_{32 hex digits}` on the server at `server_url`.
    pub async fn create(
        server_url: &str,
        prefix: &str,
    ) -> Result<ScratchDb, tokio_postgres::Error> {
        let admin = pg::connect(server_url).await?;
        ScratchDb::create_with(&admin, server_url, prefix).await
    }

    /// [`create`](Self::create) through `admin`, a session on that server
    /// the caller opened (with the product's TLS rules, say).
    pub async fn create_with(
        admin: &tokio_postgres::Client,
        server_url: &str,
        prefix: &str,
    ) -> Result<ScratchDb, tokio_postgres::Error> {
        let name = format!("{prefix}_{}", Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        Ok(ScratchDb {
            server_url: server_url.to_string(),
            url: pg::url_with_database(server_url, &name),
            name,
            dropped: false,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its URL: the server URL with this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server it lives on.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// Drops it now, closing any session still on it; errors are ignored
    /// (the server may be gone already).
    pub async fn drop_now(mut self) {
        self.dropped = true;
        drop_database(&self.server_url, &self.name).await;
    }

    /// Drops it now through `admin`, a session on its server.
    pub async fn drop_with(
        mut self,
        admin: &tokio_postgres::Client,
    ) -> Result<(), tokio_postgres::Error> {
        self.dropped = true;
        admin.batch_execute(&drop_statement(&self.name)).await
    }
}

fn drop_statement(name: &str) -> String {
    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
}

async fn drop_database(server_url: &str, name: &str) {
    if let Ok(admin) = pg::connect(server_url).await {
        let _ = admin.batch_execute(&drop_statement(name)).await;
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        // Drop may run inside or outside a runtime; a short-lived thread with
        // its own runtime can always do the async cleanup.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(drop_database(&server_url, &name));
            Some(())
        })
        .join();
    }
}
