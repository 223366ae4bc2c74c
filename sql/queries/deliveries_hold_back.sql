-- Gives back leased deliveries whose webhook secret no configured key opens.
-- Nothing was sent: the claim's attempt count is undone, its last-attempt
-- time restored from the attempt log, and no attempt is logged. Due again
-- after $3 ms, when a daemon that has the key (or this one, restarted with
-- it) takes them.
UPDATE outbox.deliveries d
SET next_attempt_at = now() + $3::bigint * interval '1 millisecond',
    lease_token = NULL,
    attempts = greatest(d.attempts - 1, 0),
    last_attempt_at = (SELECT max(a.started_at) FROM outbox.delivery_attempts a
                       WHERE a.delivery_id = d.id)
FROM unnest($1::uuid[], $2::uuid[]) AS r(id, lease_token)
-- Planned for each call with its own ids: the primary key serves a batch
-- that is a small part of the table (migration 0012).
WHERE d.id = ANY ($1::uuid[])
  AND d.id = r.id
  AND d.lease_token = r.lease_token
  -- Still pending (deliveries_check), said so that deliveries_due cannot be
  -- chosen to find the rows.
  AND d.next_attempt_at IS NOT NULL
