//! Stage 2: lease due deliveries in batches, fairly across webhooks, within
//! a per-webhook in-flight cap so one slow receiver cannot take every slot.
//!
//! In-flight accounting is per replica: [`InFlight`] is the authority on how
//! many deliveries of each webhook this process is sending right now.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::db::queue::{self, ClaimRequest, ClaimedDelivery};
use crate::db::Preparing;
use crate::delivery::pacing::{Feedback, Pace, PacingConfig};
use crate::error::Result;

/// Default most deliveries in flight per webhook per replica.
pub const MAX_IN_FLIGHT_PER_WEBHOOK_DEFAULT: usize = 128;

/// Default lease (docs/CONTRACT.md §6): longer than connect + response timeout.
pub const LEASE_DEFAULT: Duration = Duration::from_secs(90);

/// Claimer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimerConfig {
    /// Most deliveries per claim.
    pub batch: usize,
    /// Deliveries in flight per replica, all webhooks together.
    pub max_in_flight: usize,
    /// How many deliveries each webhook may have in flight per replica.
    pub pacing: PacingConfig,
    /// How long claimed rows stay reserved.
    pub lease: Duration,
}

impl Default for ClaimerConfig {
    fn default() -> Self {
        ClaimerConfig {
            batch: 256,
            max_in_flight: 512,
            pacing: PacingConfig::up_to(MAX_IN_FLIGHT_PER_WEBHOOK_DEFAULT),
            lease: LEASE_DEFAULT,
        }
    }
}

/// What this replica has claimed and not yet recorded.
///
/// Two numbers, because they bound different things. A delivery counts
/// against `--max-in-flight` from claim until its result is written, so a
/// crash re-sends at most that many. It counts against its webhook's slots
/// ([`Pace`]) only while it is being sent, so one webhook's pace is not tied
/// to write-back.
#[derive(Debug)]
pub struct InFlight {
    pacing: PacingConfig,
    state: Mutex<InFlightState>,
}

#[derive(Debug, Default)]
struct InFlightState {
    /// Claimed and not yet written back.
    total: usize,
    /// Slots per webhook seen recently.
    per_webhook: HashMap<Uuid, Tracked>,
    /// Leases held, so unattempted work can be released at shutdown.
    leases: HashMap<Uuid, Uuid>,
}

/// A webhook's slots and since when it has had nothing in flight.
#[derive(Debug)]
struct Tracked {
    pace: Pace,
    last_finished: Instant,
}

/// Webhooks whose pace is remembered; past this, idle ones are forgotten at
/// once (they start again from [`PacingConfig::start`]). An entry is
/// about 50 bytes; this bounds the map below 1 MiB.
const PACES_REMEMBERED: usize = 10_000;

