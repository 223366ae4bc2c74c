//! Signing secrets: generation, the `X-ProductBridge-Signature` header (and,
//! for the `standard` scheme, the headers of `standard`), and encryption at
//! rest (AES-256-GCM under `WEBHOOKD_SECRET_KEY`). Pure.

mod standard;

pub use standard::SignatureScheme;

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Every secret's prefix, whatever its scheme.
const SECRET_PREFIX: &str = "whsec_";
const NONCE_LEN: usize = 12;

/// A webhook's signing secret in plaintext. Its `Debug` never shows the value,
/// so it cannot leak through a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl SigningSecret {
    /// A fresh secret: `whsec_` + base64url of 32 random bytes (43 characters).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        SigningSecret(format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A fresh secret in the form `scheme`'s verifiers expect (docs/CONTRACT.md
    /// §4): the form above for `productbridge`; for `standard`, `whsec_` +
    /// standard base64 of 32 random bytes, since its verifiers base64-decode
    /// the part after the prefix and would not read base64url.
    pub fn generate_for(scheme: SignatureScheme) -> Self {
        match scheme {
            SignatureScheme::ProductBridge => SigningSecret::generate(),
            SignatureScheme::Standard => SigningSecret(standard::generate_secret()),
        }
    }

    /// The secret text; shown to the user exactly once, at creation.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// Signs bodies for one webhook. Keyed once, cloned per message, so the HMAC
/// key schedule is not redone for every delivery.
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
    /// Present for the `standard` scheme.
    standard: Option<standard::StandardSigner>,
}

impl Signer {
    /// The key is the secret's UTF-8 bytes, `whsec_` prefix included (docs/CONTRACT.md §1).
    pub fn new(secret: &SigningSecret) -> Self {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.0.as_bytes())
            .expect("HMAC accepts keys of any length");
        Signer {
            mac,
            standard: None,
        }
    }

    /// A signer for a webhook of `scheme`. `X-ProductBridge-Signature` is
    /// keyed as [`Signer::new`] keys it whatever the scheme; the `standard`
    /// headers with the bytes the secret's base64 part decodes to. Fails when
    /// a `standard` webhook's secret does not decode (docs/CONTRACT.md §4).
    pub fn for_scheme(secret: &SigningSecret, scheme: SignatureScheme) -> Result<Self> {
        let standard = match scheme {
            SignatureScheme::ProductBridge => None,
            SignatureScheme::Standard => Some(standard::StandardSigner::new(&secret.0)?),
        };
        Ok(Signer {
            standard,
            ..Signer::new(secret)
        })
    }

    /// The scheme's headers besides `X-ProductBridge-Signature`: for
    /// `standard`, `webhook-id` (the delivery id), `webhook-timestamp`
    /// (`timestamp`, Unix seconds) and `webhook-signature`; none otherwise.
    pub fn scheme_headers(
        &self,
        delivery_id: Uuid,
        timestamp: i64,
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        match &self.standard {
            Some(standard) => standard.headers(delivery_id, timestamp, body),
            None => Vec::new(),
        }
    }

    /// `sha256=` + lowercase hex of HMAC-SHA256 over the raw body.
    pub fn signature_header(&self, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

/// Encrypts secrets for storage. The key id (a short hash of the key) is
/// stored beside each ciphertext so a later key rotation can tell which key
/// sealed which row.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
    key_id: String,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBox(key_id={})", self.key_id)
    }
}

impl SecretBox {
    /// Parses `WEBHOOKD_SECRET_KEY`: base64 of exactly 32 bytes.
    pub fn from_base64(encoded: &str) -> Result<Self> {
        SecretBox::from_base64_named(encoded, "WEBHOOKD_SECRET_KEY")
    }

    /// Parses a key like [`SecretBox::from_base64`]; errors name the key as
    /// `name` (e.g. "WEBHOOKD_SECRET_KEY_PREVIOUS entry 2") and never show it.
    pub fn from_base64_named(encoded: &str, name: &str) -> Result<Self> {
        let key = STANDARD.decode(encoded.trim()).map_err(|_| {
            Error::config(format!(
                "{name} is not valid base64: expected base64 of 32 random bytes \
                 (generate one with `openssl rand -base64 32`)"
            ))
        })?;
        if key.len() != 32 {
            return Err(Error::config(format!(
                "{name} decodes to {} bytes, expected 32 \
                 (generate one with `openssl rand -base64 32`)",
                key.len()
            )));
        }
        let key_id = hex::encode(&Sha256::digest(&key)[..4]);
        let cipher = Aes256Gcm::new_from_slice(&key).expect("key length checked above");
        Ok(SecretBox { cipher, key_id })
    }

