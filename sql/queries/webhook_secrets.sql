SELECT id, secret_ciphertext, secret_key_id, signature_scheme FROM outbox.webhooks WHERE id = ANY ($1::uuid[])
