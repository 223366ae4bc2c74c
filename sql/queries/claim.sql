-- Leases due deliveries (outbox.daemon_claim, migration 0005).
SELECT * FROM outbox.daemon_claim($1, $2, $3, $4, $5, $6, $7, $8)
