INSERT INTO outbox.webhooks (id, organization_id, url, label, secret_ciphertext, secret_key_id, signature_scheme)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, organization_id, url, label, status, created_at, signature_scheme
