-- Fans out a batch of events (outbox.daemon_fan_out, migration 0005).
SELECT * FROM outbox.daemon_fan_out($1)
