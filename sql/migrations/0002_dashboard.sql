-- What the dashboard may read, and a role that can read only that.
-- The views hold no secret material; the role gets no access to the tables.

CREATE VIEW outbox.delivery_log AS
SELECT d.id AS delivery_id,
       d.webhook_id,
       d.organization_id,
       d.event_id,
       e.event,
       e.occurred_at,
       d.status,
       d.attempts,
       d.next_attempt_at,
       d.last_attempt_at,
       d.last_status_code,
       d.last_error,
       d.delivered_at,
       d.created_at
FROM outbox.deliveries d
JOIN outbox.events e ON e.id = d.event_id;

CREATE VIEW outbox.attempt_log AS
SELECT a.delivery_id,
       a.webhook_id,
       a.organization_id,
       a.attempt,
       a.started_at,
       a.duration_ms,
       a.outcome,
       a.status_code,
       a.reason,
       a.response_excerpt
FROM outbox.delivery_attempts a;

-- Roles are shared by every database of the server, and several databases
-- may be migrated at once: a concurrent creation is not an error.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_dashboard') THEN
        CREATE ROLE outbox_dashboard NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END;
$$;

GRANT USAGE ON SCHEMA outbox TO outbox_dashboard;
GRANT SELECT ON outbox.webhook_status, outbox.delivery_log, outbox.attempt_log TO outbox_dashboard;
