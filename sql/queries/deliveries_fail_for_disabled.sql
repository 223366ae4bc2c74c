-- Nothing more is sent to a disabled webhook: its pending deliveries fail,
-- naming why, in the transaction that disabled it; recover replays them once
-- it is enabled. Rows in flight are pending too: their write-back then finds
-- them failed and is dropped.
UPDATE outbox.deliveries d
SET status = 'failed', next_attempt_at = NULL, lease_token = NULL,
    last_error = 'webhook disabled: ' || w.disabled_reason
FROM outbox.webhooks w
WHERE w.id = ANY ($1::uuid[])
  AND w.status = 'disabled'
  AND d.webhook_id = w.id
  AND d.status = 'pending'
RETURNING d.webhook_id
