-- The queue's tables with their dead tuples, whether autovacuum is on, and
-- how long since any vacuum, for the vacuum sweeper.
SELECT relname::text AS relname,
       n_live_tup,
       n_dead_tup,
       current_setting('autovacuum') = 'on' AS autovacuum_on,
       coalesce(extract(epoch FROM now() - greatest(last_vacuum, last_autovacuum)), 1e9)::float8
           AS seconds_since_vacuum
FROM pg_stat_user_tables
WHERE schemaname = 'outbox'
  AND relname IN ('deliveries', 'events', 'delivery_attempts')
