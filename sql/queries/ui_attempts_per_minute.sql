-- Attempts per minute over the last $1 minutes, delivered or not, one row
-- per minute (zeros included), for the operator page's chart.
--
-- delivery_attempts has no index on started_at (one would cost every
-- write-back), but its id grows in the order rows are recorded. A binary
-- search over the primary key (one index probe per step, about log2 of the
-- rows) finds the first id whose attempt started after the window began less
-- $2 seconds; only ids from there on are read. The margin covers attempts
-- recorded late: an attempt is recorded at most about a lease after it
-- started, or not at all, so none of the window is before that id.
WITH RECURSIVE
window_start AS (
    SELECT date_trunc('minute', now()) - make_interval(mins => $1::int - 1) AS since
),
search (lo, hi) AS (
    SELECT (SELECT min(id) FROM outbox.delivery_attempts),
           (SELECT max(id) FROM outbox.delivery_attempts) + 1
    UNION ALL
    SELECT CASE WHEN probe.inside THEN s.lo ELSE (s.lo + s.hi) / 2 + 1 END,
           CASE WHEN probe.inside THEN (s.lo + s.hi) / 2 ELSE s.hi END
    FROM search s
    CROSS JOIN LATERAL (
        SELECT coalesce((
            SELECT a.started_at >= (SELECT since FROM window_start) - make_interval(secs => $2::float8)
            FROM outbox.delivery_attempts a
            WHERE a.id >= (s.lo + s.hi) / 2
            ORDER BY a.id
            LIMIT 1), true) AS inside
    ) probe
    WHERE s.lo < s.hi
),
recent AS (
    SELECT date_trunc('minute', a.started_at) AS minute, a.outcome
    FROM outbox.delivery_attempts a
    WHERE a.id >= (SELECT max(lo) FROM search)
      AND a.started_at >= (SELECT since FROM window_start)
)
SELECT m.minute,
       count(r.outcome) FILTER (WHERE r.outcome = 'delivered') AS delivered,
       count(r.outcome) FILTER (WHERE r.outcome <> 'delivered') AS not_delivered
FROM window_start w
CROSS JOIN LATERAL generate_series(w.since, date_trunc('minute', now()), interval '1 minute') AS m(minute)
LEFT JOIN recent r ON r.minute = m.minute
GROUP BY m.minute
ORDER BY m.minute
