-- Write-back of a batch of attempts, fenced by the lease token: a result
-- lands only while its lease is still the current one, and only on a pending
-- row (a revoke may have cancelled it meanwhile). One attempt-log row per
-- result that landed.
WITH result AS (
    SELECT *
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::text[], $6::bigint[],
                $7::int[], $8::timestamptz[], $9::int[], $10::text[], $11::text[])
        AS r(id, lease_token, status, status_code, reason, retry_in_ms,
             attempt, started_at, duration_ms, outcome, excerpt)
),
updated AS (
    UPDATE outbox.deliveries d
    SET status = r.status,
        next_attempt_at = CASE WHEN r.status = 'pending'
                               THEN now() + r.retry_in_ms * interval '1 millisecond' END,
        lease_token = NULL,
        last_status_code = r.status_code,
        last_error = coalesce(r.reason, d.last_error),
        delivered_at = CASE WHEN r.status = 'delivered' THEN now() ELSE d.delivered_at END
    FROM result r
    WHERE d.id = r.id
      AND d.lease_token = r.lease_token
      AND d.status = 'pending'
    RETURNING d.id, d.webhook_id, d.organization_id, r.lease_token
)
INSERT INTO outbox.delivery_attempts
    (delivery_id, webhook_id, organization_id, attempt, started_at, duration_ms,
     outcome, status_code, reason, response_excerpt)
SELECT u.id, u.webhook_id, u.organization_id, r.attempt, r.started_at, r.duration_ms,
       r.outcome, r.status_code, r.reason, r.excerpt
FROM updated u
-- A stale and a fresh result for one delivery can share a batch: log the one that landed.
JOIN result r ON r.id = u.id AND r.lease_token = u.lease_token
