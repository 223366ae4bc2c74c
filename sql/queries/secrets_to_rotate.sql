-- One batch for `keys rotate`: webhooks (revoked ones too) whose secret is not
-- sealed with the current key ($1), after the cursor $2, in id order so each
-- row is looked at once per run. No lock: the update compares the ciphertext.
SELECT id, secret_ciphertext, secret_key_id
FROM outbox.webhooks
WHERE secret_key_id <> $1
  AND ($2::uuid IS NULL OR id > $2)
ORDER BY id
LIMIT $3
