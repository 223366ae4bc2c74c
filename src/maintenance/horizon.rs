//! Says what holds vacuum back. A transaction left open elsewhere in the
//! database (an idle-in-transaction session, a long `pg_dump`, a stuck
//! report), a replication slot's `xmin` or a forgotten prepared transaction
//! holds back the xmin horizon: no dead row newer than it can be removed,
//! so the queue's hot rows and indexes fill with dead versions and every
//! claim and fan-out reads more of them. Nothing in the daemon can fix
//! that; it can tell the operator who is holding it.
//!
//! Every `interval` this service reads the oldest holder (one query), sets
//! `webhookd_xmin_horizon_age_seconds`, `webhookd_xmin_horizon_age_transactions`
//! and the queue tables' dead tuples, and once the holder has held the
//! horizon for `warn_after` logs a warning naming it, at most once per
//! `warn_every`, then one line when it is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tracing::{info, warn};

use crate::admin::metrics::Metrics;
use crate::db;
use crate::db::maintenance::{HolderKind, HorizonHolder};
use crate::error::Result;
use crate::service::Service;
use crate::shutdown::Shutdown;

/// Warn once the oldest holder has held the horizon this long. Ordinary
/// transactions, statements and ANALYZE last seconds, so two minutes is
/// never their noise; yet a transaction held three minutes is already
/// enough to leave thousands of dead versions of the webhooks' rows and to
/// multiply commit-to-arrival latency, so the operator hears of it while it
/// still matters. A `pg_dump` that runs longer is named too, rightly: it
/// holds vacuum back all the same.
pub const WARN_AFTER: Duration = Duration::from_secs(120);

/// Horizon check settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HorizonConfig {
    /// How often to look.
    pub interval: Duration,
    /// Warn once the horizon has been held this long.
    pub warn_after: Duration,
    /// Repeat the warning at most this often while it lasts.
    pub warn_every: Duration,
}

impl Default for HorizonConfig {
    fn default() -> Self {
        HorizonConfig {
            interval: Duration::from_secs(30),
            warn_after: WARN_AFTER,
            warn_every: Duration::from_secs(300),
        }
    }
}

/// What one look found.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonReading {
    /// The oldest holder, if anything holds the horizon.
    pub holder: Option<HorizonHolder>,
    /// How long it has held it: from the server's timestamps, or, where
    /// the server hides them (a slot; another role's session without
    /// `pg_read_all_stats`), at least since this service first saw it.
    pub held_for: Duration,
    /// What this look logged.
    pub notice: Option<HorizonNotice>,
}

/// A line the horizon check logged.
#[derive(Debug, Clone, PartialEq)]
pub enum HorizonNotice {
    /// A warning naming the reading's holder.
    HeldBack,
    /// The holder warned about is gone (or no longer old).
    Cleared {
        /// The holder last warned about.
        holder: HorizonHolder,
        /// How long it had held the horizon when last seen.
        held_for: Duration,
    },
}

/// The horizon check.
pub struct Horizon {
    config: HorizonConfig,
    pool: Pool,
    metrics: Arc<Metrics>,
    tracker: HoldTracker,
}

impl Horizon {
    /// A check over this pool, reporting into `metrics`.
    pub fn new(config: HorizonConfig, pool: Pool, metrics: Arc<Metrics>) -> Self {
        Horizon {
            config,
            pool,
            metrics,
            tracker: HoldTracker::default(),
        }
    }

    /// One look: reads the oldest holder and the dead tuples, sets the
    /// metrics, logs what is due.
    pub async fn run_once(&mut self) -> Result<HorizonReading> {
        let client = self.pool.get().await?;
        let holder = db::maintenance::xmin_horizon(&**client).await?;
        let dead = db::stats::queue_dead_tuples(&**client).await?;
        drop(client);
        let now = Instant::now();
        let held_for = self.tracker.held_for(holder.as_ref(), now);
        self.metrics.xmin_horizon(
            held_for.as_secs_f64(),
            holder.as_ref().map_or(0, |h| h.age_transactions),
        );
        for (table, dead) in dead {
            self.metrics.dead_tuples(&table, dead);
        }
        let notice = self
            .tracker
            .notice(holder.as_ref(), held_for, now, &self.config);
        let reading = HorizonReading {
            holder,
            held_for,
            notice,
        };
        log(&reading);
        Ok(reading)
    }
}

impl Service for Horizon {
    const NAME: &'static str = "horizon";

