-- Folds a batch's per-webhook health (outbox.daemon_fold_webhook_status, migration 0005).
SELECT outbox.daemon_fold_webhook_status($1, $2, $3, $4)