    /// A random key, for the demo and tests.
    pub fn generate_key_base64() -> String {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        STANDARD.encode(key)
    }

    /// The id stored beside each ciphertext.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// nonce || ciphertext || tag. The webhook id is bound in as associated
    /// data, so a ciphertext copied onto another webhook's row does not open.
    pub fn seal(&self, webhook_id: Uuid, secret: &SigningSecret) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: secret.0.as_bytes(),
            aad: webhook_id.as_bytes(),
        };
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("AES-GCM encryption of a short message cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Opens what [`SecretBox::seal`] produced for the same webhook.
    pub fn open(&self, webhook_id: Uuid, key_id: &str, sealed: &[u8]) -> Result<SigningSecret> {
        if key_id != self.key_id {
            return Err(Error::config(format!(
                "webhook {webhook_id}'s secret was sealed with key {key_id}, \
                 but WEBHOOKD_SECRET_KEY is key {}",
                self.key_id
            )));
        }
        let undecryptable =
            || Error::config(format!("webhook {webhook_id}'s secret cannot be decrypted"));
        if sealed.len() <= NONCE_LEN {
            return Err(undecryptable());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: webhook_id.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| undecryptable())?;
        String::from_utf8(plain)
            .map(SigningSecret)
            .map_err(|_| undecryptable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn generated_secret_has_prefix_and_43_base64url_characters() {
        let secret = SigningSecret::generate();
        let rest = secret.expose().strip_prefix("whsec_").unwrap();
        assert_eq!(rest.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(rest).unwrap().len(), 32);
        assert_ne!(secret, SigningSecret::generate());
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        let signer = Signer::new(&SigningSecret("key".to_string()));
        assert_eq!(
            signer.signature_header(b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn standard_signer_keys_each_header_as_its_scheme_says() {
        let secret = SigningSecret::generate_for(SignatureScheme::Standard);
        let signer = Signer::for_scheme(&secret, SignatureScheme::Standard).unwrap();
        let body = b"{}";
        // X-ProductBridge-Signature: keyed with the whole secret text.
        assert_eq!(
            signer.signature_header(body),
            Signer::new(&secret).signature_header(body)
        );
        // webhook-signature: keyed with the decoded bytes.
        let key = STANDARD.decode(&secret.expose()[6..]).unwrap();
        let delivery = Uuid::new_v4();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(format!("{delivery}.1700000000.{{}}").as_bytes());
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        let headers = signer.scheme_headers(delivery, 1_700_000_000, body);
        assert_eq!(headers[2], ("webhook-signature", expected));
    }

    #[test]
    fn productbridge_signer_adds_no_headers_and_standard_needs_a_decodable_secret() {
        let secret = SigningSecret::generate();
        let signer = Signer::for_scheme(&secret, SignatureScheme::ProductBridge).unwrap();
        assert!(signer.scheme_headers(Uuid::new_v4(), 1, b"{}").is_empty());
        // Today's productbridge form is base64url: not the standard form.
        let base64url = SigningSecret("whsec_ab-_cd".to_string());
        assert!(Signer::for_scheme(&base64url, SignatureScheme::Standard).is_err());
    }

    #[test]
    fn sealed_secret_opens_only_for_its_webhook_and_key() {
        let key = SecretBox::from_base64(&SecretBox::generate_key_base64()).unwrap();
        let other_key = SecretBox::from_base64(&SecretBox::generate_key_base64()).unwrap();
        let webhook = Uuid::new_v4();
        let secret = SigningSecret::generate();
        let sealed = key.seal(webhook, &secret);
        assert!(!sealed
            .windows(secret.expose().len())
            .any(|w| w == secret.expose().as_bytes()));
        assert_eq!(key.open(webhook, key.key_id(), &sealed).unwrap(), secret);
        assert!(key.open(Uuid::new_v4(), key.key_id(), &sealed).is_err());
        assert!(other_key
            .open(webhook, other_key.key_id(), &sealed)
            .is_err());
        assert!(other_key.open(webhook, key.key_id(), &sealed).is_err());
    }

    #[test]
    fn malformed_keys_are_config_errors() {
        assert!(matches!(
            SecretBox::from_base64("not base64!"),
            Err(err) if err.kind() == ErrorKind::Config
        ));
        assert!(matches!(
            SecretBox::from_base64("c2hvcnQ="),
            Err(err) if err.kind() == ErrorKind::Config
        ));
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let secret = SigningSecret::generate();
        assert!(!format!("{secret:?}").contains(secret.expose()));
    }
}
