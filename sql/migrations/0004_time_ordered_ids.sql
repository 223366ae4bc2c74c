-- Time-ordered ids for events and deliveries (UUID version 7, RFC 9562:
-- 48 bits of Unix milliseconds, then random bits). A random UUID lands on a
-- random page of its primary-key index, so every insert, claim and
-- write-back touches pages all over an index that outgrows memory as the
-- backlog grows; ids that follow time keep the recent end of the index, which
-- is where all the work is, in a few hot pages. The random bits (74 of them)
-- keep ids unique and unguessable enough for an idempotency key.

CREATE FUNCTION outbox.uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE
RETURN encode(
    -- Version 7 over gen_random_uuid's version 4: 0100 -> 0111 in the high
    -- nibble of byte 6 (set_bit numbers bits from the low end of each byte).
    set_bit(set_bit(
        overlay(uuid_send(gen_random_uuid())
                PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                                  FROM 3)
                FROM 1 FOR 6),
        52, 1), 53, 1),
    'hex')::uuid;

ALTER TABLE outbox.events ALTER COLUMN id SET DEFAULT outbox.uuid_v7();
ALTER TABLE outbox.deliveries ALTER COLUMN id SET DEFAULT outbox.uuid_v7();
