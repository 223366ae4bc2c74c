-- A signature scheme per webhook (docs/CONTRACT.md §1, §4): 'productbridge'
-- (X-ProductBridge-Signature only, what every webhook had before) or
-- 'standard' (the Standard Webhooks headers as well). Expand-only: existing
-- rows and rows the previous release inserts get 'productbridge', and the
-- previous release's daemons never read the column (docs/UPGRADING.md).

ALTER TABLE outbox.webhooks
    ADD COLUMN signature_scheme text NOT NULL DEFAULT 'productbridge'
        CONSTRAINT webhooks_signature_scheme_check
        CHECK (signature_scheme IN ('productbridge', 'standard'));

-- The view as migration 7 left it, with the scheme appended: CREATE OR REPLACE VIEW may
-- only add columns at the end, and keeps the dashboard role's grant.
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
       w.disabled_reason,
       w.signature_scheme
FROM outbox.webhooks w;
