-- Fans out a batch of events and leases what fits into free slots
-- (outbox.daemon_fan_out_lease, migration 0009).
SELECT * FROM outbox.daemon_fan_out_lease($1, $2, $3, $4, $5, $6, $7)
