-- A cheaper insert for producers (BENCHMARKS.md, producer cost). Measured per
-- insert with pgbench, one client: the two triggers of 0001 cost ~0.1 ms on
-- top of a plain insert's ~0.15 ms, most of it in setting up the PL/pgSQL
-- validator's many expressions again in every transaction, and in the
-- statement-level NOTIFY trigger even while notifications are off.
--
-- Now one row trigger does everything, and a valid event (the usual case)
-- passes one inlinable SQL expression. Only when that says no does the full
-- validator run, to raise the message that names the problem; so the fast
-- check must never accept what `outbox.validate_event` refuses
-- (tests/it/validation.rs checks the two against each other).

CREATE FUNCTION outbox.id_field(data jsonb, field text) RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN jsonb_typeof(data -> field) = 'string' AND data ->> field <> '';

CREATE FUNCTION outbox.string_field(data jsonb, field text) RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN jsonb_typeof(data -> field) = 'string';

CREATE FUNCTION outbox.optional_string_field(data jsonb, field text) RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN coalesce(jsonb_typeof(data -> field), 'null') IN ('string', 'null');

CREATE FUNCTION outbox.status_group_field(data jsonb, field text) RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN data ->> field IN ('open', 'in-progress', 'completed', 'closed');

-- True when the event is certainly valid; false or NULL means "ask
-- outbox.validate_event". Serialising typical event data to measure it is
-- cheap; stored sizes would not do (a number like 1e100000 is
-- stored in a few bytes and serialised to 100,001).
CREATE FUNCTION outbox.event_is_valid(event text, data jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN jsonb_typeof(data) = 'object'
   AND octet_length(data::text) <= 262144
   AND CASE event
       WHEN 'post.created' THEN
            outbox.id_field(data, 'id') AND outbox.string_field(data, 'title')
        AND outbox.optional_string_field(data, 'details')
        AND outbox.optional_string_field(data, 'board_id')
        AND outbox.optional_string_field(data, 'board_name')
       WHEN 'post.edited' THEN
            outbox.id_field(data, 'id') AND outbox.string_field(data, 'title')
        AND outbox.optional_string_field(data, 'details')
        AND outbox.optional_string_field(data, 'board_id')
        AND outbox.optional_string_field(data, 'board_name')
        AND outbox.optional_string_field(data, 'owner_id')
        AND outbox.optional_string_field(data, 'category_id')
        AND outbox.optional_string_field(data, 'eta')
        AND (coalesce(jsonb_typeof(data -> 'changed_fields'), 'null') = 'null'
             OR (jsonb_typeof(data -> 'changed_fields') = 'array'
                 AND NOT jsonb_path_exists(data, 'strict $.changed_fields[*] ? (@.type() != "string")')))
       WHEN 'post.deleted' THEN
            outbox.id_field(data, 'id')
        AND outbox.optional_string_field(data, 'title')
        AND outbox.optional_string_field(data, 'board_id')
       WHEN 'post.tag_added' THEN
            outbox.id_field(data, 'id') AND outbox.id_field(data, 'tag_id')
        AND outbox.optional_string_field(data, 'tag_name')
        AND outbox.optional_string_field(data, 'title')
       WHEN 'post.tag_removed' THEN
            outbox.id_field(data, 'id') AND outbox.id_field(data, 'tag_id')
        AND outbox.optional_string_field(data, 'tag_name')
        AND outbox.optional_string_field(data, 'title')
       WHEN 'post.status_changed' THEN
            outbox.id_field(data, 'id') AND outbox.id_field(data, 'status_id')
        AND outbox.string_field(data, 'status_group_code')
        AND outbox.status_group_field(data, 'status_group_code')
        AND outbox.optional_string_field(data, 'status_name')
        AND outbox.optional_string_field(data, 'previous_status_id')
        AND outbox.optional_string_field(data, 'title')
        AND (coalesce(jsonb_typeof(data -> 'previous_status_group_code'), 'null') = 'null'
             OR (outbox.string_field(data, 'previous_status_group_code')
                 AND outbox.status_group_field(data, 'previous_status_group_code')))
       WHEN 'comment.created' THEN
            outbox.id_field(data, 'id') AND outbox.id_field(data, 'post_id')
        AND outbox.string_field(data, 'content')
        AND outbox.optional_string_field(data, 'author_id')
        AND outbox.optional_string_field(data, 'parent_id')
        AND outbox.optional_string_field(data, 'post_title')
       WHEN 'comment.edited' THEN
            outbox.id_field(data, 'id') AND outbox.id_field(data, 'post_id')
        AND outbox.string_field(data, 'content')
        AND outbox.optional_string_field(data, 'author_id')
        AND outbox.optional_string_field(data, 'post_title')
       WHEN 'comment.deleted' THEN
            outbox.id_field(data, 'id') AND outbox.id_field(data, 'post_id')
        AND outbox.optional_string_field(data, 'post_title')
       WHEN 'vote.created' THEN
            outbox.id_field(data, 'id') AND outbox.id_field(data, 'post_id')
        AND outbox.optional_string_field(data, 'post_title')
        AND outbox.optional_string_field(data, 'board_id')
        AND outbox.optional_string_field(data, 'user_id')
       WHEN 'vote.deleted' THEN
            outbox.id_field(data, 'id') AND outbox.id_field(data, 'post_id')
        AND outbox.optional_string_field(data, 'post_title')
        AND outbox.optional_string_field(data, 'board_id')
        AND outbox.optional_string_field(data, 'user_id')
       ELSE false
   END;

-- Validation, the occurred_at stamp and the wake-up switch in one row
-- trigger. The switch is read with pg_sequence_last_value, a plain function
-- call rather than a query (NULL before the sequence was ever set: on).
-- A notification per row costs nothing extra: identical notifications in one
-- transaction are folded into one at commit.
CREATE OR REPLACE FUNCTION outbox.events_validate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.organization_id IS NULL THEN
        RAISE EXCEPTION 'organization_id is required' USING ERRCODE = '22023';
    END IF;
    IF outbox.event_is_valid(NEW.event, NEW.data) IS NOT TRUE THEN
        PERFORM outbox.validate_event(NEW.event, NEW.data);
    END IF;
    -- Producers cannot backdate or pre-fan-out an event.
    NEW.occurred_at := clock_timestamp();
    NEW.fanned_out_at := NULL;
    IF coalesce(pg_sequence_last_value('outbox.wakeup_notify'::regclass), 1) = 1 THEN
        PERFORM pg_notify('outbox_wakeup', '');
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER events_notify ON outbox.events;
DROP FUNCTION outbox.events_notify();

-- PL/pgSQL keeps the INSERT's plan for the session; an SQL function that
-- cannot be inlined (an INSERT cannot) plans it again on every call.
CREATE OR REPLACE FUNCTION outbox.emit(organization_id uuid, event text, data jsonb) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    event_id uuid;
BEGIN
    INSERT INTO outbox.events (organization_id, event, data)
    VALUES (emit.organization_id, emit.event, emit.data)
    RETURNING id INTO event_id;
    RETURN event_id;
END;
$$;
