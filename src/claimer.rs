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
    /// batch), skipping webhooks at their cap.
    pub async fn run_once(&self, in_flight: &InFlight) -> Result<Claim> {
        let cap = self.config.max_in_flight_per_webhook;
        let (free, saturated, busy, busy_free) = {
            let state = in_flight.lock();
            let free = self
                .config
                .max_in_flight
                .saturating_sub(state.total)
                .min(self.config.batch);
            let mut saturated = Vec::new();
            let mut busy = Vec::new();
            let mut busy_free = Vec::new();
            for (webhook, count) in &state.per_webhook {
                if *count >= cap {
                    saturated.push(*webhook);
                } else {
                    busy.push(*webhook);
                    busy_free.push(i32::try_from(cap - count).unwrap_or(i32::MAX));
                }
            }
            (free, saturated, busy, busy_free)
        };
        let token = Uuid::new_v4();
        if free == 0 {
            return Ok(Claim {
                token,
                asked: 0,
                deliveries: Vec::new(),
            });
        }
        let client = self.pool.get().await?;
        let request = ClaimRequest {
            limit: free as i64,
            // Looking past the first `free` due rows lets other webhooks'
            // work through when the oldest rows all belong to one webhook.
            scan_window: (free * 4) as i64,
            saturated: &saturated,
            partially_busy: &busy,
            free_slots: &busy_free,
            per_webhook_cap: i32::try_from(cap).unwrap_or(i32::MAX),
            lease: self.config.lease,
            token,
        };
        let deliveries = queue::claim(&client, &request).await?;
        Ok(Claim {
            token,
            asked: free,
            deliveries,
        })
    }
}
