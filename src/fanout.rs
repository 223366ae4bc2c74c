//! Stage 1: turn committed events into one delivery row per active webhook of
//! their organization. Each event fans out exactly once: the events are locked
//! (`SKIP LOCKED`, so replicas share the work), their deliveries inserted and
//! the events marked in one statement.

use deadpool_postgres::Pool;

use crate::db::queue;
use crate::error::Result;

/// Fan-out settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanOutConfig {
    /// Events per statement.
    pub batch: i64,
    /// Batches per call of [`FanOut::run_once`], so claiming is not starved
    /// during a large burst.
    pub max_batches: usize,
}

impl Default for FanOutConfig {
    fn default() -> Self {
        FanOutConfig {
            batch: 500,
            max_batches: 8,
        }
    }
}

/// The fan-out service.
#[derive(Clone)]
pub struct FanOut {
    config: FanOutConfig,
    pool: Pool,
}

impl FanOut {
    /// A fan-out over this pool.
    pub fn new(config: FanOutConfig, pool: Pool) -> Self {
        FanOut { config, pool }
    }

    /// Fans out batches until one comes back short (or `max_batches`).
    pub async fn run_once(&self) -> Result<FanOutRound> {
        let client = self.pool.get().await?;
        let mut round = FanOutRound {
            more: true,
            ..FanOutRound::default()
        };
        for _ in 0..self.config.max_batches {
            let count = queue::fan_out(&client, self.config.batch).await?;
            round.events += count.events;
            round.deliveries += count.deliveries;
            if count.events < self.config.batch {
                round.more = false;
                break;
            }
        }
        Ok(round)
    }
}

/// What one call of [`FanOut::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOutRound {
    /// Events fanned out.
    pub events: i64,
    /// Deliveries created.
    pub deliveries: i64,
    /// Every batch was full: more events are probably waiting.
    pub more: bool,
}
