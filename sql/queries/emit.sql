SELECT outbox.emit($1, $2, $3)
