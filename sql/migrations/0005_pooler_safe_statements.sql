-- The daemon's hot statements as functions, so that they work through a
-- connection pooler in transaction mode (PgBouncer and the poolers of managed
-- PostgreSQL services) and stay cheap:
--
-- * A pooled server connection may serve other clients between two of our
--   statements, so the daemon keeps no session state: no settings sent at
--   connect, no named prepared statements. Each call below is one unnamed
--   statement that costs next to nothing to parse, while PL/pgSQL keeps the
--   plan of the statement inside for the life of the server connection
--   (planning the claim from scratch takes ~0.6 ms, more than running it).
-- * What those statements need from the session is set on the function:
--   planner settings as SET clauses (restored when the function returns),
--   and synchronous_commit = off for the rest of the caller's transaction,
--   which for the daemon is the statement itself.
--
-- Planner settings: the daemon's statements are index lookups with small
-- LIMITs. On a queue table that filled faster than autovacuum analyses it,
-- the planner works from statistics of a much smaller table and prefers a
-- bitmap scan of every due row plus a sort (30 ms instead of 4 ms at 50k due
-- rows) or a sequential scan to find a few hundred rows by primary key. With
-- neither, it has only the indexes these statements were written for. Plans
-- that still must scan (a tiny table) then carry a cost penalty that would
-- make PostgreSQL compile them to machine code on every run: jit = off.
--
-- synchronous_commit = off: a database crash can lose the last milliseconds
-- of the daemon's own writes (claims, results, fan-out); those deliveries are
-- then sent again when their leases expire, which at-least-once allows.
-- Events are committed by producers with their own settings.
--
-- The statements the previous release sends directly keep working: this
-- migration only adds functions.

-- Fan-out: one delivery per active webhook of each claimed event, and the
-- events marked fanned out, in one statement so each event fans out once.
-- FOR KEY SHARE on the webhooks conflicts with revoke's FOR UPDATE but not with
-- the completer's status updates: a webhook revoked concurrently is re-checked
-- after the revoke commits and gets no rows.
CREATE FUNCTION outbox.daemon_fan_out(p_batch int)
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
        SELECT w.id, w.organization_id
        FROM outbox.webhooks w
        WHERE w.status = 'active'
          AND w.organization_id IN (SELECT organization_id FROM batch)
        FOR KEY SHARE
    ),
    created AS (
        INSERT INTO outbox.deliveries (event_id, webhook_id, organization_id)
        SELECT b.id, t.id, b.organization_id
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

-- Claim: lease due deliveries, fairly across webhooks and within each
-- webhook's free in-flight slots, and return what sending them needs.
-- p_window: how many of the oldest due rows to rank; p_by_webhook: look
-- webhook by webhook (see below); p_busy/p_free: webhooks with some in flight
-- and their free slots (0 = at its cap); p_cap: per-webhook cap; p_lease_ms
-- and p_token: the lease.
-- The lease is the due time itself: a crashed replica's rows become due again
-- when the lease runs out, found by the same index and predicate.
CREATE FUNCTION outbox.daemon_claim(
    p_limit int, p_window int, p_by_webhook bool, p_busy uuid[], p_free int[],
    p_cap int, p_lease_ms bigint, p_token uuid)
RETURNS TABLE (id uuid, webhook_id uuid, event_id uuid, attempts int, event text,
               organization_id uuid, occurred_at timestamptz, data text, url text,
               window_rows bigint)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH room AS MATERIALIZED (
        SELECT * FROM unnest(p_busy::uuid[], p_free::int[]) AS r(webhook_id, free)
    ),
    -- Usually: the oldest due rows, a bounded window of the due index, ranked
    -- per webhook so a claim takes round-robin across webhooks.
    due AS MATERIALIZED (
        SELECT w.id, w.webhook_id, w.next_attempt_at,
               row_number() OVER (PARTITION BY w.webhook_id ORDER BY w.next_attempt_at, w.id) AS rank
        FROM (
            SELECT id, webhook_id, next_attempt_at
            FROM outbox.deliveries
            WHERE NOT p_by_webhook::bool
              AND status = 'pending'
              AND next_attempt_at <= now()
            ORDER BY next_attempt_at, id
            LIMIT p_window
        ) w
    ),
    -- When that window is taken up by webhooks at their cap (one that hangs,
    -- with a backlog), look webhook by webhook instead: each active webhook with
    -- free slots contributes its oldest due rows. This costs one index probe per
    -- active webhook, never a scan of the stuck webhook's backlog.
    by_webhook AS MATERIALIZED (
        SELECT c.id, c.next_attempt_at
        FROM outbox.webhooks h
        LEFT JOIN room ON room.webhook_id = h.id
        CROSS JOIN LATERAL (
            SELECT d.id, d.next_attempt_at
            FROM outbox.deliveries d
            WHERE d.webhook_id = h.id
              AND d.status = 'pending'
              AND d.next_attempt_at <= now()
            ORDER BY d.created_at
            LIMIT coalesce(room.free, p_cap::int)
        ) c
        WHERE p_by_webhook::bool
          AND h.status = 'active'
          AND coalesce(room.free, p_cap::int) > 0
    ),
    eligible AS MATERIALIZED (
        (SELECT due.id
         FROM due
         LEFT JOIN room ON room.webhook_id = due.webhook_id
         WHERE due.rank <= coalesce(room.free, p_cap::int)
         ORDER BY due.rank, due.next_attempt_at, due.id
         LIMIT p_limit)
        UNION ALL
        (SELECT id FROM by_webhook ORDER BY next_attempt_at, id LIMIT p_limit)
    ),
    -- Lock by primary key, and only by it: with `status = 'pending'` here the
    -- planner may prefer a full scan of the due index, which it believes small
    -- (seen: 15 ms instead of 0.1 ms; a join here once became a quadratic nested
    -- loop). Rows another replica holds are skipped.
    picked AS MATERIALIZED (
        SELECT d.id
        FROM outbox.deliveries d
        WHERE d.id = ANY (ARRAY(SELECT id FROM eligible))
        FOR NO KEY UPDATE SKIP LOCKED
    )
    -- The rows are locked now, so this re-check sees their latest version: one
    -- claimed and committed by another replica meanwhile is no longer due. The
    -- conditions are written so they cannot match the due index's predicate.
    UPDATE outbox.deliveries d
    SET next_attempt_at = now() + p_lease_ms::bigint * interval '1 millisecond',
        lease_token = p_token,
        attempts = d.attempts + 1,
        last_attempt_at = now()
    FROM outbox.events e, outbox.webhooks w
    WHERE d.id = ANY (ARRAY(SELECT id FROM picked))
      AND coalesce(d.status, '') = 'pending'
      AND d.next_attempt_at + interval '0' <= now()
      AND e.id = d.event_id
      AND w.id = d.webhook_id
    RETURNING d.id, d.webhook_id, d.event_id, d.attempts,
              e.event, e.organization_id, e.occurred_at, e.data::text AS data,
              w.url, (SELECT count(*) FROM due) AS window_rows;
END
$fn$;

-- Write-back of a batch of attempts, fenced by the lease token: a result
-- lands only while its lease is still the current one, and only on a pending
-- row (a revoke may have cancelled it meanwhile). One attempt-log row per
-- result that landed; returns how many landed.
CREATE FUNCTION outbox.daemon_complete(
    p_ids uuid[], p_tokens uuid[], p_statuses text[], p_codes int[], p_reasons text[],
    p_retry_in_ms bigint[], p_attempts int[], p_started timestamptz[], p_durations int[],
    p_outcomes text[], p_excerpts text[])
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
                    p_attempts::int[], p_started::timestamptz[], p_durations::int[], p_outcomes::text[], p_excerpts::text[])
            AS r(id, lease_token, status, status_code, reason, retry_in_ms,
                 attempt, started_at, duration_ms, outcome, excerpt)
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
         outcome, status_code, reason, response_excerpt)
    SELECT u.id, u.webhook_id, u.organization_id, r.attempt, r.started_at, r.duration_ms,
           r.outcome, r.status_code, r.reason, r.excerpt
    FROM updated u
    -- A stale and a fresh result for one delivery can share a batch: log the one that landed.
    JOIN result r ON r.id = u.id AND r.lease_token = u.lease_token;
    GET DIAGNOSTICS landed = ROW_COUNT;
    RETURN landed;
