//! How long the main loop sleeps between rounds, and what wakes it early: a
//! wake-up (NOTIFY, the fan-out pump, a scheduled retry), a freed slot, a
//! written batch of results, or shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::delivery::notifier::ListenStatus;
use crate::shutdown::Shutdown;

/// Longest sleep while LISTEN is not active (reconnecting, or a pooler that
/// cannot deliver notifications): the latency of a new event then.
pub const POLL_WITHOUT_LISTEN: Duration = Duration::from_secs(1);

/// How long a freed slot waits for company before the loop claims again.
const SLOT_LINGER: Duration = Duration::from_millis(2);

/// Shared signals between the loop, the notifier, the completer and the send
/// tasks.
#[derive(Clone, Default)]
pub(super) struct Signals {
    /// NOTIFY arrived, the notifier reconnected, the pump fanned out or the
    /// completer scheduled a retry.
    pub wake: Arc<Notify>,
    /// An in-flight delivery finished: its webhook has a free slot.
    pub slot_freed: Arc<Notify>,
    /// The completer wrote a batch: that much global capacity is back.
    pub recorded: Arc<Notify>,
    /// The claim found `--max-in-flight` used up: the completer writes what
    /// it holds instead of waiting for company.
    pub starved: Arc<Notify>,
    /// Whether LISTEN works (for the loop's sleeps and for readiness).
    pub listen: Arc<ListenStatus>,
}

/// What one round of the loop decided.
pub(super) enum Tick {
    /// More work is likely right away.
    Again,
    /// Sleep unless woken.
    Sleep(Sleep),
}

/// How long the loop sleeps, and which signals besides a wake-up and
/// shutdown end the sleep early.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sleep {
    for_at_most: Duration,
    /// A webhook at its cap held work back.
    until_slot_freed: bool,
    /// `--max-in-flight` held work back until results are written.
    until_recorded: bool,
}

impl Sleep {
    /// A sleep of at most `for_at_most` that a freed slot ends only when
    /// some webhook is `saturated` (at its cap): otherwise a finished
    /// delivery enables nothing the last round did not already take, and
    /// waking for each one would cost a round of queries per delivery.
    pub fn after_round(for_at_most: Duration, saturated: bool) -> Self {
        Sleep {
            for_at_most,
            until_slot_freed: saturated,
            until_recorded: false,
        }
    }

    /// Every slot is taken: only written results (or a wake-up) free one.
    pub fn until_recorded(for_at_most: Duration) -> Self {
        Sleep {
            for_at_most,
            until_slot_freed: false,
            until_recorded: true,
        }
    }

    /// Only a wake-up, shutdown or the time ends it.
    pub fn only(duration: Duration) -> Self {
        Sleep {
            for_at_most: duration,
            until_slot_freed: false,
            until_recorded: false,
        }
    }

    /// Sleeps until the time is up or a signal this sleep listens to arrives.
    pub async fn wait(self, signals: &Signals, shutdown: &mut Shutdown) {
        let deadline = tokio::time::Instant::now() + self.for_at_most;
        loop {
            tokio::select! {
                _ = signals.wake.notified() => return,
                _ = signals.slot_freed.notified() => {
                    if self.until_slot_freed {
                        // Deliveries finish in bursts: let a few more slots
                        // free up so one claim refills many of them.
                        tokio::time::sleep(SLOT_LINGER).await;
                        return;
                    }
                }
                _ = signals.recorded.notified() => {
                    if self.until_recorded {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = shutdown.wait() => return,
            }
        }
    }
}
