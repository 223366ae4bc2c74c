-- When there is next something to do: now if events await fan-out, else the
-- earliest due time (retries and leases alike). Both are index lookups.
SELECT CASE
    WHEN EXISTS (SELECT 1 FROM outbox.events WHERE fanned_out_at IS NULL) THEN now()
    ELSE (SELECT min(next_attempt_at) FROM outbox.deliveries WHERE status = 'pending')
END AS next_at,
now() AS db_now
