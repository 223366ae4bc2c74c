-- The outbox: events written by producers, webhooks, one delivery row per
-- (event, webhook), and one attempt row per HTTP attempt.
-- Applied by `webhookd migrate` inside one transaction under an advisory lock.

CREATE SCHEMA IF NOT EXISTS outbox;

-- Validates one event's type and data against the rules of docs/CONTRACT.md §2. Raises SQLSTATE 22023
-- (invalid_parameter_value) with a message that names the event and the field,
-- so producers see the problem in their own statement and nothing is written.
CREATE FUNCTION outbox.validate_event(p_event text, p_data jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    required text[];
    optional text[];
    field text;
    kind text;
BEGIN
    IF p_event IS NULL THEN
        RAISE EXCEPTION 'event type is required' USING ERRCODE = '22023';
    END IF;
    CASE p_event
        WHEN 'post.created' THEN
            required := '{id,title}';
            optional := '{details,board_id,board_name}';
        WHEN 'post.edited' THEN
            required := '{id,title}';
            optional := '{details,board_id,board_name,owner_id,category_id,eta}';
        WHEN 'post.deleted' THEN
            required := '{id}';
            optional := '{title,board_id}';
        WHEN 'post.tag_added', 'post.tag_removed' THEN
            required := '{id,tag_id}';
            optional := '{tag_name,title}';
        WHEN 'post.status_changed' THEN
            required := '{id,status_id,status_group_code}';
            optional := '{status_name,previous_status_id,previous_status_group_code,title}';
        WHEN 'comment.created' THEN
            required := '{id,post_id,content}';
            optional := '{author_id,parent_id,post_title}';
        WHEN 'comment.edited' THEN
            required := '{id,post_id,content}';
            optional := '{author_id,post_title}';
        WHEN 'comment.deleted' THEN
            required := '{id,post_id}';
            optional := '{post_title}';
        WHEN 'vote.created', 'vote.deleted' THEN
            required := '{id,post_id}';
            optional := '{post_title,board_id,user_id}';
        ELSE
            RAISE EXCEPTION 'unknown event type "%": expected one of post.created, post.edited, '
                'post.deleted, post.tag_added, post.tag_removed, post.status_changed, '
                'comment.created, comment.edited, comment.deleted, vote.created, vote.deleted',
                left(p_event, 100)
                USING ERRCODE = '22023';
    END CASE;

    IF p_data IS NULL OR jsonb_typeof(p_data) <> 'object' THEN
        RAISE EXCEPTION '%: data must be a JSON object, got %', p_event,
            coalesce(jsonb_typeof(p_data), 'null')
            USING ERRCODE = '22023';
    END IF;

    -- 256 KiB of serialised data keeps one event far below what receivers and
    -- the claim batch are sized for.
    IF octet_length(p_data::text) > 262144 THEN
        RAISE EXCEPTION '%: data is % bytes serialised, larger than the 256 KiB limit',
            p_event, octet_length(p_data::text)
            USING ERRCODE = '22023';
    END IF;

    FOREACH field IN ARRAY required LOOP
        kind := jsonb_typeof(p_data -> field);
        IF kind IS NULL OR kind = 'null' THEN
            RAISE EXCEPTION '%: data.% is required', p_event, field USING ERRCODE = '22023';
        ELSIF kind <> 'string' THEN
            RAISE EXCEPTION '%: data.% must be a string, got %', p_event, field, kind
                USING ERRCODE = '22023';
        ELSIF (field = 'id' OR field LIKE '%\_id') AND p_data ->> field = '' THEN
            RAISE EXCEPTION '%: data.% must not be empty', p_event, field USING ERRCODE = '22023';
        END IF;
    END LOOP;

    FOREACH field IN ARRAY optional LOOP
        kind := jsonb_typeof(p_data -> field);
        IF kind IS NOT NULL AND kind NOT IN ('string', 'null') THEN
            RAISE EXCEPTION '%: data.% must be a string, got %', p_event, field, kind
                USING ERRCODE = '22023';
        END IF;
    END LOOP;

    IF p_event = 'post.edited' THEN
        kind := jsonb_typeof(p_data -> 'changed_fields');
        IF kind IS NOT NULL AND kind <> 'null' AND (kind <> 'array' OR EXISTS (
            SELECT 1 FROM jsonb_array_elements(p_data -> 'changed_fields') AS e
            WHERE jsonb_typeof(e) <> 'string'
        )) THEN
            RAISE EXCEPTION 'post.edited: data.changed_fields must be an array of strings'
                USING ERRCODE = '22023';
        END IF;
    END IF;

    IF p_event = 'post.status_changed' THEN
        IF p_data ->> 'status_group_code' NOT IN ('open', 'in-progress', 'completed', 'closed') THEN
            RAISE EXCEPTION 'post.status_changed: data.status_group_code must be one of open, '
                'in-progress, completed, closed, got "%"', left(p_data ->> 'status_group_code', 100)
                USING ERRCODE = '22023';
        END IF;
        IF jsonb_typeof(p_data -> 'previous_status_group_code') = 'string'
           AND p_data ->> 'previous_status_group_code'
               NOT IN ('open', 'in-progress', 'completed', 'closed') THEN
            RAISE EXCEPTION 'post.status_changed: data.previous_status_group_code must be one of '
                'open, in-progress, completed, closed, got "%"',
                left(p_data ->> 'previous_status_group_code', 100)
                USING ERRCODE = '22023';
        END IF;
    END IF;
END;
$$;

CREATE TABLE outbox.events (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Fan-out order; a sequence is cheaper to index than (occurred_at, id).
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    organization_id uuid        NOT NULL,
    event           text        NOT NULL,
    data            jsonb       NOT NULL,
    -- The clock time of the INSERT (docs/CONTRACT.md §1), not the transaction start.
    occurred_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Set when the daemon has created this event's delivery rows.
    fanned_out_at   timestamptz
);

CREATE INDEX events_awaiting_fanout ON outbox.events (seq) WHERE fanned_out_at IS NULL;
-- Retention deletes the oldest events first.
CREATE INDEX events_by_time ON outbox.events (occurred_at);

CREATE FUNCTION outbox.events_validate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.organization_id IS NULL THEN
        RAISE EXCEPTION 'organization_id is required' USING ERRCODE = '22023';
    END IF;
    PERFORM outbox.validate_event(NEW.event, NEW.data);
    -- Producers cannot backdate or pre-fan-out an event.
    NEW.occurred_at := clock_timestamp();
    NEW.fanned_out_at := NULL;
    RETURN NEW;
END;
$$;

CREATE TRIGGER events_validate BEFORE INSERT ON outbox.events
    FOR EACH ROW EXECUTE FUNCTION outbox.events_validate();

-- The wake-up switch (docs/ARCHITECTURE.md, wake-ups): 1 = producers NOTIFY, 0 = they
-- don't. NOTIFY serialises committing producers, so the daemon turns it off
-- while it is busy polling anyway and back on before it sleeps.
-- A sequence rather than a row because its value is read without a snapshot:
-- a producer sees a flip made after its transaction began, so every producer
-- that saw the switch off was already running when it was turned on, and the
-- daemon can wait exactly for those (notifier::WakeupSwitch).
CREATE SEQUENCE outbox.wakeup_notify MINVALUE 0 MAXVALUE 1 START 1;

CREATE FUNCTION outbox.events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT last_value FROM outbox.wakeup_notify) = 1 THEN
        PERFORM pg_notify('outbox_wakeup', '');
    END IF;
    RETURN NULL;
