-- Active webhooks whose every delivery has failed for at least $1 ms: a run
-- of failures that began that long ago with no success since (the success
-- check also covers a success folded by a daemon that does not keep
-- failing_since). Locked for disabling; rows another transaction holds are
-- left for the next sweep.
SELECT id, failing_since, last_failure_reason
FROM outbox.webhooks
WHERE failing_since IS NOT NULL
  AND status = 'active'
  AND failing_since <= now() - $1::bigint * interval '1 millisecond'
  AND (last_success_at IS NULL OR last_success_at < failing_since)
ORDER BY id
FOR UPDATE SKIP LOCKED
