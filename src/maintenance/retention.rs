//! Retention: events older than `--retention`, with every delivery finished,
//! are deleted together with their deliveries and attempts.
//!
//! Deletes run in small batches with a pause between them, so delivery never
//! waits behind a long delete, and under a transaction-level advisory lock so
//! replicas do not sweep at once (never a session-level lock: those break
//! behind connection poolers).

use std::time::Duration;

use deadpool_postgres::Pool;
use tracing::{info, warn};

use crate::db;
use crate::error::Result;
use crate::service::Service;
use crate::shutdown::Shutdown;

/// Retention settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Keep finished events this long; `None` keeps everything.
    pub keep: Option<Duration>,
    /// How often to sweep.
    pub interval: Duration,
    /// Events per delete.
    pub batch: i64,
    /// Batches per sweep. A sweep that stops here with more to delete is
    /// followed by the next one after `pause`, not `interval`: events may
    /// expire faster than one sweep a minute deletes them.
    pub max_batches: usize,
    /// Pause between batches.
    pub pause: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep: Some(Duration::from_secs(30 * 86_400)),
            interval: Duration::from_secs(60),
            batch: 1_000,
            max_batches: 100,
            pause: Duration::from_millis(20),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Events deleted (their deliveries and attempts with them).
    pub events_deleted: u64,
    /// Another replica held the sweep.
    pub skipped: bool,
    /// The sweep stopped at `max_batches` with more expired events left.
    pub more: bool,
}

/// The retention sweeper.
pub struct Retention {
    config: RetentionConfig,
    pool: Pool,
}

impl Retention {
    /// A sweeper over this pool.
    pub fn new(config: RetentionConfig, pool: Pool) -> Self {
        Retention { config, pool }
    }

    /// One sweep: batches until one comes back short, `max_batches`, or shutdown.
    pub async fn run_once(&self, shutdown: &Shutdown) -> Result<RetentionOutcome> {
        let Some(keep) = self.config.keep else {
            return Ok(RetentionOutcome::default());
        };
        let mut outcome = RetentionOutcome::default();
        for batch in 0..self.config.max_batches {
            if shutdown.is_triggered() {
                break;
            }
            if batch > 0 {
                tokio::time::sleep(self.config.pause).await;
            }
            let mut client = self.pool.get().await?;
            match db::retention::delete_expired_events(&mut client, keep, self.config.batch).await?
            {
                None => {
                    outcome.skipped = true;
                    break;
                }
                Some(deleted) => {
                    outcome.events_deleted += deleted;
                    if (deleted as i64) < self.config.batch {
                        break;
                    }
                    outcome.more = batch + 1 == self.config.max_batches;
                }
            }
        }
        Ok(outcome)
    }
}

impl Service for Retention {
    const NAME: &'static str = "retention";

    /// Sweeps every `interval` until shutdown; errors are logged and retried
    /// at the next sweep.
    async fn run(self, mut shutdown: Shutdown) {
        if self.config.keep.is_none() {
            return;
        }
        let mut wait = self.config.interval;
        loop {
            if shutdown.before(tokio::time::sleep(wait)).await.is_none() {
                return;
            }
            wait = self.config.interval;
            match self.run_once(&shutdown).await {
                Ok(outcome) => {
                    if outcome.events_deleted > 0 {
                        info!(
                            events = outcome.events_deleted,
                            more = outcome.more,
                            "retention deleted finished events"
                        );
                    }
                    if outcome.more {
                        wait = self.config.pause;
                    }
                }
                Err(err) => {
                    warn!(error = %err.one_line(), "retention sweep failed; next sweep retries")
                }
            }
        }
    }
}
