-- Receiver outages (docs/CONTRACT.md §3, §4, §5): a third webhook status,
-- `disabled`, for a receiver that answered 410 Gone or whose every delivery
-- failed for `--disable-after`; the delay a 429/503 asked for in the attempt
-- log; and when a webhook's current run of failures began.
--
-- Expand-only (docs/UPGRADING.md): the previous release's daemon reads the
-- status as text and acts only on `active` webhooks (fan-out, claim by
-- webhook, redeliver, recover), so for it a disabled webhook is simply not
-- active. It never disables one, and its statements name the columns they
-- write, so the new nullable columns do not concern it.
--
-- A disabled webhook has no pending delivery: disabling fails them in the
-- transaction that disables it, under the webhook row's FOR UPDATE lock,
-- which fan-out's FOR KEY SHARE waits for; fan-out then inserts its new
-- deliveries as `failed` (below), and redeliver and recover require an active
-- webhook. So the claim needs no change to never send to one.

ALTER TABLE outbox.webhooks
    ADD COLUMN disabled_at timestamptz,
    ADD COLUMN disabled_reason text,
    -- The first failure after the latest success (internal; see
    -- daemon_fold_webhook_status below). NULL while the latest outcome is a
    -- success, or when nothing failed since the webhook was (re-)enabled.
    ADD COLUMN failing_since timestamptz;

-- Widening a CHECK: every existing row passes, and the webhooks table is
-- small, so validating it at once holds its lock only briefly.
ALTER TABLE outbox.webhooks
    DROP CONSTRAINT webhooks_status_check,
    ADD CONSTRAINT webhooks_status_check CHECK (status IN ('active', 'revoked', 'disabled'));

-- The sweep for `--disable-after` looks only at webhooks that are failing.
CREATE INDEX webhooks_failing ON outbox.webhooks (failing_since)
    WHERE failing_since IS NOT NULL AND status = 'active';

ALTER TABLE outbox.delivery_attempts ADD COLUMN retry_after_seconds integer;

-- New columns go at the end: a view may only grow there, and readers that
-- select columns by position keep working.
CREATE OR REPLACE VIEW outbox.webhook_status AS
SELECT w.id AS webhook_id,
       w.organization_id,
       w.label,
       w.url,
       w.status,
       w.created_at,
       w.last_success_at,
       w.last_failure_at,
       w.last_failure_reason,
       (SELECT count(*) FROM outbox.deliveries d
         WHERE d.webhook_id = w.id AND d.status = 'pending') AS pending_deliveries,
       (SELECT count(*) FROM outbox.deliveries d
         WHERE d.webhook_id = w.id AND d.status = 'failed') AS failed_deliveries,
       w.disabled_at,
       w.disabled_reason
FROM outbox.webhooks w;

CREATE OR REPLACE VIEW outbox.attempt_log AS
SELECT a.delivery_id,
       a.webhook_id,
       a.organization_id,
       a.attempt,
       a.started_at,
       a.duration_ms,
       a.outcome,
       a.status_code,
       a.reason,
       a.response_excerpt,
       a.retry_after_seconds
FROM outbox.delivery_attempts a;

