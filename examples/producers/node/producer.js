// Emits ProductBridge events from a Node.js service, in the same transaction
// as the business change (node-postgres, `pg`).
//
//   npm ci
//   DATABASE_URL=postgres://... ORGANIZATION_ID=<uuid> node producer.js
//
// Creates a post and emits post.created, then commits: the event is delivered.
// Then renames it, emits post.edited and fails: the rollback takes the event
// with it, so it never exists and is never sent. Prints both event ids as JSON.
import { randomUUID } from 'node:crypto';
import pg from 'pg';

const { DATABASE_URL, ORGANIZATION_ID } = process.env;
if (!DATABASE_URL || !ORGANIZATION_ID) {
  console.error('DATABASE_URL and ORGANIZATION_ID must be set');
  process.exit(2);
}
const postId = process.env.POST_ID || `post_${randomUUID()}`;
const title = 'Dark mode for the "café" ✓ 🌙';

const pool = new pg.Pool({ connectionString: DATABASE_URL });

// BEGIN ... COMMIT on one client taken from the pool. Every statement of the
// transaction, emit included, must go through that client: pool.query() may
// run on another connection, outside the transaction.
async function inTransaction(work) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  } finally {
    client.release();
  }
}

async function emit(client, event, data) {
  const { rows } = await client.query('SELECT outbox.emit($1, $2, $3) AS id', [
    ORGANIZATION_ID,
    event,
    JSON.stringify(data),
  ]);
  return rows[0].id;
}

try {
  await pool.query(
    'CREATE TABLE IF NOT EXISTS posts (id text PRIMARY KEY, title text NOT NULL, status text NOT NULL)',
  );

  const committed = await inTransaction(async (client) => {
    await client.query("INSERT INTO posts (id, title, status) VALUES ($1, $2, 'open')", [postId, title]);
    return emit(client, 'post.created', { id: postId, title });
  });

  let rolledBack;
  try {
    await inTransaction(async (client) => {
      await client.query('UPDATE posts SET title = $2 WHERE id = $1', [postId, 'Renamed']);
      rolledBack = await emit(client, 'post.edited', { id: postId, title: 'Renamed', changed_fields: ['title'] });
      throw new Error('a later step of the request failed');
    });
  } catch (error) {
    if (rolledBack === undefined) throw error; // emit itself failed
    console.error(`rolled back: ${error.message}`);
  }

  console.log(JSON.stringify({ committed, rolled_back: rolledBack }));
} finally {
  await pool.end();
}
