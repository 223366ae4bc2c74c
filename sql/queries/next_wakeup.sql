-- When there is next something to do: now if events await fan-out, else the
-- earliest due time (retries and leases alike). Both are index lookups.
-- Also the wake-up switch as it stands and the oldest running transaction,
-- for the switch's fence (notifier::WakeupSwitch).
SELECT CASE
    WHEN EXISTS (SELECT 1 FROM outbox.events WHERE fanned_out_at IS NULL) THEN now()
    ELSE (SELECT min(next_attempt_at) FROM outbox.deliveries WHERE status = 'pending')
END AS next_at,
now() AS db_now,
(SELECT last_value = 1 FROM outbox.wakeup_notify) AS notify_on,
pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS oldest_running
