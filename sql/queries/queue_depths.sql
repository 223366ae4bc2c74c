-- The queue as /metrics reports it. Each part reads a partial index.
SELECT
    (SELECT count(*) FROM outbox.deliveries WHERE status = 'pending') AS pending,
    (SELECT count(*) FROM outbox.deliveries
      WHERE status = 'pending' AND next_attempt_at <= now()) AS due,
    (SELECT count(*) FROM outbox.deliveries WHERE status = 'failed') AS failed,
    coalesce(extract(epoch FROM now() - (
        SELECT min(next_attempt_at) FROM outbox.deliveries
        WHERE status = 'pending' AND next_attempt_at <= now())), 0)::float8 AS oldest_due_age_seconds,
    coalesce(extract(epoch FROM now() - (
        SELECT occurred_at FROM outbox.events
        WHERE fanned_out_at IS NULL ORDER BY seq LIMIT 1)), 0)::float8 AS fanout_lag_seconds
