SELECT status FROM outbox.webhooks WHERE id = $1
