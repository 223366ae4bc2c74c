-- The migrations applied so far.
SELECT version FROM outbox.schema_migrations