END
$fn$;

-- The dashboard's per-webhook fields, folded from a batch. Rows are locked
-- in id order so two replicas folding overlapping batches cannot deadlock.
--
-- Only rows that something moves forward are locked and rewritten: the
-- stored times only ever grow, so a row this statement's snapshot finds
-- ahead of the batch can never need it, whatever another replica commits
-- meanwhile, and the result is the same in whatever order batches arrive.
-- How often a webhook's row is rewritten is the daemon's to limit (about
-- once a second, see src/completer.rs): while a long transaction elsewhere
-- holds back vacuum, every rewrite leaves a dead version that fan-out and
-- claims reading the webhook must step through.
CREATE FUNCTION outbox.daemon_fold_webhook_status(
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
    UPDATE outbox.webhooks w
    SET last_success_at = greatest(w.last_success_at, s.last_success_at),
        last_failure_at = greatest(w.last_failure_at, s.last_failure_at),
        last_failure_reason = CASE
            WHEN s.last_failure_at IS NOT NULL
                 AND (w.last_failure_at IS NULL OR s.last_failure_at >= w.last_failure_at)
            THEN s.last_failure_reason
            ELSE w.last_failure_reason END
    FROM summary s, locked l
    WHERE w.id = s.webhook_id
      AND l.id = w.id;
END
$fn$;

-- When there is next something to do: now if events await fan-out, else the
-- earliest due time (retries and leases alike). Both are index lookups.
-- Also the wake-up switch as it stands and the oldest running transaction,
-- for the switch's fence.
CREATE FUNCTION outbox.daemon_next_work()
RETURNS TABLE (next_at timestamptz, db_now timestamptz, notify_on bool, oldest_running bigint)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off
AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM outbox.events WHERE fanned_out_at IS NULL) THEN now()
        ELSE (SELECT min(next_attempt_at) FROM outbox.deliveries WHERE status = 'pending')
    END AS next_at,
    now() AS db_now,
    (SELECT last_value = 1 FROM outbox.wakeup_notify) AS notify_on,
    pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS oldest_running;
END
$fn$;
