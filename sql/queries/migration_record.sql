-- Records one applied migration.
INSERT INTO outbox.schema_migrations (version, name) VALUES ($1, $2)