-- Fan-out as in 0005, and for each disabled webhook of the organization a
-- delivery recorded `failed` at once, naming why, so that `recover` can
-- replay the outage's events after the webhook is enabled again. A webhook
-- disabled or revoked while this waits for its lock is read as it is then
-- (FOR KEY SHARE returns the row's latest version).
CREATE OR REPLACE FUNCTION outbox.daemon_fan_out(p_batch int)
RETURNS TABLE (events bigint, deliveries bigint)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off
AS $fn$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH batch AS MATERIALIZED (
        SELECT id, organization_id
        FROM outbox.events
        WHERE fanned_out_at IS NULL
        ORDER BY seq
        LIMIT p_batch
        FOR UPDATE SKIP LOCKED
    ),
    targets AS MATERIALIZED (
        SELECT w.id, w.organization_id, w.status, w.disabled_reason
        FROM outbox.webhooks w
        WHERE w.status IN ('active', 'disabled')
          AND w.organization_id IN (SELECT organization_id FROM batch)
        FOR KEY SHARE
    ),
    created AS (
        INSERT INTO outbox.deliveries
            (event_id, webhook_id, organization_id, status, next_attempt_at, last_error)
        SELECT b.id, t.id, b.organization_id,
               CASE WHEN t.status = 'active' THEN 'pending' ELSE 'failed' END,
               CASE WHEN t.status = 'active' THEN now() END,
               CASE WHEN t.status = 'disabled'
                    THEN 'webhook disabled: ' || coalesce(t.disabled_reason, 'no reason recorded') END
        FROM batch b
        JOIN targets t USING (organization_id)
        ON CONFLICT (event_id, webhook_id) DO NOTHING
        RETURNING 1
    ),
    marked AS (
        UPDATE outbox.events e
        SET fanned_out_at = now()
        FROM batch b
        WHERE e.id = b.id
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM marked) AS events,
           (SELECT count(*) FROM created) AS deliveries;
END
$fn$;

-- Write-back as in 0005, plus the delay each 429/503 answer asked for
-- (p_retry_after, seconds, NULL when none) in the attempt log.
CREATE FUNCTION outbox.daemon_complete(
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
          AND d.status = 'pending'
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

-- The write-back of 0005 without the new argument, for a daemon of that
-- schema still running: the same statement with no delay recorded (unnest
-- pads the missing array with NULLs).
CREATE OR REPLACE FUNCTION outbox.daemon_complete(
    p_ids uuid[], p_tokens uuid[], p_statuses text[], p_codes int[], p_reasons text[],
    p_retry_in_ms bigint[], p_attempts int[], p_started timestamptz[], p_durations int[],
    p_outcomes text[], p_excerpts text[])
RETURNS bigint
LANGUAGE sql
AS $fn$
    SELECT outbox.daemon_complete(p_ids, p_tokens, p_statuses, p_codes, p_reasons, p_retry_in_ms,
                                  p_attempts, p_started, p_durations, p_outcomes, p_excerpts,
                                  NULL::int[]);
$fn$;

-- The dashboard's per-webhook fields as in 0005, and `failing_since`: the
-- start of the current run of failures, which `--disable-after` measures.
-- It is kept while failures follow failures, cleared by a success that is
-- the latest outcome, and otherwise started at the batch's latest failure
-- (batches are folded about a second apart, so that is at most about a
-- second late: a webhook is disabled a little late, never early).
CREATE OR REPLACE FUNCTION outbox.daemon_fold_webhook_status(
    p_ids uuid[], p_successes timestamptz[], p_failures timestamptz[], p_reasons text[])
RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off
AS $fn$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    WITH summary AS (
        SELECT *
        FROM unnest(p_ids::uuid[], p_successes::timestamptz[], p_failures::timestamptz[], p_reasons::text[])
            AS s(webhook_id, last_success_at, last_failure_at, last_failure_reason)
    ),
    locked AS MATERIALIZED (
        SELECT w.id
        FROM outbox.webhooks w
        JOIN summary s ON s.webhook_id = w.id
        WHERE s.last_success_at > coalesce(w.last_success_at, '-infinity')
           OR s.last_failure_at > coalesce(w.last_failure_at, '-infinity')
        ORDER BY w.id
        FOR NO KEY UPDATE OF w
    )
    -- Everything from `w`, the target: the UPDATE reads its latest version.
    UPDATE outbox.webhooks w
    SET last_success_at = greatest(w.last_success_at, s.last_success_at),
        last_failure_at = greatest(w.last_failure_at, s.last_failure_at),
        last_failure_reason = CASE
            WHEN s.last_failure_at IS NOT NULL
                 AND (w.last_failure_at IS NULL OR s.last_failure_at >= w.last_failure_at)
            THEN s.last_failure_reason
            ELSE w.last_failure_reason END,
        failing_since = CASE
            -- The latest outcome is a success (greatest() skips NULLs; a
            -- comparison with NULL is not true).
            WHEN greatest(w.last_failure_at, s.last_failure_at) IS NULL
                 OR greatest(w.last_success_at, s.last_success_at)
                    >= greatest(w.last_failure_at, s.last_failure_at)
            THEN NULL
            -- The same run of failures goes on.
            WHEN w.failing_since IS NOT NULL
                 AND (greatest(w.last_success_at, s.last_success_at) IS NULL
                      OR w.failing_since > greatest(w.last_success_at, s.last_success_at))
            THEN w.failing_since
            ELSE coalesce(s.last_failure_at, w.last_failure_at) END
    FROM summary s, locked l
    WHERE w.id = s.webhook_id
      AND l.id = w.id;
END
$fn$;
