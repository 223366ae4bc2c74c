-- Taken after a flip of the wake-up switch, in a statement of its own so its
-- snapshot is younger than the flip: every transaction still running that
-- may have seen the old value has an id below this.
SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS fence
