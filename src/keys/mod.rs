//! The keys that encrypt webhook secrets at rest, and their rotation.
//!
//! A [`Keyring`] holds the current key (`WEBHOOKD_SECRET_KEY`), which seals
//! every new secret, and the previous keys (`WEBHOOKD_SECRET_KEY_PREVIOUS`),
//! which only open secrets sealed before a rotation. Each ciphertext is stored
//! with the id of the key that sealed it, so opening picks the key by id and
//! an error can name the missing key id (never key material).
//! [`rotate`] re-seals stored secrets under the current key. The operator's
//! procedure is in `docs/KEY-ROTATION.md`.

pub mod rotate;

use std::fmt;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::signing::{SecretBox, SigningSecret};

/// The variable holding the current key.
pub const CURRENT_KEY_VAR: &str = "WEBHOOKD_SECRET_KEY";
/// The variable holding earlier keys, comma-separated.
pub const PREVIOUS_KEYS_VAR: &str = "WEBHOOKD_SECRET_KEY_PREVIOUS";

/// The current key plus the previous keys that may still open stored secrets.
#[derive(Clone)]
pub struct Keyring {
    current: SecretBox,
    previous: Vec<SecretBox>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring(key_ids={:?})", self.key_ids())
    }
}

/// Why a stored secret does not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unopenable {
    /// No configured key has this id.
    KeyNotConfigured {
        /// The id stored beside the ciphertext.
        key_id: String,
    },
    /// A configured key has the id, but the ciphertext does not decrypt with
    /// it: damaged, or copied from another webhook's row.
    Undecryptable {
        /// The id stored beside the ciphertext.
        key_id: String,
    },
}

impl Unopenable {
    /// The key id stored beside the ciphertext.
    pub fn key_id(&self) -> &str {
        match self {
            Unopenable::KeyNotConfigured { key_id } | Unopenable::Undecryptable { key_id } => {
                key_id
            }
        }
    }
}

impl fmt::Display for Unopenable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unopenable::KeyNotConfigured { key_id } => write!(
                f,
                "sealed with key {key_id}, which is not configured \
                 (set {CURRENT_KEY_VAR} or {PREVIOUS_KEYS_VAR})"
            ),
            Unopenable::Undecryptable { key_id } => write!(
                f,
                "sealed with key {key_id}, but does not decrypt with it \
                 (the stored ciphertext is damaged or belongs to another webhook)"
            ),
        }
    }
}

