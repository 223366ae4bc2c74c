-- Fewer plan nodes in the two statements the daemon runs for every event at
-- a modest rate, the leasing fan-out (migration 11) and the write-back
-- (migration 12), with the same parameters and results (BENCHMARKS.md,
-- sixth machine).
--
-- At one event per call most of each call goes into starting the
-- executor, node by node (about 10,000 instructions a node, a window
-- function with its sort about 30,000), not into the one row it handles.
-- Counted in instructions under callgrind, one event per call:
--
-- * fan-out: the free slots of busy webhooks are a key lookup in a jsonb
--   object built once per call, not a function scan joined by hashing;
--   the events are marked through `id = ANY (…)` on their primary key, not
--   a join with the batch. About 6 % fewer instructions.
-- * write-back: the results are joined to their rows once. The UPDATE's
--   RETURNING carries the attempt's fields (RETURNING may name the FROM
--   list's columns), so the attempt log no longer joins the results a
--   second time. About 6 % fewer.
--
-- Same signatures, and the same results for what a daemon sends: the
-- previous release's daemons call these as before (docs/UPGRADING.md). Two
-- inputs no daemon sends now behave differently. A write-back batch naming
-- one delivery twice under its current token lands and logs it once and
-- returns 1 (it logged two attempts and returned 2). The fan-out's p_busy
-- and p_free must be of equal length with no NULL id (jsonb_object refuses
-- them; the daemon builds both from one map, so ids are also unique).

CREATE OR REPLACE FUNCTION outbox.daemon_fan_out_lease(
    p_batch int, p_limit int, p_busy uuid[], p_free int[], p_cap int,
    p_lease_ms bigint, p_token uuid)
RETURNS TABLE (id uuid, webhook_id uuid, event_id uuid, attempts int, event text,
               organization_id uuid, occurred_at timestamptz, data text, url text,
               events bigint, deliveries bigint, unleased bigint,
               next_at timestamptz, db_now timestamptz, notify_on bool, oldest_running bigint)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off
AS $fn$
#variable_conflict use_column
DECLARE
    -- Free slots by webhook id, looked up by key (an object's keys are
    -- kept sorted) instead of joined: no plan nodes for it.
    room jsonb := jsonb_object(p_busy::text[], p_free::text[]);
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH batch AS MATERIALIZED (
        SELECT e.id, e.organization_id, e.seq, e.event, e.occurred_at, e.data
        FROM outbox.events e
        WHERE e.fanned_out_at IS NULL
        ORDER BY e.seq
        LIMIT p_batch
        FOR UPDATE SKIP LOCKED
    ),
    -- As in daemon_fan_out (0007): FOR KEY SHARE waits for a concurrent
    -- revoke or disable and reads the webhook as it is then.
    targets AS MATERIALIZED (
        SELECT w.id, w.organization_id, w.status, w.disabled_reason, w.url
        FROM outbox.webhooks w
        WHERE w.status IN ('active', 'disabled')
          AND w.organization_id IN (SELECT organization_id FROM batch)
        FOR KEY SHARE
    ),
    planned AS MATERIALIZED (
        SELECT b.id AS event_id, t.id AS webhook_id, b.organization_id, b.seq,
               t.status AS webhook_status, t.disabled_reason,
               row_number() OVER (PARTITION BY t.id ORDER BY b.seq) AS rank,
               coalesce((room ->> t.id::text)::int, p_cap::int) AS free
        FROM batch b
        JOIN targets t USING (organization_id)
    ),
    -- Within the webhooks' free slots, round-robin across them (the first
    -- of every webhook, then the second, ...) up to p_limit.
    chosen AS MATERIALIZED (
        SELECT p.*,
               p.webhook_status = 'active' AND p.rank <= p.free
               AND count(*) FILTER (WHERE p.webhook_status = 'active' AND p.rank <= p.free)
                   OVER (ORDER BY p.rank, p.seq, p.webhook_id ROWS UNBOUNDED PRECEDING)
                   <= p_limit::int AS leased
        FROM planned p
    ),
    created AS (
        INSERT INTO outbox.deliveries
            (event_id, webhook_id, organization_id, status, next_attempt_at, last_error,
             attempts, lease_token, last_attempt_at)
        SELECT c.event_id, c.webhook_id, c.organization_id,
               CASE WHEN c.webhook_status = 'active' THEN 'pending' ELSE 'failed' END,
               CASE WHEN c.leased THEN now() + p_lease_ms::bigint * interval '1 millisecond'
                    WHEN c.webhook_status = 'active' THEN now() END,
               CASE WHEN c.webhook_status = 'disabled'
                    THEN 'webhook disabled: ' || coalesce(c.disabled_reason, 'no reason recorded') END,
               CASE WHEN c.leased THEN 1 ELSE 0 END,
               CASE WHEN c.leased THEN p_token END,
               CASE WHEN c.leased THEN now() END
        FROM chosen c
        ON CONFLICT (event_id, webhook_id) DO NOTHING
        RETURNING outbox.deliveries.id, outbox.deliveries.webhook_id, outbox.deliveries.event_id,
                  outbox.deliveries.attempts, outbox.deliveries.status, outbox.deliveries.lease_token
    ),
    marked AS (
        UPDATE outbox.events e
        SET fanned_out_at = now()
        WHERE e.id = ANY (ARRAY(SELECT b.id FROM batch b))
        RETURNING 1
    )
    SELECT c.id, c.webhook_id, c.event_id, c.attempts, b.event, b.organization_id,
           b.occurred_at, b.data::text, t.url,
           NULL::bigint, NULL::bigint, NULL::bigint,
           NULL::timestamptz, NULL::timestamptz, NULL::bool, NULL::bigint
    FROM created c
    JOIN batch b ON b.id = c.event_id
    JOIN targets t ON t.id = c.webhook_id
    WHERE c.lease_token IS NOT NULL
    UNION ALL
    SELECT NULL::uuid, NULL::uuid, NULL::uuid, NULL::int, NULL::text, NULL::uuid,
           NULL::timestamptz, NULL::text, NULL::text,
           s.events, s.deliveries, s.unleased,
           -- As daemon_next_work, but this statement's own batch (still
           -- unmarked in its snapshot) does not count as waiting.
           CASE WHEN s.events >= p_batch
                  OR EXISTS (SELECT 1 FROM outbox.events e
                             WHERE e.fanned_out_at IS NULL
                               AND NOT EXISTS (SELECT 1 FROM batch b WHERE b.id = e.id))
                THEN now()
                ELSE (SELECT min(d.next_attempt_at) FROM outbox.deliveries d WHERE d.status = 'pending')
           END,
           now(),
           -- As the events trigger reads the switch (migration 10): NULL
           -- before it was ever set, which is on.
           coalesce(pg_sequence_last_value('outbox.wakeup_notify'::regclass), 1) = 1,
           pg_snapshot_xmin(pg_current_snapshot())::text::bigint
    -- Every locked event is marked, so `marked` counts the batch.
    FROM (SELECT (SELECT count(*) FROM marked) AS events,
                 count(*) AS deliveries,
                 count(*) FILTER (WHERE c.status = 'pending' AND c.lease_token IS NULL) AS unleased
          FROM created c) s;
