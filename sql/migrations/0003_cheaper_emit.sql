-- A cheaper insert for producers (BENCHMARKS.md, producer cost). Measured per
-- insert with pgbench, one client: the two triggers of 0001 cost ~0.1 ms on
-- top of a plain insert's ~0.15 ms, most of it in setting up the PL/pgSQL
-- validator's many expressions again in every transaction, and in the
-- statement-level NOTIFY trigger even while notifications are off.
--
-- Now one row trigger does everything, and a valid event (the usual case)
-- passes one fast check. Only when that says no does the full validator run,
-- to raise the message that names the problem; so the fast check must never
-- accept what `outbox.validate_event` refuses (tests/it/validation.rs checks
-- the two against each other).
--
-- The fast check is one JSON path constant per event type, parsed once when
-- the plan is made. PostgreSQL prepares an expression afresh in every
-- transaction, so what a check costs grows with the size of its expression:
-- written as plain SQL over all eleven types' fields (hundreds of nodes),
-- validation cost a producer ~11 % of its TPS with pgbench at 8 clients; as
-- a CASE over path constants, ~5 %.
--
-- In lax mode a missing field is an empty sequence, so a comparison with it
-- is false: an absent optional field passes `!(… != "string" && … != "null")`
-- and an absent required one fails `… == "string"`. `.type()` does not
-- unwrap arrays, so an array where a string belongs fails. Anything the path
-- cannot decide (an error, a comparison of different types) is NULL, which
-- sends the event to the full validator. changed_fields (an array of strings)
-- is checked outside the path: lax mode would unwrap the array.

CREATE FUNCTION outbox.event_is_valid(event text, data jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN jsonb_typeof(data) = 'object'
   AND octet_length(data::text) <= 262144
   AND jsonb_path_match(data, CASE
        WHEN event = 'post.created' THEN jsonpath '$.id.type() == "string" && $.id != ""
                     && $.title.type() == "string"
                     && !($.details.type() != "string" && $.details.type() != "null")
                     && !($.board_id.type() != "string" && $.board_id.type() != "null")
                     && !($.board_name.type() != "string" && $.board_name.type() != "null")'
        WHEN event = 'post.edited' THEN jsonpath '$.id.type() == "string" && $.id != ""
                     && $.title.type() == "string"
                     && !($.details.type() != "string" && $.details.type() != "null")
                     && !($.board_id.type() != "string" && $.board_id.type() != "null")
                     && !($.board_name.type() != "string" && $.board_name.type() != "null")
                     && !($.owner_id.type() != "string" && $.owner_id.type() != "null")
                     && !($.category_id.type() != "string" && $.category_id.type() != "null")
                     && !($.eta.type() != "string" && $.eta.type() != "null")'
        WHEN event = 'post.deleted' THEN jsonpath '$.id.type() == "string" && $.id != ""
                     && !($.title.type() != "string" && $.title.type() != "null")
                     && !($.board_id.type() != "string" && $.board_id.type() != "null")'
        WHEN event IN ('post.tag_added', 'post.tag_removed') THEN jsonpath '$.id.type() == "string" && $.id != ""
                     && $.tag_id.type() == "string" && $.tag_id != ""
                     && !($.tag_name.type() != "string" && $.tag_name.type() != "null")
                     && !($.title.type() != "string" && $.title.type() != "null")'
        WHEN event = 'post.status_changed' THEN jsonpath '$.id.type() == "string" && $.id != ""
                     && $.status_id.type() == "string" && $.status_id != ""
                     && $.status_group_code.type() == "string"
                     && ($.status_group_code == "open" || $.status_group_code == "in-progress" || $.status_group_code == "completed" || $.status_group_code == "closed")
                     && !($.status_name.type() != "string" && $.status_name.type() != "null")
                     && !($.previous_status_id.type() != "string" && $.previous_status_id.type() != "null")
                     && !($.previous_status_group_code.type() != "string" && $.previous_status_group_code.type() != "null")
                     && !($.previous_status_group_code.type() == "string" && !($.previous_status_group_code == "open" || $.previous_status_group_code == "in-progress" || $.previous_status_group_code == "completed" || $.previous_status_group_code == "closed"))
                     && !($.title.type() != "string" && $.title.type() != "null")'
        WHEN event = 'comment.created' THEN jsonpath '$.id.type() == "string" && $.id != ""
                     && $.post_id.type() == "string" && $.post_id != ""
                     && $.content.type() == "string"
                     && !($.author_id.type() != "string" && $.author_id.type() != "null")
                     && !($.parent_id.type() != "string" && $.parent_id.type() != "null")
                     && !($.post_title.type() != "string" && $.post_title.type() != "null")'
        WHEN event = 'comment.edited' THEN jsonpath '$.id.type() == "string" && $.id != ""
                     && $.post_id.type() == "string" && $.post_id != ""
                     && $.content.type() == "string"
                     && !($.author_id.type() != "string" && $.author_id.type() != "null")
                     && !($.post_title.type() != "string" && $.post_title.type() != "null")'
        WHEN event = 'comment.deleted' THEN jsonpath '$.id.type() == "string" && $.id != ""
                     && $.post_id.type() == "string" && $.post_id != ""
                     && !($.post_title.type() != "string" && $.post_title.type() != "null")'
        WHEN event IN ('vote.created', 'vote.deleted') THEN jsonpath '$.id.type() == "string" && $.id != ""
                     && $.post_id.type() == "string" && $.post_id != ""
                     && !($.post_title.type() != "string" && $.post_title.type() != "null")
                     && !($.board_id.type() != "string" && $.board_id.type() != "null")
                     && !($.user_id.type() != "string" && $.user_id.type() != "null")'
        ELSE jsonpath 'false'
       END, '{}', true)
   AND (event <> 'post.edited'
        OR coalesce(jsonb_typeof(data -> 'changed_fields'), 'null') = 'null'
        OR (jsonb_typeof(data -> 'changed_fields') = 'array'
            AND NOT jsonb_path_exists(data, 'strict $.changed_fields[*] ? (@.type() != "string")')));

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
