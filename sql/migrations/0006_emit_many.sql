-- Batch emit (docs/CONTRACT.md §5, docs/PRODUCERS.md): a producer that emits
-- several events in one transaction sends them as one JSON array, in one
-- statement, and they are written by one multi-row INSERT. Expand-only
-- (docs/UPGRADING.md): two new functions, nothing else changes.
--
-- Errors are emit's (SQLSTATE 22023) with the offending element's index,
-- counted from 0, in front: `events[3]: post.created: data.title is
-- required`. The row trigger of 0003 still validates every row, but by then
-- an error could not say which element it was; so the function checks the
-- elements first with the fast check of 0003 and hands only those that fail
-- it to outbox.emit_many_check, which raises the detailed message. Valid
-- batches (the usual case) pay one fast check per element here and one in the
-- trigger, and no subtransaction.

-- Raises the error for element `idx` of a batch, or returns when the element
-- is valid after all (the fast check may refuse what the validator accepts).
-- Only called for elements that failed the fast check.
CREATE FUNCTION outbox.emit_many_check(idx bigint, element jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    message text;
    extra text;
BEGIN
    IF jsonb_typeof(element) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'events[%]: an element must be a JSON object {"event": …, "data": …}, got %',
            idx, coalesce(jsonb_typeof(element), 'null')
            USING ERRCODE = '22023';
    END IF;
    SELECT k INTO extra FROM jsonb_object_keys(element) AS k
    WHERE k NOT IN ('event', 'data') ORDER BY k LIMIT 1;
    IF extra IS NOT NULL THEN
        RAISE EXCEPTION 'events[%]: unexpected key "%": an element has only "event" and "data"',
            idx, left(extra, 100)
            USING ERRCODE = '22023';
    END IF;
    IF NOT element ? 'event' THEN
        RAISE EXCEPTION 'events[%]: "event" is required', idx USING ERRCODE = '22023';
    END IF;
    IF NOT element ? 'data' THEN
        RAISE EXCEPTION 'events[%]: "data" is required', idx USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(element -> 'event') <> 'string' THEN
        RAISE EXCEPTION 'events[%]: "event" must be a string, got %',
            idx, jsonb_typeof(element -> 'event')
            USING ERRCODE = '22023';
    END IF;
    -- emit's own message, with the index in front. The subtransaction this
    -- block costs is paid on the failure path only.
    BEGIN
        PERFORM outbox.validate_event(element ->> 'event', element -> 'data');
    EXCEPTION WHEN invalid_parameter_value THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
        RAISE EXCEPTION 'events[%]: %', idx, message USING ERRCODE = '22023';
    END;
END;
$$;

-- Inserts the events of `events` ([{"event": TYPE, "data": {…}}, …]) in one
-- statement and returns their ids in array order. All or nothing. An empty
-- array inserts nothing and returns no rows.
--
-- The INSERT takes the rows as jsonb_array_elements yields them, in array
-- order, and RETURNING gives each row's id as it is inserted, so the ids come
-- back in array order and `seq`, the fan-out order, follows the array
-- (tests/it/emit_many.rs checks both). Drawing the ids beforehand to pair
-- them with the indexes explicitly cost ~25 % more per event. PL/pgSQL keeps
-- the plans for the session, as for emit (0003).
CREATE FUNCTION outbox.emit_many(organization_id uuid, events jsonb) RETURNS SETOF uuid
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    IF emit_many.organization_id IS NULL THEN
        RAISE EXCEPTION 'organization_id is required' USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(emit_many.events) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'events must be a JSON array of {"event": …, "data": …}, got %',
            coalesce(jsonb_typeof(emit_many.events), 'null')
            USING ERRCODE = '22023';
    END IF;
    FOR bad IN
        SELECT e.n - 1 AS idx, e.element
        FROM jsonb_array_elements(emit_many.events) WITH ORDINALITY AS e(element, n)
        WHERE (jsonb_typeof(e.element) = 'object'
               AND e.element - 'event' - 'data' = '{}'::jsonb
               AND jsonb_typeof(e.element -> 'event') = 'string'
               AND outbox.event_is_valid(e.element ->> 'event', e.element -> 'data')) IS NOT TRUE
        ORDER BY e.n
    LOOP
        PERFORM outbox.emit_many_check(bad.idx, bad.element);
    END LOOP;

    RETURN QUERY
    INSERT INTO outbox.events (organization_id, event, data)
    SELECT emit_many.organization_id, e.element ->> 'event', e.element -> 'data'
    FROM jsonb_array_elements(emit_many.events) AS e(element)
    RETURNING id;
END;
$$;