END
$fn$;

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
    -- The results are joined once, by the UPDATE, and its RETURNING hands
    -- each landed result's attempt fields straight to the attempt log: a
    -- stale and a fresh result for one delivery can share a batch, and only
    -- the fresh one (its token still on the row) is both applied and logged.
    WITH updated AS (
        UPDATE outbox.deliveries d
        SET status = r.status,
            next_attempt_at = CASE WHEN r.status = 'pending'
                                   THEN now() + r.retry_in_ms * interval '1 millisecond' END,
            lease_token = NULL,
            last_status_code = r.status_code,
            last_error = coalesce(r.reason, d.last_error),
            delivered_at = CASE WHEN r.status = 'delivered' THEN now() ELSE d.delivered_at END
        FROM unnest(p_ids::uuid[], p_tokens::uuid[], p_statuses::text[], p_codes::int[], p_reasons::text[], p_retry_in_ms::bigint[],
                    p_attempts::int[], p_started::timestamptz[], p_durations::int[], p_outcomes::text[], p_excerpts::text[],
                    p_retry_after::int[])
            AS r(id, lease_token, status, status_code, reason, retry_in_ms,
                 attempt, started_at, duration_ms, outcome, excerpt, retry_after)
        -- As in migration 12: the batch's ids by one scan of deliveries_pkey,
        -- "still pending" said so that deliveries_due cannot be chosen.
        WHERE d.id = ANY (p_ids)
          AND d.id = r.id
          AND d.lease_token = r.lease_token
          AND d.next_attempt_at IS NOT NULL
        RETURNING d.id, d.webhook_id, d.organization_id, r.attempt, r.started_at, r.duration_ms,
                  r.outcome, r.status_code, r.reason, r.excerpt, r.retry_after
    )
    INSERT INTO outbox.delivery_attempts
        (delivery_id, webhook_id, organization_id, attempt, started_at, duration_ms,
         outcome, status_code, reason, response_excerpt, retry_after_seconds)
    SELECT u.id, u.webhook_id, u.organization_id, u.attempt, u.started_at, u.duration_ms,
           u.outcome, u.status_code, u.reason, u.excerpt, u.retry_after
    FROM updated u;
    GET DIAGNOSTICS landed = ROW_COUNT;
    RETURN landed;
END
$fn$;
