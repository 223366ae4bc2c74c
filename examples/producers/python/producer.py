"""Emits ProductBridge events from a Python service, in the same transaction
as the business change (psycopg 3).

    python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
    DATABASE_URL=postgres://... ORGANIZATION_ID=<uuid> .venv/bin/python producer.py

Creates a post and emits post.created, then commits: the event is delivered.
Then renames it, emits post.edited and rolls back: the event goes with the
transaction, so it never exists and is never sent. Prints both event ids as JSON.
"""

import json
import os
import sys
import uuid

import psycopg
from psycopg.types.json import Jsonb

TITLE = 'Dark mode for the "café" ✓ 🌙'


def emit(conn, organization_id, event, data):
    """Runs on the transaction's connection, so the event commits or rolls back with it."""
    row = conn.execute(
        "SELECT outbox.emit(%s, %s, %s)", (organization_id, event, Jsonb(data))
    ).fetchone()
    return str(row[0])


def main():
    url = os.environ.get("DATABASE_URL")
    organization = os.environ.get("ORGANIZATION_ID")
    if not url or not organization:
        sys.exit("DATABASE_URL and ORGANIZATION_ID must be set")
    organization_id = uuid.UUID(organization)
    post_id = os.environ.get("POST_ID") or f"post_{uuid.uuid4()}"

    # autocommit: each `with conn.transaction()` block is one BEGIN ... COMMIT.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS posts"
            " (id text PRIMARY KEY, title text NOT NULL, status text NOT NULL)"
        )

        with conn.transaction():
            conn.execute(
                "INSERT INTO posts (id, title, status) VALUES (%s, %s, 'open')",
                (post_id, TITLE),
            )
            committed = emit(conn, organization_id, "post.created", {"id": post_id, "title": TITLE})

        with conn.transaction():
            conn.execute("UPDATE posts SET title = %s WHERE id = %s", ("Renamed", post_id))
            data = {"id": post_id, "title": "Renamed", "changed_fields": ["title"]}
            rolled_back = emit(conn, organization_id, "post.edited", data)
            # A later step of the request failed: leave the block rolling back.
            raise psycopg.Rollback()

    print(json.dumps({"committed": committed, "rolled_back": rolled_back}))


if __name__ == "__main__":
    main()