    /// Looks now, then every `interval`, until shutdown.
    async fn run(mut self, mut shutdown: Shutdown) {
        loop {
            if let Err(err) = self.run_once().await {
                warn!(error = %err.one_line(), "xmin horizon check failed; next check retries");
            }
            let interval = tokio::time::sleep(self.config.interval);
            if shutdown.before(interval).await.is_none() {
                return;
            }
        }
    }
}

/// Identifies one holding across looks: the same holder on the same xid.
type HoldingKey = (HolderKind, Option<i32>, Option<String>, i64);

/// How long holdings have lasted and whether a warning is out; no I/O.
#[derive(Debug, Default)]
struct HoldTracker {
    /// The holding seen last and when it was first seen.
    seen: Option<(HoldingKey, Instant)>,
    /// When the last warning was logged.
    warned_at: Option<Instant>,
    /// The holder warned about, as last seen, for the all-clear.
    warned: Option<(HorizonHolder, Duration)>,
}

impl HoldTracker {
    fn held_for(&mut self, holder: Option<&HorizonHolder>, now: Instant) -> Duration {
        let Some(holder) = holder else {
            self.seen = None;
            return Duration::ZERO;
        };
        let key = (holder.kind, holder.pid, holder.name.clone(), holder.xmin);
        let first_seen = match &self.seen {
            Some((seen, at)) if *seen == key => *at,
            _ => {
                self.seen = Some((key, now));
                now
            }
        };
        match holder.age_seconds {
            Some(seconds) => Duration::from_secs_f64(seconds.max(0.0)),
            None => now.duration_since(first_seen),
        }
    }

    fn notice(
        &mut self,
        holder: Option<&HorizonHolder>,
        held_for: Duration,
        now: Instant,
        config: &HorizonConfig,
    ) -> Option<HorizonNotice> {
        match holder {
            Some(holder) if held_for >= config.warn_after => {
                self.warned = Some((holder.clone(), held_for));
                let due = self
                    .warned_at
                    .is_none_or(|at| now.duration_since(at) >= config.warn_every);
                if !due {
                    return None;
                }
                self.warned_at = Some(now);
                Some(HorizonNotice::HeldBack)
            }
            _ => {
                let (holder, held_for) = self.warned.take()?;
                // A new holding later is a new story: warned about at once.
                self.warned_at = None;
                Some(HorizonNotice::Cleared { holder, held_for })
            }
        }
    }
}

/// The log line of a notice. Never the holder's query: it may hold data.
fn log(reading: &HorizonReading) {
    match &reading.notice {
        None => {}
        Some(HorizonNotice::HeldBack) => {
            let Some(holder) = &reading.holder else {
                return;
            };
            let at_least = if holder.age_seconds.is_none() {
                "at least "
            } else {
                ""
            };
            warn!(
                kind = holder.kind.as_str(),
                pid = holder.pid,
                application_name = session_field(holder, holder.name.as_deref()),
                name = other_field(holder, holder.name.as_deref()),
                user = holder.user.as_deref(),
                state = holder.state.as_deref(),
                age_s = reading.held_for.as_secs(),
                age_transactions = holder.age_transactions,
                "{} has held the xmin horizon back for {at_least}{} s: dead rows in the outbox \
                 tables cannot be vacuumed until it ends, and the queue slows down as they \
                 pile up; {}",
                describe(holder),
                reading.held_for.as_secs(),
                advice(holder)
            );
        }
        Some(HorizonNotice::Cleared { holder, held_for }) => info!(
            kind = holder.kind.as_str(),
            pid = holder.pid,
            held_s = held_for.as_secs(),
            "{} no longer holds the xmin horizon back; vacuum can remove the dead rows again",
            describe(holder)
        ),
    }
}

/// `name` as a session's application name, else nothing.
fn session_field<'a>(holder: &HorizonHolder, name: Option<&'a str>) -> Option<&'a str> {
    (holder.kind == HolderKind::Session)
        .then_some(name)
        .flatten()
}

/// `name` as a slot's name or a prepared transaction's gid, else nothing.
fn other_field<'a>(holder: &HorizonHolder, name: Option<&'a str>) -> Option<&'a str> {
    (holder.kind != HolderKind::Session)
        .then_some(name)
        .flatten()
}

