-- Retention: delete one batch of events older than the retention period whose
-- deliveries are all finished; their deliveries and attempts go with them
-- (ON DELETE CASCADE). $1 retention in ms, $2 batch size.
-- SKIP LOCKED: an event being fanned out right now is left for next time.
WITH doomed AS (
    SELECT e.id
    FROM outbox.events e
    WHERE e.occurred_at < now() - $1::bigint * interval '1 millisecond'
      AND e.fanned_out_at IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM outbox.deliveries d
          WHERE d.event_id = e.id AND d.status = 'pending'
      )
    ORDER BY e.occurred_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM outbox.events e
USING doomed
WHERE e.id = doomed.id
