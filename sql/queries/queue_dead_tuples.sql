-- Dead tuples of the queue's tables, for /metrics: they pile up while the
-- xmin horizon is held back (see xmin_horizon.sql).
SELECT relname::text AS relname, n_dead_tup
FROM pg_stat_user_tables
WHERE schemaname = 'outbox'
  AND relname IN ('webhooks', 'events', 'deliveries', 'delivery_attempts')
ORDER BY relname
