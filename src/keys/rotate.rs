//! `webhookd keys rotate`: re-seals every stored webhook secret (revoked
//! webhooks' too) under the current key.
//!
//! Batch by batch in id order, each batch one read and one update, each its
//! own short implicit transaction: no lock is held while secrets are opened,
//! and a daemon reading a secret meanwhile sees either the old ciphertext
//! (which its previous key opens) or the new one. The update applies to a row
//! only while it still holds the ciphertext that was opened, so two rotations
//! at once re-seal each secret once and count it once. A second run finds
//! nothing left: it reports 0.

use std::collections::BTreeMap;

use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::keys::{self as queries, Resealed};
use crate::error::Result;
use crate::keys::{Keyring, Unopenable};

/// Webhooks per batch: small, so each update holds its row locks briefly.
pub const BATCH_DEFAULT: i64 = 100;

/// What a rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationOutcome {
    /// Secrets now sealed with the current key that were not before.
    pub reencrypted: u64,
    /// Secrets no configured key opens, left as they were, by key id.
    pub unopenable: BTreeMap<String, u64>,
}

impl RotationOutcome {
    /// How many secrets were left as they were.
    pub fn unopenable_total(&self) -> u64 {
        self.unopenable.values().sum()
    }
}

/// What one batch did, and where the next one starts.
#[derive(Debug, Clone, Default)]
pub struct RotationBatch {
    /// Rows re-sealed.
    pub reencrypted: u64,
    /// Secrets that did not open.
    pub unopenable: Vec<Unopenable>,
    /// The last webhook id looked at; `None` when there was nothing left.
    pub last: Option<Uuid>,
}

/// Re-seals secrets under the keyring's current key.
pub struct KeyRotation<'a> {
    keyring: &'a Keyring,
    batch: i64,
}

impl<'a> KeyRotation<'a> {
    /// A rotation with `keyring`, `batch` webhooks at a time.
    pub fn new(keyring: &'a Keyring, batch: i64) -> Self {
        KeyRotation {
            keyring,
            batch: batch.max(1),
        }
    }

    /// Every batch until none is left.
    pub async fn run(&self, client: &impl GenericClient) -> Result<RotationOutcome> {
        let mut outcome = RotationOutcome::default();
        let mut after = None;
        loop {
            let batch = self.run_once(client, after).await?;
            outcome.reencrypted += batch.reencrypted;
            for unopenable in batch.unopenable {
                *outcome
                    .unopenable
                    .entry(unopenable.key_id().to_string())
                    .or_default() += 1;
            }
            match batch.last {
                Some(last) => after = Some(last),
                None => return Ok(outcome),
            }
        }
    }

    /// One batch of webhooks after `after` whose secret is not sealed with
    /// the current key.
    pub async fn run_once(
        &self,
        client: &impl GenericClient,
        after: Option<Uuid>,
    ) -> Result<RotationBatch> {
        let current = self.keyring.current_key_id();
        let stored = queries::secrets_to_rotate(client, current, after, self.batch).await?;
        let mut batch = RotationBatch {
            last: stored.last().map(|secret| secret.webhook_id),
            ..RotationBatch::default()
        };
        let mut resealed = Vec::with_capacity(stored.len());
        for secret in stored {
            match self
                .keyring
                .open(secret.webhook_id, &secret.key_id, &secret.ciphertext)
            {
                Ok(plain) => resealed.push(Resealed {
                    webhook_id: secret.webhook_id,
                    resealed: self.keyring.seal(secret.webhook_id, &plain),
                    opened: secret.ciphertext,
                }),
                Err(err) => {
                    tracing::debug!(webhook_id = %secret.webhook_id, reason = %err,
                                   "cannot re-encrypt the webhook's secret; left as it is");
                    batch.unopenable.push(err);
                }
            }
        }
        if !resealed.is_empty() {
            batch.reencrypted = queries::reseal(client, current, &resealed).await?;
        }
        Ok(batch)
    }
}

/// The line `keys rotate` ends with when some secrets did not open.
pub fn describe_unopenable(outcome: &RotationOutcome) -> Option<String> {
    let total = outcome.unopenable_total();
    if total == 0 {
        return None;
    }
    let keys: Vec<String> = outcome
        .unopenable
        .iter()
        .map(|(key_id, count)| format!("key {key_id} ({count})"))
        .collect();
    let secrets = if total == 1 { "secret" } else { "secrets" };
    Some(format!(
        "{total} webhook {secrets} not re-encrypted: sealed with {}, which no configured key \
         opens; add that key to {} and run `webhookd keys rotate` again",
        keys.join(", "),
        crate::keys::PREVIOUS_KEYS_VAR
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unopenable_secrets_are_summed_by_key_in_one_line() {
        assert_eq!(describe_unopenable(&RotationOutcome::default()), None);
        let outcome = RotationOutcome {
            reencrypted: 4,
            unopenable: BTreeMap::from([("ab12cd34".to_string(), 2), ("ef567890".to_string(), 1)]),
        };
        let line = describe_unopenable(&outcome).unwrap();
        assert!(
            line.starts_with(
                "3 webhook secrets not re-encrypted: sealed with key ab12cd34 (2), key ef567890 (1)"
            ),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