impl InFlight {
    /// Nothing in flight; webhooks paced by `pacing`.
    pub fn new(pacing: PacingConfig) -> Self {
        InFlight {
            pacing,
            state: Mutex::new(InFlightState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InFlightState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How webhooks are paced.
    pub fn pacing(&self) -> &PacingConfig {
        &self.pacing
    }

    /// Deliveries claimed and not yet written back.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Marks a claimed delivery as in flight.
    pub fn start(&self, delivery: &ClaimedDelivery, token: Uuid) {
        let mut state = self.lock();
        state.total += 1;
        if state.per_webhook.len() >= PACES_REMEMBERED {
            state
                .per_webhook
                .retain(|_, tracked| tracked.pace.sending > 0);
        }
        let pacing = self.pacing;
        state
            .per_webhook
            .entry(delivery.webhook_id)
            .or_insert_with(|| Tracked {
                pace: Pace::new(&pacing),
                last_finished: Instant::now(),
            })
            .pace
            .sending += 1;
        state.leases.insert(delivery.id, token);
    }

    /// The delivery was sent (or given up on) and its result is queued for
    /// write-back: its webhook's slot frees up, and the webhook's pace learns
    /// from how it went.
    pub fn finish(&self, delivery_id: Uuid, webhook_id: Uuid, feedback: Feedback) {
        let mut state = self.lock();
        if state.leases.remove(&delivery_id).is_none() {
            return;
        }
        let pacing = self.pacing;
        let Some(tracked) = state.per_webhook.get_mut(&webhook_id) else {
            return;
        };
        tracked.pace.finished(feedback, &pacing);
        tracked.last_finished = Instant::now();
        // Idle at the starting pace, it says nothing a new entry would not.
        if tracked.pace == Pace::new(&pacing) {
            state.per_webhook.remove(&webhook_id);
        }
    }

    /// Forgets webhooks with nothing in flight for
    /// [`PacingConfig::forget_after`]: quiet, revoked or disabled ones.
    /// Returns how many are still tracked.
    pub fn forget_quiet(&self) -> usize {
        let forget_after = self.pacing.forget_after;
        let mut state = self.lock();
        state.per_webhook.retain(|_, tracked| {
            tracked.pace.sending > 0 || tracked.last_finished.elapsed() < forget_after
        });
        state.per_webhook.len()
    }

    /// `count` results were written back (or dropped by the completer).
    pub fn recorded(&self, count: usize) {
        let mut state = self.lock();
        state.total = state.total.saturating_sub(count);
    }

    /// True when some webhook has no free slot left.
    pub fn any_saturated(&self) -> bool {
        self.lock()
            .per_webhook
            .values()
            .any(|tracked| tracked.pace.room() == 0)
    }

    /// Free slots of every webhook this replica knows.
    fn rooms(&self) -> HashMap<Uuid, i32> {
        self.lock()
            .per_webhook
            .iter()
            .map(|(webhook, tracked)| {
                let room = tracked.pace.room();
                (*webhook, i32::try_from(room).unwrap_or(i32::MAX))
            })
            .collect()
    }

    /// Leases still held: (delivery id, token).
    pub fn held_leases(&self) -> Vec<(Uuid, Uuid)> {
        self.lock()
            .leases
            .iter()
            .map(|(id, token)| (*id, *token))
            .collect()
    }
}

/// The claim service.
pub struct Claimer {
    config: ClaimerConfig,
    pool: Pool,
    preparing: Preparing,
}

/// One claim's result.
#[derive(Debug, Default)]
pub struct Claim {
    /// The fencing token written on every claimed row.
    pub token: Uuid,
    /// How many were asked for.
    pub asked: usize,
    /// What was leased.
    pub deliveries: Vec<ClaimedDelivery>,
}

impl Claimer {
    /// A claimer over this pool.
    pub fn new(config: ClaimerConfig, pool: Pool, preparing: Preparing) -> Self {
        Claimer {
            config,
            pool,
            preparing,
        }
    }

    /// Its settings.
    pub fn config(&self) -> &ClaimerConfig {
        &self.config
    }

    /// Claims as many due deliveries as there are free slots (at most one
    /// batch), within each webhook's free slots.
    ///
    /// First from a window of the oldest due rows (cheap, and fair across the
    /// webhooks in it). When that window was full and still yielded too
    /// little, webhooks at their cap may be hiding other webhooks' work
    /// behind their backlog; a second statement then looks webhook by webhook.
    pub async fn run_once(&self, in_flight: &InFlight) -> Result<Claim> {
        let start = i32::try_from(in_flight.pacing().start).unwrap_or(i32::MAX);
        let free = self.free(in_flight);
        let mut rooms = in_flight.rooms();
        let mut claim = Claim {
            token: lease_token(),
            asked: free,
            deliveries: Vec::new(),
        };
        if free == 0 {
            return Ok(claim);
        }
        let client = self.pool.get().await?;
        // Scan about twice what can be taken: the known webhooks' free slots
        // plus a few new webhooks' starting slots. Scanning the whole batch
        // size every time would cost a fixed ~512-row scan per claim even
        // when one busy webhook can take only the handful of slots that just
        // freed up.
        let known_room: usize = rooms.values().map(|room| (*room).max(0) as usize).sum();
        let takeable = free.min(known_room + 8 * in_flight.pacing().start);
        let scan_window = i32::try_from(takeable * 2).unwrap_or(i32::MAX);
        let window = Pass::Window {
            limit: free,
            scan_window,
        };
        let first = self.claim(&client, claim.token, window, &rooms).await?;
        let window_full = first.window_rows >= i64::from(scan_window);
        for delivery in &first.deliveries {
            *rooms.entry(delivery.webhook_id).or_insert(start) -= 1;
        }
        claim.deliveries = first.deliveries;
        let missing = free - claim.deliveries.len();
        let some_at_cap = rooms.values().any(|room| *room <= 0);
        if missing > 0 && some_at_cap && (window_full || claim.deliveries.is_empty()) {
            let by_webhook = Pass::ByWebhook { limit: missing };
            let second = self.claim(&client, claim.token, by_webhook, &rooms).await?;
            claim.deliveries.extend(second.deliveries);
        }
        Ok(claim)
    }

    /// How many deliveries may be leased now: the replica's free slots, at
    /// most one batch.
    pub fn free(&self, in_flight: &InFlight) -> usize {
        self.config
            .max_in_flight
            .saturating_sub(in_flight.total())
            .min(self.config.batch)
    }

    /// The slots a lease may fill now, for the leasing fan-out: the same
    /// limits the claim applies.
    pub fn slots(&self, in_flight: &InFlight) -> Slots {
        self.slots_within(&in_flight.rooms(), self.free(in_flight))
    }

    /// At most `limit` deliveries, within each webhook's free slots `rooms`.
    fn slots_within(&self, rooms: &HashMap<Uuid, i32>, limit: usize) -> Slots {
        let (busy, free_slots) = rooms
            .iter()
            .map(|(webhook, room)| (*webhook, (*room).max(0)))
            .unzip();
        Slots {
            limit,
            busy,
            free_slots,
            per_webhook_cap: i32::try_from(self.config.pacing.start).unwrap_or(i32::MAX),
            lease: self.config.lease,
        }
    }

    async fn claim(
        &self,
        client: &deadpool_postgres::ClientWrapper,
        token: Uuid,
        pass: Pass,
        rooms: &HashMap<Uuid, i32>,
    ) -> Result<queue::ClaimedRows> {
        let (limit, scan_window, by_webhook) = match pass {
            Pass::Window { limit, scan_window } => (limit, scan_window, false),
            Pass::ByWebhook { limit } => (limit, 0, true),
        };
        let slots = self.slots_within(rooms, limit);
        let request = ClaimRequest {
            scan_window,
            by_webhook,
            room: slots.room(token),
        };
        queue::claim(self.preparing.session(client), &request).await
    }
}

/// Free slots, as a statement that leases takes them.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    /// Most deliveries in all.
    pub limit: usize,
    /// Webhooks with deliveries in flight …
    pub busy: Vec<Uuid>,
    /// … and how many more each may take.
    pub free_slots: Vec<i32>,
    /// Slots of a webhook with nothing in flight.
    pub per_webhook_cap: i32,
    /// How long leased rows stay reserved.
    pub lease: Duration,
}

impl Slots {
    /// The statement's view of these slots, leasing under `token`.
    pub fn room(&self, token: Uuid) -> queue::Room<'_> {
        queue::Room {
            limit: i32::try_from(self.limit).unwrap_or(i32::MAX),
            busy: &self.busy,
            free_slots: &self.free_slots,
            per_webhook_cap: self.per_webhook_cap,
            lease: self.lease,
            token,
        }
    }
}

/// How one claim statement looks for due work.
#[derive(Debug, Clone, Copy)]
enum Pass {
    /// The oldest `scan_window` due rows, round-robin across their webhooks.
    Window { limit: usize, scan_window: i32 },
    /// Each active webhook with free slots, its oldest due rows.
    ByWebhook { limit: usize },
}

/// A fresh lease token: random version-4 bits from the thread's generator.
/// `Uuid::new_v4` asks the kernel for every one, a system call per claim or
/// fan-out; the token only has to be unique among the leases in flight.
pub fn lease_token() -> Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_tokens_are_distinct_version_4_ids() {
        let (a, b) = (lease_token(), lease_token());
        assert_ne!(a, b);
        assert_eq!(a.get_version_num(), 4);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
    }
}
