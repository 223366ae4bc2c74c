-- Stores re-sealed secrets under key $4, each only if the row still holds the
-- ciphertext it was opened from ($2): a concurrent rotation that got there
-- first wins, and this one counts nothing for that row. Touches only the two
-- secret columns, so fan-out's FOR KEY SHARE on webhooks never waits for it.
UPDATE outbox.webhooks w
SET secret_ciphertext = r.resealed,
    secret_key_id = $4
FROM unnest($1::uuid[], $2::bytea[], $3::bytea[]) AS r(id, opened, resealed)
WHERE w.id = r.id
  AND w.secret_ciphertext = r.opened
