-- The write-back (migration 7) finds its rows by primary key only, whatever
-- the statistics say and however small the table was when its plan was made
-- (docs/ARCHITECTURE.md, write-backs go by primary key).
--
-- It joined the batch to outbox.deliveries on id and asked for
-- `d.status = 'pending'`, the predicate of the partial index deliveries_due.
-- PL/pgSQL keeps a generic plan for each connection after five calls, made
-- for the table as it was then; when that was small (a new install, a quiet
-- hour) or the statistics were (autovacuum off or not yet round), the plan
-- read the whole table, or all pending rows through deliveries_due, and
-- hash-joined the batch against them. That is cheap for a few rows and
-- ruinous once a backlog builds up (a receiver away for a day): every
-- write-back then read the backlog, 115,000 index entries and 40 ms for a
-- batch of 128, and with 200,000 retries waiting a daemon's write-backs fell
-- so far behind that deliveries to healthy webhooks stopped (BENCHMARKS.md,
-- the away scenario).
--
-- Now the rows are asked for as `d.id = ANY (p_ids)`: one index scan of
-- deliveries_pkey for exactly the batch's ids is the cheapest way in at any
-- table size, so every plan, generic or not, takes it. And "still pending"
-- is said as `next_attempt_at IS NOT NULL`, which the table's check
-- deliveries_check makes the same condition but which implies nothing about
-- deliveries_due's predicate, so that index is out of the running (the
-- claim, outbox.daemon_claim of migration 5, locks its rows the same way). The
-- batch's rows are then joined to its results by hashing (enable_nestloop
-- off): with statistics that say the table is all but empty (after
-- retention emptied it and a vacuum analysed it), a nested loop would
-- rescan the batch for each of its rows, 250,000 comparisons for 500.
--
-- With the plan's shape no longer left to the table's size, the statement
-- keeps one generic plan per connection from its first call until the next
-- VACUUM or ANALYZE of its tables (plan_cache_mode). Left to choose,
-- PostgreSQL plans the first five calls for their actual arrays and then
-- keeps a generic plan only if it does not look dearer than those did,
-- which depends on the table at the time. Where it looked dearer (one-row
-- write-backs beside 3,000 leased deliveries, counted under callgrind),
-- every call was planned afresh: 1.44 M instructions per call with
-- migration 7's body, against 0.64 M now (BENCHMARKS.md). In the daemon's
-- latency runs it had switched after five calls.
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
SET plan_cache_mode = force_generic_plan SET enable_nestloop = off
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
        -- The batch's ids, looked up in deliveries_pkey by one index scan.
        WHERE d.id = ANY (p_ids)
          AND d.id = r.id
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
