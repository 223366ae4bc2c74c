-- A cheaper insert for producers, second round (BENCHMARKS.md, producer
-- cost): what an `outbox.events` row costs beyond the same row in a plain
-- table is its trigger, its extra indexes and its identity column. Each is
-- paid inside the producer's transaction, on every event.
--
-- 1. One index fewer. events_by_time (occurred_at) only served retention,
--    which now finds old events by their time-ordered id (migration 4: the
--    first 48 bits of a version-7 id are its insert time in milliseconds),
--    through the primary key every insert maintains anyway
--    (sql/queries/retention_delete.sql). Ids that are not time-ordered
--    (random ones from before migration 4, or given by a producer) are
--    found by the same index above the newest time-ordered ids, and an
--    event is never deleted before its occurred_at is old enough.
--    The previous release's retention statement orders by occurred_at: on
--    this schema it reads the whole table per batch instead of an index
--    range. It still deletes the right events (docs/UPGRADING.md).
--
-- 2. The identity column's sequence is cached per session (64 values), so
--    nextval touches the shared sequence page (a buffer lock all producers
--    share, and a WAL record every 32 values) once in 64 events instead of
--    on every one. seq stays the fan-out order of the partial index
--    events_awaiting_fanout, for this release's daemons and the previous
--    one's alike. What caching changes: values are unique and increase
--    within a session (so a batch of emit_many stays in array order), but
--    concurrent sessions interleave blocks of values and a session that
--    ends leaves a gap. Nothing needs seq to be dense or to follow commit
--    order: fan-out takes the lowest un-fanned values first, and a block
--    handed out earlier only means its events fan out earlier (at most 63
--    per session can pass older events of other sessions; the fan-out lag
--    metric, which reads the lowest value, can read that much younger).
--    Dropping the column or its identity instead would need a new partial
--    index for fan-out, built by a full scan of the table that blocks
--    producers' inserts for the whole migration.
--
-- 3. The trigger decides in one expression whether a row needs anything
--    besides its occurred_at stamp: the wake-up switch is off, the
--    organization is set, the daemon's column is empty and the fast check
--    of migration 3 accepts the event. PostgreSQL prepares each PL/pgSQL
--    expression afresh in every transaction, so five small statements cost
--    more than one: a valid event while the daemons are busy (the common
--    case) now runs one condition and one assignment. Everything else goes
--    through the same steps as before, in the same order, with the same
--    messages. The switch is tested first, so with NOTIFY on the fast check
--    still runs only once.

ALTER TABLE outbox.events ALTER COLUMN seq SET CACHE 64;

DROP INDEX outbox.events_by_time;

-- The smallest version-7 id of `at`'s millisecond (its random bits all
-- zero): every time-ordered id made at or after `at` is larger, every one
-- made in an earlier millisecond smaller. IMMUTABLE, so a statement that
-- compares ids with it uses the primary key.
CREATE FUNCTION outbox.uuid_v7_floor(at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN encode(
    substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
        || '\x00000000000000000000'::bytea,
    'hex')::uuid;

CREATE OR REPLACE FUNCTION outbox.events_validate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The switch reads NULL before the sequence was ever set: on.
    IF pg_sequence_last_value('outbox.wakeup_notify'::regclass) IS DISTINCT FROM 0
       OR NEW.organization_id IS NULL
       OR NEW.fanned_out_at IS NOT NULL
       OR outbox.event_is_valid(NEW.event, NEW.data) IS NOT TRUE THEN
        IF NEW.organization_id IS NULL THEN
            RAISE EXCEPTION 'organization_id is required' USING ERRCODE = '22023';
        END IF;
        IF outbox.event_is_valid(NEW.event, NEW.data) IS NOT TRUE THEN
            PERFORM outbox.validate_event(NEW.event, NEW.data);
        END IF;
        -- Producers cannot pre-fan-out an event.
        NEW.fanned_out_at := NULL;
        IF coalesce(pg_sequence_last_value('outbox.wakeup_notify'::regclass), 1) = 1 THEN
            PERFORM pg_notify('outbox_wakeup', '');
        END IF;
    END IF;
    -- Producers cannot backdate an event.
    NEW.occurred_at := clock_timestamp();
    RETURN NEW;
END;
$$;
