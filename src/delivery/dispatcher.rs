//! Between claim and write-back: builds each event's body once, signs it per
//! webhook, sends every claimed delivery on its own task, and hands each
//! result, with its next status from the retry schedule, to the completer.
//!
//! A delivery whose webhook secret no configured key opens is not attempted:
//! it goes back to pending with its attempt uncounted, due again after
//! [`UNOPENABLE_SECRET_DELAY`], so a daemon started with the wrong key loses
//! nothing and fails nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tracing::{debug, info_span, warn, Instrument};
use uuid::Uuid;

use crate::db::keys::SigningKeyRow;
use crate::db::queue::{AttemptRecord, ClaimedDelivery, NextStatus};
use crate::delivery::claimer::{Claim, InFlight};
use crate::delivery::pacing::Feedback;
use crate::delivery::retry::{AfterFailure, RetryPolicy};
use crate::delivery::sender::{Outcome, OutcomeCode, OutgoingRequest, Sender};
use crate::error::Result;
use crate::event::envelope;
use crate::guard::TargetUrl;
use crate::keys::Keyring;
use crate::signing::{SignatureScheme, Signer};

/// A success slower than this earns a webhook no extra slot.
const FAST_ENOUGH: std::time::Duration = std::time::Duration::from_secs(1);

/// What an attempt says about the receiver's capacity (see [`crate::delivery::pacing`]).
fn feedback(outcome: &Outcome, duration: std::time::Duration) -> Feedback {
    match outcome.code {
        OutcomeCode::Delivered if duration < FAST_ENOUGH => Feedback::Fast,
        OutcomeCode::ResponseTimeout | OutcomeCode::ConnectTimeout | OutcomeCode::Connection => {
            Feedback::Struggling
        }
        OutcomeCode::HttpStatus if matches!(outcome.status_code, Some(429 | 503)) => {
            Feedback::Struggling
        }
        _ => Feedback::Neutral,
    }
}

/// One line per attempt, on the attempt's span too.
fn log_attempt(outcome: &Outcome, next: NextStatus, duration: Duration) {
    let elapsed_ms = duration.as_millis() as u64;
    let span = tracing::Span::current();
    span.record("outcome", outcome.code.as_str());
    span.record("duration_ms", elapsed_ms);
    match (&outcome.reason, next) {
        (None, _) => debug!(
            outcome = outcome.code.as_str(),
            status = outcome.status_code,
            elapsed_ms,
            "delivered"
        ),
        (Some(reason), NextStatus::Failed) => {
            warn!(outcome = outcome.code.as_str(), %reason, elapsed_ms, "delivery failed for good")
        }
        (Some(reason), _) => {
            let retry_after_s = outcome.retry_after.map(|asked| asked.as_secs());
            warn!(outcome = outcome.code.as_str(), %reason, elapsed_ms, retry_after_s, "attempt failed; will retry")
        }
    }
}

/// Signers kept at most (a keyed HMAC, a few hundred bytes each: about
/// 4 MiB in all); past this the least recently used one is dropped. Webhooks
/// quiet for [`crate::delivery::pacing::PacingConfig::forget_after`] are
/// dropped before that, so a revoked webhook's key does not stay in memory.
const SIGNER_CACHE_MAX: usize = 10_000;

/// A cached signer and when a claim last needed it.
struct CachedSigner {
    signer: Signer,
    used: Instant,
}

/// How long a delivery whose webhook secret no configured key opens waits
/// before it is claimed again. A daemon's keys change only when it restarts,
/// so looking sooner would only repeat a claim and a release per delivery;
/// after a restart with the right key (or a `keys rotate` that re-seals the
/// secret under a key this daemon has) such deliveries go out within this long.
pub const UNOPENABLE_SECRET_DELAY: Duration = Duration::from_secs(60);

/// One warning per webhook whose secret does not open, at most this often.
const UNOPENABLE_WARNING_EVERY: Duration = Duration::from_secs(300);

/// What the dispatcher needs, built once by the daemon.
pub struct DispatcherParts {
    /// The HTTP side.
    pub sender: Arc<Sender>,
    /// The schedule deciding what a failure leads to.
    pub retry: RetryPolicy,
    /// Opens webhook secrets.
    pub secrets: Keyring,
    /// How long a delivery whose secret does not open waits.
    pub unopenable_delay: Duration,
    /// Lets `http://` and IP-literal targets through the URL check.
    pub allow_private_targets: bool,
    /// Where secrets are read from.
    pub pool: Pool,
    /// In-flight accounting shared with the claimer.
    pub in_flight: Arc<InFlight>,
    /// The completer's inbox.
    pub results: mpsc::Sender<AttemptRecord>,
    /// Notified whenever an in-flight slot frees up.
    pub slot_freed: Arc<Notify>,
    /// Attempt counts and durations.
    pub metrics: Arc<crate::admin::metrics::Metrics>,
}

