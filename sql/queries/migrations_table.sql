-- Where applied migrations are recorded. IF NOT EXISTS notices are noise on
-- every re-run, hence the setting (for this transaction only).
SET LOCAL client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS outbox;
CREATE TABLE IF NOT EXISTS outbox.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
