-- Writes a batch of attempts back (outbox.daemon_complete, migration 0007).
SELECT outbox.daemon_complete($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
