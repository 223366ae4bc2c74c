UPDATE outbox.webhooks SET status = 'revoked', revoked_at = now()
WHERE id = $1 AND status IN ('active', 'disabled')
