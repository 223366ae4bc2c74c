//! Vacuum when autovacuum does not: the queue's tables turn over every row
//! many times a minute, and their dead tuples slow every claim down. With
//! autovacuum off (as on some managed or test servers) or lagging behind,
//! this sweeper runs `VACUUM (SKIP_LOCKED, ANALYZE)` on a table whose dead
//! tuples pass a threshold. SKIP_LOCKED makes a concurrent vacuum (another
//! replica's, or autovacuum's) a reason to skip, not to wait.

use std::time::Duration;

use deadpool_postgres::Pool;
use tracing::{info, warn};

use crate::db;
use crate::error::Result;
use crate::service::Service;
use crate::shutdown::Shutdown;

/// Vacuum settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VacuumConfig {
    /// How often to look.
    pub interval: Duration,
    /// Never vacuum for fewer dead tuples than this.
    pub min_dead: i64,
    /// … nor for fewer than this fraction of the live ones.
    pub dead_fraction: f64,
    /// With autovacuum on, step in only when it has not vacuumed for this long.
    pub autovacuum_grace: Duration,
}

impl Default for VacuumConfig {
    fn default() -> Self {
        VacuumConfig {
            interval: Duration::from_secs(30),
            min_dead: 10_000,
            dead_fraction: 0.2,
            autovacuum_grace: Duration::from_secs(300),
        }
    }
}

/// The vacuum sweeper.
pub struct Vacuum {
    config: VacuumConfig,
    pool: Pool,
}

impl Vacuum {
    /// A sweeper over this pool.
    pub fn new(config: VacuumConfig, pool: Pool) -> Self {
        Vacuum { config, pool }
    }

    /// One look: vacuums the tables that need it; returns their names.
    pub async fn run_once(&self) -> Result<Vec<String>> {
        let client = self.pool.get().await?;
        let mut vacuumed = Vec::new();
        for table in db::stats::vacuum_candidates(&**client).await? {
            let threshold = self
                .config
                .min_dead
                .max((table.live as f64 * self.config.dead_fraction) as i64);
            let autovacuum_lagging = !table.autovacuum_on
                || table.seconds_since_vacuum > self.config.autovacuum_grace.as_secs_f64();
            if table.dead >= threshold && autovacuum_lagging {
                db::maintenance::vacuum(&**client, &table.name).await?;
                vacuumed.push(table.name);
            }
        }
        Ok(vacuumed)
    }
}

impl Service for Vacuum {
    const NAME: &'static str = "vacuum";

    /// Looks every `interval` until shutdown.
    async fn run(self, mut shutdown: Shutdown) {
        loop {
            let interval = tokio::time::sleep(self.config.interval);
            if shutdown.before(interval).await.is_none() {
                return;
            }
            match self.run_once().await {
                Ok(tables) if !tables.is_empty() => info!(?tables, "vacuumed"),
                Ok(_) => {}
                Err(err) => {
                    warn!(error = %err.one_line(), "vacuum sweep failed; next sweep retries")
                }
            }
        }
    }
}