END;
$$;

-- Statement level: a multi-row insert sends one notification, and identical
-- notifications within one transaction are folded into one at commit.
CREATE TRIGGER events_notify AFTER INSERT ON outbox.events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.events_notify();

CREATE FUNCTION outbox.emit(organization_id uuid, event text, data jsonb) RETURNS uuid
LANGUAGE sql AS $$
    INSERT INTO outbox.events (organization_id, event, data)
    VALUES (emit.organization_id, emit.event, emit.data)
    RETURNING id;
$$;

CREATE TABLE outbox.webhooks (
    id                  uuid        PRIMARY KEY,
    organization_id     uuid        NOT NULL,
    url                 text        NOT NULL,
    label               text        NOT NULL DEFAULT '',
    status              text        NOT NULL DEFAULT 'active'
                                    CHECK (status IN ('active', 'revoked')),
    -- AES-256-GCM: 12-byte nonce || ciphertext || tag. Never the plaintext.
    secret_ciphertext   bytea       NOT NULL,
    -- Which key encrypted it, so the key can be rotated.
    secret_key_id       text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    revoked_at          timestamptz,
    last_success_at     timestamptz,
    last_failure_at     timestamptz,
    last_failure_reason text
);

-- Fan-out (active webhooks of an organization) and the dashboard (all of them).
CREATE INDEX webhooks_by_organization ON outbox.webhooks (organization_id);

