-- Retention: delete one batch of events older than the retention period whose
-- deliveries are all finished; their deliveries and attempts go with them
-- (the delete triggers of migration 15). $1 retention in ms, $2 batch size.
-- SKIP LOCKED: an event being fanned out right now is left for next time.
--
-- Old events are found by id on the primary key (migration 10 dropped the
-- index on occurred_at): a time-ordered id starts with its insert time, so
-- the oldest events have the lowest ids. Ids that are not time-ordered
-- (random ones from before migration 4, or given by a producer) mostly lie
-- above every time-ordered id made so far, which the second range covers;
-- one below that lies in the first range once the period has passed its
-- leading bits, at most a minute after its occurred_at did. occurred_at
-- decides; the ranges only say where to look, the first one first.
WITH doomed AS (
    SELECT expired.id
    FROM (VALUES
        ('00000000-0000-0000-0000-000000000000'::uuid,
         outbox.uuid_v7_floor(now() - $1::bigint * interval '1 millisecond')),
        (outbox.uuid_v7_floor(now() + interval '1 minute'),
         'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
    ) AS ranges (low, high)
    CROSS JOIN LATERAL (
        SELECT e.id
        FROM outbox.events e
        WHERE e.id BETWEEN ranges.low AND ranges.high
          AND e.occurred_at < now() - $1::bigint * interval '1 millisecond'
          AND e.fanned_out_at IS NOT NULL
          AND NOT EXISTS (
              SELECT 1 FROM outbox.deliveries d
              WHERE d.event_id = e.id AND d.status = 'pending'
          )
        ORDER BY e.id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) AS expired
    LIMIT $2
)
DELETE FROM outbox.events e
USING doomed
WHERE e.id = doomed.id
