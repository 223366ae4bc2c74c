-- The write-back (migration 7) finds its rows by primary key only, whatever
-- the statistics say (docs/ARCHITECTURE.md, write-back).
--
-- It asked for `d.status = 'pending'`, which matches the predicate of the
-- partial index deliveries_due. When the statistics were taken while few
-- deliveries were pending (a new install, a quiet hour, autovacuum off or
-- not yet round) and a backlog then builds up (a receiver away for a day,
-- a burst), the planner believed the pending rows were a handful and chose
-- to read all of them through deliveries_due and hash-join the batch
-- against them. Every write-back then read the whole backlog: 115,000 index
-- entries and 40 ms for a batch of 128, so draining got slower the more
-- there was to drain (BENCHMARKS.md, the write-back plan).
--
-- The table's check deliveries_check makes `status = 'pending'` and
-- `next_attempt_at IS NOT NULL` the same condition, so the statement now
-- tests the latter. It implies nothing about deliveries_due's predicate,
-- so that index cannot serve the statement; every other way in costs a
-- read of a whole index or table, which the planner prices by its real size,
-- leaving one lookup per row of the batch through deliveries_pkey.
--
-- Same signature and result: the previous release's daemons call it as
-- before (its 11-argument form of migration 7 calls this one).

CREATE OR REPLACE FUNCTION outbox.daemon_complete(
    p_ids uuid[], p_tokens uuid[], p_statuses text[], p_codes int[], p_reasons text[],
    p_retry_in_ms bigint[], p_attempts int[], p_started timestamptz[], p_durations int[],
    p_outcomes text[], p_excerpts text[], p_retry_after int[])
RETURNS bigint
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off
AS $fn$
#variable_conflict use_column
DECLARE
    landed bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    WITH result AS (
        SELECT *
        FROM unnest(p_ids::uuid[], p_tokens::uuid[], p_statuses::text[], p_codes::int[], p_reasons::text[], p_retry_in_ms::bigint[],
                    p_attempts::int[], p_started::timestamptz[], p_durations::int[], p_outcomes::text[], p_excerpts::text[],
                    p_retry_after::int[])
            AS r(id, lease_token, status, status_code, reason, retry_in_ms,
                 attempt, started_at, duration_ms, outcome, excerpt, retry_after)
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
          -- Still pending (deliveries_check), said so that deliveries_due
          -- cannot be chosen to find the rows.
          AND d.next_attempt_at IS NOT NULL
        RETURNING d.id, d.webhook_id, d.organization_id, r.lease_token
    )
    INSERT INTO outbox.delivery_attempts
        (delivery_id, webhook_id, organization_id, attempt, started_at, duration_ms,
         outcome, status_code, reason, response_excerpt, retry_after_seconds)
    SELECT u.id, u.webhook_id, u.organization_id, r.attempt, r.started_at, r.duration_ms,
           r.outcome, r.status_code, r.reason, r.excerpt, r.retry_after
    FROM updated u
    -- A stale and a fresh result for one delivery can share a batch: log the one that landed.
    JOIN result r ON r.id = u.id AND r.lease_token = u.lease_token;
    GET DIAGNOSTICS landed = ROW_COUNT;
    RETURN landed;
END
$fn$;
