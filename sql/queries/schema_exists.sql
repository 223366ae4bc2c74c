-- Whether webhookd's migrations table exists at all.
SELECT to_regclass('outbox.schema_migrations') IS NOT NULL
