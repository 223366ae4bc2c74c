//! Queries about webhook secrets and their keys: loading sealed secrets for
//! the dispatcher, which key sealed how many webhooks, re-sealing them for
//! `keys rotate`, and handing back deliveries
//! whose secret no configured key opens. Unnamed statements with explicit
//! parameter types, so they run unchanged behind a transaction-mode pooler.

use std::time::Duration;

use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::{self, Query};
use crate::error::Result;

/// Active webhooks per key id: (key id, how many).
pub async fn active_webhooks_by_key(client: &impl GenericClient) -> Result<Vec<(String, i64)>> {
    const BY_KEY: Query = db::named!("counting webhooks by key", "webhooks_by_key");
    BY_KEY
        .map(client, &[], |row| {
            (row.get("secret_key_id"), row.get("webhooks"))
        })
        .await
}

/// A stored secret as `keys rotate` reads it.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    /// The webhook.
    pub webhook_id: Uuid,
    /// What is stored.
    pub ciphertext: Vec<u8>,
    /// The id of the key that sealed it.
    pub key_id: String,
}

/// Up to `limit` webhooks after `after` (by id) whose secret is not sealed
/// with `current_key_id`.
pub async fn secrets_to_rotate(
    client: &impl GenericClient,
    current_key_id: &str,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<StoredSecret>> {
    const TO_ROTATE: Query = db::named!("reading webhook secrets to rotate", "secrets_to_rotate");
    let params: [db::Param; 3] = [
        (&current_key_id, Type::TEXT),
        (&after, Type::UUID),
        (&limit, Type::INT8),
    ];
    TO_ROTATE
        .map(client, &params, |row| StoredSecret {
            webhook_id: row.get("id"),
            ciphertext: row.get("secret_ciphertext"),
            key_id: row.get("secret_key_id"),
        })
        .await
}

/// A secret opened and sealed again under the current key.
#[derive(Debug, Clone)]
pub struct Resealed {
    /// The webhook.
    pub webhook_id: Uuid,
    /// The ciphertext it was opened from; the row is updated only if it
    /// still holds this.
    pub opened: Vec<u8>,
    /// The new ciphertext.
    pub resealed: Vec<u8>,
}

/// Stores re-sealed secrets under `key_id` in one statement; returns how many
/// rows changed (a row another rotation re-sealed meanwhile does not).
pub async fn reseal(
    client: &impl GenericClient,
    key_id: &str,
    secrets: &[Resealed],
) -> Result<u64> {
    const RESEAL: Query = db::named!("storing re-encrypted webhook secrets", "secrets_reseal");
    let ids: Vec<Uuid> = secrets.iter().map(|s| s.webhook_id).collect();
    let opened: Vec<&[u8]> = secrets.iter().map(|s| s.opened.as_slice()).collect();
    let resealed: Vec<&[u8]> = secrets.iter().map(|s| s.resealed.as_slice()).collect();
    let params: [db::Param; 4] = [
        (&ids, Type::UUID_ARRAY),
        (&opened, Type::BYTEA_ARRAY),
        (&resealed, Type::BYTEA_ARRAY),
        (&key_id, Type::TEXT),
    ];
    RESEAL.execute(client, &params).await
}

/// Gives leased deliveries (id, lease token) back without counting their
/// attempt, due again after `delay`; returns how many.
pub async fn hold_back(
    client: &impl GenericClient,
    leases: &[(Uuid, Uuid)],
    delay: Duration,
) -> Result<u64> {
    const HOLD_BACK: Query = db::named!(
        "handing back deliveries whose secret does not open",
        "deliveries_hold_back"
    );
    let (ids, tokens): (Vec<Uuid>, Vec<Uuid>) = leases.iter().copied().unzip();
    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    let params: [db::Param; 3] = [
        (&ids, Type::UUID_ARRAY),
        (&tokens, Type::UUID_ARRAY),
        (&delay_ms, Type::INT8),
    ];
    HOLD_BACK.execute(client, &params).await
}

/// A sealed secret as the dispatcher reads it, with what it signs for.
#[derive(Debug, Clone)]
pub struct SigningKeyRow {
    /// The stored secret.
    pub secret: StoredSecret,
    /// `productbridge` or `standard`: which headers the secret signs.
    pub signature_scheme: String,
}

/// Sealed secrets of the given webhooks, with their signature schemes.
pub async fn webhook_secrets(
    client: &impl GenericClient,
    ids: &[Uuid],
) -> Result<Vec<SigningKeyRow>> {
    const WEBHOOK_SECRETS: Query = db::named!("loading webhook secrets", "webhook_secrets");
    WEBHOOK_SECRETS
        .map(client, &[(&ids, Type::UUID_ARRAY)], |row| SigningKeyRow {
            secret: StoredSecret {
                webhook_id: row.get("id"),
                ciphertext: row.get("secret_ciphertext"),
                key_id: row.get("secret_key_id"),
            },
            signature_scheme: row.get("signature_scheme"),
        })
        .await
}