impl Keyring {
    /// A keyring of the current key alone.
    pub fn new(current: SecretBox) -> Self {
        Keyring {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds the keys of `WEBHOOKD_SECRET_KEY_PREVIOUS`: comma-separated, each
    /// in the form of `WEBHOOKD_SECRET_KEY`. Empty entries (a trailing comma)
    /// are skipped; an entry equal to the current key is harmless. A bad entry
    /// is an error of kind [`crate::ErrorKind::Config`] naming its position, never its value.
    pub fn with_previous(mut self, previous: &str) -> Result<Self> {
        for (index, entry) in previous.split(',').enumerate() {
            if entry.trim().is_empty() {
                continue;
            }
            let name = format!("{PREVIOUS_KEYS_VAR} entry {}", index + 1);
            self.previous
                .push(SecretBox::from_base64_named(entry, &name)?);
        }
        Ok(self)
    }

    /// The key that seals new secrets.
    pub fn current(&self) -> &SecretBox {
        &self.current
    }

    /// The current key's id.
    pub fn current_key_id(&self) -> &str {
        self.current.key_id()
    }

    /// Every configured key id, current first, without repeats.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::with_capacity(1 + self.previous.len());
        for key in std::iter::once(&self.current).chain(&self.previous) {
            if !ids.iter().any(|id| id == key.key_id()) {
                ids.push(key.key_id().to_string());
            }
        }
        ids
    }

    /// Seals with the current key; store [`Keyring::current_key_id`] beside it.
    pub fn seal(&self, webhook_id: Uuid, secret: &SigningSecret) -> Vec<u8> {
        self.current.seal(webhook_id, secret)
    }

    /// Opens a stored secret with whichever configured key has `key_id`.
    pub fn open(
        &self,
        webhook_id: Uuid,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<SigningSecret, Unopenable> {
        // Ids are 32 bits of a hash: two keys could share one, so every key
        // with the id is tried.
        let mut candidates = std::iter::once(&self.current)
            .chain(&self.previous)
            .filter(|key| key.key_id() == key_id)
            .peekable();
        if candidates.peek().is_none() {
            return Err(Unopenable::KeyNotConfigured {
                key_id: key_id.to_string(),
            });
        }
        candidates
            .find_map(|key| key.open(webhook_id, key_id, sealed).ok())
            .ok_or_else(|| Unopenable::Undecryptable {
                key_id: key_id.to_string(),
            })
    }
}

impl From<Unopenable> for Error {
    fn from(err: Unopenable) -> Self {
        Error::config(format!("the webhook's secret is {err}"))
    }
}

/// Active webhooks per key id (as stored) whose key is not in `configured`,
/// largest first.
pub fn unconfigured(counts: &[(String, i64)], configured: &[String]) -> Vec<(String, i64)> {
    let mut missing: Vec<(String, i64)> = counts
        .iter()
        .filter(|(key_id, count)| *count > 0 && !configured.contains(key_id))
        .cloned()
        .collect();
    missing.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    missing
}

/// One line for `/readyz` and logs about webhooks whose secrets no configured
/// key opens; `None` when there are none.
pub fn describe_unconfigured(missing: &[(String, i64)]) -> Option<String> {
    let total: i64 = missing.iter().map(|(_, count)| count).sum();
    let webhooks = if total == 1 { "webhook" } else { "webhooks" };
    let keys = match missing {
        [] => return None,
        [(key_id, _)] => format!("key {key_id}, which is not configured"),
        several => format!(
            "keys {}, which are not configured",
            several
                .iter()
                .map(|(key_id, count)| format!("{key_id} ({count})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Some(format!(
        "{total} {webhooks} sealed with {keys}: their deliveries wait; \
         set {CURRENT_KEY_VAR} or {PREVIOUS_KEYS_VAR}"
    ))
}

/// Active webhooks whose secrets no key of `configured` opens, by key id.
pub async fn unconfigured_webhooks(
    client: &impl tokio_postgres::GenericClient,
    configured: &[String],
) -> Result<Vec<(String, i64)>> {
    let counts = crate::db::keys::active_webhooks_by_key(client).await?;
    Ok(unconfigured(&counts, configured))
}

/// For `webhooks create`: one line when active webhooks' secrets are sealed
/// with keys other than the current one, so a key that differs from the
/// daemons' is noticed before their deliveries wait; `None` otherwise.
pub async fn sealed_elsewhere(
    client: &impl tokio_postgres::GenericClient,
    keyring: &Keyring,
) -> Result<Option<String>> {
    let current = keyring.current_key_id();
    let counts = crate::db::keys::active_webhooks_by_key(client).await?;
    let others = unconfigured(&counts, &[current.to_string()]);
    let unknown = unconfigured(&others, &keyring.key_ids());
    let (list, total) = match (unknown.is_empty(), others.is_empty()) {
        (_, true) => return Ok(None),
        (false, _) => (&unknown, unknown.iter().map(|(_, n)| n).sum::<i64>()),
        (true, false) => (&others, others.iter().map(|(_, n)| n).sum::<i64>()),
    };
    let keys = list
        .iter()
        .map(|(key_id, _)| key_id.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let webhooks = if total == 1 {
        "webhook's secret is"
    } else {
        "webhooks' secrets are"
    };
    Ok(Some(if unknown.is_empty() {
        format!(
            "{total} other {webhooks} still sealed with previous key {keys}: run \
             `webhookd keys rotate` once every daemon has {CURRENT_KEY_VAR} (key {current})"
        )
    } else {
        format!(
            "{total} other {webhooks} sealed with key {keys}, not with this \
             {CURRENT_KEY_VAR} (key {current}): if the daemons use that key, they cannot \
             sign for the new webhook"
        )
    }))
}

/// Logs a warning at start-up when some active webhooks' secrets are sealed
/// with keys `keyring` lacks; a failed look is only logged at debug level.
pub async fn warn_if_unconfigured(client: &impl tokio_postgres::GenericClient, keyring: &Keyring) {
    match unconfigured_webhooks(client, &keyring.key_ids()).await {
        Ok(missing) => {
            if let Some(line) = describe_unconfigured(&missing) {
                tracing::warn!(key_ids = ?keyring.key_ids(), "{line}");
            }
        }
        Err(err) => tracing::debug!(error = %err.one_line(), "cannot count webhooks by key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        SecretBox::generate_key_base64()
    }

    #[test]
    fn opens_with_the_key_the_id_names_and_seals_with_the_current_one() {
        let (old, new) = (key(), key());
        let old_ring = Keyring::new(SecretBox::from_base64(&old).unwrap());
        let webhook = Uuid::new_v4();
        let secret = SigningSecret::generate();
        let sealed = old_ring.seal(webhook, &secret);
        let old_id = old_ring.current_key_id().to_string();

        let ring = Keyring::new(SecretBox::from_base64(&new).unwrap())
            .with_previous(&format!("{old},"))
            .unwrap();
        assert_eq!(ring.open(webhook, &old_id, &sealed).unwrap(), secret);
        assert_eq!(ring.key_ids().len(), 2);
        assert_eq!(ring.key_ids()[0], ring.current_key_id());
        let resealed = ring.seal(webhook, &secret);
        assert_eq!(
            ring.open(webhook, ring.current_key_id(), &resealed)
                .unwrap(),
            secret
        );
        assert!(old_ring
            .open(webhook, ring.current_key_id(), &resealed)
            .is_err());
    }

    #[test]
    fn an_unknown_key_id_is_named_and_a_foreign_ciphertext_is_undecryptable() {
        let ring = Keyring::new(SecretBox::from_base64(&key()).unwrap());
        let webhook = Uuid::new_v4();
        let sealed = ring.seal(webhook, &SigningSecret::generate());
        let err = ring.open(webhook, "ab12cd34", &sealed).unwrap_err();
        assert_eq!(
            err,
            Unopenable::KeyNotConfigured {
                key_id: "ab12cd34".into()
            }
        );
        assert!(err
            .to_string()
            .contains("key ab12cd34, which is not configured"));
        let err = ring
            .open(Uuid::new_v4(), ring.current_key_id(), &sealed)
            .unwrap_err();
        assert!(matches!(err, Unopenable::Undecryptable { .. }));
    }

    #[test]
    fn bad_previous_entries_name_their_position_never_their_value() {
        let current = key();
        let ring = || Keyring::new(SecretBox::from_base64(&current).unwrap());
        let err = ring()
            .with_previous(&format!("{},not-base64!", key()))
            .unwrap_err();
        let line = err.to_string();
        assert!(
            line.starts_with("WEBHOOKD_SECRET_KEY_PREVIOUS entry 2 is not valid base64"),
            "{line}"
        );
        assert!(!line.contains("not-base64!"), "{line}");
        assert!(err.is_user_error());
        let err = ring().with_previous("c2hvcnQ=").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("WEBHOOKD_SECRET_KEY_PREVIOUS entry 1 decodes to 5 bytes"),
            "{err}"
        );
        let same = ring().with_previous(&format!(" {current} ")).unwrap();
        assert_eq!(same.key_ids(), vec![same.current_key_id().to_string()]);
        assert_eq!(ring().with_previous("").unwrap().key_ids().len(), 1);
    }

    #[test]
    fn unconfigured_keys_are_described_in_one_line() {
        let configured = vec!["aaaaaaaa".to_string()];
        let counts = vec![("aaaaaaaa".to_string(), 5), ("ab12cd34".to_string(), 3)];
        let missing = unconfigured(&counts, &configured);
        assert_eq!(missing, vec![("ab12cd34".to_string(), 3)]);
        assert_eq!(
            describe_unconfigured(&missing).unwrap(),
            "3 webhooks sealed with key ab12cd34, which is not configured: their deliveries \
             wait; set WEBHOOKD_SECRET_KEY or WEBHOOKD_SECRET_KEY_PREVIOUS"
        );
        let several = vec![("ab12cd34".to_string(), 1), ("ef567890".to_string(), 1)];
        assert!(describe_unconfigured(&several)
            .unwrap()
            .starts_with("2 webhooks sealed with keys ab12cd34 (1), ef567890 (1), which are"));
        assert_eq!(describe_unconfigured(&[]), None);
        assert!(unconfigured(&counts, &["aaaaaaaa".into(), "ab12cd34".into()]).is_empty());
    }
}
