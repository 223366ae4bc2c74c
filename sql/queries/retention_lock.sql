-- Only one replica sweeps at a time: the lock ends with the transaction.
SELECT pg_try_advisory_xact_lock($1)
