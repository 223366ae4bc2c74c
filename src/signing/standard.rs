//! The `standard` signature scheme (docs/CONTRACT.md §1, §4): secrets in the
//! Standard Webhooks form and the `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` headers, which the official `standardwebhooks`
//! libraries verify. Pure.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use uuid::Uuid;

use crate::error::{Error, Result};

use super::SECRET_PREFIX;

/// Random bytes of a `standard` secret: the HMAC key itself, as the scheme's
/// verifiers decode it from the secret text.
const KEY_LEN: usize = 32;

/// How a webhook's requests are signed, chosen at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SignatureScheme {
    /// `X-ProductBridge-Signature` only: what every webhook had before the
    /// scheme could be chosen.
    #[default]
    ProductBridge,
    /// `X-ProductBridge-Signature` and the Standard Webhooks headers.
    Standard,
}

impl SignatureScheme {
    /// Every scheme, as the CLI and the API spell them.
    pub const NAMES: [&'static str; 2] = ["productbridge", "standard"];

    /// The name stored in `outbox.webhooks.signature_scheme`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureScheme::ProductBridge => "productbridge",
            SignatureScheme::Standard => "standard",
        }
    }

    /// A scheme from its name; anything else is an input error that says
    /// what is accepted.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "productbridge" => Ok(SignatureScheme::ProductBridge),
            "standard" => Ok(SignatureScheme::Standard),
            other => Err(Error::input(format!(
                "signature scheme must be one of {}, got \"{}\"",
                Self::NAMES.join(", "),
                other.chars().take(64).collect::<String>()
            ))),
        }
    }
}

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fresh `standard` secret text: `whsec_` + standard base64 (with padding)
/// of [`KEY_LEN`] random bytes, the form the scheme's verifiers decode.
pub(super) fn generate_secret() -> String {
    let mut bytes = [0u8; KEY_LEN];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// Signs the Standard Webhooks way, keyed with the bytes the secret's base64
/// part decodes to.
#[derive(Clone)]
pub(super) struct StandardSigner {
    mac: Hmac<Sha256>,
}

impl StandardSigner {
    /// Fails when the secret is not `whsec_` + standard base64, which a
    /// verifier could not decode to the same key.
    pub(super) fn new(secret: &str) -> Result<Self> {
        let key = secret
            .strip_prefix(SECRET_PREFIX)
            .and_then(|encoded| STANDARD.decode(encoded).ok())
            .filter(|key| !key.is_empty())
            .ok_or_else(|| Error::config("not in the standard scheme's form (whsec_ + base64)"))?;
        let mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC accepts keys of any length");
        Ok(StandardSigner { mac })
    }

    /// `v1,` + base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`.
    pub(super) fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// The three headers of one request: the delivery id as `webhook-id`,
    /// `timestamp` (Unix seconds) as `webhook-timestamp`, and the signature.
    pub(super) fn headers(
        &self,
        delivery_id: Uuid,
        timestamp: i64,
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        let id = delivery_id.to_string();
        let signature = self.signature(&id, timestamp, body);
        vec![
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        // The example of the Standard Webhooks specification and its libraries' tests.
        let signer = StandardSigner::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signer.signature(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn headers_carry_the_delivery_id_and_the_timestamp_that_were_signed() {
        let signer = StandardSigner::new(&generate_secret()).unwrap();
        let delivery = Uuid::new_v4();
        let headers = signer.headers(delivery, 1_700_000_000, b"{}");
        assert_eq!(headers[0], ("webhook-id", delivery.to_string()));
        assert_eq!(headers[1], ("webhook-timestamp", "1700000000".to_string()));
        assert_eq!(
            headers[2].1,
            signer.signature(&delivery.to_string(), 1_700_000_000, b"{}")
        );
    }

    #[test]
    fn generated_secrets_decode_to_32_bytes_of_standard_base64() {
        let secret = generate_secret();
        let encoded = secret.strip_prefix("whsec_").unwrap();
        assert_eq!(STANDARD.decode(encoded).unwrap().len(), KEY_LEN);
        assert_ne!(secret, generate_secret());
    }

    #[test]
    fn secrets_a_verifier_cannot_decode_are_refused() {
        for secret in ["whsec_", "whsec_a-b_c", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
            assert!(StandardSigner::new(secret).is_err(), "{secret}");
        }
    }

    #[test]
    fn schemes_parse_from_their_names_only() {
        for name in SignatureScheme::NAMES {
            assert_eq!(SignatureScheme::parse(name).unwrap().as_str(), name);
        }
        let err = SignatureScheme::parse("Standard").unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Input);
        assert_eq!(SignatureScheme::default(), SignatureScheme::ProductBridge);
    }
}
