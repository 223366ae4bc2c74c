//! HTTPS receivers: a trusted test CA works, an untrusted certificate fails with a TLS reason.