/// "session pid 4242 (application 'report', user 'app', idle in transaction)".
fn describe(holder: &HorizonHolder) -> String {
    let mut details = Vec::new();
    let name = holder.name.as_deref().filter(|name| !name.is_empty());
    match (holder.kind, name) {
        (HolderKind::Session, Some(name)) => details.push(format!("application '{name}'")),
        (_, Some(name)) => details.push(format!("'{name}'")),
        (_, None) => {}
    }
    if let Some(user) = &holder.user {
        details.push(format!("user '{user}'"));
    }
    if let Some(state) = &holder.state {
        details.push(state.clone());
    }
    let pid = holder
        .pid
        .map(|pid| format!(" pid {pid}"))
        .unwrap_or_default();
    let details = if details.is_empty() {
        String::new()
    } else {
        format!(" ({})", details.join(", "))
    };
    format!("{}{pid}{details}", holder.kind.as_str())
}

/// What the operator can do about it.
fn advice(holder: &HorizonHolder) -> String {
    let name = holder.name.as_deref().unwrap_or("");
    match (holder.kind, holder.pid) {
        (HolderKind::Session, Some(pid)) => {
            format!("end it with pg_terminate_backend({pid}) if it is stuck")
        }
        (HolderKind::ReplicationSlot, _) => format!(
            "a standby behind it or gone holds it; drop the slot with \
             pg_drop_replication_slot('{name}') if it is no longer used"
        ),
        (HolderKind::PreparedTransaction, _) => {
            format!("finish it with COMMIT PREPARED or ROLLBACK PREPARED '{name}'")
        }
        (HolderKind::Session, None) => "end it if it is stuck".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(xmin: i64, age_seconds: Option<f64>) -> HorizonHolder {
        HorizonHolder {
            kind: HolderKind::Session,
            pid: Some(4242),
            name: Some("stuck-report".into()),
            user: Some("app".into()),
            state: age_seconds.map(|_| "idle in transaction".into()),
            age_transactions: 1000,
            xmin,
            age_seconds,
        }
    }

    fn config() -> HorizonConfig {
        HorizonConfig {
            interval: Duration::from_secs(30),
            warn_after: Duration::from_secs(120),
            warn_every: Duration::from_secs(300),
        }
    }

    #[test]
    fn warns_once_per_interval_while_held_and_clears_once() {
        let mut tracker = HoldTracker::default();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut look = |s: u64, holder: Option<HorizonHolder>| {
            let held = tracker.held_for(holder.as_ref(), at(s));
            tracker.notice(holder.as_ref(), held, at(s), &config())
        };
        assert_eq!(look(0, Some(session(7, Some(60.0)))), None, "young");
        assert_eq!(
            look(30, Some(session(7, Some(121.0)))),
            Some(HorizonNotice::HeldBack)
        );
        for s in [60, 90, 300] {
            assert_eq!(look(s, Some(session(7, Some(121.0 + s as f64)))), None);
        }
        assert_eq!(
            look(330, Some(session(7, Some(421.0)))),
            Some(HorizonNotice::HeldBack),
            "five minutes after the last warning"
        );
        assert!(matches!(
            look(360, None),
            Some(HorizonNotice::Cleared { held_for, .. }) if held_for == Duration::from_secs(421)
        ));
        assert_eq!(look(390, None), None, "cleared once");
        assert_eq!(
            look(420, Some(session(9, Some(130.0)))),
            Some(HorizonNotice::HeldBack),
            "a new holding is warned about at once"
        );
    }

    #[test]
    fn without_timestamps_the_age_counts_from_when_the_holding_was_first_seen() {
        let mut tracker = HoldTracker::default();
        let start = Instant::now();
        let hidden = session(7, None);
        assert_eq!(tracker.held_for(Some(&hidden), start), Duration::ZERO);
        let later = start + Duration::from_secs(150);
        assert_eq!(
            tracker.held_for(Some(&hidden), later),
            Duration::from_secs(150)
        );
        assert_eq!(
            tracker.held_for(Some(&session(8, None)), later),
            Duration::ZERO,
            "another xid is another holding"
        );
    }

    #[test]
    fn the_description_names_the_holder_and_the_way_out() {
        let holder = session(7, Some(1.0));
        assert_eq!(
            describe(&holder),
            "session pid 4242 (application 'stuck-report', user 'app', idle in transaction)"
        );
        assert_eq!(
            advice(&holder),
            "end it with pg_terminate_backend(4242) if it is stuck"
        );
        let slot = HorizonHolder {
            kind: HolderKind::ReplicationSlot,
            pid: None,
            name: Some("standby_1".into()),
            user: None,
            state: Some("inactive".into()),
            ..holder
        };
        assert_eq!(describe(&slot), "replication slot ('standby_1', inactive)");
        assert!(advice(&slot).contains("pg_drop_replication_slot('standby_1')"));
    }
}
