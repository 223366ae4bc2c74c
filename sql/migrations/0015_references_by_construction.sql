-- The queue's references kept by the statements that write them and by
-- statement-level triggers, instead of by foreign-key constraints
-- (BENCHMARKS.md, seventh machine).
--
-- A foreign key makes PostgreSQL run a check query for every inserted row:
-- two for each delivery the fan-out creates (its event, its webhook) and one
-- for each attempt the write-back logs (its delivery), about 35,000
-- instructions apiece, a tenth of a one-event fan-out. Every such row is
-- written from a row the same statement has just read and locked: the
-- fan-out takes events FOR UPDATE and webhooks FOR KEY SHARE, and the
-- write-back logs an attempt from the delivery row its UPDATE has just
-- changed (RETURNING). No other statement of webhookd inserts them. So the
-- checks could never fail, and the locks already keep a referenced row from
-- being deleted under the writer. Rows written by hand are no longer
-- checked.
--
-- What the constraints also did is kept:
-- * ON DELETE CASCADE: deleting events or webhooks deletes their deliveries,
--   and deleting deliveries deletes their attempts, once per statement, by
--   index, over the deleted rows (retention deletes events in batches; the
--   cascade used to run one query per deleted row).
-- * TRUNCATE of a referenced table alone fails, unless the tables that
--   point at it were emptied in the same command.
--
-- Same tables and columns; the previous release's daemons and statements
-- work on the result (docs/UPGRADING.md).
--
-- Dropping a foreign key locks both of its tables ACCESS EXCLUSIVE until
-- the migration commits. The four are locked first, in the order the
-- daemon's statements take them (events before deliveries), so that a
-- running fan-out or write-back makes the migration wait rather than
-- deadlock with it. A producer's open transaction that has emitted also
-- holds events, and emits queue behind a waiting migration: so it gives up
-- after ten seconds (lock_timeout) and can simply be run again.

SET LOCAL lock_timeout = '10s';
LOCK TABLE outbox.events, outbox.webhooks, outbox.deliveries, outbox.delivery_attempts
    IN ACCESS EXCLUSIVE MODE;

ALTER TABLE outbox.deliveries
    DROP CONSTRAINT IF EXISTS deliveries_event_id_fkey,
    DROP CONSTRAINT IF EXISTS deliveries_webhook_id_fkey;
ALTER TABLE outbox.delivery_attempts
    DROP CONSTRAINT IF EXISTS delivery_attempts_delivery_id_fkey;

-- The ids go through an array so that each delete is an index scan of the
-- child table whatever the planner thinks of the deleted rows' count. As the
-- owner, as a foreign key's cascade ran: a role allowed to delete events
-- need not be allowed to delete deliveries.
CREATE FUNCTION outbox.events_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    DELETE FROM outbox.deliveries d
    WHERE d.event_id = ANY (ARRAY(SELECT g.id FROM gone g));
    RETURN NULL;
END;
$$;

CREATE FUNCTION outbox.webhooks_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    DELETE FROM outbox.deliveries d
    WHERE d.webhook_id = ANY (ARRAY(SELECT g.id FROM gone g));
    RETURN NULL;
END;
$$;

CREATE FUNCTION outbox.deliveries_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    DELETE FROM outbox.delivery_attempts a
    WHERE a.delivery_id = ANY (ARRAY(SELECT g.id FROM gone g));
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_deleted AFTER DELETE ON outbox.events
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.events_deleted();
CREATE TRIGGER webhooks_deleted AFTER DELETE ON outbox.webhooks
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.webhooks_deleted();
CREATE TRIGGER deliveries_deleted AFTER DELETE ON outbox.deliveries
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.deliveries_deleted();

-- After the whole TRUNCATE command: the rows pointing at the emptied table
-- must have gone with it, as a foreign key would have required.
CREATE FUNCTION outbox.referenced_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'deliveries' THEN
        IF EXISTS (SELECT 1 FROM outbox.delivery_attempts) THEN
            RAISE EXCEPTION 'cannot truncate outbox.deliveries alone: outbox.delivery_attempts points at it'
                USING ERRCODE = '0A000',
                      HINT = 'Truncate outbox.delivery_attempts in the same command.';
        END IF;
    ELSIF EXISTS (SELECT 1 FROM outbox.deliveries) THEN
        RAISE EXCEPTION 'cannot truncate outbox.% alone: outbox.deliveries points at it', TG_TABLE_NAME
            USING ERRCODE = '0A000',
                  HINT = 'Truncate outbox.deliveries and outbox.delivery_attempts in the same command.';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_truncated AFTER TRUNCATE ON outbox.events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.referenced_truncated();
CREATE TRIGGER webhooks_truncated AFTER TRUNCATE ON outbox.webhooks
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.referenced_truncated();
CREATE TRIGGER deliveries_truncated AFTER TRUNCATE ON outbox.deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.referenced_truncated();
