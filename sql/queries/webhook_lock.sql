-- FOR UPDATE (not NO KEY UPDATE) so a concurrent fan-out's FOR KEY SHARE waits
-- for the revoke and then sees the webhook revoked.
SELECT status FROM outbox.webhooks WHERE id = $1 FOR UPDATE