/// The dispatch service.
pub struct Dispatcher {
    parts: DispatcherParts,
    signers: Mutex<HashMap<Uuid, CachedSigner>>,
    /// When each webhook's unopenable secret was last warned about.
    warned: Mutex<HashMap<Uuid, Instant>>,
}

impl Dispatcher {
    /// A dispatcher from its parts.
    pub fn new(parts: DispatcherParts) -> Arc<Self> {
        Arc::new(Dispatcher {
            parts,
            signers: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashMap::new()),
        })
    }

    /// Starts one task per claimed delivery on `tasks`, after handing back
    /// those whose webhook secret does not open. On error nothing was started.
    pub async fn dispatch(self: &Arc<Self>, claim: Claim, tasks: &mut JoinSet<()>) -> Result<()> {
        let signers = self.signers_for(&claim.deliveries).await?;
        let (ready, held): (Vec<_>, Vec<_>) = claim
            .deliveries
            .into_iter()
            .partition(|delivery| signers.contains_key(&delivery.webhook_id));
        if !held.is_empty() {
            let leases: Vec<_> = held.iter().map(|d| (d.id, claim.token)).collect();
            let client = self.parts.pool.get().await?;
            let released =
                crate::db::keys::hold_back(&**client, &leases, self.parts.unopenable_delay).await?;
            debug!(
                released,
                "deliveries wait for a key that opens their secret"
            );
        }
        let mut bodies: HashMap<Uuid, Bytes> = HashMap::new();
        for delivery in ready {
            let body = bodies
                .entry(delivery.event_id)
                .or_insert_with(|| {
                    envelope(
                        &delivery.event,
                        delivery.organization_id,
                        delivery.occurred_at,
                        &delivery.data,
                    )
                })
                .clone();
            let Some(signer) = signers.get(&delivery.webhook_id).cloned() else {
                continue;
            };
            self.parts.in_flight.start(&delivery, claim.token);
            // One span per attempt; outcome and duration are filled in when
            // it ends, so every line logged inside carries them too.
            let span = info_span!(
                "delivery",
                webhook_id = %delivery.webhook_id,
                delivery_id = %delivery.id,
                attempt = delivery.attempt,
                outcome = tracing::field::Empty,
                duration_ms = tracing::field::Empty,
            );
            let this = Arc::clone(self);
            let token = claim.token;
            tasks.spawn(
                async move {
                    let (record, feedback) = this.attempt(&delivery, token, body, signer).await;
                    // The slot frees only once the result is queued, so a
                    // shutdown that waits for in-flight work loses no result.
                    let _ = this.parts.results.send(record).await;
                    this.parts
                        .in_flight
                        .finish(delivery.id, delivery.webhook_id, feedback);
                    this.parts.slot_freed.notify_one();
                }
                .instrument(span),
            );
        }
        Ok(())
    }

    async fn attempt(
        &self,
        delivery: &ClaimedDelivery,
        token: Uuid,
        body: Bytes,
        signer: Signer,
    ) -> (AttemptRecord, Feedback) {
        let started_at = Utc::now();
        let started = Instant::now();
        let outcome = match self.target(&delivery.url) {
            Err(outcome) => outcome,
            Ok(target) => {
                let signature = signer.signature_header(&body);
                // The attempt's start is the one instant every timestamp
                // header of this request carries (docs/CONTRACT.md §1).
                let scheme_headers =
                    signer.scheme_headers(delivery.id, started_at.timestamp(), &body);
                let request = OutgoingRequest {
                    target: &target,
                    body,
                    event: &delivery.event,
                    signature: &signature,
                    webhook_id: delivery.webhook_id,
                    delivery_id: delivery.id,
                    scheme_headers: &scheme_headers,
                };
                self.parts.sender.send(&request).await
            }
        };
        let duration = started.elapsed();
        self.parts.metrics.attempt(outcome.code, duration);
        let next = self.next_status(&outcome, delivery.attempt);
        log_attempt(&outcome, next, duration);
        let feedback = feedback(&outcome, duration);
        let disables_webhook = outcome.is_gone();
        let record = AttemptRecord {
            delivery_id: delivery.id,
            webhook_id: delivery.webhook_id,
            lease_token: token,
            attempt: delivery.attempt,
            next,
            status_code: outcome.status_code.map(i32::from),
            outcome: outcome.code.as_str(),
            reason: outcome.reason,
            response_excerpt: outcome.response_excerpt,
            started_at,
            duration,
            retry_after: outcome.retry_after,
            disables_webhook,
        };
        (record, feedback)
    }

    /// Where an attempt leaves its delivery: a 410 fails it at once (the
    /// completer then disables the webhook); other failures follow the
    /// schedule, pushed back by what a 429 or 503 asked for.
    fn next_status(&self, outcome: &Outcome, attempt: i32) -> NextStatus {
        if outcome.is_success() {
            return NextStatus::Delivered;
        }
        if outcome.is_gone() {
            return NextStatus::Failed;
        }
        let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
        match self
            .parts
            .retry
            .after_failed_attempt_asking(attempt, outcome.retry_after)
        {
            AfterFailure::RetryIn(delay) => NextStatus::RetryIn(delay),
            AfterFailure::GiveUp => NextStatus::Failed,
        }
    }

    /// The URL as a target; scheme rules apply here, address rules at connect.
    fn target(&self, url: &str) -> Result<TargetUrl, Outcome> {
        let target = TargetUrl::parse(url, true).map_err(|reason| {
            Outcome::failure(OutcomeCode::InvalidUrl, format!("invalid URL: {reason}"))
        })?;
        if !target.https && !self.parts.allow_private_targets {
            return Err(Outcome::failure(
                OutcomeCode::InvalidUrl,
                "URL must use https:// (http:// is allowed only with --allow-private-targets)",
            ));
        }
        Ok(target)
    }

    /// Signers for every webhook in the claim, loading the missing ones in
    /// one query. A secret that does not open is left out (and logged, at
    /// most once per [`UNOPENABLE_WARNING_EVERY`] per webhook).
    async fn signers_for(&self, deliveries: &[ClaimedDelivery]) -> Result<HashMap<Uuid, Signer>> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        let now = Instant::now();
        {
            let mut cache = self
                .signers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for delivery in deliveries {
                match cache.get_mut(&delivery.webhook_id) {
                    Some(cached) => {
                        cached.used = now;
                        found.insert(delivery.webhook_id, cached.signer.clone());
                    }
                    None if !missing.contains(&delivery.webhook_id) => {
                        missing.push(delivery.webhook_id)
                    }
                    None => {}
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let client = self.parts.pool.get().await?;
        let sealed = crate::db::keys::webhook_secrets(&**client, &missing).await?;
        let mut cache = self
            .signers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for row in sealed {
            let webhook_id = row.secret.webhook_id;
            match self.signer(&row) {
                Ok(signer) => {
                    if cache.len() >= SIGNER_CACHE_MAX {
                        evict_least_recently_used(&mut cache);
                    }
                    let cached = CachedSigner {
                        signer: signer.clone(),
                        used: now,
                    };
                    cache.insert(webhook_id, cached);
                    found.insert(webhook_id, signer);
                }
                Err((key_id, problem)) => self.warn_unopenable(webhook_id, &key_id, &problem),
            }
        }
        Ok(found)
    }

    /// Drops the signers (and unopenable-secret warnings) of webhooks no
    /// claim needed for [`crate::delivery::pacing::PacingConfig::forget_after`]:
    /// quiet, revoked or disabled ones. Returns how many signers are left.
    pub fn forget_quiet(&self) -> usize {
        let forget_after = self.parts.in_flight.pacing().forget_after;
        self.warned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|_, at| at.elapsed() < UNOPENABLE_WARNING_EVERY);
        let mut cache = self
            .signers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.retain(|_, cached| cached.used.elapsed() < forget_after);
        cache.len()
    }

    /// Opens a webhook's secret and keys a signer for its scheme; on failure
    /// the key id and what is wrong, for the warning.
    fn signer(&self, row: &SigningKeyRow) -> Result<Signer, (String, String)> {
        let stored = &row.secret;
        let secret = self
            .parts
            .secrets
            .open(stored.webhook_id, &stored.key_id, &stored.ciphertext)
            .map_err(|err| (err.key_id().to_string(), err.to_string()))?;
        // The column's CHECK allows only known names; a secret that does not
        // fit its scheme is held back like one that does not open.
        let unusable = |problem: String| (stored.key_id.clone(), problem);
        let scheme = SignatureScheme::parse(&row.signature_scheme).map_err(|_| {
            unusable(format!(
                "for an unknown signature scheme \"{}\"",
                row.signature_scheme
            ))
        })?;
        Signer::for_scheme(&secret, scheme).map_err(|err| unusable(err.one_line()))
    }

    fn warn_unopenable(&self, webhook_id: Uuid, key_id: &str, problem: &str) {
        let now = Instant::now();
        let mut warned = self
            .warned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(at) = warned.get(&webhook_id) {
            if now.duration_since(*at) < UNOPENABLE_WARNING_EVERY {
                return;
            }
        }
        if warned.len() >= SIGNER_CACHE_MAX {
            warned.retain(|_, at| now.duration_since(*at) < UNOPENABLE_WARNING_EVERY);
        }
        warned.insert(webhook_id, now);
        warn!(
            %webhook_id,
            key_id,
            retry_in_s = self.parts.unopenable_delay.as_secs(),
            "the webhook's secret is {problem}: its deliveries are not sent and wait, uncounted"
        );
    }
}

/// Drops the signer a claim needed longest ago. A scan, but only on a cache
/// miss with the cache full, next to the query that loads the missing secret.
fn evict_least_recently_used(cache: &mut HashMap<Uuid, CachedSigner>) {
    let oldest = cache
        .iter()
        .min_by_key(|(_, cached)| cached.used)
        .map(|(webhook_id, _)| *webhook_id);
    if let Some(webhook_id) = oldest {
        cache.remove(&webhook_id);
    }
}
