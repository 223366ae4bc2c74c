// Command producer emits ProductBridge events from a Go service, in the same
// transaction as the business change (pgx).
//
//	DATABASE_URL=postgres://... ORGANIZATION_ID=<uuid> go run .
//
// It creates a post and emits post.created, then commits: the event is
// delivered. Then it renames the post, emits post.edited and rolls back: the
// event goes with the transaction, so it never exists and is never sent. It
// prints both event ids as JSON.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v4"
)

const title = `Dark mode for the "café" ✓ 🌙`

// emit runs on the transaction, not on the connection or a pool, so the event
// commits or rolls back with the rest of it.
func emit(ctx context.Context, tx pgx.Tx, org, event string, data map[string]any) (string, error) {
	body, err := json.Marshal(data)
	if err != nil {
		return "", err
	}
	var id string
	err = tx.QueryRow(ctx, "SELECT outbox.emit($1, $2, $3)::text", org, event, string(body)).Scan(&id)
	return id, err
}

func createPost(ctx context.Context, conn *pgx.Conn, org, postID string) (string, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer tx.Rollback(ctx) // a no-op once committed
	if _, err := tx.Exec(ctx, "INSERT INTO posts (id, title, status) VALUES ($1, $2, 'open')", postID, title); err != nil {
		return "", err
	}
	id, err := emit(ctx, tx, org, "post.created", map[string]any{"id": postID, "title": title})
	if err != nil {
		return "", err
	}
	return id, tx.Commit(ctx)
}

// renamePostThenFail emits, then rolls back as a request that fails after
// the emit would: the event is rolled back with the rename.
func renamePostThenFail(ctx context.Context, conn *pgx.Conn, org, postID string) (string, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "UPDATE posts SET title = $2 WHERE id = $1", postID, "Renamed"); err != nil {
		return "", err
	}
	data := map[string]any{"id": postID, "title": "Renamed", "changed_fields": []string{"title"}}
	id, err := emit(ctx, tx, org, "post.edited", data)
	if err != nil {
		return "", err
	}
	return id, tx.Rollback(ctx)
}

func main() {
	ctx := context.Background()
	url, org := os.Getenv("DATABASE_URL"), os.Getenv("ORGANIZATION_ID")
	if url == "" || org == "" {
		log.Fatal("DATABASE_URL and ORGANIZATION_ID must be set")
	}
	postID := os.Getenv("POST_ID")
	if postID == "" {
		postID = fmt.Sprintf("post_%d", time.Now().UnixNano())
	}

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS posts (id text PRIMARY KEY, title text NOT NULL, status text NOT NULL)"); err != nil {
		log.Fatal(err)
	}
	committed, err := createPost(ctx, conn, org, postID)
	if err != nil {
		log.Fatal(err)
	}
	rolledBack, err := renamePostThenFail(ctx, conn, org, postID)
	if err != nil {
		log.Fatal(err)
	}
	out, _ := json.Marshal(map[string]string{"committed": committed, "rolled_back": rolledBack})
	fmt.Println(string(out))
}
