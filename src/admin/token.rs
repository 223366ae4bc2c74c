//! The admin token (`WEBHOOKD_ADMIN_TOKEN`) as the management API and the
//! operator page check it.

use sha2::{Digest, Sha256};

/// The token, kept only as its SHA-256 digest.
pub(crate) struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// Keeps `token`'s digest.
    pub(crate) fn new(token: &str) -> Self {
        AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether `presented` is the token. The comparison is over SHA-256
    /// digests in constant time, so neither the token's bytes nor its
    /// length leak through timing.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every byte is compared whatever the first difference.
        digest
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_itself_matches() {
        let token = AdminToken::new("test-admin-token-0123456789");
        assert!(token.matches("test-admin-token-0123456789"));
        assert!(!token.matches("test-admin-token-012345678"));
        assert!(!token.matches(""));
    }
}
