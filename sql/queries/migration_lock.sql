-- Migrating replicas queue here; the lock ends with the transaction.
SELECT pg_advisory_xact_lock($1)
