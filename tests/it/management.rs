//! Webhook management: status fields, revoke, redeliver.
