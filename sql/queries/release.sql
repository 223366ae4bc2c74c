-- Gives back leased deliveries that were not attempted (shutdown), due now so
-- another replica takes them at once; the claim's attempt count is undone.
UPDATE outbox.deliveries d
SET next_attempt_at = now(),
    lease_token = NULL,
    attempts = greatest(d.attempts - 1, 0)
FROM unnest($1::uuid[], $2::uuid[]) AS r(id, lease_token)
-- Planned for each call with its own ids: the primary key serves a batch
-- that is a small part of the table (migration 0012).
WHERE d.id = ANY ($1::uuid[])
  AND d.id = r.id
  AND d.lease_token = r.lease_token
  -- Still pending (deliveries_check), said so that deliveries_due cannot be
  -- chosen to find the rows.
  AND d.next_attempt_at IS NOT NULL