CREATE TABLE outbox.deliveries (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id        uuid        NOT NULL REFERENCES outbox.events (id) ON DELETE CASCADE,
    webhook_id      uuid        NOT NULL REFERENCES outbox.webhooks (id) ON DELETE CASCADE,
    organization_id uuid        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts        integer     NOT NULL DEFAULT 0,
    -- While pending: when the next attempt is due. A claim pushes it to the
    -- lease expiry, so one predicate finds due work and expired leases alike.
    next_attempt_at timestamptz DEFAULT now(),
    -- Fencing token of the current lease; a write-back must present it.
    lease_token     uuid,
    last_attempt_at timestamptz,
    last_status_code integer,
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, webhook_id),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000);

-- Predicate + ORDER BY of the claim, no OR.
CREATE INDEX deliveries_due ON outbox.deliveries (next_attempt_at, id) WHERE status = 'pending';
-- Per-webhook counts by status (the status view), status-filtered listings and
-- recovery of failed deliveries in a time range: one index serves all three.
CREATE INDEX deliveries_by_webhook ON outbox.deliveries (webhook_id, status, created_at);
-- Failed deliveries are few and rarely change: a small index keeps counting
-- them (metrics) cheap at any table size.
CREATE INDEX deliveries_failed ON outbox.deliveries (created_at) WHERE status = 'failed';

CREATE TABLE outbox.delivery_attempts (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     uuid        NOT NULL REFERENCES outbox.deliveries (id) ON DELETE CASCADE,
    webhook_id      uuid        NOT NULL,
    organization_id uuid        NOT NULL,
    attempt         integer     NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     integer     NOT NULL,
    -- Stable machine code of the outcome (delivered, http_status, connect_timeout, ...; the
    -- list is in docs/CONTRACT.md §5).
    outcome         text        NOT NULL,
    status_code     integer,
    reason          text,
    -- The first bytes of the response body, for debugging a receiver.
    response_excerpt text
);

CREATE INDEX delivery_attempts_by_delivery ON outbox.delivery_attempts (delivery_id, attempt);

CREATE VIEW outbox.webhook_status AS
SELECT w.id AS webhook_id,
       w.organization_id,
       w.label,
       w.url,
       w.status,
       w.created_at,
       w.last_success_at,
       w.last_failure_at,
       w.last_failure_reason,
       (SELECT count(*) FROM outbox.deliveries d
         WHERE d.webhook_id = w.id AND d.status = 'pending') AS pending_deliveries,
       (SELECT count(*) FROM outbox.deliveries d
         WHERE d.webhook_id = w.id AND d.status = 'failed') AS failed_deliveries
FROM outbox.webhooks w;
