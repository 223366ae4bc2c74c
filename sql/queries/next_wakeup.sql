-- When there is next something to do, and the wake-up switch
-- (outbox.daemon_next_work, migration 0005).
SELECT * FROM outbox.daemon_next_work()
