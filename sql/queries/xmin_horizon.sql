-- What holds this database's xmin horizon oldest: while it lasts, VACUUM
-- (and page pruning) cannot remove the rows deleted or updated after it
-- began. Three kinds of holder: a session (a transaction's xid or snapshot),
-- a replication slot (a standby's hot_standby_feedback), a prepared
-- transaction. Oldest by age in transaction ids, which all three share.
--
-- Only sessions of this database (and walsenders, which have none) hold its
-- horizon; autovacuum workers do not (VACUUM's own snapshot is ignored by
-- other vacuums). A slot's catalog_xmin holds only system catalogs, not
-- these tables. Never the query text: it may contain data. Without
-- superuser (or pg_read_all_stats), other roles' sessions show pid,
-- application_name, user and xmin but no state or xact_start: NULLs here.
WITH holders AS (
    SELECT 'session' AS kind,
           pid,
           application_name AS name,
           usename::text AS username,
           state,
           greatest(age(backend_xid), age(backend_xmin))::int8 AS age_xids,
           (CASE WHEN age(backend_xid) >= coalesce(age(backend_xmin), 0)
                 THEN backend_xid ELSE backend_xmin END)::text::int8 AS xmin,
           -- A transaction with an xid holds the horizon from its start;
           -- one without holds only its current snapshot, which in READ
           -- COMMITTED is as old as the statement running.
           extract(epoch FROM now() - CASE WHEN backend_xid IS NOT NULL THEN xact_start
                                           ELSE coalesce(query_start, xact_start) END)::float8
               AS age_seconds
    FROM pg_stat_activity
    WHERE pid <> pg_backend_pid()
      AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
      AND (datname = current_database() OR datid IS NULL)
      AND backend_type IS DISTINCT FROM 'autovacuum worker'
    UNION ALL
    SELECT 'replication slot',
           active_pid,
           slot_name::text,
           NULL,
           CASE WHEN active THEN 'active' ELSE 'inactive' END,
           age(xmin)::int8,
           xmin::text::int8,
           NULL
    FROM pg_replication_slots
    WHERE xmin IS NOT NULL
    UNION ALL
    SELECT 'prepared transaction',
           NULL,
           gid,
           owner::text,
           'prepared',
           age(transaction)::int8,
           transaction::text::int8,
           extract(epoch FROM now() - prepared)::float8
    FROM pg_prepared_xacts
    WHERE database = current_database()
)
SELECT kind, pid, name, username, state, age_xids, xmin, age_seconds
FROM holders
ORDER BY age_xids DESC, age_seconds DESC NULLS LAST
LIMIT 1
