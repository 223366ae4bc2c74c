-- Emits a batch of events (outbox.emit_many, migration 0006); ids in array order.
SELECT e.id FROM outbox.emit_many($1, $2) WITH ORDINALITY AS e(id, n) ORDER BY e.n
