//! Stage 2: lease due deliveries in batches, fairly across webhooks, within
//! a per-webhook in-flight cap so one slow receiver cannot take every slot.
//!
//! In-flight accounting is per replica: [`InFlight`] is the authority on how
//! many deliveries of each webhook this process is sending right now.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::db::queue::{self, ClaimRequest, ClaimedDelivery};
use crate::error::Result;

/// Default lease (SPEC §6): longer than connect + response timeout.
pub const LEASE_DEFAULT: Duration = Duration::from_secs(90);

/// Claimer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimerConfig {
    /// Most deliveries per claim.
    pub batch: usize,
    /// Deliveries in flight per replica, all webhooks together.
    pub max_in_flight: usize,
    /// Deliveries in flight per webhook per replica.
    pub max_in_flight_per_webhook: usize,
    /// How long claimed rows stay reserved.
    pub lease: Duration,
}

impl Default for ClaimerConfig {
    fn default() -> Self {
        ClaimerConfig {
            batch: 256,
            max_in_flight: 512,
            max_in_flight_per_webhook: 32,
            lease: LEASE_DEFAULT,
        }
    }
}

/// What this replica has claimed and not yet recorded.
///
/// Two numbers, because they bound different things. A delivery counts
/// against `--max-in-flight` from claim until its result is written, so a
/// crash re-sends at most that many. It counts against its webhook's cap only
/// while it is being sent, so one webhook's pace is not tied to write-back.
#[derive(Debug, Default)]
pub struct InFlight {
    state: Mutex<InFlightState>,
}

#[derive(Debug, Default)]
struct InFlightState {
    /// Claimed and not yet written back.
    total: usize,
    /// Being sent, per webhook.
    per_webhook: HashMap<Uuid, usize>,
    /// Leases held, so unattempted work can be released at shutdown.
    leases: HashMap<Uuid, Uuid>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, InFlightState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Deliveries claimed and not yet written back.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Marks a claimed delivery as in flight.
    pub fn start(&self, delivery: &ClaimedDelivery, token: Uuid) {
        let mut state = self.lock();
        state.total += 1;
        *state.per_webhook.entry(delivery.webhook_id).or_default() += 1;
        state.leases.insert(delivery.id, token);
    }

    /// The delivery was sent (or given up on) and its result is queued for
    /// write-back: its webhook's slot frees up.
    pub fn finish(&self, delivery_id: Uuid, webhook_id: Uuid) {
        let mut state = self.lock();
        if state.leases.remove(&delivery_id).is_none() {
            return;
        }
        if let Some(count) = state.per_webhook.get_mut(&webhook_id) {
            *count -= 1;
            if *count == 0 {
                state.per_webhook.remove(&webhook_id);
            }
        }
    }

    /// `count` results were written back (or dropped by the completer).
    pub fn recorded(&self, count: usize) {
        let mut state = self.lock();
        state.total = state.total.saturating_sub(count);
    }

    /// True when some webhook has no free slot left.
    pub fn any_saturated(&self, per_webhook_cap: usize) -> bool {
        self.lock()
            .per_webhook
            .values()
            .any(|count| *count >= per_webhook_cap)
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
    pub fn new(config: ClaimerConfig, pool: Pool) -> Self {
        Claimer { config, pool }
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
        let cap = i32::try_from(self.config.max_in_flight_per_webhook).unwrap_or(i32::MAX);
        let (free, mut rooms) = {
            let state = in_flight.lock();
            let free = self
                .config
                .max_in_flight
                .saturating_sub(state.total)
                .min(self.config.batch);
            let rooms: HashMap<Uuid, i32> = state
                .per_webhook
                .iter()
                .map(|(webhook, count)| {
                    (
                        *webhook,
                        cap.saturating_sub(i32::try_from(*count).unwrap_or(i32::MAX))
                            .max(0),
                    )
                })
                .collect();
            (free, rooms)
        };
        let mut claim = Claim {
            token: Uuid::new_v4(),
            asked: free,
            deliveries: Vec::new(),
        };
        if free == 0 {
            return Ok(claim);
        }
        let client = self.pool.get().await?;
        // Twice the free slots: room for the round-robin to skip webhooks at
        // their cap without scanning far into the due index.
        let scan_window = (free * 2) as i64;
        let window = Pass::Window {
            limit: free,
            scan_window,
        };
        let first = self.claim(&client, claim.token, window, &rooms).await?;
        let window_full = first.window_rows >= scan_window;
        for delivery in &first.deliveries {
            *rooms.entry(delivery.webhook_id).or_insert(cap) -= 1;
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

    async fn claim(
        &self,
        client: &deadpool_postgres::Client,
        token: Uuid,
        pass: Pass,
        rooms: &HashMap<Uuid, i32>,
    ) -> Result<queue::ClaimedRows> {
        let (limit, scan_window, by_webhook) = match pass {
            Pass::Window { limit, scan_window } => (limit, scan_window, false),
            Pass::ByWebhook { limit } => (limit, 0, true),
        };
        let busy: Vec<Uuid> = rooms.keys().copied().collect();
        let free_slots: Vec<i32> = busy.iter().map(|webhook| rooms[webhook].max(0)).collect();
        let request = ClaimRequest {
            limit: limit as i64,
            scan_window,
            by_webhook,
            busy: &busy,
            free_slots: &free_slots,
            per_webhook_cap: i32::try_from(self.config.max_in_flight_per_webhook)
                .unwrap_or(i32::MAX),
            lease: self.config.lease,
            token,
        };
        queue::claim(client, &request).await
    }
}

/// How one claim statement looks for due work.
#[derive(Debug, Clone, Copy)]
enum Pass {
    /// The oldest `scan_window` due rows, round-robin across their webhooks.
    Window { limit: usize, scan_window: i64 },
    /// Each active webhook with free slots, its oldest due rows.
    ByWebhook { limit: usize },
}
