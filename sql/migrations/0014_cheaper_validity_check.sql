-- A cheaper validity check for producers (BENCHMARKS.md, sixth machine):
-- it accepts what migration 3's `outbox.event_is_valid` accepted, in an
-- expression with a fifth of its function calls. (An unknown event type
-- now gives NULL rather than false; both callers only ask IS NOT TRUE.)
--
-- The insert trigger (migration 10) inlines this function into one PL/pgSQL
-- condition, and PL/pgSQL prepares a condition afresh in every transaction:
-- each function call in it is looked up and permission-checked again before
-- anything is evaluated, about a thousand instructions apiece. Migration 3's
-- body had some thirty: one text comparison per event type to choose the
-- JSON path, the object check, and a separate check of post.edited's
-- changed_fields. Now the path is picked from a constant array by the
-- type's position in another (`array_position`; an unknown type gives NULL,
-- which sends the event to the full validator for its message), and each
-- path checks that the data is an object and, for post.edited, its
-- changed_fields: six calls in all. Counted under callgrind, a transaction
-- that emits one vote costs 218 K instructions before and 192 K after.
--
-- changed_fields in lax mode: `$.changed_fields[*]` yields the elements of
-- an array, and `.type()` does not unwrap, so a nested array reads "array"
-- and fails `!(… != "string")`, as the full validator refuses it. A filter
-- (`? (…)`) would unwrap it in lax mode and let it pass, so none is used. A
-- missing field and JSON null pass `!($.changed_fields.type() != "null")`.
-- The root's `.type()` is "array" for an array (not unwrapped), so data
-- that is not an object fails every path.
--
-- tests/it/validation/table.rs checks this function against
-- `outbox.validate_event` for every event type and field variation.

CREATE OR REPLACE FUNCTION outbox.event_is_valid(event text, data jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN octet_length(data::text) <= 262144
   AND jsonb_path_match(data, (ARRAY[
        -- post.created
        jsonpath '$.type() == "object"
                     && $.id.type() == "string" && $.id != ""
                     && $.title.type() == "string"
                     && !($.details.type() != "string" && $.details.type() != "null")
                     && !($.board_id.type() != "string" && $.board_id.type() != "null")
                     && !($.board_name.type() != "string" && $.board_name.type() != "null")',
        -- post.edited
        jsonpath '$.type() == "object"
                     && $.id.type() == "string" && $.id != ""
                     && $.title.type() == "string"
                     && !($.details.type() != "string" && $.details.type() != "null")
                     && !($.board_id.type() != "string" && $.board_id.type() != "null")
                     && !($.board_name.type() != "string" && $.board_name.type() != "null")
                     && !($.owner_id.type() != "string" && $.owner_id.type() != "null")
                     && !($.category_id.type() != "string" && $.category_id.type() != "null")
                     && !($.eta.type() != "string" && $.eta.type() != "null")
                     && (!($.changed_fields.type() != "null")
                         || ($.changed_fields.type() == "array"
                             && !($.changed_fields[*].type() != "string")))',
        -- post.deleted
        jsonpath '$.type() == "object"
                     && $.id.type() == "string" && $.id != ""
                     && !($.title.type() != "string" && $.title.type() != "null")
                     && !($.board_id.type() != "string" && $.board_id.type() != "null")',
        -- post.tag_added
        jsonpath '$.type() == "object"
                     && $.id.type() == "string" && $.id != ""
                     && $.tag_id.type() == "string" && $.tag_id != ""
                     && !($.tag_name.type() != "string" && $.tag_name.type() != "null")
                     && !($.title.type() != "string" && $.title.type() != "null")',
        -- post.tag_removed
        jsonpath '$.type() == "object"
                     && $.id.type() == "string" && $.id != ""
                     && $.tag_id.type() == "string" && $.tag_id != ""
                     && !($.tag_name.type() != "string" && $.tag_name.type() != "null")
                     && !($.title.type() != "string" && $.title.type() != "null")',
        -- post.status_changed
        jsonpath '$.type() == "object"
                     && $.id.type() == "string" && $.id != ""
                     && $.status_id.type() == "string" && $.status_id != ""
                     && $.status_group_code.type() == "string"
                     && ($.status_group_code == "open" || $.status_group_code == "in-progress" || $.status_group_code == "completed" || $.status_group_code == "closed")
                     && !($.status_name.type() != "string" && $.status_name.type() != "null")
                     && !($.previous_status_id.type() != "string" && $.previous_status_id.type() != "null")
                     && !($.previous_status_group_code.type() != "string" && $.previous_status_group_code.type() != "null")
                     && !($.previous_status_group_code.type() == "string" && !($.previous_status_group_code == "open" || $.previous_status_group_code == "in-progress" || $.previous_status_group_code == "completed" || $.previous_status_group_code == "closed"))
                     && !($.title.type() != "string" && $.title.type() != "null")',
        -- comment.created
        jsonpath '$.type() == "object"
                     && $.id.type() == "string" && $.id != ""
                     && $.post_id.type() == "string" && $.post_id != ""
                     && $.content.type() == "string"
                     && !($.author_id.type() != "string" && $.author_id.type() != "null")
                     && !($.parent_id.type() != "string" && $.parent_id.type() != "null")
                     && !($.post_title.type() != "string" && $.post_title.type() != "null")',
        -- comment.edited
        jsonpath '$.type() == "object"
                     && $.id.type() == "string" && $.id != ""
                     && $.post_id.type() == "string" && $.post_id != ""
                     && $.content.type() == "string"
                     && !($.author_id.type() != "string" && $.author_id.type() != "null")
                     && !($.post_title.type() != "string" && $.post_title.type() != "null")',
        -- comment.deleted
        jsonpath '$.type() == "object"
                     && $.id.type() == "string" && $.id != ""
                     && $.post_id.type() == "string" && $.post_id != ""
                     && !($.post_title.type() != "string" && $.post_title.type() != "null")',
        -- vote.created
        jsonpath '$.type() == "object"
                     && $.id.type() == "string" && $.id != ""
                     && $.post_id.type() == "string" && $.post_id != ""
                     && !($.post_title.type() != "string" && $.post_title.type() != "null")
                     && !($.board_id.type() != "string" && $.board_id.type() != "null")
                     && !($.user_id.type() != "string" && $.user_id.type() != "null")',
        -- vote.deleted
        jsonpath '$.type() == "object"
                     && $.id.type() == "string" && $.id != ""
                     && $.post_id.type() == "string" && $.post_id != ""
                     && !($.post_title.type() != "string" && $.post_title.type() != "null")
                     && !($.board_id.type() != "string" && $.board_id.type() != "null")
                     && !($.user_id.type() != "string" && $.user_id.type() != "null")'
       ])[array_position(ARRAY['post.created', 'post.edited', 'post.deleted', 'post.tag_added',
                              'post.tag_removed', 'post.status_changed', 'comment.created',
                              'comment.edited', 'comment.deleted', 'vote.created', 'vote.deleted'],
                        event)],
       '{}', true);
